/* Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir and
 * rename.  Parents are copied up first; the change itself happens under
 * the directory's lock (locks.c) after looking again at what the merged
 * directory holds.
 * A name that replaces a whiteout, or a directory that must be opaque, is
 * built in work and renamed into place, so no half-made state is ever seen. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "ops.h"

static int check_new_name(struct ovl_fs *fs, const char *name)
{
	if (!fs->has_upper)
		return -EROFS;
	if (ovl_name_is_reserved(name))
		return -EINVAL; /* COMPAT.md: a .wh. name would become a whiteout */
	/* a 252-255-byte name has no .wh. form: only removing it where a lower
	 * layer shows it answers ENAMETOOLONG (ovl_whiteout_put) */
	return strlen(name) > NAME_MAX ? -ENAMETOOLONG : 0;
}

/* The node at parent/name with a lookup ref (drop it with ovl_node_forget), or NULL. */
static struct ovl_node *node_at(struct ovl_fs *fs, struct ovl_node *parent, const char *name, int *res)
{
	struct fuse_entry_param e;
	*res = ovl_lookup_entry(fs, parent, name, &e);
	return *res < 0 ? NULL : ovl_node_get(fs, e.ino);
}

static void drop(struct ovl_fs *fs, struct ovl_node *n)
{
	if (n)
		ovl_node_forget(fs, n, 1);
}

/* ---- making objects ---- */
struct make {
	mode_t mode;              /* S_IFMT and permission bits */
	dev_t rdev;
	const char *target;       /* symlink */
	struct ovl_node *source;  /* link */
	int open_flags;           /* create: flags of the open */
	int fd;                   /* create: the open file */
};

static int make_at(struct ovl_fs *fs, int dfd, const char *dname, struct make *m)
{
	struct ovl_layer *upper = &fs->layers[0];
	if (m->source) {
		struct ovl_node *src = m->source;
		int pfd = ovl_dir_fd_get(fs, src->parent, 0);
		if (pfd < 0)
			return pfd;
		int res = ovl_upper_link(upper, pfd, src->name, dfd, dname);
		ovl_dir_fd_put(src->parent);
		return res;
	}
	switch (m->mode & S_IFMT) {
	case S_IFREG: {
		int fd = ovl_upper_create(upper, dfd, dname, m->open_flags & ~(O_TRUNC | O_NOCTTY), m->mode & 07777);
		m->fd = fd < 0 ? -1 : fd;
		return fd < 0 ? fd : 0;
	}
	case S_IFDIR:
		return ovl_upper_mkdir(upper, dfd, dname, m->mode & 07777);
	case S_IFLNK:
		return ovl_upper_symlink(upper, dfd, dname, m->target);
	default:
		return ovl_upper_mknod(upper, dfd, dname, m->mode, m->rdev);
	}
}

static int set_opaque_at(struct ovl_fs *fs, int dirfd, const char *name)
{
	int fd = ovl_layer_open(fs, &fs->layers[0], dirfd, name, O_RDONLY | O_DIRECTORY);
	int res = fd < 0 ? -errno : ovl_set_opaque(fs, fd);
	if (fd >= 0)
		close(fd);
	return res;
}

#define ACL_DEFAULT_XATTR "system.posix_acl_default"

