/* The index of one layer (see index.h): nodes, objects, one hash table of
 * (directory, name), and one byte arena for names, link targets, xattrs and
 * sparse maps.  All of it counts against the memory bound; names are checked
 * here, where the tree is known (no "..", no leading "/", nothing through a
 * symlink or a file, PATH_MAX, NAME_MAX, depth). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysmacros.h>
#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL /* the hash from the header: nothing more to link */
#endif
#include <xxhash.h>

#include "index_impl.h"

static int fail(struct oci_index *ix, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct oci_index *ix, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ix->err, sizeof ix->err, fmt, ap);
	va_end(ap);
	return -1;
}

uint64_t oci_index_bytes(const struct oci_index *ix)
{
	return sizeof *ix + ix->capnodes * sizeof(struct node) + ix->capobjs * sizeof(struct obj) + ix->acap +
	       ix->nbuckets * sizeof(uint32_t) + ix->capstack * sizeof(uint32_t) + ix->capdirs * sizeof(struct dpath) +
	       ix->charged;
}

int oci_index_charge(void *arg, uint64_t bytes)
{
	struct oci_index *ix = arg;
	ix->charged += bytes;
	if (oci_index_bytes(ix) <= ix->lim.max_index_bytes)
		return 0;
	return fail(ix, "index larger than %llu bytes (FUSE_OVERLAYFS_OCI_MAX_INDEX)",
		    (unsigned long long)ix->lim.max_index_bytes);
}

/* Room for need elements in *p, within the memory bound. */
static int grow(struct oci_index *ix, void *pp, size_t *cap, size_t need, size_t elem)
{
	void **p = pp;
	if (need <= *cap)
		return 0;
	size_t ncap = *cap < 64 ? 64 : *cap + *cap / 2;
	if (ncap < need)
		ncap = need;
	uint64_t now = oci_index_bytes(ix), max = ix->lim.max_index_bytes;
	if (now + (ncap - *cap) * elem > max)
		ncap = need + need / 16; /* near the bound: no more than needed */
	if (now + (ncap - *cap) * elem > max)
		return fail(ix, "index larger than %llu bytes (FUSE_OVERLAYFS_OCI_MAX_INDEX)", (unsigned long long)max);
	void *q = realloc(*p, ncap * elem);
	if (!q)
		return fail(ix, "out of memory for the index");
	*p = q;
	*cap = ncap;
	return 0;
}

/* Appends n bytes to the arena: their offset, or 0 on failure. */
static uint32_t arena_put(struct oci_index *ix, const void *data, size_t n)
{
	if (ix->alen + n > UINT32_MAX)
		return fail(ix, "index arena beyond 4 GiB"), 0;
	if (grow(ix, &ix->arena, &ix->acap, ix->alen + n, 1) < 0)
		return 0;
	uint32_t off = (uint32_t)ix->alen;
	memcpy(ix->arena + off, data, n);
	ix->alen += n;
	return off;
}

/* ---- the hash table of (directory, name) ---- */

uint32_t oci_index_hash(const struct oci_index *ix, uint32_t dir, const char *name, size_t len)
{
	return (uint32_t)XXH3_64bits_withSeed(name, len, ix->seed + dir);
}

uint32_t oci_index_find(const struct oci_index *ix, uint32_t dir, const char *name, size_t len)
{
	if (!ix->nbuckets)
		return OCI_NONE;
	uint32_t h = oci_index_hash(ix, dir, name, len);
	for (uint32_t n = ix->buckets[h & (ix->nbuckets - 1)]; n; n = ix->nodes[n].hnext) {
		const struct node *nd = &ix->nodes[n];
		const char *s = (const char *)ix->arena + nd->name;
		if (nd->hash == h && nd->parent == dir && !memcmp(s, name, len) && !s[len])
			return n;
	}
	return OCI_NONE;
}

