/* The oci plugin's internal interfaces: OCI layer blobs (tar, tar+gzip,
 * tar+zstd) and image layouts served as lower layers without unpacking.
 *
 * A layer is a blob (compressed bytes on disk, read with pread), a stream
 * (the uncompressed tar, reached at any offset through the access points of
 * gzip.c or the frames of zstd.c) and an index (index.c: every entry of the
 * tar with its attributes and where its data lies in the stream), built in one
 * pass when the layer is opened (build.c).  Everything in a blob is hostile
 * input: every parser is bounded by struct oci_limits and never trusts a
 * length it has not checked. */
#ifndef OCI_OCI_H
#define OCI_OCI_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "sha256.h"

/* ---- log.c: the one log helper ---- */

/* Where a layer's messages go: "fuse-overlayfs: oci: WHAT: MESSAGE" on
 * stderr, or to sink (tests, the fuzzer).  At most max lines are written for
 * one log; the next says the rest are suppressed, so a hostile blob of a
 * million bad entries cannot flood the journal. */
struct oci_log {
	const char *what; /* the blob or layout, for every line */
	unsigned count;
	unsigned max;     /* 0: OCI_LOG_MAX */
	void (*sink)(void *arg, const char *line);
	void *arg;
};
#define OCI_LOG_MAX 50

