/* An index saved into a cache file and read back.  What is read back is as
 * hostile as a blob (a cache file is just a file beside it): every offset,
 * index and length is checked before use, the tree is walked once from the
 * root (each node reached once, by its own parent, under a directory; names
 * valid and unique in their directory), and the hash table is rebuilt with
 * a new seed rather than trusted. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

void oci_wbuf_put(struct oci_wbuf *w, const void *d, size_t n)
{
	if (w->failed)
		return;
	if (w->len + n > w->cap) {
		size_t cap = (w->len + n) * 2;
		unsigned char *p = realloc(w->p, cap);
		if (!p) {
			w->failed = true;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, d, n);
	w->len += n;
}

const void *oci_rbuf_get(struct oci_rbuf *r, size_t n)
{
	if (n > r->len - r->off)
		return NULL;
	const void *p = r->p + r->off;
	r->off += n;
	return p;
}

int oci_rbuf_u64(struct oci_rbuf *r, uint64_t *v)
{
	const void *p = oci_rbuf_get(r, sizeof *v);
	if (p)
		memcpy(v, p, sizeof *v);
	return p ? 0 : -1;
}

size_t oci_index_node_size(void)
{
	return sizeof(struct node);
}

size_t oci_index_obj_size(void)
{
	return sizeof(struct obj);
}

void oci_index_save(const struct oci_index *ix, struct oci_wbuf *w)
{
	uint64_t n[3] = { ix->nnodes, ix->nobjs, ix->alen };
	oci_wbuf_put(w, n, sizeof n);
	oci_wbuf_put(w, ix->nodes, ix->nnodes * sizeof(struct node));
	oci_wbuf_put(w, ix->objs, ix->nobjs * sizeof(struct obj));
	oci_wbuf_put(w, ix->arena, ix->alen);
}

/* A copy of n elements of size elem from r, or NULL. */
static void *take(struct oci_rbuf *r, size_t n, size_t elem)
{
	const void *p = oci_rbuf_get(r, n * elem);
	void *q = p ? malloc(n * elem + 1) : NULL;
	if (q)
		memcpy(q, p, n * elem);
	return q;
}

/* The xattrs at off: count, then (name length, name, NUL, value length, value). */
static bool xattrs_ok(const struct oci_index *ix, uint32_t off)
{
	uint64_t at = off, end = ix->alen;
	uint32_t n, vl;
	if (at + 4 > end)
		return false;
	memcpy(&n, ix->arena + at, 4);
	at += 4;
	if (n > TAR_MAX_XATTRS)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (at + 1 > end)
			return false;
		uint64_t nl = ix->arena[at];
		if (!nl || at + 1 + nl + 1 + 4 > end || ix->arena[at + 1 + nl] ||
		    memchr(ix->arena + at + 1, 0, nl))
			return false;
		at += 1 + nl + 1;
		memcpy(&vl, ix->arena + at, 4);
		at += 4;
		if (vl > TAR_MAX_XATTR_VALUE || at + vl > end)
			return false;
		at += vl;
	}
	return true;
}

/* A regular file: its stored data within the stream, its sparse map sane. */
static bool file_ok(const struct oci_index *ix, const struct obj *o, uint64_t stream)
{
	uint64_t stored = o->size;
	if (o->sparse) {
		uint32_t n;
		if ((uint64_t)o->sparse + 4 > ix->alen)
			return false;
		memcpy(&n, ix->arena + o->sparse, 4);
		if (n > TAR_MAX_SPARSE || (uint64_t)o->sparse + 4 + 16ULL * n > ix->alen)
			return false;
		struct oci_extent_iter it = { ix->arena + o->sparse, n };
		uint64_t end = 0;
		stored = 0;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t off, len;
			oci_sparse_get(&it, i, &off, &len);
			if (off < end || len > o->size || off > o->size - len)
				return false;
			end = off + len;
			stored += len;
		}
	}
	return o->data <= stream && stored <= stream - o->data;
}

static bool obj_ok(const struct oci_index *ix, const struct obj *o, uint64_t stream)
{
	switch (o->mode & S_IFMT) {
	case S_IFREG:
		if (!file_ok(ix, o, stream))
			return false;
		break;
	case S_IFLNK:
		if (!o->target || o->target >= ix->alen)
			return false;
		break;
	case S_IFDIR: case S_IFCHR: case S_IFBLK: case S_IFIFO:
		break;
	default:
		return false;
	}
	return !o->xattrs || xattrs_ok(ix, o->xattrs);
}

