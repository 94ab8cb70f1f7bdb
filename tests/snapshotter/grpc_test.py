#!/usr/bin/python3
"""gRPC tests of the containerd snapshotter shim (containerd-fuse-overlayfs-grpc).

Every test starts its own shim on a fresh ROOT and socket, talks to it as
containerd's proxy client does (gRPC on a unix socket, metadata
containerd-namespace), and compares what comes back with what containerd's Go
fuse-overlayfs snapshotter hands back.  Raw HTTP/2 for the malformed-input
tests goes through python3-h2.

Tests of malformed input are in grpc_malformed_test.py, kill -9 and restart
in grpc_crash_test.py, the self-mount mode in grpc_self_test.py, id-mapped snapshots in grpc_idmap_test.py, the rootless
start-up checks in grpc_startup_test.py; all are registered at the start.

Usage: grpc_test.py [TEST-NAME-SUBSTRING...]
Environment: SNAPSHOTTER_BIN (default TOP/containerd-fuse-overlayfs-grpc),
SNAPGRPC_TMP (work directory; run.sh makes it and cleans it up).
Prints "ok N - name" / "not ok N - name: detail" and ends with
"N passed, M failed"; exits non-zero when something failed.
"""
import os
import random
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("SNAPSHOTTER_BIN", os.path.join(TOP, "containerd-fuse-overlayfs-grpc"))
GEN = os.path.join(TOP, "contrib", "snapshotter", "gen")
SVC = "/containerd.services.snapshots.v1.Snapshots/"
MD = (("containerd-namespace", "default"),)
UIDMAP = "containerd.io/snapshot/uidmapping"
GIDMAP = "containerd.io/snapshot/gidmapping"

# grpc, h2 and the generated modules are imported by the prerequisites test.
grpc = pb = empty_pb2 = field_mask_pb2 = h2 = None
METHODS = {}


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# ---------------------------------------------------------------- environment

WORK = None
PIDFILE = None


def work_dir():
    global WORK, PIDFILE
    if WORK is None:
        WORK = os.environ.get("SNAPGRPC_TMP") or tempfile.mkdtemp(prefix="snapgrpc.", dir="/tmp")
        os.makedirs(WORK, exist_ok=True)
        WORK = os.path.realpath(WORK)
        PIDFILE = os.path.join(WORK, "pids")
    return WORK


def unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_table():
    """(mount point, fstype) of every mount, in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append((unescape_mountinfo(fields[4]), fields[sep + 1]))
    return out


def mounts_at(path):
    return [t for (m, t) in mounts_table() if m == path]


def umount_under(prefix):
    for _ in range(5):
        ms = sorted({m for (m, _) in mounts_table() if m == prefix or m.startswith(prefix + "/")},
                    key=len, reverse=True)
        if not ms:
            return True
        for m in ms:
            subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)
    return not any(m == prefix or m.startswith(prefix + "/") for (m, _) in mounts_table())


def rm_tree(path):
    if umount_under(path):
        subprocess.run(["rm", "-rf", "--one-file-system", path], stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- the shim


class Shim:
    """One shim process; stopped by PID only."""

    def __init__(self, ctx, root, sock, args=(), env=None, wait=True):
        self.ctx, self.root, self.sock = ctx, root, sock
        self.log = os.path.join(ctx.dir, "shim%d.log" % len(ctx.shims))
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.update(env or {})
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([BIN] + list(args) + [sock, root], stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, env=e)
        ctx.shims.append(self)
        with open(PIDFILE, "a") as f:
            f.write("%d\n" % self.proc.pid)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Fail("shim exited with %s before serving: %s" % (self.proc.returncode, self.log_tail()))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                return
            except OSError:
                time.sleep(0.01)
            finally:
                s.close()
        raise Fail("shim not serving after %ds: %s" % (timeout, self.log_tail()))

    def log_tail(self, n=5):
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def term(self, timeout=15):
        """SIGTERM; returns the exit status (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def stop_ok(self):
        rc = self.term()
        check(rc == 0, "shim did not exit 0 on SIGTERM (status %s): %s" % (rc, self.log_tail()))

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Ctx:
    """A test's directory, shims and clients; cleaned up even on failure."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix="t.", dir=work_dir())
        self.shims, self.clients = [], []

    def root(self, name="root"):
        return os.path.join(self.dir, name)

    def sock(self, name="sock"):
        return os.path.join(self.dir, name)

    def start(self, args=(), root=None, sock=None, env=None, wait=True):
        return Shim(self, root or self.root(), sock or self.sock(), args, env, wait)

    def client(self, sock=None):
        c = Client(sock or self.sock())
        self.clients.append(c)
        return c

    def close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []

    def cleanup(self):
        self.close_clients()
        for s in self.shims:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        rm_tree(self.dir)


# ---------------------------------------------------------------- the client


def setup_protos():
    global grpc, pb, empty_pb2, field_mask_pb2, h2, METHODS
    out = os.path.join(work_dir(), "pb")
    os.makedirs(out, exist_ok=True)
    for f in ("snapshots.proto", "mount.proto"):
        check(os.path.isfile(os.path.join(GEN, f)), "%s/%s missing (build the shim first)" % (GEN, f))
    r = subprocess.run(["protoc", "--python_out=" + out, "-I" + GEN, "-I/usr/include",
                        "snapshots.proto", "mount.proto"], capture_output=True, text=True)
    check(r.returncode == 0, "protoc failed: %s" % r.stderr.strip())
    sys.path.insert(0, out)
    import grpc as _grpc
    import snapshots_pb2
    from google.protobuf import empty_pb2 as _e, field_mask_pb2 as _f
    import h2.connection, h2.config, h2.events  # noqa: F401
    import h2 as _h2
    grpc, pb, empty_pb2, field_mask_pb2, h2 = _grpc, snapshots_pb2, _e, _f, _h2
    METHODS = {
        "Prepare": (pb.PrepareSnapshotResponse, False),
        "View": (pb.ViewSnapshotResponse, False),
        "Mounts": (pb.MountsResponse, False),
        "Commit": (empty_pb2.Empty, False),
        "Remove": (empty_pb2.Empty, False),
        "Stat": (pb.StatSnapshotResponse, False),
        "Update": (pb.UpdateSnapshotResponse, False),
        "List": (pb.ListSnapshotsResponse, True),
        "Usage": (pb.UsageResponse, False),
        "Cleanup": (empty_pb2.Empty, False),
    }


def mtuple(mounts):
    return [(m.type, m.source, list(m.options)) for m in mounts]


class Client:
    def __init__(self, sock):
        self.ch = grpc.insecure_channel("unix:" + sock)
        self.fns = {}
        for name, (resp, stream) in METHODS.items():
            mk = self.ch.unary_stream if stream else self.ch.unary_unary
            self.fns[name] = mk(SVC + name, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=resp.FromString)

    def close(self):
        self.ch.close()

    def call(self, name, req, timeout=20):
        r = self.fns[name](req, metadata=MD, timeout=timeout)
        return list(r) if METHODS[name][1] else r

    def prepare(self, key, parent="", labels=None):
        return mtuple(self.call("Prepare", pb.PrepareSnapshotRequest(
            snapshotter="fuse-overlayfs", key=key, parent=parent, labels=labels or {})).mounts)

    def view(self, key, parent="", labels=None):
        return mtuple(self.call("View", pb.ViewSnapshotRequest(
            snapshotter="fuse-overlayfs", key=key, parent=parent, labels=labels or {})).mounts)

    def mounts(self, key):
        return mtuple(self.call("Mounts", pb.MountsRequest(snapshotter="fuse-overlayfs", key=key)).mounts)

    def commit(self, name, key, labels=None):
        self.call("Commit", pb.CommitSnapshotRequest(snapshotter="fuse-overlayfs", name=name, key=key,
                                                     labels=labels or {}))

    def remove(self, key):
        self.call("Remove", pb.RemoveSnapshotRequest(snapshotter="fuse-overlayfs", key=key))

    def stat(self, key):
        return self.call("Stat", pb.StatSnapshotRequest(snapshotter="fuse-overlayfs", key=key)).info

    def update(self, name, labels=None, paths=None):
        req = pb.UpdateSnapshotRequest(snapshotter="fuse-overlayfs",
                                       info=pb.Info(name=name, labels=labels or {}))
        if paths is not None:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return self.call("Update", req).info

    def list_msgs(self, filters=()):
        return self.call("List", pb.ListSnapshotsRequest(snapshotter="fuse-overlayfs", filters=list(filters)))

    def list(self, filters=()):
        return [i for m in self.list_msgs(filters) for i in m.info]

    def names(self, filters=()):
        return sorted(i.name for i in self.list(filters))

    def usage(self, key):
        r = self.call("Usage", pb.UsageRequest(snapshotter="fuse-overlayfs", key=key))
        return (r.size, r.inodes)

    def cleanup(self):
        self.call("Cleanup", pb.CleanupRequest(snapshotter="fuse-overlayfs"))


def code_of(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def expect_code(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        check(e.code() == code, "%s%r: expected %s, got %s (%s)" %
              (getattr(fn, "__name__", "call"), args, code.name, e.code().name, e.details()))
        return
    raise Fail("%s%r: expected %s, got OK" % (getattr(fn, "__name__", "call"), args, code.name))


# ---------------------------------------------------------------- helpers


def ids(root):
    """name -> id from the shim's metadata."""
    db = sqlite3.connect("file:%s/metadata.sqlite?mode=ro" % root, uri=True, timeout=10)
    try:
        return {n: str(i) for (i, n) in db.execute("SELECT id, name FROM snapshots")}
    finally:
        db.close()


def serving(ctx, args=()):
    """A shim on the test's ROOT: (the shim, a client, ROOT's real path)."""
    shim = ctx.start(list(args))
    return shim, ctx.client(), os.path.realpath(ctx.root())


def fs(root, sid, leaf="fs"):
    return "%s/snapshots/%s/%s" % (root, sid, leaf)


def write_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def alive_and_working(shim, ctx):
    check(shim.alive(), "shim died: %s" % shim.log_tail())
    c = Client(shim.sock)
    try:
        key = "probe-%d" % random.randrange(1 << 30)
        c.prepare(key)
        check(c.stat(key).kind == pb.ACTIVE, "probe snapshot not active")
        c.remove(key)
    except grpc.RpcError as e:
        raise Fail("another connection does not work: %s %s" % (e.code().name, e.details()))
    finally:
        c.close()
    check(shim.alive(), "shim died: %s" % shim.log_tail())


# ================================================================ tests

TESTS = []


def test(name):
    def reg(fn):
        TESTS.append((name, fn))
        return fn
    return reg


@test("prerequisites")
def t_prereq(ctx):
    check(os.geteuid() == 0, "needs root")
    check(os.path.exists("/dev/fuse"), "/dev/fuse is missing")
    check(os.path.isfile(BIN) and os.access(BIN, os.X_OK), "%s is not built" % BIN)
    for prog in ("fuse-overlayfs", "mount.fuse3", "fusermount3", "protoc", "umount"):
        check(any(os.access(os.path.join(d, prog), os.X_OK) for d in os.environ.get("PATH", "").split(":")),
              "%s not in PATH (contrib/install-deps.sh, make install)" % prog)
    try:
        setup_protos()
    except ImportError as e:
        raise Fail("%s (python3-grpcio python3-protobuf python3-h2: contrib/install-deps.sh)" % e)


@test("happy path: every method and the mounts handed back")
def t_happy(ctx):
    root = ctx.root()
    ctx.start()
    c = ctx.client()
    R = os.path.realpath(root)
    # parentless Prepare: bind rw of its own fs
    m = c.prepare("a", labels={"l": "1"})
    I = ids(root)
    check(m == [("bind", fs(R, I["a"]), ["rw", "rbind"])], "parentless Prepare: %r" % m)
    check(c.mounts("a") == m, "Mounts(a) differs from Prepare: %r" % c.mounts("a"))
    # parentless View: bind ro of its own fs
    m = c.view("v0")
    I = ids(root)
    check(m == [("bind", fs(R, I["v0"]), ["ro", "rbind"])], "parentless View: %r" % m)
    check(c.mounts("v0") == m, "Mounts(v0): %r" % c.mounts("v0"))
    info = c.stat("a")
    check((info.name, info.parent, info.kind, dict(info.labels)) == ("a", "", pb.ACTIVE, {"l": "1"}),
          "Stat(a): %s" % info)
    c.commit("base1", "a")
    info = c.stat("base1")
    check((info.name, info.parent, info.kind) == ("base1", "", pb.COMMITTED), "Stat(base1): %s" % info)
    expect_code(grpc.StatusCode.NOT_FOUND, c.stat, "a")
    # single-parent View: bind ro of the parent's fs
    m = c.view("v1", "base1")
    I = ids(root)
    check(m == [("bind", fs(R, I["base1"]), ["ro", "rbind"])], "single-parent View: %r" % m)
    check(c.mounts("v1") == m, "Mounts(v1): %r" % c.mounts("v1"))
    # active with one parent: the overlay
    m = c.prepare("b", "base1")
    I = ids(root)
    want = [("fuse3.fuse-overlayfs", "overlay",
             ["workdir=" + fs(R, I["b"], "work"), "upperdir=" + fs(R, I["b"]), "lowerdir=" + fs(R, I["base1"])])]
    check(m == want, "Prepare with a parent: %r, expected %r" % (m, want))
    check(c.mounts("b") == m, "Mounts(b): %r" % c.mounts("b"))
    check(c.stat("b").parent == "base1", "Stat(b).parent: %r" % c.stat("b").parent)
    c.commit("base2", "b")
    I = ids(root)
    lower = "lowerdir=%s:%s" % (fs(R, I["base2"]), fs(R, I["base1"]))
    # a view of two parents: lowerdir only, nearest first
    m = c.view("v2", "base2")
    check(m == [("fuse3.fuse-overlayfs", "overlay", [lower])], "View with 2 parents: %r" % m)
    check(c.mounts("v2") == m, "Mounts(v2): %r" % c.mounts("v2"))
    # id mappings from the labels, ',' turned into ':'
    m = c.prepare("c", "base2", labels={UIDMAP: "0:1000:1,1:100000:65536", GIDMAP: "0:2000:1,1:200000:65536"})
    I = ids(root)
    want = [("fuse3.fuse-overlayfs", "overlay",
             ["workdir=" + fs(R, I["c"], "work"), "upperdir=" + fs(R, I["c"]), lower,
              "uidmapping=0:1000:1:1:100000:65536", "gidmapping=0:2000:1:1:200000:65536"])]
    check(m == want, "Prepare with id mappings: %r, expected %r" % (m, want))
    check(c.mounts("c") == m, "Mounts(c): %r" % c.mounts("c"))
    m = c.view("v3", "base2", labels={UIDMAP: "0:1000:65536"})
    check(m == [("fuse3.fuse-overlayfs", "overlay", [lower, "uidmapping=0:1000:65536"])],
          "View with 2 parents and uidmapping: %r" % m)
    # Update, Usage, List, Cleanup, Remove
    info = c.update("c", {"k": "v"}, ["labels.k"])
    check(dict(info.labels).get("k") == "v", "Update: %s" % info)
    size, inodes = c.usage("c")
    check(inodes >= 1, "Usage(c): %r" % ((size, inodes),))
    names = c.names()
    check(names == sorted(["base1", "base2", "c", "v0", "v1", "v2", "v3"]), "List: %r" % names)
    c.cleanup()
    for k in ("v3", "v2", "c", "v1", "v0", "base2", "base1"):
        sid = ids(root)[k]
        c.remove(k)
        check(not os.path.exists("%s/snapshots/%s" % (R, sid)), "Remove(%s) left its directory" % k)
    check(c.names() == [], "List after removing everything: %r" % c.names())
    check(os.listdir(R + "/snapshots") == [], "snapshots/ not empty: %r" % os.listdir(R + "/snapshots"))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("directories: modes and the owner of fs copied from the parent")
def t_dirs(ctx):
    root = ctx.root()
    ctx.start()
    c = ctx.client()
    R = os.path.realpath(root)
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)
    check(mode(R) == 0o700, "ROOT mode %o, expected 700" % mode(R))
    check(mode(R + "/snapshots") == 0o700, "snapshots mode %o, expected 700" % mode(R + "/snapshots"))
    c.prepare("a")
    c.view("v")
    I = ids(root)
    check(mode(fs(R, I["a"])) == 0o755, "active fs mode %o" % mode(fs(R, I["a"])))
    check(mode(fs(R, I["a"], "work")) == 0o711, "work mode %o" % mode(fs(R, I["a"], "work")))
    check(mode(fs(R, I["v"])) == 0o755, "view fs mode %o" % mode(fs(R, I["v"])))
    check(not os.path.exists(fs(R, I["v"], "work")), "a view has a work directory")
    c.commit("base", "a")
    os.chown(fs(R, I["a"]), 1234, 5678)
    c.prepare("child", "base")
    c.view("vchild", "base")
    I = ids(root)
    for k in ("child", "vchild"):
        st = os.lstat(fs(R, I[k]))
        check((st.st_uid, st.st_gid) == (1234, 5678),
              "%s fs owned by %d:%d, expected the parent's 1234:5678" % (k, st.st_uid, st.st_gid))
    st = os.lstat(fs(R, I["v"]))
    check((st.st_uid, st.st_gid) == (0, 0), "parentless fs owned by %d:%d" % (st.st_uid, st.st_gid))
    check(mode(fs(R, I["child"])) == 0o755 and mode(fs(R, I["child"], "work")) == 0o711,
          "child modes %o %o" % (mode(fs(R, I["child"])), mode(fs(R, I["child"], "work"))))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("error codes of containerd's errdefs")
