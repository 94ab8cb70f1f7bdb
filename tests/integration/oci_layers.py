#!/usr/bin/env python3
"""Image layers of the oci plugin's differential test (oci_diff.sh): the
layers generated as tar streams, written as OCI layouts, and unpacked as
containerd's overlay unpacker writes them.  Used by oci_diff.py.

The image (bottom first), every layer with explicit entries for its
directories (the root "./" too), so that their owners, modes and times are
the archive's on both sides:
  1 (PAX)  files, a set-uid file with hard links in two directories, a
           symlink, char and block devices, a fifo, user.* and trusted.*
           xattrs (one binary), security.capability, POSIX ACLs (access and
           default, the binary xattr format), set-gid and sticky
           directories, owners above the ustar range, fractional mtimes, a
           255-byte name, a path and link targets longer than 100 bytes
           (PAX path and linkpath), a directory of 20,000 empty files
  2 (GNU)  whiteouts (.wh.NAME of a file, of a directory tree, in the big
           directory), an opaque directory (.wh..wh..opq), a 255-byte name,
           a long path, long link targets (GNU 'L' and 'K' records), a
           base-256 owner, hard links across directories
  3 (PAX)  a file replacing a file, a directory replacing a file, a file
           replacing a directory, an opaque directory, a whiteout, xattrs
"""
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

T = 1700000000          # the archive's times: T + layer*1000 + small offsets
BIG = 20000             # entries of many/


class E:
    """One tar entry."""

    def __init__(self, name, typ=tarfile.REGTYPE, mode=0o644, data=b'', uid=0, gid=0,
                 mtime=None, link='', xattrs=None, dev=(0, 0)):
        self.name, self.typ, self.mode, self.data = name, typ, mode, data
        self.uid, self.gid, self.mtime, self.link = uid, gid, mtime, link
        self.xattrs, self.dev = xattrs or {}, dev


def D(name, mode=0o755, **kw):
    return E(name.rstrip('/') + '/', tarfile.DIRTYPE, mode, **kw)


def acl(entries):
    """The binary POSIX ACL xattr: le32 version 2, then (le16 tag, le16
    perm, le32 id) sorted by tag and id."""
    tags = {'user_obj': 1, 'user': 2, 'group_obj': 4, 'group': 8, 'mask': 0x10, 'other': 0x20}
    out = (2).to_bytes(4, 'little')
    for tag, perm, ident in sorted(((tags[t], p, i) for t, p, i in entries)):
        out += tag.to_bytes(2, 'little') + perm.to_bytes(2, 'little') + ident.to_bytes(4, 'little')
    return out


U = 0xffffffff         # the id of the ACL entries that have none
LONG255 = 'n' * 251 + '.255'
DEEP = 'long/' + '/'.join(['d%02d-%s' % (i, 'x' * 26) for i in range(5)]) + '/file'    # > 100 bytes
GDEEP = 'gnu/' + '/'.join(['g%02d-%s' % (i, 'y' * 26) for i in range(5)]) + '/file'
CAP_NET_RAW = ((0x02000000).to_bytes(4, 'little') + (1 << 13).to_bytes(4, 'little') + bytes(4) + bytes(8))


