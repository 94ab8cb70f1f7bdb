#!/usr/bin/python3
"""ovldiff: run one scenario on the kernel overlay and on fuse-overlayfs, compare.

Usage: ovldiff.py [--fuse BIN] [--tmp DIR] [--log FILE] [--keep]
                  [--ignore CHECK,...] [--whiteout-modes ovl|wh|both]
                  [--self-check] SCENARIO.scn
Prints exactly one line, `PASS name` or `FAIL name: reason (first differences)`;
details go to --log (default stderr; the kernel's result of every op is
logged too).  Exit 0 on PASS, 1 on FAIL, 2 on a harness error.  Needs root,
/dev/fuse, the kernel overlay, fusermount3.
  --whiteout-modes (env OVLDIFF_WHITEOUT_MODES): how OUR read-write mounts
    run: `ovl` (char 0/0 whiteouts, the default), `wh` (the daemon gets
    FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1: `.wh.NAME` whiteouts, and
    FUSE_OVERLAYFS_DISABLE_PASSTHROUGH=1: data through the daemon, as
    rootless mounts run) or `both`;
    overrides the scenario's `whiteout_modes`.  Labels: rw/MODE/VARIANT.
  --self-check (env OVLDIFF_SELF_CHECK=1): the kernel stands in for ours
    (kernel variant, ovl mode, ours= expectations ignored): a scenario must
    pass against itself -- results deterministic, no harness error.
  --userns MAP (env OVLDIFF_USERNS), e.g. 0:61234:1,1:200000:65536: rootless,
    as podman runs us: this process (the real root) builds the layers and
    shifts their ids into the map (tests/diff/userns.py); a child, root of a
    user namespace with that map and of its own mount namespace, mounts both
    (the kernel with userxattr and redirect_dir=nofollow) and runs the rest.
    Opaque dirs are spelled user.overlay.opaque where `trusted` would be
    (trusted.* is unreadable there).  `ino` results are not compared: the
    kernel cannot keep st_ino across a remount there (decoding its origin
    file handles needs CAP_DAC_READ_SEARCH in the initial namespace).

SCENARIO FORMAT: see ovlscenario.py (the parser).  The parts: ovlscenario.py
(scenario files), ovlbuild.py (layers built from their entries), ovlops.py
(the ops run on the mounts), ovlmounts.py (mounts and daemons, all undone),
ovlview.py (views of a mount and of an upper layer, their comparison, the
probes), userns.py (the user namespace of --userns); this file runs a
scenario on both sides and compares.

WHAT IS COMPARED (kernel overlay on kernel-format layers vs ours on every
whiteout/opaque spelling, see VARIANTS in ovlbuild.py): for every path (lstat,
never following symlinks) type, mode, uid, gid, size (not of directories: it
is the backing fs's history), nlink, mtime (read-only mounts and before the
ops exactly; after the ops and in the upper layers a time of this run shows as
`recent`), sha256 of regular files, symlink target, rdev, user.*, trusted.*,
security.* (not the overlays' own) and POSIX ACL xattrs, the sorted readdir
listing, and which paths share an inode.  On ours readdir d_ino must equal
st_ino and d_type the lstat type.  With an upper: the same before and after
the ops, each op's result, and after unmount the upper layers with whiteout
and opaque spellings normalised.
"""
import argparse, os, shutil, signal, sys, tempfile, time
from multiprocessing.connection import Pipe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovlbuild import BASE_MTIME, VARIANTS, build, layer_key
from ovlmounts import Mounts, is_mounted
from ovlops import OpCtx, do_op
from ovlscenario import WHITEOUT_MODES, Scenario
from ovlview import (jp, expected, diff_probes, diff_views, ename,
                     run_probes, show, snapshot, upper_view)
from userns import fork_in_userns, fuse_node, host_id, parse_map, shift_tree


