#!/bin/bash
# Crash consistency of the writable overlay: kill -9 the daemon during a storm
# of copy-ups and namespace changes, remount, verify.  Usage: crash.sh [SEED...]
# (default seeds 1 2 3 4 5; 1-4 s a seed, 10-20 s for the five).  Prints `PASS crash seed=N` or
# `FAIL crash seed=N: reason` (further problems indented below), then
# `N passed, M failed`; exits 1 if any failed, 2 if a prerequisite is missing.
#
# Env: FUSE_OVERLAYFS (binary, default the tree's fuse-overlayfs), OVL_TEMP_REGEX
# (names of our temporaries, default '^#ovl\.'), CRASH_WORKERS (storm
# processes, default 2), OVL_TEST_TMPDIR (default /var/tmp: needs trusted.*
# xattrs and mknod), CRASH_VERBOSE=1 (print what each worker had in flight),
# CRASH_KEEP=1 (keep the layers and logs of failed seeds), CRASH_OPS=a,b,...
# (triage only: run only these step kinds, see crash_storm.py OP_WEIGHTS).
#
# Per seed: a lower layer (crash_storm.py build: files of 0 B..4 MiB with known
# contents, a sparse file, directories, a hard-linked pair, a symlink), mounted
# `$FUSE_OVERLAYFS -f -o lowerdir=L,upperdir=U,workdir=W MNT`; CRASH_WORKERS
# storm processes (seeded RNG) each own a disjoint set of names and run, one
# step at a time, logging an intent before each step and the result after it:
# appends to lower files (copy-up), rewrites by write-temp-then-rename and in
# place (O_TRUNC, or open + ftruncate(0): the latter copies the data up first),
# creates, renames (files, symlinks, over files; directories: EXDEV is accepted
# as a refusal), unlinks, chmods, mkdirs, rmdirs, `rm -rf d; mkdir d`.  After a
# random delay (seeded, 0.05..2 s) the daemon gets SIGKILL; the dead mount is
# unmounted, the same layers are mounted again and checked.
#
# What is guaranteed, hence checked (the crash is a process kill: whatever
# reached the upper filesystem stays there; no power loss is simulated):
#  * A step whose result was logged completed: its effect is visible.  (An
#    application's close() returned, so the kernel had handed its data to the
#    daemon, and a daemon answers only after the upper filesystem has it.
#    Note: with the writeback cache the kernel drops dirty pages silently when
#    the connection is gone; close() still fails then only because the FLUSH
#    request fails.  A daemon that answers FLUSH with ENOSYS (1.10 does) turns
#    FLUSH off, and close() can then report success for data that never
#    reached it: this test catches that as a lost completed write.)
#  * Copy-up is atomic: a lower file shows either its lower content, exactly, or
#    the content of a complete copy-up (plus what a writer added after it).
#    Never a truncated, NUL-filled or partly copied version of lower data, not
#    even for the step in flight.  Metadata-only steps (chmod, rename, unlink)
#    that copy data up leave old or new, data exact either way.
#  * Namespace steps are atomic: the step in flight left the old state or the
#    new one (a renamed name is at its old place or its new one, never at both
#    or neither; a write-temp-then-rename target is old or new content, exactly).
#  * A write through the mount is NOT atomic: the step in flight may leave part
#    of its data.  For an append: exactly the old content, then some of the new
#    bytes (each the byte written or a NUL hole: the kernel may flush pages out
#    of order, and the last byte present is a written one).  For an in-place
#    rewrite: the old content exactly, or part of the new data as above (empty
#    included: the O_TRUNC open already happened).  For a create: absent, or
#    part of its data.  The written data never contains NUL bytes, so a lower
#    file turned into NULs, or lower bytes where new ones belong, is caught.
#  * The lower layer is unchanged; the lower hard-linked pair: the name never
#    written shows its lower content or the written name's (both are overlay
#    semantics: broken link, or index-style shared inode).
#  * No name in the merged view matches OVL_TEMP_REGEX; WORK/work is empty once
#    the new mount is up; tests/check-upper.py U W passes after unmounting.
TEST_NAME=crash
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
WORKERS=${CRASH_WORKERS:-2}
STORM=$here/crash_storm.py

require_fuse
require_files "$STORM" "$CHECK"
make_work

PROBLEMS=()
problem() { PROBLEMS+=("$*"); }

start_daemon() { # T: mount T/{l,u,w} on T/m; DPID = daemon
	start_fuse "$BIN" "$1/l" "$1/u" "$1/w" "$1/m" "$1/daemon.err" && { DPID=$FPID; return 0; }
	DPID=$FPID
	problem "mount failed: $(tail -2 "$1/daemon.err" | tr '\n' ' ')"
	return 1
}

stop_daemon() { # T: unmount T/m, wait for DPID to end
	stop_fuse "$1/m" "$DPID" || { problem "$STOP_ERR"; return 1; }
}

