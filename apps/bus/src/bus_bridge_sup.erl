%% @doc The bridges of this node (bus_bridge), one per bridged bus, started
%% by bus:bridge/1 or at boot for the application env's `bridges'.
-module(bus_bridge_sup).
-behaviour(supervisor).

-export([start_link/0, start_bridge/2, stop_bridge/1]).
-export([init/1]).

-spec start_link() -> {ok, pid()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec start_bridge(term(), binary()) -> {ok, pid()} | {error, term()}.
start_bridge(Name, Path) ->
    case supervisor:start_child(?MODULE, [Name, Path]) of
        {ok, Pid} -> {ok, Pid};
        {error, _} = Error -> Error
    end.

-spec stop_bridge(pid()) -> ok | {error, not_found}.
stop_bridge(Pid) ->
    supervisor:terminate_child(?MODULE, Pid).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => bus_bridge,
             start => {bus_bridge, start_link, []},
             %% Restarted after a crash (its peers see it leave and join).
             restart => transient,
             shutdown => 5000}]}}.
