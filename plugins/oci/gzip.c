/* gzip blobs: the build inflates the stream once, block by block, and keeps
 * an access point about every SPAN bytes of output at a deflate block
 * boundary: where the block starts in the blob (byte and bit) and the 32 KiB
 * of output before it, the only state deflate carries across blocks (the
 * technique of zlib's examples/zran.c).  A read then inflates from the
 * nearest point before its offset: at most SPAN bytes of work, or none when
 * a cursor already stands there.  Windows are kept deflated (most shrink to
 * a third).  Multi-member streams (pigz, eStargz) are read member by member;
 * a member start needs no window at all. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL /* the hash from the header: nothing more to link */
#endif
#include <xxhash.h>
#include <zlib.h>

#include "oci.h"

#define SPAN (1u << 20)
#define WIN 32768u
#define OUTCAP (WIN + 256u * 1024)

struct gz_point {
	uint64_t out, in;    /* stream offset; blob offset of the byte holding the block's first bit */
	unsigned char *win;  /* the WIN bytes of output before out: deflated (clen bytes) or raw;
			      * NULL until first used when the points came from the cache file */
	uint64_t woff, wsum; /* there: the window's offset in the file, its XXH64 */
	uint32_t wlen, clen; /* clen 0: stored raw */
	uint8_t bits;        /* bits of the byte before in that belong to the block */
	bool member;         /* a gzip member starts at in */
};

struct oci_gz_index {
	struct gz_point *p;
	size_t n, cap;
	int cache_fd;        /* the cache file the windows are read from, or -1 */
};

