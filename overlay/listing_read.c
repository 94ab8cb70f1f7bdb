/* Reading a directory's layers into its merged listing: one pass per layer
 * (its list op), top to bottom, whiteouts and opaque markers seen in the same
 * pass, merged into one snapshot sorted by name (listing.c); the snapshot is
 * cached in the directory node, and lookups are answered from it. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
		ovl_listing_set_offsets(*out, atomic_fetch_add(&d->listings, 1));
	}
	atomic_fetch_add(&fs->stat_listings, 1);
	return *out ? 0 : -ENOMEM;
}

/* The node's cached listing, built on first use; the caller gets a ref.
 * One that names were removed from since it was read serves lookups, and
 * emptiness checks (with_removed), but a reader gets one read afresh. */
int ovl_dir_listing(struct ovl_fs *fs, struct ovl_node *node, bool with_removed, struct ovl_listing **out)
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
	int res = ovl_dir_listing(fs, dir, false, &l);
	if (res == 0)
		ovl_listing_unref(l);
	return res;
}

/* What a listed entry tells a lookup: its top layer and, for a directory,
 * the layers it may merge.  1, or -1 out of memory. */
int ovl_listing_found(const struct ovl_listing *l, const struct ovl_dirent *e, struct ovl_found *f)
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
		res = ovl_listing_found(l, &upper_only, f);
	} else if (l) {
		ssize_t i = ovl_listing_index(l, name);
		res = i == -2 ? -1 : i < 0 ? 0 : ovl_listing_found(l, &l->ents[i], f);
		if (res == 0 && l->upper_clean)
			f->upper_wh = OVL_WH_NONE; /* what a create there needs to know */
	}
	pthread_rwlock_unlock(&d->lock);
	return res;
}

/* ---- changes made through us, noted in the cached listing ---- */
enum { NAME_REMOVED = -1, NOTHING_KNOWN = -2 };

/* The cached listing goes, unless name is a name removed (type
 * NAME_REMOVED) or made (type DT_*) through us, which it can note instead. */
static void dir_changed(struct ovl_node *dir, const char *name, int type)
{
	struct ovl_dir *d = dir->dir;
	atomic_fetch_add(&d->version, 1);
	pthread_rwlock_wrlock(&d->lock);
	struct ovl_listing *l = d->listing;
	if (l && type == NAME_REMOVED && ovl_listing_remove_name(l, name))
		l = NULL;
	else if (l && type >= 0 && ovl_listing_add_name(l, name, (uint8_t)type))
		l = NULL;
	else
		d->listing = NULL;
	pthread_rwlock_unlock(&d->lock);
	if (l) {
		/* listing again must cost no more than the probes it saves, or a
		 * directory being filled is listed once per new name */
		atomic_store(&d->probe_cost, 0);
		atomic_store(&d->list_after, (unsigned)ovl_listing_count(l) * d->nlayers);
		ovl_listing_unref(l);
	}
}

void ovl_dir_changed(struct ovl_node *dir)
{
	dir_changed(dir, NULL, NOTHING_KNOWN);
}

void ovl_dir_name_removed(struct ovl_node *dir, const char *name)
{
	dir_changed(dir, name, NAME_REMOVED);
}

void ovl_dir_name_added(struct ovl_node *dir, const char *name, mode_t mode)
{
	dir_changed(dir, name, IFTODT(mode));
}
