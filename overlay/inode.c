/* GETATTR, SETATTR, READLINK and STATFS (what a node's object shows is
 * backing.c's). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "../fuse/transport.h"
#include "../layers/upper.h"
#include "ops.h"

/* The attributes of node, through its open file if there is one (it may
 * have no name left). */
static int stat_node_or_file(struct ovl_fs *fs, struct ovl_node *n, struct fuse_file_info *fi, struct stat *st)
{
	/* a detached node's files are of the lower object: its copy is by name */
	if (fi == NULL || n->dir || n->detached || ovl_file_fd(fi) < 0) {
		struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
		int res = ovl_node_stat(fs, n, st);
		ovl_ns_unlock(fs, dir);
		return res;
	}
	struct ovl_layer *layer = ovl_file_layer(fs, fi);
	if (layer->ops->statat(layer, ovl_file_fd(fi), NULL, st) < 0)
		return -errno;
	ovl_node_present(fs, n, st);
	return 0;
}

void ovl_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_req_node(req, ino);
	struct stat st;
	if (n == NULL)
		return;
	int res = stat_node_or_file(fs, n, fi, &st);
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

struct setattr_call {
	struct ovl_fs *fs;
	struct ovl_node *node;
	const struct stat *attr;     /* owners as stored on disk */
	int to_set;
	int fd; /* an open file of the object, or -1 */
	bool chown_may_fail;         /* squash_*: as 1.10, a chown that fails is no error */
};

/* xattr_permissions: a file's or directory's owner and mode change in its
 * override, not in the inode; *to_set loses what was done. */
static int setattr_override(struct setattr_call *c, int dirfd, const char *name, int *to_set)
{
	const int owner_mode = FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_MODE;
	struct stat st;
	struct ovl_override o;
	if (!(*to_set & owner_mode) || c->fs->layers[0].override_kind == OVL_OVERRIDE_NONE ||
	    (!S_ISREG(c->node->type) && !S_ISDIR(c->node->type)))
		return 0;
	if (!ovl_node_get_override(c->fs, c->node, &o)) {
		if ((c->fd >= 0 ? fstat(c->fd, &st) : fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)) < 0)
			return -errno;
		o = (struct ovl_override){ .uid = st.st_uid, .gid = st.st_gid, .mode = st.st_mode };
	}
	if (*to_set & FUSE_SET_ATTR_UID)
		o.uid = c->attr->st_uid;
	if (*to_set & FUSE_SET_ATTR_GID)
		o.gid = c->attr->st_gid;
	if (*to_set & FUSE_SET_ATTR_MODE)
		o.mode = (o.mode & S_IFMT) | (c->attr->st_mode & 07777);
	int res = c->fd >= 0 ? ovl_override_write(c->fs, c->fd, NULL, &o) : ovl_override_write(c->fs, dirfd, name, &o);
	if (res < 0)
		return res;
	ovl_node_set_override(c->fs, c->node, &o);
	*to_set &= ~owner_mode;
	return 0;
}

static int setattr_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct setattr_call *c = arg;
	const struct stat *a = c->attr;
	int to_set = c->to_set;
	int res = setattr_override(c, dirfd, name, &to_set);
	if (res < 0)
		return res;
	/* by fd where there is one; else by name */
	int fd = c->fd >= 0 ? c->fd : dirfd;
	const char *at = c->fd >= 0 ? NULL : name;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? a->st_uid : (uid_t)-1;
		gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? a->st_gid : (gid_t)-1;
		if ((res = ovl_upper_chown(layer, fd, at, uid, gid)) < 0 && !c->chown_may_fail)
			return res;
	}
	if ((to_set & FUSE_SET_ATTR_MODE) && (res = ovl_upper_chmod(layer, fd, at, a->st_mode & 07777)) < 0)
		return res;
	if ((to_set & FUSE_SET_ATTR_SIZE) && (res = ovl_upper_truncate(layer, fd, at, a->st_size)) < 0)
		return res;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = a->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = a->st_mtim;
		return ovl_upper_utimens(layer, fd, at, ts);
	}
	return 0;
}

/* What a SETATTR can set; one that sets none of it comes from a write that
 * found privileges to drop (killpriv.c). */
