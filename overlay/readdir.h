/* The listing merge, apart from I/O so that tests can feed it fake layers. */
#ifndef OVL_READDIR_H
#define OVL_READDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <sys/types.h>

struct ovl_raw_entry {
	const char *name;
	uint16_t len;   /* strlen(name), or 0: not known */
	uint8_t type;   /* DT_* */
	ino_t ino;
	bool whiteout;  /* a char 0/0 device */
	bool ino_shown; /* ino is the st_ino to show (a copied-up object's origin) */
};

struct ovl_merge;
struct added;

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
	uint32_t gen;      /* in its offsets, above pos_bits (see ovl_listing_set_offsets); 0: none */
	uint8_t pos_bits;
	struct added *added; /* under the directory's lock; NULL: none (listing.c) */
	/* The upper part was read and held no whiteout of any spelling, and
	 * none was made since (a removal may make one): a name absent here
	 * has nothing in the upper layer to replace.  Under the directory's lock. */
	bool upper_clean;
};

static inline const char *dirent_name(const struct ovl_listing *l, const struct ovl_dirent *d)
{
	return l->pool + d->name_off;
}

static inline uint32_t dirent_nlower(const struct ovl_listing *l, const struct ovl_dirent *d)
{
	return d->lower_off ? l->lowers[d->lower_off - 1] : 0;
}


struct ovl_merge *ovl_merge_new(void);
/* Adds one layer's entries (layers come top first); returns 1 when the layer
 * is opaque and no lower layer may be added, 0, or -errno. */
int ovl_merge_layer(struct ovl_merge *m, uint32_t layer, const struct ovl_raw_entry *raw, size_t n);
/* Consumes m; returns the visible names sorted bytewise. */
struct ovl_listing *ovl_merge_finish(struct ovl_merge *m);
void ovl_merge_free(struct ovl_merge *m);

size_t ovl_listing_count(const struct ovl_listing *l);
/* The DT_* type of a name made through us since the listing was read, or -1. */
int ovl_listing_added_type(const struct ovl_listing *l, const char *name);
/* Index of name in the listing, -1 if absent (or removed), -2 out of memory. */
ssize_t ovl_listing_index(struct ovl_listing *l, const char *name);
/* A name removed through us since the listing was read: it is then absent
 * for ovl_listing_index, yet keeps its place, so that a reader's offsets
 * hold.  False when the name is not listed: the listing is out of date. */
bool ovl_listing_remove_name(struct ovl_listing *l, const char *name);
/* A name made through us since the listing was read (type: DT_*): present
 * for lookups from now on, but outside the listing's order, so a reader
 * gets a listing read afresh.  False when the name is listed already (the
 * listing is out of date) or out of memory. */
bool ovl_listing_add_name(struct ovl_listing *l, const char *name, uint8_t type);
/* The names listed or added, less those removed since. */
size_t ovl_listing_remaining(const struct ovl_listing *l);
/* Nothing removed or added since the listing was read: a reader may use it. */
bool ovl_listing_pristine(const struct ovl_listing *l);
/* A listing's offsets are its gen above its pos_bits and a position below;
 * they must never meet another live listing's, since the kernel, caching a
 * directory, matches them exactly (readdir.c).  Sets both for n entries,
 * from the directory's running count of its listings (the kernel's cache is
 * a directory's: only its own listings must not meet); above 2^25 entries
 * gen is 0 (plain positions). */
void ovl_listing_set_offsets(struct ovl_listing *l, uint32_t count);
static inline off_t ovl_listing_off(const struct ovl_listing *l, size_t pos)
{
	return (off_t)((uint64_t)l->gen << l->pos_bits | pos);
}

static inline size_t ovl_listing_pos(const struct ovl_listing *l, off_t off)
{
	return l->gen ? (size_t)off & (((size_t)1 << l->pos_bits) - 1) : (size_t)off;
}

/* Whether off is one of l's offsets. */
static inline bool ovl_listing_gave(const struct ovl_listing *l, off_t off)
{
	return l->gen == 0 || ((uint64_t)off >> l->pos_bits) == l->gen;
}
const char *ovl_listing_name(const struct ovl_listing *l, size_t i);
void ovl_listing_entry(const struct ovl_listing *l, size_t i, uint32_t *layer, uint8_t *type, uint32_t *nlower);
void ovl_listing_unref(struct ovl_listing *l);

/* listing_read.c: the node's cached listing, built on first use; the caller
 * gets a ref.  One that names were removed from since it was read serves
 * lookups and emptiness checks (with_removed), but a reader gets one read
 * afresh. */
int ovl_dir_listing(struct ovl_fs *fs, struct ovl_node *node, bool with_removed, struct ovl_listing **out);
struct ovl_found;
/* What a listed entry tells a lookup (its top layer and, for a directory,
 * the layers it may merge) into f: 1, or -1 out of memory. */
int ovl_listing_found(const struct ovl_listing *l, const struct ovl_dirent *e, struct ovl_found *f);

#endif
