/* Node table.  A FUSE nodeid is a slot number; a slot's generation grows on
 * every reuse, so a (nodeid, generation) pair is never handed out twice in a
 * mount's life.  Nodes are found by the identity of their backing object
 * (st_dev, st_ino), so every name of a lower hard link is one FUSE inode;
 * with an upper layer each of those names is a node of its own (node_per_name).
 * Directory nodes cache one fd per layer they span, bounded by an LRU. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hash.h"
#include "nodes_table.h"
#include "overlay.h"
#include "readdir.h"

/* The shard a thread allocates slots from, as an index: the same in every
 * mount's table, so one thread-local serves all mounts of the process (a
 * thread that serves two gets its index from the first one's counter; that
 * only spreads threads over shards less evenly in the other). */
static _Thread_local int thread_slot_shard = -1;

static struct slot *slot_at(struct ovl_nodes *t, uint32_t shard, uint64_t idx)
{
	struct slot *chunk = t->chunk_dir[idx >> CHUNK_BITS][shard];
	return chunk ? &chunk[idx & (CHUNK_SIZE - 1)] : NULL;
}

/* Anonymous pages are backed only once written, so a chunk costs memory in
 * proportion to the slots used (calloc would clear it all). */
static struct slot *chunk_new(void)
{
	void *p = mmap(NULL, CHUNK_SIZE * sizeof(struct slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Each thread allocates from a shard of its own (frees go to the slot's shard),
 * so threads rarely share a lock and a mount with few threads touches few chunks. */
static uint32_t my_slot_shard(struct ovl_nodes *t)
{
	if (thread_slot_shard < 0)
		thread_slot_shard = (int)(atomic_fetch_add(&t->next_slot_shard, 1) % SLOT_SHARDS);
	return (uint32_t)thread_slot_shard;
}

/* Gives node a nodeid and generation; shard_hint forces a shard (the root). */
static int slot_alloc(struct ovl_nodes *t, struct ovl_node *node, int shard_hint)
{
	uint32_t shard = shard_hint >= 0 ? (uint32_t)shard_hint : my_slot_shard(t);
	struct slot_shard *s = &t->slot_shards[shard];
	uint64_t idx;
	pthread_mutex_lock(&s->lock);
	if (s->free_head) {
		idx = s->free_head - 1;
		s->free_head = slot_at(t, shard, idx)->next_free;
	} else {
		idx = s->used;
		if (shard == 0 && idx == 0)
			idx = s->used = 1; /* nodeid 0 is not a valid FUSE id */
		if ((idx >> CHUNK_BITS) >= MAX_CHUNKS) {
			pthread_mutex_unlock(&s->lock);
			return -ENFILE;
		}
		if (t->chunk_dir[idx >> CHUNK_BITS][shard] == NULL) {
			struct slot *chunk = chunk_new();
			if (chunk == NULL) {
				pthread_mutex_unlock(&s->lock);
				return -ENOMEM;
			}
			t->chunk_dir[idx >> CHUNK_BITS][shard] = chunk;
		}
		s->used = idx + 1;
	}
	struct slot *sl = slot_at(t, shard, idx);
	sl->generation++;
	node->nodeid = (idx << SLOT_SHARD_BITS) | shard;
	atomic_store(&sl->node, node);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add(&t->nodes_alive, 1);
	return 0;
}

static void slot_free(struct ovl_nodes *t, fuse_ino_t nodeid)
{
	uint32_t shard = nodeid & (SLOT_SHARDS - 1);
	uint64_t idx = nodeid >> SLOT_SHARD_BITS;
	struct slot_shard *s = &t->slot_shards[shard];
	pthread_mutex_lock(&s->lock);
	struct slot *sl = slot_at(t, shard, idx);
	atomic_store(&sl->node, NULL);
	sl->next_free = s->free_head;
	s->free_head = idx + 1;
	pthread_mutex_unlock(&s->lock);
}

struct ovl_node *ovl_node_get(struct ovl_fs *fs, fuse_ino_t nodeid)
{
	uint64_t idx = nodeid >> SLOT_SHARD_BITS;
	if ((idx >> CHUNK_BITS) >= MAX_CHUNKS)
		return NULL;
	struct slot *sl = slot_at(fs->nodes, nodeid & (SLOT_SHARDS - 1), idx);
	return sl ? atomic_load(&sl->node) : NULL;
}

uint64_t ovl_node_generation(struct ovl_fs *fs, const struct ovl_node *node)
{
	/* the slot is the node's until it is freed: its generation stays put */
	return slot_at(fs->nodes, node->nodeid & (SLOT_SHARDS - 1), node->nodeid >> SLOT_SHARD_BITS)->generation;
}

struct ovl_node *ovl_req_node(fuse_req_t req, fuse_ino_t nodeid)
{
	struct ovl_node *n = ovl_node_get(ovl_fs_of(req), nodeid);
	if (n == NULL)
		fuse_reply_err(req, ESTALE);
	return n;
}

struct ovl_node *ovl_req_dir(fuse_req_t req, fuse_ino_t nodeid)
{
	struct ovl_node *n = ovl_req_node(req, nodeid);
	if (n && n->dir == NULL) {
		fuse_reply_err(req, ENOTDIR);
		return NULL;
	}
	return n;
}

/* ---- identity hash ---- */
static uint64_t id_hash(dev_t dev, ino_t ino)
{
	uint64_t key[2] = { (uint64_t)dev, (uint64_t)ino };
	return ovl_hash_bytes(key, sizeof key, 0);
}

static struct id_shard *id_shard_of(struct ovl_fs *fs, dev_t dev, ino_t ino)
{
	return &fs->nodes->id_shards[id_hash(dev, ino) % ID_SHARDS];
}

static struct id_shard *shard_of(struct ovl_fs *fs, const struct ovl_node *n)
{
	return id_shard_of(fs, n->dev, n->ino);
}

/* Locks the shard guarding n's counts.  That is the shard of its identity,
 * which a copy-up may change (under both shards' locks): check after locking. */
static struct id_shard *lock_node_shard(struct ovl_fs *fs, const struct ovl_node *n)
{
	for (;;) {
		struct id_shard *s = shard_of(fs, n);
		pthread_mutex_lock(&s->lock);
		if (s == shard_of(fs, n))
			return s;
		pthread_mutex_unlock(&s->lock);
	}
}

/* A node per name (node_per_name) is hashed by its name too: the thousands of
 * names one lower inode may have would otherwise share one chain, and every
 * lookup or listing would walk it (quadratic). */
static uint64_t name_key(dev_t dev, ino_t ino, const struct ovl_node *parent, const char *name)
{
	return ovl_hash_bytes(name, strlen(name), id_hash(dev, ino) ^ (uint64_t)(uintptr_t)parent);
}

static uint64_t node_key(const struct ovl_node *n)
{
	return n->per_name ? name_key(n->dev, n->ino, n->parent, n->name) : id_hash(n->dev, n->ino);
}

/* Shards go by id_hash; within one, buckets by the rest of the key. */
static uint64_t chain_key(uint64_t key)
{
	return key / ID_SHARDS;
}

static uint64_t node_chain_key(const void *n)
{
	return chain_key(node_key(n));
}

#define HASH_NEXT offsetof(struct ovl_node, hash_next)

static int id_insert(struct id_shard *s, struct ovl_node *n)
{
	return ovl_chain_add(&s->chain, n, node_chain_key(n), HASH_NEXT, node_chain_key);
}

static void id_remove(struct id_shard *s, struct ovl_node *n)
{
	ovl_chain_del(&s->chain, n, node_chain_key(n), HASH_NEXT);
}

static bool names(const struct ovl_node *n, const struct ovl_node *parent, const char *name)
{
	return n->parent == parent && strcmp(n->name, name) == 0;
}

/* The node of (dev, ino); with parent set, only one that stands for
 * parent/name (a node per name first); without, only a shared one. */
static struct ovl_node *id_find(struct id_shard *s, dev_t dev, ino_t ino, const struct ovl_node *parent,
				const char *name)
{
	if (parent)
		for (struct ovl_node *n = ovl_chain_first(&s->chain, chain_key(name_key(dev, ino, parent, name))); n;
		     n = n->hash_next)
			if (n->per_name && n->dev == dev && n->ino == ino && names(n, parent, name))
				return n;
	for (struct ovl_node *n = ovl_chain_first(&s->chain, chain_key(id_hash(dev, ino))); n; n = n->hash_next)
		if (!n->per_name && n->dev == dev && n->ino == ino && (parent == NULL || names(n, parent, name)))
			return n;
	return NULL;
}

/* As the kernel overlay without index: when the mount can copy up, each name
 * of a lower hard link is an inode of its own (same st_ino), because a copy-up
 * breaks the link for the name written to only.  Read-only, they are one. */
static bool node_per_name(const struct ovl_fs *fs, uint32_t layer, const struct stat *st)
{
	return fs->has_upper && layer != 0 && !S_ISDIR(st->st_mode) && st->st_nlink > 1;
}

/* ---- node life ---- */
static struct ovl_node *node_alloc(struct ovl_fs *fs, struct ovl_node *parent, const char *name, uint32_t layer,
				   const struct stat *st, const uint32_t *layers, uint32_t nlayers)
{
	size_t len = strlen(name) + 1;
	struct ovl_node *n = calloc(1, offsetof(struct ovl_node, first_name) + len);
	if (n == NULL)
		return NULL;
	n->name = memcpy(n->first_name, name, len);
	n->parent = parent;
	n->layer = layer;
	n->type = st->st_mode & S_IFMT;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	if (S_ISDIR(st->st_mode)) {
		struct ovl_dir *d = calloc(1, sizeof *d);
		if (d == NULL)
			goto fail;
		n->dir = d;
		d->nlayers = nlayers;
		d->layers = malloc(nlayers * sizeof *d->layers);
		d->fds = malloc(nlayers * sizeof *d->fds);
		if (d->layers == NULL || d->fds == NULL)
			goto fail;
		memcpy(d->layers, layers, nlayers * sizeof *layers);
		for (uint32_t i = 0; i < nlayers; i++)
			d->fds[i] = -1;
		ovl_locks_init(&d->ns);
		pthread_rwlock_init(&d->lock, NULL);
		pthread_mutex_init(&d->fd_lock, NULL);
		atomic_fetch_add(&fs->nodes->dirs_alive, 1);
	}
	return n;
fail:
	if (n->dir) {
		free(n->dir->layers);
		free(n->dir->fds);
		free(n->dir);
	}
	free(n);
	return NULL;
}

/* Frees the node and what it holds but its directory fds and aliases. */
static void node_free(struct ovl_node *n)
{
	if (n->dir) {
		struct ovl_dir *d = n->dir;
		if (d->listing)
			ovl_listing_unref(d->listing);
		for (size_t i = 0; i < OVL_SERVED_LISTINGS && d->served[i]; i++)
			ovl_listing_unref(d->served[i]);
		pthread_rwlock_destroy(&d->ns);
		pthread_rwlock_destroy(&d->lock);
		pthread_mutex_destroy(&d->fd_lock);
		free(d->layers);
		free(d->fds);
		free(d);
	}
	if (n->rare) {
		if (n->rare->orphan_fd >= 0)
			close(n->rare->orphan_fd);
		free(n->rare);
	}
	if (n->name != n->first_name)
		free(n->name);
	free(n);
}

static void node_destroy(struct ovl_fs *fs, struct ovl_node *n)
{
	struct ovl_nodes *t = fs->nodes;
	if (n->nodeid) {
		slot_free(t, n->nodeid);
		atomic_fetch_sub(&t->nodes_alive, 1);
	}
	if (n->dir) {
		ovl_dir_fds_drop(fs, n);
		atomic_fetch_sub(&t->dirs_alive, 1);
	}
	if (n->rare)
		ovl_node_drop_aliases(fs, n);
	node_free(n);
}

void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node)
{
	struct id_shard *s = lock_node_shard(fs, node);
	node->refs++;
	pthread_mutex_unlock(&s->lock);
}

/* Drops refs and, if one was the last, frees the node and walks up. */
static void node_release(struct ovl_fs *fs, struct ovl_node *n, uint64_t nlookup, uint32_t refs)
{
	while (n) {
		struct id_shard *s = lock_node_shard(fs, n);
		bool dead = false;
		if (nlookup) {
			n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
			if (n->nlookup == 0)
				refs++;
		}
		n->refs -= refs;
		if (n->refs == 0) {
			if (n->hashed)
				id_remove(s, n);
			dead = true;
		}
		pthread_mutex_unlock(&s->lock);
		if (!dead)
			return;
		struct ovl_node *parent = n->parent;
		node_destroy(fs, n);
		n = parent;
		nlookup = 0;
		refs = 1;
	}
}

void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node)
{
	node_release(fs, node, 0, 1);
}

void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup)
{
	atomic_fetch_add(&fs->stat_forgets, 1);
	node_release(fs, node, nlookup, 0);
}

/* An upper hard link's names share one node: one found under another name
 * is remembered, so that the node can take it when its own goes.  NULL: the
 * node lost its last name meanwhile (a removal in another directory), and
 * is no longer found; the caller looks again. */
static struct ovl_node *found_by_identity(struct ovl_fs *fs, struct ovl_node *n, struct ovl_node *parent,
					  const char *name)
{
	/* out of memory: the node keeps its name */
	if (n->dir == NULL && ovl_node_add_alias(fs, n, parent, name) == -ESTALE) {
		ovl_node_unhash(fs, n);
		node_release(fs, n, 1, 0);
		return NULL;
	}
	return n;
}

struct ovl_node *ovl_node_lookup_or_create(struct ovl_fs *fs, struct ovl_node *parent, const char *name,
					   uint32_t layer, const struct stat *st, const uint32_t *layers,
					   uint32_t nlayers)
{
	struct id_shard *s = id_shard_of(fs, st->st_dev, st->st_ino);
	const struct ovl_node *named = node_per_name(fs, layer, st) ? parent : NULL;
again:
	pthread_mutex_lock(&s->lock);
	struct ovl_node *n = id_find(s, st->st_dev, st->st_ino, named, name);
	if (n) {
		if (n->nlookup++ == 0)
			n->refs++;
		pthread_mutex_unlock(&s->lock);
		if ((n = found_by_identity(fs, n, parent, name)) == NULL)
			goto again;
		return n;
	}
	pthread_mutex_unlock(&s->lock);

	n = node_alloc(fs, parent, name, layer, st, layers, nlayers);
	if (n == NULL)
		return NULL;
	if (slot_alloc(fs->nodes, n, -1) < 0) {
		n->parent = NULL;
		node_destroy(fs, n);
		return NULL;
	}
	ovl_node_ref(fs, parent);

	n->per_name = named != NULL;
	pthread_mutex_lock(&s->lock);
	struct ovl_node *raced = id_find(s, st->st_dev, st->st_ino, named, name);
	if (raced == NULL && id_insert(s, n) == 0) {
		n->hashed = true;
		n->nlookup = 1;
		n->refs = 1;
		pthread_mutex_unlock(&s->lock);
		return n;
	}
	if (raced && raced->nlookup++ == 0)
		raced->refs++;
	pthread_mutex_unlock(&s->lock);
	node_destroy(fs, n);
	ovl_node_unref(fs, parent);
	if (raced && (raced = found_by_identity(fs, raced, parent, name)) == NULL)
		goto again;
	return raced;
}

struct ovl_node *ovl_node_new_root(struct ovl_fs *fs, const struct stat *st, const uint32_t *layers,
				   uint32_t nlayers)
{
	struct ovl_node *n = node_alloc(fs, NULL, "", layers[0], st, layers, nlayers);
	if (n == NULL)
		return NULL;
	if (slot_alloc(fs->nodes, n, FUSE_ROOT_ID) < 0 || n->nodeid != FUSE_ROOT_ID) {
		node_destroy(fs, n);
		return NULL;
	}
	for (uint32_t i = 0; i < nlayers; i++)
		n->dir->fds[i] = fs->layers[layers[i]].root_fd;
	n->nlookup = 1;
	n->refs = 2; /* the kernel's, and one that keeps the root for the mount's life */
	struct id_shard *s = shard_of(fs, n);
	pthread_mutex_lock(&s->lock);
	int res = id_insert(s, n);
	n->hashed = res == 0;
	pthread_mutex_unlock(&s->lock);
	return res < 0 ? NULL : n;
}

struct ovl_nodes *ovl_nodes_new(void)
{
	/* mmap'ed, not calloc'ed: its pages cost memory only once touched */
	struct ovl_nodes *t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	for (size_t i = 0; i < SLOT_SHARDS; i++)
		pthread_mutex_init(&t->slot_shards[i].lock, NULL);
	for (size_t i = 0; i < ID_SHARDS; i++)
		pthread_mutex_init(&t->id_shards[i].lock, NULL);
	pthread_mutex_init(&t->fd_list_lock, NULL);
	return t;
}

void ovl_nodes_free(struct ovl_fs *fs)
{
	struct ovl_nodes *t = fs->nodes;
	if (t == NULL)
		return;
	for (size_t c = 0; c < MAX_CHUNKS; c++)
		for (uint32_t shard = 0; shard < SLOT_SHARDS; shard++) {
			struct slot *chunk = t->chunk_dir[c][shard];
			if (chunk == NULL)
				continue;
			/* every node is in the table: none walks to its parent
			 * here, and aliases go with their table (ovl_aliases_free) */
			for (size_t i = 0; i < CHUNK_SIZE; i++) {
				struct ovl_node *n = chunk[i].node;
				if (n == NULL)
					continue;
				if (n->dir && n->parent)
					ovl_dir_fds_close(fs, n->dir);
				node_free(n);
			}
			munmap(chunk, CHUNK_SIZE * sizeof(struct slot));
		}
	for (size_t i = 0; i < SLOT_SHARDS; i++)
		pthread_mutex_destroy(&t->slot_shards[i].lock);
	for (size_t i = 0; i < ID_SHARDS; i++) {
		pthread_mutex_destroy(&t->id_shards[i].lock);
		ovl_chain_free(&t->id_shards[i].chain);
	}
	pthread_mutex_destroy(&t->fd_list_lock);
	munmap(t, sizeof *t);
	fs->nodes = NULL;
}

void ovl_nodes_counters(struct ovl_fs *fs, long *nodes, long *dirs)
{
	*nodes = atomic_load(&fs->nodes->nodes_alive);
	*dirs = atomic_load(&fs->nodes->dirs_alive);
}

/* ---- changes to the namespace ---- */
void ovl_node_rehash(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino)
{
	struct id_shard *from = lock_node_shard(fs, node);
	struct id_shard *to = id_shard_of(fs, dev, ino);
	if (to != from) {
		/* both locks, in address order; `from` stays ours: only we rehash */
		pthread_mutex_unlock(&from->lock);
		pthread_mutex_lock(from < to ? &from->lock : &to->lock);
		pthread_mutex_lock(from < to ? &to->lock : &from->lock);
	}
	if (node->hashed)
		id_remove(from, node);
	node->dev = dev;
	node->ino = ino;
	node->per_name = false; /* the copy is an inode of its own */
	if (id_find(to, dev, ino, NULL, NULL) == NULL && id_insert(to, node) == 0)
		node->hashed = true;
	else
		node->hashed = false;
	pthread_mutex_unlock(&from->lock);
	if (to != from)
		pthread_mutex_unlock(&to->lock);
}

struct ovl_node *ovl_node_find(struct ovl_fs *fs, dev_t dev, ino_t ino, const struct ovl_node *parent,
			       const char *name)
{
	struct id_shard *s = id_shard_of(fs, dev, ino);
	pthread_mutex_lock(&s->lock);
	struct ovl_node *n = id_find(s, dev, ino, parent, name);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&s->lock);
	return n;
}

