%% @doc The settings every broadcast reads (`backend', `bus_backends',
%% `broadcast_timeout'), kept in a persistent term so that a broadcast
%% reads them with one lookup instead of three application env reads (a
%% third of what bus:broadcast/2 added to the native call). They are
%% checked and taken from the application env when the application starts,
%% at a release upgrade that changes the configuration
%% (bus_app:config_change/3) and by bus:reload_config/0 after
%% application:set_env/3 at run time; while the application is not
%% running (and during an upgrade from a release without this module)
%% they are read from the env at each call.
-module(bus_config).

-export([load/0, erase/0, settings/0, backend/1, backends/1, broadcast_timeout/1]).
-export([spin_us/0]).

-export_type([settings/0]).

-define(KEY, {?MODULE, settings}).
%% Like gen_server:call/2: a broadcast waits this long for listeners by
%% default (a stopped listener must not hold a dirty scheduler for good).
-define(DEFAULT_TIMEOUT, 5000).
%% The node's spinning budget (microseconds) unless `spin_us' or
%% BUS_SPIN_US says otherwise (none, as in every binding), and the largest
%% either may ask for.
-define(DEFAULT_SPIN_US, 0).
-define(MAX_SPIN_US, 10000).

%% {Backend module, bus_backends as set, broadcast timeout}.
-opaque settings() :: {module(), #{term() => bus_backend:name()}, timeout()}.

%% API.

%% Checks the env's settings and caches them, and gives the native
%% library (if loaded) the spinning budget; keeps both as they were and
%% says which value is wrong if one is.
-spec load() -> ok | {error, {bad_backend, term()} | {bad_spin_us, term()}}.
load() ->
    {Backend, Backends, Timeout} = env(),
    Spin = spin_setting(),
    case {check(Backend, Backends), Spin} of
        {{error, _} = Error, _} ->
            Error;
        {ok, {bad, Bad}} ->
            {error, {bad_spin_us, Bad}};
        {ok, _} ->
            ok = bus_backend_nif:set_spin(spin_us(Spin)),
            Settings = settings_of(Backend, Backends, Timeout),
            %% Replacing a persistent term makes every process that holds it
            %% copy it: only when it changed.
            case persistent_term:get(?KEY, undefined) of
                Settings -> ok;
                _ -> persistent_term:put(?KEY, Settings)
            end
    end.

%% Drops the cache (the application stopped, or a downgrade to a release
%% without it).
-spec erase() -> ok.
erase() ->
    _ = persistent_term:erase(?KEY),
    ok.

%% The settings, read once for the accessors below (one lookup).
-spec settings() -> settings().
settings() ->
    case persistent_term:get(?KEY, undefined) of
        undefined -> from_env();
        Settings -> Settings
    end.

%% The node's backend module (`backend').
-spec backend(settings()) -> module().
backend({Backend, _, _}) ->
    Backend.

%% The per-bus overrides (`bus_backends').
-spec backends(settings()) -> #{term() => bus_backend:name()}.
backends({_, Backends, _}) ->
    Backends.

%% A broadcast's timeout when it gives none (`broadcast_timeout').
-spec broadcast_timeout(settings()) -> timeout().
broadcast_timeout({_, _, Timeout}) ->
    Timeout.

%% The node's spinning budget in microseconds: what its native writers,
%% listeners and port programs spin for before they block, while a core is
%% free (the library's gate): the application env `spin_us' (0 to 10000),
%% else BUS_SPIN_US in the node's environment, else none (spinning pays
%% only against peers that answer within microseconds, and costs the node
%% CPU otherwise: README, Performance). A bad env value is refused by
%% load/0 (and counts as default here).
-spec spin_us() -> 0..?MAX_SPIN_US.
spin_us() ->
    spin_us(spin_setting()).

%% Internal.

%% {ok, Micros} as the env sets it, default, or {bad, Value}.
spin_setting() ->
    case application:get_env(bus, spin_us, default) of
        default -> default;
        US when is_integer(US), US >= 0, US =< ?MAX_SPIN_US -> {ok, US};
        Bad -> {bad, Bad}
    end.

%% The budget a spin_setting/0 result gives.
spin_us({ok, US}) -> US;
spin_us(_) -> from_os_env().

%% BUS_SPIN_US as every binding reads it, else none.
from_os_env() ->
    case string:to_integer(string:trim(os:getenv("BUS_SPIN_US", ""))) of
        {US, ""} when US >= 0, US =< ?MAX_SPIN_US -> US;
        _ -> ?DEFAULT_SPIN_US
    end.

%% The settings as the env has them now.
from_env() ->
    {Backend, Backends, Timeout} = env(),
    settings_of(Backend, Backends, Timeout).

env() ->
    {application:get_env(bus, backend, nif),
     application:get_env(bus, bus_backends, #{}),
     application:get_env(bus, broadcast_timeout, ?DEFAULT_TIMEOUT)}.

%% (Values load/0 refused, or set while the application is not running,
%% fall back to the defaults, as they always did.)
settings_of(Backend, Backends, Timeout) ->
    {case Backend of
         port -> bus_backend_port;
         _ -> bus_backend_nif
     end,
     case Backends of
         Map when is_map(Map) -> Map;
         _ -> #{}
     end,
     case Timeout of
         infinity -> infinity;
         T when is_integer(T), T >= 0 -> T;
         _ -> ?DEFAULT_TIMEOUT
     end}.

check(Backend, Overrides) ->
    Bad = [{backend, Backend} || not is_backend(Backend)]
        ++ case is_map(Overrides) of
               true -> [{bus_backends, {Name, B}} || {Name, B} <- maps:to_list(Overrides),
                                                     not is_backend(B)];
               false -> [{bus_backends, Overrides}]
           end,
    case Bad of
        [] -> ok;
        [First | _] -> {error, {bad_backend, First}}
    end.

is_backend(nif) -> true;
is_backend(port) -> true;
is_backend(_) -> false.
