#!/usr/bin/env python3
"""Time the same read-path workloads on the kernel overlay, the reference
fuse-overlayfs and ours.  Run through bench/run.sh (needs root)."""
import argparse, json, os, random, shutil, signal, statistics, subprocess, sys, time

FS = ('kernel', 'ref', 'ours')
LABEL = {'kernel': 'kernel', 'ref': 'ref 1.10', 'ours': 'ours'}
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


def fill_tree(nfiles):
    # 10 subdirs per dir, 100 files per leaf dir, small files of varied size
    def fill(root):
        blob = random.Random(1).randbytes(8192)
        for i in range(nfiles):
            d = os.path.join(root, f'd{i // 1000:03d}', f's{i // 100 % 10}')
            if i % 100 == 0:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f'f{i:06d}'), 'wb') as f:
                f.write(blob[:(i * 37) % 4096])
    return fill


def fill_bigdir(nent, sub=None):
    def fill(root):
        if sub:   # one level down: listed on access, not when the daemon mounts the root
            root = os.path.join(root, sub)
            os.mkdir(root)
        for i in range(nent):
            os.close(os.open(os.path.join(root, f'entry-{i:07d}'), os.O_CREAT | os.O_WRONLY, 0o644))
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

class Mounts:
    def __init__(self, bins, mntdir):
        self.bins, self.mntdir, self.live = bins, mntdir, {}   # mnt -> (fs, pid)

    def mount(self, fs, cwd, lowerdir):
        mnt = os.path.join(self.mntdir, fs)
        os.makedirs(mnt, exist_ok=True)
        if fs == 'kernel':
            cmd = ['mount', '-t', 'overlay', 'overlay', '-o', f'lowerdir={lowerdir}', mnt]
        else:
            cmd = [self.bins[fs], '-o', f'lowerdir={lowerdir}', mnt]
        with open(os.path.join(self.mntdir, 'mount.err'), 'w+') as err:   # a file, not a pipe:
            p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stderr=err)   # the daemon inherits it
            if p.returncode:
                err.seek(0)
                raise RuntimeError(f'{" ".join(cmd)} (cwd {cwd}) failed: {err.read()[-500:]}')
        self.live[mnt] = (fs, None)
        for _ in range(500):
            if is_mounted(mnt):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f'{mnt} did not appear in /proc/self/mountinfo')
        if fs != 'kernel':
            self.live[mnt] = (fs, daemon_pid(mnt))
        return mnt

    def hwm(self, mnt):
        pid = self.live[mnt][1]
        if pid is None:
            return None
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])      # kB
        return None

    def umount(self, mnt):
        fs, pid = self.live.pop(mnt)
        cmd = ['umount', mnt] if fs == 'kernel' else ['fusermount3', '-u', mnt]
        if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode != 0:
            log(f'# {mnt}: busy, lazy unmount')
            subprocess.run(['umount', '-l', mnt])
        if pid:   # wait for the daemon we started to go; kill it by PID if it lingers
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig:
                    log(f'# daemon {pid} still alive, sending {sig.name}')
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        break
                for _ in range(500):
                    if not os.path.exists(f'/proc/{pid}'):
                        break
                    time.sleep(0.01)
                else:
                    continue
                break

    def umount_all(self):
        for mnt in list(self.live):
            try:
                self.umount(mnt)
            except Exception as e:
                log(f'# cleanup of {mnt} failed: {e}')


def is_mounted(mnt):
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == mnt for line in f)


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
    raise RuntimeError(f'no daemon process found for {mnt}')


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3')


# ---------------------------------------------------------------- workloads

def workloads(a):
    """name -> (dataset fn, cache mode, command fn(mnt, ds) -> (argv, cwd, parse))."""
    f = a.size
    n_tree, n_dir = max(100, round(30000 * f)), max(100, round(100000 * f))
    big_mib, rand_mib, n_look = max(8, round(2048 * f)), max(4, round(256 * f)), max(100, round(10000 * f))
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
    return {
        'find-cold': (tree, 'cold', find), 'find-warm': (tree, 'warm', find),
        'ls-cold': (bigdir, 'cold', ls), 'ls-warm': (bigdir, 'warm', ls),
        'lssub-cold': (bigsub, 'cold', ls_sub), 'lssub-warm': (bigsub, 'warm', ls_sub),
        'seqread-cold': (big, 'cold', dd), 'seqread-warm': (big, 'warm', dd),
        'randread-warm': (rnd, 'warm', fio),
        'lookup50-cold': (layers, 'cold', look), 'lookup50-warm': (layers, 'warm', look),
    }


def run_once(cmdfn, mnt, extra, check):
    argv, cwd, parse = cmdfn(mnt, extra)
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                       stderr=subprocess.PIPE if check else subprocess.DEVNULL,
                       stdout=subprocess.PIPE if parse else subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if check and p.returncode != 0:
        raise RuntimeError(f'{argv[0]} on {mnt} failed ({p.returncode}): {p.stderr.decode()[-500:]}')
    return parse(p.stdout.decode()) if parse else dt


