%% @doc Boot: the tables that outlive bus_srv processes, the default bus,
%% then the supervision tree.
-module(bus_app).
-behaviour(application).

-export([start/2, stop/1]).

%% application.

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    %% Owned by this process, which lives as long as the application.
    ok = bus_tables:create(),
    case create_default_bus(application:get_env(bus, default_bus, generic)) of
        ok -> bus_sup:start_link();
        {error, _} = Error -> Error
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok.

%% Internal.

create_default_bus(none) ->
    ok;
create_default_bus(Name) ->
    case bus:create(Name) of
        {ok, Path} ->
            logger:info("bus: default bus ~ts", [Path]),
            ok;
        {error, Reason} ->
            {error, {default_bus, Name, Reason}}
    end.