def t_errors(ctx):
    root = ctx.root()
    ctx.start()
    c = ctx.client()
    S = grpc.StatusCode
    for fn in (c.stat, c.mounts, c.remove, c.usage):
        expect_code(S.NOT_FOUND, fn, "missing")
    expect_code(S.NOT_FOUND, c.commit, "name", "missing")
    expect_code(S.NOT_FOUND, c.prepare, "k", "missing-parent")
    expect_code(S.NOT_FOUND, c.view, "k", "missing-parent")
    expect_code(S.NOT_FOUND, c.update, "missing", {"a": "b"})
    c.prepare("act")
    expect_code(S.ALREADY_EXISTS, c.prepare, "act")
    expect_code(S.ALREADY_EXISTS, c.view, "act")
    c.prepare("act2")
    c.commit("done", "act2")
    expect_code(S.ALREADY_EXISTS, c.prepare, "done")
    expect_code(S.ALREADY_EXISTS, c.commit, "done", "act")
    expect_code(S.ALREADY_EXISTS, c.commit, "act", "act")  # the name of an existing snapshot
    expect_code(S.INVALID_ARGUMENT, c.prepare, "k", "act")  # parent not committed
    c.view("view", "done")
    expect_code(S.INVALID_ARGUMENT, c.view, "k", "view")
    for path in ("name", "parent", "kind", "created_at", "labels.a,name"):
        expect_code(S.INVALID_ARGUMENT, c.update, "act", {"a": "b"}, path.split(","))
    check(dict(c.stat("act").labels) == {}, "a refused Update changed labels: %s" % c.stat("act"))
    for f in ('name=="unterminated', "==x", "name===x", "name==a b", ",", "labels.,kind==view"):
        expect_code(S.INVALID_ARGUMENT, c.list, [f])
    expect_code(S.FAILED_PRECONDITION, c.remove, "done")  # has children
    expect_code(S.FAILED_PRECONDITION, c.mounts, "done")  # committed
    expect_code(S.FAILED_PRECONDITION, c.commit, "c2", "view")  # a view
    expect_code(S.FAILED_PRECONDITION, c.commit, "c3", "done")  # committed
    # nothing is left of the failed calls
    check(c.names() == ["act", "done", "view"], "List after failed calls: %r" % c.names())
    left = [d for d in os.listdir(root + "/snapshots") if not d.isdigit()]
    check(not left, "failed calls left directories: %r" % left)
    check(sorted(os.listdir(root + "/snapshots")) == sorted(ids(root).values()),
          "directories %r, ids %r" % (os.listdir(root + "/snapshots"), ids(root)))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("Update: masks, labels.KEY set/remove, timestamps")
