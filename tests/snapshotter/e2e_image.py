#!/usr/bin/python3
"""Helper of e2e.sh (standard library only).

  e2e_image.py image OUT.tar NAME BUSYBOX
      Writes a two-layer OCI image archive for `ctr images import` and prints
      the two layers' chain IDs (the keys of their committed snapshots), one a
      line, layer 1 first.
      layer 1: a static busybox with applet symlinks, a few files and dirs;
      layer 2: AUFS whiteouts of a layer-1 file and of a layer-1 dir, an
      opaque directory (.wh..wh..opq), a modified file, a hard link and
      symlinks.  Deterministic: the same busybox gives the same digests.

  e2e_image.py find-layer ROOT N BUSYBOX
      Prints the directory ROOT/snapshots/ID/fs that holds layer N (1 or 2) as
      unpacked by the snapshotter (found by its content).

  e2e_image.py check-layer N DIR BUSYBOX
      Checks that DIR (a committed snapshot's fs) holds exactly layer N:
      every entry with its type, content, mode, owner, mtime, link target and
      hard links; whiteouts in either spelling (char 0/0 or .wh.NAME); the
      opaque directory either marked opaque (xattr or .wh..wh..opq) or with a
      whiteout for each layer-1 child.  Prints one line per problem.

  e2e_image.py check-upper DIR
      Checks the upper directory of the container that ran CHANGES (see
      e2e.sh) holds those changes and nothing copied up besides them.
      Prints one line per problem.

  e2e_image.py shim-socket CONTAINERD_ADDRESS NAMESPACE ID
      Prints the unix socket path containerd 1.6 gives the runc shim of a
      container (/run/containerd/s/<sha256 of address/namespace/id>), so that
      the test can remove it when it had to SIGKILL that shim.
"""
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile

MTIME = 1700000000
# busybox applets the container script uses (the brief: at least sh ls cat rm echo)
APPLETS = ["sh", "ls", "cat", "rm", "echo", "test", "[", "stat", "readlink",
           "mkdir", "tr", "true", "false"]

# (path, kind, mode, data): kind d=dir f=file l=symlink h=hard link (data =
# link target), w=whiteout (written as .wh.NAME), o=opaque marker of the dir
def layer1_spec(busybox):
    with open(busybox, "rb") as f:
        bb = f.read()
    spec = [(d, "d", 0o1777 if d == "tmp" else 0o755, None) for d in (
        "bin", "dev", "proc", "sys", "etc", "tmp", "data", "data/gonedir",
        "data/gonedir/sub", "data/olddir", "opq", "opq/sub")]
    spec.append(("bin/busybox", "f", 0o755, bb))
    spec += [("bin/" + a, "l", 0o777, "busybox") for a in APPLETS]
    spec += [
        ("etc/passwd", "f", 0o644, b"root:x:0:0:root:/:/bin/sh\n"),
        ("etc/group", "f", 0o644, b"root:x:0:\n"),
        ("data/keep.txt", "f", 0o644, b"keep from layer 1\n"),
        ("data/gone.txt", "f", 0o644, b"whited out by layer 2\n"),
        ("data/modify.txt", "f", 0o644, b"original in layer 1\n"),
        ("data/todelete.txt", "f", 0o600, b"deleted by the container\n"),
        ("data/olddir/x.txt", "f", 0o644, b"deleted with its dir by the container\n"),
        ("data/gonedir/a.txt", "f", 0o644, b"in a dir whited out by layer 2\n"),
        ("data/gonedir/sub/b.txt", "f", 0o644, b"deep in a dir whited out by layer 2\n"),
        ("opq/old1.txt", "f", 0o644, b"hidden by the opaque dir of layer 2\n"),
        ("opq/sub/old2.txt", "f", 0o644, b"hidden by the opaque dir of layer 2\n"),
        ("opq/.hidden-old", "f", 0o644, b"hidden by the opaque dir of layer 2\n"),
    ]
    return spec


LAYER2 = [
    ("data", "d", 0o755, None),
    ("data/gone.txt", "w", 0, None),
    ("data/gonedir", "w", 0, None),
    ("data/modify.txt", "f", 0o644, b"modified in layer 2\n"),
    ("data/l2file.txt", "f", 0o640, b"layer 2 file with a hard link\n"),
    ("data/l2hard.txt", "h", 0o640, "data/l2file.txt"),
    ("data/link", "l", 0o777, "keep.txt"),
    ("data/abslink", "l", 0o777, "/data/modify.txt"),
    ("opq", "d", 0o750, None),
    ("opq", "o", 0, None),
    ("opq/new.txt", "f", 0o644, b"only layer 2 in the opaque dir\n"),
]


