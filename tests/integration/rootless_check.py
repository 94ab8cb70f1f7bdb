#!/usr/bin/python3
"""Helper of rootless.sh: writes through the kernel overlay (userxattr) and
through ours, both mounted by the root of a user namespace the way
containers/storage runs us rootless, compared.

Usage (as the real root): rootless_check.py --fuse BIN --map MAP --pidfile F GRAPH
GRAPH: an empty directory (the graph root).  Prints, per test, `ok - NAME`
or `not ok - NAME: REASON` with further lines indented; exit 0 if all ran.

As the real root: two lower layers, GRAPH/L1/diff (top) and GRAPH/L2/diff,
in the kernel's format (char 0/0 whiteouts, user.overlay.opaque=y: what the
kernel reads with userxattr), owners shifted into MAP (tests/diff/userns.py),
so that the namespace's root owns what the layer says root owns; GRAPH/l/A
and GRAPH/l/B link to them as containers/storage's short names do.  Then in
a child, root of the user namespace (own mount namespace):
  * the kernel: mount -t overlay -o lowerdir=l/A:l/B,upperdir=K/diff,
    workdir=K/work,userxattr K/merged (cwd GRAPH);
  * ours as containers/storage starts it: BIN -o lowerdir=GRAPH/l/A:GRAPH/l/B,
    upperdir=GRAPH/C/diff,workdir=GRAPH/C/work GRAPH/C/merged (cwd GRAPH,
    daemonizing: exit 0 = mounted, the daemon must not keep our pipes open);
    unmounted by fusermount3 -u, the daemon must then exit;
  * the same steps on both; each test compares their results and checks
    them against what the steps mean (so both cannot be wrong alike); then
    the merged views (live and after a remount) and the upper layers
    (whiteout/opaque spellings normalised), tests/diff/ovlview.py's.
Every daemon PID is appended to --pidfile (rootless.sh kills those left).
Ours' upper is left for check-upper.py (rootless.sh runs it afterwards).
"""
import argparse, ctypes, os, stat, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'diff'))
from ovlview import diff_views, ename, rmtree_mount, snapshot, unlink_dirs, upper_view  # noqa: E402
from userns import fuse_dev_for, parse_map, run_in_userns, shift_tree  # noqa: E402

MTIME = 1600000000