static int hash_grow(struct oci_index *ix)
{
	size_t nb = ix->nbuckets ? ix->nbuckets * 2 : 1024, cap = ix->nbuckets;
	uint32_t *old = ix->buckets;
	size_t oldn = ix->nbuckets;
	ix->buckets = NULL;
	ix->nbuckets = 0;
	if (grow(ix, &ix->buckets, &cap, nb, sizeof(uint32_t)) < 0) {
		ix->buckets = old, ix->nbuckets = oldn;
		return -1;
	}
	memset(ix->buckets, 0, nb * sizeof(uint32_t));
	ix->nbuckets = nb;
	for (size_t b = 0; b < oldn; b++) {
		for (uint32_t n = old[b], next; n; n = next) {
			next = ix->nodes[n].hnext;
			ix->nodes[n].hnext = ix->buckets[ix->nodes[n].hash & (nb - 1)];
			ix->buckets[ix->nodes[n].hash & (nb - 1)] = n;
		}
	}
	free(old);
	return 0;
}

void oci_index_hash_insert(struct oci_index *ix, uint32_t n)
{
	struct node *nd = &ix->nodes[n];
	nd->hnext = ix->buckets[nd->hash & (ix->nbuckets - 1)];
	ix->buckets[nd->hash & (ix->nbuckets - 1)] = n;
	ix->hcount++;
}

static void hash_remove(struct oci_index *ix, uint32_t n)
{
	uint32_t *link = &ix->buckets[ix->nodes[n].hash & (ix->nbuckets - 1)];
	while (*link && *link != n)
		link = &ix->nodes[*link].hnext;
	if (*link)
		*link = ix->nodes[n].hnext;
	ix->hcount--;
}

/* ---- nodes and objects ---- */

static bool obj_is(const struct oci_index *ix, uint32_t obj, mode_t type)
{
	return (ix->objs[obj].mode & S_IFMT) == type;
}

static long new_obj(struct oci_index *ix, mode_t mode, uint32_t uid, uint32_t gid, int64_t mtime, uint32_t nsec)
{
	if (ix->nobjs >= UINT32_MAX - 1)
		return fail(ix, "too many objects");
	if (grow(ix, &ix->objs, &ix->capobjs, ix->nobjs + 1, sizeof(struct obj)) < 0)
		return -1;
	struct obj *o = &ix->objs[ix->nobjs];
	memset(o, 0, sizeof *o);
	o->mode = mode, o->uid = uid, o->gid = gid, o->mtime = mtime, o->mtime_nsec = nsec, o->nlink = 1;
	return (long)ix->nobjs++;
}

static uint32_t new_node(struct oci_index *ix, uint32_t dir, const char *name, size_t len, uint32_t obj)
{
	if (ix->nnodes - 2 >= ix->lim.max_entries)
		return fail(ix, "more than %llu entries (FUSE_OVERLAYFS_OCI_MAX_ENTRIES)",
			    (unsigned long long)ix->lim.max_entries), OCI_NONE;
	if (grow(ix, &ix->nodes, &ix->capnodes, ix->nnodes + 1, sizeof(struct node)) < 0)
		return OCI_NONE;
	if (ix->hcount >= ix->nbuckets && hash_grow(ix) < 0)
		return OCI_NONE;
	uint32_t off = arena_put(ix, name, len + 1);
	if (!off)
		return OCI_NONE;
	ix->arena[off + len] = 0;
	uint32_t n = (uint32_t)ix->nnodes++;
	struct node *nd = &ix->nodes[n];
	nd->parent = dir, nd->name = off, nd->obj = obj, nd->child = OCI_NONE;
	nd->hash = oci_index_hash(ix, dir, name, len);
	oci_index_hash_insert(ix, n);
	nd->sibling = ix->nodes[dir].child;
	ix->nodes[dir].child = n;
	return n;
}

static void unref(struct oci_index *ix, uint32_t obj)
{
	if (ix->objs[obj].nlink)
		ix->objs[obj].nlink--;
}

