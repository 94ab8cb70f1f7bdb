#!/bin/bash
# Conformance of the proxy snapshotter against containerd's own snapshotter
# test suite (containerd 1.6 snapshots/testsuite, through the gRPC proxy
# client, one snapshotter process per test: see conformance/conformance_test.go).
#
# Usage: conformance.sh [R]
#   Runs the suite R times (default 2) with GOMAXPROCS=1 (tests one at a time)
#   and GOMAXPROCS=2 (two tests at a time), for each mount mode of $MODES.
#
# Environment:
#   SNAPSHOTTER_BIN   binary under test (default: the one the build leaves at
#                     the top of the tree)
#   MODES             mount modes, blank- or comma-separated (default
#                     "helper self"): "helper" adds no
#                     argument, any other MODE adds --mount-mode=MODE;
#                     "rootless-MODE" runs the suite, and so the shims it
#                     starts, rootless: as a user the script creates (with the
#                     /etc/subuid and /etc/subgid range useradd gives it, both
#                     removed at the end), in a user namespace mapping root to
#                     that user and its range and a mount namespace of its own
#                     (what RootlessKit makes for rootless containerd), with
#                     /dev/fuse there a node of that user's
#   SNAPSHOTTER_ARGS  extra arguments for every mode (before the mode's)
#   SNAPSHOTTER_SIGTERM_OK=1  accept death by SIGTERM instead of exit status 0
#                     (for the Go containerd-fuse-overlayfs-grpc, which has no
#                     SIGTERM handler; see build-go-shim.sh)
#   CONFORMANCE_TIMEOUT  Go -test.timeout of one run (default 20m)
#   CONFORMANCE_RUN   Go -test.run pattern, e.g. 'TestFuseOverlayfs/(Basic|Walk)$'
#                     (default: the whole suite)
#   CONFORMANCE_DIR   work directory (default: a new one under /tmp); kept
#                     when something failed or when KEEP=1
#
# Prints "ok N - MODE/GOMAXPROCS/TEST" or "not ok N - ..." (followed by the
# test's output as "#" lines) per test and run, "# skipped: ..." for tests the
# suite skips (not counted), and ends with "N passed, M failed"; exits non-zero
# on any failure.  Needs root, /dev/fuse, Go and containerd's Go sources from
# Debian (contrib/install-deps.sh), and `make install` done for the
# fuse3.fuse-overlayfs mounts (mount.fuse3 runs fuse-overlayfs from PATH).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
R=${1:-2}
MODES=${MODES:-helper self}
MODES=${MODES//,/ }
BIN=${SNAPSHOTTER_BIN:-$here/../../../containerd-fuse-overlayfs-grpc}
TIMEOUT=${CONFORMANCE_TIMEOUT:-20m}
RUN=${CONFORMANCE_RUN:-.}
BASE_ARGS=${SNAPSHOTTER_ARGS:-}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}

die() { echo "conformance: $*" >&2; exit 2; }
case $R in '' | *[!0-9]* | 0) die "R must be a positive integer, got '$R'" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (the suite mounts snapshots)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
command -v go >/dev/null || die "go is missing (golang-go: contrib/install-deps.sh)"
[ -d /usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite ] ||
	die "containerd Go sources are missing (golang-github-containerd-containerd-dev)"
for c in mount.fuse3 fusermount3 fuse-overlayfs; do
	command -v $c >/dev/null || die "$c is missing from PATH (contrib/install-deps.sh, make install)"
done
case " $MODES " in *" rootless-"*)
	for c in useradd userdel setpriv unshare newuidmap; do
		command -v $c >/dev/null || die "$c is missing (rootless modes; Debian packages passwd, util-linux, uidmap)"
	done ;;
esac
if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then die "SNAPSHOTTER_BIN=$BIN is not an executable file"; fi
BIN=$(readlink -f "$BIN")

if [ -n "${CONFORMANCE_DIR:-}" ]; then
	WORK=$CONFORMANCE_DIR
	mkdir -p "$WORK" || die "cannot create $WORK"
else
	WORK=$(mktemp -d /tmp/fovl-conf.XXXXXX) || die "mktemp failed"
fi
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/build"

TESTPID=
PIDFILE=$WORK/pids

unmount_under() { # DIR: unmount everything mounted at or below DIR, deepest first
	local dir=$1 m left
	for _ in 1 2 3; do
		left=$(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r)
		[ -n "$left" ] || return 0
		for m in $left; do
			m=$(printf '%b' "$m") # /proc/mounts escapes blanks as \040
			echo "# cleanup: unmounting $m" >&2
			fusermount3 -u "$m" 2>/dev/null || umount -R "$m" 2>/dev/null ||
				fusermount3 -uz "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null ||
				echo "# cleanup: cannot unmount $m" >&2
		done
	done
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {f = 1} END {exit !f}' /proc/self/mounts && return 1
	return 0
}

