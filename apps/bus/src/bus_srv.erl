%% @doc One process per bus in use: owns the bus's native listener,
%% monitors the bus's subscribers and forwards each message as
%% `{bus, Name, Message}' (Name as given to subscribe/1, Message the binary
%% as broadcast).
%%
%% Started by the first subscribe/1 of a bus, stopped (leaving the bus)
%% after the last unsubscribe/1 or subscriber death. Subscriptions live in
%% the bus_subscriptions table, so a restarted bus_srv finds them again. If
%% the bus goes away for good (removed), each subscriber is sent
%% `{bus_down, Name, Reason}' and its subscription ends.
%%
%% A hot upgrade that changes the native version (see bus.appup) hands the
%% listener over in code_change/3: the old native module's listener is
%% detached (its thread has ended and sent its last message) and the new
%% native module's listener takes its place on the bus, so no message is
%% lost or repeated; messages the old one sent are still in the mailbox,
%% ahead of the new one's, and are forwarded too (retired tags).
-module(bus_srv).
-behaviour(gen_server).

-include("bus_nif.hrl").

%% API.
-export([start_link/1]).
-export([subscribe/1, unsubscribe/1, broadcast/2, broadcast/3]).
-export([subscribers/1, info/1]).
%% For bus_app.
-export([create_tables/0]).

%% gen_server.
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2, code_change/3]).

%% {{Path, Subscriber}, Name}: written by the bus's bus_srv only.
-define(SUBSCRIPTIONS, bus_subscriptions).
%% {Path, BusSrv}: each bus_srv claims its own entry.
-define(SERVERS, bus_servers).
%% A restarted bus_srv with no subscribers waits this long for one.
-define(IDLE_TIMEOUT, 1000).
-define(CALL_TIMEOUT, 5000).
-define(RETRIES, 5).
%% Items taken from the listener's queue per call.
-define(TAKE_MAX, 64).

