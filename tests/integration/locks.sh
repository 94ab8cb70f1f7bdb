#!/bin/bash
# A long change in one directory holds back no other (per-directory locks,
# overlay/locks.c).  Usage: locks.sh.
#   other_dir_not_held   while `rm -rf` removes a lower directory of 50,000
#                        files (its last step, the rmdir, empties an upper
#                        directory of 50,000 whiteouts in one request), a
#                        second process keeps looking up and creating names
#                        in another directory: none of its calls waits more
#                        than a quarter of that rmdir (with one lock for the
#                        mount, one waited all of it)
#   dir_rename_not_held  the same while a new directory is renamed, within
#                        its parent, over such an emptied directory (with
#                        the rename lock taken, one waited all of it)
#   mixed_changes_no_deadlock  four processes create, link, remove and
#                        rename files and directories within and between
#                        five directories at once (and link, remove and
#                        rename names of three upper hard links): all end,
#                        and the mount still lists
#   mixed_changes_consistent  after them, every name listed stats and reads
#                        through the names the kernel kept (the nodes' places
#                        followed every move), each file's link count is the
#                        number of its names, and each hard link's names read
#                        its own content
TEST_NAME=locks
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_fuse
make_work
trap cleanup EXIT

d=$WORK
mkdir -p "$d"/{l/tree/big,l/tree/big2,l/other,u,w,m}
/usr/bin/python3 -c '
import os, sys
for d in sys.argv[1:]:
    for i in range(50000):
        open(os.path.join(d, "f%05d" % i), "w").close()' "$d/l/tree/big" "$d/l/tree/big2"
start_fuse "$BIN" "$d/l" "$d/u" "$d/w" "$d/m" "$WORK/err" || die "mount failed: $(cat "$WORK/err")"

# long_change_not_held NAME TARGET CHANGE...: empties the lower directory
# TARGET (50,000 whiteouts in its upper part), then runs CHANGE, whose one
# long request empties TARGET's upper part; meanwhile looks names up and
# creates them in other (a lower directory: copied up by the first create)
# through a directory fd, so that the kernel sends every call.
long_change_not_held() {
	local name=$1 target=$2
	shift 2
	local out took calls longest
	out=$(/usr/bin/python3 - "$d/m" "$target" "$@" <<'PY'
import os, subprocess, sys, time
m, target, change = sys.argv[1], sys.argv[2], sys.argv[3:]
subprocess.run(['find', target, '-mindepth', '1', '-delete'], check=True)
other = os.open(m + '/other', os.O_RDONLY | os.O_DIRECTORY)
t0 = time.monotonic()
rm = subprocess.Popen(change)
calls, longest, i = 0, 0.0, 0
while rm.poll() is None:
    s = time.monotonic()
    try:
        os.stat('absent%d' % i, dir_fd=other)
    except FileNotFoundError:
        pass
    os.close(os.open('new%s%d' % (os.path.basename(target), i), os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=other))
    longest = max(longest, time.monotonic() - s)
    calls, i = calls + 1, i + 1
took = time.monotonic() - t0
if rm.returncode != 0:
    sys.exit('%s failed' % change[0])
print('%.3f %d %.3f' % (took, calls, longest))
PY
	) || { fail "$name" "the change or the probe failed"; return; }
	read -r took calls longest <<<"$out"
	if [ -e "$target" ] && [ -n "$(ls -A "$target")" ]; then
		fail "$name" "$target is not empty after the change"
	elif awk -v t="$took" 'BEGIN { exit !(t < 0.2) }'; then
		fail "$name" "the change took ${took}s: too short to show anything"
	elif [ "$calls" -ge 10 ] && awk -v t="$took" -v l="$longest" 'BEGIN { exit !(l < t / 4) }'; then
		pass "$name"
		echo "    change ${took}s; meanwhile $calls lookups and creates elsewhere, the longest ${longest}s"
	else
		fail "$name" "during a ${took}s change: $calls lookups and creates elsewhere, the longest ${longest}s"
	fi
}
# the last step of `rm -rf`, an rmdir
long_change_not_held other_dir_not_held "$d/m/tree/big" rmdir "$d/m/tree/big"
# a directory renamed over it, within its parent (no rename lock: that is
# for moves of directories between parents)
mkdir "$d/m/tree/new"
long_change_not_held dir_rename_not_held "$d/m/tree/big2" \
	/usr/bin/python3 -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])' "$d/m/tree/new" "$d/m/tree/big2"
[ ! -e "$d/m/tree/big" ] && [ ! -e "$d/m/tree/new" ] && [ -d "$d/m/tree/big2" ] ||
	fail dir_rename_not_held "after rmdir big and rename new to big2: $(ls "$d/m/tree")"
fusermount3 -u "$d/m" || fail unmount "fusermount3 -u failed"

