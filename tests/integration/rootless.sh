#!/bin/bash
# Rootless writes: the writable overlay used the way rootless podman uses it
# (containers/storage runs us inside podman's user namespace as uid 0),
# against the kernel overlay mounted the same way (userxattr) as reference.
# Usage: rootless.sh [SCENARIO...] (about 10 s).  Prints `ok N - NAME` or
# `not ok N - NAME: reason` (details indented), then `N passed, M failed`;
# exits 1 if any failed.  A missing prerequisite is a failed test (exit 2).
#
# The namespace (tests/diff/userns.py): the test drops to host uid/gid 61234
# (no such user needed), unshares a user and a mount namespace, and the real
# root writes the id maps as newuidmap would for podman: by default
# `0:61234:1,1:200000:65536` (inside:outside:count; ROOTLESS_MAP to change),
# so the namespace's root is an unprivileged host id and ids 1..65536 exist
# inside (scenarios use uid 1000, chown and setresuid).  No /etc/subuid entry,
# no user account: the writer of the maps has CAP_SETUID outside.  (`unshare
# --map-root-user` would map one id only; unshare --map-users needs newuidmap
# and /etc/subuid.)  The process has every capability inside and none outside:
# no CAP_MKNOD for devices (a char 0/0 whiteout needs none since Linux 5.8),
# no trusted.* or security.* xattrs, no FUSE passthrough (it needs
# CAP_SYS_ADMIN in the initial namespace), and the kernel cannot decode the
# origin file handles that keep st_ino across a remount.  Layers are built
# by the real root before (devices, trusted.* xattrs, ACLs) and their ids
# shifted into the map.  /dev/fuse: rootless podman needs it world
# read-writable (udev's MODE=0666); where it is not, a node owned by the
# namespace's root is bind-mounted over it inside the namespace only.
#
# Tests:
#   differential NAME   tests/diff/ovldiff.py --userns on each scenario (default:
#                       the writable ones but those in writable/known-failing,
#                       plus whiteouts and upper_layers): the kernel overlay
#                       (userxattr,redirect_dir=nofollow,index=off,metacopy=off,
#                       xino=off) against ours on every whiteout/opaque spelling
#                       ours reads rootless (trusted.overlay.opaque becomes
#                       user.overlay.opaque), ours writing char 0/0 and `.wh.`
#                       whiteouts: errnos of every op, merged views, upper layers
#                       (spellings normalised).  `ino` ops are not compared.
#   then tests/integration/rootless_check.py (see there): ours started as
#   containers/storage starts it (daemonizing, cwd the graph root, lowerdirs
#   through l/ symlinks), unmounted by fusermount3 -u; a 0444 root-owned lower
#   file written; rm -rf of a lower tree then mkdir; renames; deletions;
#   st_nlink of a dir once a child is copied up; a read-only fd on a lower
#   hard link; objects owned by host ids outside the map (the kernel refuses
#   their copy-up: EOVERFLOW); merged views live and remounted, upper
#   layers; st_ino of copied-up files across a remount (ours only);
#   then tests/integration/rootless_identity.py (see there): uid/gid mapping as
#   podman's keep-id passes it and xattr_permissions=2, in the same namespace;
#   then tests/integration/rootless_oneid.py (see there): the same user with
#   no subuid range, in the namespace util-linux `unshare -U -r` makes (one
#   id), against the kernel overlay and, for owners it cannot map, 1.10;
#   check-upper           tests/check-upper.py on ours' upper and work.
#
# Env: FUSE_OVERLAYFS (binary, default the tree's), ROOTLESS_MAP (a one-id map
# 0:H:1 runs the differential scenarios as `unshare -U -r` would: setgroups
# denied, layer objects of other ids owned by unmapped host ids),
# OVL_TEST_TMPDIR (default /var/tmp), OVL_TEMP_REGEX, ROOTLESS_KEEP=1 (keep
# the work dir).
TEST_NAME=rootless
TEST_STYLE=tap
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3 # the system's: stdlib only
DIFF=$top/tests/diff
MAP=${ROOTLESS_MAP:-0:61234:1,1:200000:65536}
unset FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT FUSE_OVERLAYFS_DISABLE_PASSTHROUGH

