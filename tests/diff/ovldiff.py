#!/usr/bin/python3
"""ovldiff: run one scenario on the kernel overlay and on fuse-overlayfs, compare.

Usage: ovldiff.py [--fuse BIN] [--tmp DIR] [--log FILE] [--keep]
                  [--ignore CHECK,...] [--whiteout-modes ovl|wh|both]
                  [--self-check] SCENARIO.scn
Prints exactly one line, `PASS name` or `FAIL name: reason (first differences)`;
details go to --log (default stderr; the kernel's result of every op is
logged too).  Exit 0 on PASS, 1 on FAIL, 2 on a harness error.  Needs root,
/dev/fuse, the kernel overlay, fusermount3.
  --whiteout-modes (env OVLDIFF_WHITEOUT_MODES): how OUR read-write mounts
    run: `ovl` (char 0/0 whiteouts, the default), `wh` (the daemon gets
    FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1: `.wh.NAME` whiteouts, and
    FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1: data through the daemon, as
    rootless mounts run) or `both`;
    overrides the scenario's `whiteout_modes`.  Labels: rw/MODE/VARIANT.
  --self-check (env OVLDIFF_SELF_CHECK=1): the kernel stands in for ours
    (kernel variant, ovl mode, ours= expectations ignored): a scenario must
    pass against itself -- results deterministic, no harness error.
  --userns MAP (env OVLDIFF_USERNS), e.g. 0:61234:1,1:200000:65536: rootless,
    as podman runs us: this process (the real root) builds the layers and
    shifts their ids into the map (tests/diff/userns.py); a child, root of a
    user namespace with that map and of its own mount namespace, mounts both
    (the kernel with userxattr and redirect_dir=nofollow) and runs the rest.
    Opaque dirs are spelled user.overlay.opaque where `trusted` would be
    (trusted.* is unreadable there).  `ino` results are not compared: the
    kernel cannot keep st_ino across a remount there (decoding its origin
    file handles needs CAP_DAC_READ_SEARCH in the initial namespace).

SCENARIO FORMAT (one statement a line; `#` starts a comment line)
  Sections:  `layer N` (N = 0 is the top-most lower; missing N are empty
  layers), `upper` (contents of the upper layer: enables read-write mounts),
  `ops` (steps run on both read-write mounts, results compared).  Sections
  may be entered again (an included file may switch them).
  Directive: `whiteout_modes ovl|wh|both` (see --whiteout-modes).
  Entries (in layer/upper; also usable as ops, then without implicit parents):
    file PATH [content=TEXT] [size=N] [data@OFF=TEXT]... (size without content:
                                  pattern-filled; data@ pwrites after it;
                                  O_CREAT|O_TRUNC)
    sparse PATH size=N [data@OFF=TEXT]...         (holes: ftruncate, no fill)
    dir PATH | fifo PATH | socket PATH
    symlink PATH -> TARGET | hardlink PATH = EXISTING
    chardev PATH MAJ MIN | blockdev PATH MAJ MIN
    xattr PATH NAME=VALUE | acl PATH SPEC | defacl PATH SPEC  (setfacl --set
                                  syntax; as ops the system.posix_acl_* xattr
                                  is set directly: a failure is its errno)
    whiteout PATH | opaque PATH                  (layers/upper only)
    many KIND DIR count=N prefix=P [start=S] [step=T] [content=C]
                                  (KIND file|dir|fifo|whiteout; DIR/P<S+k*T>)
  Common keys: mode=0644 uid=N gid=N mtime=SECONDS.  Parent directories are
  created implicitly (0755).  Default mtime: 1.6e9 + 86400*layer, so a view
  taking a time from the wrong layer shows.
  Ops only (a result is `ok...` or the errno name; P may be `@H`, an fd
  opened with `open ... as=H`, where the op says so):
    unlink P | rmdir P | rmtree P (rm -rf through the mount) |
    rename A B [flags=noreplace,exchange,whiteout] (renameat2) |
    append P content=T | read P|@H (a hash of the content) |
    create P [flags=excl,trunc,append,...] [content=T] [mode=M]
        (open O_WRONLY|O_CREAT|flags, write T; result: the size after) |
    open P [flags=rdonly|wronly|rdwr,creat,excl,trunc,append,nofollow,
        directory,nonblock,path,...] [mode=M] [as=H] (keeps the fd as @H) |
    close @H | write P|@H content=T [off=N] [flags=...] (pwrite at N, else
        write(2) at the position; a path is opened O_WRONLY|flags) |
    truncate P|@H size=N | ftruncate P size=N (open O_WRONLY, ftruncate) |
    chmod P|@H MODE | chown P|@H UID:GID (-1 keeps) |
    mkdir P (= dir) | mknod P fifo|socket|char|block [MAJ MIN] [mode=M] |
    link NEW = OLD (= hardlink) | setxattr (= xattr) P NAME=V
        [flags=create|replace] | rmxattr P NAME | getxattr P|@H NAME
        (value, or a hash when long) | listxattr P|@H (sorted, our own and
        the kernel's overlay names left out) |
    listdir P (the names readdir gives, sorted; a hash when long) |
    utimes P|@H [atime=T|now|omit] [mtime=T|now|omit] [now] [omit] [nofollow]
        (utimensat/futimens; no times at all = both now; T = SECONDS[.FRAC];
        result: the times after, a time of this run shows as `recent`, an
        omitted atime is not shown) |
    stat P|@H [follow] [atime] (type, mode, owner, nlink, size, rdev, mtime) |
    fsync P|@H [data] [flags=...] [content=T] | fdatasync P|@H ... (a path is
        opened O_RDONLY, or with flags, T written first) |
    fallocate P|@H [mode=default|keep_size|punch_hole|zero_range|...,...]
        off=N len=N (result: the size after) |
    seek P|@H (the data/hole map by SEEK_DATA/SEEK_HOLE: `D0-4096,H4096-8192
        eof=ENXIO`) |
    copyrange SRC DST [off=N] [to=N] [len=N] (copy_file_range, looped; SRC
        opened O_RDONLY, DST O_WRONLY, unless @H) |
    lock P|@H [flock|posix|ofd] [rd|wr] [rd|wr] (takes the first lock, then
        tries the second from a second fd (flock, ofd) or a child process
        (posix): `ok second=EAGAIN getlk=wr:parent`) |
    openunlink P [content=T] (open O_RDWR, unlink, write T at the end, read
        back through the fd: nlink, size and hash) |
    statfs [P] (`namemax=N`) |
    asuid UID[:GID] OP ... [; OP ...] (the ops run in one child process with
        those ids, no supplementary groups, cwd the mount root: handles
        opened there live until it ends; result: the results joined by ` ; `)
    ino P (`same` while P keeps the inode number it had at its first `ino`
    on this mount, else `changed`) | remount (unmount, mount again with the
    same options; open handles are closed first).  Handles left open are
    closed after the ops.
  Expected differences (ops and probes): `ours=RESULT`: ours must answer
    RESULT (an errno name) instead: the one masked difference, `.wh.` names
    (see COMPAT.md); `ours_whmode=RESULT`: so in the .wh. whiteout mode
    (names longer than 251 bytes have no `.wh.` form).  The kernel does not
    run an op that carries an expectation for the mode at hand: the op must
    change nothing on ours either.
  Anywhere: probe PATH [ours=ERRNO] [ours_whmode=ERRNO] [expect=ERRNO|ok] --
    lstat, open(O_NOFOLLOW|O_NONBLOCK), readlink and opendir(O_NOFOLLOW)+
    listdir of PATH must give the kernel's result on every mount
    (intermediate symlinks are followed by the VFS on both sides alike; do
    not probe devices: FUSE mounts are nodev).  `expect=` checks the
    kernel's own lstat result on every kernel mount, so that a scenario
    cannot pass vacuously if the layers were built wrong.
  Generation: `repeat VAR FROM TO` ... `end` (inclusive, nestable);
    `for VAR in WORD...` ... `end` (VAR is each word, a string);
    `include FILE` (FILE beside the scenario, read in the current loop
    variables: e.g. writable/starts.inc builds the starting points under
    {P}/); `when EXPR STATEMENT` keeps STATEMENT only if EXPR is true (EXPR
    has no blanks; chain `when`s for several conditions).
  Tokens are split on blanks; in a token `{EXPR}` is replaced by the value of
  a small expression (ints, 'strings', + - * // %, comparisons, and/or/not,
  loop variables; `{'a'*255}` is a 255-byte name), then `\\xHH` gives any
  byte (invalid UTF-8 too), `\\s` a blank, `\\\\` a backslash.  Sizes take
  K/M/G suffixes.  Names starting with `.wh.` are refused in layers: the
  kernel shows them, ours hides them (masked difference).

WHAT IS COMPARED (kernel overlay on kernel-format layers vs ours on every
whiteout/opaque spelling, see VARIANTS): for every path (lstat, never
following symlinks) type, mode, uid, gid, size (not of directories: it is the
backing fs's history), nlink, mtime (read-only mounts and before the ops
exactly; after the ops and in the upper layers a time of this run shows as
`recent`), sha256 of regular files, symlink target, rdev, user.*, trusted.*,
security.* (not the overlays' own) and POSIX ACL xattrs, the sorted readdir
listing, and which paths share an inode.  On ours readdir d_ino must equal
st_ino and d_type the lstat type.  With an upper: the same before and after
the ops, each op's result, and after unmount the upper layers with whiteout
and opaque spellings normalised.
"""
import argparse, ast, ctypes, errno, fcntl, functools, hashlib, operator, os, shutil, signal
import stat, struct, subprocess, sys, tempfile, time
from multiprocessing.connection import Pipe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovlview import (OPQ_XATTR, jp, expected, INTERNAL_XATTRS, TYPES, diff_probes, diff_views, ename,
                     file_hash, rmtree_mount, run_probes, show, snapshot, upper_view)
