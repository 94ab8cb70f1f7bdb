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
	# (SUFFIX=-override: the steps and views of identity_view.py's override layers)
	local d=$WORK/$1 sfx=${SUFFIX:-}
	mkdir -p "$d"/{u,w,m}
	start_fuse "$2" "${LOWER:-$WORK/lower}" "$d/u" "$d/w" "$d/m" "$d/err" "$3" || { echo "mount failed: $(cat "$d/err")" >"$d/steps"; return 1; }
	[ -n "$sfx" ] && python3 "$VIEW" "view$sfx" "$d/m" >"$d/view0" 2>&1
	python3 "$VIEW" "steps$sfx" "$d/m" >"$d/steps" 2>&1
	python3 "$VIEW" "view$sfx" "$d/m" >"$d/view" 2>&1
	python3 "$VIEW" xattrs "$d/m" >"$d/xattrs" 2>&1
	stop_fuse "$d/m" "$FPID" || echo "$STOP_ERR" >>"$d/steps"
	python3 "$VIEW" "disk$sfx" "$d/u" >"$d/disk" 2>&1
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

# ---- stat overrides (xattr_permissions): a layer of each kind on top of the
# same lower.  1.10 reads them as ours does (without the type, which came after
# 1.10: devices and fifos stored as plain files show as files there), which is
# compared; its writes are broken (a chmod or chown reports success and
# changes nothing, creates store mode|0755, objects without an override in such
# a layer answer ENODATA, even to a listing), so ours' are checked against the
# values written out here (the owner stays on chmod, the caller owns what it
# makes, the override is carried up; the inode keeps the real mode)
for kind in privileged containers user hostile-containers; do
	python3 "$VIEW" override "$WORK/ovr-$kind" $kind || die "cannot build the $kind override layer"
done
override_steps='chmod o_suid: OK
chown o_old: OK
chown o_dir: OK
chmod o_dir/inner: OK
touch o_dev: OK
create as 0: OK
mkdir as 0: OK
create as 1001: OK
mkdir as 1001: OK
chown o_new0: OK'
override_view() { # the ids of o_suid
	local s
	for s in stat list; do
		printf '%s\n' "o_dev $s c 0:0 660" "o_dir $s d 13:14 700" "o_fifo $s p 1001:1001 600" \
			"o_old $s - 11:12 640" "o_suid $s - $1 700" "pub/o_new0 $s - 21:22 640" \
			"pub/o_new1001 $s - 1001:1001 640" "pub/o_newdir0 $s d 0:0 750" "pub/o_newdir1001 $s d 1001:1001 750"
	done
}
override_disk='o_dev - 0:0 644 ovr=0:0:660:char-1-3
o_dir d 0:0 755 ovr=13:14:700
o_old - 0:0 644 ovr=11:12:640
o_suid - 0:0 644 ovr=1000:1000:700
pub/o_new0 - 0:0 640 ovr=21:22:640
pub/o_new1001 - 1001:1001 640 ovr=1001:1001:640
pub/o_newdir0 d 0:0 750 ovr=0:0:750
pub/o_newdir1001 d 1001:1001 750 ovr=1001:1001:750'
untyped() { sed -E 's/^(o_dev|o_fifo) (stat|list) [cp] /\1 \2 - /' "$1"; }
ocases=(
	"xperm1|privileged|xattr_permissions=1"
	"xperm2|containers|xattr_permissions=2"
	"xperm2_user_layer|user|xattr_permissions=2"
	"xperm0|containers|"
)
chmod 755 "$WORK"
for c in "${ocases[@]}"; do
	IFS='|' read -r CASE kind opts <<<"$c"
	LOWER="$WORK/ovr-$kind:$WORK/lower" SUFFIX=-override run_on "ref-$CASE" "$REF" "$opts"
	LOWER="$WORK/ovr-$kind:$WORK/lower" SUFFIX=-override run_on "ours-$CASE" "$BIN" "$opts"
	if diffs=$(diff <(untyped "$WORK/ref-$CASE/view0") <(untyped "$WORK/ours-$CASE/view0")); then
		pass "${CASE}_read"
	else
		mapfile -t lines <<<"$diffs"
		fail "${CASE}_read" "ours shows the layer otherwise than 1.10 (< 1.10, > ours)" "${lines[@]}"
	fi
	[ -z "$opts" ] && continue # no upper overrides: only reads compare
	expect "${CASE}_steps" steps "$override_steps"
	expect "${CASE}_view" view "$(override_view 1000:1000)"
	expect "${CASE}_disk" disk "$override_disk"
done
# overrides give the ids as stored: the mapping applies after them
CASE=xperm2_keepid
LOWER="$WORK/ovr-containers:$WORK/lower" SUFFIX=-override run_on "ours-$CASE" "$BIN" \
	"xattr_permissions=2,uidmapping=:0:1:1000:1000:0:1:1001:1001:64535,gidmapping=:0:1:1000:1000:0:1:1001:1001:64535"
grep -qx 'o_suid stat - 0:0 4750' "$WORK/ours-$CASE/view0" && pass "${CASE}_mapped_after" ||
	fail "${CASE}_mapped_after" "o_suid (override 1000:1000, keep-id 1000) shows: $(grep '^o_suid stat' "$WORK/ours-$CASE/view0")"