bool ovl_node_peek(struct ovl_fs *fs, dev_t dev, ino_t ino, const struct ovl_node *parent, const char *name,
		   struct ovl_node_peek *out)
{
	struct id_shard *s = id_shard_of(fs, dev, ino);
	pthread_mutex_lock(&s->lock);
	struct ovl_node *n = id_find(s, dev, ino, parent, name);
	if (n)
		*out = (struct ovl_node_peek){ .held = n->nlookup > 0 && !n->unlinked, .origin_ino = n->origin_ino };
	pthread_mutex_unlock(&s->lock);
	return n != NULL;
}

void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node)
{
	struct id_shard *s = lock_node_shard(fs, node);
	if (node->hashed)
		id_remove(s, node);
	node->hashed = false;
	pthread_mutex_unlock(&s->lock);
}

void ovl_node_detach(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino)
{
	ovl_node_unhash(fs, node);
	node->detached = true;
	node->dev = dev;
	node->ino = ino;
}

void ovl_node_unhash_id(struct ovl_fs *fs, dev_t dev, ino_t ino)
{
	struct id_shard *s = id_shard_of(fs, dev, ino);
	pthread_mutex_lock(&s->lock);
	struct ovl_node *n = id_find(s, dev, ino, NULL, NULL);
	if (n) {
		id_remove(s, n);
		n->hashed = false;
	}
	pthread_mutex_unlock(&s->lock);
}