from userns import fork_in_userns, fuse_node, host_id, parse_map, shift_tree

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
        'step', 'ours', 'mtime', 'expect', 'atime', 'flags', 'as', 'off', 'len',
        'to', 'ours_whmode')
LAYER_KINDS = {'file', 'sparse', 'dir', 'fifo', 'socket', 'symlink', 'hardlink',
               'chardev', 'blockdev', 'xattr', 'acl', 'defacl', 'whiteout',
               'opaque', 'many'}
OP_KINDS = (LAYER_KINDS - {'whiteout', 'opaque', 'many'}) | {
    'unlink', 'rmdir', 'rename', 'append', 'truncate', 'chmod', 'chown',
    'rmxattr', 'read', 'ino', 'remount',
    'create', 'open', 'close', 'write', 'ftruncate', 'utimes', 'stat',
    'getxattr', 'listxattr', 'fsync', 'fdatasync', 'fallocate', 'seek',
    'copyrange', 'lock', 'openunlink', 'statfs', 'rmtree', 'asuid', 'listdir'}
# spellings that are only aliases of entries
ALIASES = {'mkdir': 'dir', 'link': 'hardlink', 'setxattr': 'xattr'}
MKNOD_TYPES = {'fifo': 'fifo', 'socket': 'socket', 'char': 'chardev',
               'block': 'blockdev'}
WHITEOUT_MODES = {'ovl': ('ovl',), 'wh': ('wh',), 'both': ('ovl', 'wh')}


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


def read_lines(path, tag=''):
    """Statement lines of a file: [(where, tokens)], `where` = line number
    (or FILE:line for an included file)."""
    with open(path, encoding='utf-8') as f:
        lines = [(tag + str(n + 1), l.split()) for n, l in enumerate(f)]
    return [(n, t) for n, t in lines if t and not t[0].startswith('#')]


