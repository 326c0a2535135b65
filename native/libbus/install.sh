#!/bin/sh
# Builds libbus in release mode and installs it under PREFIX:
#   lib/libbus.so.3.1.0, with the symlinks libbus.so.3 (the soname) and
#   libbus.so; lib/libbus.a; include/bus.h; lib/pkgconfig/bus.pc (whose
#   version is the project's, from Cargo.toml).
# DESTDIR, if set, is prepended to every installed path (for packaging).
# How it is installed is the top-level Makefile's `install-lib`, which
# `make install` runs too.
#
# usage: native/libbus/install.sh PREFIX
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 PREFIX" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# Where cargo builds (CARGO_TARGET_DIR or the configuration may move it).
target=$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cargo build --release -p libbus
${MAKE:-make} install-lib \
	PREFIX="$1" DESTDIR="${DESTDIR:-}" TARGET_DIR="$target"
echo "installed libbus under ${DESTDIR:-}$1"
