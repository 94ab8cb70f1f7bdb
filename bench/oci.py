#!/usr/bin/env python3
"""The oci plugin's speed (issue 22): one layer blob (tar+gzip, tar+zstd)
mounted as a read-only lower without unpacking, against the same layer
unpacked onto ext4 and mounted by ours, the kernel overlay and 1.10, and
against the unpacking it replaces (tar -x of the blob).  Run through
bench/oci.sh (needs root)."""
import argparse, json, os, random, signal, statistics, struct, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovlbench import (Fail, LiveMounts, daemon_pid, drop_caches, errname, log, ratio, rm_rf,  # noqa: E402
                      run_exec, run_fork, unmount_and_reap)

BLOBS = {'gz': 'layer.tar.gz', 'zst': 'layer.tar.zst'}
# every mount is lowerdir=empty:LAYER (the kernel refuses a single lowerdir
# without an upper; the others get the same two layers)
KINDS = ('blob-gz', 'blob-zst', 'ours', 'kernel', 'ref')
LABEL = {'blob-gz': 'ours, blob gz', 'blob-zst': 'ours, blob zst', 'ours': 'ours, unpacked',
         'kernel': 'kernel, unpacked', 'ref': '1.10, unpacked'}
PROBE = 'etc/os-release'   # the first mount is over when this answers
MTIME = 1700000000
GEN = 1   # the generator's version: a change of the layer's shape gets a new data dir


# ---------------------------------------------------------------- the layer
# A userland image layer: packages of small files (text, binary-ish and
# incompressible content, 200 B-64 KiB, a few up to 2 MiB) in directories a
# few levels deep, symlinks, hard links, a few big files; gzip -6 packs it
# about 2.2:1.  Size 1.0 gives a blob of about 1 GiB.

SMALL_BYTES = 1.9e9          # the small and medium files at size 1.0
BIG_BYTES = (200e6, 60e6, 40e6)
BASES = ('usr/lib/python3/dist-packages', 'usr/share', 'usr/lib/x86_64-linux-gnu',
         'opt/app/node_modules', 'usr/include', 'usr/share/doc', 'var/lib')
EXTS = {'text': ('.py', '.h', '.js', '.txt', '.conf', '.md', '.c'),
        'bin': ('.so.1', '.pyc', '.bin', '.o', '.mo'),
        'rand': ('.png', '.gz', '.jpg', '.woff')}


def text_pool(rnd, n):
    """n bytes of source-like text: lines of words drawn from a vocabulary
    with a Zipf law (a few words are most of the text, as in source code)."""
    letters = 'abcdefghijklmnopqrstuvwxyz_'
    vocab = ['(', ')', '{', '}', '};', '=', '==', '->', 'return', 'if', 'else', 'for', 'int',
             'const', 'self', 'def', 'None', '0', '1', '#', '//', 'static', 'struct']
    vocab += [''.join(rnd.choices(letters, k=rnd.randint(2, 11))) for _ in range(8000)]
    cum, t = [], 0.0
    for r in range(len(vocab)):
        t += 1 / (r + 1)
        cum.append(t)
    indents = ['', '    ', '        ', '\t', '\t\t', '            ']
    lines = []   # the lines a file is made of, also drawn with a Zipf law
    while len(lines) < 12000:
        words = rnd.choices(vocab, cum_weights=cum, k=13)
        lines.append(indents[len(lines) % 6] + ' '.join(words[:rnd.randint(1, 13)]) + '\n')
    lcum, t = [], 0.0
    for r in range(len(lines)):
        t += 1 / (r + 1)
        lcum.append(t)
    out, size = [], 0
    while size < n:
        chunk = ''.join(rnd.choices(lines, cum_weights=lcum, k=20000))
        out.append(chunk)
        size += len(chunk)
    return ''.join(out).encode()[:n]


def bin_pool(rnd, n):
    """n bytes like object code: tokens from a small random alphabet, zero runs."""
    toks = [rnd.randbytes(rnd.choice((2, 4, 4, 8, 16))) for _ in range(3000)]
    toks += [bytes(k) for k in (4, 8, 16, 64)]
    w = [1] * 3000 + [60, 40, 20, 10]
    out, size = [], 0
    while size < n:
        c = rnd.choices(toks, w, k=100000)
        out.extend(c)
        size += sum(map(len, c))
    return b''.join(out)[:n]


