#!/usr/bin/env python3
"""Owners across a mount, for identity.sh: the same layer, the same steps on
our mount and on 1.10's (or on the kernel's idmapped view), and what each
shows and stores.

  identity_view.py build LOWER        a lower layer with objects of many owners,
                                      an ACL and a v3 file capability
  identity_view.py steps MNT          creates, chowns, copy-ups and ACL changes
                                      through the mount, as several callers;
                                      prints one line a step (OK or the errno)
  identity_view.py view MNT           owner, group and mode of every name as the
                                      mount shows them, by stat and by listing
  identity_view.py disk UPPER         the same for the upper layer on disk
  identity_view.py xattrs ROOT        the ids inside ACL and capability xattrs
                                      of the names built in LOWER
"""
import errno
import os
import stat
import struct
import sys

# on-disk owners of the lower objects: mapped, at range edges, unmapped
OWNERS = [(0, 0), (1, 1), (1000, 1000), (1001, 1001), (1002, 1002), (5000, 50), (65535, 65535),
          (70000, 70000), (100000, 100000)]
ACL_USER, ACL_GROUP = 0x02, 0x08


def acl_value(entries):
    """A POSIX ACL xattr value from (tag, perm, id) triples."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def acl_ids(value):
    ver, = struct.unpack_from("<I", value)
    out = []
    for off in range(4, len(value), 8):
        tag, _, ident = struct.unpack_from("<HHI", value, off)
        if tag in (ACL_USER, ACL_GROUP):
            out.append("%s:%d" % ("u" if tag == ACL_USER else "g", ident))
    return "v%d %s" % (ver, " ".join(out))


def build(lower):
    os.makedirs(lower + "/pub", exist_ok=True)
    os.chmod(lower + "/pub", 0o1777)
    for uid, gid in OWNERS:
        for kind in ("f", "d", "l"):
            p = "%s/%s%d" % (lower, kind, uid)
            if kind == "f":
                with open(p, "w") as f:
                    f.write("data %d\n" % uid)
            elif kind == "d":
                os.mkdir(p)
                with open(p + "/inner", "w") as f:
                    f.write("x")
                os.chown(p + "/inner", uid, gid)
            else:
                os.symlink("f%d" % uid, p)
            os.chown(p, uid, gid, follow_symlinks=False)
    # ACL: a user and a group entry inside the map, one outside it
    with open(lower + "/acl", "w") as f:
        f.write("acl\n")
    acl = acl_value([(0x01, 6, 0xffffffff), (ACL_USER, 6, 1000), (ACL_USER, 4, 70000), (0x04, 4, 0xffffffff),
                     (ACL_GROUP, 4, 50), (0x10, 6, 0xffffffff), (0x20, 4, 0xffffffff)])
    os.setxattr(lower + "/acl", "system.posix_acl_access", acl)
    os.mkdir(lower + "/dacl")
    os.setxattr(lower + "/dacl", "system.posix_acl_default", acl)
    # a v3 file capability (cap_net_bind_service) whose root is disk uid 1000
    with open(lower + "/cap", "w") as f:
        f.write("cap\n")
    os.chmod(lower + "/cap", 0o755)
    os.setxattr(lower + "/cap", "security.capability",
                struct.pack("<IIIIII", 0x03000000 | 1, 1 << 10, 0, 0, 0, 1000))


def as_user(uid, gid, fn):
    """Runs fn() in a child with the given ids; returns its errno (0: fine)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o022)
            fn()
        except OSError as e:
            code = e.errno or 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def step(name, fn, uid=0, gid=0):
    res = as_user(uid, gid, fn)
    print("%s: %s" % (name, "OK" if res == 0 else errno.errorcode.get(res, str(res))))


