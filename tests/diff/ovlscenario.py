"""The scenario files of the differential tests (ovldiff.py): their format
and its parser, Scenario (layers, upper, ops and probes as Entry lists).

SCENARIO FORMAT (one statement a line; `#` starts a comment line)
  Sections:  `layer N` (N = 0 is the top-most lower; missing N are empty
  layers), `upper` (contents of the upper layer: enables read-write mounts),
  `ops` (steps run on both read-write mounts, results compared).  Sections
  may be entered again (an included file may switch them).
  Directive: `whiteout_modes ovl|wh|both` (see ovldiff.py --whiteout-modes).
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
"""
import ast, operator, os


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
