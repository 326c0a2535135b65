%% The bus primitives (create, remove, chmod, chown, stat, broadcast) and
%% how they refuse bad input.
-module(bus_api_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("bus/include/bus_nif.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/file.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([default_bus_created_at_boot/1, create_and_remove/1, create_random/1,
         stat_reports_the_bus/1, chmod_grants_classes/1, chown_sets_owner/1,
         broadcast_without_listener_returns/1, longest_message_is_delivered/1,
         too_long_and_nul_are_refused/1, missing_file/1, corrupted_file/1,
         bus_objects_gone/1, no_permission/1, wrong_types_are_badarg/1,
         recreated_bus_is_reopened/1, config_is_taken_when_reloaded/1,
         spin_us_is_taken_by_the_node/1]).

all() ->
    [{group, nif}, {group, port}, config_is_taken_when_reloaded, spin_us_is_taken_by_the_node].

%% Every case against both backends, with the same assertions.
groups() ->
    bus_test_lib:backend_groups(
      [default_bus_created_at_boot, create_and_remove, create_random, stat_reports_the_bus,
       chmod_grants_classes, chown_sets_owner, broadcast_without_listener_returns,
       longest_message_is_delivered, too_long_and_nul_are_refused, missing_file,
       corrupted_file, bus_objects_gone, no_permission, wrong_types_are_badarg,
       recreated_bus_is_reopened]).

init_per_group(Backend, Config) -> bus_test_lib:use_backend(Backend, Config).
end_per_group(_Backend, _Config) -> bus_test_lib:use_backend(nif).

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> bus_test_lib:flush(), bus_test_lib:cleanup(Config).

