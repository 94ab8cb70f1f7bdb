#!/bin/bash
# The oci plugin against the kernel overlay, differentially (issue 22).
# oci_layers.py generates an image of three layers (see there: whiteouts,
# opaque directories, hard links across directories, user.*, trusted.* and
# security.* xattrs, POSIX ACLs, devices, a fifo, a 255-byte name, long paths
# and link targets in the PAX and the GNU dialects, a 20,000-entry directory,
# owners, modes, set-id bits, mtimes), writes it as one OCI layout with four
# images of the same layers, and unpacks the layers as containerd's overlay
# unpacker does (whiteouts char 0/0, opaque trusted.overlay.opaque=y), the
# kernel overlay's lower layers.  oci_diff.py compares the views of
# tests/diff (ovlview.py).  Usage: oci_diff.sh [TEST...].
#   VARIANT_readonly  -o lowerdir=//oci/VARIANT/LAYOUT: the merged view is the
#                     kernel overlay's
#   VARIANT_writable  with an upper layer: the view; the same changes through
#                     both (copy-ups of files of each layer: append, writes in
#                     the middle, chmod, chown, xattrs and ACLs set and
#                     removed, renames of a file and of directories across
#                     directories, removals of a file and of trees, mkdir in
#                     opaque directories, removals in the 20,000-entry
#                     directory, links to lower hard links): each change's
#                     result, the view, the upper layer (files, whiteouts,
#                     opaque markers), and the view after a remount
#     VARIANT is tar, gzip, zstd (every layer so) or mixed (gzip, tar, zstd)
#   umoci_skopeo      an image made by umoci (trees inserted, an opaque
#                     insert, a whiteout, the generated GNU layer added raw),
#                     copied by skopeo into another layout: //oci/t2/LAYOUT
#                     read-only against the kernel overlay of its layers
# A statically linked daemon hands these mounts to its dynamic build (as in
# oci.sh and plugins.sh).
#   generated_image   the kernel's view shows what the image means (ACLs,
#                     devices, hard links, long names, opaque directories...)
#                     and every change works there, lest the rest pass empty
# Environment: FUSE_OVERLAYFS (the daemon, default the tree's),
# OVL_TEST_TMPDIR (needs trusted.* xattrs and mknod).
TEST_NAME=oci_diff
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_oci_plugin zstd umoci skopeo
require_files "$here/oci_diff.py" "$here/oci_layers.py" "$top/tests/diff/ovlview.py" "$top/tests/diff/ovlmounts.py"
make_work
PIDFILE=$WORK/pids

start=$SECONDS
python3 "$here/oci_diff.py" "$WORK" "$BIN" "$PLUGIN" "$WORK/results" "$@" 2>"$WORK/log"
rc=$?
n=0
while IFS=$'\t' read -r -a f; do
	n=$((n + 1))
	if [ ${#f[@]} = 1 ]; then pass "${f[0]}"; else fail "${f[@]}"; fi
done <"$WORK/results"
if [ "$rc" != 0 ] || [ "$n" = 0 ]; then
	fail harness "oci_diff.py exited with $rc" "$(tail -5 "$WORK/log")"
	cat "$WORK/log" >&2
fi
echo "timings: $(sed -n 's/^oci_diff: //p' "$WORK/log" | paste -sd';'); all $((SECONDS - start)) s" >&2
finish
