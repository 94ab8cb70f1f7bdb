#!/usr/bin/python3
"""check-upper: is an upper/work pair sound (after a crash and a remount)?

Usage: check-upper.py [--temp-regex RE] UPPER WORK

Exit 0 if sound; else exit 1, printing one line per problem on stdout
(`check-upper: PATH: problem`).  Exit 2 on a usage error.  Needs root to read
trusted.* xattrs.  Never follows symlinks, never writes.

Rules (DESIGN.md section 3, "Copy-up" and "Writing whiteouts"):
  * WORK/work exists, is a directory, and holds nothing.  Every mount empties
    it at start, so run this after a (re)mount has started, while it is idle
    or after it is unmounted.  Other entries of WORK (the kernel overlay's
    `index`, ...) are not checked.  (Not for pairs the kernel overlay used:
    it keeps a shared whiteout `#N` in WORK/work, even after unmounting.)
  * No name anywhere in UPPER matches RE (re.search on the name, default
    `^#ovl\\.`): our temporaries live only in WORK/work and are renamed into
    UPPER under their final name, so such a name in UPPER is a leaked step.
  * Every whiteout is a char 0/0 device or a regular file `.wh.NAME`; a
    `.wh.NAME` entry of another type is a problem, and `.wh.NAME` never
    coexists with NAME in the same directory.
  * No `.wh..wh..opq` entry of any type (we never write them; 1.10 does).
  * The opaque xattrs trusted.overlay.opaque, user.overlay.opaque and
    user.fuseoverlayfs.opaque appear only on directories, only with the value
    `y`.
Not checked (yet): the recorded size in user.fuseoverlayfs.origin against an
empty upper file (its value format is not fixed).
"""
import argparse, errno, os, re, stat, sys

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")
WH_PREFIX = ".wh."
WH_OPQ = ".wh..wh..opq"


def show(path):
    """A path printable on one line whatever bytes it holds."""
    return os.fsencode(path).decode("utf-8", "backslashreplace").replace("\n", "\\n")


class Checker:
    def __init__(self, temp_regex):
        self.temp = re.compile(temp_regex)
        self.problems = []

    def problem(self, path, what):
        self.problems.append("check-upper: %s: %s" % (show(path), what))

    def check_work(self, work):
        w = os.path.join(work, "work")
        try:
            st = os.lstat(w)
        except OSError as e:
            self.problem(w, "missing (%s)" % (errno.errorcode.get(e.errno, e.errno)))
            return
        if not stat.S_ISDIR(st.st_mode):
            self.problem(w, "not a directory")
            return
        try:
            left = sorted(os.listdir(w))
        except OSError as e:
            self.problem(w, "cannot list (%s)" % e.strerror)
            return
        for n in left[:20]:
            self.problem(os.path.join(w, n), "left in the work directory")
        if len(left) > 20:
            self.problem(w, "... and %d more entries" % (len(left) - 20))

    def check_xattrs(self, path, st):
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                self.problem(path, "listxattr: %s" % e.strerror)
            return
        for n in names:
            if n not in OPAQUE_XATTRS:
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.problem(path, "opaque xattr %s on a non-directory" % n)
                continue
            try:
                v = os.getxattr(path, n, follow_symlinks=False)
            except OSError as e:
                self.problem(path, "getxattr %s: %s" % (n, e.strerror))
                continue
            if v != b"y":
                self.problem(path, "opaque xattr %s has value %r, not 'y'" % (n, v))

    def check_dir(self, d):
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            self.problem(d, "cannot list (%s)" % e.strerror)
            return
        names = {e.name for e in entries}
        for e in sorted(entries, key=lambda e: e.name):
            p = e.path
            try:
                st = os.lstat(p)
            except OSError as ex:
                self.problem(p, "lstat: %s" % ex.strerror)
                continue
            if self.temp.search(e.name):
                self.problem(p, "temporary name in the upper layer")
            if e.name == WH_OPQ:
                self.problem(p, "opaque marker file (.wh..wh..opq) in the upper layer")
            elif e.name.startswith(WH_PREFIX):
                target = e.name[len(WH_PREFIX):]
                if not stat.S_ISREG(st.st_mode):
                    self.problem(p, ".wh. whiteout that is not a regular file (mode %o)" % st.st_mode)
                if target in names:
                    self.problem(p, "whiteout coexists with %s" % show(target))
            self.check_xattrs(p, st)
            if stat.S_ISDIR(st.st_mode):
                self.check_dir(p)

    def run(self, upper, work):
        try:
            st = os.lstat(upper)
        except OSError as e:
            self.problem(upper, "upper: %s" % e.strerror)
            st = None
        if st is not None:
            if not stat.S_ISDIR(st.st_mode):
                self.problem(upper, "upper is not a directory")
            else:
                self.check_xattrs(upper, st)
                self.check_dir(upper)
        self.check_work(work)
        return self.problems


def main():
    ap = argparse.ArgumentParser(description="Validate an overlay upper/work pair.")
    ap.add_argument("--temp-regex", default=r"^#ovl\.",
                    help="names of our temporaries (re.search on each name; default %(default)s)")
    ap.add_argument("upper")
    ap.add_argument("work")
    a = ap.parse_args()
    try:
        re.compile(a.temp_regex)
    except re.error as e:
        ap.error("--temp-regex: %s" % e)
    problems = Checker(a.temp_regex).run(a.upper, a.work)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
