/* The index cache file beside a blob (cache.c). */
#ifndef OCI_CACHE_H
#define OCI_CACHE_H

#include <sys/stat.h>

#include "index.h"
#include "oci.h"

/* Blob NAME in dirfd, whose file is st (b's fd, size and comp set): its
 * index and access points from the cache when it matches (0), else -1 and
 * nothing changed.  digest: the one the blob must have, or NULL. */
int oci_cache_load(int dirfd, const char *name, const struct stat *st, const char *digest,
		   const struct oci_limits *lim, struct oci_blob *b, struct oci_index **ixp);
/* Writes the cache of a blob just built (digest: the one it verified, or
 * NULL); quietly nothing where that fails. */
void oci_cache_save(int dirfd, const char *name, const struct stat *st, const char *digest,
		    const struct oci_blob *b, const struct oci_index *ix);

#endif