%% New fields go at the end, so code_change/3 converts by appending and
%% dropping.
-record(state, {
    path :: binary(),
    %% The native module (bus_nif_N) that made the listener.
    nif = ?NIF :: module(),
    tag :: reference() | undefined,
    %% Tags of listeners handed over whose messages may still be in the
    %% mailbox; each is dropped when its {bus_retired, Tag} marker arrives.
    retired = [] :: [reference()],
    %% A resource of the native module `nif'.
    listener :: term(),
    status = joining :: joining | listening | duplicate | {failed, bus:reason()},
    waiting = [] :: [gen_server:from()],
    subscribers = #{} :: #{pid() => {reference(), bus:name()}},
    received = 0 :: non_neg_integer(),
    forwarded = 0 :: non_neg_integer(),
    %% Since 0.2.0: the bytes of the messages received.
    received_bytes = 0 :: non_neg_integer()
}).

-type info() :: #{path := binary(),
                  listeners := non_neg_integer() | undefined,
                  received := non_neg_integer(),
                  forwarded := non_neg_integer(),
                  received_bytes := non_neg_integer(),
                  native := pos_integer(),
                  subscribers := [pid()]}.
-export_type([info/0]).

%% API.

-spec start_link(binary()) -> {ok, pid()}.
start_link(Path) ->
    gen_server:start_link(?MODULE, Path, []).

%% Subscribes the calling process to the bus. Returns once the bus's
%% listener is counted on the bus: every broadcast that starts after
%% this returns is delivered. Subscribing twice is subscribing once.
-spec subscribe(bus:name()) -> ok | {error, bus:reason()}.
subscribe(Name) ->
    case bus:path(Name) of
        {ok, Path} ->
            case call(Path, {subscribe, self(), Name}, true) of
                {error, timeout} = Timeout ->
                    _ = unsubscribe(Name),
                    Timeout;
                Result ->
                    Result
            end;
        {error, _} = Error ->
            Error
    end.

%% Ends the calling process's subscription; when it was the bus's last,
%% the bus's listener has left the bus when this returns.
-spec unsubscribe(bus:name()) -> ok | {error, bus:reason()}.
unsubscribe(Name) ->
    case bus:path(Name) of
        {ok, Path} ->
            case call(Path, {unsubscribe, self()}, false) of
                not_running ->
                    %% No bus_srv to clean up after us.
                    true = ets:delete(?SUBSCRIPTIONS, {Path, self()}),
                    ok;
                Result ->
                    Result
            end;
        {error, _} = Error ->
            Error
    end.

%% See bus:broadcast/2.
-spec broadcast(bus:name(), bus:message()) -> ok | {error, bus:reason()}.
broadcast(Name, Message) ->
    bus:broadcast(Name, Message).

%% See bus:broadcast/3.
-spec broadcast(bus:name(), bus:message(), bus:broadcast_options()) ->
    ok | {error, bus:reason()}.
broadcast(Name, Message, Options) ->
    bus:broadcast(Name, Message, Options).

%% The processes subscribed to the bus.
-spec subscribers(bus:name()) -> [pid()] | {error, bus:reason()}.
subscribers(Name) ->
    case bus:path(Name) of
        {ok, Path} -> subscribers_of(Path);
        {error, _} = Error -> Error
    end.

%% The bus's pathname, the number of processes listening on it (S,
%% undefined if the bus cannot be read), the messages this node received
%% and forwarded on it and the bytes received, its subscribers, and the
%% version of the native library in use.
-spec info(bus:name()) -> info() | {error, bus:reason()}.
info(Name) ->
    case bus:path(Name) of
        {ok, Path} ->
            Counts = case call(Path, counts, false) of
                #{} = C -> C;
                _ -> #{received => 0, forwarded => 0, received_bytes => 0}
            end,
            Listeners = case ?NIF:stat(Path) of
                {ok, #{listeners := S}} -> S;
                {error, _} -> undefined
            end,
            Counts#{path => Path, listeners => Listeners,
                    subscribers => subscribers_of(Path),
                    native => ?NIF:native_version()};
        {error, _} = Error ->
            Error
    end.

%% Creates the tables that outlive bus_srv processes (called by bus_app
%% before the supervisors start).
-spec create_tables() -> ok.
create_tables() ->
    ?SUBSCRIPTIONS = ets:new(?SUBSCRIPTIONS, [ordered_set, public, named_table,
                                              {read_concurrency, true}]),
    ?SERVERS = ets:new(?SERVERS, [set, public, named_table, {read_concurrency, true}]),
    ok.

%% gen_server.

%% Nothing here may block: the supervisor's start_child, and with it every
%% other bus's first subscribe and the node's shutdown, waits for init/1.
%% The bus is joined right after, in handle_continue/2.
-spec init(binary()) -> {ok, #state{}, {continue, join | stop}}.
init(Path) ->
    process_flag(trap_exit, true),
    case claim(Path) of
        false ->
            %% Another live bus_srv serves this bus (a start raced with a
            %% restart): leave quietly, callers retry and find it.
            {ok, #state{path = Path, status = duplicate}, {continue, stop}};
        true ->
            Subscriptions = ets:select(?SUBSCRIPTIONS,
                                       [{{{Path, '$1'}, '$2'}, [], [{{'$1', '$2'}}]}]),
            State = lists:foldl(fun({Pid, Name}, S) -> add(Pid, Name, S) end,
                                #state{path = Path}, Subscriptions),
            _ = Subscriptions =:= [] andalso
                erlang:send_after(?IDLE_TIMEOUT, self(), stop_if_idle),
            {ok, State, {continue, join}}
    end.

-spec handle_continue(join | stop, #state{}) ->
    {noreply, #state{}} | {stop, normal, #state{}}.
handle_continue(stop, State) ->
    {stop, normal, State};
handle_continue(join, State) ->
    case listen(State) of
        State1 = #state{status = {failed, Reason}, subscribers = Subs} ->
            %% A restart that cannot listen: the bus is down for its
            %% subscribers (no crash loop). A first start waits for the
            %% subscribe call, which gets the error.
            case map_size(Subs) of
                0 -> {noreply, State1};
                _ -> bus_down(Reason, State1)
            end;
        State1 ->
            {noreply, State1}
    end.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}} | {stop, normal, ok, #state{}}.
handle_call({subscribe, _, _}, _From, State = #state{status = {failed, Reason}}) ->
    case stop_if_idle(State) of
        {stop, normal, State1} -> {stop, normal, {error, Reason}, State1};
        {noreply, State1} -> {reply, {error, Reason}, State1}
    end;
handle_call({subscribe, Pid, Name}, From, State = #state{path = Path}) ->
    true = ets:insert(?SUBSCRIPTIONS, {{Path, Pid}, Name}),
    State1 = add(Pid, Name, State),
    case State1#state.status of
        listening -> {reply, ok, State1};
        joining -> {noreply, State1#state{waiting = [From | State1#state.waiting]}}
    end;
handle_call({unsubscribe, Pid}, _From, State) ->
    case stop_if_idle(delete(Pid, State)) of
        {stop, normal, State1} -> {stop, normal, ok, State1};
        {noreply, State1} -> {reply, ok, State1}
    end;
handle_call(counts, _From, State = #state{received = R, forwarded = F, received_bytes = B}) ->
    {reply, #{received => R, forwarded => F, received_bytes => B}, State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, term(), #state{}}.
handle_info({bus_ready, Tag}, State = #state{tag = Tag, nif = Nif, listener = Listener}) ->
    {noreply, take_all(Nif, Listener, State)};
handle_info({bus_message, Tag, Message}, State = #state{tag = Tag}) ->
    %% From a listener of native version 3 or older (until a hot upgrade
    %% has handed it over).
    {noreply, forward(Message, State)};
handle_info({bus_message, Tag, Message}, State = #state{retired = Retired}) ->
    case lists:member(Tag, Retired) of
        true -> {noreply, forward(Message, State)};
        false -> {noreply, State}
    end;
handle_info({bus_retired, Tag}, State = #state{retired = Retired}) ->
    %% Sent after the retired listener's thread ended: nothing of it follows.
    {noreply, State#state{retired = lists:delete(Tag, Retired)}};
handle_info({bus_listening, Tag}, State = #state{tag = Tag, waiting = Waiting}) ->
    _ = [gen_server:reply(From, ok) || From <- Waiting],
    {noreply, State#state{status = listening, waiting = []}};
handle_info({bus_listener_down, Tag, Reason}, State = #state{tag = Tag}) ->
    listener_down(Reason, State#state{listener = undefined});
handle_info({'DOWN', _, process, Pid, _}, State) ->
    stop_if_idle(delete(Pid, State));
handle_info(stop_if_idle, State) ->
    stop_if_idle(State);
handle_info(_Info, State) ->
    %% Messages of a listener this process has stopped.
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{status = duplicate}) ->
    ok;
terminate(_Reason, State = #state{path = Path}) ->
    _ = ets:select_delete(?SERVERS, [{{Path, self()}, [], [true]}]),
    _ = unlisten(State),
    ok.

%% An upgrade or downgrade whose appup says {advanced, {handover, Nif}}
%% moves the listener to the native module Nif (loaded by then): see
%% handover/2. The state has the same shape in 0.3.0 and 0.4.0; a
%% downgrade runs this code, before 0.3.0's is loaded.
-spec code_change(term(), #state{}, term()) -> {ok, #state{}}.
code_change(_OldVsn, State = #state{}, Extra) ->
    {ok, maybe_handover(Extra, State)}.

%% Internal.

%% Forwards everything the listener has queued, in order.
take_all(Nif, Listener, State) ->
    Items = Nif:take(Listener, ?TAKE_MAX),
    State1 = lists:foldl(fun forward_item/2, State, Items),
    case length(Items) < ?TAKE_MAX of
        true -> State1;
        false -> take_all(Nif, Listener, State1)
    end.

forward_item(Message, State) when is_binary(Message) ->
    forward(Message, State);
forward_item({own, Message}, State) ->
    forward(Message, State);
forward_item({dropped, _}, State) ->
    %% Not with this listener's queue, which never drops.
    State.

forward(Message, State = #state{subscribers = Subs}) ->
    maps:foreach(fun(Pid, {_, Name}) -> Pid ! {bus, Name, Message} end, Subs),
    State#state{received = State#state.received + 1,
                forwarded = State#state.forwarded + map_size(Subs),
                received_bytes = State#state.received_bytes + byte_size(Message)}.

maybe_handover({handover, Nif}, State) ->
    handover(Nif, State);
maybe_handover(_Extra, State) ->
    State.

%% Moves the listener from the native module that made it to Nif, in place
%% on the bus: no message lost or repeated. The old listener's thread has
%% ended when detach_listener returns, so its messages (old tag) are all in
%% the mailbox ahead of the new listener's; the {bus_retired, Tag} marker
%% follows them. Once no bus_srv holds a resource of the old module and
%% `bus' has dropped its writers, the old module can be deleted and its
%% library unloaded.
handover(Nif, State = #state{nif = Nif}) ->
    State;
handover(Nif, State = #state{listener = undefined}) ->
    State#state{nif = Nif};
handover(Nif, State = #state{nif = Old, tag = OldTag, listener = Listener,
                              retired = Retired}) ->
    T0 = erlang:monotonic_time(microsecond),
    From = case Old:detach_listener(Listener) of
        {ok, Standing} -> Standing;
        %% It was still joining (or failed and said so): join afresh.
        {error, _} -> join
    end,
    %% What the old listener queued (native version 4 and later) goes out
    %% now, before anything the new one takes; older versions sent each
    %% message, which is in the mailbox.
    State0 = case erlang:function_exported(Old, take, 2) of
        true -> take_all(Old, Listener, State);
        false -> State
    end,
    %% For operators (and the upgrade test): how the last handover went;
    %% queued counts the old listener's messages not yet forwarded.
    {message_queue_len, Queued} = process_info(self(), message_queue_len),
    self() ! {bus_retired, OldTag},
    State1 = State0#state{nif = Nif, retired = [OldTag | Retired], listener = undefined},
    State2 = handover_listen(State1, From, State#state.status),
    put(bus_handover, #{from => Old, to => Nif, standing => From, queued => Queued,
                        micros => erlang:monotonic_time(microsecond) - T0}),
    State2.

handover_listen(State1, From, Status) ->
    case listen(State1, From) of
        State2 = #state{status = {failed, Reason}} ->
            %% Handled like a listener that went down (the bus is gone).
            self() ! {bus_listener_down, State2#state.tag, Reason},
            State2#state{status = Status};
        State2 when From =/= join ->
            %% Subscribers waiting for the old listener's
            %% {bus_listening, OldTag} are answered by the new one's.
            State2#state{status = Status};
        State2 ->
            State2
    end.

%% Finds the bus's bus_srv (starting it if Start) and calls it, retrying
%% while bus_srv processes come and go.
call(Path, Request, Start) ->
    call(Path, Request, Start, ?RETRIES).

call(Path, Request, Start, Tries) ->
    case find(Path, Start) of
        {ok, Pid} ->
            try
                gen_server:call(Pid, Request, ?CALL_TIMEOUT)
            catch
                exit:{timeout, _} ->
                    {error, timeout};
                exit:{_, _} when Tries > 0 ->
                    %% It stopped or crashed meanwhile.
                    call(Path, Request, Start, Tries - 1)
            end;
        Other ->
            Other
    end.

find(Path, Start) ->
    case ets:lookup(?SERVERS, Path) of
        [{_, Pid}] ->
            case is_process_alive(Pid) of
                true -> {ok, Pid};
                false -> start(Path, Start)
            end;
        [] ->
            start(Path, Start)
    end.

start(_Path, false) ->
    not_running;
start(Path, true) ->
    case supervisor:start_child(bus_srv_sup, [Path]) of
        {ok, Pid} -> {ok, Pid};
        {error, _} = Error -> Error
    end.

%% Makes this process the bus's bus_srv unless a live one exists.
claim(Path) ->
    case ets:insert_new(?SERVERS, {Path, self()}) of
        true ->
            true;
        false ->
            case ets:lookup(?SERVERS, Path) of
                [{_, Pid}] ->
                    case is_process_alive(Pid) of
                        true -> false;
                        false -> replace(Path, Pid) orelse claim(Path)
                    end;
                [] ->
                    claim(Path)
            end
    end.

replace(Path, Dead) ->
    1 =:= ets:select_replace(?SERVERS, [{{Path, Dead}, [], [{const, {Path, self()}}]}]).

subscribers_of(Path) ->
    ets:select(?SUBSCRIPTIONS, [{{{Path, '$1'}, '_'}, [], ['$1']}]).

listen(State) ->
    listen(State, join).

listen(State = #state{path = Path, nif = Nif}, From) ->
    Tag = make_ref(),
    case Nif:listen(Path, self(), Tag, From) of
        {ok, Listener} ->
            State#state{tag = Tag, listener = Listener, status = joining};
        {error, Reason} ->
            State#state{tag = undefined, listener = undefined, status = {failed, Reason}}
    end.

unlisten(#state{listener = undefined}) ->
    ok;
unlisten(#state{nif = Nif, listener = Listener}) ->
    Nif:stop_listener(Listener).

add(Pid, Name, State = #state{subscribers = Subs}) ->
    case Subs of
        #{Pid := {Ref, _}} ->
            State#state{subscribers = Subs#{Pid := {Ref, Name}}};
        _ ->
            Ref = erlang:monitor(process, Pid),
            State#state{subscribers = Subs#{Pid => {Ref, Name}}}
    end.

delete(Pid, State = #state{path = Path, subscribers = Subs}) ->
    true = ets:delete(?SUBSCRIPTIONS, {Path, Pid}),
    case maps:take(Pid, Subs) of
        {{Ref, _}, Subs1} ->
            true = erlang:demonitor(Ref, [flush]),
            State#state{subscribers = Subs1};
        error ->
            State
    end.

%% The last subscriber is gone: leave the bus and stop. The entry in
%% bus_servers goes first, so that a new subscriber starts a new bus_srv.
stop_if_idle(State = #state{subscribers = Subs, waiting = []}) when map_size(Subs) =:= 0 ->
    _ = ets:select_delete(?SERVERS, [{{State#state.path, self()}, [], [true]}]),
    ok = unlisten(State),
    {stop, normal, State#state{listener = undefined}};
stop_if_idle(State) ->
    {noreply, State}.

%% The bus is gone for good: the bus is down. Anything else is a crash,
%% and the restarted bus_srv listens again.
listener_down(Reason, State)
  when Reason =:= gone; Reason =:= enoent; Reason =:= eacces;
       element(1, Reason) =:= invalid_bus_file ->
    bus_down(Reason, State);
listener_down(Reason, State) ->
    {stop, {listener_down, Reason}, State}.

%% Tells the subscribers, ends their subscriptions and stops.
bus_down(Reason, State = #state{path = Path, subscribers = Subs, waiting = Waiting}) ->
    maps:foreach(fun(Pid, {_, Name}) -> Pid ! {bus_down, Name, Reason} end, Subs),
    _ = [gen_server:reply(From, {error, Reason}) || From <- Waiting],
    State1 = maps:fold(fun(Pid, _, S) -> delete(Pid, S) end, State#state{waiting = []}, Subs),
    ok = bus:forget_writer(Path),
    stop_if_idle(State1).