/* work/tmp as a directory with the default ACL of upfd, or -1 if it has none. */
static int acl_stage(struct ovl_fs *fs, int upfd, const char *tmp)
{
	char acl[4096];
	if (fs->cfg->noacl)
		return -1;
	struct ovl_layer *upper = &fs->layers[0];
	ssize_t len = upper->ops->getxattrat(upper, upfd, NULL, ACL_DEFAULT_XATTR, acl, sizeof acl);
	if (len <= 0 || ovl_upper_mkdir(upper, fs->work_fd, tmp, 0700) < 0)
		return -1;
	int fd = ovl_layer_open(fs, upper, fs->work_fd, tmp, O_RDONLY | O_DIRECTORY);
	if (fd >= 0 && ovl_upper_setxattr(upper, fd, NULL, ACL_DEFAULT_XATTR, acl, (size_t)len, 0) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	ovl_upper_rmdir(upper, fs->work_fd, tmp);
	return -1;
}

/* make_in_upper: what it needs the directory's lock written to do (a whiteout to replace). */
#define MAKE_NEEDS_EXCLUSIVE 1

/* Creates name in parent's upper directory upfd; known_wh: the whiteout there
 * if the lookup just saw it, else -1.  Held for reading, the directory's lock is enough to
 * create a name nothing occupies (the VFS serializes changes to one directory,
 * and an exclusive create cannot take another's object); replacing a
 * whiteout needs it for writing: else MAKE_NEEDS_EXCLUSIVE, nothing done. */
static int make_in_upper(struct ovl_fs *fs, const struct ovl_creds *c, struct ovl_node *parent, int upfd,
			 const char *name, struct make *m, int known_wh, bool exclusive)
{
	bool is_dir = S_ISDIR(m->mode) && m->source == NULL;
	int wh = OVL_WH_NONE;
	if (parent->dir->nlayers == 1) {
		/* Nothing below: a whiteout here hides nothing, so try the name
		 * directly and look for one only if the name is taken. */
		int res = make_at(fs, upfd, name, m);
		if (res != -EEXIST)
			return res < 0 ? res : m->source ? 0 : ovl_creds_fix_owner(fs, c, upfd, name);
		if ((wh = ovl_upper_whiteout_at(fs, upfd, name)) != OVL_WH_CHAR)
			return wh < 0 ? wh : -EEXIST;
	} else if ((wh = known_wh >= 0 ? known_wh : ovl_upper_whiteout_at(fs, upfd, name)) < 0) {
		return wh;
	}
	/* A directory replacing a whiteout is opaque (the kernel's rule), so it
	 * is finished in work first; so is anything replacing a char whiteout. */
	bool direct = wh == OVL_WH_NONE || (wh == OVL_WH_FILE && !is_dir);
	if (!exclusive && wh != OVL_WH_NONE)
		return MAKE_NEEDS_EXCLUSIVE;
	char tmp[OVL_TEMPNAME_MAX];
	int dfd = upfd, stage = -1;
	const char *dname = name;
	if (!direct) {
		ovl_work_tempname(fs, tmp);
		dfd = fs->work_fd;
		dname = tmp;
		/* In a directory with a default ACL the object is made in a staging
		 * directory of work that has the same one, so that the filesystem
		 * gives it the ACL it would get in place. */
		if (m->source == NULL && (stage = acl_stage(fs, upfd, tmp)) >= 0) {
			dfd = stage;
			dname = "o";
		}
	}
	int res = make_at(fs, dfd, dname, m);
	bool made = res == 0;
	if (res == 0 && m->source == NULL)
		res = ovl_creds_fix_owner(fs, c, dfd, dname);
	if (res == 0 && is_dir && wh != OVL_WH_NONE)
		res = set_opaque_at(fs, dfd, dname);
	if (res == 0 && !direct) {
		/* rename(2) cannot put a directory over a non-directory: swap, and
		 * the whiteout goes with what is left in work */
		unsigned how = wh != OVL_WH_CHAR ? RENAME_NOREPLACE : is_dir ? RENAME_EXCHANGE : 0;
		res = ovl_rename(fs, dfd, dname, upfd, name, how);
	}
	if (stage >= 0)
		close(stage);
	if (!direct)
		ovl_work_remove(fs, tmp);
	if (res < 0) {
		if (m->fd >= 0)
			close(m->fd);
		m->fd = -1;
		if (direct && made)
			(is_dir ? ovl_upper_rmdir : ovl_upper_unlink)(&fs->layers[0], upfd, name);
		return res;
	}
	if (wh == OVL_WH_FILE)
		ovl_whiteout_drop_file(fs, upfd, name);
	return 0;
}

/* xattr_permissions: a new file or directory (not a link) gets its override,
 * the caller's owner and the mode it was made with (st). */
static void override_new(struct ovl_fs *fs, const struct ovl_creds *c, struct ovl_node *n, int upfd,
			 const char *name, int fd, const struct stat *st)
{
	if (c == NULL || fs->layers[0].override_kind == OVL_OVERRIDE_NONE || (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)))
		return;
	struct ovl_override o = { .uid = c->uid, .gid = c->gid, .mode = st->st_mode };
	/* as 1.10: where it cannot be written, the object shows as stored */
	if ((fd >= 0 ? ovl_override_write(fs, fd, NULL, &o) : ovl_override_write(fs, upfd, name, &o)) == 0)
		ovl_node_set_override(fs, n, &o);
}

