#!/usr/bin/python3
"""userns: run code the way rootless podman runs fuse-overlayfs -- as uid 0
of a user namespace whose ids are mapped onto unprivileged host ids, in a
mount namespace of its own -- and shift trees built by the real root into
that namespace's ids.

Usage (as the real root): userns.py [--map MAP] [--fuse-dev DIR] -- CMD ARG...
runs CMD as the namespace's root and exits with its status.

MAP is podman's layout INSIDE:OUTSIDE:COUNT[,...], default
`0:61234:1,1:200000:65536` (namespace root = host uid 61234, namespace ids
1..65536 = host ids 200000..265535; the same for gids).  The process drops
to the host id of the namespace's root *before* unsharing, so it has no
privilege outside; the real root then writes uid_map/gid_map itself, as
newuidmap would (no /etc/subuid entry is needed: the writer has CAP_SETUID
in the parent namespace).

/dev/fuse: rootless podman needs it world read-writable (udev's
MODE="0666").  If it is not (this box: 0600), --fuse-dev DIR makes
DIR/fuse, a node 10:229 owned by the namespace's root, and bind-mounts it
over /dev/fuse inside the private mount namespace only.
"""
import ctypes, os, signal, stat, struct, sys

DEFAULT_MAP = '0:61234:1,1:200000:65536'
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]


def _check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, '%s: %s' % (what, os.strerror(e)))


def parse_map(s):
    """'0:61234:1,1:200000:65536' -> [(inside, outside, count)]."""
    out = []
    for part in s.replace(' ', '').split(','):
        i, o, n = (int(x) for x in part.split(':'))
        out.append((i, o, n))
    return out


def outside(idmap, i):
    """The host id of namespace id i (None if unmapped)."""
    for a, b, n in idmap:
        if a <= i < a + n:
            return b + i - a
    return None


def host_id(idmap, i):
    o = outside(idmap, i)
    if o is None:
        raise ValueError('id %d is not mapped in %s' % (i, idmap))
    return o


def layer_host_id(idmap, i):
    """The host id a layer object of namespace id i gets: its mapped id, or,
    where the map lacks i (`unshare -U -r` maps one id), host id i itself,
    which the namespace then shows as the overflow id, as it shows a layer
    someone else unpacked."""
    o = outside(idmap, i)
    if o is not None:
        return o
    if any(b <= i < b + n for _, b, n in idmap):
        raise ValueError('id %d is not mapped in %s and is a mapped host id' % (i, idmap))
    return i


def is_one_id(idmap):
    """The map `unshare -U -r` writes: the caller's own id as root, alone."""
    return len(idmap) == 1 and idmap[0][0] == 0 and idmap[0][2] == 1


ACL_XATTRS = ('system.posix_acl_access', 'system.posix_acl_default')


def _shift_acl(val, uidmap, gidmap):
    """A system.posix_acl_* value with named user/group entries shifted."""
    out = bytearray(val[:4])
    for off in range(4, len(val), 8):
        tag, perm, i = struct.unpack_from('<HHI', val, off)
        if tag == 0x02:
            i = layer_host_id(uidmap, i)
        elif tag == 0x08:
            i = layer_host_id(gidmap, i)
        out += struct.pack('<HHI', tag, perm, i)
    return bytes(out)


def shift_tree(root, uidmap, gidmap):
    """Give every object under root (built as the real root with namespace
    ids) the host ids it must have to show those ids inside the namespace:
    owners, named ACL entries.  chown clears set-id bits and
    security.capability: both are put back.  Times are not touched (chown
    and xattrs change only ctime)."""
    seen = set()     # hard links: shift an inode once
    for d, dirs, files in os.walk(root):
        for n in [None] + files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n) if n else d
            st = os.lstat(p)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                _shift_one(p, st, uidmap, gidmap)


def _shift_one(p, st, uidmap, gidmap):
    link = stat.S_ISLNK(st.st_mode)
    keep = {}
    if not link:
        for n in ('security.capability',) + ACL_XATTRS:
            try:
                keep[n] = os.getxattr(p, n, follow_symlinks=False)
            except OSError:
                pass
    os.chown(p, layer_host_id(uidmap, st.st_uid), layer_host_id(gidmap, st.st_gid), follow_symlinks=False)
    if link:
        return
    os.chmod(p, stat.S_IMODE(st.st_mode))
    for n, v in keep.items():
        if n in ACL_XATTRS:
            v = _shift_acl(v, uidmap, gidmap)
        os.setxattr(p, n, v, follow_symlinks=False)


