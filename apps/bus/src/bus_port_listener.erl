%% @doc The port backend's listener of one bus: this process owns one port
%% program (bus_port_program) listening on that bus for a bus_srv (the
%% owner), and keeps what it sends until the owner takes it. One program
%% per bus, so that the credit window of one bus is that program's alone:
%% a bus whose owner stops taking holds its own program, never another
%% bus's.
%%
%% The credit window crosses the port, split in two halves: the program
%% sends at most half the window of items the owner has not taken (each
%% take/2 gives back credit for what it took), and its own queue, the
%% other half, holds the bus when full, as the NIF's listener does. So at
%% most Window messages wait here and in the program, as with the NIF
%% (Window + 1 if it is odd).
%%
%% A program that dies (killed, crashed) is started again at once and
%% joins the bus afresh; its owner gets a `gap' item where messages may be
%% missing, after everything the dead program sent. More than ?MAX_RESTARTS
%% restarts in ?RESTART_PERIOD ms and the listener is down with
%% `{port_exited, Status}'.
%%
%% Renewing the program (a release upgrade that ships a new one): the old
%% program is told `U'; after its next message it stops just before
%% re-arming, holding the bus's writers back, and says `A'; a new program
%% joins; then the old one leaves. Nothing is lost or repeated and no gap
%% is told (the handover the spin model checks: test/model/bus.pml,
%% HANDOVER). It waits for that next message: on an idle bus, until one
%% comes.
-module(bus_port_listener).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/4, take/2, stop/1, counters/1, request/2, renew/2]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2, code_change/3]).

-export_type([renewal/0]).

-define(MAX_RESTARTS, 5).
-define(RESTART_PERIOD, 10000).
%% How long stop/1 waits for the program to leave its bus before closing
%% its stdin (which makes it leave too).
-define(STOP_TIMEOUT, 5000).
-define(CALL_TIMEOUT, 5000).

%% changed: renew a program started from another executable than the
%% one this code would start; all: renew it whatever it is.
-type renewal() :: changed | all.

-record(state, {
    path :: binary(),
    owner :: pid(),
    tag :: reference(),
    window :: pos_integer(),
    port :: port() | undefined,
    os_pid :: non_neg_integer() | undefined,
    %% hello: waiting for the program's hello; joining: for its J frame.
    status = hello :: hello | joining | listening | failed,
    %% Whether the owner was told {bus_listening, Tag} (by the first program).
    told_listening = false :: boolean(),
    queue = queue:new() :: queue:queue(bus_backend:item()),
    %% Items at the head of the queue sent by programs that died: taking
    %% them gives the running program no credit.
    stale = 0 :: non_neg_integer(),
    restarts = [] :: [integer()],
    restarted = 0 :: non_neg_integer(),
    next_id = 0 :: non_neg_integer(),
    %% Requests sent to the program, by Id.
    pending = #{} :: #{non_neg_integer() => {counters | request, gen_server:from()}},
    stopping :: gen_server:from() | undefined,
    %% Since 0.11.0. The executable the running program was started from
    %% (undefined: started by 0.10.0 code).
    exe :: file:filename() | undefined,
    %% A renewal under way: asked (U sent), or joining (A came: the new
    %% program is joining while the old one, Old, holds the writers).
    renewing = false :: false | asked | {joining, Old :: port()},
    %% Renewed programs not yet gone, and the requests they still owe.
    retired = #{} :: #{port() => [non_neg_integer()]}
}).

%% The fields of 0.10.0's state (code_change/3).
-define(FIELDS_0_10_0, 15).

%% API.

-spec start_link(binary(), pid(), reference(), pos_integer()) -> {ok, pid()}.
start_link(Path, Owner, Tag, Window) ->
    gen_server:start_link(?MODULE, {Path, Owner, Tag, Window}, []).

