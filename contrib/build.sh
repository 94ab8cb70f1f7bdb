#!/bin/sh
# Configures (once) and builds in the source tree, warnings as errors.
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || ./autogen.sh >/dev/null 2>&1 || { ./autogen.sh; exit 1; }
[ -f Makefile ] || ./configure --enable-werror --prefix=/usr/local >/dev/null
make -j"$(nproc)" >/dev/null
progs="tests/unit/check_overlay tests/unit/check_nodes tests/unit/check_loader tests/unit/check_snapshotter tests/unit/check_oci tests/integration/seccomp-nonewcalls"
# shellcheck disable=SC2086 # a list of targets
make -j"$(nproc)" check_PROGRAMS="$(echo $progs)" $progs >/dev/null
echo "build: ok"
