/* READDIR and READDIRPLUS: directory handles, and the replies from a
 * directory's listing (listing_read.c reads it).  An offset is an index into
 * the listing's snapshot, so it is stable across opendirs. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "ops.h"
#include "readdir.h"

/* ---- handlers ---- */
/* An open directory: its snapshot, taken again by a pass from the start
 * (do_readdir).  The kernel runs one request at a time per open directory.
 * Where the kernel may cache listings (timeout > 0), opendir answers ENOSYS
 * once: the kernel then opens every directory itself, with FOPEN_CACHE_DIR
 * and FOPEN_KEEP_CACHE, the flags we gave (fs/fuse/file.c fuse_file_open,
 * "Default for no-open"), and sends no OPENDIR or RELEASEDIR at all, two
 * requests a directory a walk saved.  Its READDIRs then come without a
 * handle, and the directory node keeps what the last pass from offset 0
 * read (served), so that the rest of that pass reads the same listing. */
struct dir_handle {
	struct ovl_listing *l;
};

void ovl_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ovl_fs_of(req)->timeout > 0) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	struct ovl_node *n = ovl_req_dir(req, ino);
	struct dir_handle *h = malloc(sizeof *h);
	if (n == NULL || h == NULL) {
		free(h);
		if (n)
			fuse_reply_err(req, ENOMEM);
		return;
	}
	struct ovl_fs *fs = ovl_fs_of(req);
	ovl_ns_lock(fs, n, false);
	int res = ovl_dir_listing(fs, n, false, &h->l);
	ovl_ns_unlock(fs, n);
	if (res < 0) {
		free(h);
		fuse_reply_err(req, -res);
		return;
	}
	fi->fh = (uintptr_t)h;
	/* The snapshot only changes through us: let the kernel keep its copy. */
	fi->cache_readdir = fi->keep_cache = ovl_fs_of(req)->timeout > 0;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		ovl_listing_unref(h->l);
		free(h);
	}
}

void ovl_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct dir_handle *h = (struct dir_handle *)(uintptr_t)fi->fh;
	ovl_listing_unref(h->l);
	free(h);
	fuse_reply_err(req, 0);
}

/* A pass from the start must show every change made before it, not the
 * snapshot of the open: the kernel caches what such a pass reads, as the
 * directory's contents from then on (found by a lister racing removals). */
static int handle_listing(struct ovl_fs *fs, struct ovl_node *n, struct dir_handle *h, off_t off,
			  struct ovl_listing **out)
{
	struct ovl_listing *fresh;
	if (off == 0 && h->l->version != atomic_load(&n->dir->version) && ovl_dir_listing(fs, n, false, &fresh) == 0) {
		ovl_listing_unref(h->l);
		h->l = fresh;
	}
	atomic_fetch_add(&h->l->refs, 1);
	*out = h->l;
	return 0;
}

/* Without a handle: a pass from 0 reads the node's current listing, and the
 * rest of a pass the one its offsets came from, while the node keeps it:
 * listers racing changes each read their own (a later pass's listing has
 * other positions: read there, an offset would skip or repeat names). */
static int served_listing(struct ovl_fs *fs, struct ovl_node *n, off_t off, struct ovl_listing **out)
{
	struct ovl_dir *d = n->dir;
	struct ovl_listing *l = NULL, *dropped = NULL;
	if (off != 0) {
		pthread_rwlock_rdlock(&d->lock);
		for (size_t i = 0; i < OVL_SERVED_LISTINGS && d->served[i] && l == NULL; i++)
			if (ovl_listing_gave(d->served[i], off))
				l = d->served[i];
		if (l)
			atomic_fetch_add(&l->refs, 1);
		pthread_rwlock_unlock(&d->lock);
		if ((*out = l) != NULL)
			return 0;
	}
	int res = ovl_dir_listing(fs, n, false, &l);
	if (res < 0)
		return res;
	if (off == 0) {
		pthread_rwlock_wrlock(&d->lock);
		if (d->served[0] != l) {
			atomic_fetch_add(&l->refs, 1);
			dropped = d->served[OVL_SERVED_LISTINGS - 1];
			memmove(&d->served[1], &d->served[0], (OVL_SERVED_LISTINGS - 1) * sizeof d->served[0]);
			d->served[0] = l;
		}
		pthread_rwlock_unlock(&d->lock);
		if (dropped)
			ovl_listing_unref(dropped);
	}
	*out = l;
	return 0;
}

/* The listing a READDIR reads, in *out (a ref the caller drops). */
static int pass_listing(struct ovl_fs *fs, struct ovl_node *n, struct fuse_file_info *fi, off_t off,
			struct ovl_listing **out)
{
	struct dir_handle *h = (struct dir_handle *)(uintptr_t)fi->fh;
	if (n == NULL)
		return -ESTALE;
	if (n->dir == NULL)
		return -ENOTDIR;
	if (off < 0)
		return -EINVAL;
	return h ? handle_listing(fs, n, h, off, out) : served_listing(fs, n, off, out);
}

static void dot_stat(struct ovl_fs *fs, struct ovl_node *n, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_mode = S_IFDIR;
	st->st_ino = n->origin_ino ? n->origin_ino : ovl_st_ino(fs, n->layer, n->ino);
}

static ino_t dirent_ino(const struct ovl_fs *fs, const struct ovl_dirent *d)
{
	return d->ino_shown ? d->ino : ovl_st_ino(fs, d->layer, d->ino);
}

ino_t ovl_listing_ino(const struct ovl_fs *fs, const struct ovl_listing *l, size_t i)
{
	return dirent_ino(fs, &l->ents[i]);
}

