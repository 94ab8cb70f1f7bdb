#!/bin/bash
# Builds each libFuzzer target (clang, with AddressSanitizer and UBSan) and
# runs it for FUZZ_SECONDS (default 20) from its seed corpus; an input that
# takes over 10 s fails it.  Prints
# `PASS fuzz NAME` or `FAIL fuzz NAME` (the crash report's tail), then
# `N passed, M failed`.  Usage: tests/fuzz/run.sh [NAME...]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${FUZZ_SECONDS:-20}
command -v clang >/dev/null || { echo "FATAL: clang is missing (contrib/install-deps.sh)" >&2; exit 2; }
[ -f "$top/config.h" ] || { echo "FATAL: configure first (contrib/build.sh)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# target: its sources besides the harness
declare -A sources=([fuzz_idmap]="overlay/idmap.c overlay/override.c overlay/xattr_names.c layers/upper.c"
	[fuzz_options]="overlay/options.c overlay/idmap.c plugins/loader.c"
	[fuzz_names]="overlay/whiteout.c layers/upper.c layers/layer.c overlay/listing.c overlay/grow.c overlay/xattr.c overlay/xattr_names.c overlay/locks.c overlay/override.c
		overlay/idmap.c overlay/log.c"
	[fuzz_shim]="contrib/snapshotter/filter.c contrib/snapshotter/idmap.c contrib/snapshotter/labels.c
		contrib/snapshotter/log.c overlay/idmap.c"
	[fuzz_tar]="plugins/oci/tar.c plugins/oci/index.c plugins/oci/index_load.c plugins/oci/cache.c plugins/oci/log.c plugins/oci/limits.c plugins/oci/blob.c
		plugins/oci/gzip.c plugins/oci/zstd.c plugins/oci/cursor.c plugins/oci/build.c plugins/oci/json.c
		plugins/oci/sha256.c")
# target: its compiler and linker flags besides fuse3's include path
declare -A flags=([fuzz_options]="$(pkg-config --libs fuse3)"
	[fuzz_names]="-DXXH_INLINE_ALL $(pkg-config --libs fuse3)"
	[fuzz_shim]="$(pkg-config --cflags libprotobuf-c)"
	[fuzz_tar]="$(pkg-config --cflags --libs zlib libzstd)")
names=("$@")
[ ${#names[@]} = 0 ] && names=("${!sources[@]}")
passed=0
failed=0
for t in "${names[@]}"; do
	srcs=()
	for s in ${sources[$t]}; do srcs+=("$top/$s"); done
	if ! clang -g -O1 -std=gnu17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-I"$top" $(pkg-config --cflags fuse3) -o "$work/$t" "$here/$t.c" "${srcs[@]}" ${flags[$t]:-} \
		2>"$work/$t.build"; then
		echo "FAIL fuzz $t: does not build"
		tail -5 "$work/$t.build" | sed 's/^/    /'
		failed=$((failed + 1))
		continue
	fi
	mkdir -p "$work/corpus-$t"
	cp "$here/corpus/$t"/* "$work/corpus-$t/" 2>/dev/null
	if "$work/$t" -max_total_time="$secs" -timeout=10 -max_len=4096 -artifact_prefix="$work/" "$work/corpus-$t" >"$work/$t.log" 2>&1; then
		echo "PASS fuzz $t ($(grep -o 'Done [0-9]* runs' "$work/$t.log"))"
		passed=$((passed + 1))
	else
		echo "FAIL fuzz $t"
		tail -20 "$work/$t.log" | sed 's/^/    /'
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
