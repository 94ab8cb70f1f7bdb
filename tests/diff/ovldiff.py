#!/usr/bin/python3
"""ovldiff: run one scenario on the kernel overlay and on fuse-overlayfs, compare.

Usage: ovldiff.py [--fuse BIN] [--tmp DIR] [--log FILE] [--keep]
                  [--ignore CHECK,...] SCENARIO.scn
Prints exactly one line, `PASS name` or `FAIL name: reason (first differences)`;
details go to --log (default stderr).  Exit 0 on PASS, 1 on FAIL, 2 on a
harness error.  Needs root, /dev/fuse, the kernel overlay, fusermount3.

SCENARIO FORMAT (one statement a line; `#` starts a comment line)
  Sections:  `layer N` (N = 0 is the top-most lower; missing N are empty
  layers), `upper` (contents of the upper layer: enables read-write mounts),
  `ops` (steps run on both read-write mounts, errno compared).
  Entries (in layer/upper; also usable as ops, then without implicit parents):
    file PATH [content=TEXT] [size=N] [data@OFF=TEXT]... (size without content:
                                  pattern-filled; data@ pwrites after it)
    sparse PATH size=N [data@OFF=TEXT]...         (holes: ftruncate, no fill)
    dir PATH | fifo PATH | socket PATH
    symlink PATH -> TARGET | hardlink PATH = EXISTING
    chardev PATH MAJ MIN | blockdev PATH MAJ MIN
    xattr PATH NAME=VALUE | acl PATH SPEC | defacl PATH SPEC  (setfacl --set)
    whiteout PATH | opaque PATH                  (layers/upper only)
    many KIND DIR count=N prefix=P [start=S] [step=T] [content=C]
                                  (KIND file|dir|fifo|whiteout; DIR/P<S+k*T>)
  Common keys: mode=0644 uid=N gid=N mtime=SECONDS.  Parent directories are
  created implicitly (0755).  Default mtime: 1.6e9 + 86400*layer, so a view
  taking a time from the wrong layer shows.
  Ops only: unlink P | rmdir P | rename A B | append P content=T |
    truncate P size=N | chmod P MODE | chown P UID:GID | rmxattr P NAME |
    read P (result carries a hash of the content) | ino P (`same` while P
    keeps the inode number it had at its first `ino` on this mount, else
    `changed`) | remount (unmount, mount again with the same options).
  Anywhere: probe PATH [ours=ERRNO] [expect=ERRNO|ok] -- lstat,
    open(O_NOFOLLOW|O_NONBLOCK), readlink and opendir(O_NOFOLLOW)+listdir of
    PATH must give the kernel's result on every mount (intermediate symlinks
    are followed by the VFS on both sides alike; do not probe devices: FUSE
    mounts are nodev).  `ours=ERRNO` (also on ops): ours must fail with ERRNO
    instead (the one masked difference, `.wh.` names, see COMPAT.md).
    `expect=` checks the kernel's own lstat result on every kernel mount, so
    that a scenario cannot pass vacuously if the layers were built wrong.
  Generation: `repeat VAR FROM TO` ... `end` (inclusive, nestable);
    `when EXPR STATEMENT` keeps STATEMENT only if EXPR is true (EXPR has no
    blanks; chain `when`s for several conditions).
  Tokens are split on blanks; in a token `{EXPR}` is replaced by the value of
  a small expression (ints, 'strings', + - * // %, comparisons, and/or/not,
  loop variables; `{'a'*255}` is a 255-byte name), then `\\xHH` gives any
  byte (invalid UTF-8 too), `\\s` a blank, `\\\\` a backslash.  Sizes take
  K/M/G suffixes.  Names starting with `.wh.` are refused in layers: the
  kernel shows them, ours hides them (masked difference).

WHAT IS COMPARED (kernel overlay on kernel-format layers vs ours on every
whiteout/opaque spelling, see VARIANTS): for every path (lstat, never
following symlinks) type, mode, uid, gid, size (not of directories: it is the
backing fs's history), nlink, mtime (read-only mounts), sha256 of regular
files, symlink target, rdev, user.* and POSIX ACL xattrs, the sorted readdir
listing, and which paths share an inode.  On ours readdir d_ino must equal
st_ino and d_type the lstat type.  With an upper: the same before and after
the ops, each op's errno, and after unmount the upper layers with whiteout
and opaque spellings normalised.
"""
import argparse, ast, errno, hashlib, operator, os, shutil, signal, stat
import subprocess, sys, tempfile, time