class Run:
    def __init__(self, scn, fuse, base, log, ignore, pidfile, modes=None, selfcheck=False,
                 builder=None):
        self.scn, self.base, self.log, self.ignore = scn, base, log, ignore
        # --userns: layers are built by the real root outside (builder), and
        # trusted.overlay.opaque, unreadable there, is spelled user.overlay.opaque
        self.build, self.userns = builder or build, builder is not None
        self.spell = {v: (lambda i, f=f: tuple('user' if x == 'trusted' else x for x in f(i)))
                      if builder else f for v, f in VARIANTS.items()}
        self.m = Mounts(base, fuse, pidfile, log, builder is not None)
        self.dirs = {}   # (layer, spelling key) -> dir name
        self.inos = {}   # (mount, path) -> st_ino at the first `ino` op
        self.kernel_runs = {}   # ops skipped -> the kernel's read-write run
        # self-check: the kernel stands in for ours (kernel variant, ovl mode)
        self.selfcheck, self.ours_view = selfcheck, not selfcheck
        self.modes = ('ovl',) if selfcheck else WHITEOUT_MODES[modes or scn.whiteout_modes or 'ovl']
        # times from here on (less a clock tick or two) show as `recent`
        self.recent = time.time_ns() - 2 * 10**9
        n = max(scn.layers) + 1
        # the kernel wants two lowers when there is no upper: add an empty one
        self.nlayers = n + 1 if n == 1 else n
        for i in range(self.nlayers):
            scn.layers.setdefault(i, [])

    def layer_dir(self, i, spelling):
        key = (i, layer_key(self.scn.layers[i], spelling))
        if key not in self.dirs:
            name = ('%x' % len(self.dirs)).encode()     # short: 140 layers fit easily
            self.build(os.path.join(self.base, name), self.scn.layers[i], spelling,
                  BASE_MTIME + 86400 * i)
            self.dirs[key] = name
            self.log('layer %d %s -> %s' % (i, key[1], name.decode()))
        return self.dirs[key]

    def lowers(self, variant):
        return b':'.join(self.layer_dir(i, self.spell[variant](i)) for i in range(self.nlayers))

    def variants(self, with_upper):
        """Variants with distinct on-disk layers (others would repeat a run)."""
        seen, out = set(), []
        for v in VARIANTS:
            if self.selfcheck and v != 'kernel':
                continue
            sig = tuple(layer_key(self.scn.layers[i], self.spell[v](i)) for i in range(self.nlayers))
            if with_upper:
                sig += (layer_key(self.scn.upper, self.spell[v](-1)),)
            if sig not in seen:
                seen.add(sig)
                out.append(v)
        return out

    def compare(self, label, kview, oview, kprobe, oprobe, problems, mode='ovl'):
        d = diff_views(kview, oview, label)
        if kprobe is not None:
            d += diff_probes(kprobe, oprobe, self.scn.probes, label, mode, self.selfcheck)
        if 'dino' not in self.ignore:
            d += ['%s: %s' % (label, p) for p in problems]
        return d

    def strip(self, view):
        for r in view.values():
            for f in self.ignore:
                r.pop(f, None)
        return view

    def with_ours(self, label, name, opts, body, env=None):
        """Mount ours (in self-check mode: the kernel again), run body(mnt,
        diffs) which appends to diffs.  A failed mount or a daemon that dies
        on the way is a difference too."""
        mnt, diffs = os.path.join(self.base, name), []
        try:
            if self.selfcheck:
                self.m.kernel(mnt, opts + (KERNEL_PINS if b'upperdir=' in opts else b''))
            else:
                self.m.ours(mnt, opts, env)
            body(mnt, diffs)
        except (OSError, RuntimeError) as e:
            diffs.append('%s: %s' % (label, e))
        if any(m == mnt for m, _ in self.m.active):
            p = self.m.umount(mnt)
            diffs += ['%s: %s' % (label, p)] if p else []
        return diffs

    def readonly(self):
        kmnt = os.path.join(self.base, b'mk')
        self.m.kernel(kmnt, b'lowerdir=' + self.lowers('kernel'))
        kview = self.strip(snapshot(kmnt, False, True)[0])
        kprobe = run_probes(kmnt, self.scn.probes)
        self.m.umount(kmnt)
        diffs = []
        for v in self.variants(False):
            def body(mnt, d, label='ro/' + v):
                oview, problems = snapshot(mnt, self.ours_view, True)
                d += self.compare(label, kview, self.strip(oview),
                                  kprobe, run_probes(mnt, self.scn.probes), problems)
            diffs += self.with_ours('ro/' + v, b'm-' + v.encode(), b'lowerdir=' + self.lowers(v), body)
        return diffs

    def prepare_upper(self, tag, variant):
        """A fresh upper (and workdir) per mount: every mount writes its own."""
        u, w = [os.path.join(self.base, x + tag) for x in (b'u-', b'w-')]
        self.build(u, self.scn.upper or [], self.spell[variant](-1), BASE_MTIME - 86400)
        os.mkdir(w, 0o755)
        return u, b'lowerdir=%s,upperdir=u-%s,workdir=w-%s' % (self.lowers(variant), tag, tag)

    def skipped(self, e, mode):
        """An op the kernel leaves out: ours is expected to refuse it
        (ours=, or ours_whmode= in the .wh. mode), changing nothing."""
        return expected(e, mode, self.selfcheck) is not None

    def run_ops(self, mnt, mode, skip):
        """The ops on one mount: their results, then every handle closed."""
        ctx, res = OpCtx(mnt, self.recent), []
        try:
            for e in self.scn.ops:
                res.append(None if skip(e) else self.op(mnt, e, ctx))
        finally:
            ctx.close_all()
        return res

    def kernel_rw(self, mode):
        """The kernel's side of the read-write run for one whiteout mode (the
        same run unless some op is skipped in that mode)."""
        key = tuple(self.skipped(e, mode) for e in self.scn.ops)
        if key in self.kernel_runs:
            return self.kernel_runs[key]
        tag = b'k%d' % len(self.kernel_runs)
        ku, kopts = self.prepare_upper(tag, 'kernel')
        kmnt = os.path.join(self.base, b'r-' + tag)
        # pin the kernel's optional features (all default off here) to what ours implements
        self.m.kernel(kmnt, kopts + KERNEL_PINS)
        kbefore = self.strip(snapshot(kmnt, False, True)[0])
        kres = self.run_ops(kmnt, mode, lambda e: self.skipped(e, mode))
        for e, r in zip(self.scn.ops, kres):
            self.log('kernel: op line %s %s %s: %s' % (e.where, e.kind, show(e.path), r or '(not run)'))
        kafter = self.strip(snapshot(kmnt, False, self.recent)[0])
        kprobe = run_probes(kmnt, self.scn.probes)
        self.m.umount(kmnt)
        kup = self.strip(upper_view(ku, True, self.recent))
        self.kernel_runs[key] = (kbefore, kres, kafter, kprobe, kup)
        return self.kernel_runs[key]

    def readwrite(self):
        diffs = []
        for mode in self.modes:
            kbefore, kres, kafter, kprobe, kup = self.kernel_rw(mode)
            for v in self.variants(True):
                label = 'rw/%s/%s' % (mode, v)
                tag = ('%s-%s' % (mode, v)).encode()
                u, opts = self.prepare_upper(tag, v)

                def body(mnt, d):
                    before, problems = snapshot(mnt, self.ours_view, True)
                    d += self.compare(label + '/before-ops', kbefore, self.strip(before),
                                      None, None, problems)
                    res = self.run_ops(mnt, mode, lambda e: False)
                    for e, kr, r in zip(self.scn.ops, kres, res):
                        if self.userns and e.kind == 'ino':
                            continue    # no st_ino across remount on the kernel there (see --userns)
                        want = expected(e, mode, self.selfcheck)
                        if (want is not None and r != want) or (want is None and r != kr):
                            d.append('%s: op line %s %s %s: kernel=%s ours=%s%s' % (
                                label, e.where, e.kind, show(e.path), kr or '(not run)', r,
                                ' (expected %s)' % want if want else ''))
                        if r.startswith('HARNESS-ERROR') or (kr or '').startswith('HARNESS-ERROR'):
                            raise HarnessError('op line %s: %s' % (e.where, kr if (kr or '').startswith('H') else r))
                    after, problems = snapshot(mnt, self.ours_view, self.recent)
                    d += self.compare(label + '/after-ops', kafter, self.strip(after),
                                      kprobe, run_probes(mnt, self.scn.probes), problems, mode)
                env = {'FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT': '1',
                       'FUSE_OVERLAYFS_DISABLE_PASSTHROUGH': '1'} if mode == 'wh' else None
                diffs += self.with_ours(label, b'r-' + tag, opts, body, env)
                if 'upper' not in self.ignore:
                    diffs += diff_views(kup, self.strip(upper_view(u, self.selfcheck, self.recent)),
                                        'upper/%s/%s' % (mode, v))
        return diffs

    def op(self, mnt, e, ctx):
        try:
            if e.kind == 'remount':
                ctx.close_all()
                return self.m.remount(mnt) or 'ok'
            if e.kind == 'ino':
                ino = os.lstat(jp(mnt, e.path)).st_ino
                return 'same' if self.inos.setdefault((mnt, e.path), ino) == ino else 'changed'
            return do_op(ctx, e)
        except OSError as exc:
            return ename(exc)

    def all(self):
        diffs = self.readonly()
        if self.scn.upper is not None or self.scn.ops:
            diffs += self.readwrite()
        return diffs


