%% The native module of this version of the application. Every call into
%% the native library is `?NIF:Function(...)', so that a hot upgrade that
%% loads the next native version (bus_nif_N+1, with its own library,
%% side by side with this one) points every new call at it: see
%% bus_srv:code_change/3 and apps/bus/ebin/bus.appup.
%%
%% Bump it with native/bus_nif/NATIVE_VERSION whenever the native code
%% changes, and rename apps/bus/src/bus_nif_N.erl to match.
-define(NIF, bus_nif_10).
