#!/bin/bash
# gRPC tests of the containerd snapshotter shim (containerd-fuse-overlayfs-grpc):
# every Snapshots method, containerd's error codes, List filters and streaming,
# concurrency, malformed HTTP/2 and gRPC input, kill -9 and restart, SIGTERM,
# sd_notify, bad command lines and the self-mount mode.
# Usage: run.sh [TEST-NAME-SUBSTRING...]
# Needs root, /dev/fuse, the shim built (TOP/containerd-fuse-overlayfs-grpc, or
# SNAPSHOTTER_BIN), fuse-overlayfs installed in PATH, and Debian's python3-grpcio,
# python3-protobuf, python3-h2 and protobuf-compiler (contrib/install-deps.sh).
# Ends with "N passed, M failed"; exits non-zero when something failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}

SNAPGRPC_TMP=$(mktemp -d /tmp/snapgrpc.XXXXXX) || { echo "0 passed, 1 failed"; exit 1; }
export SNAPGRPC_TMP
cleanup() {
	local pid m
	# the shims the test started (their PIDs are in $SNAPGRPC_TMP/pids)
	if [ -f "$SNAPGRPC_TMP/pids" ]; then
		while read -r pid; do
			[ -n "$pid" ] || continue
			if [ -e "/proc/$pid" ] && grep -qa containerd-fuse-overlayfs-grpc "/proc/$pid/cmdline" 2>/dev/null &&
				grep -qa "$SNAPGRPC_TMP" "/proc/$pid/cmdline" 2>/dev/null; then
				kill -9 "$pid" 2>/dev/null
			fi
		done <"$SNAPGRPC_TMP/pids"
	fi
	for _ in 1 2 3; do
		# deepest first
		for m in $(awk -v w="$SNAPGRPC_TMP/" 'index($2, w) == 1 {print length($2), $2}' /proc/self/mounts |
			sort -rn | cut -d' ' -f2); do
			umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null
		done
	done
	if awk -v w="$SNAPGRPC_TMP/" 'index($2, w) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
		echo "run.sh: mounts left under $SNAPGRPC_TMP, not removing it" >&2
	else
		rm -rf --one-file-system "$SNAPGRPC_TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x /usr/bin/python3 ]; then
	echo "not ok 1 - prerequisites: /usr/bin/python3 is missing"
	echo "0 passed, 1 failed"
	exit 1
fi
/usr/bin/python3 "$here/grpc_test.py" "$@"
