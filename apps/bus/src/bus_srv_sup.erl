%% @doc One bus_srv per bus in use, started at run time by
%% bus_srv:subscribe/1 and found through the bus_servers table.
-module(bus_srv_sup).
-behaviour(supervisor).

%% API.
-export([start_link/0]).
%% supervisor.
-export([init/1]).

%% API.

-spec start_link() -> {ok, pid()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

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
