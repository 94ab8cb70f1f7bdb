/* zstd blobs: the build decompresses the stream once and notes where frames
 * start (blob offset, stream offset), about one every SPAN bytes of output
 * at most.  A frame can only be decoded from its start, so a read restarts
 * at the nearest frame start before its offset: cheap for multi-frame
 * blobs (zstd:chunked, pzstd), while a single-frame blob (what `zstd` and docker write) is decoded from
 * its beginning, unless a cursor (cursor.c) already stands before the
 * offset - sequential readers, the common case, pay only for their bytes.
 * Windows larger than libzstd's default bound (128 MiB, --long=27) are
 * refused: each cursor may need one. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "oci.h"

#define SPAN (1u << 20)
#define OUTCAP (256u * 1024)

struct zs_frame {
	uint64_t in, out;
};

struct oci_zs_index {
	struct zs_frame *f;
	size_t n, cap;
};

static const struct zs_frame *frame_for(const struct oci_zs_index *zs, uint64_t off)
{
	size_t lo = 0, hi = zs->n; /* the last frame start with out <= off; frame 0 is at 0 */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (zs->f[mid].out <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &zs->f[lo];
}

void oci_zs_free(struct oci_zs_index *zs)
{
	free(zs->f);
	free(zs);
}

/* ---- the build ---- */

struct zs_seq {
	struct oci_seq s;
	struct oci_input *in;
	struct oci_zs_index *ix;
	ZSTD_DCtx *dc;
	bool done, in_frame;
	unsigned char *out;
	size_t have, pos;
};

static int add_frame(struct zs_seq *z, uint64_t in)
{
	struct oci_zs_index *ix = z->ix;
	if (ix->n == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 64;
		struct zs_frame *f = realloc(ix->f, cap * sizeof *f);
		if (!f)
			return oci_seq_fail(&z->s, "out of memory for zstd frames");
		ix->f = f;
		ix->cap = cap;
	}
	ix->f[ix->n++] = (struct zs_frame){ in, z->s.produced };
	if (z->s.charge && z->s.charge(z->s.charge_arg, sizeof(struct zs_frame)) < 0)
		return oci_seq_fail(&z->s, "index and zstd frames beyond the memory bound");
	return 0;
}

static int zs_step(struct zs_seq *z)
{
	struct oci_input *in = z->in;
	if (in->off == in->len) {
		ssize_t r = oci_input_fill(in);
		if (r < 0)
			return oci_seq_fail(&z->s, "reading the blob: %s", strerror(errno));
		if (r == 0) {
			if (z->in_frame)
				return oci_seq_fail(&z->s, "truncated zstd stream");
			z->done = true;
			return 0;
		}
	}
	ZSTD_inBuffer ib = { in->buf, in->len, in->off };
	ZSTD_outBuffer ob = { z->out, OUTCAP, 0 };
	size_t ret = ZSTD_decompressStream(z->dc, &ob, &ib);
	in->off = ib.pos;
	z->have = ob.pos;
	z->pos = 0;
	z->s.produced += ob.pos;
	if (ZSTD_isError(ret))
		return oci_seq_fail(&z->s, "corrupt zstd stream: %s", ZSTD_getErrorName(ret));
	if (z->s.produced > z->s.max_out)
		return oci_seq_fail(&z->s, "decompression bomb: more than %llu bytes (FUSE_OVERLAYFS_OCI_MAX_SIZE, _MAX_RATIO)",
				    (unsigned long long)z->s.max_out);
	z->in_frame = ret != 0;
	if (ret == 0 && z->s.produced - z->ix->f[z->ix->n - 1].out >= SPAN)
		return add_frame(z, oci_input_tell(in));
	return 0;
}

static int zs_more(struct zs_seq *z)
{
	while (z->pos == z->have && !z->done)
		if (zs_step(z) < 0)
			return -1;
	return 0;
}

static ssize_t zs_read(struct oci_seq *s, void *buf, size_t n)
{
	struct zs_seq *z = (struct zs_seq *)s;
	if (zs_more(z) < 0)
		return -1;
	size_t k = z->have - z->pos < n ? z->have - z->pos : n;
	memcpy(buf, z->out + z->pos, k);
	z->pos += k;
	s->out += k;
	return (ssize_t)k;
}

static int zs_skip(struct oci_seq *s, uint64_t n)
{
	struct zs_seq *z = (struct zs_seq *)s;
	while (n) {
		if (zs_more(z) < 0)
			return -1;
		if (z->pos == z->have)
			return oci_seq_fail(s, "truncated: an entry runs past the end of the stream");
		size_t k = z->have - z->pos < n ? z->have - z->pos : (size_t)n;
		z->pos += k;
		s->out += k;
		n -= k;
	}
	return 0;
}

