/* Building a layer: one pass over a blob that parses its tar, indexes its
 * entries, records the access points of its compression and verifies its
 * digest, within the bounds of struct oci_limits. */
#ifndef OCI_BUILD_H
#define OCI_BUILD_H

#include "index.h"
#include "oci.h"

/* What the build is told about the blob. */
struct oci_build_want {
	const char *digest; /* "sha256:<hex>" to verify, or NULL */
	int64_t size;       /* the size a manifest gives, or -1 */
	int dirfd;          /* the blob's directory and name there, for the */
	const char *name;   /* index cache beside it (dirfd -1: none) */
};

/* Builds blob (taking fd, which it closes on failure) and its index: 0, or
 * -1 with the reason in err (the caller prefixes the blob's name). */
int oci_build(int fd, const struct oci_build_want *want, const struct oci_limits *lim, struct oci_log *log,
	      struct oci_blob *blob, struct oci_index **ixp, char *err, size_t errlen);

/* "sha256:<64 lowercase hex>": a pointer to the hex, or NULL. */
const char *oci_digest_hex(const char *digest);

#endif