def t_update(ctx):
    ctx.start()
    c = ctx.client()
    c.prepare("k", labels={"a": "1", "b": "2", "c": "3"})
    before = c.stat("k")
    lab = lambda: dict(c.stat("k").labels)
    time.sleep(0.02)
    info = c.update("k", {"x": "9"})
    check(dict(info.labels) == {"x": "9"}, "no mask must replace labels: %s" % dict(info.labels))
    check(lab() == {"x": "9"}, "Stat after no-mask Update: %s" % lab())
    check(info.created_at == before.created_at, "created_at changed: %s -> %s" % (before.created_at, info.created_at))
    t0 = (before.updated_at.seconds, before.updated_at.nanos)
    t1 = (info.updated_at.seconds, info.updated_at.nanos)
    check(t1 > t0, "updated_at did not advance: %s -> %s" % (t0, t1))
    check(info.name == "k" and info.kind == pb.ACTIVE, "Update reply: %s" % info)
    info = c.update("k", {"a": "1", "b": "2"}, ["labels"])
    check(dict(info.labels) == {"a": "1", "b": "2"}, "mask labels must replace: %s" % dict(info.labels))
    info = c.update("k", {"c": "7", "a": "ignored"}, ["labels.c"])
    check(dict(info.labels) == {"a": "1", "b": "2", "c": "7"}, "labels.c must set only c: %s" % dict(info.labels))
    info = c.update("k", {"a": ""}, ["labels.a"])
    check(dict(info.labels) == {"b": "2", "c": "7"}, "labels.a with empty value must remove a: %s" % dict(info.labels))
    info = c.update("k", {}, ["labels.b"])
    check(dict(info.labels) == {"c": "7"}, "labels.b with no value must remove b: %s" % dict(info.labels))
    info = c.update("k", {"d": "4", "e": "5"}, ["labels.d", "labels.e"])
    check(dict(info.labels) == {"c": "7", "d": "4", "e": "5"}, "two labels.KEY paths: %s" % dict(info.labels))
    check(lab() == {"c": "7", "d": "4", "e": "5"}, "Stat disagrees with Update: %s" % lab())
    info2 = c.update("k", {}, ["labels"])
    check(dict(info2.labels) == {}, "mask labels with none given must clear: %s" % dict(info2.labels))
    check(info2.created_at == before.created_at, "created_at changed")
    # committed snapshots take updates too
    c.commit("done", "k", labels={"z": "1"})
    info = c.update("done", {"y": "2"}, ["labels.y"])
    check(dict(info.labels) == {"z": "1", "y": "2"}, "Update of a committed snapshot: %s" % dict(info.labels))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("Commit replaces labels and stores usage; Usage live for active, stored for committed")
