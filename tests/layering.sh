#!/bin/sh
# The layering of DESIGN.md section 2, in overlay/ (the core):
# - every change to the upper layer and workdir goes through layers/upper.c
#   (the kernel overlay's ovl_do_*): fails on a raw call that changes a file
#   system object (mkdirat, renameat2, fsetxattr, fchmod, ftruncate, fsync...,
#   syscall(SYS_renameat2...), an open that may write or create, the upper
#   layer's setxattrat/removexattrat/chmodat ops);
# - every read of a layer goes through its ops (layers/layer.h): fails on a
#   raw call that lists a directory (getdents64, readdir), reads an xattr
#   (fgetxattr, listxattr), data (pread) or a link (readlinkat), or opens
#   anything (a layer's object is opened by its openat, ovl_layer_open).
# A call that must stay raw names why in a comment on its line, or alone on
# the line above: "layering-ok: WHY".
# Prints `FAIL layering FILE:LINE: ...` per call found, else `PASS layering`,
# then `N passed, M failed`.  Run by `make check`; needs only sh and awk.
# Usage: tests/layering.sh [FILE...] (default: overlay/*.c overlay/*.h)
top=${srcdir:-$(dirname "$0")/..}
[ $# -gt 0 ] || set -- "$top"/overlay/*.c "$top"/overlay/*.h

awk -v top="$top/" '
BEGIN {
	calls = "renameat2|renameat|rename|unlinkat|unlink|rmdir|mkdirat|mkdir|mknodat|mknod|symlinkat|symlink|" \
		"linkat|link|fchownat|fchown|lchown|chown|utimensat|futimens|futimes|lutimes|utimes|utime|" \
		"fsetxattr|lsetxattr|setxattr|fremovexattr|lremovexattr|removexattr|fchmodat|fchmod|chmod|" \
		"ftruncate|truncate|fallocate|fsync|fdatasync|sync_file_range|creat|openat|open"
	call_re = "(^|[^A-Za-z0-9_.>])(" calls ")[ \t]*[(]"
	op_re = "->(setxattrat|removexattrat|chmodat)[ \t]*[(]"
	sys_re = "SYS_(renameat2|fchmodat2|setxattrat|removexattrat|mkdirat|mknodat|unlinkat|linkat|symlinkat|fchownat|utimensat)"
	reads = "getdents64|getdents|readdir|readdir_r|fdopendir|opendir|scandirat|scandir|" \
		"fgetxattr|lgetxattr|getxattr|flistxattr|llistxattr|listxattr|pread64|pread|preadv2|preadv|readlinkat|readlink"
	read_re = "(^|[^A-Za-z0-9_.>])(" reads ")[ \t]*[(]"
	read_sys_re = "SYS_(getdents64|getdents|openat2|getxattrat|listxattrat)"
	to_upper = "use layers/upper.c (ovl_upper_*)"
	to_ops = "use the layer'"'"'s ops (layers/layer.h; ovl_layer_open)"
	bad = 0
}
FNR == 1 { if (NR > 1) check(); nlines = 0; in_comment = 0; file = FILENAME; sub("^" top, "", file) }
{ nlines++; raw[nlines] = $0; code[nlines] = strip($0) }
END { if (NR > 0) check(); print (bad ? "0 passed, 1 failed" : "PASS layering\n1 passed, 0 failed"); exit (bad ? 1 : 0) }

# The line without comments and the insides of string and char literals.
function strip(s,    out, i, n, c, q) {
	out = ""; n = length(s)
	for (i = 1; i <= n; i++) {
		c = substr(s, i, 1)
		if (in_comment) {
			if (substr(s, i, 2) == "*/") { in_comment = 0; i++ }
			continue
		}
		if (substr(s, i, 2) == "/*") { in_comment = 1; i++; out = out " "; continue }
		if (substr(s, i, 2) == "//") break
		if (c == "\"" || c == "\047") {
			q = c
			for (i++; i <= n && substr(s, i, 1) != q; i++)
				if (substr(s, i, 1) == "\\") i++
			out = out q q
			continue
		}
		out = out c
	}
	return out
}

# The arguments of the call whose "(" is at column col of line l, across lines.
function args(l, col,    depth, out, s, i, c) {
	depth = 0; out = ""
	for (; l <= nlines; l++) {
		s = code[l]
		for (i = col; i <= length(s); i++) {
			c = substr(s, i, 1)
			out = out c
			if (c == "(") depth++
			else if (c == ")" && --depth == 0) return out
		}
		col = 1
	}
	return out
}

# An open that writes, creates, or whose flags are not plainly read-only.
function opens_to_write(a) {
	return a ~ /O_(CREAT|WRONLY|RDWR|TRUNC|APPEND|TMPFILE)/ || a !~ /O_(RDONLY|PATH)/
}

function report(l, name, why, fix) {
	printf "FAIL layering %s:%d: %s(%s: %s, or say why not with \"layering-ok: WHY\"\n", file, l, name, why, fix
	print "    " raw[l]
	bad++
}

# Each call of line l that re finds, judged as a change (reads 0) or a read.
function calls_in(l, re, reads,    s, off, name, paren) {
	s = code[l]; off = 0
	while (match(s, re)) {
		name = substr(s, RSTART, RLENGTH)
		paren = off + RSTART + RLENGTH - 1
		sub(/^[^A-Za-z0-9_]/, "", name); sub(/[ \t]*[(]$/, "", name)
		if (reads)
			report(l, name, ") reads a layer", to_ops)
		else if (name !~ /^open/)
			report(l, name, ") changes upper or work", to_upper)
		else if (opens_to_write(args(l, paren)))
			report(l, name, "...) may write or create", to_upper)
		else
			report(l, name, "...) opens an object of a layer or work", to_ops)
		off += RSTART + RLENGTH - 1
		s = substr(s, RSTART + RLENGTH)
	}
}

function check(    l) {
	for (l = 1; l <= nlines; l++) {
		if (raw[l] ~ /layering-ok:/ || (l > 1 && raw[l - 1] ~ /layering-ok:/ && code[l - 1] ~ /^[ \t]*$/))
			continue
		calls_in(l, call_re, 0)
		calls_in(l, read_re, 1)
		if (match(code[l], op_re))
			report(l, substr(code[l], RSTART + 2, RLENGTH - 3), ") is upper.c'"'"'s", to_upper)
		if (match(code[l], sys_re))
			report(l, "syscall", substr(code[l], RSTART, RLENGTH) ", ...) changes upper or work", to_upper)
		if (match(code[l], read_sys_re))
			report(l, "syscall", substr(code[l], RSTART, RLENGTH) ", ...) reads a layer", to_ops)
	}
}
' "$@"
