#!/usr/bin/python3
"""Helper of tarball.sh: image-layer tarballs, applied the way containerd does.

  tarball_apply.py build DIR                 DIR/lower.tar (a base layer) and
                                             DIR/layer.tar (the layer on top)
  tarball_apply.py apply TAR DEST OUT.json   apply TAR under DEST (a plain dir
                                             or a mount); one result a member
  tarball_apply.py steps KERNEL.json [OURS.json [--whmode]]
                                             every step of ours succeeded
                                             and answered as the kernel's did
                                             (alone: every step of the kernel
                                             succeeded)
  tarball_apply.py view MNT OUT kernel|ours  the merged view (a pickle)
  tarball_apply.py upper DIR OUT kernel|ours a layer, whiteout and opaque
                                             spellings normalised (a pickle)
  tarball_apply.py compare A B [--problems] [--whmode]
                                             differences of two views, one a
                                             line (--problems: also B's readdir
                                             problems); exit 1 if any
  tarball_apply.py problems VIEW...          readdir d_ino/d_type problems
  tarball_apply.py atimes DIR OUT            access times under DIR (lstat only)
  tarball_apply.py unchanged BEFORE AFTER    what changed between two views
  tarball_apply.py expect VIEW               the view shows the layer's effects
  --whmode: ours ran with .wh. whiteouts: a whiteout of a name of 252..255
  bytes that a lower layer shows is refused (ENAMETOOLONG expected; a long
  name that only one of the two views shows is left out: mask_long).

Everything is stdlib; the views, their records and their comparison are
tests/diff/ovlview.py's (snapshot, upper_view, diff_views), the ACL values
tests/diff/ovlbuild.py's (encode_acl), imported.

The applier (apply) follows containerd's archive.Apply, member by member:
  * parents of a member that are missing are created (0755);
  * `DIR/.wh..wh..opq`: DIR is made opaque: every object under DIR that this
    tarball has not unpacked (yet) is removed (rm -rf);
  * `DIR/.wh.NAME`: DIR/NAME is removed (rm -rf; a missing NAME is fine);
  * otherwise an existing object at the path is removed (rm -rf) unless it
    and the member are both directories, then the member is created: mkdir
    (an existing directory is kept), a regular file (O_CREAT|O_TRUNC), mknod
    (char, block, fifo), link(2) (a hard link: to a member unpacked before or
    to an object of the lower layers), symlink(2); then lchown(uid, gid),
    lsetxattr of every PAX `SCHILY.xattr.NAME` record (user.*, POSIX ACLs),
    chmod (not for symlinks: after lchown, which clears set-id bits), and
    the times (atime = mtime, nanoseconds from a PAX mtime) with utimensat
    AT_SYMLINK_NOFOLLOW for every non-directory, symlinks included;
  * directory times are set last, in member order (creating children changes
    them).
A step that fails is recorded (`STEP: ERRNO`) and the member left as it is;
the others go on.
"""
import decimal, errno, hashlib, io, json, os, pickle, shutil, stat, struct, sys, tarfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "diff"))
sys.dont_write_bytecode = True
import ovlbuild  # noqa: E402  (encode_acl)
import ovlview  # noqa: E402  (the views and their comparison)

T0 = 1600000000             # layer times: 2020, long before any run
RECENT = time.time_ns() - 600 * 10**9   # later times show as `recent`
WH, OPQ = ".wh.", ".wh..wh..opq"
XATTR = "SCHILY.xattr."


# ------------------------------------------------------------------ building

def binstr(b):
    """A PAX value that is bytes: tarfile writes it back byte for byte."""
    return b.decode("utf-8", "surrogateescape")


