/* Every whiteout and opaque-directory format (COMPAT.md): recognised here, in
 * one place, in every layer; and written here, in the one format we write
 * (char 0/0, or .wh.NAME where mknod is refused or the environment asks). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "overlay.h"

#define WH_PREFIX ".wh."
#define WH_META_PREFIX ".wh..wh."
#define WH_OPAQUE_MARKER ".wh..wh..opq"

bool ovl_name_is_reserved(const char *name)
{
	return strncmp(name, WH_PREFIX, sizeof WH_PREFIX - 1) == 0;
}

const char *ovl_whiteout_target(const char *name)
{
	if (!ovl_name_is_reserved(name) || strncmp(name, WH_META_PREFIX, sizeof WH_META_PREFIX - 1) == 0)
		return NULL;
	const char *target = name + sizeof WH_PREFIX - 1;
	if (target[0] == '\0' || strcmp(target, ".") == 0 || strcmp(target, "..") == 0)
		return NULL;
	return target;
}

bool ovl_name_is_opaque_marker(const char *name)
{
	return strcmp(name, WH_OPAQUE_MARKER) == 0;
}

bool ovl_stat_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && major(st->st_rdev) == 0 && minor(st->st_rdev) == 0;
}

bool ovl_opaque_xattr_name(const char *xname)
{
	for (size_t i = 0; i < OVL_OPAQUE_XATTRS; i++)
		if (strcmp(xname, ovl_opaque_xattrs[i]) == 0)
			return true;
	return false;
}

/* One listxattr, and a getxattr only for a name that is present. */
static int opaque_by_xattr(struct ovl_layer *layer, int dirfd)
{
	char small[1024], *list, *big = NULL;
	ssize_t len = ovl_layer_xattr(layer, dirfd, NULL, NULL, small, sizeof small, &big, &list);
	int res = len < 0 && errno != ENOTSUP && errno != ENODATA ? -errno : 0;
	for (ssize_t off = 0; off < len && res == 0; off += (ssize_t)strlen(list + off) + 1) {
		if (!ovl_opaque_xattr_name(list + off))
			continue;
		char v[2];
		ssize_t vl = layer->ops->getxattrat(layer, dirfd, NULL, list + off, v, sizeof v);
		res = vl == 1 && v[0] == 'y';
	}
	free(big);
	return res;
}

int ovl_layer_dir_is_opaque(struct ovl_layer *layer, int dirfd)
{
	int res = opaque_by_xattr(layer, dirfd);
	if (res != 0)
		return res;
	struct stat st;
	if (layer->ops->statat(layer, dirfd, WH_OPAQUE_MARKER, &st) == 0)
		return 1;
	return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
}

int ovl_has_whiteout_file(struct ovl_layer *layer, int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	struct stat st;
	if ((size_t)snprintf(wh, sizeof wh, WH_PREFIX "%s", name) >= sizeof wh)
		return 0; /* such a whiteout name cannot exist */
	if (layer->ops->statat(layer, dirfd, wh, &st) == 0)
		return 1;
	return (errno == ENOENT || errno == ENAMETOOLONG) ? 0 : -errno;
}

/* ---- writing ---- */
/* One whiteout inode linked wherever a whiteout is needed, as the kernel
 * overlay does: making a new one per deletion costs ext4 an inode search
 * that dominated rm -rf.  It lives beside work/, which stays empty. */
#define SHARED_WHITEOUT "fuse-overlayfs.whiteout"

static int make_shared_whiteout(struct ovl_fs *fs)
{
	struct ovl_layer *upper = &fs->layers[0];
	char tmp[OVL_TEMPNAME_MAX];
	ovl_work_tempname(fs, tmp);
	int res = ovl_upper_whiteout(upper, fs->work_fd, tmp);
	if (res < 0)
		return res;
	if ((res = ovl_rename(fs, fs->work_fd, tmp, fs->workdir_fd, SHARED_WHITEOUT, 0)) < 0)
		ovl_upper_unlink(upper, fs->work_fd, tmp);
	return res;
}

void ovl_whiteout_setup(struct ovl_fs *fs)
{
	fs->trusted_xattrs = true;
	fs->whiteout_files = getenv("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT") != NULL;
	if (fs->whiteout_files || fs->work_fd < 0)
		return;
	int res = make_shared_whiteout(fs);
	fs->whiteout_files = res == -EPERM;
	ovl_log(OVL_DEBUG, "whiteouts: %s", fs->whiteout_files ? ".wh. files" : "char 0/0");
}

/* Links the shared whiteout as dirfd/name; makes a new one when it has
 * as many links as the filesystem allows. */
