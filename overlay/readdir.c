/* A merged directory listing: one getdents pass per layer, top to bottom,
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

/* ---- the pure merge (unit tested on fake listings) ---- */
enum { ENT_VISIBLE, ENT_HIDDEN };

struct merge_ent {
	uint32_t name_off;
	uint32_t name_len;
	uint32_t layer;
	ino_t ino;
	uint8_t type;
	uint8_t state;
	bool ino_shown;
	bool closed; /* a directory that takes no more lower layers */
	uint32_t nlower;
	size_t lower_cap;
	uint32_t *lower;
};

struct ovl_merge {
	char *pool;
	size_t pool_len, pool_cap;
	struct merge_ent *ents;
	size_t n, cap;
	uint32_t *table; /* index + 1 into ents; open addressing */
	size_t table_cap;
	bool fresh;           /* nothing merged before this layer: its names cannot repeat */
	uint32_t fresh_slot;  /* where merge_find points while fresh */
	bool stopped;
};

/* 24 bytes: a listing is kept for every directory read, entry by entry. */
struct ovl_dirent {
	ino_t ino;
	uint32_t name_off;  /* into the listing's pool */
	uint32_t layer;
	uint32_t lower_off; /* index + 1 into the listing's lowers: the count, then the layers; 0: none */
	uint8_t name_len;   /* getdents names are at most NAME_MAX */
	uint8_t type;
	bool ino_shown;
	bool removed;       /* through us, since the listing was read (see ovl_listing_remove_name) */
};

struct ovl_listing {
	atomic_int refs;
	unsigned version;  /* of the directory when it was read */
	size_t n;
	struct ovl_dirent *ents;
	char *pool;
	uint32_t *lowers;
	_Atomic(uint32_t *) table; /* index + 1 into ents; built on the first lookup */
	size_t table_cap;
	size_t nremoved;   /* under the directory's lock */
	uint32_t gen;      /* in its offsets, above pos_bits (see pos_to_off); 0: none */
	uint8_t pos_bits;
	struct added *added; /* under the directory's lock; NULL: none */
	/* The upper part was read and held no whiteout of any spelling, and
	 * none was made since (a removal may make one): a name absent here
	 * has nothing in the upper layer to replace.  Under the directory's lock. */
	bool upper_clean;
};

/* Names made through us since the listing was read (see
 * ovl_listing_add_name): an open-addressing set over a pool of names. */
struct added_slot {
	uint32_t name_off;  /* + 1 into pool; 0: free */
	uint8_t type;
	bool removed;       /* removed again: a tombstone that keeps the probe chain */
};

struct added {
	struct added_slot *slots;
	size_t cap, used, live;
	char *pool;
	size_t pool_len, pool_cap;
};

static const char *dirent_name(const struct ovl_listing *l, const struct ovl_dirent *d)
{
	return l->pool + d->name_off;
}

static uint32_t dirent_nlower(const struct ovl_listing *l, const struct ovl_dirent *d)
{
	return d->lower_off ? l->lowers[d->lower_off - 1] : 0;
}

struct ovl_merge *ovl_merge_new(void)
{
	return calloc(1, sizeof(struct ovl_merge));
}

static const char *ent_name(const struct ovl_merge *m, const struct merge_ent *e)
{
	return m->pool + e->name_off;
}

static uint64_t name_hash(const char *name, size_t len)
{
	return XXH3_64bits(name, len);
}

/* (Re)builds the table for at least `need` names, from every entry so far. */
static int table_grow(struct ovl_merge *m, size_t need)
{
	size_t cap = m->table_cap ? m->table_cap * 2 : 256;
	while (cap < need * 2)
		cap *= 2;
	uint32_t *t = calloc(cap, sizeof *t);
	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < m->n; i++) {
		size_t h = name_hash(ent_name(m, &m->ents[i]), m->ents[i].name_len) & (cap - 1);
		while (t[h])
			h = (h + 1) & (cap - 1);
		t[h] = (uint32_t)i + 1;
	}
	free(m->table);
	m->table = t;
	m->table_cap = cap;
	return 0;
}

