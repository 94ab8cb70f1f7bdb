#!/usr/bin/python3
"""Helper of roundtrip.sh: the lower layer, the scripted changes, merged views.

  roundtrip_view.py build LOWER
  roundtrip_view.py script MNT RESULT.json     run the changes, one result a step
  roundtrip_view.py view MNT OUT.json          snapshot of the merged view
  roundtrip_view.py compare A.json B.json [--mask-wh] [--mask-ref-lookup]
                                               differences, one a line; exit 1 if any
  roundtrip_view.py copy SRC DST               copy an upper layer faithfully

A view: for every path (lstat, never following symlinks) type, mode, uid, gid,
size (not of directories), sha256 of regular files, symlink target, user.*
xattrs (not the internal user.overlay.* / user.fuseoverlayfs.*), the sorted
listing of directories, which names share an inode (hard links), and lstat
of every name the script touched (PROBES), so a name that lookup finds but
readdir hides (or the reverse) shows.  --mask-wh leaves out names starting
with `.wh.` (1.10 writes `.wh..wh..opq` files, the kernel shows them).
--mask-ref-lookup leaves out the probes of names that view A (1.10's) finds
by lstat although the parent's listing lacks them (1.10's known defect: after
`rm -rf d; mkdir d` the old lower children stay reachable by name).
"""
import errno, hashlib, json, os, stat, sys

INTERNAL_XATTR = ("user.overlay.", "user.fuseoverlayfs.")


