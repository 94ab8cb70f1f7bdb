#!/bin/bash
# The unit, integration and differential suites once under AddressSanitizer
# and UBSan.  Builds a copy of this tree outside it (clang, configure
# --enable-sanitizers, so the daemon is linked dynamically), then runs that
# copy's Check unit tests, tests/integration/run.sh and tests/diff/run.sh,
# whose default binary is the copy's sanitized fuse-overlayfs.  Fails if a
# suite fails or if any sanitizer report appears.  Prints each suite's lines,
# `PASS sanitizers SUITE: no report` or `FAIL sanitizers SUITE: N reports`
# with each report's first lines, then `N passed, M failed`.
# Usage: tests/sanitize.sh [unit|integration|diff...] (default all three)
#
# Reports: the daemon daemonizes with stderr on /dev/null, so every report is
# written to a file (ASAN_OPTIONS log_path; clang's UBSan shares ASan's
# runtime and so its log file, gcc 12's libubsan beside libasan would write
# only to stderr), one report directory a suite, scanned after it.
# Leaks are checked in the unit tests only (LeakSanitizer at the exit of
# each test's process).  In the daemon LeakSanitizer
# reports, at every unmount, what it leaves to the exit on purpose: each
# io_uring thread's struct server (fuse/uring.c: a request still in flight
# may name its buffers; 1011 of 1017 reports over the integration and
# differential suites) and a node unlinked while open, which only the
# kernel's lookup count held (its FORGET never comes once the connection
# is gone).  Suppressing those stacks would hide real leaks of the same
# allocations, so the daemon suites run with detect_leaks=0.
#
# mount(8) runs helpers without PATH (util-linux drops it), so mount.fuse3's
# shell finds /usr/local/bin/fuse-overlayfs (`make install`): the integration
# suite runs in a mount namespace of its own in which a kernel overlay on
# /usr/local/bin puts the sanitized binary there, so every mount form runs
# the sanitized daemon (an overlay, not a bind mount on the file: a
# `make install` elsewhere meanwhile would unlink that file and so undo the
# bind mount in every namespace).  ASAN_OPTIONS and UBSAN_OPTIONS pass
# through mount(8) and mount.fuse3.  Two checks of tests/integration/run.sh
# leave a sanitized daemon out, saying so in their logs: poll_while_busy's
# create loop being polled for (a sanitized daemon's requests come too far
# apart) and io_uring's queue that cannot start its thread (it limits the
# address space with ulimit -v; ASan's shadow memory needs it unlimited).
#
# Env: SANITIZE_DIR (the copy, its build and the reports; default a new
# /var/tmp/ovl-sanitize.XXXXXX, removed unless something failed),
# SANITIZE_CC (default clang).
# shellcheck disable=SC2317 # run_* are called as "run_$s", reap_namespace by a trap
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
BINDIR=/usr/local/bin

