#!/bin/bash
# Read- and write-path bench: kernel overlay vs reference fuse-overlayfs vs ours.
# Usage: bench/run.sh [--size F] [--reps N] [--only NAME[,NAME]] [--fs kernel,ref,ours]
#                     [--dir DIR] [--json FILE] [--timeout S] [--list]   (needs root)
here=$(cd "$(dirname "$0")" && pwd)
export FUSE_OVERLAYFS=${FUSE_OVERLAYFS:-$here/../fuse-overlayfs}
export REF_FUSE_OVERLAYFS=${REF_FUSE_OVERLAYFS:-/usr/bin/fuse-overlayfs}
# bench/oci.sh runs oci.py through here, with its own default work dir
script=${BENCH_SCRIPT:-ovlbench.py}
dir=${BENCH_DEFAULT_DIR:-/var/tmp/ovlbench}
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --dir) j=$((i + 1)); dir=${!j} ;;
    --dir=*) dir=${!i#--dir=} ;;
  esac
done
mntdir=$(realpath -m "$dir")/mnt

# Safety net: unmount anything left under $mntdir (the python side already
# unmounts and reaps its daemons; this covers a crash or kill -9 of it).
cleanup() {
  local m
  awk -v d="$mntdir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
  while read -r m; do
    echo "# cleanup: unmounting $m" >&2
    fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m"
  done
}
cleanup
# python runs in the background so that a signal to this script can be
# forwarded to it (it then unmounts and reaps its own daemons).
"${PYTHON:-python3}" "$here/$script" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' INT TERM
trap cleanup EXIT
while :; do
  wait $pid; rc=$?
  kill -0 $pid 2>/dev/null || break   # wait returns early when a trapped signal arrives
done
exit $rc
