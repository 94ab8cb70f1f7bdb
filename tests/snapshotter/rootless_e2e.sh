#!/bin/bash
# End to end, rootless: a user's containerd 1.6 under RootlessKit on our
# snapshotter shim, the shim started as the systemd --user unit that
# contrib/snapshotter/install-rootless.sh writes would start it.
#
# Creates an unprivileged user (useradd -m, which gives it a 65536-id range
# in /etc/subuid and /etc/subgid), its XDG_RUNTIME_DIR /run/user/UID, and
# makes /dev/fuse world read-writable (udev's 0666) for the run.  Then:
#   * contrib/snapshotter/install-rootless.sh, as the user before containerd
#     runs and /dev/fuse is open to it, must name both and exit non-zero;
#     as root it must refuse;
# and for each mount mode of the shim (helper: containerd mounts
# fuse3.fuse-overlayfs through mount.fuse3; self: --mount-mode=self, the shim
# mounts and hands back bind mounts), as the user:
#   * RootlessKit starts containerd as nerdctl's containerd-rootless.sh does
#     (`rootlesskit --net=host --copy-up=/etc --copy-up=/run --state-dir=...
#     containerd -c CONFIG`, root under ~/.local/share, state and sockets
#     under XDG_RUNTIME_DIR, the proxy plugin "fuse-overlayfs");
#   * install-rootless.sh --no-systemctl writes the unit and prints the
#     config.toml lines (the same as containerd's) and the environment;
#     `systemd-analyze verify --user` accepts it (and the template in
#     contrib/); the shim is started by the unit's own command (its
#     Environment= and ExecStart= lines, %t/%h expanded as systemd would),
#     which enters containerd's user and mount namespaces (nsenter -t
#     child_pid); with a NOTIFY_SOCKET (sd_notify_listen.py plays systemd)
#     it sends READY=1 as the unit's main PID (Type=notify);
#   * containerd, started first, reaches the shim once its dial backoff ends;
#   * through ctr (also in those namespaces): the steps of e2e.sh (import of
#     the two-layer image with .wh. whiteouts, the committed snapshots and
#     layers on disk, containers that list, write, delete and append, a second
#     one that sees the image unchanged, a read-only one, a kept container's
#     upper, the type of the mounts handed back, a restart of the shim, the
#     removal of the container, see e2e_lib.sh);
#   * a fault: with a container running (`ctr run -d`), the shim is killed
#     with SIGKILL and started again: the snapshots listed through containerd
#     are unchanged, the running container reads a file of the image and one
#     it wrote before the kill (ctr task exec) and can still write; in self
#     mode the restarted shim keeps the live overlay (same FUSE daemon);
#   * no mounts left, the shim exits 0 on SIGTERM, RootlessKit and its
#     children exit on SIGTERM, no process of the user is left;
#     install-rootless.sh uninstall removes the unit.
# Last: userdel -r removes the user, its home and its subuid/subgid lines
# (the files are as before), /run/user/UID goes and /dev/fuse has its mode
# back.  All of it is undone by a trap on failure or a signal too.
# The runc shim's "wait: no child processes" race can fail a container
# start in helper mode: retried as in e2e.sh.
#
# Usage: tests/snapshotter/rootless_e2e.sh   (root; contrib/install-deps.sh
#        and `make install` done: fuse-overlayfs in /usr/local/bin)
# Environment: SNAPSHOTTER_BIN (default: the tree's containerd-fuse-overlayfs-grpc,
#   copied into the work directory), MODES (default "helper self"), BUSYBOX
#   (default /bin/busybox, static), E2E_TMPDIR (default /var/tmp), KEEP=1
#   keeps the work directory (the user and its home go anyway).
# Prints "ok N - NAME" / "not ok N - NAME: DETAIL" and ends with
# "N passed, M failed"; exits 1 on any failure.  A missing prerequisite is a
# failure.  About 15 s on 2 cores.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
SHIM_SRC=${SNAPSHOTTER_BIN:-$top/containerd-fuse-overlayfs-grpc}
MODES=${MODES:-helper self}
INSTALL=$top/contrib/snapshotter/install-rootless.sh
NOTIFY_LISTEN=$here/sd_notify_listen.py
UNIT_NAME=containerd-fuse-overlayfs.service
UNIT_TEMPLATE=$top/contrib/snapshotter/containerd-fuse-overlayfs.user.service
UPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$UPATH
# shellcheck source=tests/snapshotter/e2e_lib.sh
. "$here/e2e_lib.sh"
# shellcheck source=tests/lib/test_user.sh
. "$here/../lib/test_user.sh"
# rootless on cgroup v1, containerd cannot open the memory cgroup's
# cgroup.event_control for its OOM monitor: logged for every task
CONTAINERD_NOISE='msg="add cg to OOM monitor"'
cd / || exit 1