/* Drops the subtree below directory node d (replaced by a non-directory). */
static int detach_children(struct oci_index *ix, uint32_t d)
{
	size_t top = 0;
	for (uint32_t c = ix->nodes[d].child; c; c = ix->nodes[c].sibling) {
		if (grow(ix, &ix->stack, &ix->capstack, top + 1, sizeof(uint32_t)) < 0)
			return -1;
		ix->stack[top++] = c;
	}
	ix->nodes[d].child = OCI_NONE;
	while (top) {
		uint32_t n = ix->stack[--top];
		hash_remove(ix, n);
		unref(ix, ix->nodes[n].obj);
		ix->nodes[n].parent = DETACHED;
		for (uint32_t c = ix->nodes[n].child; c; c = ix->nodes[c].sibling) {
			if (grow(ix, &ix->stack, &ix->capstack, top + 1, sizeof(uint32_t)) < 0)
				return -1;
			ix->stack[top++] = c;
		}
		ix->nodes[n].child = OCI_NONE;
	}
	return 0;
}

/* ---- names ---- */

/* Normalises an archive name into out: components joined by '/', without
 * "." or empty ones (a leading "./" is common); NULL, or why it is refused.
 * "/" alone is the root, as "./" (umoci's insert writes it). */
static const char *normalize(const char *path, size_t len, char *out, size_t *outlen)
{
	size_t o = 0, depth = 0;
	if (len > PATH_MAX)
		return "name longer than PATH_MAX";
	for (size_t i = 0; i < len;) {
		size_t j = i;
		while (j < len && path[j] != '/')
			j++;
		size_t cl = j - i;
		if (cl == 2 && path[i] == '.' && path[i + 1] == '.')
			return "'..' in the name";
		if (cl && !(cl == 1 && path[i] == '.')) {
			if (cl > NAME_MAX)
				return "a component longer than NAME_MAX";
			if (++depth > OCI_MAX_DEPTH)
				return "name deeper than 4096 components";
			if (o)
				out[o++] = '/';
			memcpy(out + o, path + i, cl);
			o += cl;
		}
		i = j + 1;
	}
	if (len && path[0] == '/' && o)
		return "absolute name";
	out[o] = 0;
	*outlen = o;
	return NULL;
}

/* ---- directories by their whole path ---- */

static uint64_t path_hash(const struct oci_index *ix, const char *p, size_t len)
{
	return XXH3_64bits_withSeed(p, len, ix->seed ^ 0x9e3779b97f4a7c15ULL);
}

static bool live_dir(const struct oci_index *ix, uint32_t n)
{
	return ix->nodes[n].parent != DETACHED && obj_is(ix, ix->nodes[n].obj, S_IFDIR);
}

/* A directory whose path has hash h, or OCI_NONE. */
static uint32_t dir_find(const struct oci_index *ix, uint64_t h)
{
	if (!ix->capdirs)
		return OCI_NONE;
	for (size_t i = h & (ix->capdirs - 1);; i = (i + 1) & (ix->capdirs - 1)) {
		const struct dpath *d = &ix->dirs[i];
		if (!d->node)
			return OCI_NONE;
		if (d->h == h && live_dir(ix, d->node))
			return d->node;
	}
}

static void dir_put(struct dpath *t, size_t cap, uint64_t h, uint32_t node)
{
	size_t i = h & (cap - 1);
	while (t[i].node)
		i = (i + 1) & (cap - 1);
	t[i] = (struct dpath){ h, node };
}

static int dir_add(struct oci_index *ix, const char *p, size_t len, uint32_t node)
{
	if (2 * (ix->ndirs + 1) > ix->capdirs) {
		size_t cap = ix->capdirs ? 2 * ix->capdirs : 1024;
		if (oci_index_bytes(ix) + cap * sizeof(struct dpath) > ix->lim.max_index_bytes)
			return fail(ix, "index larger than %llu bytes (FUSE_OVERLAYFS_OCI_MAX_INDEX)",
				    (unsigned long long)ix->lim.max_index_bytes);
		struct dpath *t = calloc(cap, sizeof *t);
		if (!t)
			return fail(ix, "out of memory for the index");
		for (size_t i = 0; i < ix->capdirs; i++)
			if (ix->dirs[i].node)
				dir_put(t, cap, ix->dirs[i].h, ix->dirs[i].node);
		free(ix->dirs);
		ix->dirs = t;
		ix->capdirs = cap;
	}
	dir_put(ix->dirs, ix->capdirs, path_hash(ix, p, len), node);
	ix->ndirs++;
	return 0;
}

