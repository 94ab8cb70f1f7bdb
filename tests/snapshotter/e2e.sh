#!/bin/bash
# End to end: containerd 1.6 + ctr on our proxy snapshotter.
#
# For each mount mode of the shim (helper: containerd mounts
# fuse3.fuse-overlayfs through mount.fuse3; self: the shim mounts and hands
# back a bind mount) starts a private pair, the shim with its own ROOT and a
# containerd with its own root, state, socket and generated config.toml (the
# proxy plugin "fuse-overlayfs" on the shim's socket, unneeded plugins
# disabled), never the system's.  Then:
#   * imports a two-layer OCI image built by e2e_image.py (static busybox;
#     layer 2 with AUFS whiteouts of a file and a dir, an opaque dir, a
#     modified file, a hard link, symlinks): containerd unpacks each layer
#     through a mount of our shim's snapshot and commits it; checks the
#     committed snapshots (keys, parents) and their directories on disk;
#   * `ctr run --rm`: the merged view inside the container (whiteouts, opaque
#     dir, modified content, hard link, symlinks), writes, deletes and appends;
#     a second container sees the image unchanged; a --read-only container
#     cannot write; a kept container's upper holds only its changes;
#   * the shim restarts (SIGTERM, started again) under containerd with that
#     container's active snapshot; in self mode after its overlay's FUSE
#     daemon was killed, which the new shim must mount again (man page);
#   * removing the container removes its snapshot, directory and mounts; the
#     shim exits 0 on SIGTERM.
# The runc shim's "wait: no child processes" race (ECHILD, see COMPAT.md) can
# fail a container start in helper mode: such runs are retried up to 5 times
# and counted ("# retries: N"); in self mode that race must not happen, a
# retry is a failure.
#
# Usage: tests/snapshotter/e2e.sh        (root; contrib/install-deps.sh and
#        `make install` done: mount.fuse3 and the shim find fuse-overlayfs in
#        PATH, system directories after the caller's PATH)
# Environment: SNAPSHOTTER_BIN (default: the tree's containerd-fuse-overlayfs-grpc),
#   MODES (default "helper self"), BUSYBOX (default /bin/busybox, static),
#   E2E_TMPDIR (default /var/tmp), KEEP=1 keeps the work directory.
# Prints "ok N - NAME" / "not ok N - NAME: DETAIL" (details as "#" lines)
# and ends with "N passed, M failed"; exits 1 on any failure.  A missing
# prerequisite is a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SHIM=${SNAPSHOTTER_BIN:-$top/containerd-fuse-overlayfs-grpc}
MODES=${MODES:-helper self}
export PATH=${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source=tests/snapshotter/e2e_lib.sh
. "$here/e2e_lib.sh"

# ------------------------------------------------------------------ cleanup
W=
PID_CTR=
declare -A PIDS_CONTAINERD=()
RUN_EXISTED=0
[ -d /run/containerd ] && RUN_EXISTED=1

runc_shims() { # SOCK: PIDs of containerd-shim-runc-v2 serving the containerd at SOCK
	local p exe
	exe=$(readlink -f "$(command -v containerd-shim-runc-v2)")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] || continue
		tr '\0' '\n' 2>/dev/null <"$p/cmdline" | grep -qxF -- "$1" && echo "${p#/proc/}"
	done
}

unmount_under() { # DIR: everything mounted at or below DIR, deepest first
	local dir=$1 m left
	for _ in 1 2 3; do
		left=$(mounts_under /proc/self/mounts "$dir" | awk '{print $1}' | sort -r)
		[ -n "$left" ] || return 0
		for m in $left; do
			m=$(printf '%b' "$m")
			fusermount3 -u "$m" 2>/dev/null || umount -R "$m" 2>/dev/null ||
				fusermount3 -uz "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null ||
				echo "# cleanup: cannot unmount $m" >&2
		done
	done
	no_mounts_under /proc/self/mounts "$dir"
}