def fuse_node(dirpath, uidmap, gidmap):
    """DIR/fuse: a /dev/fuse node the namespace's root owns."""
    node = os.path.join(os.fsdecode(dirpath), 'fuse')
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 229))
    os.chown(node, host_id(uidmap, 0), host_id(gidmap, 0))
    return node


def fuse_dev_for(dirpath, uidmap, gidmap):
    """What rootless podman needs: /dev/fuse world read-writable (udev's
    0666); where it is not, a node the namespace's root owns in DIR/dev,
    to bind-mount over it (fork_in_userns's fuse_dev); else None."""
    if os.stat('/dev/fuse').st_mode & 0o006 == 0o006:
        return None
    devdir = os.path.join(os.fsdecode(dirpath), 'dev')
    if os.path.exists(os.path.join(devdir, 'fuse')):
        return os.path.join(devdir, 'fuse')
    os.makedirs(devdir, exist_ok=True)
    return fuse_node(devdir, uidmap, gidmap)


def run_in_userns(fn, uidmap, gidmap, fuse_dev=None):
    """fork_in_userns, then waits: the child's exit status (1 if killed)."""
    st = os.waitpid(fork_in_userns(fn, uidmap, gidmap, fuse_dev), 0)[1]
    return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 1


def fork_in_userns(fn, uidmap, gidmap, fuse_dev=None):
    """Fork a child that enters a new user + mount namespace as described
    above and runs fn() there; its return value is the child's exit status.
    Returns the child's PID (in the parent, which stays the real root)."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 120
        try:
            os.close(r1)
            os.close(w2)
            os.setgroups([])
            os.setresgid(*[host_id(gidmap, 0)] * 3)
            os.setresuid(*[host_id(uidmap, 0)] * 3)
            _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), 'unshare')
            os.write(w1, b'u')
            os.close(w1)
            if os.read(r2, 1) != b'm':
                raise OSError('the parent did not write the id maps')
            os.close(r2)
            _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)   # /proc/self stays ours
            _check(_libc.mount(b'none', b'/', None, MS_REC | MS_PRIVATE, None), 'mount --make-rprivate /')
            if fuse_dev:
                _check(_libc.mount(os.fsencode(fuse_dev), b'/dev/fuse', None, MS_BIND, None),
                       'bind-mount %s on /dev/fuse' % fuse_dev)
            status = fn()
        except SystemExit as e:
            status = e.code
        except BaseException as e:  # noqa: the child must never return
            print('userns: %s' % e, file=sys.stderr, flush=True)
        finally:
            sys.stdout.flush()
            os._exit(status if isinstance(status, int) else 120)
    os.close(w1)
    os.close(r2)
    try:
        if os.read(r1, 1) != b'u':
            raise OSError('the child could not unshare a user namespace')
        if is_one_id(gidmap):   # as `unshare -U -r`: no setgroups, as an unprivileged writer must
            with open('/proc/%d/setgroups' % pid, 'w') as f:
                f.write('deny')
        for name, m in (('uid_map', uidmap), ('gid_map', gidmap)):
            with open('/proc/%d/%s' % (pid, name), 'w') as f:
                f.write(''.join('%d %d %d\n' % e for e in m))
        os.write(w2, b'm')
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(r1)
        os.close(w2)
    return pid


def main():
    args = sys.argv[1:]
    m, fuse_dir = DEFAULT_MAP, None
    while args and args[0] != '--':
        if args[0] == '--map':
            m, args = args[1], args[2:]
        elif args[0] == '--fuse-dev':
            fuse_dir, args = args[1], args[2:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if not args[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    idmap = parse_map(m)
    node = fuse_node(fuse_dir, idmap, idmap) if fuse_dir else None
    pid = fork_in_userns(lambda: os.execvp(args[1], args[1:]), idmap, idmap, node)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: os.kill(pid, s))
    while True:
        try:
            _, st = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)


if __name__ == '__main__':
    sys.exit(main())