def layer1():
    t = T + 1000
    e = [D('./', mtime=t - 5), D('etc', mtime=t - 4),
         E('etc/passwd', data=b'root:x:0:0::/root:/bin/sh\n'),
         E('etc/gone', mode=0o600, data=b'to be whited out\n'),
         E('etc/shadow', mode=0o640, gid=42, data=b'root:*:19000::::::\n'),
         D('bin'), E('bin/tool', mode=0o4755, data=bytes(range(256)) * 4096, xattrs={'user.origin': b'layer1'}),
         E('bin/hard', tarfile.LNKTYPE, link='bin/tool'),
         E('bin/sym', tarfile.SYMTYPE, 0o777, link='tool'),
         E('bin/ping', mode=0o755, data=b'\x7fELF ping', xattrs={'security.capability': CAP_NET_RAW}),
         D('usr'), D('usr/lib', mtime=t - 3), E('usr/lib/tool-link', tarfile.LNKTYPE, link='bin/tool'),
         D('dev'), E('dev/null', tarfile.CHRTYPE, 0o666, dev=(1, 3)),
         E('dev/sda', tarfile.BLKTYPE, 0o660, gid=6, dev=(8, 0)),
         E('dev/fifo', tarfile.FIFOTYPE, 0o600),
         # modes agree with the ACLs' masks (setting an ACL sets the group bits)
         D('acl', 0o770, xattrs={
             'system.posix_acl_access': acl([('user_obj', 7, U), ('user', 7, 1000), ('group_obj', 5, U),
                                             ('mask', 7, U), ('other', 0, U)]),
             'system.posix_acl_default': acl([('user_obj', 7, U), ('user', 5, 1001), ('group_obj', 5, U),
                                              ('mask', 5, U), ('other', 0, U)])}),
         E('acl/file', mode=0o640, data=b'acl\n', xattrs={
             'system.posix_acl_access': acl([('user_obj', 6, U), ('user', 4, 1000), ('group_obj', 4, U),
                                             ('mask', 4, U), ('other', 0, U)])}),
         D('xattr'), E('xattr/file', data=b'x\n', xattrs={
             'user.a': b'1', 'user.bin': b'\x00\x01\xff\xfe binary', 'trusted.t': b'trusted value'}),
         E('xattr/sym', tarfile.SYMTYPE, 0o777, link='file', xattrs={'trusted.onlink': b'y'}),
         D('setid', 0o2775, gid=100), E('setid/sgid-file', mode=0o2755, gid=100, data=b'sgid\n'),
         E('setid/suid-file', mode=0o4711, uid=1000, data=b'suid\n'),
         D('tmp', 0o1777),
         D('home'), D('home/user', 0o700, uid=1000, gid=1000),
         E('home/user/notes', mode=0o640, uid=1000, gid=1000, data=b'notes\n' * 10000, mtime=t + 0.25),
         E('home/user/far', uid=4000000, gid=4000001, data=b'a high owner\n', mtime=t + 0.5),
         E('home/nobody', uid=65534, gid=65534, data=b'nobody\n', mtime=t - 100000.75),
         D('long'), E('long/' + LONG255, data=b'255\n'), E(DEEP, data=b'deep\n'),
         E('long/lsym', tarfile.SYMTYPE, 0o777, link='/' + DEEP), E('long/hl', tarfile.LNKTYPE, link=DEEP),
         D('opq'), E('opq/old', data=b'hidden by an opaque dir\n'), D('opq/keep'), E('opq/keep/f'),
         D('opq3'), E('opq3/old', data=b'hidden by layer 3\n'),
         D('tree'), D('tree/a'), D('tree/a/b'), E('tree/a/b/c', data=b'c\n'), E('tree/a/f'),
         E('tree/a/b/sym', tarfile.SYMTYPE, 0o777, link='../f'),
         D('gone-dir'), D('gone-dir/sub'), E('gone-dir/sub/f', data=b'gone\n'),
         D('mv'), D('mv/dir'), E('mv/dir/x', data=b'x\n'), D('mv/dir/sub'), E('mv/dir/sub/y', data=b'y\n'),
         E('mv/file', data=b'moved\n'),
         D('data'), E('data/mid', data=os.urandom(1 << 18)),
         E('repl', data=b'a file, a directory above\n'), D('repl2'), E('repl2/f', data=b'below a file\n'),
         D('many', mtime=t - 2)]
    e += [E('many/f%05d' % i, mode=0o644, mtime=t) for i in range(BIG)]
    return e


def layer2():
    t = T + 2000
    return [D('./', mtime=t - 5), D('etc', mtime=t - 4), E('etc/.wh.gone'),
            E('etc/motd', data=b'layer 2\n'), E('.wh.gone-dir'),
            D('opq', mtime=t - 3), E('opq/.wh..wh..opq'), E('opq/new', data=b'in the opaque dir\n'),
            D('gnu'), E('gnu/' + LONG255, data=b'gnu 255\n'), E(GDEEP, data=b'gnu deep\n', uid=3000000, gid=5),
            E('gnu/lsym', tarfile.SYMTYPE, 0o777, link='/' + GDEEP),
            E('gnu/hl', tarfile.LNKTYPE, link=GDEEP),
            D('data2'), E('data2/mid2', data=os.urandom(1 << 18), uid=7, gid=8),
            D('l2'), E('l2/a', mode=0o600, data=b'linked in layer 2\n'), D('l2/other'),
            E('l2/other/b', tarfile.LNKTYPE, link='l2/a'),
            D('many', mtime=t - 2), E('many/.wh.f00007'), E('many/new', data=b'new\n')]