# ---------------------------------------------------------------- parsing

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
        ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_ast_cache = {}


def evaluate(expr, env):
    """A deliberately tiny evaluator: scenario files are data, never code."""
    tree = _ast_cache.get(expr)
    if tree is None:
        tree = _ast_cache[expr] = ast.parse(expr, mode='eval').body

    def ev(n):
        if isinstance(n, ast.Constant) and type(n.value) in (int, str):
            return n.value
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.BinOp) and type(n.op) in _BIN:
            return _BIN[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.Not)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else not v
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _CMP:
            return _CMP[type(n.ops[0])](ev(n.left), ev(n.comparators[0]))
        if isinstance(n, ast.BoolOp):
            vals = [ev(v) for v in n.values]
            return all(vals) if isinstance(n.op, ast.And) else any(vals)
        raise ValueError('unsupported expression: %r' % expr)
    return ev(tree)


def subst(tok, env):
    """Replace {EXPR} in a token, then decode \\xHH, \\s and \\\\ into bytes."""
    out, i = [], 0
    while True:
        j = tok.find('{', i)
        if j < 0:
            out.append(tok[i:])
            break
        k = tok.index('}', j)
        out += [tok[i:j], str(evaluate(tok[j + 1:k], env))]
        i = k + 1
    raw, res, i = ''.join(out).encode(), bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] == b'\\' and i + 1 < len(raw):
            c = raw[i + 1:i + 2]
            if c == b'x':
                res.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            res += b' ' if c == b's' else c
            i += 2
            continue
        res.append(raw[i])
        i += 1
    return bytes(res)


KEYS = ('content', 'mode', 'uid', 'gid', 'size', 'count', 'prefix', 'start',
        'step', 'ours', 'mtime', 'expect')
LAYER_KINDS = {'file', 'sparse', 'dir', 'fifo', 'socket', 'symlink', 'hardlink',
               'chardev', 'blockdev', 'xattr', 'acl', 'defacl', 'whiteout',
               'opaque', 'many'}
OP_KINDS = (LAYER_KINDS - {'whiteout', 'opaque', 'many'}) | {
    'unlink', 'rmdir', 'rename', 'append', 'truncate', 'chmod', 'chown',
    'rmxattr', 'read', 'ino', 'remount'}


class Entry:
    def __init__(self, kind, args, kv, data, where):
        self.kind, self.args, self.kv, self.data, self.where = kind, args, kv, data, where
        self.path = args[0] if args else b''

    def num(self, key, default=None):
        v = self.kv.get(key)
        return default if v is None else parse_num(v, 8 if key == 'mode' else 10)