def content(name, n):
    """Deterministic data of n bytes for a file name."""
    block = hashlib.sha256(name.encode()).digest() * 128
    return (block * (n // len(block) + 1))[:n]


class Tar:
    def __init__(self, path):
        self.tf = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def add(self, name, kind, mode, uid=0, gid=0, mtime=T0, data=b"", link="", dev=(0, 0), xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                   "link": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
                   "fifo": tarfile.FIFOTYPE}[kind]
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, mtime
        ti.uname = ti.gname = ""
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        ti.size = len(data) if kind == "file" else 0
        for k, v in (xattrs or {}).items():
            ti.pax_headers[XATTR + k] = binstr(v)
        self.tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)

    def close(self):
        self.tf.close()


ACL_FILE = ovlbuild.encode_acl(b"u::rw-,u:1000:rw-,g::r--,g:2000:r--,m::rw-,o::---")
ACL_LOWER = ovlbuild.encode_acl(b"u::rw-,u:33:r--,g::r--,m::r--,o::r--")
ACL_DEFAULT = ovlbuild.encode_acl(b"u::rwx,u:1000:rwx,g::r-x,m::rwx,o::r-x")


def build_lower(path):
    t = Tar(path)
    t.add("etc", "dir", 0o755, mtime=T0 + 10)
    t.add("etc/passwd", "file", 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n")
    t.add("etc/shadow", "file", 0o640, gid=42, data=b"root:*:18000:0:99999:7:::\n")
    t.add("etc/keep.conf", "file", 0o644, mtime=T0 + 11, data=b"keep\n", xattrs={"user.lower": b"1"})
    t.add("etc/lower-acl", "file", 0o644, data=b"acl in the lower\n",
          xattrs={"system.posix_acl_access": ACL_LOWER})
    t.add("bin", "dir", 0o755)
    t.add("bin/tool", "file", 0o755, data=content("tool", 5000))
    t.add("bin/tool-link", "link", 0o755, link="bin/tool")
    t.add("usr", "dir", 0o755)
    t.add("usr/lib", "dir", 0o755, mtime=T0 + 12)
    t.add("usr/lib/libx.so.1", "file", 0o644, data=content("libx1", 3000))
    t.add("usr/lib/libx.so", "symlink", 0o777, mtime=T0 + 13, link="libx.so.1")
    t.add("usr/lib/libold.so", "symlink", 0o777, link="libx.so.1")
    t.add("var", "dir", 0o755)
    t.add("var/cache", "dir", 0o755)
    t.add("var/cache/a", "file", 0o644, data=b"a\n")
    t.add("var/cache/sub", "dir", 0o700, uid=33, gid=33)
    t.add("var/cache/sub/b", "file", 0o600, uid=33, gid=33, data=b"b\n")
    t.add("var/cache/sub/deeper", "dir", 0o755)
    t.add("var/cache/sub/deeper/c", "file", 0o644, data=b"c\n")
    t.add("var/cache/sub/deeper/fifo", "fifo", 0o644)
    t.add("var/log", "dir", 0o755)
    t.add("var/log/keep.log", "file", 0o644, data=b"log\n")
    t.add("opq", "dir", 0o755, mtime=T0 + 14)
    t.add("opq/old1", "file", 0o644, data=b"old1\n")
    t.add("opq/keepme", "file", 0o644, data=b"lower keepme\n")
    t.add("opq/olddir", "dir", 0o755)
    t.add("opq/olddir/x", "file", 0o644, data=b"x\n")
    t.add("opq/oldlink", "symlink", 0o777, link="old1")
    t.add("rm_file", "file", 0o644, data=b"to be deleted\n")
    t.add("replace_file", "file", 0o644, data=b"lower version\n")
    t.add("file2dir", "file", 0o644, data=b"a file in the lower\n")
    t.add("dir2file", "dir", 0o755)
    t.add("dir2file/a", "file", 0o644, data=b"a\n")
    t.add("dir2file/sub", "dir", 0o755)
    t.add("dir2file/sub/b", "file", 0o644, data=b"b\n")
    t.add("lower_target", "file", 0o640, uid=1000, gid=1000, mtime=T0 + 15,
          data=content("lower_target", 300000))
    t.add("home", "dir", 0o755)
    t.add("home/user", "dir", 0o750, uid=1000, gid=1000)
    t.add("home/user/.bashrc", "file", 0o644, uid=1000, gid=1000, data=b"# bashrc\n")
    t.add("srv", "dir", 0o755, xattrs={"system.posix_acl_default": ACL_DEFAULT})
    t.add("srv/old", "file", 0o644, data=b"old\n")
    t.add("lib", "dir", 0o755)                  # usrmerge: becomes a symlink
    t.add("lib/libc.so.6", "file", 0o755, data=content("libc", 9000))
    t.add("lib/modules", "dir", 0o755)
    t.add("lib/modules/m.ko", "file", 0o644, data=b"ko\n")
    t.add("sbin", "symlink", 0o777, link="bin")  # becomes a directory
    t.add("names", "dir", 0o755)
    t.add("names/" + "l" * 250, "file", 0o644, data=b"250\n")
    t.add("names/" + "L" * 255, "file", 0o644, data=b"255\n")
    t.add("names/caf\u00e9 \u00fc\u00f1\u00ef", "file", 0o644, data=b"utf-8\n")
    t.close()


def build_layer(path):
    t = Tar(path)
    # an existing directory: merged, its metadata changed
    t.add("etc", "dir", 0o755, mtime=T0 + 1000)
    t.add("etc/passwd", "file", 0o644, mtime=T0 + 1001,
          data=b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    t.add("etc/new.conf", "file", 0o600, uid=1000, gid=1000, mtime=T0 + 1002, data=b"new\n",
          xattrs={"user.foo": b"bar", "user.bin": b"\x00\x01\xfe\xff"})
    t.add("etc/acl.conf", "file", 0o660, mtime=T0 + 1003, data=b"with an ACL\n",
          xattrs={"system.posix_acl_access": ACL_FILE, "user.a": b"1"})
    t.add("etc/locked", "file", 0o000, uid=1000, gid=1000, data=b"mode 0\n")
    t.add("etc/empty", "file", 0o644, mtime=T0 + 1004.5)
    # whiteouts: a file, a symlink, a whole tree, a name that does not exist
    t.add(".wh.rm_file", "file", 0o644)
    t.add("usr/lib/.wh.libold.so", "file", 0o644)
    t.add("var/.wh.cache", "file", 0o644)
    t.add(".wh.never_existed", "file", 0o644)
    # an opaque directory: the lower children go, keepme comes back
    t.add("opq", "dir", 0o750, uid=33, gid=33, mtime=T0 + 1010)
    t.add("opq/.wh..wh..opq", "file", 0o644)
    t.add("opq/keepme", "file", 0o644, mtime=T0 + 1011, data=b"layer keepme\n")
    t.add("opq/newdir", "dir", 0o755, mtime=T0 + 1012)
    t.add("opq/newdir/f", "file", 0o644, data=b"f\n")
    # replaced: a file by a file, a file by a dir, a dir by a file, one name
    # of a lower hard-linked pair, a symlink by a symlink
    t.add("replace_file", "file", 0o600, uid=1000, gid=100, mtime=T0 + 1020, data=b"layer version\n")
    t.add("file2dir", "dir", 0o755, mtime=T0 + 1021)
    t.add("file2dir/child", "file", 0o644, data=b"child\n")
    t.add("dir2file", "file", 0o644, mtime=T0 + 1022, data=b"was a dir\n")
    t.add("bin", "dir", 0o755, mtime=T0 + 1030)
    t.add("bin/tool", "file", 0o755, mtime=T0 + 1031, data=content("tool v2", 7000))
    t.add("usr/lib/libx.so.2", "file", 0o644, data=content("libx2", 4000))
    t.add("usr/lib/libx.so", "symlink", 0o777, uid=1000, gid=1000, mtime=T0 + 1040.25, link="libx.so.2")
    # special files and set-id bits
    t.add("dev", "dir", 0o755)
    t.add("dev/null", "char", 0o666, dev=(1, 3), mtime=T0 + 1050)
    t.add("dev/tty1", "char", 0o620, gid=5, dev=(4, 1))
    t.add("dev/sda", "block", 0o660, gid=6, dev=(8, 0), mtime=T0 + 1051)
    t.add("dev/initctl", "fifo", 0o600, uid=1000, gid=1000, mtime=T0 + 1052)
    t.add("bin/new", "file", 0o4755, mtime=T0 + 1060, data=content("new", 20000))
    t.add("bin/sg", "file", 0o2755, uid=1000, gid=50, data=b"#!/bin/sh\n")
    # hard links: to a member of this layer, to a lower file, to a symlink
    t.add("bin/new-hl", "link", 0o4755, mtime=T0 + 1060, link="bin/new")
    t.add("lower-hl", "link", 0o640, uid=1000, gid=1000, mtime=T0 + 15, link="lower_target")
    t.add("usr/lib/libx.so.hl", "link", 0o777, uid=1000, gid=1000, mtime=T0 + 1040.25,
          link="usr/lib/libx.so")
    # symlinks with their own owners and times
    t.add("usr/share", "dir", 0o755)
    t.add("usr/share/dangling", "symlink", 0o777, mtime=T0 + 1070, link="/nonexistent/path")
    t.add("usr/share/abs", "symlink", 0o777, uid=33, gid=33, mtime=T0 + 1071, link="/etc/passwd")
    t.add("usr/share/dirlink", "symlink", 0o777, mtime=T0 + 1072, link="../lib")
    # owners, xattrs on directories, a default ACL inherited by a new file
    t.add("home/user", "dir", 0o750, uid=1000, gid=1000, mtime=T0 + 1080,
          xattrs={"user.dir": b"yes"})
    t.add("home/user/.profile", "file", 0o644, uid=1000, gid=1000, data=b"# profile\n")
    t.add("srv/new", "file", 0o640, mtime=T0 + 1090, data=b"inherits the default ACL\n")
    t.add("tmp", "dir", 0o1777, mtime=T0 + 1100)
    # file capabilities (iputils' ping: cap_net_raw=ep, VFS_CAP_REVISION_2)
    t.add("bin/ping", "file", 0o755, mtime=T0 + 1110, data=content("ping", 6000),
          xattrs={"security.capability": struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)})
    # a file replacing a lower file with an ACL and one with a user xattr:
    # the old xattrs must not survive
    t.add("etc/lower-acl", "file", 0o644, mtime=T0 + 1120, data=b"no ACL now\n")
    t.add("etc/keep.conf", "file", 0o644, mtime=T0 + 1121, data=b"no xattr now\n")
    # usrmerge: a directory replaced by a symlink, a symlink by a directory
    t.add("lib", "symlink", 0o777, mtime=T0 + 1130, link="usr/lib")
    t.add("sbin", "dir", 0o755, mtime=T0 + 1131)
    t.add("sbin/init", "file", 0o755, data=b"init\n")
    # names: whiteouts of a 250-byte and a 255-byte name (the .wh. form of
    # the latter is too long), a UTF-8 name with blanks replaced
    t.add("names/.wh." + "l" * 250, "file", 0o644)
    t.add("names/.wh." + "L" * 255, "file", 0o644)
    t.add("names/caf\u00e9 \u00fc\u00f1\u00ef", "file", 0o600, mtime=T0 + 1140, data=b"replaced\n")
    t.add("names/" + "n" * 255, "file", 0o644, mtime=T0 + 1141, data=b"new 255\n")
    t.add("new/deep/tree", "dir", 0o755)   # parents missing: created 0755
    t.add("new/deep/tree/file", "file", 0o644, data=b"deep\n")
    t.close()


def build(d):
    build_lower(os.path.join(d, "lower.tar"))
    build_layer(os.path.join(d, "layer.tar"))
    return 0


# ------------------------------------------------------------------ applying

def remove_all(p):
    """os.RemoveAll: nothing there is fine."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def mtime_ns(m):
    v = m.pax_headers.get("mtime")
    if v is not None:
        return int(decimal.Decimal(v) * 10**9)
    return int(m.mtime) * 10**9


def apply(tar, dest, out):
    os.umask(0)
    results, unpacked, dirs = [], set(), []
    step = [""]

    def opaque(d, rel):
        for n in sorted(os.listdir(d)):
            crel = os.path.join(rel, n) if rel else n
            cp = os.path.join(d, n)
            if crel not in unpacked:
                step[0] = "rm -rf " + crel
                remove_all(cp)
            elif os.path.isdir(cp) and not os.path.islink(cp):
                opaque(cp, crel)

    def member(tf, m, rel):
        p = os.path.join(dest, rel)
        parent, base = os.path.split(rel)
        ppath = os.path.join(dest, parent)
        step[0] = "parents"
        if not os.path.lexists(ppath):
            os.makedirs(ppath, 0o755)
        if base == OPQ:
            opaque(ppath, parent)
            return
        if base.startswith(WH):
            step[0] = "rm -rf"
            remove_all(os.path.join(ppath, base[len(WH):]))
            return
        step[0] = "rm -rf (replace)"
        try:
            st = os.lstat(p)
            if not (stat.S_ISDIR(st.st_mode) and m.isdir()):
                remove_all(p)
        except FileNotFoundError:
            pass
        mode = m.mode & 0o7777
        step[0] = "create"
        if m.isdir():
            if not os.path.isdir(p):
                os.mkdir(p, mode)
        elif m.isreg():
            data = tf.extractfile(m).read()
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        elif m.ischr() or m.isblk():
            t = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(p, t | mode, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mknod(p, stat.S_IFIFO | mode)
        elif m.islnk():
            os.link(os.path.join(dest, m.linkname), p, follow_symlinks=False)
        elif m.issym():
            os.symlink(m.linkname, p)
        else:
            raise OSError(errno.EINVAL, "unsupported member type %r" % m.type)
        unpacked.add(rel)
        step[0] = "lchown"
        os.lchown(p, m.uid, m.gid)
        for k in sorted(m.pax_headers):
            if k.startswith(XATTR):
                step[0] = "setxattr " + k[len(XATTR):]
                os.setxattr(p, k[len(XATTR):], m.pax_headers[k].encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
        if not m.issym() and not (m.islnk() and os.path.islink(p)):
            step[0] = "chmod"
            os.chmod(p, mode)
        if m.isdir():
            dirs.append((rel, mtime_ns(m)))
        else:
            step[0] = "utimes"
            t = mtime_ns(m)
            os.utime(p, ns=(t, t), follow_symlinks=False)

    with tarfile.open(tar) as tf:
        for m in tf:
            rel = os.path.normpath(m.name.lstrip("/"))
            try:
                member(tf, m, rel)
                results.append([m.name, "ok"])
            except OSError as e:
                results.append([m.name, "%s: %s" % (step[0], ovlview.ename(e))])
    for rel, t in dirs:
        try:
            os.utime(os.path.join(dest, rel), ns=(t, t), follow_symlinks=False)
            results.append(["utimes " + rel, "ok"])
        except OSError as e:
            results.append(["utimes " + rel, ovlview.ename(e)])
    with open(out, "w") as f:
        json.dump(results, f, indent=0)
    for name, r in results:
        if r != "ok":
            print("%s: %s" % (name, r))
    return 0


def long_name(path):
    """A path with a name of 252..255 bytes."""
    return any(len(c) > 251 for c in os.fsencode(path).split(b"/"))


def long_whiteout(path):
    """A whiteout of a name of 252..255 bytes: in the .wh. whiteout mode ours
    refuses to delete a lower one (ENAMETOOLONG: `.wh.NAME` could not exist;
    the difference tests/diff scenarios spell `ours_whmode=ENAMETOOLONG`)."""
    return any(c.startswith(b".wh.") and len(c) - len(WH) > 251 for c in os.fsencode(path).split(b"/"))


def steps(kernel, ours=None, whmode=False):
    """ours=None: every step on the kernel succeeded."""
    k = json.load(open(kernel))
    if ours is None:
        out = ["%s: %s" % (n, r) for n, r in k if r != "ok"]
        for l in out:
            print(l)
        return 1 if out else 0
    o = json.load(open(ours))
    out = []
    for (kn, kr), (on, orr) in zip(k, o):
        if kn != on:
            out.append("step order differs: %s vs %s" % (kn, on))
            break
        if whmode and long_whiteout(kn):
            if not orr.endswith(": ENAMETOOLONG"):
                out.append("%s: kernel=%s ours=%s (expected ENAMETOOLONG in the .wh. mode)" % (kn, kr, orr))
        elif orr != "ok" or kr != orr:
            out.append("%s: kernel=%s ours=%s" % (kn, kr, orr))
    if len(k) != len(o):
        out.append("%d steps on the kernel, %d on ours" % (len(k), len(o)))
    for l in out:
        print(l)
    return 1 if out else 0


# ------------------------------------------------------------------ views

def save(obj, out):
    with open(out, "wb") as f:
        pickle.dump(obj, f)


def load(p):
    with open(p, "rb") as f:
        return pickle.load(f)


def view(mnt, out, kind):
    """The merged view (ovlview.snapshot), mtimes of directories included
    (the applier sets them last; a copy-up must not change a parent's)."""
    v, problems = ovlview.snapshot(os.fsencode(mnt), kind == "ours", RECENT)
    save({"view": v, "problems": problems}, out)
    return 0


def atimes(d, out):
    """Access times under d: lstat, and directories listed with O_NOATIME
    (reading would change them)."""
    v = {}

    def walk(rel):
        p = ovlview.jp(os.fsencode(d), rel)
        st = os.lstat(p)
        v[rel] = {"atime": st.st_atime_ns}
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME)
            try:
                names = sorted(os.fsencode(n) for n in os.listdir(fd))
            finally:
                os.close(fd)
            for n in names:
                walk(rel + b"/" + n if rel else n)

    walk(b"")
    save({"view": v, "problems": []}, out)
    return 0


def unchanged(a, b):
    """What changed from view a (before) to view b (after)."""
    out = []
    for d in ovlview.diff_views(load(a)["view"], load(b)["view"], "x"):
        d = d.split(": ", 1)[1]
        d = d.replace(": missing on ours", ": gone").replace(": extra on ours", ": new")
        out.append(d.replace(" kernel=", " before=", 1).replace(" ours=", " after=", 1))
    for l in out:
        print(l)
    return 1 if out else 0


def upper(d, out, kind):
    save({"view": ovlview.upper_view(os.fsencode(d), kind == "kernel", RECENT), "problems": []}, out)
    return 0


def mask_long(v, other):
    """v without the long-named paths (and listed names) that other lacks:
    the lower name a refused long whiteout leaves (or the kernel's whiteout)."""
    out = {}
    for p, r in v.items():
        if long_name(p) and p not in other:
            continue
        if isinstance(r.get("list"), tuple):
            theirs = other.get(p, {}).get("list") or ()
            r = dict(r, list=tuple(n for n in r["list"] if not long_name(n) or n in theirs))
        out[p] = r
    return out


def compare(a, b, problems, mask=False):
    A, B = load(a), load(b)
    if mask:
        A["view"], B["view"] = mask_long(A["view"], B["view"]), mask_long(B["view"], A["view"])
    out = [d.split(": ", 1)[1] for d in ovlview.diff_views(A["view"], B["view"], "x")]
    if problems:
        out += B["problems"]
    for l in out:
        print(l)
    return 1 if out else 0


def show_problems(files):
    out = []
    for f in files:
        out += load(f)["problems"]
    for l in out:
        print(l)
    return 1 if out else 0


def expect(f):
    """The layer did what it says on the kernel: guards against a test that
    passes because nothing happened."""
    v = load(f)["view"]
    out = []

    def want(cond, what):
        if not cond:
            out.append("expected: " + what)

    g = lambda p, k=None: v.get(p, {}) if k is None else v.get(p, {}).get(k)
    for gone in (b"rm_file", b"var/cache", b"usr/lib/libold.so", b"opq/old1", b"opq/olddir"):
        want(gone not in v, "%s removed" % gone.decode())
    want(g(b"var/log/keep.log", "type") == "file", "var/log/keep.log kept")
    want(g(b"opq", "list") == (b"keepme", b"newdir"), "opq holds keepme and newdir only")
    want(g(b"opq", "owner") == "33:33" and g(b"opq", "mode") == "0750", "opq 0750 33:33")
    want(g(b"file2dir", "type") == "dir" and g(b"dir2file", "type") == "file", "file2dir/dir2file swapped")
    want(g(b"dir2file/a") == {}, "dir2file/a gone")
    want(g(b"usr/lib/libx.so", "target") == b"libx.so.2", "libx.so -> libx.so.2")
    want(g(b"usr/lib/libx.so", "mtime") == (T0 + 1040) * 10**9 + 250000000, "libx.so mtime .25")
    want(g(b"usr/lib/libx.so", "owner") == "1000:1000", "libx.so owned by 1000:1000")
    want(g(b"usr/share/dangling", "mtime") == (T0 + 1070) * 10**9, "dangling symlink mtime")
    want(b"bin/new-hl" in (g(b"bin/new", "same-inode-as") or ()), "bin/new-hl linked to bin/new")
    want(b"lower-hl" in (g(b"lower_target", "same-inode-as") or ()), "lower-hl linked to lower_target")
    want(b"usr/lib/libx.so.hl" in (g(b"usr/lib/libx.so", "same-inode-as") or ()), "symlink hard link")
    want(g(b"bin/new", "mode") == "4755", "bin/new 4755")
    want(g(b"bin/sg", "mode") == "2755" and g(b"bin/sg", "owner") == "1000:50", "bin/sg 2755 1000:50")
    want(g(b"dev/null", "rdev") == "1:3" and g(b"dev/sda", "type") == "blockdev", "devices")
    want(g(b"dev/initctl", "type") == "fifo", "fifo")
    xs = dict(g(b"etc/new.conf", "xattrs") or ())
    want(xs.get("user.foo") == b"bar" and xs.get("user.bin") == b"\x00\x01\xfe\xff", "user xattrs")
    xs = dict(g(b"etc/acl.conf", "xattrs") or ())
    want("system.posix_acl_access" in xs, "etc/acl.conf has an access ACL")
    xs = dict(g(b"srv/new", "xattrs") or ())
    want("system.posix_acl_access" in xs, "srv/new inherited an ACL")
    want(g(b"etc/empty", "mtime") == (T0 + 1004) * 10**9 + 500000000, "etc/empty mtime .5")
    want(g(b"new/deep/tree/file", "type") == "file", "missing parents created")
    want(g(b"bin/tool-link", "sha") != g(b"bin/tool", "sha"), "bin/tool replaced, bin/tool-link not")
    xs = dict(g(b"bin/ping", "xattrs") or ())
    want("security.capability" in xs, "bin/ping has file capabilities")
    want(g(b"etc/lower-acl", "xattrs") == () and g(b"etc/keep.conf", "xattrs") == (),
         "replaced files lost their lower xattrs")
    want(g(b"lib", "target") == b"usr/lib" and g(b"sbin", "list") == (b"init",), "usrmerge")
    want(g(b"names", "list") == ("caf\u00e9 \u00fc\u00f1\u00ef".encode(), b"n" * 255), "names/ whiteouts")
    for l in out:
        print(l)
    return 1 if out else 0


def main():
    a = sys.argv[1:]
    cmds = {
        ("build", 2): lambda: build(a[1]),
        ("apply", 4): lambda: apply(a[1], a[2], a[3]),
        ("steps", 2): lambda: steps(a[1]),
        ("steps", 3): lambda: steps(a[1], a[2], "--whmode" in opts),
        ("view", 4): lambda: view(a[1], a[2], a[3]),
        ("upper", 4): lambda: upper(a[1], a[2], a[3]),
        ("compare", 3): lambda: compare(a[1], a[2], "--problems" in opts, "--whmode" in opts),
        ("expect", 2): lambda: expect(a[1]),
        ("atimes", 3): lambda: atimes(a[1], a[2]),
        ("unchanged", 3): lambda: unchanged(a[1], a[2]),
    }
    if a[:1] == ["problems"] and len(a) > 1:
        return show_problems(a[1:])
    opts = [o for o in a if o in ("--whmode", "--problems")]
    a = [o for o in a if o not in opts]
    fn = cmds.get((a[0] if a else "", len(a)))
    if fn is None or (a[0] == "view" or a[0] == "upper") and a[3] not in ("kernel", "ours"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return fn()


if __name__ == "__main__":
    sys.exit(main())