/* Moves the node to newparent/newname (locks.c: which locks). */
static int node_move(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *newparent, const char *newname)
{
	char *name = strdup(newname);
	if (name == NULL)
		return -ENOMEM;
	struct ovl_node *old = node->parent;
	char *old_name = node->name != node->first_name ? node->name : NULL;
	if (old != newparent)
		ovl_node_ref(fs, newparent);
	/* a node per name is hashed by its name: rehashed under its shard's lock */
	struct id_shard *s = node->per_name ? lock_node_shard(fs, node) : NULL;
	if (s && node->hashed)
		id_remove(s, node);
	node->name = name;
	/* read before its lock is taken (locks.c place_of) */
	__atomic_store_n(&node->parent, newparent, __ATOMIC_RELEASE);
	if (s) {
		if (node->hashed && id_insert(s, node) < 0)
			node->hashed = false;
		pthread_mutex_unlock(&s->lock);
	}
	free(old_name);
	if (old != newparent)
		ovl_node_unref(fs, old);
	return 0;
}

struct ovl_node_rare *ovl_node_rare(struct ovl_node *node)
{
	struct ovl_node_rare *r = atomic_load(&node->rare), *none = NULL;
	if (r || (r = malloc(sizeof *r)) == NULL)
		return r;
	*r = (struct ovl_node_rare){ .aliases = NULL, .orphan_fd = -1 };
	/* lookups (their directory's ns read) may race to make it */
	if (!atomic_compare_exchange_strong(&node->rare, &none, r)) {
		free(r);
		r = none;
	}
	return r;
}