def parse_num(v, base=10):
    """'12', '4K', '10M', '1G' (modes are octal)."""
    v = v.decode() if isinstance(v, bytes) else v
    mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}.get(v[-1:], 1)
    return int(v[:-1] if mult > 1 else v, base) * mult


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-4] if path.endswith('.scn') else os.path.basename(path)
        self.layers, self.upper, self.ops, self.probes = {}, None, [], []
        with open(path, encoding='utf-8') as f:
            lines = [(n + 1, l.split()) for n, l in enumerate(f)]
        lines = [(n, t) for n, t in lines if t and not t[0].startswith('#')]
        self.section = None
        self._run(lines, {})
        if not self.layers:
            raise ValueError('%s: no layer' % self.name)

    def _run(self, lines, env):
        i = 0
        while i < len(lines):
            n, toks = lines[i]
            if toks[0] == 'repeat':
                depth, j = 1, i + 1
                while depth:            # find the matching `end`
                    if j >= len(lines):
                        raise ValueError('line %d: repeat without end' % n)
                    depth += {'repeat': 1, 'end': -1}.get(lines[j][1][0], 0)
                    j += 1
                var, lo, hi = toks[1], int(evaluate(toks[2], env)), int(evaluate(toks[3], env))
                for v in range(lo, hi + 1):
                    self._run(lines[i + 1:j - 1], dict(env, **{var: v}))
                i = j
                continue
            try:
                self._statement(toks, env, n)
            except (ValueError, KeyError, IndexError) as e:
                raise ValueError('line %d: %s: %s' % (n, ' '.join(toks), e))
            i += 1

    def _statement(self, toks, env, n):
        while toks[0] == 'when':      # `when A when B STATEMENT` is A and B
            if not evaluate(toks[1], env):
                return
            toks = toks[2:]
        kind = toks[0]
        if kind == 'layer':
            self.section = ('layer', int(subst(toks[1], env)))
            self.layers.setdefault(self.section[1], [])
            return
        if kind in ('upper', 'ops'):
            self.section = (kind, None)
            if kind == 'upper':
                self.upper = self.upper or []
            return
        args, kv, data = [], {}, []
        for t in toks[1:]:
            key = t.split('=', 1)[0]
            if '=' in t and key in KEYS:
                kv[key] = subst(t.split('=', 1)[1], env)
            elif '=' in t and key.startswith('data@'):
                data.append((parse_num(subst(key[5:], env)), subst(t.split('=', 1)[1], env)))
            elif t not in ('->', '='):
                args.append(subst(t, env))
        e = Entry(kind, args, kv, data, n)
        if kind == 'probe':
            self.probes.append(e)
            return
        sec = self.section and self.section[0]
        if sec is None:
            raise ValueError('entry before any section')
        if kind not in (OP_KINDS if sec == 'ops' else LAYER_KINDS):
            raise ValueError('unknown %s statement %r' % (sec, kind))
        if sec != 'ops' and kind != 'many' and any(
                c.startswith(b'.wh.') for c in e.path.split(b'/')):
            raise ValueError('.wh. names cannot be in layers (masked difference)')
        if sec == 'ops':
            self.ops.append(e)
        elif sec == 'upper':
            self.upper.append(e)
        else:
            self.layers[self.section[1]].append(e)

# ---------------------------------------------------------------- building

# Whiteout spelling: 'chr' = char 0/0, 'aufs' = .wh.NAME file.  Opaque
# spelling: 'trusted' (kernel), 'aufs' (.wh..wh..opq), 'user'
# (user.overlay.opaque), 'fuse' (user.fuseoverlayfs.opaque).
OPQ_XATTR = {'trusted': 'trusted.overlay.opaque', 'user': 'user.overlay.opaque',
             'fuse': 'user.fuseoverlayfs.opaque'}
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


def jp(root, rel):
    return os.path.join(root, rel) if rel else root


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

# ---------------------------------------------------------------- viewing


def ename(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))


def file_hash(p):
    h = hashlib.sha256()
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()[:16]


INTERNAL_XATTRS = (b'user.overlay.', b'user.fuseoverlayfs.', b'trusted.overlay.')
TYPES = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink',
         stat.S_IFIFO: 'fifo', stat.S_IFSOCK: 'socket', stat.S_IFCHR: 'chardev',
         stat.S_IFBLK: 'blockdev'}