static void zs_seq_free(struct oci_seq *s)
{
	struct zs_seq *z = (struct zs_seq *)s;
	ZSTD_freeDCtx(z->dc);
	free(z->out);
	free(z);
}

struct oci_seq *oci_seq_zstd(struct oci_input *in, struct oci_blob *blob)
{
	struct zs_seq *z = calloc(1, sizeof *z);
	if (!z)
		return NULL;
	z->in = in;
	z->s.read = zs_read;
	z->s.skip = zs_skip;
	z->s.free = zs_seq_free;
	z->s.max_out = UINT64_MAX;
	z->out = malloc(OUTCAP);
	z->dc = ZSTD_createDCtx();
	z->ix = blob->zs = calloc(1, sizeof *z->ix);
	if (!z->out || !z->dc || !z->ix || add_frame(z, 0) < 0) {
		zs_seq_free(&z->s);
		return NULL;
	}
	return &z->s;
}

/* ---- reads (through cursor.c's cursors) ---- */

struct zs_dec {
	ZSTD_DCtx *dc;
	uint64_t in;      /* blob offset of the next byte to read into inbuf */
	size_t ilen, ipos;
	unsigned char inbuf[128 * 1024];
};

static void *dec_new(void)
{
	struct zs_dec *d = calloc(1, sizeof *d);
	if (d && !(d->dc = ZSTD_createDCtx())) {
		free(d);
		return NULL;
	}
	return d;
}

static void dec_free(void *dec)
{
	struct zs_dec *d = dec;
	ZSTD_freeDCtx(d->dc);
	free(d);
}

static uint64_t restart_at(const struct oci_blob *b, uint64_t off)
{
	return frame_for(b->zs, off)->out;
}

static int restart(struct oci_blob *b, void *dec, uint64_t off)
{
	struct zs_dec *d = dec;
	ZSTD_DCtx_reset(d->dc, ZSTD_reset_session_only);
	d->in = frame_for(b->zs, off)->in;
	d->ilen = d->ipos = 0;
	return 0;
}

/* Exactly n bytes of output into out; frames follow one another. */
static int decode(struct oci_blob *b, void *dec, unsigned char *out, size_t n)
{
	struct zs_dec *d = dec;
	ZSTD_outBuffer ob = { out, n, 0 };
	while (ob.pos < ob.size) {
		if (d->ipos == d->ilen) {
			ssize_t r = oci_blob_input(b, d->inbuf, sizeof d->inbuf, &d->in);
			if (r < 0)
				return -1;
			d->ilen = (size_t)r, d->ipos = 0;
		}
		ZSTD_inBuffer ib = { d->inbuf, d->ilen, d->ipos };
		size_t before = ob.pos;
		size_t ret = ZSTD_decompressStream(d->dc, &ob, &ib);
		if (ZSTD_isError(ret) || (ib.pos == d->ipos && ob.pos == before))
			return -1;
		d->ipos = ib.pos;
	}
	return 0;
}

const struct oci_codec oci_zs_codec = {
	.dec_new = dec_new,
	.dec_free = dec_free,
	.restart_at = restart_at,
	.restart = restart,
	.decode = decode,
	.scratch = 64 * 1024,
};

/* ---- the cache file (cache.c): the frames as saved, checked when read back ---- */

void oci_zs_save(const struct oci_zs_index *zs, struct oci_wbuf *w)
{
	uint64_t n = zs->n;
	oci_wbuf_put(w, &n, sizeof n);
	oci_wbuf_put(w, zs->f, zs->n * sizeof *zs->f);
}

struct oci_zs_index *oci_zs_load(struct oci_rbuf *rb, uint64_t blob, uint64_t stream, uint64_t *bytes)
{
	uint64_t n;
	struct oci_zs_index *zs = calloc(1, sizeof *zs);
	const void *q;
	if (!zs || oci_rbuf_u64(rb, &n) < 0 || !n || n > stream / SPAN + 1 ||
	    !(q = oci_rbuf_get(rb, (size_t)n * sizeof *zs->f)) || !(zs->f = malloc((size_t)n * sizeof *zs->f)))
		goto bad;
	memcpy(zs->f, q, (size_t)n * sizeof *zs->f);
	zs->n = zs->cap = (size_t)n;
	*bytes = n * sizeof *zs->f;
	if (zs->f[0].in || zs->f[0].out)
		goto bad;
	for (size_t i = 1; i < n; i++) /* as the build records them: SPAN apart at least */
		if (zs->f[i].out < zs->f[i - 1].out + SPAN || zs->f[i].out > stream || zs->f[i].in <= zs->f[i - 1].in ||
		    zs->f[i].in > blob)
			goto bad;
	return zs;
bad:
	if (zs)
		free(zs->f);
	free(zs);
	return NULL;
}
