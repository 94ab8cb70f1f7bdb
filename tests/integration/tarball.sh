#!/bin/bash
# A real workload: an OCI image layer applied through the mount the way
# containerd's applier does, on the kernel overlay and on ours, compared.
# Usage: tarball.sh (about 5 s).  Prints `ok N - NAME` or `not ok N - NAME:
# reason` (further differences indented) for each test, then `N passed,
# M failed`; exits 1 if any failed.  A missing prerequisite (root, the kernel
# overlay, the binary, ...) is a failed test too (exit 2).
#
# Env: FUSE_OVERLAYFS (binary, default the tree's fuse-overlayfs),
# OVL_TEMP_REGEX (names of our temporaries, default '^#ovl\.'),
# OVL_TEST_TMPDIR (default /var/tmp: needs trusted.* and user.* xattrs, POSIX
# ACLs and mknod), TARBALL_KEEP=1 (keep the layers and views of a failed run).
#
# tarball_apply.py build writes two tarballs (python tarfile, PAX format,
# deterministic): lower.tar, a base layer, and layer.tar, the layer on top:
# regular files with contents, modes (0000, set-uid, set-gid) and owners,
# directories (a sticky one, missing parents), char and block devices, a fifo,
# hard links (to a file of the layer, to a file of the lower layer, to a
# symlink), symlinks with owners and (sub-second) mtimes, user.* xattrs and
# POSIX ACLs as PAX SCHILY.xattr.* records (an access ACL; a file created
# under a lower directory with a default ACL), and OCI whiteouts: `.wh.NAME`
# of a lower file, a symlink, a whole tree and a name that never existed;
# `opq/.wh..wh..opq` (the lower children of opq go, one comes back); a file
# replacing a file, a directory and one name of a lower hard-linked pair, a
# directory replacing a file; files replacing lower files that had an ACL or
# a user xattr; security.capability; usrmerge (a directory replaced by a
# symlink, a symlink by a directory); UTF-8 names with blanks; whiteouts of a
# 250-byte and a 255-byte name, a new 255-byte name.  See tarball_apply.py
# for the applier.
#
# One masked difference: with `.wh.` whiteouts ours refuses to whiteout a lower
# name of 252..255 bytes (its `.wh.` whiteout could not exist, COMPAT.md): in
# that mode the applier must get ENAMETOOLONG for it, and the comparisons
# leave out the long names only one side shows (tarball_apply.py mask_long).
#
# Three runs, each on its own extraction of lower.tar (tarball_apply.py apply
# on a plain directory) with an empty upper and workdir: the kernel overlay
# (redirect_dir=off,index=off,metacopy=off,xino=off: its defaults here,
# pinned), ours, and ours with FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1 (`.wh.`
# whiteout files).  In each: mount, apply layer.tar through the mount, take
# the merged view (live), unmount, mount again, take it again, unmount.  A
# view (tests/diff/ovlview.py snapshot): type, mode, owner, nlink, size,
# content hash, symlink target, rdev, mtime (symlinks and directories
# included; a time of this run shows as `recent`), user.* / trusted.* /
# security.* xattrs and POSIX ACLs, sorted listings, which names share an
# inode.  Tests:
#   tarballs built            two builds give identical tarballs
#   kernel: layer applied     every step of the applier succeeded
#   kernel: layer effects     the kernel's view shows what the layer says (so
#                             that the comparisons cannot pass vacuously)
#   kernel: lower layer unchanged, kernel: lower layer access times unchanged
#                             as below (the kernel mounts lower layers noatime)
# then for ours and ours(wh):
#   applied                   every step succeeded, as on the kernel
#   merged view (live)        equals the kernel's
#   merged view (remounted)   equals the kernel's
#   readdir                   readdir's d_ino equals st_ino, d_type the type
#   upper layer               equals the kernel's with whiteout spellings
#                             (char 0/0, `.wh.` files) and opaque spellings
#                             (trusted.overlay.opaque, user.overlay.opaque,
#                             user.fuseoverlayfs.opaque, `.wh..wh..opq`)
#                             normalised
#   check-upper               tests/check-upper.py passes on upper and work
#   lower layer unchanged     the lower directory is as extracted (a view as
#                             for the upper layer)
#   lower layer access times unchanged
#                             reading through the mount changed no access
#                             time in the lower directory (the kernel
#                             overlay mounts its lower layers noatime); ours(wh)
#                             only, which runs without FUSE passthrough
TEST_NAME=tarball
TEST_STYLE=tap
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
APPLY=$here/tarball_apply.py
KOPTS=redirect_dir=off,index=off,metacopy=off,xino=off
unset FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT # the default mode is the default