class HarnessError(Exception):
    pass


KERNEL_PINS = b',redirect_dir=off,index=off,metacopy=off,xino=off'


def in_userns(idmap, base, body, name):
    """--userns: body(builder) runs as root of a user namespace
    (tests/diff/userns.py); this process, the real root, builds the layers it
    asks for (devices and trusted.* xattrs cannot be made in there) and shifts
    them to the namespace's ids.  Returns body's exit status."""
    mine, theirs = Pipe()

    def remote(*req):
        theirs.send(req)
        err = theirs.recv()
        if err:
            raise RuntimeError(err)

    def child():
        mine.close()
        return body(remote)
    os.chown(base, host_id(idmap, 0), host_id(idmap, 0))
    # rootless podman needs /dev/fuse world read-writable (udev's 0666)
    node = None if os.stat('/dev/fuse').st_mode & 0o006 == 0o006 else fuse_node(base, idmap, idmap)
    pid = fork_in_userns(child, idmap, idmap, node)
    theirs.close()
    try:
        while True:
            try:
                req = mine.recv()
            except EOFError:
                break
            try:
                build(*req)
                shift_tree(req[0], idmap, idmap)
                mine.send(None)
            except Exception as e:
                mine.send('building %s: %s' % (os.fsdecode(req[0]), e))
    finally:
        rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if rc not in (0, 1, 2):
        print('FAIL %s: harness error: the run in the user namespace ended with %s' % (
            name, 'signal %d' % -rc if rc < 0 else 'status %d' % rc))
    return rc if rc in (0, 1) else 2




