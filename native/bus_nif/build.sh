#!/bin/sh
# Builds the NIF, the `bus` command line and the port program and copies
# them into the Erlang application's priv directory (run by rebar3's
# pre_hooks). The library is priv/nif/bus_nif_N.so, N from
# native/bus_nif/NATIVE_VERSION: the Erlang module bus_nif_N
# (apps/bus/nif, compiled here into priv/nif) loads it, and a hot upgrade
# loads the next version's module and library side by side with this one.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
priv="$root/apps/bus/priv"
version=$(tr -d ' \n' < "$root/native/bus_nif/NATIVE_VERSION")
cd "$root"
cargo build --release --quiet -p bus_nif
cargo build --release --quiet -p bus --bin bus
cargo build --release --quiet -p bus_port
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$priv/bin"
# The native module and its library, side by side in priv/nif (not in
# ebin: a release loads every module of ebin at boot, and this one only
# when a bus uses the NIF backend: bus_nif_loader). Only this version's
# ship with this version of the application.
mkdir -p "$priv/nif"
for old in "$priv"/bus_nif*.so "$priv"/nif/bus_nif_*; do
    case $old in
        "$priv/nif/bus_nif_$version.so" | "$priv/nif/bus_nif_$version.beam") ;;
        *) rm -f "$old" ;;
    esac
done
# Copy then rename: a running node keeps its mapping of the old file.
cp "$target/release/libbus_nif.so" "$priv/nif/bus_nif_$version.so.tmp"
mv -f "$priv/nif/bus_nif_$version.so.tmp" "$priv/nif/bus_nif_$version.so"
erlc +debug_info -Werror -o "$priv/nif" "$root/apps/bus/nif/bus_nif_$version.erl"
cp "$target/release/bus" "$priv/bin/bus.tmp"
mv -f "$priv/bin/bus.tmp" "$priv/bin/bus"
# The port backend's program (native/bus_port); a running one keeps its
# old file.
cp "$target/release/bus_port" "$priv/bin/bus_port.tmp"
mv -f "$priv/bin/bus_port.tmp" "$priv/bin/bus_port"