/* Whether directory node n is at path p (len bytes), walking up from it. */
static bool dir_is(const struct oci_index *ix, uint32_t n, const char *p, size_t len)
{
	for (size_t end = len; n != OCI_ROOT; n = ix->nodes[n].parent) {
		if (!live_dir(ix, n) || !end)
			return false;
		const char *name = (const char *)ix->arena + ix->nodes[n].name;
		size_t l = strlen(name);
		if (l > end || memcmp(p + end - l, name, l) || (l < end && p[end - l - 1] != '/'))
			return false;
		end -= l < end ? l + 1 : l;
		if (!end && ix->nodes[n].parent != OCI_ROOT)
			return false;
	}
	return true;
}

/* The number of leading components of p (k of them, ending at ix->ends)
 * that exist as directories, and the deepest of them in *at: a binary
 * search, as a path's existing directories are always a prefix of it. */
static size_t known_prefix(struct oci_index *ix, const char *p, size_t k, uint32_t *at)
{
	size_t lo = 0, hi = k;
	uint32_t best = OCI_ROOT;
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2;
		uint32_t n = dir_find(ix, path_hash(ix, p, ix->ends[mid]));
		if (n)
			lo = mid, best = n;
		else
			hi = mid - 1;
	}
	if (lo && !dir_is(ix, best, p, ix->ends[lo]))
		lo = 0, best = OCI_ROOT; /* a hash collision: the walk from the root will do */
	*at = best;
	return lo;
}

/* The directory node at normalised path p (len bytes), made (as implied
 * directories) where missing when create.  OCI_NONE with *why when the path
 * is refused (through a symlink or a file, absent), or with ix->err set on
 * a bound. */
static uint32_t walk(struct oci_index *ix, const char *p, size_t len, bool create, const char **why)
{
	size_t k = 0;
	for (size_t i = 0; i <= len; i++)
		if (i == len || p[i] == '/')
			ix->ends[++k] = i;
	if (!len)
		k = 0;
	ix->ends[0] = 0;
	uint32_t cur;
	size_t c = known_prefix(ix, p, k, &cur);
	for (; c < k; c++) {
		size_t i = c ? ix->ends[c] + 1 : 0, j = ix->ends[c + 1];
		uint32_t n = oci_index_find(ix, cur, p + i, j - i);
		if (n && !obj_is(ix, ix->nodes[n].obj, S_IFDIR)) {
			*why = obj_is(ix, ix->nodes[n].obj, S_IFLNK) ? "the path goes through a symlink"
								      : "the path goes through a non-directory";
			return OCI_NONE;
		}
		if (!n && !create) {
			*why = "no such entry";
			return OCI_NONE;
		}
		if (!n) {
			long o = new_obj(ix, S_IFDIR | 0755, 0, 0, ix->root_mtime, 0);
			if (o < 0 || !(n = new_node(ix, cur, p + i, j - i, (uint32_t)o)) || dir_add(ix, p, j, n) < 0)
				return OCI_NONE;
		}
		cur = n;
	}
	return cur;
}

static uint32_t parent_dir(struct oci_index *ix, const char *norm, size_t dlen, const char **why)
{
	if (ix->last_node && dlen == ix->last_len && !memcmp(norm, ix->last_dir, dlen))
		return ix->last_node;
	uint32_t d = walk(ix, norm, dlen, true, why);
	if (d) {
		memcpy(ix->last_dir, norm, dlen);
		ix->last_len = dlen;
		ix->last_node = d;
	}
	return d;
}

/* ---- entries ---- */

static int leave_out(struct oci_index *ix, const struct tar_entry *e, const char *why)
{
	oci_log(ix->log, "entry '%.*s': left out: %s", e->path_len > 200 ? 200 : (int)e->path_len, e->path, why);
	return 0;
}

static uint32_t put_xattrs(struct oci_index *ix, const struct tar_entry *e)
{
	uint32_t n = (uint32_t)e->nxattrs, off = arena_put(ix, &n, sizeof n);
	for (size_t i = 0; off && i < e->nxattrs; i++) {
		const struct tar_xattr *x = &e->xattrs[i];
		unsigned char nl = (unsigned char)strlen(x->name);
		uint32_t vl = (uint32_t)x->len;
		if (!arena_put(ix, &nl, 1) || !arena_put(ix, x->name, nl + 1u) || !arena_put(ix, &vl, sizeof vl) ||
		    (vl && !arena_put(ix, x->value, vl)))
			return 0;
	}
	return off;
}