# Four processes change and read names across five lower directories at
# once: creates, links, removals, renames of files and directories within
# and between directories, listings and stats.  Every lock order is taken
# against every other; a deadlock shows as a worker that never ends.
e=$WORK/mixed
mkdir -p "$e"/{l,u,w,m}
for i in 0 1 2 3 4; do
	mkdir -p "$e/l/d$i/sub"
	for j in $(seq 20); do echo "$j" >"$e/l/d$i/f$j"; done
done
start_fuse "$BIN" "$e/l" "$e/u" "$e/w" "$e/m" "$WORK/err" || die "mount failed: $(cat "$WORK/err")"
daemon=$FPID
# three upper objects of three names each, in three directories
for k in 0 1 2; do
	echo "obj$k" >"$e/m/d0/h$k" && ln "$e/m/d0/h$k" "$e/m/d1/h$k" && ln "$e/m/d0/h$k" "$e/m/d2/h$k" ||
		die "could not make the hard links"
done
/usr/bin/python3 - "$e/m" <<'PY' >"$WORK/mixed.out" 2>&1 &
import os, random, sys
m = sys.argv[1]
def worker(seed):
    r = random.Random(seed)
    for _ in range(3000):
        a, b = 'd%d' % r.randrange(5), 'd%d' % r.randrange(5)
        x, y = '%s/%s/f%d' % (m, a, r.randrange(1, 25)), '%s/%s/f%d' % (m, b, r.randrange(1, 25))
        dx, dy = '%s/%s/s%d' % (m, a, r.randrange(4)), '%s/%s/s%d' % (m, b, r.randrange(4))
        hx, hy = '%s/%s/h%d' % (m, a, r.randrange(3)), '%s/%s/h%d' % (m, b, r.randrange(3))
        op = r.randrange(13)
        try:
            if op == 0: open(x, 'a').close()
            elif op == 1: os.unlink(x)
            elif op == 2: os.rename(x, y)
            elif op == 3: os.link(x, y)
            elif op == 4: os.mkdir(dx)
            elif op == 5: os.rmdir(dx)
            elif op == 6: os.rename(dx, dy if r.randrange(2) else dy + '/in')
            elif op == 7: os.listdir('%s/%s' % (m, a))
            elif op == 8: os.stat(x)
            elif op == 9: os.link(hx, hy)
            elif op == 10: os.unlink(hx)
            elif op == 11: os.rename(hx, hy)
            else: open(hx).read()
        except OSError:
            pass
pids = []
for s in range(4):
    pid = os.fork()
    if pid == 0:
        worker(s)
        os._exit(0)
    pids.append(pid)
bad = [p for p in pids if os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) != 0]
print('workers failed: %d' % len(bad) if bad else 'done')
PY
mixed=$!
PIDS+=("$mixed")
for _ in $(seq 600); do kill -0 $mixed 2>/dev/null || break; sleep 0.1; done
if kill -0 $mixed 2>/dev/null; then
	fail mixed_changes_no_deadlock "4 workers of 3,000 calls each did not end in 60 s; the daemon's threads:" \
		"$(grep -h 'State' /proc/$daemon/task/*/status 2>/dev/null | sort | uniq -c)"
	# the workers wait on the mount: the daemon goes first, then they can die
	kill -KILL "$daemon"
	pkill -KILL -P "$mixed"
elif [ "$(cat "$WORK/mixed.out")" = done ] && ls -R "$e/m" >/dev/null; then
	pass mixed_changes_no_deadlock
	if out=$(/usr/bin/python3 - "$e/m" <<'PY' 2>&1
import collections, os, sys
names = collections.defaultdict(list)
bad = []
for top, dirs, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(top, f)
        try:
            st = os.lstat(p)
            with open(p, 'rb') as fh:
                data = fh.read()
            names[st.st_ino].append((p, st.st_nlink, data))
        except OSError as e:
            bad.append('%s: %s' % (p, e))
owner = {}
for ino, ns in names.items():
    if any(n != len(ns) for _, n, _ in ns):
        bad.append('%s: link count %d, names %d' % (ns[0][0], ns[0][1], len(ns)))
    if any(d != ns[0][2] for _, _, d in ns):
        bad.append('%s: names of one object read %s' % (ns[0][0], sorted(set(d for _, _, d in ns))))
    if ns[0][2].startswith(b'obj') and owner.setdefault(ns[0][2], ino) != ino:
        bad.append('%s: %s read through two objects' % (ns[0][0], ns[0][2]))
print('\n'.join(bad[:5]) if bad else 'ok %d files' % len(names))
sys.exit(1 if bad else 0)
PY
	); then
		pass mixed_changes_consistent
		echo "    $out"
	else
		fail mixed_changes_consistent "$out"
	fi
else
	fail mixed_changes_no_deadlock "$(cat "$WORK/mixed.out")"
fi
# (after a deadlock, cleanup unmounts what is left of the mount)
kill -0 "$daemon" 2>/dev/null && { fusermount3 -u "$e/m" || fail unmount "fusermount3 -u failed"; }
finish
