%% @doc Starting a port program (priv/bin/bus_port, built from
%% native/bus_port) and checking its hello frame. The program's stdin and
%% stdout carry `{packet, 4}' frames (bus_port_frames); when the port
%% closes or the node dies, its stdin closes and it leaves its bus and
%% exits.
-module(bus_port_program).

-include("bus_port.hrl").

-export([open/0, hello/1, close/1, executable/0]).

%% Starts a program; its first frame, the hello, is to be checked with
%% hello/2 when it arrives.
-spec open() -> {ok, port()} | {error, {port_program, term()}}.
open() ->
    Exe = executable(),
    %% The node's spinning budget, as every binding reads it.
    Spin = {"BUS_SPIN_US", integer_to_list(bus_config:spin_us())},
    try open_port({spawn_executable, Exe},
                  [{packet, 4}, binary, exit_status, use_stdio, {arg0, "bus_port"},
                   {env, [Spin]}]) of
        Port -> {ok, Port}
    catch
        error:Reason -> {error, {port_program, {Reason, list_to_binary(Exe)}}}
    end.

%% Checks a program's first frame: its OS pid, or why it cannot be used.
-spec hello(bus_port_frames:frame()) ->
    {ok, non_neg_integer()} | {error, {port_version, term()}}.
hello({hello, ?PORT_VERSION, OsPid}) ->
    {ok, OsPid};
hello({hello, Version, _}) ->
    {error, {port_version, Version}};
hello(Other) ->
    {error, {port_version, Other}}.

%% Closes the port: the program's stdin closes, it leaves its bus and exits.
-spec close(port() | undefined) -> ok.
close(undefined) ->
    ok;
close(Port) ->
    try erlang:port_close(Port) of
        true -> ok
    catch
        error:badarg -> ok
    end.

-spec executable() -> file:filename().
executable() ->
    Priv = case code:priv_dir(bus) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end,
    filename:join([Priv, "bin", "bus_port"]).
