#!/usr/bin/python3
"""Helper of rootless.sh: ours mounted by a user who has no subuid range and
runs `unshare -U -r` (util-linux) itself: a user namespace that maps one id,
the user's own, to root, with setgroups denied.  The kernel overlay
(userxattr) mounted the same way is the reference; Debian's 1.10 the
reference where the kernel has no equivalent.

Usage (as the real root): rootless_oneid.py --fuse BIN --map MAP --pidfile F DIR
Only MAP's host id of the namespace's root is used (the user: host uid and
gid H).  Prints `ok - NAME` or `not ok - NAME: REASON` (details indented),
exit 0 if all ran.

As the real root: DIR/G holds two lower layers owned by H (so by root inside)
in the kernel's format, DIR/um one layer whose objects the host's root owns
(an id the namespace lacks: they show as 65534).  Then, as
`setpriv --reuid=H --regid=H --clear-groups unshare -U -r -m --propagation private`:
  * the namespace is the one-id map with setgroups denied;
  * every kind of change through the kernel overlay and through ours
    (writes, chmod/chown, renames, deletions, rm -rf and mkdir, links, a
    fifo, user xattrs, creates) compared step by step and against what each
    step means; merged views live and after a remount, upper layers;
    ours unmounted by fusermount3 -u;
  * objects of an unmapped owner through ours and through 1.10, with and
    without squash_to_uid=0,squash_to_gid=0 (what containers/storage passes
    for a one-id map): ours must answer as 1.10, the kernel overlay's
    answers are checked too.
"""
import os, shutil, stat, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'diff'))
from ovlview import diff_views, rmtree_mount, snapshot, upper_view  # noqa: E402
from userns import fuse_dev_for, host_id, parse_map  # noqa: E402
from rootless_check import Mounts, both_mounted, compare_steps, helper_args, ls, mode_owner, read, reap, report, res, write  # noqa: E402

FUSE_110 = '/usr/bin/fuse-overlayfs'
MTIME = 1600000000
SQUASH = ',squash_to_uid=0,squash_to_gid=0'


def build_layers(graph, owner):
    """GRAPH/L1/diff (top) and GRAPH/L2/diff, every object owned by owner."""
    l1, l2 = os.path.join(graph, 'L1/diff'), os.path.join(graph, 'L2/diff')

    def f(p, content, mode=0o644):
        os.makedirs(os.path.dirname(p), 0o755, exist_ok=True)
        with open(p, 'wb') as fh:
            fh.write(content)
        os.chmod(p, mode)
    for n in ('f', 'd/a', 'd/b', 'tree/x/y', 'tree/z', 'hl', 'w', 'o/hidden', 'x'):
        f(os.path.join(l2, n), n.encode())
    f(l2 + '/ro', b'read-only', 0o444)
    os.link(l2 + '/hl', l2 + '/hl2')
    os.symlink('f', l2 + '/sym')
    os.setxattr(l2 + '/x', 'user.test', b'old')
    f(l1 + '/d/c', b'c')
    os.mknod(l1 + '/w', stat.S_IFCHR, os.makedev(0, 0))      # hides L2's w
    os.makedirs(l1 + '/o')
    os.setxattr(l1 + '/o', 'user.overlay.opaque', b'y')       # hides L2's o/hidden
    f(l1 + '/o/shown', b'shown')
    for layer in (l1, l2):
        for dp, dirs, files in os.walk(layer, topdown=False):
            for n in dirs + files + [None]:
                p = os.path.join(dp, n) if n else dp
                os.chown(p, owner, owner, follow_symlinks=False)
                os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    os.makedirs(os.path.join(graph, 'l'))
    os.symlink('../L1/diff', os.path.join(graph, 'l/A'))
    os.symlink('../L2/diff', os.path.join(graph, 'l/B'))


def build_unmapped(graph, owner):
    """One lower layer (as L1 and an empty L2): um/ is the user's, what it
    holds the host's root's."""
    um = os.path.join(graph, 'L1/diff/um')
    os.makedirs(um + '/d')
    os.makedirs(os.path.join(graph, 'L2/diff'))
    for p in (um + '/f', um + '/d/g'):
        with open(p, 'wb') as fh:
            fh.write(b'host root owns me')
        os.chmod(p, 0o666)
    os.chmod(um + '/d', 0o777)
    for p in (graph, um, os.path.join(graph, 'L1'), os.path.join(graph, 'L1/diff'), os.path.join(graph, 'L2'),
              os.path.join(graph, 'L2/diff')):
        os.chown(p, owner, owner)
    os.makedirs(os.path.join(graph, 'l'))
    os.symlink('../L1/diff', os.path.join(graph, 'l/A'))
    os.symlink('../L2/diff', os.path.join(graph, 'l/B'))


def make_mount_dirs(graph, owner):
    for c in ('K', 'C'):
        for sub in ('diff', 'work', 'merged'):
            p = os.path.join(graph, c, sub)
            os.makedirs(p, 0o755)
            os.chown(p, owner, owner)
            os.chown(os.path.dirname(p), owner, owner)
        os.chmod(os.path.join(graph, c, 'work'), 0o700)

