%% @doc The native functions (native/bus_nif), native version 10. The
%% module is named after the native version so that the next version's
%% module and library can be loaded side by side with this one during a
%% hot upgrade; other modules call it as `?NIF' (include/bus_nif.hrl).
%% Use the `bus' and `bus_srv' modules instead: they validate the
%% arguments.
%%
%% This module is not one of the application's modules: it is built into
%% priv/nif, next to its library, and bus_nif_loader loads it the first
%% time a bus uses the NIF backend, so that a node that never does maps
%% no native code.
-module(bus_nif_10).

-export([create/2, create_random/1, remove/1, chmod/2, chown/3, stat/1]).
-export([open_writer/1, broadcast/4, finish_broadcast/1, close_writer/1]).
-export([broadcast_cached/4, open_cached/1, forget_cached/1, forget_all_cached/0]).
-export([listen/5, take/2, stop_listener/1, detach_listener/1, leave_detached/1,
         listener_info/1, open_lane/4, close_lane/1]).
-export([native_version/0, set_spin/1, spin/0]).

-on_load(init/0).

-nifs([create/2, create_random/1, remove/1, chmod/2, chown/3, stat/1,
       open_writer/1, broadcast/4, finish_broadcast/1, close_writer/1,
       broadcast_cached/4, open_cached/1, forget_cached/1, forget_all_cached/0,
       listen/5, take/2, stop_listener/1, detach_listener/1, leave_detached/1,
       listener_info/1, open_lane/4, close_lane/1,
       native_version/0, set_spin/1, spin/0]).

-export_type([writer/0, pending/0, listener/0, standing/0, reason/0, item/0]).

-opaque writer() :: reference().
-opaque pending() :: reference().
-opaque listener() :: reference().
-type standing() :: armed | acked.
%% What take/2 returns: a message, one this OS process broadcast itself,
%% or how many messages were dropped at that point of the stream.
-type item() :: binary() | {own, binary()} | {dropped, pos_integer()}.
-type reason() :: message_too_long | message_contains_nul | enoent | eexist
                | eacces | eperm | {invalid_bus_file, binary()} | gone | busy
                | timeout | timeout_after_publish | interrupted | closed
                | {os_error, atom() | integer(), binary()}.

%% API.

-spec create(binary() | undefined, boolean()) -> {ok, binary()} | {error, reason()}.
create(_Path, _Exclusive) -> erlang:nif_error(not_loaded).

%% A bus named random. and 30 random characters in Dir (made if missing).
-spec create_random(binary()) -> {ok, binary()} | {error, reason()}.
create_random(_Dir) -> erlang:nif_error(not_loaded).

-spec remove(binary()) -> ok | {error, reason()}.
remove(_Path) -> erlang:nif_error(not_loaded).

-spec chmod(binary(), non_neg_integer()) -> ok | {error, reason()}.
chmod(_Path, _Mode) -> erlang:nif_error(not_loaded).

