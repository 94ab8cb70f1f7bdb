#!/bin/bash
# Copy-ups survive a power cut: the upper layer on a journalled ext4, lower
# files copied up through the mount (chmod), then the ext4 is shut down as a
# power cut would leave it (EXT4_IOC_SHUTDOWN with NOLOGFLUSH: what the
# journal committed stays, nothing else; the crash simulation of xfstests)
# and mounted again.  Usage: powercut.sh (about 3 s).  Prints `PASS powercut
# NAME` or `FAIL powercut NAME: reason`, then `N passed, M failed`; exits 1 if
# any failed, 2 if a prerequisite is missing.
#
# Env: FUSE_OVERLAYFS (binary, default the tree's fuse-overlayfs),
# OVL_TEST_TMPDIR (default /var/tmp).
#
# After each chmod the test appends to a file of the ext4 directly and fsyncs
# it: each such fsync commits the journal, so the rename of every copy-up done
# so far reaches the disk, as any other program's fsync would make it.
#   how_chosen     the daemon's debug line names how copy-ups are made
#                  crash-safe: writeback before the rename on ext4 data=ordered,
#                  fsync on a journal-less ext4 and on data=writeback, nothing
#                  with fsync=0
#   unsynced_lost  the scenario is real: with fsync=0 some copied-up file is
#                  empty or zeroed after the cut (else the checks below would
#                  prove nothing)
#   cut_ordered    the default: after the cut every copied-up file in upper has
#                  its lower content exactly and the mode set; at least 9 in 10
#                  renames reached the disk
#   cut_fsync      the same on ext4 data=writeback (no ordering), where the
#                  daemon fsyncs each copy
#   cut_remount    ours mounted again on the same upper and work: every file
#                  shows its lower content, work is empty,
#                  tests/check-upper.py passes
TEST_NAME=powercut
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

require_fuse
require_files "$CHECK"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing (e2fsprogs)"
[ -e /dev/loop-control ] || die "no loop devices (modprobe loop)"
make_work

T=$WORK
N=300
mkdir -p "$T"/{l,e,m}
python3 - "$T/l" "$N" <<'EOF' || die "building the lower layer failed"
import os, random, sys
l, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(l, "f%03d" % i), "wb") as f:
        f.write(random.Random(i).randbytes(20000 + 97 * i))
EOF

# new_ext4 IMAGE MNT MOUNT-OPTIONS [MKFS-OPTION...]: a fresh ext4 on a loop
# device at MNT
new_ext4() {
	local img=$1 mnt=$2 opts=$3
	shift 3
	truncate -s 128M "$img" && mkfs.ext4 -q -F "$@" "$img" && mount -o "loop$opts" "$img" "$mnt" &&
		mkdir "$mnt/u" "$mnt/w"
}

# the daemon's debug line about copy-up sync, for an upper on $1 and options $2
sync_line() {
	: >"$T/debug.err"
	start_fuse "$BIN" "$T/l" "$1/u" "$1/w" "$T/m" "$T/debug.err" "debug${2:+,$2}" ||
		{ echo "mount failed: $(tail -2 "$T/debug.err")"; return; }
	stop_fuse "$T/m" "$FPID" || echo "$STOP_ERR"
	grep -o 'copy-up data made crash-safe by: .*' "$T/debug.err" || echo "no debug line about copy-up sync"
}

