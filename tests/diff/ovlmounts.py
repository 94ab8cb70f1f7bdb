"""The mounts of the differential tests: the kernel overlay and ours (its
daemon kept in the foreground, our child), remounts, and every mount and
daemon undone, a daemon that misbehaved on the way reported."""
import os, subprocess, time


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
