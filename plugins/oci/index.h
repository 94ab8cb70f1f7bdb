/* The index of one layer: the tree the tar's entries make when extracted,
 * built from tar.c's entries in stream order and read-only afterwards (so
 * every query is safe from any thread without a lock).
 *
 * Names (nodes) and objects (inodes) are apart, as in a file system: a hard
 * link is a second node of the earlier entry's object; an entry for a path
 * already present rebinds that node to a new object (a directory over a
 * directory only takes its attributes, as extraction would), and a
 * directory replaced by anything else loses its subtree. */
#ifndef OCI_INDEX_H
#define OCI_INDEX_H

#include <stdint.h>
#include <sys/stat.h>

#include "oci.h"
#include "tar.h"

#define OCI_ROOT 1u
#define OCI_NONE 0u /* no node: slot 0 of the node table is never used */

/* Deeper paths are refused (a PATH_MAX-long name has at most 2048 anyway). */
#define OCI_MAX_DEPTH 4096

struct oci_index;

/* An empty index: the root directory, 0755 root:root, mtime root_mtime. */
struct oci_index *oci_index_new(const struct oci_limits *lim, struct oci_log *log, int64_t root_mtime);
void oci_index_free(struct oci_index *ix);
/* Adds one entry: 0 (added, or left out with a log line), or -1 when the
 * layer is refused (a bound passed; oci_index_error says which). */
int oci_index_add(struct oci_index *ix, const struct tar_entry *e);
/* After the last entry: directory link counts. */
void oci_index_finish(struct oci_index *ix);
const char *oci_index_error(const struct oci_index *ix);
/* Bytes of memory held; entries (nodes) made. */
uint64_t oci_index_bytes(const struct oci_index *ix);
uint64_t oci_index_entries(const struct oci_index *ix);
/* Extra bytes to count against the memory bound (the blob's access points):
 * 0, or -1 (and oci_index_error) when they pass it.  Fits oci_seq's charge. */
int oci_index_charge(void *ix, uint64_t bytes);

/* The index into a cache file, and back (index_load.c): what is read back
 * is checked as hostile input (NULL and why when it fails a check). */
void oci_index_save(const struct oci_index *ix, struct oci_wbuf *w);
struct oci_index *oci_index_load(struct oci_rbuf *r, const struct oci_limits *lim, uint64_t stream_size,
				 const char **why);
/* The sizes of the saved structures: a cache of another build's differs. */
size_t oci_index_node_size(void);
size_t oci_index_obj_size(void);

/* ---- queries (after finish) ---- */

/* The node of name in directory node dir; OCI_NONE when absent (or dir is
 * not a directory).  "." is dir, ".." its parent. */
uint32_t oci_lookup(const struct oci_index *ix, uint32_t dir, const char *name);
/* Resolves a relative path from the root without following symlinks. */
uint32_t oci_lookup_path(const struct oci_index *ix, const char *path);
void oci_stat(const struct oci_index *ix, uint32_t node, struct stat *st);
mode_t oci_mode(const struct oci_index *ix, uint32_t node);
/* st_ino of a node: its object's number, so hard links share it. */
ino_t oci_ino(const struct oci_index *ix, uint32_t node);
const char *oci_name(const struct oci_index *ix, uint32_t node);
uint32_t oci_parent(const struct oci_index *ix, uint32_t node);
/* Children of a directory: first, then next; OCI_NONE at the end. */
uint32_t oci_first_child(const struct oci_index *ix, uint32_t dir);
uint32_t oci_next_sibling(const struct oci_index *ix, uint32_t node);
/* The target of a symlink, NULL for anything else. */
const char *oci_link_target(const struct oci_index *ix, uint32_t node);
/* xattrs, as getxattr(2) and listxattr(2) answer (size 0: the length);
 * -1 with errno ENODATA, ERANGE. */
ssize_t oci_getxattr(const struct oci_index *ix, uint32_t node, const char *name, void *buf, size_t size);
ssize_t oci_listxattr(const struct oci_index *ix, uint32_t node, char *buf, size_t size);

/* Where a regular file's data is: stored bytes from data in the stream, a
 * sparse map (logical stretches, stored one after the other) or none. */
struct oci_extent_iter {
	const unsigned char *map; /* the sparse map in the index, NULL: one stretch */
	uint32_t n;
};
struct oci_file {
	uint64_t size;     /* logical */
	uint64_t data;     /* stream offset of the stored bytes */
	struct oci_extent_iter sparse;
};
/* 0, or -1 when node is not a regular file. */
int oci_file(const struct oci_index *ix, uint32_t node, struct oci_file *f);
/* Stretch i of a sparse map: its logical offset and length. */
void oci_sparse_get(const struct oci_extent_iter *it, uint32_t i, uint64_t *off, uint64_t *len);

#endif
