#!/usr/bin/python3
"""Helper of tests/podman/e2e.sh (standard library only).

  e2e_helper.py image OUT.tar BUSYBOX
      Writes a two-layer docker-archive (for `podman load`) tagged
      localhost/ovle2e:base.  Layer 1: static busybox with every applet as a
      symlink, /etc, dirs and files owned by uids/gids 0, 1, 1000 and 65534,
      a setuid file, a setgid dir, a hard link, a symlink.  Layer 2: AUFS
      whiteouts (.wh.NAME) of a layer-1 file and of a layer-1 dir, an opaque
      dir (.wh..wh..opq) with new entries, a replaced file, new files.
      Deterministic for a given busybox.

  e2e_helper.py expect STEP.CHECK UID GID
      Prints the output the check must give, computed from the layers and the
      changes the steps make (the Model below, kernel-overlay semantics), for
      the test user UID/GID; a first line "#subset" means only these lines
      must be in the output.

  e2e_helper.py compare STEP.CHECK OURS REF UID GID STRICT
      Compares our output file with 1.10's (REF "-" or missing: 1.10 failed
      the step; ours is then compared with the expected values).  Both are
      normalised first (KIND by check: `ls` dates and spaces, the sizes of
      podman's /etc/hosts and /etc/hostname bind mounts).  Unless STRICT is
      1, the KNOWN differences below are taken out of the comparison with
      1.10 and ours' lines they cover are checked against the expected values
      instead.  Prints "PASS podman NAME" or "FAIL podman NAME: why" with
      indented details, and "# note: ..." lines; exits 0 or 1.

  e2e_helper.py layer ARCHIVE OUT
      Lists the top layer of a docker-archive (`podman save`) to OUT: "wh
      NAME" for whiteouts, "d MODE U:G NAME", "f MODE U:G SIZE NAME MD5",
      "l U:G NAME -> TARGET", "h U:G NAME => TARGET", sorted.

  e2e_helper.py known
      Prints the KNOWN differences, "ID: why" a line.

  e2e_helper.py upper DIR HOSTUID SUBUID_START LOWERDIRS OUT RAW
      Lists an upper directory as found on disk: RAW gets every entry (sorted
      relative path, type, mode, owners translated to the ids of podman's
      user namespace: HOSTUID -> 0, SUBUID_START+n -> n+1, anything else
      "host:N", size and md5 prefix of files, link target, rdev of devices,
      xattrs with "overlay" or "opaque" in their name); OUT the same meaning
      spelling-independent: whiteouts (char 0/0 or .wh.NAME) as "w PATH",
      opaque markers (.wh..wh..opq, .wh..opq, *.opaque xattrs) as "o DIR",
      each only where a lower layer (LOWERDIRS, ':'-separated) has that path
      (elsewhere it changes nothing), the overlay's own xattrs left out.

  e2e_helper.py census ROOT OUT STEPFILE
      Until killed: every 0.1 s looks for processes whose arguments hold
      "lowerdir=" and ROOT (mount programs started by containers/storage) and
      appends "STEP<TAB>PID<TAB>EXE<TAB>ARGV" to OUT for each new one (STEP:
      the content of STEPFILE then).  A wrapper script still running as the
      shell (argv[1] ending in /wrap-ours or /wrap-ref) is skipped.

  e2e_helper.py daemon MERGED
      Prints "PID EXE" of each process whose last argument is MERGED and
      that has a "-o" argument: the FUSE daemon serving that mount.
"""
import difflib
import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile

MTIME = 1700000000
IMAGE = "localhost/ovle2e:base"

