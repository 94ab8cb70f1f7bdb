/* The data-source interface every layer implements (DESIGN.md §2).  A layer
 * hands out int handles for the objects it opens; a directory layer's handle
 * is the fd itself, so the core's "fd"s of a layer are handles.  Calls act on
 * one name below a directory handle (or, name NULL, on the handle's own
 * object): no symlink is ever followed below the layer root.  Errors: -1 and
 * errno, as the syscalls they stand for. */
#ifndef OVL_LAYER_H
#define OVL_LAYER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct ovl_layer;

/* What a layer can do beyond its ops (ovl_layer.caps); the core uses a fast
 * path only where its layer says so. */
enum {
	/* Handles are fds of the objects: passthrough backing files, splice,
	 * FICLONE, copy_file_range, lseek and ioctl work on them. */
	OVL_LAYER_REAL_FDS = 1 << 0,
	/* st_ino names an object across mounts: a copy-up records it as the origin. */
	OVL_LAYER_STABLE_INO = 1 << 1,
};

/* One entry of a listing (type: DT_*); nonzero stops the pass. */
typedef int (*ovl_list_fn)(void *arg, const char *name, uint8_t type, ino_t ino);

struct ovl_layer_ops {
	/* Opens name below dirfd, "." for dirfd itself; never follows a symlink.
	 * A handle, to be closed by close. */
	int (*openat)(struct ovl_layer *l, int dirfd, const char *name, int flags, mode_t mode);
	int (*close)(struct ovl_layer *l, int h);
	/* name NULL or "": the object of dirfd itself. */
	int (*statat)(struct ovl_layer *l, int dirfd, const char *name, struct stat *st);
	/* Passes each entry of directory h once, in the layer's own order ("."
	 * and ".." may be among them), with type and inode number as stored, no
	 * call per entry; h is opened for the pass (its position is its own).
	 * 0 at the end, fn's nonzero answer, or -1 with errno (as plugin.h). */
	int (*list)(struct ovl_layer *l, int h, ovl_list_fn fn, void *arg);
	/* Up to size bytes of the open file h at off; fewer only at its end. */
	ssize_t (*read)(struct ovl_layer *l, int h, void *buf, size_t size, off_t off);
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
	char *path;          /* resolved root, for messages (malloc'ed) */
	int root_fd;         /* handle of the root, closed with the mount */
	dev_t dev;
	uint32_t caps;       /* OVL_LAYER_* */
	uint32_t fsid;       /* index among the distinct st_dev of all layers */
	bool is_upper;
	uint8_t override_kind; /* enum ovl_override_kind: where stat overrides are kept */
	atomic_bool no_clone; /* FICLONE from here to the upper failed for want of support */
	const struct ovl_layer_ops *ops;
	void *data;          /* the layer's own */
};

/* layers/direct.c: layers that are plain directories */
extern const struct ovl_layer_ops ovl_direct_layer_ops;
/* Chooses, once, between the newer syscalls and their fallbacks. */
void ovl_direct_probe_syscalls(void);
/* For tests and messages: which calls are in use. */
bool ovl_direct_has_openat2(void);
bool ovl_direct_has_xattrat(void);
bool ovl_direct_has_fchmodat2(void);
/* Makes l the directory at path (which may itself be a symlink); -errno. */
int ovl_direct_layer_open(struct ovl_layer *l, const char *path);

/* layer.c */
/* An xattr list (xname NULL) or value of h/name in layer l (name NULL: h),
 * NUL-terminated, in small, or, too big for it, in *big (malloc'ed; free
 * it).  Its length, with *data, or -1 with errno. */
ssize_t ovl_layer_xattr(struct ovl_layer *l, int h, const char *name, const char *xname, char *small, size_t small_size,
			char **big, char **data);

#endif
