"""The ops of the differential tests, run on a mount (do_op): open handles
(OpCtx), the syscalls python lacks (renameat2, fallocate, utimensat through
ctypes), locks, and the result strings that are compared."""
import ctypes, errno, fcntl, hashlib, os, stat, struct

from ovlbuild import apply
from ovlview import INTERNAL_XATTRS, TYPES, ename, jp, rmtree_mount


_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.futimens.argtypes = [ctypes.c_int, ctypes.POINTER(_Timespec)]
AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
RENAME_FLAGS = {'noreplace': 1, 'exchange': 2, 'whiteout': 4}
FALLOC_MODES = {'default': 0, 'keep_size': 1, 'punch_hole': 2, 'collapse_range': 8,
                'zero_range': 0x10, 'insert_range': 0x20, 'unshare_range': 0x40}
OPEN_FLAGS = {'rdonly': os.O_RDONLY, 'wronly': os.O_WRONLY, 'rdwr': os.O_RDWR,
              'creat': os.O_CREAT, 'excl': os.O_EXCL, 'trunc': os.O_TRUNC,
              'append': os.O_APPEND, 'nofollow': os.O_NOFOLLOW,
              'directory': os.O_DIRECTORY, 'nonblock': os.O_NONBLOCK,
              'path': os.O_PATH, 'sync': os.O_SYNC, 'dsync': os.O_DSYNC,
              'noatime': os.O_NOATIME}
F_OFD_GETLK, F_OFD_SETLK = 36, 37
LOCK_TYPES = {'rd': fcntl.F_RDLCK, 'wr': fcntl.F_WRLCK}
LOCK_NAMES = {fcntl.F_RDLCK: 'rd', fcntl.F_WRLCK: 'wr', fcntl.F_UNLCK: 'un'}


def _check(rc):
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def word_flags(value, table, what):
    out = 0
    for w in value.decode().split(','):
        if w not in table:
            raise ValueError('unknown %s %r' % (what, w))
        out |= table[w]
    return out


class OpCtx:
    """What ops on one mount share: the root, open handles (`as=H`, `@H`)
    and the time from which on a timestamp shows as `recent`."""

    def __init__(self, root, recent):
        self.root, self.recent, self.fds = root, recent, {}

    def path(self, p):
        if p.startswith(b'@'):
            raise ValueError('handle %s where a path is needed' % p.decode())
        return jp(self.root, p)

    def handle(self, p):
        """(fd, path) of `@H`, or None for a path.  A handle whose open
        failed (or that was closed) is a bad fd."""
        if not p.startswith(b'@'):
            return None
        if p[1:] not in self.fds:
            raise OSError(errno.EBADF, 'handle %s is not open' % p.decode())
        return self.fds[p[1:]]

    def close_all(self):
        for fd, _ in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def tm(self, ns):
        """A timestamp: exact when older than this run, else `recent`."""
        return str(ns) if ns < self.recent else 'recent'


class _Fd:
    """The fd of `@H`, or P opened with flags (closed on exit)."""

    def __init__(self, ctx, p, flags, mode=0o644):
        h = ctx.handle(p)
        self.own = h is None
        self.fd = os.open(ctx.path(p), flags, mode) if self.own else h[0]

    def __enter__(self):
        return self.fd

    def __exit__(self, *a):
        if self.own:
            os.close(self.fd)


def parse_time(v):
    """SECONDS[.FRACTION] | now | omit -> a timespec."""
    v = v.decode()
    if v in ('now', 'omit'):
        return _Timespec(0, UTIME_NOW if v == 'now' else UTIME_OMIT)
    sec, _, frac = v.partition('.')
    return _Timespec(int(sec), int((frac + '000000000')[:9]))


def fd_hash(fd):
    h, off = hashlib.sha256(), 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            return h.hexdigest()[:16]
        h.update(b)
        off += len(b)