def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fuse', default=os.environ.get('FUSE_OVERLAYFS'))
    ap.add_argument('--tmp', default=os.environ.get('TMPDIR', '/tmp'))
    ap.add_argument('--log')
    ap.add_argument('--pidfile', help='append the PID of every daemon started here')
    ap.add_argument('--keep', action='store_true', help='leave the built layers behind')
    ap.add_argument('--ignore', default='',
                    help='triage only: comma list of record fields (nlink, mtime, ...), '
                         '"dino" (readdir checks) or "upper" to leave out')
    ap.add_argument('--whiteout-modes', choices=sorted(WHITEOUT_MODES),
                    default=os.environ.get('OVLDIFF_WHITEOUT_MODES') or None,
                    help='run ours read-write with char 0/0 whiteouts (ovl), with '
                         'FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1 (wh) or both; default: '
                         'the scenario\'s whiteout_modes, else ovl')
    ap.add_argument('--self-check', action='store_true',
                    default=os.environ.get('OVLDIFF_SELF_CHECK') == '1',
                    help='the kernel stands in for ours: a scenario must pass against '
                         'itself (deterministic results, no harness error)')
    ap.add_argument('--userns', metavar='MAP', default=os.environ.get('OVLDIFF_USERNS') or None,
                    help='rootless: mount and run the ops as root of a user namespace '
                         'mapped INSIDE:OUTSIDE:COUNT,... (e.g. 0:61234:1,1:200000:65536)')
    ap.add_argument('scenario')
    a = ap.parse_args()
    os.umask(0)    # modes in scenarios and ops are exact on both sides
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks
    logf = open(a.log, 'a') if a.log else sys.stderr
    log = lambda s: print(s, file=logf, flush=True)
    name = os.path.basename(a.scenario)[:-4]
    if not a.fuse and a.self_check:
        a.fuse = '/bin/false'   # never run
    if not a.fuse:
        print('FAIL %s: no fuse-overlayfs binary given (--fuse or FUSE_OVERLAYFS)' % name)
        return 2
    ignore = [x for x in a.ignore.split(',') if x]
    try:
        scn = Scenario(a.scenario)
    except (OSError, ValueError) as e:
        print('FAIL %s: bad scenario: %s' % (name, e))
        return 2
    # mountinfo shows resolved paths: compare against those
    base = os.path.realpath(tempfile.mkdtemp(prefix=scn.name + '.', dir=a.tmp)).encode()
    os.chmod(base, 0o755)
    log('== %s in %s' % (scn.name, base.decode()))
    if not a.userns:
        return go(a, scn, base, log, ignore)
    try:
        return in_userns(parse_map(a.userns), base, lambda b: go(a, scn, base, log, ignore, b), scn.name)
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


