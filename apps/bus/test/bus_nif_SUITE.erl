%% The native listener and writer resources: joining and leaving the bus,
%% stopping by request, by garbage collection and by the owner's death,
%% and broadcasts that time out without holding a scheduler.
-module(bus_nif_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

%% A credit window larger than any case's traffic: the listener never holds
%% the bus here (the window is exercised through bus_srv).
-define(WINDOW, 1 bsl 20).
-include_lib("bus/include/bus_nif.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([listener_joins_and_stops/1, owner_death_leaves_the_bus/1,
         garbage_collected_listener_leaves/1, listener_down_when_bus_removed/1,
         listeners_do_not_hold_schedulers/1, timeout_against_stopped_listener/1,
         nowait_is_busy_while_another_writes/1, closed_writer/1,
         handover_under_traffic/1, detach_twice/1, library_keeps_buses_open/1,
         lane_sends_straight_to_its_members/1]).

all() ->
    [listener_joins_and_stops, owner_death_leaves_the_bus, garbage_collected_listener_leaves,
     listener_down_when_bus_removed, listeners_do_not_hold_schedulers,
     timeout_against_stopped_listener, nowait_is_busy_while_another_writes, closed_writer,
     handover_under_traffic, detach_twice, library_keeps_buses_open,
     lane_sends_straight_to_its_members].

%% The native module is called directly here: load it as bus_backend_nif
%% would.
init_per_suite(Config) ->
    ok = bus_nif_loader:ensure(?NIF),
    bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> bus_test_lib:flush(), bus_test_lib:cleanup(Config).

