#!/bin/bash
# A full upper filesystem: every failing call answers ENOSPC and no earlier
# version is lost.  Usage: enospc.sh (about 3 s).  Prints `PASS enospc NAME` or
# `FAIL enospc NAME: reason` for each check, then `N passed, M failed`; exits 1
# if any failed, 2 if a prerequisite is missing.
#
# Env: FUSE_OVERLAYFS (binary, default the tree's fuse-overlayfs),
# OVL_TEMP_REGEX (names of our temporaries, default '^#ovl\.'),
# OVL_TEST_TMPDIR (default /var/tmp), ENOSPC_VERBOSE=1 (say which call failed how).
#
# Layout: upper and work on an 8 MiB tmpfs (tmpfs has trusted.* xattrs for root
# and user.* since Linux 6.6, so opaque dirs and whiteouts are written as on
# disk; char 0/0 whiteouts need mknod, which tmpfs has); the lower layer on
# OVL_TEST_TMPDIR: big6 (6 MiB), big3 (3 MiB), small files.  One mount, steps
# in order (each a check):
#   copyup_fits     append to big3: copy-up (3 MiB) fits, content lower+added
#   copyup_enospc   append to big6: its copy-up (6 MiB) cannot fit in the ~5 MiB
#                   left; the failing call answers ENOSPC (not EIO, nothing
#                   else), big6 still shows its lower content, the upper layer
#                   has no big6, WORK/work is empty again
#   fill_enospc     write a new file until ENOSPC (fsync after each 64 KiB, then
#                   4 KiB steps to the last page): the failing call answers
#                   ENOSPC; what was fsynced before it reads back intact
#   full_copyup     the filesystem full: append to a small lower file; if it
#                   fails it answers ENOSPC, either way the file shows its lower
#                   content (+ the append only if the call succeeded)
#   intact          every earlier version: lower files through the mount, big3
#                   copied up, the files written before, the filler's acked part
#   recovery        unlink the filler and big3 (space returns once the daemon
#                   closes them: retried for up to 3 s), then the append to big6
#                   succeeds: lower content + added
#   upper_sound     after unmounting: WORK/work empty, tests/check-upper.py
#                   passes, the lower layer is unchanged on disk
TEST_NAME=enospc
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

require_fuse
require_files "$CHECK"
make_work

result() { # NAME OK|reason
	if [ "$2" = OK ]; then pass "$1"; else fail "$1" "$2"; fi
}

T=$WORK
mkdir -p "$T"/{l,small,m}
mount -t tmpfs -o size=8m,mode=0755 tmpfs "$T/small" || die "cannot mount a tmpfs"
mkdir -p "$T/small"/{u,w}
python3 - "$T/l" <<'EOF' || die "building the lower layer failed"
import os, random, sys
l = sys.argv[1]
def put(name, n):
    with open(os.path.join(l, name), "wb") as f:
        f.write(random.Random(name).randbytes(n))
put("big6", 6 << 20)
put("big3", 3 << 20)
for i in range(5):
    put("s%d" % i, 10 + 1000 * i)
os.mkdir(os.path.join(l, "d"))
put("d/in", 4096)
EOF
(cd "$T/l" && sha256sum big6 big3 s0 s1 s2 s3 s4 d/in) >"$T/lower.sha"

start_fuse "$BIN" "$T/l" "$T/small/u" "$T/small/w" "$T/m" "$T/daemon.err" ||
	die "mount failed: $(tail -3 "$T/daemon.err")"
DPID=$FPID

# the steps; one `NAME OK` or `NAME reason` line each
timeout -s KILL 60 python3 - "$T" "$TEMP_REGEX" >"$T/steps.out" 2>&1 <<'EOF'
import errno, os, random, re, sys, time
T, temp_re = sys.argv[1], re.compile(sys.argv[2])
L, M, U, W = T + "/l", T + "/m", T + "/small/u", T + "/small/w"
lower = {n: open(os.path.join(L, n), "rb").read() for n in ("big6", "big3", "s0", "s1", "d/in")}
ADD = b"appended through the mount\n"

