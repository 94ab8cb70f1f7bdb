/* The directory fds the nodes hold: one per layer a directory is in,
 * opened from the parent's on first use (so a walk from a cached ancestor
 * costs one openat a level), kept in an LRU list within a budget, closed
 * when idle directories must make room. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "../layers/upper.h"
#include "nodes_table.h"
#include "overlay.h"

static void fd_list_unlink(struct ovl_nodes *t, struct ovl_node *n)
{
	struct ovl_dir *d = n->dir;
	if (d->fd_prev)
		d->fd_prev->dir->fd_next = d->fd_next;
	else
		t->fd_list_head = d->fd_next;
	if (d->fd_next)
		d->fd_next->dir->fd_prev = d->fd_prev;
	else
		t->fd_list_tail = d->fd_prev;
	d->fd_prev = d->fd_next = NULL;
}

static void fd_list_append(struct ovl_nodes *t, struct ovl_node *n)
{
	struct ovl_dir *d = n->dir;
	d->fd_prev = t->fd_list_tail;
	d->fd_next = NULL;
	if (t->fd_list_tail)
		t->fd_list_tail->dir->fd_next = n;
	else
		t->fd_list_head = n;
	t->fd_list_tail = n;
}

void ovl_dir_fds_close(struct ovl_fs *fs, struct ovl_dir *d)
{
	for (uint32_t i = 0; i < d->nlayers; i++)
		if (d->fds[i] >= 0) {
			struct ovl_layer *l = &fs->layers[d->layers[i]];
			l->ops->close(l, d->fds[i]);
			d->fds[i] = -1;
			atomic_fetch_sub(&fs->dir_fds_open, 1);
		}
}

/* Closes the fds of idle directories until down to target.  Locks are only
 * tried: callers of ovl_dir_fd_get hold a node's fd_lock, then this list lock. */
static void evict_dir_fds(struct ovl_fs *fs, long target)
{
	struct ovl_nodes *t = fs->nodes;
	pthread_mutex_lock(&t->fd_list_lock);
	struct ovl_node *n = t->fd_list_head;
	while (n && atomic_load(&fs->dir_fds_open) > target) {
		struct ovl_node *next = n->dir->fd_next;
		struct ovl_dir *d = n->dir;
		if (pthread_mutex_trylock(&d->fd_lock) == 0) {
			if (atomic_load(&d->fd_users) == 0) {
				ovl_dir_fds_close(fs, d);
				fd_list_unlink(t, n);
				d->in_fd_list = false;
			}
			pthread_mutex_unlock(&d->fd_lock);
		}
		n = next;
	}
	pthread_mutex_unlock(&t->fd_list_lock);
}

/* An open that may write an upper object changes upper: upper.c's. */
static int layer_openat(struct ovl_layer *layer, int dirfd, const char *name, int flags)
{
	if (!layer->is_upper || ((flags & O_ACCMODE) == O_RDONLY && !(flags & O_TRUNC)))
		return layer->ops->openat(layer, dirfd, name, flags, 0);
	int fd = ovl_upper_open(layer, dirfd, name, flags);
	if (fd >= 0)
		return fd;
	errno = -fd; /* as the layer ops: ovl_layer_open's callers look at errno */
	return -1;
}

int ovl_layer_open(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd, const char *name, int flags)
{
	int fd = layer_openat(layer, dirfd, name, flags);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
		/* out of fds: idle directories give theirs back, then once more */
		evict_dir_fds(fs, atomic_load(&fs->dir_fds_open) / 2);
		fd = layer_openat(layer, dirfd, name, flags);
	}
	return fd;
}