# ------------------------------------------------------------ the steps (in the namespace)


def steps_changes(m):
    j = lambda n: os.path.join(m, n)
    return [res(lambda: write(j('f'), b'+w')), res(lambda: read(j('f'))),
            res(lambda: write(j('ro'), b'+w')),
            res(lambda: os.chmod(j('ro'), 0o600)), res(lambda: mode_owner(j('ro'))),
            res(lambda: os.chown(j('x'), 0, 0)), res(lambda: os.chown(j('x'), 1, 1)),
            res(lambda: os.setxattr(j('x'), 'user.new', b'v')), res(lambda: os.getxattr(j('x'), 'user.test')),
            res(lambda: ','.join(sorted(os.listxattr(j('x'))))),
            res(lambda: write(j('n'), b'new', os.O_WRONLY | os.O_CREAT | os.O_EXCL)), res(lambda: mode_owner(j('n'))),
            res(lambda: os.mkfifo(j('p'), 0o600)), res(lambda: mode_owner(j('p'))),
            res(lambda: os.symlink('f', j('s2'))), res(lambda: os.readlink(j('s2')))]


EXPECT_CHANGES = ['ok:2', 'ok:f+w', 'ok:2', 'ok', 'ok:0600 0:0', 'ok', 'EINVAL', 'ok', "ok:b'old'",
                  'ok:user.new,user.test', 'ok:3', 'ok:0755 0:0', 'ok', 'ok:0600 0:0', 'ok', 'ok:f']


def steps_names(m):
    j = lambda n: os.path.join(m, n)
    return [res(lambda: os.rename(j('d/a'), j('d/a2'))), res(lambda: os.unlink(j('d/b'))),
            res(lambda: os.unlink(j('d/c'))), res(lambda: ls(j('d'))),
            res(lambda: rmtree_mount(j('tree'))), res(lambda: os.mkdir(j('tree'))), res(lambda: ls(j('tree'))),
            res(lambda: os.link(j('hl'), j('hl3'))), res(lambda: os.lstat(j('hl3')).st_nlink),
            res(lambda: os.lstat(j('hl2')).st_nlink), res(lambda: os.unlink(j('sym'))),
            res(lambda: read(j('w'))), res(lambda: ls(j('o'))),
            res(lambda: os.mkdir(j('nd'))), res(lambda: os.rename(j('nd'), j('nd2'))),
            res(lambda: os.rename(j('d'), j('d2'))), res(lambda: ls(m))]


EXPECT_NAMES = ['ok', 'ok', 'ok', 'ok:a2', 'ok', 'ok', 'ok:', 'ok', 'ok:2', 'ok:2', 'ok', 'ENOENT',
                'ok:shown', 'ok', 'ok', 'EXDEV', 'ok:d,f,hl,hl2,hl3,n,nd2,o,p,ro,s2,tree,x']

STEPS = [('writes, chmod and chown (ids beyond root: EINVAL), user xattrs, creates, a fifo and a '
          'symlink', steps_changes, EXPECT_CHANGES),
         ('renames, deletions, rm -rf and mkdir, a hard link, a lower whiteout and opaque dir',
          steps_names, EXPECT_NAMES)]


def steps_unmapped(m):
    j = lambda n: os.path.join(m, n)
    return [res(lambda: mode_owner(j('um/f'))), res(lambda: read(j('um/f'))),
            res(lambda: write(j('um/f'), b'+w')), res(lambda: os.chmod(j('um/f'), 0o600)),
            res(lambda: os.unlink(j('um/d/g'))), res(lambda: os.unlink(j('um/f'))), res(lambda: ls(j('um')))]


# The kernel overlay cannot copy such an object up (EOVERFLOW: a removal in
# um/d copies um/d up), but removes um/f, whose inode keeps the host id.  A
# FUSE inode's owner is what the daemon answers, made a kernel id in the
# daemon's namespace (fs/fuse/inode.c fuse_fill_attr: make_kuid(fc->user_ns,
# attr->uid)); 65534 has none here, so the inode's owner is INVALID_UID,
# which the VFS refuses to open for write, change or remove (fs/namei.c
# may_delete, fs/attr.c notify_change: EOVERFLOW): 1.10 and ours alike,
# no daemon can answer otherwise.
EXPECT_UNMAPPED = {
    'kernel': ['ok:0666 65534:65534', 'ok:host root owns me', 'EOVERFLOW', 'EPERM', 'EOVERFLOW', 'ok', 'ok:d'],
    'plain': ['ok:0666 65534:65534', 'ok:host root owns me', 'EACCES', 'EOVERFLOW', 'EOVERFLOW', 'EOVERFLOW',
              'ok:d,f'],
    # the squashed owner is root: every change works, copies are the user's
    'squash': ['ok:0666 0:0', 'ok:host root owns me', 'ok:2', 'ok', 'ok', 'ok', 'ok:d'],
}


def check_namespace(host):
    with open('/proc/self/uid_map') as f:
        umap = f.read().split()
    with open('/proc/self/setgroups') as f:
        sg = f.read().strip()
    want = ['0', str(host), '1']
    report('unshare -U -r: uid 0 inside, the one-id map 0 %d 1, setgroups denied' % host,
           [] if (umap, sg) == (want, 'deny') else ['uid_map %s, setgroups %s' % (umap, sg)])