# ----------------------------------------------------------------- layers
# (path, kind, mode, uid, gid, data) kind: d dir, f file, l symlink (data =
# target), h hard link (data = target path), w whiteout of NAME (path is the
# deleted path), o opaque marker for dir path
def layer1(busybox):
    with open(busybox, "rb") as f:
        bb = f.read()
    applets = subprocess.run([busybox, "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    L = []
    for d, m, u, g in (("bin", 0o755, 0, 0), ("dev", 0o755, 0, 0),
                       ("proc", 0o755, 0, 0), ("sys", 0o755, 0, 0),
                       ("run", 0o755, 0, 0), ("tmp", 0o1777, 0, 0),
                       ("etc", 0o755, 0, 0), ("home", 0o755, 0, 0),
                       ("home/user", 0o700, 1000, 1000),
                       ("var", 0o755, 0, 0), ("var/nobody", 0o755, 65534, 65534),
                       ("t", 0o755, 0, 0), ("t/sub", 0o750, 1, 1),
                       ("t/sgiddir", 0o2775, 0, 1000),
                       ("t/gone", 0o755, 1000, 1000),
                       ("t/gone/inner", 0o755, 1000, 1000),
                       ("opt", 0o755, 0, 0), ("opt/app", 0o755, 0, 0),
                       ("opt/app/olddir", 0o755, 1, 1),
                       ("srv", 0o755, 1, 1), ("srv/keep", 0o700, 65534, 65534)):
        L.append((d, "d", m, u, g, None))
    L.append(("bin/busybox", "f", 0o755, 0, 0, bb))
    L += [("bin/" + a, "l", 0o777, 0, 0, "busybox") for a in applets if a != "busybox"]
    L += [
        ("etc/passwd", "f", 0o644, 0, 0,
         b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/sh\n"
         b"user:x:1000:1000:user:/home/user:/bin/sh\n"
         b"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"),
        ("etc/group", "f", 0o644, 0, 0,
         b"root:x:0:\ndaemon:x:1:\nuser:x:1000:\nnogroup:x:65534:\n"),
        ("etc/hosts", "f", 0o644, 0, 0, b""),
        ("etc/hostname", "f", 0o644, 0, 0, b""),
        ("etc/resolv.conf", "f", 0o644, 0, 0, b""),
        ("etc/base.conf", "f", 0o644, 0, 0, b"base\n"),
        ("etc/removed.conf", "f", 0o644, 0, 0, b"removed\n"),
        ("t/lower.txt", "f", 0o644, 0, 0, b"lower\n"),
        ("t/del.txt", "f", 0o644, 1, 1, b"del\n"),
        ("t/own1", "f", 0o640, 1, 1, b"one\n"),
        ("t/own1000", "f", 0o600, 1000, 1000, b"thousand\n"),
        ("t/own65534", "f", 0o644, 65534, 65534, b"nobody\n"),
        ("t/mixed", "f", 0o664, 1000, 65534, b"mixed\n"),
        ("t/suid", "f", 0o4755, 0, 0, b"suid\n"),
        ("t/hl1", "f", 0o644, 0, 0, b"hard\n"),
        ("t/hl2", "h", 0o644, 0, 0, "t/hl1"),
        ("t/link", "l", 0o777, 0, 0, "lower.txt"),
        ("t/sub/deep.txt", "f", 0o600, 1, 1, b"deep\n"),
        ("t/gone/f1", "f", 0o644, 1000, 1000, b"f1\n"),
        ("t/gone/inner/f2", "f", 0o644, 65534, 65534, b"f2\n"),
        ("opt/app/old1", "f", 0o644, 0, 0, b"old1\n"),
        ("opt/app/old2", "f", 0o644, 1, 1, b"old2\n"),
        ("opt/app/olddir/x", "f", 0o644, 1, 1, b"x\n"),
        ("home/user/notes.txt", "f", 0o600, 1000, 1000, b"notes\n"),
        ("var/nobody/file", "f", 0o644, 65534, 65534, b"nb\n"),
    ]
    return L


def layer2():
    return [
        ("etc", "d", 0o755, 0, 0, None),
        ("t", "d", 0o755, 0, 0, None),
        ("opt", "d", 0o755, 0, 0, None),
        ("opt/app", "d", 0o755, 0, 0, None),
        ("etc/removed.conf", "w", 0, 0, 0, None),
        ("etc/added.conf", "f", 0o644, 1000, 65534, b"added\n"),
        ("t/gone", "w", 0, 0, 0, None),
        ("t/own1", "f", 0o640, 1, 1, b"one-v2\n"),
        ("t/l2file", "f", 0o640, 65534, 1000, b"layer2\n"),
        ("opt/app", "o", 0, 0, 0, None),
        ("opt/app/new1", "f", 0o644, 0, 0, b"new1\n"),
        ("opt/app/newdir", "d", 0o755, 1000, 1000, None),
        ("opt/app/newdir/n2", "f", 0o644, 1000, 1000, b"n2\n"),
    ]


def tar_layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, mode, uid, gid, data in entries:
            name = path
            if kind == "w":
                d, b = os.path.split(path)
                name = os.path.join(d, ".wh." + b)
            elif kind == "o":
                name = os.path.join(path, ".wh..wh..opq")
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, "", ""
            ti.mode = mode
            body = None
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
            elif kind == "f":
                ti.size, body = len(data), io.BytesIO(data)
            else:  # whiteout / opaque marker: empty file
                ti.mode, ti.size, body = 0o644, 0, io.BytesIO(b"")
            t.addfile(ti, body)
    return buf.getvalue()


def cmd_image(out, busybox):
    layers = [tar_layer(layer1(busybox)), tar_layer(layer2())]
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = {
        "architecture": "amd64", "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "layer1"},
                    {"created": "2023-11-14T22:13:20Z", "created_by": "layer2"}],
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    names = ["%s/layer.tar" % d.split(":")[1] for d in diff_ids]
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [IMAGE],
                            "Layers": names}]).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
            t.addfile(ti, io.BytesIO(data))
        add(cfg_name, cfg)
        for n, l in zip(names, layers):
            add(n, l)
        add("manifest.json", manifest)


