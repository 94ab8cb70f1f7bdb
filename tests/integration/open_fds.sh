#!/bin/bash
# Calls on file descriptors opened before a copy-up (Go's os.Open(p).Chmod,
# Python's os.fchmod(fd)), with FUSE passthrough (the lower file stays the
# kernel's backing file of the first inode) and without it.  Usage: open_fds.sh.
#   MODE_fd_calls     fchmod, fchown, futimens, fsetxattr on a read-only fd of
#                     a lower file succeed (the kernel overlay and 1.10 do), and
#                     fchmod, fchown on one of an upper file unlinked since;
#                     fstat on that fd and stat by path show the change; the
#                     lower file is untouched, the upper copy holds it
#   MODE_writer_first a writer copies the file up, then the reader's fd takes
#                     an fchmod: stat by path and fstat show it
#   MODE_etxtbsy      a path chmod copies up a running binary; opening it for
#                     writing then answers ETXTBSY, as on the kernel overlay
#   MODE_many_opens   an unprivileged user of the allow_other mount holds 4,000
#                     read-only opens while the daemon may have 3,000 fds (and
#                     no CAP_SYS_RESOURCE to raise it): listings, lookups and a
#                     root reader keep working; with passthrough the daemon
#                     holds no fd per reader and every open succeeds
TEST_NAME=open_fds
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_fuse
make_work

check() { # MODE: the checks on a fresh mount, in a python child; prints problems
	python3 - "$WORK/$1" <<'EOF'
import os, stat, subprocess, sys, time
d = sys.argv[1]
m, low, up = d + "/m", d + "/l", d + "/u"
bad = []
fd = os.open(m + "/f", os.O_RDONLY)
for name, fn in [("fchmod", lambda: os.fchmod(fd, 0o600)), ("fchown", lambda: os.fchown(fd, 5, 6)),
                 ("futimens", lambda: os.utime(fd, ns=(10**9, 2 * 10**9))),
                 ("fsetxattr", lambda: os.setxattr(fd, "user.k", b"v"))]:
    try:
        fn()
    except OSError as e:
        bad.append("fd_calls: %s: %s" % (name, e))
for how, st in (("fstat", os.fstat(fd)), ("stat", os.stat(m + "/f"))):
    got = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    if got != (0o600, 5, 6, 2 * 10**9):
        bad.append("fd_calls: %s shows %o %d:%d %d" % ((how,) + got))
if os.getxattr(m + "/f", "user.k") != b"v" or os.read(fd, 100) != b"data\n":
    bad.append("fd_calls: xattr or data through the old fd wrong")
lst, ust = os.stat(low + "/f"), os.stat(up + "/f")
if stat.S_IMODE(lst.st_mode) != 0o644 or lst.st_uid != 0 or os.listxattr(low + "/f"):
    bad.append("fd_calls: the lower file changed")
if (stat.S_IMODE(ust.st_mode), ust.st_uid, ust.st_gid) != (0o600, 5, 6):
    bad.append("fd_calls: upper copy is %o %d:%d" % (stat.S_IMODE(ust.st_mode), ust.st_uid, ust.st_gid))
os.close(fd)
# an upper file open for reading, then unlinked: calls on its fd still work
with open(m + "/gone", "w") as w:
    w.write("x")
fd = os.open(m + "/gone", os.O_RDONLY)
os.unlink(m + "/gone")
try:
    os.fchmod(fd, 0o600)
    os.fchown(fd, 3, 4)
    st = os.fstat(fd)
    if (stat.S_IMODE(st.st_mode), st.st_uid) != (0o600, 3):
        bad.append("fd_calls: unlinked file's fstat shows %o %d" % (stat.S_IMODE(st.st_mode), st.st_uid))
except OSError as e:
    bad.append("fd_calls: fchmod/fchown of an unlinked file's fd: %s" % e)
os.close(fd)

fd = os.open(m + "/g", os.O_RDONLY)
with open(m + "/g", "a") as w:
    w.write("more")
try:
    os.fchmod(fd, 0o640)
except OSError as e:
    bad.append("writer_first: fchmod: %s" % e)
for how, st in (("fstat", os.fstat(fd)), ("stat", os.stat(m + "/g"))):
    if stat.S_IMODE(st.st_mode) != 0o640:
        bad.append("writer_first: %s shows %o" % (how, stat.S_IMODE(st.st_mode)))
if open(m + "/g").read() != "low\nmore":
    bad.append("writer_first: data %r" % open(m + "/g").read())
os.close(fd)

p = subprocess.Popen([m + "/sleep", "10"])
time.sleep(0.3)
try:
    os.chmod(m + "/sleep", 0o700)
    try:
        open(m + "/sleep", "r+b").close()
        bad.append("etxtbsy: a running binary opened for writing")
    except OSError as e:
        if e.errno != 26:
            bad.append("etxtbsy: %s" % e)
except OSError as e:
    bad.append("etxtbsy: chmod: %s" % e)
p.kill()
p.wait()
print("\n".join(bad))
EOF
}

