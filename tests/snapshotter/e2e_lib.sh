# shellcheck shell=bash
# Shared by the containerd end-to-end tests of the snapshotter shim:
# tests/snapshotter/e2e.sh (root) and tests/snapshotter/rootless_e2e.sh
# (a user's rootless containerd under RootlessKit).  Sourced, never run.
#
# What it holds: the TAP-like results (ok/notok/finish), process helpers, the
# image (e2e_image.py), `ctr run` with the helper mode's ECHILD retries, the
# container scripts (PROBE, CHANGES) and their checks, and the steps both tests
# take in each mount mode: import, the containers, the kept container (its
# upper, its mounts, a restart of the shim, its removal).
#
# The sourcing script sets W (its work directory) and defines these hooks:
#   c MODE CTR-ARGS...    ctr on that mode's containerd, with a timeout
#   in_ns CMD...          runs CMD where the snapshots' mounts and owners look
#                         as containerd sees them (root: here; rootless: as the
#                         user inside the namespaces of its containerd)
#   shim_root MODE        prints the shim's ROOT
#   start_shim MODE       starts the shim; sets SHIM_PID[MODE]
#   stop_shim MODE        SIGTERM to the shim; returns its exit status
#   run_opts MODE ID      sets the array RUN_OPTS: the `ctr run` options of
#                         the test's runtime (runc root, cgroup...)
#   mount_table MODE      prints the mount table that holds the mode's mounts
#                         (/proc/self/mounts, /proc/PID/mounts)
# and the directory W/MODE for each mode.
# shellcheck disable=SC2034 # NS, SHIM_PID and others are used by the scripts that source this
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX=${BUSYBOX:-/bin/busybox}
IMG=$LIB_DIR/e2e_image.py
PY=/usr/bin/python3
IMAGE=docker.io/library/fovl-e2e:latest
NS="test"
SN=fuse-overlayfs
START=$SECONDS
declare -A SHIM_PID=()

# ------------------------------------------------------------------ results
passed=0
failed=0
retries_helper=0
retries_self=0
ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
notok() { # NAME DETAIL [FILE]: FILE's last lines follow as "#" lines
	failed=$((failed + 1))
	echo "not ok $((passed + failed)) - $1: $2"
	if [ -n "${3:-}" ] && [ -s "$3" ]; then tail -n 15 "$3" | sed 's/^/#   /'; fi
	return 0
}
check() { # NAME DETAIL COMMAND...: ok when COMMAND succeeds, else notok NAME DETAIL
	local name=$1 detail=$2
	shift 2
	if "$@"; then ok "$name"; else notok "$name" "$detail"; fi
}
finish() {
	echo "# retries: $((retries_helper + retries_self)) (helper $retries_helper, self $retries_self; ECHILD \"wait: no child processes\")"
	echo "# time: $((SECONDS - START)) s"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && exit 0
	exit 1
}

# ------------------------------------------------------------------ processes
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

# ------------------------------------------------------------------ prerequisites and the image
need_busybox() { # appends to the caller's array "missing" what a static busybox lacks
	if [ ! -x "$BUSYBOX" ]; then
		missing+=("$BUSYBOX (Debian package busybox-static)")
	elif [[ "$(LC_ALL=C ldd "$BUSYBOX" 2>&1)" != *"not a dynamic executable"* ]]; then
		missing+=("a static $BUSYBOX (Debian package busybox-static, not busybox)")
	fi
}

build_image() { # OUT.tar: the two-layer image; sets CHAIN1, CHAIN2 (1 on failure)
	if "$PY" "$IMG" image "$1" "$IMAGE" "$BUSYBOX" >"$W/chain" 2>"$W/image.err" && [ "$(wc -l <"$W/chain")" = 2 ]; then
		ok "OCI image archive built (2 layers)"
	else
		notok "OCI image archive built (2 layers)" "e2e_image.py failed" "$W/image.err"
		return 1
	fi
	CHAIN1=$(sed -n 1p "$W/chain")
	CHAIN2=$(sed -n 2p "$W/chain")
}

# ------------------------------------------------------------------ containers
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
		run_opts "$mode" "$id"
		# in the background: a signal to the test runs the trap at once
		c "$mode" run "${opts[@]}" --snapshotter "$SN" "${RUN_OPTS[@]}" \
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

