%% @doc The port backend's listeners (bus_port_listener), one per bus that
%% listens through a port program. Temporary: a listener that fails tells
%% its bus_srv, whose restart starts a new one.
-module(bus_port_sup).
-behaviour(supervisor).

-export([start_link/0, start_listener/4, renew_programs/1]).
-export([init/1]).

-spec start_link() -> {ok, pid()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec start_listener(binary(), pid(), reference(), pos_integer()) ->
    {ok, pid()} | {error, term()}.
start_listener(Path, Owner, Tag, Window) ->
    case supervisor:start_child(?MODULE, [Path, Owner, Tag, Window]) of
        {ok, Pid} -> {ok, Pid};
        {error, _} = Error -> Error
    end.

%% Renews the port programs (bus_port_listener:renewal()): run by a
%% release upgrade (`changed': those the new release ships anew), each
%% listener's by an exact handover, the request program's once it has
%% answered what it was asked.
-spec renew_programs(bus_port_listener:renewal()) -> ok.
renew_programs(Which) ->
    _ = [bus_port_listener:renew(Pid, Which)
         || {_, Pid, _, _} <- supervisor:which_children(?MODULE), is_pid(Pid)],
    bus_port_ops:renew(Which).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10},
          [#{id => bus_port_listener,
             start => {bus_port_listener, start_link, []},
             restart => temporary,
             %% Time to leave the bus (the program's stdin closes).
             shutdown => 5000}]}}.
