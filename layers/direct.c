/* Layers that are plain directories.  Every call works on one name below a
 * directory fd and refuses to follow symlinks.  The newer syscalls (openat2,
 * *xattrat, fchmodat2) are probed once; the fallbacks are chosen for kernels without them
 * and are exercised by tests/integration under a seccomp filter. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "layer.h"
#include "syscall_nr.h"

struct ovl_xattr_args {
	uint64_t value;
	uint32_t size;
	uint32_t flags;
};

static bool have_openat2;
static bool have_xattrat;
static bool have_fchmodat2;

static bool name_is_single_component(const char *name)
{
	return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, "..") != 0;
}

void ovl_direct_probe_syscalls(void)
{
	struct open_how how = { .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
	int fd = syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how);
	have_openat2 = fd >= 0 || errno != ENOSYS;
	if (fd >= 0)
		close(fd);

	char buf[1];
	long r = syscall(SYS_listxattrat, AT_FDCWD, "/", AT_SYMLINK_NOFOLLOW, buf, 0);
	have_xattrat = r >= 0 || (errno != ENOSYS && errno != EPERM);

	/* an invalid mode bit: changes nothing, fails with EINVAL where the call exists */
	r = syscall(SYS_fchmodat2, AT_FDCWD, "/", (mode_t)-1, ~0);
	have_fchmodat2 = r >= 0 || (errno != ENOSYS && errno != EPERM);
}

bool ovl_direct_has_fchmodat2(void)
{
	return have_fchmodat2;
}

bool ovl_direct_has_openat2(void)
{
	return have_openat2;
}

bool ovl_direct_has_xattrat(void)
{
	return have_xattrat;
}

static int openat_beneath(int dirfd, const char *name, int flags, mode_t mode)
{
	if (!name_is_single_component(name) && strcmp(name, ".") != 0) {
		errno = EINVAL;
		return -1;
	}
	/* Only open(2)'s own flags: FUSE passes the kernel's internal ones too (an open
	 * for exec carries __FMODE_EXEC), which openat2 refuses with EINVAL. */
	flags &= O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC |
		 O_SYNC | O_ASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME |
		 O_CLOEXEC | O_PATH | O_TMPFILE;
	flags |= O_CLOEXEC | O_NOFOLLOW;
	if (have_openat2) {
		struct open_how how = { .flags = (uint64_t)flags,
					.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
					.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
		int fd;
		do
			fd = syscall(SYS_openat2, dirfd, name, &how, sizeof how);
		while (fd < 0 && errno == EAGAIN);
		return fd;
	}
	/* One component with O_NOFOLLOW: nothing else can be traversed. */
	return openat(dirfd, name, flags, mode);
}

/* As the kernel overlay: reading through the mount never changes a lower's atime. */
static int direct_openat(struct ovl_layer *l, int dirfd, const char *name, int flags, mode_t mode)
{
	if (!l->is_upper && (flags & O_ACCMODE) == O_RDONLY && !(flags & O_PATH)) {
		int fd = openat_beneath(dirfd, name, flags | O_NOATIME, mode);
		/* O_NOATIME needs ownership or CAP_FOWNER: else open as any reader would */
		if (fd >= 0 || errno != EPERM)
			return fd;
	}
	return openat_beneath(dirfd, name, flags, mode);
}

static int direct_close(struct ovl_layer *l, int h)
{
	(void)l;
	return close(h);
}

/* A big directory in few calls (100k entries in about 60), from a buffer on
 * the heap: fn may list another directory (the workdir is emptied
 * recursively) on a thread with a small stack. */
#define LIST_BUF_SIZE (64 * 1024)

static int direct_list(struct ovl_layer *l, int h, ovl_list_fn fn, void *arg)
{
	(void)l;
	char *buf = malloc(LIST_BUF_SIZE);
	if (buf == NULL)
		return -1;
	int res = 0;
	ssize_t len = 0;
	while (res == 0 && (len = getdents64(h, buf, LIST_BUF_SIZE)) > 0) {
		for (ssize_t off = 0; off < len && res == 0;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			off += d->d_reclen;
			res = fn(arg, d->d_name, d->d_type, d->d_ino);
		}
	}
	int e = errno;
	free(buf);
	errno = e;
	return res ? res : len < 0 ? -1 : 0;
}

static int direct_statat(struct ovl_layer *l, int dirfd, const char *name, struct stat *st)
{
	(void)l;
	if (name == NULL || name[0] == '\0')
		return fstat(dirfd, st);
	return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW);
}