die() { echo "FATAL: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "sanitized suites need root (they mount)"
cc=${SANITIZE_CC:-clang}
for c in "$cc" unshare tar; do command -v "$c" >/dev/null || die "$c is missing (contrib/install-deps.sh)"; done
[ -d "$BINDIR" ] || die "$BINDIR is missing"
suites=("$@")
[ ${#suites[@]} = 0 ] && suites=(unit integration diff)
for s in "${suites[@]}"; do
	case $s in unit | integration | diff) ;; *) die "no such suite: $s (unit, integration, diff)" ;; esac
done

S=${SANITIZE_DIR:-$(mktemp -d /var/tmp/ovl-sanitize.XXXXXX)} || die "mktemp failed"
mkdir -p "$S" || die "cannot make $S"
S=$(realpath "$S")
B=$S/src
passed=0
failed=0
pass() { echo "PASS sanitizers $*"; passed=$((passed + 1)); }
fail() { echo "FAIL sanitizers $*"; failed=$((failed + 1)); }
finish() {
	echo "$passed passed, $failed failed"
	if [ "$failed" = 0 ] && [ -z "${SANITIZE_DIR:-}" ]; then rm -rf "$S"; else echo "kept $S" >&2; fi
	[ "$failed" = 0 ]
	exit
}

# ---------------------------------------------------------------- the copy
started=$SECONDS
rm -rf "$B" || die "cannot remove $B"
mkdir -p "$B" || die "cannot make $B"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# tracked and new files as they are in the work tree, no build output
	(cd "$top" && git ls-files -z -c -o --exclude-standard | tar --null -T - --ignore-failed-read -cf -) |
		tar -C "$B" -xf - || die "copying the tree failed"
else
	cp -a "$top/." "$B/" || die "copying the tree failed"
	[ ! -f "$B/Makefile" ] || make -C "$B" distclean >/dev/null 2>&1
fi
if (cd "$B" && ./autogen.sh && ./configure CC="$cc" --enable-sanitizers --enable-werror --prefix=/usr/local &&
	make -j"$(nproc)" && make -j"$(nproc)" check TESTS=) >"$S/build.log" 2>&1; then
	pass "build ($((SECONDS - started)) s)"
else
	fail "build: see $S/build.log"
	tail -15 "$S/build.log" | sed 's/^/    /'
	finish
fi

# ---------------------------------------------------------------- the suites
# shellcheck source=tests/lib/counts.sh
. "$here/lib/counts.sh"

run_unit() {
	local u p=0 f=0
	for u in check_overlay check_nodes check_layers check_snapshotter check_oci; do
		if (cd "$B" && "./tests/unit/$u") >"$S/$u.log" 2>&1; then
			echo "PASS unit $u ($(grep -o 'Checks: [0-9]*' "$S/$u.log"))"
			p=$((p + 1))
		else
			echo "FAIL unit $u"
			grep -E '^[^:]+:[0-9]+:[EF]:|Checks:' "$S/$u.log" | tail -15 | sed 's/^/    /'
			f=$((f + 1))
		fi
	done
	echo "$p passed, $f failed"
}

run_integration() {
	local o=$S/bindir
	mkdir -p "$o/upper" "$o/work" && ln -sfn "$B/fuse-overlayfs" "$o/upper/fuse-overlayfs" || return
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare -m --propagation private sh -c 'readlink /proc/self/ns/mnt >"$2/ns" &&
		mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$1" && exec "$3"' \
		sh "$BINDIR" "$o" "$B/tests/integration/run.sh"
	reap_namespace
}

# A process the integration suite left running in its mount namespace (a
# daemon whose mount it failed to undo) would keep the namespace, and so
# that mount, alive with nobody outside able to unmount it: killed.
reap_namespace() {
	local ns p
	ns=$(cat "$S/bindir/ns" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
		echo "# left running in the suite's mount namespace, killed: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)"
		kill -9 "${p#/proc/}" 2>/dev/null
	done
	rm -f "$S/bindir/ns"
}
trap reap_namespace EXIT
trap 'exit 130' INT TERM

run_diff() { "$B/tests/diff/run.sh"; }

scan_reports() { # SUITE DIR: one test, failed if DIR holds a report
	local files=("$2"/*) r
	if [ ! -e "${files[0]}" ]; then
		pass "$1: no report"
		return
	fi
	fail "$1: ${#files[@]} reports"
	for r in "${files[@]:0:3}"; do # the first lines of the first three
		echo "    $r:"
		grep -m1 -E 'ERROR: |runtime error:' "$r" | sed 's/^/      /'
		grep -m6 -E '^ +#[0-9]+ ' "$r" | sed 's/^/      /'
		grep -m1 '^SUMMARY:' "$r" | sed 's/^/      /'
	done
	[ ${#files[@]} -le 3 ] || echo "    ... $((${#files[@]} - 3)) more in $2"
}

for s in "${suites[@]}"; do
	R=$S/reports/$s
	# daemons run as other users (setpriv, drop_privileges) write there too
	mkdir -p "$R" && chmod 711 "$S" "$S/reports" && chmod 1777 "$R"
	echo "== $s (sanitized)"
	started=$SECONDS
	(
		leaks=0
		[ "$s" = unit ] && leaks=1
		export ASAN_OPTIONS="log_path=$R/asan:detect_leaks=$leaks:halt_on_error=1:detect_stack_use_after_return=1"
		export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
		"run_$s"
	) 2>&1 | tee "$S/$s.log"
	echo "# $s: $((SECONDS - started)) s"
	add_counts "$S/$s.log"
	scan_reports "$s" "$R"
done
finish