/* The entry of what was just made: no lower layer merges with it (a lower
 * directory of that name was hidden, or it would have been found).  c: the
 * maker's creds, NULL for a link. */
static int entry_of_new(struct ovl_fs *fs, const struct ovl_creds *c, struct ovl_node *parent, int upfd,
			const char *name, int fd, struct fuse_entry_param *e)
{
	struct stat st;
	const uint32_t upper_only[1] = { 0 };
	if ((fd >= 0 ? fstat(fd, &st) : fstatat(upfd, name, &st, AT_SYMLINK_NOFOLLOW)) < 0)
		return -errno;
	memset(e, 0, sizeof *e);
	e->entry_timeout = e->attr_timeout = fs->timeout;
	struct ovl_node *n = ovl_node_lookup_or_create(fs, parent, name, 0, &st, upper_only, 1);
	if (n == NULL)
		return -ENOMEM;
	override_new(fs, c, n, upfd, name, fd, &st);
	e->attr = st;
	ovl_node_present(fs, n, &e->attr);
	e->ino = n->nodeid;
	e->generation = ovl_node_generation(fs, n);
	return 0;
}

static int make_object(fuse_req_t req, struct ovl_node *parent, const char *name, struct make *m,
		       struct fuse_entry_param *e)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_creds c;
	struct ovl_found f;
	m->fd = -1;
	int res = check_new_name(fs, name);
	if (res == 0 && m->source)
		res = ovl_copy_up(fs, m->source, true);
	if (res == 0)
		res = ovl_copy_up_dirs(fs, parent);
	if (res < 0)
		return res;
	ovl_creds_enter(fs, req, &c);
	/* a link also reads its source's name, maybe in another directory */
	bool exclusive = m->source != NULL;
	struct ovl_node *source_dir = NULL;
again:
	if (m->source)
		source_dir = ovl_ns_lock_place_and(fs, m->source, false, parent, true);
	else
		ovl_ns_lock(fs, parent, exclusive);
	/* only the upper layer: creating there finds an existing name */
	f.upper_wh = -1;
	res = parent->dir->nlayers == 1 ? -ENOENT : ovl_lookup_name(fs, parent, name, &f);
	if (res == 0) {
		ovl_found_free(&f);
		res = -EEXIST;
	} else if (res == -ENOENT) {
		int upfd = ovl_dir_fd_get(fs, parent, 0);
		res = upfd < 0 ? upfd : make_in_upper(fs, &c, parent, upfd, name, m, f.upper_wh, exclusive);
		if (res == MAKE_NEEDS_EXCLUSIVE) {
			ovl_dir_fd_put(parent);
			ovl_ns_unlock(fs, parent);
			exclusive = true;
			goto again;
		}
		if (res == 0) {
			ovl_dir_name_added(parent, name, m->mode);
			res = entry_of_new(fs, m->source ? NULL : &c, parent, upfd, name, m->fd, e);
		}
		if (res == 0 && m->source)
			res = ovl_node_add_alias(fs, m->source, parent, name);
		if (upfd >= 0)
			ovl_dir_fd_put(parent);
	}
	if (m->source)
		ovl_ns_unlock_two(fs, source_dir, parent);
	else
		ovl_ns_unlock(fs, parent);
	ovl_creds_leave(&c);
	if (res < 0 && m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	return res;
}

static void reply_made(fuse_req_t req, fuse_ino_t parent, const char *name, struct make *m)
{
	struct ovl_node *p = ovl_req_dir(req, parent);
	struct fuse_entry_param e;
	if (p == NULL)
		return;
	int res = make_object(req, p, name, m, &e);
	if (res < 0)
		fuse_reply_err(req, -res);
	else if (fuse_reply_entry(req, &e) == -ENOENT)
		ovl_node_forget(ovl_fs_of(req), ovl_node_get(ovl_fs_of(req), e.ino), 1);
}

void ovl_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct make m = { .mode = mode, .rdev = rdev };
	if (S_ISCHR(mode) && rdev == 0) {
		fuse_reply_err(req, EPERM); /* it would read as a whiteout: refused, as the kernel overlay */
		return;
	}
	reply_made(req, parent, name, &m);
}

