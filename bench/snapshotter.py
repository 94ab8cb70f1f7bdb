#!/usr/bin/python3
"""Latency of the snapshotter shims, in one run (issue 5's speed section).

Workloads, each on a fresh ROOT:
  pmc      Prepare + Mounts + Commit of an empty parentless snapshot, N times
  pmc-child  the same with a committed parent (an overlay mount is handed back;
           in self-mount mode the shim mounts and unmounts it)
  list     List of all snapshots once 1,000 committed ones exist, R times
Shims: ours in helper mode, ours in self-mount mode, and the Go shim when
--go-shim PATH is given (contrib/snapshotter/tests/build-go-shim.sh builds it).
With --rootless USER, ours again in both modes started as rootless containerd
starts it: as USER, in a user namespace mapping root to USER and USER's
/etc/subuid range, with a mount namespace of its own (util-linux
`unshare --map-root-user --map-auto --mount`, what RootlessKit makes).
Prints a markdown table of medians and p90s, ratios to the Go shim, and each
shim's peak RSS.  Run as root, by hand; no thresholds.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVC = '/containerd.services.snapshots.v1.Snapshots/'


def load_messages(tmp):
    gen = os.path.join(TOP, 'contrib/snapshotter/gen')
    subprocess.run(['protoc', '--python_out=' + tmp, '-I' + gen, '-I/usr/include',
                    'snapshots.proto', 'mount.proto'], check=True)
    sys.path.insert(0, tmp)
    import snapshots_pb2
    from google.protobuf import empty_pb2
    return snapshots_pb2, empty_pb2


def rootless(user, work):
    """The argv prefix starting a command as USER in its own namespaces.
    /dev/fuse there is a node of USER's (a host whose /dev/fuse is not 0666,
    as udev makes it, is left as it is)."""
    import pwd
    pw = pwd.getpwnam(user)
    node = os.path.join(work, 'fuse')
    os.mknod(node, 0o600 | 0o020000, os.makedev(10, 229))
    os.chown(node, pw.pw_uid, pw.pw_gid)
    return pw, ['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid, '--init-groups',
                'unshare', '--map-root-user', '--map-auto', '--mount', '--propagation', 'private',
                'sh', '-c', 'mount --bind "$0" /dev/fuse && exec "$@"', node]


class Shim:
    def __init__(self, argv, workdir, name, owner=None):
        self.root = os.path.join(workdir, name)
        self.sock = os.path.join(self.root, 'sock')
        os.makedirs(self.root)
        if owner:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.proc = subprocess.Popen(argv + [self.sock, os.path.join(self.root, 'state')],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited: %s' % (name, self.proc.stderr.read().decode()))
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                s.close()
                break
            except OSError:
                time.sleep(0.02)
        else:
            raise RuntimeError('%s: socket never accepted' % name)

    def peak_rss_kib(self):
        with open('/proc/%d/status' % self.proc.pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
        return 0

    def stop(self):
        # the FUSE daemons of self mode, mounted in a namespace of the shim's own
        subprocess.run(['nsenter', '-t', str(self.proc.pid), '-m', 'sh', '-c',
                        'grep -o " %s/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l' % self.root],
                       stderr=subprocess.DEVNULL)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(['umount', '-R', '-l', self.root], stderr=subprocess.DEVNULL)
        for line in open('/proc/self/mounts').read().splitlines()[::-1]:
            mnt = line.split()[1]
            if mnt.startswith(self.root + '/'):
                subprocess.run(['umount', '-l', mnt], stderr=subprocess.DEVNULL)


def client(grpc, sock, S, E):
    ch = grpc.insecure_channel('unix:' + sock)
    md = [('containerd-namespace', 'bench')]

    def unary(name, resp):
        f = ch.unary_unary(SVC + name, request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=resp.FromString)
        return lambda req: f(req, metadata=md)
    lst = ch.unary_stream(SVC + 'List', request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=S.ListSnapshotsResponse.FromString)
    return {
        'prepare': unary('Prepare', S.PrepareSnapshotResponse),
        'mounts': unary('Mounts', S.MountsResponse),
        'commit': unary('Commit', E.Empty),
        'list': lambda req: list(lst(req, metadata=md)),
        'channel': ch,
    }


def run_pmc(c, S, n, parent):
    if parent:
        c['prepare'](S.PrepareSnapshotRequest(key='base-a'))
        c['commit'](S.CommitSnapshotRequest(key='base-a', name='base'))
    times = []
    for i in range(n):
        t = time.perf_counter()
        c['prepare'](S.PrepareSnapshotRequest(key='a%d' % i, parent='base' if parent else ''))
        c['mounts'](S.MountsRequest(key='a%d' % i))
        c['commit'](S.CommitSnapshotRequest(key='a%d' % i, name='c%d' % i))
        times.append(time.perf_counter() - t)
    return times


def run_list(c, S, n_snapshots, reps):
    for i in range(n_snapshots):
        c['prepare'](S.PrepareSnapshotRequest(key='l%d' % i, labels={'bench': str(i)}))
        c['commit'](S.CommitSnapshotRequest(key='l%d' % i, name='L%d' % i, labels={'bench': str(i)}))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        got = sum(len(r.info) for r in c['list'](S.ListSnapshotsRequest()))
        times.append(time.perf_counter() - t)
        if got != n_snapshots:
            raise RuntimeError('List returned %d of %d' % (got, n_snapshots))
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--go-shim', help='the Go containerd-fuse-overlayfs-grpc to compare with')
    ap.add_argument('--ours', default=os.path.join(TOP, 'containerd-fuse-overlayfs-grpc'))
    ap.add_argument('-n', type=int, default=200, help='Prepare+Mounts+Commit rounds (default 200)')
    ap.add_argument('--snapshots', type=int, default=1000)
    ap.add_argument('--reps', type=int, default=20, help='List calls (default 20)')
    ap.add_argument('--dir', default='/var/tmp/shimbench')
    ap.add_argument('--rootless', metavar='USER', help='also run ours rootless as USER (needs a /etc/subuid range)')
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('snapshotter bench: run as root')
    import grpc
    os.makedirs(args.dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=args.dir)
    os.chmod(work, 0o755)
    S, E = load_messages(work)
    shims = [('ours (helper)', [args.ours], None), ('ours (self)', [args.ours, '--mount-mode=self'], None)]
    if args.rootless:
        pw, pre = rootless(args.rootless, work)
        shims += [('ours rootless (helper)', pre + [args.ours], pw),
                  ('ours rootless (self)', pre + [args.ours, '--mount-mode=self'], pw)]
    if args.go_shim:
        shims.append(('Go shim', [args.go_shim], None))
    results = {}
    try:
        for label, argv, owner in shims:
            res = results.setdefault(label, {})
            for workload in ('pmc', 'pmc-child', 'list'):
                shim = Shim(argv, work, '%s-%s' % (label.replace(' ', '').replace('(', '-').replace(')', ''), workload), owner)
                try:
                    c = client(grpc, shim.sock, S, E)
                    if workload == 'list':
                        res[workload] = run_list(c, S, args.snapshots, args.reps)
                    else:
                        res[workload] = run_pmc(c, S, args.n, workload == 'pmc-child')
                    res['rss-' + workload] = shim.peak_rss_kib()
                    c['channel'].close()
                finally:
                    shim.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ms(v):
        return '%.2f' % (v * 1000)

    base = results.get('Go shim')
    print('| workload | shim | median ms | p90 ms | vs Go shim | peak RSS KiB |')
    print('|---|---|---|---|---|---|')
    for workload in ('pmc', 'pmc-child', 'list'):
        for label in results:
            t = sorted(results[label][workload])
            med, p90 = statistics.median(t), t[int(len(t) * 0.9) - 1]
            ratio = '%.2fx' % (med / statistics.median(base[workload])) if base else '-'
            print('| %s | %s | %s | %s | %s | %d |' % (workload, label, ms(med), ms(p90), ratio,
                                                      results[label]['rss-' + workload]))


if __name__ == '__main__':
    main()