static bool name_ok(const struct oci_index *ix, uint32_t off)
{
	if (!off || off >= ix->alen)
		return false;
	const char *s = (const char *)ix->arena + off;
	size_t l = strnlen(s, ix->alen - off);
	return l && l <= NAME_MAX && !memchr(s, '/', l) && strcmp(s, ".") && strcmp(s, "..");
}

/* Walks the tree from the root: every child reached once, from its parent,
 * valid and unique by name; the hash table built on the way. */
static const char *tree_ok(struct oci_index *ix)
{
	size_t top = 0;
	unsigned char *seen = calloc(ix->nnodes, 1);
	uint32_t *stack = malloc(ix->nnodes * sizeof *stack);
	const char *why = NULL;
	if (!seen || !stack) {
		why = "out of memory";
		goto out;
	}
	seen[OCI_ROOT] = 1;
	stack[top++] = OCI_ROOT;
	while (top && !why) {
		uint32_t d = stack[--top];
		for (uint32_t c = ix->nodes[d].child; c && !why; c = ix->nodes[c].sibling) {
			if (c <= OCI_ROOT || c >= ix->nnodes || seen[c]) {
				why = "a node out of place";
				break;
			}
			struct node *n = &ix->nodes[c];
			const char *name = (const char *)ix->arena + n->name;
			if (n->parent != d || n->obj >= ix->nobjs || !name_ok(ix, n->name) ||
			    oci_index_find(ix, d, name, strlen(name))) {
				why = "a node out of place";
				break;
			}
			seen[c] = 1;
			n->hash = oci_index_hash(ix, d, name, strlen(name));
			oci_index_hash_insert(ix, c);
			if (S_ISDIR(ix->objs[n->obj].mode))
				stack[top++] = c;
			else if (n->child)
				why = "a file with children";
		}
	}
	for (size_t i = 1; i < ix->nnodes && !why; i++)
		if (!seen[i]) /* unreachable: never looked at again */
			ix->nodes[i].parent = UINT32_MAX, ix->nodes[i].child = OCI_NONE;
out:
	free(seen);
	free(stack);
	return why;
}

/* The index's arrays from r: their counts checked against the limits. */
static const char *arrays(struct oci_index *ix, struct oci_rbuf *r)
{
	uint64_t n[3];
	for (int i = 0; i < 3; i++)
		if (oci_rbuf_u64(r, &n[i]) < 0)
			return "truncated";
	if (n[0] < 2 || n[0] - 2 > ix->lim.max_entries || n[0] >= UINT32_MAX || !n[1] || n[1] >= UINT32_MAX ||
	    !n[2] || n[2] > UINT32_MAX)
		return "counts out of bounds";
	uint64_t bytes = n[0] * sizeof(struct node) + n[1] * sizeof(struct obj) + n[2] + n[0] * 2 * sizeof(uint32_t);
	if (bytes > ix->lim.max_index_bytes)
		return "larger than the index bound";
	ix->nnodes = ix->capnodes = n[0], ix->nobjs = ix->capobjs = n[1], ix->alen = ix->acap = n[2];
	if (!(ix->nodes = take(r, n[0], sizeof(struct node))) || !(ix->objs = take(r, n[1], sizeof(struct obj))) ||
	    !(ix->arena = take(r, n[2], 1)))
		return "truncated";
	size_t nb = 1024;
	while (nb < n[0])
		nb *= 2;
	if (!(ix->buckets = calloc(nb, sizeof(uint32_t))))
		return "out of memory";
	ix->nbuckets = nb;
	return NULL;
}

struct oci_index *oci_index_load(struct oci_rbuf *r, const struct oci_limits *lim, uint64_t stream_size,
				 const char **why)
{
	struct oci_index *ix = oci_index_alloc(lim);
	if (!ix) {
		*why = "out of memory";
		return NULL;
	}
	if ((*why = arrays(ix, r)))
		goto bad;
	*why = "bad arena or object";
	if (ix->arena[0] || ix->arena[ix->alen - 1])
		goto bad;
	for (size_t i = 0; i < ix->nobjs; i++)
		if (!obj_ok(ix, &ix->objs[i], stream_size))
			goto bad;
	struct node *root = &ix->nodes[OCI_ROOT];
	if (root->parent != OCI_ROOT || root->obj >= ix->nobjs || !S_ISDIR(ix->objs[root->obj].mode))
		goto bad;
	if ((*why = tree_ok(ix)))
		goto bad;
	return ix;
bad:
	oci_index_free(ix);
	return NULL;
}