kill_ours() { # kills the test binary and any snapshotter it started still alive
	local p
	if [ -n "$TESTPID" ] && kill -0 "$TESTPID" 2>/dev/null; then
		kill -TERM "$TESTPID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$TESTPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$TESTPID" 2>/dev/null
		wait "$TESTPID" 2>/dev/null
	fi
	TESTPID=
	[ -f "$PIDFILE" ] || return 0
	# shellcheck disable=SC2013 # one PID a line
	for p in $(sort -u "$PIDFILE"); do
		# only if that PID is still the snapshotter (not a reused PID)
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$BIN" ] || continue
		echo "# cleanup: snapshotter $p still running, SIGTERM" >&2
		kill -TERM "$p" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$BIN" ] && kill -KILL "$p" 2>/dev/null
	done
	rm -f "$PIDFILE"
}

clean_run() { # DIR: leftovers of one run of the suite
	kill_ours
	unmount_under "$1" || { echo "# cleanup: mounts left under $1, not removing it" >&2; return 1; }
	rm -rf --one-file-system "$1"
}

# ---- rootless modes: a user of our own with a subordinate id range
ROOTLESS_USER=
ROOTLESS=()
setup_rootless() {
	local u=fovlconf$$ uid
	useradd -M -N -s /usr/sbin/nologin "$u" || die "useradd $u failed"
	ROOTLESS_USER=$u
	grep -q "^$u:" /etc/subuid && grep -q "^$u:" /etc/subgid ||
		die "useradd gave $u no range in /etc/subuid and /etc/subgid (SUB_UID_COUNT in /etc/login.defs)"
	uid=$(id -u "$u")
	mknod -m 0600 "$WORK/fuse" c 10 229 && chown "$uid" "$WORK/fuse" || die "cannot make a /dev/fuse node for $u"
	touch "$PIDFILE" && chown "$uid" "$PIDFILE" && chmod 0711 "$WORK" "$WORK/build" || die "cannot share $WORK with $u"
	# shellcheck disable=SC2016 # expanded by that sh
	ROOTLESS=(setpriv --reuid="$uid" --regid="$(id -g "$u")" --init-groups
		unshare --map-root-user --map-auto --mount --propagation private
		sh -c 'mount --bind "$0" /dev/fuse && exec "$@"' "$WORK/fuse")
}
remove_rootless_user() {
	[ -n "$ROOTLESS_USER" ] || return 0
	# FUSE daemons our shims left in the namespace (self mode), then the user
	pkill -KILL -u "$ROOTLESS_USER" -f "^fuse-overlayfs .*$WORK/" 2>/dev/null
	userdel "$ROOTLESS_USER" 2>/dev/null
	grep -q "^$ROOTLESS_USER:" /etc/passwd /etc/subuid /etc/subgid &&
		echo "# cleanup: $ROOTLESS_USER still in /etc/passwd, /etc/subuid or /etc/subgid" >&2
	ROOTLESS_USER=
}

