"""The differential harness's views of a mount and of an upper layer, their
comparison, and the probe lookups: what ovldiff.py and the other tests that
compare with the kernel overlay (tests/integration/tarball_apply.py,
tests/integration/oci_diff.py) share."""
import errno, hashlib, os, stat

OPQ_XATTR = {'trusted': 'trusted.overlay.opaque', 'user': 'user.overlay.opaque',
             'fuse': 'user.fuseoverlayfs.opaque'}


def jp(root, rel):
    return os.path.join(root, rel) if rel else root


def expected(e, mode, selfcheck):
    """What ours must answer instead of the kernel's result, or None."""
    if selfcheck:
        return None
    if mode == 'wh' and 'ours_whmode' in e.kv:
        return e.kv['ours_whmode'].decode()
    return e.kv['ours'].decode() if 'ours' in e.kv else None


# ---------------------------------------------------------------- viewing


def ename(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def file_hash(p):
    h = hashlib.sha256()
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()[:16]


INTERNAL_XATTRS = (b'user.overlay.', b'user.fuseoverlayfs.', b'trusted.overlay.')
SHOWN_XATTRS = (b'user.', b'trusted.', b'security.', b'system.posix_acl_')
TYPES = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink',
         stat.S_IFIFO: 'fifo', stat.S_IFSOCK: 'socket', stat.S_IFCHR: 'chardev',
         stat.S_IFBLK: 'blockdev'}


def record(p, st, with_mtime):
    t = TYPES.get(stat.S_IFMT(st.st_mode), '?')
    r = {'type': t, 'mode': '%04o' % stat.S_IMODE(st.st_mode),
         'owner': '%d:%d' % (st.st_uid, st.st_gid)}
    r['nlink'] = st.st_nlink
    if t != 'dir':
        r['size'] = st.st_size
    if with_mtime is True:
        r['mtime'] = st.st_mtime_ns
    elif with_mtime:    # a time at or after with_mtime (this run) is `recent`
        r['mtime'] = st.st_mtime_ns if st.st_mtime_ns < with_mtime else 'recent'
    try:
        if t == 'file':
            r['sha'] = file_hash(p) if st.st_size else '-'
        elif t == 'symlink':
            r['target'] = os.readlink(p)
        elif t in ('chardev', 'blockdev'):
            r['rdev'] = '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    except OSError as e:
        r['content'] = 'ERR ' + ename(e)
    try:
        xs = []
        for n in sorted(os.listxattr(p, follow_symlinks=False)):
            nb = n.encode('utf-8', 'surrogateescape')
            if nb.startswith(SHOWN_XATTRS) and not nb.startswith(INTERNAL_XATTRS):
                xs.append((n, os.getxattr(p, n, follow_symlinks=False)))
        r['xattrs'] = tuple(xs)
    except OSError as e:
        r['xattrs'] = 'ERR ' + ename(e)
    return r


def snapshot(mnt, ours, with_mtime):
    """The merged view: {relpath: record}, inode groups, and problems seen
    only on ours (d_ino/d_type mismatches)."""
    view, inos, problems = {}, {}, []
    st = os.lstat(mnt)
    view[b''] = record(mnt, st, with_mtime)
    inos.setdefault(st.st_ino, []).append(b'')
    todo = [b'']
    while todo:
        rel = todo.pop()
        path = jp(mnt, rel)
        try:
            with os.scandir(path) as it:
                ents = list(it)
        except OSError as e:
            view[rel]['list'] = 'ERR ' + ename(e)
            continue
        if not ours:    # masked difference: ours hides .wh. names
            hidden = [d for d in ents if d.name.startswith(b'.wh.')]
            ents = [d for d in ents if not d.name.startswith(b'.wh.')]
            unlink_dirs(view[rel], sum(d.is_dir(follow_symlinks=False) for d in hidden))
        view[rel]['list'] = tuple(sorted(d.name for d in ents))
        for d in ents:
            crel = rel + b'/' + d.name if rel else d.name
            try:
                st = os.lstat(d.path)
            except OSError as e:
                view[crel] = {'lstat': 'ERR ' + ename(e)}
                continue
            if ours and d.inode() != st.st_ino:
                problems.append('%s: readdir d_ino %d != st_ino %d' % (show(crel), d.inode(), st.st_ino))
            if ours and (d.is_dir(follow_symlinks=False) != stat.S_ISDIR(st.st_mode)
                         or d.is_symlink() != stat.S_ISLNK(st.st_mode)
                         or d.is_file(follow_symlinks=False) != stat.S_ISREG(st.st_mode)):
                problems.append('%s: readdir d_type disagrees with lstat' % show(crel))
            view[crel] = record(d.path, st, with_mtime)
            inos.setdefault(st.st_ino, []).append(crel)
            if stat.S_ISDIR(st.st_mode):
                todo.append(crel)
    # inode identity: for each path, the other paths sharing its inode
    for group in inos.values():
        if len(group) > 1:
            for p in group:
                view[p]['same-inode-as'] = tuple(sorted(q for q in group if q != p))
    return view, problems