static ssize_t direct_readlinkat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	(void)l;
	return readlinkat(dirfd, name, buf, size);
}

static void proc_path(char *out, size_t len, int dirfd, const char *name)
{
	if (name)
		snprintf(out, len, "/proc/self/fd/%d/%s", dirfd, name);
	else
		snprintf(out, len, "/proc/self/fd/%d", dirfd);
}

static ssize_t direct_getxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, void *buf,
				 size_t size)
{
	(void)l;
	if (name == NULL)
		return fgetxattr(dirfd, xname, buf, size);
	if (have_xattrat) {
		struct ovl_xattr_args args = { .value = (uintptr_t)buf, .size = (uint32_t)size };
		return syscall(SYS_getxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, xname, &args, sizeof args);
	}
	char path[PATH_MAX + 32];
	proc_path(path, sizeof path, dirfd, name);
	return lgetxattr(path, xname, buf, size);
}

static ssize_t direct_listxattrat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	(void)l;
	if (name == NULL)
		return flistxattr(dirfd, buf, size);
	if (have_xattrat)
		return syscall(SYS_listxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, buf, size);
	char path[PATH_MAX + 32];
	proc_path(path, sizeof path, dirfd, name);
	return llistxattr(path, buf, size);
}

static int direct_setxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, const void *value,
			     size_t size, int flags)
{
	(void)l;
	if (name == NULL)
		return fsetxattr(dirfd, xname, value, size, flags);
	if (have_xattrat) {
		struct ovl_xattr_args args = { .value = (uintptr_t)value, .size = (uint32_t)size, .flags = (uint32_t)flags };
		return syscall(SYS_setxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, xname, &args, sizeof args);
	}
	char path[PATH_MAX + 32];
	proc_path(path, sizeof path, dirfd, name);
	return lsetxattr(path, xname, value, size, flags);
}

static int direct_removexattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname)
{
	(void)l;
	if (name == NULL)
		return fremovexattr(dirfd, xname);
	if (have_xattrat)
		return syscall(SYS_removexattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, xname);
	char path[PATH_MAX + 32];
	proc_path(path, sizeof path, dirfd, name);
	return lremovexattr(path, xname);
}

static int direct_chmodat(struct ovl_layer *l, int dirfd, const char *name, mode_t mode)
{
	(void)l;
	if (have_fchmodat2)
		return syscall(SYS_fchmodat2, dirfd, name, mode, AT_SYMLINK_NOFOLLOW);
	/* fchmodat would follow a symlink: make sure name is none (under the
	 * caller's namespace lock nothing of ours replaces it meanwhile) */
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	if (S_ISLNK(st.st_mode)) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return fchmodat(dirfd, name, mode, 0);
}

static ssize_t direct_read(struct ovl_layer *l, int h, void *buf, size_t size, off_t off)
{
	(void)l;
	return pread(h, buf, size, off);
}

static int direct_statfs(struct ovl_layer *l, struct statvfs *st)
{
	return fstatvfs(l->root_fd, st);
}

int ovl_direct_layer_open(struct ovl_layer *l, const char *path)
{
	/* Roots may be symlinks (containers/storage's l/SHORT links): resolve once here. */
	struct stat st;
	char *real = realpath(path, NULL);
	int fd = real ? open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		free(real);
		return -e;
	}
	l->ops = &ovl_direct_layer_ops;
	l->caps = OVL_LAYER_REAL_FDS | OVL_LAYER_STABLE_INO;
	l->path = real;
	l->root_fd = fd;
	l->dev = st.st_dev;
	return 0;
}

const struct ovl_layer_ops ovl_direct_layer_ops = {
	.openat = direct_openat,
	.close = direct_close,
	.list = direct_list,
	.read = direct_read,
	.statat = direct_statat,
	.readlinkat = direct_readlinkat,
	.getxattrat = direct_getxattrat,
	.listxattrat = direct_listxattrat,
	.chmodat = direct_chmodat,
	.setxattrat = direct_setxattrat,
	.removexattrat = direct_removexattrat,
	.statfs = direct_statfs,
};
