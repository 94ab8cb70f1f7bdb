# shellcheck shell=bash disable=SC2034 # (variables for the sourcing scripts)
# Shared setup of the integration scripts (crash.sh, enospc.sh, roundtrip.sh,
# tarball.sh): sourced, never run.  Set before sourcing:
#   TEST_NAME   short name: the temp dir is ovl-$TEST_NAME.XXXXXX, messages
#               and results name it
#   TEST_STYLE  `plain` (default: `PASS $TEST_NAME NAME`, `FAIL $TEST_NAME
#               NAME: reason`) or `tap` (`ok N - NAME`, `not ok N - NAME:
#               reason`)
# Gives: here (this directory), top (the tree), BIN ($FUSE_OVERLAYFS, default
# the tree's fuse-overlayfs), TEMP_REGEX ($OVL_TEMP_REGEX, default '^#ovl\.'),
# CHECK (tests/check-upper.py); die, the require_* checks, make_work (WORK:
# a temp dir under $OVL_TEST_TMPDIR, default /var/tmp, removed on exit with
# every mount under it and every process in PIDS still running), mounts,
# and the result counting (pass, fail, finish: `N passed, M failed`).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
BIN=${FUSE_OVERLAYFS:-$top/fuse-overlayfs}
# a static daemon hands plugin mounts to its dynamic build: the one built
# beside it (the tree's), else the installed one it names itself
if [ -z "${FUSE_OVERLAYFS_PLUGIN_DAEMON:-}" ] && [ -x "$(dirname "$BIN")/fuse-overlayfs-plugins" ]; then
	export FUSE_OVERLAYFS_PLUGIN_DAEMON=$(dirname "$BIN")/fuse-overlayfs-plugins
fi
TEMP_REGEX=${OVL_TEMP_REGEX:-'^#ovl\.'}
CHECK=$top/tests/check-upper.py
TEST_STYLE=${TEST_STYLE:-plain}

# ------------------------------------------------------------------ results
passed=0
failed=0

pass() { # NAME
	if [ "$TEST_STYLE" = tap ]; then
		echo "ok $((passed + failed + 1)) - $1"
	else
		echo "PASS $TEST_NAME $1"
	fi
	passed=$((passed + 1))
}

fail() { # NAME REASON [DETAIL...]: details indented below, at most 15
	local n=$#
	if [ "$TEST_STYLE" = tap ]; then
		echo "not ok $((passed + failed + 1)) - $1: $2"
	else
		echo "FAIL $TEST_NAME $1: $2"
	fi
	failed=$((failed + 1))
	shift 2
	local l
	for l in "${@:1:15}"; do echo "    $l"; done
	[ "$n" -gt 17 ] && echo "    ... $((n - 17)) more"
	return 0
}

fail_file() { # NAME FILE: pass if FILE is empty, else fail with its lines
	local lines=()
	if [ ! -s "$2" ]; then
		pass "$1"
	else
		mapfile -t lines <"$2"
		fail "$1" "${lines[0]}" "${lines[@]:1}"
	fi
}

finish() { # the last line; exit status 1 if any failed
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}

# A missing prerequisite fails loudly (exit 2), never skips.  In the tap
# style it is also a failed test, and the result line follows.
die() {
	if [ "$TEST_STYLE" = tap ]; then
		fail prerequisites "$*"
		finish
	fi
	echo "FATAL: $*" >&2
	exit 2
}

# ------------------------------------------------------------------ prerequisites
require_fuse() { # root, /dev/fuse, the binary, the commands every script uses
	[ "$(id -u)" = 0 ] || die "$TEST_NAME test needs root"
	[ -c /dev/fuse ] || die "/dev/fuse is missing"
	[ -x "$BIN" ] || die "$BIN not built (set FUSE_OVERLAYFS)"
	local c
	for c in fusermount3 python3 timeout; do command -v $c >/dev/null || die "$c is missing"; done
}

require_kernel_overlay() {
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
	grep -qw overlay /proc/filesystems || die "the kernel overlay filesystem is not available"
}

