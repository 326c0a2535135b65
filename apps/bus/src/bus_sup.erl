%% @doc The top supervisor.
-module(bus_sup).
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
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10},
          [#{id => bus_srv_sup,
             start => {bus_srv_sup, start_link, []},
             type => supervisor,
             shutdown => infinity},
           %% Since 0.8.0: this node's subscribers to other nodes' buses.
           #{id => bus_remote,
             start => {bus_remote, start_link, []},
             shutdown => 5000},
           %% Since 0.9.0: the pg scope of bridge members, and the bridges.
           #{id => bus_bridges,
             start => {pg, start_link, [bus_bridges]},
             shutdown => 5000},
           #{id => bus_bridge_sup,
             start => {bus_bridge_sup, start_link, []},
             type => supervisor,
             shutdown => infinity},
           %% Since 0.10.0: the port backend's request program and its
           %% listeners (started before any bus_srv uses them: bus_srv_sup
           %% starts none at boot).
           #{id => bus_port_ops,
             start => {bus_port_ops, start_link, []},
             shutdown => 5000},
           #{id => bus_port_sup,
             start => {bus_port_sup, start_link, []},
             type => supervisor,
             shutdown => infinity}]}}.
