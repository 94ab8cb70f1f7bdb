#!/bin/bash
# The oci plugin (plugins/oci) mounted, against the kernel overlay of the same
# layers unpacked as containerd unpacks them (whiteouts as char 0/0 devices,
# opaque directories by xattr).  oci_image.py makes an image of three layers
# (tar+gzip, tar, tar+zstd; files, a hard link, a symlink, a fifo, xattrs,
# owners, set-id bits, a whiteout, an opaque directory, a replaced file) as
# an OCI layout and as blobs.  Usage: oci.sh.
#   layout_vs_kernel  -o lowerdir=//oci/v1/LAYOUT,upperdir,workdir: the
#                     merged view is the kernel overlay's
#   copy_up           the same changes through both (append to a zstd file,
#                     a write into the middle of a gzip file, chmod, rm, mkdir
#                     in an opaque directory): the same view, and again after
#                     a remount (from the index cache files it left)
#   blob_vs_kernel    each blob alone, //oci//BLOB, over the unpacked layers
#                     below it (the first over an empty one)
#   hostile_entry     a blob with a '../' entry mounts without it, one line
#   refuse_*          a layer blob with a changed byte, a truncated gzip
#                     blob, a ref the layout lacks: exit 1, one line naming
#                     the blob or layout, nothing mounted
# A statically linked daemon hands these mounts to its dynamic build (as in
# plugins.sh).
# Environment: FUSE_OVERLAYFS (the daemon, default the tree's), OVL_TEST_TMPDIR.
TEST_NAME=oci
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_oci_plugin zstd gzip
make_work

IMG=$WORK/img
python3 "$here/oci_image.py" make "$IMG" >"$WORK/make-image.log" 2>&1 ||
	die "oci_image.py make failed: $(tail -3 "$WORK/make-image.log")"
view() { python3 "$here/oci_image.py" view "$1"; }
mkdir -p "$WORK"/{m,k,u,w,ku,kw,empty}
K=$WORK/k M=$WORK/m
LOWERS=$IMG/unpacked/3:$IMG/unpacked/2:$IMG/unpacked/1

# same VIEW-A VIEW-B: the views are the same, else the differing lines
same() {
	diff -u "$1" "$2" >"$WORK/diff" && return 0
	grep '^[-+][^-+]' "$WORK/diff"
	return 1
}

# ---- layout_vs_kernel ----
mount -t overlay overlay -o "lowerdir=$LOWERS,upperdir=$WORK/ku,workdir=$WORK/kw" "$K" || die "kernel overlay mount failed"
if ! start_fuse "$BIN" "//oci/v1$IMG/layout" "$WORK/u" "$WORK/w" "$M" "$WORK/err" "plugins=$PLUGIN"; then
	die "mount of //oci/v1$IMG/layout failed: $(cat "$WORK/err")"
fi
view "$K" >"$WORK/view.k"
view "$M" >"$WORK/view.m"
if [ "$(wc -l <"$WORK/view.k")" -lt 12 ]; then
	fail layout_vs_kernel "the kernel view is too short" "$(cat "$WORK/view.k")"
elif d=$(same "$WORK/view.k" "$WORK/view.m"); then
	pass layout_vs_kernel
else
	fail layout_vs_kernel "views differ (- kernel, + ours)" "$d"
fi

# ---- copy_up ----
changes() { # ROOT
	echo more >>"$1/home/user/notes" &&
		printf 'XYZ' | dd of="$1/big" bs=1 seek=2000000 conv=notrunc status=none &&
		chmod 0640 "$1/etc/motd" && rm "$1/etc/passwd" && mkdir "$1/opq/sub" && echo new >"$1/opq/sub/f"
}
changes "$K" || die "changes on the kernel overlay failed"
if ! changes "$M" 2>"$WORK/changes.err"; then
	fail copy_up "a change failed" "$(cat "$WORK/changes.err")"