def in_child(fn):
    """Run fn() in a forked child; its result string (or errno) comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                res = fn()
            except OSError as exc:
                res = ename(exc)
            except Exception as exc:     # a harness error: show it, do not hide it
                res = 'HARNESS-ERROR %s: %s' % (type(exc).__name__, exc)
            os.write(w, res.encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b''
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        out += b
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode()


def op_lock(ctx, e):
    """lock P|@H [flock|posix|ofd] [rd|wr] [rd|wr]: take the first lock on
    one fd, then try the second one (non-blocking) from a second fd (flock,
    ofd) or from a child process (posix; it also reports F_GETLK)."""
    words = [a.decode() for a in e.args[1:]]
    kind = ([w for w in words if w in ('flock', 'posix', 'ofd')] or ['posix'])[0]
    types = [w for w in words if w in LOCK_TYPES] + ['wr', 'wr']
    h = ctx.handle(e.path)
    path = h[1] if h else ctx.path(e.path)
    flags = os.O_RDONLY if kind == 'flock' else os.O_RDWR

    def flk(t, pid=0):
        return struct.pack('hhqqi4x', t, os.SEEK_SET, 0, 0, pid)

    def take(fd, t):
        if kind == 'flock':
            fcntl.flock(fd, (fcntl.LOCK_SH if t == 'rd' else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        else:
            fcntl.fcntl(fd, fcntl.F_SETLK if kind == 'posix' else F_OFD_SETLK, flk(LOCK_TYPES[t]))

    def getlk(fd, cmd):
        """The lock type F_GETLK/F_OFD_GETLK reports against the second lock, and its pid."""
        got = struct.unpack('hhqqi4x', fcntl.fcntl(fd, cmd, flk(LOCK_TYPES[types[1]])))
        return LOCK_NAMES.get(got[0], '?'), got[4]

    def try_second(fd):
        try:
            take(fd, types[1])
            return 'ok'
        except OSError as exc:
            return ename(exc)
    with _Fd(ctx, e.path, flags) as fd1:
        take(fd1, types[0])
        try:
            if kind == 'posix':
                parent = os.getpid()

                def second():
                    fd2 = os.open(path, flags)
                    name, pid = getlk(fd2, fcntl.F_GETLK)
                    return 'second=%s getlk=%s' % (try_second(fd2), name + (':parent' if pid == parent else ''))
                return 'ok ' + in_child(second)
            fd2 = os.open(path, flags)
            try:
                ofd = ' getlk=' + getlk(fd2, F_OFD_GETLK)[0] if kind == 'ofd' else ''
                return 'ok second=%s%s' % (try_second(fd2), ofd)
            finally:
                os.close(fd2)
        finally:
            if kind == 'flock':
                fcntl.flock(fd1, fcntl.LOCK_UN)
            else:
                fcntl.fcntl(fd1, fcntl.F_SETLK if kind == 'posix' else F_OFD_SETLK, flk(fcntl.F_UNLCK))


def stat_summary(ctx, st, atime=False):
    t = TYPES.get(stat.S_IFMT(st.st_mode), '?')
    out = '%s %04o %d:%d nlink=%d' % (t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink)
    if t != 'dir':
        out += ' size=%d' % st.st_size
    if t in ('chardev', 'blockdev'):
        out += ' rdev=%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if atime:
        out += ' a=' + ctx.tm(st.st_atime_ns)
    return out + ' m=' + ctx.tm(st.st_mtime_ns)


def do_op(ctx, e):
    """Run one op; returns its result string ('ok...' or raises OSError)."""
    k, kv, p = e.kind, e.kv, e.path
    words = [a.decode('utf-8', 'replace') for a in e.args[1:]]
    if k == 'asuid':
        def child():
            os.chdir(ctx.root)      # as root: the user needs no search right above
            os.setgroups([])
            os.setresgid(e.gid, e.gid, e.gid)
            os.setresuid(e.uid, e.uid, e.uid)
            sub = OpCtx(b'.', ctx.recent)
            sub.fds = dict(ctx.fds)
            out = []
            for inner in e.inner:
                try:
                    out.append(do_op(sub, inner))
                except OSError as exc:
                    out.append(ename(exc))
            return ' ; '.join(out)
        return in_child(child)
    if k == 'create':
        flags = os.O_WRONLY | os.O_CREAT
        if 'flags' in kv:
            flags |= word_flags(kv['flags'], OPEN_FLAGS, 'open flag')
        fd = os.open(ctx.path(p), flags, e.num('mode', 0o644))
        try:
            if 'content' in kv:
                os.write(fd, kv['content'])
            return 'ok size=%d' % os.fstat(fd).st_size
        finally:
            os.close(fd)
    if k == 'open':
        flags = word_flags(kv.get('flags', b'rdonly'), OPEN_FLAGS, 'open flag')
        fd = os.open(ctx.path(p), flags, e.num('mode', 0o644))
        if 'as' in kv:
            name = kv['as'].lstrip(b'@')
            if name in ctx.fds:
                os.close(fd)
                raise ValueError('handle @%s is open' % name.decode())
            ctx.fds[name] = (fd, ctx.path(p))
        else:
            os.close(fd)
        return 'ok'
    if k == 'close':
        fd, _ = ctx.handle(p)
        del ctx.fds[p[1:]]
        os.close(fd)
        return 'ok'
    if k == 'write':
        flags = os.O_WRONLY | (word_flags(kv['flags'], OPEN_FLAGS, 'open flag') if 'flags' in kv else 0)
        with _Fd(ctx, p, flags) as fd:
            if 'off' in kv:
                n = os.pwrite(fd, kv.get('content', b''), e.num('off'))
            else:
                n = os.write(fd, kv.get('content', b''))
            return 'ok n=%d' % n
    if k == 'read' and ctx.handle(p):
        return 'ok:' + fd_hash(ctx.handle(p)[0])
    if k in ('ftruncate', 'truncate') and (k == 'ftruncate' or ctx.handle(p)):
        with _Fd(ctx, p, os.O_WRONLY) as fd:
            os.ftruncate(fd, e.num('size'))
            return 'ok'
    if k == 'chmod' and ctx.handle(p):
        os.chmod(ctx.handle(p)[0], int(e.args[1], 8))
        return 'ok'
    if k == 'chown' and ctx.handle(p):
        u, g = e.args[1].split(b':')
        os.chown(ctx.handle(p)[0], int(u), int(g))
        return 'ok'
    if k == 'xattr' and (ctx.handle(p) or 'flags' in kv):
        name, val = e.args[1].split(b'=', 1)
        fl = word_flags(kv['flags'], {'create': os.XATTR_CREATE, 'replace': os.XATTR_REPLACE},
                        'xattr flag') if 'flags' in kv else 0
        h = ctx.handle(p)
        if h:
            os.setxattr(h[0], name, val, fl)
        else:
            os.setxattr(ctx.path(p), name, val, fl, follow_symlinks=False)
        return 'ok'
    if k == 'utimes':
        # utimes P|@H [atime=T|now|omit] [mtime=T|now|omit] [now] [omit] [nofollow]
        a = parse_time(kv.get('atime', b'now' if 'now' in words else b'omit' if 'omit' in words else b'now'))
        m = parse_time(kv.get('mtime', b'now' if 'now' in words else b'omit' if 'omit' in words else b'now'))
        no_times = not ({'atime', 'mtime'} & kv.keys()) and not ({'now', 'omit'} & set(words))
        ts = None if no_times else (_Timespec * 2)(a, m)
        h = ctx.handle(p)
        if h:
            _check(_libc.futimens(h[0], ts))
            st = os.fstat(h[0])
        else:
            nofollow = 'nofollow' in words
            _check(_libc.utimensat(AT_FDCWD, ctx.path(p), ts, AT_SYMLINK_NOFOLLOW if nofollow else 0))
            st = os.stat(ctx.path(p), follow_symlinks=not nofollow)
        out = 'ok'
        if kv.get('atime') != b'omit' and 'omit' not in words:   # an omitted atime is the reads' business
            out += ' a=' + ctx.tm(st.st_atime_ns)
        return out + ' m=' + ctx.tm(st.st_mtime_ns)
    if k == 'stat':
        h = ctx.handle(p)
        st = os.fstat(h[0]) if h else os.stat(ctx.path(p), follow_symlinks='follow' in words)
        return 'ok ' + stat_summary(ctx, st, 'atime' in words)
    if k == 'getxattr':
        h = ctx.handle(p)
        v = os.getxattr(h[0] if h else ctx.path(p), e.args[1], follow_symlinks=bool(h))
        return 'ok:' + (repr(v) if len(v) < 40 else hashlib.sha256(v).hexdigest()[:16])
    if k == 'listdir':
        names = b','.join(sorted(os.listdir(ctx.path(p))))
        return 'ok:' + (repr(names) if len(names) < 200 else hashlib.sha256(names).hexdigest()[:16])
    if k == 'listxattr':
        h = ctx.handle(p)
        names = os.listxattr(h[0] if h else ctx.path(p), follow_symlinks=bool(h))
        names = [n for n in names if not n.encode().startswith(INTERNAL_XATTRS)]
        return 'ok:' + ','.join(sorted(names))
    if k in ('fsync', 'fdatasync'):
        flags = word_flags(kv['flags'], OPEN_FLAGS, 'open flag') if 'flags' in kv else os.O_RDONLY
        with _Fd(ctx, p, flags) as fd:
            if 'content' in kv:
                os.write(fd, kv['content'])
            (os.fdatasync if k == 'fdatasync' or 'data' in words else os.fsync)(fd)
            return 'ok'
    if k == 'fallocate':
        mode = word_flags(kv.get('mode', b'default'), FALLOC_MODES, 'fallocate mode')
        with _Fd(ctx, p, os.O_RDWR) as fd:
            _check(_libc.fallocate(fd, mode, e.num('off', 0), e.num('len')))
            return 'ok size=%d' % os.fstat(fd).st_size
    if k == 'seek':
        # the data and hole segments SEEK_DATA/SEEK_HOLE show, then SEEK_DATA at EOF.
        # Over an unwritten (fallocated) extent ext4 and tmpfs answer "data"
        # only where the page cache holds the page, and what a mount caches
        # is its own business (ours, with the writeback cache, reads less of
        # the backing file): clean pages are dropped first on both sides, so
        # the map shows allocation and dirty data only.
        with open('/proc/sys/vm/drop_caches', 'w') as dc:
            dc.write('1')
        with _Fd(ctx, p, os.O_RDONLY) as fd:
            size, pos, segs = os.fstat(fd).st_size, 0, []
            while pos < size:
                try:
                    d = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    segs.append('H%d-%d' % (pos, size))
                    break
                if d > pos:
                    segs.append('H%d-%d' % (pos, d))
                hole = os.lseek(fd, d, os.SEEK_HOLE)
                segs.append('D%d-%d' % (d, hole))
                pos = hole
            try:
                end = 'eof=%d' % os.lseek(fd, size, os.SEEK_DATA)
            except OSError as exc:
                end = 'eof=' + ename(exc)
            return 'ok %s %s' % (','.join(segs) or 'empty', end)
    if k == 'copyrange':
        # copyrange SRC DST [off=N] [to=N] [len=N]: copy_file_range, looped
        with _Fd(ctx, p, os.O_RDONLY) as src, _Fd(ctx, e.args[1], os.O_WRONLY) as dst:
            off, to = e.num('off', 0), e.num('to', 0)
            todo = e.num('len', max(os.fstat(src).st_size - off, 0))
            total = 0
            while total < todo:
                n = os.copy_file_range(src, dst, todo - total, off + total, to + total)
                if n == 0:
                    break
                total += n
            return 'ok n=%d' % total
    if k == 'lock':
        return op_lock(ctx, e)
    if k == 'openunlink':
        # open O_RDWR, unlink, write at the end and read all through the fd
        fd = os.open(ctx.path(p), os.O_RDWR)
        try:
            os.unlink(ctx.path(p))
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, kv.get('content', b'+after-unlink'))
            st = os.fstat(fd)
            return 'ok nlink=%d size=%d sha=%s' % (st.st_nlink, st.st_size, fd_hash(fd))
        finally:
            os.close(fd)
    if k == 'statfs':
        return 'namemax=%d' % os.statvfs(ctx.path(p)).f_namemax
    if k == 'rmtree':
        rmtree_mount(ctx.path(p))
        return 'ok'
    if k == 'rename' and 'flags' in kv:
        fl = word_flags(kv['flags'], RENAME_FLAGS, 'rename flag')
        _check(_libc.renameat2(AT_FDCWD, ctx.path(p), AT_FDCWD, ctx.path(e.args[1]), fl))
        return 'ok'
    if k == 'chmod':
        try:
            return apply(ctx.root, e)
        except NotImplementedError:     # lchmod: python's answer for a symlink
            return 'ENOTSUP'
    return apply(ctx.root, e)
