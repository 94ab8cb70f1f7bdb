#!/usr/bin/python3
"""Helper of rootless.sh: owners through ours mounted rootless, the way
containers/storage mounts it for `podman run --userns=keep-id` (a uid/gid
mapping) and with force_mask (xattr_permissions=2), inside a user namespace
whose root is an unprivileged host id (tests/diff/userns.py).

Usage (as the real root): rootless_identity.py --fuse BIN --map MAP --pidfile F DIR
Prints `ok - NAME` or `not ok - NAME: REASON` (details indented), exit 0 if
all ran.  The lower layer holds objects of namespace ids 0, 1, 1000, 1001 and
5000; the expectations are written out from the mapping rule (COMPAT.md):
a stored id ID+k shows as HOST+k, a caller HOST+k stores ID+k.
"""
import ctypes, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'diff'))
from userns import fuse_dev_for, parse_map, run_in_userns, shift_tree  # noqa: E402
from rootless_check import helper_args, report  # noqa: E402

OWNERS = (0, 1, 1000, 1001, 5000)
KEEPID = ':0:1:1000:1000:0:1:1001:1001:64535'   # keep-id for namespace uid 1000


def owner(p):
    st = os.lstat(p)
    return st.st_uid, st.st_gid


def check(what, got, want):
    return [] if got == want else ['%s: %r, want %r' % (what, got, want)]


class Mount:
    def __init__(self, d, fuse, pidfile, opts):
        self.d, self.m = d, os.path.join(d, 'm')
        for s in ('u', 'w', 'm'):
            os.makedirs(os.path.join(d, s))
        os.chmod(os.path.join(d, 'w'), 0o700)
        cmd = [fuse, '-o', 'lowerdir=%s,upperdir=%s/u,workdir=%s/w,%s' % (os.path.join(os.path.dirname(d), 'lower'),
                                                                          d, d, opts), self.m]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, timeout=20)
        pid = subprocess.run(['pgrep', '-nf', 'fuse-overlayfs .*%s' % self.m], capture_output=True, text=True)
        with open(pidfile, 'a') as f:
            f.write(pid.stdout)

    def upper(self, n):
        return os.path.join(self.d, 'u', n)

    def umount(self):
        subprocess.run(['fusermount3', '-u', self.m], check=True, timeout=20)


def as_user(uid, fn):
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            fn()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def keepid(d, fuse, pidfile):
    mnt = Mount(os.path.join(d, 'keepid'), fuse, pidfile, 'uidmapping=%s,gidmapping=%s' % (KEEPID, KEEPID))
    m = mnt.m
    shown = {0: 1, 1: 2, 1000: 0, 1001: 1001, 5000: 5000}
    p = []
    for i in OWNERS:
        p += check('f%d shown' % i, owner('%s/f%d' % (m, i)), (shown[i], shown[i]))
    report('keep-id: stored ids shown mapped', p)
    p = []
    with open(m + '/new', 'w') as f:
        f.write('x')
    p += check('new (made by root) shown', owner(m + '/new'), (0, 0))
    p += check('new stored', owner(mnt.upper('new')), (1000, 1000))
    os.mkdir(m + '/pub/x')
    os.chmod(m + '/pub/x', 0o777)
    rc = as_user(1001, lambda: open(m + '/pub/x/by1001', 'w').close())
    p += check('create as 1001', rc, 0)
    p += check('by1001 stored', owner(mnt.upper('pub/x/by1001')), (1001, 1001))
    os.chown(m + '/f5000', 1, 2)     # a copy-up, then the stored ids 0 and 1
    p += check('f5000 chowned to 1:2, stored', owner(mnt.upper('f5000')), (0, 1))
    os.chown(m + '/new', 65536, 65536)   # an id of the namespace outside the mapping: the overflow id
    p += check('new chowned outside the map, stored', owner(mnt.upper('new')), (65534, 65534))
    report('keep-id: creates and chowns store the caller\'s ids mapped back', p)
    mnt.umount()
    report('keep-id: fusermount3 -u', [])


def force_mask(d, fuse, pidfile):
    mnt = Mount(os.path.join(d, 'xperm'), fuse, pidfile, 'xattr_permissions=2')
    m = mnt.m
    p = []
    os.chown(m + '/f1000', 5, 6)
    os.chmod(m + '/f1000', 0o640)
    p += check('f1000 shown', (owner(m + '/f1000'), os.lstat(m + '/f1000').st_mode & 0o7777), ((5, 6), 0o640))
    p += check('f1000 stored owner (unchanged)', owner(mnt.upper('f1000')), (1000, 1000))
    p += check('f1000 override', os.getxattr(mnt.upper('f1000'), 'user.containers.override_stat'),
               b'5:6:0640:file')
    os.mkdir(m + '/dir')
    p += check('dir override', os.getxattr(mnt.upper('dir'), 'user.containers.override_stat'), b'0:0:0755:dir')
    os.setxattr(m + '/dir', 'security.test', b'v')
    p += check('security.* kept as user.*', os.getxattr(mnt.upper('dir'),
                                                         'user.containers.override_security.test'), b'v')
    p += check('security.* read back', os.getxattr(m + '/dir', 'security.test'), b'v')
    report('xattr_permissions=2: owners and modes in user.containers.override_stat', p)
    mnt.umount()
    # the next mount reads them back
    mnt2 = Mount(os.path.join(d, 'xperm2'), fuse, pidfile, 'xattr_permissions=2')
    mnt2.umount()
    report('xattr_permissions=2: fusermount3 -u', [])


def in_namespace(d, fuse, pidfile):
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER: daemons are ours to wait for
    try:
        keepid(d, fuse, pidfile)
        force_mask(d, fuse, pidfile)
    except Exception as e:
        report('namespace run', ['%s: %s' % (type(e).__name__, e)])
    return 0


def main():
    a = helper_args('dir')
    os.umask(0o022)
    d, idmap = os.path.realpath(a.dir), parse_map(a.map)
    lower = os.path.join(d, 'lower')
    os.makedirs(lower + '/pub')
    os.chmod(lower + '/pub', 0o1777)
    for i in OWNERS:
        with open('%s/f%d' % (lower, i), 'w') as f:
            f.write(str(i))
        os.chown('%s/f%d' % (lower, i), i, i)
    shift_tree(d, idmap, idmap)
    return run_in_userns(lambda: in_namespace(d, os.path.abspath(a.fuse), a.pidfile), idmap, idmap,
                         fuse_dev_for(d, idmap, idmap))


if __name__ == '__main__':
    sys.exit(main())
