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
  identity_view.py override DIR KIND  a layer whose objects keep owner, mode
                                      and type in override_stat xattrs (KIND:
                                      privileged, containers or user), with
                                      one malformed value
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


def override_layer_name(kind):
    return OVERRIDE_XATTRS[kind[8:] if kind.startswith("hostile-") else kind]


OVERRIDE_XATTRS = {"privileged": "security.fuseoverlayfs.override_stat",
                   "containers": "user.containers.override_stat",
                   "user": "user.fuseoverlayfs.override_stat"}


def override(d, kind):
    name = override_layer_name(kind)
    os.makedirs(d, exist_ok=True)
    os.setxattr(d, name, b"0:0:0755:dir")
    objs = [("o_suid", "1000:1000:04750:file"), ("o_old", "7:8:640"), ("o_dev", "0:0:0660:char-1-3"),
            ("o_fifo", "1001:1001:0600:pipe")]
    if kind.startswith("hostile-"):  # 1.10 fails on these (its stat errs)
        name = OVERRIDE_XATTRS[kind[8:]]
        objs += [("o_plain", None), ("o_bad", "0:0:99999:file"), ("o_long", "1:1:0644:file" + "x" * 80), ("o_nul", "1:1\0:0644"),
                 ("o_type", "1:1:0644:door"), ("o_neg", "-1:0:0644")]
    for n, v in objs:
        with open(os.path.join(d, n), "w") as f:
            f.write(n + "\n")
        if v:
            os.setxattr(os.path.join(d, n), name, v.encode())
    os.mkdir(d + "/o_dir")
    os.setxattr(d + "/o_dir", name, b"5:6:0700")
    with open(d + "/o_dir/inner", "w") as f:
        f.write("inner\n")
    os.setxattr(d + "/o_dir/inner", name, b"65535:65535:0444:file")


def stored_override(p):
    """The override on disk, whatever its name, as uid:gid:mode[:type]."""
    for name in OVERRIDE_XATTRS.values():
        try:
            v = os.getxattr(p, name, follow_symlinks=False).decode()
        except OSError:
            continue
        parts = v.split(":")
        mode = int(parts[2], 8)
        typ = parts[3] if len(parts) > 3 else None
        if mode > 0o7777:  # type bits inside the mode (1.10 writes them so)
            typ = {0o040000: "dir", 0o100000: "file"}.get(mode & 0o170000, "?")
            mode &= 0o7777
        st = os.lstat(p)
        if typ == {stat.S_IFDIR: "dir", stat.S_IFREG: "file"}.get(stat.S_IFMT(st.st_mode)):
            typ = None
        return " ovr=%s:%s:%o%s" % (parts[0], parts[1], mode, ":" + typ if typ else "")
    return ""


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

def steps_override(m):
    """The steps on objects whose owner and mode are overrides."""
    def create(p):
        return lambda: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
    if True:
        step("chmod o_suid", lambda: os.chmod(m + "/o_suid", 0o700))
        step("chown o_old", lambda: os.chown(m + "/o_old", 11, 12))
        step("chown o_dir", lambda: os.chown(m + "/o_dir", 13, 14))
        step("chmod o_dir/inner", lambda: os.chmod(m + "/o_dir/inner", 0o600))
        step("touch o_dev", lambda: os.utime(m + "/o_dev"))
        for uid, gid in [(0, 0), (1001, 1001)]:
            step("create as %d" % uid, create("%s/pub/o_new%d" % (m, uid)), uid, gid)
            step("mkdir as %d" % uid, lambda u=uid: os.mkdir("%s/pub/o_newdir%d" % (m, u), 0o750), uid, gid)
        step("chown o_new0", lambda: os.chown(m + "/pub/o_new0", 21, 22))


def owners(st):
    return "%s %d:%d %o" % (stat.filemode(st.st_mode)[0], st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def walk(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield os.path.join(dirpath, name)


def view(m, only=None):
    for p in walk(m):
        if only and not os.path.basename(p).startswith(only):
            continue
        rel = os.path.relpath(p, m)
        print("%s stat %s" % (rel, owners(os.lstat(p))))
    # the same through listings with attributes (READDIRPLUS)
    for dirpath in [m] + [p for p in walk(m) if os.path.isdir(p) and not os.path.islink(p)]:
        with os.scandir(dirpath) as it:
            for e in sorted(it, key=lambda e: e.name):
                if only and not e.name.startswith(only):
                    continue
                st = e.stat(follow_symlinks=False)
                print("%s list %s" % (os.path.relpath(e.path, m), owners(st)))


def disk(upper, only=None):
    for p in walk(upper):
        if only and not os.path.basename(p).startswith(only):
            continue
        st = os.lstat(p)
        if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or p.endswith("/.wh..wh..opq"):
            continue  # whiteouts and 1.10's opaque markers: no owner of interest
        print("%s %s%s" % (os.path.relpath(p, upper), owners(st), stored_override(p)))


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
    if cmd == "override":
        override(arg, sys.argv[3])
    elif cmd == "steps-override":
        steps_override(arg)
    elif cmd in ("view-override", "disk-override"):
        (view if cmd == "view-override" else disk)(arg, "o_")
    else:
        {"build": build, "steps": steps, "view": view, "disk": disk, "xattrs": xattrs}[cmd](arg)