# ------------------------------------------------------------------ model
class Model:
    """The merged tree as the container sees it (container ids), with the
    kernel overlay's semantics: a write to one name of a lower hard link
    copies that name up alone (the other names keep the lower inode and its
    link count), a setgid directory keeps S_ISGID through a copy-up and
    passes its group (and S_ISGID to subdirectories) to new entries."""

    def __init__(self):
        self.e = {}      # path -> dict(kind, mode, uid, gid, data[, nlink])

    def apply_layer(self, entries):
        for path, kind, mode, uid, gid, data in entries:
            if kind == "w":
                self.rm(path)
            elif kind == "o":
                for p in [p for p in self.e if p.startswith(path + "/")]:
                    del self.e[p]
            elif kind == "h":
                self.e[path] = self.e[data]  # same dict: a hard link
            else:
                if kind == "d" and path in self.e and self.e[path]["kind"] == "d":
                    self.e[path].update(mode=mode, uid=uid, gid=gid)
                    continue
                self.rm(path)
                self.e[path] = dict(kind=kind, mode=mode, uid=uid, gid=gid,
                                    data=data)

    def rm(self, path):
        for p in [p for p in self.e if p == path or p.startswith(path + "/")]:
            del self.e[p]

    def _inherit(self, path, gid, mode, isdir):
        parent = self.e.get(os.path.dirname(path))
        if parent and parent["mode"] & 0o2000:
            gid = parent["gid"]
            if isdir:
                mode |= 0o2000
        return gid, mode

    def write(self, path, data, uid=0, gid=0, mode=0o644):
        gid, mode = self._inherit(path, gid, mode, False)
        self.e[path] = dict(kind="f", mode=mode, uid=uid, gid=gid, data=data)

    def mkdir(self, path, uid=0, gid=0, mode=0o755):
        gid, mode = self._inherit(path, gid, mode, True)
        self.e[path] = dict(kind="d", mode=mode, uid=uid, gid=gid, data=None)

    def append(self, path, data):
        self.e[path]["data"] += data

    def append_lower_link(self, path, data):
        """A write through one name of a lower hard link."""
        old = self.e[path]
        for p, v in self.e.items():
            if v is old and p != path:
                v["nlink"] = self.nlink(old)  # the lower inode's count stays
        self.e[path] = dict(old, data=old["data"] + data, nlink=1)

    def nlink(self, ent):
        return ent.get("nlink") or sum(1 for v in self.e.values() if v is ent)

    def tree(self, roots):
        """Lines of the probe's `tree` for these roots (see PROBE in e2e.sh)."""
        out = []
        for p in sorted(p for p in self.e
                        if any(p == r or p.startswith(r + "/") for r in roots)):
            ent = self.e[p]
            own = "%d:%d" % (ent["uid"], ent["gid"])
            if ent["kind"] == "l":
                out.append("l %s /%s -> %s" % (own, p, ent["data"]))
            elif ent["kind"] == "d":
                out.append("d %o %s /%s" % (ent["mode"], own, p))
            else:
                out.append("f %o %s %d %d /%s %s" % (
                    ent["mode"], own, len(ent["data"]), self.nlink(ent), p,
                    hashlib.md5(ent["data"]).hexdigest()[:8]))
        return out


