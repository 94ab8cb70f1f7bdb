"""Layers of the differential tests built from scenario entries: the
whiteout and opaque spellings of each variant (VARIANTS), apply (one entry
on a directory, or an op on a mount) and build (a whole layer, times last)."""
import errno, functools, hashlib, operator, os, stat, struct, subprocess

from ovlscenario import Entry
from ovlview import OPQ_XATTR, file_hash, jp


# Whiteout spelling: 'chr' = char 0/0, 'aufs' = .wh.NAME file.  Opaque
# spelling: 'trusted' (kernel), 'aufs' (.wh..wh..opq), 'user'
# (user.overlay.opaque), 'fuse' (user.fuseoverlayfs.opaque).
_MIXED = [('aufs', 'user'), ('chr', 'aufs'), ('aufs', 'fuse'), ('chr', 'trusted')]
VARIANTS = {   # name -> layer index (-1 = upper) -> (whiteout, opaque) spelling
    'kernel': lambda i: ('chr', 'trusted'),
    'aufs': lambda i: ('aufs', 'aufs'),
    'useropq': lambda i: ('chr', 'user'),
    'fuseopq': lambda i: ('chr', 'fuse'),
    'mixed': lambda i: _MIXED[(i + 1) % 4],   # every combination, layer by layer
}
BASE_MTIME = 1600000000
DEFAULT_MODE = {'dir': 0o755, 'file': 0o644, 'sparse': 0o644, 'fifo': 0o644,
                'socket': 0o755, 'chardev': 0o644, 'blockdev': 0o644}


def expand(entries):
    """`many` is shorthand; expand it so the builders see plain entries."""
    for e in entries:
        if e.kind != 'many':
            yield e
            continue
        kind, d = e.args[0].decode(), e.args[1]
        start, step, pre = e.num('start', 0), e.num('step', 1), e.kv.get('prefix', b'f')
        kv = {k: v for k, v in e.kv.items() if k in ('content', 'mode', 'uid', 'gid')}
        for k in range(e.num('count')):
            name = d + b'/' + pre + str(start + k * step).encode()
            yield Entry(kind, [name], kv, [], e.where)


def layer_key(entries, spelling):
    """Spelling that matters for this layer: layers without whiteouts (or
    opaque dirs) are the same in every variant and are built only once."""
    kinds = {e.kind if e.kind != 'many' else e.args[0].decode() for e in entries}
    return (spelling[0] if 'whiteout' in kinds else '-',
            spelling[1] if 'opaque' in kinds else '-')




