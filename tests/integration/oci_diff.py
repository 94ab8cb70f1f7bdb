#!/usr/bin/env python3
"""The oci plugin against the kernel overlay, differentially (oci_diff.sh
runs it; see there for the tests).  Usage:
  oci_diff.py WORK DAEMON PLUGIN RESULTS [TEST...]
WORK is an empty directory on a filesystem with trusted.* xattrs; each test
writes one line to RESULTS: NAME, then TAB REASON and TAB DETAIL... when it
failed.  Every mount and daemon it makes is undone before it returns; the
daemons' PIDs are appended to WORK/pids.  Progress and timings on stderr.
The views and their comparison are tests/diff's (ovlview.py): type, mode,
owner, nlink, size, content hash, link target, rdev, mtime, user.*,
trusted.*, security.* and system.posix_acl_* xattrs, listings, which names
share an inode; on ours also readdir's d_ino and d_type."""
import os
import shutil
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'diff'))
sys.path.insert(0, here)
from ovlmounts import Mounts                                        # noqa: E402
from ovlview import diff_views, ename, rmtree_mount, snapshot, upper_view  # noqa: E402
import oci_layers as L                                              # noqa: E402

# the kernel's optional features pinned to what ours does (as tests/diff does)
KERNEL_PINS = b',redirect_dir=off,index=off,metacopy=off,xino=off'
VARIANTS = {'tar': ['tar'] * 3, 'gzip': ['gzip'] * 3, 'zstd': ['zstd'] * 3, 'mixed': ['gzip', 'tar', 'zstd']}
ACL_NEW = L.acl([('user_obj', 6, L.U), ('user', 6, 2000), ('group_obj', 0, L.U), ('mask', 6, L.U),
                 ('other', 4, L.U)])


