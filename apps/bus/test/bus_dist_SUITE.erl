%% Buses across machines, on one host: peer nodes, each in its own System
%% V IPC namespace (`unshare --ipc', as root) and its own bus directory —
%% separate machines as far as the bus can tell — connected by distributed
%% Erlang over loopback. A relay process on one node subscribes to a bus
%% of another (bus:subscribe({Path, Node}, Options)) and passes what it
%% gets to the test case. Each namespace is checked for leftover IPC
%% objects before its node stops.
-module(bus_dist_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([remote_subscriber_gets_everything/1, remote_flow_control/1,
         remote_subscriber_death_cleans_up/1, lost_connection_is_bus_down/1,
         cut_connection_is_bus_down/1, unreachable_node/1]).
-import(bus_machine, [start_relay/3, relay_do/2, stop_relay/1, cli/2, ipc_objects/1]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [remote_subscriber_gets_everything, remote_flow_control,
     remote_subscriber_death_cleans_up, lost_connection_is_bus_down,
     cut_connection_is_bus_down, unreachable_node].

init_per_suite(Config) ->
    [{dist_started, bus_machine:ensure_distributed()} | Config].

end_per_suite(Config) ->
    _ = ?config(dist_started, Config) andalso net_kernel:stop(),
    ok.

%% Two machines: A serves the bus, C subscribes to it.
init_per_testcase(_Case, Config) ->
    A = bus_machine:start("a", []),
    C = bus_machine:start("c", []),
    Path = {bus_machine:node(A), bus_machine:bus(A, "shared")},
    [{a, A}, {c, C}, {path, Path} | Config].

end_per_testcase(_Case, Config) ->
    [bus_machine:stop(M) || M <- [?config(a, Config), ?config(c, Config)]],
    ok.

%% A relay on C subscribed to A's bus gets every message broadcast there,
%% by A's Erlang node and by the command line on A, once, in order, named
%% {Path, A}.
remote_subscriber_gets_everything(Config) ->
    {Anode, _, _} = A = ?config(a, Config),
    {_, Path} = ?config(path, Config),
    Relay = start_relay(?config(c, Config), {Path, Anode}, #{}),
    N = 2000,
    [ok = erpc:call(Anode, bus, broadcast, [Path, integer_to_binary(I)]) || I <- lists:seq(1, N)],
    "" = cli(A, ["broadcast", Path, integer_to_list(N + 1)]),
    ?assertEqual(lists:seq(1, N + 1), numbers({Path, Anode}, N + 1)),
    [Relay] = erpc:call(Anode, bus, subscribers, [Path]),
    ok = stop_relay(Relay).

%% Flow control is honoured across the link: once, then the passive
%% notice, then activate from the remote node; drops are told.
remote_flow_control(Config) ->
    {Anode, _, _} = ?config(a, Config),
    {_, Path} = ?config(path, Config),
    Name = {Path, Anode},
    Relay = start_relay(?config(c, Config), Name, #{active => once, max_queue => 2}),
    [ok = erpc:call(Anode, bus, broadcast, [Path, integer_to_binary(I)]) || I <- lists:seq(1, 5)],
    {bus, Name, <<"1">>} = relayed(),
    {bus_passive, Name} = relayed(),
    #{subscriptions := #{Relay := #{queued := 2, dropped := 2}}} = bus:info(Name),
    ok = relay_do(Relay, fun() -> bus:activate(Name, true) end),
    {bus, Name, <<"2">>} = relayed(),
    {bus, Name, <<"3">>} = relayed(),
    {bus_dropped, Name, 2} = relayed(),
    ok = stop_relay(Relay).

%% A remote subscriber that dies is dropped by the serving node (its
%% monitor), and the bus's server stops with its last subscriber.
remote_subscriber_death_cleans_up(Config) ->
    {Anode, _, _} = ?config(a, Config),
    {_, Path} = ?config(path, Config),
    Relay = start_relay(?config(c, Config), {Path, Anode}, #{}),
    [Relay] = erpc:call(Anode, bus, subscribers, [Path]),
    exit(Relay, kill),
    ok = bus_test_lib:wait_until(fun() -> erpc:call(Anode, bus, subscribers, [Path]) =:= [] end,
                                 5000),
    ok = bus_test_lib:wait_until(fun() -> erpc:call(Anode, ets, info, [bus_servers, size]) =:= 0 end,
                                 5000).

%% The serving node goes away: the subscriber is told
%% {bus_down, {Path, A}, noconnection}, never silence. (A's namespace,
%% checked to hold only the bus, ends with A's node, and the bus's
%% objects with it.)
lost_connection_is_bus_down(Config) ->
    {Anode, Apeer, _} = ?config(a, Config),
    {_, Path} = ?config(path, Config),
    Relay = start_relay(?config(c, Config), {Path, Anode}, #{}),
    ok = erpc:call(Anode, bus, broadcast, [Path, <<"1">>]),
    {bus, _, <<"1">>} = relayed(),
    2 = length(ipc_objects(Anode)),
    ok = peer:stop(Apeer),
    {bus_down, {Path, Anode}, noconnection} = relayed(),
    ok = stop_relay(Relay).

%% The connection is cut (the serving node still runs): bus_down for the
%% subscriber, and the serving node drops it.
cut_connection_is_bus_down(Config) ->
    {Anode, _, _} = ?config(a, Config),
    {Cnode, _, _} = C = ?config(c, Config),
    {_, Path} = ?config(path, Config),
    Relay = start_relay(C, {Path, Anode}, #{}),
    true = erpc:call(Cnode, erlang, disconnect_node, [Anode]),
    {bus_down, {Path, Anode}, noconnection} = relayed(),
    ok = bus_test_lib:wait_until(fun() -> erpc:call(Anode, bus, subscribers, [Path]) =:= [] end,
                                 5000),
    ok = stop_relay(Relay).

%% A node that is not there: subscribe fails at once with noconnection.
unreachable_node(Config) ->
    {_, Path} = ?config(path, Config),
    Nowhere = list_to_atom("nowhere@" ++ net_adm:localhost()),
    {Cnode, _, _} = ?config(c, Config),
    {error, noconnection} = erpc:call(Cnode, bus, subscribe, [{Path, Nowhere}]),
    {error, noconnection} = bus:broadcast({Path, Nowhere}, <<"x">>),
    %% Without the application here, no subscription (nothing would tell
    %% of a lost connection).
    {error, not_started} = bus:subscribe({Path, Nowhere}).

%% Internal.

relayed() ->
    bus_machine:relayed().

numbers(Name, N) ->
    [receive {relayed, _, {bus, Name, M}} -> binary_to_integer(M) after 10000 -> ct:fail({missing, I}) end
     || I <- lists:seq(1, N)].
