%% What operators see: the structured logger events of a bus (a handler
%% of this suite collects them), rate-limited where they repeat, and
%% bus:info/0 with its table (bin/bus status).
-module(bus_ops_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([restart_is_logged/1, bus_down_is_logged/1, drops_are_logged_once_per_interval/1,
         block_is_logged/1, info_of_every_bus/1, status_table/1]).
%% The logger handler.
-export([log/2]).

all() ->
    [restart_is_logged, bus_down_is_logged, drops_are_logged_once_per_interval,
     block_is_logged, info_of_every_bus, status_table].

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).

init_per_testcase(_Case, Config) ->
    ok = logger:add_handler(?MODULE, ?MODULE, #{config => #{pid => self()},
                                                filter_default => stop,
                                                filters => [{bus, {fun logger_filters:domain/2,
                                                                   {log, sub, [bus]}}}]}),
    Config.

end_per_testcase(_Case, Config) ->
    ok = logger:remove_handler(?MODULE),
    bus_test_lib:flush(),
    bus_test_lib:cleanup(Config).

%% Sends each event of domain [bus] to the test case.
log(#{level := Level, msg := {report, Report}, meta := Meta}, #{config := #{pid := Pid}}) ->
    Pid ! {event, Level, Report, Meta};
log(_, _) ->
    ok.

%% A killed bus_srv is restarted: a warning, then a notice of the gap,
%% both naming the bus.
restart_is_logged(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    {ok, Srv} = bus_tables:server(Bus),
    exit(Srv, kill),
    {warning, #{what := bus_srv_restarted, subscribers := 1}, #{bus := Bus}} = event(),
    {notice, #{what := bus_gap, count := 1}, #{bus := Bus}} = event(),
    receive {bus_gap, Bus} -> ok after 5000 -> ct:fail(no_gap) end,
    ok = bus:unsubscribe(Bus).

%% A removed bus: a warning with the reason and the subscribers told.
bus_down_is_logged(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    ok = bus:remove(Bus),
    {warning, #{what := bus_down, reason := gone, subscribers := 1}, #{bus := Bus}} = event(),
    receive {bus_down, Bus, gone} -> ok after 5000 -> ct:fail(no_bus_down) end.

%% Drops are logged with their count, once per interval per bus: the
%% second run of drops, right after, is counted, not logged.
drops_are_logged_once_per_interval(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 2}),
    [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(1, 5)],
    _ = bus:info(Bus),
    {warning, #{what := bus_dropped, count := Dropped}, #{bus := Bus}} = event(),
    ?assert(Dropped >= 1),
    [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(6, 10)],
    #{subscriptions := #{} = Subs} = bus:info(Bus),
    #{dropped := 8} = maps:get(self(), Subs),
    no_event(),
    ok = bus:unsubscribe(Bus).

%% A subscriber with overflow block that holds the bus: a notice.
block_is_logged(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 1, overflow => block}),
    ok = bus:broadcast(Bus, <<"1">>),
    ok = bus:broadcast(Bus, <<"2">>),
    #{blocked := true} = bus:info(Bus),
    {notice, #{what := bus_blocked}, #{bus := Bus}} = event(),
    ok = bus:unsubscribe(Bus).

%% info/0: info/1 of every bus the node serves, by pathname.
info_of_every_bus(Config) ->
    [A, B] = [bus_test_lib:new_bus(Config) || _ <- [1, 2]],
    #{} = Before = bus:info(),
    ?assertNot(maps:is_key(A, Before)),
    ok = bus:subscribe(A),
    ok = bus:subscribe(B, #{active => false}),
    ok = bus:broadcast(A, <<"x">>),
    #{A := #{path := A, received := 1, subscribers := [_]},
      B := #{path := B, received := 0, subscriptions := #{}}} = bus:info(),
    ok = bus:unsubscribe(A),
    ok = bus:unsubscribe(B),
    ok = bus_test_lib:wait_until(fun() -> not maps:is_key(A, bus:info()) end, 5000).

%% The status table: a header, a line per bus, a count.
status_table(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 1}),
    [ok = bus:broadcast(Bus, <<"x">>) || _ <- [1, 2, 3]],
    Text = bus_status:table(),
    ct:log("~ts", [Text]),
    [Header | Lines] = string:split(Text, <<"\n">>, all),
    [<<"BUS">> | _] = string:lexemes(Header, " "),
    [Row] = [L || L <- Lines, string:prefix(L, Bus) =/= nomatch],
    [Bus, <<"1">>, <<"1">>, <<"3">>, <<"0">>, <<"1">>, <<"2">>, <<"no">>, <<"nif">>, _] =
        string:lexemes(Row, " "),
    ok = bus:unsubscribe(Bus).

%% Internal.

event() ->
    receive
        {event, Level, Report, Meta} -> {Level, Report, Meta}
    after 5000 -> ct:fail(no_event)
    end.

no_event() ->
    receive
        {event, _, _, _} = E -> ct:fail({unexpected, E})
    after 0 -> ok
    end.