TREE_ROOTS = ["t", "opt", "home", "var", "srv", "etc/base.conf",
              "etc/added.conf", "etc/removed.conf"]
LS_DIRS = ["t", "t/sub", "opt/app", "opt/app/newdir", "etc", "home/user",
           "var/nobody", "srv"]
CONTENT_FILES = ["t/lower.txt", "t/own1", "t/new.txt", "etc/base.conf",
                 "opt/app/new1", "t/newdir/inner", "t/built/f", "t/hl1", "t/hl2"]


def base_model():
    m = Model()
    m.apply_layer(layer1(os.environ.get("BUSYBOX", "/bin/busybox")))
    m.apply_layer(layer2())
    return m


def run_changes(m):
    """PROBE action "change" (the run step), as root."""
    m.write("t/new.txt", b"new\n")
    m.mkdir("t/newdir")
    m.write("t/newdir/inner", b"inner\n", 65534, 65534, 0o600)
    m.rm("t/del.txt")
    m.append("t/lower.txt", b"more\n")
    m.rm("opt/app/newdir")
    m.e["t/own1000"]["mode"] = 0o640
    m.e["var/nobody/file"].update(uid=1, gid=1)
    m.write("t/sgiddir/newf", b"s\n")
    m.mkdir("t/sgiddir/newd")
    m.append_lower_link("t/hl2", b"x\n")


def build_changes(m):
    """The RUN steps of the Containerfile (e2e.sh)."""
    m.append("etc/base.conf", b"appended\n")
    m.e["t/lower.txt"]["mode"] = 0o600
    m.e["home/user/notes.txt"].update(uid=65534, gid=1)
    m.rm("var/nobody")
    m.rm("t/del.txt")
    m.mkdir("t/built")
    m.write("t/built/f", b"built\n", 1000, 1000)
    m.append("opt/app/new1", b"second\n")
    m.e["t/own1"]["mode"] = 0o4711
    m.e["t/sgiddir"].update(uid=1, gid=65534)  # a dir keeps S_ISGID on chown
    m.append_lower_link("t/hl2", b"x\n")


def keepid_created(m, uid, gid):
    """PROBE actions create-user (as the user) and create-root (as root)
    under --userns=keep-id; the paths in the order "created-keepid" lists."""
    m.write("tmp/kuser", b"k\n", uid, gid)
    m.mkdir("tmp/kdir", uid, gid)
    m.write("t/kroot", b"r\n")
    m.write("t/kchown", b"c\n", 1000, 65534)
    m.write("tmp/kuid", b"u\n", uid, gid)
    return ["tmp/kuser", "tmp/kdir", "t/kroot", "t/kchown", "tmp/kuid"]


def uidmap_created(m):
    """PROBE actions create-root3 (as root) and create-1000 (as 1000:1000)."""
    m.write("t/r0", b"r0\n")
    m.mkdir("t/r0dir")
    m.write("t/c65534", b"c\n", 65534, 65534)
    m.write("t/c999", b"c\n", 999, 999)
    m.write("t/c1001", b"c\n", 1001, 1001)
    m.write("tmp/u1000", b"u\n", 1000, 1000)
    return ["t/r0", "t/r0dir", "t/c65534", "t/c999", "t/c1001", "tmp/u1000"]


def ls_subset(m):
    """`ls -lan` lines (normalised) of the non-directory entries of LS_DIRS
    that lie in TREE_ROOTS, and of the directories in them (link count N)."""
    out = []
    for p in sorted(m.e):
        d, n = os.path.split(p)
        ent = m.e[p]
        if d not in LS_DIRS:
            continue
        if not any(p == r or p.startswith(r + "/") for r in TREE_ROOTS):
            continue
        if ent["kind"] == "l":
            out.append("lrwxrwxrwx 1 %d %d %d DATE %s -> %s" % (
                ent["uid"], ent["gid"], len(ent["data"]), n, ent["data"]))
        elif ent["kind"] == "d":
            out.append("%s N %d %d 4096 DATE %s" % (
                stat.filemode(stat.S_IFDIR | ent["mode"]), ent["uid"],
                ent["gid"], n))
        else:
            out.append("%s %d %d %d %d DATE %s" % (
                stat.filemode(stat.S_IFREG | ent["mode"]), m.nlink(ent),
                ent["uid"], ent["gid"], len(ent["data"]), n))
    return out


