/* The scratch directory <workdir>/work: every multi-step change to the upper
 * layer is built here under a temporary name and renamed into place, so a
 * crash leaves either the old state or the new one, plus litter here that
 * the next mount removes. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "overlay.h"

/* Removes everything below dirfd without following any symlink. */
int ovl_work_empty_dir(struct ovl_fs *fs, int dirfd)
{
	struct ovl_layer *upper = &fs->layers[0];
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	int res = 0;
	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int r = ovl_upper_unlink(upper, dirfd, de->d_name);
		if (r == 0)
			continue;
		if (r != -EISDIR && r != -EPERM) {
			res = r;
			continue;
		}
		int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = sub < 0 ? -errno : 0;
		if (r == -EACCES && (r = ovl_upper_chmod(upper, dirfd, de->d_name, 0700)) == 0) {
			sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			r = sub < 0 ? -errno : 0;
		}
		if (r < 0) {
			res = r;
			continue;
		}
		r = ovl_work_empty_dir(fs, sub);
		close(sub);
		if (r == 0)
			r = ovl_upper_rmdir(upper, dirfd, de->d_name);
		if (r < 0)
			res = r;
	}
	closedir(d);
	return res;
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
	int fd = openat(fs->work_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	res = ovl_work_empty_dir(fs, fd);
	close(fd);
	if (res == 0)
		res = ovl_upper_rmdir(upper, fs->work_fd, name);
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