PY=/usr/bin/python3 # the system's: stdlib only

require_fuse
require_kernel_overlay
require_files "$APPLY" "$CHECK" "$top/tests/diff/ovlview.py" "$top/tests/diff/ovlbuild.py" \
	"$top/tests/diff/ovlscenario.py"
[ -x "$PY" ] || die "$PY is missing"
make_work

py() { timeout -s KILL 60 "$PY" "$APPLY" "$@"; }

# ------------------------------------------------------------------ tarballs
mkdir -p "$WORK/tar" "$WORK/tar2"
if py build "$WORK/tar" >"$WORK/build.out" 2>&1 && py build "$WORK/tar2" >>"$WORK/build.out" 2>&1; then
	for t in lower layer; do
		cmp -s "$WORK/tar/$t.tar" "$WORK/tar2/$t.tar" || echo "$t.tar differs between two builds" >>"$WORK/build.out"
	done
else
	echo "building the tarballs failed" >>"$WORK/build.out"
fi
mkdir -p "$WORK/lower-ref"
[ -f "$WORK/tar/layer.tar" ] &&
	{ py apply "$WORK/tar/lower.tar" "$WORK/lower-ref" "$WORK/lower-ref.json" &&
		py upper "$WORK/lower-ref" "$WORK/lower-ref.pkl" kernel; } >>"$WORK/build.out" 2>&1
fail_file "tarballs built" "$WORK/build.out"
[ -f "$WORK/lower-ref.pkl" ] || die "no tarballs: $(head -3 "$WORK/build.out" | tr '\n' ' ')"

# run KIND: KIND kernel, ovl (ours) or wh (ours, .wh. whiteouts) in $WORK/KIND:
# l (lower), u, w, m; steps.json, live.pkl, remount.pkl, upper.pkl,
# lower.pkl (the lower at the end), atime0.pkl and atime1.pkl (its access
# times before and after); problems in $WORK/KIND/setup (empty: none)
mount_kind() { # KIND DIR
	case $1 in
	kernel)
		mount -t overlay overlay -o "lowerdir=$2/l,upperdir=$2/u,workdir=$2/w,$KOPTS" "$2/m" ||
			{ echo "kernel overlay mount failed"; return 1; }
		;;
	ovl) start_fuse "$BIN" "$2/l" "$2/u" "$2/w" "$2/m" "$2/daemon.err" || {
		echo "mount failed: $(tail -2 "$2/daemon.err" | tr '\n' ' ')"
		return 1
	} ;;
	wh) FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1 start_fuse "$BIN" "$2/l" "$2/u" "$2/w" "$2/m" "$2/daemon.err" || {
		echo "mount failed: $(tail -2 "$2/daemon.err" | tr '\n' ' ')"
		return 1
	} ;;
	esac
}
umount_kind() { # KIND DIR
	if [ "$1" = kernel ]; then
		umount "$2/m" || { echo "umount $2/m failed"; return 1; }
	else
		stop_fuse "$2/m" "$FPID" || { echo "$STOP_ERR"; return 1; }
	fi
}
run() {
	local k=$1 D=$WORK/$1 who
	who=$([ "$k" = kernel ] && echo kernel || echo ours)
	mkdir -p "$D"/{l,u,w,m}
	{
		if ! py apply "$WORK/tar/lower.tar" "$D/l" "$D/lower-steps.json" ||
			! py atimes "$D/l" "$D/atime0.pkl"; then
			echo "extracting lower.tar failed"
			return
		fi
		mount_kind "$k" "$D" || return
		py apply "$WORK/tar/layer.tar" "$D/m" "$D/steps.json" >"$D/steps.out" 2>&1 ||
			echo "the applier crashed: $(tail -3 "$D/steps.out" | tr '\n' ' ')"
		py view "$D/m" "$D/live.pkl" "$who" || echo "the live view failed"
		umount_kind "$k" "$D" || return
		mount_kind "$k" "$D" || return
		py view "$D/m" "$D/remount.pkl" "$who" || echo "the view after remounting failed"
		umount_kind "$k" "$D" || return
		py upper "$D/u" "$D/upper.pkl" "$who" || echo "the upper view failed"
		# access times first: the view reads the lower files
		py atimes "$D/l" "$D/atime1.pkl" || echo "the access times of the lower failed"
		py upper "$D/l" "$D/lower.pkl" kernel || echo "the lower view failed"
	} >"$D/setup" 2>&1
}

