#!/usr/bin/python3
"""The read and write workloads rootless, where most users run us: no FUSE
passthrough (it needs CAP_SYS_ADMIN in the initial user namespace), the
writeback cache instead.  Ours, 1.10 and the kernel overlay (userxattr,
Linux 5.11+) are each mounted by the root of a user namespace whose root is
an unprivileged host id (tests/diff/userns.py, podman's map
0:61234:1,1:200000:65536), in the same run, reps interleaved.

Each timed run: the real root drops the caches, then a child enters a fresh
user namespace, mounts (read-write: a fresh upper and work dir on the data's
filesystem) and times the workload, the whole time from the command's start
to its end; then it unmounts:
  find-cold        find MNT -printf '%s %i\\n' over the source-like tree (read-only)
  read-cold        dd of a 512 MiB lower file to /dev/null (read-only)
  untar            tar -xf of the tree's tarball into an empty read-write mount
  rmrf             rm -rf of the lower tree through a read-write mount
  write-nosync     dd of 1 GiB into a new file, bs=1M, no fsync
The tree is bench/ovlbench.py's src data set (about 10 files a directory,
varied sizes, a symlink per 100 files).  Medians of --reps.

Usage (root): bench/rootless.py [--files N] [--reps N] [--dir DIR] [--ours BIN] [--ref BIN]
"""
import argparse, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'diff'))
sys.path.insert(0, HERE)
from userns import fork_in_userns, fuse_dev_for, parse_map, shift_tree  # noqa: E402
from ovlbench import fill_src  # noqa: E402

MAP = '0:61234:1,1:200000:65536'
NSROOT = 61234
WORKLOADS = {   # name: (read-write, command with {mnt} and {data})
    'find-cold': (False, ['find', '{mnt}', '-printf', '%s %i\\n']),
    'read-cold': (False, ['dd', 'if={mnt}/big', 'of=/dev/null', 'bs=1M', 'status=none']),
    'untar': (True, ['tar', '-xf', '{data}/tree.tar', '-C', '{mnt}']),
    'rmrf': (True, ['rm', '-rf', '{mnt}/tree']),
    'write-nosync': (True, ['dd', 'if=/dev/zero', 'of={mnt}/out', 'bs=1M', 'count=1024', 'status=none']),
}


def build(data, files):
    """lower/tree (the source-like tree), lower/big, and tree.tar of the tree,
    owned by the namespace's ids; the tarball is made in the namespace's ids
    too (tar restores them there)."""
    os.makedirs(os.path.join(data, 'empty'))
    lower = os.path.join(data, 'lower')
    tree = os.path.join(lower, 'tree')
    os.makedirs(tree)
    fill_src(files)(tree)
    with open(os.path.join(lower, 'big'), 'wb') as f:
        blk = os.urandom(1 << 20)
        for _ in range(512):
            f.write(blk)
    subprocess.run(['tar', '-cf', os.path.join(data, 'tree.tar'), '--sort=name', '-C', lower, 'tree'], check=True)
    idmap = parse_map(MAP)
    shift_tree(lower, idmap, idmap)
    os.chown(os.path.join(data, 'tree.tar'), NSROOT, NSROOT)


def fresh_dir(path):
    subprocess.run(['rm', '-rf', path], check=True)
    os.makedirs(path)
    os.chown(path, NSROOT, NSROOT)


