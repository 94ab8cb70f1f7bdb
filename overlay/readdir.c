/* A merged directory listing: one pass per layer (its list op), top to bottom,
 * whiteouts and opaque markers seen in the same pass, then one snapshot
 * sorted by name, with a hash table for lookups.  An offset is an index into
 * the snapshot, so it is stable across opendirs; the snapshot is cached in
 * the directory node. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "ops.h"
#include "readdir.h"

/* ---- reading the layers ---- */
struct raw_layer {
	struct ovl_raw_entry *v;
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
};

static int raw_push(struct raw_layer *r, const char *name, uint8_t type, ino_t ino, bool whiteout)
{
	size_t len = strlen(name) + 1;
	if (ovl_grow(&r->v, &r->cap, r->n + 1, sizeof *r->v, 256) < 0 ||
	    ovl_grow(&r->pool, &r->pool_cap, r->pool_len + len, 1, 16384) < 0)
		return -ENOMEM;
	memcpy(r->pool + r->pool_len, name, len);
	/* names point into pool, which may move: keep offsets until the layer is read */
	r->v[r->n++] = (struct ovl_raw_entry){ .name = (const char *)(uintptr_t)r->pool_len, .len = len - 1,
					       .type = type, .ino = ino, .whiteout = whiteout };
	r->pool_len += len;
	return 0;
}

struct layer_pass {
	struct ovl_layer *layer;
	int fd;
	struct raw_layer *r;
	int err; /* what stopped the pass */
};

static int take_entry(void *arg, const char *name, uint8_t type, ino_t ino)
{
	struct layer_pass *p = arg;
	bool whiteout = false;
	/* d_type is trusted; only a char device may be a whiteout. */
	if (type == DT_CHR || type == DT_UNKNOWN) {
		struct stat st;
		if (p->layer->ops->statat(p->layer, p->fd, name, &st) < 0)
			return 0; /* vanished */
		type = (uint8_t)IFTODT(st.st_mode);
		whiteout = ovl_stat_is_whiteout(&st);
	}
	p->err = raw_push(p->r, name, type, ino, whiteout);
	return p->err != 0;
}

static int read_layer(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd, struct raw_layer *r)
{
	struct layer_pass p = { .layer = layer, .r = r };
	p.fd = ovl_layer_open(fs, layer, dirfd, ".", O_RDONLY | O_DIRECTORY);
	if (p.fd < 0)
		return -errno;
	r->n = r->pool_len = 0;
	int res = layer->ops->list(layer, p.fd, take_entry, &p) < 0 ? -errno : p.err;
	layer->ops->close(layer, p.fd);
	for (size_t i = 0; i < r->n; i++)
		r->v[i].name = r->pool + (uintptr_t)r->v[i].name;
	return res;
}

/* Copied-up objects show their origin's st_ino: so must d_ino (lookup.c reads
 * the origin in the same directories; a node knows it first).  Returns
 * whether the upper layer's entries hold no whiteout of any spelling. */
static bool upper_origins(struct ovl_fs *fs, int dirfd, struct raw_layer *r)
{
	bool clean = true;
	for (size_t i = 0; i < r->n; i++) {
		struct ovl_raw_entry *e = &r->v[i];
		ino_t shown;
		if (e->whiteout || ovl_name_is_reserved(e->name)) {
			clean = false;
			continue;
		}
		if (strcmp(e->name, ".") == 0 || strcmp(e->name, "..") == 0)
			continue;
		struct ovl_node_peek node;
		if (ovl_node_peek(fs, fs->layers[0].dev, e->ino, NULL, NULL, &node) && node.origin_ino)
			shown = node.origin_ino;
		else if (!ovl_origin_ino(fs, dirfd, e->name, &shown))
			continue;
		e->ino = shown;
		e->ino_shown = true;
	}
	return clean;
}

/* A listing's offsets tell which listing they come from.  The kernel, when
 * it caches a directory (FOPEN_CACHE_DIR), may go on with a pass it read from
 * one listing in entries another pass read from another (it matches offsets
 * exactly): it asks us again only for an offset its cache does not hold.
 * Above the bits a position needs, the rest of 31 (32-bit getdents) number
 * the listings (fs->listing_gens), so that two alive at once do not share
 * offsets. */
static void set_offset_gen(struct ovl_fs *fs, struct ovl_listing *l)
{
	l->pos_bits = (uint8_t)(64 - __builtin_clzll((unsigned long long)l->n + 2));
	if (l->pos_bits < 31)
		l->gen = atomic_fetch_add(&fs->listing_gens, 1) % ((1u << (31 - l->pos_bits)) - 1) + 1;
}

static off_t pos_to_off(const struct ovl_listing *l, size_t pos)
{
	return (off_t)((uint64_t)l->gen << l->pos_bits | pos);
}

static size_t off_to_pos(const struct ovl_listing *l, off_t off)
{
	return l->gen ? (size_t)off & (((size_t)1 << l->pos_bits) - 1) : (size_t)off;
}

