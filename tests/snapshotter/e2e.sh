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
BUSYBOX=${BUSYBOX:-/bin/busybox}
IMG=$here/e2e_image.py
PY=/usr/bin/python3
IMAGE=docker.io/library/fovl-e2e:latest
NS="test"
SN=fuse-overlayfs
export PATH=${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
START=$SECONDS

# ------------------------------------------------------------------ results
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
notok() { # NAME DETAIL [FILE]: FILE's last lines follow as "#" lines
	failed=$((failed + 1))
	echo "not ok $((passed + failed)) - $1: $2"
	if [ -n "${3:-}" ] && [ -s "$3" ]; then tail -n 15 "$3" | sed 's/^/#   /'; fi
	return 0
}
finish() {
	echo "# retries: $((retries_helper + retries_self)) (helper $retries_helper, self $retries_self; ECHILD \"wait: no child processes\")"
	echo "# time: $((SECONDS - START)) s"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && exit 0
	exit 1
}
retries_helper=0
retries_self=0

# ------------------------------------------------------------------ cleanup
W=
PID_CTR=
declare -A PIDS_CONTAINERD=() PIDS_SHIM=()
RUN_EXISTED=0
[ -d /run/containerd ] && RUN_EXISTED=1

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() { # PID [SECONDS]: SIGTERM, SIGKILL after SECONDS (10); returns its exit status if our child
	local pid=$1 t=${2:-10} i
	alive "$pid" || { wait "$pid" 2>/dev/null; return; }
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < t * 10; i++)); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then
		echo "# cleanup: pid $pid ignored SIGTERM for $t s, SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
}

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
		left=$(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r)
		[ -n "$left" ] || return 0
		for m in $left; do
			m=$(printf '%b' "$m")
			fusermount3 -u "$m" 2>/dev/null || umount -R "$m" 2>/dev/null ||
				fusermount3 -uz "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null ||
				echo "# cleanup: cannot unmount $m" >&2
		done
	done
	! awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {f = 1} END {exit !f}' /proc/self/mounts
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
	if alive "${PIDS_SHIM[$mode]:-}"; then
		stop_pid "${PIDS_SHIM[$mode]}"
		rc=$?
	fi
	PIDS_SHIM[$mode]=
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
if [ ! -x "$BUSYBOX" ]; then
	missing+=("$BUSYBOX (Debian package busybox-static)")
elif [[ "$(LC_ALL=C ldd "$BUSYBOX" 2>&1)" != *"not a dynamic executable"* ]]; then
	missing+=("a static $BUSYBOX (Debian package busybox-static, not busybox)")
