/* Find one name in a merged directory: the top object, and for a directory
 * every layer that merges into it (stopping at a whiteout, a non-directory or
 * an opaque directory).  A cached listing answers without probing layers. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops.h"

#define LIST_AFTER_PROBE_COST 64

void ovl_found_free(struct ovl_found *f)
{
	free(f->layers);
	f->layers = NULL;
}

static int found_add_layer(struct ovl_found *f, uint32_t layer, size_t *cap)
{
	if (ovl_grow(&f->layers, cap, f->nlayers + 1, sizeof *f->layers, 4) < 0)
		return -ENOMEM;
	f->layers[f->nlayers++] = layer;
	return 0;
}

/* Whether the directory `name` below parent's i-th layer is opaque.  A
 * listing has already seen an AUFS ".wh.d" beside "d"; a probe has not. */
static int child_dir_is_opaque(struct ovl_fs *fs, struct ovl_node *parent, uint32_t i, const char *name,
			       bool check_whiteout_file)
{
	struct ovl_layer *layer = &fs->layers[parent->dir->layers[i]];
	int pfd = ovl_dir_fd_get(fs, parent, i);
	if (pfd < 0)
		return pfd;
	int res = check_whiteout_file ? ovl_has_whiteout_file(layer, pfd, name) : 0;
	if (res == 0) {
		int fd = ovl_layer_open(fs, layer, pfd, name, O_RDONLY | O_DIRECTORY);
		if (fd < 0) {
			res = -errno;
		} else {
			res = ovl_layer_dir_is_opaque(layer, fd);
			layer->ops->close(layer, fd);
		}
	}
	ovl_dir_fd_put(parent);
	return res;
}

/* Probes each layer of parent in turn, from its first-th. */
static int lookup_probe(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f,
			uint32_t first)
{
	struct ovl_dir *pd = parent->dir;
	bool found = false;
	size_t cap = 0;
	for (uint32_t i = first; i < pd->nlayers; i++) {
		struct ovl_layer *layer = &fs->layers[pd->layers[i]];
		struct stat st;
		int pfd = ovl_dir_fd_get(fs, parent, i);
		if (pfd < 0)
			return pfd;
		int r = layer->ops->statat(layer, pfd, name, &st);
		int e = errno;
		if (r < 0) {
			/* a whiteout in the last layer hides nothing: skip looking for one */
			bool last = i + 1 == pd->nlayers;
			int wh = e != ENOENT ? -e : last ? 0 : ovl_has_whiteout_file(layer, pfd, name);
			ovl_dir_fd_put(parent);
			if (wh < 0)
				return wh;
			if (layer->is_upper && !last) /* what a create there needs to know */
				f->upper_wh = wh ? OVL_WH_FILE : OVL_WH_NONE;
			if (wh > 0)
				break;
			continue;
		}
		ovl_dir_fd_put(parent);
		if (ovl_stat_is_whiteout(&st)) {
			if (layer->is_upper)
				f->upper_wh = OVL_WH_CHAR;
			break;
		}
		if (!found) {
			found = true;
			f->st = st;
			f->layer = layer->index;
		} else if (!S_ISDIR(st.st_mode)) {
			break; /* a non-directory below a directory ends the merge */
		}
		if (!S_ISDIR(st.st_mode))
			break;
		if (found_add_layer(f, layer->index, &cap) < 0)
			return -ENOMEM;
		if (i + 1 < pd->nlayers) {
			int opq = child_dir_is_opaque(fs, parent, i, name, true);
			if (opq < 0)
				return opq;
			if (opq)
				break;
		}
	}
	return found ? 0 : -ENOENT;
}

/* Completes what the listing told: the top object's stat, and opacity. */
static int lookup_listed(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f)
{
	int pos = ovl_dir_layer_pos(parent->dir, f->layer);
	if (pos < 0)
		return -EIO;
	struct ovl_layer *layer = &fs->layers[f->layer];
	int pfd = ovl_dir_fd_get(fs, parent, (uint32_t)pos);
	if (pfd < 0)
		return pfd;
	int r = layer->ops->statat(layer, pfd, name, &f->st);
	int e = errno;
	ovl_dir_fd_put(parent);
	if (r < 0)
		return -e;
	for (uint32_t k = 0; S_ISDIR(f->st.st_mode) && k + 1 < f->nlayers; k++) {
		int opq = child_dir_is_opaque(fs, parent, (uint32_t)ovl_dir_layer_pos(parent->dir, f->layers[k]), name,
					      false);
		if (opq < 0)
			return opq;
		if (opq) {
			f->nlayers = k + 1;
			break;
		}
	}
	return 0;
}

int ovl_lookup_name(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f)
{
	memset(f, 0, sizeof *f);
	f->upper_wh = -1;
	if (parent->dir == NULL)
		return -ENOTDIR;
	int listed = ovl_listing_find(parent, name, f);
	if (listed == 0)
		return -ENOENT;
	if (listed > 0) {
		int res = lookup_listed(fs, parent, name, f);
		if (res == 0 || res == -ENOMEM)
			return res;
		ovl_found_free(f);
		memset(f, 0, sizeof *f);
		f->upper_wh = -1;
	}
	int res = lookup_probe(fs, parent, name, f, 0);
	if (res < 0)
		ovl_found_free(f);
	return res;
}

