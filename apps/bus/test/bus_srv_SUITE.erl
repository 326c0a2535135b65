%% Subscribing and broadcasting through bus_srv, across processes and
%% the command line.
-module(bus_srv_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([subscribe_then_broadcast/1, cli_broadcast_reaches_subscribers/1,
         erlang_broadcast_reaches_cli_listener/1, several_buses_several_subscribers/1,
         unsubscribe_leaves_the_bus/1, subscriber_death_ends_subscription/1,
         killed_bus_srv_keeps_subscriptions/1, removed_bus_tells_subscribers/1,
         well_known_names_resolve/1, subscribe_missing_bus_fails/1,
         info_counts_messages/1, order_and_no_loss/1]).

all() ->
    [{group, nif}, {group, port}].

%% Every case against both backends, with the same assertions.
groups() ->
    bus_test_lib:backend_groups(
      [subscribe_then_broadcast, cli_broadcast_reaches_subscribers,
       erlang_broadcast_reaches_cli_listener, several_buses_several_subscribers,
       unsubscribe_leaves_the_bus, subscriber_death_ends_subscription,
       killed_bus_srv_keeps_subscriptions, removed_bus_tells_subscribers,
       well_known_names_resolve, subscribe_missing_bus_fails, info_counts_messages,
       order_and_no_loss]).

init_per_group(Backend, Config) -> bus_test_lib:use_backend(Backend, Config).
end_per_group(_Backend, _Config) -> bus_test_lib:use_backend(nif).

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> bus_test_lib:flush(), bus_test_lib:cleanup(Config).

%% A broadcast made after subscribe/1 returns reaches the subscriber as
%% {bus, Name, Message}.
subscribe_then_broadcast(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus_srv:subscribe(Bus),
    ok = bus_srv:broadcast(Bus, <<"0 hello">>),
    receive {bus, Bus, <<"0 hello">>} -> ok after 1000 -> ct:fail(no_message) end,
    ok = bus_srv:broadcast(binary_to_list(Bus), "0 h\x{e9}llo", #{timeout => 1000}),
    Utf8 = <<"0 h", 16#c3, 16#a9, "llo">>,
    receive {bus, Bus, Utf8} -> ok after 1000 -> ct:fail(no_unicode_message) end,
    ok = bus_srv:unsubscribe(Bus).

%% `bus broadcast` from the command line reaches every Erlang subscriber.
cli_broadcast_reaches_subscribers(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Subs = [spawn_link(fun() -> ok = bus_srv:subscribe(Bus), Self ! {ready, self()},
                                receive {bus, Bus, M} -> Self ! {got, self(), M} end end)
            || _ <- lists:seq(1, 3)],
    [receive {ready, P} -> ok after 5000 -> ct:fail(not_ready) end || P <- Subs],
    {0, _} = bus_test_lib:cli(["broadcast", Bus, "42 from-cli"]),
    [receive {got, P, <<"42 from-cli">>} -> ok after 1000 -> ct:fail(not_delivered) end
     || P <- Subs],
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% An Erlang broadcast reaches a `bus wait` listener started from the
%% command line.
erlang_broadcast_reaches_cli_listener(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Out = filename:join(?config(priv_dir, Config), "wait.out"),
    {Port, _} = bus_test_lib:spawn_cli(["wait", Bus, "printf %s \"$msg\" > " ++ Out], []),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    ok = bus:broadcast(Bus, <<"7 to-cli">>, [{timeout, 5000}]),
    receive {Port, {exit_status, 0}} -> ok after 5000 -> ct:fail(cli_did_not_exit) end,
    %% `bus wait` runs the command without waiting for it.
    ok = bus_test_lib:wait_until(fun() -> file:read_file(Out) =:= {ok, <<"7 to-cli">>} end, 2000).

%% Several subscribers on several buses each get exactly their buses'
%% messages.
several_buses_several_subscribers(Config) ->
    Buses = [bus_test_lib:new_bus(Config) || _ <- lists:seq(1, 4)],
    Self = self(),
    Subs = [{B, spawn_link(fun() -> ok = bus_srv:subscribe(B), Self ! {ready, self()}, relay(Self) end)}
            || B <- Buses, _ <- [1, 2]],
    [receive {ready, P} -> ok after 5000 -> ct:fail(not_ready) end || {_, P} <- Subs],
    [?assertEqual(2, bus_test_lib:listeners(B) + 1) || B <- Buses],
    [?assertEqual(2, length(bus_srv:subscribers(B))) || B <- Buses],
    [ok = bus:broadcast(B, <<"0 ", B/binary>>) || B <- Buses],
    [receive {P, B, <<"0 ", B/binary>>} -> ok after 1000 -> ct:fail({missing, B}) end
     || {B, P} <- Subs],
    receive Extra -> ct:fail({extra, Extra}) after 100 -> ok end,
    [begin unlink(P), exit(P, kill) end || {_, P} <- Subs],
    [ok = bus_test_lib:wait_listeners(B, 0) || B <- Buses].

relay(To) ->
    receive {bus, B, M} -> To ! {self(), B, M}, relay(To) end.

%% The last unsubscribe leaves the bus: S is back to its value before
%% (here with an external listener present) when unsubscribe returns.
unsubscribe_leaves_the_bus(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {Port, OsPid} = bus_test_lib:spawn_cli(["listen", Bus, "true"], []),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    ok = bus_srv:subscribe(Bus),
    ok = bus_srv:subscribe(Bus),
    2 = bus_test_lib:listeners(Bus),
    [_] = bus_srv:subscribers(Bus),
    ok = bus_srv:unsubscribe(Bus),
    1 = bus_test_lib:listeners(Bus),
    [] = bus_srv:subscribers(Bus),
    ok = bus_srv:unsubscribe(Bus),
    ok = bus_test_lib:os_kill("TERM", OsPid),
    receive {Port, {exit_status, _}} -> ok after 5000 -> ct:fail(cli_alive) end,
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% A subscriber that dies is unsubscribed; the bus_srv leaves the bus
%% when it was the last one.
subscriber_death_ends_subscription(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    P = spawn(fun() -> ok = bus_srv:subscribe(Bus), Self ! ready, receive _ -> ok end end),
    receive ready -> ok after 5000 -> ct:fail(not_ready) end,
    ok = bus_srv:subscribe(Bus),
    [_, _] = bus_srv:subscribers(Bus),
    exit(P, kill),
    ok = bus_test_lib:wait_until(fun() -> bus_srv:subscribers(Bus) =:= [self()] end, 1000),
    ok = bus:broadcast(Bus, <<"0 still">>),
    receive {bus, Bus, <<"0 still">>} -> ok after 1000 -> ct:fail(no_message) end,
    Q = spawn(fun() -> ok = bus_srv:subscribe(Bus), Self ! ready, receive _ -> ok end end),
    receive ready -> ok after 5000 -> ct:fail(not_ready) end,
    ok = bus_srv:unsubscribe(Bus),
    1 = bus_test_lib:listeners(Bus),
    exit(Q, kill),
    ok = bus_test_lib:wait_listeners(Bus, 0),
    ok = bus_test_lib:wait_until(fun() -> ets:lookup(bus_servers, Bus) =:= [] end, 1000).

%% Killing a bus_srv (the owner of the native listener) loses no
%% subscription: it is restarted, listens again, and S is 1, not 2.
killed_bus_srv_keeps_subscriptions(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus_srv:subscribe(Bus),
    [{_, Srv}] = ets:lookup(bus_servers, Bus),
    exit(Srv, kill),
    ok = bus_test_lib:wait_until(fun() ->
        case ets:lookup(bus_servers, Bus) of
            [{_, New}] -> New =/= Srv andalso is_process_alive(New);
            [] -> false
        end end, 2000),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    [Self] = bus_srv:subscribers(Bus),
    Self = self(),
    ok = bus:broadcast(Bus, <<"0 after-restart">>, #{timeout => 2000}),
    receive {bus, Bus, <<"0 after-restart">>} -> ok after 1000 -> ct:fail(lost) end,
    %% Twice, to check the restart did not leave a stray listener.
    [{_, Srv2}] = ets:lookup(bus_servers, Bus),
    exit(Srv2, kill),
    ok = bus_test_lib:wait_until(fun() ->
        [{_, N}] = ets:lookup(bus_servers, Bus), N =/= Srv2 andalso is_process_alive(N) end, 2000),
    ok = bus_test_lib:wait_listeners(Bus, 1),
    ok = bus_srv:unsubscribe(Bus),
    0 = bus_test_lib:listeners(Bus).

%% Removing a bus ends its subscriptions with {bus_down, Name, gone}.
removed_bus_tells_subscribers(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus_srv:subscribe(Bus),
    {0, _} = bus_test_lib:cli(["remove", Bus]),
    receive {bus_down, Bus, gone} -> ok after 2000 -> ct:fail(no_bus_down) end,
    [] = bus_srv:subscribers(Bus),
    ok = bus_test_lib:wait_until(fun() -> ets:lookup(bus_servers, Bus) =:= [] end, 1000).

%% Well-known names resolve through application env, then BUS_<NAME>, then
%% $XDG_RUNTIME_DIR/bus/<name>; subscribe and broadcast accept them.
well_known_names_resolve(Config) ->
    Xdg = os:getenv("XDG_RUNTIME_DIR"),
    {ok, Default} = bus:resolve(audio),
    ?assertEqual(filename:join([Xdg, "bus", "audio"]), binary_to_list(Default)),
    Env = bus_test_lib:new_bus(Config),
    os:putenv("BUS_AUDIO", binary_to_list(Env)),
    {ok, Env} = bus:resolve(audio),
    App = bus_test_lib:new_bus(Config),
    ok = application:set_env(bus, buses, #{audio => binary_to_list(App)}),
    {ok, App} = bus:resolve(audio),
    ok = bus_srv:subscribe(audio),
    ok = bus_srv:broadcast(audio, <<"0 sound">>),
    receive {bus, audio, <<"0 sound">>} -> ok after 1000 -> ct:fail(no_message) end,
    ok = bus_srv:unsubscribe(audio),
    ok = application:set_env(bus, buses, #{}),
    os:unsetenv("BUS_AUDIO"),
    {error, {unknown_bus, nope}} = bus:resolve(nope),
    {error, {unknown_bus, nope}} = bus_srv:subscribe(nope).

%% Subscribing to a missing or corrupted bus fails with the reason and
%% leaves no subscription or bus_srv behind.
subscribe_missing_bus_fails(Config) ->
    Missing = filename:join(?config(priv_dir, Config), "missing"),
    {error, enoent} = bus_srv:subscribe(Missing),
    Bad = filename:join(?config(priv_dir, Config), "corrupt"),
    ok = file:write_file(Bad, <<"hello\n">>),
    BadBin = list_to_binary(Bad),
    {error, {invalid_bus_file, BadBin}} = bus_srv:subscribe(Bad),
    [] = bus_srv:subscribers(Missing),
    [] = ets:tab2list(bus_subscriptions),
    ok = bus_test_lib:wait_until(fun() -> ets:tab2list(bus_servers) =:= [] end, 1000).

%% info/1 reports the path, S and the messages received and forwarded.
info_counts_messages(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    #{listeners := 0, received := 0, forwarded := 0, subscribers := []} = bus_srv:info(Bus),
    ok = bus_srv:subscribe(Bus),
    Self = self(),
    P = spawn_link(fun() -> ok = bus_srv:subscribe(Bus), Self ! ready, receive stop -> ok end end),
    receive ready -> ok after 5000 -> ct:fail(not_ready) end,
    [ok = bus:broadcast(Bus, integer_to_list(I)) || I <- lists:seq(1, 5)],
    #{path := Bus, listeners := 1, received := 5, forwarded := 10, subscribers := Subs}
        = bus_srv:info(Bus),
    2 = length(Subs),
    P ! stop,
    ok = bus_srv:unsubscribe(Bus).

%% Back-to-back broadcasts arrive in order, none lost, none duplicated
%% (to a subscriber whose mailbox may take them all: max_mailbox).
order_and_no_loss(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    N = 2000,
    ok = bus_srv:subscribe(Bus, #{max_mailbox => 2 * N}),
    Writer = fun(Tag) -> fun() ->
        [ok = bus:broadcast(Bus, [Tag, integer_to_list(I)]) || I <- lists:seq(1, N)] end end,
    {_, RefA} = spawn_monitor(Writer("a")),
    {_, RefB} = spawn_monitor(Writer("b")),
    [receive {'DOWN', R, _, _, normal} -> ok after 30000 -> ct:fail(writer) end || R <- [RefA, RefB]],
    Got = [receive {bus, Bus, M} -> M after 1000 -> ct:fail(lost) end || _ <- lists:seq(1, 2 * N)],
    receive {bus, Bus, _} = Extra -> ct:fail({duplicate, Extra}) after 50 -> ok end,
    Seq = fun(T) -> [list_to_integer(binary_to_list(R)) || <<C, R/binary>> <- Got, C =:= T] end,
    ?assertEqual(lists:seq(1, N), Seq($a)),
    ?assertEqual(lists:seq(1, N), Seq($b)),
    ok = bus_srv:unsubscribe(Bus).