class Scenario:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-4] if path.endswith('.scn') else os.path.basename(path)
        self.dir = os.path.dirname(os.path.abspath(path))
        self.layers, self.upper, self.ops, self.probes = {}, None, [], []
        self.whiteout_modes = None
        self.section, self.includes, self.handles = None, 0, set()
        self._run(read_lines(path), {})
        if not self.layers:
            raise ValueError('%s: no layer' % self.name)

    def _run(self, lines, env):
        i = 0
        while i < len(lines):
            n, toks = lines[i]
            if toks[0] in ('repeat', 'for'):
                depth, j = 1, i + 1
                while depth:            # find the matching `end`
                    if j >= len(lines):
                        raise ValueError('line %s: %s without end' % (n, toks[0]))
                    depth += {'repeat': 1, 'for': 1, 'end': -1}.get(lines[j][1][0], 0)
                    j += 1
                if toks[0] == 'repeat':
                    var, lo, hi = toks[1], int(evaluate(toks[2], env)), int(evaluate(toks[3], env))
                    values = range(lo, hi + 1)
                else:               # for VAR in WORD...: VAR is each word (a string)
                    if len(toks) < 3 or toks[2] != 'in':
                        raise ValueError('line %s: for VAR in WORD...' % n)
                    var, values = toks[1], toks[3:]
                for v in values:
                    self._run(lines[i + 1:j - 1], dict(env, **{var: v}))
                i = j
                continue
            if toks[0] == 'include':
                # the included lines run in the current environment (loop
                # variables) and may switch sections
                self.includes += 1
                if self.includes > 1000:
                    raise ValueError('line %s: too many includes' % n)
                name = subst(toks[1], env).decode()
                self._run(read_lines(os.path.join(self.dir, name), name + ':'), env)
                i += 1
                continue
            try:
                self._statement(toks, env, n)
            except (ValueError, KeyError, IndexError) as e:
                raise ValueError('line %s: %s: %s' % (n, ' '.join(toks), e))
            i += 1

    def _statement(self, toks, env, n):
        while toks[0] == 'when':      # `when A when B STATEMENT` is A and B
            if not evaluate(toks[1], env):
                return
            toks = toks[2:]
        kind = toks[0]
        if kind == 'whiteout_modes':
            if toks[1] not in WHITEOUT_MODES:
                raise ValueError('whiteout_modes ovl|wh|both')
            self.whiteout_modes = toks[1]
            return
        if kind == 'layer':
            self.section = ('layer', int(subst(toks[1], env)))
            self.layers.setdefault(self.section[1], [])
            return
        if kind in ('upper', 'ops'):
            self.section = (kind, None)
            if kind == 'upper':
                self.upper = self.upper or []
            return
        if kind == 'asuid':
            self._asuid(toks, env, n)
            return
        args, kv, data = self._tokens(toks[1:], env)
        if kind == 'probe':
            self.probes.append(Entry(kind, args, kv, data, n))
            return
        sec = self.section and self.section[0]
        if sec is None:
            raise ValueError('entry before any section')
        if sec != 'ops' and kind not in LAYER_KINDS:
            raise ValueError('unknown %s statement %r' % (sec, kind))
        e = self._entry(kind, args, kv, data, n)
        if sec == 'ops' and e.kind not in OP_KINDS:
            raise ValueError('unknown %s statement %r' % (sec, kind))
        if sec != 'ops' and kind != 'many' and any(
                c.startswith(b'.wh.') for c in e.path.split(b'/')):
            raise ValueError('.wh. names cannot be in layers (masked difference)')
        if sec == 'ops':
            self._check_handles(e)
            self.ops.append(e)
        elif sec == 'upper':
            self.upper.append(e)
        else:
            self.layers[self.section[1]].append(e)

    @staticmethod
    def _tokens(toks, env):
        args, kv, data = [], {}, []
        for t in toks:
            key = t.split('=', 1)[0]
            if '=' in t and key in KEYS:
                kv[key] = subst(t.split('=', 1)[1], env)
            elif '=' in t and key.startswith('data@'):
                data.append((parse_num(subst(key[5:], env)), subst(t.split('=', 1)[1], env)))
            elif t not in ('->', '='):
                args.append(subst(t, env))
        return args, kv, data

    def _asuid(self, toks, env, n):
        """asuid UID[:GID] OP ARGS... [; OP ARGS...]: the ops run in one child
        process as that user (handles opened there live until it ends)."""
        if self.section != ('ops', None):
            raise ValueError('asuid is an op')
        ids = subst(toks[1], env).split(b':')
        e = Entry('asuid', [], {}, [], n)
        e.uid, e.gid, e.inner = int(ids[0]), int(ids[-1]), []
        segs, cur = [], []
        for t in toks[2:] + [';']:
            if t == ';':
                segs.append(cur)
                cur = []
            else:
                cur.append(t)
        for seg in segs:
            if not seg:
                raise ValueError('empty op in asuid')
            args, kv, data = self._tokens(seg[1:], env)
            for k in ('ours', 'ours_whmode'):     # they speak of the whole line
                if k in kv:
                    e.kv[k] = kv.pop(k)
            inner = self._entry(seg[0], args, kv, data, n)
            if inner.kind not in OP_KINDS or inner.kind in ('remount', 'ino'):
                raise ValueError('asuid cannot run %r' % seg[0])
            self._check_handles(inner)
            e.inner.append(inner)
        e.path = e.inner[0].path
        self.ops.append(e)

    def _check_handles(self, e):
        """A handle must be named by an earlier `open ... as=H` (a typo would
        only ever give EBADF on both sides)."""
        if 'as' in e.kv:
            self.handles.add(e.kv['as'].lstrip(b'@'))
        for a in e.args:
            if a.startswith(b'@') and a[1:] not in self.handles:
                raise ValueError('handle %s is never opened (open ... as=%s)' % (
                    a.decode(), a[1:].decode()))

    def _entry(self, kind, args, kv, data, n):
        """An Entry; aliases become the entries they stand for."""
        if kind == 'mknod':     # mknod P fifo|socket|char|block [MAJ MIN]
            kind = MKNOD_TYPES[args[1].decode()]
            args = [args[0]] + args[2:]
        kind = ALIASES.get(kind, kind)
        return Entry(kind, args, kv, data, n)

# ---------------------------------------------------------------- building

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

# ---------------------------------------------------------------- ops

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.futimens.argtypes = [ctypes.c_int, ctypes.POINTER(_Timespec)]
AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
RENAME_FLAGS = {'noreplace': 1, 'exchange': 2, 'whiteout': 4}
FALLOC_MODES = {'default': 0, 'keep_size': 1, 'punch_hole': 2, 'collapse_range': 8,
                'zero_range': 0x10, 'insert_range': 0x20, 'unshare_range': 0x40}
OPEN_FLAGS = {'rdonly': os.O_RDONLY, 'wronly': os.O_WRONLY, 'rdwr': os.O_RDWR,
              'creat': os.O_CREAT, 'excl': os.O_EXCL, 'trunc': os.O_TRUNC,
              'append': os.O_APPEND, 'nofollow': os.O_NOFOLLOW,
              'directory': os.O_DIRECTORY, 'nonblock': os.O_NONBLOCK,
              'path': os.O_PATH, 'sync': os.O_SYNC, 'dsync': os.O_DSYNC,
              'noatime': os.O_NOATIME}