def log(msg):
    print('oci_diff: %s' % msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the changes


def pwrite(p, data, off):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def append(p, data):
    with open(p, 'ab') as f:
        f.write(data)


def move(src, dst):
    """mv: rename(2), and on EXDEV (a lower directory, redirect_dir=off)
    a copy and a removal; the result of rename(2) is the op's."""
    try:
        os.rename(src, dst)
        return 'ok'
    except OSError as e:
        if e.errno != 18:
            raise
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    rmtree_mount(src)
    return 'EXDEV, copied'


def changes(m):
    """The same changes through a mount: each op's result."""
    j = lambda rel: os.path.join(m, rel.encode())    # noqa: E731
    ops = [
        ('append to bin/tool (layer 1, set-uid, linked twice)', lambda: append(j('bin/tool'), b'appended')),
        ('write into data2/mid2 (layer 2)', lambda: pwrite(j('data2/mid2'), b'MIDDLE', 100000)),
        ('write into data/mid (layer 1)', lambda: pwrite(j('data/mid'), b'middle', 4096)),
        ('chmod l3file (layer 3)', lambda: os.chmod(j('l3file'), 0o600)),
        ('chmod the set-gid directory', lambda: os.chmod(j('setid'), 0o2770)),
        ('chown etc/shadow', lambda: os.chown(j('etc/shadow'), 1234, 5678)),
        ('chown setid/sgid-file (drops set-gid)', lambda: os.chown(j('setid/sgid-file'), 1, 2)),
        ('chown the symlink bin/sym', lambda: os.lchown(j('bin/sym'), 3, 4)),
        ('setfattr home/user/notes', lambda: os.setxattr(j('home/user/notes'), 'user.new', b'v')),
        ('setfattr the gnu long path', lambda: os.setxattr(j(L.GDEEP), 'user.deep', b'd')),
        ('remove user.a of xattr/file', lambda: os.removexattr(j('xattr/file'), 'user.a')),
        ('setfacl acl/file', lambda: os.setxattr(j('acl/file'), 'system.posix_acl_access', ACL_NEW)),
        ('new file in the default-ACL dir', lambda: open(j('acl/new'), 'wb').close()),
        ('rename etc/motd to mv/motd', lambda: os.rename(j('etc/motd'), j('mv/motd'))),
        ('rename long/hl to etc/hl', lambda: os.rename(j('long/hl'), j('etc/hl'))),
        ('mv mv/dir data/dir (a lower directory)', lambda: move(j('mv/dir'), j('data/dir'))),
        ('mkdir mv/up, a file in it', lambda: (os.mkdir(j('mv/up')), append(j('mv/up/f'), b'up'))),
        ('rename mv/up to data/up (an upper directory)', lambda: os.rename(j('mv/up'), j('data/up'))),
        ('rm etc/passwd (layers 1 and 3)', lambda: os.unlink(j('etc/passwd'))),
        ('rm -r tree (a lower tree)', lambda: rmtree_mount(j('tree'))),
        ('rm the 255-byte name', lambda: os.unlink(j('gnu/' + L.LONG255))),
        ('mkdir in the opaque opq', lambda: (os.mkdir(j('opq/sub')), append(j('opq/sub/f'), b'new'))),
        ('mkdir in the opaque opq3', lambda: os.mkdir(j('opq3/d'))),
        ('rm 100 names of many', lambda: [os.unlink(j('many/f%05d' % i)) for i in range(100, 200)]),
        ('rm many/new (layer 2)', lambda: os.unlink(j('many/new'))),
        ('create many/added', lambda: append(j('many/added'), b'')),
        ('link bin/hard to etc/hard2', lambda: os.link(j('bin/hard'), j('etc/hard2'))),
        ('link l2/other/b to l2/c', lambda: os.link(j('l2/other/b'), j('l2/c'))),
        ('rm repl2 (a file over a dir)', lambda: os.unlink(j('repl2'))),
        ('rm -r repl (a dir over a file)', lambda: rmtree_mount(j('repl'))),
        ('mknod a fifo over the whiteout etc/gone', lambda: os.mkfifo(j('etc/gone'))),
        ('truncate home/nobody (layer 1)', lambda: os.truncate(j('home/nobody'), 3)),
    ]
    res = []
    for what, fn in ops:
        try:
            r = fn()
            res.append((what, r if isinstance(r, str) else 'ok'))
        except OSError as e:
            res.append((what, ename(e)))
    return res


# ---------------------------------------------------------------- the runs


class Run:
    def __init__(self, work, daemon, plugin):
        self.work, self.plugin = work, plugin
        self.m = Mounts(work, daemon, os.path.join(work, b'pids'), lambda s: None)
        self.recent = None

    def path(self, *parts):
        return os.path.join(self.work, *[p.encode() if isinstance(p, str) else p for p in parts])

    def fresh(self, tag):
        u, w = self.path('u-' + tag), self.path('w-' + tag)
        for d in (u, w):
            shutil.rmtree(d, ignore_errors=True)
            os.mkdir(d)
            os.utime(d, ns=(L.T * 10**9,) * 2)     # the root's time on both sides
        return u, w

    def view(self, mnt, ours, mtime):
        v, problems = snapshot(mnt, ours, mtime)
        return v, ['%s (ours)' % p for p in problems]

    def umount(self, mnt, diffs):
        p = self.m.umount(mnt)
        os.rmdir(mnt)
        if p:
            diffs.append(p)

    def kernel(self, lowers):
        """The kernel's views of the layers: read-only; writable before the
        changes, the changes' results, after them, the upper layer, after a
        remount."""
        t0 = time.time()
        k, lo = self.path('k'), b'lowerdir=' + lowers
        self.m.kernel(k, lo)
        out = {'ro': self.view(k, False, True)[0]}
        self.umount(k, [])
        u, w = self.fresh('k')
        self.m.kernel(k, lo + b',upperdir=%s,workdir=%s' % (u, w) + KERNEL_PINS)
        out['before'] = self.view(k, False, True)[0]
        self.recent = time.time_ns() - 10**9
        out['res'] = changes(k)
        out['after'] = self.view(k, False, self.recent)[0]
        self.m.remount(k)
        out['remount'] = self.view(k, False, self.recent)[0]
        self.umount(k, [])
        out['upper'] = upper_view(u, True, self.recent)
        log('kernel views: %.1f s' % (time.time() - t0))
        return out

    def ours_opts(self, lower, upper=None):
        o = b'lowerdir=' + lower
        if upper:
            o += b',upperdir=%s,workdir=%s' % upper
        return o + b',plugins=' + self.plugin

    def readonly(self, kv, lower, label):
        t0, d, mnt = time.time(), [], self.path('m')
        try:
            self.m.ours(mnt, self.ours_opts(lower))
            v, problems = self.view(mnt, True, True)
            d += problems + diff_views(kv['ro'], v, 'ro')
            self.umount(mnt, d)
        except (OSError, RuntimeError) as e:
            d.append('%s: %s' % (label, e))
        log('%s: %.1f s' % (label, time.time() - t0))
        return d

    def writable(self, kv, lower, label):
        t0, d, mnt = time.time(), [], self.path('m')
        u, w = self.fresh('m')
        try:
            self.m.ours(mnt, self.ours_opts(lower, (u, w)))
            v, problems = self.view(mnt, True, True)
            d += problems + diff_views(kv['before'], v, 'rw before the changes')
            for (what, kr), (_, r) in zip(kv['res'], changes(mnt)):
                if kr != r:
                    d.append('change %s: kernel=%s ours=%s' % (what, kr, r))
            v, problems = self.view(mnt, True, self.recent)
            d += problems + diff_views(kv['after'], v, 'rw after the changes')
            p = self.m.remount(mnt)
            d += [p] if p else []
            v, problems = self.view(mnt, True, self.recent)
            d += problems + diff_views(kv['remount'], v, 'rw after a remount')
            self.umount(mnt, d)
            d += diff_views(kv['upper'], upper_view(u, False, self.recent), 'upper')
        except (OSError, RuntimeError) as e:
            d.append('%s: %s' % (label, e))
        log('%s: %.1f s' % (label, time.time() - t0))
        return d


def sanity(kv):
    """What the kernel's views must show, lest the comparison pass for want
    of content: the generated image's features, and each change done."""
    ro, out = kv['ro'], []
    want = [(b'acl', lambda r: [x for x, _ in r['xattrs']] == ['system.posix_acl_access', 'system.posix_acl_default']),
            (b'dev/sda', lambda r: r['type'] == 'blockdev' and r['rdev'] == '8:0'),
            (b'dev/null', lambda r: r['type'] == 'chardev' and r['rdev'] == '1:3'),
            (b'dev/fifo', lambda r: r['type'] == 'fifo'),
            (b'bin/tool', lambda r: r['mode'] == '4755' and len(r['same-inode-as']) == 2),
            (b'bin/ping', lambda r: r['xattrs'][0][0] == 'security.capability'),
            (b'xattr/file', lambda r: len(r['xattrs']) == 3),
            (b'home/user/notes', lambda r: r['mtime'] % 10**9 == 25 * 10**7),
            (b'l2/a', lambda r: r['same-inode-as'] == (b'l2/other/b',)),
            (b'long/' + L.LONG255.encode(), lambda r: r['type'] == 'file'),
            (L.DEEP.encode(), lambda r: r['same-inode-as'] == (b'long/hl',)),
            (L.GDEEP.encode(), lambda r: r['owner'] == '3000000:5' and r['same-inode-as'] == (b'gnu/hl',)),
            (b'gnu/lsym', lambda r: r['target'] == b'/' + L.GDEEP.encode()),
            (b'many', lambda r: len(r['list']) == L.BIG),
            (b'opq', lambda r: r['list'] == (b'new',)),
            (b'etc', lambda r: b'gone' not in r['list'] and b'motd' in r['list']),
            (b'repl', lambda r: r['type'] == 'dir'), (b'repl2', lambda r: r['type'] == 'file')]
    for path, ok in want:
        try:
            good = ok(ro[path])
        except (KeyError, IndexError, TypeError):
            good = False
        if not good:
            out.append('the kernel view of %s is not what the image means: %s' % (path, ro.get(path)))
    bad = [(w, r) for w, r in kv['res'] if r not in ('ok', 'EXDEV, copied')]
    out += ['the change %s failed on the kernel overlay: %s' % wr for wr in bad]
    if not any(r == 'EXDEV, copied' for _, r in kv['res']):
        out.append('no directory rename was refused with EXDEV on the kernel overlay (redirect_dir=off)')
    if not any(r.get('type') == 'whiteout' for r in kv['upper'].values()):
        out.append('the kernel wrote no whiteout into its upper layer')
    return out


def umoci_image(work):
    """An image made by umoci (two trees inserted, an opaque insert, a
    whiteout) with the generated GNU layer added verbatim, copied by skopeo
    into another layout: that layout and its ref."""
    src = os.path.join(work, 'umoci-src')
    keep = lambda e: not e.name.startswith('many/f')    # noqa: E731
    L.unpack(L.tar_bytes([e for e in L.layer1() if keep(e)], L.tarfile.PAX_FORMAT, L.T + 1000),
             os.path.join(src, 'a'))
    L.unpack(L.tar_bytes([L.D('./', mode=0o751, mtime=L.T + 7), L.E('only', data=b'umoci opaque\n', mtime=L.T + 8)],
                         L.tarfile.PAX_FORMAT, L.T), os.path.join(src, 'opq'))
    with open(os.path.join(src, 'gnu.tar'), 'wb') as f:
        f.write(L.generated()[1])
    lay, lay2 = os.path.join(work, 'umoci'), os.path.join(work, 'skopeo')
    script = ('set -e; cd "$1"; umoci init --layout "$2"; umoci new --image "$2:t";'
              'umoci insert --image "$2:t" a /;'
              'umoci insert --image "$2:t" --opaque opq /opq;'
              'umoci insert --image "$2:t" --whiteout /etc/passwd;'
              'umoci raw add-layer --image "$2:t" gnu.tar;'
              'skopeo copy --quiet "oci:$2:t" "oci:$3:t2"')
    r = subprocess.run(['sh', '-c', script, 'sh', src, lay, lay2], capture_output=True)
    if r.returncode:
        raise RuntimeError('umoci or skopeo failed: ' + r.stderr.decode(errors='replace')[-400:])
    return lay2, 't2'


def main():
    work, daemon, plugin, results = [os.fsencode(a) for a in sys.argv[1:5]]
    only = set(sys.argv[5:])
    known = {'%s_%s' % (v, k) for v in VARIANTS for k in ('readonly', 'writable')} | {'umoci_skopeo'}
    if only - known:
        sys.exit('no test named %s (tests: %s)' % (', '.join(sorted(only - known)), ', '.join(sorted(known))))
    run, out = Run(work, daemon, plugin), open(results, 'w')

    def report(name, diffs, why='%d differences (- kernel, + ours)'):
        out.write('\t'.join([name] + ([why % len(diffs)] + diffs if diffs else [])) + '\n')
        out.flush()
    try:
        t0 = time.time()
        raws = L.generated()
        lowers = []
        for i, raw in enumerate(raws):
            lowers.insert(0, run.path('unpacked', str(i + 1)))
            L.unpack(raw, lowers[0])
        layout = run.path('layout')
        L.write_layout(layout, {v: list(zip(raws, kinds)) for v, kinds in VARIANTS.items()})
        log('image: %.1f s' % (time.time() - t0))
        kv = run.kernel(b':'.join(lowers))
        report('generated_image', sanity(kv), 'the image or the changes are not what the test means (%d)')
        for v in VARIANTS:
            lower = b'//oci/%s%s' % (v.encode(), layout)
            for kind in ('readonly', 'writable'):
                name = '%s_%s' % (v, kind)
                if not only or name in only:
                    report(name, getattr(run, kind)(kv, lower, name))
        name = 'umoci_skopeo'
        if not only or name in only:
            d = []
            try:
                t0 = time.time()
                lay2, ref = umoci_image(os.fsdecode(work))
                ulowers = []
                for i, raw in enumerate(L.layout_layers(lay2, ref)):
                    ulowers.insert(0, run.path('uunpacked', str(i)))
                    L.unpack(raw, ulowers[0])
                log('umoci and skopeo: %.1f s' % (time.time() - t0))
                k = run.path('k')
                run.m.kernel(k, b'lowerdir=' + b':'.join(ulowers))
                kro = {'ro': run.view(k, False, True)[0]}
                run.umount(k, d)
                if len(kro['ro']) < 40:
                    d.append('the kernel view has only %d names' % len(kro['ro']))
                d += run.readonly(kro, b'//oci/%s%s' % (ref.encode(), os.fsencode(lay2)), name)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                d.append(str(e))
            report(name, d)
    finally:
        run.m.cleanup()
        out.close()


if __name__ == '__main__':
    main()
