%% @doc The port backend's program for everything but listening:
%% broadcasts (plain, timed, no-wait), create, remove, chmod, chown and
%% stat, one port program for the node. The program runs each request on
%% a thread of its own, so a broadcast held up by a stopped listener on
%% one bus delays no other request, and the caller waits in a receive:
%% no scheduler is occupied while it waits. This process only relays
%% frames, never waits. The program is started on first use; if it dies,
%% the requests it had not answered fail with `{port_exited, Status}' and
%% the next request starts another. Renewed (a release upgrade that ships
%% a new program), it answers what it was asked, then leaves; new requests
%% go to a new program.
-module(bus_port_ops).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, request/1, os_pid/0, renew/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-record(state, {
    port :: port() | undefined,
    os_pid :: non_neg_integer() | undefined,
    hello = false :: boolean(),
    next_id = 0 :: non_neg_integer(),
    pending = #{} :: #{non_neg_integer() => gen_server:from() | none},
    %% Since 0.11.0. Renewed programs still answering, and the requests
    %% each is still to answer; the running program's executable.
    retiring = #{} :: #{port() => #{non_neg_integer() => gen_server:from() | none}},
    exe :: file:filename() | undefined
}).

%% The fields of 0.10.0's state (code_change/3).
-define(FIELDS_0_10_0, 5).

%% API.

-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% Sends a request to the program and waits for its reply (as long as the
%% program takes: a broadcast's own timeout bounds it). Without the
%% application running, a program is started for this one request.
-spec request(bus_port_frames:request()) -> term().
request(Request) ->
    try gen_server:call(?MODULE, {request, Request}, infinity)
    catch exit:{noproc, _} -> once(Request)
    end.

%% Renews the program (bus_port_listener:renewal()).
-spec renew(bus_port_listener:renewal()) -> ok.
renew(Which) ->
    gen_server:cast(?MODULE, {renew, Which}).

-spec os_pid() -> non_neg_integer() | undefined.
os_pid() ->
    gen_server:call(?MODULE, os_pid).

%% gen_server.

-spec init([]) -> {ok, #state{}}.
init([]) ->
    %% A port whose program died can fail a write (epipe): an exit signal,
    %% handled as the program's death.
    process_flag(trap_exit, true),
    logger:update_process_metadata(#{domain => [bus]}),
    {ok, #state{}}.

-spec handle_call(term(), gen_server:from(), #state{}) ->
    {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({request, Request}, From, State0) ->
    case program(State0) of
        {ok, State = #state{port = Port, next_id = Id, pending = Pending}} ->
            true = erlang:port_command(Port, bus_port_frames:request(Id, Request)),
            %% A forget needs no answer.
            Waiter = case Request of
                {forget, _} -> gen_server:reply(From, ok), none;
                _ -> From
            end,
            {noreply, State#state{next_id = (Id + 1) band 16#FFFFFFFF,
                                  pending = Pending#{Id => Waiter}}};
        {error, Reason} ->
            {reply, {error, Reason}, State0}
    end;
handle_call(os_pid, _From, State) ->
    {reply, State#state.os_pid, State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_request}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({renew, Which}, State = #state{port = Port, exe = Exe}) when Port =/= undefined ->
    case Which =:= all orelse Exe =/= bus_port_program:executable() of
        true -> {noreply, retire(State)};
        false -> {noreply, State}
    end;
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({Port, {data, Data}}, State = #state{port = Port}) ->
    {noreply, frame(bus_port_frames:decode(Data), State)};
handle_info({Port, {exit_status, Status}}, State = #state{port = Port}) ->
    ?LOG_WARNING(#{what => port_program_exited, role => ops, status => Status,
                   unanswered => map_size(State#state.pending)}),
    {noreply, fail_all({port_exited, Status}, State)};
handle_info({'EXIT', Port, Reason}, State = #state{port = Port}) ->
    ?LOG_WARNING(#{what => port_program_exited, role => ops, reason => Reason,
                   unanswered => map_size(State#state.pending)}),
    {noreply, fail_all({port_closed, Reason}, State)};
handle_info({Old, Message}, State = #state{retiring = Retiring}) when is_map_key(Old, Retiring) ->
    {noreply, retiring(Old, Message, State)};
handle_info({'EXIT', Old, Reason}, State = #state{retiring = Retiring})
  when is_map_key(Old, Retiring) ->
    {noreply, retiring(Old, {exit_status, {port_closed, Reason}}, State)};
handle_info(_Info, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{port = Port, retiring = Retiring}) ->
    _ = [bus_port_program:close(Old) || Old <- maps:keys(Retiring)],
    bus_port_program:close(Port).

%% From 0.10.0 (nothing retiring) and back (programs still retiring are
%% closed: what they had not answered fails).
-spec code_change(term(), tuple(), term()) -> {ok, tuple()}.
code_change({down, _Vsn}, State = #state{retiring = Retiring}, _Extra) ->
    maps:foreach(fun(Old, Pending) ->
                         ok = bus_port_program:close(Old),
                         reply_all(Pending, {error, closed})
                 end, Retiring),
    {ok, list_to_tuple(lists:sublist(tuple_to_list(State), ?FIELDS_0_10_0 + 1))};
code_change(_OldVsn, State, _Extra) when tuple_size(State) =:= ?FIELDS_0_10_0 + 1 ->
    {ok, list_to_tuple(tuple_to_list(State) ++ [#{}, undefined])};
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

%% Internal.

%% A program of the caller's own for one request.
once(Request) ->
    case bus_port_program:open() of
        {ok, Port} ->
            true = erlang:port_command(Port, bus_port_frames:request(0, Request)),
            try await_once(Port, false)
            after
                bus_port_program:close(Port)
            end;
        {error, _} = Error ->
            Error
    end.

await_once(Port, Hello) ->
    receive
        {Port, {data, Data}} when not Hello ->
            case bus_port_program:hello(bus_port_frames:decode(Data)) of
                {ok, _} -> await_once(Port, true);
                {error, _} = Error -> Error
            end;
        {Port, {data, Data}} ->
            case bus_port_frames:decode(Data) of
                {reply, 0, Reply} -> Reply;
                _ -> await_once(Port, Hello)
            end;
        {Port, {exit_status, Status}} ->
            {error, {port_exited, Status}}
    end.

program(State = #state{port = undefined}) ->
    case bus_port_program:open() of
        {ok, Port} ->
            {ok, State#state{port = Port, hello = false, exe = bus_port_program:executable()}};
        {error, _} = Error ->
            Error
    end;
program(State) ->
    {ok, State}.

frame(Frame, State = #state{hello = false}) ->
    case bus_port_program:hello(Frame) of
        {ok, OsPid} ->
            State#state{hello = true, os_pid = OsPid};
        {error, Reason} ->
            ?LOG_ERROR(#{what => port_program_refused, role => ops, reason => Reason}),
            fail_all(Reason, State)
    end;
frame({reply, Id, Reply}, State = #state{pending = Pending}) ->
    case maps:take(Id, Pending) of
        {none, Pending1} ->
            State#state{pending = Pending1};
        {From, Pending1} ->
            gen_server:reply(From, Reply),
            State#state{pending = Pending1};
        error ->
            ?LOG_ERROR(#{what => port_program_bad_frame, role => ops, reply_to => Id}),
            State
    end;
frame({complaint, Text}, State) ->
    ?LOG_ERROR(#{what => port_program_complaint, role => ops, text => Text}),
    State;
frame(Other, State) ->
    ?LOG_ERROR(#{what => port_program_bad_frame, role => ops, frame => Other}),
    State.

%% The running program answers what it was asked, then leaves; the next
%% request starts a new one.
retire(State = #state{port = Port, pending = Pending, retiring = Retiring}) ->
    State1 = State#state{port = undefined, os_pid = undefined, hello = false, pending = #{}},
    case map_size(Pending) of
        0 ->
            ok = bus_port_program:close(Port),
            State1;
        _ ->
            State1#state{retiring = Retiring#{Port => Pending}}
    end.

%% A message of a retiring program: a reply, or its end.
retiring(Old, {data, Data}, State = #state{retiring = Retiring}) ->
    Pending = maps:get(Old, Retiring),
    Pending1 = case bus_port_frames:decode(Data) of
        {reply, Id, Reply} ->
            case maps:take(Id, Pending) of
                {none, P} -> P;
                {From, P} -> gen_server:reply(From, Reply), P;
                error -> Pending
            end;
        _ ->
            Pending
    end,
    case map_size(Pending1) of
        0 ->
            ok = bus_port_program:close(Old),
            State#state{retiring = maps:remove(Old, Retiring)};
        _ ->
            State#state{retiring = Retiring#{Old := Pending1}}
    end;
retiring(Old, {exit_status, Status}, State = #state{retiring = Retiring}) ->
    reply_all(maps:get(Old, Retiring), {error, {port_exited, Status}}),
    State#state{retiring = maps:remove(Old, Retiring)};
retiring(_Old, _Message, State) ->
    State.

reply_all(Pending, Reply) ->
    maps:foreach(fun(_, none) -> ok;
                    (_, From) -> gen_server:reply(From, Reply)
                 end, Pending).

%% The program is gone or unusable: every request not answered fails.
fail_all(Reason, State = #state{port = Port, pending = Pending}) ->
    ok = bus_port_program:close(Port),
    reply_all(Pending, {error, Reason}),
    State#state{port = undefined, os_pid = undefined, hello = false, pending = #{}}.