def layer3():
    t = T + 3000
    return [D('./', mtime=t - 5), D('etc', mtime=t - 4),
            E('etc/passwd', mode=0o600, data=b'root:x:0:0::/root:/bin/bash\n'),
            E('etc/.wh.shadow-old'), E('l3file', mode=0o644, data=b'layer 3\n', xattrs={'user.tag': b'top'}),
            D('repl', 0o750, uid=5, gid=5), E('repl/inside', data=b'inside\n'),
            E('repl2', data=b'a file over a directory\n'),
            D('opq3', 0o711, mtime=t - 1), E('opq3/.wh..wh..opq'), E('opq3/new', data=b'layer 3\n'),
            D('xattr', mtime=t - 1), E('xattr/file3', data=b'3\n', xattrs={'user.three': b'3'}),
            D('home'), D('home/user', 0o700, uid=1000, gid=1000),
            E('home/user/.wh.far')]


LAYERS = [(layer1, tarfile.PAX_FORMAT), (layer2, tarfile.GNU_FORMAT), (layer3, tarfile.PAX_FORMAT)]


def tar_bytes(entries, fmt, t):
    buf = io.BytesIO()
    by_name = {x.name: x for x in entries}
    with tarfile.open(fileobj=buf, mode='w', format=fmt) as tf:
        for x in entries:
            ti = tarfile.TarInfo(x.name)
            # a hard link's header has its target's stat, as tar writers make it
            a = by_name[x.link] if x.typ == tarfile.LNKTYPE else x
            ti.type, ti.mode, ti.uid, ti.gid = x.typ, a.mode, a.uid, a.gid
            ti.mtime = a.mtime if a.mtime is not None else t
            ti.uname = ti.gname = ''
            ti.devmajor, ti.devminor = x.dev
            if x.xattrs:
                assert fmt == tarfile.PAX_FORMAT, x.name
                ti.pax_headers = {'SCHILY.xattr.' + k: v.decode('utf-8', 'surrogateescape')
                                  for k, v in x.xattrs.items()}
            if x.typ in (tarfile.LNKTYPE, tarfile.SYMTYPE):
                ti.linkname = x.link
            if x.typ == tarfile.REGTYPE:
                ti.size = len(x.data)
                tf.addfile(ti, io.BytesIO(x.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def with_parents(entries):
    """Entries for the directories the layer names only as parents (the
    plugin gives those the blob's mtime, an unpacker the time it ran)."""
    have, out = {x.name.rstrip('/') for x in entries}, []
    for x in entries:
        parts = x.name.rstrip('/').split('/')
        for i in range(1, len(parts)):
            p = '/'.join(parts[:i])
            if p not in have:
                have.add(p)
                out.append(D(p))
        out.append(x)
    return out


def generated():
    """The three layers' uncompressed tar streams, bottom first."""
    return [tar_bytes(with_parents(fn()), fmt, T + 1000 * (i + 1)) for i, (fn, fmt) in enumerate(LAYERS)]


# ---------------------------------------------------------------- compression, layouts

MEDIA = 'application/vnd.oci.image.layer.v1.tar'
SUFFIX = {'tar': '', 'gzip': '+gzip', 'zstd': '+zstd'}


def compress(raw, kind):
    if kind == 'gzip':
        return gzip.compress(raw, 1)
    if kind == 'zstd':
        return subprocess.run(['zstd', '-q', '-c', '-3'], input=raw, capture_output=True, check=True).stdout
    return raw


def decompress(blob, media):
    if media.endswith('+gzip') or media.endswith('.gzip'):
        return gzip.decompress(blob)
    if media.endswith('+zstd'):
        return subprocess.run(['zstd', '-q', '-d', '-c'], input=blob, capture_output=True, check=True).stdout
    return blob


def put_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(layout, 'blobs', 'sha256', d)
    if not os.path.exists(p):
        with open(p, 'wb') as f:
            f.write(data)
    return {'digest': 'sha256:' + d, 'size': len(data)}


def write_layout(layout, images):
    """images: {ref: [(raw tar, compression kind), ...] bottom first}."""
    layout = os.fsdecode(layout)
    os.makedirs(os.path.join(layout, 'blobs', 'sha256'), exist_ok=True)
    with open(os.path.join(layout, 'oci-layout'), 'w') as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    manifests = []
    for ref, layers in images.items():
        descs = [dict(put_blob(layout, compress(raw, kind)), mediaType=MEDIA + SUFFIX[kind]) for raw, kind in layers]
        config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'rootfs': {
            'type': 'layers', 'diff_ids': ['sha256:' + hashlib.sha256(r).hexdigest() for r, _ in layers]}}).encode()
        manifest = json.dumps({'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                               'config': dict(put_blob(layout, config),
                                              mediaType='application/vnd.oci.image.config.v1+json'),
                               'layers': descs}).encode()
        manifests.append(dict(put_blob(layout, manifest), mediaType='application/vnd.oci.image.manifest.v1+json',
                              annotations={'org.opencontainers.image.ref.name': ref}))
    with open(os.path.join(layout, 'index.json'), 'w') as f:
        json.dump({'schemaVersion': 2, 'manifests': manifests}, f)


