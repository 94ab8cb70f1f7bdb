#!/bin/bash
# End to end: rootless podman 4.3 and buildah 1.28 with our fuse-overlayfs as
# containers/storage's mount_program, side by side with Debian's 1.10.
#
# The script creates an unprivileged user (ovlpm + random suffix, home in a
# temp dir, its own 65536-id range in /etc/subuid and /etc/subgid), then for
# each mount program ("ours", then "1.10", each a copy named fuse-overlayfs
# in the temp dir) a storage root of its own and a runtime dir of its own (own
# pause process): the user's ~/.config/containers/storage.conf is the sample
# contrib/storage.conf with graphroot, runroot and mount_program (that copy)
# filled in.  As that user it:
#   setup     `podman info` (driver, mount_program, graph root, config file),
#             `podman load` of a two-layer docker-archive made by
#             e2e_helper.py (busybox, files of uids 0/1/1000/65534, AUFS
#             .wh. whiteouts of a file and a dir, an opaque dir);
#   run       `podman run -d`, then (podman exec) the merged tree with numeric
#             owners, `ls -lan`, whiteout/opaque checks, writes/deletes/
#             appends/chmod/chown, the tree again, the container's upper dir
#             on disk; `podman diff` (sorted), `podman commit`, the committed
#             image run (tree, ls, contents);
#   keepid    `podman run --userns=keep-id`: `id`, owners seen inside, files
#             made as the user and as root (owners inside and on disk);
#   uidmap    `podman run --uidmap 0:1:1000 --uidmap 1000:0:1 --uidmap
#             1001:1001:64535` (same --gidmap): the same as root and as 1000;
#   build     `buildah bud` of a Containerfile whose RUN steps append, chmod,
#             chown, delete lower files; the image run (tree, ls, contents);
#   saveload  `podman save` (the built layer's tar entries), `podman rmi`,
#             `podman load`, run (the same).
# Each running container's root must be a fuse.fuse-overlayfs mount whose
# daemon (found by its mountpoint argument) is the intended binary
# (/proc/PID/exe), and a census of every daemon started on a storage root
# (polled from /proc) must show only that binary.
#
# Every output is kept per mount program in $W/out/{ours,ref}/STEP.CHECK and
# ours must equal 1.10's (normalised: `ls` dates and spaces, the size of
# podman's /etc/hosts and /etc/hostname bind mounts, the temp dir; upper dirs
# compared by meaning, whiteout/opaque spellings and the daemons' own xattrs
# shown as notes).  If 1.10 fails a step, ours is compared with the values
# e2e_helper.py computes instead (kernel-overlay semantics; a note says where
# 1.10 and those values disagree).  Three known differences (e2e_helper.py
# KNOWN: directory st_nlink, a write through one name of a lower hard link,
# a setgid dir's copy-up) are, unless E2E_STRICT=1, compared with the
# computed values instead of 1.10's and shown as notes.
# Prints "PASS podman NAME" or "FAIL podman NAME: reason" (details indented),
# "# ..." information lines, and last "N passed, M failed"; exit 1 if any
# failed, 2 on a missing prerequisite (FATAL).  About 30 s on 2 cores.
#
# Usage: tests/podman/e2e.sh            (root; podman, buildah, uidmap,
#                                       fuse-overlayfs 1.10, busybox-static)
# Env: OURS (default the tree's ./fuse-overlayfs), REF (default
#   /usr/bin/fuse-overlayfs, must be 1.10), E2E_TMPDIR (default /var/tmp),
#   E2E_WRAP=1: mount_program is a wrapper script that logs its argv (per
#   step, printed at the end) and execs the copy; OURS_EXTRA_OPTS=OPTS: the
#   wrapper of ours adds "-o OPTS" (a self-test: the comparisons must then
#   fail; implies E2E_WRAP=1); E2E_STRICT=1: the known differences fail too;
#   KEEP=1 keeps the temp dir (the user, its ids and processes are removed
#   anyway).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
OURS=${OURS:-$top/fuse-overlayfs}
REF=${REF:-/usr/bin/fuse-overlayfs}
BUSYBOX=${BUSYBOX:-/bin/busybox}
PY=/usr/bin/python3
HELPER=$here/e2e_helper.py
SAMPLE_CONF=$top/contrib/storage.conf
OURS_EXTRA_OPTS=${OURS_EXTRA_OPTS:-}
E2E_WRAP=${E2E_WRAP:-0}
[ -n "$OURS_EXTRA_OPTS" ] && E2E_WRAP=1
KEEP=${KEEP:-0}
IMG=localhost/ovle2e:base
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
START=$SECONDS