int ovl_node_orphan_fd(const struct ovl_node *node)
{
	return node->rare ? node->rare->orphan_fd : -1;
}

void ovl_node_keep_orphan(struct ovl_fs *fs, struct ovl_node *node, int upfd, const char *name)
{
	struct ovl_node_rare *r = ovl_node_rare(node);
	/* without it, the node's getattr answers ENOENT, as before it was kept */
	if (r && r->orphan_fd < 0)
		r->orphan_fd = ovl_layer_open(fs, &fs->layers[0], upfd, name, O_PATH);
}

/* ---- aliases: the other names of a node that several names share ----
Other names of a node that several names share: an upper hard link's, and
 * a lower hard link's on a mount without an upper layer (nodes.c).  Each such
 * node lists the names it was found under besides its own, so that it can
 * take one of them when its own goes.  One table over all lists finds
 * (node, parent, name) at once: a directory of thousands of names of one
 * inode is listed and emptied in linear time. */

static uint64_t alias_key(const struct ovl_node *node, const struct ovl_node *parent, const char *name)
{
	uint64_t seed = (uint64_t)(uintptr_t)node * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)parent;
	return ovl_hash_bytes(name, strlen(name), seed);
}

static uint64_t key_of(const void *item)
{
	const struct ovl_alias *a = item;
	return alias_key(a->node, a->parent, a->name);
}

