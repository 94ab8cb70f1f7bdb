/* Attributes as the merged view shows them: st_ino and st_nlink policy
 * (following the kernel overlay), owner squashing, readlink and statfs. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "ops.h"

ino_t ovl_st_ino(const struct ovl_fs *fs, uint32_t layer, ino_t ino)
{
	if (fs->xino_bits == 0)
		return ino;
	/* Layers on several filesystems: the filesystem's index in the high bits,
	 * as the kernel's xino does, so numbers stay unique and stable. */
	unsigned shift = 64 - fs->xino_bits;
	uint64_t low = (uint64_t)ino & ((UINT64_C(1) << shift) - 1);
	return (ino_t)(low | ((uint64_t)fs->layers[layer].fsid << shift));
}

void ovl_present_stat(struct ovl_fs *fs, uint32_t layer, uint32_t nlayers, struct stat *st)
{
	const struct ovl_config *cfg = fs->cfg;
	st->st_ino = ovl_st_ino(fs, layer, st->st_ino);
	/* The kernel reports 1 for a directory merged from several layers. */
	if (S_ISDIR(st->st_mode) && (nlayers > 1 || cfg->static_nlink))
		st->st_nlink = 1;
	if (cfg->squash_to_root)
		st->st_uid = st->st_gid = 0;
	if (cfg->squash_to_uid >= 0)
		st->st_uid = (uid_t)cfg->squash_to_uid;
	if (cfg->squash_to_gid >= 0)
		st->st_gid = (gid_t)cfg->squash_to_gid;
}

int ovl_node_at(struct ovl_fs *fs, struct ovl_node *node, ovl_at_fn fn, void *arg)
{
	struct ovl_node *parent = node->parent;
	int pos = ovl_dir_layer_pos(parent->dir, node->layer);
	if (pos < 0)
		return -EIO;
	int pfd = ovl_dir_fd_get(fs, parent, (uint32_t)pos);
	if (pfd < 0)
		return pfd;
	int res = fn(&fs->layers[node->layer], pfd, node->name, arg);
	ovl_dir_fd_put(parent);
	return res;
}

static int stat_cb(struct ovl_layer *layer, int pfd, const char *name, void *arg)
{
	return layer->ops->statat(layer, pfd, name, arg) < 0 ? -errno : 0;
}

int ovl_node_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	int res;
	uint32_t nlayers = 1;
	if (node->dir) {
		int fd = ovl_dir_fd_get(fs, node, 0);
		if (fd < 0)
			return fd;
		res = fstat(fd, st) < 0 ? -errno : 0;
		ovl_dir_fd_put(node);
		nlayers = node->dir->nlayers;
	} else {
		res = ovl_node_at(fs, node, stat_cb, st);
	}
	if (res == 0)
		ovl_present_stat(fs, node->layer, nlayers, st);
	return res;
}

void ovl_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(ino);
	struct stat st;
	(void)fi;
	if (n == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	int res = ovl_node_stat(fs, n, &st);
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

void ovl_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	(void)ino;
	(void)attr;
	(void)to_set;
	(void)fi;
	fuse_reply_err(req, EROFS); /* writes arrive with the writable-overlay issue */
}

struct link_buf {
	char target[PATH_MAX + 1];
	ssize_t len;
};

static int readlink_cb(struct ovl_layer *layer, int pfd, const char *name, void *arg)
{
	struct link_buf *b = arg;
	b->len = layer->ops->readlinkat(layer, pfd, name, b->target, sizeof b->target - 1);
	return b->len < 0 ? -errno : 0;
}

void ovl_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ovl_node *n = ovl_node_get(ino);
	struct link_buf b;
	if (n == NULL || n->dir) {
		fuse_reply_err(req, n ? EINVAL : ESTALE);
		return;
	}
	int res = ovl_node_at(ovl_fs_of(req), n, readlink_cb, &b);
	if (res < 0) {
		fuse_reply_err(req, -res);
		return;
	}
	b.target[b.len] = '\0';
	fuse_reply_readlink(req, b.target);
}

void ovl_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct statvfs st;
	(void)ino;
	if (fs->layers[0].ops->statfs(&fs->layers[0], &st) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_statfs(req, &st);
}