fatal() { echo "FATAL: $*"; exit 2; }

# ------------------------------------------------------------- cleanup state
W=
UNAME=
UUID_=
SUBSTART=
FUSE_MODE_ORIG=
CENSUS_PID=
USER_MADE=0

# user_pids, kill_user_procs
# shellcheck source=tests/lib/test_user.sh
. "$here/../lib/test_user.sh"

unmount_under() { # every mount below $1 in our mount namespace, deepest first
	local m
	awk -v w="$1" 'index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r m; do
			m=$(printf '%b' "$m")
			fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
				echo "# cleanup: cannot unmount $m"
		done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$CENSUS_PID" ]; then
		kill "$CENSUS_PID" 2>/dev/null
		wait "$CENSUS_PID" 2>/dev/null
	fi
	kill_user_procs "$UUID_" "$SUBSTART"
	[ -n "$W" ] && unmount_under "$W"
	if [ "$USER_MADE" = 1 ]; then
		userdel "$UNAME" >/dev/null 2>&1 || echo "# cleanup: userdel $UNAME failed"
		getent group "$UNAME" >/dev/null && groupdel "$UNAME" >/dev/null 2>&1
		sed -i "/^$UNAME:/d" /etc/subuid /etc/subgid
	fi
	[ -n "$UUID_" ] && rm -f "/dev/shm/libpod_rootless_lock_$UUID_"
	if [ -n "$FUSE_MODE_ORIG" ]; then
		chmod "$FUSE_MODE_ORIG" /dev/fuse || echo "# cleanup: cannot restore /dev/fuse mode $FUSE_MODE_ORIG"
	fi
	if [ -n "$W" ] && [ -d "$W" ]; then
		if [ "$KEEP" = 1 ]; then
			echo "# kept $W"
		else
			rm -rf "$W" 2>/dev/null || echo "# cleanup: cannot remove $W"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || fatal "must run as root (it creates a user and its subuid range)"
for c in podman buildah newuidmap newgidmap runuser conmon runc fusermount3 useradd userdel timeout awk; do
	command -v "$c" >/dev/null || fatal "$c is missing"
done
for c in newuidmap newgidmap; do
	p=$(command -v $c)
	[ -u "$p" ] || getcap "$p" 2>/dev/null | grep -q cap_set || fatal "$p is neither setuid nor has file capabilities"
done
[ -x "$PY" ] || fatal "$PY is missing"
[ -f "$HELPER" ] || fatal "$HELPER is missing"
[ -f "$SAMPLE_CONF" ] || fatal "$SAMPLE_CONF is missing"
[ -c /dev/fuse ] || fatal "/dev/fuse is missing"
[ -x "$OURS" ] || fatal "our binary $OURS is missing (cd $top && ./contrib/build.sh)"
[ -x "$REF" ] || fatal "the reference $REF is missing (apt-get install fuse-overlayfs)"
"$REF" --version 2>&1 | grep -q 'version 1\.10$' || fatal "$REF is not fuse-overlayfs 1.10: $("$REF" --version 2>&1 | head -1)"
"$BUSYBOX" --list >/dev/null 2>&1 || fatal "$BUSYBOX is missing (apt-get install busybox-static)"
[ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" -gt 0 ] || fatal "user namespaces are disabled"

# ------------------------------------------------------------- the user
W=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/ovl-podman-e2e.XXXXXX") || fatal "mktemp failed"
chmod 755 "$W"
UNAME=ovlpm$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
UHOME=$W/home
UUID_=
for u in $(seq 47000 47999); do
	getent passwd "$u" >/dev/null || getent group "$u" >/dev/null || { UUID_=$u; break; }
done
[ -n "$UUID_" ] || fatal "no free uid in 47000..47999"
# a subordinate range clear of every existing one and of the ids
# tests/integration/rootless.sh uses (200000..265535)
SUBSTART=$(awk -F: 'NF >= 3 && $2 ~ /^[0-9]+$/ { print $2, $2 + $3 }' /etc/subuid /etc/subgid 2>/dev/null |
	awk 'function up(x) { return int((x + 65535) / 65536) * 65536 }
	     BEGIN { s = up(3000000); n = 0 } { n++; a[n] = $1; b[n] = $2 }
	     END { do { moved = 0; for (i = 1; i <= n; i++) if (s < b[i] && s + 65536 > a[i]) { s = up(b[i]); moved = 1 } } while (moved)
	           print s }')
useradd -M -d "$UHOME" -s /bin/sh -u "$UUID_" -U "$UNAME" >/dev/null 2>&1 || fatal "useradd $UNAME failed"
USER_MADE=1
UGID=$(id -g "$UNAME")
sed -i "/^$UNAME:/d" /etc/subuid /etc/subgid # useradd may have added a range (SUB_UID_COUNT)
echo "$UNAME:$SUBSTART:65536" >>/etc/subuid
echo "$UNAME:$SUBSTART:65536" >>/etc/subgid
mkdir -p "$UHOME/.config/containers" "$UHOME/tmp" "$UHOME/ctx" "$W/bin" "$W/out/ours" "$W/out/ref"
# /dev/fuse: the daemons run in the user's namespace as that user
fm=$(stat -c %a /dev/fuse)
if [ $((8#$fm & 8#006)) != $((8#006)) ]; then
	FUSE_MODE_ORIG=$fm
	chmod 0666 /dev/fuse || fatal "cannot chmod /dev/fuse"
	echo "# /dev/fuse was $fm: 0666 for the test, restored at exit"
fi
echo "# user $UNAME uid $UUID_ gid $UGID, sub ids $SUBSTART..$((SUBSTART + 65535)), dir $W"

# the binaries, where the user can execute them
# named fuse-overlayfs: 1.10 takes the FUSE subtype (fuse.NAME) from argv[0]
mkdir -p "$W/bin/ours" "$W/bin/ref"
cp "$OURS" "$W/bin/ours/fuse-overlayfs" && cp "$REF" "$W/bin/ref/fuse-overlayfs" || fatal "cannot copy the binaries"
chmod 755 "$W/bin/ours/fuse-overlayfs" "$W/bin/ref/fuse-overlayfs"
for p in ours ref; do
	extra=
	[ "$p" = ours ] && [ -n "$OURS_EXTRA_OPTS" ] && extra="-o '$OURS_EXTRA_OPTS' "
	cat >"$W/bin/wrap-$p" <<EOF
#!/bin/sh
echo "\$(cat $W/out/$p/curstep 2>/dev/null) \$*" >>$W/out/$p/argv.log
exec $W/bin/$p/fuse-overlayfs $extra"\$@"
EOF
	chmod 755 "$W/bin/wrap-$p"
	: >"$W/out/$p/argv.log"
	echo setup >"$W/out/$p/curstep"
done

cat >"$UHOME/.config/containers/containers.conf" <<EOF
# no systemd user session here: cgroupfs, events to a file; no slirp4netns
[containers]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
image_copy_tmp_dir = "$UHOME/tmp"
EOF
for p in ours ref; do
	mp=$W/bin/$p/fuse-overlayfs
	[ "$E2E_WRAP" = 1 ] && mp=$W/bin/wrap-$p
	mkdir -p "$UHOME/$p" "$W/run-$p"
	# the sample of contrib/storage.conf with this mount program and root
	sed -e "s|^mount_program = .*|mount_program = \"$mp\"|" \
		-e "s|^# graphroot = .*|graphroot = \"$UHOME/$p/graph\"|" \
		-e "s|^# runroot = .*|runroot = \"$UHOME/$p/run\"|" \
		"$SAMPLE_CONF" >"$UHOME/.config/containers/storage-$p.conf"
	for k in "mount_program = \"$mp\"" "graphroot = \"$UHOME/$p/graph\"" "runroot = \"$UHOME/$p/run\"" 'driver = "overlay"'; do
		grep -qxF "$k" "$UHOME/.config/containers/storage-$p.conf" ||
			fatal "$SAMPLE_CONF: no line to make '$k' from"
	done
done
chown -R "$UNAME:$UGID" "$UHOME" "$W/run-ours" "$W/run-ref" "$W/out"
chmod 700 "$W/run-ours" "$W/run-ref"

$PY "$HELPER" image "$W/image.tar" "$BUSYBOX" || fatal "cannot build the image archive"
chmod 644 "$W/image.tar"

cat >"$UHOME/ctx/Containerfile" <<'EOF'
FROM localhost/ovle2e:base
RUN sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \/ .* - \([^ ]*\) .*/rootfs type: \1/p' /proc/self/mountinfo; echo appended >> /etc/base.conf && chmod 600 /t/lower.txt && chown 65534:1 /home/user/notes.txt && rm -rf /var/nobody && rm /t/del.txt && mkdir /t/built && echo built > /t/built/f && chown 1000:1000 /t/built/f
RUN echo second >> /opt/app/new1 && chmod 4711 /t/own1 && chown 1:65534 /t/sgiddir && echo x >> /t/hl2
EOF
chown -R "$UNAME:$UGID" "$UHOME/ctx"

$PY "$HELPER" census "$UHOME/" "$W/census" "$W/curstep" &
CENSUS_PID=$!

# ------------------------------------------------------------- the probe
# busybox sh inside the container: `sh -c "$PROBE" probe ACTION...`; each
# action's output follows a line "@@@ ACTION"
# shellcheck disable=SC2016
PROBE='
tree() {
	for r in /t /opt /home /var /srv /etc/base.conf /etc/added.conf /etc/removed.conf; do
		[ -e "$r" ] || [ -L "$r" ] || continue
		find "$r" -xdev
	done | sort | while IFS= read -r p; do
		if [ -L "$p" ]; then echo "l $(stat -c %u:%g "$p") $p -> $(readlink "$p")"
		elif [ -d "$p" ]; then echo "d $(stat -c "%a %u:%g" "$p") $p"
		elif [ -f "$p" ]; then echo "f $(stat -c "%a %u:%g %s %h" "$p") $p $(md5sum < "$p" | cut -c1-8)"
		else echo "? $(stat -c "%F %a %u:%g" "$p") $p"; fi
	done
}
ck() { # NAME CONDITION...
	n=$1; shift
	if "$@"; then echo "ok $n"; else echo "bad $n"; fi
}
whiteouts() {
	ck "removed.conf hidden" sh -c "[ ! -e /etc/removed.conf ] && ! ls -a /etc | grep -qx removed.conf && [ ! -e /etc/.wh.removed.conf ]"
	ck "gone hidden" sh -c "[ ! -e /t/gone ] && [ ! -e /t/gone/f1 ] && ! ls -a /t | grep -qx gone && [ ! -e /t/.wh.gone ]"
	ck "opaque hides old" sh -c "[ \"\$(ls -A /opt/app | tr \"\\n\" \" \")\" = \"new1 newdir \" ] && [ ! -e /opt/app/old1 ] && [ ! -e /opt/app/olddir/x ]"
	ck "opaque keeps new" sh -c "[ -f /opt/app/new1 ] && [ -f /opt/app/newdir/n2 ]"
	ck "no .wh. names" sh -c "[ -z \"\$(find / -xdev -name \".wh.*\")\" ] && [ ! -e /opt/app/.wh..wh..opq ]"
	ck "replaced own1" sh -c "[ \"\$(cat /t/own1)\" = one-v2 ]"
	ck "hardlink" sh -c "[ /t/hl1 -ef /t/hl2 ]"
}
for a in "$@"; do
	echo "@@@ $a"
	case $a in
	tree | *-tree | tree-*) tree ;;
	ls | *-ls | ls-*) ls -lan /t /t/sub /opt/app /opt/app/newdir /etc /home/user /var/nobody /srv 2>&1 ;;
	contents | *-contents | contents-*)
		for f in /t/lower.txt /t/own1 /t/new.txt /etc/base.conf /opt/app/new1 /t/newdir/inner /t/built/f /t/hl1 /t/hl2; do
			if [ -e "$f" ]; then echo "$f $(tr "\n" "|" < "$f")"; else echo "$f (absent)"; fi
		done ;;
	whiteouts) whiteouts ;;
	change)
		echo new > /t/new.txt &&
		mkdir /t/newdir && echo inner > /t/newdir/inner && chown 65534:65534 /t/newdir/inner &&
		chmod 600 /t/newdir/inner && rm /t/del.txt && echo more >> /t/lower.txt &&
		rm -rf /opt/app/newdir && chmod 640 /t/own1000 && chown 1:1 /var/nobody/file &&
		echo s > /t/sgiddir/newf && mkdir /t/sgiddir/newd && echo x >> /t/hl2 || exit 1 ;;
	id*) echo "$(id -u) $(id -g)" ;;
	create-user) echo k > /tmp/kuser && mkdir /tmp/kdir || exit 1 ;;
	create-root)
		echo r > /t/kroot && echo c > /t/kchown && chown 1000:65534 /t/kchown &&
		echo u > /tmp/kuid && chown "$KUID:$KGID" /tmp/kuid || exit 1 ;;
	created-keepid) stat -c "%u:%g %a %n" /tmp/kuser /tmp/kdir /t/kroot /t/kchown /tmp/kuid ;;
	create-root3)
		echo r0 > /t/r0 && mkdir /t/r0dir && for i in 65534 999 1001; do
			echo c > /t/c$i && chown $i:$i /t/c$i || exit 1; done ;;
	create-1000) echo u > /tmp/u1000 || exit 1 ;;
	created-uidmap) stat -c "%u:%g %a %n" /t/r0 /t/r0dir /t/c65534 /t/c999 /t/c1001 /tmp/u1000 ;;
	*) echo "unknown action $a"; exit 1 ;;
	esac
