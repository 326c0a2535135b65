%% @doc One bus_srv per bus in use, started at run time by the first
%% bus:subscribe/1 of a bus and found through bus_tables.
-module(bus_srv_sup).
-behaviour(supervisor).

%% API.
-export([start_link/0, start_bus/1]).
%% supervisor.
-export([init/1]).

%% API.

-spec start_link() -> {ok, pid()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% Starts a bus_srv for the bus at Path. Returns at once: a bus_srv joins
%% its bus after init/1.
-spec start_bus(binary()) -> {ok, pid()} | {error, term()}.
start_bus(Path) ->
    case supervisor:start_child(?MODULE, [Path]) of
        {ok, Pid} -> {ok, Pid};
        {error, _} = Error -> Error
    end.

%% supervisor.

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => bus_srv,
             start => {bus_srv, start_link, []},
             %% Restarted after a crash; a normal stop (no subscriber left,
             %% bus removed) is final.
             restart => transient,
             shutdown => 5000}]}}.