%% The application creates the default (generic) bus when it starts.
default_bus_created_at_boot(_Config) ->
    {ok, Path} = bus:resolve(generic),
    {ok, #{listeners := 0}} = bus:stat(generic),
    ?assertEqual(filename:join([os:getenv("XDG_RUNTIME_DIR"), "bus", "generic"]),
                 binary_to_list(Path)).

%% create/2 makes a bus (exclusive or not), remove/1 removes all three
%% objects.
create_and_remove(Config) ->
    Path = filename:join(?config(priv_dir, Config), "made"),
    {ok, Bin} = bus:create(Path),
    {ok, #{keys := {Sem, Shm}}} = bus:stat(Bin),
    true = lists:member(Sem, bus_test_lib:ipc_keys()),
    {ok, Bin} = bus:create(Path),
    {error, eexist} = bus:create(Path, true),
    {0, _} = bus_test_lib:cli(["stat", Path]),
    ok = bus:remove(Path),
    false = filelib:is_file(Path),
    false = lists:member(Sem, bus_test_lib:ipc_keys()) orelse lists:member(Shm, bus_test_lib:ipc_keys()),
    {error, enoent} = bus:remove(Path).

%% create/0 makes random.<30 characters> in $XDG_RUNTIME_DIR/bus.
create_random(Config) ->
    {ok, Path} = bus:create(),
    bus_test_lib:track(Config, Path),
    <<"random.", Rest/binary>> = filename:basename(Path),
    30 = byte_size(Rest),
    ?assertEqual(filename:join(os:getenv("XDG_RUNTIME_DIR"), "bus"),
                 binary_to_list(filename:dirname(Path))).

%% stat/1 reports keys, modes, owner, semaphore values and listeners.
stat_reports_the_bus(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {ok, #{file_mode := 8#600, sem_mode := 8#600, shm_mode := 8#600, uid := 0,
           values := {0, 0, 1, 0, 0}, listeners := 0}} = bus:stat(Bus),
    ok = bus_srv:subscribe(Bus),
    {ok, #{listeners := 1}} = bus:stat(Bus),
    ok = bus_srv:unsubscribe(Bus).

%% chmod/2: any bit of a class grants it read and write; the file loses
%% group and other write.
chmod_grants_classes(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:chmod(Bus, 8#751),
    {ok, #{sem_mode := 8#666, shm_mode := 8#666, file_mode := 8#644}} = bus:stat(Bus),
    ok = bus:chmod(Bus, 8#700),
    {ok, #{sem_mode := 8#600, file_mode := 8#600}} = bus:stat(Bus).

%% chown/3 changes owner and group of the file and the IPC objects.
chown_sets_owner(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:chown(Bus, undefined, 65534),
    {ok, #{uid := 0, gid := 65534}} = bus:stat(Bus),
    {ok, #file_info{gid = 65534}} = file:read_file_info(Bus),
    ok = bus:chown(Bus, 0, 0),
    {ok, #{gid := 0}} = bus:stat(Bus).

%% A broadcast on a bus nobody listens to returns at once.
broadcast_without_listener_returns(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {Time, ok} = timer:tc(bus, broadcast, [Bus, <<"0 nobody">>]),
    ?assert(Time < 100000).

%% A 2047-byte message is the longest and arrives whole.
longest_message_is_delivered(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus_srv:subscribe(Bus),
    Long = binary:copy(<<"x">>, 2047),
    ok = bus:broadcast(Bus, Long),
    receive {bus, Bus, Long} -> ok after 1000 -> ct:fail(no_message) end,
    ok = bus_srv:unsubscribe(Bus).

%% Too long and NUL are refused before touching the bus.
too_long_and_nul_are_refused(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {error, message_too_long} = bus:broadcast(Bus, binary:copy(<<"x">>, 2048)),
    {error, message_contains_nul} = bus:broadcast(Bus, <<"0 a", 0, "b">>),
    {error, message_contains_nul} = bus_srv:broadcast(Bus, [<<"0 ">>, 0]),
    %% With a listener: nothing delivered, the semaphores untouched.
    ok = bus_srv:subscribe(Bus),
    {ok, #{values := Values}} = bus:stat(Bus),
    {error, message_too_long} = bus:broadcast(Bus, binary:copy(<<"x">>, 4000)),
    {error, message_contains_nul} = bus:broadcast(Bus, <<0>>),
    {ok, #{values := Values}} = bus:stat(Bus),
    receive {bus, Bus, _} = M -> ct:fail({delivered, M}) after 50 -> ok end,
    ok = bus_srv:unsubscribe(Bus).

%% A missing bus file is enoent everywhere.
missing_file(Config) ->
    Missing = filename:join(?config(priv_dir, Config), "nothing-here"),
    {error, enoent} = bus:broadcast(Missing, "0 x"),
    {error, enoent} = bus:stat(Missing),
    {error, enoent} = bus:remove(Missing),
    {error, enoent} = bus:chmod(Missing, 8#600),
    {error, enoent} = bus_srv:subscribe(Missing),
    {error, enoent} = bus:create(filename:join(Missing, "sub")).

%% A file that is not a bus file is {invalid_bus_file, Path}.
corrupted_file(Config) ->
    Dir = ?config(priv_dir, Config),
    Bad = list_to_binary(filename:join(Dir, "corrupt")),
    [begin
         ok = file:write_file(Bad, Contents),
         {error, {invalid_bus_file, Bad}} = bus:broadcast(Bad, "0 x"),
         {error, {invalid_bus_file, Bad}} = bus:stat(Bad),
         {error, {invalid_bus_file, Bad}} = bus_srv:subscribe(Bad)
     end || Contents <- [<<>>, <<"12\n">>, <<"hello\nworld\n">>, <<"0\n12\n">>]],
    ok = file:delete(Bad),
    DirBin = list_to_binary(Dir),
    {error, {invalid_bus_file, DirBin}} = bus:broadcast(Dir, "0 x").

%% A bus file whose objects were removed behind its back is gone.
bus_objects_gone(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    {ok, Keys} = file:read_file(Bus),
    ok = bus:remove(Bus),
    ok = file:write_file(Bus, Keys),
    {error, gone} = bus:broadcast(Bus, "0 x"),
    {error, gone} = bus_srv:subscribe(Bus),
    ok = file:delete(Bus).

%% Without permission a broadcast is eacces; chmod grants it. (Run as
%% another user: root passes every permission check.)
no_permission(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Dir = filename:dirname(Bus),
    ok = file:change_mode(Dir, 8#755),
    As = fun() -> as_nobody(["bus:broadcast(\"", binary_to_list(Bus), "\", \"0 x\")"]) end,
    %% Never a silent skip: the test needs root to act as another user.
    ?assertEqual("0\n", os:cmd("id -u")),
    ?assertEqual("{error,eacces}", As()),
    ok = bus:chmod(Bus, 8#606),
    ?assertEqual("ok", As()).

as_nobody(Expr) ->
    Ebin = filename:dirname(code:which(bus)),
    Cmd = ["HOME=/tmp setpriv --reuid=65534 --regid=65534 --clear-groups erl -noshell -pa ",
           Ebin, " -eval 'io:format(\"~p\", [", Expr, "]), halt().'"],
    string:trim(os:cmd(lists:flatten(Cmd))).

%% Terms of the wrong type raise badarg; nothing else does.
wrong_types_are_badarg(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Bad = [fun() -> bus:broadcast(123, "0 x") end,
           fun() -> bus:broadcast({Bus}, "0 x") end,
           fun() -> bus:broadcast(Bus, 123) end,
           fun() -> bus:broadcast(Bus, [foo]) end,
           fun() -> bus:broadcast(Bus, "0 x", #{timeout => -1}) end,
           fun() -> bus:broadcast(Bus, "0 x", #{timeout => soon}) end,
           fun() -> bus:broadcast(Bus, "0 x", #{nowait => yes}) end,
           fun() -> bus:broadcast(Bus, "0 x", [{colour, red}]) end,
           fun() -> bus:broadcast(Bus, "0 x", 5) end,
           fun() -> bus:create(Bus, maybe) end,
           fun() -> bus:create(1.5) end,
           fun() -> bus:chmod(Bus, "777") end,
           fun() -> bus:chmod(Bus, -1) end,
           fun() -> bus:chown(Bus, -1, undefined) end,
           fun() -> bus:chown(Bus, "root", undefined) end,
           fun() -> bus:stat(self()) end,
           fun() -> bus:remove(make_ref()) end,
           fun() -> bus_srv:subscribe(42) end,
           fun() -> bus_srv:unsubscribe([foo]) end,
           fun() -> bus_srv:info(<<1:1>>) end],
    [?assertError(badarg, F()) || F <- Bad],
    {error, {unknown_bus, bogus}} = bus:broadcast(bogus, "0 x"),
    {ok, _} = bus:stat(Bus).

%% A cached writer on a bus that was removed and created again at the same
%% path is reopened.
recreated_bus_is_reopened(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:broadcast(Bus, "0 first"),
    {0, _} = bus_test_lib:cli(["remove", Bus]),
    {0, _} = bus_test_lib:cli(["create", "-x", Bus]),
    bus_test_lib:track(Config, Bus),
    ok = bus_srv:subscribe(Bus),
    ok = bus:broadcast(Bus, "0 second"),
    receive {bus, Bus, <<"0 second">>} -> ok after 1000 -> ct:fail(no_message) end,
    ok = bus_srv:unsubscribe(Bus).

%% backend, bus_backends and broadcast_timeout are read once (every
%% broadcast reads them): a change made with application:set_env/3 while
%% the application runs is taken by bus:reload_config/0 or by a release
%% upgrade's config_change; a bad value is refused and the settings stay
%% as they were.
config_is_taken_when_reloaded(Config) ->
    try
        First = bus_test_lib:new_bus(Config),
        ok = application:set_env(bus, backend, port),
        ok = bus_srv:subscribe(First),
        #{backend := nif} = bus:info(First),
        ok = bus:reload_config(),
        Second = bus_test_lib:new_bus(Config),
        ok = bus_srv:subscribe(Second),
        #{backend := port} = bus:info(Second),
        ok = bus:broadcast(Second, "0 through the port backend"),
        receive {bus, Second, <<"0 through the port backend">>} -> ok
        after 5000 -> ct:fail(no_message)
        end,
        ok = application:set_env(bus, bus_backends, #{Second => nif}),
        ok = application:set_env(bus, broadcast_timeout, 1234),
        ok = bus_app:config_change([{bus_backends, #{Second => nif}}, {broadcast_timeout, 1234}], [], []),
        bus_backend_nif = bus_backend:for(Second),
        bus_backend_port = bus_backend:default(),
        1234 = bus_config:broadcast_timeout(bus_config:settings()),
        ok = application:set_env(bus, backend, tcp),
        {error, {bad_backend, {backend, tcp}}} = bus:reload_config(),
        bus_backend_port = bus_backend:default(),
        ok = application:set_env(bus, backend, port),
        ok = application:set_env(bus, bus_backends, #{First => udp}),
        {error, {bad_backend, {bus_backends, {First, udp}}}} = bus:reload_config(),
        bus_backend_nif = bus_backend:for(Second),
        [ok = bus_srv:unsubscribe(B) || B <- [First, Second]]
    after
        ok = application:set_env(bus, bus_backends, #{}),
        ok = application:set_env(bus, broadcast_timeout, 5000),
        ok = bus_test_lib:use_backend(nif)
    end,
    bus_backend_nif = bus_backend:default(),
    5000 = bus_config:broadcast_timeout(bus_config:settings()).

%% The node's spinning budget: none unless BUS_SPIN_US says otherwise,
%% the application env spin_us over both; the native library
%% has it once loaded and takes a new one when the configuration is taken
%% again; port programs get it in their environment; a bad value is
%% refused, changing nothing.
spin_us_is_taken_by_the_node(Config) ->
    Os = os:getenv("BUS_SPIN_US"),
    try
        true = os:unsetenv("BUS_SPIN_US"),
        0 = bus_config:spin_us(),
        true = os:putenv("BUS_SPIN_US", "7"),
        7 = bus_config:spin_us(),
        true = os:putenv("BUS_SPIN_US", "a lot"),
        0 = bus_config:spin_us(),
        Bus = bus_test_lib:new_bus(Config),
        ok = bus_srv:subscribe(Bus),
        ok = application:set_env(bus, spin_us, 3),
        3 = bus_config:spin_us(),
        ok = bus:reload_config(),
        3 = ?NIF:spin(),
        ok = application:set_env(bus, spin_us, 10001),
        {error, {bad_spin_us, 10001}} = bus:reload_config(),
        ok = application:set_env(bus, spin_us, fast),
        {error, {bad_spin_us, fast}} = bus:reload_config(),
        3 = ?NIF:spin(),
        ok = application:set_env(bus, spin_us, 3),
        ok = bus_srv:unsubscribe(Bus),
        Ported = bus_test_lib:new_bus(Config),
        ok = application:set_env(bus, bus_backends, #{Ported => port}),
        ok = bus:reload_config(),
        ok = bus_srv:subscribe(Ported),
        #{backend := port, listener := #{os_pid := OsPid}} = bus:info(Ported),
        {ok, Environ} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/environ"),
        true = lists:member(<<"BUS_SPIN_US=3">>, binary:split(Environ, <<0>>, [global])),
        ok = bus_srv:unsubscribe(Ported)
    after
        case Os of
            false -> os:unsetenv("BUS_SPIN_US");
            _ -> os:putenv("BUS_SPIN_US", Os)
        end,
        ok = application:set_env(bus, spin_us, default),
        ok = application:set_env(bus, bus_backends, #{}),
        ok = bus:reload_config()
    end.
