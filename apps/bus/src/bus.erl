%% @doc The bus primitives: create, remove, chmod, chown, stat and
%% broadcast. This module starts nothing: it validates its arguments and
%% delegates to the native library. Listening is `bus_srv:subscribe/1'.
%%
%% A bus is named by its pathname (binary or string) or by a well-known
%% name (generic, audio, video, input, files), resolved through the
%% application environment (`buses'), then the environment variables
%% BUS_GENERIC ... BUS_FILES, then `$XDG_RUNTIME_DIR/bus/<name>'.
%%
%% Failures are `{error, Reason}' (see bus_nif_N:reason()); a term of the
%% wrong type raises badarg.
-module(bus).

-include("bus_nif.hrl").

%% API.
%% Like gen_server:call/2: a broadcast waits this long for listeners by
%% default (a stopped listener must not hold a dirty scheduler for good).
-define(DEFAULT_TIMEOUT, 5000).

-export([create/0, create/1, create/2, remove/1, chmod/2, chown/3, stat/1]).
-export([broadcast/2, broadcast/3, resolve/1, well_known/0]).
%% Internal, for bus_srv and bus_app.
-export([path/1, forget_writer/1]).
%% For the appup: drops the writers of other native versions.
-export([forget_writers/0]).

-export_type([name/0, well_known/0, message/0, broadcast_options/0, reason/0]).

%% {{NativeModule, Path}, Writer}: keyed by native module too, so that
%% code of one native version never uses another's writer (a hot upgrade
%% drops the old version's with forget_writers/0).
-define(WRITERS, bus_writers).
-define(WELL_KNOWN, [generic, audio, video, input, files]).

-type well_known() :: generic | audio | video | input | files.
-type name() :: well_known() | binary() | string().
-type message() :: unicode:chardata().  % sent as UTF-8
-type broadcast_options() :: #{timeout => timeout(), nowait => boolean()}
                           | [{timeout, timeout()} | {nowait, boolean()} | nowait].
-type reason() :: ?NIF:reason() | {unknown_bus, atom()}.

%% API.