fi
if [ ${#missing[@]} -gt 0 ]; then
	notok "prerequisites" "missing: ${missing[*]} (contrib/install-deps.sh)"
	finish
fi
W=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/fovl-e2e.XXXXXX") || { notok "prerequisites" "mktemp failed"; finish; }
W=$(cd "$W" && pwd)
mkdir -p "$W/tmp"
ok "prerequisites (shim $SHIM, fuse-overlayfs $(command -v fuse-overlayfs), $(containerd --version | awk '{print $3}'))"

if "$PY" "$IMG" image "$W/image.tar" "$IMAGE" "$BUSYBOX" >"$W/chain" 2>"$W/image.err" && [ "$(wc -l <"$W/chain")" = 2 ]; then
	ok "OCI image archive built (2 layers)"
else
	notok "OCI image archive built (2 layers)" "e2e_image.py failed" "$W/image.err"
	finish
fi
CHAIN1=$(sed -n 1p "$W/chain")
CHAIN2=$(sed -n 2p "$W/chain")

# ------------------------------------------------------------------ per mode
c() { # MODE ctr-args...: ctr on that mode's containerd
	local mode=$1
	shift
	# ctr mounts the image for a moment (to read /etc/group) under TMPDIR
	env -u XDG_RUNTIME_DIR TMPDIR="$W/tmp" timeout -k 5 30 ctr -a "$W/$mode/containerd.sock" -n "$NS" "$@"
}

start_pair() { # MODE: the shim then containerd; 0 when both serve
	local mode=$1 d=$W/$1 i
	mkdir -p "$d/root" "$d/state" "$d/shimroot" "$d/runc" "$d/fifo" "$d/opt"
	start_shim "$mode"
	for ((i = 0; i < 100; i++)); do
		[ -S "$d/shim.sock" ] && break
		alive "${PIDS_SHIM[$mode]}" || break
		sleep 0.1
	done
	if [ ! -S "$d/shim.sock" ] || ! alive "${PIDS_SHIM[$mode]}"; then
		notok "$mode: shim serves on its socket" "no socket after 10 s, or it exited" "$d/shim.log"
		return 1
	fi
	ok "$mode: shim serves on its socket"

	cat >"$d/config.toml" <<-EOF
		version = 2
		root = "$d/root"
		state = "$d/state"
		disabled_plugins = [
		  "io.containerd.grpc.v1.cri",
		  "io.containerd.snapshotter.v1.aufs",
		  "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.zfs",
		  "io.containerd.tracing.processor.v1.otlp",
		  "io.containerd.internal.v1.tracing",
		]
		[grpc]
		  address = "$d/containerd.sock"
		[ttrpc]
		  address = "$d/containerd.sock.ttrpc"
		[debug]
		  address = ""
		  level = "info"
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$d/opt"
		[proxy_plugins."$SN"]
		  type = "snapshot"
		  address = "$d/shim.sock"
	EOF
	containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
	PIDS_CONTAINERD[$mode]=$!
	for ((i = 0; i < 100; i++)); do
		alive "${PIDS_CONTAINERD[$mode]}" || break
		c "$mode" version >/dev/null 2>&1 && break
		sleep 0.1
	done
	if ! c "$mode" version >/dev/null 2>&1; then
		notok "$mode: containerd serves with the proxy plugin" "not serving after 10 s" "$d/containerd.log"
		return 1
	fi
	if c "$mode" plugins ls 2>&1 | awk -v sn="$SN" '$1 == "io.containerd.snapshotter.v1" && $2 == sn && $NF == "ok" {f = 1} END {exit !f}'; then
		ok "$mode: containerd serves with the proxy plugin"
	else
		c "$mode" plugins ls >"$d/plugins" 2>&1
		notok "$mode: containerd serves with the proxy plugin" "no io.containerd.snapshotter.v1 $SN ok" "$d/plugins"
		return 1
	fi
}

# ctr_run MODE TAG OUT [ctr-run-options...] -- COMMAND...: runs a container
# (removed unless --rm is absent); ECHILD failures are retried in helper mode.
# Sets RUN_ID to the container's ID and RUN_NOTE to what went wrong.
ctr_run() {
	local mode=$1 tag=$2 out=$3 opts=() attempt id rc
	shift 3
	while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	RUN_NOTE=
	for attempt in 1 2 3 4 5 6; do
		id=e2e-$mode-$tag-$attempt
		RUN_ID=$id
		echo "$id" >>"$W/$mode/ids"
		# in the background: a signal to the test runs the trap at once
		c "$mode" run "${opts[@]}" --snapshotter "$SN" --runc-root "$W/$mode/runc" \
			--fifo-dir "$W/$mode/fifo" --cgroup "/fovl-e2e.$$.$mode/$id" \
			"$IMAGE" "$id" "$@" >"$out" 2>&1 </dev/null &
		PID_CTR=$!
		wait "$PID_CTR"
		rc=$?
		PID_CTR=
		[ "$rc" = 0 ] && return 0
		c "$mode" containers rm "$id" >/dev/null 2>&1
		# "wait: no child processes" when the mount helper's wait lost the
		# race, "failed with ECHILD" when containerd's own 10 retries did
		if ! grep -qE 'no child processes|failed with ECHILD' "$out"; then
			[ "$rc" = 124 ] && RUN_NOTE="timed out after 30 s" || RUN_NOTE="exit status $rc"
			return 1
		fi
		if [ "$mode" != helper ]; then
			retries_self=$((retries_self + 1))
			RUN_NOTE="ECHILD race (\"wait: no child processes\") in $mode mode, which must not have it"
			return 1
		fi
		[ "$attempt" = 6 ] && break
		retries_helper=$((retries_helper + 1))
		echo "# $mode: $tag: ECHILD race, retry $attempt" >&2
	done
	RUN_NOTE="ECHILD race 6 times in a row"
	return 1
}

expect_line() { # NAME OUT KEY WANT: the container printed "KEY: WANT"
	local got
	if ! grep -q "^$3: " "$2" 2>/dev/null; then
		notok "$1" "no '$3:' line in the container's output (it did not run?)"
		return
	fi
	got=$(grep -m1 "^$3: " "$2" | cut -d' ' -f2-)
	if [ "$got" = "$4" ]; then ok "$1"; else notok "$1" "got '$got', want '$4'"; fi
}

wait_until() { # SECONDS COMMAND...: polls COMMAND every 0.2 s (containerd
	# removes snapshots from the snapshotter in its garbage collection, a
	# moment after the container is deleted)
	local t=$1 i
	shift
	for ((i = 0; i < t * 5; i++)); do
		"$@" && return 0
		sleep 0.2
	done
	"$@"
}
snapshot_dirs_are() { # MODE N: N snapshots listed and N dirs under the shim's ROOT/snapshots
	[ "$(snapshot_keys "$1" | wc -l)" = "$2" ] &&
		[ "$(find "$W/$1/shimroot/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" = "$2" ]
}
no_mounts_under() { # DIR
	! awk -v d="$1" 'index($2, d "/") == 1 {f = 1} END {exit !f}' /proc/self/mounts
}

snapshot_keys() { # MODE: "KEY PARENT KIND" of every snapshot, sorted
	c "$1" snapshots --snapshotter "$SN" ls 2>&1 | awk 'NR > 1 {if (NF == 2) print $1, "-", $2; else print $1, $2, $3}' | sort
}

# What the container checks and changes; prints "KEY: VALUE" lines.
PROBE='
echo "data: $(ls -1a /data | tr "\n" " ")"
echo "gone: $(test -e /data/gone.txt && echo present || echo absent)"
echo "gonedir: $(test -e /data/gonedir/a.txt || test -e /data/gonedir && echo present || echo absent)"
echo "opq: $(ls -1a /opq | tr "\n" " ")"
echo "opq-old: $(cat /opq/old1.txt /opq/sub/old2.txt /opq/.hidden-old 2>/dev/null | tr "\n" " ")"
echo "modify: $(cat /data/modify.txt)"
echo "hardlink: $(stat -c %h /data/l2file.txt) $([ /data/l2file.txt -ef /data/l2hard.txt ] && echo same-inode || echo other-inode) $(cat /data/l2hard.txt)"
echo "symlink: $(readlink /data/link) $(cat /data/link)"
echo "abslink: $(readlink /data/abslink) $(cat /data/abslink)"
echo "busybox: $(readlink /bin/sh) $(stat -c %s /bin/busybox)"
'
CHANGES='
echo written >/data/new.txt && echo "write: $(cat /data/new.txt)"
rm /data/todelete.txt && echo "delete: $(test -e /data/todelete.txt && echo present || echo absent)"
rm -r /data/olddir && echo "rmdir: $(test -e /data/olddir && echo present || echo absent)"
echo appended >>/data/keep.txt && echo "append: $(cat /data/keep.txt | tr "\n" "|")"
echo "after: $(ls -1a /data | tr "\n" " ")"
'
bbsize=$(stat -c %s "$BUSYBOX")

start_shim() { # MODE
	local mode=$1 d=$W/$1 args=()
	[ "$mode" = helper ] || args=(--mount-mode="$mode")
	"$SHIM" "${args[@]}" "$d/shim.sock" "$d/shimroot" >>"$d/shim.log" 2>&1 &
	PIDS_SHIM[$mode]=$!
}

lists_key() { # MODE KEY: the snapshotter (through containerd) lists KEY
	snapshot_keys "$1" | awk -v k="$2" '$1 == k {f = 1} END {exit !f}'
}

# restart_shim MODE KEY UPPER: with the active snapshot KEY (directory UPPER)
# left by a kept container, stops the shim (SIGTERM) and starts it again;
# containerd reconnects.  In self mode, first kills the FUSE daemon of KEY's
# overlay: the restarted shim must replace that dead mount.
restart_shim() {
	local mode=$1 key=$2 upper=$3 d=$W/$1 p merged='' dead=0 rc
	if [ "$mode" = self ] && [ -n "$upper" ]; then
		merged=${upper%/fs}/merged
		for p in /proc/[0-9]*; do
			tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "upperdir=$upper" || continue
			kill -KILL "${p#/proc/}" 2>/dev/null && dead=1
		done
		if [ "$dead" = 1 ] && wait_until 5 eval "! ls '$merged' >/dev/null 2>&1"; then
			ok "$mode: the kept container's overlay daemon killed (its mount dead)"
		else
			notok "$mode: the kept container's overlay daemon killed (its mount dead)" "no fuse-overlayfs with upperdir=$upper, or $merged still answers"
		fi
	fi
	stop_pid "${PIDS_SHIM[$mode]}"
	rc=$?
	start_shim "$mode"
	if [ "$rc" = 0 ] && wait_until 10 lists_key "$mode" "$key" && alive "${PIDS_SHIM[$mode]}"; then
		ok "$mode: shim restarted under containerd: the active snapshot is still listed"
	else
		notok "$mode: shim restarted under containerd: the active snapshot is still listed" "old shim's exit status $rc; ctr snapshots ls:" "$d/shim.log"
	fi
	if [ -n "$merged" ]; then
		if wait_until 5 grep -qx written "$merged/data/new.txt" 2>/dev/null; then
			ok "$mode: the restarted shim replaced the dead overlay mount"
		else
			ls "$merged" >"$d/merged.ls" 2>&1
			notok "$mode: the restarted shim replaced the dead overlay mount" "$merged/data/new.txt unreadable after 5 s:" "$d/merged.ls"
		fi
	fi
}

run1_checks() { # MODE OUT: what the first container saw and did
	local mode=$1 out=$2
	expect_line "$mode: whiteouts hide a layer-1 file" "$out" gone absent
	expect_line "$mode: whiteouts hide a layer-1 dir" "$out" gonedir absent
	expect_line "$mode: listing of a dir with whiteouts" "$out" data ". .. abslink keep.txt l2file.txt l2hard.txt link modify.txt olddir todelete.txt "
	expect_line "$mode: opaque dir shows only layer 2" "$out" opq ". .. new.txt "
	expect_line "$mode: opaque dir: layer-1 children unreachable" "$out" opq-old ""
	expect_line "$mode: modified file has layer 2's content" "$out" modify "modified in layer 2"
	expect_line "$mode: hard link (nlink, inode, content)" "$out" hardlink "2 same-inode layer 2 file with a hard link"
	expect_line "$mode: relative symlink" "$out" symlink "keep.txt keep from layer 1"
	expect_line "$mode: absolute symlink resolves in the container's root" "$out" abslink "/data/modify.txt modified in layer 2"
	expect_line "$mode: busybox and its applet links" "$out" busybox "busybox $bbsize"
	expect_line "$mode: write a new file" "$out" write "written"
	expect_line "$mode: delete a lower file" "$out" delete absent
	expect_line "$mode: delete a lower dir with its content" "$out" rmdir absent
	expect_line "$mode: append to a lower file (copy-up)" "$out" append "keep from layer 1|appended|"
	expect_line "$mode: listing after the changes" "$out" after ". .. abslink keep.txt l2file.txt l2hard.txt link modify.txt new.txt "
}

run_mode() { # MODE
	local mode=$1 d=$W/$1 out l2 probs keys upper n mounts
	if ! start_pair "$mode"; then
		stop_pair "$mode"
		return
	fi

	# --- import: unpack through the shim
	if c "$mode" images import --snapshotter "$SN" "$W/image.tar" >"$d/import.out" 2>&1; then
		ok "$mode: ctr images import unpacks through the shim"
	else
		notok "$mode: ctr images import unpacks through the shim" "ctr failed" "$d/import.out"
		tail -n 5 "$d/containerd.log" | sed 's/^/#   containerd: /'
		stop_pair "$mode"
		return
	fi
	keys=$(snapshot_keys "$mode")
	if [ "$keys" = "$(printf '%s\n' "$CHAIN1 - Committed" "$CHAIN2 $CHAIN1 Committed" | sort)" ]; then
		ok "$mode: committed snapshots are the layers' chain IDs, layer 2 on layer 1"
	else
		echo "$keys" >"$d/keys"
		notok "$mode: committed snapshots are the layers' chain IDs, layer 2 on layer 1" "ctr snapshots ls:" "$d/keys"
	fi
	for n in 1 2; do
		if ! l2=$("$PY" "$IMG" find-layer "$d/shimroot" "$n" "$BUSYBOX" 2>"$d/find$n"); then
			notok "$mode: layer $n unpacked on disk as in the tar" "not found under ROOT/snapshots" "$d/find$n"
			continue
		fi
		probs=$("$PY" "$IMG" check-layer "$n" "$l2" "$BUSYBOX" 2>&1)
		if [ -z "$probs" ]; then
			ok "$mode: layer $n unpacked on disk as in the tar"
		else
			echo "$probs" >"$d/layer$n.problems"
			notok "$mode: layer $n unpacked on disk as in the tar" "$(echo "$probs" | wc -l) problem(s) in $l2" "$d/layer$n.problems"
		fi
	done

	# --- a container: the merged view, then changes
	out=$d/run1.out
	if ctr_run "$mode" run1 "$out" --rm -- sh -c "$PROBE$CHANGES echo end: ok"; then
		ok "$mode: ctr run --rm (changes in a container)"
		run1_checks "$mode" "$out"
	else
		notok "$mode: ctr run --rm (changes in a container)" "$RUN_NOTE; its checks not run" "$out"
	fi
	if wait_until 10 snapshot_dirs_are "$mode" 2; then
		ok "$mode: --rm removed the container's snapshot"
	else
		keys=$(snapshot_keys "$mode" | wc -l)
		n=$(find "$d/shimroot/snapshots" -mindepth 1 -maxdepth 1 | wc -l)
		notok "$mode: --rm removed the container's snapshot" "after 10 s: $keys snapshots listed, $n dirs under ROOT/snapshots (want 2)"
	fi

	# --- a second container starts from the image again
	out=$d/run2.out
	if ctr_run "$mode" run2 "$out" --rm -- sh -c "$PROBE echo end: ok"; then
		expect_line "$mode: a new container sees the image unchanged" "$out" data ". .. abslink keep.txt l2file.txt l2hard.txt link modify.txt olddir todelete.txt "
	else
		notok "$mode: a new container sees the image unchanged" "$RUN_NOTE" "$out"
	fi

	# --- read-only root (the shell's error is captured into the line, not
	# left to stderr, which ctr copies apart and may interleave mid-line)
	out=$d/run-ro.out
	if ctr_run "$mode" ro "$out" --rm --read-only -- sh -c 'echo "read: $(cat /data/modify.txt)"; if err=$( (echo x >/data/ro.txt) 2>&1 ); then echo "write: allowed"; else echo "write: refused: $err"; fi'; then
		expect_line "$mode: --read-only: reads" "$out" read "modified in layer 2"
		if grep -q '^write: refused' "$out" && grep -qi 'read-only file system' "$out"; then
			ok "$mode: --read-only: writes fail with EROFS"
		else
			notok "$mode: --read-only: writes fail with EROFS" "container output:" "$out"
		fi
	else
		notok "$mode: --read-only container" "$RUN_NOTE" "$out"
	fi

	# --- a kept container: its upper on disk, its mounts, its removal
	out=$d/run3.out
	if ctr_run "$mode" kept "$out" -- sh -c "$CHANGES echo end: ok" && grep -q '^end: ok' "$out"; then
		ok "$mode: ctr run (kept container)"
		upper=$(grep -l -x written "$d"/shimroot/snapshots/*/fs/data/new.txt 2>/dev/null | head -1)
		upper=${upper%/data/new.txt}
		if [ -z "$upper" ]; then
			notok "$mode: the container's upper holds only its changes" "no ROOT/snapshots/*/fs/data/new.txt"
		else
			probs=$("$PY" "$IMG" check-upper "$upper" 2>&1)
			if [ -z "$probs" ]; then
				ok "$mode: the container's upper holds only its changes"
			else
				echo "$probs" >"$d/upper.problems"
				notok "$mode: the container's upper holds only its changes" "$upper:" "$d/upper.problems"
			fi
		fi
		c "$mode" snapshots --snapshotter "$SN" mounts /mnt "$RUN_ID" >"$d/mounts" 2>&1
		if [ "$mode" = helper ]; then
			if grep -q -- '-t fuse3.fuse-overlayfs overlay /mnt -o .*lowerdir=' "$d/mounts"; then
				ok "$mode: the shim hands back a fuse3.fuse-overlayfs mount"
			else
				notok "$mode: the shim hands back a fuse3.fuse-overlayfs mount" "ctr snapshots mounts:" "$d/mounts"
			fi
		else
			if grep -q -- '-t bind .*/mnt -o .*rbind' "$d/mounts"; then
				ok "$mode: the shim hands back a bind mount"
			else
				notok "$mode: the shim hands back a bind mount" "ctr snapshots mounts:" "$d/mounts"
			fi
		fi
		restart_shim "$mode" "$RUN_ID" "$upper"
		if c "$mode" containers rm "$RUN_ID" >"$d/rm.out" 2>&1; then
			if wait_until 10 snapshot_dirs_are "$mode" 2; then
				ok "$mode: ctr containers rm removes the snapshot and its directory"
			else
				keys=$(snapshot_keys "$mode" | wc -l)
				notok "$mode: ctr containers rm removes the snapshot and its directory" "after 10 s: $keys snapshots listed (want 2), $(find "$d/shimroot/snapshots" -mindepth 1 -maxdepth 1 | wc -l) dirs"
			fi
		else
			notok "$mode: ctr containers rm removes the snapshot and its directory" "ctr failed" "$d/rm.out"
		fi
	else
		notok "$mode: ctr run (kept container)" "${RUN_NOTE:-no end line}" "$out"
	fi

	# --- nothing mounted is left, and the shim stops cleanly
	if wait_until 10 no_mounts_under "$d"; then
		ok "$mode: no mounts left once the containers are gone"
	else
		mounts=$(awk -v d="$d" 'index($2, d "/") == 1 {print $2, $3}' /proc/self/mounts)
		echo "$mounts" >"$d/mounts.left"
		notok "$mode: no mounts left once the containers are gone" "$(echo "$mounts" | wc -l) left" "$d/mounts.left"
	fi
	stop_pid "${PIDS_CONTAINERD[$mode]}"
	PIDS_CONTAINERD[$mode]=
	stop_pair "$mode"
	n=$?
	if [ "$n" = 0 ]; then
		ok "$mode: shim exits 0 on SIGTERM"
	else
		notok "$mode: shim exits 0 on SIGTERM" "exit status $n" "$d/shim.log"
	fi
}

for mode in $MODES; do
	before=$failed
	run_mode "$mode"
	if [ "$failed" != "$before" ] && grep -qE 'level=(error|fatal)' "$W/$mode/containerd.log" 2>/dev/null; then
		echo "# $mode: last errors of containerd (log removed at exit unless KEEP=1: $W/$mode/containerd.log):"
		grep -E 'level=(error|fatal)' "$W/$mode/containerd.log" | tail -n 5 | cut -c1-600 | sed 's/^/#   /'
	fi
done
finish
