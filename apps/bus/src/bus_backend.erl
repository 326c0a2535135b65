%% @doc The contract between a bus's bus_srv and what listens and
%% broadcasts for it: a backend. Implemented by bus_backend_nif (the
%% native library inside the VM); the port backend implements it outside.
%%
%% Listening. `listen/5' starts a listener for the calling bus_srv (the
%% Owner), which then gets, tagged with Tag:
%% - `{bus_listening, Tag}' once the listener is counted on the bus (or has
%%   taken over a standing): every later broadcast reaches it;
%% - `{bus_ready, Tag}' when the listener's queue, empty until then, has
%%   something to `take/2';
%% - `{bus_gap, Tag}' when the listener may have missed messages (it was
%%   restarted); subscribers are told `{bus_gap, Name}';
%% - `{bus_listener_down, Tag, Reason}' if it fails (`gone' and the other
%%   reasons of bus:reason() mean the bus is down for good).
%%
%% The credit window. A listener queues at most Window messages for its
%% owner; while its queue is full it holds the bus (the protocol's own
%% back-pressure: writers wait), so the owner's mailbox holds at most a
%% notice or two, whatever the traffic, and an owner that stops taking
%% pauses the listener. Items are a message (binary), a message this OS
%% process broadcast itself (`{own, Binary}'), or how many messages are
%% missing at that point (`{dropped, N}').
%%
%% Handing over. `detach/1' stops a listener without leaving the bus and
%% returns its standing, which `listen/5' of the same or a newer backend
%% version in this OS process takes over: no message lost or repeated (hot
%% upgrades); what the detached listener still queues is taken first.
-module(bus_backend).

%% API.
-export([default/0]).

-export_type([handle/0, standing/0, item/0, from/0]).

-type handle() :: term().
-type standing() :: armed | acked.
-type from() :: join | standing().
-type item() :: binary() | {own, binary()} | {dropped, pos_integer()}.

%% Listening.
-callback listen(Path :: binary(), Owner :: pid(), Tag :: reference(), From :: from(),
                 Window :: pos_integer()) ->
    {ok, handle()} | {error, bus:reason()}.
-callback take(handle(), Max :: pos_integer()) -> [item()].
-callback stop(handle()) -> ok.
-callback detach(handle()) -> {ok, standing()} | {error, term()}.
%% Leaves the bus from a detached listener's standing that no new listener
%% could take over (never drop a standing: the process would stay counted
%% on the bus, holding its writers up).
-callback abandon(handle()) -> ok.
-callback counters(handle()) -> #{atom() => non_neg_integer()}.
%% Which version of the backend's code made the listener (for operators
%% and the upgrade test).
-callback version(handle() | undefined) -> pos_integer().

%% Everything else.
-callback broadcast(Path :: binary(), Message :: binary(), Timeout :: timeout(),
                    NoWait :: boolean()) ->
    ok | {error, bus:reason()}.
-callback create(binary(), Exclusive :: boolean()) ->
    {ok, binary()} | {error, bus:reason()}.
%% A bus named `random.' and 30 random characters in Dir (made if
%% missing).
-callback create_random(Dir :: binary()) -> {ok, binary()} | {error, bus:reason()}.
-callback remove(binary()) -> ok | {error, bus:reason()}.
-callback chmod(binary(), non_neg_integer()) -> ok | {error, bus:reason()}.
-callback chown(binary(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, bus:reason()}.
-callback stat(binary()) -> {ok, map()} | {error, bus:reason()}.
%% The bus was removed or found gone: drop what is kept open for it.
-callback forget(binary()) -> ok.

%% API.

%% The backend of the node.
-spec default() -> module().
default() ->
    bus_backend_nif.