# ------------------------------------------------------------------ snapshots and mounts
snapshot_keys() { # MODE: "KEY PARENT KIND" of every snapshot, sorted
	c "$1" snapshots --snapshotter "$SN" ls 2>&1 | awk 'NR > 1 {if (NF == 2) print $1, "-", $2; else print $1, $2, $3}' | sort
}
lists_key() { # MODE KEY: the snapshotter (through containerd) lists KEY
	snapshot_keys "$1" | awk -v k="$2" '$1 == k {f = 1} END {exit !f}'
}
snapshot_dirs() { # MODE: how many directories ROOT/snapshots holds
	find "$(shim_root "$1")/snapshots" -mindepth 1 -maxdepth 1 | wc -l
}
snapshot_dirs_are() { # MODE N: N snapshots listed and N dirs under the shim's ROOT/snapshots
	[ "$(snapshot_keys "$1" | wc -l)" = "$2" ] && [ "$(snapshot_dirs "$1")" = "$2" ]
}
mounts_under() { # TABLE DIR: the mount points at or below DIR in that mount table
	awk -v d="$2" '$2 == d || index($2, d "/") == 1 {print $2, $3}' "$1"
}
no_mounts_under() { # TABLE DIR
	[ -z "$(mounts_under "$1" "$2")" ]
}
answers() { # PATH: a listing of PATH works where the mounts are (in_ns)
	in_ns ls "$1" >/dev/null 2>&1
}

# ------------------------------------------------------------------ what the container checks and changes
# Prints "KEY: VALUE" lines.
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
IMAGE_DATA=". .. abslink keep.txt l2file.txt l2hard.txt link modify.txt olddir todelete.txt "