def record(p, st, with_mtime):
    t = TYPES.get(stat.S_IFMT(st.st_mode), '?')
    r = {'type': t, 'mode': '%04o' % stat.S_IMODE(st.st_mode),
         'owner': '%d:%d' % (st.st_uid, st.st_gid)}
    r['nlink'] = st.st_nlink
    if t != 'dir':
        r['size'] = st.st_size
    if with_mtime:
        r['mtime'] = st.st_mtime_ns
    try:
        if t == 'file':
            r['sha'] = file_hash(p) if st.st_size else '-'
        elif t == 'symlink':
            r['target'] = os.readlink(p)
        elif t in ('chardev', 'blockdev'):
            r['rdev'] = '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    except OSError as e:
        r['content'] = 'ERR ' + ename(e)
    try:
        xs = []
        for n in sorted(os.listxattr(p, follow_symlinks=False)):
            nb = n.encode('utf-8', 'surrogateescape')
            if (nb.startswith(b'user.') or nb.startswith(b'system.posix_acl_')) \
                    and not nb.startswith(INTERNAL_XATTRS):
                xs.append((n, os.getxattr(p, n, follow_symlinks=False)))
        r['xattrs'] = tuple(xs)
    except OSError as e:
        r['xattrs'] = 'ERR ' + ename(e)
    return r


def snapshot(mnt, ours, with_mtime):
    """The merged view: {relpath: record}, inode groups, and problems seen
    only on ours (d_ino/d_type mismatches)."""
    view, inos, problems = {}, {}, []
    st = os.lstat(mnt)
    view[b''] = record(mnt, st, with_mtime)
    inos.setdefault(st.st_ino, []).append(b'')
    todo = [b'']
    while todo:
        rel = todo.pop()
        path = jp(mnt, rel)
        try:
            with os.scandir(path) as it:
                ents = list(it)
        except OSError as e:
            view[rel]['list'] = 'ERR ' + ename(e)
            continue
        if not ours:    # masked difference: ours hides .wh. names
            hidden = [d for d in ents if d.name.startswith(b'.wh.')]
            ents = [d for d in ents if not d.name.startswith(b'.wh.')]
            unlink_dirs(view[rel], sum(d.is_dir(follow_symlinks=False) for d in hidden))
        view[rel]['list'] = tuple(sorted(d.name for d in ents))
        for d in ents:
            crel = rel + b'/' + d.name if rel else d.name
            try:
                st = os.lstat(d.path)
            except OSError as e:
                view[crel] = {'lstat': 'ERR ' + ename(e)}
                continue
            if ours and d.inode() != st.st_ino:
                problems.append('%s: readdir d_ino %d != st_ino %d' % (show(crel), d.inode(), st.st_ino))
            if ours and (d.is_dir(follow_symlinks=False) != stat.S_ISDIR(st.st_mode)
                         or d.is_symlink() != stat.S_ISLNK(st.st_mode)
                         or d.is_file(follow_symlinks=False) != stat.S_ISREG(st.st_mode)):
                problems.append('%s: readdir d_type disagrees with lstat' % show(crel))
            view[crel] = record(d.path, st, with_mtime)
            inos.setdefault(st.st_ino, []).append(crel)
            if stat.S_ISDIR(st.st_mode):
                todo.append(crel)
    # inode identity: for each path, the other paths sharing its inode
    for group in inos.values():
        if len(group) > 1:
            for p in group:
                view[p]['same-inode-as'] = tuple(sorted(q for q in group if q != p))
    return view, problems


def unlink_dirs(r, n):
    """Leave n hidden subdirectories out of a directory's nlink (a merged
    directory's 1 is no count)."""
    if n and r.get('nlink', 1) > 1:
        r['nlink'] -= n


def upper_view(root, kernel):
    """An upper layer with whiteout/opaque spellings normalised.  The kernel
    writes only char 0/0 whiteouts, so a .wh. name in its upper is a plain
    object made through the mount (masked difference): drop it there."""
    view = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root) if d != root else b''
        pre = rel + b'/' if rel else b''
        st = os.lstat(d)
        r = record(d, st, False)
        if kernel:
            hidden = [n for n in dirs if n.startswith(b'.wh.')]
            unlink_dirs(r, sum(not os.path.islink(os.path.join(d, n)) for n in hidden))
            dirs[:] = [n for n in dirs if not n.startswith(b'.wh.')]
            files = [n for n in files if not n.startswith(b'.wh.')]
        r['opaque'] = b'.wh..wh..opq' in files or any(
            xattr_is_y(d, x) for x in OPQ_XATTR.values())
        view[rel] = r
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            if n == b'.wh..wh..opq' or n in dirs and not os.path.islink(p):
                continue
            if n.startswith(b'.wh.'):
                view[pre + n[4:]] = {'type': 'whiteout'}
                continue
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                view[pre + n] = {'type': 'whiteout'}
            else:
                view[pre + n] = record(p, st, False)
    return view


