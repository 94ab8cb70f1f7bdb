/* What an open file's fh holds (file.c makes it at open), and the fd that a
 * call on a node, through its open file or not, works on (inode.c, file.c). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "handles.h"
#include "ops.h"

int ovl_file_fd(const struct fuse_file_info *fi)
{
	return (int)(uint32_t)fi->fh;
}

struct ovl_layer *ovl_file_layer(struct ovl_fs *fs, const struct fuse_file_info *fi)
{
	return &fs->layers[fi->fh >> FH_LAYER_SHIFT];
}

/* Whether the file's handle is an fd the fd calls work on. */
bool ovl_file_is_fd(struct ovl_fs *fs, const struct fuse_file_info *fi)
{
	return ovl_file_layer(fs, fi)->caps & OVL_LAYER_REAL_FDS;
}

struct reopen_call {
	struct ovl_fs *fs;
	int fd;
};

static int reopen_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct reopen_call *c = arg;
	if (!(layer->caps & OVL_LAYER_REAL_FDS))
		return -EXDEV;
	c->fd = ovl_layer_open(c->fs, layer, dirfd, name, O_RDONLY | O_NONBLOCK);
	return c->fd < 0 ? -errno : 0;
}

int ovl_file_fd_get(struct ovl_fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi, int *reopened)
{
	*reopened = -1;
	if (fi && ovl_file_fd(fi) >= 0)
		return ovl_file_is_fd(fs, fi) ? ovl_file_fd(fi) : -EXDEV;
	struct ovl_node *n = ovl_node_get(fs, ino);
	if (n == NULL)
		return -ESTALE;
	int orphan = ovl_node_orphan_fd(n), res;
	if (orphan >= 0) {
		char path[32];
		snprintf(path, sizeof path, "/proc/self/fd/%d", orphan);
		/* layering-ok: our own O_PATH fd of an unlinked upper object, by its magic link */
		res = (*reopened = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 ? -errno : 0;
	} else {
		struct reopen_call c = { .fs = fs, .fd = -1 };
		struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
		res = ovl_node_at(fs, n, reopen_cb, &c);
		ovl_ns_unlock(fs, dir);
		*reopened = c.fd;
	}
	return res < 0 ? res : *reopened;
}
