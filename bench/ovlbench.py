#!/usr/bin/env python3
"""Time the same workloads on the kernel overlay, the reference fuse-overlayfs
and ours: the read path on read-only mounts, the write path on read-write
mounts.  Run through bench/run.sh (needs root)."""
import argparse, errno, json, os, random, select, shutil, signal, statistics, subprocess, sys, time

FS = ('kernel', 'ref', 'ours', 'base')   # base: ours at another commit, when BASE_FUSE_OVERLAYFS is set
LABEL = {'kernel': 'kernel', 'ref': 'ref 1.10', 'ours': 'ours', 'base': 'base'}
NLAYERS = 50


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data sets
# Each data set is built in NAME.tmp and renamed when complete, so an
# interrupted generation is redone and a complete one is reused.

def build(path, fill):
    if os.path.isdir(path):
        return path
    tmp = path + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    log(f'# generating {path}')
    t = time.monotonic()
    os.makedirs(tmp)
    fill(tmp)
    os.sync()
    os.rename(tmp, path)
    log(f'#   done in {time.monotonic() - t:.1f}s')
    return path


def build_tar(data, name):
    """DATA/NAME.tar: a tarball of the data set DATA/NAME (members NAME/...)."""
    tar = os.path.join(data, name + '.tar')
    if not os.path.exists(tar):
        log(f'# generating {tar}')
        subprocess.run(['tar', '-cf', tar + '.tmp', '--sort=name', '-C', data, name], check=True)
        os.sync()
        os.rename(tar + '.tmp', tar)
    return tar


def tree_dir(i):
    return os.path.join(f'd{i // 1000:03d}', f's{i // 100 % 10}')


def tree_size(i):
    return (i * 37) % 4096


def fill_files(nfiles, dir_of, size_of, per_dir, name_fmt, blob_bytes, seed, link_every=0):
    """nfiles files of size_of(i) in dir_of(i) (a new dir every per_dir
    files), named name_fmt.format(i); a symlink to one every link_every."""
    def fill(root):
        blob = random.Random(seed).randbytes(blob_bytes)
        for i in range(nfiles):
            d = os.path.join(root, dir_of(i))
            if i % per_dir == 0:
                os.makedirs(d, exist_ok=True)
            name = name_fmt.format(i)
            with open(os.path.join(d, name), 'wb') as f:
                f.write(blob[:size_of(i)])
            if link_every and i % link_every == 0:   # to a file beside it
                os.symlink(name, os.path.join(d, f'l{i:06d}'))
    return fill


def fill_tree(nfiles):
    # 10 subdirs per dir, 100 files per leaf dir, small files of varied size
    return fill_files(nfiles, tree_dir, tree_size, 100, 'f{:06d}', 8192, 1)


def src_dir(i):
    # about 10 files a directory, three levels, as in a source tree
    return os.path.join(f'p{i // 1000:02d}', f'm{i // 100 % 10}', f'c{i // 10 % 10}')


def src_size(i):
    # mostly small, some medium, a few large (a source tree's spread)
    r = (i * 7919) % 100
    return 200 + (i * 37) % 3000 if r < 70 else 4000 + (i * 131) % 30000 if r < 97 else 100000 + (i * 997) % 400000


def fill_src(nfiles):
    return fill_files(nfiles, src_dir, src_size, 10, 'f{:06d}.c', 500000, 3, link_every=100)


def fill_bigdir(nent, sub=None):
    def fill(root):
        if sub:   # one level down: listed on access, not when the daemon mounts the root
            root = os.path.join(root, sub)
            os.mkdir(root)
        for i in range(nent):
            os.close(os.open(os.path.join(root, f'entry-{i:07d}'), os.O_CREAT | os.O_WRONLY, 0o644))
    return fill


def fill_links(nlinks):
    # one file under nlinks names in one directory (hard links: a layer built
    # with `cp -al`, or a package manager's hard-linked files)
    def fill(root):
        os.mkdir(os.path.join(root, 'd'))
        first = os.path.join(root, 'd', 'f000000')
        with open(first, 'w') as f:
            f.write('linked\n')
        for i in range(1, nlinks):
            os.link(first, os.path.join(root, 'd', f'f{i:06d}'))
    return fill


def fill_file(name, mib):
    def fill(root):
        blk = bytearray(random.Random(2).randbytes(1 << 20))
        with open(os.path.join(root, name), 'wb') as f:
            for i in range(mib):
                blk[:8] = i.to_bytes(8, 'little')   # no two MiB alike
                f.write(blk)
    return fill