#define ALIAS_NEXT offsetof(struct ovl_alias, hash_next)

static bool is_name(const struct ovl_node *parent, const char *name, const struct ovl_node *p, const char *n)
{
	return parent == p && strcmp(name, n) == 0;
}

static struct ovl_alias *table_find(struct ovl_aliases *t, const struct ovl_node *node,
				    const struct ovl_node *parent, const char *name)
{
	for (struct ovl_alias *a = ovl_chain_first(&t->chain, alias_key(node, parent, name)); a; a = a->hash_next)
		if (a->node == node && is_name(a->parent, a->name, parent, name))
			return a;
	return NULL;
}

/* Takes a out of its node's list and the table; it goes on *dropped, to be
 * freed once the lock is let go (freeing unrefs its parent). */
static void unlink_alias(struct ovl_aliases *t, struct ovl_alias *a, struct ovl_alias **dropped)
{
	*a->pprev = a->next;
	if (a->next)
		a->next->pprev = a->pprev;
	ovl_chain_del(&t->chain, a, key_of(a), ALIAS_NEXT);
	a->next = *dropped;
	*dropped = a;
}

static void free_dropped(struct ovl_fs *fs, struct ovl_alias *a)
{
	for (struct ovl_alias *next; a; a = next) {
		next = a->next;
		ovl_node_unref(fs, a->parent);
		free(a->name);
		free(a);
	}
}

