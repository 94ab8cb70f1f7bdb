#!/bin/bash
# Builds containerd's Go proxy snapshotter, containerd-fuse-overlayfs-grpc,
# the reference for the conformance suite and the benchmark, offline: from a
# local git mirror of github.com/containerd/fuse-overlayfs-snapshotter and
# Debian 12's Go packages (GOPATH mode against /usr/share/gocode), nothing
# fetched from the network, nothing of theirs copied into this tree.
#
# Usage: build-go-shim.sh MIRROR OUTPUT [TAG]
#   MIRROR  git directory of the mirror (bare is fine), e.g.
#           /work/.mirror/containerd+fuse-overlayfs-snapshotter/repo
#   OUTPUT  path of the binary to write
#   TAG     default v1.0.6: the newest release on containerd 1.6 APIs
#           (v1.0.7 and later need containerd 1.7 and github.com/containerd/log,
#           which Debian 12 does not have)
#
# The binary takes SOCKET ROOT only (no options) and has no SIGTERM handler
# (it dies of the signal), so run the conformance suite on it with:
#   MODES=helper SNAPSHOTTER_SIGTERM_OK=1 SNAPSHOTTER_BIN=OUTPUT ./conformance.sh
set -euo pipefail
die() { echo "build-go-shim: $*" >&2; exit 2; }
case $# in 2 | 3) ;; *) die "usage: $0 MIRROR OUTPUT [TAG]" ;; esac
MIRROR=$1
OUT=$2
TAG=${3:-v1.0.6}
PKG=github.com/containerd/fuse-overlayfs-snapshotter
CMD=cmd/containerd-fuse-overlayfs-grpc

command -v go >/dev/null || die "go is missing (Debian package golang-go)"
[ -d /usr/share/gocode/src/github.com/containerd/containerd/contrib/snapshotservice ] ||
	die "containerd Go sources are missing (golang-github-containerd-containerd-dev)"
git -C "$MIRROR" rev-parse --git-dir >/dev/null 2>&1 || die "$MIRROR is not a git directory"
REV=$(git -C "$MIRROR" rev-parse --verify -q "$TAG^{commit}") || die "no tag $TAG in $MIRROR"

T=$(mktemp -d "${TMPDIR:-/tmp}/go-shim.XXXXXX")
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/gopath/src/$PKG"
git -C "$MIRROR" archive "$REV" | tar -x -C "$T/gopath/src/$PKG"
# Their go.mod pins newer module versions than Debian's; GOPATH mode ignores
# it and builds against the single version of each package Debian ships.
OUT_ABS=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
(cd "$T/gopath/src/$PKG" &&
	env GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
		GOPATH="$T/gopath:/usr/share/gocode" GOCACHE="${GOCACHE_DIR:-$T/cache}" \
		go build -ldflags "-X $PKG/$CMD/version.Version=$TAG -X $PKG/$CMD/version.Revision=$REV" \
		-o "$OUT_ABS" "./$CMD") ||
	die "build failed (a missing package: apt-cache search golang-...-dev, then add it to contrib/install-deps.sh)"
echo "build-go-shim: $OUT_ABS ($PKG $TAG, $REV)"