done
'

# ------------------------------------------------------------- running things
P=          # current mount program: ours or ref
O=          # its output dir
LOG=        # its command log
STEP_ERR=

U() { # CMD...: as the test user, with its runtime dir for P
	(cd "$UHOME" && timeout -k 5 "${TMO:-120}" runuser -u "$UNAME" -- env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
		HOME="$UHOME" USER="$UNAME" LOGNAME="$UNAME" XDG_RUNTIME_DIR="$W/run-$P" \
		XDG_CONFIG_HOME="$UHOME/.config" XDG_DATA_HOME="$UHOME/.local/share" \
		TMPDIR="$UHOME/tmp" "$@")
}

uc() { # OUT CMD...: U CMD, stdout to OUT (/dev/null: dropped), stderr to LOG; on failure STEP_ERR
	local out=$1 rc
	shift
	printf '$ %s\n' "$*" | cut -c1-300 >>"$LOG"
	# in the background: a signal's trap runs at once, not after the command
	U "$@" >"$O/.stdout" 2>>"$LOG" &
	wait $!
	rc=$?
	if [ "$rc" != 0 ]; then
		STEP_ERR="\`$(printf '%s' "$*" | cut -c1-160)\` exited $rc: $(grep -v '^\$ ' "$LOG" | tail -n 4 | tr '\n' ' ' | cut -c1-600)"
		cat "$O/.stdout" >>"$LOG"
		return 1
	fi
	[ "$out" = /dev/null ] || mv "$O/.stdout" "$out"
	return 0
}