def info(line):
    print("# " + line, flush=True)

def say(name, problems):
    print("%s %s" % (name, "OK" if not problems else "; ".join(problems)), flush=True)

def read(p):
    with open(os.path.join(M, p), "rb") as f:
        return f.read()

def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def append(p, data):
    """open+write+fsync+close; None, or (the call that failed, its OSError)."""
    step = "open"
    fd = None
    try:
        fd = os.open(os.path.join(M, p), os.O_WRONLY | os.O_APPEND)
        step = "write"
        os.write(fd, data)
        step = "fsync"
        os.fsync(fd)
        step = "close"
        fd, f = None, fd
        os.close(f)
    except OSError as e:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        return step, e
    return None

def work_left():
    try:
        return sorted(os.listdir(W + "/work"))
    except OSError as e:
        return ["<%s>" % e.strerror]

# copyup_fits
p = []
r = append("big3", ADD)
if r:
    p.append("append to big3 failed at %s: %s" % (r[0], ename(r[1])))
elif read("big3") != lower["big3"] + ADD:
    p.append("big3 content wrong after the append")
say("copyup_fits", p)
big3_now = read("big3")

# files written before the disk fills
early = {"early1": random.Random("e1").randbytes(100 << 10), "early2": b"x" * 4096}
for n, data in early.items():
    with open(os.path.join(M, n), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

# copyup_enospc
p = []
free = os.statvfs(U).f_bavail * os.statvfs(U).f_frsize
if free >= 6 << 20:
    p.append("setup: %d bytes free on the upper, big6 would fit" % free)
r = append("big6", ADD)
if r:
    info("copyup_enospc: %s answered %s with %d bytes free" % (r[0], ename(r[1]), free))
if r is None:
    p.append("append to big6 succeeded with %d bytes free" % free)
elif r[1].errno != errno.ENOSPC:
    p.append("%s answered %s, not ENOSPC" % (r[0], ename(r[1])))
try:
    got = read("big6")
    if got != lower["big6"]:
        p.append("big6 through the mount is not its lower content (%d bytes)" % len(got))
    if os.stat(os.path.join(M, "big6")).st_size != len(lower["big6"]):
        p.append("big6 st_size %d" % os.stat(os.path.join(M, "big6")).st_size)
except OSError as e:
    p.append("reading big6: %s" % e)
if os.path.lexists(os.path.join(U, "big6")):
    p.append("the upper layer has a big6 (%d bytes)" % os.lstat(os.path.join(U, "big6")).st_size)
left = work_left()
if left:
    p.append("WORK/work holds %s" % " ".join(left[:5]))
say("copyup_enospc", p)

# fill_enospc
p = []
data = random.Random("filler").randbytes(16 << 20)
acked = 0
fail = None
fd = os.open(os.path.join(M, "filler"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
for chunk in (64 << 10, 4 << 10):
    while acked < len(data):
        step = "write"
        try:
            n = os.pwrite(fd, data[acked:acked + chunk], acked)  # a failed write may move the offset
            step = "fsync"
            os.fsync(fd)
        except OSError as e:
            fail = (step, e)
            break
        acked += n
    if acked >= len(data):
        break
try:
    os.close(fd)
except OSError as e:
    if e.errno != errno.ENOSPC:
        p.append("close after the fill answered %s" % ename(e))
if fail:
    info("fill_enospc: %s answered %s after %d bytes" % (fail[0], ename(fail[1]), acked))
if fail is None:
    p.append("no ENOSPC after %d bytes" % acked)
elif fail[1].errno != errno.ENOSPC:
    p.append("%s answered %s, not ENOSPC" % (fail[0], ename(fail[1])))
got = read("filler")
if got[:acked] != data[:acked]:
    p.append("the %d bytes written and fsynced before ENOSPC do not read back (%d bytes read)"
             % (acked, len(got)))
# past the acked part the failed calls may have left some of their bytes, or
# holes; never anything else (stale data of another file would be a leak)
extra = got[acked:]
if any(x != y and x != 0 for x, y in zip(extra, data[acked:acked + len(extra)])) or len(got) > len(data):
    p.append("after the %d acked bytes the file holds %d bytes that are neither what was written nor NUL"
             % (acked, len(extra)))
say("fill_enospc", p)

# full_copyup
p = []
r = append("s1", ADD)
info("full_copyup: " + ("the append succeeded" if r is None else "%s answered %s" % (r[0], ename(r[1]))))
got = read("s1")
if r is None:
    if got != lower["s1"] + ADD:
        p.append("append to s1 succeeded but s1 is not lower+added (%d bytes)" % len(got))
else:
    if r[1].errno != errno.ENOSPC:
        p.append("append to s1: %s answered %s, not ENOSPC" % (r[0], ename(r[1])))
    if got != lower["s1"]:
        p.append("s1 after the failed append is not its lower content (%d bytes)" % len(got))
left = work_left()
if left:
    p.append("WORK/work holds %s" % " ".join(left[:5]))
say("full_copyup", p)

# intact
p = []
for n in ("big6", "s0", "d/in"):
    if read(n) != lower[n]:
        p.append("%s differs from its lower content" % n)
if read("big3") != big3_now:
    p.append("big3 changed")
for n, d in early.items():
    if read(n) != d:
        p.append("%s differs from what was written" % n)
if read("filler")[:acked] != data[:acked]:
    p.append("filler's acked part differs")
for root, dirs, files in os.walk(M):
    for n in dirs + files:
        if temp_re.search(n):
            p.append("temporary name in the merged view: %s" % os.path.join(root, n))
say("intact", p)

# recovery
p = []
try:
    os.unlink(os.path.join(M, "filler"))
    os.unlink(os.path.join(M, "big3"))
except OSError as e:
    p.append("unlink: %s" % e)
end = time.monotonic() + 3
while True:
    r = append("big6", ADD)
    if r is None or r[1].errno != errno.ENOSPC or time.monotonic() > end:
        break
    time.sleep(0.1)
if r is not None:
    p.append("append to big6 after freeing space: %s answered %s (%d bytes free)"
             % (r[0], ename(r[1]), os.statvfs(U).f_bavail * os.statvfs(U).f_frsize))
elif read("big6") != lower["big6"] + ADD:
    p.append("big6 is not lower+added after the append")
if os.path.lexists(os.path.join(M, "big3")):
    p.append("big3 still visible after unlink")
left = work_left()
if left:
    p.append("WORK/work holds %s" % " ".join(left[:5]))
say("recovery", p)
EOF
rc=$?
[ $rc = 0 ] || result steps "the step script died (exit $rc): $(tail -3 "$T/steps.out" | tr '\n' ' ')"
while read -r name rest; do
	case $name in
	"#") [ "${ENOSPC_VERBOSE:-0}" = 1 ] && echo "    # $rest" ;;
	copyup_fits | copyup_enospc | fill_enospc | full_copyup | intact | recovery) result "$name" "$rest" ;;
	*) result steps "unexpected output: $name $rest" ;;
	esac
done <"$T/steps.out"

# upper_sound
problems=
stop_fuse "$T/m" "$DPID" || problems="$STOP_ERR; "
left=$(ls -A "$T/small/w/work" 2>&1 | head -5 | tr '\n' ' ')
[ -z "$left" ] || problems+="WORK/work holds: $left; "
out=$(python3 "$CHECK" --temp-regex "$TEMP_REGEX" "$T/small/u" "$T/small/w" 2>&1) ||
	problems+="$(echo "$out" | head -5 | tr '\n' ' '); "
(cd "$T/l" && sha256sum --quiet -c "$T/lower.sha" >/dev/null 2>&1) || problems+="the lower layer changed on disk; "
result upper_sound "${problems:-OK}"
umount "$T/small" || echo "warning: cannot unmount the tmpfs" >&2

finish