else
	view "$K" >"$WORK/view.k2"
	view "$M" >"$WORK/view.m2"
	stop_fuse "$M" "$FPID" || fail copy_up "$STOP_ERR"
	cached=$(find "$IMG/layout/blobs/sha256" -name '.*.ovl-index' | wc -l)
	if ! start_fuse "$BIN" "//oci/v1$IMG/layout" "$WORK/u" "$WORK/w" "$M" "$WORK/err" "plugins=$PLUGIN"; then
		fail copy_up "remount failed: $(tail -1 "$WORK/err")"
	elif ! d=$(same "$WORK/view.k2" "$WORK/view.m2"); then
		fail copy_up "views differ after the changes (- kernel, + ours)" "$d"
	elif ! d=$(same "$WORK/view.k2" <(view "$M")); then
		fail copy_up "views differ after a remount (- kernel, + ours)" "$d"
	elif [ "$cached" != 3 ]; then
		fail copy_up "$cached index cache files beside the layer blobs, want 3"
	else
		pass copy_up
	fi
fi
is_mounted "$M" && stop_fuse "$M" "$FPID"
umount "$K"

# ---- blob_vs_kernel ----
errs=()
below=("$WORK/empty" "$IMG/unpacked/1" "$IMG/unpacked/2:$IMG/unpacked/1")
for n in 1 2 3; do
	rm -rf "$WORK/u" "$WORK/w" && mkdir "$WORK/u" "$WORK/w"
	mount -t overlay overlay -o "lowerdir=$IMG/unpacked/$n:${below[n - 1]}" "$K" || die "kernel overlay mount failed"
	if ! start_fuse "$BIN" "//oci/$IMG/blob.$n:${below[n - 1]}" "$WORK/u" "$WORK/w" "$M" "$WORK/err" "plugins=$PLUGIN"; then
		errs+=("blob.$n: no mount: $(tail -1 "$WORK/err")")
	else
		d=$(same <(view "$K") <(view "$M")) || errs+=("blob.$n: views differ (- kernel, + ours)" "$d")
		stop_fuse "$M" "$FPID" || errs+=("$STOP_ERR")
	fi
	umount "$K"
done
if [ ${#errs[@]} = 0 ]; then pass blob_vs_kernel; else fail blob_vs_kernel "${errs[@]}"; fi

# ---- hostile_entry ----
python3 - "$WORK/hostile.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT) as t:
    for name in ("../escape", "ok"):
        ti = tarfile.TarInfo(name)
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"hi\n"))
EOF
rm -rf "$WORK/u" "$WORK/w" "$WORK/err" && mkdir "$WORK/u" "$WORK/w"
if ! start_fuse "$BIN" "//oci/$WORK/hostile.tar" "$WORK/u" "$WORK/w" "$M" "$WORK/err" "plugins=$PLUGIN"; then
	fail hostile_entry "no mount: $(tail -1 "$WORK/err")"
else
	got=$(ls -A "$M" | tr '\n' ' ')
	lines=$(grep -c "entry '../escape': left out" "$WORK/err")
	if [ "$got" != "ok " ]; then
		fail hostile_entry "the mount lists '$got'"
	elif [ -e "$WORK/escape" ] || [ "$lines" != 1 ]; then
		fail hostile_entry "$lines lines for the entry" "$(cat "$WORK/err")"
	else
		pass hostile_entry
	fi
	stop_fuse "$M" "$FPID" || fail hostile_entry "$STOP_ERR"
fi

# ---- refusals: exit 1, one line naming it, nothing mounted ----
refuse() { # NAME WANT-IN-THE-LINE LOWER
	expect_refusal "$1" "$2" "$BIN" "plugins=$PLUGIN,lowerdir=$3,upperdir=$WORK/u,workdir=$WORK/w"
}
blob=$(find "$IMG/layout/blobs/sha256" -type f -size +100k -not -name '.*' | head -1)
# a bit of the gzip header's mtime flipped: still gzip, another digest
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(4); b = f.read(1); f.seek(4); f.write(bytes([b[0] ^ 1]))' "$blob"
refuse refuse_digest "$blob: digest mismatch" "//oci/v1$IMG/layout"
head -c 2000 "$IMG/blob.1" >"$WORK/cut.gz"
refuse refuse_truncated "$WORK/cut.gz: " "//oci/$WORK/cut.gz"
refuse refuse_no_ref "$IMG/layout: no image named 'v9'" "//oci/v9$IMG/layout"
finish