/* Probing costs two calls a layer for every name; one listing pass per layer
 * answers them all.  The kernel's lookups list a directory once probes have
 * cost about as much (the daemon's own lookups never do: a directory being
 * changed would be listed again and again). */
static void list_if_probed_enough(struct ovl_fs *fs, struct ovl_node *parent)
{
	struct ovl_dir *d = parent->dir;
	if (d == NULL || d->nlayers < 2 || __atomic_load_n(&d->listing, __ATOMIC_RELAXED) != NULL)
		return;
	uint32_t cost = atomic_fetch_add(&d->probe_cost, d->nlayers);
	uint32_t after = atomic_load(&d->list_after);
	if (cost + d->nlayers >= (after > LIST_AFTER_PROBE_COST ? after : LIST_AFTER_PROBE_COST))
		ovl_dir_load_listing(fs, parent);
}

int ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *parent, const char *name)
{
	struct ovl_found f;
	memset(&f, 0, sizeof f);
	uint32_t first = fs->has_upper && parent->dir->layers[0] == 0;
	int res = lookup_probe(fs, parent, name, &f, first);
	ovl_found_free(&f);
	return res == -ENOENT ? 0 : res < 0 ? res : 1;
}

/* Makes (or finds) the node for what was found and fills the entry; frees f. */
static int entry_from_found(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f,
			    struct fuse_entry_param *e)
{
	struct ovl_node *node = ovl_node_lookup_or_create(fs, parent, name, f->layer, &f->st, f->layers, f->nlayers);
	if (node == NULL) {
		ovl_found_free(f);
		return -ENOMEM;
	}
	/* a copied-up object shows its origin's st_ino (read where readdir does) */
	ino_t origin;
	if (fs->has_upper && f->layer == 0 && parent->dir->nlayers > 1 && node->origin_ino == 0) {
		int pfd = ovl_dir_fd_get(fs, parent, 0);
		if (pfd >= 0) {
			if (ovl_origin_ino(fs, pfd, name, &origin))
				node->origin_ino = origin;
			ovl_dir_fd_put(parent);
		}
	}
	if (fs->layers[f->layer].override_kind != OVL_OVERRIDE_NONE) {
		int pos = ovl_dir_layer_pos(parent->dir, f->layer);
		int pfd = pos < 0 ? -1 : ovl_dir_fd_get(fs, parent, (uint32_t)pos);
		if (pfd >= 0) {
			ovl_node_load_override(fs, node, pfd, name, &f->st);
			ovl_dir_fd_put(parent);
		}
	}
	e->attr = f->st;
	ovl_node_present(fs, node, &e->attr);
	e->ino = node->nodeid;
	e->generation = ovl_node_generation(fs, node);
	ovl_found_free(f);
	return 0;
}

static int entry_begin(struct ovl_fs *fs, const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->entry_timeout = e->attr_timeout = fs->timeout;
	atomic_fetch_add(&fs->stat_lookups, 1);
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	/* never an object of the merged view (COMPAT.md), and programs probe names with stat */
	return ovl_name_is_reserved(name) ? -ENOENT : 0;
}

int ovl_lookup_entry(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct fuse_entry_param *e)
{
	struct ovl_found f;
	int res = entry_begin(fs, name, e);
	if (res == 0)
		res = ovl_lookup_name(fs, parent, name, &f);
	return res < 0 ? res : entry_from_found(fs, parent, name, &f, e);
}

int ovl_lookup_entry_listed(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f,
			    struct fuse_entry_param *e)
{
	int res = entry_begin(fs, name, e);
	if (res < 0) {
		ovl_found_free(f);
		return res;
	}
	res = lookup_listed(fs, parent, name, f);
	if (res < 0 && res != -ENOMEM) {
		ovl_found_free(f); /* the listing is out of date: look again */
		res = ovl_lookup_name(fs, parent, name, f);
	}
	if (res < 0) {
		ovl_found_free(f);
		return res;
	}
	return entry_from_found(fs, parent, name, f, e);
}

void ovl_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *p = ovl_node_get(fs, parent);
	struct fuse_entry_param e;
	if (p == NULL || p->dir == NULL) {
		fuse_reply_err(req, p ? ENOTDIR : ESTALE);
		return;
	}
	ovl_ns_lock(fs, p, false);
	list_if_probed_enough(fs, p);
	int res = ovl_lookup_entry(fs, p, name, &e);
	ovl_ns_unlock(fs, p);
	if (res == -ENOENT) {
		e.ino = 0; /* a negative entry the kernel may cache */
		fuse_reply_entry(req, &e);
	} else if (res < 0) {
		fuse_reply_err(req, -res);
	} else {
		fuse_reply_entry(req, &e);
	}
}

void ovl_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(fs, ino);
	if (n)
		ovl_node_forget(fs, n, nlookup);
	fuse_reply_none(req);
}

void ovl_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	for (size_t i = 0; i < count; i++) {
		struct ovl_node *n = ovl_node_get(fs, forgets[i].ino);
		if (n)
			ovl_node_forget(fs, n, forgets[i].nlookup);
	}
	fuse_reply_none(req);
}
