"""The shim's start-up mount check as a rootless user meets it: what is
missing is named in one line and the shim exits 1 (no access to /dev/fuse,
no fusermount3 without CAP_SYS_ADMIN), and what only limits it is logged
(a user namespace without a subordinate id range).  The shim runs as nobody
(65534) in a private mount namespace where /dev/fuse is replaced by a node
of the test's own, so the host's /dev/fuse is never changed.

Registered into grpc_test.py's list (which imports this module) and run by
run.sh with the other gRPC tests.
"""
import os
import shutil
import socket
import subprocess
import time

import grpc_test as g
from grpc_test import BIN, check, test

NOBODY = 65534


def fuse_node(ctx, owner):
    """A /dev/fuse node (char 10:229, 0600) owned by OWNER."""
    path = os.path.join(ctx.dir, "fuse-%d" % owner)
    os.mknod(path, 0o600 | 0o020000, os.makedev(10, 229))
    os.chown(path, owner, owner)
    return path


def tools_dir(ctx, with_fusermount):
    """A PATH directory with what the shim runs, fusermount3 only if asked."""
    d = os.path.join(ctx.dir, "bin-%d" % with_fusermount)
    os.mkdir(d)
    progs = ["fuse-overlayfs", "mount.fuse3"] + (["fusermount3"] if with_fusermount else [])
    for prog in progs:
        real = next((os.path.join(p, prog) for p in os.environ["PATH"].split(":")
                     if os.access(os.path.join(p, prog), os.X_OK)), None)
        check(real is not None, "%s not in PATH" % prog)
        os.symlink(real, os.path.join(d, prog))
    return d


def tool(name):
    """NAME's path: the shim's PATH below is cut down to what it may find."""
    path = shutil.which(name)
    check(path is not None, "%s is missing" % name)
    return path


def as_nobody(ctx, node, path_dir, name):
    """argv and env running the shim as nobody with NODE over /dev/fuse."""
    root, sock = os.path.join(ctx.dir, name, "root"), os.path.join(ctx.dir, name, "sock")
    os.makedirs(os.path.dirname(root))
    os.chown(os.path.dirname(root), NOBODY, NOBODY)
    argv = [tool("unshare"), "-m", "--propagation", "private", tool("sh"), "-c",
            '"$1" --bind "$2" /dev/fuse && shift 2 && exec "$@"', "sh", tool("mount"), node,
            tool("setpriv"), "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", BIN, sock, root]
    return argv, dict(os.environ, PATH=path_dir), sock


def refused(argv, env, pattern, what):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    lines = r.stderr.splitlines()
    check(r.returncode == 1 and len(lines) == 1 and pattern in lines[0],
          "%s: status %d, stderr %r (want one line with %r)" % (what, r.returncode, lines, pattern))


def serves(ctx, argv, env, sock, what):
    """Starts the shim, waits until it serves, stops it; returns its log."""
    log = os.path.join(ctx.dir, what.replace(" ", "-") + ".log")
    with open(log, "wb") as f:
        p = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with open(g.PIDFILE, "a") as f:
        f.write("%d\n" % p.pid)
    try:
        deadline = time.time() + 15
        while True:
            check(p.poll() is None, "%s: the shim exited with %s: %s" % (what, p.returncode, open(log).read()))
            check(time.time() < deadline, "%s: not serving after 15 s: %s" % (what, open(log).read()))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
                break
            except OSError:
                time.sleep(0.05)
            finally:
                s.close()
    finally:
        p.terminate()
        rc = p.wait(15)
    check(rc == 0, "%s: exit status %s on SIGTERM" % (what, rc))
    with open(log) as f:
        return f.read()


@test("start-up check rootless: no /dev/fuse access, no fusermount3, a one-id namespace are named")
def t_startup_rootless(ctx):
    os.chmod(ctx.dir, 0o711)
    os.chmod(g.work_dir(), 0o711)
    tools, no_fusermount = tools_dir(ctx, True), tools_dir(ctx, False)
    argv, env, _ = as_nobody(ctx, fuse_node(ctx, 0), tools, "noaccess")
    refused(argv, env, "cannot open /dev/fuse: Permission denied", "/dev/fuse of root's, 0600")
    mine = fuse_node(ctx, NOBODY)
    argv, env, _ = as_nobody(ctx, mine, no_fusermount, "nofusermount")
    refused(argv, env, "fusermount3 not found in PATH", "no fusermount3, no CAP_SYS_ADMIN")
    # with both, the check mount goes through fusermount3 and the shim serves
    argv, env, sock = as_nobody(ctx, mine, tools, "user")
    log = serves(ctx, argv, env, sock, "as nobody with fusermount3")
    check("warning" not in log, "unexpected warning: %s" % log)
    # the root of a namespace with one id (unshare -U -r, no subuid range):
    # it mounts by itself (no fusermount3 needed) and says what it lacks
    root, sock = os.path.join(ctx.dir, "oneid", "root"), os.path.join(ctx.dir, "oneid", "sock")
    argv = [tool("unshare"), "-U", "-r", "-m", BIN, sock, root]
    log = serves(ctx, argv, dict(os.environ, PATH=no_fusermount), sock, "one-id user namespace")
    check("maps 1 uid (/proc/self/uid_map): no subordinate id range" in log,
          "no warning naming the missing subuid range: %r" % log)