def contents(m):
    out = []
    for p in CONTENT_FILES:
        ent = m.e.get(p)
        out.append("/%s %s" % (p, ent["data"].decode().replace("\n", "|")
                               if ent else "(absent)"))
    return out


def upper_line(m, p):
    ent = m.e[p]
    own = "%d:%d" % (ent["uid"], ent["gid"])
    if ent["kind"] == "d":
        return "d %o %s %s" % (ent["mode"], own, p)
    return "f %o %s %d %s %s" % (ent["mode"], own, len(ent["data"]), p,
                                 hashlib.md5(ent["data"]).hexdigest()[:8])


WHITEOUT_CHECKS = ["ok removed.conf hidden", "ok gone hidden",
                   "ok opaque hides old", "ok opaque keeps new",
                   "ok no .wh. names", "ok replaced own1", "ok hardlink"]


def expect(check, uid, gid):
    """Expected lines of CHECK; first line "#subset" for a subset."""
    m = base_model()
    step, name = check.split(".", 1)
    if step == "run" and not name.endswith("-before") and name != "whiteouts":
        run_changes(m)
    if step in ("build", "saveload"):
        build_changes(m)
    kind = name.split("-")[-1] if step == "run" and name.startswith("commit-") else name.split("-")[0]
    if kind == "tree":
        return m.tree(TREE_ROOTS)
    if kind == "ls":
        return ["#subset"] + ls_subset(m)
    if kind == "contents":
        return contents(m)
    if name == "whiteouts":
        return WHITEOUT_CHECKS
    if step == "run" and name == "upper":
        return ["#subset", "w t/del.txt", "w opt/app/newdir"] + [
            upper_line(m, p) for p in (
                "t/new.txt", "t/newdir", "t/newdir/inner", "t/lower.txt",
                "t/own1000", "var/nobody/file", "t/sgiddir", "t/sgiddir/newf",
                "t/sgiddir/newd", "t/hl2")]
    if step == "run" and name == "diff":
        return ["#subset", "A /t/new.txt", "A /t/newdir", "A /t/newdir/inner",
                "C /t", "C /t/lower.txt", "C /t/own1000", "C /var/nobody/file",
                "D /opt/app/newdir", "D /t/del.txt", "C /t/sgiddir",
                "A /t/sgiddir/newf", "A /t/sgiddir/newd", "C /t/hl2"]
    if step == "keepid" and name == "id":
        return ["%d %d" % (uid, gid)]
    if step == "uidmap" and name == "id-root":
        return ["0 0"]
    if step == "uidmap" and name == "id-1000":
        return ["1000 1000"]
    if step in ("keepid", "uidmap") and name in ("created", "upper"):
        paths = keepid_created(m, uid, gid) if step == "keepid" else uidmap_created(m)
        if name == "created":
            return ["%d:%d %o /%s" % (m.e[p]["uid"], m.e[p]["gid"], m.e[p]["mode"], p)
                    for p in paths]
        return ["#subset"] + [upper_line(m, p) for p in paths]
    if step == "saveload" and name == "layer":
        def f(p):
            e = m.e[p]
            return "f %o %d:%d %d %s %s" % (e["mode"], e["uid"], e["gid"], len(e["data"]), p,
                                            hashlib.md5(e["data"]).hexdigest()[:8])
        d = m.e["t/sgiddir"]
        return ["#subset", "wh t/.wh.del.txt", "wh var/.wh.nobody", "d 755 0:0 t/built",
                "d %o %d:%d t/sgiddir" % (d["mode"], d["uid"], d["gid"])] + [
            f(p) for p in ("etc/base.conf", "home/user/notes.txt", "opt/app/new1",
                           "t/built/f", "t/hl2", "t/lower.txt", "t/own1")]
    if step == "build" and name == "rootfs":
        return ["rootfs type: fuse.fuse-overlayfs"]
    return None


def cmd_expect(check, uid, gid):
    out = expect(check, uid, gid)
    if out is None:
        sys.exit("e2e_helper.py: no expected value for " + check)
    print("\n".join(out))


