#!/bin/bash
# FUSE requests the kernel need not send, counted through its fuse
# tracepoints (bench/fuse_requests.py): no timing, only counts.
# Usage: requests.sh.
#   MODE_write_no_getxattr  64 writes into a new file and 64 into an existing
#                           one ask security.capability at most once a file
#                           (FUSE_HANDLE_KILLPRIV_V2: the superblock is
#                           SB_NOSEC); they asked once a write before
#   MODE_setid_dropped      and yet a write by a user without CAP_FSETID drops
#                           a file's set-user-ID bit, and root's keeps it
#   MODE_no_opendir         a find over 20 directories makes one OPENDIR (the
#                           ENOSYS that tells the kernel to open directories
#                           itself) and no RELEASEDIR; a second find, none
# MODE: passthrough, nopassthrough (FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1).
TEST_NAME=requests
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_fuse
COUNT=$top/bench/fuse_requests.py
require_files "$COUNT"
[ -d /sys/kernel/tracing/events/fuse ] ||
	die "/sys/kernel/tracing/events/fuse is missing (mount tracefs; Linux 6.12+ has fuse tracepoints)"
make_work
trap 'for e in fuse_request_send fuse_request_end; do echo 0 >/sys/kernel/tracing/events/fuse/$e/enable; done; cleanup' EXIT

requests() { # MNT TYPE[,TYPE] CMD...: how many requests of those types CMD made on MNT
	local m=$1 types=$2
	shift 2
	python3 "$COUNT" --mnt "$m" --json -- "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)["requests"]
print(sum(r.get(t, [0])[0] for t in sys.argv[1].split(",")))' "$types"
}

for mode in passthrough nopassthrough; do
	d=$WORK/$mode
	mkdir -p "$d"/{l,u,w,m}
	echo low >"$d/l/old"
	install -m 4777 /dev/null "$d/l/suid"
	install -m 4777 /dev/null "$d/l/rootsuid"
	env=()
	[ $mode = nopassthrough ] && env=(FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1)
	env "${env[@]}" "$BIN" -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w,allow_other" "$d/m" || die "mount failed"
	chmod 755 "$WORK" "$d"
	n_new=$(requests "$d/m" GETXATTR dd if=/dev/zero of="$d/m/new" bs=64k count=64 status=none)
	n_old=$(requests "$d/m" GETXATTR dd if=/dev/zero of="$d/m/old" bs=64k count=64 conv=notrunc status=none)
	if [ "$n_new" -le 1 ] && [ "$n_old" -le 1 ]; then
		pass "${mode}_write_no_getxattr"
	else
		fail "${mode}_write_no_getxattr" "GETXATTR requests for 64 writes: $n_new into a new file, $n_old into an existing one"
	fi
	setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf x >> "$1"' sh "$d/m/suid" ||
		fail "${mode}_setid_dropped" "the user's write failed"
	printf x >>"$d/m/rootsuid"
	got="$(stat -c %a "$d/m/suid") $(stat -c %a "$d/u/suid") $(stat -c %a "$d/m/rootsuid")"
	if [ "$got" = "777 777 4777" ]; then
		pass "${mode}_setid_dropped"
	else
		fail "${mode}_setid_dropped" "modes (user's file shown, stored; root's) $got, want 777 777 4777"
	fi
	for i in $(seq 20); do mkdir -p "$d/l/t/d$i" && : >"$d/l/t/d$i/f"; done
	cold=$(requests "$d/m" OPENDIR,RELEASEDIR sh -c 'find "$1" >/dev/null' sh "$d/m/t")
	warm=$(requests "$d/m" OPENDIR,RELEASEDIR sh -c 'find "$1" >/dev/null' sh "$d/m/t")
	if [ "$cold" -le 1 ] && [ "$warm" = 0 ]; then
		pass "${mode}_no_opendir"
	else
		fail "${mode}_no_opendir" "OPENDIR and RELEASEDIR requests: $cold for a find over 21 directories, $warm for the second"
	fi
	fusermount3 -u "$d/m" || fail "${mode}_unmount" "fusermount3 -u failed"
done
finish
