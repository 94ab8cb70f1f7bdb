/* The core's one hash-table helper, in the two shapes its tables need:
 *  - an index: open addressing over uint32 slots holding an entry's index
 *    + 1 (0: empty), the keys living in the caller's array (names of a
 *    listing, of a merge, of the names noted since);
 *  - a chain: intrusive singly linked buckets of items that carry their own
 *    next pointer (nodes by identity, aliases).
 * Both keep a power-of-two size.  The helpers are inline, so that the
 * callers' key comparisons inline into the probe loops. */
#ifndef OVL_HASH_H
#define OVL_HASH_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <xxhash.h>

static inline uint64_t ovl_hash_bytes(const void *p, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(p, len, seed);
}

/* ---- index ---- */
struct ovl_index {
	uint32_t *slots;
	size_t cap; /* 0 or a power of two */
};

/* Whether entry i is the one key names. */
typedef bool (*ovl_index_eq_fn)(const void *ctx, uint32_t i, const void *key);
/* The hash of entry i; ~0 for one the table leaves out. */
typedef uint64_t (*ovl_index_hash_fn)(const void *ctx, uint32_t i);
#define OVL_INDEX_LEFT_OUT UINT64_MAX

/* The slot holding the index + 1 of the entry eq accepts, or the empty slot
 * where it would go.  The table must have an empty slot (cap > count). */
static inline uint32_t *ovl_index_slot(const uint32_t *slots, size_t cap, uint64_t hash, ovl_index_eq_fn eq,
				       const void *ctx, const void *key)
{
	size_t h = hash & (cap - 1);
	while (slots[h] && !eq(ctx, slots[h] - 1, key))
		h = (h + 1) & (cap - 1);
	return (uint32_t *)&slots[h];
}

/* Fresh slots (cap a power of two) for entries 0..n-1; NULL: no memory. */
static inline uint32_t *ovl_index_build(size_t cap, uint32_t n, ovl_index_hash_fn hash_of, const void *ctx)
{
	uint32_t *slots = calloc(cap, sizeof *slots);
	for (uint32_t i = 0; slots && i < n; i++) {
		uint64_t hash = hash_of(ctx, i);
		if (hash == OVL_INDEX_LEFT_OUT)
			continue;
		size_t h = hash & (cap - 1);
		while (slots[h])
			h = (h + 1) & (cap - 1);
		slots[h] = i + 1;
	}
	return slots;
}

/* The power of two of at least twice need (and min): half empty at most. */
static inline size_t ovl_index_cap(size_t need, size_t min)
{
	size_t cap = min;
	while (cap < need * 2)
		cap *= 2;
	return cap;
}

/* Rebuilds x for need entries of n present, when it is more than half full. */
static inline int ovl_index_reserve(struct ovl_index *x, size_t need, uint32_t n, size_t min, ovl_index_hash_fn hash_of,
				    const void *ctx)
{
	if (need * 2 <= x->cap)
		return 0;
	size_t cap = ovl_index_cap(need, x->cap ? x->cap * 2 : min);
	uint32_t *slots = ovl_index_build(cap, n, hash_of, ctx);
	if (slots == NULL)
		return -ENOMEM;
	free(x->slots);
	x->slots = slots;
	x->cap = cap;
	return 0;
}

/* ---- chain ---- */
struct ovl_chain {
	void **buckets;
	size_t nbuckets, count;
};

#define OVL_CHAIN_NEXT(item, next_off) (*(void **)((char *)(item) + (next_off)))

/* The first item of key's bucket, NULL for none. */
static inline void *ovl_chain_first(const struct ovl_chain *c, uint64_t key)
{
	return c->nbuckets ? c->buckets[key & (c->nbuckets - 1)] : NULL;
}

/* Adds item under key, doubling the buckets when the table is full (key_of
 * gives the key of an item already in). */
static inline int ovl_chain_add(struct ovl_chain *c, void *item, uint64_t key, size_t next_off,
				uint64_t (*key_of)(const void *item))
{
	if (c->count + 1 > c->nbuckets) {
		size_t nb = c->nbuckets ? c->nbuckets * 2 : 64;
		void **b = calloc(nb, sizeof *b);
		if (b == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < c->nbuckets; i++)
			for (void *m = c->buckets[i], *next; m; m = next) {
				next = OVL_CHAIN_NEXT(m, next_off);
				void **bk = &b[key_of(m) & (nb - 1)];
				OVL_CHAIN_NEXT(m, next_off) = *bk;
				*bk = m;
			}
		free(c->buckets);
		c->buckets = b;
		c->nbuckets = nb;
	}
	void **bk = &c->buckets[key & (c->nbuckets - 1)];
	OVL_CHAIN_NEXT(item, next_off) = *bk;
	*bk = item;
	c->count++;
	return 0;
}

/* Takes item (added under key) out; false if it was not in. */
static inline bool ovl_chain_del(struct ovl_chain *c, void *item, uint64_t key, size_t next_off)
{
	if (c->nbuckets == 0)
		return false;
	for (void **p = &c->buckets[key & (c->nbuckets - 1)]; *p; p = &OVL_CHAIN_NEXT(*p, next_off))
		if (*p == item) {
			*p = OVL_CHAIN_NEXT(item, next_off);
			c->count--;
			return true;
		}
	return false;
}

static inline void ovl_chain_free(struct ovl_chain *c)
{
	free(c->buckets);
	c->buckets = NULL;
	c->nbuckets = c->count = 0;
}

#endif
