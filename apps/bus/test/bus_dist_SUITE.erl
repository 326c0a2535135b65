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
%% Run on the peers.
-export([relay/3]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [remote_subscriber_gets_everything, remote_flow_control,
     remote_subscriber_death_cleans_up, lost_connection_is_bus_down,
     cut_connection_is_bus_down, unreachable_node].

init_per_suite(Config) ->
    Started = case is_alive() of
        true ->
            false;
        false ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("bus_dist_ct_" ++ os:getpid()), shortnames]),
            true
    end,
    [{dist_started, Started} | Config].

end_per_suite(Config) ->
    _ = ?config(dist_started, Config) andalso net_kernel:stop(),
    ok.

%% Two machines: A serves the bus, C subscribes to it.
init_per_testcase(_Case, Config) ->
    A = start_machine("a", Config),
    C = start_machine("c", Config),
    Path = machine_bus(A, "shared"),
    [{a, A}, {c, C}, {path, Path} | Config].

end_per_testcase(_Case, Config) ->
    [stop_machine(M) || M <- [?config(a, Config), ?config(c, Config)]],
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

%% Machines.

%% A node in its own IPC namespace and bus directory, the bus application
%% started there (no default bus).
start_machine(Name, Config) ->
    Dir = string:trim(os:cmd("mktemp -d /tmp/bus-dist-" ++ Name ++ ".XXXXXX")),
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [bus, ?MODULE, bus_test_lib]]),
    {ok, Peer, Node} = peer:start_link(#{
        name => list_to_atom("bus_" ++ Name ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))),
        exec => {os:find_executable("unshare"), ["--ipc", os:find_executable("erl")]},
        %% (A connection cut between two peers must not make global cut
        %% them from this node too: prevent_overlapping_partitions.)
        args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                 "-kernel", "prevent_overlapping_partitions", "false"
                 | lists:append([["-pa", P] || P <- Paths])],
        env => [{"XDG_RUNTIME_DIR", Dir}]}),
    ok = erpc:call(Node, application, load, [bus]),
    ok = erpc:call(Node, application, set_env, [bus, default_bus, none]),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [bus]),
    %% A fresh namespace: no IPC object but ours.
    [] = ipc_objects(Node),
    _ = Config,
    {Node, Peer, Dir}.

%% Removes its buses, checks that the namespace has no IPC object left,
%% stops the node (if still up).
stop_machine({Node, Peer, Dir}) ->
    case lists:member(Node, nodes()) of
        true ->
            [ok = erpc:call(Node, bus, remove, [B]) || B <- filelib:wildcard(Dir ++ "/bus/*")],
            [] = ipc_objects(Node),
            ok = erpc:call(Node, application, stop, [bus]),
            peer:stop(Peer);
        false ->
            ok
    end,
    _ = os:cmd("rm -rf " ++ Dir),
    ok.

machine_bus({Node, _, Dir}, Name) ->
    ok = file:make_dir(filename:join(Dir, "bus")),
    {ok, Path} = erpc:call(Node, bus, create, [filename:join([Dir, "bus", Name]), true]),
    {Node, Path}.

ipc_objects(Node) ->
    Lines = string:split(erpc:call(Node, os, cmd, ["ipcs -s -m"]), "\n", all),
    [L || L <- Lines, lists:prefix("0x", L)].

%% The `bus' command, run in the machine's namespace.
cli({Node, _, _}, Args) ->
    Cli = filename:join([code:priv_dir(bus), "bin", "bus"]),
    Command = lists:join(" ", [Cli | [unicode:characters_to_list(A) || A <- Args]]),
    erpc:call(Node, os, cmd, [lists:flatten(Command)]).

%% The relay.

start_relay({Node, _, _}, Name, Options) ->
    Self = self(),
    Relay = erpc:call(Node, erlang, spawn, [?MODULE, relay, [Self, Name, Options]]),
    receive {relaying, Relay, Result} -> ok = Result, Relay after 10000 -> ct:fail(no_relay) end.

relay(To, Name, Options) ->
    To ! {relaying, self(), bus:subscribe(Name, Options)},
    relay_loop(To).

relay_loop(To) ->
    receive
        {do, From, Fun} -> From ! {done, self(), Fun()};
        stop -> exit(normal);
        Message -> To ! {relayed, Message}
    end,
    relay_loop(To).

relay_do(Relay, Fun) ->
    Relay ! {do, self(), Fun},
    receive {done, Relay, Result} -> Result after 10000 -> ct:fail(relay_stuck) end.

stop_relay(Relay) ->
    Ref = monitor(process, Relay),
    Relay ! stop,
    receive {'DOWN', Ref, process, Relay, _} -> ok after 10000 -> ct:fail(relay_stuck) end.

relayed() ->
    receive {relayed, M} -> M after 10000 -> ct:fail(nothing_relayed) end.

numbers(Name, N) ->
    [receive {relayed, {bus, Name, M}} -> binary_to_integer(M) after 10000 -> ct:fail({missing, I}) end
     || I <- lists:seq(1, N)].