/* What a plain listing tells of an entry: its inode number and type. */
static void dirent_attr(struct ovl_fs *fs, const struct ovl_dirent *d, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = dirent_ino(fs, d);
	st->st_mode = (mode_t)DTTOIF(d->type);
}

struct plus_batch {
	struct ovl_fs *fs;
	struct ovl_node *dir;
	bool stale; /* the directory changed since the snapshot: look names up afresh */
	const struct ovl_listing *l;
	const struct ovl_dirent *ents;
	struct fuse_entry_param *e;
};

/* Whether the kernel holds the node of this entry under this name already:
 * it then needs no attributes from us (a second pass over a directory, as
 * rm -rf makes, or ls -l after a change), and a lookup would only cost a
 * stat and a forget. */
static bool kernel_has_entry(const struct plus_batch *b, const struct ovl_dirent *d, const char *name)
{
	struct ovl_node_peek node;
	return !b->stale && !d->ino_shown &&
	       ovl_node_peek(b->fs, b->fs->layers[d->layer].dev, d->ino, b->dir, name, &node) && node.held;
}

static void plus_lookup(void *arg, size_t k)
{
	struct plus_batch *b = arg;
	const struct ovl_dirent *d = &b->ents[k];
	const char *name = dirent_name(b->l, d);
	struct ovl_found f;
	int res = kernel_has_entry(b, d, name)		? -EEXIST
		  : b->stale				? ovl_lookup_entry(b->fs, b->dir, name, &b->e[k])
		  : ovl_listing_found(b->l, d, &f) < 0 ? -ENOMEM
							: ovl_lookup_entry_listed(b->fs, b->dir, name, &f, &b->e[k]);
	if (res < 0) {
		/* listed without attributes: the kernel has them or looks the name up later */
		memset(&b->e[k], 0, sizeof b->e[k]);
		dirent_attr(b->fs, d, &b->e[k].attr);
	}
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi, bool plus)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(fs, ino);
	struct ovl_listing *l = NULL;
	int res = pass_listing(fs, n, fi, off, &l);
	char *buf = res == 0 ? malloc(size) : NULL;
	size_t pos = 0;
	if (buf == NULL) {
		if (l)
			ovl_listing_unref(l);
		fuse_reply_err(req, res < 0 ? -res : ENOMEM);
		return;
	}
	/* Which entries fit, so that their lookups can run in parallel: a batch
	 * of a cold directory waits on many inode reads, which then overlap. */
	size_t first = ovl_listing_pos(l, off), end = plus ? first : l->n + 2, need = 0;
	for (; plus && end < l->n + 2; end++) {
		const char *name = end == 0 ? "." : end == 1 ? ".." : dirent_name(l, &l->ents[end - 2]);
		size_t len = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
		if (need + len > size)
			break;
		need += len;
	}
	size_t lo = first < 2 ? 2 : first;
	struct fuse_entry_param *looked = NULL;
	if (plus && end > lo) {
		looked = calloc(end - lo, sizeof *looked);
		if (looked == NULL) {
			free(buf);
			ovl_listing_unref(l);
			fuse_reply_err(req, ENOMEM);
			return;
		}
		struct plus_batch b = { .fs = fs, .dir = n, .l = l, .ents = &l->ents[lo - 2], .e = looked,
					.stale = l->version != atomic_load(&n->dir->version) };
		ovl_parallel_for(fs, end - lo, plus_lookup, &b);
	}
	for (size_t i = first; i < end; i++) {
		struct fuse_entry_param e;
		const char *name;
		memset(&e, 0, sizeof e);
		if (i < 2) {
			name = i == 0 ? "." : "..";
			dot_stat(fs, i == 0 || n->parent == NULL ? n : n->parent, &e.attr);
		} else if (plus) {
			name = dirent_name(l, &l->ents[i - 2]);
			e = looked[i - lo];
		} else {
			name = dirent_name(l, &l->ents[i - 2]);
			dirent_attr(fs, &l->ents[i - 2], &e.attr);
		}
		off_t next = ovl_listing_off(l, i + 1);
		size_t len = plus ? fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, next)
				  : fuse_add_direntry(req, buf + pos, size - pos, name, &e.attr, next);
		if (len > size - pos)
			break; /* plain listing: the buffer is full */
		pos += len;
	}
	/* a walk opens the subdirectories next: read them ahead (before the
	 * reply, while the lookup refs keep their nodes) */
	for (size_t k = 0; looked && k < end - lo; k++) {
		struct ovl_node *c =
			looked[k].ino && S_ISDIR(looked[k].attr.st_mode) ? ovl_node_get(fs, looked[k].ino) : NULL;
		if (c && c->dir)
			ovl_prefetch_dir(fs, c);
	}
	free(looked);
	fuse_reply_buf(req, buf, pos);
	free(buf);
	ovl_listing_unref(l);
}

static void locked_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi,
			   bool plus)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(fs, ino);
	if (n == NULL || n->dir == NULL) {
		fuse_reply_err(req, n ? ENOTDIR : ESTALE);
		return;
	}
	/* the reply may let the kernel forget the directory before we unlock it */
	ovl_node_ref(fs, n);
	ovl_ns_lock(fs, n, false);
	do_readdir(req, ino, size, off, fi, plus);
	ovl_ns_unlock(fs, n);
	ovl_node_unref(fs, n);
}

void ovl_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	locked_readdir(req, ino, size, off, fi, false);
}

void ovl_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	locked_readdir(req, ino, size, off, fi, true);
}

int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_listing *l;
	int res = ovl_dir_listing(fs, dir, true, &l);
	if (res < 0)
		return res;
	pthread_rwlock_rdlock(&dir->dir->lock);
	res = ovl_listing_remaining(l) == 0;
	pthread_rwlock_unlock(&dir->dir->lock);
	ovl_listing_unref(l);
	return res;
}
