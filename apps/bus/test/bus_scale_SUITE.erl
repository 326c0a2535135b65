%% Many buses in one node.
-module(bus_scale_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, end_per_testcase/2]).
-export([five_hundred_buses/1]).

suite() -> [{timetrap, {minutes, 3}}].
all() -> [five_hundred_buses].

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
end_per_testcase(_Case, Config) -> bus_test_lib:flush(), bus_test_lib:cleanup(Config).

%% 500 buses subscribed at once: each delivers; while they listen, a file
%% read and a broadcast on another bus each take under 100 ms; after
%% unsubscribing, every listener has left and nothing leaks.
five_hundred_buses(Config) ->
    N = 500,
    Buses = [bus_test_lib:new_bus(Config) || _ <- lists:seq(1, N)],
    {SubTime, _} = timer:tc(fun() -> [ok = bus_srv:subscribe(B) || B <- Buses] end),
    ct:log("subscribed to ~b buses in ~b ms", [N, SubTime div 1000]),
    N = length(ets:tab2list(bus_servers)),
    [1 = bus_test_lib:listeners(B) || B <- Buses],
    Other = bus_test_lib:new_bus(Config),
    File = filename:join(?config(priv_dir, Config), "data"),
    ok = file:write_file(File, binary:copy(<<"x">>, 65536)),
    {ReadTime, {ok, _}} = timer:tc(file, read_file, [File]),
    {BroadcastTime, ok} = timer:tc(bus, broadcast, [Other, <<"0 elsewhere">>]),
    ct:log("file read ~b us, broadcast ~b us", [ReadTime, BroadcastTime]),
    ?assert(ReadTime < 100000),
    ?assert(BroadcastTime < 100000),
    [ok = bus:broadcast(B, B) || B <- Buses],
    [receive {bus, B, B} -> ok after 1000 -> ct:fail({missing, B}) end || B <- Buses],
    {UnsubTime, _} = timer:tc(fun() -> [ok = bus_srv:unsubscribe(B) || B <- Buses] end),
    ct:log("unsubscribed in ~b ms", [UnsubTime div 1000]),
    [0 = bus_test_lib:listeners(B) || B <- Buses],
    ok = bus_test_lib:wait_until(fun() -> ets:tab2list(bus_servers) =:= [] end, 2000),
    [] = ets:tab2list(bus_subscriptions).
