#!/bin/bash
# Upper layers cross between implementations: one written by 1.10 is read by
# ours and by the kernel overlay, one written by ours is read by 1.10 and by the
# kernel.  Usage: roundtrip.sh (about 3 s).  Prints `PASS roundtrip NAME` or
# `FAIL roundtrip NAME: reason` (further differences indented), then
# `N passed, M failed`; exits 1 if any failed, 2 if a prerequisite is missing.
#
# Env: FUSE_OVERLAYFS (ours, default the tree's fuse-overlayfs), REFERENCE_FUSE_OVERLAYFS
# (default /usr/bin/fuse-overlayfs, Debian's 1.10), OVL_TEMP_REGEX (names of our
# temporaries, default '^#ovl\.'), OVL_TEST_TMPDIR (default /var/tmp: needs
# trusted.* xattrs and mknod), ROUNDTRIP_VERBOSE=1 (show 1.10's failed steps).
#
# One lower layer (roundtrip_view.py build); the scripted changes
# (roundtrip_view.py steps): create, append, O_TRUNC rewrite, truncate, delete a
# lower file, rm -rf of lower dirs, rmdir, `rm -rf d; mkdir d; create d/new`,
# renames (lower file, new file into a lower dir, new dir, lower over lower,
# new file over a lower file and then away), symlink, hard links (of a lower
# file, of a new file), chmod, chown, user xattrs set/removed, a fifo, a file
# replacing a dir and a dir replacing a file.  The kernel is mounted with
# redirect_dir=off,index=off,metacopy=off,xino=off (its defaults here, pinned).
# Each mount works on its own copy of the upper (roundtrip_view.py copy keeps
# char 0/0 whiteouts, trusted.* xattrs and hard links) and its own workdir.
# A view: type, mode, owner, size (not of directories), sha256, link target,
# user xattrs, sorted listings, which names share an inode, and lstat of the
# names the script touched.
#
# (a) the changes through 1.10; its upper is then mounted
#   a_ours      by ours: the view equals the one 1.10 shows on a fresh mount
#   a_kernel    by the kernel: the same view, with names starting `.wh.` left
#               out (1.10 writes a `.wh..wh..opq` file in every new directory;
#               the kernel shows it as a file: a known difference)
#   a_ours_kernel  ours and the kernel agree on it (`.wh.` names left out)
#   In a_ours and a_kernel one known 1.10 defect is masked: its lstat finds
#   the old lower children of `rm -rf d; mkdir d` that its readdir hides
#   (COMPAT.md); a_ours_kernel needs no such mask.
# (b) the changes through ours (every step must succeed)
#   b_script    every step succeeded
#   b_remount   ours mounted again shows what it showed before unmounting
#   b_1.10      1.10 on a copy shows the same
#   b_kernel    the kernel on a copy shows the same, nothing masked
#   b_upper     tests/check-upper.py passes on ours' upper and workdir
TEST_NAME=roundtrip
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
REF=${REFERENCE_FUSE_OVERLAYFS:-/usr/bin/fuse-overlayfs}
VIEW=$here/roundtrip_view.py
KOPTS=redirect_dir=off,index=off,metacopy=off,xino=off

require_fuse
[ -x "$REF" ] || die "$REF (fuse-overlayfs 1.10) is missing (apt-get install fuse-overlayfs)"
require_kernel_overlay
require_files "$VIEW" "$CHECK"
make_work

result() { fail_file "$@"; } # NAME FILE-OF-PROBLEMS (empty: pass)

# mount_fuse BIN DIR: DIR/{u,w} over $L on DIR/m, in the foreground mode; FPID
mount_fuse() {
	mkdir -p "$2"/{w,m}
	start_fuse "$1" "$L" "$2/u" "$2/w" "$2/m" "$2/daemon.err" && return 0
	echo "mount of $2 by $1 failed: $(tail -2 "$2/daemon.err" | tr '\n' ' ')"
	return 1
}
umount_fuse() { # DIR
	stop_fuse "$1/m" "$FPID" || { echo "$STOP_ERR"; return 1; }
}
mount_kernel() { # DIR
	mkdir -p "$1"/{w,m}
	mount -t overlay overlay -o "lowerdir=$L,upperdir=$1/u,workdir=$1/w,$KOPTS" "$1/m" ||
		{ echo "kernel overlay mount of $1 failed"; return 1; }
}
view() { # DIR OUT: snapshot of DIR/m
	timeout -s KILL 60 python3 "$VIEW" view "$1/m" "$2" || { echo "view of $1/m failed"; return 1; }
}
copy_upper() { # FROM-DIR TO-DIR
	mkdir -p "$2"
	python3 "$VIEW" copy "$1/u" "$2/u" || { echo "copying $1/u failed"; return 1; }
}
# view_by KIND DIR OUT: mount DIR's upper with KIND (ours|ref|kernel), snapshot, unmount
view_by() {
	local r=0
	case $1 in
	ours) mount_fuse "$BIN" "$2" || return 1 ;;
	ref) mount_fuse "$REF" "$2" || return 1 ;;
	kernel) mount_kernel "$2" || return 1 ;;
	esac
	view "$2" "$3" || r=1
	if [ "$1" = kernel ]; then umount "$2/m" || { echo "umount $2/m failed"; r=1; }; else umount_fuse "$2" || r=1; fi
	return $r
}