run1_checks() { # MODE OUT: what the first container saw and did
	local mode=$1 out=$2 bbsize
	bbsize=$(stat -c %s "$BUSYBOX")
	expect_line "$mode: whiteouts hide a layer-1 file" "$out" gone absent
	expect_line "$mode: whiteouts hide a layer-1 dir" "$out" gonedir absent
	expect_line "$mode: listing of a dir with whiteouts" "$out" data "$IMAGE_DATA"
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

# ------------------------------------------------------------------ the steps of a mode
import_checks() { # MODE TAR: import through the shim, the committed snapshots, the layers on disk
	local mode=$1 d=$W/$1 keys n dir probs
	if c "$mode" images import --snapshotter "$SN" "$2" >"$d/import.out" 2>&1; then
		ok "$mode: ctr images import unpacks through the shim"
	else
		notok "$mode: ctr images import unpacks through the shim" "ctr failed" "$d/import.out"
		return 1
	fi
	keys=$(snapshot_keys "$mode")
	if [ "$keys" = "$(printf '%s\n' "$CHAIN1 - Committed" "$CHAIN2 $CHAIN1 Committed" | sort)" ]; then
		ok "$mode: committed snapshots are the layers' chain IDs, layer 2 on layer 1"
	else
		echo "$keys" >"$d/keys"
		notok "$mode: committed snapshots are the layers' chain IDs, layer 2 on layer 1" "ctr snapshots ls:" "$d/keys"
	fi
	for n in 1 2; do
		if ! dir=$("$PY" "$IMG" find-layer "$(shim_root "$mode")" "$n" "$BUSYBOX" 2>"$d/find$n"); then
			notok "$mode: layer $n unpacked on disk as in the tar" "not found under ROOT/snapshots" "$d/find$n"
			continue
		fi
		probs=$(in_ns "$PY" "$IMG" check-layer "$n" "$dir" "$BUSYBOX" 2>&1)
		if [ -z "$probs" ]; then
			ok "$mode: layer $n unpacked on disk as in the tar"
		else
			echo "$probs" >"$d/layer$n.problems"
			notok "$mode: layer $n unpacked on disk as in the tar" "$(echo "$probs" | wc -l) problem(s) in $dir" "$d/layer$n.problems"
		fi
	done
}

run_containers() { # MODE: a container that changes things, one that sees the image again, a read-only one
	local mode=$1 d=$W/$1 out
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
		notok "$mode: --rm removed the container's snapshot" "after 10 s: $(snapshot_keys "$mode" | wc -l) snapshots listed, $(snapshot_dirs "$mode") dirs under ROOT/snapshots (want 2)"
	fi

	out=$d/run2.out
	if ctr_run "$mode" run2 "$out" --rm -- sh -c "$PROBE echo end: ok"; then
		expect_line "$mode: a new container sees the image unchanged" "$out" data "$IMAGE_DATA"
	else
		notok "$mode: a new container sees the image unchanged" "$RUN_NOTE" "$out"
	fi

	# read-only root (the shell's error is captured into the line, not
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
}

check_upper() { # MODE UPPER: the upper of a container that ran CHANGES holds only them
	local mode=$1 upper=$2 probs
	if [ -z "$upper" ]; then
		notok "$mode: the container's upper holds only its changes" "no ROOT/snapshots/*/fs/data/new.txt"
		return
	fi
	probs=$(in_ns "$PY" "$IMG" check-upper "$upper" 2>&1)
	if [ -z "$probs" ]; then
		ok "$mode: the container's upper holds only its changes"
	else
		echo "$probs" >"$W/$mode/upper.problems"
		notok "$mode: the container's upper holds only its changes" "$upper:" "$W/$mode/upper.problems"
	fi
}

check_mount_type() { # MODE KEY: `ctr snapshots mounts` hands back the mode's type
	local mode=$1 f=$W/$1/mounts
	c "$mode" snapshots --snapshotter "$SN" mounts /mnt "$2" >"$f" 2>&1
	if [ "$mode" = helper ]; then
		if grep -q -- '-t fuse3.fuse-overlayfs overlay /mnt -o .*lowerdir=' "$f"; then
			ok "$mode: the shim hands back a fuse3.fuse-overlayfs mount"
		else
			notok "$mode: the shim hands back a fuse3.fuse-overlayfs mount" "ctr snapshots mounts:" "$f"
		fi
	elif grep -q -- '-t bind .*/mnt -o .*rbind' "$f"; then
		ok "$mode: the shim hands back a bind mount"
	else
		notok "$mode: the shim hands back a bind mount" "ctr snapshots mounts:" "$f"
	fi
}

overlay_daemons() { # UPPER: PIDs of the fuse-overlayfs daemons of the overlay with that upperdir
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "upperdir=$1" && echo "${p#/proc/}"
	done
}

# restart_shim MODE KEY UPPER: with the active snapshot KEY (directory UPPER)
# left by a kept container, stops the shim (SIGTERM) and starts it again;
# containerd reconnects.  In self mode, first kills the FUSE daemon of KEY's
# overlay: the restarted shim must replace that dead mount.
restart_shim() {
	local mode=$1 key=$2 upper=$3 p merged='' dead=0 rc
	if [ "$mode" = self ] && [ -n "$upper" ]; then
		merged=${upper%/fs}/merged
		for p in $(overlay_daemons "$upper"); do
			kill -KILL "$p" 2>/dev/null && dead=1
		done
		if [ "$dead" = 1 ] && wait_until 5 eval "! answers '$merged'"; then
			ok "$mode: the kept container's overlay daemon killed (its mount dead)"
		else
			notok "$mode: the kept container's overlay daemon killed (its mount dead)" "no fuse-overlayfs with upperdir=$upper, or $merged still answers"
		fi
	fi
	stop_shim "$mode"
	rc=$?
	start_shim "$mode"
	if [ "$rc" = 0 ] && wait_until 10 lists_key "$mode" "$key" && alive "${SHIM_PID[$mode]}"; then
		ok "$mode: shim restarted under containerd: the active snapshot is still listed"
	else
		notok "$mode: shim restarted under containerd: the active snapshot is still listed" "old shim's exit status $rc; its log:" "$W/$mode/shim.log"
	fi
	if [ -n "$merged" ]; then
		if wait_until 5 in_ns grep -qx written "$merged/data/new.txt" 2>/dev/null; then
			ok "$mode: the restarted shim replaced the dead overlay mount"
		else
			in_ns ls "$merged" >"$W/$mode/merged.ls" 2>&1
			notok "$mode: the restarted shim replaced the dead overlay mount" "$merged/data/new.txt unreadable after 5 s:" "$W/$mode/merged.ls"
		fi
	fi
}

kept_container() { # MODE: a kept container: its upper on disk, its mounts, a shim restart, its removal
	local mode=$1 d=$W/$1 out=$W/$1/run3.out upper
	if ! ctr_run "$mode" kept "$out" -- sh -c "$CHANGES echo end: ok" || ! grep -q '^end: ok' "$out"; then
		notok "$mode: ctr run (kept container)" "${RUN_NOTE:-no end line}" "$out"
		return
	fi
	ok "$mode: ctr run (kept container)"
	upper=$(grep -l -x written "$(shim_root "$mode")"/snapshots/*/fs/data/new.txt 2>/dev/null | head -1)
	upper=${upper%/data/new.txt}
	check_upper "$mode" "$upper"
	check_mount_type "$mode" "$RUN_ID"
	restart_shim "$mode" "$RUN_ID" "$upper"
	if c "$mode" containers rm "$RUN_ID" >"$d/rm.out" 2>&1; then
		if wait_until 10 snapshot_dirs_are "$mode" 2; then
			ok "$mode: ctr containers rm removes the snapshot and its directory"
		else
			notok "$mode: ctr containers rm removes the snapshot and its directory" "after 10 s: $(snapshot_keys "$mode" | wc -l) snapshots listed (want 2), $(snapshot_dirs "$mode") dirs"
		fi
	else
		notok "$mode: ctr containers rm removes the snapshot and its directory" "ctr failed" "$d/rm.out"
	fi
}

check_no_mounts() { # MODE DIR: nothing is left mounted at or below DIR once the containers are gone
	local mode=$1 table
	table=$(mount_table "$mode")
	if wait_until 10 no_mounts_under "$table" "$2"; then
		ok "$mode: no mounts left once the containers are gone"
	else
		mounts_under "$table" "$2" >"$W/$mode/mounts.left"
		notok "$mode: no mounts left once the containers are gone" "$(wc -l <"$W/$mode/mounts.left") left" "$W/$mode/mounts.left"
	fi
}

check_shim_exit() { # MODE: the shim exits 0 on SIGTERM
	local rc
	stop_shim "$1"
	rc=$?
	if [ "$rc" = 0 ]; then
		ok "$1: shim exits 0 on SIGTERM"
	else
		notok "$1: shim exits 0 on SIGTERM" "exit status $rc" "$W/$1/shim.log"
	fi
}

CONTAINERD_NOISE='^$' # an ERE: error lines of containerd's log that the test expects
containerd_errors() { # MODE LOG: after a failure in MODE, containerd's last errors
	local errs
	errs=$(grep -E 'level=(error|fatal)' "$2" 2>/dev/null | grep -vE "$CONTAINERD_NOISE" | tail -n 5)
	if [ -n "$errs" ]; then
		echo "# $1: last errors of containerd (log removed at exit unless KEEP=1: $2):"
		echo "$errs" | cut -c1-600 | sed 's/^/#   /'
	fi
}

# ------------------------------------------------------------------ containerd
containerd_config() { # ROOT STATE SOCKET OPT SHIM-SOCKET: a config.toml (version 2) on stdout
	cat <<-EOF
		version = 2
		root = "$1"
		state = "$2"
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
		  address = "$3"
		[ttrpc]
		  address = "$3.ttrpc"
		[debug]
		  address = ""
		  level = "info"
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$4"
		[proxy_plugins."$SN"]
		  type = "snapshot"
		  address = "$5"
	EOF
}

containerd_serves() { # MODE PID LOG: containerd (PID, or what runs it) serves with the proxy plugin within 10 s
	local mode=$1 i
	for ((i = 0; i < 100; i++)); do
		alive "$2" || break
		c "$mode" version >/dev/null 2>&1 && break
		sleep 0.1
	done
	if ! c "$mode" version >/dev/null 2>&1; then
		notok "$mode: containerd serves with the proxy plugin" "not serving after 10 s" "$3"
		return 1
	fi
	if c "$mode" plugins ls 2>&1 | awk -v sn="$SN" '$1 == "io.containerd.snapshotter.v1" && $2 == sn && $NF == "ok" {f = 1} END {exit !f}'; then
		ok "$mode: containerd serves with the proxy plugin"
	else
		c "$mode" plugins ls >"$W/$mode/plugins" 2>&1
		notok "$mode: containerd serves with the proxy plugin" "no io.containerd.snapshotter.v1 $SN ok" "$W/$mode/plugins"
		return 1
	fi
}

run_modes() { # run_mode (the sourcing script's) for each of MODES; containerd's errors after a failure
	local mode before
	for mode in $MODES; do
		before=$failed
		run_mode "$mode"
		[ "$failed" != "$before" ] && containerd_errors "$mode" "$W/$mode/containerd.log"
	done
}
