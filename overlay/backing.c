/* A node's backing object: where it is (ovl_node_at), and its attributes as
 * stored and as the merged view shows them: st_ino and st_nlink as the
 * kernel overlay shows them (ino.c), overrides, owners mapped or squashed. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>

#include "ops.h"

void ovl_present_stat(struct ovl_fs *fs, uint32_t layer, uint32_t nlayers, struct stat *st)
{
	const struct ovl_config *cfg = fs->cfg;
	st->st_ino = ovl_st_ino(fs, layer, st->st_ino);
	/* The kernel reports 1 for a directory merged from several layers. */
	if (S_ISDIR(st->st_mode) && (nlayers > 1 || cfg->static_nlink))
		st->st_nlink = 1;
	st->st_uid = ovl_idmap_shown(&cfg->uidmap, st->st_uid);
	st->st_gid = ovl_idmap_shown(&cfg->gidmap, st->st_gid);
	if (cfg->squash_to_root)
		st->st_uid = st->st_gid = 0;
	if (cfg->squash_to_uid >= 0)
		st->st_uid = (uid_t)cfg->squash_to_uid;
	if (cfg->squash_to_gid >= 0)
		st->st_gid = (gid_t)cfg->squash_to_gid;
}

void ovl_node_present(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	struct ovl_override o;
	/* the override is of the object as stored: owners are mapped after it */
	if (ovl_node_get_override(fs, node, &o))
		ovl_override_apply(&o, st);
	ovl_present_stat(fs, node->layer, node->dir ? node->dir->nlayers : 1, st);
	if (node->origin_ino)
		st->st_ino = node->origin_ino;
}

int ovl_node_at(struct ovl_fs *fs, struct ovl_node *node, ovl_at_fn fn, void *arg)
{
	struct ovl_node *parent = node->parent;
	if (node->unlinked)
		return -ENOENT;
	int pos = ovl_dir_layer_pos(parent->dir, node->layer);
	if (pos < 0)
		return -EIO;
	int pfd = ovl_dir_fd_get(fs, parent, (uint32_t)pos);
	if (pfd < 0)
		return pfd;
	struct stat st;
	/* a detached node has no part in lookups and renames: its copy may have
	 * moved away or been removed since (then its files' calls answer ESTALE) */
	if (node->detached && (fstatat(pfd, node->name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_ino != node->ino ||
			       st.st_dev != node->dev)) {
		ovl_dir_fd_put(parent);
		return -ESTALE;
	}
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
	int orphan_fd = ovl_node_orphan_fd(node);
	if (orphan_fd >= 0) {
		res = fstat(orphan_fd, st) < 0 ? -errno : 0;
	} else if (node->dir) {
		struct ovl_layer *top = &fs->layers[node->dir->layers[0]];
		int fd = ovl_dir_fd_get(fs, node, 0);
		if (fd < 0)
			return fd;
		res = top->ops->statat(top, fd, NULL, st) < 0 ? -errno : 0;
		ovl_dir_fd_put(node);
	} else {
		res = ovl_node_at(fs, node, stat_cb, st);
	}
	if (res == 0)
		ovl_node_present(fs, node, st);
	return res;
}
