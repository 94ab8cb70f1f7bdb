/* A small strict tar header parser: ustar, GNU (long names and links 'L'
 * and 'K', old sparse 'S'), PAX (path, linkpath, size, mtime, uid, gid,
 * SCHILY.xattr.*, GNU sparse 0.1 and 1.0), V7.  Its rules are those of Go's
 * archive/tar, which containerd's and podman's unpackers use: what they
 * refuse (a bad checksum, a malformed number or PAX record, a stream that
 * ends inside an entry) refuses the layer; an entry they could not extract
 * either (an unknown type, an unsupported sparse format) is returned marked
 * to be left out. */
#ifndef OCI_TAR_H
#define OCI_TAR_H

#include <stddef.h>
#include <stdint.h>

#include "oci.h"

struct tar_xattr {
	const char *name;            /* without "SCHILY.xattr." */
	const unsigned char *value;
	size_t len;
};

struct tar_sparse {
	uint64_t off, len;           /* a stretch of data in the logical file */
};

struct tar_entry {
	const char *path;            /* as in the archive; the index normalises it */
	size_t path_len;
	const char *link;            /* hard link or symlink target ("" for none) */
	size_t link_len;
	char type;                   /* '0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo */
	uint32_t mode;               /* permission bits, 07777 */
	uint32_t uid, gid;
	int64_t mtime;
	uint32_t mtime_nsec;
	uint64_t size;               /* of a regular file (logical, holes included) */
	uint64_t data_off;           /* stream offset of its stored data */
	uint64_t data_len;           /* stored bytes: size less the holes */
	uint32_t devmajor, devminor;
	const struct tar_xattr *xattrs;
	size_t nxattrs;
	const struct tar_sparse *sparse; /* NULL: not sparse */
	size_t nsparse;
	const char *skip;            /* non-NULL: leave the entry out, for this reason */
};

/* Bounds of what one entry may carry. */
#define TAR_MAX_META (1u << 20)      /* one PAX, 'L' or 'K' record set (Go's bound) */
#define TAR_MAX_XATTRS 256
#define TAR_MAX_XATTR_VALUE 65536    /* XATTR_SIZE_MAX */
#define TAR_MAX_XATTR_NAME 255       /* XATTR_NAME_MAX */
#define TAR_MAX_SPARSE 65536         /* stretches of one sparse file */

struct tar_parser;

/* A parser pulling the stream from src (which it does not own). */
struct tar_parser *tar_new(struct oci_seq *src);
/* The next entry (valid until the next call): 1, 0 at the end of the
 * archive, -1 when the archive is refused (tar_error says why). */
int tar_next(struct tar_parser *p, struct tar_entry *e);
const char *tar_error(const struct tar_parser *p);
void tar_free(struct tar_parser *p);

/* The pure field parsers, for tests and the fuzzer: a numeric header field
 * (octal, or GNU base-256), a PAX time ("-12.5"); 0 or -1. */
int tar_parse_numeric(const unsigned char *f, size_t n, int64_t *out);
int tar_parse_pax_time(const char *s, size_t n, int64_t *sec, uint32_t *nsec);

#endif
