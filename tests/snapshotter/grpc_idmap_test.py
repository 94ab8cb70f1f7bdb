"""gRPC tests of id-mapped snapshots (containerd 2's uidmapping/gidmapping
labels): the mounts handed back for every snapshot shape, the owners seen
through them (mounted as containerd would: mount.fuse3 in helper mode, the
shim itself in self mode), and bad label values refused whole with
InvalidArgument, before anything is stored or mounted.

Registered into grpc_test.py's list (which imports this module) and run by
run.sh with the other gRPC tests.
"""
import os
import subprocess

import grpc_test as g
from grpc_test import Fail, check, expect_code, fs, ids, test, UIDMAP, GIDMAP

MAP_U = "0:100000:65536"
MAP_G = "0:200000:65536"
LABELS = {UIDMAP: MAP_U, GIDMAP: MAP_G}
OPTS = ["uidmapping=0:100000:65536", "gidmapping=0:200000:65536"]


def mount_like_containerd(m, target):
    """Mounts one handed-back mount as containerd's mount package does: a
    fuse3.* type through mount.fuse3, a bind with mount(8)."""
    typ, src, opts = m
    if typ == "bind":
        cmd = ["mount", "--rbind", src, target]
        if "ro" in opts:
            cmd = ["sh", "-c", 'mount --rbind "$1" "$2" && mount -o remount,bind,ro "$2"', "sh", src, target]
    else:
        cmd = ["mount.fuse3", src, target, "-o", ",".join(opts), "-t", typ.split(".", 1)[1]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, "%s failed: %s" % (" ".join(cmd), r.stderr.strip()))


def owners(path):
    st = os.lstat(path)
    return (st.st_uid, st.st_gid)


def make_base(c, R, key="base"):
    """A committed layer with a file of root's and one of 1:1 on disk."""
    c.prepare("l-" + key)
    d = fs(R, ids(R)["l-" + key])
    for name, owner in (("root-file", 0), ("user-file", 1)):
        with open(os.path.join(d, name), "w") as f:
            f.write(name + "\n")
        os.chown(os.path.join(d, name), owner, owner)
    c.commit(key, "l-" + key)


@test("id-mapped snapshots: uid/gidmapping on the mounts of every shape, owners shown mapped")
def t_idmap_helper(ctx):
    shim, c, R = g.serving(ctx)
    make_base(c, R)
    I = ids(R)
    base = fs(R, I["base"])
    # one parent: overlay with the mapping
    m = c.prepare("ctr", "base", labels=LABELS)
    I = ids(R)
    want = [("fuse3.fuse-overlayfs", "overlay",
             ["workdir=" + fs(R, I["ctr"], "work"), "upperdir=" + fs(R, I["ctr"]), "lowerdir=" + base] + OPTS)]
    check(m == want, "Prepare with a parent: %r, expected %r" % (m, want))
    # no parent: an overlay over the empty dir (a bind cannot map owners)
    m = c.prepare("bare", labels=LABELS)
    I = ids(R)
    want = [("fuse3.fuse-overlayfs", "overlay",
             ["workdir=" + fs(R, I["bare"], "work"), "upperdir=" + fs(R, I["bare"]), "lowerdir=%s/empty" % R] + OPTS)]
    check(m == want, "parentless Prepare: %r, expected %r" % (m, want))
    check(os.listdir(R + "/empty") == [], "ROOT/empty is not empty")
    # views of no parent and of one parent: read-only overlays of one lower
    m = c.view("v0", labels={UIDMAP: MAP_U})
    check(m == [("fuse3.fuse-overlayfs", "overlay", ["lowerdir=" + fs(R, ids(R)["v0"]), OPTS[0]])],
          "parentless View: %r" % m)
    m = c.view("v1", "base", labels=LABELS)
    check(m == [("fuse3.fuse-overlayfs", "overlay", ["lowerdir=" + base] + OPTS)], "View of one parent: %r" % m)
    # without labels the same shapes stay bind mounts
    check(c.view("plain", "base")[0][0] == "bind", "View without labels is not a bind")
    # what a container sees: the owners mapped, writes stored unmapped
    for key in ("ctr", "v1", "bare"):
        target = os.path.join(ctx.dir, "mnt-" + key)
        os.mkdir(target)
        mount_like_containerd(c.mounts(key)[0], target)
        try:
            if key != "bare":
                got = (owners(target + "/root-file"), owners(target + "/user-file"))
                check(got == ((100000, 200000), (100001, 200001)), "%s: owners %r" % (key, got))
            if key != "v1":
                # from cwd TARGET: the test's own directories are not the container root's to search
                r = subprocess.run(["setpriv", "--reuid=100000", "--regid=200000", "--clear-groups",
                                    "sh", "-c", "echo x > by-root && mkdir dir"],
                                   cwd=target, capture_output=True, text=True)
                check(r.returncode == 0, "%s: the container's root cannot write: %s" % (key, r.stderr.strip()))
                check(owners(target + "/by-root") == (100000, 200000), "%s: new file shown as %r" %
                      (key, owners(target + "/by-root")))
                up = fs(R, ids(R)[key])
                check(owners(up + "/by-root") == (0, 0) and owners(up + "/dir") == (0, 0),
                      "%s: stored as %r, %r, not 0:0" % (key, owners(up + "/by-root"), owners(up + "/dir")))
        finally:
            subprocess.run(["umount", target], capture_output=True)
    ctx.close_clients()
    shim.stop_ok()