F_OFD_GETLK, F_OFD_SETLK = 36, 37
LOCK_TYPES = {'rd': fcntl.F_RDLCK, 'wr': fcntl.F_WRLCK}
LOCK_NAMES = {fcntl.F_RDLCK: 'rd', fcntl.F_WRLCK: 'wr', fcntl.F_UNLCK: 'un'}


def _check(rc):
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def word_flags(value, table, what):
    out = 0
    for w in value.decode().split(','):
        if w not in table:
            raise ValueError('unknown %s %r' % (what, w))
        out |= table[w]
    return out


class OpCtx:
    """What ops on one mount share: the root, open handles (`as=H`, `@H`)
    and the time from which on a timestamp shows as `recent`."""

    def __init__(self, root, recent):
        self.root, self.recent, self.fds = root, recent, {}

    def path(self, p):
        if p.startswith(b'@'):
            raise ValueError('handle %s where a path is needed' % p.decode())
        return jp(self.root, p)

    def handle(self, p):
        """(fd, path) of `@H`, or None for a path.  A handle whose open
        failed (or that was closed) is a bad fd."""
        if not p.startswith(b'@'):
            return None
        if p[1:] not in self.fds:
            raise OSError(errno.EBADF, 'handle %s is not open' % p.decode())
        return self.fds[p[1:]]

    def close_all(self):
        for fd, _ in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def tm(self, ns):
        """A timestamp: exact when older than this run, else `recent`."""
        return str(ns) if ns < self.recent else 'recent'


class _Fd:
    """The fd of `@H`, or P opened with flags (closed on exit)."""

    def __init__(self, ctx, p, flags, mode=0o644):
        h = ctx.handle(p)
        self.own = h is None
        self.fd = os.open(ctx.path(p), flags, mode) if self.own else h[0]

    def __enter__(self):
        return self.fd

    def __exit__(self, *a):
        if self.own:
            os.close(self.fd)


def parse_time(v):
    """SECONDS[.FRACTION] | now | omit -> a timespec."""
    v = v.decode()
    if v in ('now', 'omit'):
        return _Timespec(0, UTIME_NOW if v == 'now' else UTIME_OMIT)
    sec, _, frac = v.partition('.')
    return _Timespec(int(sec), int((frac + '000000000')[:9]))


def fd_hash(fd):
    h, off = hashlib.sha256(), 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            return h.hexdigest()[:16]
        h.update(b)
        off += len(b)