static uint32_t put_sparse(struct oci_index *ix, const struct tar_entry *e)
{
	uint32_t n = (uint32_t)e->nsparse, off = arena_put(ix, &n, sizeof n);
	for (size_t i = 0; off && i < e->nsparse; i++) {
		uint64_t v[2] = { e->sparse[i].off, e->sparse[i].len };
		if (!arena_put(ix, v, sizeof v))
			return 0;
	}
	return off;
}

/* The attributes of e into object o (a new one, or a directory taking a
 * later entry's attributes). */
static int set_attrs(struct oci_index *ix, uint32_t o, const struct tar_entry *e, mode_t type)
{
	struct obj *ob = &ix->objs[o];
	ob->mode = type | e->mode;
	ob->uid = e->uid, ob->gid = e->gid, ob->mtime = e->mtime, ob->mtime_nsec = e->mtime_nsec;
	ob->xattrs = 0;
	if (e->nxattrs) {
		uint32_t x = put_xattrs(ix, e);
		if (!x)
			return -1;
		ix->objs[o].xattrs = x;
	}
	return 0;
}

static const mode_t types[] = { ['0'] = S_IFREG, ['2'] = S_IFLNK, ['3'] = S_IFCHR,
				['4'] = S_IFBLK, ['5'] = S_IFDIR, ['6'] = S_IFIFO };

/* A new object for e (not a hard link): its index, or -1. */
static long entry_obj(struct oci_index *ix, const struct tar_entry *e, bool whiteout)
{
	mode_t type = whiteout ? S_IFREG : types[(unsigned char)e->type];
	long o = new_obj(ix, type, 0, 0, 0, 0);
	if (o < 0 || set_attrs(ix, (uint32_t)o, e, type) < 0)
		return -1;
	struct obj *ob = &ix->objs[o];
	if (whiteout)
		return o;
	if (type == S_IFREG) {
		ob->size = e->size, ob->data = e->data_off;
		if (e->sparse && !(ix->objs[o].sparse = put_sparse(ix, e)))
			return -1;
	} else if (type == S_IFLNK) {
		uint32_t t = arena_put(ix, e->link, e->link_len + 1);
		if (!t)
			return -1;
		ix->arena[t + e->link_len] = 0;
		ix->objs[o].target = t;
	} else if (type == S_IFCHR || type == S_IFBLK) {
		ob->major = e->devmajor, ob->minor = e->devminor;
	}
	return o;
}

/* Binds name (in dir) to object o, replacing what the name had. */
static int bind(struct oci_index *ix, uint32_t dir, const char *name, size_t len, uint32_t o)
{
	uint32_t n = oci_index_find(ix, dir, name, len);
	if (!n)
		return new_node(ix, dir, name, len, o) ? 0 : -1;
	uint32_t old = ix->nodes[n].obj;
	if (old == o) { /* a hard link to itself: link_obj counted one link too many */
		unref(ix, o);
		return 0;
	}
	if (obj_is(ix, old, S_IFDIR)) {
		ix->last_node = OCI_NONE; /* the cached walk may pass through it */
		if (detach_children(ix, n) < 0)
			return -1;
	}
	unref(ix, old);
	ix->nodes[n].obj = o;
	return 0;
}

/* The object a hard link entry names, or -1 with *why (or ix->err). */
static long link_obj(struct oci_index *ix, const struct tar_entry *e, const char **why)
{
	size_t l;
	if ((*why = normalize(e->link, e->link_len, ix->norm2, &l)))
		return -1;
	const char *slash = strrchr(ix->norm2, '/');
	size_t dl = slash ? (size_t)(slash - ix->norm2) : 0;
	const char *base = slash ? slash + 1 : ix->norm2;
	uint32_t d = walk(ix, ix->norm2, dl, false, why);
	uint32_t n = d && *base ? oci_index_find(ix, d, base, strlen(base)) : OCI_NONE;
	if (!n) {
		*why = "hard link to a missing entry";
		return -1;
	}
	if (obj_is(ix, ix->nodes[n].obj, S_IFDIR)) {
		*why = "hard link to a directory";
		return -1;
	}
	ix->objs[ix->nodes[n].obj].nlink++;
	return ix->nodes[n].obj;
}