# ----------------------------------------------------------------- compare
LS_DATE = re.compile(r"^([-dlcbps][-rwxsStT]{9}[+.@]? \d+ \S+ \S+ (?:\d+, )?\d+) "
                     r"\w{3} \d{1,2} (?:\d\d:\d\d|\d{4}) ")
# podman's bind mounts: their size follows the container's (random) name
LS_RUNTIME = re.compile(r"^(-\S+ \d+ \S+ \S+) \d+ DATE (hosts|hostname)$")


def normalize(check, text, substs):
    for a, b in substs:
        text = text.replace(a, b)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "ls" in check.split(".", 1)[1].split("-"):
        lines = [LS_RUNTIME.sub(r"\1 SIZE DATE \2",
                                LS_DATE.sub(lambda mo: mo.group(1) + " DATE ",
                                            re.sub(" +", " ", l)))
                 for l in lines]
    return lines


# Differences from 1.10 that are deliberate (ours follows the kernel
# overlay) or defects of 1.10 (COMPAT.md "Known defects of 1.10").  Unless
# E2E_STRICT=1 the lines they cover are compared with the expected values
# (kernel semantics) instead of 1.10's; each is reported as a note.
KNOWN = [
    dict(id="dir-nlink", checks=["*.ls", "*.ls-*", "*.commit-ls"], line=r"^d\S+ \d+ ",
         sub=(r"^(d\S+) \d+ ", r"\1 N "),
         why="st_nlink of a directory merged from several layers: ours 1, as "
             "the kernel overlay (overlay/inode.c); 1.10 the count of one layer's dir"),
    dict(id="lower-hardlink-copyup", checks=["run.*", "build.*", "saveload.*"],
         line=r"hl[12]\b",
         why="a write through one name (/t/hl2) of a lower hard link: ours "
             "copies that name up alone, as the kernel overlay with index=off "
             "(overlay/copyup.c); 1.10 copies up the name it looked up first "
             "(readdir order: /t/hl1 or /t/hl2), so both names may show the "
             "new data, or the committed image may have the old data under "
             "/t/hl2; its st_nlink counts only the names seen so far"),
    dict(id="setgid-dir-copyup", checks=["run.*", "build.*", "saveload.*"],
         line=r"sgiddir",
         why="a setgid lower dir copied up (by a create in it or a chown): "
             "1.10 drops S_ISGID (mkdir mode) and new entries get the "
             "creator's group; ours keeps it, as the kernel"),
]


def known_for(check, strict):
    if strict:
        return []
    return [k for k in KNOWN if any(fnmatch.fnmatch(check, c) for c in k["checks"])]


def apply_subs(check, lines):
    """The KNOWN rewrites (not masks): the expected values have no other."""
    for k in KNOWN:
        if "sub" in k and any(fnmatch.fnmatch(check, c) for c in k["checks"]):
            lines = [re.sub(k["sub"][0], k["sub"][1], l) for l in lines]
    return lines


def udiff(a, b, la, lb, n=40):
    d = list(difflib.unified_diff(a, b, la, lb, lineterm="", n=1))
    return d[:n] + (["... (%d more lines)" % (len(d) - n)] if len(d) > n else [])


def vs_expected(exp, got, only=None):
    """Lines of disagreement between an expectation and an output (both
    restricted to lines matching regex ONLY when given)."""
    if only is not None:
        got = [l for l in got if re.search(only, l)]
    if exp and exp[0] == "#subset":
        want = [l for l in exp[1:] if only is None or re.search(only, l)]
        return ["missing: " + l for l in want if l not in got]
    if only is not None:
        exp = [l for l in exp if re.search(only, l)]
    return [] if exp == got else udiff(exp, got, "expected", "got")


