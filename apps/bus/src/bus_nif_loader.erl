%% @doc Loads a native module (bus_nif_N, and with it its library) the
%% first time the node needs it. The native modules are not among the
%% application's modules: a release loads every listed module at boot,
%% which would map the library into a node whose buses all use the port
%% backend. They ship instead in priv/nif, each next to its library
%% (native/bus_nif/build.sh puts them there).
-module(bus_nif_loader).

-export([ensure/1, path/1]).

%% Returns once Module is loaded; raises if it cannot be.
-spec ensure(module()) -> ok.
ensure(Module) ->
    case erlang:module_loaded(Module) of
        true ->
            ok;
        false ->
            %% One process at a time: loading the module a second time
            %% would load its library again, which rustler refuses.
            global:trans({{?MODULE, Module}, self()}, fun() -> load(Module) end, [node()])
    end.

%% Where Module's beam is, without the extension.
-spec path(module()) -> file:filename().
path(Module) ->
    filename:join([priv_dir(), "nif", atom_to_list(Module)]).

%% Internal.

load(Module) ->
    case erlang:module_loaded(Module) of
        true ->
            ok;
        false ->
            Path = path(Module),
            Result = case filelib:is_regular(Path ++ code:objfile_extension()) of
                true ->
                    code:load_abs(Path);
                false ->
                    %% Downgrading to a release before 0.12.0, whose
                    %% native module is in ebin (its boot would have
                    %% loaded it), in the code path once the downgrade
                    %% has switched it.
                    code:load_file(Module)
            end,
            case Result of
                {module, Module} -> ok;
                {error, Reason} -> erlang:error({native_module_not_loaded, Module, Path, Reason})
            end
    end.

priv_dir() ->
    case code:priv_dir(bus) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Priv ->
            Priv
    end.