def apply(root, e, spelling=None, default_mtime=None, mtimes=None):
    """Create one entry under root.  spelling=None means an op on a mount:
    no implicit parents, no defaults, errors propagate to be compared."""
    p, k, kv = jp(root, e.path), e.kind, e.kv
    building = spelling is not None
    if building:
        os.makedirs(os.path.dirname(p), 0o755, exist_ok=True)
    mode = e.num('mode', DEFAULT_MODE.get(k, 0o644))
    result = 'ok'
    if k in ('file', 'sparse', 'append'):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        flags |= os.O_APPEND if k == 'append' else os.O_TRUNC
        fd = os.open(p, flags, mode)
        try:
            size = e.num('size')
            if 'content' in kv:
                os.write(fd, kv['content'])
            elif size and k == 'file':
                blk = hashlib.sha256(e.path).digest() * 2048
                for off in range(0, size, len(blk)):
                    os.write(fd, blk[:size - off])
            if size is not None:
                os.ftruncate(fd, size)
            for off, d in e.data:
                os.pwrite(fd, d, off)
        finally:
            os.close(fd)
    elif k == 'dir':
        if not (building and os.path.isdir(p) and not os.path.islink(p)):
            os.mkdir(p, mode)
    elif k == 'symlink':
        os.symlink(e.args[1], p)
    elif k == 'hardlink':
        os.link(jp(root, e.args[1]), p, follow_symlinks=False)
    elif k == 'fifo':
        os.mkfifo(p, mode)
    elif k in ('socket', 'chardev', 'blockdev'):
        t = {'socket': stat.S_IFSOCK, 'chardev': stat.S_IFCHR, 'blockdev': stat.S_IFBLK}[k]
        dev = os.makedev(int(e.args[1]), int(e.args[2])) if k != 'socket' else 0
        os.mknod(p, t | mode, dev)
    elif k == 'xattr':
        name, val = e.args[1].split(b'=', 1)
        os.setxattr(p, name, val, follow_symlinks=False)
    elif k == 'rmxattr':
        os.removexattr(p, e.args[1], follow_symlinks=False)
    elif k in ('acl', 'defacl') and not building:
        # on a mount: the xattr itself, so that a failure is a real errno
        name = 'system.posix_acl_' + ('default' if k == 'defacl' else 'access')
        os.setxattr(p, name, encode_acl(e.args[1]), follow_symlinks=False)
    elif k in ('acl', 'defacl'):
        cmd = ['setfacl'] + (['-d'] if k == 'defacl' else []) + ['--set', e.args[1], '--', p]
        r = subprocess.run(cmd, stderr=subprocess.PIPE)
        if r.returncode:
            raise OSError(errno.EIO, 'setfacl: ' + r.stderr.decode(errors='replace').strip())
    elif k == 'whiteout':
        d, name = os.path.split(p)
        if spelling[0] == 'aufs' and len(name) <= 251:
            os.close(os.open(os.path.join(d, b'.wh.' + name), os.O_CREAT | os.O_WRONLY, 0o644))
        else:   # .wh.NAME of a 252..255-byte NAME cannot exist: use char 0/0
            os.mknod(p, stat.S_IFCHR | 0, os.makedev(0, 0))
    elif k == 'opaque':
        if not os.path.isdir(p):
            os.mkdir(p, 0o755)
        if spelling[1] == 'aufs':
            os.close(os.open(os.path.join(p, b'.wh..wh..opq'), os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            os.setxattr(p, OPQ_XATTR[spelling[1]], b'y')
    elif k == 'unlink':
        os.unlink(p)
    elif k == 'rmdir':
        os.rmdir(p)
    elif k == 'rename':
        os.rename(p, jp(root, e.args[1]))
    elif k == 'truncate':
        os.truncate(p, e.num('size'))
    elif k == 'chmod':
        os.chmod(p, int(e.args[1], 8), follow_symlinks=False)
    elif k == 'chown':
        u, g = e.args[1].split(b':')
        os.chown(p, int(u), int(g), follow_symlinks=False)
    elif k == 'read':
        result = 'ok:' + file_hash(p)
    # owner before mode: chown clears set-id bits
    # (a hard link shares its inode: only explicit keys may change it)
    if k in DEFAULT_MODE or k in ('symlink', 'hardlink'):
        if (building and k != 'hardlink') or 'uid' in kv or 'gid' in kv:
            os.chown(p, e.num('uid', 0), e.num('gid', 0), follow_symlinks=False)
        if k != 'symlink' and ((building and k != 'hardlink') or 'mode' in kv):
            os.chmod(p, mode)
    if mtimes is not None and k not in ('xattr', 'acl', 'defacl', 'whiteout'):
        mtimes[e.path] = e.num('mtime', default_mtime)
    return result


ACL_TAGS = {'u': 0x01, 'g': 0x04, 'm': 0x10, 'o': 0x20}   # named u/g: 0x02/0x08


def encode_acl(spec):
    """setfacl's short form (u::rw-,u:1000:r--,g::r--,m::r--,o::---) as a
    system.posix_acl_* value; a missing mask is computed as setfacl does."""
    ents = []
    for item in spec.decode().split(','):
        tag, q, perm = item.split(':')
        bits = sum(b for b, c in zip((4, 2, 1), 'rwx') if c in perm)
        t = ACL_TAGS[tag[0]] * (2 if q and tag[0] in 'ug' else 1)
        ents.append((t, int(q) if q else 0xffffffff, bits))
    if not any(t == 0x10 for t, _, _ in ents) and any(t in (2, 8) for t, _, _ in ents):
        ents.append((0x10, 0xffffffff, functools.reduce(
            operator.or_, (b for t, _, b in ents if t in (2, 4, 8)), 0)))
    return struct.pack('<I', 2) + b''.join(
        struct.pack('<HHI', t, b, i) for t, i, b in sorted(ents))


def build(root, entries, spelling, default_mtime):
    os.mkdir(root, 0o755)
    mtimes = {b'': default_mtime}
    for e in expand(entries):
        apply(root, e, spelling, default_mtime, mtimes)
    # times last, children before parents (creating entries touches dirs)
    for d, dirs, files in os.walk(root, topdown=False):
        for n in dirs + files + [None]:
            p = os.path.join(d, n) if n is not None else d
            rel = os.path.relpath(p, root) if p != root else b''
            t = mtimes.get(rel, default_mtime) * 10**9
            os.utime(p, ns=(t, t), follow_symlinks=False)