static int link_whiteout(struct ovl_fs *fs, int dirfd, const char *name)
{
	struct ovl_layer *upper = &fs->layers[0];
	for (int tries = 0; tries < 2; tries++) {
		int res = ovl_upper_link(upper, fs->workdir_fd, SHARED_WHITEOUT, dirfd, name);
		if (res == 0)
			return 0;
		if (res != -EMLINK && res != -ENOENT)
			break;
		if (make_shared_whiteout(fs) < 0)
			break;
	}
	/* no links here (another fs, or a lost shared whiteout): a new inode */
	return ovl_upper_whiteout(upper, dirfd, name);
}

bool ovl_whiteout_fits(const struct ovl_fs *fs, const char *name)
{
	return !fs->whiteout_files || strlen(name) + (sizeof WH_PREFIX - 1) <= NAME_MAX;
}

static int whiteout_file_name(const char *name, char wh[NAME_MAX + 1])
{
	if ((size_t)snprintf(wh, NAME_MAX + 1, WH_PREFIX "%s", name) > NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

int ovl_upper_whiteout_at(struct ovl_fs *fs, int dirfd, const char *name)
{
	struct ovl_layer *upper = &fs->layers[0];
	struct stat st;
	if (upper->ops->statat(upper, dirfd, name, &st) == 0)
		return ovl_stat_is_whiteout(&st) ? OVL_WH_CHAR : OVL_WH_NONE;
	if (errno != ENOENT)
		return -errno;
	int res = ovl_has_whiteout_file(upper, dirfd, name);
	return res < 0 ? res : res ? OVL_WH_FILE : OVL_WH_NONE;
}

/* Replaces dirfd/name by a char whiteout in one step: it is built in work
 * and renamed over the object (swapped with a directory, then removed). */
static int replace_by_char_whiteout(struct ovl_fs *fs, int dirfd, const char *name, bool is_dir)
{
	char tmp[OVL_TEMPNAME_MAX];
	ovl_work_tempname(fs, tmp);
	int res = link_whiteout(fs, fs->work_fd, tmp);
	if (res < 0)
		return res;
	if ((res = ovl_rename(fs, fs->work_fd, tmp, dirfd, name, is_dir ? RENAME_EXCHANGE : 0)) < 0) {
		ovl_upper_unlink(&fs->layers[0], fs->work_fd, tmp);
		return res;
	}
	if (is_dir)
		ovl_work_remove(fs, tmp);
	return 0;
}

int ovl_whiteout_put(struct ovl_fs *fs, int dirfd, const char *name, mode_t present)
{
	if (!fs->whiteout_files) {
		if (present)
			return replace_by_char_whiteout(fs, dirfd, name, S_ISDIR(present));
		return link_whiteout(fs, dirfd, name);
	}
	/* .wh.NAME first: a crash in between leaves NAME shown, as before */
	char wh[NAME_MAX + 1];
	int res = whiteout_file_name(name, wh);
	if (res == 0)
		res = ovl_upper_touch(&fs->layers[0], dirfd, wh, 0);
	if (res < 0 || !present)
		return res;
	if (!S_ISDIR(present))
		return ovl_upper_unlink(&fs->layers[0], dirfd, name);
	return ovl_work_discard(fs, dirfd, name);
}

int ovl_whiteout_rename(struct ovl_fs *fs, int dirfd, const char *name, int newdirfd, const char *newname)
{
	int res;
	if (fs->whiteout_files) {
		/* .wh.NAME first, as ovl_whiteout_put */
		res = ovl_whiteout_put(fs, dirfd, name, 0);
		return res < 0 ? res : ovl_rename(fs, dirfd, name, newdirfd, newname, 0);
	}
	res = ovl_rename(fs, dirfd, name, newdirfd, newname, RENAME_WHITEOUT);
	if (res != -EINVAL && res != -ENOSYS)
		return res;
	/* no RENAME_WHITEOUT (before 3.18, or refused by the filesystem): two steps */
	res = ovl_rename(fs, dirfd, name, newdirfd, newname, 0);
	return res < 0 ? res : ovl_whiteout_put(fs, dirfd, name, 0);
}

int ovl_whiteout_drop_file(struct ovl_fs *fs, int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	if (whiteout_file_name(name, wh) < 0)
		return 0;
	int res = ovl_upper_unlink(&fs->layers[0], dirfd, wh);
	return res == -ENOENT ? 0 : res;
}

int ovl_set_opaque(struct ovl_fs *fs, int dirfd)
{
	struct ovl_layer *upper = &fs->layers[0];
	if (fs->trusted_xattrs) {
		int res = ovl_upper_setxattr(upper, dirfd, NULL, ovl_opaque_xattrs[0], "y", 1, 0);
		if (res != -EPERM && res != -ENOTSUP)
			return res;
		fs->trusted_xattrs = false; /* rootless: the user.* spellings */
	}
	for (size_t i = 1; i < OVL_OPAQUE_XATTRS; i++) {
		int res = ovl_upper_setxattr(upper, dirfd, NULL, ovl_opaque_xattrs[i], "y", 1, 0);
		if (res < 0)
			return res;
	}
	return 0;
}