/* The slot for name: holds its entry index + 1, or 0 where it would go. */
static uint32_t *table_slot(struct ovl_merge *m, const char *name, size_t len)
{
	size_t h = name_hash(name, len) & (m->table_cap - 1);
	while (m->table[h]) {
		struct merge_ent *e = &m->ents[m->table[h] - 1];
		if (e->name_len == len && memcmp(ent_name(m, e), name, len) == 0)
			break;
		h = (h + 1) & (m->table_cap - 1);
	}
	return &m->table[h];
}

/* The entry for name, or NULL with *slot where it goes (NULL: out of memory).
 * `incoming` sizes a table built now for the names still to come. */
static struct merge_ent *merge_find(struct ovl_merge *m, const char *name, size_t len, uint32_t **slot,
				    size_t incoming)
{
	*slot = NULL;
	if (m->fresh) {
		m->fresh_slot = 0; /* the table is built when a later layer needs it */
		*slot = &m->fresh_slot;
		return NULL;
	}
	if ((m->n + 1) * 2 > m->table_cap && table_grow(m, m->n + incoming) < 0)
		return NULL;
	*slot = table_slot(m, name, len);
	return **slot ? &m->ents[**slot - 1] : NULL;
}

static int merge_insert(struct ovl_merge *m, uint32_t *slot, const char *name, size_t len, uint32_t layer,
			const struct ovl_raw_entry *raw, uint8_t state)
{
	if (ovl_grow(&m->ents, &m->cap, m->n + 1, sizeof *m->ents, 64) < 0 ||
	    ovl_grow(&m->pool, &m->pool_cap, m->pool_len + len + 1, 1, 4096) < 0)
		return -ENOMEM;
	memcpy(m->pool + m->pool_len, name, len);
	m->pool[m->pool_len + len] = '\0';
	m->ents[m->n] = (struct merge_ent){ .name_off = (uint32_t)m->pool_len,
					    .name_len = (uint32_t)len,
					    .layer = layer,
					    .ino = raw->ino,
					    .ino_shown = raw->ino_shown,
					    .type = raw->type,
					    .state = state };
	m->pool_len += len + 1;
	*slot = (uint32_t)++m->n;
	return 0;
}

static int ent_add_lower(struct merge_ent *e, uint32_t layer)
{
	if (ovl_grow(&e->lower, &e->lower_cap, e->nlower + 1, sizeof *e->lower, 2) < 0)
		return -ENOMEM;
	e->lower[e->nlower++] = layer;
	return 0;
}

int ovl_merge_layer(struct ovl_merge *m, uint32_t layer, const struct ovl_raw_entry *raw, size_t n)
{
	bool opaque = false;
	bool fresh = m->n == 0;
	if (m->stopped)
		return 1;
	/* Objects first, then this layer's whiteouts: a whiteout hides only what lies below it. */
	for (int pass = 0; pass < 2; pass++) {
		m->fresh = fresh && pass == 0;
		for (size_t i = 0; i < n; i++) {
			const char *name = raw[i].name;
			if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
				continue;
			const char *hidden = raw[i].whiteout ? name : ovl_whiteout_target(name);
			if (ovl_name_is_opaque_marker(name))
				opaque = true;
			if (ovl_name_is_reserved(name) && hidden == NULL)
				continue; /* other .wh..wh. metadata */
			if ((pass == 0) != (hidden == NULL))
				continue;
			const char *key = hidden ? hidden : name;
			size_t len = raw[i].len ? raw[i].len - (size_t)(key - name) : strlen(key);
			uint32_t *slot;
			struct merge_ent *e = merge_find(m, key, len, &slot, n);
			if (e == NULL && slot == NULL)
				return -ENOMEM;
			if (e == NULL) {
				if (merge_insert(m, slot, key, len, layer, &raw[i], hidden ? ENT_HIDDEN : ENT_VISIBLE) < 0)
					return -ENOMEM;
				continue;
			}
			if (e->state != ENT_VISIBLE || e->type != DT_DIR || e->closed)
				continue;
			if (hidden || raw[i].type != DT_DIR)
				e->closed = true; /* whiteout or non-directory below: the merge ends */
			else if (e->layer != layer && ent_add_lower(e, layer) < 0)
				return -ENOMEM;
		}
	}
	if (opaque)
		m->stopped = true;
	return opaque;
}