%% Creates a bus named `random.' and 30 random characters in the runtime
%% directory ($XDG_RUNTIME_DIR/bus or /run/bus, made if missing) and
%% returns its pathname.
-spec create() -> {ok, binary()} | {error, reason()}.
create() ->
    Dir = runtime_dir(),
    case make_dir(Dir) of
        ok -> create_random(Dir);
        {error, _} = Error -> Error
    end.

%% Creates the bus if it does not exist.
-spec create(name()) -> {ok, binary()} | {error, reason()}.
create(Name) ->
    create(Name, false).

%% With Exclusive, fails with eexist if the bus file exists. The directory
%% of a well-known bus is created if missing.
-spec create(name(), boolean()) -> {ok, binary()} | {error, reason()}.
create(Name, Exclusive) when is_boolean(Exclusive) ->
    with_path(Name, fun(Path) ->
        _ = is_atom(Name) andalso make_dir(filename:dirname(Path)),
        ?NIF:create(Path, Exclusive)
    end);
create(Name, Exclusive) ->
    erlang:error(badarg, [Name, Exclusive]).

%% Removes the bus: its semaphores, its shared memory and its file.
-spec remove(name()) -> ok | {error, reason()}.
remove(Name) ->
    with_path(Name, fun(Path) ->
        Result = ?NIF:remove(Path),
        forget_writer(Path),
        Result
    end).

%% Any bit of a class (user, group, others) in Mode grants that class
%% read and write on the bus.
-spec chmod(name(), non_neg_integer()) -> ok | {error, reason()}.
chmod(Name, Mode) when is_integer(Mode), Mode >= 0, Mode =< 8#7777 ->
    with_path(Name, fun(Path) -> ?NIF:chmod(Path, Mode) end);
chmod(Name, Mode) ->
    erlang:error(badarg, [Name, Mode]).

%% Changes the owner and/or group (undefined: unchanged).
-spec chown(name(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, reason()}.
chown(Name, Uid, Gid) ->
    case is_id(Uid) andalso is_id(Gid) of
        true -> with_path(Name, fun(Path) -> ?NIF:chown(Path, Uid, Gid) end);
        false -> erlang:error(badarg, [Name, Uid, Gid])
    end.

%% The bus's keys, permissions, owner, semaphore values (listeners: S)
%% and number of attached processes.
-spec stat(name()) -> {ok, map()} | {error, reason()}.
stat(Name) ->
    with_path(Name, fun ?NIF:stat/1).

-spec broadcast(name(), message()) -> ok | {error, reason()}.
broadcast(Name, Message) ->
    broadcast(Name, Message, #{}).

%% Broadcasts Message and returns once every listener has it. Options:
%% timeout (milliseconds, default ?DEFAULT_TIMEOUT, or infinity) bounds
%% every wait: {error, timeout} if nothing was published,
%% {error, timeout_after_publish} if some listeners have the message (the
%% round is finished in the background). The broadcast runs on a dirty I/O
%% scheduler, which the timeout frees even when a listener is stopped: with
%% infinity, a stopped listener holds one for good. nowait fails with
%% {error, busy} at once if another process is broadcasting.
-spec broadcast(name(), message(), broadcast_options()) -> ok | {error, reason()}.
broadcast(Name, Message, Options) ->
    Bin = message(Message, [Name, Message, Options]),
    {Timeout, NoWait} = options(Options, [Name, Message, Options]),
    with_path(Name, fun(Path) -> broadcast_path(Path, Bin, Timeout, NoWait, 1) end).

%% The pathname of a bus.
-spec resolve(name()) -> {ok, binary()} | {error, {unknown_bus, atom()}}.
resolve(Name) when is_atom(Name) ->
    case lists:member(Name, ?WELL_KNOWN) of
        true -> {ok, well_known_path(Name)};
        false -> {error, {unknown_bus, Name}}
    end;
resolve(Name) when is_binary(Name); is_list(Name) ->
    case unicode:characters_to_binary(Name) of
        Path when is_binary(Path) -> {ok, Path};
        _ -> erlang:error(badarg, [Name])
    end;
resolve(Name) ->
    erlang:error(badarg, [Name]).

-spec well_known() -> [well_known()].
well_known() ->
    ?WELL_KNOWN.

%% Internal, for bus_srv and bus_app.

%% Like resolve/1, raising badarg for terms of the wrong type.
-spec path(name()) -> {ok, binary()} | {error, {unknown_bus, atom()}}.
path(Name) ->
    try resolve(Name)
    catch error:badarg -> erlang:error(badarg, [Name])
    end.

%% Closes the cached writer of a bus (removed, or found gone).
-spec forget_writer(binary()) -> ok.
forget_writer(Path) ->
    case ets:whereis(?WRITERS) =/= undefined andalso ets:take(?WRITERS, {?NIF, Path}) of
        [{_, Writer}] -> ?NIF:close_writer(Writer);
        _ -> ok
    end.

%% Drops the cached writers of every native module but this version's
%% (?NIF), so that none of the old library's resources is left in the
%% table when it is unloaded; returns how many. Run by the appup once the
%% new `bus' code is loaded (new broadcasts then cache ?NIF writers only),
%% before the old native module is deleted. Each dropped writer detaches
%% its bus in its destructor, run by the VM once no process holds it (the
%% old library stays loaded until then).
-spec forget_writers() -> non_neg_integer().
forget_writers() ->
    case ets:whereis(?WRITERS) of
        undefined ->
            0;
        _ ->
            ets:select_delete(?WRITERS, [{{{'$1', '_'}, '_'}, [{'=/=', '$1', ?NIF}], [true]}])
    end.

%% Internal.

with_path(Name, Fun) ->
    case path(Name) of
        {ok, Path} -> Fun(Path);
        {error, _} = Error -> Error
    end.

broadcast_path(Path, Bin, Timeout, NoWait, Retries) ->
    case writer(Path) of
        {ok, Writer, Cached} ->
            Result = ?NIF:broadcast(Writer, Bin, Timeout, NoWait),
            case {Result, Cached} of
                {{error, Stale}, cached} when Stale =:= gone; Stale =:= closed ->
                    %% The bus may have been removed and created again:
                    %% reopen once.
                    _ = ets:select_delete(?WRITERS, [{{{?NIF, Path}, Writer}, [], [true]}]),
                    ok = ?NIF:close_writer(Writer),
                    case Retries > 0 of
                        true -> broadcast_path(Path, Bin, Timeout, NoWait, Retries - 1);
                        false -> Result
                    end;
                {_, cached} ->
                    Result;
                {_, temporary} ->
                    ok = ?NIF:close_writer(Writer),
                    Result
            end;
        {error, _} = Error ->
            Error
    end.