def fill_layers(nnames):
    # l00 is the bottom layer and holds the looked-up names in d/; every
    # layer has d/ (so d is a merged dir) with a few files of its own.
    def fill(root):
        for l in range(NLAYERS):
            d = os.path.join(root, f'l{l:02d}', 'd')
            os.makedirs(d)
            for k in range(20):
                os.close(os.open(os.path.join(d, f'x{l:02d}_{k}'), os.O_CREAT | os.O_WRONLY, 0o644))
            if l == 0:
                for k in range(nnames):
                    os.close(os.open(os.path.join(d, f'f{k:06d}'), os.O_CREAT | os.O_WRONLY, 0o644))
    return fill


# ---------------------------------------------------------------- mounts

class Fail(Exception):
    """A workload failed on one overlay: .short goes in the table, str() in the log."""
    def __init__(self, short, detail):
        super().__init__(detail)
        self.short = short


class LiveMounts:
    """What both benches' mount tables share: self.live (mnt -> ...) and umount()."""
    def umount_all(self):
        for mnt in list(self.live):
            try:
                self.umount(mnt)
            except Exception as e:
                log(f'# cleanup of {mnt} failed: {e}')


class Mounts(LiveMounts):
    def __init__(self, bins, mntdir, rwdir, ours_opts=None):
        self.bins, self.mntdir, self.rwdir, self.ours_opts = bins, mntdir, rwdir, ours_opts
        self.live = {}            # mnt -> (fs, daemon pid, upper+work base dir)
        self.kernel_rw_opts = None   # what the kernel reports for its read-write mounts

    def mount(self, fs, cwd, lowerdir, rw=False):
        """Mount; rw adds a fresh upperdir and workdir in RWDIR/FS (same fs as the data)."""
        mnt = os.path.join(self.mntdir, fs)
        os.makedirs(mnt, exist_ok=True)
        opts, base = f'lowerdir={lowerdir}', None
        if rw:
            base = os.path.join(self.rwdir, fs)
            rm_rf(base)
            os.makedirs(os.path.join(base, 'upper'))
            os.makedirs(os.path.join(base, 'work'))
            opts += f',upperdir={base}/upper,workdir={base}/work'
        if fs == 'kernel':
            cmd = ['mount', '-t', 'overlay', 'overlay', '-o', opts, mnt]
        else:
            extra = self.ours_opts if fs in ('ours', 'base') and self.ours_opts else ''
            cmd = [self.bins[fs], '-o', opts + (',' + extra if extra else ''), mnt]
        with open(os.path.join(self.mntdir, 'mount.err'), 'w+') as err:   # a file, not a pipe:
            p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stderr=err)   # the daemon inherits it
            if p.returncode:
                err.seek(0)
                if base:
                    rm_rf(base)
                raise Fail('mount failed', f'{" ".join(cmd)} (cwd {cwd}) failed: {err.read()[-500:]}')
        self.live[mnt] = (fs, None, base)
        try:
            for _ in range(500):
                if is_mounted(mnt):
                    break
                time.sleep(0.01)
            else:
                raise Fail('mount failed', f'{mnt} did not appear in /proc/self/mountinfo')
            if fs != 'kernel':
                self.live[mnt] = (fs, daemon_pid(mnt), base)
            elif rw and self.kernel_rw_opts is None:
                self.kernel_rw_opts = ','.join(o for o in super_opts(mnt).split(',')
                                               if o.split('=')[0] not in ('lowerdir', 'upperdir', 'workdir'))
        except BaseException:
            self.umount(mnt)
            raise
        return mnt

    def hwm(self, mnt):
        pid = self.live[mnt][1]
        if pid is None:
            return None
        try:
            with open(f'/proc/{pid}/status') as f:
                for line in f:
                    if line.startswith('VmHWM:'):
                        return int(line.split()[1])      # kB
        except OSError:   # the daemon is gone (it crashed)
            pass
        return None

    def umount(self, mnt):
        fs, pid, base = self.live.pop(mnt)
        unmount_and_reap(mnt, fs == 'kernel', pid)
        if base:   # the upper and work dirs live only as long as the mount
            rm_rf(base)



def unmount_and_reap(mnt, kernel, pid):
    """Unmount (lazily if busy), then wait for the daemon we started (pid,
    None for the kernel's), killing it by PID if it lingers."""
    cmd = ['umount', mnt] if kernel else ['fusermount3', '-u', mnt]
    if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode != 0:
        log(f'# {mnt}: busy, lazy unmount')
        subprocess.run(['umount', '-l', mnt])
    for sig in (None, signal.SIGTERM, signal.SIGKILL) if pid else ():
        if sig:
            log(f'# daemon {pid} still alive, sending {sig.name}')
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        for _ in range(500):
            if not os.path.exists(f'/proc/{pid}'):
                return
            time.sleep(0.01)


def is_mounted(mnt):
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == mnt for line in f)