def t_usage(ctx):
    root = ctx.root()
    ctx.start()
    c = ctx.client()
    c.prepare("k", labels={"old": "1", "keep": "x"})
    sid = ids(root)["k"]
    s0, i0 = c.usage("k")
    write_file(fs(root, sid) + "/big", 256 * 1024)
    os.mkdir(fs(root, sid) + "/dir")
    write_file(fs(root, sid) + "/dir/f", 8192)
    s1, i1 = c.usage("k")
    check(s1 >= s0 + 256 * 1024 + 8192, "Usage size did not grow: %d -> %d" % (s0, s1))
    check(i1 == i0 + 3, "Usage inodes %d -> %d, expected +3" % (i0, i1))
    os.link(fs(root, sid) + "/big", fs(root, sid) + "/hardlink")
    check(c.usage("k") == (s1, i1), "a hard link counted twice: %r vs %r" % (c.usage("k"), (s1, i1)))
    c.commit("done", "k", labels={"new": "2"})
    info = c.stat("done")
    check(dict(info.labels) == {"new": "2"}, "Commit must replace labels (not inherit): %s" % dict(info.labels))
    check(info.kind == pb.COMMITTED, "kind %s" % info.kind)
    check(c.usage("done") == (s1, i1), "Usage of committed %r, expected stored %r" % (c.usage("done"), (s1, i1)))
    write_file(fs(root, sid) + "/later", 64 * 1024)
    check(c.usage("done") == (s1, i1), "Usage of committed is not the stored one: %r vs %r" % (c.usage("done"), (s1, i1)))
    c.prepare("nolabels")
    c.commit("done2", "nolabels")
    check(dict(c.stat("done2").labels) == {}, "labels after Commit without labels: %s" % dict(c.stat("done2").labels))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


