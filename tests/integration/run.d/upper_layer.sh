# shellcheck shell=bash
# Writes to the upper layer: copy-up keeping holes, programs run from lower,
# upper and copied-up files, the names of an upper hard link.  Sourced by
# ../run.sh (its helpers and variables), never run alone: `run.sh NAME` runs
# the test t_NAME.

# Copy-up keeps holes (also a trailing one) and copies dense files whole,
# the upper's own data blocks count what was copied.
t_copy_up_keeps_holes() {
	setup holes
	local r=0 f
	python3 - "$T/l2" <<'PY'
import os, sys
d = sys.argv[1]
with open(os.path.join(d, 'sparse'), 'wb') as f:    # data in the middle, holes around it
    f.truncate(64 << 20)
    f.seek(1 << 20); f.write(b'x' * 4096)
with open(os.path.join(d, 'tailhole'), 'wb') as f:  # data, then a hole to the end
    f.write(b'head' * 1024)
    f.truncate(16 << 20)
with open(os.path.join(d, 'dense'), 'wb') as f:
    f.write(os.urandom(3 << 20))
PY
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
	for f in sparse tailhole dense; do
		chmod 0600 "$T/m/$f" || { fail "chmod $f"; r=1; }
		[ -f "$T/u/$f" ] || { fail "$f not copied up"; r=1; continue; }
		cmp -s "$T/l2/$f" "$T/u/$f" || { fail "$f: upper content differs"; r=1; }
		[ "$(stat -c %s "$T/u/$f")" = "$(stat -c %s "$T/l2/$f")" ] || { fail "$f: size differs"; r=1; }
	done
	[ "$(stat -c %b "$T/u/sparse")" -le 64 ] || { fail "sparse: holes filled ($(stat -c %b "$T/u/sparse") blocks)"; r=1; }
	[ "$(stat -c %b "$T/u/tailhole")" -le 64 ] || { fail "tailhole: holes filled"; r=1; }
	[ "$(stat -c %b "$T/u/dense")" -ge 6144 ] || { fail "dense: data missing"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

# Containers run their programs from the mount: an open for exec carries the
# kernel's __FMODE_EXEC, which openat2 must never see.
t_exec_from_lower_and_upper() {
	setup exec
	cp /bin/true "$T/l2/prog"
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
	local r=0
	"$T/m/prog" || { fail "exec of a lower file failed"; r=1; }
	cp /bin/true "$T/m/prog2" && "$T/m/prog2" || { fail "exec of an upper file failed"; r=1; }
	touch "$T/m/prog" && "$T/m/prog" || { fail "exec of a copied-up file failed"; r=1; }
	unmount_and_wait "$T/m" || r=1
	return $r
}

t_upper_hard_link_names() {
	# An upper hard link's names share one node: whichever name the kernel
	# looked up first, removing or renaming one name leaves the others working.
	setup hardnames
	local first r=0
	for first in one two; do
		rm -rf "$T/u" "$T/w"
		mkdir -p "$T/u" "$T/w"
		echo data >"$T/u/one"
		ln "$T/u/one" "$T/u/two"
		ln "$T/u/one" "$T/u/three"
		"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || { fail "mount failed"; return 1; }
		if [ $first = one ]; then stat "$T/m/one" "$T/m/two" "$T/m/three" >/dev/null; else stat "$T/m/three" "$T/m/two" "$T/m/one" >/dev/null; fi
		rm "$T/m/one"
		[ "$(cat "$T/m/two" 2>&1)" = data ] || { fail "$first first: two after rm one: $(cat "$T/m/two" 2>&1)"; r=1; }
		mv "$T/m/two" "$T/m/two-moved"
		rm "$T/m/two-moved"
		[ "$(cat "$T/m/three" 2>&1)" = data ] || { fail "$first first: three after mv and rm of two: $(cat "$T/m/three" 2>&1)"; r=1; }
		echo more >>"$T/m/three"
		[ "$(cat "$T/u/three")" = "$(printf 'data\nmore')" ] || { fail "$first first: upper three: $(cat "$T/u/three")"; r=1; }
		unmount_and_wait "$T/m" || r=1
	done
	return $r
}