def layout_layers(layout, ref):
    """The uncompressed layers of image ref of a layout, bottom first."""
    layout = os.fsdecode(layout)
    def blob(desc):
        with open(os.path.join(layout, 'blobs', *desc['digest'].split(':')), 'rb') as f:
            return f.read()
    with open(os.path.join(layout, 'index.json')) as f:
        index = json.load(f)
    m = [d for d in index['manifests'] if d.get('annotations', {}).get('org.opencontainers.image.ref.name') == ref]
    manifest = json.loads(blob(m[0]))
    return [decompress(blob(d), d['mediaType']) for d in manifest['layers']]


# ---------------------------------------------------------------- unpacking


def pax_ns(ti):
    """The entry's mtime in ns, exactly as the archive says it."""
    s = ti.pax_headers.get('mtime')
    if s is None:
        return int(ti.mtime) * 10**9
    neg, s = s.startswith('-'), s.lstrip('-')
    whole, _, frac = s.partition('.')
    ns = int(whole) * 10**9 + int((frac + '000000000')[:9])
    return -ns if neg else ns


def unpack(raw, root):
    """Extracts an uncompressed layer as containerd's overlay unpacker does:
    whiteouts as char 0/0 devices, opaque directories as
    trusted.overlay.opaque=y, owners, modes, xattrs, then times (directories
    after their contents)."""
    root = os.fsdecode(root)
    os.makedirs(root, exist_ok=True)
    times = []
    # Go's reader ends the archive where the stream ends after an entry's
    # data, before its padding (umoci 0.4's opaque inserts); tarfile needs it
    raw += bytes(-len(raw) % 512 + 1024)
    with tarfile.open(fileobj=io.BytesIO(raw), mode='r:') as tf:
        for ti in tf:
            rel = os.path.normpath(ti.name.lstrip('/'))
            path = root if rel == '.' else os.path.join(root, rel)
            parent, base = os.path.split(path)
            os.makedirs(parent, exist_ok=True)
            if base == '.wh..wh..opq':
                os.setxattr(parent, 'trusted.overlay.opaque', b'y')
                continue
            if base.startswith('.wh.'):
                path = os.path.join(parent, base[4:])
                remove(path)
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
                continue
            if not (ti.isdir() and os.path.isdir(path) and not os.path.islink(path)):
                remove(path)
            if ti.isdir():
                os.makedirs(path, exist_ok=True)
            elif ti.isreg():
                with open(path, 'wb') as f:
                    f.write(tf.extractfile(ti).read())
            elif ti.islnk():
                os.link(os.path.join(root, os.path.normpath(ti.linkname.lstrip('/'))), path)
                continue    # its attributes are its target's
            elif ti.issym():
                os.symlink(ti.linkname, path)
            elif ti.ischr() or ti.isblk() or ti.isfifo():
                kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK if ti.isblk() else stat.S_IFIFO
                os.mknod(path, kind | 0o600, os.makedev(ti.devmajor, ti.devminor))
            os.lchown(path, ti.uid, ti.gid)
            if not ti.issym():
                os.chmod(path, ti.mode)
            for k, v in ti.pax_headers.items():
                if k.startswith('SCHILY.xattr.'):
                    os.setxattr(path, k[13:], v.encode('utf-8', 'surrogateescape'), follow_symlinks=False)
            times.append((path, pax_ns(ti)))
    for path, ns in reversed(times):
        if os.path.lexists(path):
            os.utime(path, ns=(ns, ns), follow_symlinks=False)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for n in os.listdir(path):
            remove(os.path.join(path, n))
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)
