#!/usr/bin/python3
"""Helper of crash.sh: build a lower layer, run a write storm, verify after a crash.

  crash_storm.py build LOWER SEED WORKERS MANIFEST
  crash_storm.py storm MNT SEED WORKER MANIFEST LOG [SECONDS]  (default 30)
  crash_storm.py verify MNT LOWER MANIFEST TEMP_REGEX LOG...

See crash.sh for what is guaranteed and checked.  Paths are owned: the first
path component named `k<N>_...` makes everything below it worker N's; the
workers touch only their own paths, so each has at most one step in flight
when the daemon dies and the paths of different workers are independent.
Components without such a name (`a`, `a/b`, `c`) are shared directories
nobody changes.

Log records (JSON, one a line, written with O_APPEND before/after each step):
  {"t":"I","n":N,"op":...}        intent, before the step
  {"t":"D","n":N,"r":"ok"|ERRNO}  done; an errno here is an expected refusal
                                  (EXDEV for a directory rename), no change
  {"t":"E","n":N,"r":ERRNO}       the step failed while the mount was alive
  {"t":"K","n":N,"ms":X}          this worker armed the kill X ms into step N
  {"t":"S","k":K} / {"t":"T"}     start / ran out of time (the mount never died)
Data written is gen(tag, len): NUL-free bytes, so a NUL in written data is a
hole, and a partially written range ends in a written (non-NUL) byte.
"""
import errno, hashlib, json, os, random, re, signal, stat, sys, threading, time

NONUL = bytes([1]) + bytes(range(1, 256))
SHARED_DIRS = ["a", "a/b", "c"]
LOWER_SIZES = [0, 1, 4095, 4096, 4097, 65549, 300007, 1 << 20, (5 << 19) + 3, 4 << 20]
APPEND_SIZES = [1, 100, 4096, 5000, 65536, 200003, 1 << 20]
REWRITE_SIZES = [0, 10, 4096, 100001, 1 << 20, 3 << 20]
MAX_FILE = 6 << 20
# step kinds and their weights; CRASH_OPS=a,b,... keeps only these (triage);
# "hardlink" is not a step: it allows writes to the lower hard-linked pair
OP_WEIGHTS = {"append": 25, "rewrite_inplace": 13, "rewrite_rename": 12, "create": 12,
              "rename": 8, "unlink": 8, "mkdir": 5, "rmrf": 7, "chmod": 6, "dirrename": 4,
              "hardlink": 0}
OWNER_RE = re.compile(r"^k(\d+)_")


def gen(tag, n):
    return random.Random(tag).randbytes(n).translate(NONUL)


def owner(path):
    for c in path.split("/"):
        m = OWNER_RE.match(c)
        if m:
            return int(m.group(1))
    return None


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ build

def build(lower, seed, workers, manifest):
    ents = []

    def d(p):
        os.mkdir(os.path.join(lower, p), 0o755)
        os.chmod(os.path.join(lower, p), 0o755)
        ents.append({"p": p, "k": "d", "mode": 0o755})

    def f(p, size, sparse=False):
        full = os.path.join(lower, p)
        if sparse:
            data = bytearray(size)
            head = gen("lower:%s:%s:h" % (seed, p), 65536)
            mid = gen("lower:%s:%s:m" % (seed, p), 4096)
            data[:65536] = head
            data[2 << 20:(2 << 20) + 4096] = mid
            data = bytes(data)
            with open(full, "wb") as fh:
                fh.write(head)
                fh.seek(2 << 20)
                fh.write(mid)
                fh.truncate(size)
        else:
            data = gen("lower:%s:%s" % (seed, p), size)
            with open(full, "wb") as fh:
                fh.write(data)
        os.chmod(full, 0o644)
        ents.append({"p": p, "k": "f", "mode": 0o644, "sha": sha(data), "size": size})

    rng = random.Random("build:%s" % seed)
    for p in SHARED_DIRS:
        d(p)
    for k in range(workers):
        sizes = LOWER_SIZES * 2
        rng.shuffle(sizes)
        for i, size in enumerate(sizes):
            f("%s/k%d_f%d" % (["a", "a/b", "c"][i % 3], k, i), size)
        f("c/k%d_sparse" % k, 3 << 20, sparse=True)
        d("c/k%d_tree" % k)
        d("c/k%d_tree/y" % k)
        f("c/k%d_tree/x" % k, 1000)
        f("c/k%d_tree/y/z" % k, 70000)
        d("a/k%d_empty" % k)
        d("a/k%d_ldir" % k)
        f("a/k%d_ldir/in" % k, 5000)
    # a hard-linked pair and a symlink (worker 0 and the last worker)
    f("a/k0_hla", 1 << 20)
    os.link(os.path.join(lower, "a/k0_hla"), os.path.join(lower, "c/k0_hlb"))
    ents.append(dict(ents[-1], p="c/k0_hlb"))
    kl = workers - 1
    os.symlink("k%d_f0" % kl, os.path.join(lower, "a/k%d_link" % kl))
    ents.append({"p": "a/k%d_link" % kl, "k": "l", "target": "k%d_f0" % kl})
    with open(manifest, "w") as fh:
        json.dump({"seed": seed, "workers": workers, "entries": ents,
                   "hardlink": ["a/k0_hla", "c/k0_hlb"]}, fh)