# test NAME KIND CMD...: run CMD (python helper arguments) after KIND's run
# and the kernel's had no setup problem; its output is the test's problems
check() {
	local name=$1 k=$2 out=$WORK/check.out
	shift 2
	if [ -s "$WORK/kernel/setup" ]; then
		echo "the kernel run failed: $(head -1 "$WORK/kernel/setup")" >"$out"
	elif [ -s "$WORK/$k/setup" ]; then
		cat "$WORK/$k/setup" >"$out"
	else
		py "$@" >"$out" 2>&1
	fi
	fail_file "$name" "$out"
}

run kernel
K=$WORK/kernel
if [ -s "$K/setup" ]; then
	fail_file "kernel: layer applied" "$K/setup"
else
	py steps "$K/steps.json" >"$WORK/check.out" 2>&1
	fail_file "kernel: layer applied" "$WORK/check.out"
fi
check "kernel: layer effects" kernel expect "$K/remount.pkl"
check "kernel: lower layer unchanged" kernel unchanged "$WORK/lower-ref.pkl" "$K/lower.pkl"
check "kernel: lower layer access times unchanged" kernel unchanged "$K/atime0.pkl" "$K/atime1.pkl"

for k in ovl wh; do
	run "$k"
	D=$WORK/$k
	label=ours
	mask=()
	[ $k = wh ] && label="ours(wh)" && mask=(--whmode)
	check "$label: applied" $k steps "$K/steps.json" "$D/steps.json" "${mask[@]}"
	check "$label: merged view (live)" $k compare "$K/live.pkl" "$D/live.pkl" "${mask[@]}"
	check "$label: merged view (remounted)" $k compare "$K/remount.pkl" "$D/remount.pkl" "${mask[@]}"
	check "$label: readdir d_ino/d_type" $k problems "$D/live.pkl" "$D/remount.pkl"
	check "$label: upper layer" $k compare "$K/upper.pkl" "$D/upper.pkl" "${mask[@]}"
	if [ -s "$D/setup" ]; then
		cp "$D/setup" "$WORK/check.out"
	else
		"$PY" "$CHECK" --temp-regex "$TEMP_REGEX" "$D/u" "$D/w" >"$WORK/check.out" 2>&1
	fi
	fail_file "$label: check-upper" "$WORK/check.out"
	check "$label: lower layer unchanged" $k unchanged "$WORK/lower-ref.pkl" "$D/lower.pkl"
	# FUSE passthrough reads a lower file through a backing file the kernel opens
	# with the caller's flags, not our O_NOATIME: that atime changes as on the lower
	# filesystem itself (man page, BUGS).  Checked where the daemon serves reads.
	[ $k = wh ] && check "$label: lower layer access times unchanged" $k unchanged "$D/atime0.pkl" "$D/atime1.pkl"
done

[ "$failed" != 0 ] && [ "${TARBALL_KEEP:-0}" = 1 ] && KEEP=1
finish
