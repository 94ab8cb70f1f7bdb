/* The merged listing of a directory: the merge of its layers into one
 * snapshot, its index by name, and the changes made through us noted in it.
 * Pure, apart from I/O, so that unit tests feed it fake layers (readdir.c
 * reads the layers and serves READDIR). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
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
	struct ovl_index index; /* of ents by name */
	bool fresh;           /* nothing merged before this layer: its names cannot repeat */
	uint32_t fresh_slot;  /* where merge_find points while fresh */
	bool stopped;
};

/* Names made through us since the listing was read (see
 * ovl_listing_add_name), indexed by name, over a pool of names. */
struct added_ent {
	uint32_t name_off;  /* into pool */
	uint8_t type;
	bool removed;       /* removed again: left out when the index is rebuilt */
};

struct added {
	struct added_ent *ents;
	size_t n, cap, live;
	size_t used;        /* slots of the index taken */
	struct ovl_index index;
	char *pool;
	size_t pool_len, pool_cap;
};

/* A name to look for in one of the indexes below. */
struct name_key {
	const char *name;
	size_t len;
};

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
	return ovl_hash_bytes(name, len, 0);
}

static uint64_t merge_hash(const void *ctx, uint32_t i)
{
	const struct ovl_merge *m = ctx;
	return name_hash(ent_name(m, &m->ents[i]), m->ents[i].name_len);
}

