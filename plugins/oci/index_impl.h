/* The index's structures, for index.c (the build and queries) and
 * index_load.c (the index saved into and checked back from a cache file). */
#ifndef OCI_INDEX_IMPL_H
#define OCI_INDEX_IMPL_H

#include <limits.h>

#include "index.h"

#define DETACHED UINT32_MAX /* parent of a node whose directory went away */

struct node {
	uint32_t parent, name, obj;
	uint32_t hnext, hash;   /* hash chain */
	uint32_t child, sibling;
};

struct obj {
	uint64_t size, data;    /* regular files: logical size, stream offset */
	int64_t mtime;
	uint32_t mtime_nsec, mode, uid, gid, nlink, major, minor;
	uint32_t target, xattrs, sparse; /* arena offsets; 0: none */
};

struct oci_index {
	struct oci_limits lim;
	struct oci_log *log;
	struct node *nodes;
	size_t nnodes, capnodes;
	struct obj *objs;
	size_t nobjs, capobjs;
	unsigned char *arena;
	size_t alen, acap;
	uint32_t *buckets;
	size_t nbuckets, hcount;
	uint32_t *stack;        /* for detaching a subtree */
	size_t capstack;
	uint64_t charged;
	uint64_t seed;
	int64_t root_mtime;
	/* the directory the last entry went into: tars list a directory's
	 * entries together, so most entries skip the walk from the root */
	char last_dir[PATH_MAX + 1];
	size_t last_len;
	uint32_t last_node;
	/* every directory made, by the hash of its whole path (during the build
	 * only): the deepest existing directory of a path is found in a few
	 * probes, so a tar that interleaves entries of deep directories costs
	 * no lookup a component for each of them */
	struct dpath {
		uint64_t h;
		uint32_t node; /* 0: an empty slot */
	} *dirs;
	size_t ndirs, capdirs;
	size_t ends[OCI_MAX_DEPTH + 1]; /* where the components of a path end */
	char norm[PATH_MAX + 1], norm2[PATH_MAX + 1];
	char err[256];
};

/* The hash of name in directory dir (seeded: names of a hostile tar cannot
 * be made to collide), the node of name in dir, and its insertion. */
uint32_t oci_index_hash(const struct oci_index *ix, uint32_t dir, const char *name, size_t len);
uint32_t oci_index_find(const struct oci_index *ix, uint32_t dir, const char *name, size_t len);
void oci_index_hash_insert(struct oci_index *ix, uint32_t n);
/* An empty index of the limits, seeded, without nodes or objects. */
struct oci_index *oci_index_alloc(const struct oci_limits *lim);

#endif