def cmd_compare(check, ours, ref, uid, gid, strict, substs):
    name = "podman " + check
    with open(ours, errors="replace") as f:
        o = normalize(check, f.read(), substs)
    exp = expect(check, uid, gid)
    r = None
    if ref != "-" and os.path.exists(ref):
        with open(ref, errors="replace") as f:
            r = normalize(check, f.read(), substs)
    if r is None:
        if exp is None:
            print("FAIL %s: 1.10 failed this step and no expected value exists" % name)
            return 1
        bad = vs_expected(exp, apply_subs(check, o))
        if bad:
            print("FAIL %s: differs from the expected values (1.10 failed this step)" % name)
            print("\n".join("    " + l for l in bad))
            return 1
        print("PASS %s (vs expected values: 1.10 failed this step)" % name)
        return 0
    notes, bad = [], []
    o2, r2 = list(o), list(r)
    for k in known_for(check, strict):
        if "sub" in k:
            a, b = k["sub"]
            n = sum(1 for x, y in zip(o2, r2) if re.search(k["line"], x) and x != y)
            o2 = [re.sub(a, b, l) for l in o2]
            r2 = [re.sub(a, b, l) for l in r2]
            if n:
                notes.append("known difference %s: %d lines" % (k["id"], n))
            continue
        om = [l for l in o2 if re.search(k["line"], l)]
        rm = [l for l in r2 if re.search(k["line"], l)]
        o2 = [l for l in o2 if not re.search(k["line"], l)]
        r2 = [l for l in r2 if not re.search(k["line"], l)]
        if om != rm:
            notes.append("known difference %s:" % k["id"])
            notes += ["  1.10: " + l for l in rm if l not in om][:6]
            notes += ["  ours: " + l for l in om if l not in rm][:6]
        if exp is not None:
            e = vs_expected(exp, om, k["line"])
            if e:
                bad.append("on the lines of known difference %s ours is not "
                           "the expected value:" % k["id"])
                bad += e
    if o2 != r2:
        bad = ["ours differs from 1.10:"] + udiff(r2, o2, "1.10", "ours") + bad
    if exp is not None and r2:
        e = vs_expected([l for l in exp if not any(
            re.search(k["line"], l) for k in known_for(check, strict) if "sub" not in k)],
            apply_subs(check, r2))
        if e:
            notes.append("1.10 differs from the computed expected values:")
            notes += ["  " + l for l in e[:12]]
    if bad:
        print("FAIL %s: %s" % (name, bad[0].rstrip(":")))
        print("\n".join("    " + l for l in bad[1:]))
    else:
        print("PASS " + name)
    for n in notes:
        print("# note: %s: %s" % (check, n) if not n.startswith("  ") else "#   " + n)
    return 1 if bad else 0


# ------------------------------------------------------------------ upper
INTERNAL_XATTR = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.",
                  "security.fuseoverlayfs.", "user.containers.")


