/* Every change made in the upper layer and its workdir (the kernel overlay's
 * ovl_do_* wrappers): one call per kind of change, so that how we change
 * upper (no symlink followed, which fallback on which kernel) is decided
 * here once.  What to change, and in which format (whiteouts, opaque marks,
 * origins), is the overlay core's.
 *
 * Each call acts on one name below a directory fd of the upper filesystem
 * (upper or work); where name may be NULL it acts on fd itself, an open fd
 * of the object.  Returns 0 (create and open: the new fd) or -errno; errno
 * is not to be relied on afterwards. */
#ifndef OVL_UPPER_H
#define OVL_UPPER_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "layer.h"

/* A new regular file, opened with flags (access mode, O_APPEND...): O_CREAT,
 * O_EXCL, O_NOFOLLOW and O_CLOEXEC are added. */
int ovl_upper_create(struct ovl_layer *upper, int dirfd, const char *name, int flags, mode_t mode);
/* An empty regular file at name, one that is there already kept (the body
 * of a .wh. whiteout, whose name and mode the caller chooses). */
int ovl_upper_touch(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode);
/* An existing object opened for writing (flags with O_WRONLY, O_RDWR or O_TRUNC). */
int ovl_upper_open(struct ovl_layer *upper, int dirfd, const char *name, int flags);
int ovl_upper_mkdir(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode);
int ovl_upper_mknod(struct ovl_layer *upper, int dirfd, const char *name, mode_t mode, dev_t rdev);
/* The kernel's whiteout inode, a char 0/0 device (the kernel's ovl_do_whiteout). */
int ovl_upper_whiteout(struct ovl_layer *upper, int dirfd, const char *name);
int ovl_upper_symlink(struct ovl_layer *upper, int dirfd, const char *name, const char *target);
/* A new name for old (a symlink is linked itself, not its target). */
int ovl_upper_link(struct ovl_layer *upper, int olddirfd, const char *old, int newdirfd, const char *new);
int ovl_upper_unlink(struct ovl_layer *upper, int dirfd, const char *name);
int ovl_upper_rmdir(struct ovl_layer *upper, int dirfd, const char *name);
/* renameat2.  Where the kernel or the filesystem lacks a flag,
 * RENAME_NOREPLACE looks first (the caller's lock makes that atomic: only we
 * change upper) and RENAME_EXCHANGE is three renames through workfd/tmp, a
 * free name in work (not atomic there).  RENAME_WHITEOUT has no stand-in
 * here: -EINVAL or -ENOSYS, and the caller writes the whiteout in its format. */
int ovl_upper_rename(struct ovl_layer *upper, int olddirfd, const char *old, int newdirfd, const char *new,
		     unsigned flags, int workfd, const char *tmp);
int ovl_upper_setxattr(struct ovl_layer *upper, int fd, const char *name, const char *xname, const void *value,
		       size_t size, int flags);
int ovl_upper_removexattr(struct ovl_layer *upper, int fd, const char *name, const char *xname);
/* uid or gid (uid_t)-1 / (gid_t)-1: unchanged. */
int ovl_upper_chown(struct ovl_layer *upper, int fd, const char *name, uid_t uid, gid_t gid);
/* -EOPNOTSUPP for a symlink by name. */
int ovl_upper_chmod(struct ovl_layer *upper, int fd, const char *name, mode_t mode);
int ovl_upper_utimens(struct ovl_layer *upper, int fd, const char *name, const struct timespec times[2]);
int ovl_upper_truncate(struct ovl_layer *upper, int fd, const char *name, off_t size);
/* fsync (fdatasync if datasync) of an open fd. */
int ovl_upper_fsync(struct ovl_layer *upper, int fd, bool datasync);
/* Writes fd's dirty data back and waits for it, without fsync's journal
 * commit (copyup.c's make_data_crash_safe says when that is enough). */
int ovl_upper_writeback(struct ovl_layer *upper, int fd);

#endif