void oci_log(struct oci_log *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* err (room errlen) = "WHAT: MESSAGE": the one-line reason of a refusal. */
void oci_err(char *err, size_t errlen, const char *what, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- limits.c: the bounds against hostile blobs ---- */

struct oci_limits {
	uint64_t max_entries;     /* tar entries (and implied directories) of one layer */
	uint64_t max_index_bytes; /* memory of one layer's index and access points */
	uint64_t max_size;        /* absolute bound of the uncompressed stream */
	uint64_t max_ratio;       /* uncompressed : compressed, beyond ratio_floor */
	uint64_t ratio_floor;
	bool cache;               /* index cache files beside blobs (cache.c) */
};

/* The defaults, overridden by FUSE_OVERLAYFS_OCI_MAX_{ENTRIES,INDEX,SIZE,RATIO}
 * from the environment (and FUSE_OVERLAYFS_OCI_CACHE=0: no cache files);
 * -1 with err on a bad value. */
int oci_limits_get(struct oci_limits *l, char *err, size_t errlen);
void oci_limits_default(struct oci_limits *l);
/* The largest stream a blob of size compressed bytes may expand to. */
uint64_t oci_limits_out(const struct oci_limits *l, uint64_t compressed);
/* Parses "123", "4K", "16M", "2G", "1T"; -1 when it is not one. */
int oci_parse_size(const char *s, uint64_t *out);
/* The one strict parser of decimals in untrusted text: the n bytes of s
 * (no NUL needed) are digits only (oci_parse_i64: after an optional '-')
 * and the value fits (int64: -INT64_MAX..INT64_MAX); 0, or -1. */
int oci_parse_u64(const char *s, size_t n, uint64_t *out);
int oci_parse_i64(const char *s, size_t n, int64_t *out);

/* ---- the blob: compressed bytes, read sequentially (build) or at an
 * offset of the uncompressed stream (reads) ---- */

enum oci_comp { OCI_TAR, OCI_GZIP, OCI_ZSTD };

struct oci_gz_index; /* gzip.c: access points */
struct oci_zs_index; /* zstd.c: frames */
struct oci_cursors;  /* cursor.c */

struct oci_blob {
	int fd;
	uint64_t size;          /* of the file: compressed bytes */
	struct timespec mtime;
	enum oci_comp comp;
	uint64_t stream_size;   /* of the uncompressed stream, as far as the build read it */
	struct oci_gz_index *gz;
	struct oci_zs_index *zs;
	struct oci_cursors *cursors;
};

/* Compression told by the first bytes (n of them in magic); NULL when it
 * is a tar, else the name of one we do not read in *unsupported. */
enum oci_comp oci_comp_detect(const unsigned char *magic, size_t n, const char **unsupported);
const char *oci_comp_name(enum oci_comp c);

/* Sequential input of the compressed bytes for the build: pread in large
 * chunks, each chunk hashed when a digest is to be verified. */
struct oci_input {
	int fd;
	uint64_t size;   /* of the file when opened: nothing past it is read */
	uint64_t pos;    /* file offset of buf[len] */
	unsigned char *buf;
	size_t len, off; /* bytes in buf, bytes of them consumed */
	bool hashing;
	struct sha256 sha;
};
#define OCI_INPUT_CHUNK (256 * 1024)
int oci_input_init(struct oci_input *in, int fd, uint64_t size, bool hashing);
void oci_input_free(struct oci_input *in);
/* Drops consumed bytes and reads more: how many, 0 at the end, -1 (errno). */
ssize_t oci_input_fill(struct oci_input *in);
/* File offset of the next unconsumed byte. */
static inline uint64_t oci_input_tell(const struct oci_input *in)
{
	return in->pos - (in->len - in->off);
}
/* Reads (and hashes) everything left, for the digest: 0 or -1 (errno). */
int oci_input_drain(struct oci_input *in);

/* The uncompressed stream during the build, pulled by the tar parser. */
struct oci_seq {
	/* Up to n bytes: their count, 0 at the end of the stream, -1 with msg set. */
	ssize_t (*read)(struct oci_seq *s, void *buf, size_t n);
	/* Skips n bytes: 0, or -1 with msg (a stream shorter than that is truncated). */
	int (*skip)(struct oci_seq *s, uint64_t n);
	void (*free)(struct oci_seq *s);
	uint64_t out;        /* stream offset of the next byte read */
	uint64_t produced;   /* bytes decompressed so far (>= out) */
	uint64_t max_out;    /* more is a decompression bomb */
	/* Memory of access points is charged here (the index's bound): -1 refuses. */
	int (*charge)(void *arg, uint64_t bytes);
	void *charge_arg;
	const char *msg;     /* why read or skip failed */
	char msgbuf[200];
};

/* Sets s->msg to a formatted reason; returns -1. */
int oci_seq_fail(struct oci_seq *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The stream over a plain buffer (tests, the fuzzer). */
struct oci_seq *oci_seq_mem(const void *data, size_t size);
/* The blob's stream from in (which the seq does not own), recording the
 * access points (gzip) or frames (zstd) into blob. */
struct oci_seq *oci_seq_tar(struct oci_input *in);
struct oci_seq *oci_seq_gzip(struct oci_input *in, struct oci_blob *blob);
struct oci_seq *oci_seq_zstd(struct oci_input *in, struct oci_blob *blob);

/* Reads n bytes of the uncompressed stream at off (never past
 * stream_size): the count, or -1 with errno.  Thread-safe. */
ssize_t oci_blob_pread(struct oci_blob *b, void *buf, size_t n, uint64_t off);
/* n bytes at off unless the file ends first (fewer), or -1; EINTR retried. */
ssize_t oci_pread_full(int fd, void *buf, size_t n, uint64_t off);
void oci_blob_close(struct oci_blob *b);

/* cursor.c: a few decoders of a compressed blob, each left where its last
 * read ended, so sequential reads (one or several at once) continue instead
 * of restarting from an access point.  The format's part is its codec. */
struct oci_codec {
	/* A decoder's state (NULL: out of memory), and its end. */
	void *(*dec_new)(void);
	void (*dec_free)(void *dec);
	/* Where a decoder may start for a read at off: the stream offset of
	 * the nearest access point (gzip) or frame start (zstd) at or before it. */
	uint64_t (*restart_at)(const struct oci_blob *b, uint64_t off);
	/* Sets dec to decode from restart_at(b, off): 0, or -1. */
	int (*restart)(struct oci_blob *b, void *dec, uint64_t off);
	/* Exactly n bytes of output into out: 0, or -1. */
	int (*decode)(struct oci_blob *b, void *dec, unsigned char *out, size_t n);
	size_t scratch; /* bytes decoded at once on the way to a read's offset */
};
extern const struct oci_codec oci_gz_codec, oci_zs_codec;

struct oci_cursors *oci_cursors_new(unsigned n, const struct oci_codec *codec);
void oci_cursors_free(struct oci_cursors *cs);
/* Reads n bytes of b's stream at off through the idle cursor standing
 * nearest before off (else the least recently used; waits while all are
 * busy): 0, or -1 with errno (EIO, ENOMEM). */
int oci_cursors_read(struct oci_cursors *cs, struct oci_blob *b, void *buf, size_t n, uint64_t off);
/* A decoder's input: up to cap compressed bytes at *at (no further than
 * the blob's size), *at moved past them: their count, or -1 at the blob's
 * end (it changed since its index was built) or on an error. */
ssize_t oci_blob_input(struct oci_blob *b, void *buf, size_t cap, uint64_t *at);

/* gzip.c and zstd.c: their indexes' ends. */
void oci_gz_free(struct oci_gz_index *gz);
void oci_zs_free(struct oci_zs_index *zs);

/* ---- the cache file's buffers (index_load.c) ---- */

/* A growing buffer to write; failed once a realloc failed. */
struct oci_wbuf {
	unsigned char *p;
	size_t len, cap;
	bool failed;
};
void oci_wbuf_put(struct oci_wbuf *w, const void *d, size_t n);
/* Bytes to read: n of them (NULL when fewer are left), a uint64 (0 or -1). */
struct oci_rbuf {
	const unsigned char *p;
	size_t len, off;
};
const void *oci_rbuf_get(struct oci_rbuf *r, size_t n);
int oci_rbuf_u64(struct oci_rbuf *r, uint64_t *v);

/* gzip.c's points and zstd.c's frames into and out of a cache file; what
 * is read back is checked as the build would have made it (NULL if not),
 * bytes set to the memory it holds. */
/* gzip's windows go to wins, not into the body: a mount from the cache reads
 * a window from the file (fd, at wins_at) the first time a read needs it. */
void oci_gz_save(const struct oci_gz_index *gz, struct oci_wbuf *w, struct oci_wbuf *wins);
struct oci_gz_index *oci_gz_load(struct oci_rbuf *r, uint64_t blob_size, uint64_t stream_size, int fd,
				 uint64_t wins_at, uint64_t wins_len, uint64_t *bytes);
void oci_zs_save(const struct oci_zs_index *zs, struct oci_wbuf *w);
struct oci_zs_index *oci_zs_load(struct oci_rbuf *r, uint64_t blob_size, uint64_t stream_size, uint64_t *bytes);

#endif