-spec chown(binary(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, reason()}.
chown(_Path, _Uid, _Gid) -> erlang:nif_error(not_loaded).

-spec stat(binary()) -> {ok, map()} | {error, reason()}.
stat(_Path) -> erlang:nif_error(not_loaded).

-spec open_writer(binary()) -> {ok, writer()} | {error, reason()}.
open_writer(_Path) -> erlang:nif_error(not_loaded).

%% Timeout in milliseconds or infinity; it bounds every wait.
%% Runs on the caller's scheduler and never blocks: a broadcast that has
%% to wait (for the lock, a re-arming listener, or the listeners' copies)
%% returns {wait, Pending}, whose rest finish_broadcast/1 makes on a dirty
%% I/O scheduler.
-spec broadcast(writer(), binary(), timeout(), boolean()) ->
    ok | {error, reason()} | {wait, pending()}.
broadcast(_Writer, _Message, _Timeout, _NoWait) -> erlang:nif_error(not_loaded).

%% The rest of a broadcast broadcast/4 left waiting: ok or {error, Reason}
%% as broadcast/4 would have answered (a second call: ok). Left
%% unfinished, the broadcast ends when Pending is garbage collected: not
%% sent, or delivered by a thread of its own.
-spec finish_broadcast(pending()) -> ok | {error, reason()}.
finish_broadcast(_Pending) -> erlang:nif_error(not_loaded).

-spec close_writer(writer()) -> ok.
close_writer(_Writer) -> erlang:nif_error(not_loaded).

%% broadcast/4 through the bus this library keeps open at Path (one hash
%% lookup in the library: no writer handle to keep in Erlang); not_open if
%% it keeps none: open_cached/1 opens it.
-spec broadcast_cached(binary(), binary(), timeout(), boolean()) ->
    ok | {error, reason()} | {wait, pending()} | not_open.
broadcast_cached(_Path, _Message, _Timeout, _NoWait) -> erlang:nif_error(not_loaded).

%% Opens the bus at Path for broadcast_cached/4, unless it is open.
-spec open_cached(binary()) -> ok | {error, reason()}.
open_cached(_Path) -> erlang:nif_error(not_loaded).

%% Closes the bus kept open at Path (removed, or found gone); a broadcast
%% still finishing keeps it until it is done.
-spec forget_cached(binary()) -> ok.
forget_cached(_Path) -> erlang:nif_error(not_loaded).

%% Closes every bus kept open and returns their pathnames: before this
%% library is unloaded (nothing else would close them) or when the
%% application stops.
-spec forget_all_cached() -> [binary()].
forget_all_cached() -> erlang:nif_error(not_loaded).

%% Starts a native listener (a thread feeding a queue) that sends Owner
%% {bus_listening, Tag} once counted on the bus, then {bus_ready, Tag}
%% whenever its queue, empty until then, has something to take/2; or
%% {bus_listener_down, Tag, Reason} if it fails (the bus was removed). From
%% is join (join the bus), or a standing returned by detach_listener/1 of
%% any native version in this node, for the same bus: the new listener
%% takes the old one's place, and gets every message the old one did not.
%% It stops when stop_listener/1 is called, when the resource is garbage
%% collected, or when Owner dies. Window is the credit window: the
%% listener queues at most that many messages, and holds the bus (writers
%% wait) while its queue is full.
-spec listen(binary(), pid(), term(), join | standing(), pos_integer()) ->
    {ok, listener()} | {error, reason()}.
listen(_Path, _Owner, _Tag, _From, _Window) -> erlang:nif_error(not_loaded).

%% Up to Max items the listener has queued, oldest first. Never blocks.
-spec take(listener(), pos_integer()) -> [item()].
take(_Listener, _Max) -> erlang:nif_error(not_loaded).

%% Opens a lane: from now on the listener's thread sends each message
%% itself, as `{bus, Name, Message}', to every `{Pid, Name}' of Members
%% (own messages unmarked), and queues nothing, until Budget messages went
%% that way (then it sends Spent to the caller and the lane closes) or
%% close_lane/1. busy while items wait for take/2 (the lane must not
%% overtake them) or a lane is open.
-spec open_lane(listener(), [{pid(), term()}, ...], pos_integer(), term()) -> ok | busy.
open_lane(_Listener, _Members, _Budget, _Spent) -> erlang:nif_error(not_loaded).

%% Closes the lane if one is open (nothing goes through it once this
%% returns: what follows is queued for take/2) and returns how many
%% messages, of how many bytes in all, went through lanes since the last
%% call.
-spec close_lane(listener()) -> {non_neg_integer(), non_neg_integer()}.
close_lane(_Listener) -> erlang:nif_error(not_loaded).

%% Leaves the bus from the standing detach_listener/1 returned, when no
%% listener could take it over; does nothing otherwise.
-spec leave_detached(listener()) -> ok.
leave_detached(_Listener) -> erlang:nif_error(not_loaded).

%% The listener's counters: messages taken from the bus, delivered
%% through take/2, dropped, queued now, and the microseconds it held the
%% bus because its queue was full.
-spec listener_info(listener()) ->
    #{taken := non_neg_integer(), delivered := non_neg_integer(),
      dropped := non_neg_integer(), queued := non_neg_integer(),
      held_us := non_neg_integer()}.
listener_info(_Listener) -> erlang:nif_error(not_loaded).

%% Returns once the listener has left the bus.
-spec stop_listener(listener()) -> ok.
stop_listener(_Listener) -> erlang:nif_error(not_loaded).

%% Stops the listener without leaving the bus and returns its standing,
%% once its thread has ended: it sends and queues nothing after this
%% returns; what it had queued is still there for take/2.
-spec detach_listener(listener()) -> {ok, standing()} | {error, reason()}.
detach_listener(_Listener) -> erlang:nif_error(not_loaded).

%% The native version of the loaded library (8): it must match this
%% module's name.
-spec native_version() -> pos_integer().
native_version() -> erlang:nif_error(not_loaded).

%% Sets the node's spinning budget (microseconds, at most 10000): what
%% every writer and listener opened from now on, and every writer this
%% library keeps open, spins for before blocking (bus_config:spin_us/0).
-spec set_spin(0..10000) -> ok.
set_spin(_Micros) -> erlang:nif_error(not_loaded).

%% The budget set_spin/1 set, or default before it is called.
-spec spin() -> non_neg_integer() | default.
spin() -> erlang:nif_error(not_loaded).

%% Internal.

-spec init() -> ok | {error, term()}.
init() ->
    %% The library is next to this module's beam (code:which/1 would not
    %% say where that is before this function returns).
    Beam = bus_nif_loader:path(?MODULE),
    erlang:load_nif(Beam, 0).