run_seed() { # SEED: sets PROBLEMS, INFO
	local s=$1 T=$WORK/seed$1 k delay spids=() p l running
	PROBLEMS=()
	INFO=()
	mkdir -p "$T"/{l,u,w,m}
	python3 "$STORM" build "$T/l" "$s" "$WORKERS" "$T/manifest.json" ||
		{ problem "building the lower layer failed"; return; }
	start_daemon "$T" || return
	# odd seeds: worker 0 kills the daemon a random moment into its M-th
	# copy-up of a lower file (M random, see crash_storm.py run); even seeds:
	# after a random delay
	local killat=0
	if ((s % 2)); then
		killat=$(python3 -c "import random; print(random.Random('killat:$s').randint(1, 12))")
	else
		delay=$(python3 -c "import random; print('%.3f' % random.Random('delay:$s').uniform(0.05, 2.0))")
	fi
	for ((k = 0; k < WORKERS; k++)); do
		if [ $k = 0 ] && [ $killat != 0 ]; then
			CRASH_KILL_PID=$DPID CRASH_KILL_AT=$killat \
				python3 "$STORM" storm "$T/m" "$s" "$k" "$T/manifest.json" "$T/log.$k" 2>>"$T/storm.err" &
		else
			python3 "$STORM" storm "$T/m" "$s" "$k" "$T/manifest.json" "$T/log.$k" 2>>"$T/storm.err" &
		fi
		spids+=($!)
		PIDS+=($!)
	done
	if [ $killat != 0 ]; then
		INFO+=("worker 0 kills the daemon during its copy-up number $killat")
		# (stderr: no "Killed" notice when the shell reaps the daemon)
		for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done 2>/dev/null
		kill -0 "$DPID" 2>/dev/null && INFO+=("no such copy-up within 5 s: killed the daemon then")
	else
		INFO+=("killed the daemon after ${delay}s")
		sleep "$delay"
		kill -0 "$DPID" 2>/dev/null || problem "daemon died before the kill: $(tail -2 "$T/daemon.err" | tr '\n' ' ')"
	fi
	kill -9 "$DPID" 2>/dev/null
	wait "$DPID" 2>/dev/null
	# the storm sees ENOTCONN/ECONNABORTED and stops; a stuck worker is a failure
	for _ in $(seq 100); do
		running=0
		for p in "${spids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
		[ $running = 0 ] && break
		sleep 0.05
	done
	for p in "${spids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			problem "storm worker $p still running 5 s after the daemon died"
			kill -9 "$p"
		fi
		wait "$p" 2>/dev/null
	done
	[ -s "$T/storm.err" ] && problem "storm: $(tail -3 "$T/storm.err" | tr '\n' ' ')"
	INFO+=("at the kill WORK/work held $(ls -A "$T/w/work" 2>/dev/null | wc -l) entries")
	fusermount3 -u "$T/m" 2>/dev/null || umount -l "$T/m" || { problem "cannot unmount the dead mount"; return; }
	is_mounted "$T/m" && { problem "dead mount still mounted"; return; }

	start_daemon "$T" || return
	local left
	left=$(ls -A "$T/w/work" 2>&1 | head -5 | tr '\n' ' ')
	[ -z "$left" ] || problem "WORK/work not empty after the remount: $left"
	timeout -s KILL 60 python3 "$STORM" verify "$T/m" "$T/l" "$T/manifest.json" "$TEMP_REGEX" "$T"/log.* \
		>"$T/verify.out" 2>&1
	case $? in 0 | 1) ;; *) problem "verify crashed or timed out: $(tail -3 "$T/verify.out" | tr '\n' ' ')" ;; esac
	while IFS= read -r l; do
		case $l in "# "*) INFO+=("${l#\# }") ;; ?*) problem "$l" ;; esac
	done <"$T/verify.out"
	stop_daemon "$T" || return
	python3 "$CHECK" --temp-regex "$TEMP_REGEX" "$T/u" "$T/w" >"$T/check.out" 2>&1 ||
		while IFS= read -r l; do problem "$l"; done <"$T/check.out"
}

seeds=("$@")
[ $# -gt 0 ] || seeds=(1 2 3 4 5)
for s in "${seeds[@]}"; do
	[[ $s =~ ^[0-9]+$ ]] || die "seed must be a number: $s"
	run_seed "$s"
	undo "$WORK/seed$s"
	if [ ${#PROBLEMS[@]} = 0 ]; then
		pass "seed=$s"
	else
		fail "seed=$s" "${PROBLEMS[@]}"
	fi
	if [ ${#PROBLEMS[@]} != 0 ] || [ "${CRASH_VERBOSE:-0}" = 1 ]; then
		for l in "${INFO[@]}"; do echo "    # $l"; done
	fi
	if [ ${#PROBLEMS[@]} != 0 ] && [ "${CRASH_KEEP:-0}" = 1 ]; then KEEP=1; else rm -rf "$WORK/seed$s"; fi
done
finish