%% A lane: refused (busy) while an item waits for take/2; once open, the
%% listener's thread sends each message to every member under its name,
%% nothing queued, until the budget is spent (then the owner is sent the
%% Spent term); close_lane/1 says how many messages and bytes went that
%% way, once, and nothing goes through a closed lane.
lane_sends_straight_to_its_members(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Tag = make_ref(),
    {ok, L} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
    receive {bus_listening, Tag} -> ok after 1000 -> ct:fail(not_listening) end,
    Self = self(),
    Other = spawn_link(fun() -> relay(Self) end),
    Members = [{self(), mine}, {Other, other}],
    ok = bus:broadcast(Bus, <<"0 first">>),
    busy = ?NIF:open_lane(L, Members, 3, spent),
    {own, <<"0 first">>} = next_message(Tag, L),
    ok = ?NIF:open_lane(L, Members, 3, spent),
    [ok = bus:broadcast(Bus, M) || M <- [<<"0 a">>, <<"0 b">>, <<"0 c">>]],
    [receive {bus, mine, M} -> ok after 1000 -> ct:fail({missing, M}) end
     || M <- [<<"0 a">>, <<"0 b">>, <<"0 c">>]],
    [receive {relayed, {bus, other, M}} -> ok after 1000 -> ct:fail({not_relayed, M}) end
     || M <- [<<"0 a">>, <<"0 b">>, <<"0 c">>]],
    receive spent -> ok after 1000 -> ct:fail(not_spent) end,
    ?assertEqual([], ?NIF:take(L, 10)),
    %% Spent: the next message is queued.
    ok = bus:broadcast(Bus, <<"0 d">>),
    {own, <<"0 d">>} = next_message(Tag, L),
    ?assertEqual({3, 9}, ?NIF:close_lane(L)),
    ?assertEqual({0, 0}, ?NIF:close_lane(L)),
    ok = ?NIF:open_lane(L, [{self(), mine}], 10, spent),
    busy = ?NIF:open_lane(L, [{self(), mine}], 10, spent),
    ok = bus:broadcast(Bus, <<"0 e">>),
    receive {bus, mine, <<"0 e">>} -> ok after 1000 -> ct:fail(not_sent) end,
    ?assertEqual({1, 3}, ?NIF:close_lane(L)),
    ok = bus:broadcast(Bus, <<"0 f">>),
    {own, <<"0 f">>} = next_message(Tag, L),
    ?assertError(badarg, ?NIF:open_lane(L, [], 10, spent)),
    ?assertError(badarg, ?NIF:open_lane(L, [{self(), mine}], 0, spent)),
    unlink(Other),
    exit(Other, kill),
    ok = ?NIF:stop_listener(L).

relay(To) ->
    receive M -> To ! {relayed, M}, relay(To) end.

%% A listener says bus_listening once counted, forwards messages, and
%% stop_listener/1 returns once S is back to its value before.
listener_joins_and_stops(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Tag = make_ref(),
    {ok, L} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
    receive {bus_listening, Tag} -> ok after 1000 -> ct:fail(not_listening) end,
    1 = bus_test_lib:listeners(Bus),
    ok = bus:broadcast(Bus, <<"1 one">>),
    %% Broadcast by this node's OS process: marked as its own.
    {own, <<"1 one">>} = next_message(Tag, L),
    {Time, ok} = timer:tc(?NIF, stop_listener, [L]),
    ?assert(Time < 250000),
    0 = bus_test_lib:listeners(Bus),
    ok = ?NIF:stop_listener(L),
    ok = bus:broadcast(Bus, <<"1 two">>),
    receive {bus_ready, Tag} = M -> ct:fail({after_stop, M}) after 50 -> ok end,
    [] = ?NIF:take(L, 10).

%% When the owner of a listener dies, the listener leaves the bus within
%% 250 ms, whoever holds the resource.
owner_death_leaves_the_bus(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Owner = spawn(fun() ->
        Tag = make_ref(),
        {ok, L} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
        receive {bus_listening, Tag} -> Self ! {listening, L} end,
        receive never -> ok end
    end),
    L = receive {listening, Res} -> Res after 1000 -> ct:fail(not_listening) end,
    1 = bus_test_lib:listeners(Bus),
    T0 = erlang:monotonic_time(millisecond),
    exit(Owner, kill),
    ok = bus_test_lib:wait_listeners(Bus, 0),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 250),
    %% This process still holds the resource: stopping again is harmless.
    ok = ?NIF:stop_listener(L).

%% A listener whose resource is garbage collected leaves the bus.
garbage_collected_listener_leaves(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Owner = spawn(fun() ->
        Tag = make_ref(),
        {ok, _} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
        receive {bus_listening, Tag} -> Self ! listening end,
        receive gc -> erlang:garbage_collect(), Self ! collected end,
        receive never -> ok end
    end),
    receive listening -> ok after 1000 -> ct:fail(not_listening) end,
    1 = bus_test_lib:listeners(Bus),
    Owner ! gc,
    receive collected -> ok after 1000 -> ct:fail(no_gc) end,
    ok = bus_test_lib:wait_listeners(Bus, 0),
    exit(Owner, kill).

%% Removing the bus ends the listener with {bus_listener_down, Tag, gone}.
listener_down_when_bus_removed(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Tag = make_ref(),
    {ok, _L} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
    receive {bus_listening, Tag} -> ok after 1000 -> ct:fail(not_listening) end,
    ok = bus:remove(Bus),
    receive {bus_listener_down, Tag, gone} -> ok after 1000 -> ct:fail(no_down) end,
    ok = bus_test_lib:wait_until(fun() -> bus_test_lib:sysv_mappings() =:= [] end, 1000).

%% Listeners block in their own threads: with more listeners than dirty
%% I/O schedulers, broadcasts and stats still run.
listeners_do_not_hold_schedulers(Config) ->
    N = erlang:system_info(dirty_io_schedulers) + 5,
    Buses = [bus_test_lib:new_bus(Config) || _ <- lists:seq(1, N)],
    Ls = [begin
              Tag = make_ref(),
              {ok, L} = ?NIF:listen(B, self(), Tag, join, ?WINDOW),
              receive {bus_listening, Tag} -> ok after 1000 -> ct:fail(not_listening) end,
              {B, Tag, L}
          end || B <- Buses],
    [begin
         ok = bus:broadcast(B, <<"0 m">>, #{timeout => 1000}),
         {own, <<"0 m">>} = next_message(Tag, L)
     end || {B, Tag, L} <- Ls],
    [ok = ?NIF:stop_listener(L) || {_, _, L} <- Ls],
    [0 = bus_test_lib:listeners(B) || B <- Buses].

%% Against a listener that is SIGSTOPped, a timed broadcast publishes the
%% message and then gives up waiting for its acknowledgement
%% (timeout_after_publish); the next one cannot publish (timeout), also
%% with the default timeout. Timed
%% out broadcasts free their dirty schedulers: with all of them used by
%% such broadcasts, a broadcast on another bus completes afterwards.
timeout_against_stopped_listener(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Other = bus_test_lib:new_bus(Config),
    {Port, OsPid} = bus_test_lib:spawn_cli(["listen", Bus, "true"], []),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    ok = bus_test_lib:os_kill("STOP", OsPid),
    {T1, {error, timeout_after_publish}} = timer:tc(bus, broadcast, [Bus, <<"0 a">>, #{timeout => 200}]),
    {T2, {error, timeout}} = timer:tc(bus, broadcast, [Bus, <<"0 b">>, [{timeout, 200}]]),
    [?assert(T >= 190000 andalso T < 1000000) || T <- [T1, T2]],
    %% Without a timeout option, the default (5 s) applies.
    {T0, {error, timeout}} = timer:tc(bus, broadcast, [Bus, <<"0 d">>]),
    ?assert(T0 >= 4900000 andalso T0 < 7000000),
    Self = self(),
    Dirty = erlang:system_info(dirty_io_schedulers),
    Pids = [spawn_link(fun() -> Self ! {done, self(), bus:broadcast(Bus, <<"0 c">>, #{timeout => 300})} end)
            || _ <- lists:seq(1, Dirty + 2)],
    [receive {done, P, {error, timeout}} -> ok after 5000 -> ct:fail(stuck) end || P <- Pids],
    ok = bus_srv:subscribe(Other),
    {T3, ok} = timer:tc(bus, broadcast, [Other, <<"0 other">>]),
    ?assert(T3 < 100000),
    receive {bus, Other, <<"0 other">>} -> ok after 1000 -> ct:fail(no_message) end,
    ok = bus_srv:unsubscribe(Other),
    ok = bus_test_lib:os_kill("KILL", OsPid),
    receive {Port, {exit_status, _}} -> ok after 5000 -> ct:fail(cli_alive) end,
    ok = bus_test_lib:wait_listeners(Bus, 0),
    ok = bus:broadcast(Bus, <<"0 free again">>, #{timeout => 1000}).

%% With nowait, a broadcast fails with busy while another process holds
%% the bus.
nowait_is_busy_while_another_writes(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {Port, OsPid} = bus_test_lib:spawn_cli(["listen", Bus, "true"], []),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    ok = bus_test_lib:os_kill("STOP", OsPid),
    Self = self(),
    spawn_link(fun() -> Self ! {held, bus:broadcast(Bus, <<"0 slow">>, #{timeout => 1000})} end),
    ok = bus_test_lib:wait_until(fun() ->
        {ok, #{values := {_, _, X, _, _}}} = bus:stat(Bus), X =:= 0 end, 1000),
    {error, busy} = bus:broadcast(Bus, <<"0 quick">>, [nowait]),
    {error, busy} = bus:broadcast(Bus, <<"0 quick">>, #{nowait => true, timeout => 0}),
    receive {held, {error, timeout_after_publish}} -> ok after 3000 -> ct:fail(not_released) end,
    ok = bus_test_lib:os_kill("KILL", OsPid),
    receive {Port, {exit_status, _}} -> ok after 5000 -> ct:fail(cli_alive) end,
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% A broadcast that has to wait is finished by finish_broadcast/1; a
%% closed writer answers {error, closed}; bus:broadcast reopens.
closed_writer(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {ok, W} = ?NIF:open_writer(Bus),
    ok = ?NIF:broadcast(W, <<"0 x">>, infinity, false),
    %% A listener whose window (1) is full holds the writers back: a
    %% broadcast then has to wait, and is left to finish (once) on a dirty
    %% scheduler, which it does once the listener has room again.
    {ok, Listener} = ?NIF:listen(Bus, self(), tag, join, 1),
    receive {bus_listening, tag} -> ok end,
    ok = case ?NIF:broadcast(W, <<"0 y">>, infinity, false) of
        {wait, First} -> ?NIF:finish_broadcast(First);
        Done -> Done
    end,
    {wait, Pending} = ?NIF:broadcast(W, <<"0 z">>, infinity, false),
    receive {bus_ready, tag} -> ok end,
    [{own, <<"0 y">>}] = ?NIF:take(Listener, 10),
    ok = ?NIF:finish_broadcast(Pending),
    ok = ?NIF:finish_broadcast(Pending),
    receive {bus_ready, tag} -> ok end,
    [{own, <<"0 z">>}] = ?NIF:take(Listener, 10),
    ok = ?NIF:stop_listener(Listener),
    ok = ?NIF:close_writer(W),
    {error, closed} = ?NIF:broadcast(W, <<"0 x">>, infinity, false),
    ?assertError(badarg, ?NIF:broadcast(W, <<"0 x">>, -5, false)),
    ?assertError(badarg, ?NIF:listen(Bus, not_a_pid, tag, join, ?WINDOW)).

%% A listener detached under traffic and taken over by a new one (listen/4
%% with its standing) loses and repeats nothing, sends nothing after
%% detach_listener/1 returns.
handover_under_traffic(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Tag0 = make_ref(),
    {ok, L0} = ?NIF:listen(Bus, self(), Tag0, join, ?WINDOW),
    receive {bus_listening, Tag0} -> ok after 1000 -> ct:fail(not_listening) end,
    N = 20000,
    Self = self(),
    Writer = spawn_link(fun() ->
        [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(1, N)],
        Self ! written
    end),
    {Got, Standings} = handovers(Bus, L0, 20, [], []),
    receive written -> ok after 30000 -> ct:fail(writer_stuck) end,
    unlink(Writer),
    {L, Taken} = get(last_listener),
    Rest = [binary_to_integer(B) || {own, B} <- ?NIF:take(L, N)],
    ct:log("standings at handover: ~p", [Standings]),
    ?assertEqual(lists:seq(1, N), Got ++ Taken ++ Rest),
    1 = bus_test_lib:listeners(Bus),
    {ok, #{values := _}} = bus:stat(Bus),
    ok = ?NIF:stop_listener(L),
    0 = bus_test_lib:listeners(Bus).

%% Hands the listener over K times, at random moments; returns every
%% message the detached listeners had, in order. Each listener's queue is
%% drained after its detach: it takes nothing more by then.
handovers(_Bus, L, 0, Got, Standings) ->
    put(last_listener, {L, []}),
    {Got, Standings};
handovers(Bus, L, K, Got, Standings) ->
    timer:sleep(rand:uniform(5)),
    {ok, Standing} = ?NIF:detach_listener(L),
    Left = [binary_to_integer(B) || {own, B} <- ?NIF:take(L, 1 bsl 30)],
    [] = ?NIF:take(L, 10),
    Tag1 = make_ref(),
    {ok, L1} = ?NIF:listen(Bus, self(), Tag1, Standing, ?WINDOW),
    handovers(Bus, L1, K - 1, Got ++ Left, [Standing | Standings]).

%% The next message of the listener L (tagged Tag), taken when it says
%% there is something to take.
next_message(Tag, L) ->
    case get({pending, Tag}) of
        [M | Rest] ->
            put({pending, Tag}, Rest),
            M;
        _ ->
            receive {bus_ready, Tag} -> put({pending, Tag}, ?NIF:take(L, 100))
            after 1000 -> ct:fail(no_message)
            end,
            next_message(Tag, L)
    end.

%% Detaching twice, or after a stop, is {error, closed}; stopping a
%% detached listener leaves nothing (its standing is the caller's).
detach_twice(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Tag = make_ref(),
    {ok, L} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
    receive {bus_listening, Tag} -> ok after 1000 -> ct:fail(not_listening) end,
    {ok, armed} = ?NIF:detach_listener(L),
    {error, closed} = ?NIF:detach_listener(L),
    ok = ?NIF:stop_listener(L),
    1 = bus_test_lib:listeners(Bus),
    %% Leave by taking the standing over and stopping.
    {ok, L1} = ?NIF:listen(Bus, self(), Tag, armed, ?WINDOW),
    ok = ?NIF:stop_listener(L1),
    0 = bus_test_lib:listeners(Bus),
    {ok, L2} = ?NIF:listen(Bus, self(), Tag, join, ?WINDOW),
    ok = ?NIF:stop_listener(L2),
    {error, closed} = ?NIF:detach_listener(L2),
    ?assertError(badarg, ?NIF:listen(Bus, self(), Tag, sideways, ?WINDOW)).

%% The buses bus:broadcast/2 goes through are kept open by the library
%% (one attachment of this OS process each), from the first broadcast
%% until the bus is removed (bus:remove/1), found gone (a remove from
%% elsewhere: the next broadcast closes it and reopens a recreated bus),
%% or the application stops (forget_all_cached/0 then says which).
library_keeps_buses_open(Config) ->
    [A, B] = [bus_test_lib:new_bus(Config) || _ <- [a, b]],
    Attached = fun(Bus) -> {ok, #{attached := N}} = bus:stat(Bus), N end,
    [0, 0] = [Attached(Bus) || Bus <- [A, B]],
    not_open = ?NIF:broadcast_cached(A, <<"0 x">>, infinity, false),
    ok = bus:broadcast(A, <<"0 x">>),
    ok = ?NIF:broadcast_cached(A, <<"0 x">>, infinity, false),
    {error, message_contains_nul} = ?NIF:broadcast_cached(A, <<"0 \0">>, infinity, false),
    ok = bus:broadcast(B, <<"0 x">>),
    [1, 1] = [Attached(Bus) || Bus <- [A, B]],
    ok = ?NIF:open_cached(A),
    1 = Attached(A),
    ok = bus:remove(B),
    not_open = ?NIF:broadcast_cached(B, <<"0 x">>, infinity, false),
    {0, _} = bus_test_lib:cli(["remove", A]),
    {0, _} = bus_test_lib:cli(["create", "-x", A]),
    ok = bus:broadcast(A, <<"0 recreated">>),
    1 = Attached(A),
    [A] = ?NIF:forget_all_cached(),
    0 = Attached(A),
    [] = ?NIF:forget_all_cached(),
    {error, enoent} = ?NIF:open_cached(B),
    ?assertError(badarg, ?NIF:broadcast_cached(A, <<"0 x">>, -1, false)),
    ?assertError(badarg, ?NIF:broadcast_cached(not_a_path, <<"0 x">>, infinity, false)).