void ovl_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct make m = { .mode = S_IFDIR | (mode & 07777) };
	reply_made(req, parent, name, &m);
}

void ovl_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct make m = { .mode = S_IFLNK | 0777, .target = link };
	reply_made(req, parent, name, &m);
}

void ovl_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct ovl_node *src = ovl_node_get(ovl_fs_of(req), ino);
	if (src == NULL || src->dir) {
		fuse_reply_err(req, src ? EPERM : ESTALE);
		return;
	}
	struct make m = { .mode = src->type, .source = src };
	reply_made(req, newparent, newname, &m);
}

void ovl_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct ovl_node *p = ovl_req_dir(req, parent);
	struct fuse_entry_param e;
	if (p == NULL)
		return;
	struct make m = { .mode = S_IFREG | (mode & 07777), .open_flags = ovl_backing_open_flags(ovl_fs_of(req), fi->flags) };
	int res = make_object(req, p, name, &m, &e);
	if (res < 0) {
		fuse_reply_err(req, -res);
		return;
	}
	ovl_file_reply_create(req, &e, fi, m.fd);
}

/* ---- removing ---- */
/* Whether removing what f found at parent/name needs a whiteout: 1, 0 or
 * -errno (-ENAMETOOLONG: it needs one that cannot be written). */
static int removal_needs_whiteout(struct ovl_fs *fs, struct ovl_node *parent, const char *name,
				  const struct ovl_found *f)
{
	bool in_upper = f->layer == 0;
	int lower = in_upper && !(S_ISDIR(f->st.st_mode) && f->nlayers > 1) ? ovl_lower_positive(fs, parent, name) : 1;
	return lower > 0 && !ovl_whiteout_fits(fs, name) ? -ENAMETOOLONG : lower;
}

/* lower: what removal_needs_whiteout said. */
static int remove_in_upper(struct ovl_fs *fs, int upfd, const char *name, const struct ovl_found *f, int lower)
{
	bool is_dir = S_ISDIR(f->st.st_mode);
	bool in_upper = f->layer == 0;
	if (lower)
		return ovl_whiteout_put(fs, upfd, name, in_upper ? f->st.st_mode & S_IFMT : 0);
	struct ovl_layer *upper = &fs->layers[0];
	if (!is_dir)
		return ovl_upper_unlink(upper, upfd, name);
	int res = ovl_upper_rmdir(upper, upfd, name);
	if (res != -ENOTEMPTY)
		return res;
	/* only whiteouts of names that are gone below: out of sight, then away */
	return ovl_work_discard(fs, upfd, name);
}

/* An upper object about to lose a name (its directory's lock written): a hard
 * link's node moves to another of its names; an object losing its last name
 * while open stays reachable for fstat through an O_PATH fd.  false: it
 * must be done again under the tree lock (ovl_node_name_gone). */
static bool name_going(struct ovl_fs *fs, struct ovl_node *parent, int upfd, const char *name,
		       const struct ovl_found *f, bool tree_held)
{
	if (S_ISDIR(f->st.st_mode))
		return true;
	bool upper = f->layer == 0, linked = f->st.st_nlink > 1, done = true;
	/* each name of a lower hard link has a node of its own (nodes.c) */
	struct ovl_node *n = ovl_node_find(fs, f->st.st_dev, f->st.st_ino, !upper && linked ? parent : NULL, name);
	if (n == NULL)
		return true;
	if (upper && linked) {
		done = ovl_node_name_gone(fs, n, parent, name, tree_held); /* the node takes another name */
	} else {
		if (upper && atomic_load(&n->opens) > 0)
			ovl_node_keep_orphan(fs, n, upfd, name);
		/* What comes to take the name is another object: a late request
		 * for this node (the kernel flushes a replaced file's times) must
		 * not reach it by name. */
		n->unlinked = true;
	}
	ovl_node_unref(fs, n);
	return done;
}

/* An object whose last name went away: its inode number may come back. */
static void forget_identity(struct ovl_fs *fs, const struct ovl_found *f)
{
	if (S_ISDIR(f->st.st_mode) || (f->layer == 0 && f->st.st_nlink <= 1))
		ovl_node_unhash_id(fs, f->st.st_dev, f->st.st_ino);
}