def build(graph):
    """The two lower layers, as root, in the namespace's ids (shifted later)."""
    def f(p, content, mode=0o644, uid=0, gid=0):
        os.makedirs(os.path.dirname(p), 0o755, exist_ok=True)
        with open(p, 'wb') as fh:
            fh.write(content)
        os.chown(p, uid, gid)
        os.chmod(p, mode)

    def d(p, mode=0o755, uid=0):
        os.makedirs(p, mode, exist_ok=True)
        os.chown(p, uid, uid)
        os.chmod(p, mode)
    l1, l2 = os.path.join(graph, 'L1/diff'), os.path.join(graph, 'L2/diff')
    os.makedirs(l1)
    os.makedirs(l2)
    # layer 2 (bottom)
    f(l2 + '/ro', b'read-only', 0o444)
    f(l2 + '/ro2', b'truncate-me', 0o444)
    f(l2 + '/ro1000', b'owned-by-1000', 0o444, 1000, 1000)
    for n in ('a/b/c/f1', 'a/b/f2', 'a/f3', 'x'):
        f(l2 + '/t/' + n, n.encode())
    f(l2 + '/t/a/b/c/owned', b'1000', 0o600, 1000, 1000)
    os.symlink('x', l2 + '/t/link')
    os.mkfifo(l2 + '/t/fifo', 0o644)
    f(l2 + '/r/f1', b'f1')
    f(l2 + '/r/f2', b'f2')
    f(l2 + '/r/keep', b'keep')
    f(l2 + '/r/gone', b'hidden by layer 1')
    f(l2 + '/r/dir/inner', b'inner')
    d(l2 + '/sub')
    f(l2 + '/hl/a', b'hard-linked')
    os.link(l2 + '/hl/a', l2 + '/hl/b')
    f(l2 + '/o/old', b'hidden by the opaque dir of layer 1')
    f(l2 + '/del/file', b'file')
    d(l2 + '/del/emptydir')
    os.symlink('file', l2 + '/del/link')
    f(l2 + '/ino/f', b'ino')
    for n in ('pw', 'pc', 'px'):
        f(l2 + '/' + n + '/a', b'plain')
        d(l2 + '/' + n + '/sub')
    f(l2 + '/um/f', b'host root owns me', 0o666)     # host ids outside the map: see UNMAPPED
    d(l2 + '/um/d', 0o777)
    f(l2 + '/um/d/g', b'g', 0o666)
    d(l2 + '/ino/d')
    # layer 1 (top): a whiteout, an opaque dir, a file in a merged dir
    d(l1 + '/r')
    os.mknod(l1 + '/r/gone', stat.S_IFCHR, os.makedev(0, 0))
    d(l1 + '/o')
    os.setxattr(l1 + '/o', 'user.overlay.opaque', b'y')
    f(l1 + '/o/new', b'new')
    f(l1 + '/t/a/top', b'from layer 1')
    for layer in (l1, l2):
        for dp, dirs, files in os.walk(layer, topdown=False):
            for n in dirs + files + [None]:
                p = os.path.join(dp, n) if n else dp
                os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    os.makedirs(os.path.join(graph, 'l'))
    os.symlink('../L1/diff', os.path.join(graph, 'l/A'))
    os.symlink('../L2/diff', os.path.join(graph, 'l/B'))


# ------------------------------------------------------------ the steps


def res(fn):
    """One step's result: 'ok[:value]' or the errno name."""
    try:
        v = fn()
        return 'ok' if v is None else 'ok:%s' % (v,)
    except OSError as e:
        return ename(e)


def read(p):
    with open(p, 'rb') as fh:
        return fh.read().decode(errors='replace')


def write(p, data, flags=os.O_WRONLY | os.O_APPEND, off=None):
    fd = os.open(p, flags)
    try:
        return os.write(fd, data) if off is None else os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def ls(p):
    return ','.join(sorted(os.listdir(p)))


