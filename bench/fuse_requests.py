#!/usr/bin/python3
"""Count the FUSE requests a command makes, by type, with their time (from
send to answer) and their errors, through the kernel's fuse tracepoints
(fuse_request_send / fuse_request_end, Linux 6.12+).  All FUSE mounts are
counted unless --conn names one (the `connection` field: the minor device
number of the mount's st_dev, printed for each mount point given with --mnt).

Usage (root): bench/fuse_requests.py [--mnt DIR] [--json] -- CMD ARG...
Prints one line a request type: NAME count total-ms mean-us errors, then the
command's wall time.  The command's own exit status is returned.
"""
import argparse, collections, json, os, re, subprocess, sys, time

TRACE = '/sys/kernel/tracing'
LINE = re.compile(r'fuse_request_(send|end): connection (\d+) req (\d+) (?:opcode \d+ \((\w+)\)|len \d+ error (-?\d+))')
STAMP = re.compile(r'\s(\d+\.\d+):\s')


def tracing(on):
    for ev in ('fuse_request_send', 'fuse_request_end'):
        with open('%s/events/fuse/%s/enable' % (TRACE, ev), 'w') as f:
            f.write('1' if on else '0')


def run(cmd, conn=None):
    """Runs cmd with the tracepoints on; returns (exit status, seconds, table)."""
    if not os.path.isdir(TRACE + '/events/fuse'):
        raise SystemExit('fuse_requests: %s/events/fuse is missing (tracefs not mounted, or a kernel '
                         'without fuse tracepoints)' % TRACE)
    with open(TRACE + '/buffer_size_kb', 'w') as f:
        f.write('65536')
    with open(TRACE + '/trace', 'w') as f:
        f.write('')
    tracing(True)
    t0 = time.monotonic()
    try:
        rc = subprocess.run(cmd).returncode
    finally:
        wall = time.monotonic() - t0
        tracing(False)
    sent, table = {}, collections.defaultdict(lambda: [0, 0.0, 0])
    with open(TRACE + '/trace') as f:
        for line in f:
            m, s = LINE.search(line), STAMP.search(line)
            if not m or not s or (conn is not None and int(m.group(2)) != conn):
                continue
            key = (m.group(2), m.group(3))
            if m.group(1) == 'send':
                sent[key] = (m.group(4).replace('FUSE_', ''), float(s.group(1)))
            elif key in sent:
                name, t = sent.pop(key)
                row = table[name]
                row[0] += 1
                row[1] += float(s.group(1)) - t
                row[2] += int(m.group(5)) != 0
    for name, _ in sent.values():     # never answered (FORGET has no answer)
        table[name][0] += 1
    return rc, wall, dict(table)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--mnt')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('cmd', nargs='+')
    a = ap.parse_args()
    conn = os.minor(os.stat(a.mnt).st_dev) if a.mnt else None
    rc, wall, table = run(a.cmd, conn)
    if a.json:
        json.dump({'wall': wall, 'requests': table}, sys.stdout)
        print()
    else:
        for name, (n, t, err) in sorted(table.items(), key=lambda kv: -kv[1][1]):
            print('%-16s %8d %10.1f ms %8.1f us %6d err' % (name, n, t * 1e3, t * 1e6 / n if n else 0, err))
        print('%-16s %8d %10.1f ms (wall %.3f s)' % ('total', sum(r[0] for r in table.values()),
                                                      sum(r[1] for r in table.values()) * 1e3, wall))
    return rc


if __name__ == '__main__':
    sys.exit(main())