static int remove_object(struct ovl_fs *fs, struct ovl_node *parent, const char *name, bool rmdir)
{
	int res = check_new_name(fs, name);
	if (res == 0)
		res = ovl_copy_up_dirs(fs, parent);
	if (res < 0)
		return res;
	enum ovl_change_locks how = OVL_LOCK_DIR;
again:
	ovl_change_lock(fs, how, parent, parent);
	struct ovl_found f;
	res = ovl_lookup_name(fs, parent, name, &f);
	bool needs_tree = false;
	if (res == 0) {
		bool is_dir = S_ISDIR(f.st.st_mode);
		struct ovl_node *n = is_dir ? ovl_node_lookup_or_create(fs, parent, name, f.layer, &f.st, f.layers,
									 f.nlayers)
					    : NULL;
		if (rmdir && !is_dir)
			res = -ENOTDIR;
		else if (!rmdir && is_dir)
			res = -EISDIR;
		else if (n && (res = ovl_dir_is_empty(fs, n)) >= 0)
			res = res ? 0 : -ENOTEMPTY;
		int lower = res == 0 ? removal_needs_whiteout(fs, parent, name, &f) : 0;
		if (lower < 0)
			res = lower;
		int upfd = res == 0 ? ovl_dir_fd_get(fs, parent, 0) : 0;
		if (upfd < 0) {
			res = upfd;
		} else if (res == 0) {
			/* nothing can fail past this point but the removal itself */
			needs_tree = !name_going(fs, parent, upfd, name, &f, how == OVL_LOCK_TREE);
			if (!needs_tree)
				res = remove_in_upper(fs, upfd, name, &f, lower);
			ovl_dir_fd_put(parent);
		}
		if (res == 0 && !needs_tree) {
			forget_identity(fs, &f);
			ovl_dir_name_removed(parent, name);
		}
		if (n)
			ovl_node_forget(fs, n, 1);
		ovl_found_free(&f);
	}
	ovl_change_unlock(fs, how, parent, parent);
	if (needs_tree) {
		how = OVL_LOCK_TREE;
		goto again;
	}
	return res;
}

void ovl_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ovl_node *p = ovl_req_dir(req, parent);
	if (p)
		fuse_reply_err(req, -remove_object(ovl_fs_of(req), p, name, false));
}

void ovl_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ovl_node *p = ovl_req_dir(req, parent);
	if (p)
		fuse_reply_err(req, -remove_object(ovl_fs_of(req), p, name, true));
}

/* ---- rename ---- */
static bool has_lower_parts(const struct ovl_node *n)
{
	return n->dir && (n->layer != 0 || n->dir->nlayers > 1);
}

struct move {
	struct ovl_node *p, *np;
	const char *name, *newname;
	unsigned flags;
	struct ovl_node *s, *d; /* source and the target it replaces or swaps with */
};

/* Puts the upper object at p/name to np/newname (both directories locked for writing). */
static int move_in_upper(struct ovl_fs *fs, struct move *mv, int up, int unp, const struct ovl_found *dst)
{
	if (mv->flags & RENAME_EXCHANGE) {
		/* a directory landing in a merged directory must not merge with what
		 * lies below its new name */
		int res = 0;
		if (mv->s->dir && mv->np->dir->nlayers > 1)
			res = set_opaque_at(fs, up, mv->name);
		if (res == 0 && mv->d->dir && mv->p->dir->nlayers > 1)
			res = set_opaque_at(fs, unp, mv->newname);
		return res < 0 ? res : ovl_rename(fs, up, mv->name, unp, mv->newname, RENAME_EXCHANGE);
	}
	bool src_dir = mv->s->dir != NULL;
	int src_wh = ovl_lower_positive(fs, mv->p, mv->name);
	int below = src_dir ? ovl_lower_positive(fs, mv->np, mv->newname) : 0;
	int wh = ovl_upper_whiteout_at(fs, unp, mv->newname);
	if (src_wh < 0 || below < 0 || wh < 0)
		return src_wh < 0 ? src_wh : below < 0 ? below : wh;
	if (dst && S_ISDIR(dst->st.st_mode) && dst->layer == 0) {
		/* an empty merged directory: its upper part only holds whiteouts */
		int res = ovl_work_discard(fs, unp, mv->newname);
		if (res < 0)
			return res;
		below = 1;
	}
	if (src_dir && (below || wh != OVL_WH_NONE || mv->np->dir->nlayers > 1)) {
		/* it must not merge with what lies, or may later lie, below its new
		 * name: opaque when moved into a merged directory, as the kernel */
		int res = set_opaque_at(fs, up, mv->name);
		if (res < 0)
			return res;
	}
	if (src_dir && wh == OVL_WH_CHAR) {
		int res = ovl_rename(fs, up, mv->name, unp, mv->newname, RENAME_EXCHANGE);
		if (res < 0)
			return res;
		/* the whiteout came to the old name: keep it only if it hides something */
		if (!src_wh)
			ovl_upper_unlink(&fs->layers[0], up, mv->name);
		return 0;
	}
	int res = src_wh ? ovl_whiteout_rename(fs, up, mv->name, unp, mv->newname)
			 : ovl_rename(fs, up, mv->name, unp, mv->newname, 0);
	if (res < 0)
		return res;
	if (wh == OVL_WH_FILE)
		ovl_whiteout_drop_file(fs, unp, mv->newname);
	return 0;
}