static struct gz_point *point_for(const struct oci_gz_index *gz, uint64_t off)
{
	size_t lo = 0, hi = gz->n; /* the last point with out <= off; point 0 is at 0 */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (gz->p[mid].out <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &gz->p[lo];
}

void oci_gz_free(struct oci_gz_index *gz)
{
	for (size_t i = 0; i < gz->n; i++)
		free(gz->p[i].win);
	if (gz->cache_fd >= 0)
		close(gz->cache_fd);
	free(gz->p);
	free(gz);
}

/* p's window: in memory, else read from the cache file and checked (the
 * file may have been changed under us: EIO then).  Readers race to read
 * it; one copy stays. */
static const unsigned char *point_window(const struct oci_gz_index *gz, struct gz_point *p)
{
	unsigned char *w = __atomic_load_n(&p->win, __ATOMIC_ACQUIRE), *none = NULL;
	size_t len = p->clen ? p->clen : p->wlen;
	if (w || gz->cache_fd < 0)
		return w;
	if (!(w = malloc(len)))
		return NULL;
	if (oci_pread_full(gz->cache_fd, w, len, p->woff) != (ssize_t)len || XXH64(w, len, 0) != p->wsum) {
		free(w);
		errno = EIO;
		return NULL;
	}
	if (!__atomic_compare_exchange_n(&p->win, &none, w, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		free(w);
		w = none;
	}
	return w;
}

/* ---- the build ---- */

struct gz_seq {
	struct oci_seq s;
	struct oci_input *in;
	struct oci_gz_index *ix;
	z_stream zs;
	bool done;
	unsigned char *out; /* the last WIN bytes handed out, then new output */
	size_t have, pos;   /* bytes in out; bytes of them read */
	uint64_t last_point;
};

/* Keeps the window: the bytes before the end of out (all of them, early on). */
static int keep_window(struct gz_point *p, const unsigned char *end, size_t w)
{
	uLongf clen = compressBound(w);
	unsigned char *c = malloc(clen);
	if (!c)
		return -1;
	if (compress2(c, &clen, end - w, w, 1) == Z_OK && clen < w) {
		unsigned char *s = realloc(c, clen);
		p->win = s ? s : c;
		p->clen = (uint32_t)clen;
	} else {
		memcpy(c, end - w, w);
		p->win = c;
	}
	p->wlen = (uint32_t)w;
	return 0;
}

static int add_point(struct gz_seq *g, uint64_t in, int bits, bool member)
{
	struct oci_gz_index *ix = g->ix;
	if (ix->n == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 64;
		struct gz_point *p = realloc(ix->p, cap * sizeof *p);
		if (!p)
			return oci_seq_fail(&g->s, "out of memory for gzip access points");
		ix->p = p;
		ix->cap = cap;
	}
	struct gz_point *p = &ix->p[ix->n];
	memset(p, 0, sizeof *p);
	p->out = g->s.produced, p->in = in, p->bits = (uint8_t)bits, p->member = member;
	if (!member && keep_window(p, g->out + g->have, g->have < WIN ? g->have : WIN) < 0)
		return oci_seq_fail(&g->s, "out of memory for gzip access points");
	ix->n++;
	g->last_point = p->out;
	uint64_t cost = sizeof *p + (p->clen ? p->clen : p->wlen);
	if (g->s.charge && g->s.charge(g->s.charge_arg, cost) < 0)
		return oci_seq_fail(&g->s, "index and gzip access points beyond the memory bound");
	return 0;
}

/* After a member: another one, or the end (bytes that are no gzip member
 * end the stream; the tar parser finds it truncated if it needed more). */
static int member_end(struct gz_seq *g)
{
	struct oci_input *in = g->in;
	while (in->len - in->off < 2) {
		ssize_t r = oci_input_fill(in);
		if (r < 0)
			return oci_seq_fail(&g->s, "reading the blob: %s", strerror(errno));
		if (r == 0)
			break;
	}
	if (in->len - in->off < 2 || in->buf[in->off] != 0x1f || in->buf[in->off + 1] != 0x8b) {
		g->done = true;
		return 0;
	}
	inflateReset(&g->zs);
	if (g->s.produced - g->last_point >= SPAN)
		return add_point(g, oci_input_tell(in), 0, true);
	return 0;
}

/* One inflate call (to the next block boundary at most). */
static int inflate_step(struct gz_seq *g)
{
	struct oci_input *in = g->in;
	if (in->off == in->len) {
		ssize_t r = oci_input_fill(in);
		if (r < 0)
			return oci_seq_fail(&g->s, "reading the blob: %s", strerror(errno));
		if (r == 0)
			return oci_seq_fail(&g->s, "truncated gzip stream");
	}
	g->zs.next_in = in->buf + in->off;
	g->zs.avail_in = (uInt)(in->len - in->off);
	g->zs.next_out = g->out + g->have;
	g->zs.avail_out = (uInt)(OUTCAP - g->have);
	size_t before = in->off;
	int ret = inflate(&g->zs, Z_BLOCK);
	in->off = in->len - g->zs.avail_in;
	size_t got = OUTCAP - g->zs.avail_out - g->have;
	g->have += got;
	g->s.produced += got;
	if (ret == Z_BUF_ERROR && (got || in->off != before))
		ret = Z_OK; /* progress all the same */
	if (ret != Z_OK && ret != Z_STREAM_END)
		return oci_seq_fail(&g->s, "corrupt gzip stream: %s", g->zs.msg ? g->zs.msg : "inflate error");
	if (g->s.produced > g->s.max_out)
		return oci_seq_fail(&g->s, "decompression bomb: more than %llu bytes (FUSE_OVERLAYFS_OCI_MAX_SIZE, _MAX_RATIO)",
				    (unsigned long long)g->s.max_out);
	if (ret == Z_STREAM_END)
		return member_end(g);
	/* bit 7: at the end of a block; bit 6: of the last one */
	if ((g->zs.data_type & 128) && !(g->zs.data_type & 64) && g->s.produced - g->last_point >= SPAN)
		return add_point(g, oci_input_tell(in), g->zs.data_type & 7, false);
	return 0;
}

/* More output to read (pos < have), or done. */
static int gz_more(struct gz_seq *g)
{
	if (g->have > WIN) { /* keep the window's worth of history */
		memmove(g->out, g->out + g->have - WIN, WIN);
		g->pos = g->have = WIN;
	}
	while (g->pos == g->have && !g->done)
		if (inflate_step(g) < 0)
			return -1;
	return 0;
}

static ssize_t gz_read(struct oci_seq *s, void *buf, size_t n)
{
	struct gz_seq *g = (struct gz_seq *)s;
	if (g->pos == g->have && gz_more(g) < 0)
		return -1;
	size_t k = g->have - g->pos < n ? g->have - g->pos : n;
	memcpy(buf, g->out + g->pos, k);
	g->pos += k;
	s->out += k;
	return (ssize_t)k;
}

static int gz_skip(struct oci_seq *s, uint64_t n)
{
	struct gz_seq *g = (struct gz_seq *)s;
	while (n) {
		if (g->pos == g->have && gz_more(g) < 0)
			return -1;
		if (g->pos == g->have)
			return oci_seq_fail(s, "truncated: an entry runs past the end of the stream");
		size_t k = g->have - g->pos < n ? g->have - g->pos : (size_t)n;
		g->pos += k;
		s->out += k;
		n -= k;
	}
	return 0;
}

static void gz_seq_free(struct oci_seq *s)
{
	struct gz_seq *g = (struct gz_seq *)s;
	inflateEnd(&g->zs);
	free(g->out);
	free(g);
}

struct oci_seq *oci_seq_gzip(struct oci_input *in, struct oci_blob *blob)
{
	struct gz_seq *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->in = in;
	g->s.read = gz_read;
	g->s.skip = gz_skip;
	g->s.free = gz_seq_free;
	g->s.max_out = UINT64_MAX;
	g->out = malloc(OUTCAP);
	g->ix = blob->gz = calloc(1, sizeof *g->ix);
	if (g->ix)
		g->ix->cache_fd = -1;
	if (!g->out || !g->ix || inflateInit2(&g->zs, 15 + 16) != Z_OK) {
		free(g->out);
		free(g->ix);
		blob->gz = NULL;
		free(g);
		return NULL;
	}
	if (add_point(g, 0, 0, true) < 0) { /* the stream's start */
		gz_seq_free(&g->s);
		return NULL;
	}
	return &g->s;
}

/* ---- reads (through cursor.c's cursors) ---- */

struct gz_dec {
	z_stream zs;
	bool raw;        /* inflating raw deflate from a point inside a member */
	uint64_t in;     /* blob offset of the next byte to read into inbuf */
	unsigned char inbuf[64 * 1024];
	unsigned char win[WIN];
};

static void *dec_new(void)
{
	struct gz_dec *d = calloc(1, sizeof *d);
	if (d && inflateInit2(&d->zs, -15) != Z_OK) {
		free(d);
		return NULL;
	}
	return d;
}

static void dec_free(void *dec)
{
	struct gz_dec *d = dec;
	inflateEnd(&d->zs);
	free(d);
}

static uint64_t restart_at(const struct oci_blob *b, uint64_t off)
{
	return point_for(b->gz, off)->out;
}

static int restart(struct oci_blob *b, void *dec, uint64_t off)
{
	struct gz_dec *d = dec;
	struct gz_point *p = point_for(b->gz, off);
	d->zs.avail_in = 0;
	d->raw = !p->member;
	if (p->member) {
		d->in = p->in;
		return inflateReset2(&d->zs, 15 + 16) == Z_OK ? 0 : -1;
	}
	if (inflateReset2(&d->zs, -15) != Z_OK)
		return -1;
	d->in = p->in - (p->bits ? 1 : 0);
	if (p->bits) {
		unsigned char c;
		if (pread(b->fd, &c, 1, (off_t)d->in) != 1)
			return -1;
		d->in++;
		if (inflatePrime(&d->zs, p->bits, c >> (8 - p->bits)) != Z_OK)
			return -1;
	}
	const unsigned char *w = point_window(b->gz, p);
	if (!w)
		return -1;
	if (p->clen) {
		uLongf wl = WIN;
		if (uncompress(d->win, &wl, w, p->clen) != Z_OK || wl != p->wlen)
			return -1;
		w = d->win;
	}
	return inflateSetDictionary(&d->zs, w, p->wlen) == Z_OK ? 0 : -1;
}

/* Exactly n bytes of output into out. */
static int decode(struct oci_blob *b, void *dec, unsigned char *out, size_t n)
{
	struct gz_dec *d = dec;
	d->zs.next_out = out;
	d->zs.avail_out = (uInt)n;
	while (d->zs.avail_out) {
		if (!d->zs.avail_in) {
			ssize_t r = oci_blob_input(b, d->inbuf, sizeof d->inbuf, &d->in);
			if (r < 0)
				return -1;
			d->zs.next_in = d->inbuf;
			d->zs.avail_in = (uInt)r;
		}
		int ret = inflate(&d->zs, Z_NO_FLUSH);
		if (ret == Z_STREAM_END) {
			/* the next member; a raw stream leaves the member's 8-byte trailer */
			d->in = d->in - d->zs.avail_in + (d->raw ? 8 : 0);
			d->zs.avail_in = 0;
			d->raw = false;
			if (inflateReset2(&d->zs, 15 + 16) != Z_OK)
				return -1;
		} else if (ret != Z_OK) {
			return -1;
		}
	}
	return 0;
}

const struct oci_codec oci_gz_codec = {
	.dec_new = dec_new,
	.dec_free = dec_free,
	.restart_at = restart_at,
	.restart = restart,
	.decode = decode,
	.scratch = 32 * 1024,
};

/* ---- the cache file (cache.c): the points as saved, checked when read back ---- */

struct gz_rec {
	uint64_t out, in;
	uint64_t woff, wsum; /* the window's place in the windows part of the file, its XXH64 */
	uint32_t wlen, clen;
	uint8_t bits, member, pad[6];
};

void oci_gz_save(const struct oci_gz_index *gz, struct oci_wbuf *w, struct oci_wbuf *wins)
{
	uint64_t n = gz->n;
	oci_wbuf_put(w, &n, sizeof n);
	for (size_t i = 0; i < gz->n; i++) {
		const struct gz_point *p = &gz->p[i];
		size_t len = p->clen ? p->clen : p->wlen;
		struct gz_rec r = { p->out, p->in, wins->len, p->member ? 0 : XXH64(p->win, len, 0),
				    p->wlen, p->clen, p->bits, p->member, { 0 } };
		oci_wbuf_put(w, &r, sizeof r);
		if (!p->member)
			oci_wbuf_put(wins, p->win, len);
	}
}

/* A point as the build makes them: after the one before by SPAN at least. */
static bool rec_ok(const struct gz_rec *r, const struct gz_point *prev, uint64_t blob, uint64_t stream,
		   uint64_t wins_len)
{
	if (!prev)
		return r->out == 0 && r->in == 0 && r->member && !r->bits;
	if (r->out < prev->out + SPAN || r->out > stream || r->in <= prev->in || r->in > blob || r->bits > 7)
		return false;
	if (r->member)
		return !r->bits && !r->wlen && !r->clen;
	uint64_t len = r->clen ? r->clen : r->wlen;
	return r->wlen && r->wlen <= WIN && r->clen < r->wlen && (r->bits == 0 || r->in >= 1) &&
	       r->woff <= wins_len && len <= wins_len - r->woff;
}

struct oci_gz_index *oci_gz_load(struct oci_rbuf *rb, uint64_t blob, uint64_t stream, int fd, uint64_t wins_at,
				 uint64_t wins_len, uint64_t *bytes)
{
	uint64_t n;
	struct oci_gz_index *gz = calloc(1, sizeof *gz);
	if (gz)
		gz->cache_fd = -1;
	if (!gz || oci_rbuf_u64(rb, &n) < 0 || !n || n > stream / SPAN + 1 ||
	    !(gz->p = calloc((size_t)n, sizeof *gz->p)))
		goto bad;
	*bytes = n * sizeof *gz->p;
	for (size_t i = 0; i < n; i++) {
		struct gz_rec r;
		const void *q = oci_rbuf_get(rb, sizeof r);
		if (!q)
			goto bad;
		memcpy(&r, q, sizeof r);
		if (!rec_ok(&r, i ? &gz->p[i - 1] : NULL, blob, stream, wins_len))
			goto bad;
		gz->p[gz->n++] = (struct gz_point){ r.out, r.in, NULL, wins_at + r.woff, r.wsum,
						     r.wlen, r.clen, r.bits, r.member };
	}
	/* the windows stay in the file until a read needs one */
	if (fd >= 0 && (gz->cache_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		goto bad;
	return gz;
bad:
	if (gz && gz->p)
		oci_gz_free(gz);
	else
		free(gz);
	return NULL;
}
