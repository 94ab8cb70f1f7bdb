#!/bin/bash
# Differential tests: every scenario on the kernel overlay and on our
# fuse-overlayfs (see README.md).  Usage: tests/diff/run.sh [SCENARIO...]
# A SCENARIO is a path or a name in tests/diff/scenarios/ (default: all).
# Env: FUSE_OVERLAYFS (binary under test), OVLDIFF_TIMEOUT (seconds per
# scenario, default 120), OVLDIFF_IGNORE (triage only, see ovldiff.py),
# OVLDIFF_WHITEOUT_MODES=ovl|wh|both (our read-write mounts with char 0/0
# and/or .wh. whiteouts; default: each scenario's whiteout_modes),
# OVLDIFF_SELF_CHECK=1 (the kernel stands in for ours: checks scenarios),
# OVLDIFF_URING=1 (our mounts served over FUSE io_uring: the fuse module's
# enable_uring is set for the run and restored after).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${FUSE_OVERLAYFS:-$here/../../fuse-overlayfs}
limit=${OVLDIFF_TIMEOUT:-120}

die() { echo "run.sh: $*" >&2; exit 2; }

# A missing prerequisite is a failure, never a skip (DESIGN.md section 6).
[ "$(id -u)" = 0 ] || die "must run as root (kernel overlay mounts, mknod, trusted.* xattrs)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
[ -f "$bin" ] && [ -x "$bin" ] || die "fuse-overlayfs binary not found or not executable: $bin (set FUSE_OVERLAYFS)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "the kernel overlay filesystem is not available"
for t in python3 fusermount3 mount umount setfacl timeout; do
    command -v "$t" >/dev/null || die "required tool missing: $t"
done

# shellcheck source=known-failing.sh
. "$here/known-failing.sh"
scenarios=()
if [ $# -eq 0 ]; then
    # every scenario, except writable ones listed in writable/known-failing
    # (NAME: reason), which are named here, not run and not counted
    runnable_scenarios scenarios '' "$here"/scenarios/*.scn "$here"/writable/*.scn
else
    for s in "$@"; do
        if [ -f "$s" ]; then scenarios+=("$s")
        elif [ -f "$here/scenarios/$s.scn" ]; then scenarios+=("$here/scenarios/$s.scn")
        else die "no such scenario: $s"; fi
    done
fi

URING_PARAM=/sys/module/fuse/parameters/enable_uring
uring_saved=
if [ "${OVLDIFF_URING:-0}" = 1 ]; then
    [ -w "$URING_PARAM" ] || die "OVLDIFF_URING=1: $URING_PARAM is missing (a kernel without FUSE io_uring, 6.14+)"
    uring_saved=$(cat "$URING_PARAM")
    echo Y >"$URING_PARAM"
    echo "# our mounts over FUSE io_uring (enable_uring=Y for this run)"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/ovldiff.XXXXXX")
T=$(realpath "$T")   # /proc/self/mountinfo shows resolved paths
mkdir "$T/logs"
failed=0

mounts_under_T() { awk -v t="$T/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo; }

reap() {
    # Normally ovldiff.py undoes its own mounts; this is for a killed one.
    # Kill only daemons we started: PIDs it recorded, checked to still be a
    # process serving a mount point under $T (PIDs get reused).
    if [ -f "$T/pids" ]; then
        while read -r pid; do
            if tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF " $T/"; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        done < "$T/pids"
    fi
    mounts_under_T | sort -r | while read -r m; do
        fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" || true
    done
}

cleanup() {
    [ -z "$uring_saved" ] || echo "$uring_saved" >"$URING_PARAM"
    reap
    if [ -n "$(mounts_under_T)" ]; then
        echo "run.sh: mounts left under $T, not removing it" >&2
    else
        rm -rf --one-file-system "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
for scn in "${scenarios[@]}"; do
    name=$(basename "$scn" .scn)
    log="$T/logs/$name.log"
    rc=0
    out=$(timeout -k 10 "$limit" python3 "$here/ovldiff.py" --fuse "$bin" --tmp "$T" \
          --pidfile "$T/pids" --log "$log" ${OVLDIFF_IGNORE:+--ignore "$OVLDIFF_IGNORE"} \
          "$scn" 2>>"$log") || rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^(PASS|FAIL) ' | tail -n 1 || true)
    if [ "$rc" = 0 ] && [ "${line#PASS }" != "$line" ]; then
        passed=$((passed + 1))
        echo "$line"
        continue
    fi
    failed=$((failed + 1))
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        reap
        echo "FAIL $name: timed out after ${limit}s (hung mount or daemon?)"
    elif [ -n "$line" ]; then
        echo "$line"
    else
        echo "FAIL $name: harness error (exit $rc): $(tail -n 1 "$log" 2>/dev/null)"
    fi
done
if [ "$failed" -gt 0 ]; then
    keep=$(mktemp -d "${TMPDIR:-/tmp}/ovldiff-logs.XXXXXX")
    cp -a "$T/logs/." "$keep/" && echo "details: $keep" >&2
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