def tar_layer(spec):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, data in spec:
            name = path
            if kind == "w":
                name = os.path.join(os.path.dirname(path), ".wh." + os.path.basename(path))
            elif kind == "o":
                name = path + "/.wh..wh..opq"
            ti = tarfile.TarInfo(name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mtime = MTIME
            ti.mode = mode if kind not in "wo" else 0o644
            body = None
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "f":
                ti.size = len(data)
                body = io.BytesIO(data)
            elif kind in "wo":
                ti.size = 0
                body = io.BytesIO(b"")
            elif kind == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
            elif kind == "h":
                ti.type = tarfile.LNKTYPE
                ti.linkname = data
            tar.addfile(ti, body)
    return buf.getvalue()


def goarch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm",
            "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(m, m)


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def image(out, name, busybox):
    blobs = {}

    def blob(b):
        d = digest(b)
        blobs[d] = b
        return d

    layers = [tar_layer(layer1_spec(busybox)), tar_layer(LAYER2)]
    diff_ids = [digest(b) for b in layers]
    config = {
        "architecture": goarch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "e2e layer %d" % (i + 1)}
                    for i in range(len(layers))],
    }
    cb = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(cb), "size": len(cb)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": blob(b), "size": len(b)} for b in layers],
    }
    mb = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blob(mb), "size": len(mb),
            "platform": {"architecture": goarch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        def add(path, data):
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = MTIME
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for d in sorted(blobs):
            add("blobs/sha256/" + d.split(":", 1)[1], blobs[d])
        add("index.json", json.dumps(index, sort_keys=True).encode())
    # chain IDs: the snapshot keys of the committed layers
    chain = diff_ids[0]
    print(chain)
    for d in diff_ids[1:]:
        chain = digest((chain + " " + d).encode())
        print(chain)


# ---------------------------------------------------------------- checking
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")


def scan(top):
    """{path: (kind, st, extra)} of a layer directory, whiteouts normalised:
    kind w for char 0/0 or .wh.NAME, o for an opaque dir marker (xattr or
    .wh..wh..opq) in addition to the dir's own d entry."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir:
            for x in OPAQUE_XATTRS:
                try:
                    if os.getxattr(dirpath, x, follow_symlinks=False) == b"y":
                        out[(rel_dir, "o")] = None
                except OSError:
                    pass
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.join(rel_dir, name)
            st = os.lstat(full)
            if name == ".wh..wh..opq":
                out[(rel_dir, "o")] = None
            elif name.startswith(".wh."):
                out[(os.path.join(rel_dir, name[4:]), "w")] = st
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[(rel, "w")] = st
            elif stat.S_ISDIR(st.st_mode):
                out[(rel, "d")] = st
            elif stat.S_ISREG(st.st_mode):
                out[(rel, "f")] = st
            elif stat.S_ISLNK(st.st_mode):
                out[(rel, "l")] = st
            else:
                out[(rel, "?")] = st
    return out


def describe(key):
    return "%s (%s)" % (key[0], {"d": "dir", "f": "file", "l": "symlink", "w": "whiteout",
                                  "o": "opaque marker", "h": "hard link", "?": "special"}[key[1]])


def check_spec(top, spec, optional=(), tar_mtimes=True):
    """Problems of directory top against spec; entries of optional may be
    present or not (and are then checked); tar_mtimes: files and symlinks
    must carry the tar's mtime."""
    problems = []
    found = scan(top)
    want = {}
    for path, kind, mode, data in spec:
        want[(path, "f" if kind == "h" else kind)] = (kind, mode, data)
    for path, kind, mode, data in optional:
        want.setdefault((path, kind), (kind, mode, data))
    required = {(p, "f" if k == "h" else k) for p, k, _, _ in spec}
    for key in sorted(set(found) | set(want)):
        if key not in found:
            if key in required:
                problems.append("%s: missing" % describe(key))
            continue
        if key not in want:
            problems.append("%s: unexpected (copied up or left over?)" % describe(key))
            continue
        kind, mode, data = want[key]
        st = found[key]
        if st is None or kind in "wo":
            continue
        full = os.path.join(top, key[0])
        if (st.st_uid, st.st_gid) != (0, 0):
            problems.append("%s: owner %d:%d, want 0:0" % (key[0], st.st_uid, st.st_gid))
        if kind in "fhd" and stat.S_IMODE(st.st_mode) != mode:
            problems.append("%s: mode %o, want %o" % (key[0], stat.S_IMODE(st.st_mode), mode))
        if tar_mtimes and kind in "fl" and int(st.st_mtime) != MTIME:
            problems.append("%s: mtime %d, want %d (from the tar)" % (key[0], st.st_mtime, MTIME))
        if kind == "f":
            with open(full, "rb") as f:
                got = f.read()
            if got != data:
                problems.append("%s: content %r, want %r" % (key[0], got[:60], data[:60]))
        elif kind == "l":
            got = os.readlink(full)
            if got != data:
                problems.append("%s: target %r, want %r" % (key[0], got, data))
        elif kind == "h":
            other = found.get((data, "f"))
            if other is None or (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
                problems.append("%s: not a hard link of %s" % (key[0], data))
            elif st.st_nlink != 2:
                problems.append("%s: nlink %d, want 2" % (key[0], st.st_nlink))
    return problems


def layer_spec(n, busybox):
    return layer1_spec(busybox) if n == 1 else LAYER2


def check_layer(n, top, busybox):
    spec = layer_spec(n, busybox)
    optional = []
    if n == 2:
        # containerd's applier on a non-overlay mount empties the opaque
        # directory (a whiteout per lower child) instead of marking it
        # opaque; either makes layer 1's children invisible.
        optional = [(p, "w", 0, None) for p, _, _, _ in layer1_spec(busybox)
                    if os.path.dirname(p) == "opq"]
        if not (("opq", "o") in scan(top)):
            spec = [e for e in spec if e[1] != "o"] + optional
    return check_spec(top, spec, optional)


def find_layer(root, n, busybox):
    marker = {1: "bin/busybox", 2: "data/l2file.txt"}[n]
    base = os.path.join(root, "snapshots")
    hits = [os.path.join(base, d, "fs") for d in sorted(os.listdir(base))
            if os.path.lexists(os.path.join(base, d, "fs", marker))]
    if len(hits) != 1:
        sys.stderr.write("layer %d: %d snapshot dirs hold %s: %s\n" % (n, len(hits), marker, hits))
        return 1
    print(hits[0])
    return 0


# The changes the container of e2e.sh's upper test makes (CHANGES there).
UPPER = [
    ("data", "d", 0o755, None),
    ("data/new.txt", "f", 0o644, b"written\n"),
    ("data/keep.txt", "f", 0o644, b"keep from layer 1\nappended\n"),
    ("data/todelete.txt", "w", 0, None),
    ("data/olddir", "w", 0, None),
]
# Mount points runc may create in the container's root (ctr's default spec
# mounts /run; the image has /proc, /dev, /sys).
# A new directory that replaces nothing need not be opaque (the kernel's
# rule), but may be (1.10 marks every new directory).
UPPER_OPTIONAL = [("run", "d", 0o755, None), ("run", "o", 0, None)]


def check_upper(top):
    # the files the container wrote have its mtimes, not the tar's
    return check_spec(top, UPPER, UPPER_OPTIONAL, tar_mtimes=False)


def shim_socket(address, ns, cid):
    # containerd 1.6 runtime/v2/shim SocketAddress: sha256 of
    # filepath.Join(address, namespace, id) under /run/containerd/s
    p = os.path.normpath(os.path.join(address, ns, cid))
    print("/run/containerd/s/" + hashlib.sha256(p.encode()).hexdigest())


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "image" and len(argv) == 5:
        image(argv[2], argv[3], argv[4])
    elif cmd == "find-layer" and len(argv) == 5:
        return find_layer(argv[2], int(argv[3]), argv[4])
    elif cmd == "check-layer" and len(argv) == 5:
        for p in check_layer(int(argv[2]), argv[3], argv[4]):
            print(p)
    elif cmd == "check-upper" and len(argv) == 3:
        for p in check_upper(argv[2]):
            print(p)
    elif cmd == "shim-socket" and len(argv) == 5:
        shim_socket(argv[2], argv[3], argv[4])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
