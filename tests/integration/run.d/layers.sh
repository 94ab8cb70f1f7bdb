# shellcheck shell=bash
# The lower layers: read-only mounts (EROFS), hostile symlinks, layers on two
# filesystems (inode numbers), statfs of the top layer, timeout=0 seeing
# changes made below the mount.  Sourced by ../run.sh (its helpers and
# variables), never run alone: `run.sh NAME` runs the test t_NAME.

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

t_statfs() {
	setup statfs
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local want got
	want=$(stat -f -c '%b %S %l' "$T/l1")
	got=$(stat -f -c '%b %S %l' "$T/m")
	[ "$want" = "$got" ] || fail "statfs '$got', top layer's '$want'"
	unmount_and_wait "$T/m"
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
