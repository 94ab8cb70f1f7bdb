"""gRPC tests of the shim's crash consistency: kill -9 during a storm of
Prepare/Commit/Remove calls, a restart on the same ROOT, and the metadata,
directories and mounts checked against each other.

Registered into grpc_test.py's list (which imports this module) and run by
run.sh with the other gRPC tests.
"""
import os
import random
import sqlite3
import threading
import time

import grpc_test as g
from grpc_test import Client, check, ids, test

def crash_workload(sock, seed, stop, errors, nthreads=4):
    """Prepare/Commit/Remove (and View) in a loop until the shim dies or stop is set."""
    def run(t):
        rng = random.Random(seed * 100 + t)
        c = Client(sock)
        committed, active = [], []
        i = 0
        try:
            while not stop.is_set():
                i += 1
                op = rng.random()
                key = "s%d-t%d-%d" % (seed, t, i)
                try:
                    if op < 0.4 or not active:
                        parent = rng.choice(committed) if committed and rng.random() < 0.7 else ""
                        if rng.random() < 0.15 and parent:
                            c.view(key + "v", parent)
                        else:
                            c.prepare(key, parent, labels={"seed": str(seed)})
                            active.append(key)
                    elif op < 0.75:
                        k = active.pop(rng.randrange(len(active)))
                        c.commit(k + "c", k, labels={"c": "1"})
                        committed.append(k + "c")
                    else:
                        pool = active if active and rng.random() < 0.5 else committed
                        if pool:
                            k = pool.pop(rng.randrange(len(pool)))
                            c.remove(k)
                except g.grpc.RpcError as e:
                    if e.code() in (g.grpc.StatusCode.UNAVAILABLE, g.grpc.StatusCode.CANCELLED,
                                    g.grpc.StatusCode.DEADLINE_EXCEEDED):
                        return  # the shim is gone
                    if e.code() != g.grpc.StatusCode.FAILED_PRECONDITION:  # a parent with children
                        errors.append("%s %s" % (e.code().name, e.details()))
                        return
        finally:
            c.close()
    ths = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(nthreads)]
    [t.start() for t in ths]
    return ths


def check_consistency(root, c, what):
    names = c.names()
    I = ids(root)
    snaps = root + "/snapshots"
    check(sorted(names) == sorted(I), "%s: List and metadata differ" % what)
    for n in names:
        sid = I[n]
        check(os.path.isdir("%s/%s/fs" % (snaps, sid)), "%s: snapshot %s (id %s) has no directory" % (what, n, sid))
        if c.stat(n).kind == g.pb.ACTIVE:
            check(os.path.isdir("%s/%s/work" % (snaps, sid)), "%s: active %s has no work directory" % (what, n))
    c.cleanup()
    I = ids(root)
    dirs = os.listdir(snaps)
    stray = sorted(d for d in dirs if d not in I.values())
    check(not stray, "%s: directories without metadata after Cleanup: %r" % (what, stray[:10]))
    check(not any(d.startswith("new-") for d in dirs), "%s: new-* directories after Cleanup" % what)
    db = sqlite3.connect("file:%s/metadata.sqlite?mode=ro" % root, uri=True, timeout=10)
    try:
        ic = db.execute("PRAGMA integrity_check").fetchall()
        fk = db.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        db.close()
    check(ic == [("ok",)], "%s: integrity_check %r" % (what, ic[:3]))
    check(fk == [], "%s: foreign_key_check %r" % (what, fk[:3]))


@test("kill -9 during Prepare/Commit/Remove, restart on the same ROOT, consistency")
def t_kill9(ctx):
    root = ctx.root()
    shim = ctx.start()
    total_ops = 0
    for seed in (1, 2, 3, 4, 5, 6):
        rng = random.Random(seed)
        stop = threading.Event()
        errors = []
        ths = crash_workload(shim.sock, seed, stop, errors)
        time.sleep(rng.uniform(0.05, 0.4))
        shim.kill9()
        stop.set()
        [t.join(10) for t in ths]
        check(not errors, "seed %d: workload errors before the kill: %s" % (seed, errors[:3]))
        shim = ctx.start()
        c = Client(shim.sock)
        try:
            check_consistency(root, c, "seed %d" % seed)
            total_ops += len(c.names())
        finally:
            c.close()
    check(total_ops > 0, "the workload created nothing")
    shim.stop_ok()
    shim = ctx.start()
    c = Client(shim.sock)
    try:
        check_consistency(root, c, "after SIGTERM and restart")
    finally:
        c.close()
    shim.stop_ok()
