"""gRPC tests of the self-mount mode (--mount-mode=self): the shim mounts
the overlays under ROOT/snapshots/ID/merged and hands back bind mounts,
unmounts them before Commit and Remove, and mounts them again after a
restart, never twice.

Registered into grpc_test.py's list (which imports this module) and run by
run.sh with the other gRPC tests.
"""
import os
import subprocess

import grpc_test as g
from grpc_test import check, fs, ids, is_fuse_mount, mounts_at, mounts_table, test

@test("self mount mode: Prepare with a parent returns a bind of a live merged mount")
def t_self_prepare(ctx):
    shim, c, R = g.serving(ctx, ["--mount-mode=self"])
    m = c.prepare("p")
    I = ids(R)
    check(m == [("bind", fs(R, I["p"]), ["rw", "rbind"])], "parentless Prepare in self mode: %r" % m)
    with open(fs(R, I["p"]) + "/hello", "w") as f:
        f.write("from the parent\n")
    c.commit("base", "p")
    m = c.prepare("child", "base")
    I = ids(R)
    merged = fs(R, I["child"], "merged")
    check(m == [("bind", merged, ["rw", "rbind"])], "Prepare with a parent in self mode: %r" % m)
    check(is_fuse_mount(merged), "%s is not a fuse mount: %r" % (merged, mounts_at(merged)))
    with open(merged + "/hello") as f:
        check(f.read() == "from the parent\n", "merged does not show the parent's file")
    with open(merged + "/new", "w") as f:
        f.write("x")
    check(os.path.exists(fs(R, I["child"]) + "/new"), "a write through merged did not reach the upper")
    check(c.mounts("child") == m, "Mounts(child): %r" % c.mounts("child"))
    check(len(mounts_at(merged)) == 1, "Mounts mounted again: %r" % mounts_at(merged))
    # views: one parent -> bind of the parent's fs; two parents -> bind ro of merged
    check(c.view("v1", "base") == [("bind", fs(R, I["base"]), ["ro", "rbind"])], "View of one parent")
    c.commit("base2", "child")
    check(not mounts_at(merged), "Commit left merged mounted")
    m = c.view("v2", "base2")
    I = ids(R)
    vm = fs(R, I["v2"], "merged")
    check(m == [("bind", vm, ["ro", "rbind"])], "View of two parents in self mode: %r" % m)
    check(is_fuse_mount(vm), "view merged not mounted")
    check(sorted(os.listdir(vm)) == ["hello", "new"], "view merged shows %r" % os.listdir(vm))
    ctx.close_clients()
    shim.stop_ok()


@test("self mount mode: Commit and Remove unmount merged")
def t_self_unmount(ctx):
    shim, c, R = g.serving(ctx, ["--mount-mode=self"])
    c.prepare("p")
    c.commit("base", "p")
    c.prepare("a", "base")
    c.prepare("b", "base")
    c.prepare("c2", "base")
    c.commit("base2", "c2")
    c.view("v", "base2")
    I = ids(R)
    for k in ("a", "b", "v"):
        check(is_fuse_mount(fs(R, I[k], "merged")), "%s not mounted" % k)
    c.commit("ca", "a")
    check(not mounts_at(fs(R, I["a"], "merged")), "Commit left a mounted")
    c.remove("b")
    check(not mounts_at(fs(R, I["b"], "merged")), "Remove left b mounted")
    check(not os.path.exists("%s/snapshots/%s" % (R, I["b"])), "Remove left b's directory")
    c.remove("v")
    check(not mounts_at(fs(R, I["v"], "merged")), "Remove left the view mounted")
    check(not os.path.exists("%s/snapshots/%s" % (R, I["v"])), "Remove left the view's directory")
    left = [m for (m, _) in mounts_table() if m.startswith(R + "/")]
    check(not left, "mounts left: %r" % left)
    ctx.close_clients()
    shim.stop_ok()


@test("self mount mode: restart re-mounts merged after umount -l, never twice")
def t_self_restart(ctx):
    shim, c, R = g.serving(ctx, ["--mount-mode=self"])
    c.prepare("p")
    with open(fs(R, ids(R)["p"]) + "/hello", "w") as f:
        f.write("hi")
    c.commit("base", "p")
    c.prepare("child", "base")
    merged = fs(R, ids(R)["child"], "merged")
    check(is_fuse_mount(merged), "not mounted after Prepare")
    ctx.close_clients()
    shim.stop_ok()
    # restart with the mount still there: not mounted twice
    shim = ctx.start(["--mount-mode=self"])
    check(len(mounts_at(merged)) == 1, "after a restart: %d mounts on merged" % len(mounts_at(merged)))
    shim.stop_ok()
    subprocess.run(["umount", "-l", merged], check=True)
    check(not mounts_at(merged), "umount -l did not unmount")
    shim = ctx.start(["--mount-mode=self"])
    check(is_fuse_mount(merged) and len(mounts_at(merged)) == 1,
          "restart did not re-mount merged: %r (%s)" % (mounts_at(merged), shim.log_tail()))
    check(os.listdir(merged) == ["hello"], "re-mounted merged shows %r" % os.listdir(merged))
    c = ctx.client()
    check(c.mounts("child") == [("bind", merged, ["rw", "rbind"])], "Mounts after restart")
    c.remove("child")
    check(not mounts_at(merged), "Remove after restart left merged mounted")
    ctx.close_clients()
    shim.stop_ok()


# ================================================================ main