static const char *entry_check(const struct tar_entry *e)
{
	if (e->skip)
		return e->skip;
	if (!e->type || !strchr("0123456", e->type))
		return "unsupported entry type";
	if (e->type == '2' && !e->link_len)
		return "symlink with an empty target";
	if ((e->type == '2' || e->type == '1') && e->link_len >= PATH_MAX)
		return "link target longer than PATH_MAX";
	if ((e->type == '2' || e->type == '1') && memchr(e->link, 0, e->link_len))
		return "NUL in the link target";
	return NULL;
}

int oci_index_add(struct oci_index *ix, const struct tar_entry *e)
{
	const char *why = entry_check(e);
	size_t len;
	if (why || (why = normalize(e->path, e->path_len, ix->norm, &len)))
		return leave_out(ix, e, why);
	const char *slash = strrchr(ix->norm, '/');
	size_t dlen = slash ? (size_t)(slash - ix->norm) : 0;
	const char *base = slash ? slash + 1 : ix->norm;
	size_t blen = len - (size_t)(base - ix->norm);
	if (!len) { /* "./": the root's own attributes */
		if (e->type != '5')
			return leave_out(ix, e, "the root is not a directory");
		return set_attrs(ix, ix->nodes[OCI_ROOT].obj, e, S_IFDIR);
	}
	why = NULL;
	uint32_t dir = parent_dir(ix, ix->norm, dlen, &why);
	if (!dir)
		return why ? leave_out(ix, e, why) : -1;
	bool whiteout = blen > 4 && !memcmp(base, ".wh.", 4);
	uint32_t cur = oci_index_find(ix, dir, base, blen);
	if (e->type == '5' && !whiteout && cur && obj_is(ix, ix->nodes[cur].obj, S_IFDIR))
		return set_attrs(ix, ix->nodes[cur].obj, e, S_IFDIR); /* as mkdir over a directory: keep its entries */
	long o;
	if (e->type == '1' && !whiteout) {
		o = link_obj(ix, e, &why);
		if (o < 0)
			return why ? leave_out(ix, e, why) : -1;
	} else {
		o = entry_obj(ix, e, whiteout);
		if (o < 0)
			return -1;
	}
	if (bind(ix, dir, base, blen, (uint32_t)o) < 0)
		return -1;
	if (!obj_is(ix, (uint32_t)o, S_IFDIR))
		return 0;
	return dir_add(ix, ix->norm, len, oci_index_find(ix, dir, base, blen));
}

struct oci_index *oci_index_alloc(const struct oci_limits *lim)
{
	struct oci_index *ix = calloc(1, sizeof *ix);
	if (!ix)
		return NULL;
	ix->lim = *lim;
	if (getrandom(&ix->seed, sizeof ix->seed, 0) != sizeof ix->seed)
		ix->seed = (uint64_t)(uintptr_t)ix ^ 0x9e3779b97f4a7c15ULL; /* hash flooding needs the seed */
	return ix;
}

struct oci_index *oci_index_new(const struct oci_limits *lim, struct oci_log *log, int64_t root_mtime)
{
	struct oci_index *ix = oci_index_alloc(lim);
	if (!ix)
		return NULL;
	ix->log = log;
	ix->root_mtime = root_mtime;
	/* arena offset 0 and node 0 mean "none" */
	long o;
	if (grow(ix, &ix->arena, &ix->acap, 1, 1) < 0 || grow(ix, &ix->nodes, &ix->capnodes, 2, sizeof(struct node)) < 0 ||
	    hash_grow(ix) < 0 || (o = new_obj(ix, S_IFDIR | 0755, 0, 0, root_mtime, 0)) < 0) {
		oci_index_free(ix);
		return NULL;
	}
	ix->arena[0] = 0;
	ix->alen = 1;
	memset(ix->nodes, 0, 2 * sizeof(struct node));
	ix->nodes[OCI_ROOT].parent = OCI_ROOT;
	ix->nodes[OCI_ROOT].name = 0; /* "" */
	ix->nodes[OCI_ROOT].obj = (uint32_t)o;
	ix->nnodes = 2;
	return ix;
}

