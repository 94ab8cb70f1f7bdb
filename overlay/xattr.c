/* Extended attributes as stored in the top layer holding the object, with the
 * overlay's own names hidden (COMPAT.md).  POSIX ACLs pass through as stored. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/limits.h>

#include "../layers/upper.h"
#include "ops.h"

size_t ovl_xattr_filter_list(char *list, size_t len)
{
	size_t out = 0;
	for (size_t off = 0; off < len;) {
		size_t n = strnlen(list + off, len - off);
		if (off + n == len)
			break; /* unterminated tail: drop it */
		if (!ovl_xattr_is_internal(list + off)) {
			memmove(list + out, list + off, n + 1);
			out += n + 1;
		}
		off += n + 1;
	}
	return out;
}

struct xattr_call {
	const char *xname; /* NULL: list */
	char *buf;
	size_t size;
	ssize_t len;
};

static int xattr_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct xattr_call *c = arg;
	c->len = c->xname ? layer->ops->getxattrat(layer, dirfd, name, c->xname, c->buf, c->size)
			  : layer->ops->listxattrat(layer, dirfd, name, c->buf, c->size);
	return c->len < 0 ? -errno : 0;
}

static int node_xattr(struct ovl_fs *fs, struct ovl_node *node, struct xattr_call *c)
{
	int res;
	struct ovl_node *dir = ovl_ns_lock_place(fs, node, false);
	if (node->dir == NULL) {
		res = ovl_node_at(fs, node, xattr_cb, c);
	} else {
		int fd = ovl_dir_fd_get(fs, node, 0);
		res = fd < 0 ? fd : xattr_cb(&fs->layers[node->layer], fd, NULL, c);
		if (fd >= 0)
			ovl_dir_fd_put(node);
	}
	ovl_ns_unlock(fs, dir);
	return res;
}

static struct ovl_node *xattr_node(fuse_req_t req, fuse_ino_t ino)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(fs, ino);
	if (fs->cfg->noxattrs)
		fuse_reply_err(req, ENOSYS);
	else if (n == NULL)
		fuse_reply_err(req, ESTALE);
	else
		return n;
	return NULL;
}

static void reply_sized(fuse_req_t req, const char *buf, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, len);
}

/* Values that hold ids to map: POSIX ACLs (always checked: the kernel
 * trusts what we answer) and file capabilities under a uid mapping. */
static bool xattr_has_ids(const struct ovl_config *cfg, const char *name)
{
	return ovl_xattr_is_acl(name) || (cfg->uidmap.n > 0 && strcmp(name, "security.capability") == 0);
}

/* Rewrites the ids inside an xattr value between disk and the mount's view. */
static int map_xattr_ids(const struct ovl_config *cfg, const char *name, void *value, size_t len, bool to_disk)
{
	if (ovl_xattr_is_acl(name))
		return ovl_idmap_acl(&cfg->uidmap, &cfg->gidmap, value, len, to_disk);
	return ovl_idmap_caps(&cfg->uidmap, value, len, to_disk);
}

