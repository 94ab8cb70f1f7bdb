/* A few decoders per compressed blob.  Reading a gzip or zstd stream at an
 * offset means decoding from an access point (gzip) or a frame start (zstd)
 * up to it; a decoder left where the last read ended makes the next read of
 * a sequential reader cost only its own bytes.  Several cursors serve
 * several readers at once; a read picks the one standing nearest before its
 * offset, else the least recently used. */
#include "config.h"

#include <stdlib.h>

#include "oci.h"

struct oci_cursors {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	void (*dec_free)(void *dec);
	uint64_t clock;
	unsigned n;
	struct oci_cursor c[];
};

struct oci_cursors *oci_cursors_new(unsigned n, void (*dec_free)(void *dec))
{
	struct oci_cursors *cs = calloc(1, sizeof *cs + n * sizeof cs->c[0]);
	if (!cs)
		return NULL;
	pthread_mutex_init(&cs->lock, NULL);
	pthread_cond_init(&cs->idle, NULL);
	cs->dec_free = dec_free;
	cs->n = n;
	return cs;
}

void oci_cursors_free(struct oci_cursors *cs)
{
	for (unsigned i = 0; i < cs->n; i++)
		if (cs->c[i].dec)
			cs->dec_free(cs->c[i].dec);
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

struct oci_cursor *oci_cursor_get(struct oci_cursors *cs, uint64_t from, uint64_t off)
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

void oci_cursor_put(struct oci_cursors *cs, struct oci_cursor *c)
{
	pthread_mutex_lock(&cs->lock);
	c->busy = false;
	pthread_cond_signal(&cs->idle);
	pthread_mutex_unlock(&cs->lock);
}
