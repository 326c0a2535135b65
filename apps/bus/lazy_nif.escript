#!/usr/bin/env escript
%% Build glue, run after every compile (rebar.config post_hooks): leaves
%% the native modules (bus_nif_N) out of the `modules' of ebin/bus.app. A
%% release loads at boot exactly the modules listed there, and a native
%% module's on_load maps its library: unlisted, it is loaded on first use
%% (bus_backend_nif:nif/0), so a node whose buses all use the port backend
%% never loads native code.
-mode(compile).

main(_) ->
    App = filename:join(ebin(), "bus.app"),
    {ok, [{application, bus, Keys}]} = file:consult(App),
    Modules = proplists:get_value(modules, Keys, []),
    case [M || M <- Modules, not is_native(M)] of
        Modules ->
            ok;
        Kept ->
            Keys1 = lists:keystore(modules, 1, Keys, {modules, Kept}),
            ok = file:write_file(App, io_lib:format("~tp.~n", [{application, bus, Keys1}]))
    end.

is_native(Module) ->
    lists:prefix("bus_nif_", atom_to_list(Module)).

%% Where this compile put the application file (as doc_chunks.escript).
ebin() ->
    Candidates = [filename:join(D, "ebin") || D <- env("REBAR_BARE_COMPILER_OUTPUT_DIR")]
        ++ [filename:join([D, "lib", "bus", "ebin"]) || D <- env("REBAR_BUILD_DIR")],
    hd([D || D <- Candidates, filelib:is_regular(filename:join(D, "bus.app"))] ++ ["ebin"]).

env(Name) ->
    case os:getenv(Name) of
        false -> [];
        "" -> [];
        Value -> [Value]
    end.
