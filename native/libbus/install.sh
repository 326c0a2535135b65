#!/bin/sh
# Builds libbus in release mode and installs it under PREFIX:
#   lib/libbus.so.$LIB_VERSION, with the symlinks libbus.so.3 (the soname)
#   and libbus.so; lib/libbus.a; include/bus.h; lib/pkgconfig/bus.pc.
# DESTDIR, if set, is prepended to every installed path (for packaging).
#
# usage: native/libbus/install.sh PREFIX
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 PREFIX" >&2
	exit 2
fi
prefix=$1
dest=${DESTDIR:-}$prefix

# The interface is the original libbus 3.1; the last number is ours.
LIB_MAJOR=3
LIB_VERSION=$LIB_MAJOR.1.0

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo build --release -p libbus
target=$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release

install -d "$dest/lib" "$dest/lib/pkgconfig" "$dest/include"
install -m 755 "$target/libbus.so" "$dest/lib/libbus.so.$LIB_VERSION"
ln -sf "libbus.so.$LIB_VERSION" "$dest/lib/libbus.so.$LIB_MAJOR"
ln -sf "libbus.so.$LIB_VERSION" "$dest/lib/libbus.so"
install -m 644 "$target/libbus.a" "$dest/lib/libbus.a"
install -m 644 include/bus.h "$dest/include/bus.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$LIB_VERSION|g" bus.pc.in \
	>"$dest/lib/pkgconfig/bus.pc"
chmod 644 "$dest/lib/pkgconfig/bus.pc"
echo "installed libbus $LIB_VERSION under $dest"
