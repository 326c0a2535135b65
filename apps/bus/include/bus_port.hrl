%% The version of the port programs' frames (native/bus_port, its
%% PORT_VERSION): a program that says another in its hello frame is not
%% used. Bump both together whenever the frames change.
-define(PORT_VERSION, 1).
