%% The contract between a bus's bus_srv and its backend (bus_backend): the
%% credit window (a paused bus_srv holds the bus; its mailbox stays small
%% whatever the traffic) and the gap event (a restarted bus_srv tells its
%% subscribers it may have missed messages, then forwards everything).
-module(bus_backend_SUITE).

-import(bus_test_lib, [receive_numbers/2]).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([full_window_holds_the_bus/1, mailbox_stays_small_under_traffic/1,
         restart_tells_subscribers_of_the_gap/1, info_shows_the_backend/1]).

all() ->
    [{group, nif}, {group, port}].

%% Every case against both backends, with the same assertions.
groups() ->
    bus_test_lib:backend_groups(
      [full_window_holds_the_bus, mailbox_stays_small_under_traffic,
       restart_tells_subscribers_of_the_gap, info_shows_the_backend]).

init_per_group(Backend, Config) -> bus_test_lib:use_backend(Backend, Config).
end_per_group(_Backend, _Config) -> bus_test_lib:use_backend(nif).

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) ->
    ok = application:unset_env(bus, window),
    bus_test_lib:flush(),
    bus_test_lib:cleanup(Config).

%% A bus_srv that stops taking (suspended) lets its listener fill its
%% window of 8 messages (after what a lane sends the subscriber straight,
%% with the NIF: at most 64), which then holds the bus: a timed broadcast from
%% another process times out with nothing published. Resumed, it forwards
%% all, in order, exactly once, and the time held is counted.
full_window_holds_the_bus(Config) ->
    ok = application:set_env(bus, window, 8),
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    {ok, Srv} = server(Bus),
    ok = sys:suspend(Srv),
    %% The window, after what an open lane sends the subscriber straight
    %% (at most 64 messages: then the listener waits for bus_srv).
    Sent = broadcast_until_held(Bus, 1),
    ct:log("~b broadcasts before the bus was held", [Sent]),
    ?assert(Sent >= 8 andalso Sent =< 64 + 8),
    ok = sys:resume(Srv),
    [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(Sent + 1, 100)],
    ?assertEqual(lists:seq(1, 100), receive_numbers(Bus, 100)),
    #{listener := #{held_us := Held, queued := 0}} = bus:info(Bus),
    ?assert(Held > 0),
    ok = bus:unsubscribe(Bus).

%% Under 100,000 back-to-back broadcasts to a subscriber that reads
%% nothing until they are all sent (and lets its mailbox take them all:
%% max_mailbox), the bus's bus_srv never has more than a few messages in
%% its mailbox (the window is in the listener); the subscriber then gets
%% every message, in order.
mailbox_stays_small_under_traffic(Config) ->
    N = 100000,
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Slow = spawn_link(fun() ->
        ok = bus:subscribe(Bus, #{max_mailbox => N}),
        Self ! subscribed,
        receive go -> ok end,
        Self ! {numbers, receive_numbers(Bus, N)}
    end),
    receive subscribed -> ok after 5000 -> ct:fail(not_subscribed) end,
    {ok, Srv} = server(Bus),
    Writer = spawn_link(fun() ->
        [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(1, N)],
        Self ! written
    end),
    Max = watch_mailbox(Srv, 0),
    ct:log("largest bus_srv mailbox: ~b messages", [Max]),
    ?assert(Max =< 4),
    unlink(Writer),
    Slow ! go,
    Numbers = receive {numbers, Ns} -> Ns after 60000 -> ct:fail(subscriber_stuck) end,
    ?assertEqual(lists:seq(1, N), Numbers).

%% A bus_srv killed under traffic is restarted by its supervisor; its
%% subscriber gets {bus_gap, Name}, then every later message in order.
restart_tells_subscribers_of_the_gap(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    {ok, Srv} = server(Bus),
    ok = bus_test_lib:gap_then_in_order(Bus, fun() -> exit(Srv, kill) end),
    {ok, Srv2} = server(Bus),
    ?assertNotEqual(Srv, Srv2),
    ok = bus:unsubscribe(Bus).

%% info/1 names the backend serving the bus, its version, and the
%% listener's counters.
info_shows_the_backend(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    ok = bus:broadcast(Bus, <<"0 x">>),
    receive {bus, Bus, <<"0 x">>} -> ok after 1000 -> ct:fail(no_message) end,
    Backend = bus_test_lib:backend(Config),
    #{backend := Backend, native := N,
      listener := #{taken := 1, delivered := 1, dropped := 0, queued := 0}} = bus:info(Bus),
    ?assert(is_integer(N) andalso N > 0),
    ok = bus:unsubscribe(Bus).

%% Internal.

server(Bus) ->
    bus_tables:server(Bus).

%% Broadcasts I, I + 1, ... until one times out (200 ms, nothing
%% published); returns how many did not.
broadcast_until_held(Bus, I) ->
    case bus:broadcast(Bus, integer_to_binary(I), #{timeout => 200}) of
        ok -> broadcast_until_held(Bus, I + 1);
        {error, timeout} -> I - 1
    end.

%% The largest message_queue_len of Pid seen until the writer is done.
watch_mailbox(Pid, Max) ->
    receive written -> Max
    after 1 ->
        {message_queue_len, Len} = process_info(Pid, message_queue_len),
        watch_mailbox(Pid, max(Max, Len))
    end.
