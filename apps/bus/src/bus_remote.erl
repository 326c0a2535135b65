%% @doc The subscribers of this node to buses served by other nodes
%% (bus:subscribe({Name, Node}, Options)): it watches the connection to
%% each such node and, when it is lost, tells each of them
%% `{bus_down, {Name, Node}, noconnection}' — their subscription has ended
%% (the serving node's bus_srv drops them when its monitor of them fires)
%% and nothing more will come. The serving node does the rest: its bus_srv
%% forwards to the remote process with the same flow control as to a local
%% one, never suspending on a busy connection.
%%
%% A restart of this process forgets what it watched: the subscriptions
%% stay, but a lost connection is then not told (logged).
-module(bus_remote).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, watch/2, unwatch/2, watched/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-type remote() :: {term(), node()}.

-record(state, {
    %% {Subscriber, {Name, Node}} => the monitor of Subscriber.
    watches = #{} :: #{{pid(), remote()} => reference()},
    %% Watches per node (the node is monitored while any is left).
    nodes = #{} :: #{node() => pos_integer()}
}).

%% API.

-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Subscriber (on this node) is subscribed to Remote's bus.
-spec watch(pid(), remote()) -> ok.
watch(Pid, Remote) ->
    gen_server:call(?MODULE, {watch, Pid, Remote}).

-spec unwatch(pid(), remote()) -> ok.
unwatch(Pid, Remote) ->
    gen_server:call(?MODULE, {unwatch, Pid, Remote}).

%% @doc What is watched: {Subscriber, {Name, Node}} pairs.
-spec watched() -> [{pid(), remote()}].
watched() ->
    gen_server:call(?MODULE, watched).

%% gen_server.

-spec init([]) -> {ok, #state{}}.
init([]) ->
    logger:update_process_metadata(#{domain => [bus]}),
    {ok, #state{}}.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({watch, Pid, Remote = {_, Node}}, _From, State = #state{watches = W, nodes = N}) ->
    case W of
        #{{Pid, Remote} := _} ->
            {reply, ok, State};
        _ ->
            Ref = erlang:monitor(process, Pid),
            %% A node already down is reported at once.
            _ = maps:is_key(Node, N) orelse erlang:monitor_node(Node, true),
            {reply, ok, State#state{watches = W#{{Pid, Remote} => Ref},
                                    nodes = maps:update_with(Node, fun(C) -> C + 1 end, 1, N)}}
    end;
handle_call({unwatch, Pid, Remote}, _From, State) ->
    {reply, ok, forget({Pid, Remote}, State)};
handle_call(watched, _From, State = #state{watches = W}) ->
    {reply, maps:keys(W), State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({nodedown, Node}, State = #state{watches = W, nodes = N}) ->
    Lost = [Key || Key = {_, {_, ToNode}} <- maps:keys(W), ToNode =:= Node],
    _ = [Pid ! {bus_down, Remote, noconnection} || {Pid, Remote} <- Lost],
    _ = Lost =/= [] andalso
        ?LOG_WARNING(#{what => remote_bus_down, node => Node, subscribers => length(Lost)}),
    W1 = lists:foldl(fun(Key, Acc) ->
                             {Ref, Acc1} = maps:take(Key, Acc),
                             true = erlang:demonitor(Ref, [flush]),
                             Acc1
                     end, W, Lost),
    {noreply, State#state{watches = W1, nodes = maps:remove(Node, N)}};
handle_info({'DOWN', _, process, Pid, _}, State = #state{watches = W}) ->
    {noreply, lists:foldl(fun forget/2, State, [Key || Key = {P, _} <- maps:keys(W), P =:= Pid])};
handle_info(_Info, State) ->
    {noreply, State}.

%% Internal.

forget(Key = {_, {_, Node}}, State = #state{watches = W, nodes = N}) ->
    case maps:take(Key, W) of
        {Ref, W1} ->
            true = erlang:demonitor(Ref, [flush]),
            N1 = case maps:get(Node, N) of
                1 -> _ = erlang:monitor_node(Node, false), maps:remove(Node, N);
                C -> N#{Node := C - 1}
            end,
            State#state{watches = W1, nodes = N1};
        error ->
            State
    end.