def logsize(rnd, lo, hi):
    return int(lo * (hi / lo) ** rnd.random())


def gen_tree(root, f, rnd):
    """Write the layer's tree under root; its largest file's path."""
    small = max(8e6, SMALL_BYTES * f)
    psz = int(min(64 << 20, max(8 << 20, small // 8)))
    pools = {'text': text_pool(rnd, psz), 'bin': bin_pool(rnd, psz), 'rand': rnd.randbytes(psz)}

    def write(path, data, mode=0o644):
        with open(path, 'wb') as fh:
            fh.write(data)
        if mode != 0o644:
            os.chmod(path, mode)

    def content(kind, size):
        off = rnd.randrange(psz - size) if size < psz else 0
        return pools[kind][off:off + size]

    for d in ('etc/default', 'etc/ssl/certs', 'etc/apt/sources.list.d', 'usr/bin', 'usr/sbin', 'usr/lib/x86_64-linux-gnu'):
        os.makedirs(os.path.join(root, d))
    write(os.path.join(root, PROBE), b'PRETTY_NAME="bench layer"\nID=bench\n')
    for i in range(150):
        d = ('etc', 'etc/default', 'etc/ssl/certs', 'etc/apt/sources.list.d')[i % 4]
        write(os.path.join(root, d, f'conf{i:03d}.conf'), content('text', logsize(rnd, 100, 8000)))
    used, nfile, pkg = 0, 0, 0
    while used < small:
        base = os.path.join(BASES[pkg % len(BASES)], f'pkg{pkg:04d}')
        subs = [base]
        for _ in range(rnd.randint(1, 12)):
            subs.append(os.path.join(rnd.choice(subs), f'm{len(subs):02d}'))
        for s in subs:
            os.makedirs(os.path.join(root, s), exist_ok=True)
        for k in range(rnd.randint(20, 200)):
            kind = rnd.choices(('text', 'bin', 'rand'), (55, 32, 13))[0]
            size = logsize(rnd, 200, 64 << 10) if rnd.random() < 0.97 else logsize(rnd, 64 << 10, 2 << 20)
            d = rnd.choice(subs)
            name = f'f{k:03d}_{nfile % 997}{rnd.choice(EXTS[kind])}'
            path = os.path.join(root, d, name)
            write(path, content(kind, size))
            used += size
            nfile += 1
            if nfile % 40 == 0:       # lib.so -> lib.so.1 and the like
                os.symlink(name, os.path.join(root, d, 'l_' + name))
            if nfile % 300 == 0:      # a program under two names
                os.link(path, os.path.join(root, 'usr/bin', f'tool{nfile}'))
                os.chmod(path, 0o755)
        pkg += 1
    big = []
    # big libraries, mid-stream (a single-frame zstd blob is decoded from its
    # start up to them): 1 MiB pieces of the pools
    for i, b in enumerate(BIG_BYTES):
        size, path = max(4 << 20, int(b * f)), os.path.join(root, 'usr/lib/x86_64-linux-gnu', f'libbig{i}.so')
        with open(path, 'wb') as fh:
            left = size
            while left:
                n = min(left, 1 << 20)
                fh.write(content(rnd.choices(('bin', 'text', 'rand'), (55, 30, 15))[0], n))
                left -= n
        big.append(os.path.relpath(path, root))
    os.symlink('libbig0.so', os.path.join(root, 'usr/lib/x86_64-linux-gnu/libbig.so'))
    return big[0], nfile + 150


def build_layer(data_root, f):
    """DATA/ociGEN-F: the blobs layer.tar.gz and layer.tar.zst of one tree, the
    tree unpacked from it (unpacked/), an empty top layer (empty/), meta.json.
    Built in .tmp and renamed when complete; reused by later runs."""
    d = os.path.join(data_root, f'oci{GEN}-{f:g}')
    if os.path.exists(os.path.join(d, 'meta.json')):
        with open(os.path.join(d, 'meta.json')) as fh:
            return d, json.load(fh)
    tmp = d + '.tmp'
    rm_rf(tmp)
    rm_rf(d)
    os.makedirs(os.path.join(tmp, 'tree'))
    log(f'# generating {d}')
    t = time.monotonic()
    largest, nfiles = gen_tree(os.path.join(tmp, 'tree'), f, random.Random(22))
    log(f'#   tree: {nfiles} files in {time.monotonic() - t:.0f}s')
    tar = os.path.join(tmp, 'layer.tar')
    tops = sorted(os.listdir(os.path.join(tmp, 'tree')))
    subprocess.run(['tar', '-C', os.path.join(tmp, 'tree'), '--sort=name', '--numeric-owner', '--owner=0',
                    '--group=0', '--format=posix', '--pax-option=delete=atime,delete=ctime',
                    f'--mtime=@{MTIME}', '-cf', tar] + tops, check=True)
    rm_rf(os.path.join(tmp, 'tree'))
    log(f'#   tar: {os.path.getsize(tar) >> 20} MiB; compressing (gzip -6, zstd -3 -T0)')
    with open(tar, 'rb') as i, open(os.path.join(tmp, BLOBS['gz']), 'wb') as o:
        gz = subprocess.Popen(['gzip', '-n', '-6'], stdin=i, stdout=o)
    subprocess.run(['zstd', '-q', '-3', '-T0', tar, '-o', os.path.join(tmp, BLOBS['zst'])], check=True)
    os.makedirs(os.path.join(tmp, 'unpacked'))
    subprocess.run(['tar', '-xf', tar, '-C', os.path.join(tmp, 'unpacked'), '--numeric-owner'], check=True)
    if gz.wait():
        sys.exit('gzip failed')
    os.makedirs(os.path.join(tmp, 'empty'))
    meta = {'size': f, 'tar_bytes': os.path.getsize(tar), 'largest': largest, 'files': nfiles,
            'blob_bytes': {k: os.path.getsize(os.path.join(tmp, b)) for k, b in BLOBS.items()}}
    os.unlink(tar)
    with open(os.path.join(tmp, 'meta.json'), 'w') as fh:
        json.dump(meta, fh)
    os.sync()
    os.rename(tmp, d)
    log(f'#   done in {time.monotonic() - t:.0f}s: gz {meta["blob_bytes"]["gz"] >> 20} MiB, '
        f'zst {meta["blob_bytes"]["zst"] >> 20} MiB, tar {meta["tar_bytes"] >> 20} MiB')
    return d, meta


# ---------------------------------------------------------------- daemons

def is_static(path):
    """No PT_INTERP program header: a static ELF (cannot dlopen plugins)."""
    try:
        with open(path, 'rb') as fh:
            h = fh.read(64)
            if h[:4] != b'\x7fELF' or h[4] != 2:
                return False
            phoff, = struct.unpack_from('<Q', h, 32)
            phentsize, phnum = struct.unpack_from('<HH', h, 54)
            fh.seek(phoff)
            ph = fh.read(phentsize * phnum)
        return not any(struct.unpack_from('<I', ph, i * phentsize)[0] == 3 for i in range(phnum))
    except OSError:
        return False


def pick_ours(top):
    """(daemon for the blob mounts, daemon for the unpacked mount, note).
    $FUSE_OVERLAYFS, else the tree's fuse-overlayfs, mounts the blobs as a
    user would.  A static one cannot load plugins: it hands such a mount to
    its dynamic build, $FUSE_OVERLAYFS_PLUGIN_DAEMON (set here to the tree's
    fuse-overlayfs-plugins unless given, as nothing is installed), which then
    also mounts the unpacked layer, so that blob and unpacked on ours are the
    same binary."""
    b = os.path.abspath(os.environ.get('FUSE_OVERLAYFS') or os.path.join(top, 'fuse-overlayfs'))
    if not os.access(b, os.X_OK):
        sys.exit(f'{b} is missing (make)')
    if not is_static(b):
        return b, b, ''
    pd = os.path.abspath(os.environ.get('FUSE_OVERLAYFS_PLUGIN_DAEMON') or os.path.join(top, 'fuse-overlayfs-plugins'))
    if not os.access(pd, os.X_OK) or is_static(pd):
        sys.exit(f'{b} is static and its plugin daemon {pd} is missing or static (make)')
    os.environ['FUSE_OVERLAYFS_PLUGIN_DAEMON'] = pd   # the daemons inherit it
    return b, pd, f' (static: hands a blob mount over to {pd}, which mounts the unpacked layer too)'


class Mounts(LiveMounts):
    def __init__(self, a, d, bins, plugin):
        self.a, self.d, self.bins, self.plugin = a, d, bins, plugin
        self.mntdir = os.path.join(a.dir, 'mnt')
        self.live = {}   # mnt -> (kind, daemon pid or None)

    def argv(self, kind, mnt):
        if kind == 'kernel':
            e = os.path.join(self.d, 'empty')
            return ['mount', '-t', 'overlay', 'overlay', '-o', f'lowerdir={e}:{self.d}/unpacked', mnt]
        if kind.startswith('blob-'):
            blob = os.path.join(self.d, BLOBS[kind[5:]])
            return [self.bins['blob'], '-o', f'plugins={self.plugin},lowerdir=empty://oci//{blob}', mnt]
        return [self.bins[kind], '-o', 'lowerdir=empty:unpacked', mnt]

    def mount(self, kind):
        """Mount; the seconds from the command's start until PROBE answers."""
        mnt = os.path.join(self.mntdir, kind)
        os.makedirs(mnt, exist_ok=True)
        argv, probe = self.argv(kind, mnt), os.path.join(mnt, PROBE)
        with open(os.path.join(self.mntdir, 'mount.err'), 'w+') as err:   # a file: the daemon inherits it
            t = time.perf_counter()
            p = subprocess.run(argv, cwd=self.d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            if p.returncode:
                err.seek(0)
                raise Fail('mount failed', f'{" ".join(argv)} failed ({p.returncode}): {err.read()[-500:]}')
            deadline = t + self.a.timeout
            while True:
                try:
                    os.stat(probe)
                    break
                except OSError:
                    if time.perf_counter() > deadline:
                        break
                    time.sleep(0.0005)
            dt = time.perf_counter() - t
        self.live[mnt] = (kind, None)
        if dt > self.a.timeout:
            self.umount(mnt)
            raise Fail('mount timeout', f'{probe} did not answer in {self.a.timeout:g}s')
        if kind != 'kernel':
            try:
                self.live[mnt] = (kind, daemon_pid(mnt))
            except Fail:
                self.umount(mnt)
                raise
        return mnt, dt

    def hwm(self, mnt):
        pid = self.live[mnt][1]
        try:
            with open(f'/proc/{pid}/status') as fh:
                for line in fh:
                    if line.startswith('VmHWM:'):
                        return int(line.split()[1])
        except (OSError, TypeError):
            pass
        return None

    def umount(self, mnt):
        kind, pid = self.live.pop(mnt)
        unmount_and_reap(mnt, kind == 'kernel', pid)



# ---------------------------------------------------------------- runs

def cmd_once(argv, cwd, a):
    """Wall time of one command line or python callable (forked), or Fail."""
    if callable(argv):
        rc, _, err, dt = run_fork(argv, cwd, a.timeout)
    else:
        rc, _, err, dt = run_exec(argv, cwd, a.timeout, False, True)
    err = err.decode(errors='replace').strip()
    if rc is None:
        raise Fail('timeout', f'killed after {a.timeout:g}s: {err[:300]}')
    if rc:
        raise Fail(errname(err) or f'rc {rc}', f'{argv if not callable(argv) else "workload"} failed ({rc}): {err[:300]}')
    return dt


def read_files(paths, root):
    buf = bytearray(1 << 20)
    for p in paths:
        fd = os.open(os.path.join(root, p), os.O_RDONLY)
        try:
            while os.readv(fd, [buf]) == len(buf):
                pass
        finally:
            os.close(fd)


class Bench:
    def __init__(self, a, d, meta, mounts, kinds):
        self.a, self.d, self.meta, self.m, self.kinds = a, d, meta, mounts, kinds
        self.res = {}    # workload -> kind -> [seconds]
        self.fail = {}   # workload -> kind -> short reason
        self.hwm = {}    # workload -> kind -> kB (max over mounts)
        self.extra = {}  # workload -> [seconds] (untar, decompression)
        self.unit = {}   # workload -> bytes (a throughput, MB/s) or None (seconds)

    def note(self, w, kind, mnt):
        if kind != 'kernel':
            v = self.m.hwm(mnt)
            if v is not None:
                self.hwm.setdefault(w, {})[kind] = max(v, self.hwm.get(w, {}).get(kind, 0))

    def failed(self, w, kind, e):
        self.fail.setdefault(w, {})[kind] = e.short
        log(f'#   {kind}: FAIL: {e.short}: {e}')

    def done(self, w, kinds):
        r = self.res.get(w, {})
        log('#   ' + '  '.join(f'{k}=' + (f'FAIL: {self.fail[w][k]}' if k in self.fail.get(w, {})
                                         else f'{statistics.median(r[k]):.4g}s' if r.get(k) else '-')
                              for k in kinds))

    def add(self, w, kind, dt):
        self.res.setdefault(w, {}).setdefault(kind, []).append(dt)

    def rotate(self, kinds, rep):
        return kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]

    def mount_time(self, w, kinds, cache, cold):
        """Mount time (start until PROBE answers): cache False removes the
        index cache first; cold drops the page cache first."""
        log(f'# {w}: {self.a.reps} reps')
        self.unit[w] = None
        for rep in range(self.a.reps):
            for kind in self.rotate(kinds, rep):
                if kind in self.fail.get(w, {}):
                    continue
                if kind.startswith('blob-'):
                    c = os.path.join(self.d, '.' + BLOBS[kind[5:]] + '.ovl-index')
                    if not cache and os.path.exists(c):
                        os.unlink(c)
                    if cache and not os.path.exists(c):   # the first mount writes it
                        try:
                            mnt, _ = self.m.mount(kind)
                            self.m.umount(mnt)
                        except Fail as e:
                            self.failed(w, kind, e)
                            continue
                if cold:
                    drop_caches()
                self.once(w, kind, lambda mnt, dt: dt)
        self.done(w, kinds)

    def once(self, w, kind, measure):
        """A fresh mount of kind: measure(mnt, seconds the mount took) is
        the time added; the daemon's RSS noted, the mount gone after."""
        mnt = None
        try:
            mnt, dt = self.m.mount(kind)
            self.add(w, kind, measure(mnt, dt))
        except Fail as e:
            self.failed(w, kind, e)
        finally:
            if mnt:
                self.note(w, kind, mnt)
                self.m.umount(mnt)

    def timed(self, w, kinds, argv_of, cold, nbytes=None):
        """argv_of(mnt) timed on each kind: cold (dropped caches, a fresh
        mount every rep) or warm (side by side, one untimed run first)."""
        log(f'# {w}: {self.a.reps} reps')
        self.unit[w] = nbytes
        if cold:
            for rep in range(self.a.reps):
                for kind in self.rotate(kinds, rep):
                    if kind in self.fail.get(w, {}):
                        continue
                    drop_caches()
                    self.once(w, kind, lambda mnt, _: cmd_once(argv_of(mnt), mnt, self.a))
        else:
            mnts = {}
            try:
                for kind in kinds:
                    try:
                        mnts[kind], _ = self.m.mount(kind)
                        cmd_once(argv_of(mnts[kind]), mnts[kind], self.a)
                    except Fail as e:
                        self.failed(w, kind, e)
                for _ in range(self.a.reps):
                    for kind in mnts:
                        if kind not in self.fail.get(w, {}):
                            try:
                                self.add(w, kind, cmd_once(argv_of(mnts[kind]), mnts[kind], self.a))
                            except Fail as e:
                                self.failed(w, kind, e)
            finally:
                for kind, mnt in mnts.items():
                    self.note(w, kind, mnt)
                    self.m.umount(mnt)
        self.done(w, kinds)

    def plain(self, w, argv, cold, after=None, nbytes=None, cleanup=None):
        """A command outside any mount (the unpacking, the decompressors):
        [its time, its time plus after's] each rep."""
        log(f'# {w}: {self.a.reps} reps')
        self.unit[w] = nbytes
        runs = []
        try:
            for rep in range(self.a.reps + (0 if cold else 1)):
                if cleanup:
                    cleanup()
                if cold:
                    drop_caches()
                t = time.perf_counter()
                cmd_once(argv, self.d, self.a)
                t1 = time.perf_counter() - t
                if after:
                    after()
                t2 = time.perf_counter() - t
                if cold or rep:   # warm: the first run only fills the page cache
                    runs.append((t1, t2))
        except Fail as e:
            log(f'#   FAIL: {e.short}: {e}')
            self.extra[w] = e.short
            return
        finally:
            if cleanup:
                cleanup()
        self.extra[w] = runs
        log(f'#   {statistics.median(r[0] for r in runs):.4g}s' +
            (f', {statistics.median(r[1] for r in runs):.4g}s with sync' if after else ''))


def regular_files(root):
    out = []
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            if not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return sorted(out)


def du_kib(*paths):
    p = subprocess.run(['du', '-sk', '-c'] + list(paths), stdout=subprocess.PIPE, check=True)
    return int(p.stdout.split(b'\n')[-2].split()[0])


# ---------------------------------------------------------------- report

def med(v):
    return statistics.median(v) if v else None


def cell(v, nbytes=None):
    """median [min-max] of times: seconds, or MB/s when nbytes is given (of
    the median time, so that ratios and rates agree with an even rep count)."""
    if not v:
        return '-'
    m, lo, hi = statistics.median(v), min(v), max(v)
    if nbytes:
        m, lo, hi = (nbytes / 1e6 / x for x in (m, hi, lo))
    f = (lambda x: f'{x:.0f}') if nbytes else (lambda x: f'{x:.3g}')
    return f'{f(m)}' + (f' [{f(lo)}-{f(hi)}]' if len(v) > 1 else '')


def report(a, b, kinds, meta, disk, bins, note):
    r, out = b.res, []
    p = lambda s='': out.append(s)
    mib = lambda n: f'{n / (1 << 20):.0f} MiB'
    p(f'\noci plugin bench: size {a.size}, median [min-max] of {a.reps} reps; seconds unless MB/s '
      f'(1 MB = 10^6 bytes)\n')
    p(f'layer: {meta["files"]} files, tar {mib(meta["tar_bytes"])}, gz blob {mib(meta["blob_bytes"]["gz"])} '
      f'({meta["tar_bytes"] / meta["blob_bytes"]["gz"]:.2f}:1), zst blob {mib(meta["blob_bytes"]["zst"])} '
      f'({meta["tar_bytes"] / meta["blob_bytes"]["zst"]:.2f}:1); largest file `{meta["largest"]}` '
      f'({mib(b.big)})  ')
    p(f'ours = {bins["blob"]}{note}  \n1.10 = {bins["ref"]}\n')
    cols = [k for k in KINDS if k in kinds]
    p('| workload | ' + ' | '.join(LABEL[k] for k in cols) + ' | blob gz / unpacked (ours) | blob gz / kernel | unpacked: ours / kernel |')
    p('|---|' + '---:|' * (len(cols) + 3))
    for w in r:
        def c(k):
            why = b.fail.get(w, {}).get(k)
            if why:
                return why if why == 'skipped' else f'FAIL: {why}'
            return cell(r[w].get(k), b.unit[w])
        rb = ratio(med(r[w].get('blob-gz')), med(r[w].get('ours')))
        rk = ratio(med(r[w].get('ours')), med(r[w].get('kernel')))
        bk = ratio(med(r[w].get('blob-gz')), med(r[w].get('kernel')))
        p(f'| {w}{" (MB/s)" if b.unit[w] else ""} | ' + ' | '.join(c(k) for k in cols) + f' | {rb} | {bk} | {rk} |')
    if b.extra:
        p('\nWithout a mount (the unpacking a blob mount replaces, onto ext4 beside the blob; decompressors to /dev/null)\n')
        p('| command | time | with `sync` | MB/s of tar bytes |')
        p('|---|---:|---:|---:|')
    for w, runs in b.extra.items():
        if isinstance(runs, str):
            p(f'| {w} | FAIL: {runs} | | |')
            continue
        t1, t2 = [x[0] for x in runs], [x[1] for x in runs]
        sync = cell(t2) if w.startswith('tar') else ''
        p(f'| {w} | {cell(t1)} | {sync} | {cell(t1, meta["tar_bytes"])} |')
    if b.hwm:
        p('\nDaemon peak RSS (VmHWM before unmount, max over the mounts), MiB\n')
        fcols = [k for k in cols if k != 'kernel']
        p('| workload | ' + ' | '.join(LABEL[k] for k in fcols) + ' |')
        p('|---|' + '---:|' * len(fcols))
        for w, h in b.hwm.items():
            p(f'| {w} | ' + ' | '.join(f'{h[k] / 1024:.1f}' if h.get(k) else '-' for k in fcols) + ' |')
    p('\nDisk space (`du -sk`)\n')
    p('| what | MiB |')
    p('|---|---:|')
    for k, v in disk.items():
        p(f'| {k} | {v / 1024:.1f} |')
    p('\nIssue 22 targets\n')
    p('| target | figure | bound | met |')
    p('|---|---:|---:|---|')
    for t in targets(b, meta, disk):
        p('| ' + ' | '.join(t) + ' |')
    print('\n'.join(out))


def targets(b, meta, disk):
    r = b.res
    g = lambda w, k: med(r.get(w, {}).get(k))
    ex = lambda w, i=0: med([x[i] for x in b.extra[w]]) if isinstance(b.extra.get(w), list) else None
    yes = lambda ok: '-' if ok is None else 'yes' if ok else 'no'
    out = []
    for z, tarw in (('gz', 'tar -xzf'), ('zst', 'tar --zstd -xf')):
        k = f'blob-{z}'
        if k not in b.kinds:
            continue
        fm, tx, txs = g('firstmount', k), ex(tarw), ex(tarw, 1)
        out.append((f'{z}: first mount (index build) <= `{tarw}` onto ext4 (without sync; with sync {fmt(txs)} s)',
                    f'{fmt(fm)} s', f'{fmt(tx)} s', yes(fm <= tx if fm and tx else None)))
        for w in ('cachedmount-cold', 'cachedmount-warm'):
            v = g(w, k)
            out.append((f'{z}: {w} < 0.1 s', f'{fmt(v)} s', '0.1 s', yes(v < 0.1 if v else None)))
        for w in ('find-warm', 'findstat-warm'):
            x, y = g(w, k), g(w, 'ours')
            out.append((f'{z}: {w}, blob / unpacked on ours <= 1.1', ratio(x, y), '1.1',
                        yes(x / y <= 1.1 if x and y else None)))
        for w in ('seqread-warm', 'seqread-cold'):
            x, y = g(w, k), g(w, 'ours')
            dec = 'gzip -dc' if z == 'gz' else 'zstd -dc'
            out.append((f'{z}: {w}, blob / unpacked on ours <= 1.5 (blob {mbs(b.big, x)} MB/s, unpacked '
                        f'{mbs(b.big, y)} MB/s, `{dec}` {mbs(meta["tar_bytes"], ex(dec))} MB/s)',
                        ratio(x, y), '1.5', yes(x / y <= 1.5 if x and y else None)))
        blob, cache, unp = disk.get(f'blob {z}'), disk.get(f'index cache {z}'), disk.get('unpacked tree')
        if blob and unp:
            out.append((f'{z}: disk, blob only: blob + index cache vs unpacked (cache {100 * (cache or 0) / blob:.1f}% '
                        f'of the blob)', f'{(blob + (cache or 0)) / 1024:.0f} MiB', f'{unp / 1024:.0f} MiB',
                        yes(blob + (cache or 0) < unp)))
    return out


def fmt(v):
    return f'{v:.3g}' if v is not None else '-'


def mbs(n, t):
    return f'{n / 1e6 / t:.0f}' if t else '-'


# ---------------------------------------------------------------- main

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--size', type=float, default=1.0, help='1.0: a gzip blob of about 1 GiB')
    ap.add_argument('--dir', default='/var/tmp/ocibench', help='work dir (the layer is kept in DIR/data)')
    ap.add_argument('--json', help='also write every rep to this file')
    ap.add_argument('--fs', default=','.join(KINDS), help='subset of ' + ','.join(KINDS))
    ap.add_argument('--only', default='', help='comma list of groups: firstmount, tar, cachedmount, find, '
                    'seqread, gzip, zstd, randread (default all)')
    ap.add_argument('--timeout', type=float, default=1800, help='seconds before one command is killed')
    ap.add_argument('--zst-randread', action='store_true',
                    help='also randread-cold on the zstd blob (single frame: each out-of-order read decodes '
                         'from the start of the blob; hours at size 1.0)')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root (mount, drop_caches)')
    a.dir = os.path.abspath(a.dir)
    os.umask(0o022)
    plugin = os.path.join(top, 'oci.so')
    if not os.path.exists(plugin):
        sys.exit(f'{plugin} is missing (make)')
    blob, ours, note = pick_ours(top)
    bins = {'blob': blob, 'ours': ours, 'ref': os.path.abspath(os.environ.get('REF_FUSE_OVERLAYFS', '/usr/bin/fuse-overlayfs'))}
    kinds = [k for k in KINDS if k in a.fs.split(',')]
    if 'ref' in kinds and not os.access(bins['ref'], os.X_OK):
        log(f'# WARNING: {bins["ref"]} missing (apt-get install fuse-overlayfs), skipping 1.10')
        kinds.remove('ref')
    d, meta = build_layer(os.path.join(a.dir, 'data'), a.size)
    m = Mounts(a, d, bins, plugin)
    b = Bench(a, d, meta, m, kinds)
    big = os.path.join(d, 'unpacked', meta['largest'])
    b.big = os.path.getsize(big)
    files = regular_files(os.path.join(d, 'unpacked'))
    random.Random(5).shuffle(files)   # an order that is not the tar's
    blobs = [k for k in kinds if k.startswith('blob-')]
    untar_dir = os.path.join(a.dir, 'untar')
    sel = [s for s in a.only.split(',') if s]
    groups = ('firstmount', 'tar', 'cachedmount', 'find', 'seqread', 'gzip', 'zstd', 'randread')
    if any(not any(g.startswith(s) for g in groups) for s in sel):
        sys.exit(f'--only {a.only}: the groups are {", ".join(groups)}')
    want = lambda w: not sel or any(w.startswith(s) for s in sel)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def fresh_untar():
        rm_rf(untar_dir)
        os.makedirs(untar_dir)

    def remove_untar():
        rm_rf(untar_dir)

    try:
        if want('firstmount'):
            b.mount_time('firstmount', blobs, cache=False, cold=True)
        if want('tar'):
            for z, argv in (('gz', ['tar', '-xzf']), ('zst', ['tar', '--zstd', '-xf'])):
                if f'blob-{z}' in kinds:
                    b.plain(' '.join(argv), argv + [BLOBS[z], '-C', untar_dir, '--numeric-owner', '--xattrs'],
                            cold=True, after=os.sync, cleanup=fresh_untar)
            remove_untar()
        if want('cachedmount'):
            b.mount_time('cachedmount-cold', blobs, cache=True, cold=True)
            b.mount_time('cachedmount-warm', blobs, cache=True, cold=False)
        if want('find'):
            b.timed('find-warm', kinds, lambda mnt: ['find', mnt, '-printf', ''], cold=False)
            b.timed('findstat-warm', kinds, lambda mnt: ['find', mnt, '-printf', '%s %i\n'], cold=False)
            b.timed('findstat-cold', kinds, lambda mnt: ['find', mnt, '-printf', '%s %i\n'], cold=True)
        if want('seqread'):
            dd = lambda mnt: ['dd', f'if={os.path.join(mnt, meta["largest"])}', 'of=/dev/null', 'bs=1M']
            b.timed('seqread-cold', kinds, dd, cold=True, nbytes=b.big)
            b.timed('seqread-warm', kinds, dd, cold=False, nbytes=b.big)
        if want('gzip') or want('zstd'):
            for z, dec in (('gz', 'gzip -dc'), ('zst', 'zstd -dc')):
                if f'blob-{z}' in kinds:
                    b.plain(dec, ['sh', '-c', f'{dec} {BLOBS[z]} >/dev/null'], cold=False)
            if os.path.exists('/usr/bin/pigz') and 'blob-gz' in kinds:
                b.plain('pigz -dc', ['sh', '-c', f'pigz -dc {BLOBS["gz"]} >/dev/null'], cold=False)
        if want('randread'):
            rk = [k for k in kinds if k != 'blob-zst' or a.zst_randread]
            b.timed('randread-cold', rk, lambda mnt: (lambda: read_files(files, mnt)), cold=True)
            if rk != kinds:
                b.fail.setdefault('randread-cold', {})['blob-zst'] = 'skipped'
    finally:
        m.umount_all()
        remove_untar()
        if b.res or b.extra:
            finish(a, b, d, kinds, meta, bins, note)


def finish(a, b, d, kinds, meta, bins, note):
    disk = {}
    for z in ('gz', 'zst'):
        if f'blob-{z}' in kinds:
            disk[f'blob {z}'] = du_kib(os.path.join(d, BLOBS[z]))
            c = os.path.join(d, '.' + BLOBS[z] + '.ovl-index')
            if os.path.exists(c):
                disk[f'index cache {z}'] = du_kib(c)
    disk['unpacked tree'] = du_kib(os.path.join(d, 'unpacked'))
    report(a, b, kinds, meta, disk, bins, note)
    if a.json:
        with open(a.json, 'w') as fh:
            json.dump({'size': a.size, 'reps': a.reps, 'bins': bins, 'kinds': kinds, 'meta': meta,
                       'largest_bytes': b.big, 'seconds': b.res, 'failures': b.fail, 'peak_rss_kb': b.hwm,
                       'plain_seconds': b.extra, 'disk_kib': disk}, fh, indent=1)


if __name__ == '__main__':
    main()