# ------------------------------------------------------------------ state, for the trap
W=
UNAME=
UIDN=
UHOME=
XRD=
SUBSTART=
USER_MADE=0
RUN_USER_MADE=0
FUSE_MODE_ORIG=
PID_CTR=
RK_RU=   # runuser running rootlesskit
RK_PID=  # rootlesskit (the parent, outside the namespaces)
CHILD=   # RootlessKit's child in the namespaces (child_pid), containerd's parent
SHIM_RU= # runuser running the shim

# ------------------------------------------------------------------ the user's processes
the_users_pids() { user_pids "$UIDN" "$SUBSTART"; }
kill_the_users_procs() { kill_user_procs "$UIDN" "$SUBSTART" >&2; }
no_user_pids() { [ -z "$(the_users_pids)" ]; }
describe_pids() { # PIDS...: "PID STATE COMMAND" lines
	local p
	for p in "$@"; do
		echo "$p $(awk '/^State:/ {print $2; exit}' "/proc/$p/status" 2>/dev/null) $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-150)"
	done
}
child_of() { # PID EXE: the child of PID running EXE (resolved path), if any
	local c
	for c in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
		[ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$2" ] && echo "$c" && return 0
	done
	return 1
}

# ------------------------------------------------------------------ as the user
ASU=() # runuser ... env ...: a command line that runs what follows as the user (set once it exists)
as_user() { # CMD...: as the test user, in its home, with its XDG directories
	"${ASU[@]}" "$@"
}
# the hooks of e2e_lib.sh
in_ns() { # CMD...: as the user, inside the user and mount namespaces of its containerd
	as_user nsenter -U --preserve-credentials -m -t "$CHILD" "$@"
}
c() { # MODE ctr-args...
	shift
	# ctr mounts the image for a moment (to read /etc/group) under TMPDIR
	in_ns env TMPDIR="$UHOME/tmp" timeout -k 5 30 ctr -a "$XRD/containerd/containerd.sock" -n "$NS" "$@"
}
shim_root() { echo "$UHOME/.local/share/containerd-fuse-overlayfs"; }
run_opts() { RUN_OPTS=(--cgroup "" --cpu-shares 0); } # cgroup v1, rootless: no cgroup
mount_table() { echo "/proc/$CHILD/mounts"; }

unit_file() { echo "$UHOME/.config/systemd/user/$UNIT_NAME"; }
unit_env() { # the unit's Environment= assignments, specifiers expanded, one a line
	sed -n 's/^Environment=//p' "$(unit_file)" | sed "s|%t|$XRD|g; s|%h|$UHOME|g; s|%%|%|g"
}
unit_exec() { # the shell command of the unit's ExecStart=/bin/sh -c '...', $$ as the shell's $
	sed -n "s/^ExecStart=\/bin\/sh -c '\(.*\)'\$/\1/p" "$(unit_file)" | sed 's/\$\$/$/g'
}
NOTIFY= # a NOTIFY_SOCKET for the next start_shim, as systemd --user gives a Type=notify unit
start_shim() { # MODE: the unit's command, as systemd --user would run it
	local mode=$1 i env=() cmd
	mapfile -t env < <(unit_env)
	[ -n "$NOTIFY" ] && env+=("NOTIFY_SOCKET=$NOTIFY")
	NOTIFY=
	cmd=$(unit_exec)
	SHIM_PID[$mode]=
	if [ -z "$cmd" ]; then
		echo "# no ExecStart=/bin/sh -c '...' in $(unit_file)" >>"$W/$mode/shim.log"
		return 1
	fi
	# not through a function: $! must be runuser's PID
	"${ASU[@]}" env "${env[@]}" sh -c "$cmd" >>"$W/$mode/shim.log" 2>&1 </dev/null &
	SHIM_RU=$!
	for ((i = 0; i < 100; i++)); do
		SHIM_PID[$mode]=$(child_of "$SHIM_RU" "$SHIM") && break
		alive "$SHIM_RU" || break
		sleep 0.05
	done
	[ -n "${SHIM_PID[$mode]}" ]
}
stop_shim() { # MODE [SIGNAL]: returns the shim's exit status (runuser passes it on)
	local pid=${SHIM_PID[$1]:-} i rc=0
	SHIM_PID[$1]=
	if alive "$pid"; then
		kill "-${2:-TERM}" "$pid"
		for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
		alive "$pid" && kill -KILL "$pid"
	fi
	if [ -n "$SHIM_RU" ]; then
		wait "$SHIM_RU"
		rc=$?
	fi
	SHIM_RU=
	return $rc
}

verify_unit() { # NAME UNIT-FILE OUT: systemd-analyze verify --user, as the user, finds nothing to say
	command -v systemd-analyze >/dev/null || return 0
	# the unit binds to the user's containerd.service (nerdctl's): a stand-in for verify
	printf '[Unit]\nDescription=stand-in for rootless containerd\n[Service]\nExecStart=/bin/true\n' |
		as_user tee "$UHOME/.config/systemd/user/containerd.service" >/dev/null
	if as_user systemd-analyze verify --user "$2" >"$3" 2>&1 && [ ! -s "$3" ]; then
		ok "$1"
	else
		notok "$1" "it says:" "$3"
	fi
	as_user rm -f "$UHOME/.config/systemd/user/containerd.service"
}

# ------------------------------------------------------------------ cleanup
stop_containerd() { # RootlessKit by PID (SIGTERM, it passes it on); 0 when it, its child and containerd are gone
	local pids=() kids=() p i
	[ -n "$RK_PID" ] && pids+=("$RK_PID")
	if [ -n "$CHILD" ]; then
		pids+=("$CHILD")
		read -ra kids <"/proc/$CHILD/task/$CHILD/children" 2>/dev/null && pids+=("${kids[@]}")
	fi
	alive "$RK_PID" && kill -TERM "$RK_PID"
	for ((i = 0; i < 100; i++)); do
		for p in "${pids[@]}"; do alive "$p" && break; done
		alive "$p" || break
		sleep 0.1
	done
	STOP_LEFT=()
	for p in "${pids[@]}"; do alive "$p" && STOP_LEFT+=("$p"); done
	for p in "${STOP_LEFT[@]}"; do kill -KILL "$p" 2>/dev/null; done
	[ -n "$RK_RU" ] && wait "$RK_RU" 2>/dev/null
	RK_RU=
	RK_PID=
	CHILD=
	[ ${#STOP_LEFT[@]} = 0 ]
}

remove_containers() { # through containerd, while it runs: every task killed, every container removed
	local id
	[ -n "$CHILD" ] && alive "$CHILD" || return 0
	for id in $(c - task ls -q 2>/dev/null); do
		c - task kill -s KILL "$id" >/dev/null 2>&1
	done
	for id in $(c - task ls -q 2>/dev/null); do
		wait_until 5 eval "c - task ls 2>/dev/null | awk -v i='$id' '\$1 == i && \$3 == \"STOPPED\" {f = 1} END {exit !f}'"
		c - task rm -f "$id" >/dev/null 2>&1
	done
	for id in $(c - containers ls -q 2>/dev/null); do
		c - containers rm "$id" >/dev/null 2>&1
	done
}

remove_user() { # userdel -r; the user's lines in /etc/subuid, /etc/subgid gone whatever userdel did
	local i
	[ "$USER_MADE" = 1 ] || return 0
	USER_MADE=0
	for i in $(seq 1 50); do # zombies wait for PID 1, and userdel refuses a user with processes
		no_user_pids && break
		sleep 0.2
	done
	userdel -r "$UNAME" >"$W/userdel.out" 2>&1
	USERDEL_RC=$?
	getent group "$UNAME" >/dev/null && groupdel "$UNAME" >/dev/null 2>&1
	SUB_LEFT=$(grep -l "^$UNAME:" /etc/subuid /etc/subgid 2>/dev/null)
	[ -n "$SUB_LEFT" ] && sed -i "/^$UNAME:/d" /etc/subuid /etc/subgid
	HOME_LEFT=0
	if [ -d "$UHOME" ]; then
		HOME_LEFT=1
		rm -rf --one-file-system "$UHOME"
	fi
	return $USERDEL_RC
}

remove_run_user() {
	[ -n "$XRD" ] && [ -d "$XRD" ] && rm -rf --one-file-system "$XRD"
	[ "$RUN_USER_MADE" = 1 ] && rmdir /run/user 2>/dev/null
	RUN_USER_MADE=0
}

restore_fuse() {
	[ -n "$FUSE_MODE_ORIG" ] || return 0
	chmod "$FUSE_MODE_ORIG" /dev/fuse || { echo "# cleanup: cannot restore /dev/fuse mode $FUSE_MODE_ORIG" >&2; return 1; }
	FUSE_MODE_ORIG=
}

cleanup() {
	local m
	trap - EXIT INT TERM HUP
	alive "$PID_CTR" && kill -TERM "$PID_CTR" 2>/dev/null
	remove_containers
	for m in $MODES; do alive "${SHIM_PID[$m]:-}" && stop_shim "$m"; done
	alive "$RK_PID" && { stop_containerd || echo "# cleanup: RootlessKit or containerd ignored SIGTERM, SIGKILL" >&2; }
	kill_the_users_procs
	remove_user || echo "# cleanup: userdel -r $UNAME failed: $(cat "$W/userdel.out" 2>/dev/null)" >&2
	remove_run_user
	restore_fuse
	[ -n "$W" ] && [ -d "$W" ] || return 0
	if [ -n "${KEEP:-}" ]; then
		echo "# kept: $W" >&2
	else
		rm -rf --one-file-system "$W"
	fi
}
# shellcheck disable=SC2317 # run by the trap
trap cleanup EXIT
trap 'notok "run to the end" "interrupted by a signal"; finish' INT TERM HUP

# ------------------------------------------------------------------ prerequisites
missing=()
[ "$(id -u)" = 0 ] || missing+=("root")
[ -c /dev/fuse ] || missing+=("/dev/fuse")
for cmd in containerd ctr runc containerd-shim-runc-v2 rootlesskit nsenter runuser useradd userdel \
	newuidmap newgidmap mount.fuse3 fusermount3 fuse-overlayfs timeout; do
	command -v "$cmd" >/dev/null || missing+=("$cmd")
done
[ -x "$PY" ] || missing+=("$PY")
[ -f "$SHIM_SRC" ] && [ -x "$SHIM_SRC" ] || missing+=("SNAPSHOTTER_BIN=$SHIM_SRC (make)")
[ -x "$INSTALL" ] || missing+=("$INSTALL")
[ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" -gt 0 ] || missing+=("user namespaces (user.max_user_namespaces is 0)")
need_busybox
if [ ${#missing[@]} -gt 0 ]; then
	notok "prerequisites" "missing: ${missing[*]} (contrib/install-deps.sh)"
	finish
fi
W=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/fovl-rootless.XXXXXX") || { notok "prerequisites" "mktemp failed"; finish; }
chmod 755 "$W"
mkdir -p "$W/bin"
# a copy: others may rebuild the tree's binary while this runs
SHIM=$W/bin/containerd-fuse-overlayfs-grpc
cp "$SHIM_SRC" "$SHIM" && chmod 755 "$SHIM" || { notok "prerequisites" "cannot copy $SHIM_SRC"; finish; }
ok "prerequisites (shim $SHIM_SRC, fuse-overlayfs $(command -v fuse-overlayfs), containerd $(containerd --version | awk '{print $3}'), rootlesskit $(rootlesskit --version | awk '{print $3}'))"
build_image "$W/image.tar" || finish
chmod 644 "$W/image.tar"

# ------------------------------------------------------------------ the user
cp /etc/subuid "$W/subuid.before" 2>/dev/null || : >"$W/subuid.before"
cp /etc/subgid "$W/subgid.before" 2>/dev/null || : >"$W/subgid.before"
UNAME=fovlrl$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
if ! useradd -m -s /bin/sh "$UNAME" >"$W/useradd.out" 2>&1; then
	notok "useradd -m $UNAME" "failed" "$W/useradd.out"
	finish
fi
USER_MADE=1
UIDN=$(id -u "$UNAME")
UHOME=$(getent passwd "$UNAME" | cut -d: -f6)
XRD=/run/user/$UIDN
ASU=(runuser -u "$UNAME" -- env -i -C "$UHOME" PATH="$UPATH" HOME="$UHOME" USER="$UNAME" LOGNAME="$UNAME"
	XDG_RUNTIME_DIR="$XRD" XDG_DATA_HOME="$UHOME/.local/share" XDG_CONFIG_HOME="$UHOME/.config" LC_ALL=C)
uline=$(grep "^$UNAME:" /etc/subuid)
gline=$(grep "^$UNAME:" /etc/subgid)
if [ "$(grep -c "^$UNAME:" /etc/subuid)" = 1 ] && [ "${uline##*:}" = 65536 ] && [ "$(grep -c "^$UNAME:" /etc/subgid)" = 1 ] && [ "${gline##*:}" = 65536 ]; then
	SUBSTART=$(echo "$uline" | cut -d: -f2)
	ok "useradd -m $UNAME (uid $UIDN): a 65536-id range in /etc/subuid ($uline) and /etc/subgid ($gline)"
else
	notok "useradd -m $UNAME (uid $UIDN): a 65536-id range in /etc/subuid and /etc/subgid" "subuid '$uline', subgid '$gline' (login.defs SUB_UID_COUNT?)"
	finish
fi
[ -d /run/user ] || { mkdir -m 0755 /run/user && RUN_USER_MADE=1; }
mkdir -m 0700 "$XRD" && chown "$UNAME:" "$XRD" || { notok "XDG_RUNTIME_DIR $XRD" "cannot create it"; finish; }
as_user mkdir -p "$UHOME/tmp" "$UHOME/.config/containerd" "$UHOME/.config/systemd/user"

# ------------------------------------------------------------------ install-rootless.sh: what is missing
fm=$(stat -c %a /dev/fuse)
as_user "$INSTALL" --no-systemctl --bin "$SHIM" >"$W/install-missing.out" 2>&1
rc=$?
want=("missing: rootless containerd")
[ $((8#$fm & 8#006)) = $((8#006)) ] || want+=("missing: read and write access to /dev/fuse")
absent=()
for w in "${want[@]}"; do grep -qF "$w" "$W/install-missing.out" || absent+=("'$w'"); done
if [ "$rc" != 0 ] && [ ${#absent[@]} = 0 ] && [ ! -e "$(unit_file)" ]; then
	ok "install-rootless.sh names what is missing (${want[*]}), writes nothing, exits $rc"
else
	notok "install-rootless.sh names what is missing" "exit status $rc, lines not printed: ${absent[*]:-none}, unit written: $([ -e "$(unit_file)" ] && echo yes || echo no)" "$W/install-missing.out"
fi
if HOME=$W XDG_RUNTIME_DIR=$W "$INSTALL" --no-systemctl >"$W/install-root.out" 2>&1; then
	notok "install-rootless.sh refuses to run as root" "exit status 0" "$W/install-root.out"
elif grep -q "not as root" "$W/install-root.out"; then
	ok "install-rootless.sh refuses to run as root"
else
	notok "install-rootless.sh refuses to run as root" "no 'not as root' message" "$W/install-root.out"
fi

verify_unit "systemd-analyze verify --user accepts contrib/snapshotter/$(basename "$UNIT_TEMPLATE")" "$UNIT_TEMPLATE" "$W/verify.out"

# /dev/fuse: the FUSE daemons run as the user (udev gives 0666 on a real system)
if [ $((8#$fm & 8#006)) != $((8#006)) ]; then
	FUSE_MODE_ORIG=$fm
	chmod 0666 /dev/fuse || { notok "/dev/fuse mode 0666 for the run" "chmod failed"; finish; }
	echo "# /dev/fuse was $fm: 0666 for the run, restored at the end"
fi

# ------------------------------------------------------------------ per mode
start_containerd() { # MODE: RootlessKit and containerd, as nerdctl's containerd-rootless.sh starts them
	local mode=$1 d=$W/$1 conf=$UHOME/.config/containerd/config.toml i rk
	containerd_config "$UHOME/.local/share/containerd" "$XRD/containerd" "$XRD/containerd/containerd.sock" \
		"$UHOME/.local/share/containerd/opt" "$XRD/containerd-fuse-overlayfs.sock" >"$conf"
	chown "$UNAME:" "$conf"
	"${ASU[@]}" rootlesskit --net=host --copy-up=/etc --copy-up=/run --state-dir="$XRD/containerd-rootless" \
		containerd -c "$conf" >"$d/containerd.log" 2>&1 </dev/null &
	RK_RU=$!
	rk=$(readlink -f "$(command -v rootlesskit)")
	for ((i = 0; i < 100; i++)); do
		[ -n "$RK_PID" ] || RK_PID=$(child_of "$RK_RU" "$rk")
		[ -s "$XRD/containerd-rootless/child_pid" ] && break
		alive "$RK_RU" || break
		sleep 0.1
	done
	CHILD=$(cat "$XRD/containerd-rootless/child_pid" 2>/dev/null)
	if [ -z "$RK_PID" ] || [ -z "$CHILD" ] || ! alive "$CHILD"; then
		notok "$mode: RootlessKit starts containerd in a user namespace" "no rootlesskit, or no child_pid after 10 s" "$d/containerd.log"
		return 1
	fi
	local map
	map=$(awk '{print $1 ":" $2 ":" $3}' "/proc/$CHILD/uid_map" | tr '\n' ' ')
	if [ "$(readlink "/proc/$CHILD/ns/user")" != "$(readlink /proc/self/ns/user)" ] && [ "$map" = "0:$UIDN:1 1:$SUBSTART:65536 " ]; then
		ok "$mode: RootlessKit starts containerd in a user namespace (uid map ${map% })"
	else
		notok "$mode: RootlessKit starts containerd in a user namespace" "uid map of child_pid $CHILD: '$map', want '0:$UIDN:1 1:$SUBSTART:65536'"
	fi
}

install_unit() { # MODE: install-rootless.sh writes the unit; what it prints; systemd-analyze verify
	local mode=$1 d=$W/$1 rc snippet
	as_user "$INSTALL" install --no-systemctl --bin "$SHIM" --mount-mode "$mode" >"$d/install.out" 2>&1
	rc=$?
	if [ "$rc" != 0 ] || [ ! -f "$(unit_file)" ]; then
		notok "$mode: install-rootless.sh --no-systemctl writes the unit" "exit status $rc, $(unit_file) $([ -f "$(unit_file)" ] || echo not) written" "$d/install.out"
		return 1
	fi
	ok "$mode: install-rootless.sh --no-systemctl writes the unit"
	snippet=$(sed -n '/^### BEGIN ###$/,/^###  END  ###$/p' "$d/install.out" | sed '1d;$d')
	if [ -n "$snippet" ] && grep -qxF "  address = \"$XRD/containerd-fuse-overlayfs.sock\"" <<<"$snippet" &&
		[ "$(grep -cxF -f <(echo "$snippet") "$UHOME/.config/containerd/config.toml")" = "$(wc -l <<<"$snippet")" ]; then
		if grep -q "already has these lines" "$d/install.out"; then
			ok "$mode: it prints the proxy_plugins lines of the user's config.toml (and sees them there)"
		else
			notok "$mode: it prints the proxy_plugins lines of the user's config.toml (and sees them there)" "no 'already has these lines'" "$d/install.out"
		fi
	else
		notok "$mode: it prints the proxy_plugins lines of the user's config.toml" "not the lines of containerd's config (address $XRD/containerd-fuse-overlayfs.sock):" "$d/install.out"
	fi
	if grep -qx "export CONTAINERD_SNAPSHOTTER=fuse-overlayfs" "$d/install.out"; then
		ok "$mode: it prints the environment to set (CONTAINERD_SNAPSHOTTER=fuse-overlayfs)"
	else
		notok "$mode: it prints the environment to set (CONTAINERD_SNAPSHOTTER=fuse-overlayfs)" "no such line" "$d/install.out"
	fi
	local flags=
	[ "$mode" = self ] && flags=--mount-mode=self
	unit_env >"$d/unit.env"
	if grep -qxF "SNAPSHOTTER_FLAGS=$flags" "$d/unit.env" && grep -qxF "SNAPSHOTTER_BIN=$SHIM" "$d/unit.env"; then
		ok "$mode: the unit runs $SHIM${flags:+ $flags}"
	else
		notok "$mode: the unit runs $SHIM${flags:+ $flags}" "its Environment= lines:" "$d/unit.env"
	fi
	verify_unit "$mode: systemd-analyze verify --user accepts the unit" "$(unit_file)" "$d/verify.out"
	# with systemctl (no --no-systemctl) but no user manager, as here: a failure, said
	as_user "$INSTALL" install --bin "$SHIM" --mount-mode "$mode" >"$d/install-systemctl.out" 2>&1
	rc=$?
	if [ "$rc" != 0 ] && grep -q 'systemctl --user daemon-reload` failed' "$d/install-systemctl.out"; then
		ok "$mode: install-rootless.sh without a systemd user manager says systemctl failed, exits $rc"
	else
		notok "$mode: install-rootless.sh without a systemd user manager says systemctl failed" "exit status $rc" "$d/install-systemctl.out"
	fi
}

shim_serves() { # MODE [notify]: the unit's command started the shim, as the user, in containerd's
	# namespaces; with "notify", with a NOTIFY_SOCKET on which it must say READY=1
	local mode=$1 d=$W/$1 pid i ns n listener=
	if [ "${2:-}" = notify ]; then
		NOTIFY=$XRD/systemd/notify
		as_user mkdir -p "$XRD/systemd"
		"${ASU[@]}" "$PY" "$NOTIFY_LISTEN" "$NOTIFY" 15 >"$d/notify.out" 2>&1 &
		listener=$!
		wait_until 5 test -S "$NOTIFY"
	fi
	if ! start_shim "$mode"; then
		notok "$mode: the unit's command starts the shim in containerd's namespaces" "no shim process" "$d/shim.log"
		return 1
	fi
	pid=${SHIM_PID[$mode]}
	for ((i = 0; i < 100; i++)); do
		[ -S "$XRD/containerd-fuse-overlayfs.sock" ] && break
		alive "$pid" || break
		sleep 0.1
	done
	ns=ok
	for n in user mnt; do
		[ "$(readlink "/proc/$pid/ns/$n")" = "$(readlink "/proc/$CHILD/ns/$n")" ] || ns="not in containerd's $n namespace"
	done
	if [ ! -S "$XRD/containerd-fuse-overlayfs.sock" ] || ! alive "$pid"; then
		notok "$mode: the unit's command starts the shim in containerd's namespaces" "no socket after 10 s, or it exited" "$d/shim.log"
		return 1
	elif [ "$ns" != ok ] || [ "$(awk '/^Uid:/ {print $3}' "/proc/$pid/status")" != "$UIDN" ]; then
		notok "$mode: the unit's command starts the shim in containerd's namespaces" "$ns, uid $(awk '/^Uid:/ {print $3}' "/proc/$pid/status")"
		return 1
	fi
	ok "$mode: the unit's command starts the shim in containerd's namespaces, as $UNAME"
	[ -n "$listener" ] || return 0
	wait "$listener"
	if [ $? = 0 ] && grep -q "^pid=$pid uid=$UIDN .*READY=1" "$d/notify.out"; then
		ok "$mode: the shim sends READY=1 to NOTIFY_SOCKET from there (as its main PID: Type=notify works)"
	else
		notok "$mode: the shim sends READY=1 to NOTIFY_SOCKET from there" "no READY=1 from pid $pid uid $UIDN in 15 s; got:" "$d/notify.out"
	fi
}

runtime_mounts() { # mounts below the user's XDG_RUNTIME_DIR in containerd's mount namespace (the
	# containers' roots; /run/user there is a link into RootlessKit's copy-up of /run: /run/.roN/user/UID)
	awk -v u="/user/$UIDN/" 'index($2, u) > 0 {print $2, $3}' "/proc/$CHILD/mounts"
}
no_runtime_mounts() { [ -z "$(runtime_mounts)" ]; }

# reaches_shim MODE: containerd, started before the shim, dials the proxy
# plugin's socket again after a backoff of at most 3 s (containerd 1.6,
# services/server/server.go: backoff MaxDelay); calls until then fail
# "unavailable"
reaches_shim() {
	local mode=$1
	if wait_until 10 eval 'c "$mode" snapshots --snapshotter "$SN" ls >"$W/$mode/reach.out" 2>&1'; then
		ok "$mode: containerd reaches the shim through its proxy plugin"
	else
		notok "$mode: containerd reaches the shim through its proxy plugin" "ctr snapshots ls fails after 10 s:" "$W/$mode/reach.out"
		return 1
	fi
}

task_running() { # MODE ID
	c "$1" task ls 2>/dev/null | awk -v i="$2" '$1 == i && $3 == "RUNNING" {f = 1} END {exit !f}'
}
task_stopped() { # MODE ID
	c "$1" task ls 2>/dev/null | awk -v i="$2" '$1 == i && $3 == "STOPPED" {f = 1} END {exit !f}'
}

# fault MODE: SIGKILL of the shim with a container running, then a restart
# in the same namespaces
fault() {
	local mode=$1 d=$W/$1 id upper merged before after daemons again rc out=$W/$1/exec.out
	if ! ctr_run "$mode" long "$d/long.out" -d --null-io -- sh -c 'echo before-kill >/data/own.txt; exec sleep 600' ||
		! wait_until 10 task_running "$mode" "$RUN_ID"; then
		notok "$mode: fault: a container running (ctr run -d)" "${RUN_NOTE:-its task is not RUNNING}" "$d/long.out"
		return
	fi
	id=$RUN_ID
	ok "$mode: fault: a container running (ctr run -d)"
	wait_until 5 eval "ls '$(shim_root "$mode")'/snapshots/*/fs/data/own.txt >/dev/null 2>&1"
	upper=$(ls "$(shim_root "$mode")"/snapshots/*/fs/data/own.txt 2>/dev/null | head -1)
	upper=${upper%/data/own.txt}
	merged=${upper%/fs}/merged
	daemons=$(overlay_daemons "$upper" | sort | tr '\n' ' ')
	before=$(snapshot_keys "$mode")
	stop_shim "$mode" KILL
	rc=$?
	if [ "$rc" = $((128 + 9)) ] || [ "$rc" = 9 ]; then
		ok "$mode: fault: shim killed with SIGKILL while the container runs"
	else
		notok "$mode: fault: shim killed with SIGKILL while the container runs" "exit status $rc (runuser's), want 137"
	fi
	if ! shim_serves "$mode"; then
		return
	fi
	after=
	wait_until 10 eval 'after=$(snapshot_keys "$mode"); [ "$after" = "$before" ]'
	if [ -n "$before" ] && [ "$after" = "$before" ]; then
		ok "$mode: fault: the restarted shim lists the same snapshots through containerd"
	else
		diff <(echo "$before") <(echo "$after") >"$d/keys.diff"
		notok "$mode: fault: the restarted shim lists the same snapshots through containerd" "before < > after:" "$d/keys.diff"
	fi
	if c "$mode" task exec --exec-id probe "$id" sh -c 'echo "image: $(cat /data/modify.txt)"; echo "own: $(cat /data/own.txt)"; echo after-restart >/data/later.txt && echo "write: $(cat /data/later.txt)"' >"$out" 2>&1; then
		expect_line "$mode: fault: the running container still reads the image" "$out" image "modified in layer 2"
		expect_line "$mode: fault: the running container still reads what it wrote before the kill" "$out" own before-kill
		expect_line "$mode: fault: the running container still writes" "$out" write after-restart
	else
		notok "$mode: fault: ctr task exec into the running container" "failed" "$out"
	fi
	if [ "$mode" = self ]; then
		again=$(overlay_daemons "$upper" | sort | tr '\n' ' ')
		if [ -n "$daemons" ] && [ "$again" = "$daemons" ] && in_ns grep -qx after-restart "$merged/data/later.txt" 2>/dev/null; then
			ok "$mode: fault: the restarted shim kept the live overlay (same FUSE daemon $daemons, the merged dir answers)"
		else
			in_ns ls -la "$merged/data" >"$d/merged.ls" 2>&1
			notok "$mode: fault: the restarted shim kept the live overlay" "FUSE daemons before '$daemons', after '$again'; $merged/data:" "$d/merged.ls"
		fi
	fi
	c "$mode" task kill -s KILL "$id" >/dev/null 2>&1
	wait_until 10 task_stopped "$mode" "$id"
	if c "$mode" task rm "$id" >"$d/long-rm.out" 2>&1 && c "$mode" containers rm "$id" >>"$d/long-rm.out" 2>&1 &&
		wait_until 10 snapshot_dirs_are "$mode" 2; then
		ok "$mode: fault: the container removed, its snapshot and directory gone"
	else
		echo "snapshots: $(snapshot_keys "$mode" | wc -l), dirs $(snapshot_dirs "$mode") (want 2)" >>"$d/long-rm.out"
		notok "$mode: fault: the container removed, its snapshot and directory gone" "ctr task rm / containers rm, or the snapshot stays:" "$d/long-rm.out"
	fi
}

stop_mode() { # MODE: containerd and the user's processes go; install-rootless.sh uninstall
	local mode=$1 d=$W/$1 left
	alive "${SHIM_PID[$mode]:-}" && stop_shim "$mode"
	if stop_containerd; then
		ok "$mode: RootlessKit, its child and containerd exit on SIGTERM"
	else
		notok "$mode: RootlessKit, its child and containerd exit on SIGTERM" "still running after 10 s (SIGKILLed): ${STOP_LEFT[*]}"
	fi
	if wait_until 10 no_user_pids; then
		ok "$mode: no process of $UNAME left"
	else
		# shellcheck disable=SC2046 # a list of PIDs
		describe_pids $(the_users_pids) >"$d/left.ps"
		notok "$mode: no process of $UNAME left" "$(wc -l <"$d/left.ps") after 10 s (killed now):" "$d/left.ps"
		kill_the_users_procs
	fi
	if as_user "$INSTALL" uninstall --no-systemctl >"$d/uninstall.out" 2>&1 && [ ! -e "$(unit_file)" ]; then
		ok "$mode: install-rootless.sh uninstall --no-systemctl removes the unit"
	else
		notok "$mode: install-rootless.sh uninstall --no-systemctl removes the unit" "it failed or $(unit_file) stays" "$d/uninstall.out"
	fi
	# the next mode starts afresh
	rm -rf --one-file-system "$UHOME/.local/share/containerd" "$(shim_root "$mode")" "${XRD:?}"/*
	left=$(find "$XRD" "$UHOME/.local/share" -mindepth 1 -maxdepth 1 2>/dev/null)
	[ -z "$left" ] || echo "# $mode: left in the user's directories: $left"
}

run_mode() { # MODE
	local mode=$1 d=$W/$1
	mkdir -p "$d"
	if ! start_containerd "$mode" || ! install_unit "$mode" || ! shim_serves "$mode" notify ||
		! containerd_serves "$mode" "$CHILD" "$d/containerd.log" || ! reaches_shim "$mode"; then
		stop_mode "$mode"
		return
	fi
	if ! import_checks "$mode" "$W/image.tar"; then
		tail -n 5 "$d/containerd.log" | sed 's/^/#   containerd: /'
		remove_containers
		stop_shim "$mode"
		stop_mode "$mode"
		return
	fi
	run_containers "$mode"
	kept_container "$mode"
	fault "$mode"
	remove_containers
	check_no_mounts "$mode" "$UHOME"
	if wait_until 10 no_runtime_mounts; then
		ok "$mode: no container root left mounted in containerd's mount namespace"
	else
		runtime_mounts >"$d/roots.left"
		notok "$mode: no container root left mounted in containerd's mount namespace" "$(wc -l <"$d/roots.left") left:" "$d/roots.left"
	fi
	check_shim_exit "$mode"
	stop_mode "$mode"
}

run_modes

# ------------------------------------------------------------------ the user goes, and the machine is as before
if remove_user; then
	ok "userdel -r $UNAME"
else
	notok "userdel -r $UNAME" "exit status $USERDEL_RC" "$W/userdel.out"
fi
if [ -n "$SUB_LEFT" ]; then
	notok "userdel -r removes the user's lines from /etc/subuid and /etc/subgid" "left in $SUB_LEFT (removed now)"
else
	ok "userdel -r removes the user's lines from /etc/subuid and /etc/subgid"
fi
if cmp -s /etc/subuid "$W/subuid.before" && cmp -s /etc/subgid "$W/subgid.before"; then
	ok "/etc/subuid and /etc/subgid are as before"
else
	diff "$W/subuid.before" /etc/subuid >"$W/sub.diff"
	diff "$W/subgid.before" /etc/subgid >>"$W/sub.diff"
	notok "/etc/subuid and /etc/subgid are as before" "they differ (another test changing them meanwhile?):" "$W/sub.diff"
fi
check "userdel -r removes the user's home $UHOME" "it was still there (removed now)" test "$HOME_LEFT" = 0
remove_run_user
check "XDG_RUNTIME_DIR $XRD is gone" "it is still there" test ! -e "$XRD"
orig=${FUSE_MODE_ORIG:-$fm}
restore_fuse
check "/dev/fuse has its mode back ($orig)" "it is $(stat -c %a /dev/fuse)" test "$(stat -c %a /dev/fuse)" = "$orig"
finish