stop_pair() { # MODE: containers, runc shims, containerd, then our shim; returns the shim's exit status
	local mode=$1 d=$W/$1 id p cg pids rc=0
	[ -d "$d" ] || return 0
	# containers still running (runc state is private: --runc-root)
	if [ -d "$d/runc" ]; then
		# the runc shim appends the namespace to ctr's --runc-root
		for id in $(runc --root "$d/runc/$NS" list -q 2>/dev/null); do
			runc --root "$d/runc/$NS" delete --force "$id" >/dev/null 2>&1
		done
	fi
	# their processes, by the test's cgroup
	for cg in /sys/fs/cgroup/"fovl-e2e.$$.$mode" /sys/fs/cgroup/*/"fovl-e2e.$$.$mode"; do
		[ -d "$cg" ] || continue
		for p in $(cat "$cg"/*/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	done
	stop_pid "${PIDS_CONTAINERD[$mode]:-}"
	PIDS_CONTAINERD[$mode]=
	# runc shims of our containerd (by their -address argument)
	pids=$(runc_shims "$d/containerd.sock")
	for p in $pids; do
		echo "# cleanup: runc shim $p still running" >&2
		kill -TERM "$p" 2>/dev/null
	done
	for p in $pids; do
		for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
		alive "$p" && kill -KILL "$p" 2>/dev/null
	done
	for id in $(cat "$d/ids" 2>/dev/null); do
		rm -f "$("$PY" "$IMG" shim-socket "$d/containerd.sock" "$NS" "$id")"
	done
	if alive "${SHIM_PID[$mode]:-}"; then
		stop_shim "$mode"
		rc=$?
	fi
	for cg in /sys/fs/cgroup/"fovl-e2e.$$.$mode" /sys/fs/cgroup/*/"fovl-e2e.$$.$mode"; do
		[ -d "$cg" ] || continue
		rmdir "$cg"/* "$cg" 2>/dev/null
	done
	return $rc
}

cleanup() {
	local m
	trap - EXIT INT TERM
	[ -n "$W" ] || return
	if alive "$PID_CTR"; then kill -TERM "$PID_CTR" 2>/dev/null; fi
	for m in $MODES; do stop_pair "$m"; done
	unmount_under "$W" || { echo "# cleanup: mounts left under $W, not removing it" >&2; return; }
	if [ "$RUN_EXISTED" = 0 ]; then rmdir /run/containerd/s /run/containerd 2>/dev/null; fi
	if [ -n "${KEEP:-}" ]; then
		echo "# kept: $W" >&2
	else
		rm -rf --one-file-system "$W"
	fi
}
# shellcheck disable=SC2317 # run by the trap
trap cleanup EXIT
trap 'notok "run to the end" "interrupted by a signal"; finish' INT TERM

# ------------------------------------------------------------------ prerequisites
missing=()
[ "$(id -u)" = 0 ] || missing+=("root")
[ -c /dev/fuse ] || missing+=("/dev/fuse")
for c in containerd ctr runc containerd-shim-runc-v2 mount.fuse3 fusermount3 fuse-overlayfs timeout; do
	command -v "$c" >/dev/null || missing+=("$c")
done
[ -x "$PY" ] || missing+=("$PY")
[ -f "$SHIM" ] && [ -x "$SHIM" ] || missing+=("SNAPSHOTTER_BIN=$SHIM (make)")
need_busybox
if [ ${#missing[@]} -gt 0 ]; then
	notok "prerequisites" "missing: ${missing[*]} (contrib/install-deps.sh)"
	finish
fi
W=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/fovl-e2e.XXXXXX") || { notok "prerequisites" "mktemp failed"; finish; }
W=$(cd "$W" && pwd)
mkdir -p "$W/tmp"
ok "prerequisites (shim $SHIM, fuse-overlayfs $(command -v fuse-overlayfs), $(containerd --version | awk '{print $3}'))"
build_image "$W/image.tar" || finish

# ------------------------------------------------------------------ the hooks of e2e_lib.sh
c() { # MODE ctr-args...: ctr on that mode's containerd
	local mode=$1
	shift
	# ctr mounts the image for a moment (to read /etc/group) under TMPDIR
	env -u XDG_RUNTIME_DIR TMPDIR="$W/tmp" timeout -k 5 30 ctr -a "$W/$mode/containerd.sock" -n "$NS" "$@"
}
in_ns() { "$@"; }
shim_root() { echo "$W/$1/shimroot"; }
start_shim() { # MODE
	local mode=$1 d=$W/$1 args=()
	[ "$mode" = helper ] || args=(--mount-mode="$mode")
	"$SHIM" "${args[@]}" "$d/shim.sock" "$d/shimroot" >>"$d/shim.log" 2>&1 &
	SHIM_PID[$mode]=$!
}
stop_shim() { # MODE
	stop_pid "${SHIM_PID[$1]}"
	local rc=$?
	SHIM_PID[$1]=
	return $rc
}
run_opts() { # MODE ID
	RUN_OPTS=(--runc-root "$W/$1/runc" --fifo-dir "$W/$1/fifo" --cgroup "/fovl-e2e.$$.$1/$2")
}
mount_table() { echo /proc/self/mounts; }

# ------------------------------------------------------------------ per mode
start_pair() { # MODE: the shim then containerd; 0 when both serve
	local mode=$1 d=$W/$1 i
	mkdir -p "$d/root" "$d/state" "$d/shimroot" "$d/runc" "$d/fifo" "$d/opt"
	start_shim "$mode"
	for ((i = 0; i < 100; i++)); do
		[ -S "$d/shim.sock" ] && break
		alive "${SHIM_PID[$mode]}" || break
		sleep 0.1
	done
	if [ ! -S "$d/shim.sock" ] || ! alive "${SHIM_PID[$mode]}"; then
		notok "$mode: shim serves on its socket" "no socket after 10 s, or it exited" "$d/shim.log"
		return 1
	fi
	ok "$mode: shim serves on its socket"
	containerd_config "$d/root" "$d/state" "$d/containerd.sock" "$d/opt" "$d/shim.sock" >"$d/config.toml"
	containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
	PIDS_CONTAINERD[$mode]=$!
	containerd_serves "$mode" "${PIDS_CONTAINERD[$mode]}" "$d/containerd.log"
}

run_mode() { # MODE
	local mode=$1 d=$W/$1
	if ! start_pair "$mode"; then
		stop_pair "$mode"
		return
	fi
	if ! import_checks "$mode" "$W/image.tar"; then
		tail -n 5 "$d/containerd.log" | sed 's/^/#   containerd: /'
		stop_pair "$mode"
		return
	fi
	run_containers "$mode"
	kept_container "$mode"
	check_no_mounts "$mode" "$d"
	stop_pid "${PIDS_CONTAINERD[$mode]}"
	PIDS_CONTAINERD[$mode]=
	check_shim_exit "$mode"
	stop_pair "$mode"
}

run_modes
finish
