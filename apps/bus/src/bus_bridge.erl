%% @doc One node's end of a bridge: the same-named buses of several nodes
%% (machines) made one logical bus. Every message broadcast on this
%% node's bus by anyone but this bridge is sent to the bridges of the other
%% member nodes, which broadcast it on their buses: exactly once, in
%% per-origin order, never echoed back.
%%
%% Members are the processes of the `pg' group `{bridge, Name}' in the
%% scope `bus_bridges' (Name as given to bus:bridge/1, the same on every
%% node; each node resolves it to its own pathname). The bridge listens on
%% its bus with a listener of its own (a backend listener, like bus_srv's),
%% whose items this process broadcast itself come marked `{own, Bin}'. A
%% message it wrote for a peer comes back so marked; it keeps what it wrote,
%% in order, and an own-marked message equal to the oldest is that echo
%% (own-marked messages of other processes of this node, e.g. bus:broadcast
%% callers, are bridged: among own-marked messages, equal bytes are
%% interchangeable, so the count bridged is exact).
%%
%% Back-pressure stops at the node: peers are sent to with `nosuspend' (a
%% busy connection drops, counted), and what peers send waits in a queue
%% of at most `bridge_queue' messages (application env, default 10000)
%% while this node's bus is held; beyond it messages are dropped, counted,
%% logged (bus_log: at most once per 10 s, with the count), and this node's
%% subscribers of the bus are told `{bus_gap, Name}'.
%% A peer's bus is never held by this one.
-module(bus_bridge).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/2, await/2, counts/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SCOPE, bus_bridges).
%% A broadcast of a peer's message waits at most this long (ms), so that
%% this process keeps receiving (and counting) while the bus is held.
-define(WRITE_TIMEOUT, 100).
-define(RETRY_MS, 10).
-define(QUEUE, 10000).
-define(TAKE_MAX, 64).

-record(state, {
    name :: term(),
    path :: binary(),
    backend :: module(),
    tag :: reference(),
    listener :: bus_backend:handle() | undefined,
    listening = false :: boolean(),
    monitor :: reference(),
    peers = [] :: [pid()],
    %% Callers of await/2: {From, Pids still to see}.
    awaiting = [] :: [{gen_server:from(), [pid()]}],
    %% What this process broadcast, whose own-marked copy is still to come.
    echoes = queue:new() :: queue:queue(binary()),
    %% From peers, to broadcast here.
    inbox = queue:new() :: queue:queue(binary()),
    inbox_len = 0 :: non_neg_integer(),
    max_inbox = ?QUEUE :: pos_integer(),
    retry = false :: boolean(),
    %% The bus's subscribers were told of the current run of drops.
    gap_told = false :: boolean(),
    bridged_in = 0 :: non_neg_integer(),
    bridged_out = 0 :: non_neg_integer(),
    dropped_in = 0 :: non_neg_integer(),
    dropped_out = 0 :: non_neg_integer(),
    %% What bus_log has logged (and held back).
    logged = #{} :: bus_log:logged()
}).

%% API.

-spec start_link(term(), binary()) -> {ok, pid()} | {error, term()}.
start_link(Name, Path) ->
    gen_server:start_link(?MODULE, {Name, Path}, []).

%% @doc Returns once every bridge in Pids is a peer of Bridge (in its view
%% of the group).
-spec await(pid(), [pid()]) -> ok.
await(Bridge, Pids) ->
    gen_server:call(Bridge, {await, Pids}, 10000).

-spec counts(pid()) -> map().
counts(Bridge) ->
    gen_server:call(Bridge, counts).

%% gen_server.

-spec init({term(), binary()}) -> {ok, #state{}} | {stop, term()}.
init({Name, Path}) ->
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{domain => [bus], bus => Path, bridge => Name}),
    case bus_tables:claim_server({bridge, Path}, self()) of
        false ->
            {stop, {already_bridged, Path}};
        true ->
            Backend = bus_backend:for(Path),
            Tag = make_ref(),
            Window = application:get_env(bus, window, 256),
            case Backend:listen(Path, self(), Tag, join, Window) of
                {ok, Listener} ->
                    ok = pg:join(?SCOPE, {bridge, Name}, self()),
                    {Ref, Members} = pg:monitor(?SCOPE, {bridge, Name}),
                    ?LOG_NOTICE(#{what => bridge_joined, peers => length(Members) - 1}),
                    {ok, #state{name = Name, path = Path, backend = Backend, tag = Tag,
                                listener = Listener, monitor = Ref,
                                peers = Members -- [self()],
                                max_inbox = application:get_env(bus, bridge_queue, ?QUEUE)}};
                {error, Reason} ->
                    _ = bus_tables:release_server({bridge, Path}, self()),
                    {stop, Reason}
            end
    end.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({await, Pids}, From, State = #state{awaiting = A}) ->
    {noreply, answer(State#state{awaiting = [{From, Pids} | A]})};
handle_call(counts, _From, State) ->
    {reply, #{name => State#state.name, peers => State#state.peers,
              bridged_in => State#state.bridged_in, bridged_out => State#state.bridged_out,
              dropped_in => State#state.dropped_in, dropped_out => State#state.dropped_out,
              queued => State#state.inbox_len}, State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, term(), #state{}}.
handle_info({bus_listening, Tag}, State = #state{tag = Tag}) ->
    {noreply, write(State#state{listening = true})};
handle_info({bus_ready, Tag}, State = #state{tag = Tag}) ->
    {noreply, take(State)};
handle_info({bus_bridged, _From, _Message}, State = #state{inbox_len = N, max_inbox = Max})
  when N >= Max ->
    {noreply, dropped_in(1, State)};
handle_info({bus_bridged, _From, Message}, State = #state{inbox = In, inbox_len = N}) ->
    {noreply, write(State#state{inbox = queue:in(Message, In), inbox_len = N + 1})};
handle_info(retry, State) ->
    {noreply, write(State#state{retry = false})};
handle_info({Ref, join, _Group, Pids}, State = #state{monitor = Ref, peers = Peers}) ->
    ?LOG_NOTICE(#{what => bridge_peer_joined, peers => [node(P) || P <- Pids]}),
    {noreply, answer(State#state{peers = lists:usort(Peers ++ Pids) -- [self()]})};
handle_info({Ref, leave, _Group, Pids}, State = #state{monitor = Ref, peers = Peers}) ->
    ?LOG_NOTICE(#{what => bridge_peer_left, peers => [node(P) || P <- Pids]}),
    {noreply, State#state{peers = Peers -- Pids}};
handle_info({bus_listener_down, Tag, Reason}, State = #state{tag = Tag}) ->
    ?LOG_ERROR(#{what => bridge_listener_down, reason => Reason}),
    {stop, {listener_down, Reason}, State#state{listener = undefined}};
handle_info(_Info, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{path = Path, backend = Backend, listener = Listener}) ->
    _ = bus_tables:release_server({bridge, Path}, self()),
    _ = Listener =/= undefined andalso Backend:stop(Listener),
    ok.

%% Internal.

%% Everything the listener has queued: echoes are dropped, the rest goes
%% to the peers.
take(State = #state{listener = undefined}) ->
    State;
take(State = #state{backend = Backend, listener = L}) ->
    Items = Backend:take(L, ?TAKE_MAX),
    State1 = lists:foldl(fun item/2, State, Items),
    case length(Items) < ?TAKE_MAX of
        true -> State1;
        false -> take(State1)
    end.

item({own, Message}, State = #state{echoes = Echoes}) ->
    case queue:peek(Echoes) of
        {value, Message} -> State#state{echoes = queue:drop(Echoes)};
        _ -> out(Message, State)
    end;
item({dropped, _}, State) ->
    State;
item(gap, State) ->
    %% The listener joined afresh (the port backend restarted its
    %% program): echoes of what was broadcast before will not come.
    State#state{echoes = queue:new()};
item(Message, State) ->
    out(Message, State).

out(Message, State = #state{peers = Peers, bridged_out = Out, dropped_out = D}) ->
    Failed = length([P || P <- Peers,
                          erlang:send(P, {bus_bridged, self(), Message}, [nosuspend, noconnect])
                              =/= ok]),
    State1 = State#state{bridged_out = Out + 1, dropped_out = D + Failed},
    case Failed of
        0 -> State1;
        _ -> event(bridge_send_dropped, warning, #{}, Failed, State1)
    end.

%% Broadcasts the oldest message from a peer, if listening (an echo must
%% find the listener on the bus); the rest after the messages waiting.
write(State = #state{listening = false}) ->
    State;
write(State = #state{inbox_len = 0}) ->
    State;
write(State = #state{retry = true}) ->
    State;
write(State0) ->
    %% What our listener holds first: our own writes must never fill its
    %% window (it would hold the bus against them).
    State = #state{path = Path, backend = Backend, listener = L, inbox = In, inbox_len = N,
                   echoes = E} = take(State0),
    {{value, Message}, In1} = queue:out(In),
    case Backend:echo_broadcast(L, Path, Message, ?WRITE_TIMEOUT) of
        Result when Result =:= ok; Result =:= {error, timeout_after_publish} ->
            State1 = State#state{inbox = In1, inbox_len = N - 1, echoes = queue:in(Message, E),
                                 bridged_in = State#state.bridged_in + 1, gap_told = false},
            _ = N > 1 andalso (self() ! retry),
            State1#state{retry = N > 1};
        {error, timeout} ->
            %% The bus is held here: try again soon, counting (and dropping)
            %% what peers send meanwhile.
            erlang:send_after(?RETRY_MS, self(), retry),
            State#state{retry = true};
        {error, Reason} ->
            ?LOG_WARNING(#{what => bridge_write_failed, reason => Reason}),
            dropped_in(1, State#state{inbox = In1, inbox_len = N - 1})
    end.

%% Drops are logged (rate-limited, with their count), and the bus's
%% subscribers told once per run of drops (before the next message
%% written).
dropped_in(Count, State0 = #state{dropped_in = D, path = Path, gap_told = Told}) ->
    State = event(bridge_dropped, warning, #{queue => State0#state.max_inbox}, Count, State0),
    _ = Told orelse case bus_tables:server(Path) of
        {ok, Srv} -> Srv ! {bus_bridge_gap, Count};
        error -> ok
    end,
    State#state{dropped_in = D + Count, gap_told = true}.

event(What, Level, Report, Count, State = #state{logged = Logged}) ->
    State#state{logged = bus_log:event(What, Level, Report, Count, Logged)}.

%% Answers the await/2 callers whose bridges are all peers now.
answer(State = #state{awaiting = A, peers = Peers}) ->
    {Done, Waiting} = lists:partition(fun({_, Pids}) -> Pids -- Peers =:= [] end, A),
    _ = [gen_server:reply(From, ok) || {From, _} <- Done],
    State#state{awaiting = Waiting}.