%% Up to Max items, oldest first. Never waits for the program.
-spec take(pid(), pos_integer()) -> [bus_backend:item()].
take(Pid, Max) ->
    try gen_server:call(Pid, {take, Max}, ?CALL_TIMEOUT)
    catch exit:{noproc, _} -> [];
          exit:{normal, _} -> []
    end.

%% Returns once the program has left the bus (or, if it does not within
%% ?STOP_TIMEOUT, once its stdin is closed, which makes it leave).
-spec stop(pid()) -> ok.
stop(Pid) ->
    try gen_server:call(Pid, stop, ?STOP_TIMEOUT + ?CALL_TIMEOUT)
    catch exit:{noproc, _} -> ok;
          exit:{normal, _} -> ok
    end.

%% The program's listener counters, with what waits here counted as
%% queued; restarts: how many times a program was started again; os_pid:
%% the running program's.
-spec counters(pid()) -> #{atom() => non_neg_integer()}.
counters(Pid) ->
    try gen_server:call(Pid, counters, ?CALL_TIMEOUT)
    catch exit:_ -> #{}
    end.

%% A request (bus_port_frames:request()) answered by this listener's own
%% program: a broadcast it makes comes back to its listener own-marked.
-spec request(pid(), bus_port_frames:request()) -> term().
request(Pid, Request) ->
    try gen_server:call(Pid, {request, Request}, infinity)
    catch exit:{noproc, _} -> {error, closed}
    end.

%% Renews the program if it is one to renew (see renewal()): at once if a
%% renewal can start, else not at all (a program still joining, failed,
%% or being renewed already).
-spec renew(pid(), renewal()) -> ok.
renew(Pid, Which) ->
    gen_server:cast(Pid, {renew, Which}).

%% gen_server.

