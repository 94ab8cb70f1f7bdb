#!/bin/bash
# Plugins (plugins/loader.c, man fuse-overlayfs-plugin(3)).  Usage: plugins.sh.
# Installs the tree into a temporary DESTDIR, builds the test plugin
# tests/integration/plugins/mem.c OUT of the tree against the installed
# <fuse-overlayfs/plugin.h> through pkg-config (PKG_CONFIG_PATH and
# PKG_CONFIG_SYSROOT_DIR point into the DESTDIR), and mounts
# `-o plugins=mem.so,lowerdir=//mem/x/two:DIR` (one entry, two layers, over a
# directory layer).  A statically linked daemon cannot run plugins (dlopen
# brings it a second libc): it hands the mount to its dynamic build,
# FUSE_OVERLAYFS_PLUGIN_DAEMON (the tree's fuse-overlayfs-plugins).
#   pkg_config           cflags and plugindir of fuse-overlayfs-plugin.pc; the
#                        plugin builds with -Wall -Wextra -Werror
#   merged_view          listing, contents through the read op, stat,
#                        readlink, xattr of the plugin's layers merged
#   whiteout_hides_lower the plugin layer's .wh.hidden hides DIR's hidden
#   distinct_inodes      both plugin layers number their objects from 1: no
#                        two names share an st_ino
#   copy_up_append       an append to a plugin file: upper gets all of it
#   release_at_unmount   each plugin layer is released once at unmount
#   plugin_dir           without plugins=, the .so in FUSE_OVERLAYFS_PLUGIN_DIR
#   plugin_daemon_installed  make install puts the dynamic
#                        libexec/fuse-overlayfs/fuse-overlayfs-plugins
#   handed_to_plugin_daemon  (a static daemon) the mount's daemon runs as
#                        FUSE_OVERLAYFS_PLUGIN_DAEMON
#   handed_over_for_plugins_option  (a static daemon) so does one of
#                        -o plugins= over directory lowers only
#   refuse_*             no plugin of that name, a .so that is not there, one
#                        without the entry symbol, interface version 2, a PATH
#                        the plugin refuses, // as upperdir, (a static
#                        daemon) a plugin daemon that is missing or static
#                        too: exit 1, one line naming it, nothing mounted
# Environment: FUSE_OVERLAYFS (the daemon, default the tree's), OVL_TEST_TMPDIR.
TEST_NAME=plugins
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_fuse
for c in cc pkg-config getfattr make; do command -v $c >/dev/null || die "$c is missing"; done
make_work

DEST=$WORK/dest
make -C "$top" install DESTDIR="$DEST" >"$WORK/install.log" 2>&1 || die "make install DESTDIR=$DEST failed (see the log: KEEP=1)"
PKG_CONFIG_PATH=$(find "$DEST" -name fuse-overlayfs-plugin.pc -printf '%h\n' | head -1)
[ -n "$PKG_CONFIG_PATH" ] || die "make install put no fuse-overlayfs-plugin.pc into $DEST"
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR=$DEST
if readelf -l "$BIN" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	static=0
else
	static=1
fi
# ---- pkg_config: the plugin built out of the tree ----
src=$here/plugins/mem.c
cflags=$(pkg-config --cflags fuse-overlayfs-plugin 2>&1)
plugindir=$(pkg-config --variable=plugindir fuse-overlayfs-plugin 2>&1)
build() { # OUT [CFLAGS...]
	local out=$1
	shift
	cc -std=c17 -Wall -Wextra -Werror -shared -fPIC $cflags "$@" -o "$WORK/$out" "$src" 2>>"$WORK/cc.log"
}
if [ ! -f "$(pkg-config --variable=includedir fuse-overlayfs-plugin)/fuse-overlayfs/plugin.h" ]; then
	fail pkg_config "plugin.h not installed under the pkg-config includedir" "cflags: $cflags"
elif [ ! -d "$plugindir" ]; then
	fail pkg_config "plugindir '$plugindir' was not created by make install"
elif ! build mem.so || ! build mem_v2.so -DMEM_API_VERSION=2 || ! build mem_nosym.so -DMEM_NO_ENTRY; then
	fail pkg_config "the plugin does not build with $cflags" "$(head -5 "$WORK/cc.log")"
else
	pass pkg_config
fi
[ -f "$WORK/mem.so" ] || die "no test plugin built: $(head -3 "$WORK/cc.log")"