def super_opts(mnt):
    with open('/proc/self/mountinfo') as f:
        for line in f:
            v = line.split()
            if v[4] == mnt:
                return v[v.index('-') + 3]
    return ''


def rm_rf(path):
    if os.path.lexists(path):
        subprocess.run(['rm', '-rf', '--one-file-system', path], check=True)


def daemon_pid(mnt):
    """PID of the FUSE daemon: the live process whose argv holds the mountpoint."""
    me = os.getpid()
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if mnt.encode() in argv:
            return int(p)
    raise Fail('mount failed', f'no daemon process found for {mnt}')


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3')


# ---------------------------------------------------------------- workloads
# A command fn returns (argv, cwd, parse); argv is either a command line or a
# python callable, which runs in a forked child of this process (no ~60 ms
# interpreter start-up in the timed part).  Helpers for those callables:

def mkfiles(n, d='.'):
    for i in range(n):
        os.close(os.open(os.path.join(d, f'f{i:06d}'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def rmfiles(n, d='.'):
    for i in range(n):
        os.unlink(os.path.join(d, f'f{i:06d}'))


def par_create_stat(nproc, n):
    """nproc processes at once, each creates n files in its own new dir, then stats them."""
    pids = []
    for p in range(nproc):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                d = f'p{p}'
                os.mkdir(d)
                mkfiles(n, d)
                for i in range(n):
                    os.stat(os.path.join(d, f'f{i:06d}'))
                code = 0
            except BaseException as e:
                os.write(2, f'worker {p}: {e}\n'.encode())
            finally:
                os._exit(code)
        pids.append(pid)
    bad = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if bad:
        raise RuntimeError(f'{len(bad)} of {nproc} workers failed')


def rm_while_stat():
    """rm -rf of rm/ while another process lstats every name of stat/."""
    rm = subprocess.Popen(['rm', '-rf', 'rm'])
    n = 0
    for d, dirs, files in os.walk('stat'):
        for e in dirs + files:
            os.lstat(os.path.join(d, e))
            n += 1
    if rm.wait() != 0 or n == 0:
        raise RuntimeError(f'rm -rf exited {rm.returncode}; {n} names stat-ed')


class W:
    """A workload: ds() -> (cwd, lowerdir, extra); mode 'cold' or 'warm';
    cmd(mnt, extra) -> (argv, cwd, parse), timed; rw: read-write mount (fresh
    upper and workdir); setup(mnt, extra): untimed, run on the mount just
    before cmd; verify(mnt, extra): untimed check of the result, raises if wrong;
    ok_rc: a non-zero exit status is expected, not a failure."""
    def __init__(self, ds, mode, cmd, rw=False, setup=None, verify=None, ok_rc=False, sync_setup=True):
        self.ds, self.mode, self.cmd, self.rw = ds, mode, cmd, rw
        self.setup, self.verify, self.ok_rc = setup, verify, ok_rc
        self.sync_setup = sync_setup   # sync after setup (off: the timed command is the sync)


def workloads(a):
    """name -> W."""
    f = a.size
    n_tree, n_dir = max(100, round(30000 * f)), max(100, round(100000 * f))
    big_mib, rand_mib, n_look = max(8, round(2048 * f)), max(4, round(256 * f)), max(100, round(10000 * f))
    n_chmod, n_files, n_par = max(100, round(10000 * f)), max(100, round(5000 * f)), max(100, round(2000 * f))
    app_mib, seq_mib = max(8, round(1024 * f)), max(8, round(2048 * f))
    data = os.path.join(a.dir, 'data')

    def top_over(name, fill):   # two lowers: an empty top layer over the data set
        def ds():
            build(os.path.join(data, 'empty'), lambda p: None)
            build(os.path.join(data, name), fill)
            return data, f'empty:{name}', None
        return ds

    def layers():
        name = f'layers50-{n_look}'
        root = build(os.path.join(data, name), fill_layers(n_look))
        names = os.path.join(data, name + '.names')
        if not os.path.exists(names):
            with open(names + '.tmp', 'w') as fh:
                for k in range(n_look):   # half present (bottom layer), half missing everywhere
                    fh.write(f'd/f{k:06d}\nd/m{k:06d}\n')
            os.rename(names + '.tmp', names)
        return root, ':'.join(f'l{l:02d}' for l in reversed(range(NLAYERS))), names

    def fio_time(out):
        j = json.loads(out[out.index('{'):])
        return j['jobs'][0]['read']['runtime'] / 1000.0   # ms -> s; fio startup (~0.3 s) excluded

    tree = top_over(f'tree-{n_tree}', fill_tree(n_tree))
    src = top_over(f'src-{n_tree}', fill_src(n_tree))
    bigdir = top_over(f'bigdir-{n_dir}', fill_bigdir(n_dir))
    bigsub = top_over(f'bigsub-{n_dir}', fill_bigdir(n_dir, 'd'))
    big = top_over(f'big-{big_mib}M', fill_file('big.dat', big_mib))
    rnd = top_over(f'rand-{rand_mib}M', fill_file('rand.dat', rand_mib))
    find = lambda m, x: (['find', m, '-printf', '%s %i\n'], None, None)
    ls = lambda m, x: (['ls', '-f', m], None, None)
    ls_sub = lambda m, x: (['ls', '-f', os.path.join(m, 'd')], None, None)
    dd = lambda m, x: (['dd', f'if={m}/big.dat', 'of=/dev/null', 'bs=1M', 'status=none'], None, None)
    fio = lambda m, x: (['fio', '--name=randread', f'--filename={m}/rand.dat', '--readonly',
                         '--rw=randread', '--bs=4k', '--ioengine=psync', f'--size={rand_mib}M',
                         '--loops=4', '--randrepeat=1', '--invalidate=0', '--output-format=json'], None, fio_time)
    look = lambda m, names: (['xargs', '-a', names, '-d', '\n', 'stat', '-c', '%i'], m, None)

    # ---- write path: read-write mounts over ONE lower layer (the data set
    # itself; the upper layer is the writable top), extra = the lower's path
    def lower(name, fill):
        def ds():
            return data, name, build(os.path.join(data, name), fill)
        return ds

    def tarball_of(name, fill):
        def ds():
            build(os.path.join(data, name), fill)
            build(os.path.join(data, 'empty'), lambda p: None)
            return data, 'empty', build_tar(data, name)
        return ds
    tarball = tarball_of(f'tree-{n_tree}', fill_tree(n_tree))
    srctar = tarball_of(f'src-{n_tree}', fill_src(n_tree))

    def chtree():
        cwd, low, root = lower(f'tree-{n_chmod}', fill_tree(n_chmod))()
        for p in (root, os.path.join(root, tree_dir(0)), os.path.join(root, tree_dir(0), 'f000000')):
            if os.stat(p).st_mode & 0o020:
                raise RuntimeError(f'{p} is already group-writable: chmod -R g+w would change nothing')
        return cwd, low, root

    def expect(ok, what):
        if not ok:
            raise RuntimeError(f'wrong result: {what}')

    def count(d):
        return len(os.listdir(d))

    def fill_two_trees(p):
        for t in ('rm', 'stat'):
            os.mkdir(os.path.join(p, t))
            fill_tree(n_tree)(os.path.join(p, t))
    two_trees = lower(f'two-trees-{n_tree}', fill_two_trees)
    empty1 = lower('empty', lambda p: None)
    rmtree = lower(f'tree-{n_tree}', fill_tree(n_tree))
    big1 = lower(f'big-{app_mib}M', fill_file('big.dat', app_mib))
    last, clast = n_tree - 1, n_chmod - 1
    n_links = max(100, round(30000 * f))
    links = lower(f'links-{n_links}', fill_links(n_links))

    def v_untar(m, tar):
        p = os.path.join(m, f'tree-{n_tree}', tree_dir(last), f'f{last:06d}')
        expect(os.path.getsize(p) == tree_size(last), f'{p} size')

    def v_srcuntar(m, tar):
        p = os.path.join(m, f'src-{n_tree}', src_dir(last), f'f{last:06d}.c')
        expect(os.path.getsize(p) == src_size(last), f'{p} size')

    dd_out = lambda m, extra=(): ['dd', 'if=/dev/zero', f'of={m}/out', 'bs=1M', f'count={seq_mib}', 'status=none'] + list(extra)
    v_out = lambda m, x: expect(os.path.getsize(f'{m}/out') == seq_mib << 20, 'size')

    def v_append(m, x):
        with open(os.path.join(m, 'big.dat'), 'rb') as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(-1, os.SEEK_END)
            expect(size == (app_mib << 20) + 1 and fh.read(1) == b'x', f'big.dat size {size}')

    def v_chmod(m, x):
        for p in (m, os.path.join(m, tree_dir(clast)), os.path.join(m, tree_dir(clast), f'f{clast:06d}')):
            expect(os.stat(p).st_mode & 0o020, f'{p} mode')

    return {
        'find-cold': W(tree, 'cold', find), 'find-warm': W(tree, 'warm', find),
        'srcfind-cold': W(src, 'cold', find), 'srcfind-warm': W(src, 'warm', find),
        'ls-cold': W(bigdir, 'cold', ls), 'ls-warm': W(bigdir, 'warm', ls),
        'lssub-cold': W(bigsub, 'cold', ls_sub), 'lssub-warm': W(bigsub, 'warm', ls_sub),
        'seqread-cold': W(big, 'cold', dd), 'seqread-warm': W(big, 'warm', dd),
        'randread-warm': W(rnd, 'warm', fio),
        'lookup50-cold': W(layers, 'cold', look, ok_rc=True),   # stat of missing names fails by design
        'lookup50-warm': W(layers, 'warm', look, ok_rc=True),
        # ---- write path (all cold: fresh caches, mount, upper and workdir per rep)
        'untar': W(tarball, 'cold', lambda m, tar: (['tar', '-xf', tar, '-C', m], None, None),
                   rw=True, verify=v_untar),
        'srcuntar': W(srctar, 'cold', lambda m, tar: (['tar', '-xf', tar, '-C', m], None, None),
                      rw=True, verify=v_srcuntar),
        'create5k': W(empty1, 'cold', lambda m, x: (lambda: mkfiles(n_files), m, None),
                      rw=True, verify=lambda m, x: expect(count(m) == n_files, 'file count')),
        'remove5k': W(empty1, 'cold', lambda m, x: (lambda: rmfiles(n_files), m, None), rw=True,
                      setup=lambda m, x: (lambda: mkfiles(n_files), m, None),
                      verify=lambda m, x: expect(count(m) == 0, 'files left')),
        'append1': W(big1, 'cold', lambda m, x: (['sh', '-c', 'printf x >> "$1"', 'sh', f'{m}/big.dat'], None, None),
                     rw=True, verify=v_append),
        'chmodR': W(chtree, 'cold', lambda m, x: (['chmod', '-R', 'g+w', m], None, None),
                    rw=True, verify=v_chmod),
        'seqwrite': W(empty1, 'cold', lambda m, x: (dd_out(m, ['conv=fsync']), None, None), rw=True, verify=v_out),
        # the same write without the fsync (what a user waits for before the
        # command returns), and the fsync of its data on its own
        'seqwrite-nosync': W(empty1, 'cold', lambda m, x: (dd_out(m), None, None), rw=True, verify=v_out),
        'seqwrite-sync': W(empty1, 'cold', lambda m, x: (['sync', f'{m}/out'], None, None), rw=True,
                           setup=lambda m, x: (dd_out(m), None, None), verify=v_out, sync_setup=False),
        'rmrf': W(rmtree, 'cold', lambda m, root: (['rm', '-rf'] + [os.path.join(m, e) for e in sorted(os.listdir(root))],
                                                  None, None),
                  rw=True, verify=lambda m, x: expect(count(m) == 0, 'entries left')),
        # one lower inode under many names: each name an inode of its own once
        # the mount can copy up (as the kernel overlay without index)
        'links-ls': W(links, 'cold', lambda m, x: (['ls', '-l', os.path.join(m, 'd')], None, None), rw=True),
        'links-rmrf': W(links, 'cold', lambda m, x: (['rm', '-rf', os.path.join(m, 'd')], None, None), rw=True,
                        verify=lambda m, x: expect(not os.path.exists(os.path.join(m, 'd')), 'd left')),
        'rmrf-stat': W(two_trees, 'cold', lambda m, x: (rm_while_stat, m, None), rw=True,
                       verify=lambda m, x: expect(os.listdir(m) == ['stat'], 'rm left')),
        'par4': W(empty1, 'cold', lambda m, x: (lambda: par_create_stat(4, n_par), m, None),
                  rw=True, verify=lambda m, x: expect(all(count(f'{m}/p{p}') == n_par for p in range(4)), 'file count')),
    }


# ---------------------------------------------------------------- running

_ERRS = [(os.strerror(c), n) for c, n in errno.errorcode.items()
         if not os.strerror(c).startswith('Unknown error')]


def errname(text):
    """Symbolic name of the first strerror() message in text (EROFS, ENOTCONN...)."""
    hits = [(text.find(s), -len(s), n) for s, n in _ERRS if s in text]
    return min(hits)[2] if hits else None


def kill_group(pid):   # the session we started for the command (it may have forked)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Alarm(Exception):
    pass


def _alarm(*_):
    raise _Alarm


def run_exec(argv, cwd, timeout, want_out, want_err):
    # The timeout is a SIGALRM timer around a blocking communicate():
    # communicate(timeout=) waits for the child by polling with sleeps of up
    # to 50 ms, which would add milliseconds to every timed command.
    t = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True,
                         stdout=subprocess.PIPE if want_out else subprocess.DEVNULL,
                         stderr=subprocess.PIPE if want_err else subprocess.DEVNULL)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        out, err = p.communicate()
        signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t
    except BaseException as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if p.returncode is None:   # not reaped yet: its pid (= its group) is still ours
            kill_group(p.pid)
        p.wait()
        for fh in (p.stdout, p.stderr):
            if fh:
                fh.close()
        if isinstance(e, _Alarm):
            return None, b'', b'', None
        raise
    finally:
        signal.signal(signal.SIGALRM, old)
    return p.returncode, out or b'', err or b'', dt


def run_fork(fn, cwd, timeout):
    """Run fn() in a forked child (own session) with stderr to a pipe."""
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            os.close(r)
            os.dup2(w, 2)
            nul = os.open(os.devnull, os.O_RDWR)
            os.dup2(nul, 0)
            os.dup2(nul, 1)
            if cwd:
                os.chdir(cwd)
            fn()
            code = 0
        except BaseException as e:
            os.write(2, f'{type(e).__name__}: {e}\n'.encode())
        finally:
            os._exit(code)
    os.close(w)
    err, deadline = b'', t + timeout
    try:
        while True:   # EOF when the child and any workers it forked have exited
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                kill_group(pid)
                os.waitpid(pid, 0)
                return None, b'', err, None
            chunk = os.read(r, 65536)
            if not chunk:
                break
            err += chunk
        st = os.waitpid(pid, 0)[1]
    except BaseException:
        kill_group(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(r)
    return os.waitstatus_to_exitcode(st), b'', err, time.perf_counter() - t


def run_once(cmdfn, mnt, extra, ok_rc=False, timeout=600, what=''):
    """Run one command on mnt; its wall time (or parsed time), or raise Fail."""
    argv, cwd, parse = cmdfn(mnt, extra)
    if callable(argv):
        rc, out, err, dt = run_fork(argv, cwd, timeout)
        name = what or 'workload'
    else:
        rc, out, err, dt = run_exec(argv, cwd, timeout, parse is not None, not ok_rc)
        name = what or argv[0]
    err = err.decode(errors='replace').strip()
    lines = err.splitlines()   # the first lines name the cause; the rest is often the same
    msg = '\n'.join(l[:300] for l in lines[:3]) + (f'\n[{len(lines) - 3} more lines]' if len(lines) > 3 else '')
    if rc is None:
        raise Fail(f'{what} timeout'.strip(), f'{name} on {mnt}: killed after {timeout:g}s' + (f'\n{msg}' if msg else ''))
    if rc != 0 and not ok_rc:
        short = errname(err) or (f'rc {rc}' if rc > 0 else f'signal {-rc}')
        raise Fail(f'{what} {short}'.strip(), f'{name} on {mnt} failed ({rc}):\n{msg}')
    return parse(out.decode()) if parse else dt


def bench(a, name, w, mounts, fss, res, rss, fails):
    cwd, lowerdir, extra = w.ds()
    times = {fs: [] for fs in fss}
    hwm = {fs: [] for fs in fss if fs != 'kernel'}
    failed = {}   # fs -> short reason; a failed fs gets no more reps of this workload
    log(f'# {name}: {a.reps} reps, {mode_desc(w)}')

    def take_hwm(fs, mnt):
        if fs != 'kernel':
            hwm[fs].append(mounts.hwm(mnt))

    def fail(fs, e):
        failed[fs] = e.short
        log(f'#   {fs}: FAIL: {e.short}: {e}')

    def verify(fs, mnt):
        if w.verify:
            try:
                run_once(lambda m, x: (lambda: w.verify(m, x), None, None), mnt, extra,
                         timeout=a.timeout, what='verify')
            except Fail as e:
                short = e.short if errname(str(e)) or 'timeout' in e.short else 'wrong result'
                raise Fail(short, str(e)) from None

    if w.mode == 'cold':   # fresh caches and a fresh mount (and upper) for every rep
        for rep in range(a.reps):
            # each rep starts with another fs: what a run leaves the disk to do
            # (a host flushing the guest's writes) then slows each fs alike
            for fs in fss[rep % len(fss):] + fss[:rep % len(fss)]:
                if fs in failed:
                    continue
                drop_caches()
                mnt = None
                try:
                    mnt = mounts.mount(fs, cwd, lowerdir, w.rw)
                    if w.setup:
                        run_once(w.setup, mnt, extra, timeout=a.timeout, what='setup')
                        if w.sync_setup:
                            os.sync()
                    dt = run_once(w.cmd, mnt, extra, w.ok_rc, a.timeout)
                    verify(fs, mnt)
                    times[fs].append(dt)
                except Fail as e:
                    fail(fs, e)
                finally:
                    if mnt:
                        take_hwm(fs, mnt)
                        mounts.umount(mnt)
    else:                # one mount per fs, one untimed run, then reps interleaved
        mnts = {}
        for fs in fss:
            try:
                mnts[fs] = mounts.mount(fs, cwd, lowerdir, w.rw)
            except Fail as e:
                fail(fs, e)
        for fs in mnts:
            try:
                run_once(w.cmd, mnts[fs], extra, w.ok_rc, a.timeout)
            except Fail as e:
                fail(fs, e)
        for _ in range(a.reps):
            for fs in mnts:
                if fs not in failed:
                    try:
                        times[fs].append(run_once(w.cmd, mnts[fs], extra, w.ok_rc, a.timeout))
                    except Fail as e:
                        fail(fs, e)
        for fs in mnts:
            take_hwm(fs, mnts[fs])
            mounts.umount(mnts[fs])
    res[name] = {fs: statistics.median(v) if v and fs not in failed else None for fs, v in times.items()}
    fails[name] = failed
    rss[name] = {fs: None if fs in failed else max((x for x in v if x is not None), default=None)
                 for fs, v in hwm.items()}
    log('#   ' + '  '.join(f'{fs}=' + (f'FAIL: {failed[fs]}' if fs in failed else f'{res[name][fs]:.4g}s')
                          for fs in fss))
    return {'mode': w.mode, 'rw': w.rw, 'times': times, 'hwm_kb': hwm, 'failed': failed}


def kernel_defaults():
    """The overlay module parameters that set the defaults of a mount without options."""
    d, out = '/sys/module/overlay/parameters', []
    for p in ('redirect_dir', 'index', 'metacopy', 'xino_auto', 'nfs_export'):
        try:
            with open(os.path.join(d, p)) as f:
                out.append(f'{p}={f.read().strip()}')
        except OSError:
            pass
    return ' '.join(out)


def mode_desc(w):
    return w.mode + (', read-write' if w.rw else '')


# ---------------------------------------------------------------- report

def ratio(x, y):
    return f'{x / y:.2f}' if x is not None and y else '-'


URING_PARAM = '/sys/module/fuse/parameters/enable_uring'


def uring_param():
    try:
        with open(URING_PARAM) as f:
            return f.read().strip()
    except OSError:
        return None


def report(a, fss, res, rss, fails, bins, kopts, raw):
    g = lambda d, fs: d.get(fs)
    print(f'\nfuse-overlayfs bench: size {a.size}, median of {a.reps} reps, seconds\n')
    print(f'ref = {bins["ref"]}  \nours = {bins["ours"]}' + (f' with `-o ..,{a.ours_opts}`' if a.ours_opts else '')
          + (f'  \nbase = {bins["base"]}' if 'base' in fss else '') + '\n')
    print(f'fuse module `enable_uring={uring_param() or "absent"}` (ours takes requests through io_uring '
          f'when Y; 1.10 never does)\n')
    if kopts is not None:
        print(f'kernel read-write mounts: `-o lowerdir=..,upperdir=..,workdir=..` only; mountinfo shows '
              f'`{kopts}`; module defaults: `{kernel_defaults()}`\n')
    base = 'base' in fss
    print('| workload | kernel | ref 1.10 | ours | ours/ref | ours/kernel |' + (' base | ours/base |' if base else ''))
    print('|---|---:|---:|---:|---:|---:|' + ('---:|---:|' if base else ''))
    fmt = lambda v: f'{v:.4g}' if v is not None else '-'
    for w, r in res.items():
        cell = lambda fs: f'FAIL: {fails[w][fs]}' if fs in fails.get(w, {}) else fmt(g(r, fs))
        print(f'| {w} | {cell("kernel")} | {cell("ref")} | {cell("ours")} '
              f'| {ratio(g(r, "ours"), g(r, "ref"))} | {ratio(g(r, "ours"), g(r, "kernel"))} |'
              + (f' {cell("base")} | {ratio(g(r, "ours"), g(r, "base"))} |' if base else ''))
    if base:
        spread_report(raw)
    if any(fs != 'kernel' for fs in fss):
        print('\nDaemon peak RSS (VmHWM before unmount, max over mounts), MiB\n')
        print('| workload | ref 1.10 | ours | ours/ref |')
        print('|---|---:|---:|---:|')
        mib = lambda v: f'{v / 1024:.1f}' if v is not None else '-'
        for w, r in rss.items():
            print(f'| {w} | {mib(g(r, "ref"))} | {mib(g(r, "ours"))} | {ratio(g(r, "ours"), g(r, "ref"))} |')


def spread_report(raw):
    """Ours against base, each with its run-to-run spread (max - min of its
    reps): ours is slower only if its median exceeds base's by more than the
    larger spread."""
    print('\nOurs against base: medians and run-to-run spreads (max - min), seconds\n')
    print('| workload | base | base spread | ours | ours spread | ours - base | slower than the spread? |')
    print('|---|---:|---:|---:|---:|---:|---|')
    for w, r in raw.items():
        t = r['times']
        if not t.get('base') or not t.get('ours') or {'base', 'ours'} & set(r['failed']):
            continue
        mb, mo = statistics.median(t['base']), statistics.median(t['ours'])
        sb, so = max(t['base']) - min(t['base']), max(t['ours']) - min(t['ours'])
        slower = 'yes' if mo - mb > max(sb, so) else 'no'
        print(f'| {w} | {mb:.4g} | {sb:.3g} | {mo:.4g} | {so:.3g} | {mo - mb:+.3g} | {slower} |')


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--size', type=float, default=1.0, help='scale data set sizes (0.1 = smoke run)')
    ap.add_argument('--only', action='append', default=[],
                    help='workload name or prefix (comma list, repeatable), e.g. find,seqread-warm; '
                         '"read" or "write" selects a whole group')
    ap.add_argument('--fs', default=','.join(FS),
                    help='subset of kernel,ref,ours,base (base only with BASE_FUSE_OVERLAYFS)')
    ap.add_argument('--dir', default='/var/tmp/ovlbench', help='work dir (data sets are kept here)')
    ap.add_argument('--json', help='also write raw per-rep results to this file')
    ap.add_argument('--timeout', type=float, default=600,
                    help='seconds before one command is killed and counted as a failure (default 600)')
    ap.add_argument('--list', action='store_true', help='list workloads and exit')
    ap.add_argument('--ours-opts', help='more -o options for ours only (volatile, to compare copy-ups with 1.10)')
    ap.add_argument('--uring', choices=['Y', 'N'],
                    help='set the fuse module parameter enable_uring for the run, then restore it')
    a = ap.parse_args()
    a.dir = os.path.abspath(a.dir)
    bins = {'ref': os.environ.get('REF_FUSE_OVERLAYFS', '/usr/bin/fuse-overlayfs'),
            'ours': os.environ.get('FUSE_OVERLAYFS', os.path.join(here, '..', 'fuse-overlayfs'))}
    if os.environ.get('BASE_FUSE_OVERLAYFS'):
        bins['base'] = os.environ['BASE_FUSE_OVERLAYFS']
    bins = {k: os.path.abspath(v) for k, v in bins.items()}
    wl = workloads(a)
    if a.list:
        print('\n'.join(wl))
        return
    only = [s for o in a.only for s in o.split(',') if s]
    group = lambda w: 'write' if wl[w].rw else 'read'
    sel = [w for w in wl if not only or any(w == o or w.startswith(o) or o == group(w) for o in only)]
    if not sel:
        sys.exit(f'no workload matches {only}; try --list')
    fss = [fs for fs in FS if fs in a.fs.split(',') and (fs == 'kernel' or fs in bins)]
    for fs in fss[:]:
        if fs != 'kernel' and not os.access(bins[fs], os.X_OK):
            log(f'# WARNING: {fs} binary {bins[fs]} not found, skipping it')
            fss.remove(fs)
    if os.geteuid() != 0:
        sys.exit('needs root (mount, drop_caches)')
    os.umask(0o022)   # data sets, upper files: the same modes whoever runs it
    data, rwdir = os.path.join(a.dir, 'data'), os.path.join(a.dir, 'rw')
    if any(wl[w].rw for w in sel):
        os.makedirs(data, exist_ok=True)
        os.makedirs(rwdir, exist_ok=True)
        if os.stat(data).st_dev != os.stat(rwdir).st_dev:
            log(f'# WARNING: {rwdir} (upper, work) and {data} (lower) are on different filesystems')
    mounts = Mounts(bins, os.path.join(a.dir, 'mnt'), rwdir, a.ours_opts)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res, rss, fails, raw = {}, {}, {}, {}
    uring_saved = uring_param()
    if a.uring:
        if uring_saved is None:
            sys.exit(f'--uring: {URING_PARAM} is missing (a kernel before 6.14)')
        with open(URING_PARAM, 'w') as f:
            f.write(a.uring)
    try:
        for w in sel:
            raw[w] = bench(a, w, wl[w], mounts, fss, res, rss, fails)
    finally:
        mounts.umount_all()
        if res:
            report(a, fss, res, rss, fails, bins, mounts.kernel_rw_opts, raw)
        if a.uring:
            with open(URING_PARAM, 'w') as f:
                f.write(uring_saved)
        if os.path.isdir(rwdir):   # an upper whose removal an interrupt cut short
            for e in os.listdir(rwdir):
                rm_rf(os.path.join(rwdir, e))
        if a.json:
            with open(a.json, 'w') as f:
                json.dump({'size': a.size, 'reps': a.reps, 'bins': bins, 'fs': fss,
                           'median_s': res, 'failures': fails, 'peak_rss_kb': rss, 'raw': raw,
                           'kernel_rw_opts': mounts.kernel_rw_opts, 'enable_uring': a.uring or uring_saved},
                          f, indent=1)


if __name__ == '__main__':
    main()