struct sort_key {
	uint64_t key; /* 8 name bytes after the common prefix, big-endian */
	uint32_t index;
	uint32_t skip; /* where the name's bytes after the key start */
	const char *name;
};

static int sort_key_cmp(const void *a, const void *b)
{
	const struct sort_key *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	/* equal keys hold no NUL, so both names go on past them */
	return strcmp(x->name + x->skip, y->name + y->skip);
}

/* LSD radix sort on the 64-bit keys, one byte a pass; passes where every key
 * has the same byte are skipped. */
static void radix_sort_keys(struct sort_key *keys, struct sort_key *tmp, size_t n)
{
	for (unsigned shift = 0; shift < 64; shift += 8) {
		size_t count[257] = { 0 };
		for (size_t i = 0; i < n; i++)
			count[((keys[i].key >> shift) & 0xff) + 1]++;
		if (count[((keys[0].key >> shift) & 0xff) + 1] == n)
			continue;
		for (size_t b = 1; b < 257; b++)
			count[b] += count[b - 1];
		for (size_t i = 0; i < n; i++)
			tmp[count[(keys[i].key >> shift) & 0xff]++] = keys[i];
		memcpy(keys, tmp, n * sizeof *keys);
	}
}

/* Sorting by pointer-chasing strcmp cost a third of the daemon's time on a
 * 100k-entry directory; integer keys past the common prefix rarely tie. */
static int sort_listing(struct ovl_listing *l)
{
	if (l->n < 2)
		return 0;
	const char *first = dirent_name(l, &l->ents[0]);
	size_t lcp = strlen(first);
	for (size_t i = 1; i < l->n && lcp; i++) {
		const char *name = dirent_name(l, &l->ents[i]);
		size_t k = 0;
		while (k < lcp && name[k] == first[k])
			k++;
		lcp = k;
	}
	struct sort_key *keys = malloc(2 * l->n * sizeof *keys); /* and the radix sort's scratch */
	struct ovl_dirent *sorted = malloc(l->n * sizeof *sorted);
	if (keys == NULL || sorted == NULL) {
		free(keys);
		free(sorted);
		return -ENOMEM;
	}
	for (size_t i = 0; i < l->n; i++) {
		const char *name = dirent_name(l, &l->ents[i]);
		const unsigned char *p = (const unsigned char *)name + lcp;
		uint64_t key = 0;
		size_t k = 0;
		for (; k < 8 && p[k]; k++)
			key |= (uint64_t)p[k] << (56 - 8 * k);
		keys[i] = (struct sort_key){ .key = key, .index = (uint32_t)i, .skip = (uint32_t)(lcp + k),
					     .name = name };
	}
	radix_sort_keys(keys, keys + l->n, l->n);
	/* names whose keys tie are ordered by the bytes past the key */
	for (size_t i = 0, j; i < l->n; i = j) {
		for (j = i + 1; j < l->n && keys[j].key == keys[i].key; j++)
			;
		if (j - i > 1)
			qsort(keys + i, j - i, sizeof *keys, sort_key_cmp);
	}
	for (size_t i = 0; i < l->n; i++)
		sorted[i] = l->ents[keys[i].index];
	free(keys);
	free(l->ents);
	l->ents = sorted;
	return 0;
}