def mode_owner(p):
    st = os.lstat(p)
    return '%04o %d:%d' % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def as_user(uid, fn):
    """fn() in a child with that uid/gid (no groups); its result string."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = 'HARNESS'
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            out = res(fn)
        finally:
            os.write(w, out.encode())
            os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


def steps_ro0444(m):
    j = lambda n: os.path.join(m, n)
    return [res(lambda: mode_owner(j('ro'))),
            res(lambda: write(j('ro'), b'+w')),        # copy-up, then the write
            res(lambda: read(j('ro'))), res(lambda: mode_owner(j('ro'))),
            res(lambda: os.truncate(j('ro2'), 3)), res(lambda: read(j('ro2'))),
            res(lambda: mode_owner(j('ro2'))),
            # its owner (not root) may not write it: no copy-up either
            as_user(1000, lambda: write(j('ro1000'), b'+w')),
            res(lambda: mode_owner(j('ro1000')))]


EXPECT_RO0444 = ['ok:0444 0:0', 'ok:2', 'ok:read-only+w', 'ok:0444 0:0', 'ok',
                 'ok:tru', 'ok:0444 0:0', 'EACCES', 'ok:0444 1000:1000']


def steps_rmtree(m):
    t = os.path.join(m, 't')
    return [res(lambda: rmtree_mount(t)), res(lambda: os.mkdir(t, 0o755)), res(lambda: ls(t)),
            res(lambda: mode_owner(t)), res(lambda: os.mkdir(t + '/a')), res(lambda: ls(t + '/a'))]


EXPECT_RMTREE = ['ok', 'ok', 'ok:', 'ok:0755 0:0', 'ok', 'ok:']


def steps_rename(m):
    r = lambda n: os.path.join(m, 'r', n)
    out = [res(lambda: os.rename(r('f1'), r('g1'))),            # lower file, new name
           res(lambda: os.rename(r('f2'), r('keep'))),          # lower over lower
           res(lambda: write(r('new'), b'new', os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
           res(lambda: os.rename(r('new'), r('new2'))),         # upper file
           res(lambda: os.rename(r('new2'), r('gone'))),        # onto a whiteout
           res(lambda: os.rename(r('g1'), os.path.join(m, 'sub/g1'))),  # to a lower dir
           res(lambda: os.rename(r('dir'), r('dir2'))),         # a lower dir: EXDEV
           res(lambda: os.rename(r('keep'), r('f1')))]          # back onto the old name
    return out + [res(lambda: ls(r(''))), res(lambda: ls(os.path.join(m, 'sub')))] + [
        res(lambda n=n: read(r(n))) for n in ('f1', 'gone')] + [
        res(lambda: read(os.path.join(m, 'sub/g1'))), res(lambda: read(r('f2')))]


EXPECT_RENAME = ['ok', 'ok', 'ok:3', 'ok', 'ok', 'ok', 'EXDEV', 'ok', 'ok:dir,f1,gone',
                 'ok:g1', 'ok:f2', 'ok:new', 'ok:f1', 'ENOENT']


def steps_delete(m):
    d = lambda n: os.path.join(m, 'del', n)
    return [res(lambda: os.unlink(d('file'))), res(lambda: os.rmdir(d('emptydir'))),
            res(lambda: os.unlink(d('link'))), res(lambda: ls(d(''))),
            res(lambda: os.mkdir(d('file'))), res(lambda: ls(d('file'))),
            res(lambda: os.rmdir(os.path.join(m, 'o'))), res(lambda: os.unlink(os.path.join(m, 'o/new'))),
            res(lambda: os.rmdir(os.path.join(m, 'o'))), res(lambda: ls(m))]


EXPECT_DELETE = ['ok', 'ok', 'ok', 'ok:', 'ok', 'ok:', 'ENOTEMPTY', 'ok', 'ok',
                 'ok:del,hl,ino,pc,pw,px,r,ro,ro1000,ro2,sub,t,um']


def steps_hardlink(m):
    """A read-only fd on one name of a lower hard link, then the other name
    is copied up and written: with index=off the names part, the fd keeps
    the lower data (kernel)."""
    a, b = os.path.join(m, 'hl/a'), os.path.join(m, 'hl/b')
    fd = os.open(a, os.O_RDONLY)
    try:
        out = [res(lambda: os.pread(fd, 100, 0).decode())]
        out.append(res(lambda: write(b, b'XYZ', os.O_WRONLY, 0)))
        out.append(res(lambda: os.pread(fd, 100, 0).decode()))
        out.append(res(lambda: os.fstat(fd).st_size))
    finally:
        os.close(fd)
    return out + [res(lambda: read(a)), res(lambda: read(b))]


EXPECT_HARDLINK = ['ok:hard-linked', 'ok:3', 'ok:hard-linked', 'ok:11', 'ok:hard-linked',
                   'ok:XYZd-linked']

def steps_dirnlink(m):
    """A lower-only dir becomes merged when a child is copied up (write,
    chmod, setxattr): st_nlink 1 from then on (2 + subdirs before)."""
    j = lambda n: os.path.join(m, n)
    nl = lambda n: os.lstat(j(n)).st_nlink
    return [res(lambda n=n: nl(n)) for n in ('pw', 'pc', 'px')] + [
        res(lambda: write(j('pw/a'), b'XYZ')), res(lambda: os.chmod(j('pc/a'), 0o600)),
        res(lambda: os.setxattr(j('px/a'), 'user.x', b'1'))] + [
        res(lambda n=n: nl(n)) for n in ('pw', 'pc', 'px')]


EXPECT_DIRNLINK = ['ok:3'] * 3 + ['ok:3', 'ok', 'ok'] + ['ok:1'] * 3

UNMAPPED = ('um', 'um/f', 'um/d', 'um/d/g')    # left to the real root by main()


def steps_unmapped(m):
    """Objects whose owner (the host's root) has no id in the namespace:
    they show as the overflow ids; a copy-up could not keep their owner, so
    the kernel refuses it (EOVERFLOW) and changes nothing."""
    j = lambda n: os.path.join(m, n)
    return [res(lambda: mode_owner(j('um/f'))), res(lambda: write(j('um/f'), b'+w')),
            res(lambda: os.chmod(j('um/f'), 0o600)),
            res(lambda: write(j('um/d/new'), b'n', os.O_WRONLY | os.O_CREAT)),
            res(lambda: os.unlink(j('um/d/g'))), res(lambda: read(j('um/f'))),
            res(lambda: mode_owner(j('um/f'))), res(lambda: ls(j('um/d')))]


EXPECT_UNMAPPED = ['ok:0666 65534:65534', 'EOVERFLOW', 'EPERM', 'EOVERFLOW', 'EOVERFLOW',
                   'ok:host root owns me', 'ok:0666 65534:65534', 'ok:g']

STEPS = [('a 0444 lower file owned by the namespace\'s root: written (copy-up); '
          'not by its non-root owner', steps_ro0444, EXPECT_RO0444),
         ('rm -rf of a lower tree, then mkdir of its name: an empty directory',
          steps_rmtree, EXPECT_RMTREE),
         ('renames (lower, upper, onto a whiteout, across dirs, a lower dir: EXDEV)',
          steps_rename, EXPECT_RENAME),
         ('deletions (whiteouts) and an opaque lower dir', steps_delete, EXPECT_DELETE),
         ('st_nlink of a lower-only dir once a child is copied up (write, chmod, '
          'setxattr): 1, a merged dir\'s', steps_dirnlink, EXPECT_DIRNLINK),
         ('a read-only fd on a lower hard link keeps its data when the other name '
          'is copied up and written', steps_hardlink, EXPECT_HARDLINK),
         ('objects owned by ids outside the map: no copy-up (EOVERFLOW), owner kept',
          steps_unmapped, EXPECT_UNMAPPED)]

# Known differences from the kernel overlay, not run (printed "NOT RUN"), as
# tests/diff/writable/known-failing: each names what would fix it.
KNOWN_FAILING = {
    steps_unmapped: 'an owner outside the map reads as the overflow id, which is also a real '
                    'mapped id in podman\'s map: from userspace the copy-up cannot tell, and '
                    'chowns to 65534 as 1.10 does (the kernel answers EOVERFLOW)',
}

# ------------------------------------------------------------ mounts


class Mounts:
    def __init__(self, graph, fuse, pidfile):
        self.graph, self.fuse, self.pidfile = graph, fuse, pidfile
        self.live = {}      # mountpoint -> daemon PID (None: the kernel's)
        kopts = 'lowerdir=l/A:l/B,upperdir=K/diff,workdir=K/work,userxattr'
        low = ':'.join(os.path.join(graph, 'l', x) for x in 'AB')
        oopts = 'lowerdir=%s,upperdir=%s/C/diff,workdir=%s/C/work' % (low, graph, graph)
        self.opts = {self.path('K'): kopts, self.path('C'): oopts}

    def path(self, c):
        return os.path.join(self.graph, c, 'merged')

    def mount(self, mnt):
        if mnt == self.path('K'):
            r = subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', self.opts[mnt], mnt],
                               cwd=self.graph, capture_output=True, timeout=20)
            if r.returncode:
                raise RuntimeError('kernel overlay mount failed: %s' % r.stderr.decode().strip())
            self.live[mnt] = None
            return
        try:
            r = subprocess.run([self.fuse, '-o', self.opts[mnt], mnt], cwd=self.graph,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            raise RuntimeError('fuse-overlayfs did not return in 20 s (kept our pipes open?)')
        finally:
            self.record(mnt)
        if r.returncode or not is_mounted(mnt):
            raise RuntimeError('fuse-overlayfs exited %d%s: %s' % (
                r.returncode, '' if is_mounted(mnt) else ', not mounted', r.stderr.decode().strip()))
        if self.live.get(mnt) is None:
            raise RuntimeError('mounted, but no daemon process names %s' % mnt)

    def record(self, mnt):
        """The daemon: the process whose command line is ours and ends with mnt."""
        for p in os.listdir('/proc'):
            try:
                with open('/proc/%s/cmdline' % p, 'rb') as fh:
                    argv = fh.read().split(b'\0')[:-1]
            except (OSError, ValueError):
                continue
            if p.isdigit() and len(argv) > 2 and argv[-1] == mnt.encode() and \
                    argv[0] == self.fuse.encode() and running(int(p)):
                self.live[mnt] = int(p)
                with open(self.pidfile, 'a') as fh:
                    fh.write('%s\n' % p)

    def umount(self, mnt):
        pid = self.live.pop(mnt)
        cmd = ['umount', mnt] if mnt == self.path('K') else ['fusermount3', '-u', mnt]
        for _ in range(50):
            r = subprocess.run(cmd, capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError('%s failed: %s' % (' '.join(cmd), r.stderr.decode().strip()))
        for _ in range(100):
            if pid is None or not running(pid):
                reap()
                return
            time.sleep(0.05)
        raise RuntimeError('the daemon (PID %d) still runs 5 s after fusermount3 -u' % pid)

    def cleanup(self):
        for mnt in list(self.live):
            try:
                self.umount(mnt)
            except (OSError, RuntimeError) as e:
                print('    cleanup: %s' % e, flush=True)


def reap():
    """Wait for exited daemons: we are their subreaper (see in_namespace)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def running(pid):
    """Alive and not a zombie (a daemonized process is not our child)."""
    try:
        with open('/proc/%d/stat' % pid) as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def is_mounted(mnt):
    with open('/proc/self/mountinfo') as fh:
        return any(l.split()[4] == mnt for l in fh)

# ------------------------------------------------------------ the tests


def report(name, problems):
    if not problems:
        print('ok - %s' % name, flush=True)
        return
    print('not ok - %s: %s' % (name, problems[0]), flush=True)
    for p in problems[1:15]:
        print('    ' + p)
    if len(problems) > 15:
        print('    ... %d more' % (len(problems) - 15))
    sys.stdout.flush()


def no_um(view):
    """A view without um/: objects of unmapped owners have their own test
    (nor is um counted in the root's st_nlink, or listed)."""
    out = {p: dict(r) for p, r in view.items() if p != b'um' and not p.startswith(b'um/')}
    if view.get(b'um', {}).get('type') == 'dir':
        unlink_dirs(out[b''], 1)
    if isinstance(out[b''].get('list'), tuple):
        out[b'']['list'] = tuple(n for n in out[b'']['list'] if n != b'um')
    return out


def merged(k, o, label):
    """Differences of two snapshots (view, problems) of the kernel and ours."""
    return diff_views(no_um(k[0]), no_um(o[0]), label) + [p for p in o[1] if not p.startswith('um/')]


def compare_steps(kr, orr, want, ref='kernel'):
    """Step results of the reference (ref) and ours: equal, and as wanted."""
    out = []
    for i, (k, o, w) in enumerate(zip(kr, orr, want)):
        if k != o:
            out.append('step %d: %s=%s ours=%s' % (i + 1, ref, k, o))
        elif k != w:
            out.append('step %d: both %s, expected %s (test or setup wrong)' % (i + 1, k, w))
    return out


def both_mounted(m):
    """Mounts the kernel's and ours of Mounts m: (K, C, the time from which
    a time shows as `recent`)."""
    K, C = m.path('K'), m.path('C')
    recent = time.time_ns() - 2 * 10**9
    for mnt in (K, C):
        m.mount(mnt)
    return K, C, recent


def in_namespace(graph, fuse, pidfile):
    # a daemonizing fuse-overlayfs leaves its parent: be the one it is
    # handed to, so that it is waited for (init here does not)
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    m = Mounts(graph, fuse, pidfile)
    try:
        K, C, recent = both_mounted(m)
        report('ours mounted as containers/storage mounts it (daemonized, exit 0)', [])
        ino0 = {n: os.lstat(os.path.join(C, n)).st_ino for n in ('ino/f', 'ino/d')}
        for n in ('ino/f', 'ino/d'):
            os.chown(os.path.join(C, n), 7, 7)       # copy-up
            os.chown(os.path.join(K, n), 7, 7)
        for name, fn, want in STEPS:
            if fn in KNOWN_FAILING:
                print('# NOT RUN %s: %s' % (name, KNOWN_FAILING[fn]), flush=True)
                continue
            report(name, compare_steps(fn(K), fn(C), want))
        report('merged view equals the kernel\'s', merged(
            snapshot(K.encode(), False, recent), snapshot(C.encode(), True, recent), 'live'))
        for mnt in (K, C):
            m.umount(mnt)
        report('ours unmounted by fusermount3 -u; the daemon exits', [])
        for mnt in (K, C):
            m.mount(mnt)
        report('merged view after a remount equals the kernel\'s', merged(
            snapshot(K.encode(), False, recent), snapshot(C.encode(), True, recent), 'remounted'))
        # the kernel cannot do this in a user namespace (decoding the origin's
        # file handle needs CAP_DAC_READ_SEARCH in the initial one)
        report('ours: st_ino of a copied-up file and directory stable across a remount', [
            '%s: st_ino %d, was %d' % (n, os.lstat(os.path.join(C, n)).st_ino, i)
            for n, i in ino0.items() if os.lstat(os.path.join(C, n)).st_ino != i])
        for mnt in (K, C):
            m.umount(mnt)
        report('upper layer equals the kernel\'s (whiteout/opaque spellings normalised)',
               diff_views(no_um(upper_view(os.path.join(graph, 'K/diff').encode(), True, recent)),
                          no_um(upper_view(os.path.join(graph, 'C/diff').encode(), False, recent)),
                          'upper'))
    except Exception as e:     # a harness error too is a failed test
        report('namespace run', ['%s: %s' % (type(e).__name__, e)])
        return 1
    finally:
        m.cleanup()
        reap()
    return 0


def helper_args(dirname):
    """The command line rootless.sh gives its helpers."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--fuse', required=True)
    ap.add_argument('--map', required=True)
    ap.add_argument('--pidfile', required=True)
    ap.add_argument(dirname)
    return ap.parse_args()


def main():
    a = helper_args('graph')
    os.umask(0o022)
    graph, idmap = os.path.realpath(a.graph), parse_map(a.map)
    fuse = os.path.abspath(a.fuse)
    build(graph)
    for c in ('K', 'C'):
        for sub in ('diff', 'work', 'merged'):
            os.makedirs(os.path.join(graph, c, sub), 0o755)
    shift_tree(graph, idmap, idmap)
    for n in UNMAPPED:
        os.chown(os.path.join(graph, 'L2/diff', n), 0, 0)
    for c in ('K', 'C'):    # containers/storage makes these 0700
        os.chmod(os.path.join(graph, c, 'work'), 0o700)
    return run_in_userns(lambda: in_namespace(graph, fuse, a.pidfile), idmap, idmap, fuse_dev_for(graph, idmap, idmap))


if __name__ == '__main__':
    sys.exit(main())