mkdir -p "$WORK"/{low,u,w,u2,w2,m,pdir}
echo "lower hidden" >"$WORK/low/hidden"
echo "lower file" >"$WORK/low/dirfile.txt"
M=$WORK/m
export MEM_RELEASE_FILE=$WORK/released
start_fuse "$BIN" "//mem/x/two:$WORK/low" "$WORK/u" "$WORK/w" "$M" "$WORK/err" "plugins=$WORK/mem.so" ||
	die "mount with the plugin failed: $(cat "$WORK/err")"
first_exe=$(readlink "/proc/$FPID/exe")

# ---- merged_view ----
errs=()
want() { # WHAT GOT EXPECTED
	[ "$2" = "$3" ] || errs+=("$1: got '$2', want '$3'")
}
want listing "$(ls -A "$M" | tr '\n' ' ')" "d dirfile.txt f.txt link only2.txt shadow.txt "
want "listing of d" "$(ls -A "$M/d" | tr '\n' ' ')" "bottom.txt top.txt "
want f.txt "$(cat "$M/f.txt")" "hello from mem x"
want shadow.txt "$(cat "$M/shadow.txt")" "top shadow"
want d/bottom.txt "$(cat "$M/d/bottom.txt")" "bottom"
want dirfile.txt "$(cat "$M/dirfile.txt")" "lower file"
want "stat f.txt" "$(stat -c '%s %a %F %Y' "$M/f.txt")" "17 644 regular file 1500000000"
want "stat d/top.txt" "$(stat -c '%s %a' "$M/d/top.txt")" "4 600"
want readlink "$(readlink "$M/link")" "f.txt"
want "cat link" "$(cat "$M/link")" "hello from mem x"
want xattr "$(getfattr --absolute-names --only-values -n user.mem "$M/f.txt" 2>&1)" "yes"
want "xattr list" "$(getfattr --absolute-names -d -m - "$M/f.txt" 2>&1 | grep -c "^user.mem=")" "1"
if [ ${#errs[@]} = 0 ]; then pass merged_view; else fail merged_view "${errs[0]}" "${errs[@]:1}"; fi

# ---- whiteout_hides_lower ----
if [ -e "$M/hidden" ] || ls -A "$M" | grep -q 'hidden'; then
	fail whiteout_hides_lower "hidden of the directory layer shows through the plugin's .wh.hidden"
elif [ ! -f "$WORK/low/hidden" ]; then
	fail whiteout_hides_lower "the lower file went"
else
	pass whiteout_hides_lower
fi

# ---- distinct_inodes ----
inos=$(find "$M" -mindepth 1 -printf '%i %p\n')
dups=$(awk '{ print $1 }' <<<"$inos" | sort | uniq -d)
if [ -n "$dups" ]; then
	fail distinct_inodes "names share st_ino $dups" "$(grep -F "$(head -1 <<<"$dups") " <<<"$inos")"
else
	pass distinct_inodes
fi

# ---- copy_up_append ----
echo more >>"$M/f.txt"
got=$(cat "$WORK/u/f.txt" 2>&1)
if [ "$got" != "hello from mem x
more" ]; then
	fail copy_up_append "upper/f.txt is '$got'"
elif [ "$(cat "$M/f.txt")" != "$got" ]; then
	fail copy_up_append "the mount shows '$(cat "$M/f.txt")'"
else
	pass copy_up_append
fi

# ---- release_at_unmount ----
stop_fuse "$M" "$FPID" || fail release_at_unmount "$STOP_ERR"
n=$(wc -l <"$MEM_RELEASE_FILE" 2>/dev/null || echo 0)
if [ "$n" != 2 ]; then fail release_at_unmount "$n layers released, want 2"; else pass release_at_unmount; fi
unset MEM_RELEASE_FILE

# ---- plugin_dir ----
cp "$WORK/mem.so" "$WORK/pdir/"
rm -rf "$WORK/u" "$WORK/w" && mkdir "$WORK/u" "$WORK/w"
if ! FUSE_OVERLAYFS_PLUGIN_DIR=$WORK/pdir start_fuse "$BIN" "//mem/dir/two:$WORK/low" "$WORK/u" "$WORK/w" "$M" "$WORK/err"; then
	fail plugin_dir "no mount: $(tail -1 "$WORK/err")"
else
	got=$(cat "$M/f.txt")
	[ "$got" = "hello from mem dir" ] && pass plugin_dir || fail plugin_dir "f.txt is '$got'"
	stop_fuse "$M" "$FPID" || fail plugin_dir "$STOP_ERR"
fi

# ---- refusals: exit 1, one line naming it, nothing mounted ----
uw="upperdir=$WORK/u,workdir=$WORK/w"
expect_refusal refuse_missing_name "no plugin named 'nope'" "$BIN" "plugins=$WORK/mem.so,lowerdir=//nope/x/two:$WORK/low,$uw"
expect_refusal refuse_missing_name_dir "no plugin named 'nope'" "$BIN" "lowerdir=//nope/x/two,$uw" FUSE_OVERLAYFS_PLUGIN_DIR="$WORK/pdir"
expect_refusal refuse_no_such_so "$WORK/none.so" "$BIN" "plugins=$WORK/none.so,lowerdir=//mem/x/two,$uw"
expect_refusal refuse_no_symbol "$WORK/mem_nosym.so: plugins: no symbol fuse_overlayfs_plugin_v1" "$BIN" \
	"plugins=$WORK/mem_nosym.so,lowerdir=//mem/x/two,$uw"
expect_refusal refuse_api_version "$WORK/mem_v2.so: plugins: plugin interface version 2" "$BIN" \
	"plugins=$WORK/mem_v2.so,lowerdir=//mem/x/two,$uw"
expect_refusal refuse_path "//mem/x/bad: lowerdir: plugin mem: mem: no tree at /bad" "$BIN" \
	"plugins=$WORK/mem.so,lowerdir=//mem/x/bad:$WORK/low,$uw"
expect_refusal refuse_plugin_upper "//mem/x/two: upperdir" "$BIN" \
	"plugins=$WORK/mem.so,lowerdir=$WORK/low,upperdir=//mem/x/two,workdir=$WORK/w"
# ---- the static daemon hands plugin mounts to its dynamic build ----
installed=$(find "$DEST" -path '*/libexec/fuse-overlayfs/fuse-overlayfs-plugins' -type f | head -1)
if [ -z "$installed" ]; then
	fail plugin_daemon_installed "make install put no libexec/fuse-overlayfs/fuse-overlayfs-plugins into $DEST"
elif ! readelf -l "$installed" | grep -q 'Requesting program interpreter'; then
	fail plugin_daemon_installed "$installed is not linked dynamically"
else
	pass plugin_daemon_installed
fi
# the plugin daemon a static daemon runs: FUSE_OVERLAYFS_PLUGIN_DAEMON, else
# the installed one (lib.sh sets the variable when one is built beside it)
is_plugin_daemon() { # EXE
	[ "${1##*/}" = fuse-overlayfs-plugins ] && [ "$1" = "${FUSE_OVERLAYFS_PLUGIN_DAEMON:-$1}" ]
}
if [ "$static" = 1 ]; then
	if is_plugin_daemon "$first_exe"; then
		pass handed_to_plugin_daemon
	else
		fail handed_to_plugin_daemon "the daemon mounted by $BIN runs $first_exe, want ${FUSE_OVERLAYFS_PLUGIN_DAEMON:-fuse-overlayfs-plugins}"
	fi
	# plugins= alone, directory lowers: loaded all the same (as 1.10), so handed over too
	if ! start_fuse "$BIN" "$WORK/low" "$WORK/u2" "$WORK/w2" "$M" "$WORK/err" "plugins=$WORK/mem.so"; then
		fail handed_over_for_plugins_option "no mount: $(cat "$WORK/err")"
	else
		exe=$(readlink "/proc/$FPID/exe")
		is_plugin_daemon "$exe" && pass handed_over_for_plugins_option ||
			fail handed_over_for_plugins_option "the daemon runs $exe"
		stop_fuse "$M" "$FPID" || die "$STOP_ERR"
	fi
	expect_refusal refuse_no_plugin_daemon "$WORK/none: lowerdir: plugins need" "$BIN" \
		"plugins=$WORK/mem.so,lowerdir=//mem/x/two,$uw" FUSE_OVERLAYFS_PLUGIN_DAEMON="$WORK/none"
	expect_refusal refuse_static_plugin_daemon "linked statically and cannot run plugins; neither can its plugin daemon $BIN" \
		"$BIN" "plugins=$WORK/mem.so,lowerdir=//mem/x/two,$uw" FUSE_OVERLAYFS_PLUGIN_DAEMON="$BIN"
fi
finish
