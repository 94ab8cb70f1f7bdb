/* One pass over a blob: its compression told by magic bytes, its stream
 * parsed as a tar into the index, the access points of gzip or frames of
 * zstd recorded on the way, its bytes hashed as they are read.  A digest
 * mismatch refuses the layer after the pass: a blob is only known to be the
 * one named once all of it has been read. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build.h"
#include "cache.h"

/* Cursors a compressed blob keeps: readers at once without restarts. */
#define OCI_CURSORS 4

const char *oci_digest_hex(const char *digest)
{
	if (!digest || strncmp(digest, "sha256:", 7))
		return NULL;
	const char *h = digest + 7;
	for (int i = 0; i < 64; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return NULL;
	return h[64] ? NULL : h;
}

static struct oci_seq *make_seq(struct oci_input *in, struct oci_blob *b, const struct oci_limits *lim,
				struct oci_index *ix)
{
	struct oci_seq *s = b->comp == OCI_GZIP ? oci_seq_gzip(in, b) :
			    b->comp == OCI_ZSTD ? oci_seq_zstd(in, b) : oci_seq_tar(in);
	if (!s)
		return NULL;
	if (b->comp != OCI_TAR)
		s->max_out = oci_limits_out(lim, b->size);
	s->charge = oci_index_charge;
	s->charge_arg = ix;
	return s;
}

/* The rest of the stream after the tar's end: a gzip member's CRC or a
 * zstd frame's checksum is checked at its end, and Go's readers (so
 * containerd) read a layer to its end, refusing it on a bad one. */
static int drain(struct oci_seq *s, char *err, size_t errlen)
{
	char buf[16384];
	ssize_t r;
	while ((r = s->read(s, buf, sizeof buf)) > 0)
		;
	if (r < 0)
		snprintf(err, errlen, "after the end of the tar: %s", s->msg ? s->msg : "read error");
	return r < 0 ? -1 : 0;
}

/* The tar entries into the index: 0 or -1 with err. */
static int parse(struct oci_seq *s, struct oci_index *ix, char *err, size_t errlen)
{
	struct tar_parser *tp = tar_new(s);
	struct tar_entry e;
	int r;
	if (!tp) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	while ((r = tar_next(tp, &e)) > 0) {
		if (oci_index_add(ix, &e) < 0) {
			snprintf(err, errlen, "%s", oci_index_error(ix));
			r = -1;
			break;
		}
	}
	if (r < 0 && !err[0])
		snprintf(err, errlen, "%s", tar_error(tp));
	tar_free(tp);
	return r;
}

static int check_digest(struct oci_input *in, const char *want_hex, char *err, size_t errlen)
{
	unsigned char d[32];
	char hex[65];
	if (oci_input_drain(in) < 0) {
		snprintf(err, errlen, "reading the blob: %s", strerror(errno));
		return -1;
	}
	sha256_final(&in->sha, d);
	sha256_hex(d, hex);
	if (strcmp(hex, want_hex)) {
		snprintf(err, errlen, "digest mismatch: the blob is sha256:%s, not sha256:%s", hex, want_hex);
		return -1;
	}
	return 0;
}

/* The blob's file (st): a regular file of the expected size; its compression. */
static int blob_open(int fd, const struct oci_build_want *want, struct oci_blob *b, struct stat *st, char *err,
		     size_t errlen)
{
	unsigned char magic[6] = { 0 };
	const char *unsupported;
	memset(b, 0, sizeof *b);
	b->fd = fd;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "not a regular file");
		return -1;
	}
	if (want->size >= 0 && st->st_size != want->size) {
		snprintf(err, errlen, "%lld bytes, the manifest says %lld", (long long)st->st_size, (long long)want->size);
		return -1;
	}
	b->size = (uint64_t)st->st_size;
	b->mtime = st->st_mtim;
	ssize_t n = pread(fd, magic, sizeof magic, 0);
	b->comp = oci_comp_detect(magic, n > 0 ? (size_t)n : 0, &unsupported);
	if (unsupported) {
		snprintf(err, errlen, "%s compression is not supported (tar, gzip or zstd)", unsupported);
		return -1;
	}
	b->stream_size = b->size;
	return 0;
}

int oci_build(int fd, const struct oci_build_want *want, const struct oci_limits *lim, struct oci_log *log,
	      struct oci_blob *blob, struct oci_index **ixp, char *err, size_t errlen)
{
	const char *hex = want->digest ? oci_digest_hex(want->digest) : NULL;
	struct oci_input in = { .buf = NULL };
	struct oci_index *ix = NULL;
	struct oci_seq *s = NULL;
	struct stat st;
	bool cache = lim->cache && want->dirfd >= 0;
	int r = -1;
	err[0] = 0;
	if (want->digest && !hex) {
		snprintf(err, errlen, "unsupported digest '%.80s' (sha256 only)", want->digest);
		close(fd);
		return -1;
	}
	if (blob_open(fd, want, blob, &st, err, errlen) < 0)
		goto out;
	if (cache && oci_cache_load(want->dirfd, want->name, &st, want->digest, lim, blob, &ix) == 0)
		goto built;
	if (oci_input_init(&in, fd, blob->size, hex != NULL) < 0 ||
	    !(ix = oci_index_new(lim, log, (int64_t)blob->mtime.tv_sec)) || !(s = make_seq(&in, blob, lim, ix))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (parse(s, ix, err, errlen) < 0 || (blob->comp != OCI_TAR && drain(s, err, errlen) < 0) ||
	    (hex && check_digest(&in, hex, err, errlen) < 0))
		goto out;
	oci_index_finish(ix);
	if (blob->comp != OCI_TAR)
		blob->stream_size = s->produced;
	if (cache)
		oci_cache_save(want->dirfd, want->name, &st, want->digest, blob, ix);
built:
	if (blob->comp != OCI_TAR) {
		blob->cursors = oci_cursors_new(OCI_CURSORS, blob->comp == OCI_GZIP ? &oci_gz_codec : &oci_zs_codec);
		if (!blob->cursors) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	*ixp = ix;
	ix = NULL;
	r = 0;
out:
	if (s)
		s->free(s);
	oci_input_free(&in);
	oci_index_free(ix);
	if (r < 0)
		oci_blob_close(blob);
	return r;
}