void ovl_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = xattr_node(req, ino);
	if (n == NULL)
		return;
	char stored[XATTR_NAME_MAX + 1];
	const char *xname = ovl_override_stored_xattr(&fs->layers[n->layer], name, stored, sizeof stored);
	if (xname == NULL || ovl_xattr_is_internal(name) || ovl_override_xattr_name(name)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	/* a value holding ids is read whole even for a size query: it is
	 * checked (a layer's may be malformed) before anything is told of it */
	bool has_ids = xattr_has_ids(fs->cfg, name);
	struct xattr_call c = { .xname = xname, .size = has_ids ? XATTR_SIZE_MAX : size };
	if (c.size && (c.buf = malloc(c.size)) == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int res = node_xattr(fs, n, &c);
	if (res == 0 && has_ids && map_xattr_ids(fs->cfg, name, c.buf, (size_t)c.len, false) < 0) {
		ovl_log_once(&fs->logged_bad_xattr, OVL_WARN, "%s of '%s': malformed in its layer, taken as absent",
			     name, n->name ? n->name : "/");
		res = -ENODATA;
	}
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		reply_sized(req, c.buf, (size_t)c.len, size);
	free(c.buf);
}

/* Filters a stored xattr list to what the mount shows of layer l. */
static size_t shown_list(const struct ovl_layer *l, char *list, size_t len)
{
	size_t out = 0;
	len = ovl_xattr_filter_list(list, len);
	for (size_t off = 0; off < len;) {
		size_t n = strlen(list + off);
		const char *shown = ovl_override_shown_xattr(l, list + off);
		if (shown) {
			size_t sn = strlen(shown);
			memmove(list + out, shown, sn + 1);
			out += sn + 1;
		}
		off += n + 1;
	}
	return out;
}

void ovl_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ovl_node *n = xattr_node(req, ino);
	if (n == NULL)
		return;
	/* The full list is needed even for a size query: hidden names are not counted. */
	struct xattr_call c = { 0 };
	int res;
	for (;;) {
		c.size = 0;
		c.buf = NULL;
		res = node_xattr(ovl_fs_of(req), n, &c);
		if (res < 0 || c.len == 0)
			break;
		c.size = (size_t)c.len;
		if ((c.buf = malloc(c.size)) == NULL) {
			res = -ENOMEM;
			break;
		}
		res = node_xattr(ovl_fs_of(req), n, &c);
		if (res != -ERANGE)
			break;
		free(c.buf); /* grew in between: ask again */
	}
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		reply_sized(req, c.buf, c.buf ? shown_list(&ovl_fs_of(req)->layers[n->layer], c.buf, (size_t)c.len) : 0,
			    size);
	free(c.buf);
}

struct xattr_change {
	const char *xname;
	const void *value; /* NULL: remove */
	size_t size;
	int flags;
};

static int change_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct xattr_change *c = arg;
	return c->value ? ovl_upper_setxattr(layer, dirfd, name, c->xname, c->value, c->size, c->flags)
			: ovl_upper_removexattr(layer, dirfd, name, c->xname);
}

/* Sets or removes an xattr on the upper copy of the node. */
static void change_xattr(fuse_req_t req, fuse_ino_t ino, struct xattr_change *c)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = xattr_node(req, ino);
	if (n == NULL)
		return;
	char stored[XATTR_NAME_MAX + 1];
	const char *asked = c->xname;
	if (ovl_xattr_is_internal(asked) || ovl_override_xattr_name(asked)) {
		fuse_reply_err(req, c->value ? EPERM : ENODATA);
		return;
	}
	if ((c->xname = ovl_override_stored_xattr(&fs->layers[0], asked, stored, sizeof stored)) == NULL) {
		fuse_reply_err(req, ERANGE);
		return;
	}
	int res = ovl_copy_up_in_place(fs, n, true);
	if (res == 0) {
		struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
		if (n->dir) {
			int fd = ovl_dir_fd_get(fs, n, 0);
			res = fd < 0 ? fd : change_cb(&fs->layers[0], fd, NULL, c);
			if (fd >= 0)
				ovl_dir_fd_put(n);
		} else {
			res = ovl_node_at(fs, n, change_cb, c);
		}
		ovl_ns_unlock(fs, dir);
	}
	fuse_reply_err(req, -res);
}

void ovl_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	struct xattr_change c = { .xname = name, .value = value ? value : "", .size = size, .flags = flags };
	void *mapped = NULL;
	if (xattr_has_ids(ovl_fs_of(req)->cfg, name) && size > 0) {
		if ((mapped = malloc(size)) == NULL) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		memcpy(mapped, value, size);
		if (map_xattr_ids(ovl_fs_of(req)->cfg, name, mapped, size, true) < 0) {
			free(mapped);
			fuse_reply_err(req, EINVAL);
			return;
		}
		c.value = mapped;
	}
	change_xattr(req, ino, &c);
	free(mapped);
}

void ovl_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct xattr_change c = { .xname = name };
	change_xattr(req, ino, &c);
}
