/* A few decoders per compressed blob.  Reading a gzip or zstd stream at an
 * offset means decoding from an access point (gzip) or a frame start (zstd)
 * up to it; a decoder left where the last read ended makes the next read of
 * a sequential reader cost only its own bytes.  Several cursors serve
 * several readers at once; a read picks the one standing nearest before its
 * offset, else the least recently used.  The skip to the offset, the read
 * and the error exit are here once; the formats bring their codec (the
 * decoder's restart at an access point and its decode step). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "oci.h"

struct oci_cursor {
	uint64_t pos;       /* stream offset the decoder stands at */
	bool active;        /* pos is meaningful */
	bool busy;
	uint64_t used;      /* LRU stamp */
	void *dec;          /* the codec's decoder state */
	unsigned char *scratch; /* codec->scratch bytes of output on the way to an offset */
};

struct oci_cursors {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	const struct oci_codec *codec;
	uint64_t clock;
	unsigned n;
	struct oci_cursor c[];
};

struct oci_cursors *oci_cursors_new(unsigned n, const struct oci_codec *codec)
{
	struct oci_cursors *cs = calloc(1, sizeof *cs + n * sizeof cs->c[0]);
	if (!cs)
		return NULL;
	pthread_mutex_init(&cs->lock, NULL);
	pthread_cond_init(&cs->idle, NULL);
	cs->codec = codec;
	cs->n = n;
	return cs;
}

void oci_cursors_free(struct oci_cursors *cs)
{
	for (unsigned i = 0; i < cs->n; i++) {
		if (cs->c[i].dec)
			cs->codec->dec_free(cs->c[i].dec);
		free(cs->c[i].scratch);
	}
	pthread_mutex_destroy(&cs->lock);
	pthread_cond_destroy(&cs->idle);
	free(cs);
}

/* The idle cursor to use for a read at off: standing in [from, off] and
 * nearest to off, else the least recently used; NULL when all are busy. */
static struct oci_cursor *pick(struct oci_cursors *cs, uint64_t from, uint64_t off)
{
	struct oci_cursor *best = NULL, *lru = NULL;
	for (unsigned i = 0; i < cs->n; i++) {
		struct oci_cursor *c = &cs->c[i];
		if (c->busy)
			continue;
		if (c->active && c->pos >= from && c->pos <= off && (!best || c->pos > best->pos))
			best = c;
		if (!lru || c->used < lru->used)
			lru = c;
	}
	return best ? best : lru;
}

/* An idle cursor, the one standing in [from, off] if any (else the least
 * recently used), marked busy; waits while all are busy. */
static struct oci_cursor *cursor_get(struct oci_cursors *cs, uint64_t from, uint64_t off)
{
	pthread_mutex_lock(&cs->lock);
	struct oci_cursor *c;
	while (!(c = pick(cs, from, off)))
		pthread_cond_wait(&cs->idle, &cs->lock);
	c->busy = true;
	c->used = ++cs->clock;
	pthread_mutex_unlock(&cs->lock);
	return c;
}

static void cursor_put(struct oci_cursors *cs, struct oci_cursor *c)
{
	pthread_mutex_lock(&cs->lock);
	c->busy = false;
	pthread_cond_signal(&cs->idle);
	pthread_mutex_unlock(&cs->lock);
}

/* Reads through c: restarts its decoder unless it stands in [from, off],
 * decodes up to off, then n bytes into buf. */
static int cursor_read(struct oci_blob *b, const struct oci_codec *codec, struct oci_cursor *c, uint64_t from,
		       void *buf, size_t n, uint64_t off)
{
	if (!c->dec) {
		if (!c->scratch && !(c->scratch = malloc(codec->scratch)))
			goto nomem;
		if (!(c->dec = codec->dec_new()))
			goto nomem;
	}
	if (!c->active || c->pos > off || c->pos < from) {
		c->active = false;
		if (codec->restart(b, c->dec, off) < 0)
			goto eio;
		c->pos = from;
		c->active = true;
	}
	while (c->pos < off) {
		size_t k = off - c->pos < codec->scratch ? (size_t)(off - c->pos) : codec->scratch;
		if (codec->decode(b, c->dec, c->scratch, k) < 0)
			goto eio;
		c->pos += k;
	}
	if (codec->decode(b, c->dec, buf, n) < 0)
		goto eio;
	c->pos += n;
	return 0;
eio:
	c->active = false;
	errno = EIO;
	return -1;
nomem:
	errno = ENOMEM;
	return -1;
}

int oci_cursors_read(struct oci_cursors *cs, struct oci_blob *b, void *buf, size_t n, uint64_t off)
{
	uint64_t from = cs->codec->restart_at(b, off);
	struct oci_cursor *c = cursor_get(cs, from, off);
	int r = cursor_read(b, cs->codec, c, from, buf, n, off);
	cursor_put(cs, c);
	return r;
}

ssize_t oci_blob_input(struct oci_blob *b, void *buf, size_t cap, uint64_t *at)
{
	if (*at >= b->size)
		return -1; /* the blob changed since its index was built */
	if (cap > b->size - *at)
		cap = (size_t)(b->size - *at);
	ssize_t r;
	do
		r = pread(b->fd, buf, cap, (off_t)*at);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	*at += (uint64_t)r;
	return r;
}
