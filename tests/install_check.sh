#!/usr/bin/env bash
# Installs a build into a fresh prefix and uses it the way the README tells
# a user to: pkg-config with PKG_CONFIG_PATH alone (and an rpath), and
# find_package(tern) for both the shared and the static library. Fails on
# the first step that does not work.
#
#   tests/install_check.sh BUILD_DIR WORK_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$2
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
pc=$(find "$prefix" -name tern.pc)
[ -n "$pc" ] || { echo "no tern.pc installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
unset PKG_CONFIG_LIBDIR
cflags=$(pkg-config --cflags tern)
libs=$(pkg-config --libs tern)
libdir=$(pkg-config --variable=libdir tern)
case "$cflags" in
    *-D__x86_64__*) echo "pkg-config --cflags tern leaks ck's flags: $cflags" >&2; exit 1 ;;
esac
[ -f "$(pkg-config --variable=includedir tern)/tern.h" ] ||
    { echo "pkg-config's includedir has no tern.h: $cflags" >&2; exit 1; }

# The README's first program, as the README says to build it.
hello=$build/tests/readme_hello.c
cc "$hello" -o "$work/hello" $cflags $libs -Wl,-rpath,"$libdir"
"$work/hello" | grep -q "task 3 returned 6"

# find_package(tern), without the liburing and ck .pc files in reach.
mkdir -p "$work/consumer"
cp "$hello" "$work/consumer/hello.c"
cat >"$work/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(tern REQUIRED)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE tern::tern)
add_executable(hello_static hello.c)
target_link_libraries(hello_static PRIVATE tern::tern_static)
CMAKE
PKG_CONFIG_PATH=/nonexistent PKG_CONFIG_LIBDIR=/nonexistent \
    cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$work/consumer.log" 2>&1 || { cat "$work/consumer.log" >&2; exit 1; }
cmake --build "$work/consumer/build" >>"$work/consumer.log" 2>&1 ||
    { cat "$work/consumer.log" >&2; exit 1; }
"$work/consumer/build/hello" | grep -q "task 3 returned 6"
"$work/consumer/build/hello_static" | grep -q "task 3 returned 6"
echo "install_check: pkg-config and find_package(tern) work from $prefix"
