#!/usr/bin/env python3
"""Image fixtures of the oci plugin's integration test (oci.sh).

  oci_image.py make DIR   generates an image of three layers as an OCI layout
                          in DIR/layout (image "v1": tar+gzip, tar, tar+zstd,
                          bottom first),
                          the same layers unpacked as an overlay lower layer
                          (DIR/unpacked/N: whiteouts as char 0/0 devices,
                          opaque directories with trusted.overlay.opaque=y, as
                          containerd's overlay unpacker writes them), and each
                          blob alone in DIR/blob.N.
  oci_image.py view ROOT  prints a tree: one line an entry, sorted: type, mode,
                          owner, size, content hash, link target, user.*
                          xattrs, mtime (of a day ago or later: `recent`),
                          and which entries are hard links of which.
"""
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time


def layer1():
    e = []
    e.append(("etc/", tarfile.DIRTYPE, 0o755, b"", {}))
    e.append(("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0::/root:/bin/sh\n", {}))
    e.append(("etc/gone", tarfile.REGTYPE, 0o600, b"to be whited out\n", {}))
    e.append(("opq/", tarfile.DIRTYPE, 0o755, b"", {}))
    e.append(("opq/old", tarfile.REGTYPE, 0o644, b"hidden by an opaque dir\n", {}))
    e.append(("bin/", tarfile.DIRTYPE, 0o755, b"", {}))
    e.append(("bin/tool", tarfile.REGTYPE, 0o4755, bytes(range(256)) * 4000, {"user.origin": "layer1"}))
    e.append(("bin/hard", tarfile.LNKTYPE, 0o4755, b"bin/tool", {}))
    e.append(("bin/sym", tarfile.SYMTYPE, 0o777, b"tool", {}))
    e.append(("run/fifo", tarfile.FIFOTYPE, 0o600, b"", {}))
    e.append(("big", tarfile.REGTYPE, 0o644, os.urandom(1 << 20) * 3 + b"tail", {}))
    return e


def layer2():
    return [
        ("etc/.wh.gone", tarfile.REGTYPE, 0o644, b"", {}),
        ("opq/.wh..wh..opq", tarfile.REGTYPE, 0o644, b"", {}),
        ("opq/new", tarfile.REGTYPE, 0o644, b"in the opaque dir\n", {}),
        ("etc/motd", tarfile.REGTYPE, 0o644, b"layer 2\n", {}),
    ]


def layer3():
    return [
        ("etc/passwd", tarfile.REGTYPE, 0o600, b"root:x:0:0::/root:/bin/bash\n", {}),
        ("home/user/", tarfile.DIRTYPE, 0o700, b"", {}),
        ("home/user/notes", tarfile.REGTYPE, 0o640, b"notes\n" * 10000, {"user.tag": "top"}),
    ]


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, typ, mode, data, xattrs in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = typ, mode, 1700000000
            ti.uid, ti.gid = (1000, 1000) if name.startswith("home") else (0, 0)
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
            if typ in (tarfile.LNKTYPE, tarfile.SYMTYPE):
                ti.linkname = data.decode()
                t.addfile(ti)
            elif typ == tarfile.REGTYPE:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return buf.getvalue()


def unpack(entries, root):
    """Extracts as containerd's overlay unpacker would."""
    os.makedirs(root, exist_ok=True)
    for name, typ, mode, data, xattrs in entries:
        path = os.path.join(root, name.rstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        base = os.path.basename(path)
        if base == ".wh..wh..opq":
            os.setxattr(os.path.dirname(path), "trusted.overlay.opaque", b"y")
            continue
        if base.startswith(".wh."):
            os.mknod(os.path.join(os.path.dirname(path), base[4:]), stat.S_IFCHR | 0o000, os.makedev(0, 0))
            continue
        if typ == tarfile.DIRTYPE:
            os.makedirs(path, exist_ok=True)
        elif typ == tarfile.REGTYPE:
            with open(path, "wb") as f:
                f.write(data)
        elif typ == tarfile.LNKTYPE:
            os.link(os.path.join(root, data.decode()), path)
            continue
        elif typ == tarfile.SYMTYPE:
            os.symlink(data.decode(), path)
        elif typ == tarfile.FIFOTYPE:
            os.mkfifo(path)
        uid = 1000 if name.startswith("home") else 0
        os.lchown(path, uid, uid)
        if typ != tarfile.SYMTYPE:
            os.chmod(path, mode)
        for k, v in xattrs.items():
            os.setxattr(path, k, v.encode(), follow_symlinks=False)
        os.utime(path, (1700000000, 1700000000), follow_symlinks=False)


def put_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d


def make(out):
    layout = os.path.join(out, "layout")
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    descs = []
    kinds = [("+gzip", lambda b: gzip.compress(b, 6)), ("", None),
             ("+zstd", lambda b: subprocess.run(["zstd", "-q", "-c"], input=b, capture_output=True, check=True).stdout)]
    for i, (entries, (suffix, comp)) in enumerate(zip([layer1(), layer2(), layer3()], kinds)):
        raw = tar_bytes(entries)
        blob = comp(raw) if comp else raw
        unpack(entries, os.path.join(out, "unpacked", str(i + 1)))
        with open(os.path.join(out, "blob.%d" % (i + 1)), "wb") as f:
            f.write(blob)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + suffix,
                      "digest": put_blob(layout, blob), "size": len(blob)})
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put_blob(layout, config), "size": len(config)},
                           "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put_blob(layout, manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


def view(root):
    inodes, recent = {}, time.time() - 86400
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            line = "%s %o %d:%d" % (rel, st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    line += " size=%d sha=%s" % (st.st_size, hashlib.sha256(f.read()).hexdigest()[:16])
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                line += " -> " + os.readlink(p)
            elif stat.S_ISCHR(st.st_mode):
                line += " dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            for x in sorted(os.listxattr(p, follow_symlinks=False)):
                if x.startswith("user."):
                    line += " %s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).decode())
            if not stat.S_ISDIR(st.st_mode):  # directories: the time they were unpacked
                # a change's time is this run's: the two sides' may be a second apart
                line += " mtime=%s" % ("recent" if st.st_mtime > recent else int(st.st_mtime))
            print(line)
    for names in sorted(v for v in inodes.values() if len(v) > 1):
        print("hard links: " + " ".join(sorted(names)))


if __name__ == "__main__":
    {"make": make, "view": view}[sys.argv[1]](sys.argv[2])
