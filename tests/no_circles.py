#!/usr/bin/env python3
"""The calls among overlay/*.c run one way (DESIGN.md §2): fails, naming the
calls, when some files call each other in a circle.  A call is a use of an
ovl_* function defined in another file of overlay/.  Run by `make check`."""
import collections
import glob
import os
import re
import sys

top = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
files = sorted(glob.glob(os.path.join(top, 'overlay', '*.c')))
defined = {}
for f in files:
    for m in re.finditer(r'^[a-z][^\n;]*?\b(ovl_\w+)\(', open(f).read(), re.M):
        defined.setdefault(m.group(1), os.path.basename(f))
calls = collections.defaultdict(set)
for f in files:
    name = os.path.basename(f)
    for fn in set(re.findall(r'\b(ovl_\w+)\(', open(f).read())):
        if defined.get(fn, name) != name:
            calls[name].add((defined[fn], fn))

# strongly connected components (Tarjan): every one of more than one file is a circle
index, low, stack, on, comps = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w, _ in calls.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(comp)


sys.setrecursionlimit(10000)
for f in files:
    if os.path.basename(f) not in index:
        visit(os.path.basename(f))
circles = [sorted(c) for c in comps if len(c) > 1]
for c in circles:
    print('FAIL no_circles: %s call each other:' % ', '.join(c))
    for a in c:
        for b, fn in sorted(calls[a]):
            if b in c:
                print('    %s -> %s (%s)' % (a, b, fn))
if not circles:
    print('PASS no_circles: %d files of overlay/, the calls run one way' % len(files))
sys.exit(1 if circles else 0)
