%% @doc The backend (see bus_backend) made of the native library loaded in
%% the VM: listeners are native threads owned by NIF resources, broadcasts
%% go through the buses the library keeps open between broadcasts (while
%% the application runs), on the caller's scheduler unless they have to
%% wait (then on a dirty I/O scheduler).
%% Every call goes through ?NIF, the native module of this version, loaded
%% (bus_nif_loader) by the first call that needs it; a listener's handle
%% names the native module that made it, so
%% that after a hot upgrade old listeners are still driven by their own
%% code until they are handed over.

-module(bus_backend_nif).
-behaviour(bus_backend).

-include("bus_nif.hrl").

%% bus_backend.
-export([listen/5, take/2, stop/1, detach/1, abandon/1, counters/1, settle/1, version/1,
         echo_broadcast/4, open_lane/4, close_lane/1]).
-export([broadcast/4, create/2, create_random/1, remove/1, chmod/2, chown/3, stat/1, forget/1]).
%% For the appup: drops the writers of other native versions; for bus_app.
-export([forget_writers/0, forget_all/0]).
%% For bus_config.
-export([set_spin/1]).

-opaque handle() :: {module(), term()}.
-export_type([handle/0]).

%% bus_backend.

-spec listen(binary(), pid(), reference(), bus_backend:from(), pos_integer()) ->
    {ok, handle()} | {error, bus:reason()}.
listen(Path, Owner, Tag, From, Window) ->
    ok = bus_nif_loader:ensure(?NIF),
    case ?NIF:listen(Path, Owner, Tag, From, Window) of
        {ok, Listener} -> {ok, {?NIF, Listener}};
        {error, _} = Error -> Error
    end.

-spec take(handle(), pos_integer()) -> [bus_backend:item()].
take({Nif, Listener}, Max) ->
    Nif:take(Listener, Max).

-spec stop(handle()) -> ok.
stop({Nif, Listener}) ->
    Nif:stop_listener(Listener).

-spec detach(handle()) -> {ok, bus_backend:standing()} | {error, term()}.
detach({Nif, Listener}) ->
    Nif:detach_listener(Listener).

%% (Native version 5 and later; older ones cannot.)
-spec abandon(handle()) -> ok.
abandon({Nif, Listener}) ->
    case erlang:function_exported(Nif, leave_detached, 1) of
        true -> Nif:leave_detached(Listener);
        false -> ok
    end.

-spec counters(handle()) -> #{atom() => non_neg_integer()}.
counters({Nif, Listener}) ->
    Nif:listener_info(Listener).

%% A native listener queues a message before it acknowledges it.
-spec settle(handle()) -> ok.
settle(_Listener) ->
    ok.

%% (Native version 9 and later; older ones cannot.)
-spec open_lane(handle(), [{pid(), term()}, ...], pos_integer(), term()) ->
    ok | busy | unsupported.
open_lane({Nif, Listener}, Members, Budget, Spent) ->
    case erlang:function_exported(Nif, open_lane, 4) of
        true -> Nif:open_lane(Listener, Members, Budget, Spent);
        false -> unsupported
    end.

-spec close_lane(handle()) -> {non_neg_integer(), non_neg_integer()}.
close_lane({Nif, Listener}) ->
    case erlang:function_exported(Nif, close_lane, 1) of
        true -> Nif:close_lane(Listener);
        false -> {0, 0}
    end.

-spec version(handle() | undefined) -> pos_integer().
version(undefined) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:native_version();
version({Nif, _}) ->
    Nif:native_version().

%% Listeners and writers are all in the node's OS process.
-spec echo_broadcast(handle(), binary(), binary(), timeout()) -> ok | {error, bus:reason()}.
echo_broadcast(_Listener, Path, Message, Timeout) ->
    broadcast(Path, Message, Timeout, false).

%% Broadcasts through the bus the library keeps open (opened on first use
%% while the application runs, else for this broadcast only), reopening
%% it once if the bus was removed and created again meanwhile.
-spec broadcast(binary(), binary(), timeout(), boolean()) -> ok | {error, bus:reason()}.
broadcast(Path, Message, Timeout, NoWait) ->
    broadcast(Path, Message, Timeout, NoWait, 1).

-spec create(binary(), boolean()) -> {ok, binary()} | {error, bus:reason()}.
create(Path, Exclusive) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:create(Path, Exclusive).

-spec create_random(binary()) -> {ok, binary()} | {error, bus:reason()}.
create_random(Dir) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:create_random(Dir).

