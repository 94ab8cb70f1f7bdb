#!/bin/bash
# Integration tests: real mounts through /dev/fuse.  Every mount form callers
# use, every bad-input case, read-only behaviour, daemon behaviour, hostile
# layers and the syscall fallbacks.  Usage: run.sh [TEST-NAME...]
# Needs root, /dev/fuse, and `make install` done (mount(8) finds helpers only
# in the system paths); a missing prerequisite fails loudly.
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

# ---------------------------------------------------------------- mount forms
t_form_direct() {
	setup form_direct
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_source_and_repeated_o() {
	setup form_src
	"$BIN" overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" -o noatime,, -o rw || fail "mount failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_fuse() {
	need_installed
	setup form_mount_fuse
	mount -t fuse.fuse-overlayfs overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" || fail "mount -t fuse.fuse-overlayfs failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_fuse3_helper() {
	need_installed
	setup form_fuse3
	mount -t fuse3.fuse-overlayfs overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" || fail "mount -t fuse3.fuse-overlayfs failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_dot_fuse3() {
	need_installed
	setup form_mountfuse3
	# containerd's form: options in several -o, type last
	mount.fuse3 overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" -o ro -t fuse-overlayfs || fail "mount.fuse3 failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_dev_fd() {
	need_installed
	setup form_devfd
	# drop_privileges: mount.fuse3 mounts itself and hands us /dev/fd/N
	mount.fuse3 overlay "$T/m" -o "drop_privileges,lowerdir=$T/l1:$T/l2" -t fuse-overlayfs || fail "mount.fuse3 drop_privileges failed"
	mounted_by_us "$T/m" "$T/l1" && unmount_and_wait "$T/m" "$T/l1"
}

t_form_upper_workdir() {
	setup form_upper
	echo up >"$T/u/top"
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || fail "mount failed"
	[ "$(cat "$T/m/top")" = up ] || fail "upper does not win"
	[ "$(stat -c %a "$T/w/work")" = 700 ] || fail "workdir/work not 0700"
	grep " $T/m " /proc/mounts | grep -q " rw," || fail "mount with upper is not rw"
	unmount_and_wait "$T/m"
}

t_form_symlink_roots() {
	setup form_links
	mkdir -p "$T/l"
	ln -s ../l1 "$T/l/Alinks"
	ln -s "$T/l2" "$T/l/Blinks"
	(cd "$T" && "$BIN" -o "lowerdir=l/Alinks:l/Blinks" m) || fail "mount with symlinked roots failed"
	mounted_by_us "$T/m" "l/Alinks" && unmount_and_wait "$T/m" "l/Alinks"
}

t_form_escaped_colon() {
	setup form_escape
	mkdir -p "$T/a:b"
	echo colon >"$T/a:b/c"
	"$BIN" -o "lowerdir=$T/a\\\\:b:$T/l2" "$T/m" || fail "mount failed"
	[ "$(cat "$T/m/c")" = colon ] || fail "escaped ':' not honoured"
	unmount_and_wait "$T/m"
}

t_form_500_layers() {
	setup many
	local spec="" i
	for i in $(seq 0 499); do
		mkdir -p "$T/L/$i"
		echo "$i" >"$T/L/$i/f$i"
		echo "$i" >"$T/L/$i/same"
		spec="$spec${spec:+:}L/$i"
	done
	(cd "$T" && "$BIN" -o "lowerdir=$spec" m) || fail "mount of 500 layers failed"
	[ "$(ls "$T/m" | wc -l)" = 501 ] || fail "expected 501 names, got $(ls "$T/m" | wc -l)"
	[ "$(cat "$T/m/same")" = 0 ] || fail "top layer does not win"
	[ "$(cat "$T/m/f499")" = 499 ] || fail "bottom layer not visible"
	unmount_and_wait "$T/m"
}

# ---------------------------------------------------------------- bad input
# expect_bad NAME_IN_MESSAGE ARGS...: exit 1, one line naming it, nothing mounted or created
expect_bad() {
	local what=$1
	shift
	local before after out rc
	before=$(find "$T/u" "$T/w" 2>/dev/null | sort)
	out=$("$BIN" "$@" 2>&1)
	rc=$?
	after=$(find "$T/u" "$T/w" 2>/dev/null | sort)
	[ $rc = 1 ] || { fail "exit $rc (want 1) for: $*"; return 1; }
	[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || { fail "not one line: $out"; return 1; }
	case $out in "fuse-overlayfs: "*"$what"*) ;; *) fail "message '$out' does not name '$what'"; return 1 ;; esac
	[ "$before" = "$after" ] || { fail "upper/work changed: $after"; return 1; }
	! grep -q " $T/m " /proc/mounts || { fail "something got mounted"; return 1; }
}

t_bad_input() {
	setup bad
	echo notadir >"$T/file"
	mkdir -p "$T/l1/nested-upper" "$T/l1/nested-work" "$T/m/inside"
	local r=0
	expect_bad "$T/missing" -o "lowerdir=$T/missing" "$T/m" || r=1
	expect_bad "$T/file: lowerdir: not a directory" -o "lowerdir=$T/l1:$T/file" "$T/m" || r=1
	expect_bad "upperdir: given without workdir" -o "lowerdir=$T/l1,upperdir=$T/u" "$T/m" || r=1
	expect_bad "workdir: given without upperdir" -o "lowerdir=$T/l1,workdir=$T/w" "$T/m" || r=1
	expect_bad "timeout" -o "lowerdir=$T/l1,timeout=abc" "$T/m" || r=1
	expect_bad "redirect_dir" -o "lowerdir=$T/l1,redirect_dir=on" "$T/m" || r=1
	expect_bad "uidmapping: want ID:HOST:LEN" -o "lowerdir=$T/l1,uidmapping=0:0" "$T/m" || r=1
	expect_bad "gidmapping: want ID:HOST:LEN" -o "lowerdir=$T/l1,gidmapping=a:b:c" "$T/m" || r=1
	expect_bad "uidmapping: overlapping ranges" -o "lowerdir=$T/l1,uidmapping=0:1000:2:1:3000:1" "$T/m" || r=1
	expect_bad "upperdir: inside lowerdir" -o "lowerdir=$T/l1,upperdir=$T/l1/nested-upper,workdir=$T/w" "$T/m" || r=1
	expect_bad "workdir: inside lowerdir" -o "lowerdir=$T/l1,upperdir=$T/u,workdir=$T/l1/nested-work" "$T/m" || r=1
	mkdir -p "$T/u/low" "$T/w/low"
	expect_bad "$T/u/low: lowerdir: inside upperdir $T/u" -o "lowerdir=$T/l1:$T/u/low,upperdir=$T/u,workdir=$T/w" "$T/m" || r=1
	expect_bad "$T/w/low: lowerdir: inside workdir $T/w" -o "lowerdir=$T/w/low,upperdir=$T/u,workdir=$T/w" "$T/m" || r=1
	expect_bad "upperdir: inside the mountpoint" -o "lowerdir=$T/l1,upperdir=$T/m/inside,workdir=$T/w" "$T/m" || r=1
	expect_bad "lowerdir: inside the mountpoint" -o "lowerdir=$T/m/inside" "$T/m" || r=1
	expect_bad "$T/nomnt: mountpoint" -o "lowerdir=$T/l1" "$T/nomnt" || r=1
	expect_bad "mountpoint: missing" -o "lowerdir=$T/l1" || r=1
	expect_bad "lowerdir: empty layer" -o "lowerdir=$T/l1::$T/l2" "$T/m" || r=1
	expect_bad "$T/file: workdir: not a directory" -o "lowerdir=$T/l1,upperdir=$T/u,workdir=$T/file" "$T/m" || r=1
	# unreadable layer, as an unprivileged user
	mkdir -p "$T/secret"
	chmod 700 "$T/secret"
	chmod 755 "$T" "$WORK"
	chmod 777 "$T/m"
	local out rc
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" -o "lowerdir=$T/secret" "$T/m" 2>&1)
	rc=$?
	[ $rc = 1 ] && [[ $out == "fuse-overlayfs: $T/secret: lowerdir: Permission denied" ]] ||
		{ fail "unreadable layer: rc=$rc '$out'"; r=1; }
	return $r
}

# ---------------------------------------------------------------- behaviour
t_read_only_erofs() {
	setup erofs
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local r=0 op out
	for op in "touch $T/m/new" "mkdir $T/m/nd" "rm $T/m/top" "mv $T/m/top $T/m/t2" "chmod 600 $T/m/top" \
		"ln $T/m/top $T/m/hl" "ln -s x $T/m/sl" "setfattr -n user.x -v 1 $T/m/top" "truncate -s 0 $T/m/low" \
		"rmdir $T/m/d/sub" "mknod $T/m/p p"; do
		out=$($op 2>&1) && { fail "'$op' succeeded"; r=1; continue; }
		[[ $out == *"Read-only file system"* ]] || { fail "'$op': $out"; r=1; }
	done
	sh -c "echo x >> $T/m/low" 2>/dev/null && { fail "append succeeded"; r=1; }
	unmount_and_wait "$T/m" || r=1
	# with an upper layer and -o ro as well
	"$BIN" -o "ro,lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || fail "mount failed"
	for op in "touch $T/m/new" "mkdir $T/m/nd" "rm $T/m/top" "chmod 600 $T/m/top"; do
		out=$($op 2>&1) && { fail "'$op' succeeded with upper"; r=1; continue; }
		[[ $out == *"Read-only file system"* ]] || { fail "'$op' with upper: $out"; r=1; }
	done
	[ -z "$(ls -A "$T/u")" ] || { fail "upper was written: $(ls -A "$T/u")"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

t_stderr_pipe_closed() {
	setup pipe
	# A caller reading our stderr through a pipe must see EOF once we are mounted.
	timeout 10 sh -c "'$BIN' -o lowerdir=$T/l1:$T/l2 '$T/m' 2>&1 | cat >/dev/null" ||
		fail "caller did not get EOF (exit $?)"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_foreground_debug_and_usr1() {
	setup fg
	"$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err" &
	local pid=$!
	for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
	cat "$T/m/top" >/dev/null
	kill -USR1 $pid
	sleep 0.3
	local r=0
	grep -q "LOOKUP" "$T/err" || { fail "-d did not trace requests"; r=1; }
	grep -q "nodes=[0-9]* dirs=[0-9]*" "$T/err" || { fail "SIGUSR1 printed no counters"; r=1; }
	grep -q "openat2: in use" "$T/err" || { fail "openat2 not in use on this kernel"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_prefetch_subdirs() {
	# A listing that shows subdirectories has them read ahead, once each;
	# what the walk then sees is unchanged.
	setup prefetch
	local d f
	for d in a b c; do
		mkdir -p "$T/l2/t/$d"
		for f in 1 2 3; do echo "$d$f" >"$T/l2/t/$d/f$f"; done
	done
	"$BIN" -f -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	local pid=$! r=0 got want
	wait_mounted "$T/m" || return 1
	counters() { kill -USR1 $pid; sleep 0.3; grep -o "prefetches=[0-9]*" "$T/err" | tail -1; }
	ls -l "$T/m/t" >/dev/null
	got=$(counters)
	[ "$got" = prefetches=3 ] || { fail "after listing t: $got, want prefetches=3 (a, b, c)"; r=1; }
	# a change makes the kernel read t again: a, b and c are not read ahead again
	echo x >"$T/m/t/file"
	ls -l "$T/m/t" >/dev/null
	got=$(counters)
	[ "$got" = prefetches=3 ] || { fail "a directory was read ahead twice: $got"; r=1; }
	want=$(cd "$T/l2/t" && find . -type f -exec sh -c 'printf "%s %s\n" "$1" "$(cat "$1")"' sh {} \; | sort)
	got=$(cd "$T/m/t" && find . -path ./file -prune -o -type f -exec sh -c 'printf "%s %s\n" "$1" "$(cat "$1")"' sh {} \; | sort)
	[ "$got" = "$want" ] || { fail "the walk after the read-ahead differs: $got"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_poll_while_busy() {
	# The daemon polls /dev/fuse between requests only while they come fast:
	# a create loop is caught by polling; an idle mount and a caller pausing
	# between requests cost no polling (and an idle mount no CPU).
	setup poll
	"$BIN" -f -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	local pid=$! r=0 a b c d t0 t1
	wait_mounted "$T/m" || return 1
	counter() { kill -USR1 $pid; sleep 0.3; grep -o " $1=[0-9]*" "$T/err" | tail -1 | cut -d= -f2; }
	python3 -c '
import os, sys
for i in range(2000):
    os.close(os.open(f"{sys.argv[1]}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))' "$T/m"
	a=$(counter polls) b=$(counter polls_caught)
	if sanitized; then
		echo "    sanitized daemon: its requests come too far apart to be polled for; not checked"
	else
		[ "${a:-0}" -gt 1000 ] || { fail "a create loop was not polled for: polls=$a"; r=1; }
		[ "${b:-0}" -gt $((a / 2)) ] || { fail "polling caught $b requests of $a polls"; r=1; }
	fi
	t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
	sleep 2
	t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
	c=$(counter polls)
	[ "$c" -le $((a + 1)) ] || { fail "an idle mount polled: polls $a then $c"; r=1; }
	[ $((t1 - t0)) -le 5 ] || { fail "an idle mount used $((t1 - t0)) CPU ticks in 2 s"; r=1; }
	python3 -c '
import os, sys, time
for i in range(200):
    try:
        os.stat(f"{sys.argv[1]}/none{i}")
    except FileNotFoundError:
        pass
    time.sleep(0.002)' "$T/m"
	d=$(counter polls)
	[ "$d" -le $((c + 20)) ] || { fail "200 lookups 2 ms apart were polled for $((d - c)) times"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_readdirplus_known_entries() {
	# A directory listed again after a change: entries the kernel holds
	# already come without attributes (no lookup, no stat of ours); what the
	# listing shows, inode numbers included, is unchanged.
	setup plusknown
	local i
	mkdir -p "$T/l2/t/sub"
	for i in $(seq 1 50); do echo "$i" >"$T/l2/t/f$i"; done
	"$BIN" -f -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	local pid=$! r=0 a b first second
	wait_mounted "$T/m" || return 1
	counter() { kill -USR1 $pid; sleep 0.3; grep -o " $1=[0-9]*" "$T/err" | tail -1 | cut -d= -f2; }
	first=$(ls -l --time-style=+%s "$T/m/t")
	echo new >"$T/m/t/new"
	a=$(counter lookups)
	second=$(ls -l --time-style=+%s "$T/m/t")
	b=$(counter lookups)
	[ $((b - a)) -lt 10 ] || { fail "listing again after a change looked up $((b - a)) names, all held by the kernel"; r=1; }
	# (the new file and the block total aside)
	[ "$(grep -v -e ' new$' -e '^total' <<<"$second")" = "$(grep -v '^total' <<<"$first")" ] ||
		{ fail "the second listing differs from the first: $second"; r=1; }
	# d_ino as readdir gives it equals st_ino, for every entry
	(cd "$T/m/t" && ls -ai | while read -r ino name; do
		[ "$(stat -c %i -- "$name")" = "$ino" ] || echo "$name: d_ino $ino, st_ino $(stat -c %i -- "$name")"
	done) >"$T/inos"
	[ ! -s "$T/inos" ] || { fail "inode numbers differ: $(head -3 "$T/inos")"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_upper_hard_link_names() {
	# An upper hard link's names share one node: whichever name the kernel
	# looked up first, removing or renaming one name leaves the others working.
	setup hardnames
	local first r=0
	for first in one two; do
		rm -rf "$T/u" "$T/w"
		mkdir -p "$T/u" "$T/w"
		echo data >"$T/u/one"
		ln "$T/u/one" "$T/u/two"
		ln "$T/u/one" "$T/u/three"
		"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
		if [ $first = one ]; then stat "$T/m/one" "$T/m/two" "$T/m/three" >/dev/null; else stat "$T/m/three" "$T/m/two" "$T/m/one" >/dev/null; fi
		rm "$T/m/one"
		[ "$(cat "$T/m/two" 2>&1)" = data ] || { fail "$first first: two after rm one: $(cat "$T/m/two" 2>&1)"; r=1; }
		mv "$T/m/two" "$T/m/two-moved"
		rm "$T/m/two-moved"
		[ "$(cat "$T/m/three" 2>&1)" = data ] || { fail "$first first: three after mv and rm of two: $(cat "$T/m/three" 2>&1)"; r=1; }
		echo more >>"$T/m/three"
		[ "$(cat "$T/u/three")" = "$(printf 'data\nmore')" ] || { fail "$first first: upper three: $(cat "$T/u/three")"; r=1; }
		unmount_and_wait "$T/m" || r=1
	done
	return $r
}

wait_mounted() { # MNT: mounted and INIT answered (requests wait for it)
	for _ in $(seq 50); do grep -q " $1 " /proc/mounts && stat "$1" >/dev/null && return 0; sleep 0.1; done
	fail "$1 not mounted"
}

t_passthrough_reads() {
	setup passthrough
	head -c 64M /dev/urandom >"$T/l2/big"
	# a layer on a stacked filesystem: BACKING_OPEN says ELOOP, the daemon serves it
	mkdir -p "$T/ko"/{a,b,m}
	echo stacked >"$T/ko/a/s"
	mount -t overlay overlay -o "lowerdir=$T/ko/a:$T/ko/b" "$T/ko/m" || fail "kernel overlay mount failed"
	"$BIN" -d -o "lowerdir=$T/l1:$T/l2:$T/ko/m" "$T/m" 2>"$T/err" &
	local pid=$! r=0
	wait_mounted "$T/m" || return 1
	grep -q "passthrough: in use" "$T/err" || { fail "passthrough not in use: $(grep passthrough "$T/err")"; r=1; }
	cmp "$T/m/big" "$T/l2/big" || { fail "content through the mount differs"; r=1; }
	python3 - "$T/m/big" "$T/l2/big" <<-'EOF' || { fail "mmap or concurrent opens"; r=1; }
	import mmap, os, sys
	mnt, low = sys.argv[1:]
	ref = open(low, "rb").read()
	with open(mnt, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
	    assert m[:] == ref, "mmap read differs"
	# two opens of one inode at once (the kernel keeps one backing file per inode)
	a, b = os.open(mnt, os.O_RDONLY), os.open(mnt, os.O_RDONLY)
	for off in range(0, len(ref), 8 << 20):
	    assert os.pread(a, 1 << 20, off) == ref[off:off + (1 << 20)], "first open"
	    assert os.pread(b, 4096, off + 12345) == ref[off + 12345:off + 12345 + 4096], "second open"
	os.close(a)
	assert os.pread(b, 100, 5) == ref[5:105], "second open after the first closed"
	os.close(b)
	EOF
	# opens and releases of one inode racing each other (a stale or second id fails with EIO)
	local racers=() p
	for _ in 1 2 3 4; do
		(for _ in $(seq 100); do [ "$(cat "$T/m/top")" = top ] || exit 1; done) &
		racers+=($!)
	done
	for p in "${racers[@]}"; do wait "$p" || { fail "racing opens of one file failed"; r=1; }; done
	[ "$(cat "$T/m/s")" = stacked ] || { fail "stacked layer not served"; r=1; }
	local stacked
	stacked=$(sed -n 's/.*passthrough: nodeid \([0-9]*\): BACKING_OPEN: Too many levels.*/\1/p' "$T/err")
	[ -n "$stacked" ] || { fail "stacked layer did not fall back"; r=1; }
	grep -q "opcode: OPEN " "$T/err" || { fail "-d traced no OPEN"; r=1; }
	grep -q "opcode: READ .*nodeid: $stacked," "$T/err" || { fail "no READ for the stacked file"; r=1; }
	grep "opcode: READ " "$T/err" | grep -v "nodeid: $stacked," | head -3 | grep . &&
		{ fail "the daemon saw READs of passthrough opens"; r=1; }
	# every backing id is closed once its last open is released (RELEASE is async)
	for _ in $(seq 20); do
		[ "$(grep -c 'backing id .* opened' "$T/err")" = "$(grep -c 'backing id .* closed' "$T/err")" ] && break
		sleep 0.1
	done
	[ "$(grep -c 'backing id .* opened' "$T/err")" = "$(grep -c 'backing id .* closed' "$T/err")" ] ||
		{ fail "backing ids left open: $(grep 'backing id' "$T/err" | tail -3)"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	umount "$T/ko/m"
	# without passthrough (forced here; rootless below) reads go through the daemon by splice
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err2" &
	pid=$!
	wait_mounted "$T/m" || return 1
	grep -q "passthrough: not in use" "$T/err2" || { fail "disabled passthrough still in use"; r=1; }
	cmp "$T/m/big" "$T/l2/big" || { fail "content through the splice path differs"; r=1; }
	grep -q "opcode: READ " "$T/err2" || { fail "no READ through the daemon without passthrough"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	# a user namespace's root has no CAP_SYS_ADMIN in the initial one: splice
	unshare -Urm sh -c "'$BIN' -d -o 'lowerdir=$T/l1:$T/l2' '$T/m' 2>'$T/err3' &
		for i in \$(seq 50); do grep -q ' $T/m ' /proc/mounts && break; sleep 0.1; done
		cmp '$T/m/big' '$T/l2/big'; st=\$?; umount '$T/m'; wait; exit \$st" ||
		{ fail "rootless (user namespace) mount does not read"; r=1; }
	grep -q "passthrough: not in use" "$T/err3" || { fail "passthrough in a user namespace: $(grep passthrough "$T/err3")"; r=1; }
	return $r
}

t_writeback_cache() {
	setup writeback
	echo lower >"$T/l1/app"
	local r=0 pid n
	# without passthrough, small writes reach the daemon gathered (writeback=1, the default)
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	pid=$!
	wait_mounted "$T/m" || return 1
	head -c 512000 /dev/urandom >"$T/data"
	dd if="$T/data" of="$T/m/small" bs=512 status=none || { fail "dd through the mount"; r=1; }
	cmp "$T/data" "$T/u/small" || { fail "upper file differs once dd closed it"; r=1; }
	n=$(grep -c "opcode: WRITE " "$T/err")
	[ "$n" -ge 1 ] && [ "$n" -le 100 ] || { fail "1000 writes of 512 B came as $n WRITE requests, want 1..100"; r=1; }
	# O_APPEND, and a write-only open: the kernel writes back at its own offsets and
	# reads around partial pages through any open file
	python3 - "$T/m" <<-'EOF' || { fail "append / write-only opens through the writeback cache"; r=1; }
	import os, sys
	m = sys.argv[1]
	fd = os.open(m + '/app', os.O_WRONLY | os.O_APPEND)
	for chunk in (b'a' * 10, b'b' * 5000, b'c'):
	    os.write(fd, chunk)
	os.lseek(fd, 0, os.SEEK_SET)
	os.write(fd, b'd')          # O_APPEND: still at the end
	os.close(fd)
	want = b'lower\n' + b'a' * 10 + b'b' * 5000 + b'cd'
	assert open(m + '/app', 'rb').read() == want, 'merged view'
	fd = os.open(m + '/wo', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o200)
	os.write(fd, b'x' * 9000)
	os.pwrite(fd, b'y', 100)    # a partial page: read around it
	os.close(fd)
	assert os.stat(m + '/wo').st_mode & 0o777 == 0o200, 'mode'
	# data still only in the kernel's cache is data to SEEK_DATA (a sparse
	# copy would skip it otherwise)
	fd = os.open(m + '/sp', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
	os.ftruncate(fd, 1 << 20)
	os.pwrite(fd, b'z' * 8192, 512 << 10)
	fd2 = os.open(m + '/sp', os.O_RDONLY)
	assert os.lseek(fd2, 0, os.SEEK_DATA) == 512 << 10, 'SEEK_DATA over unwritten-back data'
	assert os.lseek(fd2, 512 << 10, os.SEEK_HOLE) == (512 << 10) + 8192, 'SEEK_HOLE after it'
	os.close(fd2)
	os.close(fd)
	EOF
	[ "$(cat "$T/u/app")" = "lower
$(head -c 10 /dev/zero | tr '\0' a)$(head -c 5000 /dev/zero | tr '\0' b)cd" ] || { fail "upper app: $(head -c 40 "$T/u/app")"; r=1; }
	[ "$(head -c 100 "$T/u/wo" | tr -d x)" = "" ] && [ "$(head -c 101 "$T/u/wo" | tail -c 1)" = y ] &&
		[ "$(stat -c %s "$T/u/wo")" = 9000 ] || { fail "upper wo content"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	# writeback=0: every write is a request
	rm -rf "$T/u" "$T/w" && mkdir "$T/u" "$T/w"
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w,writeback=0" "$T/m" 2>"$T/err0" &
	pid=$!
	wait_mounted "$T/m" || return 1
	dd if="$T/data" of="$T/m/small" bs=512 status=none || { fail "dd with writeback=0"; r=1; }
	cmp "$T/data" "$T/u/small" || { fail "upper file differs (writeback=0)"; r=1; }
	n=$(grep -c "opcode: WRITE " "$T/err0")
	[ "$n" -ge 1000 ] || { fail "writeback=0: 1000 writes came as $n WRITE requests"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	return $r
}

# FUSE over io_uring (kernel 6.14+): turned on for this test only, then the
# kernel's setting is restored (also by cleanup, should the test die).
URING_PARAM=/sys/module/fuse/parameters/enable_uring
t_io_uring() {
	setup uring
	[ -w "$URING_PARAM" ] || { fail "$URING_PARAM missing: the kernel has no FUSE io_uring"; return 1; }
	local r=0 pid n cpus q
	cpus=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
	head -c 3000000 /dev/urandom >"$T/l2/big"
	mkdir "$T/l2/many"
	for n in $(seq 2000); do : >"$T/l2/many/entry-with-a-longish-name-$n"; done
	echo Y >"$URING_PARAM"
	# without passthrough every read and write goes through the ring too
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	pid=$!
	wait_mounted "$T/m" || { echo "$URING_SAVED" >"$URING_PARAM"; return 1; }
	for q in $(seq 0 $((cpus - 1))); do
		# a name never looked up: a LOOKUP from CPU q, on queue q
		taskset -c "$q" stat "$T/m/absent-$q" >/dev/null 2>&1
		grep -q "io_uring: queue $q: a thread registered" "$T/err" || { fail "queue $q did not register"; r=1; }
	done
	python3 - "$T/m" "$T/l2" "$cpus" <<-'EOF2' || { fail "operations through the ring"; r=1; }
	import os, sys
	m, low, cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
	for cpu in range(cpus):       # requests of every queue
	    os.sched_setaffinity(0, {cpu})
	    d = f'{m}/c{cpu}'
	    os.mkdir(d)
	    for i in range(200):
	        with open(f'{d}/f{i}', 'w') as f:
	            f.write(str(i))
	    os.rename(f'{d}/f0', f'{d}/g0')
	    os.symlink('t' * 4000, f'{d}/long-target')     # a payload copied out of the ring
	    assert os.readlink(f'{d}/long-target') == 't' * 4000
	    os.setxattr(f'{d}/g0', 'user.big', b'v' * 3000)
	    assert os.getxattr(f'{d}/g0', 'user.big') == b'v' * 3000
	    assert sorted(os.listdir(d))[:3] == ['f1', 'f10', 'f100']
	    for i in range(1, 200):
	        os.unlink(f'{d}/f{i}')
	os.sched_setaffinity(0, set(range(cpus)))
	# large replies (READ, READDIRPLUS) and large requests (WRITE) through the payload buffer
	assert open(f'{m}/big', 'rb').read() == open(f'{low}/big', 'rb').read(), 'read of a lower file'
	assert len(os.listdir(f'{m}/many')) == 2000, 'listing'
	data = os.urandom(5 << 20)
	with open(f'{m}/new', 'wb') as f:
	    f.write(data)
	assert open(f'{m}/new', 'rb').read() == data, 'read back'
	# lseek over data only in the kernel's cache: the daemon's thread waits for
	# WRITEs of its own CPU, which another thread of that queue must serve
	for cpu in range(cpus):
	    os.sched_setaffinity(0, {cpu})
	    fd = os.open(f'{m}/sp{cpu}', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
	    os.ftruncate(fd, 1 << 20)
	    os.pwrite(fd, b'z' * 8192, 512 << 10)
	    assert os.lseek(fd, 0, os.SEEK_DATA) == 512 << 10, 'SEEK_DATA'
	    os.close(fd)
	EOF2
	cmp "$T/u/new" <(cat "$T/m/new") || { fail "upper new differs"; r=1; }
	kill -USR1 $pid
	sleep 0.3
	n=$(sed -n 's/.*io_uring_requests=\([0-9]*\).*/\1/p' "$T/err" | tail -1)
	[ "${n:-0}" -gt 1000 ] || { fail "io_uring_requests=${n:-none}: requests did not come through the ring"; r=1; }
	[ "$(grep -c 'opcode: LOOKUP' "$T/err")" -gt 0 ] || { fail "no request in the trace"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $? after unmount"; r=1; }
	# the differential suite through the ring, with passthrough and without
	FUSE_OVERLAYFS="$BIN" "$top/tests/diff/run.sh" >"$T/diff.log" 2>&1 ||
		{ fail "diff suite through io_uring: $(grep -v '^PASS' "$T/diff.log" | head -5)"; r=1; }
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 FUSE_OVERLAYFS="$BIN" "$top/tests/diff/run.sh" >"$T/diff2.log" 2>&1 ||
		{ fail "diff suite through io_uring, no passthrough: $(grep -v '^PASS' "$T/diff2.log" | head -5)"; r=1; }
	# not used where it is turned off (by us, or by threaded=0), nor where this
	# process may not make rings (asking for it then would hold every request back)
	for how in env threaded seccomp; do
		if [ $how = env ]; then
			FUSE_OVERLAYFS_DISABLE_IO_URING=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err-$how" &
		elif [ $how = seccomp ]; then
			"$NONEW" "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err-$how" &
		else
			"$BIN" -d -o "lowerdir=$T/l1:$T/l2,threaded=0" "$T/m" 2>"$T/err-$how" &
		fi
		pid=$!
		wait_mounted "$T/m" || { r=1; continue; }
		[ "$(cat "$T/m/low")" = low ] || { fail "$how: read"; r=1; }
		grep -q "io_uring: not in use" "$T/err-$how" || { fail "$how: io_uring not refused: $(grep io_uring "$T/err-$how")"; r=1; }
		fusermount3 -u "$T/m"
		wait $pid
	done
	# a queue that cannot start its thread: the kernel, which holds requests
	# until every queue has one, must be made to give io_uring up, or the
	# mount hangs.  Threads of default attributes get stacks of RLIMIT_STACK
	# (1 GiB here), more than the address space allows; libfuse's own loop
	# threads get small ones (FUSE_THREAD_STACK).
	if sanitized; then
		echo "    sanitized daemon: needs its address space unlimited; a queue that cannot start not checked"
	else
		(ulimit -s 1048576 && ulimit -v 614400 &&
			FUSE_THREAD_STACK=262144 exec "$BIN" -f -d -o "lowerdir=$T/l1:$T/l2" "$T/m") 2>"$T/err-limit" &
		pid=$!
		for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
		[ "$(timeout 5 cat "$T/m/low")" = low ] || { fail "no read with a queue that could not start"; r=1; }
		grep -q "requests come through /dev/fuse" "$T/err-limit" ||
			{ fail "io_uring not given up: $(grep io_uring "$T/err-limit" | tail -3)"; r=1; }
		fusermount3 -u "$T/m"
		wait $pid
	fi
	echo "$URING_SAVED" >"$URING_PARAM"
	return $r
}

t_help_version() {
	local r=0
	"$BIN" --help | grep -q "lowerdir" || { fail "--help"; r=1; }
	"$BIN" -V | grep -q "fuse-overlayfs: version" || { fail "-V"; r=1; }
	return $r
}

t_hostile_symlinks() {
	setup hostile
	# A symlink over a directory hides it; a directory over a symlink does not merge
	# with the symlink's target; a symlink root may not lead the daemon outside.
	ln -s /etc "$T/l1/sys"
	mkdir -p "$T/l2/sys/inner"
	mkdir -p "$T/l1/etcdir"
	ln -s /etc "$T/l2/etcdir"
	ln -s ../../../../../.. "$T/l1/up"
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local r=0
	[ "$(readlink "$T/m/sys")" = /etc ] || { fail "sys is not the symlink"; r=1; }
	[ -z "$(ls -A "$T/m/etcdir")" ] || { fail "etcdir merged with the host's /etc: $(ls "$T/m/etcdir" | head -3)"; r=1; }
	[ "$(readlink "$T/m/up")" = ../../../../../.. ] || { fail "up target"; r=1; }
	# the daemon itself never resolves a symlink below a root
	local pid
	pid=$(daemon_pid "$T/m")
	ls -la "$T/m/etcdir" "$T/m/sys" >/dev/null
	ls -l "/proc/$pid/fd" | grep -q " /etc" && { fail "daemon holds an fd in /etc"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

t_fallback_syscalls() {
	setup nonew
	[ -x "$NONEW" ] || die "$NONEW not built"
	"$NONEW" "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err" &
	local pid=$! r=0
	for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
	grep -q "openat2: fallback; \*xattrat: fallback; fchmodat2: fallback" "$T/err" || { fail "fallbacks not chosen: $(grep openat2 "$T/err")"; r=1; }
	[ "$(cat "$T/m/d/sub/f")" = in-sub ] || { fail "read through fallbacks"; r=1; }
	setfattr -n user.k -v v "$T/l2/low"
	[ "$(getfattr --only-values -n user.k "$T/m/low" 2>/dev/null)" = v ] || { fail "xattr through fallback"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid
	# the whole differential suite, daemon under the same filter
	printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NONEW" "$BIN" >"$T/wrapped"
	chmod +x "$T/wrapped"
	FUSE_OVERLAYFS="$T/wrapped" "$top/tests/diff/run.sh" >"$T/diff.log" 2>&1 ||
		{ fail "diff suite under seccomp: $(grep -v '^PASS' "$T/diff.log" | head -5)"; r=1; }
	return $r
}

# Copy-up keeps holes (also a trailing one) and copies dense files whole,
# the upper's own data blocks count what was copied.
t_copy_up_keeps_holes() {
	setup holes
	local r=0 f
	python3 - "$T/l2" <<'PY'
import os, sys
d = sys.argv[1]
with open(os.path.join(d, 'sparse'), 'wb') as f:    # data in the middle, holes around it
    f.truncate(64 << 20)
    f.seek(1 << 20); f.write(b'x' * 4096)
with open(os.path.join(d, 'tailhole'), 'wb') as f:  # data, then a hole to the end
    f.write(b'head' * 1024)
    f.truncate(16 << 20)
with open(os.path.join(d, 'dense'), 'wb') as f:
    f.write(os.urandom(3 << 20))
PY
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
	for f in sparse tailhole dense; do
		chmod 0600 "$T/m/$f" || { fail "chmod $f"; r=1; }
		[ -f "$T/u/$f" ] || { fail "$f not copied up"; r=1; continue; }
		cmp -s "$T/l2/$f" "$T/u/$f" || { fail "$f: upper content differs"; r=1; }
		[ "$(stat -c %s "$T/u/$f")" = "$(stat -c %s "$T/l2/$f")" ] || { fail "$f: size differs"; r=1; }
	done
	[ "$(stat -c %b "$T/u/sparse")" -le 64 ] || { fail "sparse: holes filled ($(stat -c %b "$T/u/sparse") blocks)"; r=1; }
	[ "$(stat -c %b "$T/u/tailhole")" -le 64 ] || { fail "tailhole: holes filled"; r=1; }
	[ "$(stat -c %b "$T/u/dense")" -ge 6144 ] || { fail "dense: data missing"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

# Containers run their programs from the mount: an open for exec carries the
# kernel's __FMODE_EXEC, which openat2 must never see.
t_exec_from_lower_and_upper() {
	setup exec
	cp /bin/true "$T/l2/prog"
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
	local r=0
	"$T/m/prog" || { fail "exec of a lower file failed"; r=1; }
	cp /bin/true "$T/m/prog2" && "$T/m/prog2" || { fail "exec of an upper file failed"; r=1; }
	touch "$T/m/prog" && "$T/m/prog" || { fail "exec of a copied-up file failed"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

t_timeout_zero_sees_lower_changes() {
	setup timeout0
	"$BIN" -o "lowerdir=$T/l1:$T/l2,timeout=0" "$T/m" || fail "mount failed"
	ls "$T/m" >/dev/null
	cat "$T/m/low" >/dev/null
	echo later >"$T/l2/added"
	echo changed >"$T/l2/low"
	ls "$T/m" | grep -qx added || fail "timeout=0: listing cached"
	[ "$(cat "$T/m/low")" = changed ] || fail "timeout=0: stale data"
	unmount_and_wait "$T/m"
}

t_forget_races_lookups() {
	setup forget
	local i j
	for i in $(seq 1 30); do
		mkdir -p "$T/l1/d$i" "$T/l2/d$i/sub"
		for j in $(seq 1 20); do
			echo "$i-$j" >"$T/l2/d$i/sub/f$j"
			ln "$T/l2/d$i/sub/f$j" "$T/l2/d$i/h$j"
		done
	done
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local pid end=$((SECONDS + 8)) w
	pid=$(daemon_pid "$T/m")
	# walkers look names up while the kernel drops its dentries: FORGETs race LOOKUPs
	for w in 1 2 3; do
		(while [ $SECONDS -lt $end ]; do find "$T/m" -type f -print0 | xargs -0 cat >/dev/null; done) &
	done
	while [ $SECONDS -lt $end ]; do echo 2 >/proc/sys/vm/drop_caches; sleep 0.05; done
	wait
	kill -0 "$pid" || fail "daemon died"
	[ "$(find "$T/m" -type f | wc -l)" = $((3 + 30 * 40)) ] || fail "names lost"
	[ "$(cat "$T/m/d17/h9")" = 17-9 ] || fail "wrong content after the races"
	unmount_and_wait "$T/m"
}

t_layers_on_two_filesystems() {
	setup twofs
	mkdir -p "$T/tmpl"
	mount -t tmpfs tmpfs "$T/tmpl" || fail "tmpfs mount failed"
	echo t >"$T/tmpl/on-tmpfs"
	mkdir -p "$T/tmpl/d"
	echo t2 >"$T/tmpl/d/x"
	"$BIN" -o "lowerdir=$T/tmpl:$T/l2" "$T/m" || fail "mount failed"
	python3 - "$T/m" "$T/tmpl" "$T/l2" <<'PY' || fail "inode numbers"
import os, sys
m, tmp, low = sys.argv[1:]
ino = {}
for root, dirs, files in os.walk(m):
    for e in os.scandir(root):
        st = os.lstat(e.path)
        assert e.inode() == st.st_ino, ("d_ino != st_ino", e.path)
        assert st.st_ino not in ino, ("st_ino shared", e.path, ino.get(st.st_ino))
        ino[st.st_ino] = e.path
# one layer keeps its numbers, the other gets its filesystem's index in the high bits
a = os.lstat(os.path.join(m, "on-tmpfs")).st_ino, os.lstat(os.path.join(tmp, "on-tmpfs")).st_ino
b = os.lstat(os.path.join(m, "low")).st_ino, os.lstat(os.path.join(low, "low")).st_ino
assert (a[0] == a[1]) != (b[0] == b[1]), (a, b)
assert a[0] & 0xffffffff == a[1] and b[0] & 0xffffffff == b[1], (a, b)
PY
	unmount_and_wait "$T/m"
	umount "$T/tmpl"
}

t_syslog_after_daemonizing() {
	setup syslog
	command -v unshare >/dev/null || die "unshare is missing"
	# A private mount namespace with a /dev of its own, so /dev/log is our listener.
	cat >"$T/listen.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
open(sys.argv[1] + "/ready", "w").close()
with open(sys.argv[1] + "/syslog", "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
PY
	cat >"$T/inner.sh" <<'SH'
set -e
T=$1 BIN=$2
mount -t tmpfs tmpfs /dev
mknod -m 666 /dev/fuse c 10 229
mknod -m 666 /dev/null c 1 3
python3 "$T/listen.py" "$T" &
listener=$!
for _ in $(seq 50); do [ -e "$T/ready" ] && break; sleep 0.1; done
"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m"
cat "$T/m/top" >/dev/null
for p in $(pgrep -f "lowerdir=$T/l1:$T/l2"); do kill -USR1 "$p"; done
for _ in $(seq 50); do grep -q "nodes=" "$T/syslog" 2>/dev/null && break; sleep 0.1; done
fusermount3 -u "$T/m"
kill "$listener"
SH
	unshare -m --propagation private bash "$T/inner.sh" "$T" "$BIN" || fail "namespace script failed"
	grep -q "fuse-overlayfs.*nodes=[0-9]" "$T/syslog" || fail "no counters in syslog: $(cat "$T/syslog" 2>/dev/null)"
}

t_statfs() {
	setup statfs
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local want got
	want=$(stat -f -c '%b %S %l' "$T/l1")
	got=$(stat -f -c '%b %S %l' "$T/m")
	[ "$want" = "$got" ] || fail "statfs '$got', top layer's '$want'"
	unmount_and_wait "$T/m"
}

t_readdir_offsets_stable() {
	setup offsets
	local i
	for i in $(seq 1 3000); do : >"$T/l1/a$i"; done
	for i in $(seq 1 2 3000); do : >"$T/l2/b$i"; done
	mknod "$T/l1/b1" c 0 0
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	# telldir in one opendir, seekdir in another: the same entry follows; names sorted
	python3 - "$T/m" <<'PY' || fail "offsets not stable"
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]
def listing(d):
    out = []
    while True:
        pos = libc.telldir(d)
        e = libc.readdir(d)
        if not e:
            return out
        out.append((pos, e.contents.d_name))
d = libc.opendir(sys.argv[1].encode())
first = listing(d)
libc.closedir(d)
names = [n for _, n in first if n not in (b".", b"..")]
assert names == sorted(names), "not sorted"
assert b"b1" not in names and len(names) == 3000 + 1500 - 1 + 3, len(names)  # + top, d, low of setup
for k in (2, 777, 2500, len(first) - 1):
    d = libc.opendir(sys.argv[1].encode())
    libc.seekdir(d, first[k][0])
    e = libc.readdir(d)
    assert e and e.contents.d_name == first[k][1], (k, first[k], e and e.contents.d_name)
    libc.closedir(d)
PY
	unmount_and_wait "$T/m"
}

t_readdir_after_removals() {
	# The kernel keeps what a pass from offset 0 reads as the directory's
	# contents (FOPEN_CACHE_DIR): such a pass must show every removal made
	# before it, even through a directory opened earlier; and a pass that
	# goes on in entries another pass cached must not mix the two.
	setup rdremove
	local i
	for i in $(seq 1 1500); do : >"$T/l1/big$i"; done
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || fail "mount failed"
	python3 - "$T/m" <<'PY' || fail "a listing shows what was removed before it began"
import os, random, sys, threading
m = sys.argv[1]
# opened before the removal, read after it: the next listing must not see it
fd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
os.unlink(os.path.join(m, "top"))
os.listdir(fd)
os.close(fd)
assert "top" not in os.listdir(m), "top listed after its removal"
names = [n for n in os.listdir(m) if n.startswith("big")]
random.seed(1)
random.shuffle(names)
removed, lock, errors = set(), threading.Lock(), []
def remover(part):
    for n in part:
        os.unlink(os.path.join(m, n))
        with lock:
            removed.add(n)
def lister():
    for _ in range(40):
        with lock:
            gone = set(removed)
        seen = os.listdir(m)
        if len(seen) != len(set(seen)):
            errors.append("a name listed twice")
        if gone & set(seen):
            errors.append("listed after removal: %s" % sorted(gone & set(seen))[:3])
        with lock:
            gone = set(removed)
        missing = {"low", "d"} - set(seen)
        if missing:
            errors.append("never removed, not listed: %s" % sorted(missing))
half = len(names) // 2
threads = [threading.Thread(target=remover, args=(names[:half],)),
           threading.Thread(target=remover, args=(names[half:],)),
           threading.Thread(target=lister), threading.Thread(target=lister)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, "%d bad listings, first: %s" % (len(errors), errors[:3])
assert sorted(os.listdir(m)) == ["d", "low"], sorted(os.listdir(m))
PY
	unmount_and_wait "$T/m"
}

t_dir_fd_limit() {
	setup fdlimit
	local i j
	for i in $(seq 1 60); do
		mkdir -p "$T/l1/t$i/x" "$T/l2/t$i/y"
		for j in 1 2 3; do echo "$i$j" >"$T/l2/t$i/y/f$j"; done
	done
	# with 40 fds the daemon keeps only a few directory fds open and must evict
	(ulimit -n 40 && "$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m") || fail "mount failed"
	local n
	n=$(find "$T/m" | wc -l)
	[ "$n" = $((6 + 60 * 6)) ] || fail "found $n names, want $((6 + 60 * 6))" # setup adds 5
	[ "$(cat "$T/m/t37/y/f2")" = 372 ] || fail "content after eviction"
	[ "$(ls "/proc/$(daemon_pid "$T/m")/fd" | wc -l)" -le 40 ] || fail "daemon exceeds its fd limit"
	unmount_and_wait "$T/m"
}

t_daemon_link_mode() {
	# configure's default links the daemon as a static PIE (no shared library
	# mapped: less RSS); --disable-static-daemon links it against libc.so
	local mode
	mode=$(sed -n 's/^DAEMON_LDFLAGS = *//p' "$top/Makefile")
	setup linkmode
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	mounted_by_us "$T/m" || return 1
	local pid libs
	pid=$(daemon_pid "$T/m")
	libs=$(awk '$6 ~ /\.so/ {print $6}' "/proc/$pid/maps" | sort -u | tr '\n' ' ')
	if [ "$mode" = -static-pie ]; then
		[ -z "$libs" ] || fail "static PIE build maps shared libraries: $libs"
		awk '$6 ~ /fuse-overlayfs$/ && $2 ~ /x/' "/proc/$pid/maps" | grep -q . || fail "no executable mapping of the binary"
	else
		case $libs in *libc.so*) ;; *) fail "dynamic build (DAEMON_LDFLAGS '$mode') maps no libc.so: $libs" ;; esac
	fi
	unmount_and_wait "$T/m"
}

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
