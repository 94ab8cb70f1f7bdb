# shellcheck shell=bash
# Mount forms: the daemon started the ways callers start it (directly, with a
# source and repeated -o, through mount(8) and mount.fuse3, with /dev/fd/N),
# with an upper, with symlinked and escaped layer paths, on 500 layers; --help
# and -V.  Sourced by ../run.sh (its helpers and variables), never run alone:
# `run.sh NAME` runs the test t_NAME.

t_form_direct() {
	setup form_direct
	"$BIN" -o "lowerdir=$T/l1:$T/l2" "$T/m" || fail "mount failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_source_and_repeated_o() {
	setup form_src
	"$BIN" overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" -o noatime,, -o rw || fail "mount failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_fuse() {
	need_installed
	setup form_mount_fuse
	mount -t fuse.fuse-overlayfs overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" || fail "mount -t fuse.fuse-overlayfs failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_fuse3_helper() {
	need_installed
	setup form_fuse3
	mount -t fuse3.fuse-overlayfs overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" || fail "mount -t fuse3.fuse-overlayfs failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_mount_dot_fuse3() {
	need_installed
	setup form_mountfuse3
	# containerd's form: options in several -o, type last
	mount.fuse3 overlay "$T/m" -o "lowerdir=$T/l1:$T/l2" -o ro -t fuse-overlayfs || fail "mount.fuse3 failed"
	mounted_by_us "$T/m" && unmount_and_wait "$T/m"
}

t_form_dev_fd() {
	need_installed
	setup form_devfd
	# drop_privileges: mount.fuse3 mounts itself and hands us /dev/fd/N
	mount.fuse3 overlay "$T/m" -o "drop_privileges,lowerdir=$T/l1:$T/l2" -t fuse-overlayfs || fail "mount.fuse3 drop_privileges failed"
	mounted_by_us "$T/m" "$T/l1" && unmount_and_wait "$T/m" "$T/l1"
}

t_form_upper_workdir() {
	setup form_upper
	echo up >"$T/u/top"
	"$BIN" -o "lowerdir=$T/l1:$T/l2,upperdir=$T/u,workdir=$T/w" "$T/m" || fail "mount failed"
	[ "$(cat "$T/m/top")" = up ] || fail "upper does not win"
	[ "$(stat -c %a "$T/w/work")" = 700 ] || fail "workdir/work not 0700"
	grep " $T/m " /proc/mounts | grep -q " rw," || fail "mount with upper is not rw"
	unmount_and_wait "$T/m"
}

t_form_symlink_roots() {
	setup form_links
	mkdir -p "$T/l"
	ln -s ../l1 "$T/l/Alinks"
	ln -s "$T/l2" "$T/l/Blinks"
	(cd "$T" && "$BIN" -o "lowerdir=l/Alinks:l/Blinks" m) || fail "mount with symlinked roots failed"
	mounted_by_us "$T/m" "l/Alinks" && unmount_and_wait "$T/m" "l/Alinks"
}

t_form_escaped_colon() {
	setup form_escape
	mkdir -p "$T/a:b"
	echo colon >"$T/a:b/c"
	"$BIN" -o "lowerdir=$T/a\\\\:b:$T/l2" "$T/m" || fail "mount failed"
	[ "$(cat "$T/m/c")" = colon ] || fail "escaped ':' not honoured"
	unmount_and_wait "$T/m"
}

t_form_500_layers() {
	setup many
	local spec="" i
	for i in $(seq 0 499); do
		mkdir -p "$T/L/$i"
		echo "$i" >"$T/L/$i/f$i"
		echo "$i" >"$T/L/$i/same"
		spec="$spec${spec:+:}L/$i"
	done
	(cd "$T" && "$BIN" -o "lowerdir=$spec" m) || fail "mount of 500 layers failed"
	[ "$(ls "$T/m" | wc -l)" = 501 ] || fail "expected 501 names, got $(ls "$T/m" | wc -l)"
	[ "$(cat "$T/m/same")" = 0 ] || fail "top layer does not win"
	[ "$(cat "$T/m/f499")" = 499 ] || fail "bottom layer not visible"
	unmount_and_wait "$T/m"
}

t_help_version() {
	local r=0
	"$BIN" --help | grep -q "lowerdir" || { fail "--help"; r=1; }
	"$BIN" -V | grep -q "fuse-overlayfs: version" || { fail "-V"; r=1; }
	return $r
}