def xattr_is_y(p, name):
    try:
        return os.getxattr(p, name, follow_symlinks=False) == b'y'
    except OSError:
        return False


def show(p):
    s = p.decode('utf-8', 'backslashreplace') if isinstance(p, bytes) else str(p)
    return (s[:40] + '...' + s[-12:]) if len(s) > 60 else (s or '.')


def showval(v):
    if isinstance(v, tuple) and len(v) > 6:
        return '(%d items)' % len(v)
    s = repr(v)
    return s if len(s) < 120 else s[:117] + '...'


def diff_views(k, o, label):
    out = []
    for p in sorted(set(k) | set(o)):
        if p not in o:
            out.append('%s: %s: missing on ours' % (label, show(p)))
        elif p not in k:
            out.append('%s: %s: extra on ours (%s)' % (label, show(p), o[p].get('type')))
        else:
            for f in sorted(set(k[p]) | set(o[p])):
                kv, ov = k[p].get(f), o[p].get(f)
                if kv == ov:
                    continue
                if f == 'list' and isinstance(kv, tuple) and isinstance(ov, tuple):
                    miss, extra = sorted(set(kv) - set(ov)), sorted(set(ov) - set(kv))
                    out.append('%s: %s: listing: missing %s extra %s%s' % (
                        label, show(p), [show(x) for x in miss[:3]], [show(x) for x in extra[:3]],
                        ' (duplicates)' if not miss and not extra else ''))
                else:
                    out.append('%s: %s: %s kernel=%s ours=%s' % (label, show(p), f, showval(kv), showval(ov)))
    return out

# ---------------------------------------------------------------- probes


def _listdir_nofollow(p):
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        return 'ok:%d' % len(os.listdir(fd))
    finally:
        os.close(fd)


PROBES = [
    ('lstat', lambda p: (os.lstat(p), 'ok')[1]),
    ('open', lambda p: (os.close(os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)), 'ok')[1]),
    ('readlink', lambda p: 'ok:' + os.readlink(p).decode('utf-8', 'backslashreplace')),
    ('listdir', _listdir_nofollow),
]


def run_probes(mnt, probes):
    res = {}
    for e in probes:
        for name, fn in PROBES:
            try:
                res[(e.path, name)] = fn(jp(mnt, e.path))
            except OSError as exc:
                res[(e.path, name)] = ename(exc)
    return res


def diff_probes(k, o, probes, label):
    out = []
    for e in probes:
        want, exp = e.kv.get('ours'), e.kv.get('expect')
        if exp is not None and k[(e.path, 'lstat')] != exp.decode():
            out.append('%s: scenario: kernel lstat %s = %s, expected %s' % (
                label, show(e.path), k[(e.path, 'lstat')], exp.decode()))
        for name, _ in PROBES:
            kv, ov = k[(e.path, name)], o[(e.path, name)]
            if want is not None and ov != want.decode():
                out.append('%s: probe %s %s: ours=%s, expected %s' % (label, name, show(e.path), ov, want.decode()))
            elif want is None and kv != ov:
                out.append('%s: probe %s %s: kernel=%s ours=%s' % (label, name, show(e.path), kv, ov))
    return out

# ---------------------------------------------------------------- mounts