static bool merge_eq(const void *ctx, uint32_t i, const void *key)
{
	const struct ovl_merge *m = ctx;
	const struct name_key *k = key;
	return m->ents[i].name_len == k->len && memcmp(ent_name(m, &m->ents[i]), k->name, k->len) == 0;
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
	if ((m->n + 1) * 2 > m->index.cap &&
	    ovl_index_reserve(&m->index, m->n + incoming, (uint32_t)m->n, 256, merge_hash, m) < 0)
		return NULL;
	struct name_key k = { name, len };
	*slot = ovl_index_slot(m->index.slots, m->index.cap, name_hash(name, len), merge_eq, m, &k);
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
	l->table_cap = ovl_index_cap(visible, 16);
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

static uint64_t listing_hash(const void *ctx, uint32_t i)
{
	const struct ovl_listing *l = ctx;
	return name_hash(dirent_name(l, &l->ents[i]), l->ents[i].name_len);
}

static bool listing_eq(const void *ctx, uint32_t i, const void *key)
{
	const struct ovl_listing *l = ctx;
	const struct name_key *k = key;
	return l->ents[i].name_len == k->len && memcmp(dirent_name(l, &l->ents[i]), k->name, k->len) == 0;
}

/* A plain listing (ls) never needs the table: it is made on first use. */
static uint32_t *listing_table(struct ovl_listing *l)
{
	uint32_t *t = atomic_load(&l->table);
	if (t)
		return t;
	t = ovl_index_build(l->table_cap, (uint32_t)l->n, listing_hash, l);
	if (t == NULL)
		return NULL;
	uint32_t *expected = NULL;
	if (!atomic_compare_exchange_strong(&l->table, &expected, t)) {
		free(t); /* another thread made it first */
		t = expected;
	}
	return t;
}

static uint64_t added_hash(const void *ctx, uint32_t i)
{
	const struct added *a = ctx;
	const char *n = a->pool + a->ents[i].name_off;
	return a->ents[i].removed ? OVL_INDEX_LEFT_OUT : name_hash(n, strlen(n));
}

static bool added_eq(const void *ctx, uint32_t i, const void *key)
{
	const struct added *a = ctx;
	const struct name_key *k = key;
	const char *n = a->pool + a->ents[i].name_off;
	return strncmp(n, k->name, k->len) == 0 && n[k->len] == '\0';
}

/* The entry of name in a (removed or not), or NULL with *slot where it goes. */
static struct added_ent *added_find(const struct added *a, const char *name, uint32_t **slot)
{
	struct name_key k = { name, strlen(name) };
	*slot = ovl_index_slot(a->index.slots, a->index.cap, name_hash(name, k.len), added_eq, a, &k);
	return **slot ? &a->ents[**slot - 1] : NULL;
}

/* Room for one more name; a rebuilt index leaves the removed ones out. */
static int added_reserve(struct added *a)
{
	size_t cap = a->index.cap;
	if (ovl_index_reserve(&a->index, a->used + 1, (uint32_t)a->n, 64, added_hash, a) < 0)
		return -ENOMEM;
	if (a->index.cap != cap)
		a->used = a->live;
	return ovl_grow(&a->ents, &a->cap, a->n + 1, sizeof *a->ents, 16);
}

static void added_free(struct added *a)
{
	if (a == NULL)
		return;
	free(a->ents);
	free(a->index.slots);
	free(a->pool);
	free(a);
}

/* The DT_* type of a name made through us since the listing was read, or -1. */
int ovl_listing_added_type(const struct ovl_listing *l, const char *name)
{
	uint32_t *slot;
	const struct added_ent *e = l->added ? added_find(l->added, name, &slot) : NULL;
	return e && !e->removed ? e->type : -1;
}

ssize_t ovl_listing_index(struct ovl_listing *l, const char *name)
{
	uint32_t *t = listing_table(l);
	if (t == NULL)
		return -2;
	struct name_key k = { name, strlen(name) };
	uint32_t *slot = ovl_index_slot(t, l->table_cap, name_hash(name, k.len), listing_eq, l, &k);
	return *slot == 0 || l->ents[*slot - 1].removed ? -1 : (ssize_t)*slot - 1;
}

bool ovl_listing_remove_name(struct ovl_listing *l, const char *name)
{
	l->upper_clean = false;
	uint32_t *slot;
	struct added_ent *e = l->added ? added_find(l->added, name, &slot) : NULL;
	if (e && !e->removed) {
		e->removed = true;
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
	if (ovl_listing_added_type(l, name) >= 0 || ovl_listing_index(l, name) != -1)
		return false;
	struct added *a = l->added;
	if (a == NULL && (a = l->added = calloc(1, sizeof *a)) == NULL)
		return false;
	size_t len = strlen(name);
	uint32_t *slot;
	if (added_reserve(a) < 0 || ovl_grow(&a->pool, &a->pool_cap, a->pool_len + len + 1, 1, 1024) < 0)
		return false;
	struct added_ent *e = added_find(a, name, &slot);
	if (e == NULL) {
		/* new: its name into the pool, an entry, the slot */
		memcpy(a->pool + a->pool_len, name, len + 1);
		e = &a->ents[a->n];
		*e = (struct added_ent){ .name_off = (uint32_t)a->pool_len };
		a->pool_len += len + 1;
		*slot = (uint32_t)++a->n;
		a->used++;
	}
	e->type = type;
	e->removed = false;
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

/* The kernel, caching a directory (FOPEN_CACHE_DIR), may go on with a pass
 * it read from one listing in entries another pass read from another: it
 * matches offsets exactly, and asks us only for one its cache lacks.
 * Offsets fit in 31 bits (32-bit getdents).  Bits 26-30 hold the width of
 * the position, so listings of other sizes never share an offset (the
 * width changes as a directory shrinks or grows past a power of two); the
 * bits between number the listings of one width. */
#define OFFSET_WIDTH_SHIFT 26
void ovl_listing_set_offsets(struct ovl_listing *l, uint32_t count)
{
	l->pos_bits = (uint8_t)(64 - __builtin_clzll((unsigned long long)l->n + 2));
	l->gen = 0;
	if (l->pos_bits < OFFSET_WIDTH_SHIFT) {
		unsigned num_bits = OFFSET_WIDTH_SHIFT - l->pos_bits;
		l->gen = (uint32_t)l->pos_bits << num_bits | (count % ((1u << num_bits) - 1) + 1);
	}
}

void ovl_merge_free(struct ovl_merge *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->ents[i].lower);
	free(m->ents);
	free(m->index.slots);
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
