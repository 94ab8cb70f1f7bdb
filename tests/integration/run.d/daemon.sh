# shellcheck shell=bash disable=SC2154 # (top: run.sh's)
# The daemon process: daemonizing (the caller's stderr pipe closed, syslog),
# -d and SIGUSR1, how it is linked, polling /dev/fuse only while busy, its fd
# limit, FORGETs racing LOOKUPs.  Sourced by ../run.sh (its helpers and
# variables), never run alone: `run.sh NAME` runs the test t_NAME.

t_stderr_pipe_closed() {
	setup pipe
	# A caller reading our stderr through a pipe must see EOF once we are mounted.
	timeout 10 sh -c "'$BIN' -o lowerdir=$T/l1:$T/l2 '$T/m' 2>&1 | cat >/dev/null" ||
		fail "caller did not get EOF (exit $?)"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_foreground_debug_and_usr1() {
	setup fg
	"$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err" &
	local pid=$!
	for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
	cat "$T/m/top" >/dev/null
	kill -USR1 $pid
	sleep 0.3
	local r=0
	grep -q "LOOKUP" "$T/err" || { fail "-d did not trace requests"; r=1; }
	grep -q "nodes=[0-9]* dirs=[0-9]*" "$T/err" || { fail "SIGUSR1 printed no counters"; r=1; }
	grep -q "openat2: in use" "$T/err" || { fail "openat2 not in use on this kernel"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_syslog_after_daemonizing() {
	setup syslog
	command -v unshare >/dev/null || die "unshare is missing"
	# A private mount namespace with a /dev of its own, so /dev/log is our listener.
	cat >"$T/listen.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
open(sys.argv[1] + "/ready", "w").close()
with open(sys.argv[1] + "/syslog", "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
PY
	cat >"$T/inner.sh" <<'SH'
set -e
T=$1 BIN=$2
mount -t tmpfs tmpfs /dev
mknod -m 666 /dev/fuse c 10 229
mknod -m 666 /dev/null c 1 3
python3 "$T/listen.py" "$T" &
listener=$!
for _ in $(seq 50); do [ -e "$T/ready" ] && break; sleep 0.1; done
"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m"
cat "$T/m/top" >/dev/null
for p in $(pgrep -f "lowerdir=$T/l1:$T/l2"); do kill -USR1 "$p"; done
for _ in $(seq 50); do grep -q "nodes=" "$T/syslog" 2>/dev/null && break; sleep 0.1; done
fusermount3 -u "$T/m"
kill "$listener"
SH
	unshare -m --propagation private bash "$T/inner.sh" "$T" "$BIN" || fail "namespace script failed"
	grep -q "fuse-overlayfs.*nodes=[0-9]" "$T/syslog" || fail "no counters in syslog: $(cat "$T/syslog" 2>/dev/null)"
}

t_daemon_link_mode() {
	# configure's default links the daemon as a static PIE (no shared library
	# mapped: less RSS); --disable-static-daemon links it against libc.so
	local mode
	mode=$(sed -n 's/^DAEMON_LDFLAGS = *//p' "$top/Makefile")
	setup linkmode
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	mounted_by_us "$T/m" || return 1
	local pid libs
	pid=$(daemon_pid "$T/m")
	libs=$(awk '$6 ~ /\.so/ {print $6}' "/proc/$pid/maps" | sort -u | tr '\n' ' ')
	if [ "$mode" = -static-pie ]; then
		[ -z "$libs" ] || fail "static PIE build maps shared libraries: $libs"
		awk '$6 ~ /fuse-overlayfs$/ && $2 ~ /x/' "/proc/$pid/maps" | grep -q . || fail "no executable mapping of the binary"
	else
		case $libs in *libc.so*) ;; *) fail "dynamic build (DAEMON_LDFLAGS '$mode') maps no libc.so: $libs" ;; esac
	fi
	unmount_and_wait "$T/m"
}

t_poll_while_busy() {
	# The daemon polls /dev/fuse between requests only while they come fast:
	# a create loop is caught by polling; an idle mount and a caller pausing
	# between requests cost no polling (and an idle mount no CPU).
	setup poll
	# /dev/fuse's own polling, whatever fuse.enable_uring says (with it, requests come through rings)
	FUSE_OVERLAYFS_DISABLE_IO_URING=1 "$BIN" -f -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	local pid=$! r=0 a b c d t0 t1
	wait_mounted "$T/m" || return 1
	counter() { kill -USR1 $pid; sleep 0.3; grep -o " $1=[0-9]*" "$T/err" | tail -1 | cut -d= -f2; }
	python3 -c '
import os, sys
for i in range(2000):
    os.close(os.open(f"{sys.argv[1]}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))' "$T/m"
	a=$(counter polls) b=$(counter polls_caught)
	if sanitized; then
		echo "    sanitized daemon: its requests come too far apart to be polled for; not checked"
	else
		[ "${a:-0}" -gt 1000 ] || { fail "a create loop was not polled for: polls=$a"; r=1; }
		[ "${b:-0}" -gt $((a / 2)) ] || { fail "polling caught $b requests of $a polls"; r=1; }
	fi
	t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
	sleep 2
	t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
	c=$(counter polls)
	[ "$c" -le $((a + 1)) ] || { fail "an idle mount polled: polls $a then $c"; r=1; }
	[ $((t1 - t0)) -le 5 ] || { fail "an idle mount used $((t1 - t0)) CPU ticks in 2 s"; r=1; }
	python3 -c '
import os, sys, time
for i in range(200):
    try:
        os.stat(f"{sys.argv[1]}/none{i}")
    except FileNotFoundError:
        pass
    time.sleep(0.002)' "$T/m"
	d=$(counter polls)
	[ "$d" -le $((c + 20)) ] || { fail "200 lookups 2 ms apart were polled for $((d - c)) times"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "foreground daemon exited $?"; r=1; }
	return $r
}

t_dir_fd_limit() {
	setup fdlimit
	local i j
	for i in $(seq 1 60); do
		mkdir -p "$T/l1/t$i/x" "$T/l2/t$i/y"
		for j in 1 2 3; do echo "$i$j" >"$T/l2/t$i/y/f$j"; done
	done
	# with 40 fds the daemon keeps only a few directory fds open and must evict
	(ulimit -n 40 && "$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m") || fail "mount failed"
	local n
	n=$(find "$T/m" | wc -l)
	[ "$n" = $((6 + 60 * 6)) ] || fail "found $n names, want $((6 + 60 * 6))" # setup adds 5
	[ "$(cat "$T/m/t37/y/f2")" = 372 ] || fail "content after eviction"
	[ "$(ls "/proc/$(daemon_pid "$T/m")/fd" | wc -l)" -le 40 ] || fail "daemon exceeds its fd limit"
	unmount_and_wait "$T/m"
}

t_forget_races_lookups() {
	setup forget
	local i j
	for i in $(seq 1 30); do
		mkdir -p "$T/l1/d$i" "$T/l2/d$i/sub"
		for j in $(seq 1 20); do
			echo "$i-$j" >"$T/l2/d$i/sub/f$j"
			ln "$T/l2/d$i/sub/f$j" "$T/l2/d$i/h$j"
		done
	done
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	local pid end=$((SECONDS + 8)) w
	pid=$(daemon_pid "$T/m")
	# walkers look names up while the kernel drops its dentries: FORGETs race LOOKUPs
	for w in 1 2 3; do
		(while [ $SECONDS -lt $end ]; do find "$T/m" -type f -print0 | xargs -0 cat >/dev/null; done) &
	done
	while [ $SECONDS -lt $end ]; do echo 2 >/proc/sys/vm/drop_caches; sleep 0.05; done
	wait
	kill -0 "$pid" || fail "daemon died"
	[ "$(find "$T/m" -type f | wc -l)" = $((3 + 30 * 40)) ] || fail "names lost"
	[ "$(cat "$T/m/d17/h9")" = 17-9 ] || fail "wrong content after the races"
	unmount_and_wait "$T/m"
}
