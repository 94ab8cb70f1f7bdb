#!/bin/bash
# Owners across the mount, side by side with Debian's fuse-overlayfs 1.10:
# the same lower layer (identity_view.py build: objects of many owners, an
# ACL, a v3 file capability), the same steps through the mount as several
# callers (creates, links, chowns, copy-ups, setfacl), under each option set
# containers/storage and users pass (uid/gid maps of one and several ranges,
# keep-id, squash_*), on 1.10 and on ours.  Usage: identity.sh (about 10 s).
#   NAME_steps   every step answers as on 1.10 (OK or the same errno)
#   NAME_view    stat and READDIRPLUS show the owners 1.10 shows
#   NAME_disk    the upper layer holds the owners 1.10 stores
#   NAME_xattrs  the ids inside ACLs and the capability's rootid are mapped
#                as the owners are (1.10 leaves them unmapped, which is
#                wrong: the expectation is written out here), on the mount
#                and, for what was set through it, on disk
# plus options: lazytime and the other kernel options libfuse refuses are
# dropped with a warning; bad mapping options: one line, exit 1.
TEST_NAME=identity
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
REF=${REFERENCE_FUSE_OVERLAYFS:-/usr/bin/fuse-overlayfs}
VIEW=$here/identity_view.py
require_fuse
require_files "$VIEW"
[ -x "$REF" ] || die "$REF (Debian's fuse-overlayfs 1.10) is missing: contrib/install-deps.sh"
make_work

python3 "$VIEW" build "$WORK/lower" || die "cannot build the lower layer"

run_on() { # NAME BIN OPTS: the steps through BIN, results in $WORK/NAME
	local d=$WORK/$1
	mkdir -p "$d"/{u,w,m}
	start_fuse "$2" "$WORK/lower" "$d/u" "$d/w" "$d/m" "$d/err" "$3" || { echo "mount failed: $(cat "$d/err")" >"$d/steps"; return 1; }
	python3 "$VIEW" steps "$d/m" >"$d/steps" 2>&1
	python3 "$VIEW" view "$d/m" >"$d/view" 2>&1
	python3 "$VIEW" xattrs "$d/m" >"$d/xattrs" 2>&1
	stop_fuse "$d/m" "$FPID" || echo "$STOP_ERR" >>"$d/steps"
	python3 "$VIEW" disk "$d/u" >"$d/disk" 2>&1
	python3 "$VIEW" xattrs "$d/u" | grep -E '^(new|cap) ' >"$d/disk-xattrs"
}

same() { # TEST FILE: ours and 1.10's FILE are equal
	local diffs
	if diffs=$(diff "$WORK/ref-$CASE/$2" "$WORK/ours-$CASE/$2"); then
		pass "$1"
	else
		mapfile -t lines <<<"$diffs"
		fail "$1" "ours differs from 1.10 (< 1.10, > ours)" "${lines[@]}"
	fi
}

expect() { # TEST FILE EXPECTED: ours' FILE holds exactly the lines of EXPECTED
	local diffs
	if diffs=$(diff <(printf '%s\n' "$3") "$WORK/ours-$CASE/$2"); then
		pass "$1"
	else
		mapfile -t lines <<<"$diffs"
		fail "$1" "not as the mapping rule says (< expected, > ours)" "${lines[@]}"
	fi
}

# The ids in the lower layer's ACL are u:1000 u:70000 g:50, the capability's
# rootid 1000; "new" gets u:1001 g:1 set through the mount.
unmapped_xattrs='acl system.posix_acl_access v2 u:1000 u:70000 g:50
dacl system.posix_acl_default v2 u:1000 u:70000 g:50
new system.posix_acl_access v2 u:1001 g:1
dacl/child system.posix_acl_access v2 u:1000 u:70000 g:50
cap security.capability rev 3 rootid 1000'

