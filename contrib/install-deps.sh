#!/bin/sh
# Installs, from Debian 12 packages, everything the build, the tests and the
# benchmark need.  Idempotent; runs apt-get only when something is missing.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
libfuse3-dev liburing-dev fuse3 libacl1-dev libxxhash-dev check libseccomp-dev
fuse-overlayfs attr acl python3 util-linux e2fsprogs procps psmisc kmod
hyperfine fio time strace clang libclang-rt-14-dev"
# the oci plugin: zlib and libzstd; its tests make image layouts with umoci and skopeo
PKGS="$PKGS zlib1g-dev libzstd-dev zstd umoci skopeo"
# rootless podman and buildah end to end (tests/podman), with the daemon as mount_program
PKGS="$PKGS podman buildah uidmap"
# the containerd snapshotter shim: its libraries, protoc-c, containerd's .proto
# files (and Go test suite), containerd itself (runc comes with it) and a
# static busybox (the image's only binary) for the end-to-end tests, and
# python's gRPC, protobuf (protoc) and HTTP/2 for tests/snapshotter
PKGS="$PKGS protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev libnghttp2-dev busybox-static
libsqlite3-dev libsystemd-dev golang-go golang-github-containerd-containerd-dev containerd
python3-grpcio python3-protobuf protobuf-compiler python3-h2"
# a user's rootless containerd for the shim's rootless end-to-end test
PKGS="$PKGS rootlesskit"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The kernel overlay is the reference of the differential tests.
grep -qw overlay /proc/filesystems || modprobe overlay
[ -c /dev/fuse ] || modprobe fuse
# the power-cut test puts an ext4 on a loop device
[ -e /dev/loop-control ] || modprobe loop
echo "install-deps: ok"
