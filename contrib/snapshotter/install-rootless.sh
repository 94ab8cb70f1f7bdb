#!/bin/bash
# install-rootless.sh: sets up containerd-fuse-overlayfs-grpc for the calling
# user's rootless containerd, as nerdctl's `containerd-rootless-setuptool.sh
# install-fuse-overlayfs` does for the Go shim.  Run it as that user, not as
# root.  It checks what the shim needs and names each missing piece, writes
# the `systemd --user` unit contrib/snapshotter/containerd-fuse-overlayfs.user.service
# (beside this script) as ~/.config/systemd/user/containerd-fuse-overlayfs.service,
# enables and starts it, then prints the [proxy_plugins."fuse-overlayfs"]
# lines for ~/.config/containerd/config.toml and the environment to set.
# `uninstall` stops, disables and removes the unit.
#
# The unit runs the shim inside the user and mount namespaces of rootless
# containerd (nsenter -t $(cat $XDG_RUNTIME_DIR/containerd-rootless/child_pid)),
# where containerd mounts what the shim hands back.
set -uo pipefail
PROG=install-rootless
UNIT=containerd-fuse-overlayfs.service
here=$(cd "$(dirname "$0")" && pwd)
TEMPLATE=$here/containerd-fuse-overlayfs.user.service

usage() {
	cat <<EOF
usage: $0 [install|uninstall] [OPTIONS]

install (the default): check the prerequisites, write the unit
  \${XDG_CONFIG_HOME:-~/.config}/systemd/user/$UNIT, run
  \`systemctl --user daemon-reload\` and \`systemctl --user enable --now $UNIT\`,
  print the lines to add to ~/.config/containerd/config.toml and the
  environment to set.  Exits 1, naming what is missing, if a prerequisite is.
uninstall: \`systemctl --user disable --now $UNIT\`, remove the unit file.

options:
  --bin PATH           the shim (default: containerd-fuse-overlayfs-grpc in PATH)
  --mount-mode MODE    helper (default: containerd mounts fuse3.fuse-overlayfs
                       through mount.fuse3) or self (the shim mounts the
                       overlays and hands back bind mounts)
  --socket PATH        the shim's socket
                       (default \$XDG_RUNTIME_DIR/containerd-fuse-overlayfs.sock)
  --root DIR           the shim's ROOT
                       (default \${XDG_DATA_HOME:-~/.local/share}/containerd-fuse-overlayfs)
  --state-dir DIR      rootless containerd's RootlessKit state directory, which
                       holds child_pid (default \$XDG_RUNTIME_DIR/containerd-rootless)
  --unit-dir DIR       where to write the unit
                       (default \${XDG_CONFIG_HOME:-~/.config}/systemd/user)
  --no-systemctl       write (or remove) the unit only; run no systemctl
  -h, --help           this text
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }

verb=install
BIN=
MODE=helper
SOCKET=
ROOT=
STATE_DIR=
UNIT_DIR=
SYSTEMCTL=1
while [ $# -gt 0 ]; do
	case $1 in
	install | uninstall) verb=$1 ;;
	--bin | --mount-mode | --socket | --root | --state-dir | --unit-dir)
		[ $# -ge 2 ] || die "$1 needs a value (see --help)"
		case $1 in
		--bin) BIN=$2 ;;
		--mount-mode) MODE=$2 ;;
		--socket) SOCKET=$2 ;;
		--root) ROOT=$2 ;;
		--state-dir) STATE_DIR=$2 ;;
		--unit-dir) UNIT_DIR=$2 ;;
		esac
		shift
		;;
	--bin=* | --mount-mode=* | --socket=* | --root=* | --state-dir=* | --unit-dir=*)
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
		continue
		;;
	--no-systemctl) SYSTEMCTL=0 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done
case $MODE in helper | self) ;; *) die "--mount-mode: expected helper or self, not '$MODE'" ;; esac

[ "$(id -u)" != 0 ] || die "run this as the user whose rootless containerd the shim serves, not as root (for root's containerd see contrib/snapshotter/containerd-fuse-overlayfs.service)"
[ -n "${HOME:-}" ] || die "HOME is not set"
XDG_CONFIG_HOME=${XDG_CONFIG_HOME:-$HOME/.config}
XDG_DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
UNIT_DIR=${UNIT_DIR:-$XDG_CONFIG_HOME/systemd/user}
UNIT_FILE=$UNIT_DIR/$UNIT
USER_NAME=$(id -un)

systemctl_user() { # ARGS...: systemctl --user ARGS, with a note on failure
	systemctl --user "$@" || { echo "$PROG: \`systemctl --user $*\` failed" >&2; return 1; }
}

if [ "$verb" = uninstall ]; then
	if [ "$SYSTEMCTL" = 1 ]; then
		command -v systemctl >/dev/null || die "systemctl not found (or pass --no-systemctl)"
		systemctl --user disable --now "$UNIT" >/dev/null 2>&1
	fi
	if [ -e "$UNIT_FILE" ]; then
		rm -f "$UNIT_FILE" || die "cannot remove $UNIT_FILE"
		echo "$PROG: removed $UNIT_FILE"
	else
		echo "$PROG: $UNIT_FILE was not there"
	fi
	[ "$SYSTEMCTL" = 1 ] && systemctl_user daemon-reload
	cat <<EOF
$PROG: remove the [proxy_plugins."fuse-overlayfs"] lines from $XDG_CONFIG_HOME/containerd/config.toml
  and restart containerd (systemctl --user restart containerd).
$PROG: the snapshots stay in ${ROOT:-$XDG_DATA_HOME/containerd-fuse-overlayfs}; files there may
  belong to your subordinate ids: remove it inside the namespace, e.g.
  containerd-rootless-setuptool.sh nsenter -- rm -rf ${ROOT:-$XDG_DATA_HOME/containerd-fuse-overlayfs}
EOF
	exit 0
fi

# ------------------------------------------------------------------ install: prerequisites
missing=()
need() { missing+=("$*"); }
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
	need "XDG_RUNTIME_DIR (not set, or not a directory): log in through a session that sets it (systemd-logind), or set it"
	XDG_RUNTIME_DIR=/run/user/$(id -u)
fi
SOCKET=${SOCKET:-$XDG_RUNTIME_DIR/containerd-fuse-overlayfs.sock}
ROOT=${ROOT:-$XDG_DATA_HOME/containerd-fuse-overlayfs}
STATE_DIR=${STATE_DIR:-$XDG_RUNTIME_DIR/containerd-rootless}
case $ROOT in *[,:]*) need "a ROOT without ',' or ':' ($ROOT; they separate mount options): pass --root" ;; esac
[ -f "$TEMPLATE" ] || need "the unit template $TEMPLATE (keep this script beside it)"
if [ -z "$BIN" ]; then
	BIN=$(command -v containerd-fuse-overlayfs-grpc) || need "containerd-fuse-overlayfs-grpc (not in PATH; \`make install\` puts it in /usr/local/bin, or pass --bin)"
fi
if [ -n "$BIN" ]; then
	case $BIN in /*) ;; *) BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN") ;; esac
	if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then need "the shim $BIN (not an executable file)"; fi
fi
command -v fuse-overlayfs >/dev/null || need "fuse-overlayfs (not in PATH; \`make install\`)"
command -v fusermount3 >/dev/null || need "fusermount3 (not in PATH; Debian package fuse3)"
[ "$MODE" = helper ] && ! command -v mount.fuse3 >/dev/null && need "mount.fuse3 (not in PATH; Debian package fuse3): containerd mounts fuse3.fuse-overlayfs through it"
command -v nsenter >/dev/null || need "nsenter (not in PATH; Debian package util-linux)"
if [ ! -c /dev/fuse ]; then
	need "/dev/fuse (no such device: modprobe fuse)"
elif [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then
	need "read and write access to /dev/fuse (it is $(stat -c '%A %U:%G' /dev/fuse); udev's rule gives 0666)"
fi
for f in subuid subgid; do
	if command -v getsubids >/dev/null; then
		flag=
		[ $f = subgid ] && flag=-g
		# shellcheck disable=SC2086 # flag is empty or -g
		getsubids $flag "$USER_NAME" >/dev/null 2>&1 && continue
	elif grep -qE "^($USER_NAME|$(id -u)):[0-9]+:[1-9]" /etc/$f 2>/dev/null; then
		continue
	fi
	need "a range of subordinate ids for $USER_NAME in /etc/$f (root: usermod --add-sub${f#sub}s 100000-165535 $USER_NAME)"
done
if [ ! -s "$STATE_DIR/child_pid" ]; then
	need "rootless containerd (no $STATE_DIR/child_pid: start it first, e.g. \`containerd-rootless-setuptool.sh install\` or \`systemctl --user start containerd\`)"
elif ! kill -0 "$(cat "$STATE_DIR/child_pid")" 2>/dev/null; then
	need "rootless containerd (the process in $STATE_DIR/child_pid, $(cat "$STATE_DIR/child_pid"), is not running: start containerd again)"
fi
[ "$SYSTEMCTL" = 0 ] || command -v systemctl >/dev/null || need "systemctl (or pass --no-systemctl and start the unit's command yourself)"
if [ ${#missing[@]} -gt 0 ]; then
	for m in "${missing[@]}"; do echo "$PROG: missing: $m" >&2; done
	exit 1
fi

# ------------------------------------------------------------------ the unit
# fuse-overlayfs, mount.fuse3 and fusermount3 must be in the unit's PATH
UPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
for c in fuse-overlayfs fusermount3 mount.fuse3; do
	d=$(dirname "$(command -v "$c" 2>/dev/null || echo /usr/bin/"$c")")
	case ":$UPATH:" in *":$d:"*) ;; *) UPATH=$d:$UPATH ;; esac
done
FLAGS=
[ "$MODE" = self ] && FLAGS=--mount-mode=self
sedexpr() { # NAME VALUE: the sed command that sets Environment=NAME=VALUE
	local v=${2//\\/\\\\}
	v=${v//|/\\|}
	v=${v//&/\\&}
	v=${v//%/%%} # systemd specifiers
	printf 's|^Environment=%s=.*|Environment=%s=%s|\n' "$1" "$1" "$v"
}
mkdir -p "$UNIT_DIR" || die "cannot create $UNIT_DIR"
{
	echo "# Written by $0 $verb on $(date -u +%Y-%m-%d) for $USER_NAME."
	sed -e "$(sedexpr PATH "$UPATH")" -e "$(sedexpr SNAPSHOTTER_BIN "$BIN")" \
		-e "$(sedexpr SNAPSHOTTER_FLAGS "$FLAGS")" -e "$(sedexpr SNAPSHOTTER_SOCKET "$SOCKET")" \
		-e "$(sedexpr SNAPSHOTTER_ROOT "$ROOT")" -e "$(sedexpr ROOTLESSKIT_STATE_DIR "$STATE_DIR")" "$TEMPLATE"
} >"$UNIT_FILE.tmp.$$" || die "cannot write $UNIT_FILE.tmp.$$"
mv -f "$UNIT_FILE.tmp.$$" "$UNIT_FILE" || die "cannot write $UNIT_FILE"
echo "$PROG: wrote $UNIT_FILE (shim $BIN, --mount-mode=$MODE, socket $SOCKET, ROOT $ROOT)"
if [ "$SYSTEMCTL" = 1 ]; then
	systemctl_user daemon-reload && systemctl_user enable --now "$UNIT" || exit 1
	echo "$PROG: enabled and started $UNIT (systemctl --user status $UNIT)"
else
	echo "$PROG: not started (--no-systemctl): systemctl --user daemon-reload && systemctl --user enable --now $UNIT"
fi

# ------------------------------------------------------------------ what the user adds
CONF=$XDG_CONFIG_HOME/containerd/config.toml
if ! grep -qF 'proxy_plugins."fuse-overlayfs"' "$CONF" 2>/dev/null; then
	echo "$PROG: add these lines to $CONF, then restart containerd (systemctl --user restart containerd):"
elif grep -qF "address = \"$SOCKET\"" "$CONF"; then
	echo "$PROG: $CONF already has these lines:"
else
	echo "$PROG: $CONF has [proxy_plugins.\"fuse-overlayfs\"] with another address: make it these lines, then restart containerd (systemctl --user restart containerd):"
fi
cat <<EOF
### BEGIN ###
[proxy_plugins."fuse-overlayfs"]
  type = "snapshot"
  address = "$SOCKET"
###  END  ###
$PROG: then select the snapshotter for nerdctl and ctr:
export CONTAINERD_SNAPSHOTTER=fuse-overlayfs
EOF
