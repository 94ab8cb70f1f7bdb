#!/bin/bash
# Builds, installs (mount(8) finds helpers only in system paths) and runs every
# test: Check unit tests, the layering check, integration tests on real mounts,
# differential tests against the kernel overlay, crash, power cut, ENOSPC,
# round-trip and image-layer (tarball) tests of the writable overlay, and the
# unit, integration and differential suites again under ASan and UBSan.  Ends
# with "N passed, M failed".
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "run-tests: needs root (mounts, mknod, the kernel overlay)" >&2; exit 2; }
./contrib/build.sh || exit 1
make install >/dev/null || { echo "run-tests: make install failed" >&2; exit 1; }

passed=0
failed=0
# shellcheck source=tests/lib/counts.sh
. tests/lib/counts.sh
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

for unit in check_overlay check_nodes check_loader check_snapshotter check_oci; do
	echo "== unit tests (Check): $unit"
	./tests/unit/$unit 2>&1 | tee "$logs/$unit"
	# Check prints "100%: Checks: N, Failures: F, Errors: E"
	n=
	read -r n f e < <(sed -nE 's/.*Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/p' "$logs/$unit")
	if [ -z "${n:-}" ]; then
		failed=$((failed + 1))
	else
		passed=$((passed + n - f - e))
		failed=$((failed + f + e))
	fi
done

# Each suite ends with "N passed, M failed".
suites=(
	"layering (upper and work changed through layers/upper.c, layers read through their ops):./tests/layering.sh"
	"integration tests:./tests/integration/run.sh"
	"differential tests (kernel overlay vs ours):./tests/diff/run.sh"
	"differential tests, ours over FUSE io_uring:env OVLDIFF_URING=1 ./tests/diff/run.sh"
	"unit, integration and differential tests under AddressSanitizer and UBSan (a sanitized build out of the tree):./tests/sanitize.sh"
	"crash consistency (kill -9 during write storms, 10 seeds):./tests/integration/crash.sh $(seq -s' ' 1 10)"
	"full upper filesystem (ENOSPC):./tests/integration/enospc.sh"
	"copy-ups through a power cut (ext4 shut down without its journal flushed):./tests/integration/powercut.sh"
	"calls on fds opened before a copy-up (fchmod, fchown, futimens, fsetxattr, ETXTBSY):./tests/integration/open_fds.sh"
	"FUSE requests left out (counted by the kernel's tracepoints; the set-id rule kept):./tests/integration/requests.sh"
	"a long change in one directory holds back no other (per-directory locks):./tests/integration/locks.sh"
	"plugins (a plugin built out of the tree against the installed header; //NAME/DATA/PATH lowers, refusals):./tests/integration/plugins.sh"
	"the oci plugin (image layouts and layer blobs mounted vs the kernel overlay of the layers unpacked; copy-up, refusals):./tests/integration/oci.sh"
	"the oci plugin differentially (generated images of whiteouts, opaque dirs, hard links, xattrs, ACLs, devices, long names, 20,000 entries as tar, gzip, zstd and mixed layers, and an image made by umoci and copied by skopeo, vs the kernel overlay of the layers unpacked; read-only, writable, upper layer, remount):./tests/integration/oci_diff.sh"
	"owners side by side with 1.10 (uid/gid mappings, squash, ids in ACLs and capabilities):./tests/integration/identity.sh"
	"fuzz targets (libFuzzer, ASan and UBSan; the parsers of untrusted input):./tests/fuzz/run.sh"
	"uppers exchanged with 1.10 and the kernel overlay:./tests/integration/roundtrip.sh"
	"an image layer tarball applied as containerd does (kernel overlay vs ours):./tests/integration/tarball.sh"
	"rootless writes (user namespace, kernel overlay with userxattr vs ours):./tests/integration/rootless.sh"
	"snapshotter gRPC tests:./tests/snapshotter/run.sh"
	"containerd snapshotter conformance suite (Go testsuite through the proxy client; helper and self mount modes, GOMAXPROCS 1 and 2, twice):./contrib/snapshotter/tests/conformance.sh 2"
	"containerd snapshotter conformance suite against a rootless shim (as a user with a subuid range in its own user and mount namespaces; both mount modes, GOMAXPROCS 1 and 2):env MODES=rootless-helper,rootless-self ./contrib/snapshotter/tests/conformance.sh 1"
	"containerd end to end (ctr import and run on our snapshotter):./tests/snapshotter/e2e.sh"
	"rootless containerd end to end (RootlessKit, the shim started as its systemd --user unit would, a SIGKILL of the shim with a container running):./tests/snapshotter/rootless_e2e.sh"
	"rootless podman and buildah end to end, ours and 1.10 as mount_program:./tests/podman/e2e.sh"
)
for i in "${!suites[@]}"; do
	echo "== ${suites[$i]%%:*}"
	# shellcheck disable=SC2086 # the command line is split on purpose
	${suites[$i]#*:} 2>&1 | tee "$logs/suite$i"
	add_counts "$logs/suite$i"
done

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