# ------------------------------------------------------------------ storm

DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


class Storm:
    def __init__(self, mnt, seed, k, manifest, log):
        self.mnt, self.k = mnt, k
        self.rng = random.Random("storm:%s:%d" % (seed, k))
        self.seed = seed
        m = json.load(open(manifest))
        self.kind = {}          # our paths -> 'f' | 'd' | 'l'
        self.size = {}          # our files -> size
        for e in m["entries"]:
            if owner(e["p"]) == k:
                self.kind[e["p"]] = e["k"]
                self.size[e["p"]] = e.get("size", 0)
        allowed = [o for o in os.environ.get("CRASH_OPS", ",".join(OP_WEIGHTS)).split(",") if o]
        for o in allowed:
            if o not in OP_WEIGHTS:
                raise SystemExit("CRASH_OPS: unknown step kind %s (known: %s)" % (o, ",".join(OP_WEIGHTS)))
        self.kinds = [o for o in OP_WEIGHTS if o in allowed and o != "hardlink"]
        self.weights = [OP_WEIGHTS[o] for o in self.kinds]
        if not self.kinds:
            raise SystemExit("CRASH_OPS: no step kinds left")
        self.pinned = set(m["hardlink"]) if k == 0 else set()   # never renamed/unlinked
        # the hard-linked pair: the second name is never written; the first
        # only if "hardlink" is among CRASH_OPS
        self.readonly = set(m["hardlink"][1:] if "hardlink" in allowed else m["hardlink"]) if k == 0 else set()
        # lower files not touched yet: a step on one copies it up; half of
        # the data steps pick one of these while any is left
        self.untouched = {p for p, t in self.kind.items() if t == "f" and p not in self.readonly}
        self.fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.n = 0
        self.counter = 0
        self.plan = []

    def rec(self, **r):
        os.write(self.fd, (json.dumps(r, separators=(",", ":")) + "\n").encode())

    def path(self, p):
        return os.path.join(self.mnt, p)

    def children(self, d):
        pre = d + "/"
        return [p for p in self.kind if p.startswith(pre) and "/" not in p[len(pre):]]

    def dirs_to_create_in(self):
        return SHARED_DIRS + [p for p, t in self.kind.items() if t == "d"]

    def pick(self, kinds, exclude=()):
        c = sorted(p for p, t in self.kind.items() if t in kinds and p not in exclude)
        return self.rng.choice(c) if c else None

    # each returns the op record (without n/t) or None if impossible now
    def choose(self):
        if self.plan:
            return self.plan.pop(0)
        r = self.rng
        kind = r.choices(self.kinds, self.weights)[0]
        if kind in ("append", "rewrite_inplace", "rewrite_rename", "chmod"):
            if self.untouched and r.random() < 0.5:
                p = r.choice(sorted(self.untouched))
            else:
                p = self.pick("f", self.readonly)
            if p is None:
                return None
            if kind == "append" and self.size[p] + max(APPEND_SIZES) > MAX_FILE:
                kind = "rewrite_inplace"
            if kind == "append":
                return {"op": "append", "p": p, "len": r.choice(APPEND_SIZES)}
            if kind == "chmod":
                return {"op": "chmod", "p": p, "mode": r.choice([0o600, 0o640, 0o755, 0o444])}
            n = r.choice(REWRITE_SIZES)
            if kind == "rewrite_rename":
                tmp = os.path.dirname(p) + "/k%d_tmp%d" % (self.k, self.next())
                return {"op": "rewrite_rename", "p": p, "tmp": tmp, "len": n}
            return {"op": "rewrite_inplace", "p": p, "len": n, "how": r.choice(["trunc", "ftrunc"])}
        if kind == "create":
            d = r.choice(self.dirs_to_create_in())
            return {"op": "create", "p": self.name_in(d, "n"), "len": r.choice(REWRITE_SIZES)}
        if kind == "rename":
            p = self.pick("fl", self.pinned)
            if p is None:
                return None
            if r.random() < 0.3 and self.kind[p] == "f":
                tgt = self.pick("f", self.pinned | {p})
                if tgt:
                    return {"op": "rename", "a": p, "b": tgt}
            return {"op": "rename", "a": p, "b": self.name_in(r.choice(self.dirs_to_create_in()), "r")}
        if kind == "unlink":
            p = self.pick("fl", self.pinned)
            return {"op": "unlink", "p": p} if p else None
        if kind == "mkdir":
            return {"op": "mkdir", "p": self.name_in(r.choice(self.dirs_to_create_in()), "d")}
        if kind == "rmrf":
            d = self.pick("d")
            if d is None:
                return None
            self.plan_rm_rf(d)
            if r.random() < 0.5:      # rm -rf d; mkdir d; fill d
                self.plan.append({"op": "mkdir", "p": d})
                self.plan.append({"op": "create", "p": d + "/new%d" % self.next(), "len": 4096})
            return self.plan.pop(0)
        # dirrename
        d = self.pick("d")
        if d is None:
            return None
        parent = r.choice([x for x in self.dirs_to_create_in() if not (x == d or x.startswith(d + "/"))])
        return {"op": "rename", "a": d, "b": self.name_in(parent, "m")}

    def name_in(self, d, stem):
        """A fresh name in d: in a shared directory it carries our k<N>_ prefix."""
        n = self.next()
        return "%s/%s%s%d" % (d, "k%d_" % self.k if owner(d) is None else "", stem, n)

    def next(self):
        self.counter += 1
        return self.counter

    def plan_rm_rf(self, d):
        # depth first: children before their directory (rm -rf order)
        for c in sorted(self.children(d)):
            if self.kind[c] == "d":
                self.plan_rm_rf(c)
            else:
                self.plan.append({"op": "unlink", "p": c})
        self.plan.append({"op": "rmdir", "p": d})

    def write_all(self, fd, data):
        mv = memoryview(data)
        while mv:
            n = os.write(fd, mv[:1 << 20])
            mv = mv[n:]

    def do(self, op, data):
        P = self.path
        o = op["op"]
        if o == "append":
            fd = os.open(P(op["p"]), os.O_WRONLY | os.O_APPEND)
            try:
                self.write_all(fd, data)
            finally:
                os.close(fd)
        elif o == "rewrite_inplace":
            if op["how"] == "trunc":
                fd = os.open(P(op["p"]), os.O_WRONLY | os.O_TRUNC)
            else:
                fd = os.open(P(op["p"]), os.O_WRONLY)
            try:
                if op["how"] == "ftrunc":
                    os.ftruncate(fd, 0)
                self.write_all(fd, data)
            finally:
                os.close(fd)
        elif o in ("create", "rewrite_rename"):
            p = op["tmp"] if o == "rewrite_rename" else op["p"]
            fd = os.open(P(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self.write_all(fd, data)
            finally:
                os.close(fd)
            if o == "rewrite_rename":
                os.rename(P(op["tmp"]), P(op["p"]))
        elif o == "rename":
            os.rename(P(op["a"]), P(op["b"]))
        elif o == "unlink":
            os.unlink(P(op["p"]))
        elif o == "mkdir":
            os.mkdir(P(op["p"]), 0o755)
        elif o == "rmdir":
            os.rmdir(P(op["p"]))
        elif o == "chmod":
            os.chmod(P(op["p"]), op["mode"])

    def update(self, op):
        o = op["op"]
        if o in ("create", "rewrite_rename", "rewrite_inplace"):
            self.kind[op["p"]] = "f"
            self.size[op["p"]] = op["len"]
        elif o == "append":
            self.size[op["p"]] += op["len"]
        elif o == "rename":
            a, b = op["a"], op["b"]
            for p in sorted(self.kind):
                if p == a or p.startswith(a + "/"):
                    self.kind[b + p[len(a):]] = self.kind.pop(p)
                    self.size[b + p[len(a):]] = self.size.pop(p, 0)
        elif o in ("unlink", "rmdir"):
            del self.kind[op["p"]]
            self.size.pop(op["p"], None)
        elif o == "mkdir":
            self.kind[op["p"]] = "d"

    def alive(self):
        try:
            os.statvfs(self.mnt)    # statfs is never answered from a cache
            return True
        except OSError:
            return False

    def kill(self, pid):
        """SIGKILL pid if it still is the daemon serving our mount."""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                if os.fsencode(self.mnt) not in fh.read().split(b"\0"):
                    return
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def touch(self, op):
        """Forget the lower files op touches; True if it copies one of >= 64 KiB up."""
        cu = False
        for key in ("p", "a", "b"):
            p = op.get(key)
            if p is None:
                continue
            if p in self.untouched:
                cu = cu or (key != "b" and self.size.get(p, 0) >= 65536)
                self.untouched.discard(p)
            for q in [q for q in self.untouched if q.startswith(p + "/")]:
                self.untouched.discard(q)
        return cu

    def run(self, seconds=30):
        """Steps until the mount dies (or seconds pass).  With CRASH_KILL_PID
        and CRASH_KILL_AT=M: the M-th step that copies a lower file of 64 KiB
        or more up arms a timer that sends SIGKILL to that PID (the daemon)
        after a random 0..(0.5 + CRASH_KILL_MS_PER_MIB * size in MiB) ms
        (default 1.5 ms a MiB: about a copy-up's time here), then runs."""
        os.umask(0o022)
        end = time.monotonic() + seconds
        kill_pid = int(os.environ.get("CRASH_KILL_PID", "0"))
        kill_at = int(os.environ.get("CRASH_KILL_AT", "0"))
        kill_ms = float(os.environ.get("CRASH_KILL_MS_PER_MIB", "1.5"))
        krng = random.Random("kill:%s:%d" % (self.seed, self.k))
        ncu = 0
        self.rec(t="S", k=self.k)
        while time.monotonic() < end:
            op = self.choose()
            if op is None:
                continue
            self.n += 1
            op = dict(op, t="I", n=self.n)
            if "len" in op:
                op["tag"] = "w:%s:%d:%d" % (self.seed, self.k, self.n)
            size = self.size.get(op.get("p", op.get("a")), 0)
            if self.touch(op):
                op["cu"] = 1
                ncu += 1
            self.rec(**op)
            if kill_pid and ncu == kill_at and op.get("cu"):
                delay = krng.uniform(0, 0.5 + kill_ms * size / (1 << 20))
                self.rec(t="K", n=self.n, ms=round(delay, 3))
                threading.Timer(delay / 1000, self.kill, (kill_pid,)).start()
                kill_pid = 0
            data = gen(op["tag"], op["len"]) if "len" in op else None
            try:
                self.do(op, data)
            except OSError as e:
                if e.errno in DEAD or not self.alive():
                    return 0
                if op["op"] == "rename" and self.kind.get(op["a"]) == "d" and e.errno == errno.EXDEV:
                    self.rec(t="D", n=self.n, r="EXDEV")
                    continue
                self.rec(t="E", n=self.n, r=errno.errorcode.get(e.errno, str(e.errno)),
                         msg=str(e))
                return 1
            self.rec(t="D", n=self.n, r="ok")
            self.update(op)
        self.rec(t="T")
        return 0


# ------------------------------------------------------------------ verify
# Expectations: ('f', spec, modes) with spec ('exact', data) | ('partial', base,
# new) | ('partner', data, other); ('maybe', spec) absent or a file with spec;
# ('d', modes); ('l', target).

def partial_ok(obs, base, new):
    """obs == base + r, r a partial write of new: len(r) <= len(new), every
    byte r[i] == new[i] or NUL (a hole), and the last byte of r written."""
    if len(obs) < len(base) or obs[:len(base)] != base:
        return False
    r = obs[len(base):]
    if len(r) > len(new):
        return False
    if not r:
        return True
    if r[-1] == 0:
        return False
    if r == new[:len(r)]:
        return True
    zero = bytes(4096)
    for off in range(0, len(r), 4096):
        a, b = r[off:off + 4096], new[off:off + 4096][:len(r) - off]
        if a == b or a == zero[:len(a)]:
            continue
        if any(x != y and x != 0 for x, y in zip(a, b)):
            return False
    return True


def describe(data):
    if not data:
        return "empty"
    nz = len(data) - data.count(0)
    return "%d bytes%s" % (len(data), ", all NUL" if nz == 0 else (", %d NUL" % (len(data) - nz) if nz < len(data) else ""))


def first_diff(a, b):
    n = min(len(a), len(b))
    for off in range(0, n, 65536):
        if a[off:off + 65536] != b[off:off + 65536]:
            for i in range(off, min(off + 65536, n)):
                if a[i] != b[i]:
                    return i
    return n


def spec_ok(spec, data, observed):
    kind = spec[0]
    if kind == "exact":
        return data == spec[1]
    if kind == "partial":
        return partial_ok(data, spec[1], spec[2])
    if kind == "partner":
        other = observed.get(spec[2])
        return data == spec[1] or (other is not None and other[0] == "f" and data == other[1])
    raise ValueError(kind)


def spec_str(spec, data):
    kind = spec[0]
    if kind == "exact":
        i = first_diff(data, spec[1])
        return "want exactly %s, got %s (first difference at %d)" % (describe(spec[1]), describe(data), i)
    if kind == "partial":
        base, new = spec[1], spec[2]
        if data[:len(base)] != base:
            return ("want the old %s then part of %d new bytes, got %s (old content differs at %d)"
                    % (describe(base), len(new), describe(data), first_diff(data, base)))
        return ("want the old %s then part of %d new bytes, got %s (new part differs at %d)"
                % (describe(base), len(new), describe(data), len(base) + first_diff(data[len(base):], new)))
    return "want the lower content %s or the same as %s, got %s" % (describe(spec[1]), spec[2], describe(data))


def match(alt, observed, k):
    """Mismatch lines of world alt (worker k's paths) against observed."""
    out = []
    want = {p: e for p, e in alt.items() if owner(p) == k}
    got = {p: o for p, o in observed.items() if owner(p) == k}
    for p in sorted(set(want) | set(got)):
        e, o = want.get(p), got.get(p)
        if e is None:
            out.append("%s: unexpected %s" % (p, {"f": "file", "d": "directory", "l": "symlink"}.get(o[0], o[0])))
            continue
        if e[0] == "maybe":
            if o is None:
                continue
            e = ("f", e[1], {0o644})
        if o is None:
            out.append("%s: missing" % p)
            continue
        if o[0] != e[0]:
            out.append("%s: is a %s, want a %s" % (p, o[0], e[0]))
            continue
        if e[0] == "f":
            if not spec_ok(e[1], o[1], observed):
                out.append("%s: %s" % (p, spec_str(e[1], o[1])))
            if e[1][0] != "partner" and o[2] not in e[2]:
                out.append("%s: mode %o, want %s" % (p, o[2], "/".join("%o" % m for m in sorted(e[2]))))
        elif e[0] == "d":
            if o[1] not in e[1]:
                out.append("%s: mode %o, want %s" % (p, o[1], "/".join("%o" % m for m in sorted(e[1]))))
        elif e[0] == "l" and o[1] != e[1]:
            out.append("%s: link to %r, want %r" % (p, o[1], e[1]))
    return out


def apply(world, op, tag_data):
    """The world after op completed (a new dict)."""
    w = dict(world)
    o = op["op"]
    if o == "append":
        cur = w[op["p"]]
        w[op["p"]] = ("f", ("exact", cur[1][1] + tag_data), cur[2])
    elif o == "rewrite_inplace":
        cur = w[op["p"]]
        w[op["p"]] = ("f", ("exact", tag_data), cur[2])
    elif o in ("create", "rewrite_rename"):
        w[op["p"]] = ("f", ("exact", tag_data), {0o644})
    elif o == "rename":
        a, b = op["a"], op["b"]
        for p in [p for p in w if p == b or p.startswith(b + "/")]:
            del w[p]
        for p in sorted(p for p in world if p == a or p.startswith(a + "/")):
            w[b + p[len(a):]] = w.pop(p)
    elif o in ("unlink", "rmdir"):
        del w[op["p"]]
    elif o == "mkdir":
        w[op["p"]] = ("d", {0o755})
    elif o == "chmod":
        cur = w[op["p"]]
        w[op["p"]] = ("f", cur[1], {op["mode"]})
    return w


def in_flight(world, op, data):
    """Every world the crash may legitimately have left while op ran."""
    o = op["op"]
    done = apply(world, op, data)
    if o == "append":
        w = dict(world)
        cur = w[op["p"]]
        w[op["p"]] = ("f", ("partial", cur[1][1], data), cur[2])
        return [w]
    if o == "rewrite_inplace":
        w = dict(world)
        cur = w[op["p"]]
        w[op["p"]] = ("f", ("partial", b"", data), cur[2])
        return [world, w]
    if o == "rewrite_rename":
        w = dict(world)
        w[op["tmp"]] = ("maybe", ("partial", b"", data))
        return [w, done]
    if o == "create":
        w = dict(world)
        w[op["p"]] = ("maybe", ("partial", b"", data))
        return [w]
    if o == "chmod":
        w = dict(world)
        cur = w[op["p"]]
        w[op["p"]] = ("f", cur[1], set(cur[2]) | {op["mode"]})
        return [w]
    return [world, done]


def read_view(mnt, temp_re, problems):
    """Merged view: path -> ('f', data, mode) | ('d', mode) | ('l', target) | (other,)."""
    view = {}

    def walk(rel):
        full = os.path.join(mnt, rel) if rel else mnt
        for name in sorted(os.listdir(full)):
            p = rel + "/" + name if rel else name
            if temp_re.search(name):
                problems.append("merged view: %s: name of one of our temporaries" % p)
            st = os.lstat(os.path.join(mnt, p))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with open(os.path.join(mnt, p), "rb") as fh:
                    data = fh.read()
                if len(data) != st.st_size:
                    problems.append("merged view: %s: read %d bytes, st_size %d" % (p, len(data), st.st_size))
                view[p] = ("f", data, mode)
            elif stat.S_ISDIR(st.st_mode):
                view[p] = ("d", mode)
                walk(p)
            elif stat.S_ISLNK(st.st_mode):
                view[p] = ("l", os.readlink(os.path.join(mnt, p)))
            else:
                view[p] = ("other %o" % st.st_mode,)

    walk("")
    return view


def verify(mnt, lower, manifest, temp_regex, logs):
    problems = []
    info = []
    m = json.load(open(manifest))
    temp_re = re.compile(temp_regex)
    world = {}
    for e in m["entries"]:
        p = e["p"]
        if e["k"] == "f":
            data = open(os.path.join(lower, p), "rb").read()
            if sha(data) != e["sha"]:
                problems.append("lower layer changed: %s (%s)" % (p, describe(data)))
            world[p] = ("f", ("exact", data), {e["mode"]})
        elif e["k"] == "d":
            world[p] = ("d", {e["mode"]})
        else:
            world[p] = ("l", e["target"])
    hla, hlb = m["hardlink"]
    world[hlb] = ("f", ("partner", world[hlb][1][1], hla), set())
    if os.stat(os.path.join(lower, hla)).st_ino != os.stat(os.path.join(lower, hlb)).st_ino:
        problems.append("lower layer changed: %s and %s are no longer one inode" % (hla, hlb))

    alts = {}
    for log in logs:
        recs = [json.loads(l) for l in open(log) if l.strip()]
        k = recs[0]["k"] if recs and recs[0]["t"] == "S" else None
        if k is None:
            problems.append("%s: storm never started" % log)
            continue
        intents = {}
        done = {}
        for r in recs:
            if r["t"] == "I":
                intents[r["n"]] = r
            elif r["t"] in ("D", "E"):
                done[r["n"]] = r
        pending = None
        ndone = 0
        for r in recs:
            if r["t"] == "K":
                info.append("worker %d armed the kill at step %d (%s), %.3f ms"
                            % (k, r["n"], summary(intents[r["n"]]), r["ms"]))
        for n in sorted(intents):
            op = intents[n]
            data = gen(op["tag"], op["len"]) if "len" in op else None
            d = done.get(n)
            if d is None or d["t"] == "E":
                if d is not None:
                    problems.append("worker %d step %d (%s) failed with %s while the daemon was alive: %s"
                                    % (k, n, summary(op), d["r"], d.get("msg", "")))
                pending = (op, data)
                if n != max(intents):
                    problems.append("worker %d: step %d has no result but later steps ran" % (k, n))
                break
            ndone += 1
            if d["r"] == "ok":
                world = apply(world, op, data)
        if pending:
            alts[k] = in_flight(world, *pending)
            info.append("worker %d: %d steps done, in flight: %s" % (k, ndone, summary(pending[0])))
        else:
            info.append("worker %d: %d steps done, none in flight" % (k, ndone))

    try:
        observed = read_view(mnt, temp_re, problems)
    except OSError as e:
        problems.append("merged view unreadable: %s" % e)
        return problems, info
    # shared directories: exactly these, unchanged
    for p in sorted(set(p for p in observed if owner(p) is None) | set(SHARED_DIRS)):
        o = observed.get(p)
        if p not in SHARED_DIRS:
            problems.append("%s: unexpected name in a shared directory" % p)
        elif o is None or o[0] != "d":
            problems.append("%s: shared directory missing or not a directory" % p)
    for k in range(m["workers"]):
        cands = alts.get(k, [world])
        results = [match(c, observed, k) for c in cands]
        if all(results):
            best = min(results, key=len)
            problems.append("worker %d: the merged view matches no state the crash may leave (%d); e.g. %s"
                            % (k, len(cands), "; ".join(best[:3]) + (" ..." if len(best) > 3 else "")))
    return problems, info


def summary(op):
    o = op["op"]
    if o == "rename":
        return "rename %s -> %s" % (op["a"], op["b"])
    s = "%s %s" % (o, op["p"])
    if "len" in op:
        s += " (%d bytes%s)" % (op["len"], ", " + op["how"] if "how" in op else "")
    if o == "chmod":
        s += " %o" % op["mode"]
    return s


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    a = sys.argv[2:]
    if cmd == "build" and len(a) == 4:
        build(a[0], a[1], int(a[2]), a[3])
        return 0
    if cmd == "storm" and len(a) in (5, 6):
        return Storm(a[0], a[1], int(a[2]), a[3], a[4]).run(float(a[5]) if len(a) == 6 else 30)
    if cmd == "verify" and len(a) >= 5:
        problems, info = verify(a[0], a[1], a[2], a[3], a[4:])
        for l in info:
            print("# " + l)
        for l in problems:
            print(l)
        return 1 if problems else 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
