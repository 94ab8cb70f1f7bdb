#!/bin/bash
# Integration tests: real mounts through /dev/fuse.  Every mount form callers
# use, every bad-input case, read-only behaviour, daemon behaviour, hostile
# layers and the syscall fallbacks.  Usage: run.sh [TEST-NAME...]
# Needs root, /dev/fuse, and `make install` done (mount(8) finds helpers only
# in the system paths); a missing prerequisite fails loudly.
# This file is the harness (prerequisites, fresh layers, helpers, the loop);
# the tests, functions t_NAME, are in run.d/TOPIC.sh, sourced below.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
BIN=${FUSE_OVERLAYFS:-$top/fuse-overlayfs}
NONEW=$top/tests/integration/seccomp-nonewcalls
INSTALLED=/usr/local/bin/fuse-overlayfs

die() { echo "FATAL: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "integration tests need root"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
[ -x "$BIN" ] || die "$BIN not built"
for c in fusermount3 mount.fuse3 setfattr getfattr setpriv; do
	command -v $c >/dev/null || die "$c is missing (contrib/install-deps.sh)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ovl-it.XXXXXX")
URING_SAVED=$(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null)
cleanup() {
	local m
	[ -n "$URING_SAVED" ] && echo "$URING_SAVED" >/sys/module/fuse/parameters/enable_uring
	# tests run in subshells: find their leftovers by prefix
	for m in $(awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts); do
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m"
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
FAILS=()
FAILED=0
fail() { echo "    $*"; FAILED=1; return 1; }

# Fresh layers for one test: $T/l1 (top) and $T/l2, $T/u, $T/w, $T/m.
setup() {
	T="$WORK/$1"
	mkdir -p "$T"/{l1,l2,u,w,m}
	echo top >"$T/l1/top"
	echo low >"$T/l2/low"
	echo shadowed >"$T/l2/top"
	mkdir -p "$T/l1/d" "$T/l2/d/sub"
	echo in-sub >"$T/l2/d/sub/f"
}

mounted_by_us() { # MNT [CMDLINE-PATTERN]: the daemon serving MNT is ours (not Debian's 1.10)
	local m=$1 pattern=${2:-$1} ver
	grep -q " $m fuse.fuse-overlayfs " /proc/mounts || { fail "$m: not in /proc/mounts as fuse.fuse-overlayfs"; return 1; }
	[ "$(cat "$m/top")" = top ] || { fail "$m: merged view wrong"; return 1; }
	[ "$(cat "$m/low")" = low ] || { fail "$m: lower file missing"; return 1; }
	local pid
	pid=$(daemon_pid "$pattern") || { fail "no daemon for $m"; return 1; }
	ver=$("/proc/$pid/exe" --version 2>/dev/null | head -1)
	case $ver in *"version 0."*) ;; *) fail "daemon of $m is not ours: $ver"; return 1 ;; esac
}

daemon_pid() { # PATTERN -> pid of the fuse-overlayfs whose command line has it
	local p
	for p in $(pgrep -f fuse-overlayfs); do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$1" && { echo "$p"; return 0; }
	done
	return 1
}

unmount_and_wait() { # MNT [CMDLINE-PATTERN]: unmount and check the daemon ends
	local m=$1 pid
	pid=$(daemon_pid "${2:-$1}")
	fusermount3 -u "$m" || { fail "fusermount3 -u $m failed"; return 1; }
	for _ in $(seq 50); do
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	fail "daemon $pid still running after unmount"
}

# A daemon built with --enable-sanitizers (tests/sanitize.sh) runs a few
# times slower and cannot start with its address space limited (ASan's
# shadow memory): the checks of its speed and of a limited address space
# leave it out, and say so in the test's log.
sanitized() { grep -qa __asan_init "$BIN"; }

need_installed() {
	[ -x "$INSTALLED" ] && cmp -s "$INSTALLED" "$BIN" || die "run 'make install' first: $INSTALLED is not this build"
	[ -x /sbin/mount.fuse3.fuse-overlayfs ] || die "/sbin/mount.fuse3.fuse-overlayfs not installed"
}

wait_mounted() { # MNT: mounted and INIT answered (requests wait for it)
	for _ in $(seq 50); do grep -q " $1 " /proc/mounts && stat "$1" >/dev/null && return 0; sleep 0.1; done
	fail "$1 not mounted"
}

# The tests, by topic (one test: run.sh NAME, the function t_NAME).
# shellcheck source=run.d/mount_forms.sh
. "$here/run.d/mount_forms.sh" || die "cannot source run.d/mount_forms.sh"
# shellcheck source=run.d/bad_input.sh
. "$here/run.d/bad_input.sh" || die "cannot source run.d/bad_input.sh"
# shellcheck source=run.d/layers.sh
. "$here/run.d/layers.sh" || die "cannot source run.d/layers.sh"
# shellcheck source=run.d/upper_layer.sh
. "$here/run.d/upper_layer.sh" || die "cannot source run.d/upper_layer.sh"
# shellcheck source=run.d/readdir.sh
. "$here/run.d/readdir.sh" || die "cannot source run.d/readdir.sh"
# shellcheck source=run.d/daemon.sh
. "$here/run.d/daemon.sh" || die "cannot source run.d/daemon.sh"
# shellcheck source=run.d/kernel_features.sh
. "$here/run.d/kernel_features.sh" || die "cannot source run.d/kernel_features.sh"

all_tests=$(declare -F | awk '$3 ~ /^t_/ {print $3}')
[ $# -gt 0 ] && all_tests=$(printf 't_%s\n' "$@")
for t in $all_tests; do
	if ( $t && [ "$FAILED" = 0 ] ) >"$WORK/$t.log" 2>&1; then
		echo "PASS ${t#t_}"
		passed=$((passed + 1))
	else
		echo "FAIL ${t#t_}"
		sed 's/^/    /' "$WORK/$t.log" | tail -20
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ $failed = 0 ]