for mode in passthrough nopassthrough; do
	d=$WORK/$mode
	mkdir -p "$d"/{l,u,w,m}
	echo data >"$d/l/f"
	echo low >"$d/l/g"
	cp "$(command -v sleep)" "$d/l/sleep"
	env=()
	[ $mode = nopassthrough ] && env=(FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1)
	env "${env[@]}" "$BIN" -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" || die "mount failed"
	check "$mode" >"$d/problems" 2>&1
	fusermount3 -u "$d/m" || fail "${mode}_unmount" "fusermount3 -u failed"
	for t in fd_calls writer_first etxtbsy; do
		grep "^$t: \|Traceback\|Error" "$d/problems" >"$d/$t"
		fail_file "${mode}_$t" "$d/$t"
	done
done

many_opens() { # MODE: prints problems
	local d=$WORK/many-$1 pid
	mkdir -p "$d"/{l,u,w,m} "$d/l/dir"
	echo data >"$d/l/f"
	for i in $(seq 50); do echo "$i" >"$d/l/dir/f$i"; done
	env=()
	[ "$1" = nopassthrough ] && env=(FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1)
	env "${env[@]}" prlimit --nofile=3000:3000 setpriv --bounding-set=-sys_resource --inh-caps=-sys_resource \
		"$BIN" -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" || { echo "mount failed"; return; }
	pid=$(pgrep -nf "fuse-overlayfs .*$d/m") || { echo "no daemon"; return; }
	chmod 755 "$WORK" "$d"
	# the user's opener reports how many it holds, then holds them until go exists
	prlimit --nofile=5000:5000 setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c '
import os, sys, time
fds, err = [], None
try:
    for _ in range(4000):
        fds.append(os.open(sys.argv[1], os.O_RDONLY))
except OSError as e:
    err = e.strerror
print(len(fds), err, flush=True)
for _ in range(600):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.1)' "$d/m/f" "$d/go" >"$d/held" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 600); do [ -s "$d/held" ] && break; sleep 0.1; done
	read -r held why <"$d/held"
	held=${held:-0}
	[ "$1" = passthrough ] && [ "$held" != 4000 ] && echo "the user held only $held opens: $why"
	[ "$held" -ge 500 ] || echo "the user held only $held opens: $why"
	local nfd
	nfd=$(ls "/proc/$pid/fd" | wc -l)
	[ "$1" = passthrough ] && [ "$nfd" -gt 100 ] && echo "the daemon holds $nfd fds for read-only passthrough opens"
	[ "$(ls "$d/m/dir" | wc -l)" = 50 ] || echo "listing failed: $(ls "$d/m/dir" 2>&1 | tail -1)"
	for i in 3 17 42; do [ "$(cat "$d/m/dir/f$i" 2>&1)" = "$i" ] || echo "root cannot read dir/f$i: $(cat "$d/m/dir/f$i" 2>&1)"; done
	stat "$d/m/dir/f9" >/dev/null || echo "lookup failed"
	echo new >"$d/m/dir/new" || echo "create failed"
	touch "$d/go"
	wait "${PIDS[-1]}"
	fusermount3 -u "$d/m" || echo "unmount failed"
}
for mode in passthrough nopassthrough; do
	many_opens $mode >"$WORK/many-$mode.problems" 2>&1
	fail_file "${mode}_many_opens" "$WORK/many-$mode.problems"
done
finish