@test("id-mapped snapshots in self mode: the shim's own mounts carry the mapping, also after a restart")
def t_idmap_self(ctx):
    shim, c, R = g.serving(ctx, ["--mount-mode=self"])
    make_base(c, R)
    for key, parent in (("ctr", "base"), ("bare", "")):
        m = c.prepare(key, parent, labels=LABELS)
        merged = fs(R, ids(R)[key], "merged")
        check(m == [("bind", merged, ["rw", "rbind"])], "%s: %r" % (key, m))
        check(g.is_fuse_mount(merged), "%s: merged not mounted: %r" % (key, g.mounts_at(merged)))
    merged = fs(R, ids(R)["ctr"], "merged")
    check(owners(merged + "/user-file") == (100001, 200001), "owners in merged: %r" % (owners(merged + "/user-file"),))
    ctx.close_clients()
    shim.stop_ok()
    subprocess.run(["umount", "-l", merged], capture_output=True)
    shim = ctx.start(["--mount-mode=self"])
    check(g.is_fuse_mount(merged), "the restarted shim did not mount merged again")
    check(owners(merged + "/root-file") == (100000, 200000), "owners after the restart: %r" %
          (owners(merged + "/root-file"),))
    shim.stop_ok()


BAD = [
    ("not a triple", "0:100000"),
    ("not decimal", "0:0x10:5"),
    ("a trailing ','", MAP_U + ","),
    ("an empty range", "0:100000:0"),
    ("an overflowing range", "0:4294967295:2"),
    ("an id past 2^32", "4294967296:0:1"),
    ("overlapping container ranges", "0:100000:10,5:200000:10"),
    ("overlapping host ranges", "0:100000:10,10:100005:10"),
]


@test("id-mapped snapshots: bad, overflowing or overlapping maps -> InvalidArgument, nothing stored or mounted")
def t_idmap_bad(ctx):
    shim, c, R = g.serving(ctx, ["--mount-mode=self"])
    make_base(c, R)
    c.prepare("good", "base", labels=LABELS)
    before = (c.names(), sorted(os.listdir(R + "/snapshots")), len(g.mounts_table()))
    for what, value in BAD:
        for label in (UIDMAP, GIDMAP):
            labels = {UIDMAP: MAP_U, GIDMAP: MAP_G, label: value}
            try:
                expect_code(g.grpc.StatusCode.INVALID_ARGUMENT, c.prepare, "p", "base", labels=labels)
                expect_code(g.grpc.StatusCode.INVALID_ARGUMENT, c.view, "v", "base", labels=labels)
                expect_code(g.grpc.StatusCode.INVALID_ARGUMENT, c.update, "good", {label: value}, ["labels." + label])
                expect_code(g.grpc.StatusCode.INVALID_ARGUMENT, c.commit, "committed", "good", labels=labels)
            except Fail as e:
                raise Fail("%s (%s=%s): %s" % (what, label, value, e))
    after = (c.names(), sorted(os.listdir(R + "/snapshots")), len(g.mounts_table()))
    check(after == before, "a refused call left something: %r -> %r" % (before, after))
    got = dict(c.stat("good").labels)
    check(got == LABELS, "Update with a bad map changed the labels: %r" % got)
    try:
        c.prepare("x", "base", labels={UIDMAP: "0:1:2,,3:4:5"})
    except g.grpc.RpcError as e:
        check(UIDMAP in e.details() and "byte" in e.details(), "the message does not name the label: %s" %
              e.details())
    ctx.close_clients()
    shim.stop_ok()