-spec init({binary(), pid(), reference(), pos_integer()}) ->
    {ok, #state{}, {continue, start}}.
init({Path, Owner, Tag, Window}) ->
    %% A port whose program died can fail a write (epipe): an exit signal,
    %% handled as the program's death.
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{domain => [bus], bus => Path}),
    _ = erlang:monitor(process, Owner),
    {ok, #state{path = Path, owner = Owner, tag = Tag, window = Window}, {continue, start}}.

-spec handle_continue(start, #state{}) -> {noreply, #state{}}.
handle_continue(start, State) ->
    {noreply, start_program(State)}.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}} | {stop, normal, ok, #state{}}.
handle_call({take, Max}, _From, State) ->
    {Items, State1} = take_items(Max, State),
    {reply, Items, State1};
handle_call(counters, From, State = #state{port = Port, status = Status})
  when Port =/= undefined, Status =/= hello ->
    {noreply, send_request(info, {counters, From}, State)};
handle_call(counters, _From, State) ->
    {reply, local_counters(#{}, State), State};
handle_call({request, Request}, From, State = #state{port = Port}) when Port =/= undefined ->
    {noreply, send_request(Request, {request, From}, State)};
handle_call({request, _}, _From, State) ->
    {reply, {error, closed}, State};
handle_call(stop, _From, State = #state{port = undefined}) ->
    {stop, normal, ok, State};
handle_call(stop, From, State = #state{port = Port}) ->
    true = erlang:port_command(Port, bus_port_frames:stop()),
    erlang:send_after(?STOP_TIMEOUT, self(), stop_timeout),
    {noreply, State#state{stopping = From}};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({renew, Which}, State = #state{status = listening, renewing = false,
                                           port = Port, exe = Exe})
  when Port =/= undefined ->
    case Which =:= all orelse Exe =/= bus_port_program:executable() of
        true ->
            true = erlang:port_command(Port, bus_port_frames:hand_over()),
            {noreply, State#state{renewing = asked}};
        false ->
            {noreply, State}
    end;
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, normal, #state{}}.
handle_info({Port, {data, Data}}, State = #state{port = Port}) ->
    {noreply, frame(bus_port_frames:decode(Data), State)};
handle_info({Old, {exit_status, _}}, State = #state{renewing = {joining, Old}}) ->
    %% The old program died while holding the writers for the new one:
    %% its hold is undone, so messages may be missed until the new joins.
    ?LOG_WARNING(#{what => port_program_renewal_broken}),
    {noreply, gone_old(Old, enqueue(gap, State#state{renewing = false}))};
handle_info({Old, {data, Data}}, State) when is_port(Old), Old =/= State#state.port ->
    %% A renewed program answering what it was asked before the switch
    %% (not through frame/2: the new program may still owe its hello).
    case bus_port_frames:decode(Data) of
        {reply, Id, Reply} -> {noreply, reply(Id, Reply, State)};
        _ -> {noreply, State}
    end;
handle_info({Old, {exit_status, _}}, State) when is_port(Old), Old =/= State#state.port ->
    {noreply, gone_old(Old, State)};
handle_info({Port, {exit_status, Status}}, State = #state{port = Port, stopping = undefined}) ->
    {noreply, program_died(Status, State#state{port = undefined, os_pid = undefined})};
handle_info({Port, {exit_status, _}}, State = #state{port = Port, stopping = From}) ->
    gen_server:reply(From, ok),
    {stop, normal, State#state{port = undefined}};
handle_info({'EXIT', Port, Reason}, State = #state{port = Port, stopping = undefined}) ->
    {noreply, program_died({port_closed, Reason}, State#state{port = undefined,
                                                             os_pid = undefined})};
handle_info({'EXIT', Port, _}, State = #state{port = Port, stopping = From}) ->
    gen_server:reply(From, ok),
    {stop, normal, State#state{port = undefined}};
handle_info(stop_timeout, State = #state{stopping = From}) when From =/= undefined ->
    ?LOG_WARNING(#{what => port_program_slow_to_stop, os_pid => State#state.os_pid}),
    ok = bus_port_program:close(State#state.port),
    gen_server:reply(From, ok),
    {stop, normal, State#state{port = undefined}};
handle_info({'DOWN', _, process, Owner, _}, State = #state{owner = Owner}) ->
    %% Closing its stdin makes the program leave the bus.
    ok = bus_port_program:close(State#state.port),
    ok = close_old(State),
    {stop, normal, State#state{port = undefined}};
handle_info(_Info, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(Reason, State = #state{port = Port}) ->
    ok = bus_port_program:close(Port),
    ok = close_old(State),
    _ = Reason =/= normal andalso Reason =/= shutdown
        andalso State#state.status =/= failed
        andalso tell(State, {bus_listener_down, State#state.tag, {port_listener, Reason}}),
    ok.

%% From 0.10.0 (no renewal then) and back (a renewal under way is cut
%% short: the old program leaves, and messages may be missed until the
%% new one joins).
-spec code_change(term(), tuple(), term()) -> {ok, tuple()}.
code_change({down, _Vsn}, State = #state{}, _Extra) ->
    ok = close_old(State),
    State0 = case State#state.renewing of
        {joining, _} -> enqueue(gap, State);
        _ -> State
    end,
    %% Renewed programs still finishing are closed, what they owe answered.
    State1 = maps:fold(fun(Old, _, S) ->
                               ok = bus_port_program:close(Old),
                               gone_old(Old, S)
                       end, State0, State0#state.retired),
    {ok, list_to_tuple(lists:sublist(tuple_to_list(State1), ?FIELDS_0_10_0 + 1))};
code_change(_OldVsn, State, _Extra) when tuple_size(State) =:= ?FIELDS_0_10_0 + 1 ->
    {ok, list_to_tuple(tuple_to_list(State) ++ [undefined, false, #{}])};
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

%% Internal.

start_program(State) ->
    case bus_port_program:open() of
        {ok, Port} ->
            Half = (State#state.window + 1) div 2,
            true = erlang:port_command(Port, bus_port_frames:listen(State#state.path, Half)),
            State#state{port = Port, status = hello, exe = bus_port_program:executable()};
        {error, Reason} ->
            failed(Reason, State)
    end.

%% The old program holds the writers: the new one joins (its J then
%% makes the old one leave). What the old one sent gives the new no
%% credit.
held(State = #state{port = Old, renewing = asked}) ->
    State1 = start_program(State#state{stale = waiting(State#state.queue),
                                       retired = (State#state.retired)#{
                                           Old => maps:keys(State#state.pending)}}),
    case State1 of
        #state{status = failed} ->
            %% No new program: the old one leaves, the listener is down.
            ok = bus_port_program:close(Old),
            State1#state{renewing = false};
        _ ->
            State1#state{renewing = {joining, Old}}
    end;
held(State) ->
    ?LOG_ERROR(#{what => port_program_bad_frame, frame => held}),
    State.

%% The answer to request Id, from the program or from a renewed one still
%% finishing (whatever the new program's status: its hello may not have
%% come yet).
reply(Id, Reply, State = #state{pending = Pending}) ->
    case maps:take(Id, Pending) of
        {{counters, From}, Pending1} ->
            Counters = case Reply of
                {ok, #{} = C} -> C;
                _ -> #{}
            end,
            gen_server:reply(From, local_counters(Counters, State)),
            State#state{pending = Pending1};
        {{request, From}, Pending1} ->
            gen_server:reply(From, Reply),
            State#state{pending = Pending1};
        error ->
            ?LOG_ERROR(#{what => port_program_bad_frame, reply_to => Id}),
            State
    end.

%% A renewed program has gone: what it still owed is answered here.
gone_old(Old, State = #state{retired = Retired, pending = Pending}) ->
    Owed = maps:get(Old, Retired, []),
    State1 = State#state{pending = maps:without(Owed, Pending),
                         retired = maps:remove(Old, Retired)},
    answer_lost(maps:values(maps:with(Owed, Pending)), State1),
    State1.

close_old(#state{renewing = {joining, Old}}) ->
    bus_port_program:close(Old);
close_old(_State) ->
    ok.

frame(Frame, State = #state{status = hello}) ->
    case bus_port_program:hello(Frame) of
        {ok, OsPid} ->
            State#state{os_pid = OsPid, status = joining};
        {error, Reason} ->
            ?LOG_ERROR(#{what => port_program_refused, reason => Reason}),
            ok = bus_port_program:close(State#state.port),
            failed(Reason, State#state{port = undefined})
    end;
frame(listening, State = #state{renewing = {joining, Old}}) ->
    %% The new program is counted: the old one leaves, and the writers go
    %% on, to the new one only.
    _ = erlang:port_command(Old, bus_port_frames:stop()),
    ?LOG_NOTICE(#{what => port_program_renewed, os_pid => State#state.os_pid}),
    State#state{status = listening, renewing = false};
frame(listening, State = #state{told_listening = false}) ->
    tell(State, {bus_listening, State#state.tag}),
    State#state{status = listening, told_listening = true};
frame(listening, State) ->
    State#state{status = listening};
frame({item, Item}, State) ->
    enqueue(Item, State);
frame(held, State) ->
    held(State);
frame({failed, Reason}, State) ->
    failed(Reason, State);
frame({reply, Id, Reply}, State) ->
    reply(Id, Reply, State);
frame({complaint, Text}, State) ->
    %% The program found a frame of this node's malformed: a bug here.
    ?LOG_ERROR(#{what => port_program_complaint, text => Text}),
    State;
frame({malformed, Data}, State) ->
    ?LOG_ERROR(#{what => port_program_bad_frame, frame => Data}),
    State.

%% A program that left without being asked (Status: its exit status, or
%% why its port closed): start another, after a gap.
program_died(Status, State = #state{status = failed}) ->
    ?LOG_NOTICE(#{what => port_program_exited, status => Status}),
    State;
program_died(Status, State00) ->
    %% A new program that died while the old one held the writers: the old
    %% one leaves too (the restart below joins afresh, after a gap).
    ok = close_old(State00),
    State0 = State00#state{renewing = false},
    Now = erlang:monotonic_time(millisecond),
    Recent = [T || T <- State0#state.restarts, Now - T < ?RESTART_PERIOD],
    State = reply_pending(State0),
    case length(Recent) < ?MAX_RESTARTS of
        true ->
            ?LOG_WARNING(#{what => port_program_restarted, status => Status}),
            State1 = enqueue(gap, State#state{stale = waiting(State#state.queue)}),
            start_program(State1#state{restarts = [Now | Recent],
                                       restarted = State1#state.restarted + 1});
        false ->
            ?LOG_ERROR(#{what => port_program_exited, status => Status,
                         restarts => length(Recent)}),
            failed({port_exited, Status}, State)
    end.

%% Counters asked of a program that died are answered from here; its
%% requests fail.
reply_pending(State = #state{pending = Pending}) ->
    answer_lost(maps:values(Pending), State),
    State#state{pending = #{}}.

%% Waiters whose program went without answering: counters from here,
%% requests fail.
answer_lost(Waiters, State) ->
    lists:foreach(fun({counters, From}) -> gen_server:reply(From, local_counters(#{}, State));
                     ({request, From}) -> gen_server:reply(From, {error, closed})
                  end, Waiters).

send_request(Request, Waiter, State = #state{port = Port, next_id = Id, pending = Pending}) ->
    true = erlang:port_command(Port, bus_port_frames:request(Id, Request)),
    State#state{next_id = (Id + 1) band 16#FFFFFFFF, pending = Pending#{Id => Waiter}}.

failed(_Reason, State = #state{status = failed}) ->
    State;
failed(Reason, State) ->
    tell(State, {bus_listener_down, State#state.tag, Reason}),
    State#state{status = failed}.

enqueue(Item, State = #state{queue = Queue}) ->
    _ = queue:is_empty(Queue) andalso tell(State, {bus_ready, State#state.tag}),
    State#state{queue = queue:in(Item, Queue)}.

take_items(Max, State = #state{queue = Queue, stale = Stale, port = Port}) ->
    {Items, Queue1} = split(Max, Queue),
    Taken = length([I || I <- Items, I =/= gap]),
    Fresh = max(0, Taken - Stale),
    _ = Fresh > 0 andalso Port =/= undefined andalso State#state.status =/= failed
        andalso erlang:port_command(Port, bus_port_frames:credit(Fresh)),
    {Items, State#state{queue = Queue1, stale = max(0, Stale - Taken)}}.

split(Max, Queue) ->
    case queue:len(Queue) =< Max of
        true -> {queue:to_list(Queue), queue:new()};
        false ->
            {Front, Rest} = queue:split(Max, Queue),
            {queue:to_list(Front), Rest}
    end.

%% Counters as the program reported them, with what waits here.
local_counters(Program, #state{queue = Queue, restarted = Restarted, os_pid = OsPid}) ->
    Here = waiting(Queue),
    Base = maps:merge(#{taken => 0, delivered => 0, dropped => 0, queued => 0, held_us => 0},
                      Program),
    Counters = Base#{queued := maps:get(queued, Base) + Here,
                     delivered := max(0, maps:get(delivered, Base) - Here),
                     restarts => Restarted},
    case OsPid of
        undefined -> Counters;
        _ -> Counters#{os_pid => OsPid}
    end.

%% Messages waiting here (gap markers are none).
waiting(Queue) ->
    queue:fold(fun(gap, N) -> N; (_, N) -> N + 1 end, 0, Queue).

tell(#state{owner = Owner}, Message) ->
    Owner ! Message,
    true.