struct ovl_listing *ovl_merge_finish(struct ovl_merge *m)
{
	struct ovl_listing *l = calloc(1, sizeof *l);
	size_t visible = 0, nlowers = 0;
	for (size_t i = 0; i < m->n; i++) {
		if (m->ents[i].state == ENT_VISIBLE) {
			visible++;
			nlowers += m->ents[i].nlower ? m->ents[i].nlower + 1 : 0;
		}
	}
	if (l == NULL || (l->ents = calloc(visible ? visible : 1, sizeof *l->ents)) == NULL ||
	    (nlowers && (l->lowers = malloc(nlowers * sizeof *l->lowers)) == NULL)) {
		if (l)
			free(l->ents);
		free(l);
		ovl_merge_free(m);
		return NULL;
	}
	atomic_init(&l->refs, 1);
	l->table_cap = 16;
	while (l->table_cap < visible * 2)
		l->table_cap *= 2;
	size_t lower_len = 0;
	for (size_t i = 0; i < m->n; i++) {
		struct merge_ent *e = &m->ents[i];
		if (e->state != ENT_VISIBLE)
			continue;
		uint32_t lower_off = 0;
		if (e->nlower) {
			lower_off = (uint32_t)lower_len + 1;
			l->lowers[lower_len++] = e->nlower;
			memcpy(l->lowers + lower_len, e->lower, e->nlower * sizeof *e->lower);
			lower_len += e->nlower;
		}
		l->ents[l->n++] = (struct ovl_dirent){ .name_off = e->name_off,
						       .name_len = (uint8_t)e->name_len,
						       .layer = e->layer,
						       .type = e->type,
						       .ino_shown = e->ino_shown,
						       .ino = e->ino,
						       .lower_off = lower_off };
	}
	/* The pool grew by doubling from 4 KiB: most directories hold far less. */
	char *pool = m->pool_len ? realloc(m->pool, m->pool_len) : NULL;
	l->pool = pool ? pool : m->pool;
	m->pool = NULL;
	ovl_merge_free(m);
	if (sort_listing(l) < 0) {
		ovl_listing_unref(l);
		return NULL;
	}
	return l;
}

/* A plain listing (ls) never needs the table: it is made on first use. */
static uint32_t *listing_table(struct ovl_listing *l)
{
	uint32_t *t = atomic_load(&l->table);
	if (t)
		return t;
	t = calloc(l->table_cap, sizeof *t);
	if (t == NULL)
		return NULL;
	for (size_t i = 0; i < l->n; i++) {
		size_t h = name_hash(dirent_name(l, &l->ents[i]), l->ents[i].name_len) & (l->table_cap - 1);
		while (t[h])
			h = (h + 1) & (l->table_cap - 1);
		t[h] = (uint32_t)i + 1;
	}
	uint32_t *expected = NULL;
	if (!atomic_compare_exchange_strong(&l->table, &expected, t)) {
		free(t); /* another thread made it first */
		t = expected;
	}
	return t;
}

/* The slot of name in a, or the free slot where it would go. */
static struct added_slot *added_slot(const struct added *a, const char *name, size_t len)
{
	size_t h = name_hash(name, len) & (a->cap - 1);
	for (; a->slots[h].name_off; h = (h + 1) & (a->cap - 1)) {
		const char *n = a->pool + a->slots[h].name_off - 1;
		if (strncmp(n, name, len) == 0 && n[len] == '\0')
			break;
	}
	return &a->slots[h];
}

static int added_grow(struct added *a)
{
	size_t cap = a->cap ? a->cap * 2 : 64;
	struct added_slot *old = a->slots;
	size_t old_cap = a->cap;
	a->slots = calloc(cap, sizeof *a->slots);
	if (a->slots == NULL) {
		a->slots = old;
		return -ENOMEM;
	}
	a->cap = cap;
	a->used = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].name_off == 0 || old[i].removed)
			continue; /* tombstones go */
		const char *n = a->pool + old[i].name_off - 1;
		*added_slot(a, n, strlen(n)) = old[i];
		a->used++;
	}
	free(old);
	return 0;
}