def in_child(fn):
    """Run fn() in a forked child; its result string (or errno) comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                res = fn()
            except OSError as exc:
                res = ename(exc)
            except Exception as exc:     # a harness error: show it, do not hide it
                res = 'HARNESS-ERROR %s: %s' % (type(exc).__name__, exc)
            os.write(w, res.encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b''
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        out += b
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode()


def op_lock(ctx, e):
    """lock P|@H [flock|posix|ofd] [rd|wr] [rd|wr]: take the first lock on
    one fd, then try the second one (non-blocking) from a second fd (flock,
    ofd) or from a child process (posix; it also reports F_GETLK)."""
    words = [a.decode() for a in e.args[1:]]
    kind = ([w for w in words if w in ('flock', 'posix', 'ofd')] or ['posix'])[0]
    types = [w for w in words if w in LOCK_TYPES] + ['wr', 'wr']
    h = ctx.handle(e.path)
    path = h[1] if h else ctx.path(e.path)
    flags = os.O_RDONLY if kind == 'flock' else os.O_RDWR

    def flk(t, pid=0):
        return struct.pack('hhqqi4x', t, os.SEEK_SET, 0, 0, pid)

    def take(fd, t):
        if kind == 'flock':
            fcntl.flock(fd, (fcntl.LOCK_SH if t == 'rd' else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        else:
            fcntl.fcntl(fd, fcntl.F_SETLK if kind == 'posix' else F_OFD_SETLK, flk(LOCK_TYPES[t]))
    with _Fd(ctx, e.path, flags) as fd1:
        take(fd1, types[0])
        try:
            if kind == 'posix':
                parent = os.getpid()

                def second():
                    fd2 = os.open(path, flags)
                    got = struct.unpack('hhqqi4x', fcntl.fcntl(fd2, fcntl.F_GETLK, flk(LOCK_TYPES[types[1]])))
                    getlk = LOCK_NAMES.get(got[0], '?') + (':parent' if got[4] == parent else '')
                    try:
                        take(fd2, types[1])
                        res = 'ok'
                    except OSError as exc:
                        res = ename(exc)
                    return 'second=%s getlk=%s' % (res, getlk)
                return 'ok ' + in_child(second)
            fd2 = os.open(path, flags)
            try:
                getlk = ''
                if kind == 'ofd':
                    got = struct.unpack('hhqqi4x', fcntl.fcntl(fd2, F_OFD_GETLK, flk(LOCK_TYPES[types[1]])))
                    getlk = ' getlk=' + LOCK_NAMES.get(got[0], '?')
                try:
                    take(fd2, types[1])
                    res = 'ok'
                except OSError as exc:
                    res = ename(exc)
                return 'ok second=%s%s' % (res, getlk)
            finally:
                os.close(fd2)
        finally:
            if kind == 'flock':
                fcntl.flock(fd1, fcntl.LOCK_UN)
            else:
                fcntl.fcntl(fd1, fcntl.F_SETLK if kind == 'posix' else F_OFD_SETLK, flk(fcntl.F_UNLCK))


def stat_summary(ctx, st, atime=False):
    t = TYPES.get(stat.S_IFMT(st.st_mode), '?')
    out = '%s %04o %d:%d nlink=%d' % (t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink)
    if t != 'dir':
        out += ' size=%d' % st.st_size
    if t in ('chardev', 'blockdev'):
        out += ' rdev=%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if atime:
        out += ' a=' + ctx.tm(st.st_atime_ns)
    return out + ' m=' + ctx.tm(st.st_mtime_ns)


def do_op(ctx, e):
    """Run one op; returns its result string ('ok...' or raises OSError)."""
    k, kv, p = e.kind, e.kv, e.path
    words = [a.decode('utf-8', 'replace') for a in e.args[1:]]
    if k == 'asuid':
        def child():
            os.chdir(ctx.root)      # as root: the user needs no search right above
            os.setgroups([])
            os.setresgid(e.gid, e.gid, e.gid)
            os.setresuid(e.uid, e.uid, e.uid)
            sub = OpCtx(b'.', ctx.recent)
            sub.fds = dict(ctx.fds)
            out = []
            for inner in e.inner:
                try:
                    out.append(do_op(sub, inner))
                except OSError as exc:
                    out.append(ename(exc))
            return ' ; '.join(out)
        return in_child(child)
    if k == 'create':
        flags = os.O_WRONLY | os.O_CREAT
        if 'flags' in kv:
            flags |= word_flags(kv['flags'], OPEN_FLAGS, 'open flag')
        fd = os.open(ctx.path(p), flags, e.num('mode', 0o644))
        try:
            if 'content' in kv:
                os.write(fd, kv['content'])
            return 'ok size=%d' % os.fstat(fd).st_size
        finally:
            os.close(fd)
    if k == 'open':
        flags = word_flags(kv.get('flags', b'rdonly'), OPEN_FLAGS, 'open flag')
        fd = os.open(ctx.path(p), flags, e.num('mode', 0o644))
        if 'as' in kv:
            name = kv['as'].lstrip(b'@')
            if name in ctx.fds:
                os.close(fd)
                raise ValueError('handle @%s is open' % name.decode())
            ctx.fds[name] = (fd, ctx.path(p))
        else:
            os.close(fd)
        return 'ok'
    if k == 'close':
        fd, _ = ctx.handle(p)
        del ctx.fds[p[1:]]
        os.close(fd)
        return 'ok'
    if k == 'write':
        flags = os.O_WRONLY | (word_flags(kv['flags'], OPEN_FLAGS, 'open flag') if 'flags' in kv else 0)
        with _Fd(ctx, p, flags) as fd:
            if 'off' in kv:
                n = os.pwrite(fd, kv.get('content', b''), e.num('off'))
            else:
                n = os.write(fd, kv.get('content', b''))
            return 'ok n=%d' % n
    if k == 'read' and ctx.handle(p):
        return 'ok:' + fd_hash(ctx.handle(p)[0])
    if k in ('ftruncate', 'truncate') and (k == 'ftruncate' or ctx.handle(p)):
        with _Fd(ctx, p, os.O_WRONLY) as fd:
            os.ftruncate(fd, e.num('size'))
            return 'ok'
    if k == 'chmod' and ctx.handle(p):
        os.chmod(ctx.handle(p)[0], int(e.args[1], 8))
        return 'ok'
    if k == 'chown' and ctx.handle(p):
        u, g = e.args[1].split(b':')
        os.chown(ctx.handle(p)[0], int(u), int(g))
        return 'ok'
    if k == 'xattr' and (ctx.handle(p) or 'flags' in kv):
        name, val = e.args[1].split(b'=', 1)
        fl = word_flags(kv['flags'], {'create': os.XATTR_CREATE, 'replace': os.XATTR_REPLACE},
                        'xattr flag') if 'flags' in kv else 0
        h = ctx.handle(p)
        if h:
            os.setxattr(h[0], name, val, fl)
        else:
            os.setxattr(ctx.path(p), name, val, fl, follow_symlinks=False)
        return 'ok'
    if k == 'utimes':
        # utimes P|@H [atime=T|now|omit] [mtime=T|now|omit] [now] [omit] [nofollow]
        a = parse_time(kv.get('atime', b'now' if 'now' in words else b'omit' if 'omit' in words else b'now'))
        m = parse_time(kv.get('mtime', b'now' if 'now' in words else b'omit' if 'omit' in words else b'now'))
        no_times = not ({'atime', 'mtime'} & kv.keys()) and not ({'now', 'omit'} & set(words))
        ts = None if no_times else (_Timespec * 2)(a, m)
        h = ctx.handle(p)
        if h:
            _check(_libc.futimens(h[0], ts))
            st = os.fstat(h[0])
        else:
            nofollow = 'nofollow' in words
            _check(_libc.utimensat(AT_FDCWD, ctx.path(p), ts, AT_SYMLINK_NOFOLLOW if nofollow else 0))
            st = os.stat(ctx.path(p), follow_symlinks=not nofollow)
        out = 'ok'
        if kv.get('atime') != b'omit' and 'omit' not in words:   # an omitted atime is the reads' business
            out += ' a=' + ctx.tm(st.st_atime_ns)
        return out + ' m=' + ctx.tm(st.st_mtime_ns)
    if k == 'stat':
        h = ctx.handle(p)
        st = os.fstat(h[0]) if h else os.stat(ctx.path(p), follow_symlinks='follow' in words)
        return 'ok ' + stat_summary(ctx, st, 'atime' in words)
    if k == 'getxattr':
        h = ctx.handle(p)
        v = os.getxattr(h[0] if h else ctx.path(p), e.args[1], follow_symlinks=bool(h))
        return 'ok:' + (repr(v) if len(v) < 40 else hashlib.sha256(v).hexdigest()[:16])
    if k == 'listdir':
        names = b','.join(sorted(os.listdir(ctx.path(p))))
        return 'ok:' + (repr(names) if len(names) < 200 else hashlib.sha256(names).hexdigest()[:16])
    if k == 'listxattr':
        h = ctx.handle(p)
        names = os.listxattr(h[0] if h else ctx.path(p), follow_symlinks=bool(h))
        names = [n for n in names if not n.encode().startswith(INTERNAL_XATTRS)]
        return 'ok:' + ','.join(sorted(names))
    if k in ('fsync', 'fdatasync'):
        flags = word_flags(kv['flags'], OPEN_FLAGS, 'open flag') if 'flags' in kv else os.O_RDONLY
        with _Fd(ctx, p, flags) as fd:
            if 'content' in kv:
                os.write(fd, kv['content'])
            (os.fdatasync if k == 'fdatasync' or 'data' in words else os.fsync)(fd)
            return 'ok'
    if k == 'fallocate':
        mode = word_flags(kv.get('mode', b'default'), FALLOC_MODES, 'fallocate mode')
        with _Fd(ctx, p, os.O_RDWR) as fd:
            _check(_libc.fallocate(fd, mode, e.num('off', 0), e.num('len')))
            return 'ok size=%d' % os.fstat(fd).st_size
    if k == 'seek':
        # the data and hole segments SEEK_DATA/SEEK_HOLE show, then SEEK_DATA at EOF.
        # Over an unwritten (fallocated) extent ext4 and tmpfs answer "data"
        # only where the page cache holds the page, and what a mount caches
        # is its own business (ours, with the writeback cache, reads less of
        # the backing file): clean pages are dropped first on both sides, so
        # the map shows allocation and dirty data only.
        with open('/proc/sys/vm/drop_caches', 'w') as dc:
            dc.write('1')
        with _Fd(ctx, p, os.O_RDONLY) as fd:
            size, pos, segs = os.fstat(fd).st_size, 0, []
            while pos < size:
                try:
                    d = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    segs.append('H%d-%d' % (pos, size))
                    break
                if d > pos:
                    segs.append('H%d-%d' % (pos, d))
                hole = os.lseek(fd, d, os.SEEK_HOLE)
                segs.append('D%d-%d' % (d, hole))
                pos = hole
            try:
                end = 'eof=%d' % os.lseek(fd, size, os.SEEK_DATA)
            except OSError as exc:
                end = 'eof=' + ename(exc)
            return 'ok %s %s' % (','.join(segs) or 'empty', end)
    if k == 'copyrange':
        # copyrange SRC DST [off=N] [to=N] [len=N]: copy_file_range, looped
        with _Fd(ctx, p, os.O_RDONLY) as src, _Fd(ctx, e.args[1], os.O_WRONLY) as dst:
            off, to = e.num('off', 0), e.num('to', 0)
            todo = e.num('len', max(os.fstat(src).st_size - off, 0))
            total = 0
            while total < todo:
                n = os.copy_file_range(src, dst, todo - total, off + total, to + total)
                if n == 0:
                    break
                total += n
            return 'ok n=%d' % total
    if k == 'lock':
        return op_lock(ctx, e)
    if k == 'openunlink':
        # open O_RDWR, unlink, write at the end and read all through the fd
        fd = os.open(ctx.path(p), os.O_RDWR)
        try:
            os.unlink(ctx.path(p))
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, kv.get('content', b'+after-unlink'))
            st = os.fstat(fd)
            return 'ok nlink=%d size=%d sha=%s' % (st.st_nlink, st.st_size, fd_hash(fd))
        finally:
            os.close(fd)
    if k == 'statfs':
        return 'namemax=%d' % os.statvfs(ctx.path(p)).f_namemax
    if k == 'rmtree':
        rmtree_mount(ctx.path(p))
        return 'ok'
    if k == 'rename' and 'flags' in kv:
        fl = word_flags(kv['flags'], RENAME_FLAGS, 'rename flag')
        _check(_libc.renameat2(AT_FDCWD, ctx.path(p), AT_FDCWD, ctx.path(e.args[1]), fl))
        return 'ok'
    if k == 'chmod':
        try:
            return apply(ctx.root, e)
        except NotImplementedError:     # lchmod: python's answer for a symlink
            return 'ENOTSUP'
    return apply(ctx.root, e)

# ---------------------------------------------------------------- mounts


class Mounts:
    """Every mount and daemon this run made, so that all are undone."""

    def __init__(self, base, fuse, pidfile, log, userns=False):
        self.base, self.fuse, self.pidfile, self.log = base, fuse, pidfile, log
        self.userns = userns    # the kernel's rootless form: userxattr
        self.active = []   # (mountpoint, Popen or None)
        self.opts = {}     # mountpoint -> (mount function, options)

    def kernel(self, mnt, opts):
        os.mkdir(mnt)
        if self.userns and not opts.endswith(b',userxattr'):
            # userxattr refuses redirect_dir=off (it means follow): nofollow creates none either
            opts = opts.replace(b'redirect_dir=off', b'redirect_dir=nofollow') + b',userxattr'
        self.log('mount -t overlay -o %s %s' % (os.fsdecode(opts), os.fsdecode(mnt)))
        r = subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o', opts, mnt],
                           cwd=self.base, stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError('kernel overlay mount failed: ' + r.stderr.decode().strip())
        self.active.append((mnt, None))
        self.opts[mnt] = (self.kernel, opts, {})

    def remount(self, mnt):
        fn, opts, kw = self.opts[mnt]
        problem = self.umount(mnt)
        os.rmdir(mnt)
        fn(mnt, opts, **kw)
        return problem

    def ours(self, mnt, opts, env=None):
        """env: extra environment of the daemon (the .wh. whiteout mode)."""
        os.mkdir(mnt)
        self.log('%s%s -f -o %s %s' % ((''.join('%s=%s ' % kv for kv in (env or {}).items()),)
                                       + tuple(map(os.fsdecode, (self.fuse, opts, mnt)))))
        errf = open(os.path.join(self.base, os.path.basename(mnt) + b'.err'), 'w+b')
        # -f keeps the daemon our child: we know its PID and its exit status
        proc = subprocess.Popen([self.fuse, '-f', '-o', opts, mnt], cwd=self.base,
                                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                env=dict(os.environ, **env) if env else None)
        proc.errf = errf
        self.opts[mnt] = (self.ours, opts, {'env': env})
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
    def __init__(self, scn, fuse, base, log, ignore, pidfile, modes=None, selfcheck=False,
                 builder=None):
        self.scn, self.base, self.log, self.ignore = scn, base, log, ignore
        # --userns: layers are built by the real root outside (builder), and
        # trusted.overlay.opaque, unreadable there, is spelled user.overlay.opaque
        self.build, self.userns = builder or build, builder is not None
        self.spell = {v: (lambda i, f=f: tuple('user' if x == 'trusted' else x for x in f(i)))
                      if builder else f for v, f in VARIANTS.items()}
        self.m = Mounts(base, fuse, pidfile, log, builder is not None)
        self.dirs = {}   # (layer, spelling key) -> dir name
        self.inos = {}   # (mount, path) -> st_ino at the first `ino` op
        self.kernel_runs = {}   # ops skipped -> the kernel's read-write run
        # self-check: the kernel stands in for ours (kernel variant, ovl mode)
        self.selfcheck, self.ours_view = selfcheck, not selfcheck
        self.modes = ('ovl',) if selfcheck else WHITEOUT_MODES[modes or scn.whiteout_modes or 'ovl']
        # times from here on (less a clock tick or two) show as `recent`
        self.recent = time.time_ns() - 2 * 10**9
        n = max(scn.layers) + 1
        # the kernel wants two lowers when there is no upper: add an empty one
        self.nlayers = n + 1 if n == 1 else n
        for i in range(self.nlayers):
            scn.layers.setdefault(i, [])

    def layer_dir(self, i, spelling):
        key = (i, layer_key(self.scn.layers[i], spelling))
        if key not in self.dirs:
            name = ('%x' % len(self.dirs)).encode()     # short: 140 layers fit easily
            self.build(os.path.join(self.base, name), self.scn.layers[i], spelling,
                  BASE_MTIME + 86400 * i)
            self.dirs[key] = name
            self.log('layer %d %s -> %s' % (i, key[1], name.decode()))
        return self.dirs[key]

    def lowers(self, variant):
        return b':'.join(self.layer_dir(i, self.spell[variant](i)) for i in range(self.nlayers))

    def variants(self, with_upper):
        """Variants with distinct on-disk layers (others would repeat a run)."""
        seen, out = set(), []
        for v in VARIANTS:
            if self.selfcheck and v != 'kernel':
                continue
            sig = tuple(layer_key(self.scn.layers[i], self.spell[v](i)) for i in range(self.nlayers))
            if with_upper:
                sig += (layer_key(self.scn.upper, self.spell[v](-1)),)
            if sig not in seen:
                seen.add(sig)
                out.append(v)
        return out

    def compare(self, label, kview, oview, kprobe, oprobe, problems, mode='ovl'):
        d = diff_views(kview, oview, label)
        if kprobe is not None:
            d += diff_probes(kprobe, oprobe, self.scn.probes, label, mode, self.selfcheck)
        if 'dino' not in self.ignore:
            d += ['%s: %s' % (label, p) for p in problems]
        return d

    def strip(self, view):
        for r in view.values():
            for f in self.ignore:
                r.pop(f, None)
        return view

    def with_ours(self, label, name, opts, body, env=None):
        """Mount ours (in self-check mode: the kernel again), run body(mnt,
        diffs) which appends to diffs.  A failed mount or a daemon that dies
        on the way is a difference too."""
        mnt, diffs = os.path.join(self.base, name), []
        try:
            if self.selfcheck:
                self.m.kernel(mnt, opts + (KERNEL_PINS if b'upperdir=' in opts else b''))
            else:
                self.m.ours(mnt, opts, env)
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
                oview, problems = snapshot(mnt, self.ours_view, True)
                d += self.compare(label, kview, self.strip(oview),
                                  kprobe, run_probes(mnt, self.scn.probes), problems)
            diffs += self.with_ours('ro/' + v, b'm-' + v.encode(), b'lowerdir=' + self.lowers(v), body)
        return diffs

    def prepare_upper(self, tag, variant):
        """A fresh upper (and workdir) per mount: every mount writes its own."""
        u, w = [os.path.join(self.base, x + tag) for x in (b'u-', b'w-')]
        self.build(u, self.scn.upper or [], self.spell[variant](-1), BASE_MTIME - 86400)
        os.mkdir(w, 0o755)
        return u, b'lowerdir=%s,upperdir=u-%s,workdir=w-%s' % (self.lowers(variant), tag, tag)

    def skipped(self, e, mode):
        """An op the kernel leaves out: ours is expected to refuse it
        (ours=, or ours_whmode= in the .wh. mode), changing nothing."""
        return expected(e, mode, self.selfcheck) is not None

    def run_ops(self, mnt, mode, skip):
        """The ops on one mount: their results, then every handle closed."""
        ctx, res = OpCtx(mnt, self.recent), []
        try:
            for e in self.scn.ops:
                res.append(None if skip(e) else self.op(mnt, e, ctx))
        finally:
            ctx.close_all()
        return res

    def kernel_rw(self, mode):
        """The kernel's side of the read-write run for one whiteout mode (the
        same run unless some op is skipped in that mode)."""
        key = tuple(self.skipped(e, mode) for e in self.scn.ops)
        if key in self.kernel_runs:
            return self.kernel_runs[key]
        tag = b'k%d' % len(self.kernel_runs)
        ku, kopts = self.prepare_upper(tag, 'kernel')
        kmnt = os.path.join(self.base, b'r-' + tag)
        # pin the kernel's optional features (all default off here) to what ours implements
        self.m.kernel(kmnt, kopts + KERNEL_PINS)
        kbefore = self.strip(snapshot(kmnt, False, True)[0])
        kres = self.run_ops(kmnt, mode, lambda e: self.skipped(e, mode))
        for e, r in zip(self.scn.ops, kres):
            self.log('kernel: op line %s %s %s: %s' % (e.where, e.kind, show(e.path), r or '(not run)'))
        kafter = self.strip(snapshot(kmnt, False, self.recent)[0])
        kprobe = run_probes(kmnt, self.scn.probes)
        self.m.umount(kmnt)
        kup = self.strip(upper_view(ku, True, self.recent))
        self.kernel_runs[key] = (kbefore, kres, kafter, kprobe, kup)
        return self.kernel_runs[key]

    def readwrite(self):
        diffs = []
        for mode in self.modes:
            kbefore, kres, kafter, kprobe, kup = self.kernel_rw(mode)
            for v in self.variants(True):
                label = 'rw/%s/%s' % (mode, v)
                tag = ('%s-%s' % (mode, v)).encode()
                u, opts = self.prepare_upper(tag, v)

                def body(mnt, d):
                    before, problems = snapshot(mnt, self.ours_view, True)
                    d += self.compare(label + '/before-ops', kbefore, self.strip(before),
                                      None, None, problems)
                    res = self.run_ops(mnt, mode, lambda e: False)
                    for e, kr, r in zip(self.scn.ops, kres, res):
                        if self.userns and e.kind == 'ino':
                            continue    # no st_ino across remount on the kernel there (see --userns)
                        want = expected(e, mode, self.selfcheck)
                        if (want is not None and r != want) or (want is None and r != kr):
                            d.append('%s: op line %s %s %s: kernel=%s ours=%s%s' % (
                                label, e.where, e.kind, show(e.path), kr or '(not run)', r,
                                ' (expected %s)' % want if want else ''))
                        if r.startswith('HARNESS-ERROR') or (kr or '').startswith('HARNESS-ERROR'):
                            raise HarnessError('op line %s: %s' % (e.where, kr if (kr or '').startswith('H') else r))
                    after, problems = snapshot(mnt, self.ours_view, self.recent)
                    d += self.compare(label + '/after-ops', kafter, self.strip(after),
                                      kprobe, run_probes(mnt, self.scn.probes), problems, mode)
                env = {'FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT': '1',
                       'FUSE_OVERLAYFS_DISABLE_PASSTHROUGH': '1'} if mode == 'wh' else None
                diffs += self.with_ours(label, b'r-' + tag, opts, body, env)
                if 'upper' not in self.ignore:
                    diffs += diff_views(kup, self.strip(upper_view(u, self.selfcheck, self.recent)),
                                        'upper/%s/%s' % (mode, v))
        return diffs

    def op(self, mnt, e, ctx):
        try:
            if e.kind == 'remount':
                ctx.close_all()
                return self.m.remount(mnt) or 'ok'
            if e.kind == 'ino':
                ino = os.lstat(jp(mnt, e.path)).st_ino
                return 'same' if self.inos.setdefault((mnt, e.path), ino) == ino else 'changed'
            return do_op(ctx, e)
        except OSError as exc:
            return ename(exc)

    def all(self):
        diffs = self.readonly()
        if self.scn.upper is not None or self.scn.ops:
            diffs += self.readwrite()
        return diffs


class HarnessError(Exception):
    pass


KERNEL_PINS = b',redirect_dir=off,index=off,metacopy=off,xino=off'


def in_userns(idmap, base, body, name):
    """--userns: body(builder) runs as root of a user namespace
    (tests/diff/userns.py); this process, the real root, builds the layers it
    asks for (devices and trusted.* xattrs cannot be made in there) and shifts
    them to the namespace's ids.  Returns body's exit status."""
    mine, theirs = Pipe()

    def remote(*req):
        theirs.send(req)
        err = theirs.recv()
        if err:
            raise RuntimeError(err)

    def child():
        mine.close()
        return body(remote)
    os.chown(base, host_id(idmap, 0), host_id(idmap, 0))
    # rootless podman needs /dev/fuse world read-writable (udev's 0666)
    node = None if os.stat('/dev/fuse').st_mode & 0o006 == 0o006 else fuse_node(base, idmap, idmap)
    pid = fork_in_userns(child, idmap, idmap, node)
    theirs.close()
    try:
        while True:
            try:
                req = mine.recv()
            except EOFError:
                break
            try:
                build(*req)
                shift_tree(req[0], idmap, idmap)
                mine.send(None)
            except Exception as e:
                mine.send('building %s: %s' % (os.fsdecode(req[0]), e))
    finally:
        rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if rc not in (0, 1, 2):
        print('FAIL %s: harness error: the run in the user namespace ended with %s' % (
            name, 'signal %d' % -rc if rc < 0 else 'status %d' % rc))
    return rc if rc in (0, 1) else 2




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
    ap.add_argument('--whiteout-modes', choices=sorted(WHITEOUT_MODES),
                    default=os.environ.get('OVLDIFF_WHITEOUT_MODES') or None,
                    help='run ours read-write with char 0/0 whiteouts (ovl), with '
                         'FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1 (wh) or both; default: '
                         'the scenario\'s whiteout_modes, else ovl')
    ap.add_argument('--self-check', action='store_true',
                    default=os.environ.get('OVLDIFF_SELF_CHECK') == '1',
                    help='the kernel stands in for ours: a scenario must pass against '
                         'itself (deterministic results, no harness error)')
    ap.add_argument('--userns', metavar='MAP', default=os.environ.get('OVLDIFF_USERNS') or None,
                    help='rootless: mount and run the ops as root of a user namespace '
                         'mapped INSIDE:OUTSIDE:COUNT,... (e.g. 0:61234:1,1:200000:65536)')
    ap.add_argument('scenario')
    a = ap.parse_args()
    os.umask(0)    # modes in scenarios and ops are exact on both sides
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks
    logf = open(a.log, 'a') if a.log else sys.stderr
    log = lambda s: print(s, file=logf, flush=True)
    name = os.path.basename(a.scenario)[:-4]
    if not a.fuse and a.self_check:
        a.fuse = '/bin/false'   # never run
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
    if not a.userns:
        return go(a, scn, base, log, ignore)
    try:
        return in_userns(parse_map(a.userns), base, lambda b: go(a, scn, base, log, ignore, b), scn.name)
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


def go(a, scn, base, log, ignore, builder=None):
    """Run the scenario, print the result line; returns the exit status."""
    run = Run(scn, os.fsencode(os.path.abspath(a.fuse)), base, log, ignore, a.pidfile,
              a.whiteout_modes, a.self_check, builder)
    t0 = time.time()
    try:
        try:
            diffs = run.all()
        except RuntimeError as e:
            diffs = ['setup: %s' % e]
        except HarnessError as e:
            print('FAIL %s: harness error: %s' % (scn.name, e))
            return 2
        finally:
            run.m.cleanup()
    except Exception:
        import traceback
        log(traceback.format_exc())
        print('FAIL %s: harness error: %s' % (scn.name, traceback.format_exc().strip().splitlines()[-1]))
        return 2
    finally:
        if not builder and not a.keep and not any(is_mounted(m) for m, _ in run.m.active):
            shutil.rmtree(base, ignore_errors=True)
    log('%d differences (%.1fs)' % (len(diffs), time.time() - t0))
    for d in diffs:
        log('  ' + d)
    note = ' (ignored: %s)' % ','.join(ignore) if ignore else ''
    note += ' (self-check: kernel against kernel)' if a.self_check else ''
    if not diffs:
        print('PASS %s%s' % (scn.name, note))
        return 0
    # the summary leads with crashes and failed mounts: they explain the rest
    first = sorted(diffs, key=lambda d: not any(w in d for w in ('daemon ', 'setup:', 'mount failed')))
    print('FAIL %s: %d differences%s (%s)' % (scn.name, len(diffs), note, '; '.join(first[:3])))
    return 1


if __name__ == '__main__':
    sys.exit(main())
