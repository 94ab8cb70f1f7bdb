/* The data-source interface every layer implements.  All calls are relative
 * to a directory fd of the layer and act on a single name: no symlink is ever
 * followed below the layer root. */
#ifndef OVL_LAYER_H
#define OVL_LAYER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct ovl_layer;

struct ovl_layer_ops {
	/* Opens name below dirfd; never follows a symlink. */
	int (*openat)(struct ovl_layer *l, int dirfd, const char *name, int flags, mode_t mode);
	int (*statat)(struct ovl_layer *l, int dirfd, const char *name, struct stat *st);
	ssize_t (*readlinkat)(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size);
	/* xattrs of name below dirfd without opening it (it may be a fifo or a symlink);
	 * name NULL means dirfd itself. */
	ssize_t (*getxattrat)(struct ovl_layer *l, int dirfd, const char *name, const char *xname, void *buf,
			      size_t size);
	ssize_t (*listxattrat)(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size);
	/* Changes, for the upper layer. */
	int (*setxattrat)(struct ovl_layer *l, int dirfd, const char *name, const char *xname, const void *value,
			  size_t size, int flags);
	int (*removexattrat)(struct ovl_layer *l, int dirfd, const char *name, const char *xname);
	/* chmod of name below dirfd; EOPNOTSUPP for a symlink, which is never followed. */
	int (*chmodat)(struct ovl_layer *l, int dirfd, const char *name, mode_t mode);
	int (*statfs)(struct ovl_layer *l, struct statvfs *st);
};

struct ovl_layer {
	uint32_t index;
	char *path;          /* resolved root, for messages */
	int root_fd;
	dev_t dev;
	uint32_t fsid;       /* index among the distinct st_dev of all layers */
	bool is_upper;
	uint8_t override_kind; /* enum ovl_override_kind: where stat overrides are kept */
	atomic_bool no_clone; /* FICLONE from here to the upper failed for want of support */
	const struct ovl_layer_ops *ops;
};

/* layers/direct.c: layers that are plain directories */
extern const struct ovl_layer_ops ovl_direct_layer_ops;
/* Chooses, once, between the newer syscalls and their fallbacks. */
void ovl_direct_probe_syscalls(void);
/* For tests and messages: which calls are in use. */
bool ovl_direct_has_openat2(void);
bool ovl_direct_has_xattrat(void);
bool ovl_direct_has_fchmodat2(void);
/* Opens a layer root (which may itself be a symlink) as a directory fd. */
int ovl_direct_open_root(const char *path, char **resolved);

#endif
