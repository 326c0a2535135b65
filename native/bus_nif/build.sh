#!/bin/sh
# Builds the NIF and the `bus` command line and copies them into the
# Erlang application's priv directory (run by rebar3's pre_hooks).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
priv="$root/apps/bus/priv"
cd "$root"
cargo build --release --quiet -p bus_nif
cargo build --release --quiet -p bus --bin bus
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$priv/bin"
# Copy then rename: a running node keeps its mapping of the old file.
cp "$target/release/libbus_nif.so" "$priv/bus_nif.so.tmp"
mv -f "$priv/bus_nif.so.tmp" "$priv/bus_nif.so"
cp "$target/release/bus" "$priv/bin/bus.tmp"
mv -f "$priv/bin/bus.tmp" "$priv/bin/bus"
