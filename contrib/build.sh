#!/bin/sh
# Configures (once) and builds in the source tree, warnings as errors.
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || ./autogen.sh >/dev/null 2>&1 || { ./autogen.sh; exit 1; }
[ -f Makefile ] || ./configure --enable-werror --prefix=/usr/local >/dev/null
make -j"$(nproc)" >/dev/null
make -j"$(nproc)" check_PROGRAMS="tests/unit/check_overlay tests/unit/check_snapshotter tests/integration/seccomp-nonewcalls" \
	tests/unit/check_overlay tests/unit/check_snapshotter tests/integration/seccomp-nonewcalls >/dev/null
echo "build: ok"