FAILED_ANY=1
cleanup() {
	local d ok=1
	kill_ours
	remove_rootless_user
	for d in "$WORK"/run-*; do
		[ -e "$d" ] || continue
		clean_run "$d" || ok=0
	done
	rm -rf "$WORK/gocache"
	if [ "$ok" = 1 ] && [ "$FAILED_ANY" = 0 ] && [ -z "${KEEP:-}" ] && [ -z "${CONFORMANCE_DIR:-}" ]; then
		rm -rf --one-file-system "$WORK"
	else
		echo "# logs: $LOGS" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Build the test binary offline, GOPATH mode, against Debian's Go sources.
TESTBIN=$WORK/build/conformance.test
echo "# building the conformance test binary"
if ! (cd "$here" && env GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
	GOPATH="$WORK/build/gopath:/usr/share/gocode" GOCACHE="$WORK/gocache" \
	go test -c -o "$TESTBIN" ./conformance) >"$LOGS/build" 2>&1; then
	cat "$LOGS/build" >&2
	grep -q 'cannot find package' "$LOGS/build" &&
		echo "conformance: a Go package is missing: find its Debian package (apt-cache search golang-...-dev), add it to contrib/install-deps.sh" >&2
	exit 2
fi
echo "# snapshotter: $BIN"
echo "# fuse-overlayfs: $(command -v fuse-overlayfs) ($(fuse-overlayfs --version 2>&1 | head -1))"

# parse_run LOG PREFIX N0: TAP lines of one run; writes "PASSED FAILED" to $WORK/counts
parse_run() {
	awk -v prefix="$2" -v n="$3" -v countfile="$WORK/counts" -v rc="$4" '
	function add(name) { if (!(name in seen)) { seen[name] = 1; order[++k] = name } }
	/^=== (RUN|CONT|PAUSE|NAME) / { cur = $3; if ($2 == "RUN") add(cur); next }
	/^ *--- (PASS|FAIL|SKIP): / {
		name = $3; add(name); res[name] = $2; sub(/:$/, "", res[name]); cur = name; next
	}
	/^(PASS|FAIL)$/ { next }
	# the suite dumps the test directory of a failed test: keep it in the log only
	/^ +helpers\.go:[0-9]+: [A-Za-z-]+ +[0-9]* *\// { dump[cur]++; next }
	{
		if (cur == "") cur = "(no test)"
		add(cur)
		nl[cur]++
		out[cur, nl[cur]] = $0
	}
	END {
		passed = 0; failed = 0; skipped = 0
		for (i = 1; i <= k; i++) {
			name = order[i]
			# a test with subtests is reported through them
			sub_seen = 0
			for (j = 1; j <= k; j++) if (index(order[j], name "/") == 1) { sub_seen = 1; break }
			if (sub_seen) continue
			short = name; sub(/^[^\/]*\//, "", short)
			if (name == "(no test)") {
				if (rc == 0) continue
				short = "(outside tests)"
			}
			if (res[name] == "SKIP") { print "# skipped: " prefix short; skipped++; continue }
			n++
			if (res[name] == "PASS") { print "ok " n " - " prefix short; passed++; continue }
			why = (res[name] == "FAIL") ? "" : " (no result: crashed, timed out or killed; exit " rc ")"
			print "not ok " n " - " prefix short why; failed++
			first = nl[name] > 60 ? nl[name] - 59 : 1
			if (first > 1) print "#   ... (" first - 1 " lines before; full log in the logs directory)"
			for (l = first; l <= nl[name]; l++) print "#   " out[name, l]
			if (dump[name]) print "#   (" dump[name] " lines of directory dump left out: see the log)"
		}
		if (rc == 0 && passed + failed + skipped == 0) {
			n++; failed++
			print "not ok " n " - " prefix "(no test ran: check CONFORMANCE_RUN)"
		}
		if (rc != 0 && failed == 0) {
			n++; failed++
			print "not ok " n " - " prefix "(test binary) exit status " rc " without a failed test"
			for (l = 1; l <= nl["(no test)"]; l++) print "#   " out["(no test)", l]
		}
		print passed, failed > countfile
	}' "$1"
}

case " $MODES " in *" rootless-"*) setup_rootless ;; esac

passed=0
failed=0
n=0
for mode in $MODES; do
	case $mode in
	helper | rootless-helper) mode_args= ;;
	*) mode_args=--mount-mode=${mode#rootless-} ;;
	esac
	as=()
	case $mode in rootless-*) as=("${ROOTLESS[@]}") ;; esac
	for rep in $(seq "$R"); do
		for procs in 1 2; do
			tag=$mode-$rep-$procs
			echo "# mode $mode (${mode_args:-no extra argument}), run $rep/$R, GOMAXPROCS=$procs"
			RUNDIR=$WORK/run-$tag
			mkdir -p "$RUNDIR"
			[ ${#as[@]} = 0 ] || chown "$ROOTLESS_USER" "$RUNDIR"
			log=$LOGS/$tag.log
			# TMPDIR: the suite creates every test root under it (keep it short:
			# ROOT/sock must fit in a unix socket address).
			TMPDIR=$RUNDIR GOMAXPROCS=$procs SNAPSHOTTER_BIN=$BIN \
				SNAPSHOTTER_ARGS="$BASE_ARGS $mode_args" SNAPSHOTTER_PIDFILE=$PIDFILE \
				"${as[@]}" "$TESTBIN" -test.v -test.count=1 -test.parallel="$procs" \
				-test.timeout="$TIMEOUT" -test.run="$RUN" >"$log" 2>&1 &
			TESTPID=$!
			wait "$TESTPID"
			rc=$?
			TESTPID=
			clean_run "$RUNDIR" 2>&1
			rm -f "$WORK/counts"
			parse_run "$log" "$mode/$procs/" "$n" "$rc"
			read -r p f <"$WORK/counts" || { p=0; f=1; echo "not ok $((n + 1)) - $mode/$procs/(cannot parse $log)"; }
			passed=$((passed + p))
			failed=$((failed + f))
			n=$((n + p + f))
		done
	done
done
[ "$failed" = 0 ] && FAILED_ANY=0
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
