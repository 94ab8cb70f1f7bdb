/* Every change made in the upper layer and its workdir (the kernel overlay's
 * ovl_do_*): see upper.h.  Opens, xattrs and chmod by name go through the
 * upper layer's own ops (layers/direct.c), whose fallbacks for kernels
 * without openat2, *xattrat and fchmodat2 are chosen once at start. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "upper.h"

/* A libc result (-1 and errno) as ours (-errno). */
static int ret(int r)
{
	return r < 0 ? -errno : r;
}

int ovl_upper_create(struct ovl_layer *upper, int dirfd, const char *name, int flags, mode_t mode)
{
	flags |= O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	return ret(upper->ops->openat(upper, dirfd, name, flags, mode));
}

int ovl_upper_touch(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode)
{
	int fd = upper->ops->openat(upper, dirfd, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

int ovl_upper_open(struct ovl_layer *upper, int dirfd, const char *name, int flags)
{
	return ret(upper->ops->openat(upper, dirfd, name, flags & ~(O_CREAT | O_EXCL), 0));
}

int ovl_upper_mkdir(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode)
{
	(void)upper;
	return ret(mkdirat(dirfd, name, mode));
}

int ovl_upper_mknod(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode, dev_t rdev)
{
	(void)upper;
	return ret(mknodat(dirfd, name, mode, rdev));
}

int ovl_upper_whiteout(struct ovl_layer *upper, int dirfd, const char *name)
{
	return ovl_upper_mknod(upper, dirfd, name, S_IFCHR | 0, makedev(0, 0));
}

int ovl_upper_symlink(struct ovl_layer *upper, int dirfd, const char *name, const char *target)
{
	(void)upper;
	return ret(symlinkat(target, dirfd, name));
}

int ovl_upper_link(struct ovl_layer *upper, int olddirfd, const char *old, int newdirfd, const char *new)
{
	(void)upper;
	return ret(linkat(olddirfd, old, newdirfd, new, 0));
}

int ovl_upper_unlink(struct ovl_layer *upper, int dirfd, const char *name)
{
	(void)upper;
	return ret(unlinkat(dirfd, name, 0));
}

int ovl_upper_rmdir(struct ovl_layer *upper, int dirfd, const char *name)
{
	(void)upper;
	return ret(unlinkat(dirfd, name, AT_REMOVEDIR));
}

/* RENAME_EXCHANGE as three renames: new out of the way into work, old to
 * new, then what was new to old. */
static int exchange_by_steps(int olddirfd, const char *old, int newdirfd, const char *new, int workfd,
			     const char *tmp)
{
	struct stat st;
	if (fstatat(olddirfd, old, &st, AT_SYMLINK_NOFOLLOW) < 0 || renameat(newdirfd, new, workfd, tmp) < 0)
		return -errno;
	if (renameat(olddirfd, old, newdirfd, new) < 0) {
		int e = errno;
		renameat(workfd, tmp, newdirfd, new);
		return -e;
	}
	return ret(renameat(workfd, tmp, olddirfd, old));
}

int ovl_upper_rename(struct ovl_layer *upper, int olddirfd, const char *old, int newdirfd, const char *new,
		     unsigned flags, int workfd, const char *tmp)
{
	(void)upper;
	if (flags == 0)
		return ret(renameat(olddirfd, old, newdirfd, new));
	if (renameat2(olddirfd, old, newdirfd, new, flags) == 0)
		return 0;
	/* glibc answers EINVAL for a flag where the kernel has no renameat2 */
	if ((errno != ENOSYS && errno != EINVAL) || (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)))
		return -errno;
	if (flags == RENAME_NOREPLACE) {
		struct stat st;
		if (fstatat(newdirfd, new, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return -EEXIST;
		return ret(renameat(olddirfd, old, newdirfd, new));
	}
	return exchange_by_steps(olddirfd, old, newdirfd, new, workfd, tmp);
}

int ovl_upper_setxattr(struct ovl_layer *upper, int fd, const char *name, const char *xname, const void *value,
		       size_t size, int flags)
{
	return ret(upper->ops->setxattrat(upper, fd, name, xname, value, size, flags));
}

int ovl_upper_removexattr(struct ovl_layer *upper, int fd, const char *name, const char *xname)
{
	return ret(upper->ops->removexattrat(upper, fd, name, xname));
}

int ovl_upper_chown(struct ovl_layer *upper, int fd, const char *name, uid_t uid, gid_t gid)
{
	(void)upper;
	return ret(name ? fchownat(fd, name, uid, gid, AT_SYMLINK_NOFOLLOW) : fchown(fd, uid, gid));
}

int ovl_upper_chmod(struct ovl_layer *upper, int fd, const char *name, mode_t mode)
{
	return ret(name ? upper->ops->chmodat(upper, fd, name, mode) : fchmod(fd, mode));
}

int ovl_upper_utimens(struct ovl_layer *upper, int fd, const char *name, const struct timespec times[2])
{
	(void)upper;
	return ret(name ? utimensat(fd, name, times, AT_SYMLINK_NOFOLLOW) : futimens(fd, times));
}

int ovl_upper_truncate(struct ovl_layer *upper, int fd, const char *name, off_t size)
{
	if (name == NULL)
		return ret(ftruncate(fd, size));
	/* O_NONBLOCK: a fifo by that name must not hang us */
	int wfd = upper->ops->openat(upper, fd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
	if (wfd < 0)
		return -errno;
	int res = ret(ftruncate(wfd, size));
	close(wfd);
	return res;
}

int ovl_upper_fsync(struct ovl_layer *upper, int fd, bool datasync)
{
	(void)upper;
	return ret(datasync ? fdatasync(fd) : fsync(fd));
}

int ovl_upper_writeback(struct ovl_layer *upper, int fd)
{
	(void)upper;
	unsigned how = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
	return ret(sync_file_range(fd, 0, 0, how));
}