# CASE|OPTIONS|1.10'S OPTIONS (if others)|MOUNT-XATTRS|DISK-XATTRS
cases=(
	"none|||$unmapped_xattrs|new system.posix_acl_access v2 u:1001 g:1
cap security.capability rev 3 rootid 1000"
	# podman --userns=keep-id for user 1001 (containers/storage's spelling)
	"keepid|uidmapping=:0:1:1001:1001:0:1:1002:1002:64534,gidmapping=:0:1:1001:1001:0:1:1002:1002:64534||acl system.posix_acl_access v2 u:1001 u:65534 g:51
dacl system.posix_acl_default v2 u:1001 u:65534 g:51
new system.posix_acl_access v2 u:1001 g:1
dacl/child system.posix_acl_access v2 u:1001 u:65534 g:51
cap security.capability rev 3 rootid 1001|new system.posix_acl_access v2 u:1000 g:0
cap security.capability rev 3 rootid 1000"
	# several ranges, shifted; shown ids 1001-9999 unmapped.  Ours is given ','
	# between triples (the man page's spelling; libfuse's splitter cuts it,
	# and 1.10 then maps only the first range), 1.10 the ':' form.
	"ranges|uidmapping=0:10000:1001,1001:0:1,1002:21002:70000,gidmapping=0:30000:60:60:0:10|uidmapping=0:10000:1001:1001:0:1:1002:21002:70000,gidmapping=0:30000:60:60:0:10|acl system.posix_acl_access v2 u:11000 u:90000 g:30050
dacl system.posix_acl_default v2 u:11000 u:90000 g:30050
new system.posix_acl_access v2 u:85534 g:1
dacl/child system.posix_acl_access v2 u:11000 u:90000 g:30050
cap security.capability rev 3 rootid 11000|new system.posix_acl_access v2 u:65534 g:61
cap security.capability rev 3 rootid 1000"
	"squashroot|squash_to_root||$unmapped_xattrs|"
	"squashids|squash_to_uid=5,squash_to_gid=6||$unmapped_xattrs|"
	"squashuid|squash_to_uid=5||$unmapped_xattrs|"
)
for c in "${cases[@]}"; do
	IFS='|' read -r CASE opts ref_opts mount_x disk_x <<<"${c//$'\n'/$'\x1f'}"
	mount_x=${mount_x//$'\x1f'/$'\n'}
	disk_x=${disk_x//$'\x1f'/$'\n'}
	run_on "ref-$CASE" "$REF" "${ref_opts:-$opts}"
	run_on "ours-$CASE" "$BIN" "$opts"
	same "${CASE}_steps" steps
	same "${CASE}_view" view
	same "${CASE}_disk" disk
	expect "${CASE}_xattrs" xattrs "$mount_x"
	[ -n "$disk_x" ] && expect "${CASE}_disk_xattrs" disk-xattrs "$disk_x"
done

# ---- options
# kernel options libfuse 3.14 refuses: dropped with a warning, as 1.10 does
mkdir -p "$WORK/opt"/{u,w,m}
out=$("$BIN" -o "lowerdir=$WORK/lower,upperdir=$WORK/opt/u,workdir=$WORK/opt/w,lazytime,relatime,nodiratime" "$WORK/opt/m" 2>&1)
if [ $? = 0 ] && [ -f "$WORK/opt/m/f0" ]; then
	case $out in
	*"lazytime: not supported by libfuse, ignored"*) pass options_lazytime_dropped ;;
	*) fail options_lazytime_dropped "no warning naming lazytime: $out" ;;
	esac
	fusermount3 -u "$WORK/opt/m"
else
	fail options_lazytime_dropped "mount with lazytime failed: $out"
fi

bad_option() { # TEST OPTS WANT: one line naming the option, exit 1, nothing mounted or made
	local out rc
	rm -rf "$WORK/bad" && mkdir -p "$WORK/bad"/{u,w,m}
	out=$("$BIN" -o "lowerdir=$WORK/lower,upperdir=$WORK/bad/u,workdir=$WORK/bad/w,$2" "$WORK/bad/m" 2>&1)
	rc=$?
	if [ $rc != 1 ]; then
		fail "$1" "exit $rc, want 1: $out"
	elif [ "$(printf '%s\n' "$out" | wc -l)" != 1 ] || [[ $out != "fuse-overlayfs: $3"* ]]; then
		fail "$1" "want one line 'fuse-overlayfs: $3...', got: $out"
	elif is_mounted "$WORK/bad/m" || [ -n "$(find "$WORK/bad/u" "$WORK/bad/w" -mindepth 1)" ]; then
		fail "$1" "mounted, or upper/work changed"
	else
		pass "$1"
	fi
}
bad_option bad_overlap "uidmapping=0:1000:10:5:2000:1" "uidmapping: overlapping ranges"
bad_option bad_overflow "gidmapping=0:4294967290:10" "gidmapping: a range past the largest id"
bad_option bad_zero "uidmapping=0:1000:0" "uidmapping: a range of length 0"
bad_option bad_malformed "uidmapping=0:1000" "uidmapping: want ID:HOST:LEN"
bad_option bad_many "uidmapping=$(for i in $(seq 0 340); do printf ':%d:%d:1' "$i" $((1000 + i)); done)" \
	"uidmapping: more than 340 ranges"
bad_option bad_squash "squash_to_uid=abc" "squash_to_uid: not a valid id"
finish