split_sections() { # FILE PREFIX: "@@@ NAME" sections of FILE to PREFIX.NAME
	awk -v pre="$2" '/^@@@ / { f = pre "." $2; printf "" > f; next } f { print >> f }' "$1"
}

probe() { # STEP PODMAN-ARGS... -- ACTIONS...: run the probe, sections to $O/STEP.ACTION
	local step=$1 a=() acts=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	acts=("$@")
	uc "$O/.probe" podman "${a[@]}" sh -c "$PROBE" probe "${acts[@]}" || return 1
	split_sections "$O/.probe" "$O/$step"
}

mount_check() { # STEP CONTAINER: the container's root is a FUSE mount served by $W/bin/$P
	local step=$1 c=$2 pid merged line fstype d dpid dexe f=$O/$1.mount
	: >"$f"
	uc "$O/.pid" podman inspect --format '{{.State.Pid}}' "$c" || return 1
	uc "$O/.merged" podman inspect --format '{{.GraphDriver.Data.MergedDir}}' "$c" || return 1
	pid=$(cat "$O/.pid")
	merged=$(cat "$O/.merged")
	line=$(awk '$5 == "/" { print }' "/proc/$pid/mountinfo" 2>/dev/null | tail -n 1)
	fstype=$(printf '%s\n' "$line" | sed -n 's/.* - \([^ ]*\) .*/\1/p')
	if [ "$fstype" = fuse.fuse-overlayfs ]; then
		echo "ok container root is fuse.fuse-overlayfs" >>"$f"
	else
		echo "bad container root: /proc/$pid/mountinfo: ${line:-no / mount}" >>"$f"
	fi
	d=$($PY "$HELPER" daemon "$merged")
	if [ "$(printf '%s\n' "$d" | grep -c .)" != 1 ]; then
		echo "bad daemons serving $merged: ${d:-none}" >>"$f"
		return 0
	fi
	dpid=${d%% *}
	dexe=${d#* }
	if [ "$dexe" = "$W/bin/$P/fuse-overlayfs" ]; then
		echo "ok daemon is the $P binary (/proc/PID/exe)" >>"$f"
	else
		echo "bad daemon $dpid is $dexe, not $W/bin/$P/fuse-overlayfs" >>"$f"
	fi
	if awk -v m="$merged" '$2 == m && $3 == "fuse.fuse-overlayfs" { ok = 1 } END { exit !ok }' "/proc/$dpid/mounts"; then
		echo "ok merged dir is a fuse.fuse-overlayfs mount in /proc/DAEMON/mounts" >>"$f"
	else
		echo "bad $merged not a fuse.fuse-overlayfs mount in /proc/$dpid/mounts" >>"$f"
	fi
	tr '\0' ' ' <"/proc/$dpid/cmdline" | sed "s|$UHOME/$P/graph|GRAPH|g" >"$O/$step.daemon-argv"
}

upper() { # STEP CONTAINER: its upper dir as on disk (STEP.upper, STEP.upper-raw)
	uc "$O/.upperdir" podman inspect --format '{{.GraphDriver.Data.UpperDir}}|{{.GraphDriver.Data.LowerDir}}' "$2" || return 1
	IFS='|' read -r ud ld <"$O/.upperdir"
	$PY "$HELPER" upper "$ud" "$UUID_" "$SUBSTART" "$ld" "$O/$1.upper" "$O/$1.upper-raw" 2>>"$LOG" || {
		STEP_ERR="cannot list the upper dir $ud"
		return 1
	}
}

step_setup() {
	local f=$O/setup.info mp=$W/bin/$P/fuse-overlayfs
	[ "$E2E_WRAP" = 1 ] && mp=$W/bin/wrap-$P
	: >"$f"
	uc "$O/.info" podman info --format json || return 1
	$PY - "$O/.info" "$mp" "$UHOME/$P/graph" "$UHOME/.config/containers/storage.conf" >"$f" <<'EOF' || return 1
import json, sys
i = json.load(open(sys.argv[1]))
st = i["store"]
mp = st["graphOptions"].get("overlay.mount_program", {})
for what, got, want in (("driver", st["graphDriverName"], "overlay"),
                        ("mount_program", mp.get("Executable"), sys.argv[2]),
                        ("graph root", st["graphRoot"], sys.argv[3]),
                        ("config file", st["configFile"], sys.argv[4])):
    print("%s %s %s" % ("ok" if got == want else "bad", what, got) +
          ("" if got == want else " (want %s)" % want))
print("# mount_program version: " + " / ".join(str(mp.get("Version")).splitlines()))
print("# cgroup manager %s, runtime %s" % (i["host"]["cgroupManager"], i["host"]["ociRuntime"]["name"]))
EOF
	uc /dev/null podman load -i "$W/image.tar" || return 1
}

step_run() {
	uc /dev/null podman run -d --network none --name e2e-run "$IMG" sleep 600 || return 1
	mount_check run e2e-run || return 1
	probe run exec e2e-run -- tree-before ls-before whiteouts || return 1
	probe run exec e2e-run -- change || return 1
	probe run exec e2e-run -- tree-after ls-after contents-after || return 1
	upper run e2e-run || return 1
	uc /dev/null podman kill e2e-run || return 1
	uc /dev/null podman wait e2e-run || return 1
	uc "$O/.diff" podman diff e2e-run || return 1
	sort "$O/.diff" >"$O/run.diff"
	uc /dev/null podman commit -q e2e-run localhost/ovle2e:run || return 1
	probe run run --rm --network none localhost/ovle2e:run -- commit-tree commit-ls commit-contents || return 1
	uc /dev/null podman rm e2e-run || return 1
}

step_keepid() {
	uc /dev/null podman run -d --network none --userns=keep-id --name e2e-keepid "$IMG" sleep 600 || return 1
	mount_check keepid e2e-keepid || return 1
	probe keepid exec e2e-keepid -- id create-user || return 1
	probe keepid exec --user 0 -e KUID="$UUID_" -e KGID="$UGID" e2e-keepid -- tree create-root created-keepid || return 1
	mv "$O/keepid.created-keepid" "$O/keepid.created"
	upper keepid e2e-keepid || return 1
	uc /dev/null podman kill e2e-keepid || return 1
	uc /dev/null podman rm e2e-keepid || return 1
}

step_uidmap() {
	local m=()
	for x in uid gid; do m+=("--${x}map" 0:1:1000 "--${x}map" 1000:0:1 "--${x}map" 1001:1001:64535); done
	uc /dev/null podman run -d --network none "${m[@]}" --name e2e-uidmap "$IMG" sleep 600 || return 1
	mount_check uidmap e2e-uidmap || return 1
	probe uidmap exec --user 0 e2e-uidmap -- id-root tree create-root3 || return 1
	probe uidmap exec --user 1000:1000 e2e-uidmap -- id-1000 create-1000 || return 1
	probe uidmap exec --user 0 e2e-uidmap -- created-uidmap || return 1
	mv "$O/uidmap.created-uidmap" "$O/uidmap.created"
	upper uidmap e2e-uidmap || return 1
	uc /dev/null podman kill e2e-uidmap || return 1
	uc /dev/null podman rm e2e-uidmap || return 1
}

step_build() {
	TMO=240 uc "$O/build.log" buildah bud --network none -t localhost/ovle2e:built -f "$UHOME/ctx/Containerfile" "$UHOME/ctx" || return 1
	grep '^rootfs type:' "$O/build.log" >"$O/build.rootfs"
	probe build run --rm --network none localhost/ovle2e:built -- tree ls contents || return 1
}

step_saveload() {
	rm -f "$UHOME/tmp/built-$P.tar"
	uc /dev/null podman save -q -o "$UHOME/tmp/built-$P.tar" localhost/ovle2e:built || return 1
	$PY "$HELPER" layer "$UHOME/tmp/built-$P.tar" "$O/saveload.layer" 2>>"$LOG" || {
		STEP_ERR="cannot read the saved archive's top layer"
		return 1
	}
	uc /dev/null podman rmi localhost/ovle2e:built || return 1
	uc /dev/null podman load -q -i "$UHOME/tmp/built-$P.tar" || return 1
	probe saveload run --rm --network none localhost/ovle2e:built -- tree ls contents || return 1
}

STEPS="setup run keepid uidmap build saveload"
for P in ours ref; do
	O=$W/out/$P
	LOG=$O/log
	: >"$LOG"
	# the user's own storage.conf (a system one, CONTAINERS_STORAGE_CONF,
	# would have its graphroot ignored rootless: rootless_storage_path)
	cp "$UHOME/.config/containers/storage-$P.conf" "$UHOME/.config/containers/storage.conf"
	chown "$UNAME:$UGID" "$UHOME/.config/containers/storage.conf"
	for s in $STEPS; do
		echo "$P $s" >"$W/curstep"
		echo "$s" >"$O/curstep"
		echo "### step $s" >>"$LOG"
		STEP_ERR=
		if ! "step_$s"; then
			echo "${STEP_ERR:-failed}" >"$O/$s.err"
			if [ "$s" = setup ]; then # nothing else can run
				for t in $STEPS; do
					[ "$t" = setup ] || echo "not run: setup failed" >"$O/$t.err"
				done
				break
			fi
			# a failed step may leave its container: remove it
			U podman rm -f "e2e-$s" >/dev/null 2>&1
		fi
	done
	echo "done" >"$W/curstep"
	# the next mount program starts from nothing: no pause process, no conmon
	U podman rm -af >/dev/null 2>&1
	kill_user_procs "$UUID_" "$SUBSTART"
done
kill "$CENSUS_PID" 2>/dev/null
wait "$CENSUS_PID" 2>/dev/null
CENSUS_PID=

# ------------------------------------------------------------- comparing
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS podman $1"; }
fail() { # NAME REASON [DETAIL-FILE]
	failed=$((failed + 1))
	echo "FAIL podman $1: $2"
	if [ -n "${3:-}" ] && [ -s "$3" ]; then head -n 40 "$3" | sed 's/^/    /'; fi
	return 0
}

# CHECKS: STEP.NAME of every compared output; *.mount and setup.info are
# assertions ("bad" lines) on each side
CHECKS="setup.info
run.mount run.tree-before run.ls-before run.whiteouts run.tree-after run.ls-after run.contents-after run.upper run.diff run.commit-tree run.commit-ls run.commit-contents
keepid.mount keepid.id keepid.tree keepid.created keepid.upper
uidmap.mount uidmap.id-root uidmap.id-1000 uidmap.tree uidmap.created uidmap.upper
build.rootfs build.tree build.ls build.contents
saveload.layer saveload.tree saveload.ls saveload.contents"

D=$W/out/diff
for s in $STEPS; do
	if [ -f "$W/out/ref/$s.err" ]; then
		echo "# 1.10 failed step $s: $(cat "$W/out/ref/$s.err")"
		echo "#   (ours is compared with the computed expected values there)"
	fi
	if [ -f "$W/out/ours/$s.err" ]; then
		fail "$s" "ours failed: $(cat "$W/out/ours/$s.err")"
	else
		pass "$s"
	fi
done
for c in $CHECKS; do
	s=${c%%.*}
	of=$W/out/ours/$c
	rf=$W/out/ref/$c
	if [ ! -f "$of" ]; then
		fail "$c" "no output from ours (step $s failed before it)"
		continue
	fi
	case $c in
	*.mount | setup.info)
		if grep -q '^bad' "$of"; then
			fail "$c" "ours" "$of"
		elif [ -f "$rf" ] && grep -q '^bad' "$rf"; then
			fail "$c" "1.10 side (test setup)" "$rf"
		else
			pass "$c"
		fi
		continue
		;;
	esac
	[ -f "$W/out/ref/$s.err" ] && [ ! -f "$rf" ] && rf=-
	if $PY "$HELPER" compare "$c" "$of" "$rf" "$UUID_" "$UGID" "${E2E_STRICT:-0}" "$W=W"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	if [ "${c#*.}" = upper ] && ! diff -aq "$W/out/ref/$c-raw" "$of-raw" >/dev/null 2>&1 && [ -f "$W/out/ref/$c-raw" ]; then
		echo "# note: $c: the upper dirs as stored differ (whiteout/opaque spelling, internal xattrs; not compared):"
		diff -a -U0 --label 1.10 --label ours "$W/out/ref/$c-raw" "$of-raw" | grep '^[-+][^-+]' | head -n 16 | sed 's/^/#     /'
	fi
