%% @doc The backend (see bus_backend) made of port programs
%% (native/bus_port): no native code in the VM. Each listening bus has a
%% program of its own, owned by a bus_port_listener; everything else goes
%% through the node's one request program (bus_port_ops). A fault in
%% native code kills a program, not the node; waits happen in the
%% programs, never on a scheduler.
-module(bus_backend_port).
-behaviour(bus_backend).

-include("bus_port.hrl").

%% bus_backend.
-export([listen/5, take/2, stop/1, detach/1, abandon/1, counters/1, settle/1, version/1,
         echo_broadcast/4, open_lane/4, close_lane/1]).
-export([broadcast/4, create/2, create_random/1, remove/1, chmod/2, chown/3, stat/1, forget/1]).

-opaque handle() :: {port, pid()}.
-export_type([handle/0]).

%% bus_backend.

%% Joins only: a port program cannot take over another OS process's
%% standing.
-spec listen(binary(), pid(), reference(), bus_backend:from(), pos_integer()) ->
    {ok, handle()} | {error, bus:reason()}.
listen(Path, Owner, Tag, join, Window) ->
    case bus_port_sup:start_listener(Path, Owner, Tag, Window) of
        {ok, Pid} -> {ok, {port, Pid}};
        {error, Reason} -> {error, {port_program, Reason}}
    end;
listen(_Path, _Owner, _Tag, _Standing, _Window) ->
    {error, not_supported}.

-spec take(handle(), pos_integer()) -> [bus_backend:item()].
take({port, Pid}, Max) ->
    bus_port_listener:take(Pid, Max).

-spec stop(handle()) -> ok.
stop({port, Pid}) ->
    bus_port_listener:stop(Pid).

%% A port program's standing cannot be handed to another OS process: the
%% listener leaves the bus instead (what it had not handed over is lost:
%% the new listener joins afresh, with a gap).
-spec detach(handle()) -> {error, not_supported}.
detach({port, Pid}) ->
    ok = bus_port_listener:stop(Pid),
    {error, not_supported}.

-spec abandon(handle()) -> ok.
abandon({port, _}) ->
    ok.

-spec counters(handle()) -> #{atom() => non_neg_integer()}.
counters({port, Pid}) ->
    bus_port_listener:counters(Pid).

%% The program answers a counters request after sending what it had
%% queued.
-spec settle(handle()) -> ok.
settle({port, Pid}) ->
    _ = bus_port_listener:counters(Pid),
    ok.

%% A port program's messages come through its frames, to this node's
%% bus_port_listener: no lane.
-spec open_lane(handle(), [{pid(), term()}, ...], pos_integer(), term()) -> unsupported.
open_lane({port, _}, _Members, _Budget, _Spent) ->
    unsupported.

-spec close_lane(handle()) -> {0, 0}.
close_lane({port, _}) ->
    {0, 0}.

-spec version(handle() | undefined) -> pos_integer().
version(_) ->
    ?PORT_VERSION.

%% Through the listener's own program.
-spec echo_broadcast(handle(), binary(), binary(), timeout()) -> ok | {error, bus:reason()}.
echo_broadcast({port, Pid}, Path, Message, Timeout) ->
    bus_port_listener:request(Pid, {broadcast, Path, Message, Timeout, false}).

-spec broadcast(binary(), binary(), timeout(), boolean()) -> ok | {error, bus:reason()}.
broadcast(Path, Message, Timeout, NoWait) ->
    bus_port_ops:request({broadcast, Path, Message, Timeout, NoWait}).

-spec create(binary(), boolean()) -> {ok, binary()} | {error, bus:reason()}.
create(Path, Exclusive) ->
    bus_port_ops:request({create, Path, Exclusive}).

-spec create_random(binary()) -> {ok, binary()} | {error, bus:reason()}.
create_random(Dir) ->
    bus_port_ops:request({create_random, Dir}).

-spec remove(binary()) -> ok | {error, bus:reason()}.
remove(Path) ->
    bus_port_ops:request({remove, Path}).

-spec chmod(binary(), non_neg_integer()) -> ok | {error, bus:reason()}.
chmod(Path, Mode) ->
    bus_port_ops:request({chmod, Path, Mode}).

-spec chown(binary(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, bus:reason()}.
chown(Path, Uid, Gid) ->
    bus_port_ops:request({chown, Path, Uid, Gid}).

-spec stat(binary()) -> {ok, map()} | {error, bus:reason()}.
stat(Path) ->
    bus_port_ops:request({stat, Path}).

-spec forget(binary()) -> ok.
forget(Path) ->
    %% Only the node's request program caches writers.
    _ = whereis(bus_port_ops) =/= undefined andalso bus_port_ops:request({forget, Path}),
    ok.