FILTER_CASES = [
    (["name==act1"], {"act1"}),
    (['name=="act1"'], {"act1"}),
    (["parent==base1"], {"base2", "view1"}),
    (['parent!=""'], {"base2", "act1", "view1", "view2"}),
    (["parent==\"\""], {"base1", "act2"}),
    (["kind==active"], {"act1", "act2"}),
    (["kind==view"], {"view1", "view2"}),
    (["kind==committed"], {"base1", "base2"}),
    (['labels."a"==1'], {"base1", "view1"}),
    (["labels.a==1"], {"base1", "view1"}),
    (['labels."a"=="1"'], {"base1", "view1"}),
    (["labels.a"], {"base1", "base2", "view1"}),
    (['labels."x.y"==z'], {"base1"}),
    (['labels."x.y"'], {"base1"}),
    (['labels.q=="with space"'], {"view2"}),
    (['labels.q=="with, comma"'], set()),
    (["kind==view,labels.a==1"], {"view1"}),
    (["kind==view", "name==base1"], {"view1", "view2", "base1"}),
    (["kind==view,labels.a", "kind==active"], {"view1", "act1", "act2"}),
    (["name~=^act"], {"act1", "act2"}),
    (["name~=/^base[0-9]$/"], {"base1", "base2"}),
    (['name~="view"'], {"view1", "view2"}),
    (["name~=|1$|"], {"base1", "act1", "view1"}),
    (["parent==base2,kind==active"], {"act1"}),
    (["name!=act1,kind==active"], {"act2"}),
    (["labels.role!=app,kind==active"], {"act2"}),
    (["labels.missing"], set()),
    (["name==nonexistent"], set()),
    ([], {"base1", "base2", "act1", "act2", "view1", "view2"}),
]


@test("List filters evaluated by the shim")
def t_filters(ctx):
    ctx.start()
    c = ctx.client()
    c.prepare("b1")
    c.commit("base1", "b1", labels={"a": "1", "x.y": "z"})
    c.prepare("b2", "base1")
    c.commit("base2", "b2", labels={"a": "2"})
    c.prepare("act1", "base2", labels={"role": "app"})
    c.prepare("act2")
    c.view("view1", "base1", labels={"a": "1"})
    c.view("view2", "base2", labels={"q": "with space"})
    bad = []
    for filters, want in FILTER_CASES:
        try:
            msgs = c.list_msgs(filters)
        except grpc.RpcError as e:
            bad.append("%r: %s %s" % (filters, e.code().name, e.details()))
            continue
        got = [i.name for m in msgs for i in m.info]
        if sorted(got) != sorted(want):
            bad.append("%r: got %r, expected %r" % (filters, sorted(got), sorted(want)))
        if not want and msgs:
            bad.append("%r: empty result sent %d messages" % (filters, len(msgs)))
    check(not bad, "; ".join(bad))
    info = {i.name: i for i in c.list()}
    check(info["act1"].parent == "base2" and info["act1"].kind == pb.ACTIVE and
          dict(info["act1"].labels) == {"role": "app"}, "List info of act1: %s" % info["act1"])
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("List of >100 snapshots streams batches of at most 100; empty result sends nothing")
def t_list_batches(ctx):
    ctx.start()
    c = ctx.client()
    N = 250
    errs = prepare_many(c, N, lambda i: {"half": str(i % 2)})
    check(not errs, "Prepare failed: %s" % errs[:3])
    msgs = c.list_msgs()
    sizes = [len(m.info) for m in msgs]
    names = [i.name for m in msgs for i in m.info]
    check(len(names) == N and len(set(names)) == N, "List gave %d infos (%d distinct), expected %d" %
          (len(names), len(set(names)), N))
    check(len(msgs) >= 3 and all(0 < s <= 100 for s in sizes), "batch sizes %r" % sizes)
    msgs = c.list_msgs(["labels.half==1"])
    sizes = [len(m.info) for m in msgs]
    check(sum(sizes) == N // 2 and len(msgs) >= 2 and all(0 < s <= 100 for s in sizes),
          "filtered batch sizes %r" % sizes)
    msgs = c.list_msgs(["labels.half==2"])
    check(msgs == [], "an empty result sent %d messages" % len(msgs))
    ctx.close_clients()
    ctx.shims[0].stop_ok()


