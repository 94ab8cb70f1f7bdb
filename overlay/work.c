/* The scratch directory <workdir>/work: every multi-step change to the upper
 * layer is built here under a temporary name and renamed into place, so a
 * crash leaves either the old state or the new one, plus litter here that
 * the next mount removes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "overlay.h"

/* Removes the directory dirfd/name and everything below it. */
static int remove_dir(struct ovl_fs *fs, int dirfd, const char *name)
{
	struct ovl_layer *upper = &fs->layers[0];
	int sub = ovl_layer_open(fs, upper, dirfd, name, O_RDONLY | O_DIRECTORY);
	int r = sub < 0 ? -errno : 0;
	if (r == -EACCES && (r = ovl_upper_chmod(upper, dirfd, name, 0700)) == 0) {
		sub = ovl_layer_open(fs, upper, dirfd, name, O_RDONLY | O_DIRECTORY);
		r = sub < 0 ? -errno : 0;
	}
	if (r < 0)
		return r;
	r = ovl_work_empty_dir(fs, sub);
	upper->ops->close(upper, sub);
	return r < 0 ? r : ovl_upper_rmdir(upper, dirfd, name);
}

struct emptying {
	struct ovl_fs *fs;
	int dirfd;
	int res; /* the last failure */
};

/* Removes one entry of the directory being emptied. */
static int remove_entry(void *arg, const char *name, uint8_t type, ino_t ino)
{
	struct emptying *e = arg;
	(void)type, (void)ino;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	int r = ovl_upper_unlink(&e->fs->layers[0], e->dirfd, name);
	if (r == -EISDIR || r == -EPERM)
		r = remove_dir(e->fs, e->dirfd, name);
	if (r < 0)
		e->res = r;
	return 0;
}

/* Removes everything below dirfd without following any symlink. */
int ovl_work_empty_dir(struct ovl_fs *fs, int dirfd)
{
	struct ovl_layer *upper = &fs->layers[0];
	struct emptying e = { .fs = fs, .dirfd = dirfd };
	int fd = ovl_layer_open(fs, upper, dirfd, ".", O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return -errno;
	int r = upper->ops->list(upper, fd, remove_entry, &e) < 0 ? -errno : e.res;
	upper->ops->close(upper, fd);
	return r;
}

void ovl_work_tempname(struct ovl_fs *fs, char buf[OVL_TEMPNAME_MAX])
{
	snprintf(buf, OVL_TEMPNAME_MAX, "#ovl.%lu", atomic_fetch_add(&fs->temp_counter, 1));
}

int ovl_work_remove(struct ovl_fs *fs, const char *name)
{
	struct ovl_layer *upper = &fs->layers[0];
	int res = ovl_upper_unlink(upper, fs->work_fd, name);
	if (res == 0)
		return 0;
	if (res != -EISDIR && res != -EPERM)
		return res == -ENOENT ? 0 : res;
	res = remove_dir(fs, fs->work_fd, name);
	if (res < 0)
		ovl_log(OVL_WARN, "workdir: cannot remove %s: %s", name, strerror(-res));
	return res;
}

int ovl_rename(struct ovl_fs *fs, int olddirfd, const char *old, int newdirfd, const char *new, unsigned flags)
{
	char tmp[OVL_TEMPNAME_MAX] = "";
	/* where the kernel cannot exchange, the steps pass through work */
	if (flags & RENAME_EXCHANGE)
		ovl_work_tempname(fs, tmp);
	return ovl_upper_rename(&fs->layers[0], olddirfd, old, newdirfd, new, flags, fs->work_fd, tmp);
}

int ovl_work_discard(struct ovl_fs *fs, int dirfd, const char *name)
{
	char tmp[OVL_TEMPNAME_MAX];
	ovl_work_tempname(fs, tmp);
	int res = ovl_rename(fs, dirfd, name, fs->work_fd, tmp, 0);
	if (res < 0)
		return res;
	ovl_work_remove(fs, tmp);
	return 0;
}
