%% @doc Boot: the node's cookie from RELX_COOKIE, the tables that outlive
%% bus_srv processes, the default bus (with its mode and group), then the
%% supervision tree.
-module(bus_app).
-behaviour(application).

-export([start/2, stop/1, config_change/3]).

%% application.

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    ok = cookie_from_environment(),
    case bus_config:load() of
        ok -> start();
        {error, _} = Error -> Error
    end.

start() ->
    %% Owned by this process, which lives as long as the application.
    ok = bus_tables:create(),
    case create_default_bus(application:get_env(bus, default_bus, generic)) of
        ok ->
            {ok, Sup} = bus_sup:start_link(),
            ok = start_bridges(application:get_env(bus, bridges, [])),
            {ok, Sup};
        {error, _} = Error ->
            Error
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok = bus_backend_nif:forget_all(),
    bus_config:erase().

%% A release upgrade changed the application env.
-spec config_change([{atom(), term()}], [{atom(), term()}], [atom()]) -> ok.
config_change(_Changed, _New, _Removed) ->
    case bus_config:load() of
        ok -> ok;
        {error, Reason} -> logger:error(#{what => config_not_loaded, reason => Reason},
                                        #{domain => [bus]})
    end.

%% Internal.

create_default_bus(none) ->
    ok;
create_default_bus(Name) ->
    Mode = application:get_env(bus, default_bus_mode, undefined),
    Group = application:get_env(bus, default_bus_group, undefined),
    case bus:create(Name) of
        {ok, Path} ->
            Result = case set_mode(Path, Mode) of
                ok -> set_group(Path, Group);
                Error -> Error
            end,
            case Result of
                ok ->
                    logger:notice(#{what => default_bus, path => Path, mode => Mode,
                                    group => Group}, #{domain => [bus]}),
                    ok;
                {error, Reason} ->
                    {error, {default_bus, Name, Reason}}
            end;
        {error, Reason} ->
            {error, {default_bus, Name, Reason}}
    end.

%% The application env's bridges: each bus's bridge starts now and joins
%% the other nodes' as they connect.
start_bridges(Names) ->
    lists:foreach(fun(Name) ->
        case bus:start_bridge(Name) of
            {ok, _} -> ok;
            {error, Reason} -> logger:error(#{what => bridge_not_started, name => Name,
                                              reason => Reason}, #{domain => [bus]})
        end
    end, Names).

set_mode(_Path, undefined) -> ok;
set_mode(Path, Mode) when is_integer(Mode), Mode >= 0, Mode =< 8#7777 -> bus:chmod(Path, Mode);
set_mode(_Path, Mode) -> {error, {bad_mode, Mode}}.

%% A gid, or a group name of /etc/group.
set_group(_Path, undefined) ->
    ok;
set_group(Path, Gid) when is_integer(Gid) ->
    bus:chown(Path, undefined, Gid);
set_group(Path, Name) when is_list(Name); is_binary(Name) ->
    case gid(unicode:characters_to_binary(Name)) of
        {ok, Gid} -> bus:chown(Path, undefined, Gid);
        error -> {error, {unknown_group, Name}}
    end;
set_group(_Path, Group) ->
    {error, {unknown_group, Group}}.

gid(Name) ->
    case file:read_file("/etc/group") of
        {ok, Groups} ->
            Lines = binary:split(Groups, <<"\n">>, [global]),
            case [Gid || L <- Lines, [N, _, Gid | _] <- [binary:split(L, <<":">>, [global])],
                         N =:= Name] of
                [Gid | _] -> {ok, binary_to_integer(Gid)};
                [] -> error
            end;
        {error, _} ->
            error
    end.

%% The release's control commands (bin/bus ping, eval, status, ...) use
%% $RELX_COOKIE when it is set: the node takes it too, so one variable
%% configures both (vm.args.src sets no cookie, so that without it the
%% node and the commands both use ~/.erlang.cookie).
cookie_from_environment() ->
    case {os:getenv("RELX_COOKIE"), is_alive()} of
        {Cookie, true} when is_list(Cookie), Cookie =/= "" ->
            true = erlang:set_cookie(list_to_atom(Cookie)),
            ok;
        _ ->
            ok
    end.