class Mounts:
    """Every mount and daemon this run made, so that all are undone."""

    def __init__(self, base, fuse, pidfile, log):
        self.base, self.fuse, self.pidfile, self.log = base, fuse, pidfile, log
        self.active = []   # (mountpoint, Popen or None)
        self.opts = {}     # mountpoint -> (mount function, options)

    def kernel(self, mnt, opts):
        os.mkdir(mnt)
        self.log('mount -t overlay -o %s %s' % (os.fsdecode(opts), os.fsdecode(mnt)))
        r = subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', opts, mnt],
                           cwd=self.base, stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError('kernel overlay mount failed: ' + r.stderr.decode().strip())
        self.active.append((mnt, None))
        self.opts[mnt] = (self.kernel, opts)

    def remount(self, mnt):
        fn, opts = self.opts[mnt]
        problem = self.umount(mnt)
        os.rmdir(mnt)
        fn(mnt, opts)
        return problem

    def ours(self, mnt, opts):
        os.mkdir(mnt)
        self.log('%s -f -o %s %s' % tuple(map(os.fsdecode, (self.fuse, opts, mnt))))
        errf = open(os.path.join(self.base, os.path.basename(mnt) + b'.err'), 'w+b')
        # -f keeps the daemon our child: we know its PID and its exit status
        proc = subprocess.Popen([self.fuse, '-f', '-o', opts, mnt], cwd=self.base,
                                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
        proc.errf = errf
        self.opts[mnt] = (self.ours, opts)
        if self.pidfile:    # lets run.sh kill it by PID if we are killed
            with open(self.pidfile, 'a') as f:
                f.write('%d\n' % proc.pid)
        self.active.append((mnt, proc))
        deadline = time.time() + 10
        while not is_mounted(mnt):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError('fuse-overlayfs mount failed (exit %s): %s' % (
                    proc.poll(), daemon_output(proc)))
            time.sleep(0.01)

    def umount(self, mnt):
        """Unmount; returns a problem string for a daemon that misbehaved."""
        proc = [p for m, p in self.active if m == mnt][0]
        for i in range(50):     # a just-closed fd may keep it busy briefly
            if not is_mounted(mnt):
                break
            cmd = ['fusermount3', '-u', mnt] if proc else ['umount', mnt]
            if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(['umount', '-l', mnt], stderr=subprocess.DEVNULL)
        self.active = [(m, p) for m, p in self.active if m != mnt]
        if proc is None:
            return None
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()     # only ever our own child, by its PID
            proc.wait()
            return 'daemon did not exit after unmount'
        if rc != 0:
            return 'daemon exited with %s: %s' % (
                'signal %d' % -rc if rc < 0 else 'status %d' % rc, daemon_output(proc))
        return None

    def cleanup(self):
        for mnt, proc in reversed(list(self.active)):
            self.umount(mnt)


def is_mounted(mnt):
    with open('/proc/self/mountinfo', 'rb') as f:
        return any(l.split()[4] == mnt for l in f)


def daemon_output(proc):
    proc.errf.seek(0)
    return proc.errf.read()[-300:].decode(errors='replace').strip().replace('\n', ' | ')

# ---------------------------------------------------------------- the run


class Run:
    def __init__(self, scn, fuse, base, log, ignore, pidfile):
        self.scn, self.base, self.log, self.ignore = scn, base, log, ignore
        self.m = Mounts(base, fuse, pidfile, log)
        self.dirs = {}   # (layer, spelling key) -> dir name
        self.inos = {}   # (mount, path) -> st_ino at the first `ino` op
        n = max(scn.layers) + 1
        # the kernel wants two lowers when there is no upper: add an empty one
        self.nlayers = n + 1 if n == 1 else n
        for i in range(self.nlayers):
            scn.layers.setdefault(i, [])

    def layer_dir(self, i, spelling):
        key = (i, layer_key(self.scn.layers[i], spelling))
        if key not in self.dirs:
            name = ('%x' % len(self.dirs)).encode()     # short: 140 layers fit easily
            build(os.path.join(self.base, name), self.scn.layers[i], spelling,
                  BASE_MTIME + 86400 * i)
            self.dirs[key] = name
            self.log('layer %d %s -> %s' % (i, key[1], name.decode()))
        return self.dirs[key]

    def lowers(self, variant):
        return b':'.join(self.layer_dir(i, VARIANTS[variant](i)) for i in range(self.nlayers))

    def variants(self, with_upper):
        """Variants with distinct on-disk layers (others would repeat a run)."""
        seen, out = set(), []
        for v in VARIANTS:
            sig = tuple(layer_key(self.scn.layers[i], VARIANTS[v](i)) for i in range(self.nlayers))
            if with_upper:
                sig += (layer_key(self.scn.upper, VARIANTS[v](-1)),)
            if sig not in seen:
                seen.add(sig)
                out.append(v)
        return out

    def compare(self, label, kview, oview, kprobe, oprobe, problems):
        d = diff_views(kview, oview, label)
        if kprobe is not None:
            d += diff_probes(kprobe, oprobe, self.scn.probes, label)
        if 'dino' not in self.ignore:
            d += ['%s: %s' % (label, p) for p in problems]
        return d

    def strip(self, view):
        for r in view.values():
            for f in self.ignore:
                r.pop(f, None)
        return view

    def with_ours(self, label, name, opts, body):
        """Mount ours, run body(mnt, diffs) which appends to diffs.  A failed
        mount or a daemon that dies on the way is a difference too."""
        mnt, diffs = os.path.join(self.base, name), []
        try:
            self.m.ours(mnt, opts)
            body(mnt, diffs)
        except (OSError, RuntimeError) as e:
            diffs.append('%s: %s' % (label, e))
        if any(m == mnt for m, _ in self.m.active):
            p = self.m.umount(mnt)
            diffs += ['%s: %s' % (label, p)] if p else []
        return diffs

    def readonly(self):
        kmnt = os.path.join(self.base, b'mk')
        self.m.kernel(kmnt, b'lowerdir=' + self.lowers('kernel'))
        kview = self.strip(snapshot(kmnt, False, True)[0])
        kprobe = run_probes(kmnt, self.scn.probes)
        self.m.umount(kmnt)
        diffs = []
        for v in self.variants(False):
            def body(mnt, d, label='ro/' + v):
                oview, problems = snapshot(mnt, True, True)
                d += self.compare(label, kview, self.strip(oview),
                                    kprobe, run_probes(mnt, self.scn.probes), problems)
            diffs += self.with_ours('ro/' + v, b'm-' + v.encode(), b'lowerdir=' + self.lowers(v), body)
        return diffs

    def prepare_upper(self, tag, variant):
        """A fresh upper (and workdir) per mount: every mount writes its own."""
        u, w = [os.path.join(self.base, x + tag) for x in (b'u-', b'w-')]
        build(u, self.scn.upper or [], VARIANTS[variant](-1), BASE_MTIME - 86400)
        os.mkdir(w, 0o755)
        return u, b'lowerdir=%s,upperdir=u-%s,workdir=w-%s' % (self.lowers(variant), tag, tag)

    def readwrite(self):
        ku, kopts = self.prepare_upper(b'k', 'kernel')
        kmnt = os.path.join(self.base, b'r-k')
        # pin the kernel's optional features (all default off here) to what ours implements
        self.m.kernel(kmnt, kopts + b',redirect_dir=off,index=off,metacopy=off,xino=off')
        kbefore = self.strip(snapshot(kmnt, False, True)[0])
        kres = [self.op(kmnt, e) for e in self.scn.ops]
        kafter = self.strip(snapshot(kmnt, False, False)[0])
        kprobe = run_probes(kmnt, self.scn.probes)
        self.m.umount(kmnt)
        kup = self.strip(upper_view(ku, True))
        diffs = []
        for v in self.variants(True):
            label = 'rw/' + v
            u, opts = self.prepare_upper(v.encode(), v)

            def body(mnt, d):
                before, problems = snapshot(mnt, True, True)
                d += self.compare(label + '/before-ops', kbefore, self.strip(before),
                                 None, None, problems)
                for e, kr in zip(self.scn.ops, kres):
                    r = self.op(mnt, e)
                    want = e.kv.get('ours')
                    if (want is not None and r != want.decode()) or (want is None and r != kr):
                        d.append('%s: op line %d %s %s: kernel=%s ours=%s%s' % (
                            label, e.where, e.kind, show(e.path), kr, r,
                            ' (expected %s)' % want.decode() if want else ''))
                after, problems = snapshot(mnt, True, False)
                d += self.compare(label + '/after-ops', kafter, self.strip(after),
                                  kprobe, run_probes(mnt, self.scn.probes), problems)
            diffs += self.with_ours(label, b'r-' + v.encode(), opts, body)
            if 'upper' not in self.ignore:
                diffs += diff_views(kup, self.strip(upper_view(u, False)), 'upper/' + v)
        return diffs

    def op(self, mnt, e):
        try:
            if e.kind == 'remount':
                return self.m.remount(mnt) or 'ok'
            if e.kind == 'ino':
                ino = os.lstat(jp(mnt, e.path)).st_ino
                return 'same' if self.inos.setdefault((mnt, e.path), ino) == ino else 'changed'
            return apply(mnt, e)
        except OSError as exc:
            return ename(exc)

    def all(self):
        diffs = self.readonly()
        if self.scn.upper is not None or self.scn.ops:
            diffs += self.readwrite()
        return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fuse', default=os.environ.get('FUSE_OVERLAYFS'))
    ap.add_argument('--tmp', default=os.environ.get('TMPDIR', '/tmp'))
    ap.add_argument('--log')
    ap.add_argument('--pidfile', help='append the PID of every daemon started here')
    ap.add_argument('--keep', action='store_true', help='leave the built layers behind')
    ap.add_argument('--ignore', default='',
                    help='triage only: comma list of record fields (nlink, mtime, ...), '
                         '"dino" (readdir checks) or "upper" to leave out')
    ap.add_argument('scenario')
    a = ap.parse_args()
    os.umask(0)    # modes in scenarios and ops are exact on both sides
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks
    logf = open(a.log, 'a') if a.log else sys.stderr
    log = lambda s: print(s, file=logf, flush=True)
    name = os.path.basename(a.scenario)[:-4]
    if not a.fuse:
        print('FAIL %s: no fuse-overlayfs binary given (--fuse or FUSE_OVERLAYFS)' % name)
        return 2
    ignore = [x for x in a.ignore.split(',') if x]
    try:
        scn = Scenario(a.scenario)
    except (OSError, ValueError) as e:
        print('FAIL %s: bad scenario: %s' % (name, e))
        return 2
    # mountinfo shows resolved paths: compare against those
    base = os.path.realpath(tempfile.mkdtemp(prefix=scn.name + '.', dir=a.tmp)).encode()
    os.chmod(base, 0o755)
    log('== %s in %s' % (scn.name, base.decode()))
    run = Run(scn, os.fsencode(os.path.abspath(a.fuse)), base, log, ignore, a.pidfile)
    t0 = time.time()
    try:
        try:
            diffs = run.all()
        except RuntimeError as e:
            diffs = ['setup: %s' % e]
        finally:
            run.m.cleanup()
    except Exception:
        import traceback
        log(traceback.format_exc())
        print('FAIL %s: harness error: %s' % (scn.name, traceback.format_exc().strip().splitlines()[-1]))
        return 2
    finally:
        if not a.keep and not any(is_mounted(m) for m, _ in run.m.active):
            shutil.rmtree(base, ignore_errors=True)
    log('%d differences (%.1fs)' % (len(diffs), time.time() - t0))
    for d in diffs:
        log('  ' + d)
    note = ' (ignored: %s)' % ','.join(ignore) if ignore else ''
    if not diffs:
        print('PASS %s%s' % (scn.name, note))
        return 0
    # the summary leads with crashes and failed mounts: they explain the rest
    first = sorted(diffs, key=lambda d: not any(w in d for w in ('daemon ', 'setup:', 'mount failed')))
    print('FAIL %s: %d differences%s (%s)' % (scn.name, len(diffs), note, '; '.join(first[:3])))
    return 1


if __name__ == '__main__':
    sys.exit(main())