def unlink_dirs(r, n):
    """Leave n hidden subdirectories out of a directory's nlink (a merged
    directory's 1 is no count)."""
    if n and r.get('nlink', 1) > 1:
        r['nlink'] -= n


def upper_view(root, kernel, with_mtime=False):
    """An upper layer with whiteout/opaque spellings normalised.  The kernel
    writes only char 0/0 whiteouts, so a .wh. name in its upper is a plain
    object made through the mount (masked difference): drop it there."""
    view = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root) if d != root else b''
        pre = rel + b'/' if rel else b''
        st = os.lstat(d)
        r = record(d, st, with_mtime)
        if kernel:
            hidden = [n for n in dirs if n.startswith(b'.wh.')]
            unlink_dirs(r, sum(not os.path.islink(os.path.join(d, n)) for n in hidden))
            dirs[:] = [n for n in dirs if not n.startswith(b'.wh.')]
            files = [n for n in files if not n.startswith(b'.wh.')]
        r['opaque'] = b'.wh..wh..opq' in files or any(
            xattr_is_y(d, x) for x in OPQ_XATTR.values())
        view[rel] = r
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            if n == b'.wh..wh..opq' or n in dirs and not os.path.islink(p):
                continue
            if n.startswith(b'.wh.'):
                view[pre + n[4:]] = {'type': 'whiteout'}
                continue
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                view[pre + n] = {'type': 'whiteout'}
            else:
                view[pre + n] = record(p, st, with_mtime)
    return view


def xattr_is_y(p, name):
    try:
        return os.getxattr(p, name, follow_symlinks=False) == b'y'
    except OSError:
        return False


def show(p):
    s = p.decode('utf-8', 'backslashreplace') if isinstance(p, bytes) else str(p)
    return (s[:40] + '...' + s[-12:]) if len(s) > 60 else (s or '.')


def showval(v):
    if isinstance(v, tuple) and len(v) > 6:
        return '(%d items)' % len(v)
    s = repr(v)
    return s if len(s) < 120 else s[:117] + '...'


def diff_views(k, o, label):
    out = []
    for p in sorted(set(k) | set(o)):
        if p not in o:
            out.append('%s: %s: missing on ours' % (label, show(p)))
        elif p not in k:
            out.append('%s: %s: extra on ours (%s)' % (label, show(p), o[p].get('type')))
        else:
            for f in sorted(set(k[p]) | set(o[p])):
                kv, ov = k[p].get(f), o[p].get(f)
                if kv == ov:
                    continue
                if f == 'list' and isinstance(kv, tuple) and isinstance(ov, tuple):
                    miss, extra = sorted(set(kv) - set(ov)), sorted(set(ov) - set(kv))
                    out.append('%s: %s: listing: missing %s extra %s%s' % (
                        label, show(p), [show(x) for x in miss[:3]], [show(x) for x in extra[:3]],
                        ' (duplicates)' if not miss and not extra else ''))
                else:
                    out.append('%s: %s: %s kernel=%s ours=%s' % (label, show(p), f, showval(kv), showval(ov)))
    return out

# ---------------------------------------------------------------- probes


def _listdir_nofollow(p):
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        return 'ok:%d' % len(os.listdir(fd))
    finally:
        os.close(fd)


PROBES = [
    ('lstat', lambda p: (os.lstat(p), 'ok')[1]),
    ('open', lambda p: (os.close(os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)), 'ok')[1]),
    ('readlink', lambda p: 'ok:' + os.readlink(p).decode('utf-8', 'backslashreplace')),
    ('listdir', _listdir_nofollow),
]


def run_probes(mnt, probes):
    res = {}
    for e in probes:
        for name, fn in PROBES:
            try:
                res[(e.path, name)] = fn(jp(mnt, e.path))
            except OSError as exc:
                res[(e.path, name)] = ename(exc)
    return res


def diff_probes(k, o, probes, label, mode='ovl', selfcheck=False):
    out = []
    for e in probes:
        want, exp = expected(e, mode, selfcheck), e.kv.get('expect')
        if exp is not None and k[(e.path, 'lstat')] != exp.decode():
            out.append('%s: scenario: kernel lstat %s = %s, expected %s' % (
                label, show(e.path), k[(e.path, 'lstat')], exp.decode()))
        for name, _ in PROBES:
            kv, ov = k[(e.path, name)], o[(e.path, name)]
            if want is not None and ov != want:
                out.append('%s: probe %s %s: ours=%s, expected %s' % (label, name, show(e.path), ov, want))
            elif want is None and kv != ov:
                out.append('%s: probe %s %s: kernel=%s ours=%s' % (label, name, show(e.path), kv, ov))
    return out


def rmtree_mount(p):
    """rm -rf through the mount, bottom-up, lstat only."""
    if stat.S_ISDIR(os.lstat(p).st_mode):
        for n in os.listdir(p):
            rmtree_mount(os.path.join(p, n))
        os.rmdir(p)
    else:
        os.unlink(p)
