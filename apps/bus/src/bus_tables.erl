%% @doc Every ETS table of the application, laid out and accessed here and
%% nowhere else. The tables are created by bus_app:start/2, before the
%% supervisors, so their owner lives as long as the application: a
%% restarted bus_srv finds its subscriptions, and a hot upgrade need not
%% move them.
%%
%% - subscriptions: `{{Path, Subscriber}, Name}', written by the bus's
%%   bus_srv (and by an unsubscribe that finds no bus_srv), and since 0.6.0
%%   the subscription's flow control options, `{{Path, Subscriber,
%%   options}, Options}' (a key of another size: 0.5.0's code sees none);
%% - servers: `{Path, BusSrv}', each bus_srv claims its own entry, and
%%   since 0.9.0 `{{bridge, Path}, Bridge}' for a bus's bridge;
%% - writers: `{{Module, Path}, Writer}', the writer handles releases
%%   before 0.14.0 kept open between broadcasts (since then the native
%%   library keeps them itself); kept for a downgrade, and emptied by an
%%   upgrade (delete_writers_except/1).
-module(bus_tables).

%% API.
-export([create/0]).
-export([add_subscription/3, add_subscription/4, delete_subscription/2, subscriptions/1,
         subscriptions_with_options/1, subscribers/1, save_options/3, delete_options/2]).
-export([server/1, served/0, claim_server/2, release_server/2]).
-export([delete_writers_except/1]).

-define(SUBSCRIPTIONS, bus_subscriptions).
-define(SERVERS, bus_servers).
-define(WRITERS, bus_writers).

%% API.

%% Creates the tables; the calling process owns them.
-spec create() -> ok.
create() ->
    ?SUBSCRIPTIONS = ets:new(?SUBSCRIPTIONS, [ordered_set, public, named_table,
                                              {read_concurrency, true}]),
    ?SERVERS = ets:new(?SERVERS, [set, public, named_table, {read_concurrency, true}]),
    ?WRITERS = ets:new(?WRITERS, [set, public, named_table, {read_concurrency, true}]),
    ok.

%% Subscriptions.

-spec add_subscription(binary(), pid(), term()) -> true.
add_subscription(Path, Pid, Name) ->
    ets:insert(?SUBSCRIPTIONS, {{Path, Pid}, Name}).

%% With the subscription's options.
-spec add_subscription(binary(), pid(), term(), map()) -> true.
add_subscription(Path, Pid, Name, Options) ->
    ets:insert(?SUBSCRIPTIONS, [{{Path, Pid}, Name}, {{Path, Pid, options}, Options}]).

-spec save_options(binary(), pid(), map()) -> true.
save_options(Path, Pid, Options) ->
    ets:insert(?SUBSCRIPTIONS, {{Path, Pid, options}, Options}).

%% For a downgrade to a release without options.
-spec delete_options(binary(), pid()) -> true.
delete_options(Path, Pid) ->
    ets:delete(?SUBSCRIPTIONS, {Path, Pid, options}).

-spec delete_subscription(binary(), pid()) -> true.
delete_subscription(Path, Pid) ->
    true = ets:delete(?SUBSCRIPTIONS, {Path, Pid, options}),
    ets:delete(?SUBSCRIPTIONS, {Path, Pid}).

%% The subscribers of a bus and the name each subscribed with.
-spec subscriptions(binary()) -> [{pid(), term()}].
subscriptions(Path) ->
    ets:select(?SUBSCRIPTIONS, [{{{Path, '$1'}, '$2'}, [], [{{'$1', '$2'}}]}]).

%% The same with each one's options (#{} if it has none: subscribed
%% before 0.6.0).
-spec subscriptions_with_options(binary()) -> [{pid(), term(), map()}].
subscriptions_with_options(Path) ->
    Options = maps:from_list(ets:select(?SUBSCRIPTIONS,
                                        [{{{Path, '$1', options}, '$2'}, [], [{{'$1', '$2'}}]}])),
    [{Pid, Name, maps:get(Pid, Options, #{})} || {Pid, Name} <- subscriptions(Path)].

-spec subscribers(binary()) -> [pid()].
subscribers(Path) ->
    ets:select(?SUBSCRIPTIONS, [{{{Path, '$1'}, '_'}, [], ['$1']}]).

%% Servers.

%% The bus's bus_srv, if one has claimed it (it may have died since).
-spec server(binary() | {bridge, binary()}) -> {ok, pid()} | error.
server(Path) ->
    case ets:lookup(?SERVERS, Path) of
        [{_, Pid}] -> {ok, Pid};
        [] -> error
    end.

%% The buses that have a bus_srv (it may have died since).
-spec served() -> [binary()].
served() ->
    lists:sort([Path || {Path, _} <- ets:tab2list(?SERVERS), is_binary(Path)]).

%% Makes Pid the bus's bus_srv unless a live one exists.
-spec claim_server(binary() | {bridge, binary()}, pid()) -> boolean().
claim_server(Path, Pid) ->
    case ets:insert_new(?SERVERS, {Path, Pid}) of
        true ->
            true;
        false ->
            case ets:lookup(?SERVERS, Path) of
                [{_, Other}] ->
                    case is_process_alive(Other) of
                        true -> false;
                        false -> replace(Path, Other, Pid) orelse claim_server(Path, Pid)
                    end;
                [] ->
                    claim_server(Path, Pid)
            end
    end.

%% Removes Pid's claim (not another's).
-spec release_server(binary() | {bridge, binary()}, pid()) -> non_neg_integer().
release_server(Path, Pid) ->
    ets:select_delete(?SERVERS, [{{Path, Pid}, [], [true]}]).

%% Writers.

%% Deletes the writers of every module but Module; returns how many.
-spec delete_writers_except(module()) -> non_neg_integer().
delete_writers_except(Module) ->
    case writers_exist() of
        true -> ets:select_delete(?WRITERS, [{{{'$1', '_'}, '_'}, [{'=/=', '$1', Module}], [true]}]);
        false -> 0
    end.

%% Internal.

%% Whether the writers table exists (not when the application is not
%% running).
writers_exist() ->
    ets:whereis(?WRITERS) =/= undefined.

replace(Path, Dead, Pid) ->
    1 =:= ets:select_replace(?SERVERS, [{{Path, Dead}, [], [{const, {Path, Pid}}]}]).