# require_oci_plugin COMMAND...: /dev/fuse, the kernel overlay, the tree's
# oci plugin (PLUGIN) and the commands an oci test needs, else die
require_oci_plugin() {
	require_fuse
	require_kernel_overlay
	for c in "$@"; do command -v "$c" >/dev/null || die "$c is missing (contrib/install-deps.sh)"; done
	PLUGIN=$top/oci.so
	[ -f "$PLUGIN" ] || die "$PLUGIN not built"
}

require_files() { # FILE...
	local f
	for f; do [ -f "$f" ] || die "helpers missing: $*"; done
}

# ------------------------------------------------------------------ temp dir, cleanup
PIDS=() # every process we started that may still run
PIDFILE= # a file of more of them, one PID a line (a helper's daemons)
KEEP=0  # 1: cleanup leaves WORK behind

make_work() { # sets WORK; cleanup on exit
	WORK=$(mktemp -d "${OVL_TEST_TMPDIR:-/var/tmp}/ovl-$TEST_NAME.XXXXXX") || die "mktemp failed"
	WORK=$(realpath "$WORK") # /proc/self/mountinfo shows resolved paths
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

ours_alive() { # PID: still a process we started (its command line names $WORK)
	kill -0 "$1" 2>/dev/null && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$WORK/"
}

mounts_under() { awk -v t="$1/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }

undo() { # DIR: kill our processes still running, unmount everything under DIR
	local p m
	[ -n "$PIDFILE" ] && [ -f "$PIDFILE" ] && mapfile -t -O ${#PIDS[@]} PIDS <"$PIDFILE"
	for p in "${PIDS[@]}"; do ours_alive "$p" && kill -9 "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	PIDS=()
	for m in $(mounts_under "$1"); do
		fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m"
	done
}

cleanup() {
	[ -n "${WORK:-}" ] || return 0
	undo "$WORK"
	if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}

# ------------------------------------------------------------------ mounts
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# start_fuse BIN LOWER UPPER WORKDIR MNT ERRFILE [OPTIONS]: the daemon in the
# foreground mode (FPID, also in PIDS), stderr appended to ERRFILE, OPTIONS
# (comma-separated) after the layers; waits up to 5 s for the mount to
# answer.  Returns 1 if it does not (the daemon may have died).  Environment
# assignments in front of the call reach the daemon.
start_fuse() {
	"$1" -f -o "lowerdir=$2,upperdir=$3,workdir=$4${7:+,$7}" "$5" 2>>"$6" &
	FPID=$!
	PIDS+=("$FPID")
	for _ in $(seq 100); do
		is_mounted "$5" && timeout 5 stat "$5" >/dev/null 2>&1 && return 0
		kill -0 "$FPID" 2>/dev/null || break
		sleep 0.05
	done
	return 1
}

# stop_fuse MNT PID: unmount, wait up to 5 s for the daemon to end.  Returns 1
# with STOP_ERR set if unmounting fails or the daemon keeps running.
stop_fuse() {
	STOP_ERR=
	fusermount3 -u "$1" || { STOP_ERR="fusermount3 -u $1 failed"; return 1; }
	for _ in $(seq 100); do
		kill -0 "$2" 2>/dev/null || { wait "$2" 2>/dev/null; return 0; }
		sleep 0.05
	done
	STOP_ERR="daemon $2 still running 5 s after unmount"
	return 1
}

# expect_refusal NAME WANT-IN-THE-LINE BIN OPTIONS [ENV...]: BIN -o OPTIONS $M
# (with ENV set) exits 1 with one line on stderr naming WANT, nothing mounted
expect_refusal() {
	local name=$1 what=$2 bin=$3 opts=$4 rc
	shift 4
	env "$@" timeout 20 "$bin" -o "$opts" "$M" >"$WORK/out" 2>"$WORK/err"
	rc=$?
	if is_mounted "$M"; then
		fail "$name" "it mounted (exit $rc)"
		fusermount3 -u "$M"
	elif [ "$rc" != 1 ]; then
		fail "$name" "exit $rc, want 1" "$(cat "$WORK/err")"
	elif [ "$(wc -l <"$WORK/err")" != 1 ] || [ -s "$WORK/out" ]; then
		fail "$name" "want one line on stderr" "$(cat "$WORK/err" "$WORK/out")"
	elif ! grep -qF -- "$what" "$WORK/err"; then
		fail "$name" "the line does not name '$what'" "$(cat "$WORK/err")"
	else
		pass "$name"
	fi
}