def build(lower):
    def f(p, data, mode=0o644):
        full = os.path.join(lower, p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(data)
        os.chmod(full, mode)

    for n in ("f_keep", "f_keep2", "f_mod", "f_trunc", "f_del", "f_chmod", "f_chown", "f_ren",
              "f_hl", "f_recreate", "f_over", "f_todir", "f_tr2", "f_a", "f_b"):
        f(n, ("lower %s\n" % n).encode() * 50)
    f("f_xattr", b"xattrs\n")
    os.setxattr(os.path.join(lower, "f_xattr"), "user.a", b"1")
    os.symlink("f_keep", os.path.join(lower, "lnk"))
    os.symlink("f_keep", os.path.join(lower, "lnk_del"))
    f("d_keep/a", b"a\n")
    f("d_keep/sub/b", b"b\n")
    f("d_del/x", b"x\n")
    f("d_del/sub/y", b"y\n")
    os.mkdir(os.path.join(lower, "d_empty"))
    f("d_redo/old1", b"old1\n")
    f("d_redo/old2", b"old2\n")
    f("d_redo/sub/old3", b"old3\n")
    f("d_mod/m1", b"m1\n")
    f("d_mod/m2", b"m2\n")
    os.mkdir(os.path.join(lower, "d_chmod"))
    f("d_tofile/z", b"z\n")
    os.mkfifo(os.path.join(lower, "fifo_l"))
    for d, _, _ in os.walk(lower):
        os.chmod(d, 0o755)


# ------------------------------------------------------------------ script

def steps(m):
    P = lambda p: os.path.join(m, p)

    def write(p, data, flags):
        fd = os.open(P(p), os.O_WRONLY | flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    new = lambda p, data: lambda: write(p, data, os.O_CREAT | os.O_EXCL)
    return [
        ("append f_mod", lambda: write("f_mod", b"+appended\n", os.O_APPEND)),
        ("rewrite f_trunc", lambda: write("f_trunc", b"rewritten\n", os.O_TRUNC)),
        ("truncate f_tr2 to 3", lambda: os.truncate(P("f_tr2"), 3)),
        ("create n_file", new("n_file", b"new file\n")),
        ("mkdir n_dir", lambda: os.mkdir(P("n_dir"), 0o755)),
        ("create n_dir/inner", new("n_dir/inner", b"inner\n")),
        ("unlink f_del", lambda: os.unlink(P("f_del"))),
        ("rm -rf d_del: unlink x", lambda: os.unlink(P("d_del/x"))),
        ("rm -rf d_del: unlink sub/y", lambda: os.unlink(P("d_del/sub/y"))),
        ("rm -rf d_del: rmdir sub", lambda: os.rmdir(P("d_del/sub"))),
        ("rm -rf d_del: rmdir", lambda: os.rmdir(P("d_del"))),
        ("rmdir d_empty", lambda: os.rmdir(P("d_empty"))),
        ("rm -rf d_redo: unlink old1", lambda: os.unlink(P("d_redo/old1"))),
        ("rm -rf d_redo: unlink old2", lambda: os.unlink(P("d_redo/old2"))),
        ("rm -rf d_redo: unlink sub/old3", lambda: os.unlink(P("d_redo/sub/old3"))),
        ("rm -rf d_redo: rmdir sub", lambda: os.rmdir(P("d_redo/sub"))),
        ("rm -rf d_redo: rmdir", lambda: os.rmdir(P("d_redo"))),
        ("mkdir d_redo", lambda: os.mkdir(P("d_redo"), 0o755)),
        ("create d_redo/new", new("d_redo/new", b"new in redo\n")),
        ("rename f_ren f_renamed", lambda: os.rename(P("f_ren"), P("f_renamed"))),
        ("create n_move", new("n_move", b"moved\n")),
        ("rename n_move d_keep/moved", lambda: os.rename(P("n_move"), P("d_keep/moved"))),
        ("rename n_dir n_dir2", lambda: os.rename(P("n_dir"), P("n_dir2"))),
        ("rename f_a over f_b", lambda: os.rename(P("f_a"), P("f_b"))),
        ("symlink n_link -> f_keep", lambda: os.symlink("f_keep", P("n_link"))),
        ("unlink lnk_del", lambda: os.unlink(P("lnk_del"))),
        ("link f_hl f_hl2", lambda: os.link(P("f_hl"), P("f_hl2"))),
        ("link n_file n_file_hl", lambda: os.link(P("n_file"), P("n_file_hl"))),
        ("chmod f_chmod 600", lambda: os.chmod(P("f_chmod"), 0o600)),
        ("chmod d_chmod 700", lambda: os.chmod(P("d_chmod"), 0o700)),
        ("chown f_chown 1000:1000", lambda: os.chown(P("f_chown"), 1000, 1000)),
        ("setxattr f_xattr user.b=2", lambda: os.setxattr(P("f_xattr"), "user.b", b"2")),
        ("removexattr f_xattr user.a", lambda: os.removexattr(P("f_xattr"), "user.a")),
        ("setxattr n_file user.new=v", lambda: os.setxattr(P("n_file"), "user.new", b"v")),
        ("setxattr d_keep user.dx=1", lambda: os.setxattr(P("d_keep"), "user.dx", b"1")),
        ("create d_mod/added", new("d_mod/added", b"added\n")),
        ("unlink d_mod/m1", lambda: os.unlink(P("d_mod/m1"))),
        ("mkfifo n_fifo", lambda: os.mkfifo(P("n_fifo"), 0o644)),
        ("unlink f_recreate", lambda: os.unlink(P("f_recreate"))),
        ("create f_recreate", new("f_recreate", b"recreated\n")),
        ("create n_tmp", new("n_tmp", b"tmp then renamed over a lower file\n")),
        ("rename n_tmp over f_over", lambda: os.rename(P("n_tmp"), P("f_over"))),
        ("rename f_over f_over_moved", lambda: os.rename(P("f_over"), P("f_over_moved"))),
        ("link f_keep2 f_keep2_hl", lambda: os.link(P("f_keep2"), P("f_keep2_hl"))),
        ("unlink f_keep2", lambda: os.unlink(P("f_keep2"))),
        ("rm -rf d_tofile: unlink z", lambda: os.unlink(P("d_tofile/z"))),
        ("rm -rf d_tofile: rmdir", lambda: os.rmdir(P("d_tofile"))),
        ("create d_tofile (a file now)", new("d_tofile", b"was a dir\n")),
        ("unlink f_todir", lambda: os.unlink(P("f_todir"))),
        ("mkdir f_todir (a dir now)", lambda: os.mkdir(P("f_todir"), 0o755)),
        ("create f_todir/x", new("f_todir/x", b"x\n")),
    ]


PROBES = ["f_del", "d_del", "d_del/x", "d_del/sub", "d_empty", "d_redo/old1", "d_redo/sub",
          "d_redo/sub/old3", "f_ren", "n_move", "n_dir", "n_dir/inner", "f_a", "lnk_del",
          "d_mod/m1", "n_tmp", "f_over", "f_keep2", "d_tofile/z", "f_todir", "f_todir/x",
          "d_tofile", "f_keep", "d_keep/moved", "f_renamed", "f_over_moved"]


def script(m, out):
    res = []
    for name, fn in steps(m):
        try:
            fn()
            r = "ok"
        except OSError as e:
            r = errno.errorcode.get(e.errno, str(e.errno))
        res.append([name, r])
    with open(out, "w") as fh:
        json.dump(res, fh, indent=0)
    bad = [(n, r) for n, r in res if r != "ok"]
    for n, r in bad:
        print("%s: %s" % (n, r))
    return 1 if bad else 0


# ------------------------------------------------------------------ view

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}


CALL = ["lstat"]   # the call a view is making, for its error entries


def entry(full, st):
    t = TYPES.get(stat.S_IFMT(st.st_mode), "?")
    e = {"type": t, "mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if t != "dir":
        e["size"] = st.st_size
    if t == "file":
        CALL[0] = "read"
        h = hashlib.sha256()
        with open(full, "rb") as fh:
            for b in iter(lambda: fh.read(1 << 20), b""):
                h.update(b)
        e["sha256"] = h.hexdigest()
    if t == "symlink":
        CALL[0] = "readlink"
        e["target"] = os.readlink(full)
    if t in ("file", "dir"):
        CALL[0] = "xattrs"
        x = {}
        for n in sorted(os.listxattr(full, follow_symlinks=False)):
            if n.startswith("user.") and not n.startswith(INTERNAL_XATTR):
                x[n] = os.getxattr(full, n, follow_symlinks=False).hex()
        e["xattrs"] = x
    return e


def view(m, out):
    paths, inodes = {}, {}

    def walk(rel):
        full = os.path.join(m, rel) if rel else m
        try:
            CALL[0] = "lstat"
            st = os.lstat(full)
            e = paths[rel or "."] = entry(full, st)
            if e["type"] == "dir":
                CALL[0] = "listdir"
                e["list"] = sorted(os.listdir(full))
        except OSError as ex:   # a view holds the error; comparing shows it
            paths[rel or "."] = {"error": "%s: %s" % (CALL[0], errno.errorcode.get(ex.errno, ex.errno))}
            return
        if e["type"] != "dir":
            inodes.setdefault(st.st_ino, []).append(rel)
            return
        for n in e["list"]:
            walk(rel + "/" + n if rel else n)

    walk("")
    probes = {}
    for p in PROBES:
        try:
            probes[p] = TYPES.get(stat.S_IFMT(os.lstat(os.path.join(m, p)).st_mode), "?")
        except OSError as e:
            probes[p] = errno.errorcode.get(e.errno, str(e.errno))
    links = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    with open(out, "w") as fh:
        json.dump({"paths": paths, "links": links, "probes": probes}, fh, indent=1, sort_keys=True)
    return 0


def masked(v):
    wh = lambda p: any(c.startswith(".wh.") for c in p.split("/"))
    paths = {}
    for p, e in v["paths"].items():
        if wh(p):
            continue
        e = dict(e)
        if "list" in e:
            e["list"] = [n for n in e["list"] if not n.startswith(".wh.")]
        paths[p] = e
    links = [g for g in ([p for p in g if not wh(p)] for g in v["links"]) if len(g) > 1]
    return {"paths": paths, "links": links, "probes": v["probes"]}


def lookup_only(v):
    """Probed names lstat finds but the parent's listing lacks (1.10: the old
    children of `rm -rf d; mkdir d` stay reachable by name)."""
    hidden = set()
    for p, r in v["probes"].items():
        if r not in TYPES.values():
            continue
        parent = "."
        for c in p.split("/"):
            if c not in v["paths"].get(parent, {}).get("list", ()):
                hidden.add(p)
                break
            parent = c if parent == "." else parent + "/" + c
    return hidden


def compare(a, b, masks):
    A, B = json.load(open(a)), json.load(open(b))
    if "wh" in masks:
        A, B = masked(A), masked(B)
    if "ref-lookup" in masks:
        for p in lookup_only(A):
            A["probes"].pop(p)
            B["probes"].pop(p, None)
    out = []
    pa, pb = A["paths"], B["paths"]
    for p in sorted(set(pa) | set(pb)):
        if p not in pb:
            out.append("%s: only in the first view (%s)" % (p, pa[p].get("type", pa[p].get("error"))))
            continue
        if p not in pa:
            out.append("%s: only in the second view (%s)" % (p, pb[p].get("type", pb[p].get("error"))))
            continue
        for k in sorted(set(pa[p]) | set(pb[p])):
            if pa[p].get(k) != pb[p].get(k):
                out.append("%s: %s %s vs %s" % (p, k, json.dumps(pa[p].get(k)), json.dumps(pb[p].get(k))))
    if A["links"] != B["links"]:
        out.append("hard links: %s vs %s" % (json.dumps(A["links"]), json.dumps(B["links"])))
    for p in sorted(set(A["probes"]) | set(B["probes"])):
        if A["probes"].get(p) != B["probes"].get(p):
            out.append("lstat %s: %s vs %s" % (p, A["probes"].get(p), B["probes"].get(p)))
    for l in out:
        print(l)
    return 1 if out else 0


# ------------------------------------------------------------------ copy

def copy(src, dst):
    """Everything an upper layer holds: types (char 0/0 whiteouts, fifos),
    modes, owners, every xattr (trusted.* too), hard links, times."""
    seen = {}
    dirs = []

    def xattrs(s, d):
        for n in os.listxattr(s, follow_symlinks=False):
            os.setxattr(d, n, os.getxattr(s, n, follow_symlinks=False), follow_symlinks=False)

    def one(s, d):
        st = os.lstat(s)
        m = st.st_mode
        if not stat.S_ISDIR(m) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen:
            os.link(seen[(st.st_dev, st.st_ino)], d)
            return
        if stat.S_ISDIR(m):
            os.mkdir(d)
        elif stat.S_ISREG(m):
            with open(s, "rb") as fs, open(d, "wb") as fd:
                while True:
                    b = fs.read(1 << 20)
                    if not b:
                        break
                    fd.write(b)
        elif stat.S_ISLNK(m):
            os.symlink(os.readlink(s), d)
        else:
            os.mknod(d, m, st.st_rdev)
        seen[(st.st_dev, st.st_ino)] = d
        os.lchown(d, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(m):
            os.chmod(d, stat.S_IMODE(m))
        xattrs(s, d)
        if stat.S_ISDIR(m):
            for n in sorted(os.listdir(s)):
                one(os.path.join(s, n), os.path.join(d, n))
            dirs.append((d, st))
        else:
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    one(src, dst)
    for d, st in dirs:
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
    return 0


def main():
    a = sys.argv[1:]
    if a[:1] == ["build"] and len(a) == 2:
        build(a[1])
        return 0
    if a[:1] == ["script"] and len(a) == 3:
        return script(a[1], a[2])
    if a[:1] == ["view"] and len(a) == 3:
        return view(a[1], a[2])
    if a[:1] == ["compare"] and len(a) >= 3 and all(o in ("--mask-wh", "--mask-ref-lookup") for o in a[3:]):
        return compare(a[1], a[2], {o[len("--mask-"):] for o in a[3:]})
    if a[:1] == ["copy"] and len(a) == 3:
        return copy(a[1], a[2])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
