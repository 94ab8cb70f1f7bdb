/* A blob's bytes: its compression, the sequential input of the build (read
 * in large chunks and hashed as they pass), the stream of an uncompressed
 * tar or of a buffer, and reads at an offset of the uncompressed stream. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oci.h"

enum oci_comp oci_comp_detect(const unsigned char *m, size_t n, const char **unsupported)
{
	*unsupported = NULL;
	if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b)
		return OCI_GZIP;
	/* a zstd frame, or a skippable frame (zstd:chunked) */
	if (n >= 4 && ((m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) ||
		       ((m[0] & 0xf0) == 0x50 && m[1] == 0x2a && m[2] == 0x4d && m[3] == 0x18)))
		return OCI_ZSTD;
	if (n >= 6 && !memcmp(m, "\xfd" "7zXZ\0", 6))
		*unsupported = "xz";
	else if (n >= 3 && !memcmp(m, "BZh", 3))
		*unsupported = "bzip2";
	else if (n >= 4 && !memcmp(m, "\x04\x22\x4d\x18", 4))
		*unsupported = "lz4";
	return OCI_TAR;
}

const char *oci_comp_name(enum oci_comp c)
{
	return c == OCI_GZIP ? "gzip" : c == OCI_ZSTD ? "zstd" : "tar";
}

/* ---- the input of the build ---- */

int oci_input_init(struct oci_input *in, int fd, uint64_t size, bool hashing)
{
	memset(in, 0, sizeof *in);
	in->fd = fd;
	in->size = size;
	in->hashing = hashing;
	in->buf = malloc(OCI_INPUT_CHUNK);
	if (!in->buf)
		return -1;
	sha256_init(&in->sha);
	return 0;
}

void oci_input_free(struct oci_input *in)
{
	free(in->buf);
	in->buf = NULL;
}

ssize_t oci_input_fill(struct oci_input *in)
{
	size_t left = in->len - in->off;
	memmove(in->buf, in->buf + in->off, left);
	in->len = left;
	in->off = 0;
	if (in->pos >= in->size || left == OCI_INPUT_CHUNK)
		return 0;
	size_t want = OCI_INPUT_CHUNK - left;
	if (want > in->size - in->pos)
		want = (size_t)(in->size - in->pos);
	ssize_t r;
	do
		r = pread(in->fd, in->buf + left, want, (off_t)in->pos);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		if (r == 0)
			errno = EIO; /* shorter than when it was opened */
		return -1;
	}
	if (in->hashing)
		sha256_update(&in->sha, in->buf + left, (size_t)r);
	in->pos += (uint64_t)r;
	in->len += (size_t)r;
	return r;
}

int oci_input_drain(struct oci_input *in)
{
	for (;;) {
		in->off = in->len;
		ssize_t r = oci_input_fill(in);
		if (r <= 0)
			return (int)r;
	}
}

int oci_seq_fail(struct oci_seq *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->msgbuf, sizeof s->msgbuf, fmt, ap);
	va_end(ap);
	s->msg = s->msgbuf;
	return -1;
}

/* ---- an uncompressed tar: the input itself ---- */

struct tar_seq {
	struct oci_seq s;
	struct oci_input *in;
};

static ssize_t tar_read(struct oci_seq *s, void *buf, size_t n)
{
	struct tar_seq *t = (struct tar_seq *)s;
	struct oci_input *in = t->in;
	if (in->off == in->len && oci_input_fill(in) < 0)
		return oci_seq_fail(s, "reading the blob: %s", strerror(errno));
	size_t k = in->len - in->off < n ? in->len - in->off : n;
	memcpy(buf, in->buf + in->off, k);
	in->off += k;
	s->out += k;
	s->produced = s->out;
	return (ssize_t)k;
}

static int tar_skip(struct oci_seq *s, uint64_t n)
{
	struct tar_seq *t = (struct tar_seq *)s;
	struct oci_input *in = t->in;
	uint64_t end = s->out + n;
	if (end > in->size || end < s->out)
		return oci_seq_fail(s, "truncated: an entry runs past the end of the blob");
	while (s->out < end) {
		if (in->off == in->len) {
			if (!in->hashing) { /* nothing to hash: no need to read the data */
				in->pos = end;
				in->off = in->len = 0;
				s->out = s->produced = end;
				break;
			}
			if (oci_input_fill(in) <= 0)
				return oci_seq_fail(s, "reading the blob: %s", strerror(errno));
		}
		uint64_t k = in->len - in->off;
		if (k > end - s->out)
			k = end - s->out;
		in->off += (size_t)k;
		s->out += k;
	}
	s->produced = s->out;
	return 0;
}

static void seq_free(struct oci_seq *s)
{
	free(s);
}

struct oci_seq *oci_seq_tar(struct oci_input *in)
{
	struct tar_seq *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->in = in;
	t->s.read = tar_read;
	t->s.skip = tar_skip;
	t->s.free = seq_free;
	t->s.max_out = UINT64_MAX;
	return &t->s;
}

/* ---- a buffer ---- */

struct mem_seq {
	struct oci_seq s;
	const unsigned char *data;
	size_t size;
};

static ssize_t mem_read(struct oci_seq *s, void *buf, size_t n)
{
	struct mem_seq *m = (struct mem_seq *)s;
	size_t left = m->size - (size_t)s->out, k = n < left ? n : left;
	memcpy(buf, m->data + s->out, k);
	s->out += k;
	s->produced = s->out;
	return (ssize_t)k;
}

static int mem_skip(struct oci_seq *s, uint64_t n)
{
	struct mem_seq *m = (struct mem_seq *)s;
	if (n > m->size - s->out)
		return oci_seq_fail(s, "truncated: an entry runs past the end of the stream");
	s->out += n;
	s->produced = s->out;
	return 0;
}

struct oci_seq *oci_seq_mem(const void *data, size_t size)
{
	struct mem_seq *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->data = data;
	m->size = size;
	m->s.read = mem_read;
	m->s.skip = mem_skip;
	m->s.free = seq_free;
	m->s.max_out = UINT64_MAX;
	return &m->s;
}

/* ---- reads at an offset ---- */

ssize_t oci_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

ssize_t oci_blob_pread(struct oci_blob *b, void *buf, size_t n, uint64_t off)
{
	if (off >= b->stream_size)
		return 0;
	if (n > b->stream_size - off)
		n = (size_t)(b->stream_size - off);
	if (!n)
		return 0;
	if (b->comp == OCI_TAR)
		return oci_pread_full(b->fd, buf, n, off);
	return oci_cursors_read(b->cursors, b, buf, n, off) < 0 ? -1 : (ssize_t)n;
}

void oci_blob_close(struct oci_blob *b)
{
	if (b->cursors)
		oci_cursors_free(b->cursors);
	if (b->gz)
		oci_gz_free(b->gz);
	if (b->zs)
		oci_zs_free(b->zs);
	if (b->fd >= 0)
		close(b->fd);
	memset(b, 0, sizeof *b);
	b->fd = -1;
}