int ovl_node_add_alias(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name)
{
	struct ovl_aliases *t = &fs->aliases;
	int res = 0;
	pthread_mutex_lock(&t->lock);
	if (node->unlinked) {
		pthread_mutex_unlock(&t->lock);
		return -ESTALE; /* its last name went (ovl_node_name_gone) */
	}
	if (is_name(node->parent, node->name, parent, name) || table_find(t, node, parent, name)) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	struct ovl_node_rare *r = ovl_node_rare(node);
	struct ovl_alias *a = r ? calloc(1, sizeof *a) : NULL;
	if (a)
		*a = (struct ovl_alias){ .node = node, .parent = parent, .name = strdup(name) };
	if (a == NULL || a->name == NULL || ovl_chain_add(&t->chain, a, key_of(a), ALIAS_NEXT, key_of) < 0) {
		if (a)
			free(a->name);
		free(a);
		res = -ENOMEM;
	} else {
		ovl_node_ref(fs, parent);
		a->next = r->aliases;
		if (a->next)
			a->next->pprev = &a->next;
		a->pprev = &r->aliases;
		r->aliases = a;
	}
	pthread_mutex_unlock(&t->lock);
	return res;
}

/* Whether parent/name (in the upper layer) is still the node's object: an
 * alias may have been renamed away since it was seen. */
