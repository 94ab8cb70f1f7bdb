#!/usr/bin/python3
"""Rootless find and stat under a 65536-id mapping (issue 18's speed target:
mapped within 1.05x of unmapped), with 1.10 and the kernel overlay in the
same run.

Each timed run: the real root drops the caches, then a child enters a user
namespace whose root is an unprivileged host id (tests/diff/userns.py, the
map rootless podman has: 0:61234:1,1:200000:65536), mounts the overlay the
way containers/storage does (two lower layers, no upper: a podman diff/commit
mount; ours and 1.10 as `BIN -o lowerdir=A:B MNT`, the kernel with userxattr)
and times the workload, the whole time from the command's start to its end:
  find-cold   find MNT (names and types: READDIRPLUS)
  stat-cold   find MNT -printf '%U:%G %m %s\\n' (every object's attributes)
Mapped runs add podman's --userns=keep-id options (uidmapping= and gidmapping=
:0:1:1000:1000:0:1:1001:1001:64535, 65536 ids): the caller then no longer owns
the files, and the kernel's permission checks ask for each directory's ACL
(a GETXATTR a directory, on 1.10 as on ours).  Identity-mapped runs map 65536
ids each to itself (:0:0:65536): every id goes through the mapping, owners
stay, so the ratio to unmapped is the mapping's own cost.  The tree is source-like:
--files files, 10 a directory, a symlink per 100 files, owners spread over
ids 0..1999.  Medians of --reps, reps interleaved across the overlays.

Usage (root): bench/rootless_idmap.py [--files N] [--reps N] [--dir DIR]
"""
import os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'diff'))
from userns import fuse_dev_for, parse_map, shift_tree  # noqa: E402
sys.path.insert(0, HERE)
from rootless import MAP, bench_args, data_set, time_in_userns  # noqa: E402

KEEPID = ':0:1:1000:1000:0:1:1001:1001:64535'
# 65536 ids mapped each to itself: the mapping's own cost, owners unchanged
IDENTITY = ':0:0:65536'
WORKLOADS = {
    'find-cold': ['find', '{mnt}'],
    'stat-cold': ['find', '{mnt}', '-printf', '%U:%G %m %s\\n'],
}


def build(data, files):
    """Two layers: most of the tree below, a tenth of it changed above."""
    for layer, share in (('lower2', 1.0), ('lower1', 0.1)):
        root = os.path.join(data, layer)
        for i in range(int(files * share)):
            d = os.path.join(root, 'src%d' % (i // 1000), 'mod%d' % (i // 10))
            os.makedirs(d, exist_ok=True)
            p = os.path.join(d, 'f%d.c' % i)
            with open(p, 'w') as f:
                f.write('int f%d;\n' % i)
            os.chown(p, i % 2000, i % 2000)
            if i % 100 == 0:
                os.symlink('f%d.c' % i, os.path.join(d, 'l%d' % i))
    idmap = parse_map(MAP)
    shift_tree(data, idmap, idmap)


def run_one(cfg, mnt, data, cmd, fuse_dev):
    """One timed run in a fresh user namespace; returns seconds or raises."""
    def body():
        lowers = '%s/lower1:%s/lower2' % (data, data)
        if cfg['bin'] is None:
            subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=%s,userxattr' % lowers, mnt],
                           check=True)
        else:
            opts = 'lowerdir=' + lowers + (',uidmapping=%s,gidmapping=%s' % (cfg['map'], cfg['map']) if cfg['map'] else '')
            subprocess.run([cfg['bin'], '-o', opts, mnt], check=True, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        subprocess.run([a.format(mnt=mnt) for a in cmd], check=True, stdout=subprocess.DEVNULL)
        t = time.monotonic() - t0
        subprocess.run(['fusermount3', '-u', mnt] if cfg['bin'] else ['umount', mnt], check=True)
        return t
    return time_in_userns(cfg['name'], body, fuse_dev)


def main():
    a = bench_args('rootless_idmap.py', 30000, 5, '/var/tmp/ovlbench-rootless')
    d = os.path.realpath(a.dir)
    data = data_set(d, a.files, build)
    mnt = os.path.join(d, 'mnt')
    os.makedirs(mnt, exist_ok=True)
    os.chown(mnt, 61234, 61234)
    fuse_dev = fuse_dev_for(d, parse_map(MAP), parse_map(MAP))
    ours = os.path.realpath(a.ours)
    cfgs = [dict(name='kernel', bin=None, map=None), dict(name='1.10', bin=a.ref, map=None),
            dict(name='1.10 mapped', bin=a.ref, map=KEEPID), dict(name='ours', bin=ours, map=None),
            dict(name='ours mapped', bin=ours, map=KEEPID), dict(name='ours identity-mapped', bin=ours, map=IDENTITY)]
    times = {(w, c['name']): [] for w in WORKLOADS for c in cfgs}
    for rep in range(a.reps):
        for w, cmd in WORKLOADS.items():
            order = cfgs[rep % len(cfgs):] + cfgs[:rep % len(cfgs)]
            for c in order:
                subprocess.run(['sync'])
                with open('/proc/sys/vm/drop_caches', 'w') as f:
                    f.write('3\n')
                times[(w, c['name'])].append(run_one(c, mnt, data, cmd, fuse_dev))
        print('rep %d done' % (rep + 1), file=sys.stderr)
    for (w, c), v in sorted(times.items()):
        print('%s %s: %s' % (w, c, ' '.join('%.3f' % t for t in v)), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print('%d files, %d reps, medians in seconds, rootless (user namespace, map %s)' % (a.files, a.reps, MAP))
    print()
    print('| workload | kernel | 1.10 | 1.10 mapped | ours | ours mapped | ours identity-mapped | ours mapped/ours '
          '| 1.10 mapped/1.10 | ours identity-mapped/ours | ours mapped/1.10 mapped | ours mapped/kernel |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for w in WORKLOADS:
        m = {c['name']: med[(w, c['name'])] for c in cfgs}
        print('| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | **%.2f** | %.2f | %.2f |' % (
            w, m['kernel'], m['1.10'], m['1.10 mapped'], m['ours'], m['ours mapped'], m['ours identity-mapped'],
            m['ours mapped'] / m['ours'], m['1.10 mapped'] / m['1.10'], m['ours identity-mapped'] / m['ours'],
            m['ours mapped'] / m['1.10 mapped'], m['ours mapped'] / m['kernel']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
