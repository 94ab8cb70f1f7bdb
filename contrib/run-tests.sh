#!/bin/bash
# Builds, installs (mount(8) finds helpers only in system paths) and runs every
# test: Check unit tests, integration tests on real mounts, differential tests
# against the kernel overlay, crash, ENOSPC and round-trip tests of the
# writable overlay.  Ends with "N passed, M failed".
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "run-tests: needs root (mounts, mknod, the kernel overlay)" >&2; exit 2; }
./contrib/build.sh || exit 1
make install >/dev/null || { echo "run-tests: make install failed" >&2; exit 1; }

passed=0
failed=0
add_counts() { # LOG: adds the "N passed, M failed" line of a suite
	local line
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1)
	if [ -z "$line" ]; then
		echo "run-tests: $1 has no result line" >&2
		failed=$((failed + 1))
		return
	fi
	passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
	failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "== unit tests (Check)"
./tests/unit/check_overlay 2>&1 | tee "$logs/unit"
# Check prints "100%: Checks: N, Failures: F, Errors: E"
read -r n f e < <(sed -nE 's/.*Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/p' "$logs/unit")
if [ -z "${n:-}" ]; then
	failed=$((failed + 1))
else
	passed=$((passed + n - f - e))
	failed=$((failed + f + e))
fi

echo "== integration tests"
./tests/integration/run.sh 2>&1 | tee "$logs/integration"
add_counts "$logs/integration"

echo "== differential tests (kernel overlay vs ours)"
./tests/diff/run.sh 2>&1 | tee "$logs/diff"
add_counts "$logs/diff"

echo "== crash consistency (kill -9 during write storms, 10 seeds)"
./tests/integration/crash.sh $(seq 1 10) 2>&1 | tee "$logs/crash"
add_counts "$logs/crash"

echo "== full upper filesystem (ENOSPC)"
./tests/integration/enospc.sh 2>&1 | tee "$logs/enospc"
add_counts "$logs/enospc"

echo "== uppers exchanged with 1.10 and the kernel overlay"
./tests/integration/roundtrip.sh 2>&1 | tee "$logs/roundtrip"
add_counts "$logs/roundtrip"

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