# hostile values (too long, not text, a bad type or mode): ignored whole, one
# log line; 1.10 answers errors for them (its stat fails), so ours is checked
# against the values written out here: shown as stored (root, 0644), the rest
# of the layer as its overrides say
CASE=hostile
LOWER="$WORK/ovr-hostile-containers:$WORK/lower" SUFFIX=-override run_on "ours-$CASE" "$BIN" "xattr_permissions=2"
shown=$(grep -E '^o_(bad|long|nul|type|neg) ' "$WORK/ours-$CASE/view0")
if [ "$(grep -c ' - 0:0 644$' <<<"$shown")" = 10 ]; then
	pass hostile_view_ignored
else
	mapfile -t lines <<<"$shown"
	fail hostile_view_ignored "want each shown as stored (- 0:0 644) by stat and by listing" "${lines[@]}"
fi
grep -qE '^o_suid stat - 1000:1000 700$' "$WORK/ours-$CASE/view" && pass hostile_others_shown ||
	fail hostile_others_shown "o_suid not shown from its override: $(grep '^o_suid stat' "$WORK/ours-$CASE/view")"
n=$(grep -c "malformed, ignored" "$WORK/ours-$CASE/err")
[ "$n" = 1 ] && pass hostile_logged_once || fail hostile_logged_once "$n log lines: $(cat "$WORK/ours-$CASE/err")"

# ---- inode numbers with layers on two filesystems (a tmpfs lower, the upper
# on $WORK's): under xino=off|auto|on and ino32_t, every object has its own
# st_ino (names of one hard link share it), readdir's d_ino equals it, it is
# the same after a copy-up and a remount, and with ino32_t below 2^32
mkdir -p "$WORK/tmpfs"
mount -t tmpfs -o size=16m ovl-identity "$WORK/tmpfs" || die "cannot mount a tmpfs"
python3 - "$WORK/tmpfs/l" <<'EOF2' || die "cannot build the tmpfs layer"
import os, sys
d = sys.argv[1]
for i in range(40):
    os.makedirs("%s/d%d" % (d, i % 5), exist_ok=True)
    with open("%s/d%d/f%d" % (d, i % 5, i), "w") as f:
        f.write(str(i))
os.link(d + "/d0/f0", d + "/d1/hard")
EOF2
ino_check() { # MNT STATE: problems, and the names' numbers into STATE (compared if it exists)
	python3 - "$@" <<'EOF2'
import json, os, sys
m, state = sys.argv[1], sys.argv[2]
ino32 = len(sys.argv) > 3
seen, names = {}, {}
for dirpath, dirs, files in os.walk(m):
    with os.scandir(dirpath) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            rel = os.path.relpath(e.path, m)
            if e.inode() != st.st_ino:
                print("%s: d_ino %d != st_ino %d" % (rel, e.inode(), st.st_ino))
            if ino32 and st.st_ino >= 1 << 32:
                print("%s: st_ino %d is not 32-bit" % (rel, st.st_ino))
            key = (st.st_ino, st.st_dev)
            if key in seen and seen[key] != (st.st_mode, st.st_size, st.st_mtime_ns):
                print("%s: st_ino %d also of %s" % (rel, st.st_ino, names[key]))
            seen[key], names[key] = (st.st_mode, st.st_size, st.st_mtime_ns), rel
            names[rel] = st.st_ino
if os.path.exists(state):
    before = json.load(open(state))
    for rel, ino in before.items():
        if names.get(rel) != ino:
            print("%s: st_ino %s, was %d" % (rel, names.get(rel), ino))
else:
    json.dump({k: v for k, v in names.items() if isinstance(k, str)}, open(state, "w"))
EOF2
}
for opts in xino=off xino=auto xino=on ino32_t; do
	d=$WORK/ino-${opts//=/-}
	mkdir -p "$d"/{u,w,m}
	mkdir -p "$d/u/d2" && echo upper >"$d/u/d2/upperfile"
	{
		start_fuse "$BIN" "$WORK/tmpfs/l:$WORK/lower" "$d/u" "$d/w" "$d/m" "$d/err" "$opts" || echo "mount failed: $(cat "$d/err")"
		ino_check "$d/m" "$d/state" ${opts/#xino*/}
		chmod 600 "$d/m/d3/f3" "$d/m/f1000" # copy-ups: a tmpfs file, a file of the other filesystem
		ino_check "$d/m" "$d/state" ${opts/#xino*/}
		stop_fuse "$d/m" "$FPID" || echo "$STOP_ERR"
		start_fuse "$BIN" "$WORK/tmpfs/l:$WORK/lower" "$d/u" "$d/w" "$d/m" "$d/err" "$opts" || echo "remount failed"
		ino_check "$d/m" "$d/state" ${opts/#xino*/}
		stop_fuse "$d/m" "$FPID" || echo "$STOP_ERR"
	} >"$d/problems" 2>&1
	fail_file "inodes_two_filesystems_${opts//=/_}" "$d/problems"
done
umount "$WORK/tmpfs"

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
