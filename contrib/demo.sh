#!/bin/bash
# Builds fuse-overlayfs, generates two image-like layers (one whiting out and
# replacing files of the other), mounts them, shows the merged view, unmounts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/contrib/build.sh"
demo=$(mktemp -d "${TMPDIR:-/tmp}/ovl-demo.XXXXXX")
mnt="$demo/merged"
cleanup() {
	mountpoint -q "$mnt" && fusermount3 -u "$mnt"
	rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo"/{base,app,merged}
mkdir -p "$demo"/base/etc "$demo"/base/usr/bin "$demo"/base/var/cache
echo "base-os 1.0" >"$demo/base/etc/os-release"
echo "stale" >"$demo/base/var/cache/old.db"
printf '#!/bin/sh\necho hi\n' >"$demo/base/usr/bin/hello"
chmod 755 "$demo/base/usr/bin/hello"
mkdir -p "$demo"/app/etc "$demo"/app/var/cache "$demo"/app/srv
echo "app layer wins" >"$demo/app/etc/os-release"
mknod "$demo/app/var/cache/old.db" c 0 0         # kernel-style whiteout
touch "$demo/app/.wh.nothing" "$demo/app/srv/index.html"  # AUFS-style whiteout too
ln -s ../usr/bin/hello "$demo/app/srv/run"

echo "== layers: app (top) over base"
"$top/fuse-overlayfs" -o "lowerdir=$demo/app:$demo/base" "$mnt"
echo "== mounted: $(grep " $mnt " /proc/mounts)"
echo "== merged view"
(cd "$mnt" && find . -mindepth 1 -print0 | sort -z | xargs -0 ls -ld --time-style=+)
echo "== etc/os-release: $(cat "$mnt/etc/os-release")"
fusermount3 -u "$mnt"
echo "== unmounted"

mkdir -p "$demo"/upper "$demo"/work
echo "== the same layers under a writable upper: change, delete, create"
"$top/fuse-overlayfs" -o "lowerdir=$demo/app:$demo/base,upperdir=$demo/upper,workdir=$demo/work" "$mnt"
echo "edited" >>"$mnt/etc/os-release"     # copy-up
rm "$mnt/usr/bin/hello"                   # a whiteout, no data copied
mkdir "$mnt/srv/new" && echo new >"$mnt/srv/new/file"
(cd "$mnt" && find . -mindepth 1 -print0 | sort -z | xargs -0 ls -ld --time-style=+)
fusermount3 -u "$mnt"
echo "== the upper layer holds only the changes"
(cd "$demo/upper" && find . -mindepth 1 -print0 | sort -z | xargs -0 ls -ld --time-style=+)
echo "== unmounted"