# cut IMAGE [OPTIONS [EXT4-MOUNT-OPTIONS]]: copy up every lower file through
# ours (chmod 0640), committing the journal after each; power cut; the ext4
# mounted again at $T/e.  Prints "chmods=N" on success.
cut() {
	local img=$1 opts=${2:-} mopts=${3:-}
	new_ext4 "$img" "$T/e" "$mopts" || { echo "cannot make the ext4"; return 1; }
	start_fuse "$BIN" "$T/l" "$T/e/u" "$T/e/w" "$T/m" "$T/daemon.err" "$opts" ||
		{ echo "mount failed: $(tail -2 "$T/daemon.err")"; return 1; }
	python3 - "$T" "$N" <<'EOF'
import fcntl, os, struct, sys
T, n = sys.argv[1], int(sys.argv[2])
EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH = 0x8004587D, 2
done = 0
for i in range(n):
    os.chmod("%s/m/f%03d" % (T, i), 0o640)
    done += 1
    tick = os.open(T + "/e/tick", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(tick, b"x")
    os.fsync(tick)
    os.close(tick)
fd = os.open(T + "/e", os.O_RDONLY)
fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
os.close(fd)
print("chmods=%d" % done)
EOF
	local rc=$?
	fusermount3 -u "$T/m" 2>/dev/null || umount -l "$T/m"
	wait "$FPID" 2>/dev/null
	umount "$T/e" || { echo "cannot unmount the shut-down ext4"; return 1; }
	mount -o "loop$mopts" "$img" "$T/e" || { echo "cannot mount the ext4 again"; return 1; }
	return $rc
}

# the copied-up files in $T/e/u against the lower ones: "present broken
# modewrong" counts, then one line per broken file (at most 5)
judge() {
	python3 - "$T" "$N" <<'EOF'
import os, stat, sys
T, n = sys.argv[1], int(sys.argv[2])
present = 0
broken = []
modewrong = 0
for i in range(n):
    name = "f%03d" % i
    up = "%s/e/u/%s" % (T, name)
    if not os.path.lexists(up):
        continue
    present += 1
    got = open(up, "rb").read()
    want = open("%s/l/%s" % (T, name), "rb").read()
    if got != want:
        kind = "empty" if not got else "zeroed" if got.count(0) == len(got) else "different"
        broken.append("%s: %s (%d of %d bytes)" % (name, kind, len(got), len(want)))
    if stat.S_IMODE(os.lstat(up).st_mode) != 0o640:
        modewrong += 1
print(present, len(broken), modewrong)
for b in broken[:5]:
    print(b)
EOF
}

# verdict NAME: judge's counts as the check NAME: no broken file, at least 9
# in 10 renames on disk, every copy with its new mode
verdict() {
	local lines present broken modewrong
	mapfile -t lines < <(judge)
	read -r present broken modewrong <<<"${lines[0]}"
	if [ "$broken" != 0 ]; then
		fail "$1" "$broken of $present copied-up files broken after the cut" "${lines[@]:1}"
	elif [ "$present" -lt $((N * 9 / 10)) ]; then
		fail "$1" "only $present of $N copy-ups reached the disk ($out)"
	elif [ "$modewrong" != 0 ]; then
		fail "$1" "$modewrong copied-up files lack the mode set"
	else
		pass "$1"
	fi
}

# how_chosen
p=()
line=$(new_ext4 "$T/ordered.img" "$T/e" "" && sync_line "$T/e")
[[ $line == *"writeback before the rename (ext4 data=ordered"* ]] || p+=("ext4 data=ordered: $line")
line=$(sync_line "$T/e" fsync=0)
[[ $line == *"nothing (fsync=0"* ]] || p+=("fsync=0: $line")
umount "$T/e"
line=$(new_ext4 "$T/nojournal.img" "$T/e" "" -O ^has_journal && sync_line "$T/e")
[[ $line == *"by: fsync" ]] || p+=("ext4 without a journal: $line")
umount "$T/e"
line=$(new_ext4 "$T/writeback.img" "$T/e" ,data=writeback && sync_line "$T/e")
[[ $line == *"by: fsync" ]] || p+=("ext4 data=writeback: $line")
umount "$T/e"
if [ ${#p[@]} = 0 ]; then pass how_chosen; else fail how_chosen "${p[0]}" "${p[@]:1}"; fi

# unsynced_lost
out=$(cut "$T/unsynced.img" fsync=0) || die "power cut with fsync=0 failed: $out"
read -r present broken _ < <(judge)
if [ "$broken" -gt 0 ]; then
	pass unsynced_lost
else
	fail unsynced_lost "with fsync=0, $present copied-up files present and none broken: the cut did not reach the hazard"
fi
umount "$T/e"

# cut_ordered
out=$(cut "$T/ordered.img") || die "power cut failed: $out"
verdict cut_ordered

# cut_remount
p=()
if start_fuse "$BIN" "$T/l" "$T/e/u" "$T/e/w" "$T/m" "$T/daemon.err"; then
	bad=$(cd "$T/l" && for f in f*; do cmp -s "$f" "$T/m/$f" || echo "$f"; done | head -5)
	[ -z "$bad" ] || p+=("merged view differs from lower: $bad")
	left=$(ls -A "$T/e/w/work" 2>&1)
	[ -z "$left" ] || p+=("work not empty after mounting: $left")
	stop_fuse "$T/m" "$FPID" || p+=("$STOP_ERR")
	out=$(python3 "$CHECK" "$T/e/u" "$T/e/w" 2>&1) || p+=("check-upper: $out")
else
	p+=("mount after the cut failed: $(tail -2 "$T/daemon.err")")
fi
umount "$T/e"
if [ ${#p[@]} = 0 ]; then pass cut_remount; else fail cut_remount "${p[0]}" "${p[@]:1}"; fi

# cut_fsync: the same on data=writeback, where copy-ups are fsynced
out=$(cut "$T/writeback.img" "" ,data=writeback) || die "power cut on data=writeback failed: $out"
verdict cut_fsync
umount "$T/e"

finish