void oci_index_finish(struct oci_index *ix)
{
	for (size_t n = 1; n < ix->nnodes; n++)
		if (ix->nodes[n].parent != DETACHED && obj_is(ix, ix->nodes[n].obj, S_IFDIR))
			ix->objs[ix->nodes[n].obj].nlink = 2;
	for (size_t n = OCI_ROOT + 1; n < ix->nnodes; n++)
		if (ix->nodes[n].parent != DETACHED && obj_is(ix, ix->nodes[n].obj, S_IFDIR))
			ix->objs[ix->nodes[ix->nodes[n].parent].obj].nlink++;
	free(ix->stack);
	free(ix->dirs);
	ix->stack = NULL;
	ix->dirs = NULL;
	ix->capstack = ix->capdirs = 0;
}

const char *oci_index_error(const struct oci_index *ix)
{
	return ix->err[0] ? ix->err : "index error";
}

uint64_t oci_index_entries(const struct oci_index *ix)
{
	return ix->nnodes - 2;
}

void oci_index_free(struct oci_index *ix)
{
	if (!ix)
		return;
	free(ix->nodes);
	free(ix->objs);
	free(ix->arena);
	free(ix->buckets);
	free(ix->stack);
	free(ix->dirs);
	free(ix);
}

/* ---- queries ---- */

mode_t oci_mode(const struct oci_index *ix, uint32_t node)
{
	return ix->objs[ix->nodes[node].obj].mode;
}

ino_t oci_ino(const struct oci_index *ix, uint32_t node)
{
	return (ino_t)ix->nodes[node].obj + 1;
}

uint32_t oci_lookup(const struct oci_index *ix, uint32_t dir, const char *name)
{
	if (!S_ISDIR(oci_mode(ix, dir)))
		return OCI_NONE;
	if (!strcmp(name, "."))
		return dir;
	if (!strcmp(name, ".."))
		return ix->nodes[dir].parent;
	return oci_index_find(ix, dir, name, strlen(name));
}

uint32_t oci_lookup_path(const struct oci_index *ix, const char *path)
{
	uint32_t cur = OCI_ROOT;
	char comp[NAME_MAX + 1];
	while (*path && cur) {
		size_t l = strcspn(path, "/");
		if (l > NAME_MAX)
			return OCI_NONE;
		memcpy(comp, path, l);
		comp[l] = 0;
		if (l)
			cur = oci_lookup(ix, cur, comp);
		path += l + (path[l] == '/');
	}
	return cur;
}

const char *oci_name(const struct oci_index *ix, uint32_t node)
{
	return (const char *)ix->arena + ix->nodes[node].name;
}

uint32_t oci_parent(const struct oci_index *ix, uint32_t node)
{
	return ix->nodes[node].parent;
}

uint32_t oci_first_child(const struct oci_index *ix, uint32_t dir)
{
	return S_ISDIR(oci_mode(ix, dir)) ? ix->nodes[dir].child : OCI_NONE;
}

uint32_t oci_next_sibling(const struct oci_index *ix, uint32_t node)
{
	return ix->nodes[node].sibling;
}

const char *oci_link_target(const struct oci_index *ix, uint32_t node)
{
	const struct obj *o = &ix->objs[ix->nodes[node].obj];
	return S_ISLNK(o->mode) ? (const char *)ix->arena + o->target : NULL;
}

void oci_sparse_get(const struct oci_extent_iter *it, uint32_t i, uint64_t *off, uint64_t *len)
{
	memcpy(off, it->map + 4 + 16 * (size_t)i, 8);
	memcpy(len, it->map + 12 + 16 * (size_t)i, 8);
}