def changes(graph, fuse, pidfile):
    m = Mounts(graph, fuse, pidfile)
    try:
        K, C, recent = both_mounted(m)
        for name, fn, want in STEPS:
            report(name, compare_steps(fn(K), fn(C), want))
        report('merged view equals the kernel\'s', diff_views(
            snapshot(K.encode(), False, recent)[0], snapshot(C.encode(), True, recent)[0], 'live'))
        for mnt in (K, C):
            m.umount(mnt)
        report('ours unmounted by fusermount3 -u; the daemon exits', [])
        for mnt in (K, C):
            m.mount(mnt)
        report('merged view after a remount equals the kernel\'s', diff_views(
            snapshot(K.encode(), False, recent)[0], snapshot(C.encode(), True, recent)[0], 'remounted'))
        for mnt in (K, C):
            m.umount(mnt)
        report('upper layer equals the kernel\'s (whiteout/opaque spellings normalised)', diff_views(
            upper_view(os.path.join(graph, 'K/diff').encode(), True, recent),
            upper_view(os.path.join(graph, 'C/diff').encode(), False, recent), 'upper'))
    finally:
        m.cleanup()
        reap()


def unmapped(base, fuse, pidfile):
    got = {}
    for label, prog, opts in (('kernel', None, ''), ('ours', fuse, ''), ('1.10', FUSE_110, ''),
                              ('ours squash', fuse, SQUASH), ('1.10 squash', FUSE_110, SQUASH)):
        m = Mounts(os.path.join(base, label.replace(' ', '-')), prog or fuse, pidfile)
        mnt = m.path('K' if prog is None else 'C')
        m.opts[mnt] += opts
        try:
            m.mount(mnt)
            got[label] = steps_unmapped(mnt)
            m.umount(mnt)
        finally:
            m.cleanup()
            reap()
    for ours, ref, want in (('ours', '1.10', 'plain'), ('ours squash', '1.10 squash', 'squash')):
        report('an object the namespace cannot map, %s: ours answers as 1.10' % (
            'squash_to_uid/gid=0' if 'squash' in ours else 'no squash'), compare_steps(
            got[ref], got[ours], EXPECT_UNMAPPED[want], '1.10'))
    report('an object the namespace cannot map, the kernel overlay (owners kept as host ids: '
           'no copy-up: EOVERFLOW; unlink of a file works)', compare_steps(got['kernel'], got['kernel'], EXPECT_UNMAPPED['kernel']))


def inner(a):
    """In the namespace `unshare -U -r` made."""
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER: daemons are ours to wait for
    try:
        check_namespace(a.host)
        if a.fuse_dev:
            subprocess.run(['mount', '--bind', a.fuse_dev, '/dev/fuse'], check=True, capture_output=True)
        changes(os.path.join(a.dir, 'G'), a.fuse, a.pidfile)
        unmapped(a.dir, a.fuse, a.pidfile)
    except Exception as e:     # a harness error too is a failed test
        report('namespace run', ['%s: %s' % (type(e).__name__, e)])
        return 1
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == '--inner':
        import argparse
        ap = argparse.ArgumentParser()
        for o in ('--fuse', '--pidfile', '--fuse-dev'):
            ap.add_argument(o)
        ap.add_argument('--host', type=int)
        ap.add_argument('dir')
        return inner(ap.parse_args(sys.argv[2:]))
    a = helper_args('dir')
    for c in ('setpriv', 'unshare'):
        if shutil.which(c) is None:
            print('not ok - prerequisites: %s (util-linux) is missing' % c)
            return 2
    if not os.access(FUSE_110, os.X_OK):
        print('not ok - prerequisites: %s (Debian\'s fuse-overlayfs 1.10) is missing' % FUSE_110)
        return 2
    os.umask(0o022)
    d = os.path.realpath(a.dir)
    host = host_id(parse_map(a.map), 0)
    os.makedirs(d)
    os.chown(d, host, host)
    build_layers(os.path.join(d, 'G'), host)
    make_mount_dirs(os.path.join(d, 'G'), host)
    for label in ('kernel', 'ours', '1.10', 'ours-squash', '1.10-squash'):
        g = os.path.join(d, label)
        build_unmapped(g, host)
        make_mount_dirs(g, host)
    one = [(0, host, 1)]
    dev = fuse_dev_for(d, one, one)
    cmd = ['setpriv', '--reuid=%d' % host, '--regid=%d' % host, '--clear-groups',
           'unshare', '--user', '--map-root-user', '--mount', '--propagation', 'private', '--',
           '/usr/bin/python3', os.path.abspath(__file__), '--inner', '--fuse', os.path.abspath(a.fuse),
           '--pidfile', a.pidfile, '--host', str(host)] + (['--fuse-dev', dev] if dev else []) + [d]
    return subprocess.run(cmd, cwd=d, timeout=120).returncode


if __name__ == '__main__':
    sys.exit(main())