/* The directories whose names a rename changes (moved, swapped or
 * replaced) keep their fd_lock meanwhile: a walk from below reads a
 * directory's name holding only that (locks.c). */
static void moving_dirs_lock(struct move *mv, bool lock)
{
	struct ovl_dir *a = mv->s->dir, *b = mv->d && mv->d != mv->s ? mv->d->dir : NULL;
	if (a == NULL || (b != NULL && (uintptr_t)b < (uintptr_t)a)) {
		struct ovl_dir *t = a;
		a = b;
		b = t;
	}
	if (lock) {
		if (a)
			pthread_mutex_lock(&a->fd_lock);
		if (b)
			pthread_mutex_lock(&b->fd_lock);
	} else {
		if (b)
			pthread_mutex_unlock(&b->fd_lock);
		if (a)
			pthread_mutex_unlock(&a->fd_lock);
	}
}

static int do_rename(struct ovl_fs *fs, struct move *mv)
{
	int res;
	struct ovl_found src, dst;
	bool exchange = mv->flags & RENAME_EXCHANGE;
	if (mv->s == NULL)
		return -ENOENT;
	if (has_lower_parts(mv->s) || (exchange && mv->d && has_lower_parts(mv->d)))
		return -EXDEV; /* as the kernel overlay with redirect_dir=off */
	if (exchange && mv->d == NULL)
		return -ENOENT;
	if ((mv->flags & RENAME_NOREPLACE) && mv->d)
		return -EEXIST;
	if (!exchange && !ovl_whiteout_fits(fs, mv->name)) {
		/* the name it leaves would need a whiteout we cannot write: refused
		 * before the copy-up, so that upper stays as it was */
		ovl_ns_lock(fs, mv->p, false);
		res = ovl_lower_positive(fs, mv->p, mv->name);
		ovl_ns_unlock(fs, mv->p);
		if (res)
			return res < 0 ? res : -ENAMETOOLONG;
	}
	res = ovl_copy_up(fs, mv->s, true);
	if (res == 0 && exchange)
		res = ovl_copy_up(fs, mv->d, true);
	if (res == 0)
		res = ovl_copy_up_dirs(fs, mv->p);
	if (res == 0)
		res = ovl_copy_up_dirs(fs, mv->np);
	if (res < 0)
		return res;
	bool same_dir = mv->p == mv->np;
	enum ovl_change_locks how = ovl_rename_locks(same_dir, mv->s->dir || (exchange && mv->d && mv->d->dir));
again:
	ovl_change_lock(fs, how, mv->p, mv->np);
	res = ovl_lookup_name(fs, mv->p, mv->name, &src);
	int dres = res < 0 ? -ENOENT : ovl_lookup_name(fs, mv->np, mv->newname, &dst);
	bool has_dst = dres == 0;
	/* what the names hold now may need more locks than the nodes told */
	enum ovl_change_locks need =
		res < 0 ? how
			: ovl_rename_locks(same_dir, S_ISDIR(src.st.st_mode) || (exchange && has_dst && S_ISDIR(dst.st.st_mode)));
	if (need > how) {
		ovl_found_free(&src);
		if (has_dst)
			ovl_found_free(&dst);
		ovl_change_unlock(fs, how, mv->p, mv->np);
		how = need;
		goto again;
	}
	if (res == 0 && dres < 0 && dres != -ENOENT)
		res = dres;
	if (res == 0 && (src.layer != 0 || (exchange && (!has_dst || dst.layer != 0))))
		res = -ESTALE; /* changed since we looked: let the VFS try again */
	if (res == 0 && has_dst && !exchange) {
		bool sdir = S_ISDIR(src.st.st_mode), ddir = S_ISDIR(dst.st.st_mode);
		if (src.st.st_dev == dst.st.st_dev && src.st.st_ino == dst.st.st_ino)
			res = 1; /* the same object: nothing to do */
		else if (sdir && !ddir)
			res = -ENOTDIR;
		else if (!sdir && ddir)
			res = -EISDIR;
		else if ((mv->flags & RENAME_NOREPLACE))
			res = -EEXIST;
		else if (ddir && mv->d && mv->d->dir && (res = ovl_dir_is_empty(fs, mv->d)) >= 0)
			res = res ? 0 : -ENOTEMPTY;
	}
	/* The kernel marks a directory moving into a merged one opaque before
	 * its rename meets an upper-only target that is not empty: the mark stays. */
	bool mark_anyway = res == -ENOTEMPTY && mv->d && S_ISDIR(src.st.st_mode) && mv->np->dir->nlayers > 1 &&
			   dst.layer == 0 && mv->d->dir->nlayers == 1;
	int up = res == 0 || mark_anyway ? ovl_dir_fd_get(fs, mv->p, 0) : -1;
	if (mark_anyway && up >= 0)
		set_opaque_at(fs, up, mv->name);
	int unp = res == 0 && up >= 0 ? ovl_dir_fd_get(fs, mv->np, 0) : -1;
	if (res == 0 && (up < 0 || unp < 0))
		res = up < 0 ? up : unp;
	moving_dirs_lock(mv, true);
	bool needs_tree = false;
	if (res == 0 && has_dst && !exchange)
		needs_tree = !name_going(fs, mv->np, unp, mv->newname, &dst, how == OVL_LOCK_TREE);
	if (res == 0 && !needs_tree)
		res = move_in_upper(fs, mv, up, unp, has_dst ? &dst : NULL);
	if (unp >= 0)
		ovl_dir_fd_put(mv->np);
	if (up >= 0)
		ovl_dir_fd_put(mv->p);
	if (res == 0 && !needs_tree) {
		if (exchange) {
			struct ovl_node *d = mv->d;
			ovl_node_renamed(fs, d, mv->np, mv->newname, mv->p, mv->name);
		} else if (has_dst) {
			forget_identity(fs, &dst);
		}
		ovl_node_renamed(fs, mv->s, mv->p, mv->name, mv->np, mv->newname);
		ovl_dir_changed(mv->p);
		if (mv->np != mv->p)
			ovl_dir_changed(mv->np);
	}
	moving_dirs_lock(mv, false);
	ovl_found_free(&src);
	if (has_dst)
		ovl_found_free(&dst);
	ovl_change_unlock(fs, how, mv->p, mv->np);
	if (needs_tree) {
		how = OVL_LOCK_TREE;
		goto again;
	}
	return res > 0 ? 0 : res;
}

void ovl_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		   unsigned int flags)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct move mv = { .name = name, .newname = newname, .flags = flags };
	int res = 0;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL); /* RENAME_WHITEOUT too, as the kernel overlay */
		return;
	}
	if ((mv.p = ovl_req_dir(req, parent)) == NULL || (mv.np = ovl_req_dir(req, newparent)) == NULL)
		return;
	res = check_new_name(fs, newname);
	if (res == 0 && ovl_name_is_reserved(name))
		res = -EINVAL;
	if (res == 0) {
		int dres;
		ovl_ns_lock(fs, mv.p, false);
		mv.s = node_at(fs, mv.p, name, &res);
		ovl_ns_unlock(fs, mv.p);
		ovl_ns_lock(fs, mv.np, false);
		mv.d = node_at(fs, mv.np, newname, &dres);
		ovl_ns_unlock(fs, mv.np);
		if (mv.s && dres < 0 && dres != -ENOENT)
			res = dres;
		else if (mv.s)
			res = do_rename(fs, &mv);
	}
	drop(fs, mv.s);
	drop(fs, mv.d);
	fuse_reply_err(req, -res);
}