int oci_file(const struct oci_index *ix, uint32_t node, struct oci_file *f)
{
	const struct obj *o = &ix->objs[ix->nodes[node].obj];
	if (!S_ISREG(o->mode))
		return -1;
	f->size = o->size;
	f->data = o->data;
	f->sparse.map = o->sparse ? ix->arena + o->sparse : NULL;
	f->sparse.n = 0;
	if (o->sparse)
		memcpy(&f->sparse.n, f->sparse.map, 4);
	return 0;
}

void oci_stat(const struct oci_index *ix, uint32_t node, struct stat *st)
{
	uint32_t oi = ix->nodes[node].obj;
	const struct obj *o = &ix->objs[oi];
	struct oci_file f;
	memset(st, 0, sizeof *st);
	st->st_ino = oci_ino(ix, node);
	st->st_mode = o->mode;
	st->st_nlink = o->nlink ? o->nlink : 1;
	st->st_uid = o->uid;
	st->st_gid = o->gid;
	st->st_blksize = 4096;
	if (S_ISCHR(o->mode) || S_ISBLK(o->mode))
		st->st_rdev = makedev(o->major, o->minor);
	if (S_ISDIR(o->mode)) {
		st->st_size = 4096;
		st->st_blocks = 8;
	} else if (S_ISLNK(o->mode)) {
		st->st_size = (off_t)strlen((const char *)ix->arena + o->target);
	} else if (oci_file(ix, node, &f) == 0) {
		uint64_t stored = f.size;
		if (f.sparse.map) {
			stored = 0;
			for (uint32_t i = 0; i < f.sparse.n; i++) {
				uint64_t off, len;
				oci_sparse_get(&f.sparse, i, &off, &len);
				stored += len;
			}
		}
		st->st_size = (off_t)f.size;
		st->st_blocks = (blkcnt_t)((stored + 511) / 512);
	}
	st->st_mtim.tv_sec = (time_t)o->mtime;
	st->st_mtim.tv_nsec = o->mtime_nsec;
	st->st_atim = st->st_ctim = st->st_mtim;
}

/* Calls fn for each xattr of node until it answers nonzero. */
static int each_xattr(const struct oci_index *ix, uint32_t node,
		      int (*fn)(void *arg, const char *name, const unsigned char *v, uint32_t vl), void *arg)
{
	uint32_t off = ix->objs[ix->nodes[node].obj].xattrs, n;
	if (!off)
		return 0;
	const unsigned char *p = ix->arena + off;
	memcpy(&n, p, 4);
	p += 4;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t vl;
		const char *name = (const char *)p + 1;
		p += 1 + p[0] + 1;
		memcpy(&vl, p, 4);
		p += 4;
		int r = fn(arg, name, p, vl);
		if (r)
			return r;
		p += vl;
	}
	return 0;
}

struct xget {
	const char *name;
	void *buf;
	size_t size;
	ssize_t r;
};

static int xget_one(void *arg, const char *name, const unsigned char *v, uint32_t vl)
{
	struct xget *g = arg;
	if (strcmp(name, g->name))
		return 0;
	if (g->size && g->size < vl) {
		errno = ERANGE;
		g->r = -1;
	} else {
		if (g->size)
			memcpy(g->buf, v, vl);
		g->r = vl;
	}
	return 1;
}

ssize_t oci_getxattr(const struct oci_index *ix, uint32_t node, const char *name, void *buf, size_t size)
{
	struct xget g = { name, buf, size, -1 };
	if (!each_xattr(ix, node, xget_one, &g)) {
		errno = ENODATA;
		return -1;
	}
	return g.r;
}

struct xlist {
	char *buf;
	size_t size, len;
};

static int xlist_one(void *arg, const char *name, const unsigned char *v, uint32_t vl)
{
	struct xlist *l = arg;
	size_t nl = strlen(name) + 1;
	if (l->size && l->len + nl <= l->size)
		memcpy(l->buf + l->len, name, nl);
	l->len += nl;
	return 0;
}

ssize_t oci_listxattr(const struct oci_index *ix, uint32_t node, char *buf, size_t size)
{
	struct xlist l = { buf, size, 0 };
	each_xattr(ix, node, xlist_one, &l);
	if (size && l.len > size) {
		errno = ERANGE;
		return -1;
	}
	return (ssize_t)l.len;
}