def cmd_upper(d, hostuid, substart, lowers, out, raw):
    hostuid, substart = int(hostuid), int(substart)
    lowers = [l for l in lowers.split(":") if l]

    def tr(i):
        if i == hostuid:
            return "0"
        if substart <= i < substart + 65536:
            return str(i - substart + 1)
        return "host:%d" % i

    def in_lower(rel):
        return any(os.path.lexists(os.path.join(l, rel)) for l in lowers)
    R, S = [], set()
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, d)
            own = "%s:%s" % (tr(st.st_uid), tr(st.st_gid))
            m = stat.S_IMODE(st.st_mode)
            xs, opaque = [], False
            try:
                for x in sorted(os.listxattr(p, follow_symlinks=False)):
                    if "overlay" in x or "opaque" in x:
                        v = os.getxattr(p, x, follow_symlinks=False)
                        t = v.rstrip(b"\0")
                        xs.append("%s=%s" % (x, t.decode() if t.isascii() and t.decode().isprintable()
                                             else "0x" + v.hex()))
                        if x.endswith(".opaque") and v == b"y":
                            opaque = True
            except OSError:
                pass
            sem = None
            if stat.S_ISDIR(st.st_mode):
                line = "d %o %s %s" % (m, own, rel)
                sem = line
            elif stat.S_ISLNK(st.st_mode):
                line = sem = "l %s %s -> %s" % (own, rel, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.md5(f.read()).hexdigest()[:8]
                line = sem = "f %o %s %d %s %s" % (m, own, st.st_size, rel, h)
            elif stat.S_ISCHR(st.st_mode):
                line = sem = "c %o %s %d:%d %s" % (m, own, os.major(st.st_rdev),
                                                   os.minor(st.st_rdev), rel)
            else:
                line = sem = "? %o %s %s" % (st.st_mode, own, rel)
            if xs:
                line += " [" + " ".join(xs) + "]"
            R.append((rel, line))
            dirn = os.path.dirname(rel)
            if n in (".wh..wh..opq", ".wh..opq"):
                sem = "o " + (dirn or ".") if in_lower(dirn) else None
            elif n.startswith(".wh."):
                w = os.path.join(dirn, n[4:])
                sem = "w " + w if in_lower(w) else None
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                sem = "w " + rel if in_lower(rel) else None
            kept = [x for x in xs if not x.startswith(INTERNAL_XATTR)]
            if kept and sem and not sem.startswith(("o ", "w ")):
                sem += " [" + " ".join(kept) + "]"
            if sem:
                S.add((sem[2:] if sem.startswith(("o ", "w ")) else rel, sem))
            if opaque and in_lower(rel):
                S.add((rel, "o " + rel))
    with open(raw, "w") as f:
        f.write("".join(l + "\n" for _, l in sorted(R)))

    with open(out, "w") as f:
        f.write("".join(l + "\n" for _, l in sorted(S)))


# ----------------------------------------------------------------- layer
def cmd_layer(archive, out):
    with tarfile.open(archive) as t:
        top = json.load(t.extractfile("manifest.json"))[0]["Layers"][-1]
        data = t.extractfile(top).read()
    lines = []
    with tarfile.open(fileobj=io.BytesIO(data)) as lt:
        for i in lt.getmembers():
            n = i.name.rstrip("/")
            own = "%d:%d" % (i.uid, i.gid)
            if os.path.basename(n).startswith(".wh."):
                lines.append("wh " + n)
            elif i.isdir():
                lines.append("d %o %s %s" % (i.mode & 0o7777, own, n))
            elif i.issym():
                lines.append("l %s %s -> %s" % (own, n, i.linkname))
            elif i.islnk():
                lines.append("h %s %s => %s" % (own, n, i.linkname))
            elif i.isfile():
                lines.append("f %o %s %d %s %s" % (i.mode & 0o7777, own, i.size, n, hashlib.md5(
                    lt.extractfile(i).read()).hexdigest()[:8]))
            else:
                lines.append("? %s %s" % (i.type, n))
            x = sorted(k for k in i.pax_headers if "xattr" in k.lower())
            if x:
                lines[-1] += " [" + " ".join(x) + "]"
    with open(out, "w") as f:
        f.write("".join(l + "\n" for l in sorted(lines)))


# ----------------------------------------------------------------- procs
def procs():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as c:
                argv = [a.decode(errors="replace") for a in c.read().split(b"\0")]
            if argv and argv[-1] == "":
                argv.pop()
            exe = os.readlink("/proc/%s/exe" % pid)
        except OSError:
            continue
        yield pid, exe, argv


def cmd_census(root, out, stepfile):
    import time
    seen = set()
    with open(out, "a") as f:
        while True:
            try:
                with open(stepfile) as s:
                    step = s.read().strip()
            except OSError:
                step = "?"
            for pid, exe, argv in procs():
                if not any("lowerdir=" in a and root in a for a in argv):
                    continue
                if len(argv) > 1 and argv[1].endswith(("/wrap-ours", "/wrap-ref")):
                    continue
                key = (pid, exe, " ".join(argv))
                if key in seen:
                    continue
                seen.add(key)
                f.write("%s\t%s\t%s\t%s\n" % (step, pid, exe, " ".join(argv)))
                f.flush()
            time.sleep(0.1)


def cmd_daemon(merged):
    for pid, exe, argv in procs():
        if len(argv) > 2 and argv[-1] == merged and "-o" in argv:
            print(pid, exe)


def main():
    a = sys.argv[1:]
    if a and a[0] == "image" and len(a) == 3:
        cmd_image(a[1], a[2])
    elif a and a[0] == "expect" and len(a) == 4:
        cmd_expect(a[1], int(a[2]), int(a[3]))
    elif a and a[0] == "compare" and len(a) >= 7:
        substs = [s.split("=", 1) for s in a[7:]]
        sys.exit(cmd_compare(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6] == "1", substs))
    elif a and a[0] == "upper" and len(a) == 7:
        cmd_upper(*a[1:])
    elif a and a[0] == "layer" and len(a) == 3:
        cmd_layer(a[1], a[2])
    elif a == ["known"]:
        for k in KNOWN:
            print("%s: %s" % (k["id"], k["why"]))
    elif a and a[0] == "census" and len(a) == 4:
        cmd_census(a[1], a[2], a[3])
    elif a and a[0] == "daemon" and len(a) == 2:
        cmd_daemon(a[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