def run_one(fs, bins, d, data, rw, cmd, fuse_dev):
    """One timed run in a fresh user namespace; returns seconds or raises."""
    mnt, up, work = os.path.join(d, 'mnt'), os.path.join(d, 'upper'), os.path.join(d, 'work')
    for p in (up, work):
        fresh_dir(p)
    opts = 'lowerdir=%s/lower' % data + (',upperdir=%s,workdir=%s' % (up, work) if rw else '')
    def body():
        if fs == 'kernel':   # a lowerdir-only kernel overlay needs two layers
            kopts = opts if rw else 'lowerdir=%s/empty:%s/lower' % (data, data)
            subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', kopts + ',userxattr', mnt], check=True)
        else:
            subprocess.run([bins[fs], '-o', opts, mnt], check=True, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        rc = subprocess.run([a.format(mnt=mnt, data=data) for a in cmd], stdout=subprocess.DEVNULL).returncode
        t = time.monotonic() - t0
        subprocess.run(['umount', mnt] if fs == 'kernel' else ['fusermount3', '-u', mnt], check=True)
        return t if rc == 0 else None
    return time_in_userns(fs, body, fuse_dev)


def time_in_userns(name, body, fuse_dev):
    """body() in a fresh user namespace of MAP: it mounts, times and
    unmounts, and returns the seconds (None: failed).  Returns them or raises."""
    r, w = os.pipe()

    def child():
        os.close(r)
        t = body()
        if t is not None:
            os.write(w, ('%f' % t).encode())
        return 0 if t is not None else 1
    idmap = parse_map(MAP)
    pid = fork_in_userns(child, idmap, idmap, fuse_dev)
    os.close(w)
    out = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    if not out:
        raise RuntimeError('%s: the run failed' % name)
    time.sleep(0.2)  # the daemon's exit after fusermount3 -u
    return float(out)


def bench_args(prog, files, reps, workdir):
    """The command line of the rootless benches; exits unless run as root."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument('--files', type=int, default=files)
    ap.add_argument('--reps', type=int, default=reps)
    ap.add_argument('--dir', default=workdir)
    ap.add_argument('--ours', default=os.path.join(HERE, '..', 'fuse-overlayfs'))
    ap.add_argument('--ref', default='/usr/bin/fuse-overlayfs')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('%s: run as root (it makes the user namespaces)' % prog)
    return a


def data_set(d, files, build):
    """D/data-FILES, made by build(DIR, files) once (in a .tmp, then renamed);
    D becomes 0711 (the namespace's root must reach its dirs)."""
    data = os.path.join(d, 'data-%d' % files)
    if not os.path.isdir(data):
        print('building %d files in %s' % (files, data), file=sys.stderr)
        build(data + '.tmp', files)
        os.rename(data + '.tmp', data)
    os.chmod(d, 0o711)
    return data


def main():
    a = bench_args('rootless.py', 15000, 3, '/var/tmp/ovlbench-rootless-rw')
    d = os.path.realpath(a.dir)
    data = data_set(d, a.files, build)
    fresh_dir(os.path.join(d, 'mnt'))
    fuse_dev = fuse_dev_for(d, parse_map(MAP), parse_map(MAP))
    bins = {'1.10': a.ref, 'ours': os.path.realpath(a.ours)}
    fss = ['kernel', '1.10', 'ours']
    times = {(w, fs): [] for w in WORKLOADS for fs in fss}
    for rep in range(a.reps):
        for w, (rw, cmd) in WORKLOADS.items():
            for fs in fss[rep % 3:] + fss[:rep % 3]:
                subprocess.run(['sync'])
                with open('/proc/sys/vm/drop_caches', 'w') as f:
                    f.write('3\n')
                times[(w, fs)].append(run_one(fs, bins, d, data, rw, cmd, fuse_dev))
        print('rep %d done' % (rep + 1), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print('%d files, %d reps, medians in seconds, rootless (user namespace, map %s; no passthrough)' % (
        a.files, a.reps, MAP))
    print()
    print('| workload | kernel | 1.10 | ours | ours/1.10 | ours/kernel |')
    print('|---|---:|---:|---:|---:|---:|')
    for w in WORKLOADS:
        k, r, o = med[(w, 'kernel')], med[(w, '1.10')], med[(w, 'ours')]
        print('| %s | %.3f | %.3f | %.3f | %.2f | %.2f |' % (w, k, r, o, o / r, o / k))
    return 0


if __name__ == '__main__':
    sys.exit(main())
