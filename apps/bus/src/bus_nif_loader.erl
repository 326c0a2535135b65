%% @doc Loads a native module (bus_nif_N, and with it its library) the
%% first time the node needs it. The native modules are not among the
%% application's modules: a release loads every listed module at boot,
%% which would map the library into a node whose buses all use the port
%% backend. They ship instead in priv/nif, each next to its library
%% (native/bus_nif/build.sh puts them there). Before a native module is
%% removed, release/1 closes what its library keeps open. A module is
%% given the node's spinning budget as soon as it is loaded.
-module(bus_nif_loader).

-export([ensure/1, path/1, release/1]).

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

%% Closes the buses Module's library keeps open for broadcasting (native
%% version 8 and later), if it is loaded: before the module is removed (a
%% library's statics are never dropped: the buses would stay attached
%% until the node exits), or when the application stops.
-spec release(module()) -> ok.
release(Module) ->
    case erlang:module_loaded(Module)
         andalso erlang:function_exported(Module, forget_all_cached, 0) of
        true ->
            _ = Module:forget_all_cached(),
            ok;
        false ->
            ok
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
                {module, Module} -> configure(Module);
                {error, Reason} -> erlang:error({native_module_not_loaded, Module, Path, Reason})
            end
    end.

%% Gives a freshly loaded native module the node's spinning budget (native
%% version 10 and later), before any bus is opened through it.
configure(Module) ->
    case erlang:function_exported(Module, set_spin, 1) of
        true -> Module:set_spin(bus_config:spin_us());
        false -> ok
    end.

priv_dir() ->
    case code:priv_dir(bus) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Priv ->
            Priv
    end.