L=$WORK/lower
mkdir -p "$L"
python3 "$VIEW" build "$L" || die "building the lower layer failed"

# ------------------------------------------------------------------ (a) 1.10 writes
A=$WORK/a
mkdir -p "$A/u"
: >"$WORK/a_setup"
{
	mount_fuse "$REF" "$A" &&
		{ python3 "$VIEW" script "$A/m" "$A/script.json" >"$A/script.out"; umount_fuse "$A"; } &&
		copy_upper "$A" "$A.ours" && copy_upper "$A" "$A.kernel" &&
		view_by ref "$A" "$A/ref.json"
} >>"$WORK/a_setup" 2>&1
if [ -s "$WORK/a_setup" ]; then
	for t in a_ours a_kernel a_ours_kernel; do result $t "$WORK/a_setup"; done
else
	if [ "${ROUNDTRIP_VERBOSE:-0}" = 1 ] && [ -s "$A/script.out" ]; then
		sed 's/^/    # step failed through 1.10: /' "$A/script.out"
	fi
	{ view_by ours "$A.ours" "$A/ours.json" &&
		python3 "$VIEW" compare "$A/ref.json" "$A/ours.json" --mask-ref-lookup; } >"$WORK/a_ours" 2>&1
	result a_ours "$WORK/a_ours"
	{ view_by kernel "$A.kernel" "$A/kernel.json" &&
		python3 "$VIEW" compare "$A/ref.json" "$A/kernel.json" --mask-wh --mask-ref-lookup; } >"$WORK/a_kernel" 2>&1
	result a_kernel "$WORK/a_kernel"
	if [ -f "$A/ours.json" ] && [ -f "$A/kernel.json" ]; then
		python3 "$VIEW" compare "$A/kernel.json" "$A/ours.json" --mask-wh >"$WORK/a_ours_kernel" 2>&1
	else
		echo "no view of ours or of the kernel (see a_ours, a_kernel)" >"$WORK/a_ours_kernel"
	fi
	result a_ours_kernel "$WORK/a_ours_kernel"
fi

# ------------------------------------------------------------------ (b) ours writes
B=$WORK/b
mkdir -p "$B/u"
: >"$WORK/b_script"
: >"$WORK/b_setup"
if mount_fuse "$BIN" "$B" >>"$WORK/b_setup" 2>&1; then
	python3 "$VIEW" script "$B/m" "$B/script.json" >"$WORK/b_script" 2>&1
	view "$B" "$B/live.json" >>"$WORK/b_setup" 2>&1
	umount_fuse "$B" >>"$WORK/b_setup" 2>&1
fi
[ -s "$WORK/b_setup" ] && cat "$WORK/b_setup" >>"$WORK/b_script"
result b_script "$WORK/b_script"
if [ -s "$WORK/b_setup" ]; then
	for t in b_remount b_1.10 b_kernel b_upper; do result $t "$WORK/b_setup"; done
else
	{ copy_upper "$B" "$B.ref" && copy_upper "$B" "$B.kernel"; } >"$WORK/b_copy" 2>&1
	{ cat "$WORK/b_copy" && [ ! -s "$WORK/b_copy" ] && view_by ours "$B" "$B/remount.json" &&
		python3 "$VIEW" compare "$B/live.json" "$B/remount.json"; } >"$WORK/b_remount" 2>&1
	result b_remount "$WORK/b_remount"
	{ cat "$WORK/b_copy" && [ ! -s "$WORK/b_copy" ] && view_by ref "$B.ref" "$B/ref.json" &&
		python3 "$VIEW" compare "$B/live.json" "$B/ref.json"; } >"$WORK/b_ref" 2>&1
	result b_1.10 "$WORK/b_ref"
	{ cat "$WORK/b_copy" && [ ! -s "$WORK/b_copy" ] && view_by kernel "$B.kernel" "$B/kernel.json" &&
		python3 "$VIEW" compare "$B/live.json" "$B/kernel.json"; } >"$WORK/b_kernel" 2>&1
	result b_kernel "$WORK/b_kernel"
	python3 "$CHECK" --temp-regex "$TEMP_REGEX" "$B/u" "$B/w" >"$WORK/b_upper" 2>&1
	result b_upper "$WORK/b_upper"
fi

finish
