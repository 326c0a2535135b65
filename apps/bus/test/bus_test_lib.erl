%% @doc Helpers shared by the suites: buses in temporary directories that
%% are removed after each case, with a check that no IPC object or
%% attachment is left behind.
-module(bus_test_lib).

-export([start/1, stop/1, new_bus/1, new_bus/2, track/2, cleanup/1]).
-export([backend_groups/1, use_backend/1, use_backend/2, backend/1]).
-export([receive_numbers/2, gap_then_in_order/2, write_until_stopped/3]).
-export([cli/0, cli/1, run/3, spawn_cli/2, os_kill/2, listeners/1, wait_listeners/2,
         wait_until/2, flush/0, ipc_keys/0, sysv_mappings/0]).

-include_lib("common_test/include/ct.hrl").

%% Starts the application with XDG_RUNTIME_DIR in the suite's private
%% directory (so the default bus is created there).
start(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "xdg"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    os:putenv("XDG_RUNTIME_DIR", Dir),
    [os:unsetenv("BUS_" ++ string:uppercase(atom_to_list(N))) || N <- bus:well_known()],
    {ok, _} = application:ensure_all_started(bus),
    {ok, Generic} = bus:resolve(generic),
    {ok, #{keys := {Sem, Shm}}} = bus:stat(Generic),
    [{generic, {Generic, Sem, Shm}} | Config].

stop(Config) ->
    ok = application:stop(bus),
    cleanup(Config),
    {Generic, Sem, Shm} = ?config(generic, Config),
    ok = bus:remove(Generic),
    false = lists:member(Sem, ipc_keys()) orelse lists:member(Shm, ipc_keys()),
    ok.

%% The same cases once per backend: groups nif and port.
backend_groups(Cases) ->
    [{nif, [], Cases}, {port, [], Cases}].

%% Makes Backend (a group's name) the node's backend for the group's
%% cases: every bus_srv started and every call made from now on uses it.
use_backend(Backend, Config) when Backend =:= nif; Backend =:= port ->
    ok = use_backend(Backend),
    [{backend, Backend} | Config];
use_backend(_Group, Config) ->
    Config.

%% The node's backend from now on (the env, taken at once).
use_backend(Backend) ->
    ok = application:set_env(bus, backend, Backend),
    bus:reload_config().

%% The backend of the group running (nif outside the groups).
backend(Config) ->
    proplists:get_value(backend, Config, nif).

%% A new bus in a temporary directory, removed by cleanup/1.
new_bus(Config) ->
    new_bus(Config, "b").

new_bus(Config, Prefix) ->
    Path = filename:join(?config(priv_dir, Config),
                         Prefix ++ integer_to_list(erlang:unique_integer([positive]))),
    {ok, Bin} = bus:create(Path, true),
    track(Config, Bin),
    Bin.

%% Records a bus (and its keys) to remove and check at cleanup.
track(Config, Path) ->
    {ok, #{keys := {Sem, Shm}}} = bus:stat(Path),
    Log = log_file(Config),
    ok = file:write_file(Log, io_lib:format("~p.~n", [{Path, Sem, Shm}]), [append]),
    %% For test/erlang/run's final check.
    case os:getenv("BUS_TEST_KEYS") of
        false -> ok;
        File -> ok = file:write_file(File, io_lib:format("~.16b ~.16b~n", [Sem, Shm]), [append])
    end.

%% Removes every tracked bus and fails if any of their IPC objects remain
%% or if this node still has a System V segment attached.
cleanup(Config) ->
    Log = log_file(Config),
    Buses = case file:consult(Log) of
        {ok, Terms} -> Terms;
        {error, enoent} -> []
    end,
    _ = file:delete(Log),
    [begin
         _ = bus:remove(Path),
         catch bus:forget_writer(Path)
     end || {Path, _, _} <- Buses],
    Left = [K || {_, Sem, Shm} <- Buses, K <- [Sem, Shm], lists:member(K, ipc_keys())],
    [] = Left,
    ok = wait_until(fun() -> sysv_mappings() =:= [] end, 2000),
    ok.

log_file(Config) ->
    filename:join(?config(priv_dir, Config), "buses.log").

%% The bus command line shipped in priv/bin.
cli() ->
    filename:join([code:priv_dir(bus), "bin", "bus"]).

%% Runs the CLI, returns {ExitStatus, Output}.
cli(Args) ->
    run(cli(), Args, 10000).

%% Runs a program to its end (within Ms between outputs), returns
%% {ExitStatus, Output}.
run(Exe, Args, Ms) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, exit_status, stderr_to_stdout, binary]),
    collect(Port, Ms, <<>>).

collect(Port, Ms, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Ms, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, Acc}
    after Ms -> error({run_timeout, Acc})
    end.

%% Starts the CLI as an OS process (e.g. a listener); returns its OS pid.
spawn_cli(Args, Env) ->
    Port = open_port({spawn_executable, cli()},
                     [{args, Args}, {env, Env}, exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {Port, OsPid}.

os_kill(Signal, OsPid) ->
    [] = os:cmd(io_lib:format("kill -~s ~b", [Signal, OsPid])),
    case Signal of
        %% kill returns before the process has stopped: wait for state T.
        "STOP" -> wait_until(fun() -> os_state(OsPid) =:= $T end, 5000);
        _ -> ok
    end.

%% The state letter of an OS process (from /proc/PID/stat).
os_state(OsPid) ->
    case file:read_file(io_lib:format("/proc/~b/stat", [OsPid])) of
        {ok, Stat} ->
            [_, After] = string:split(Stat, ") ", trailing),
            binary:first(After);
        {error, _} ->
            none
    end.

%% S, the number of processes listening on the bus.
listeners(Path) ->
    {ok, #{listeners := S}} = bus:stat(Path),
    S.

%% Waits (bounded) until S is N; there is no message to wait for when
%% another process joins or leaves.
wait_listeners(Path, N) ->
    wait_until(fun() -> listeners(Path) =:= N end, 2000).

wait_until(Fun, Ms) when Ms =< 0 ->
    case Fun() of
        true -> ok;
        false -> {error, timeout}
    end;
wait_until(Fun, Ms) ->
    case Fun() of
        true -> ok;
        false -> receive after 5 -> wait_until(Fun, Ms - 5) end
    end.

flush() ->
    receive _ -> flush() after 0 -> ok end.

%% The keys of every semaphore array and shared memory segment.
ipc_keys() ->
    Lines = string:split(os:cmd("ipcs -s -m"), "\n", all),
    [list_to_integer(K, 16) || L <- Lines, ["0x" ++ K | _] <- [string:lexemes(L, " ")]].

%% This node's attached System V segments.
sysv_mappings() ->
    {ok, Maps} = file:read_file("/proc/self/maps"),
    [L || L <- binary:split(Maps, <<"\n">>, [global]), binary:match(L, <<"SYSV">>) =/= nomatch].

%% Under back-to-back broadcasts to the calling subscriber of Bus, Fault()
%% makes it miss messages: it gets one {bus_gap, Bus} where they are
%% missing, then every later message in order.
gap_then_in_order(Bus, Fault) ->
    Self = self(),
    Writer = spawn_link(fun() -> write_until_stopped(Bus, 1, Self) end),
    %% Some traffic first.
    First = receive_numbers(Bus, 50),
    First = lists:seq(1, 50),
    Fault(),
    {Before, After, Gaps} = collect_around_gap(Bus, First),
    Writer ! stop,
    Last = receive {written, L} -> L after 5000 -> ct:fail(writer_stuck) end,
    Rest = case lists:last(After) of
        Last -> [];
        _ -> receive_numbers_until(Bus, Last)
    end,
    ct:log("before the gap up to ~b, after it ~b..~b",
           [lists:last(Before), hd(After), Last]),
    1 = Gaps,
    Before = lists:seq(1, lists:last(Before)),
    Later = After ++ Rest,
    Later = lists:seq(hd(After), Last),
    true = hd(After) > lists:last(Before),
    ok.

%% Numbered messages: N of them, as integers.
receive_numbers(Bus, N) ->
    [receive {bus, Bus, M} -> binary_to_integer(M) after 10000 -> ct:fail({missing, I}) end
     || I <- lists:seq(1, N)].

receive_numbers_until(Bus, Last) ->
    receive
        {bus, Bus, M} ->
            case binary_to_integer(M) of
                Last -> [Last];
                I -> [I | receive_numbers_until(Bus, Last)]
            end
    after 10000 -> ct:fail({missing_up_to, Last})
    end.

%% After the numbers Before: collects until the gap notice, then 50
%% numbers after it.
collect_around_gap(Bus, Before) ->
    receive
        {bus_gap, Bus} ->
            collect_after(Bus, Before, []);
        {bus, Bus, M} ->
            collect_around_gap(Bus, Before ++ [binary_to_integer(M)])
    after 10000 -> ct:fail(no_gap)
    end.

collect_after(Bus, Before, After) when length(After) >= 50 ->
    {Before, lists:reverse(After), 1 + count_gaps(Bus)};
collect_after(Bus, Before, After) ->
    receive
        {bus, Bus, M} -> collect_after(Bus, Before, [binary_to_integer(M) | After]);
        {bus_gap, Bus} -> ct:fail(second_gap)
    after 10000 -> ct:fail(nothing_after_gap)
    end.

count_gaps(Bus) ->
    receive {bus_gap, Bus} -> 1 + count_gaps(Bus) after 0 -> 0 end.

write_until_stopped(Bus, I, Parent) ->
    receive stop -> Parent ! {written, I - 1}
    after 0 ->
        ok = bus:broadcast(Bus, integer_to_binary(I)),
        write_until_stopped(Bus, I + 1, Parent)
    end.