static bool alias_names_node(struct ovl_fs *fs, const struct ovl_alias *a, const struct ovl_node *node)
{
	struct stat st;
	int fd = a->parent->dir && ovl_node_is_upper(fs, a->parent) ? ovl_dir_fd_get(fs, a->parent, 0) : -1;
	if (fd < 0)
		return false;
	bool same = fstatat(fd, a->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == node->dev &&
		    st.st_ino == node->ino;
	ovl_dir_fd_put(a->parent);
	return same;
}

bool ovl_node_name_gone(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name,
			bool tree_held)
{
	struct ovl_aliases *t = &fs->aliases;
	struct ovl_alias *dropped = NULL, *a;
	bool checked_all = true;
	pthread_mutex_lock(&t->lock);
	bool own = is_name(node->parent, node->name, parent, name);
	if (!own && (a = table_find(t, node, parent, name)) != NULL)
		unlink_alias(t, a, &dropped);
	/* the node loses its own name: it takes the first alias that still
	 * names its object; those that do not any more go */
	while (own && node->rare && (a = node->rare->aliases) != NULL) {
		/* An alias in another directory is checked with that directory's
		 * names still: its lock is only tried (we hold parent's, and a
		 * mover there may wait for it); the tree lock holds them all. */
		struct ovl_node *there = a->parent;
		bool lock_there = !tree_held && there != parent;
		if (lock_there && pthread_rwlock_trywrlock(&there->dir->ns) != 0) {
			checked_all = false;
			break;
		}
		bool taken = alias_names_node(fs, a, node);
		unlink_alias(t, a, &dropped);
		if (taken) {
			node_move(fs, node, there, a->name);
			own = false;
		}
		if (lock_there)
			ovl_dir_unlock(there);
	}
	if (own && checked_all) {
		/* Its last name known to us went: a later lookup of another name
		 * of the object (never looked up so far) must get a node of its
		 * own, not this one, whose name is gone; open files keep this.
		 * Under the alias lock: a lookup that found it meanwhile adds no
		 * alias to it, and looks again. */
		node->unlinked = true;
		ovl_node_unhash(fs, node);
	}
	pthread_mutex_unlock(&t->lock);
	free_dropped(fs, dropped);
	return checked_all;
}

void ovl_node_renamed(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name,
		      struct ovl_node *newparent, const char *newname)
{
	struct ovl_aliases *t = &fs->aliases;
	struct ovl_alias *dropped = NULL, *a;
	/* read under the lock a removal elsewhere moves the node under */
	pthread_mutex_lock(&t->lock);
	bool own = is_name(node->parent, node->name, parent, name);
	if (own)
		node_move(fs, node, newparent, newname);
	else if ((a = table_find(t, node, parent, name)) != NULL)
		unlink_alias(t, a, &dropped);
	pthread_mutex_unlock(&t->lock);
	free_dropped(fs, dropped);
	if (!own)
		ovl_node_add_alias(fs, node, newparent, newname);
	else if (newparent->dir->nlayers == 1)
		node->origin_ino = 0; /* readdir there shows the upper st_ino */
}

void ovl_node_drop_aliases(struct ovl_fs *fs, struct ovl_node *node)
{
	if (node->rare == NULL || node->rare->aliases == NULL)
		return;
	struct ovl_aliases *t = &fs->aliases;
	struct ovl_alias *dropped = NULL;
	pthread_mutex_lock(&t->lock);
	while (node->rare->aliases)
		unlink_alias(t, node->rare->aliases, &dropped);
	pthread_mutex_unlock(&t->lock);
	free_dropped(fs, dropped);
}

void ovl_aliases_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->aliases.lock, NULL);
}

void ovl_aliases_free(struct ovl_fs *fs)
{
	struct ovl_aliases *t = &fs->aliases;
	for (size_t i = 0; i < t->chain.nbuckets; i++)
		for (struct ovl_alias *a = t->chain.buckets[i], *next; a; a = next) {
			next = a->hash_next;
			free(a->name);
			free(a);
		}
	ovl_chain_free(&t->chain);
	pthread_mutex_destroy(&t->lock);
}
