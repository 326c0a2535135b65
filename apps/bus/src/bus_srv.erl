%% @doc One process per bus in use, doing only that bus's work: it owns
%% the bus's listener (through a backend, see bus_backend), monitors the
%% bus's subscribers and forwards each message as `{bus, Name, Message}'
%% (Name as given to subscribe, Message the binary as broadcast).
%%
%% Started by the first bus:subscribe/1 of a bus, stopped (leaving the bus)
%% after the last unsubscribe or subscriber death. Subscriptions live in
%% bus_tables, so a restarted bus_srv finds them again; since it may have
%% missed messages meanwhile, its subscribers are told `{bus_gap, Name}'
%% before anything else it forwards. If the bus goes away for good
%% (removed), each subscriber is sent `{bus_down, Name, Reason}' and its
%% subscription ends.
%%
%% The listener queues at most a credit window of messages (application
%% env `window', default ?WINDOW) and holds the bus while that is full;
%% this process takes what is queued when told `{bus_ready, Tag}', so its
%% own mailbox stays small whatever the traffic.
%%
%% A lane takes this process out of a message's way while every
%% subscriber just pushes (bus_flow:lane_budget/1): the listener's own
%% thread sends each message straight to them, and this process only
%% counts what went that way when the lane closes (after a budget that
%% keeps the mailbox sampling of bus_flow, or before anything else it
%% does: every call and message closes the lane first and reopens it
%% after, so that nothing it sends can overtake or be overtaken).
%%
%% A hot upgrade that changes the backend's native code (see bus.appup)
%% hands the listener over in code_change/3: the old listener is detached
%% without leaving the bus, what it queued is forwarded, and a new one
%% takes its place: no message lost or repeated. Messages a listener of
%% native version 3 or older sent are still in the mailbox, ahead of the
%% new one's, and are forwarded too (retired tags).
%%
%% The API functions here are aliases of bus's, kept for callers of
%% earlier releases.
-module(bus_srv).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

%% API.
-export([start_link/1]).
-export([subscribe/1, subscribe/2, activate/1, activate/2, unsubscribe/1, broadcast/2,
         broadcast/3, subscribers/1, info/1]).

%% gen_server.
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2, code_change/3]).

%% A restarted bus_srv with no subscribers waits this long for one.
-define(IDLE_TIMEOUT, 1000).
%% A lane is opened for this many subscribers at most: the listener's
%% thread sends to each before the bus's next broadcast can start.
-define(LANE_MAX, 8).
%% Items taken from the listener's queue per call.
-define(TAKE_MAX, 64).
%% The default credit window: messages the listener queues at most.
-define(WINDOW, 256).

