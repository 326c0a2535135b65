%% @doc What only the port backend has: no native code in the VM, port
%% programs that die and are restarted, programs that outlive nothing
%% (a node killed), bad frames, broadcasts that wait without a scheduler,
%% and the project's C library writing to a port-backed subscriber. (What
%% both backends do is checked by the parameterised suites: bus_srv,
%% bus_flow, bus_backend, bus_api.)
-module(bus_port_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("bus/include/bus_nif.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([nif_never_loaded/1, nif_loaded_once_when_needed/1, killed_program_is_a_gap/1, killed_node_leaves_no_program/1,
         bad_frames_are_logged_not_fatal/1, waiting_broadcasts_hold_no_scheduler/1,
         c_library_writes_back_to_back/1, frames_decode_strictly/1,
         downgrade_moves_a_port_bus_to_the_nif/1, native_handover_leaves_a_port_bus/1, renewed_programs_lose_and_repeat_nothing/1,
         renewal_answers_what_the_old_program_owes/1]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [nif_never_loaded, nif_loaded_once_when_needed, killed_program_is_a_gap, killed_node_leaves_no_program,
     bad_frames_are_logged_not_fatal, waiting_broadcasts_hold_no_scheduler,
     c_library_writes_back_to_back, frames_decode_strictly,
     downgrade_moves_a_port_bus_to_the_nif, native_handover_leaves_a_port_bus, renewed_programs_lose_and_repeat_nothing,
     renewal_answers_what_the_old_program_owes].

init_per_suite(Config) ->
    Config1 = bus_test_lib:start(Config),
    [{dist_started, bus_machine:ensure_distributed()} | Config1].

end_per_suite(Config) ->
    _ = ?config(dist_started, Config) andalso net_kernel:stop(),
    bus_test_lib:stop(Config).

init_per_testcase(_Case, Config) ->
    bus_test_lib:use_backend(port, Config).

end_per_testcase(_Case, Config) ->
    ok = bus_test_lib:use_backend(nif),
    bus_test_lib:flush(),
    bus_test_lib:cleanup(Config).

%% A node whose backend is port does everything — create, subscribe,
%% broadcast, stat, chmod, chown, info, remove — without loading the
%% native module or mapping its library.
nif_never_loaded(_Config) ->
    {Node, _, _} = M = bus_machine:start("port", [{backend, port}]),
    Path = bus_machine:bus(M, "b"),
    Relay = bus_machine:start_relay(M, Path, #{}),
    ok = erpc:call(Node, bus, broadcast, [Path, <<"hello">>]),
    {bus, Path, <<"hello">>} = bus_machine:relayed(),
    {ok, #{listeners := 1}} = erpc:call(Node, bus, stat, [Path]),
    ok = erpc:call(Node, bus, chmod, [Path, 8#600]),
    ok = erpc:call(Node, bus, chown, [Path, undefined, undefined]),
    {error, eexist} = erpc:call(Node, bus, create, [Path, true]),
    {error, message_too_long} = erpc:call(Node, bus, broadcast, [Path, binary:copy(<<"x">>, 2048)]),
    #{backend := port, listener := #{os_pid := _}} = erpc:call(Node, bus, info, [Path]),
    ok = bus_machine:stop_relay(Relay),
    ?assertEqual(false, erpc:call(Node, code, is_loaded, [?NIF])),
    OsPid = erpc:call(Node, os, getpid, []),
    {ok, Maps} = file:read_file("/proc/" ++ OsPid ++ "/maps"),
    nomatch = binary:match(Maps, <<"bus_nif">>),
    ok = bus_machine:stop(M).

%% On a node whose backend is port, the native module is loaded from
%% priv/nif the first time something needs it, once, however many
%% processes ask at the same moment; it is not one of the application's
%% modules (a release would load it at boot).
nif_loaded_once_when_needed(_Config) ->
    {Node, _, _} = M = bus_machine:start("port_then_nif", [{backend, port}]),
    Path = bus_machine:bus(M, "b"),
    {ok, Modules} = erpc:call(Node, application, get_key, [bus, modules]),
    ?assertNot(lists:member(?NIF, Modules)),
    ?assert(lists:member(bus_nif_loader, Modules)),
    false = erpc:call(Node, code, is_loaded, [?NIF]),
    Parent = self(),
    Askers = [spawn_link(fun() -> Parent ! {self(), erpc:call(Node, bus_nif_loader, ensure, [?NIF])} end)
              || _ <- lists:seq(1, 8)],
    [ok = receive {Asker, Result} -> Result end || Asker <- Askers],
    Beam = erpc:call(Node, bus_nif_loader, path, [?NIF]) ++ ".beam",
    {file, Beam} = erpc:call(Node, code, is_loaded, [?NIF]),
    OsPid = erpc:call(Node, os, getpid, []),
    {ok, Maps} = file:read_file("/proc/" ++ OsPid ++ "/maps"),
    Libraries = lists:usort([lists:last(binary:split(Line, <<" ">>, [global, trim_all]))
                             || Line <- binary:split(Maps, <<"\n">>, [global, trim_all]),
                                binary:match(Line, <<"bus_nif">>) =/= nomatch]),
    [Library] = Libraries,
    {ok, Mapped} = file:read_file_info(Library),
    {ok, Shipped} = file:read_file_info(filename:rootname(Beam) ++ ".so"),
    ?assertEqual(Shipped, Mapped),
    {ok, #{listeners := 0}} = erpc:call(Node, bus_backend_nif, stat, [Path]),
    ok = bus_machine:stop(M).

%% kill -9 of a bus's port program under back-to-back broadcasts: a new
%% program joins, the subscriber gets {bus_gap, Name} where messages may
%% be missing, then every later message in order.
killed_program_is_a_gap(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    #{listener := #{os_pid := OsPid, restarts := 0}} = bus:info(Bus),
    ok = bus_test_lib:gap_then_in_order(Bus, fun() -> bus_test_lib:os_kill("KILL", OsPid) end),
    #{backend := port, listener := #{os_pid := OsPid2, restarts := 1}} = bus:info(Bus),
    ?assertNotEqual(OsPid, OsPid2),
    ok = bus:unsubscribe(Bus),
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% A node killed with kill -9: each of its port programs sees its stdin
%% close, leaves its bus and exits.
killed_node_leaves_no_program(Config) ->
    Buses = [bus_test_lib:new_bus(Config) || _ <- [1, 2]],
    Paths = lists:usort([filename:dirname(code:which(Mod)) || Mod <- [bus, bus_machine]]),
    {ok, Peer, Node} = peer:start(#{
        name => list_to_atom("bus_port_" ++ integer_to_list(erlang:unique_integer([positive]))),
        args => ["-setcookie", atom_to_list(erlang:get_cookie())
                 | lists:append([["-pa", P] || P <- Paths])],
        env => [{"XDG_RUNTIME_DIR", os:getenv("XDG_RUNTIME_DIR")}]}),
    ok = erpc:call(Node, application, load, [bus]),
    [ok = erpc:call(Node, application, set_env, [bus, K, V])
     || {K, V} <- [{default_bus, none}, {backend, port}]],
    {ok, _} = erpc:call(Node, application, ensure_all_started, [bus]),
    Machine = {Node, Peer, ""},
    Relays = [bus_machine:start_relay(Machine, B, #{}) || B <- Buses],
    [ok = bus_test_lib:wait_listeners(B, 1) || B <- Buses],
    Programs = [begin
                    #{listener := #{os_pid := P}} = erpc:call(Node, bus, info, [B]),
                    P
                end || B <- Buses],
    NodePid = erpc:call(Node, os, getpid, []),
    unlink(Peer),
    [] = os:cmd("kill -KILL " ++ NodePid),
    %% No message says an OS process has exited: poll, bounded.
    ok = bus_test_lib:wait_until(fun() -> not lists:any(fun alive/1, Programs) end, 5000),
    [ok = bus_test_lib:wait_listeners(B, 0) || B <- Buses],
    _ = Relays,
    ok.

%% Frames a program should never send (unknown kind, a reply that is not
%% a term, a reply to nothing) are logged; the listener and its program
%% carry on.
bad_frames_are_logged_not_fatal(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    #{listener := #{os_pid := OsPid}} = bus:info(Bus),
    [Listener] = [P || {_, P, _, _} <- supervisor:which_children(bus_port_sup)],
    {links, Links} = process_info(Listener, links),
    [Port] = [L || L <- Links, is_port(L)],
    [Listener ! {Port, {data, Frame}}
     || Frame <- [<<>>, <<"Zjunk">>, <<"R", 0, 0, 0, 9, "not a term">>,
                  <<"R", 0, 0, 0, 9, 131, 100, 0, 2, "ok">>, <<"D", 0:64>>]],
    ok = bus:broadcast(Bus, <<"after">>),
    receive {bus, Bus, <<"after">>} -> ok after 5000 -> ct:fail(no_message) end,
    #{listener := #{os_pid := OsPid, restarts := 0}} = bus:info(Bus),
    ok = bus:unsubscribe(Bus).

%% More broadcasts waiting for a stopped listener than the VM has dirty
%% I/O schedulers: they wait in the port program, so a broadcast on
%% another bus goes through meanwhile; resumed, all complete.
waiting_broadcasts_hold_no_scheduler(Config) ->
    Held = bus_test_lib:new_bus(Config),
    Other = bus_test_lib:new_bus(Config),
    {CliPort, CliPid} = bus_test_lib:spawn_cli(["listen", Held], []),
    ok = bus_test_lib:wait_listeners(Held, 1),
    ok = bus_test_lib:os_kill("STOP", CliPid),
    N = erlang:system_info(dirty_io_schedulers) + 2,
    Self = self(),
    Writers = [spawn_link(fun() ->
                              Self ! {written, I, bus:broadcast(Held, integer_to_binary(I),
                                                                #{timeout => infinity})}
                          end) || I <- lists:seq(1, N)],
    ok = bus:broadcast(Other, <<"through">>, #{timeout => 5000}),
    ok = bus_test_lib:os_kill("CONT", CliPid),
    Results = [receive {written, I, R} -> R after 10000 -> ct:fail({stuck, I}) end
               || I <- lists:seq(1, N)],
    ?assertEqual(lists:duplicate(N, ok), Results),
    _ = Writers,
    ok = bus_test_lib:os_kill("TERM", CliPid),
    receive {CliPort, {exit_status, _}} -> ok after 5000 -> ct:fail(cli_stuck) end.

%% The project's C library (native/libbus) writing 20,000 messages back to
%% back to a port-backed subscriber: every one arrives, in order, and the
%% writer ends.
c_library_writes_back_to_back(Config) ->
    Writer = c_writer(Config),
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{max_mailbox => 100000}),
    N = 20000,
    {0, _} = bus_test_lib:run(Writer, [binary_to_list(Bus), integer_to_list(N)], 60000),
    ?assertEqual(lists:seq(1, N), bus_test_lib:receive_numbers(Bus, N)),
    ok = bus:unsubscribe(Bus).

%% Program frames that are malformed decode as such, never crash.
frames_decode_strictly(_Config) ->
    {malformed, <<>>} = bus_port_frames:decode(<<>>),
    {malformed, <<"Q">>} = bus_port_frames:decode(<<"Q">>),
    {malformed, _} = bus_port_frames:decode(<<"H", 1:32>>),
    {malformed, _} = bus_port_frames:decode(<<"D", 0:64>>),
    {malformed, _} = bus_port_frames:decode(<<"F", "junk">>),
    %% An atom nobody knows is not made (binary_to_term's safe).
    {malformed, _} = bus_port_frames:decode(<<"R", 1:32, 131, 119, 12, "no_such_atom">>),
    {reply, 7, ok} = bus_port_frames:decode(<<"R", 7:32, (term_to_binary(ok))/binary>>),
    {hello, 1, 42} = bus_port_frames:decode(<<"H", 1:32, 42:32>>),
    {item, {own, <<"x">>}} = bus_port_frames:decode(<<"W", "x">>),
    ok.

%% A downgrade to a release without the port backend (0.9.0) moves a
%% port-backed bus's bus_srv to the NIF in its code_change: the port
%% listener leaves, the NIF's joins, the subscriber is told of the gap,
%% then gets every later message.
downgrade_moves_a_port_bus_to_the_nif(Config) ->
    {Bus, Srv, Program} = subscribed_port_bus(Config),
    ok = bus:broadcast(Bus, <<"before">>),
    receive {bus, Bus, <<"before">>} -> ok after 5000 -> ct:fail(nothing_before) end,
    ok = change_codes(Srv, [{{down, "0.9.0"}, []} | back()]),
    %% Told once the NIF's listener is counted on the bus.
    receive {bus_gap, Bus} -> ok after 5000 -> ct:fail(no_gap) end,
    ok = bus:broadcast(Bus, <<"after">>),
    receive {bus, Bus, <<"after">>} -> ok after 5000 -> ct:fail(nothing_after) end,
    #{backend := nif, listeners := 1} = bus:info(Bus),
    false = alive(Program),
    ok = bus:unsubscribe(Bus),
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% A release that changes native code hands every NIF listener over
%% ({handover, Nif}), up or down: a port-backed bus keeps its program, and
%% its subscriber sees no gap.
native_handover_leaves_a_port_bus(Config) ->
    {Bus, Srv, Program} = subscribed_port_bus(Config),
    ok = change_code(Srv, "0.12.0", {handover, ?NIF}),
    ok = change_codes(Srv, [{{down, "0.12.0"}, {handover, ?NIF}} | back()]),
    ok = bus:broadcast(Bus, <<"after">>),
    receive
        {bus, Bus, <<"after">>} -> ok;
        {bus_gap, Bus} -> ct:fail(gap)
    after 5000 -> ct:fail(nothing_after)
    end,
    #{backend := port, listener := #{os_pid := Program, restarts := 0}} = bus:info(Bus),
    ok = bus:unsubscribe(Bus),
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% Renewing the port programs (what a release upgrade that ships new ones
%% does) under back-to-back broadcasts, three times: each time the bus's
%% program hands its place to a new one, and the request program is
%% replaced; the subscriber gets every message once, in order, with no
%% gap.
renewed_programs_lose_and_repeat_nothing(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    Self = self(),
    Writer = spawn_link(fun() -> bus_test_lib:write_until_stopped(Bus, 1, Self) end),
    Renew = fun(Round) ->
        #{listener := #{os_pid := Before}} = bus:info(Bus),
        OpsBefore = bus_port_ops:os_pid(),
        ok = bus_port_sup:renew_programs(all),
        %% No message says the switch is done: poll, bounded.
        ok = bus_test_lib:wait_until(fun() ->
                 #{listener := #{os_pid := P}} = bus:info(Bus),
                 P =/= Before andalso bus_port_ops:os_pid() =/= OpsBefore
             end, 10000),
        ct:log("round ~b: program ~b -> ~p", [Round, Before, maps:get(os_pid, maps:get(listener, bus:info(Bus)))])
    end,
    [Renew(R) || R <- [1, 2, 3]],
    Writer ! stop,
    Last = receive {written, L} -> L after 10000 -> ct:fail(writer_stuck) end,
    Got = receive_all(Bus, Last, []),
    ?assertEqual(lists:seq(1, Last), Got),
    #{listener := #{restarts := 0}} = bus:info(Bus),
    ok = bus:unsubscribe(Bus),
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% A request the old program answers after it has handed over, while the
%% new one has not said hello yet (bus:info/1 during a renewal), is
%% answered, and the renewal goes on: the answer was taken for the new
%% program's hello, and the bus's server stopped. To get that order, the
%% listener is suspended while its request goes out to the old program
%% and the message that makes the old program hold (`A') comes in.
renewal_answers_what_the_old_program_owes(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    #{listener := #{os_pid := Old}} = bus:info(Bus),
    [Listener] = [P || {_, P, _, _} <- supervisor:which_children(bus_port_sup), is_pid(P)],
    ok = bus_port_listener:renew(Listener, all),
    %% (A system call comes after the cast: the old program has been asked.)
    _ = sys:get_state(Listener),
    ok = bus_test_lib:wait_until(fun() -> has_thread(Old, "bus-port-handov") end, 5000),
    ok = sys:suspend(Listener),
    Self = self(),
    spawn_link(fun() -> Self ! {counters, bus_port_listener:counters(Listener)} end),
    ok = bus_test_lib:wait_until(fun() -> queued(Listener, fun(M) -> element(1, M) =:= '$gen_call' end) end, 5000),
    ok = bus:broadcast(Bus, <<"last of the old program">>),
    ok = bus_test_lib:wait_until(fun() -> queued(Listener, fun(M) -> M =:= {element(1, M), {data, <<"A">>}} end) end, 5000),
    ok = sys:resume(Listener),
    receive {counters, #{taken := 1}} -> ok after 5000 -> ct:fail(no_counters) end,
    ok = bus_test_lib:wait_until(fun() ->
             #{listener := #{os_pid := P}} = bus:info(Bus),
             P =/= Old
         end, 10000),
    ok = bus:broadcast(Bus, <<"first of the new">>),
    [receive
         {bus, Bus, M} -> ok;
         {bus_gap, Bus} -> ct:fail(gap)
     after 5000 -> ct:fail({missing, M})
     end || M <- [<<"last of the old program">>, <<"first of the new">>]],
    #{listener := #{restarts := 0}} = bus:info(Bus),
    ok = bus:unsubscribe(Bus),
    ok = bus_test_lib:wait_listeners(Bus, 0).

%% Internal.

%% Every message up to the one numbered Last; a gap notice fails.
receive_all(Bus, Last, Acc) ->
    receive
        {bus, Bus, M} ->
            case binary_to_integer(M) of
                Last -> lists:reverse([Last | Acc]);
                I -> receive_all(Bus, Last, [I | Acc])
            end;
        {bus_gap, Bus} ->
            ct:fail({gap_after, length(Acc)})
    after 10000 -> ct:fail({missing_after, length(Acc)})
    end.

%% Whether a message in Pid's queue satisfies Pred.
queued(Pid, Pred) ->
    {messages, Messages} = process_info(Pid, messages),
    lists:any(Pred, Messages).

%% Whether the process has a thread of that name (/proc truncates them).
has_thread(OsPid, Name) ->
    Tasks = filelib:wildcard("/proc/" ++ integer_to_list(OsPid) ++ "/task/*/comm"),
    lists:any(fun(F) -> {ok, N} = file:read_file(F), string:trim(N) =:= list_to_binary(Name) end,
              Tasks).

alive(OsPid) ->
    filelib:is_dir("/proc/" ++ integer_to_list(OsPid)).

%% A writer built from native/libbus: `writer PATH N' broadcasts 1..N.
c_writer(Config) ->
    Root = string:trim(os:cmd("realpath " ++ code:priv_dir(bus) ++ "/../../..")),
    Lib = filename:join([Root, "target", "release"]),
    [] = os:cmd("cd " ++ Root ++ " && cargo build --release -q -p libbus 2>&1"),
    Dir = ?config(priv_dir, Config),
    Source = filename:join(Dir, "writer.c"),
    Exe = filename:join(Dir, "writer"),
    ok = file:write_file(Source, <<"
#include <bus.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char *argv[])
{
    bus_t bus;
    char message[32];
    long i, n = argc == 3 ? atol(argv[2]) : 0;
    if (n <= 0 || bus_open(&bus, argv[1], BUS_WRONLY))
        return 2;
    for (i = 1; i <= n; i++) {
        snprintf(message, sizeof message, \"%ld\", i);
        if (bus_write(&bus, message, 0))
            return 3;
    }
    return bus_close(&bus) ? 4 : 0;
}
">>),
    Include = filename:join([Root, "native", "libbus", "include"]),
    %% The library's soname is libbus.so.3, as the original's.
    LibDir = filename:join(Dir, "lib"),
    ok = file:make_dir(LibDir),
    ok = file:make_symlink(filename:join(Lib, "libbus.so"), filename:join(LibDir, "libbus.so.3")),
    ok = file:make_symlink("libbus.so.3", filename:join(LibDir, "libbus.so")),
    [] = os:cmd(lists:flatten(io_lib:format("cc -std=c11 -O2 -I ~s -o ~s ~s -L ~s -lbus "
                                            "-Wl,-rpath,~s 2>&1",
                                            [Include, Exe, Source, LibDir, LibDir]))),
    Exe.

%% A new bus this process subscribes to, its bus_srv and its port
%% program's OS pid.
subscribed_port_bus(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    {ok, Srv} = bus_tables:server(Bus),
    #{backend := port, listener := #{os_pid := Program}} = bus:info(Bus),
    {Bus, Srv, Program}.

%% What a release upgrade does to a bus_srv: suspended, code_change/3
%% with Vsn and Extra, resumed.
change_code(Srv, Vsn, Extra) ->
    change_codes(Srv, [{Vsn, Extra}]).

%% Code changes made in one suspension.
change_codes(Srv, Changes) ->
    ok = sys:suspend(Srv),
    [ok = sys:change_code(Srv, bus_srv, Vsn, Extra) || {Vsn, Extra} <- Changes],
    sys:resume(Srv).

%% After a downgrade's code change, this release's code is still the one
%% loaded here: an upgrade in the same suspension gives the state its
%% shape again (a real downgrade loads the old code instead).
back() ->
    [{"0.14.0", []}].
