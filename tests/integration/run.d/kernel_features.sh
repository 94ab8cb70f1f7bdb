# shellcheck shell=bash disable=SC2154 # (top: run.sh's)
# The kernel's FUSE features and the syscalls the daemon uses: passthrough
# reads, the writeback cache, FUSE over io_uring, and the fallbacks when newer
# syscalls are refused (seccomp).  Sourced by ../run.sh (its helpers and
# variables), never run alone: `run.sh NAME` runs the test t_NAME.

t_passthrough_reads() {
	setup passthrough
	head -c 64M /dev/urandom >"$T/l2/big"
	# a layer on a stacked filesystem: BACKING_OPEN says ELOOP, the daemon serves it
	mkdir -p "$T/ko"/{a,b,m}
	echo stacked >"$T/ko/a/s"
	mount -t overlay overlay -o "lowerdir=$T/ko/a:$T/ko/b" "$T/ko/m" || fail "kernel overlay mount failed"
	"$BIN" -d -o "lowerdir=$T/l1:$T/l2:$T/ko/m" "$T/m" 2>"$T/err" &
	local pid=$! r=0
	wait_mounted "$T/m" || return 1
	grep -q "passthrough: in use" "$T/err" || { fail "passthrough not in use: $(grep passthrough "$T/err")"; r=1; }
	cmp "$T/m/big" "$T/l2/big" || { fail "content through the mount differs"; r=1; }
	python3 - "$T/m/big" "$T/l2/big" <<-'EOF' || { fail "mmap or concurrent opens"; r=1; }
	import mmap, os, sys
	mnt, low = sys.argv[1:]
	ref = open(low, "rb").read()
	with open(mnt, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
	    assert m[:] == ref, "mmap read differs"
	# two opens of one inode at once (the kernel keeps one backing file per inode)
	a, b = os.open(mnt, os.O_RDONLY), os.open(mnt, os.O_RDONLY)
	for off in range(0, len(ref), 8 << 20):
	    assert os.pread(a, 1 << 20, off) == ref[off:off + (1 << 20)], "first open"
	    assert os.pread(b, 4096, off + 12345) == ref[off + 12345:off + 12345 + 4096], "second open"
	os.close(a)
	assert os.pread(b, 100, 5) == ref[5:105], "second open after the first closed"
	os.close(b)
	EOF
	# opens and releases of one inode racing each other (a stale or second id fails with EIO)
	local racers=() p
	for _ in 1 2 3 4; do
		(for _ in $(seq 100); do [ "$(cat "$T/m/top")" = top ] || exit 1; done) &
		racers+=($!)
	done
	for p in "${racers[@]}"; do wait "$p" || { fail "racing opens of one file failed"; r=1; }; done
	[ "$(cat "$T/m/s")" = stacked ] || { fail "stacked layer not served"; r=1; }
	local stacked
	stacked=$(sed -n 's/.*passthrough: nodeid \([0-9]*\): BACKING_OPEN: Too many levels.*/\1/p' "$T/err")
	[ -n "$stacked" ] || { fail "stacked layer did not fall back"; r=1; }
	grep -q "opcode: OPEN " "$T/err" || { fail "-d traced no OPEN"; r=1; }
	grep -q "opcode: READ .*nodeid: $stacked," "$T/err" || { fail "no READ for the stacked file"; r=1; }
	grep "opcode: READ " "$T/err" | grep -v "nodeid: $stacked," | head -3 | grep . &&
		{ fail "the daemon saw READs of passthrough opens"; r=1; }
	# every backing id is closed once its last open is released (RELEASE is async)
	for _ in $(seq 20); do
		[ "$(grep -c 'backing id .* opened' "$T/err")" = "$(grep -c 'backing id .* closed' "$T/err")" ] && break
		sleep 0.1
	done
	[ "$(grep -c 'backing id .* opened' "$T/err")" = "$(grep -c 'backing id .* closed' "$T/err")" ] ||
		{ fail "backing ids left open: $(grep 'backing id' "$T/err" | tail -3)"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	umount "$T/ko/m"
	# without passthrough (forced here; rootless below) reads go through the daemon by splice
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err2" &
	pid=$!
	wait_mounted "$T/m" || return 1
	grep -q "passthrough: not in use" "$T/err2" || { fail "disabled passthrough still in use"; r=1; }
	cmp "$T/m/big" "$T/l2/big" || { fail "content through the splice path differs"; r=1; }
	grep -q "opcode: READ " "$T/err2" || { fail "no READ through the daemon without passthrough"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	# a user namespace's root has no CAP_SYS_ADMIN in the initial one: splice
	unshare -Urm sh -c "'$BIN' -d -o 'lowerdir=$T/l1:$T/l2' '$T/m' 2>'$T/err3' &
		for i in \$(seq 50); do grep -q ' $T/m ' /proc/mounts && break; sleep 0.1; done
		cmp '$T/m/big' '$T/l2/big'; st=\$?; umount '$T/m'; wait; exit \$st" ||
		{ fail "rootless (user namespace) mount does not read"; r=1; }
	grep -q "passthrough: not in use" "$T/err3" || { fail "passthrough in a user namespace: $(grep passthrough "$T/err3")"; r=1; }
	return $r
}

t_writeback_cache() {
	setup writeback
	echo lower >"$T/l1/app"
	local r=0 pid n
	# without passthrough, small writes reach the daemon gathered (writeback=1, the default)
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	pid=$!
	wait_mounted "$T/m" || return 1
	head -c 512000 /dev/urandom >"$T/data"
	dd if="$T/data" of="$T/m/small" bs=512 status=none || { fail "dd through the mount"; r=1; }
	cmp "$T/data" "$T/u/small" || { fail "upper file differs once dd closed it"; r=1; }
	n=$(grep -c "opcode: WRITE " "$T/err")
	[ "$n" -ge 1 ] && [ "$n" -le 100 ] || { fail "1000 writes of 512 B came as $n WRITE requests, want 1..100"; r=1; }
	# O_APPEND, and a write-only open: the kernel writes back at its own offsets and
	# reads around partial pages through any open file
	python3 - "$T/m" <<-'EOF' || { fail "append / write-only opens through the writeback cache"; r=1; }
	import os, sys
	m = sys.argv[1]
	fd = os.open(m + '/app', os.O_WRONLY | os.O_APPEND)
	for chunk in (b'a' * 10, b'b' * 5000, b'c'):
	    os.write(fd, chunk)
	os.lseek(fd, 0, os.SEEK_SET)
	os.write(fd, b'd')          # O_APPEND: still at the end
	os.close(fd)
	want = b'lower\n' + b'a' * 10 + b'b' * 5000 + b'cd'
	assert open(m + '/app', 'rb').read() == want, 'merged view'
	fd = os.open(m + '/wo', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o200)
	os.write(fd, b'x' * 9000)
	os.pwrite(fd, b'y', 100)    # a partial page: read around it
	os.close(fd)
	assert os.stat(m + '/wo').st_mode & 0o777 == 0o200, 'mode'
	# data still only in the kernel's cache is data to SEEK_DATA (a sparse
	# copy would skip it otherwise)
	fd = os.open(m + '/sp', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
	os.ftruncate(fd, 1 << 20)
	os.pwrite(fd, b'z' * 8192, 512 << 10)
	fd2 = os.open(m + '/sp', os.O_RDONLY)
	assert os.lseek(fd2, 0, os.SEEK_DATA) == 512 << 10, 'SEEK_DATA over unwritten-back data'
	assert os.lseek(fd2, 512 << 10, os.SEEK_HOLE) == (512 << 10) + 8192, 'SEEK_HOLE after it'
	os.close(fd2)
	os.close(fd)
	EOF
	[ "$(cat "$T/u/app")" = "lower
$(head -c 10 /dev/zero | tr '\0' a)$(head -c 5000 /dev/zero | tr '\0' b)cd" ] || { fail "upper app: $(head -c 40 "$T/u/app")"; r=1; }
	[ "$(head -c 100 "$T/u/wo" | tr -d x)" = "" ] && [ "$(head -c 101 "$T/u/wo" | tail -c 1)" = y ] &&
		[ "$(stat -c %s "$T/u/wo")" = 9000 ] || { fail "upper wo content"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	# writeback=0: every write is a request
	rm -rf "$T/u" "$T/w" && mkdir "$T/u" "$T/w"
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w,writeback=0" "$T/m" 2>"$T/err0" &
	pid=$!
	wait_mounted "$T/m" || return 1
	dd if="$T/data" of="$T/m/small" bs=512 status=none || { fail "dd with writeback=0"; r=1; }
	cmp "$T/data" "$T/u/small" || { fail "upper file differs (writeback=0)"; r=1; }
	n=$(grep -c "opcode: WRITE " "$T/err0")
	[ "$n" -ge 1000 ] || { fail "writeback=0: 1000 writes came as $n WRITE requests"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $?"; r=1; }
	return $r
}

# FUSE over io_uring (kernel 6.14+): turned on for this test only, then the
# kernel's setting is restored (also by cleanup, should the test die).
URING_PARAM=/sys/module/fuse/parameters/enable_uring
t_io_uring() {
	setup uring
	[ -w "$URING_PARAM" ] || { fail "$URING_PARAM missing: the kernel has no FUSE io_uring"; return 1; }
	local r=0 pid n cpus q
	cpus=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
	head -c 3000000 /dev/urandom >"$T/l2/big"
	mkdir "$T/l2/many"
	for n in $(seq 2000); do : >"$T/l2/many/entry-with-a-longish-name-$n"; done
	echo Y >"$URING_PARAM"
	# without passthrough every read and write goes through the ring too
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" 2>"$T/err" &
	pid=$!
	wait_mounted "$T/m" || { echo "$URING_SAVED" >"$URING_PARAM"; return 1; }
	for q in $(seq 0 $((cpus - 1))); do
		# a name never looked up: a LOOKUP from CPU q, on queue q
		taskset -c "$q" stat "$T/m/absent-$q" >/dev/null 2>&1
		grep -q "io_uring: queue $q: a thread registered" "$T/err" || { fail "queue $q did not register"; r=1; }
	done
	python3 - "$T/m" "$T/l2" "$cpus" <<-'EOF2' || { fail "operations through the ring"; r=1; }
	import os, sys
	m, low, cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
	for cpu in range(cpus):       # requests of every queue
	    os.sched_setaffinity(0, {cpu})
	    d = f'{m}/c{cpu}'
	    os.mkdir(d)
	    for i in range(200):
	        with open(f'{d}/f{i}', 'w') as f:
	            f.write(str(i))
	    os.rename(f'{d}/f0', f'{d}/g0')
	    os.symlink('t' * 4000, f'{d}/long-target')     # a payload copied out of the ring
	    assert os.readlink(f'{d}/long-target') == 't' * 4000
	    os.setxattr(f'{d}/g0', 'user.big', b'v' * 3000)
	    assert os.getxattr(f'{d}/g0', 'user.big') == b'v' * 3000
	    assert sorted(os.listdir(d))[:3] == ['f1', 'f10', 'f100']
	    for i in range(1, 200):
	        os.unlink(f'{d}/f{i}')
	os.sched_setaffinity(0, set(range(cpus)))
	# large replies (READ, READDIRPLUS) and large requests (WRITE) through the payload buffer
	assert open(f'{m}/big', 'rb').read() == open(f'{low}/big', 'rb').read(), 'read of a lower file'
	assert len(os.listdir(f'{m}/many')) == 2000, 'listing'
	data = os.urandom(5 << 20)
	with open(f'{m}/new', 'wb') as f:
	    f.write(data)
	assert open(f'{m}/new', 'rb').read() == data, 'read back'
	# lseek over data only in the kernel's cache: the daemon's thread waits for
	# WRITEs of its own CPU, which another thread of that queue must serve
	for cpu in range(cpus):
	    os.sched_setaffinity(0, {cpu})
	    fd = os.open(f'{m}/sp{cpu}', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
	    os.ftruncate(fd, 1 << 20)
	    os.pwrite(fd, b'z' * 8192, 512 << 10)
	    assert os.lseek(fd, 0, os.SEEK_DATA) == 512 << 10, 'SEEK_DATA'
	    os.close(fd)
	EOF2
	cmp "$T/u/new" <(cat "$T/m/new") || { fail "upper new differs"; r=1; }
	kill -USR1 $pid
	sleep 0.3
	n=$(sed -n 's/.*io_uring_requests=\([0-9]*\).*/\1/p' "$T/err" | tail -1)
	[ "${n:-0}" -gt 1000 ] || { fail "io_uring_requests=${n:-none}: requests did not come through the ring"; r=1; }
	[ "$(grep -c 'opcode: LOOKUP' "$T/err")" -gt 0 ] || { fail "no request in the trace"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid || { fail "daemon exited $? after unmount"; r=1; }
	# the differential suite through the ring, with passthrough and without
	FUSE_OVERLAYFS="$BIN" "$top/tests/diff/run.sh" >"$T/diff.log" 2>&1 ||
		{ fail "diff suite through io_uring: $(grep -v '^PASS' "$T/diff.log" | head -5)"; r=1; }
	FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1 FUSE_OVERLAYFS="$BIN" "$top/tests/diff/run.sh" >"$T/diff2.log" 2>&1 ||
		{ fail "diff suite through io_uring, no passthrough: $(grep -v '^PASS' "$T/diff2.log" | head -5)"; r=1; }
	# not used where it is turned off (by us, or by threaded=0), nor where this
	# process may not make rings (asking for it then would hold every request back)
	for how in env threaded seccomp; do
		if [ $how = env ]; then
			FUSE_OVERLAYFS_DISABLE_IO_URING=1 "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err-$how" &
		elif [ $how = seccomp ]; then
			"$NONEW" "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err-$how" &
		else
			"$BIN" -d -o "lowerdir=$T/l1:$T/l2,threaded=0" "$T/m" 2>"$T/err-$how" &
		fi
		pid=$!
		wait_mounted "$T/m" || { r=1; continue; }
		[ "$(cat "$T/m/low")" = low ] || { fail "$how: read"; r=1; }
		grep -q "io_uring: not in use" "$T/err-$how" || { fail "$how: io_uring not refused: $(grep io_uring "$T/err-$how")"; r=1; }
		fusermount3 -u "$T/m"
		wait $pid
	done
	# a queue that cannot start its thread: the kernel, which holds requests
	# until every queue has one, must be made to give io_uring up, or the
	# mount hangs.  Threads of default attributes get stacks of RLIMIT_STACK
	# (1 GiB here), more than the address space allows; libfuse's own loop
	# threads get small ones (FUSE_THREAD_STACK).
	if sanitized; then
		echo "    sanitized daemon: needs its address space unlimited; a queue that cannot start not checked"
	else
		(ulimit -s 1048576 && ulimit -v 614400 &&
			FUSE_THREAD_STACK=262144 exec "$BIN" -f -d -o "lowerdir=$T/l1:$T/l2" "$T/m") 2>"$T/err-limit" &
		pid=$!
		for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
		[ "$(timeout 5 cat "$T/m/low")" = low ] || { fail "no read with a queue that could not start"; r=1; }
		grep -q "requests come through /dev/fuse" "$T/err-limit" ||
			{ fail "io_uring not given up: $(grep io_uring "$T/err-limit" | tail -3)"; r=1; }
		fusermount3 -u "$T/m"
		wait $pid
	fi
	echo "$URING_SAVED" >"$URING_PARAM"
	return $r
}

t_fallback_syscalls() {
	setup nonew
	[ -x "$NONEW" ] || die "$NONEW not built"
	"$NONEW" "$BIN" -d -o "lowerdir=$T/l1:$T/l2" "$T/m" 2>"$T/err" &
	local pid=$! r=0
	for _ in $(seq 50); do grep -q " $T/m " /proc/mounts && break; sleep 0.1; done
	grep -q "openat2: fallback; \*xattrat: fallback; fchmodat2: fallback" "$T/err" || { fail "fallbacks not chosen: $(grep openat2 "$T/err")"; r=1; }
	[ "$(cat "$T/m/d/sub/f")" = in-sub ] || { fail "read through fallbacks"; r=1; }
	setfattr -n user.k -v v "$T/l2/low"
	[ "$(getfattr --only-values -n user.k "$T/m/low" 2>/dev/null)" = v ] || { fail "xattr through fallback"; r=1; }
	fusermount3 -u "$T/m"
	wait $pid
	# the whole differential suite, daemon under the same filter
	printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NONEW" "$BIN" >"$T/wrapped"
	chmod +x "$T/wrapped"
	FUSE_OVERLAYFS="$T/wrapped" "$top/tests/diff/run.sh" >"$T/diff.log" 2>&1 ||
		{ fail "diff suite under seccomp: $(grep -v '^PASS' "$T/diff.log" | head -5)"; r=1; }
	return $r
}