require_fuse
require_kernel_overlay
require_files "$DIFF/ovldiff.py" "$DIFF/ovlscenario.py" "$DIFF/ovlbuild.py" "$DIFF/ovlops.py" \
	"$DIFF/ovlmounts.py" "$DIFF/ovlview.py" "$DIFF/userns.py" "$here/rootless_check.py" "$CHECK"
[ -x "$PY" ] || die "$PY is missing"
for c in setfacl mount umount; do command -v $c >/dev/null || die "$c is missing"; done
[ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" -gt 0 ] ||
	die "user namespaces are disabled (user.max_user_namespaces)"

# the host ids of the map must be unused: no account, no process
ranges=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import userns
for i, o, n in userns.parse_map(sys.argv[2]): print(o, o + n - 1)' "$DIFF" "$MAP") ||
	die "ROOTLESS_MAP: bad map $MAP (INSIDE:OUTSIDE:COUNT,...)"
NSROOT=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import userns
print(userns.host_id(userns.parse_map(sys.argv[2]), 0))' "$DIFF" "$MAP") ||
	die "ROOTLESS_MAP: $MAP does not map the namespace's root"
while read -r lo hi; do
	used=$( {
		getent passwd | cut -d: -f3
		getent group | cut -d: -f3
		ps -eo uid=,gid= | tr -s ' ' '\n'
	} | awk -v lo="$lo" -v hi="$hi" '$1 >= lo && $1 <= hi' | sort -un | head -3 | tr '\n' ' ')
	[ -z "$used" ] || die "host ids $lo..$hi of ROOTLESS_MAP=$MAP are in use ($used): pick others"
done <<<"$ranges"

make_work
[ "${ROOTLESS_KEEP:-0}" = 1 ] && KEEP=1
chmod 0711 "$WORK" # the namespace's root must reach its dirs
mkdir "$WORK/diff" "$WORK/g" "$WORK/logs"
touch "$WORK/pids"
chown "$NSROOT:$NSROOT" "$WORK/pids"
load_pids() { # daemons started in the namespace, recorded by the helpers
	local p
	while read -r p; do [ -n "$p" ] && PIDS+=("$p"); done <"$WORK/pids"
	: >"$WORK/pids"
}
trap 'load_pids; cleanup' EXIT

# the namespace itself: uid 0 inside, the map asked for, and no privilege
# outside (it cannot create a file in a directory of the real root)
# shellcheck disable=SC2016 # expanded by the inner shell
out=$(timeout -k 5 20 "$PY" "$DIFF/userns.py" --map "$MAP" -- sh -c \
	'id -u; awk "{ print \$1, \$2, \$3 }" /proc/self/uid_map; touch "$1/probe" 2>/dev/null && echo PRIVILEGED' \
	sh "$WORK/g" 2>&1)
want=$(echo 0; tr ',:' '\n ' <<<"$MAP")
if [ "$out" = "$want" ]; then
	pass "user namespace: uid 0 inside, map $MAP, no privilege outside"
else
	fail "user namespace: uid 0 inside, map $MAP, no privilege outside" "got: ${out//$'\n'/ }" "want: ${want//$'\n'/ }"
fi
rm -f "$WORK/g/probe"

# ------------------------------------------------------------------ differential scenarios
# shellcheck source=../diff/known-failing.sh
. "$DIFF/known-failing.sh"
scenarios=()
if [ $# -gt 0 ]; then
	for s; do
		if [ -f "$s" ]; then scenarios+=("$s")
		elif [ -f "$DIFF/writable/$s.scn" ]; then scenarios+=("$DIFF/writable/$s.scn")
		elif [ -f "$DIFF/scenarios/$s.scn" ]; then scenarios+=("$DIFF/scenarios/$s.scn")
		else die "no such scenario: $s"; fi
	done
else
	runnable_scenarios scenarios '# ' "$DIFF"/writable/*.scn "$DIFF/scenarios/whiteouts.scn" "$DIFF/scenarios/upper_layers.scn"
fi
faillogs=
for s in "${scenarios[@]}"; do
	n=$(basename "$s" .scn)
	log=$WORK/logs/$n.log
	rc=0
	# shellcheck disable=SC2094 # the log is only appended to
	res=$(timeout -k 10 120 "$PY" "$DIFF/ovldiff.py" --fuse "$BIN" --tmp "$WORK/diff" \
		--pidfile "$WORK/pids" --log "$log" --userns "$MAP" "$s" 2>>"$log") || rc=$?
	load_pids
	undo "$WORK" # a daemon left by a killed run
	line=$(printf '%s\n' "$res" | grep -E '^(PASS|FAIL) ' | tail -n 1)
	name="differential $n (rootless: kernel overlay userxattr vs ours)"
	if [ "$rc" = 0 ] && [ "${line#PASS }" != "$line" ]; then
		pass "$name"
		continue
	fi
	if [ -z "$faillogs" ]; then
		faillogs=$(mktemp -d "${OVL_TEST_TMPDIR:-/var/tmp}/ovl-rootless-logs.XXXXXX")
	fi
	cp "$log" "$faillogs/" 2>/dev/null
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		fail "$name" "timed out after 120 s" "log: $faillogs/$n.log"
	elif [ -n "$line" ]; then
		fail "$name" "${line#FAIL }" "log: $faillogs/$n.log"
	else
		fail "$name" "harness error (exit $rc): $(tail -n 1 "$log" 2>/dev/null)" "log: $faillogs/$n.log"
	fi
done

# ------------------------------------------------------------------ podman-like checks
name='' reason='' details=()
flush() {
	if [ -n "$name" ]; then
		if [ -z "$reason" ]; then pass "$name"; else fail "$name" "$reason" "${details[@]}"; fi
	fi
	name='' reason='' details=()
}
run_checks() { # HELPER DIR: runs a python helper in the namespace, counts its `ok`/`not ok` lines
	local rc=0 out=$WORK/${1%.py}
	timeout -k 5 60 "$PY" "$here/$1" --fuse "$BIN" --map "$MAP" \
		--pidfile "$WORK/pids" "$2" >"$out.out" 2>"$out.err" || rc=$?
	load_pids
	undo "$WORK"
	while IFS= read -r l; do
		case "$l" in
		"ok - "*) flush; name=${l#ok - } ;;
		"not ok - "*) flush; l=${l#not ok - }; name=${l%%: *}; reason=${l#*: } ;;
		"    "*) details+=("${l#    }") ;;
		"# NOT RUN "*) flush; echo "$l" ;;
		esac
	done <"$out.out"
	flush
	[ "$rc" = 0 ] || fail "$1 ran to the end" "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')" \
		"$(tail -n 3 "$out.err" | tr '\n' ' ')"
}
run_checks rootless_check.py "$WORK/g"
# owners: keep-id mapping and xattr_permissions=2 as containers/storage passes them
run_checks rootless_identity.py "$WORK/id"
# a user without a subuid range: `unshare -U -r`, one id
run_checks rootless_oneid.py "$WORK/oneid"

# the upper and work ours left (unmounted): sound?
if [ -d "$WORK/g/C/diff" ] && [ -n "$(ls -A "$WORK/g/C/diff")" ]; then
	"$PY" "$CHECK" --temp-regex "$TEMP_REGEX" "$WORK/g/C/diff" "$WORK/g/C/work" >"$WORK/cu.out" 2>&1 ||
		[ -s "$WORK/cu.out" ] || echo "check-upper.py failed without a message" >"$WORK/cu.out"
else
	echo "no upper left by the run above" >"$WORK/cu.out"
fi
fail_file "check-upper: the upper and work ours left are sound" "$WORK/cu.out"

[ -n "$faillogs" ] && echo "# logs of failed scenarios: $faillogs"
finish