done

# the census: every daemon started on each storage root was its binary
for p in ours ref; do
	name=1.10
	[ "$p" = ours ] && name=ours
	n=$(grep -c "$UHOME/$p/" "$W/census" 2>/dev/null)
	bad=$(grep "$UHOME/$p/" "$W/census" 2>/dev/null | awk -F'\t' -v e="$W/bin/$p/fuse-overlayfs" '$3 != e')
	if [ "${n:-0}" = 0 ]; then
		fail "census.$p" "no mount program seen on $name's storage root"
	elif [ -n "$bad" ]; then
		printf '%s\n' "$bad" >"$D"
		fail "census.$p" "daemons on $name's storage that are not $W/bin/$p/fuse-overlayfs" "$D"
	else
		pass "census.$p"
		echo "# census: $n daemons on $name's storage, all $W/bin/$p/fuse-overlayfs; steps: $(grep "$UHOME/$p/" "$W/census" | cut -f1 | awk '{ print $2 }' | uniq -c | awk '{ printf "%s %s, ", $2, $1 }' | sed 's/, $//')"
	fi
done

if [ "${E2E_STRICT:-0}" != 1 ]; then
	echo "# known differences from 1.10 (E2E_STRICT=1 compares them with 1.10 too; here ours is"
	echo "# compared with the expected values on the lines they cover):"
	$PY "$HELPER" known | fold -s -w 100 | sed 's/^/#   /'
fi

# the mount options podman passed, per step
echo "# mount options passed (ours; graph root shown as GRAPH):"
if [ "$E2E_WRAP" = 1 ]; then
	sed "s|$UHOME/ours/graph|GRAPH|g; s|/overlay/l/[A-Z0-9]*|/l/L|g; s|/overlay/[0-9a-f]\{64\}|/ID|g" "$W/out/ours/argv.log" |
		sort | uniq -c | sed 's/^/#   /'
else
	grep "$UHOME/ours/" "$W/census" | cut -f1,4 | sed "s|$W/bin/ours/fuse-overlayfs|PROG|; s|\t| |; s|$UHOME/ours/graph|GRAPH|g; s|/overlay/l/[A-Z0-9]*|/l/L|g; s|/overlay/[0-9a-f]\{64\}|/ID|g; s|^ours ||" |
		sort | uniq -c | sed 's/^/#   /'
fi

echo "# time: $((SECONDS - START)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
