%% @doc The one public API of the bus application: subscribing (subscribe,
%% unsubscribe, subscribers, info) and the bus primitives (broadcast,
%% create, remove, chmod, chown, stat). It starts nothing itself: it
%% validates its arguments and delegates, to the bus's bus_srv (started
%% through bus_srv_sup on first use, found through bus_tables) or to the
%% backend (bus_backend).
%%
%% A bus is named by its pathname (binary or string) or by a well-known
%% name (generic, audio, video, input, files), resolved through the
%% application environment (`buses'), then the environment variables
%% BUS_GENERIC ... BUS_FILES, then `$XDG_RUNTIME_DIR/bus/<name>'.
%%
%% Failures are `{error, Reason}' (see reason()); a term of the wrong type
%% raises badarg.
-module(bus).

%% API.
-export([subscribe/1, subscribe/2, activate/1, activate/2, unsubscribe/1, subscribers/1,
         info/0, info/1]).
-export([broadcast/2, broadcast/3]).
-export([create/0, create/1, create/2, remove/1, chmod/2, chown/3, stat/1]).
-export([resolve/1, well_known/0]).
%% Called from other nodes (remote subscribers, bridges).
-export([subscribe_for/4, unsubscribe_for/2, activate_for/3, bridge_of/1]).
%% Bridges.
-export([bridge/1, unbridge/1, start_bridge/1]).
%% Configuration.
-export([reload_config/0]).
%% For bus_srv and bus_app.
-export([path/1]).

-export_type([name/0, well_known/0, message/0, broadcast_options/0, subscribe_options/0,
              active/0, reason/0, info/0]).

-define(WELL_KNOWN, [generic, audio, video, input, files]).
-define(CALL_TIMEOUT, 5000).
-define(RETRIES, 5).

-type well_known() :: generic | audio | video | input | files.
-type name() :: local_name() | {local_name(), node()}.
%% A bus of this node, or of another node (subscribe/2, activate/2,
%% unsubscribe/1, subscribers/1, info/1, broadcast/3: remote).
-type local_name() :: well_known() | binary() | string().
-type message() :: unicode:chardata().  % sent as UTF-8
-type broadcast_options() :: #{timeout => timeout(), nowait => boolean()}
                           | [{timeout, timeout()} | {nowait, boolean()} | nowait].
-type active() :: true | false | once | pos_integer().
-type subscribe_options() :: #{active => active(),
                               max_queue => pos_integer(),
                               max_mailbox => pos_integer(),
                               overflow => drop | block}
                           | [{active, active()} | {max_queue, pos_integer()}
                              | {max_mailbox, pos_integer()} | {overflow, drop | block}].
-type reason() :: not_subscribed | not_started | not_bridged | noconnection | {not_supported, node()} | message_too_long | message_contains_nul | enoent | eexist | eacces
                | eperm | {invalid_bus_file, binary()} | gone | busy | timeout
                | timeout_after_publish | interrupted | closed
                | {os_error, atom() | integer(), binary()} | {unknown_bus, atom()}
                | {port_exited, integer() | {port_closed, term()}} | {port_closed, term()}
                | {port_program, term()} | {port_version, term()}
                | not_supported.
-type info() :: #{path := binary(),
                  listeners := non_neg_integer() | undefined,
                  received := non_neg_integer(),
                  forwarded := non_neg_integer(),
                  received_bytes := non_neg_integer(),
                  native := pos_integer(),
                  backend := bus_backend:name(),
                  listener => #{atom() => non_neg_integer()},
                  blocked => boolean(),
                  blocked_us => non_neg_integer(),
                  block_held_us => non_neg_integer(),
                  subscriptions := #{pid() => subscription_info()},
                  subscribers := [pid()]}.
-type subscription_info() :: #{active := true | false | pos_integer(),
                               delivered := non_neg_integer(),
                               queued := non_neg_integer(),
                               dropped := non_neg_integer(),
                               max_queue := pos_integer(),
                               max_mailbox := pos_integer(),
                               overflow := drop | block,
                               congested := boolean()}.

%% API.

%% @doc Subscribes the calling process to the bus: it gets every message as
%% `{bus, Name, Message}'. Returns once the bus's listener is counted on
%% the bus: every broadcast that starts after this returns is delivered.
%% Subscribing twice is subscribing once. The default options: see
%% subscribe/2.
-spec subscribe(name()) -> ok | {error, reason()}.
subscribe(Name) ->
    subscribe(Name, #{}).

%% @doc Subscribes with flow control options (a map, or a proplist):
%% - active: true (the default) sends every message; once, or N > 0,
%%   sends that many, then `{bus_passive, Name}' (see activate/2); false
%%   sends nothing until activated.
%% - max_queue (default 1000): at most this many messages are held for
%%   the subscriber while it is not ready for them (passive, or its
%%   mailbox held more than max_mailbox when last sampled);
%% - max_mailbox (default 1000): see max_queue; the mailbox is sampled
%%   every 64 messages sent, and again every 10 ms while over;
%% - overflow: drop (the default) discards what max_queue cannot hold,
%%   and tells the subscriber `{bus_dropped, Name, Count}' where they were
%%   missed; block takes nothing more from the bus until the subscriber
%%   catches up, so that the bus's writers wait.
%% Messages are missed only where the subscriber is told so:
%% `{bus_dropped, Name, Count}', or `{bus_gap, Name}' (this node's
%% listener missed some). Subscribing again sets new options; what is
%% held stays held. The application environment's
%% `subscription_defaults' (a map of these keys) changes the defaults.
-spec subscribe(name(), subscribe_options()) -> ok | {error, reason()}.
subscribe(Name, Options) ->
    Flow = case bus_flow:options(Options) of
        {ok, F} -> F;
        error -> erlang:error(badarg, [Name, Options])
    end,
    case Name of
        {_, Node} when is_atom(Node), Node =/= node() ->
            %% bus_remote tells of a lost connection: without it, nothing would.
            case whereis(bus_remote) of
                undefined -> {error, not_started};
                _ -> subscribe_remote(Name, Flow)
            end;
        {Local, Node} when Node =:= node() ->
            subscribe_for(Local, self(), Name, Flow);
        _ ->
            subscribe_for(Name, self(), Name, Flow)
    end.

subscribe_remote(Name = {Local, Node}, Flow) ->
    case remote(Node, subscribe_for, [Local, self(), Name, Flow]) of
        ok -> bus_remote:watch(self(), Name);
        Error -> Error
    end.

%% @private Subscribes Pid (of this node or another) to the bus Name of
%% this node; messages come as {bus, Display, Message}.
-spec subscribe_for(name(), pid(), term(), bus_flow:options()) -> ok | {error, reason()}.
subscribe_for(Name, Pid, Display, Flow) ->
    with_path(Name, fun(Path) ->
        case call(Path, {subscribe, Pid, Display, Flow}, true) of
            {error, timeout} = Timeout ->
                _ = unsubscribe_for(Name, Pid),
                Timeout;
            Result ->
                Result
        end
    end).

%% @doc activate(Name, once).
-spec activate(name()) -> ok | {error, reason()}.
activate(Name) ->
    activate(Name, once).

%% @doc Like inet:setopts(S, [{active, Active}]): once leaves one message of
%% credit, N adds N to the credit left (from 0 if it was true), true
%% pushes every message, false holds them. Whatever was held is sent
%% while there is credit; when it runs out, `{bus_passive, Name}'.
-spec activate(name(), active()) -> ok | {error, reason()}.
activate(Name, Active) when is_boolean(Active); Active =:= once;
                            is_integer(Active), Active > 0 ->
    case Name of
        {Local, Node} when is_atom(Node), Node =/= node() ->
            remote(Node, activate_for, [Local, self(), Active]);
        {Local, Node} when Node =:= node() ->
            activate_for(Local, self(), Active);
        _ ->
            activate_for(Name, self(), Active)
    end;
activate(Name, Active) ->
    erlang:error(badarg, [Name, Active]).

%% @private activate/2 for Pid.
-spec activate_for(name(), pid(), active()) -> ok | {error, reason()}.
activate_for(Name, Pid, Active) ->
    with_path(Name, fun(Path) ->
        case call(Path, {activate, Pid, Active}, false) of
            not_running -> {error, not_subscribed};
            Result -> Result
        end
    end).

%% @doc Ends the calling process's subscription; when it was the bus's last,
%% the bus's listener has left the bus when this returns.
-spec unsubscribe(name()) -> ok | {error, reason()}.
unsubscribe({Local, Node} = Name) when is_atom(Node), Node =/= node() ->
    ok = bus_remote:unwatch(self(), Name),
    remote(Node, unsubscribe_for, [Local, self()]);
unsubscribe({Local, Node}) when Node =:= node() ->
    unsubscribe_for(Local, self());
unsubscribe(Name) ->
    unsubscribe_for(Name, self()).

%% @private unsubscribe/1 for Pid.
-spec unsubscribe_for(name(), pid()) -> ok | {error, reason()}.
unsubscribe_for(Name, Pid) ->
    with_path(Name, fun(Path) ->
        case call(Path, {unsubscribe, Pid}, false) of
            not_running ->
                %% No bus_srv to clean up after us.
                true = bus_tables:delete_subscription(Path, Pid),
                ok;
            Result ->
                Result
        end
    end).

%% @doc Bridges the bus Name with the same-named buses of the other nodes
%% that bridge it (see bus_bridge): every message broadcast on any of
%% them is broadcast on the others, once, in per-origin order, never
%% echoed. Returns once this node's bridge and those of every connected
%% node that bridges Name see each other.
-spec bridge(local_name()) -> ok | {error, reason()}.
bridge(Name) ->
    case start_bridge(Name) of
        {ok, Local} ->
            Remotes = [P || N <- nodes(), {ok, P} <- [remote(N, bridge_of, [Name])]],
            ok = bus_bridge:await(Local, Remotes),
            lists:foreach(fun(R) -> ok = bus_bridge:await(R, [Local]) end, Remotes);
        {error, _} = Error ->
            Error
    end.

%% @doc Starts this node's bridge of Name (if not running) without
%% waiting for the other nodes' (the application env's `bridges' at boot).
-spec start_bridge(local_name()) -> {ok, pid()} | {error, reason()}.
start_bridge(Name) ->
    with_path(Name, fun(Path) ->
        case bus_tables:server({bridge, Path}) of
            {ok, Pid} -> {ok, Pid};
            error -> bus_bridge_sup:start_bridge(Name, Path)
        end
    end).

%% @doc Stops this node's bridge of Name.
-spec unbridge(local_name()) -> ok | {error, reason()}.
unbridge(Name) ->
    case bridge_of(Name) of
        {ok, Pid} -> bus_bridge_sup:stop_bridge(Pid);
        _ -> {error, not_bridged}
    end.

%% @private This node's bridge of Name.
-spec bridge_of(local_name()) -> {ok, pid()} | error | {error, reason()}.
bridge_of(Name) ->
    with_path(Name, fun(Path) ->
        %% (Asked of every connected node: one may not run the application.)
        try bus_tables:server({bridge, Path})
        catch error:badarg -> error
        end
    end).

%% @doc The processes subscribed to the bus.
-spec subscribers(name()) -> [pid()] | {error, reason()}.
subscribers({Local, Node}) when is_atom(Node) ->
    remote(Node, subscribers, [Local]);
subscribers(Name) ->
    with_path(Name, fun bus_tables:subscribers/1).

%% @doc info/1 of every bus this node serves (that has a bus_srv), by
%% pathname.
-spec info() -> #{binary() => info()}.
info() ->
    maps:from_list([{Path, Info} || Path <- bus_tables:served(),
                                    #{} = Info <- [info(Path)]]).

%% @doc The bus's pathname, the number of processes listening on it (S,
%% undefined if the bus cannot be read), the messages this node received
%% and forwarded on it and the bytes received, its subscribers, the
%% backend and the version of its code that serves it, and the listener's
%% counters (queued, held_us: time it held the bus with a full window).
%% Flow control: per subscriber (subscriptions) its mode (active),
%% messages delivered, queued (held) and dropped, and its options; per
%% bus whether it is blocked by a subscriber with overflow block, for how
%% long in all (blocked_us) and how much of that time the listener held
%% the bus (block_held_us).
-spec info(name()) -> info() | {error, reason()}.
info({Local, Node}) when is_atom(Node) ->
    remote(Node, info, [Local]);
info(Name) ->
    with_path(Name, fun(Path) ->
        Backend = bus_backend:for(Path),
        Counts = case call(Path, counts, false) of
            #{} = C -> C;
            _ -> #{received => 0, forwarded => 0, received_bytes => 0,
                   native => Backend:version(undefined), backend => bus_backend:name(Backend),
                   subscriptions => #{}}
        end,
        Listeners = case Backend:stat(Path) of
            {ok, #{listeners := S}} -> S;
            {error, _} -> undefined
        end,
        Bridge = case bus_tables:server({bridge, Path}) of
            {ok, B} -> #{bridge => catch_counts(B)};
            error -> #{}
        end,
        maps:merge(Counts#{path => Path, listeners => Listeners,
                           subscribers => bus_tables:subscribers(Path)}, Bridge)
    end).

%% @doc broadcast(Name, Message, #{}).
-spec broadcast(name(), message()) -> ok | {error, reason()}.
broadcast(Name, Message) ->
    broadcast(Name, Message, #{}).

%% @doc Broadcasts Message and returns once every listener has it. Options:
%% timeout (milliseconds, or infinity; default the env's broadcast_timeout, 5000) bounds
%% every wait: {error, timeout} if nothing was published,
%% {error, timeout_after_publish} if some listeners have the message (the
%% round is finished in the background). The broadcast starts on the
%% caller's scheduler and moves to a dirty I/O scheduler only if it has to
%% wait; the timeout frees that scheduler even when a listener is stopped: with
%% infinity, a stopped listener holds one for good. nowait fails with
%% {error, busy} at once if another process is broadcasting.
-spec broadcast(name(), message(), broadcast_options()) -> ok | {error, reason()}.
broadcast({Local, Node}, Message, Options) when is_atom(Node) ->
    remote(Node, broadcast, [Local, Message, Options]);
broadcast(Name, Message, Options) ->
    %% (The hot path: the settings read once, no closure, no argument
    %% list built unless it is raised.)
    Settings = bus_config:settings(),
    Bin = message(Message, Name, Options),
    {Timeout, NoWait} = options(Options, bus_config:broadcast_timeout(Settings), Name, Message),
    case path(Name) of
        {ok, Path} -> (bus_backend:for(Path, Settings)):broadcast(Path, Bin, Timeout, NoWait);
        {error, _} = Error -> Error
    end.

%% @doc Creates a bus named `random.' and 30 random characters in the runtime
%% directory ($XDG_RUNTIME_DIR/bus or /run/bus, made if missing) and
%% returns its pathname.
-spec create() -> {ok, binary()} | {error, reason()}.
create() ->
    Backend = bus_backend:default(),
    Backend:create_random(runtime_dir()).

%% @doc Creates the bus if it does not exist.
-spec create(name()) -> {ok, binary()} | {error, reason()}.
create(Name) ->
    create(Name, false).

%% @doc With Exclusive, fails with eexist if the bus file exists. The directory
%% of a well-known bus is created if missing.
-spec create(name(), boolean()) -> {ok, binary()} | {error, reason()}.
create(Name, Exclusive) when is_boolean(Exclusive) ->
    with_path(Name, fun(Path) ->
        _ = is_atom(Name) andalso make_dir(filename:dirname(Path)),
        (bus_backend:for(Path)):create(Path, Exclusive)
    end);
create(Name, Exclusive) ->
    erlang:error(badarg, [Name, Exclusive]).

%% @doc Removes the bus: its semaphores, its shared memory and its file.
-spec remove(name()) -> ok | {error, reason()}.
remove(Name) ->
    with_path(Name, fun(Path) -> (bus_backend:for(Path)):remove(Path) end).

%% @doc Any bit of a class (user, group, others) in Mode grants that class
%% read and write on the bus.
-spec chmod(name(), non_neg_integer()) -> ok | {error, reason()}.
chmod(Name, Mode) when is_integer(Mode), Mode >= 0, Mode =< 8#7777 ->
    with_path(Name, fun(Path) -> (bus_backend:for(Path)):chmod(Path, Mode) end);
chmod(Name, Mode) ->
    erlang:error(badarg, [Name, Mode]).

%% @doc Changes the owner and/or group (undefined: unchanged).
-spec chown(name(), non_neg_integer() | undefined, non_neg_integer() | undefined) ->
    ok | {error, reason()}.
chown(Name, Uid, Gid) ->
    case is_id(Uid) andalso is_id(Gid) of
        true -> with_path(Name, fun(Path) -> (bus_backend:for(Path)):chown(Path, Uid, Gid) end);
        false -> erlang:error(badarg, [Name, Uid, Gid])
    end.

%% @doc The bus's keys, permissions, owner, semaphore values (listeners: S)
%% and number of attached processes.
-spec stat(name()) -> {ok, map()} | {error, reason()}.
stat(Name) ->
    with_path(Name, fun(Path) -> (bus_backend:for(Path)):stat(Path) end).

%% @doc The pathname of a bus.
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

%% @doc Takes `backend', `bus_backends', `broadcast_timeout' and `spin_us'
%% from the application env again, after application:set_env/3 while the
%% application runs: they are read once (bus_config), not at every
%% broadcast. Buses whose bus_srv runs keep the backend they started with;
%% their listeners keep their spinning budget, the node's writers take the
%% new one at once.
-spec reload_config() -> ok | {error, {bad_backend, term()} | {bad_spin_us, term()}}.
reload_config() ->
    bus_config:load().

%% @doc The well-known bus names.
-spec well_known() -> [well_known()].
well_known() ->
    ?WELL_KNOWN.

%% For bus_srv and bus_app.

%% @private Like resolve/1, raising badarg for terms of the wrong type.
-spec path(name()) -> {ok, binary()} | {error, {unknown_bus, atom()}}.
path(Name) ->
    try resolve(Name)
    catch error:badarg -> erlang:error(badarg, [Name])
    end.

%% Internal.

with_path(Name, Fun) ->
    case path(Name) of
        {ok, Path} -> Fun(Path);
        {error, _} = Error -> Error
    end.

catch_counts(Bridge) ->
    try bus_bridge:counts(Bridge)
    catch exit:_ -> #{}
    end.

%% Calls bus:F(Args...) on Node; a lost or refused connection is
%% {error, noconnection}.
remote(Node, F, Args) ->
    try
        erpc:call(Node, ?MODULE, F, Args, ?CALL_TIMEOUT)
    catch
        error:{erpc, noconnection} -> {error, noconnection};
        error:{erpc, timeout} -> {error, timeout};
        error:{exception, undef, [{?MODULE, F, _, _} | _]} -> {error, {not_supported, Node}}
    end.

%% Finds the bus's bus_srv (starting it if Start) and calls it, retrying
%% while bus_srv processes come and go.
call(Path, Request, Start) ->
    call(Path, Request, Start, ?RETRIES).

call(Path, Request, Start, Tries) ->
    case find(Path, Start) of
        {ok, Pid} ->
            try
                gen_server:call(Pid, Request, ?CALL_TIMEOUT)
            catch
                exit:{timeout, _} ->
                    {error, timeout};
                exit:{_, _} when Tries > 0 ->
                    %% It stopped or crashed meanwhile.
                    call(Path, Request, Start, Tries - 1)
            end;
        Other ->
            Other
    end.

find(Path, Start) ->
    case bus_tables:server(Path) of
        {ok, Pid} ->
            case is_process_alive(Pid) of
                true -> {ok, Pid};
                false -> start(Path, Start)
            end;
        error ->
            start(Path, Start)
    end.

start(_Path, false) ->
    not_running;
start(Path, true) ->
    bus_srv_sup:start_bus(Path).

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

%% Computed here rather than by the native library, which does not see
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

configured(Name, Buses) when is_map(Buses) ->
    maps:find(Name, Buses);
configured(Name, Buses) when is_list(Buses) ->
    case lists:keyfind(Name, 1, Buses) of
        {_, Path} -> {ok, Path};
        false -> error
    end;
configured(_Name, _Buses) ->
    error.

message(Message, _Name, _Options) when is_binary(Message) ->
    Message;
message(Message, Name, Options) when is_list(Message) ->
    try unicode:characters_to_binary(Message) of
        Bin when is_binary(Bin) -> Bin;
        _ -> erlang:error(badarg, [Name, Message, Options])
    catch
        error:badarg -> erlang:error(badarg, [Name, Message, Options])
    end;
message(Message, Name, Options) ->
    erlang:error(badarg, [Name, Message, Options]).

%% {Timeout, NoWait} from broadcast/3's options.
options(Options, Default, _Name, _Message) when Options =:= #{} ->
    {Default, false};
options(Options, Default, Name, Message) when is_map(Options) ->
    try options(maps:to_list(Options), Default, Name, Message)
    catch error:badarg -> erlang:error(badarg, [Name, Message, Options])
    end;
options(Options, Default, Name, Message) when is_list(Options) ->
    lists:foldl(fun
        ({timeout, infinity}, {_, N}) -> {infinity, N};
        ({timeout, T}, {_, N}) when is_integer(T), T >= 0 -> {T, N};
        ({nowait, B}, {T, _}) when is_boolean(B) -> {T, B};
        (nowait, {T, _}) -> {T, true};
        (_, _) -> erlang:error(badarg, [Name, Message, Options])
    end, {Default, false}, Options);
options(Options, _Default, Name, Message) ->
    erlang:error(badarg, [Name, Message, Options]).

is_id(undefined) -> true;
is_id(Id) -> is_integer(Id) andalso Id >= 0 andalso Id =< 16#ffffffff.