def bench(a, name, spec, mounts, fss, res, rss):
    dsfn, mode, cmdfn = spec
    cwd, lowerdir, extra = dsfn()
    check = not name.startswith('lookup')   # stat of missing names exits non-zero by design
    times = {fs: [] for fs in fss}
    hwm = {fs: [] for fs in fss if fs != 'kernel'}
    log(f'# {name}: {a.reps} reps, {mode}')

    def take_hwm(fs, mnt):
        if fs != 'kernel':
            hwm[fs].append(mounts.hwm(mnt))

    if mode == 'cold':   # fresh caches and a fresh mount for every rep
        for _ in range(a.reps):
            for fs in fss:
                drop_caches()
                mnt = mounts.mount(fs, cwd, lowerdir)
                times[fs].append(run_once(cmdfn, mnt, extra, check))
                take_hwm(fs, mnt)
                mounts.umount(mnt)
    else:                # one mount per fs, one untimed run, then reps interleaved
        mnts = {fs: mounts.mount(fs, cwd, lowerdir) for fs in fss}
        for fs in fss:
            run_once(cmdfn, mnts[fs], extra, check)
        for _ in range(a.reps):
            for fs in fss:
                times[fs].append(run_once(cmdfn, mnts[fs], extra, check))
        for fs in fss:
            take_hwm(fs, mnts[fs])
            mounts.umount(mnts[fs])
    res[name] = {fs: statistics.median(v) for fs, v in times.items()}
    rss[name] = {fs: max(v) for fs, v in hwm.items()}
    log('#   ' + '  '.join(f'{fs}={res[name][fs]:.4g}s' for fs in fss))
    return {'mode': mode, 'times': times, 'hwm_kb': hwm}


# ---------------------------------------------------------------- report

def ratio(x, y):
    return f'{x / y:.2f}' if x is not None and y else '-'


def report(a, fss, res, rss, bins):
    g = lambda d, fs: d.get(fs)
    print(f'\nfuse-overlayfs read-path bench: size {a.size}, median of {a.reps} reps, seconds\n')
    print(f'ref = {bins["ref"]}  \nours = {bins["ours"]}\n')
    print('| workload | kernel | ref 1.10 | ours | ours/ref | ours/kernel |')
    print('|---|---:|---:|---:|---:|---:|')
    fmt = lambda v: f'{v:.4g}' if v is not None else '-'
    for w, r in res.items():
        print(f'| {w} | {fmt(g(r, "kernel"))} | {fmt(g(r, "ref"))} | {fmt(g(r, "ours"))} '
              f'| {ratio(g(r, "ours"), g(r, "ref"))} | {ratio(g(r, "ours"), g(r, "kernel"))} |')
    if any(fs != 'kernel' for fs in fss):
        print('\nDaemon peak RSS (VmHWM before unmount, max over mounts), MiB\n')
        print('| workload | ref 1.10 | ours | ours/ref |')
        print('|---|---:|---:|---:|')
        mib = lambda v: f'{v / 1024:.1f}' if v is not None else '-'
        for w, r in rss.items():
            print(f'| {w} | {mib(g(r, "ref"))} | {mib(g(r, "ours"))} | {ratio(g(r, "ours"), g(r, "ref"))} |')


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--size', type=float, default=1.0, help='scale data set sizes (0.1 = smoke run)')
    ap.add_argument('--only', action='append', default=[],
                    help='workload name or prefix (comma list, repeatable), e.g. find,seqread-warm')
    ap.add_argument('--fs', default=','.join(FS), help='subset of kernel,ref,ours')
    ap.add_argument('--dir', default='/var/tmp/ovlbench', help='work dir (data sets are kept here)')
    ap.add_argument('--json', help='also write raw per-rep results to this file')
    ap.add_argument('--list', action='store_true', help='list workloads and exit')
    a = ap.parse_args()
    a.dir = os.path.abspath(a.dir)
    bins = {'ref': os.environ.get('REF_FUSE_OVERLAYFS', '/usr/bin/fuse-overlayfs'),
            'ours': os.environ.get('FUSE_OVERLAYFS', os.path.join(here, '..', 'fuse-overlayfs'))}
    bins = {k: os.path.abspath(v) for k, v in bins.items()}
    wl = workloads(a)
    if a.list:
        print('\n'.join(wl))
        return
    only = [s for o in a.only for s in o.split(',') if s]
    sel = [w for w in wl if not only or any(w == o or w.startswith(o) for o in only)]
    if not sel:
        sys.exit(f'no workload matches {only}; try --list')
    fss = [fs for fs in FS if fs in a.fs.split(',')]
    for fs in fss[:]:
        if fs != 'kernel' and not os.access(bins[fs], os.X_OK):
            log(f'# WARNING: {fs} binary {bins[fs]} not found, skipping it')
            fss.remove(fs)
    if os.geteuid() != 0:
        sys.exit('needs root (mount, drop_caches)')
    mounts = Mounts(bins, os.path.join(a.dir, 'mnt'))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res, rss, raw = {}, {}, {}
    try:
        for w in sel:
            raw[w] = bench(a, w, wl[w], mounts, fss, res, rss)
    finally:
        mounts.umount_all()
        if res:
            report(a, fss, res, rss, bins)
        if a.json:
            with open(a.json, 'w') as f:
                json.dump({'size': a.size, 'reps': a.reps, 'bins': bins, 'fs': fss,
                           'median_s': res, 'peak_rss_kb': rss, 'raw': raw}, f, indent=1)


if __name__ == '__main__':
    main()