@test("Cleanup removes directories no snapshot owns and keeps owned ones")
def t_cleanup(ctx):
    root = ctx.root()
    ctx.start()
    c = ctx.client()
    c.prepare("a")
    c.prepare("b")
    c.commit("bc", "b")
    c.view("v", "bc")
    owned = sorted(ids(root).values())
    snaps = root + "/snapshots"
    for d in ("999", "new-xyz", "0", "-1", "junk"):
        os.makedirs(snaps + "/" + d + "/fs/sub")
        write_file(snaps + "/" + d + "/fs/sub/file", 1000)
    os.symlink("/etc", snaps + "/new-link")
    write_file(snaps + "/strayfile", 10)
    c.cleanup()
    left = sorted(os.listdir(snaps))
    check(left == owned, "after Cleanup: %r, expected the owned %r" % (left, owned))
    check(os.path.isdir("/etc") and os.listdir("/etc"), "Cleanup followed a symlink")
    for k in ("a", "bc", "v"):
        c.stat(k)
    sid = ids(root)["a"]
    check(os.path.isdir(fs(root, sid)) and os.path.isdir(fs(root, sid, "work")), "owned directories damaged")
    ctx.close_clients()
    ctx.shims[0].stop_ok()


def prepare_many(c, n, labels_of, threads=8):
    """Prepares s000... s(n-1) with labels_of(i) from THREADS threads; the errors."""
    errs = []

    def mk(t):
        try:
            for i in range(t, n, threads):
                c.prepare("s%03d" % i, labels=labels_of(i))
        except Exception as e:
            errs.append(repr(e))
    ths = [threading.Thread(target=mk, args=(t,)) for t in range(threads)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    return errs


def check_list(c, filters, model):
    got = set(c.names(filters))
    check(got == model, "List %r: %r, expected %r" % (filters, sorted(got), sorted(model)))


def concurrency_run(ctx, c_for_thread, phase, threads=16, calls=50):
    errors = []
    models = {}

    def worker(t):
        c = c_for_thread(t)
        model = set()
        n = 0
        try:
            j = 0
            while n < calls:
                key = "%s-%d-%d" % (phase, t, j)
                name = key + "-c"
                lab = {"t": str(t), "phase": phase}

                def prepare():
                    m = c.prepare(key, "base", labels=lab)
                    model.add(key)
                    check(m[0][0] == "fuse3.fuse-overlayfs", "Prepare mounts %r" % m)

                def stat_():
                    i = c.stat(key)
                    check(i.kind == pb.ACTIVE and i.parent == "base", "Stat %s" % i)

                def mounts():
                    m = c.mounts(key)
                    check(any(o.startswith("upperdir=") and o.endswith("/fs") for o in m[0][2]), "Mounts %r" % m)

                def update():
                    got = dict(c.update(key, {"u": str(j)}, ["labels.u"]).labels)
                    check(got == dict(lab, u=str(j)), "Update gave %r" % got)

                def commit():
                    c.commit(name, key, labels=lab)
                    model.discard(key)
                    model.add(name)

                def usage():
                    check(c.usage(name)[1] >= 1, "Usage %r" % (c.usage(name),))

                def remove_or_view():
                    if j % 2:
                        c.remove(name)
                        model.discard(name)
                    else:
                        c.view(key + "-v", name, labels=lab)
                        model.add(key + "-v")

                steps = [prepare, stat_, mounts, update, commit,
                         lambda: check_list(c, ["labels.phase==%s,labels.t==%d" % (phase, t)], model),
                         usage, remove_or_view]
                for s in steps:
                    if n >= calls:
                        break
                    s()
                    n += 1
                j += 1
        except Fail as e:
            errors.append("thread %d call %d: %s" % (t, n, e))
        except grpc.RpcError as e:
            errors.append("thread %d call %d: %s %s" % (t, n, e.code().name, e.details()))
        except Exception as e:
            errors.append("thread %d call %d: %r" % (t, n, e))
        models[t] = model

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    return errors, models


@test("concurrency: 16 threads x 50 calls on one channel and on separate channels")
def t_concurrency(ctx):
    root = ctx.root()
    shim = ctx.start()
    c = ctx.client()
    c.prepare("b")
    c.commit("base", "b")
    errors, models = concurrency_run(ctx, lambda t: c, "one")
    check(not errors, "one channel: %s" % "; ".join(errors[:4]))
    clients = [ctx.client() for _ in range(16)]
    errors2, models2 = concurrency_run(ctx, lambda t: clients[t], "many")
    check(not errors2, "separate channels: %s" % "; ".join(errors2[:4]))
    want = {"base"} | set().union(*models.values()) | set().union(*models2.values())
    got = c.names()
    check(sorted(got) == sorted(want), "List after the storm: %d names, expected %d; extra %r missing %r" %
          (len(got), len(want), sorted(set(got) - want)[:5], sorted(want - set(got))[:5]))
    I = ids(root)
    check(sorted(I) == sorted(want), "metadata disagrees with List")
    dirs = sorted(os.listdir(root + "/snapshots"))
    check(dirs == sorted(I.values()), "directories %d vs snapshots %d" % (len(dirs), len(I)))
    check(shim.alive(), "shim died")
    ctx.close_clients()
    shim.stop_ok()


@test("SIGTERM: exit 0 and socket removed (idle connection open, call just done)")
def t_sigterm(ctx):
    shim = ctx.start()
    c = ctx.client()
    c.prepare("x")
    t0 = time.time()
    rc = shim.term()
    dt = time.time() - t0
    check(rc == 0, "exit status %s: %s" % (rc, shim.log_tail()))
    check(not os.path.exists(ctx.sock()), "socket left behind")
    check(dt < 5, "exit took %.1fs with an idle client connection open" % dt)
    ctx.close_clients()
    # restart on the same ROOT keeps the snapshot
    shim = ctx.start()
    c = ctx.client()
    check(c.names() == ["x"], "after restart: %r" % c.names())
    ctx.close_clients()
    shim.stop_ok()
    check(not os.path.exists(ctx.sock()), "socket left behind")


@test("sd_notify READY=1 on NOTIFY_SOCKET")
def t_notify(ctx):
    path = os.path.join(ctx.dir, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(10)
    try:
        shim = ctx.start(env={"NOTIFY_SOCKET": path}, wait=False)
        try:
            data = ns.recv(4096)
        except socket.timeout:
            raise Fail("no notification in 10s: %s" % shim.log_tail())
        check(b"READY=1" in data.split(b"\n"), "got %r" % data)
        shim.wait_ready()
        alive_and_working(shim, ctx)
        shim.stop_ok()
    finally:
        ns.close()


@test("bad command lines: exit 1 with one line on stderr naming the problem")
def t_cmdline(ctx):
    sock, root = ctx.sock(), ctx.root()
    cases = [
        ([], r"argument|SOCKET|ROOT|usage"),
        ([sock], r"argument|ROOT|usage"),
        (["--mount-mode=bogus", sock, root], r"mount-mode|bogus"),
        (["--bogus", sock, root], r"bogus"),
        ([sock, os.path.join(ctx.dir, "a,b")], r"ROOT|,"),
    ]
    bad = []
    for args, pat in cases:
        r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        lines = r.stderr.splitlines()
        if r.returncode != 1 or len(lines) != 1 or not re.search(pat, lines[0]):
            bad.append("%s: status %d, %d lines on stderr, first %r" % (
                " ".join(a.replace(ctx.dir + "/", "") for a in args) or "(no arguments)", r.returncode,
                len(lines), lines[0] if lines else ""))
    check(not os.path.exists(os.path.join(ctx.dir, "a,b")), "ROOT with ',' was created")
    check(not os.path.exists(root), "ROOT was created by a bad command line")
    check(not os.path.exists(sock), "a socket was created")
    check(not bad, "; ".join(bad))


def is_fuse_mount(path):
    t = mounts_at(path)
    return bool(t) and t[-1].startswith("fuse")


def main():
    want = sys.argv[1:]
    os.umask(0o022)  # the modes the Go shim's directories get
    work_dir()
    passed = failed = 0
    n = 0
    prereq_ok = True
    for name, fn in TESTS:
        if want and fn is not t_prereq and not any(w in name for w in want):
            continue
        n += 1
        if not prereq_ok:
            print("not ok %d - %s: prerequisites missing" % (n, name))
            failed += 1
            continue
        ctx = Ctx(name)
        t0 = time.time()
        try:
            fn(ctx)
            print("ok %d - %s (%.1fs)" % (n, name, time.time() - t0))
            passed += 1
        except Fail as e:
            print("not ok %d - %s: %s" % (n, name, e))
            failed += 1
        except Exception as e:
            if grpc is not None and isinstance(e, grpc.RpcError):
                detail = "%s %s" % (e.code().name, e.details())
            else:
                detail = "%s: %s" % (type(e).__name__, e)
            print("not ok %d - %s: unexpected %s" % (n, name, detail))
            for line in traceback.format_exc().splitlines()[-6:]:
                print("#   " + line)
            failed += 1
        finally:
            ctx.cleanup()
        if fn is t_prereq and failed:
            prereq_ok = False
        sys.stdout.flush()
    if not os.environ.get("SNAPGRPC_TMP"):
        rm_tree(WORK)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.modules.setdefault("grpc_test", sys.modules["__main__"])   # one module for the tests below
    import grpc_idmap_test  # noqa: F401,E402  registers the id-mapping tests
    import grpc_startup_test  # noqa: F401,E402  and the rootless start-up checks
    import grpc_malformed_test  # noqa: F401,E402  malformed HTTP/2 and gRPC input
    import grpc_crash_test  # noqa: F401,E402  kill -9 and restart
    import grpc_self_test  # noqa: F401,E402  the self-mount mode
    sys.exit(main())