-spec remove(binary()) -> ok | {error, bus:reason()}.
remove(Path) ->
    ok = bus_nif_loader:ensure(?NIF),
    Result = ?NIF:remove(Path),
    ok = forget(Path),
    Result.

-spec chmod(binary(), non_neg_integer()) -> ok | {error, bus:reason()}.
chmod(Path, Mode) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:chmod(Path, Mode).

-spec chown(binary(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, bus:reason()}.
chown(Path, Uid, Gid) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:chown(Path, Uid, Gid).

-spec stat(binary()) -> {ok, map()} | {error, bus:reason()}.
stat(Path) ->
    ok = bus_nif_loader:ensure(?NIF),
    ?NIF:stat(Path).

%% Closes the bus the library keeps open (removed, or found gone).
-spec forget(binary()) -> ok.
forget(Path) ->
    case erlang:module_loaded(?NIF) of
        true -> ?NIF:forget_cached(Path);
        false -> ok
    end.

%% Closes every bus the library keeps open (the application stops).
-spec forget_all() -> ok.
forget_all() ->
    bus_nif_loader:release(?NIF).

%% Gives the native library the node's spinning budget, if it is loaded
%% (bus_nif_loader gives it when it loads it).
-spec set_spin(0..10000) -> ok.
set_spin(Micros) ->
    case erlang:module_loaded(?NIF) of
        true -> ?NIF:set_spin(Micros);
        false -> ok
    end.

%% Drops the writer handles releases before 0.14.0 cached in the writers
%% table (every native module but ?NIF), so that none of the old library's
%% resources is left in the table when it is unloaded; returns how many.
%% Run by the appup once the new code is loaded, before the old native
%% module is deleted. Each dropped writer detaches its bus in its
%% destructor, run by the VM once no process holds it.
-spec forget_writers() -> non_neg_integer().
forget_writers() ->
    bus_tables:delete_writers_except(?NIF).

%% Internal.

broadcast(Path, Message, Timeout, NoWait, Retries) ->
    case broadcast_cached(Path, Message, Timeout, NoWait) of
        not_open ->
            open_and_broadcast(Path, Message, Timeout, NoWait);
        {error, gone} when Retries > 0 ->
            %% The bus may have been removed and created again: reopen
            %% once.
            ok = ?NIF:forget_cached(Path),
            broadcast(Path, Message, Timeout, NoWait, Retries - 1);
        Result ->
            forget_if_gone(Path, Result)
    end.

open_and_broadcast(Path, Message, Timeout, NoWait) ->
    case open(Path) of
        ok ->
            case broadcast_cached(Path, Message, Timeout, NoWait) of
                not_open ->
                    %% Closed again at once (a remove): not kept.
                    broadcast_once(Path, Message, Timeout, NoWait);
                Result ->
                    forget_if_gone(Path, Result)
            end;
        not_running ->
            broadcast_once(Path, Message, Timeout, NoWait);
        {error, _} = Error ->
            Error
    end.

%% A bus found gone is closed: the next broadcast opens it again. (The
%% library's own buses are never closed under a broadcast, so `closed',
%% which a writer handle answers once closed, does not come here.)
forget_if_gone(Path, {error, gone} = Result) ->
    ok = ?NIF:forget_cached(Path),
    Result;
forget_if_gone(_Path, Result) ->
    Result.

%% Started on this scheduler; only a broadcast that has to wait moves to a
%% dirty one. not_open until the library is loaded and keeps the bus open.
broadcast_cached(Path, Message, Timeout, NoWait) ->
    try ?NIF:broadcast_cached(Path, Message, Timeout, NoWait) of
        Started -> finish(Started)
    catch
        error:undef -> not_open
    end.

%% The rest of a broadcast that has to wait, on a dirty scheduler.
finish({wait, Pending}) -> ?NIF:finish_broadcast(Pending);
finish(Done) -> Done.

%% Has the library keep the bus open, if the application runs (when it
%% stops, bus_app closes them all).
open(Path) ->
    ok = bus_nif_loader:ensure(?NIF),
    case whereis(bus_sup) of
        undefined -> not_running;
        _ -> ?NIF:open_cached(Path)
    end.

%% Through a writer opened for this broadcast alone.
broadcast_once(Path, Message, Timeout, NoWait) ->
    ok = bus_nif_loader:ensure(?NIF),
    case ?NIF:open_writer(Path) of
        {ok, Writer} ->
            Result = finish(?NIF:broadcast(Writer, Message, Timeout, NoWait)),
            ok = ?NIF:close_writer(Writer),
            Result;
        {error, _} = Error ->
            Error
    end.