%% New fields go at the end, so code_change/3 converts by appending and
%% dropping.
-record(state, {
    path :: binary(),
    %% The backend module (0.4.0: the native module).
    backend = bus_backend_nif :: module(),
    tag :: reference() | undefined,
    %% Tags of listeners handed over whose messages may still be in the
    %% mailbox; each is dropped when its {bus_retired, Tag} marker arrives.
    retired = [] :: [reference()],
    listener :: bus_backend:handle() | undefined,
    status = joining :: joining | listening | duplicate | {failed, bus:reason()},
    waiting = [] :: [gen_server:from()],
    %% 0.5.0: {Ref, Name}; since 0.6.0: {Ref, Flow}.
    subscribers = #{} :: #{pid() => {reference(), bus_flow:flow()}},
    received = 0 :: non_neg_integer(),
    forwarded = 0 :: non_neg_integer(),
    received_bytes = 0 :: non_neg_integer(),
    %% Since 0.5.0: subscribers are to be told of a gap once listening.
    gap = false :: boolean(),
    window = ?WINDOW :: pos_integer(),
    %% Since 0.6.0: taking nothing from the listener because a subscriber
    %% with overflow block has no room: since when (monotonic
    %% microseconds) and the listener's held_us then.
    blocked = false :: false | {integer(), non_neg_integer()},
    %% Time spent blocked, and the part of it the listener held the bus.
    blocked_us = 0 :: non_neg_integer(),
    block_held_us = 0 :: non_neg_integer(),
    %% A recheck of congested subscribers is due.
    recheck = false :: boolean(),
    %% Since 0.7.0: what bus_log has logged (and held back).
    logged = #{} :: bus_log:logged(),
    %% Since 0.15.0: whether a lane is open (or was, until closed by its
    %% budget: its count is still to be taken); off if the application
    %% env says `lanes' false.
    lane = closed :: open | closed | off
}).

%% Congested subscribers' mailboxes are sampled again after this long.
-define(RECHECK_MS, 10).

%% API.

-spec start_link(binary()) -> {ok, pid()}.
start_link(Path) ->
    gen_server:start_link(?MODULE, Path, []).

%% See bus:subscribe/1.
-spec subscribe(bus:name()) -> ok | {error, bus:reason()}.
subscribe(Name) ->
    bus:subscribe(Name).

%% See bus:subscribe/2.
-spec subscribe(bus:name(), bus:subscribe_options()) -> ok | {error, bus:reason()}.
subscribe(Name, Options) ->
    bus:subscribe(Name, Options).

%% See bus:activate/1.
-spec activate(bus:name()) -> ok | {error, bus:reason()}.
activate(Name) ->
    bus:activate(Name).

%% See bus:activate/2.
-spec activate(bus:name(), bus_flow:active()) -> ok | {error, bus:reason()}.
activate(Name, Active) ->
    bus:activate(Name, Active).

%% See bus:unsubscribe/1.
-spec unsubscribe(bus:name()) -> ok | {error, bus:reason()}.
unsubscribe(Name) ->
    bus:unsubscribe(Name).

%% See bus:broadcast/2.
-spec broadcast(bus:name(), bus:message()) -> ok | {error, bus:reason()}.
broadcast(Name, Message) ->
    bus:broadcast(Name, Message).

%% See bus:broadcast/3.
-spec broadcast(bus:name(), bus:message(), bus:broadcast_options()) ->
    ok | {error, bus:reason()}.
broadcast(Name, Message, Options) ->
    bus:broadcast(Name, Message, Options).

%% See bus:subscribers/1.
-spec subscribers(bus:name()) -> [pid()] | {error, bus:reason()}.
subscribers(Name) ->
    bus:subscribers(Name).

%% See bus:info/1.
-spec info(bus:name()) -> bus:info() | {error, bus:reason()}.
info(Name) ->
    bus:info(Name).

%% gen_server.

%% Nothing here may block: the supervisor's start_child, and with it every
%% other bus's first subscribe and the node's shutdown, waits for init/1.
%% The bus is joined right after, in handle_continue/2.
-spec init(binary()) -> {ok, #state{}, {continue, join | stop}}.
init(Path) ->
    process_flag(trap_exit, true),
    case bus_tables:claim_server(Path, self()) of
        false ->
            %% Another live bus_srv serves this bus (a start raced with a
            %% restart): leave quietly, callers retry and find it.
            {ok, #state{path = Path, status = duplicate}, {continue, stop}};
        true ->
            logger:update_process_metadata(#{domain => [bus], bus => Path}),
            Subscriptions = bus_tables:subscriptions_with_options(Path),
            _ = Subscriptions =/= [] andalso
                ?LOG_WARNING(#{what => bus_srv_restarted, subscribers => length(Subscriptions)}),
            Window = application:get_env(bus, window, ?WINDOW),
            State = lists:foldl(fun({Pid, Name, Saved}, S) ->
                                        add(Pid, Name, saved_options(Saved), S)
                                end,
                                #state{path = Path, backend = bus_backend:for(Path),
                                       window = Window, lane = lanes()},
                                Subscriptions),
            _ = Subscriptions =:= [] andalso
                erlang:send_after(?IDLE_TIMEOUT, self(), stop_if_idle),
            %% Subscribers already: this is a restart, and messages may have
            %% been missed since the last bus_srv died.
            {ok, State#state{gap = Subscriptions =/= []}, {continue, join}}
    end.

-spec handle_continue(join | stop, #state{}) ->
    {noreply, #state{}} | {stop, normal, #state{}}.
handle_continue(stop, State) ->
    {stop, normal, State};
handle_continue(join, State) ->
    relane(continue_join(State)).

continue_join(State) ->
    case listen(State, join) of
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
    {reply, term(), #state{}} | {noreply, #state{}} | {stop, normal, term(), #state{}}.
handle_call(Request, From, State) ->
    relane(on_call(Request, From, unlane(State))).

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, term(), #state{}}.
handle_info(Info, State) ->
    relane(on_info(Info, unlane(State))).

%% A lane again, if it may be, after whatever this process did.
relane({reply, Reply, State}) -> {reply, Reply, lane(State)};
relane({noreply, State}) -> {noreply, lane(State)};
relane(Stop) -> Stop.

on_call({subscribe, Pid, Name}, From, State) ->
    %% From bus of 0.5.0, during an upgrade.
    on_call({subscribe, Pid, Name, bus_flow:defaults()}, From, State);
on_call({subscribe, _, _, _}, _From, State = #state{status = {failed, Reason}}) ->
    case stop_if_idle(State) of
        {stop, normal, State1} -> {stop, normal, {error, Reason}, State1};
        {noreply, State1} -> {reply, {error, Reason}, State1}
    end;
on_call({subscribe, Pid, Name, Options}, From, State0 = #state{path = Path}) ->
    %% Like activate: what was broadcast before this call is forwarded (or
    %% held) first, under the options it was broadcast under.
    State = case State0#state.status of
        listening -> take(infinity, settle(State0));
        _ -> State0
    end,
    true = bus_tables:add_subscription(Path, Pid, Name, Options),
    State1 = resume(add(Pid, Name, Options, State)),
    case State1#state.status of
        listening -> {reply, ok, State1};
        joining -> {noreply, State1#state{waiting = [From | State1#state.waiting]}}
    end;
on_call({activate, Pid, Active}, _From, State0) ->
    %% Like info: what was broadcast before this call is forwarded (or
    %% held) first, under the mode it was broadcast in.
    State = #state{path = Path, subscribers = Subs} = take(infinity, settle(State0)),
    case Subs of
        #{Pid := {Ref, Flow}} ->
            Flow1 = bus_flow:activate(Active, Flow),
            true = bus_tables:save_options(Path, Pid, bus_flow:persisted(Flow1)),
            State1 = delivered(Flow, Flow1, State),
            {reply, ok, resume(State1#state{subscribers = Subs#{Pid := {Ref, Flow1}}})};
        _ ->
            {reply, {error, not_subscribed}, State}
    end;
on_call({unsubscribe, Pid}, _From, State) ->
    case stop_if_idle(resume(delete(Pid, State))) of
        {stop, normal, State1} -> {stop, normal, ok, State1};
        {noreply, State1} -> {reply, ok, State1}
    end;
on_call(counts, _From, State0 = #state{backend = Backend, listener = Listener}) ->
    %% What the listener has queued is forwarded first (as far as the
    %% subscribers with overflow block allow): every broadcast that
    %% returned before this call is counted (its {bus_ready, Tag} may
    %% still be on its way).
    State = case Listener of
        undefined -> State0;
        _ -> take(infinity, settle(State0))
    end,
    Counts = #{received => State#state.received, forwarded => State#state.forwarded,
               received_bytes => State#state.received_bytes,
               backend => bus_backend:name(Backend), native => Backend:version(Listener),
               blocked => State#state.blocked =/= false,
               blocked_us => blocked_us(State), block_held_us => block_held_us(State),
               subscriptions => maps:map(fun(_, {_, Flow}) -> bus_flow:info(Flow) end,
                                         State#state.subscribers)},
    {reply, case Listener of
                undefined -> Counts;
                _ -> Counts#{listener => Backend:counters(Listener)}
            end, State};
on_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

on_info({bus_ready, Tag}, State = #state{tag = Tag, window = Window}) ->
    %% At most a window at a time, so that calls and monitors are served
    %% between batches under sustained traffic: the rest after the
    %% messages already in the mailbox.
    {noreply, take(Window, State)};
on_info({bus_retired, Tag}, State = #state{retired = Retired}) ->
    %% Sent after a handed-over listener's thread ended: nothing of it follows.
    {noreply, State#state{retired = lists:delete(Tag, Retired)}};
on_info({bus_listening, Tag}, State = #state{tag = Tag, waiting = Waiting}) ->
    _ = [gen_server:reply(From, ok) || From <- Waiting],
    {noreply, tell_gap(State#state{status = listening, waiting = []})};
on_info({bus_gap, Tag}, State = #state{tag = Tag}) ->
    {noreply, tell_gap(State#state{gap = true})};
on_info({bus_bridge_gap, _Count}, State) ->
    %% The bus's bridge dropped messages from other nodes (since 0.9.0).
    {noreply, tell_gap(State#state{gap = true})};
on_info({bus_listener_down, Tag, Reason},
            State = #state{tag = Tag, backend = Backend, listener = Listener}) ->
    %% What it queued before it failed goes out first, all of it: it is
    %% at most a window.
    State1 = case Listener of
        undefined -> State;
        _ -> take_all(Backend, Listener, State)
    end,
    listener_down(Reason, State1#state{listener = undefined});
on_info({'DOWN', _, process, Pid, _}, State) ->
    stop_if_idle(resume(delete(Pid, State)));
on_info(recheck, State) ->
    {noreply, resume(recheck(State#state{recheck = false}))};
on_info(stop_if_idle, State) ->
    stop_if_idle(State);
on_info(_Info, State) ->
    %% Messages of a listener this process has stopped.
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{status = duplicate}) ->
    ok;
terminate(_Reason, State = #state{path = Path}) ->
    _ = bus_tables:release_server(Path, self()),
    _ = unlisten(State),
    ok.

%% The state has had this shape since 0.15.0, which appended the lane
%% (0.7.0 to 0.14.0 had the same shape without it). Each release that
%% changes the shape converts here, from and back to exactly the previous
%% release's. A downgrade closes the lane first (its count taken); to
%% 0.14.0 or earlier it also drops the field (0.16.0 keeps 0.15.0's
%% shape). An appup that says {advanced, {handover, Nif}} also
%% moves the listener of a bus served by the NIF backend to the native
%% module Nif, loaded by then (see handover/3).
-spec code_change(term(), tuple(), term()) -> {ok, tuple()}.
code_change({down, _} = Vsn, State, Extra) ->
    {ok, State1} = change(Vsn, unlane(State), Extra),
    case keeps_lane(Extra) of
        true -> {ok, State1};
        false -> {ok, erlang:delete_element(#state.lane, State1)}
    end;
code_change(Vsn, State, Extra) when tuple_size(State) =:= #state.lane - 1 ->
    change(Vsn, erlang:insert_element(#state.lane, State, lanes()), Extra);
code_change(Vsn, State, Extra) ->
    change(Vsn, State, Extra).

change({down, _Vsn}, State = #state{path = Path, window = Window,
                                         backend = bus_backend_nif}, {handover, Nif}) ->
    Listen = fun(Tag, From) ->
        case Nif:listen(Path, self(), Tag, From, Window) of
            {ok, Listener} -> {ok, {Nif, Listener}};
            {error, _} = Error -> Error
        end
    end,
    {ok, handover(State, Listen, bus_backend_nif)};
change(_OldVsn, State = #state{path = Path, window = Window, backend = bus_backend_nif},
            {handover, _Nif}) ->
    Listen = fun(Tag, From) -> bus_backend_nif:listen(Path, self(), Tag, From, Window) end,
    {ok, handover(State, Listen, bus_backend_nif)};
change(_Vsn, State = #state{backend = bus_backend_port}, {handover, _Nif}) ->
    %% A new native module does not concern a bus served by port programs.
    {ok, State};
change({down, _Vsn}, State = #state{path = Path, window = Window,
                                    backend = bus_backend_port}, _Extra) ->
    %% Releases before 0.10.0 have no port backend: the bus moves to the
    %% NIF, joining afresh (a port program's standing cannot be handed to
    %% another OS process), and its subscribers are told of a gap.
    Listen = fun(Tag, From) -> bus_backend_nif:listen(Path, self(), Tag, From, Window) end,
    {ok, handover(State, Listen, bus_backend_nif)};
change(_OldVsn, State = #state{}, _Extra) ->
    {ok, State}.

%% Internal.

%% Whether the release a downgrade goes to has the field lane: 0.15.0
%% and later, whose appups hand listeners over to native version 9 or
%% later. (A downgrade's module version is the old beam's checksum: the
%% native module named in Extra is what tells the releases apart.)
keeps_lane({handover, Nif}) ->
    "bus_nif_" ++ Native = atom_to_list(Nif),
    list_to_integer(Native) >= 9;
keeps_lane(_Extra) ->
    false.

%% Takes from the listener's queue up to Budget items (or all), and no
%% more than the subscribers with overflow block have room for: with no
%% room, the node is blocked (the listener's window fills and it holds
%% the bus) until they make some. More left with room: the rest after the
%% messages already in the mailbox.
take(_Budget, State = #state{listener = undefined}) ->
    State;
take(Budget, State = #state{backend = Backend, listener = L, tag = Tag}) ->
    case min(Budget, room(State)) of
        0 ->
            block(State);
        Asked ->
            case take_up_to(Backend, L, Asked, State) of
                {State1, true} ->
                    State1;
                {State1, false} when Asked =:= Budget ->
                    self() ! {bus_ready, Tag},
                    State1;
                {State1, false} ->
                    %% Stopped by the room, not the budget: blocked unless
                    %% the subscribers took some at once.
                    take(minus(Budget, Asked), State1)
            end
    end.

%% Every message the listener acknowledged so far is there to take.
settle(State = #state{listener = undefined}) ->
    State;
settle(State = #state{backend = Backend, listener = L}) ->
    ok = Backend:settle(L),
    State.

minus(infinity, _) -> infinity;
minus(Budget, N) -> Budget - N.

%% Forwards what the listener has queued, in order, up to Budget items
%% (or infinity); says whether the queue was drained (if not, more may wait).
take_up_to(Backend, Listener, Budget, State) ->
    Asked = case Budget of
        infinity -> ?TAKE_MAX;
        _ -> min(Budget, ?TAKE_MAX)
    end,
    Items = Backend:take(Listener, Asked),
    State1 = forward(Items, State),
    Left = case Budget of
        infinity -> infinity;
        _ -> Budget - length(Items)
    end,
    %% Fewer than asked: the queue is empty, and its next item will come
    %% with a new {bus_ready, Tag}.
    if
        length(Items) < Asked -> {State1, true};
        Left =:= 0 -> {State1, false};
        true -> take_up_to(Backend, Listener, Left, State1)
    end.

%% Forwards everything the listener has queued, room or not.
take_all(Backend, Listener, State) ->
    {State1, true} = take_up_to(Backend, Listener, infinity, State),
    State1.

%% Feeds the listener's items to every subscriber, as messages and gaps.
forward([], State) ->
    State;
forward(Items, State = #state{received = R, received_bytes = B}) ->
    {Stream, R1, B1} = lists:foldr(fun
        (Message, {S, N, Bytes}) when is_binary(Message) ->
            {[{message, Message} | S], N + 1, Bytes + byte_size(Message)};
        ({own, Message}, {S, N, Bytes}) ->
            {[{message, Message} | S], N + 1, Bytes + byte_size(Message)};
        ({dropped, _}, {S, N, Bytes}) ->
            {[gap | S], N, Bytes};
        (gap, {S, N, Bytes}) ->
            {[gap | S], N, Bytes}
    end, {[], R, B}, Items),
    feed(Stream, State#state{received = R1, received_bytes = B1}).

feed(Stream, State = #state{path = Path, subscribers = Subs}) ->
    {Subs1, Dropped, State1} =
        maps:fold(fun(Pid, {Ref, Flow}, {Acc, D, S}) ->
                          Flow1 = bus_flow:feed(Stream, Flow),
                          _ = went_passive(Flow, Flow1) andalso
                              bus_tables:save_options(Path, Pid, bus_flow:persisted(Flow1)),
                          {Acc#{Pid => {Ref, Flow1}},
                           D + bus_flow:dropped(Flow1) - bus_flow:dropped(Flow),
                           delivered(Flow, Flow1, S)}
                  end, {#{}, 0, State}, Subs),
    State2 = case Dropped of
        0 -> State1;
        _ -> event(bus_dropped, warning, #{}, Dropped, State1)
    end,
    arm_recheck(State2#state{subscribers = Subs1}).

went_passive(Flow0, Flow1) ->
    bus_flow:is_passive(Flow1) andalso not bus_flow:is_passive(Flow0).

%% Counts what a flow delivered between two of its states.
delivered(Flow0, Flow1, State = #state{forwarded = F}) ->
    State#state{forwarded = F + bus_flow:delivered(Flow1) - bus_flow:delivered(Flow0)}.

%% Tells the subscribers, in their streams, that messages may be missing
%% here, if so.
tell_gap(State = #state{gap = false}) ->
    State;
tell_gap(State = #state{subscribers = Subs}) ->
    State1 = event(bus_gap, notice, #{subscribers => map_size(Subs)}, 1, State),
    feed([gap], State1#state{gap = false}).

%% Logs a bus event, rate-limited (bus_log; the bus's pathname and domain
%% [bus] are in the process metadata).
event(What, Level, Report, Count, State = #state{logged = Logged}) ->
    State#state{logged = bus_log:event(What, Level, Report, Count, Logged)}.

%% What the subscribers with overflow block have room for.
room(#state{subscribers = Subs}) ->
    maps:fold(fun(_, {_, Flow}, Min) -> min(bus_flow:room(Flow), Min) end, infinity, Subs).

%% Congested subscribers are sampled again in ?RECHECK_MS.
arm_recheck(State = #state{recheck = true}) ->
    State;
arm_recheck(State = #state{subscribers = Subs}) ->
    case lists:any(fun({_, Flow}) -> bus_flow:is_congested(Flow) end, maps:values(Subs)) of
        true ->
            erlang:send_after(?RECHECK_MS, self(), recheck),
            State#state{recheck = true};
        false ->
            State
    end.

recheck(State) ->
    arm_recheck(map_flows(fun bus_flow:recheck/1, State)).

%% Applies F to every subscriber's flow, counting what each delivered
%% meanwhile.
map_flows(F, State = #state{subscribers = Subs}) ->
    maps:fold(fun(Pid, {Ref, Flow}, S = #state{subscribers = Acc}) ->
                      Flow1 = F(Flow),
                      delivered(Flow, Flow1, S#state{subscribers = Acc#{Pid := {Ref, Flow1}}})
              end, State, Subs).

%% Opens a lane if every subscriber just pushes, at most ?LANE_MAX of
%% them, and nothing else is under way: listening, no gap to tell, no
%% retired listener's messages in the mailbox, not blocked. The listener
%% says busy if items wait: their {bus_ready, Tag} is on its way, and the
%% lane is tried again after they are forwarded. When the lane's budget
%% is spent (when the first of its subscribers is due for a mailbox
%% sample) the listener sends {bus_ready, Tag}, which closes it here.
lane(State = #state{lane = closed, status = listening, listener = L, gap = false,
                    retired = [], blocked = false, subscribers = Subs,
                    backend = Backend, tag = Tag})
  when L =/= undefined, map_size(Subs) > 0, map_size(Subs) =< ?LANE_MAX ->
    Budget = maps:fold(fun(_, {_, Flow}, Min) -> min(bus_flow:lane_budget(Flow), Min) end,
                       infinity, Subs),
    Members = maps:fold(fun(Pid, {_, Flow}, Acc) -> [{Pid, bus_flow:name(Flow)} | Acc] end,
                        [], Subs),
    case Budget > 0 andalso Backend:open_lane(L, Members, Budget, {bus_ready, Tag}) of
        ok -> State#state{lane = open};
        _ -> State
    end;
lane(State) ->
    State.

%% Whether this bus_srv opens lanes: the application env's `lanes'
%% (default true), read when it starts.
lanes() ->
    case application:get_env(bus, lanes, true) of
        false -> off;
        _ -> closed
    end.

%% Closes the lane, if open, and counts what went through it as
%% forwarded to each of its subscribers (its members: they have not
%% changed since it opened, every change closes it first).
unlane(State = #state{lane = Lane}) when Lane =/= open ->
    State;
unlane(State = #state{backend = Backend, listener = L, received = R, received_bytes = B}) ->
    {N, Bytes} = Backend:close_lane(L),
    map_flows(fun(Flow) -> bus_flow:sent_by_lane(N, Flow) end,
              State#state{lane = closed, received = R + N, received_bytes = B + Bytes}).

%% Blocked: the listener's held_us now, to count how long it holds the bus
%% because of it.
block(State0 = #state{blocked = false, backend = Backend, listener = L}) ->
    State = event(bus_blocked, notice, #{}, 1, State0),
    State#state{blocked = {erlang:monotonic_time(microsecond), held_us(Backend, L)}};
block(State) ->
    State.

%% Takes again if blocked and there is room now.
resume(State = #state{blocked = false}) ->
    State;
resume(State) ->
    case room(State) of
        0 -> State;
        _ -> take(State#state.window, unblock(State))
    end.

unblock(State = #state{blocked = {Since, Held0}, backend = Backend, listener = L}) ->
    State#state{blocked = false,
                blocked_us = State#state.blocked_us + erlang:monotonic_time(microsecond) - Since,
                block_held_us = State#state.block_held_us + held_us(Backend, L) - Held0}.

blocked_us(#state{blocked = false, blocked_us = Us}) ->
    Us;
blocked_us(#state{blocked = {Since, _}, blocked_us = Us}) ->
    Us + erlang:monotonic_time(microsecond) - Since.

block_held_us(#state{blocked = false, block_held_us = Us}) ->
    Us;
block_held_us(#state{blocked = {_, Held0}, block_held_us = Us, backend = Backend, listener = L}) ->
    Us + held_us(Backend, L) - Held0.

held_us(_Backend, undefined) ->
    0;
held_us(Backend, Listener) ->
    maps:get(held_us, Backend:counters(Listener), 0).

%% Moves the listener to a new one made by Listen(Tag, From), in place on
%% the bus: no message lost or repeated. The old listener has ended when
%% detach returns; what it queued is forwarded now, followed by the
%% {bus_retired, Tag} marker. If the old listener was not on the bus
%% (still joining, or failed), the new one joins afresh and the
%% subscribers are told of a gap.
handover(State = #state{listener = undefined}, _Listen, Backend) ->
    State#state{backend = Backend};
handover(State = #state{lane = open}, Listen, Backend) ->
    %% What went through the lane is counted before the listener goes.
    handover(unlane(State), Listen, Backend);
handover(State = #state{backend = Old, tag = OldTag, listener = Listener, retired = Retired,
                        status = Status},
         Listen, Backend) ->
    T0 = erlang:monotonic_time(microsecond),
    FromNative = Old:version(Listener),
    From = case Old:detach(Listener) of
        {ok, Standing} -> Standing;
        {error, _} -> join
    end,
    State0 = take_all(Old, Listener, State),
    %% For operators (and the upgrade test): how the last handover went;
    %% queued counts the old listener's messages not yet forwarded.
    {message_queue_len, Queued} = process_info(self(), message_queue_len),
    self() ! {bus_retired, OldTag},
    Tag = make_ref(),
    State1 = State0#state{backend = Backend, retired = [OldTag | Retired],
                          listener = undefined, tag = Tag},
    State2 = case Listen(Tag, From) of
        {ok, New} when From =:= join ->
            State1#state{listener = New, status = joining, gap = true};
        {ok, New} ->
            %% Subscribers waiting for the old listener's
            %% {bus_listening, OldTag} are answered by the new one's.
            State1#state{listener = New, status = Status};
        {error, Reason} ->
            %% The standing cannot be taken over: leave from it, then
            %% handle this like a listener that went down.
            _ = From =/= join andalso Old:abandon(Listener),
            self() ! {bus_listener_down, Tag, Reason},
            State1
    end,
    put(bus_handover, #{from => Old, to => Backend, standing => From, queued => Queued,
                        from_native => FromNative,
                        micros => erlang:monotonic_time(microsecond) - T0}),
    State2.

listen(State = #state{path = Path, backend = Backend, window = Window}, From) ->
    Tag = make_ref(),
    case Backend:listen(Path, self(), Tag, From, Window) of
        {ok, Listener} ->
            State#state{tag = Tag, listener = Listener, status = joining};
        {error, Reason} ->
            State#state{tag = undefined, listener = undefined, status = {failed, Reason}}
    end.

unlisten(#state{listener = undefined}) ->
    ok;
unlisten(#state{backend = Backend, listener = Listener}) ->
    Backend:stop(Listener).

%% Options saved by a bus_srv that died (none: subscribed before 0.6.0).
saved_options(Saved) ->
    case bus_flow:options(Saved) of
        {ok, Options} -> Options;
        error -> bus_flow:defaults()
    end.

%% A new subscriber, or new options for one (what is held for it stays).
add(Pid, Name, Options, State = #state{subscribers = Subs}) ->
    case Subs of
        #{Pid := {Ref, Flow}} ->
            Flow1 = bus_flow:set_options(Options, bus_flow:rename(Name, Flow)),
            delivered(Flow, Flow1, State#state{subscribers = Subs#{Pid := {Ref, Flow1}}});
        _ ->
            Ref = erlang:monitor(process, Pid),
            State#state{subscribers = Subs#{Pid => {Ref, bus_flow:new(Pid, Name, Options)}}}
    end.

delete(Pid, State = #state{path = Path, subscribers = Subs}) ->
    true = bus_tables:delete_subscription(Path, Pid),
    case maps:take(Pid, Subs) of
        {{Ref, _}, Subs1} ->
            true = erlang:demonitor(Ref, [flush]),
            State#state{subscribers = Subs1};
        error ->
            State
    end.

%% The last subscriber is gone: leave the bus and stop. The claim on the
%% bus goes first, so that a new subscriber starts a new bus_srv.
stop_if_idle(State = #state{subscribers = Subs, waiting = []}) when map_size(Subs) =:= 0 ->
    _ = bus_tables:release_server(State#state.path, self()),
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
    ?LOG_ERROR(#{what => listener_down, reason => Reason}),
    {stop, {listener_down, Reason}, State}.

%% Tells the subscribers, after what was held for them, ends their
%% subscriptions and stops.
bus_down(Reason, State = #state{path = Path, backend = Backend, subscribers = Subs,
                                waiting = Waiting}) ->
    ?LOG_WARNING(#{what => bus_down, reason => Reason, subscribers => map_size(Subs)}),
    maps:foreach(fun(Pid, {_, Flow}) ->
                         Flow1 = bus_flow:drain(Flow),
                         Pid ! {bus_down, bus_flow:name(Flow1), Reason}
                 end, Subs),
    _ = [gen_server:reply(From, {error, Reason}) || From <- Waiting],
    State1 = maps:fold(fun(Pid, _, S) -> delete(Pid, S) end,
                       State#state{waiting = [], blocked = false}, Subs),
    ok = Backend:forget(Path),
    stop_if_idle(State1).
