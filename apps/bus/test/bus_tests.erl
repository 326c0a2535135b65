%% Unit tests of the bus API's argument handling (no bus needed).
-module(bus_tests).

-include_lib("eunit/include/eunit.hrl").

%% Pathnames pass through as binaries, strings included.
path_names_test() ->
    ?assertEqual({ok, <<"/tmp/x">>}, bus:resolve("/tmp/x")),
    ?assertEqual({ok, <<"/tmp/x">>}, bus:resolve(<<"/tmp/x">>)),
    ?assertEqual({ok, <<"/tmp/", 195, 169>>}, bus:resolve("/tmp/é")).

%% Well-known names: app env, then BUS_<NAME>, then XDG_RUNTIME_DIR.
well_known_order_test() ->
    os:putenv("XDG_RUNTIME_DIR", "/xdg"),
    os:unsetenv("BUS_VIDEO"),
    ?assertEqual({ok, <<"/xdg/bus/video">>}, bus:resolve(video)),
    os:putenv("BUS_VIDEO", "/env/video"),
    ?assertEqual({ok, <<"/env/video">>}, bus:resolve(video)),
    application:set_env(bus, buses, [{video, "/app/video"}]),
    ?assertEqual({ok, <<"/app/video">>}, bus:resolve(video)),
    application:unset_env(bus, buses),
    os:unsetenv("BUS_VIDEO"),
    os:putenv("XDG_RUNTIME_DIR", ""),
    ?assertEqual({ok, <<"/run/bus/video">>}, bus:resolve(video)),
    os:unsetenv("XDG_RUNTIME_DIR").

%% Other atoms are unknown buses; other terms are badarg.
bad_names_test() ->
    ?assertEqual({error, {unknown_bus, tram}}, bus:resolve(tram)),
    ?assertError(badarg, bus:resolve(42)),
    ?assertError(badarg, bus:resolve([foo])),
    ?assertEqual(lists:sort([generic, audio, video, input, files]), lists:sort(bus:well_known())).
