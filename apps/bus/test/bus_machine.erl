%% @doc Test helper: "machines" on one host, for the multi-node suites.
%% Each is a peer node in its own System V IPC namespace (`unshare --ipc',
%% as root) and its own bus directory (XDG_RUNTIME_DIR), connected to the
%% test node by distributed Erlang over loopback, with the bus application
%% started. Also a relay: a process on a machine that runs commands for
%% the test case and passes on every message it gets.
-module(bus_machine).

-export([ensure_distributed/0, start/2, stop/1, node/1, dir/1, bus/2, ipc_objects/1,
         cli/2, spawn_cli/2]).
-export([start_relay/3, relay/3, relay_do/2, stop_relay/1, relayed/0, relayed/1]).

-type machine() :: {node(), pid(), string()}.

%% Makes this node distributed if it is not (epmd started if needed);
%% says whether it did.
-spec ensure_distributed() -> boolean().
ensure_distributed() ->
    case is_alive() of
        true ->
            false;
        false ->
            _ = os:cmd("epmd -daemon"),
            {ok, _} = net_kernel:start([list_to_atom("bus_ct_" ++ os:getpid()), shortnames]),
            true
    end.

%% A machine named Name; Env, application env of bus set before it starts.
-spec start(string(), [{atom(), term()}]) -> machine().
start(Name, Env) ->
    Dir = string:trim(os:cmd("mktemp -d /tmp/bus-machine-" ++ Name ++ ".XXXXXX")),
    ok = file:make_dir(filename:join(Dir, "bus")),
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
    [ok = erpc:call(Node, application, set_env, [bus, K, V]) || {K, V} <- [{default_bus, none} | Env]],
    %% A fresh namespace: no IPC object before ours.
    [] = ipc_objects(Node),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [bus]),
    {Node, Peer, Dir}.

%% Removes its buses, checks that its namespace has no IPC object left,
%% stops it (if still up).
-spec stop(machine()) -> ok.
stop({Node, Peer, Dir}) ->
    case lists:member(Node, nodes()) of
        true ->
            ok = erpc:call(Node, application, stop, [bus]),
            [ok = erpc:call(Node, bus, remove, [B]) || B <- filelib:wildcard(Dir ++ "/bus/*")],
            [] = ipc_objects(Node),
            peer:stop(Peer);
        false ->
            ok
    end,
    _ = os:cmd("rm -rf " ++ Dir),
    ok.

-spec node(machine()) -> node().
node({Node, _, _}) -> Node.

-spec dir(machine()) -> string().
dir({_, _, Dir}) -> Dir.

%% A new bus on the machine.
-spec bus(machine(), string()) -> binary().
bus({Node, _, Dir}, Name) ->
    {ok, Path} = erpc:call(Node, bus, create, [filename:join([Dir, "bus", Name]), true]),
    Path.

%% The lines of `ipcs' naming an object, in the machine's namespace.
-spec ipc_objects(node()) -> [string()].
ipc_objects(Node) ->
    Lines = string:split(erpc:call(Node, os, cmd, ["ipcs -s -m"]), "\n", all),
    [L || L <- Lines, lists:prefix("0x", L)].

%% The `bus' command, run in the machine's namespace; its output.
-spec cli(machine(), [iodata()]) -> string().
cli({Node, _, _}, Args) ->
    Command = lists:join(" ", [cli_path() | [unicode:characters_to_list(A) || A <- Args]]),
    erpc:call(Node, os, cmd, [lists:flatten(Command)]).

%% A relay on the machine running the `bus' command (e.g. listen): it
%% passes on each line the command prints as {relayed, {line, Line}}, and
%% answers relay_do(R, os_pid) with the command's OS pid.
-spec spawn_cli(machine(), [iodata()]) -> pid().
spawn_cli(Machine, Args) ->
    Cli = cli_path(),
    start_relay(Machine, {cli, Cli, [unicode:characters_to_list(A) || A <- Args]}, #{}).

cli_path() ->
    filename:join([code:priv_dir(bus), "bin", "bus"]).

%% Relays.

%% A relay on the machine subscribed to Name (bus:subscribe(Name, Options)).
-spec start_relay(machine(), term(), map()) -> pid().
start_relay({Node, _, _}, Name, Options) ->
    Self = self(),
    Relay = erpc:call(Node, erlang, spawn, [?MODULE, relay, [Self, Name, Options]]),
    receive {relaying, Relay, Result} -> ok = Result, Relay after 10000 -> error(no_relay) end.

relay(To, {cli, Cli, Args}, _) ->
    Port = open_port({spawn_executable, Cli}, [{args, Args}, {line, 4096}, binary, exit_status]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    %% `bus listen' says nothing once listening: S says it.
    To ! {relaying, self(), ok},
    cli_loop(To, Port, OsPid);
relay(To, Name, Options) ->
    To ! {relaying, self(), bus:subscribe(Name, Options)},
    relay_loop(To).

relay_loop(To) ->
    receive
        {do, From, Fun} -> From ! {done, self(), Fun()};
        stop -> exit(normal);
        Message -> To ! {relayed, self(), Message}
    end,
    relay_loop(To).

cli_loop(To, Port, OsPid) ->
    receive
        {Port, {data, {eol, Line}}} -> To ! {relayed, self(), {line, Line}};
        {Port, {exit_status, S}} -> To ! {relayed, self(), {exit_status, S}};
        {do, From, os_pid} -> From ! {done, self(), OsPid};
        {do, From, Fun} -> From ! {done, self(), Fun()};
        stop -> _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)), exit(normal)
    end,
    cli_loop(To, Port, OsPid).

-spec relay_do(pid(), term()) -> term().
relay_do(Relay, Fun) ->
    Relay ! {do, self(), Fun},
    receive {done, Relay, Result} -> Result after 10000 -> error(relay_stuck) end.

-spec stop_relay(pid()) -> ok.
stop_relay(Relay) ->
    Ref = monitor(process, Relay),
    Relay ! stop,
    receive {'DOWN', Ref, process, Relay, _} -> ok after 10000 -> error(relay_stuck) end.

-spec relayed() -> term().
relayed() ->
    relayed(10000).

-spec relayed(timeout()) -> term().
relayed(Timeout) ->
    receive {relayed, _, M} -> M after Timeout -> error(nothing_relayed) end.