static int build_listing(struct ovl_fs *fs, struct ovl_node *node, struct ovl_listing **out)
{
	struct ovl_dir *d = node->dir;
	struct ovl_merge *m = ovl_merge_new();
	struct raw_layer r = { 0 };
	unsigned version = atomic_load(&d->version);
	int res = m ? 0 : -ENOMEM;
	bool upper_clean = false;
	for (uint32_t i = 0; i < d->nlayers && res == 0; i++) {
		struct ovl_layer *layer = &fs->layers[d->layers[i]];
		int fd = ovl_dir_fd_get(fs, node, i);
		if (fd < 0) {
			res = fd;
			break;
		}
		res = read_layer(fs, layer, fd, &r);
		/* (a directory only in the upper layer has nothing below to
		 * merge: its creates never ask about whiteouts) */
		if (res == 0 && layer->is_upper && d->nlayers > 1)
			upper_clean = upper_origins(fs, fd, &r);
		ovl_dir_fd_put(node);
		if (res == 0) {
			int opaque = ovl_merge_layer(m, layer->index, r.v, r.n);
			res = opaque < 0 ? opaque : 0;
			if (opaque > 0)
				break;
		}
	}
	free(r.v);
	free(r.pool);
	if (res < 0) {
		ovl_merge_free(m);
		return res;
	}
	*out = ovl_merge_finish(m);
	if (*out) {
		(*out)->version = version;
		(*out)->upper_clean = upper_clean;
		set_offset_gen(fs, *out);
	}
	atomic_fetch_add(&fs->stat_listings, 1);
	return *out ? 0 : -ENOMEM;
}

/* The node's cached listing, built on first use; the caller gets a ref.
 * One that names were removed from since it was read serves lookups, and
 * emptiness checks (with_removed), but a reader gets one read afresh. */
static int dir_listing(struct ovl_fs *fs, struct ovl_node *node, bool with_removed, struct ovl_listing **out)
{
	struct ovl_dir *d = node->dir;
	pthread_rwlock_rdlock(&d->lock);
	struct ovl_listing *l = d->listing;
	if (l && (with_removed || ovl_listing_pristine(l)))
		atomic_fetch_add(&l->refs, 1);
	else
		l = NULL;
	pthread_rwlock_unlock(&d->lock);
	if (l) {
		*out = l;
		return 0;
	}
	int res = build_listing(fs, node, &l);
	if (res < 0 || fs->timeout == 0) { /* timeout=0: nothing is cached */
		*out = l;
		return res;
	}
	struct ovl_listing *replaced = NULL;
	pthread_rwlock_wrlock(&d->lock);
	if (d->listing && ovl_listing_pristine(d->listing)) {
		ovl_listing_unref(l);
		l = d->listing;
		atomic_fetch_add(&l->refs, 1);
	} else if (l->version == atomic_load(&d->version)) {
		/* (a create may hold the directory's lock only for reading: it may have changed
		 * the directory while we read it, and then it is not cached) */
		replaced = d->listing;
		d->listing = l;
		atomic_fetch_add(&l->refs, 1);
	}
	pthread_rwlock_unlock(&d->lock);
	if (replaced)
		ovl_listing_unref(replaced);
	*out = l;
	return 0;
}

int ovl_dir_load_listing(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_listing *l;
	if (fs->timeout == 0)
		return -EAGAIN;
	int res = dir_listing(fs, dir, false, &l);
	if (res == 0)
		ovl_listing_unref(l);
	return res;
}

/* What a listed entry tells a lookup: its top layer and, for a directory,
 * the layers it may merge.  1, or -1 out of memory. */
static int found_from_dirent(const struct ovl_listing *l, const struct ovl_dirent *e, struct ovl_found *f)
{
	uint32_t nlower = dirent_nlower(l, e);
	memset(f, 0, sizeof *f);
	f->layer = e->layer;
	f->layers = malloc((nlower + 1) * sizeof *f->layers);
	if (f->layers == NULL)
		return -1;
	f->layers[0] = e->layer;
	if (nlower)
		memcpy(f->layers + 1, l->lowers + e->lower_off, nlower * sizeof *l->lowers);
	f->nlayers = nlower + 1;
	return 1;
}

int ovl_listing_find(struct ovl_node *dir, const char *name, struct ovl_found *f)
{
	struct ovl_dir *d = dir->dir;
	int res = -1;
	pthread_rwlock_rdlock(&d->lock);
	struct ovl_listing *l = d->listing;
	if (l && ovl_listing_added_type(l, name) >= 0) {
		/* made in the upper layer, where nothing merges with it */
		const struct ovl_dirent upper_only = { .layer = 0 };
		res = found_from_dirent(l, &upper_only, f);
	} else if (l) {
		ssize_t i = ovl_listing_index(l, name);
		res = i == -2 ? -1 : i < 0 ? 0 : found_from_dirent(l, &l->ents[i], f);
		if (res == 0 && l->upper_clean)
			f->upper_wh = OVL_WH_NONE; /* what a create there needs to know */
	}
	pthread_rwlock_unlock(&d->lock);
	return res;
}

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
	int res = dir_listing(fs, n, false, &h->l);
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
	if (off == 0 && h->l->version != atomic_load(&n->dir->version) && dir_listing(fs, n, false, &fresh) == 0) {
		ovl_listing_unref(h->l);
		h->l = fresh;
	}
	atomic_fetch_add(&h->l->refs, 1);
	*out = h->l;
	return 0;
}

static bool listing_gave(const struct ovl_listing *l, off_t off)
{
	return l->gen == 0 || ((uint64_t)off >> l->pos_bits) == l->gen;
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
			if (listing_gave(d->served[i], off))
				l = d->served[i];
		if (l)
			atomic_fetch_add(&l->refs, 1);
		pthread_rwlock_unlock(&d->lock);
		if ((*out = l) != NULL)
			return 0;
	}
	int res = dir_listing(fs, n, false, &l);
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
		  : found_from_dirent(b->l, d, &f) < 0 ? -ENOMEM
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
	size_t first = off_to_pos(l, off), end = plus ? first : l->n + 2, need = 0;
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
		off_t next = pos_to_off(l, i + 1);
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
	int res = dir_listing(fs, dir, true, &l);
	if (res < 0)
		return res;
	pthread_rwlock_rdlock(&dir->dir->lock);
	res = ovl_listing_remaining(l) == 0;
	pthread_rwlock_unlock(&dir->dir->lock);
	ovl_listing_unref(l);
	return res;
}