%% The writer handle of a bus: cached in the bus_writers table while the
%% application runs, opened for one broadcast otherwise.
writer(Path) ->
    Cache = ets:whereis(?WRITERS) =/= undefined,
    case Cache andalso ets:lookup(?WRITERS, {?NIF, Path}) of
        [{_, Writer}] ->
            {ok, Writer, cached};
        _ ->
            case ?NIF:open_writer(Path) of
                {ok, Writer} when Cache ->
                    case ets:insert_new(?WRITERS, {{?NIF, Path}, Writer}) of
                        true ->
                            {ok, Writer, cached};
                        false ->
                            ok = ?NIF:close_writer(Writer),
                            writer(Path)
                    end;
                {ok, Writer} ->
                    {ok, Writer, temporary};
                {error, _} = Error ->
                    Error
            end
    end.

well_known_path(Name) ->
    case configured(Name, application:get_env(bus, buses, #{})) of
        {ok, Path} ->
            unicode:characters_to_binary(Path);
        error ->
            case os:getenv("BUS_" ++ string:uppercase(atom_to_list(Name))) of
                Path when is_list(Path), Path =/= "" ->
                    unicode:characters_to_binary(Path);
                _ ->
                    filename:join(runtime_dir(), atom_to_binary(Name))
            end
    end.

%% Computed here rather than by the native library, which would not see
%% changes made with os:putenv/2.
runtime_dir() ->
    case os:getenv("XDG_RUNTIME_DIR") of
        Dir when is_list(Dir), Dir =/= "" ->
            filename:join(unicode:characters_to_binary(Dir), <<"bus">>);
        _ ->
            <<"/run/bus">>
    end.

%% mkdir -p, mode 0755 for the last directory if it is made.
make_dir(Dir) ->
    case filelib:ensure_dir(Dir) of
        ok ->
            case file:make_dir(Dir) of
                ok -> posix(file:change_mode(Dir, 8#755));
                {error, eexist} -> ok;
                {error, _} = Error -> posix(Error)
            end;
        {error, _} = Error ->
            posix(Error)
    end.

posix(ok) -> ok;
posix({error, eacces}) -> {error, eacces};
posix({error, enoent}) -> {error, enoent};
posix({error, Reason}) -> {error, {os_error, Reason, <<"make the bus directory">>}}.

create_random(Dir) ->
    Chars = <<"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ">>,
    Name = << <<(binary:at(Chars, B rem 62))>> || <<B>> <= rand:bytes(30) >>,
    case ?NIF:create(filename:join(Dir, <<"random.", Name/binary>>), true) of
        {error, eexist} -> create_random(Dir);
        Result -> Result
    end.

configured(Name, Buses) when is_map(Buses) ->
    maps:find(Name, Buses);
configured(Name, Buses) when is_list(Buses) ->
    case lists:keyfind(Name, 1, Buses) of
        {_, Path} -> {ok, Path};
        false -> error
    end;
configured(_Name, _Buses) ->
    error.

message(Message, _Args) when is_binary(Message) ->
    Message;
message(Message, Args) when is_list(Message) ->
    try unicode:characters_to_binary(Message) of
        Bin when is_binary(Bin) -> Bin;
        _ -> erlang:error(badarg, Args)
    catch
        error:badarg -> erlang:error(badarg, Args)
    end;
message(_Message, Args) ->
    erlang:error(badarg, Args).

options(Options, Args) when is_map(Options) ->
    options(maps:to_list(Options), Args);
options(Options, Args) when is_list(Options) ->
    lists:foldl(fun
        ({timeout, infinity}, {_, N}) -> {infinity, N};
        ({timeout, T}, {_, N}) when is_integer(T), T >= 0 -> {T, N};
        ({nowait, B}, {T, _}) when is_boolean(B) -> {T, B};
        (nowait, {T, _}) -> {T, true};
        (_, _) -> erlang:error(badarg, Args)
    end, {?DEFAULT_TIMEOUT, false}, Options);
options(_Options, Args) ->
    erlang:error(badarg, Args).

is_id(undefined) -> true;
is_id(Id) -> is_integer(Id) andalso Id >= 0 andalso Id =< 16#ffffffff.