int ovl_dir_layer_pos(const struct ovl_dir *dir, uint32_t layer)
{
	/* layers[] is ascending: top first, and layer indexes grow downwards. */
	uint32_t lo = 0, hi = dir->nlayers;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (dir->layers[mid] == layer)
			return (int)mid;
		if (dir->layers[mid] < layer)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int dir_fd_get_locked(struct ovl_fs *fs, struct ovl_node *node, uint32_t i, bool *opened);

/* The parent's fd in layer: its position there is read under the lock that
 * a copy-up of the parent (ovl_dir_add_upper) shifts it under, since a
 * walk from below holds no lock of the parent's names. */
static int parent_fd_get(struct ovl_fs *fs, struct ovl_node *parent, uint32_t layer, bool *opened)
{
	if (parent == NULL)
		return -EIO;
	pthread_mutex_lock(&parent->dir->fd_lock);
	int pos = ovl_dir_layer_pos(parent->dir, layer);
	int fd = pos < 0 ? -EIO : dir_fd_get_locked(fs, parent, (uint32_t)pos, opened);
	pthread_mutex_unlock(&parent->dir->fd_lock);
	return fd;
}

/* A use of node's fds: to the LRU tail, only when it has aged, to keep the list lock cold. */
static void fd_lru_touch(struct ovl_fs *fs, struct ovl_node *node, bool opened)
{
	struct ovl_dir *d = node->dir;
	struct ovl_nodes *t = fs->nodes;
	uint64_t now = atomic_fetch_add(&t->fd_clock, 1);
	if (node->parent && (opened || now - atomic_load(&d->fd_stamp) > (uint64_t)fs->dir_fd_budget / 4)) {
		pthread_mutex_lock(&t->fd_list_lock);
		if (d->in_fd_list)
			fd_list_unlink(t, node);
		fd_list_append(t, node);
		d->in_fd_list = true;
		pthread_mutex_unlock(&t->fd_list_lock);
	}
	atomic_store(&d->fd_stamp, now);
}

/* node's fd at position i of its layers, with a user counted (its fd_lock
 * held); *opened: some fd was opened on the way. */
static int dir_fd_get_locked(struct ovl_fs *fs, struct ovl_node *node, uint32_t i, bool *opened)
{
	struct ovl_dir *d = node->dir;
	int fd = d->fds[i];
	bool opened_here = false;
	if (fd < 0) {
		struct ovl_layer *layer = &fs->layers[d->layers[i]];
		int pfd = parent_fd_get(fs, node->parent, d->layers[i], opened);
		if (pfd < 0)
			return pfd;
		fd = ovl_layer_open(fs, layer, pfd, node->name, O_RDONLY | O_DIRECTORY);
		int e = errno;
		ovl_dir_fd_put(node->parent);
		if (fd < 0)
			return -e;
		d->fds[i] = fd;
		*opened = opened_here = true;
		atomic_fetch_add(&fs->dir_fds_open, 1);
	}
	atomic_fetch_add(&d->fd_users, 1);
	fd_lru_touch(fs, node, opened_here);
	return fd;
}

int ovl_dir_fd_get(struct ovl_fs *fs, struct ovl_node *node, uint32_t i)
{
	bool opened = false;
	pthread_mutex_lock(&node->dir->fd_lock);
	int fd = dir_fd_get_locked(fs, node, i, &opened);
	pthread_mutex_unlock(&node->dir->fd_lock);
	if (opened && atomic_load(&fs->dir_fds_open) > fs->dir_fd_budget)
		evict_dir_fds(fs, fs->dir_fd_budget - fs->dir_fd_budget / 8);
	return fd;
}

void ovl_dir_fd_put(struct ovl_node *node)
{
	atomic_fetch_sub(&node->dir->fd_users, 1);
}

void ovl_dir_fds_drop(struct ovl_fs *fs, struct ovl_node *n)
{
	struct ovl_nodes *t = fs->nodes;
	if (n->dir->in_fd_list) {
		pthread_mutex_lock(&t->fd_list_lock);
		fd_list_unlink(t, n);
		pthread_mutex_unlock(&t->fd_list_lock);
	}
	if (n->parent) /* the root's are the layers' root fds */
		ovl_dir_fds_close(fs, n->dir);
}

int ovl_dir_add_upper(struct ovl_fs *fs, struct ovl_node *node, int upper_fd)
{
	struct ovl_dir *d = node->dir;
	uint32_t *layers = malloc((d->nlayers + 1) * sizeof *layers);
	int *fds = malloc((d->nlayers + 1) * sizeof *fds);
	if (layers == NULL || fds == NULL) {
		free(layers);
		free(fds);
		return -ENOMEM;
	}
	pthread_mutex_lock(&d->fd_lock);
	layers[0] = 0;
	fds[0] = upper_fd;
	memcpy(layers + 1, d->layers, d->nlayers * sizeof *layers);
	memcpy(fds + 1, d->fds, d->nlayers * sizeof *fds);
	free(d->layers);
	free(d->fds);
	d->layers = layers;
	d->fds = fds;
	d->nlayers++;
	node->layer = 0;
	if (upper_fd >= 0)
		atomic_fetch_add(&fs->dir_fds_open, 1);
	pthread_mutex_unlock(&d->fd_lock);
	return 0;
}
