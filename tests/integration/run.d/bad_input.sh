# shellcheck shell=bash
# Bad input: every refused option or layer answers one line naming it, exit 1,
# nothing mounted, upper and work untouched.  Sourced by ../run.sh (its
# helpers and variables), never run alone: `run.sh NAME` runs the test t_NAME.

# expect_bad NAME_IN_MESSAGE ARGS...: exit 1, one line naming it, nothing mounted or created
expect_bad() {
	local what=$1
	shift
	local before after out rc
	before=$(find "$T/u" "$T/w" 2>/dev/null | sort)
	out=$("$BIN" "$@" 2>&1)
	rc=$?
	after=$(find "$T/u" "$T/w" 2>/dev/null | sort)
	[ $rc = 1 ] || { fail "exit $rc (want 1) for: $*"; return 1; }
	[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || { fail "not one line: $out"; return 1; }
	case $out in "fuse-overlayfs: "*"$what"*) ;; *) fail "message '$out' does not name '$what'"; return 1 ;; esac
	[ "$before" = "$after" ] || { fail "upper/work changed: $after"; return 1; }
	! grep -q " $T/m " /proc/mounts || { fail "something got mounted"; return 1; }
}

t_bad_input() {
	setup bad
	echo notadir >"$T/file"
	mkdir -p "$T/l1/nested-upper" "$T/l1/nested-work" "$T/m/inside"
	local r=0
	expect_bad "$T/missing" -o "lowerdir=$T/missing" "$T/m" || r=1
	expect_bad "$T/file: lowerdir: not a directory" -o "lowerdir=$T/l1:$T/file" "$T/m" || r=1
	expect_bad "upperdir: given without workdir" -o "lowerdir=$T/l1,upperdir=$T/u" "$T/m" || r=1
	expect_bad "workdir: given without upperdir" -o "lowerdir=$T/l1,workdir=$T/w" "$T/m" || r=1
	expect_bad "timeout" -o "lowerdir=$T/l1,timeout=abc" "$T/m" || r=1
	expect_bad "redirect_dir" -o "lowerdir=$T/l1,redirect_dir=on" "$T/m" || r=1
	expect_bad "uidmapping: want ID:HOST:LEN" -o "lowerdir=$T/l1,uidmapping=0:0" "$T/m" || r=1
	expect_bad "gidmapping: want ID:HOST:LEN" -o "lowerdir=$T/l1,gidmapping=a:b:c" "$T/m" || r=1
	expect_bad "uidmapping: overlapping ranges" -o "lowerdir=$T/l1,uidmapping=0:1000:2:1:3000:1" "$T/m" || r=1
	expect_bad "upperdir: inside lowerdir" -o "lowerdir=$T/l1,upperdir=$T/l1/nested-upper,workdir=$T/w" "$T/m" || r=1
	expect_bad "workdir: inside lowerdir" -o "lowerdir=$T/l1,upperdir=$T/u,workdir=$T/l1/nested-work" "$T/m" || r=1
	mkdir -p "$T/u/low" "$T/w/low"
	expect_bad "$T/u/low: lowerdir: inside upperdir $T/u" -o "lowerdir=$T/l1:$T/u/low,upperdir=$T/u,workdir=$T/w" "$T/m" || r=1
	expect_bad "$T/w/low: lowerdir: inside workdir $T/w" -o "lowerdir=$T/w/low,upperdir=$T/u,workdir=$T/w" "$T/m" || r=1
	expect_bad "upperdir: inside the mountpoint" -o "lowerdir=$T/l1,upperdir=$T/m/inside,workdir=$T/w" "$T/m" || r=1
	expect_bad "lowerdir: inside the mountpoint" -o "lowerdir=$T/m/inside" "$T/m" || r=1
	expect_bad "$T/nomnt: mountpoint" -o "lowerdir=$T/l1" "$T/nomnt" || r=1
	expect_bad "mountpoint: missing" -o "lowerdir=$T/l1" || r=1
	expect_bad "lowerdir: empty layer" -o "lowerdir=$T/l1::$T/l2" "$T/m" || r=1
	expect_bad "$T/file: workdir: not a directory" -o "lowerdir=$T/l1,upperdir=$T/u,workdir=$T/file" "$T/m" || r=1
	# unreadable layer, as an unprivileged user
	mkdir -p "$T/secret"
	chmod 700 "$T/secret"
	chmod 755 "$T" "$WORK"
	chmod 777 "$T/m"
	local out rc
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" -o "lowerdir=$T/secret" "$T/m" 2>&1)
	rc=$?
	[ $rc = 1 ] && [[ $out == "fuse-overlayfs: $T/secret: lowerdir: Permission denied" ]] ||
		{ fail "unreadable layer: rc=$rc '$out'"; r=1; }
	return $r
}