def go(a, scn, base, log, ignore, builder=None):
    """Run the scenario, print the result line; returns the exit status."""
    run = Run(scn, os.fsencode(os.path.abspath(a.fuse)), base, log, ignore, a.pidfile,
              a.whiteout_modes, a.self_check, builder)
    t0 = time.time()
    try:
        try:
            diffs = run.all()
        except RuntimeError as e:
            diffs = ['setup: %s' % e]
        except HarnessError as e:
            print('FAIL %s: harness error: %s' % (scn.name, e))
            return 2
        finally:
            run.m.cleanup()
    except Exception:
        import traceback
        log(traceback.format_exc())
        print('FAIL %s: harness error: %s' % (scn.name, traceback.format_exc().strip().splitlines()[-1]))
        return 2
    finally:
        if not builder and not a.keep and not any(is_mounted(m) for m, _ in run.m.active):
            shutil.rmtree(base, ignore_errors=True)
    log('%d differences (%.1fs)' % (len(diffs), time.time() - t0))
    for d in diffs:
        log('  ' + d)
    note = ' (ignored: %s)' % ','.join(ignore) if ignore else ''
    note += ' (self-check: kernel against kernel)' if a.self_check else ''
    if not diffs:
        print('PASS %s%s' % (scn.name, note))
        return 0
    # the summary leads with crashes and failed mounts: they explain the rest
    first = sorted(diffs, key=lambda d: not any(w in d for w in ('daemon ', 'setup:', 'mount failed')))
    print('FAIL %s: %d differences%s (%s)' % (scn.name, len(diffs), note, '; '.join(first[:3])))
    return 1


if __name__ == '__main__':
    sys.exit(main())