#define SETTABLE                                                                                                \
	(FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME |      \
	 FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)

/* Adds to the SETATTR the set-id bits that go (killpriv.c); returns to_set. */
static int drop_set_id_bits(fuse_req_t req, struct ovl_node *n, struct stat *attr, int to_set,
			    struct fuse_file_info *fi)
{
	/* a chown's are dropped by the upper filesystem, by the kernel's rule */
	bool flagged = ftr_kill_suidgid() && !(to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID));
	struct stat cur;
	if (!S_ISREG(n->type) || (to_set & FUSE_SET_ATTR_MODE) || (!flagged && (to_set & SETTABLE)) ||
	    stat_node_or_file(ovl_fs_of(req), n, fi, &cur) < 0)
		return to_set;
	attr->st_mode = ovl_killpriv_mode(req, &cur, flagged);
	return attr->st_mode == cur.st_mode ? to_set : to_set | FUSE_SET_ATTR_MODE;
}

void ovl_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_req_node(req, ino);
	struct stat st;
	if (n == NULL)
		return;
	to_set = drop_set_id_bits(req, n, attr, to_set, fi);
	if (!(to_set & SETTABLE)) { /* nothing to change: no copy-up for it */
		int res = stat_node_or_file(fs, n, fi, &st);
		if (res < 0)
			fuse_reply_err(req, -res);
		else
			fuse_reply_attr(req, &st, fs->timeout);
		return;
	}
	bool truncates = (to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0;
	int res = ovl_copy_up_in_place(fs, n, !truncates);
	const struct ovl_config *cfg = fs->cfg;
	struct stat on_disk = *attr;
	on_disk.st_uid = ovl_idmap_disk(&cfg->uidmap, attr->st_uid);
	on_disk.st_gid = ovl_idmap_disk(&cfg->gidmap, attr->st_gid);
	struct setattr_call c = { .fs = fs, .node = n, .attr = &on_disk, .to_set = to_set, .fd = -1,
				  .chown_may_fail = ovl_squashing(cfg) };
	int reopened = -1;
	if (res == 0 && !n->dir && ovl_node_is_upper(fs, n) && !n->detached) {
		/* (a file opened before the copy-up holds the lower object) */
		if (fi && ovl_file_fd(fi) >= 0 && ovl_file_layer(fs, fi)->is_upper)
			c.fd = ovl_file_fd(fi);
		else if (n->unlinked) /* no name left: through the object kept while open (fchmod has no fi) */
			res = (c.fd = ovl_file_fd_get(fs, ino, NULL, &reopened)) < 0 ? c.fd : 0;
	}
	if (res == 0) {
		struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
		if (c.fd >= 0) {
			res = setattr_cb(&fs->layers[0], -1, NULL, &c);
		} else if (n->dir) {
			int fd = ovl_dir_fd_get(fs, n, 0);
			c.fd = fd;
			res = fd < 0 ? fd : setattr_cb(&fs->layers[0], -1, NULL, &c);
			if (fd >= 0)
				ovl_dir_fd_put(n);
			c.fd = -1;
		} else {
			res = ovl_node_at(fs, n, setattr_cb, &c);
		}
		ovl_ns_unlock(fs, dir);
	}
	if (res == 0)
		res = stat_node_or_file(fs, n, c.fd >= 0 && reopened < 0 ? fi : NULL, &st);
	if (reopened >= 0)
		close(reopened);
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

int ovl_setattr_mode_fd(struct ovl_fs *fs, struct ovl_node *n, int fd, mode_t mode)
{
	struct stat attr = { .st_mode = mode };
	struct setattr_call c = { .fs = fs, .node = n, .attr = &attr, .to_set = FUSE_SET_ATTR_MODE, .fd = fd };
	struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
	int res = setattr_cb(&fs->layers[0], -1, NULL, &c);
	ovl_ns_unlock(fs, dir);
	return res;
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
	struct ovl_node *n = ovl_node_get(ovl_fs_of(req), ino);
	struct link_buf b;
	if (n == NULL || n->dir) {
		fuse_reply_err(req, n ? EINVAL : ESTALE);
		return;
	}
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
	int res = ovl_node_at(fs, n, readlink_cb, &b);
	ovl_ns_unlock(fs, dir);
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