static void added_free(struct added *a)
{
	if (a == NULL)
		return;
	free(a->slots);
	free(a->pool);
	free(a);
}

/* The DT_* type of a name made through us since the listing was read, or -1. */
static int added_type(const struct ovl_listing *l, const char *name)
{
	if (l->added == NULL)
		return -1;
	const struct added_slot *s = added_slot(l->added, name, strlen(name));
	return s->name_off && !s->removed ? s->type : -1;
}

ssize_t ovl_listing_index(struct ovl_listing *l, const char *name)
{
	uint32_t *t = listing_table(l);
	if (t == NULL)
		return -2;
	size_t len = strlen(name);
	size_t h = name_hash(name, len) & (l->table_cap - 1);
	for (; t[h]; h = (h + 1) & (l->table_cap - 1)) {
		const struct ovl_dirent *d = &l->ents[t[h] - 1];
		if (d->name_len == len && memcmp(dirent_name(l, d), name, len) == 0)
			return d->removed ? -1 : (ssize_t)t[h] - 1;
	}
	return -1;
}

bool ovl_listing_remove_name(struct ovl_listing *l, const char *name)
{
	l->upper_clean = false;
	struct added_slot *s = l->added ? added_slot(l->added, name, strlen(name)) : NULL;
	if (s && s->name_off && !s->removed) {
		s->removed = true;
		l->added->live--;
		return true;
	}
	ssize_t i = ovl_listing_index(l, name);
	if (i < 0)
		return false;
	l->ents[i].removed = true;
	l->nremoved++;
	return true;
}

bool ovl_listing_add_name(struct ovl_listing *l, const char *name, uint8_t type)
{
	if (added_type(l, name) >= 0 || ovl_listing_index(l, name) != -1)
		return false;
	struct added *a = l->added;
	if (a == NULL && (a = l->added = calloc(1, sizeof *a)) == NULL)
		return false;
	size_t len = strlen(name);
	if (((a->used + 1) * 4 > a->cap * 3 && added_grow(a) < 0) ||
	    ovl_grow(&a->pool, &a->pool_cap, a->pool_len + len + 1, 1, 1024) < 0)
		return false;
	struct added_slot *s = added_slot(a, name, len);
	if (s->name_off == 0)
		a->used++;
	memcpy(a->pool + a->pool_len, name, len + 1);
	*s = (struct added_slot){ .name_off = (uint32_t)a->pool_len + 1, .type = type };
	a->pool_len += len + 1;
	a->live++;
	return true;
}

size_t ovl_listing_remaining(const struct ovl_listing *l)
{
	return l->n - l->nremoved + (l->added ? l->added->live : 0);
}

bool ovl_listing_pristine(const struct ovl_listing *l)
{
	return l->nremoved == 0 && l->added == NULL;
}

void ovl_merge_free(struct ovl_merge *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->ents[i].lower);
	free(m->ents);
	free(m->table);
	free(m->pool);
	free(m);
}

size_t ovl_listing_count(const struct ovl_listing *l)
{
	return l->n;
}

const char *ovl_listing_name(const struct ovl_listing *l, size_t i)
{
	return dirent_name(l, &l->ents[i]);
}

void ovl_listing_entry(const struct ovl_listing *l, size_t i, uint32_t *layer, uint8_t *type, uint32_t *nlower)
{
	*layer = l->ents[i].layer;
	*type = l->ents[i].type;
	*nlower = dirent_nlower(l, &l->ents[i]);
}