def steps(m):
    def create(p):
        return lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    callers = [(0, 0), (1, 1), (1001, 1001), (1002, 50), (65535, 65535), (70000, 70000)]
    for uid, gid in callers:
        d = "%s/pub/by%d" % (m, uid)
        step("mkdir as %d" % uid, lambda d=d: os.mkdir(d, 0o755), uid, gid)
        step("create as %d" % uid, create(d + "/file"), uid, gid)
        step("mkfifo as %d" % uid, lambda d=d: os.mkfifo(d + "/fifo"), uid, gid)
        step("symlink as %d" % uid, lambda d=d: os.symlink("file", d + "/sym"), uid, gid)
        step("link as %d" % uid, lambda d=d: os.link(d + "/file", d + "/hard"), uid, gid)
    # chown as root: mapped ids, range edges, unmapped ones; a lower file
    # (copied up first), a new one, a symlink and a directory
    step("create new", create(m + "/new"))
    for target in ("f1000", "new", "l1000", "d1000"):
        for uid, gid in [(0, 0), (1, 1), (1001, 1001), (5, 6), (65534, 65534), (99999, 99999)]:
            step("chown %s %d:%d" % (target, uid, gid),
                 lambda t=target, u=uid, g=gid: os.chown("%s/%s" % (m, t), u, g, follow_symlinks=False))
    # copy-ups that keep the owner: chmod, a write, an xattr, a rename
    step("chmod f1001", lambda: os.chmod(m + "/f1001", 0o600))
    step("append f70000", lambda: open(m + "/f70000", "a").write("more"))
    step("setxattr d5000", lambda: os.setxattr(m + "/d5000", "user.k", b"v"))
    step("touch d1002/inner", lambda: os.utime(m + "/d1002/inner"))
    step("rename f0", lambda: os.rename(m + "/f0", m + "/f0.moved"))
    step("touch cap", lambda: os.utime(m + "/cap"))  # a copy-up keeps the capability as stored
    # an ACL set through the mount: its ids are stored mapped to disk
    acl = acl_value([(0x01, 6, 0xffffffff), (ACL_USER, 6, 1001), (0x04, 4, 0xffffffff), (ACL_GROUP, 4, 1),
                     (0x10, 6, 0xffffffff), (0x20, 4, 0xffffffff)])
    step("setfacl new", lambda: os.setxattr(m + "/new", "system.posix_acl_access", acl))
    step("create in dacl", create(m + "/dacl/child"))


def owners(st):
    return "%s %d:%d %o" % (stat.filemode(st.st_mode)[0], st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def walk(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield os.path.join(dirpath, name)


def view(m):
    for p in walk(m):
        rel = os.path.relpath(p, m)
        print("%s stat %s" % (rel, owners(os.lstat(p))))
    # the same through listings with attributes (READDIRPLUS)
    for dirpath in [m] + [p for p in walk(m) if os.path.isdir(p) and not os.path.islink(p)]:
        with os.scandir(dirpath) as it:
            for e in sorted(it, key=lambda e: e.name):
                st = e.stat(follow_symlinks=False)
                print("%s list %s" % (os.path.relpath(e.path, m), owners(st)))


def disk(upper):
    for p in walk(upper):
        st = os.lstat(p)
        if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or p.endswith("/.wh..wh..opq"):
            continue  # whiteouts and 1.10's opaque markers: no owner of interest
        print("%s %s" % (os.path.relpath(p, upper), owners(st)))


def xattrs(root):
    for name, key in (("acl", "system.posix_acl_access"), ("dacl", "system.posix_acl_default"),
                      ("new", "system.posix_acl_access"), ("dacl/child", "system.posix_acl_access")):
        try:
            print("%s %s %s" % (name, key, acl_ids(os.getxattr("%s/%s" % (root, name), key))))
        except OSError as e:
            print("%s %s %s" % (name, key, errno.errorcode[e.errno]))
    try:
        v = os.getxattr(root + "/cap", "security.capability")
        magic, = struct.unpack_from("<I", v)
        rootid = struct.unpack_from("<I", v, 20)[0] if len(v) == 24 else None
        print("cap security.capability rev %d rootid %s" % (magic >> 24, rootid))
    except OSError as e:
        print("cap security.capability %s" % errno.errorcode[e.errno])


if __name__ == "__main__":
    cmd, arg = sys.argv[1], sys.argv[2]
    {"build": build, "steps": steps, "view": view, "disk": disk, "xattrs": xattrs}[cmd](arg)
