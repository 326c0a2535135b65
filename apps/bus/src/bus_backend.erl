%% @doc The contract between a bus's bus_srv and what listens and
%% broadcasts for it: a backend. Implemented by bus_backend_nif (`nif':
%% the native library inside the VM) and bus_backend_port (`port': port
%% programs outside it). Which one serves a bus: the application env's
%% `backend' (default nif), overridden per bus by `bus_backends' (a map
%% from a well-known name or a pathname to nif | port).
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
-export([default/0, for/1, for/2, name/1]).

-export_type([handle/0, standing/0, item/0, from/0, name/0]).

-type name() :: nif | port.

-type handle() :: term().
-type standing() :: armed | acked.
-type from() :: join | standing().
%% `gap': messages may be missing here, how many is unknown (the port
%% backend restarted its program).
-type item() :: binary() | {own, binary()} | {dropped, pos_integer()} | gap.

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
%% Returns once every message the listener had acknowledged when called
%% is there for take/2 (as far as the credit window allows): what was
%% broadcast before a call is forwarded before it is answered.
-callback settle(handle()) -> ok.
%% A lane: the listener sends each message itself, as `{bus, Name,
%% Message}', to every `{Pid, Name}' of Members, and queues nothing, until
%% Budget messages went that way (then it sends Spent to the caller and
%% the lane closes) or close_lane/1; busy while items wait for take/2,
%% unsupported if the backend cannot. close_lane/1 returns once nothing
%% more goes through it, with how many messages (and bytes) went through
%% lanes since it was last called.
-callback open_lane(handle(), Members :: [{pid(), term()}, ...], Budget :: pos_integer(),
                    Spent :: term()) ->
    ok | busy | unsupported.
-callback close_lane(handle()) -> {non_neg_integer(), non_neg_integer()}.
%% Which version of the backend's code made the listener (for operators
%% and the upgrade test).
-callback version(handle() | undefined) -> pos_integer().

%% Broadcasts from where the listener runs, so that the listener's copy
%% comes back own-marked (bridges tell their echoes by it).
-callback echo_broadcast(handle(), Path :: binary(), Message :: binary(),
                         Timeout :: timeout()) ->
    ok | {error, bus:reason()}.

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

%% The backend of the node: the application env's `backend' (as
%% bus_config last took it).
-spec default() -> module().
default() ->
    bus_config:backend(bus_config:settings()).

%% The backend of the bus at Path: its entry in `bus_backends', or the
%% node's.
-spec for(binary()) -> module().
for(Path) ->
    for(Path, bus_config:settings()).

%% The same with the settings already read.
-spec for(binary(), bus_config:settings()) -> module().
for(Path, Settings) ->
    case bus_config:backends(Settings) of
        Backends when map_size(Backends) =:= 0 ->
            bus_config:backend(Settings);
        Backends ->
            Matching = [B || {Name, B} <- maps:to_list(Backends), path_of(Name) =:= Path],
            case Matching of
                [Backend | _] -> module(Backend);
                [] -> bus_config:backend(Settings)
            end
    end.

%% What bus:info/1 shows of a backend module.
-spec name(module()) -> name().
name(bus_backend_port) -> port;
name(_) -> nif.

%% Internal.

%% (bus_app checks the env's values at boot.)
module(nif) -> bus_backend_nif;
module(port) -> bus_backend_port.

path_of(Name) ->
    try bus:resolve(Name) of
        {ok, Path} -> Path;
        {error, _} -> undefined
    catch
        error:badarg -> undefined
    end.