void ovl_listing_unref(struct ovl_listing *l)
{
	if (atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	free(l->ents);
	free(l->lowers);
	free(l->pool);
	free(atomic_load(&l->table));
	added_free(l->added);
	free(l);
}

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

static int read_layer(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd, struct raw_layer *r, char *buf,
		      size_t bufsize)
{
	int fd = ovl_layer_open(fs, layer, dirfd, ".", O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return -errno;
	int res = 0;
	r->n = r->pool_len = 0;
	for (;;) {
		ssize_t len = getdents64(fd, buf, bufsize);
		if (len < 0) {
			res = -errno;
			break;
		}
		if (len == 0)
			break;
		for (ssize_t off = 0; off < len && res == 0;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			off += d->d_reclen;
			uint8_t type = d->d_type;
			bool whiteout = false;
			/* d_type is trusted; only a char device may be a whiteout. */
			if (type == DT_CHR || type == DT_UNKNOWN) {
				struct stat st;
				if (layer->ops->statat(layer, fd, d->d_name, &st) < 0)
					continue; /* vanished */
				type = (uint8_t)IFTODT(st.st_mode);
				whiteout = ovl_stat_is_whiteout(&st);
			}
			res = raw_push(r, d->d_name, type, d->d_ino, whiteout);
		}
		if (res)
			break;
	}
	close(fd);
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
		if (ovl_node_peek(fs->layers[0].dev, e->ino, NULL, NULL, &node) && node.origin_ino)
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
 * the listings, so that two alive at once do not share offsets. */
static atomic_uint listing_gens;

static void set_offset_gen(struct ovl_listing *l)
{
	l->pos_bits = (uint8_t)(64 - __builtin_clzll((unsigned long long)l->n + 2));
	if (l->pos_bits < 31)
		l->gen = atomic_fetch_add(&listing_gens, 1) % ((1u << (31 - l->pos_bits)) - 1) + 1;
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
	size_t bufsize = 64 * 1024;
	char *buf = malloc(bufsize);
	int res = (m && buf) ? 0 : -ENOMEM;
	bool upper_clean = false;
	for (uint32_t i = 0; i < d->nlayers && res == 0; i++) {
		struct ovl_layer *layer = &fs->layers[d->layers[i]];
		int fd = ovl_dir_fd_get(fs, node, i);
		if (fd < 0) {
			res = fd;
			break;
		}
		res = read_layer(fs, layer, fd, &r, buf, bufsize);
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
	free(buf);
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
		set_offset_gen(*out);
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
		/* (a create holds ns_lock only for reading: it may have changed
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
	if (l && added_type(l, name) >= 0) {
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
	pthread_rwlock_rdlock(&fs->ns_lock);
	int res = dir_listing(fs, n, false, &h->l);
	pthread_rwlock_unlock(&fs->ns_lock);
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

/* What a plain listing tells of an entry: its inode number and type. */
static void dirent_attr(struct ovl_fs *fs, const struct ovl_dirent *d, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = d->ino_shown ? d->ino : ovl_st_ino(fs, d->layer, d->ino);
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
	return !b->stale && !d->ino_shown && ovl_node_peek(b->fs->layers[d->layer].dev, d->ino, b->dir, name, &node) &&
	       node.held;
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
	struct ovl_node *n = ovl_node_get(ino);
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
		ovl_parallel_for(end - lo, plus_lookup, &b);
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
		struct ovl_node *c = looked[k].ino && S_ISDIR(looked[k].attr.st_mode) ? ovl_node_get(looked[k].ino) : NULL;
		if (c && c->dir)
			ovl_prefetch_dir(fs, c);
	}
	free(looked);
	fuse_reply_buf(req, buf, pos);
	free(buf);
	ovl_listing_unref(l);
}

void ovl_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	pthread_rwlock_rdlock(&fs->ns_lock);
	do_readdir(req, ino, size, off, fi, false);
	pthread_rwlock_unlock(&fs->ns_lock);
}

void ovl_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	pthread_rwlock_rdlock(&fs->ns_lock);
	do_readdir(req, ino, size, off, fi, true);
	pthread_rwlock_unlock(&fs->ns_lock);
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
