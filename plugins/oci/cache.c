/* The index cache: a file ".NAME.ovl-index" beside blob NAME holding its
 * index and access points (or frames), so that a later mount skips the
 * pass over the blob.  It is used only when it was made for this very file
 * as it is now: same device, inode, size, mtime and ctime (ctime and inode
 * cannot be carried by an archive or a copy, so a cache shipped along with
 * a layout never matches), and, when a digest is to be verified, made by a
 * build that verified that digest.  Anything else - another blob, a
 * changed one, a damaged or hostile file - and the blob is indexed again and
 * the cache rewritten (atomically; where the directory is not writable, not
 * at all).  What is read back is checked as hostile input all the same
 * (index_load.c).  gzip's windows, most of the file, follow the body: a
 * mount reads the body only, and a read the window it needs (gzip.c),
 * checked by its own XXH64. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "cache.h"

#define MAGIC "OVLOCIX1"
#define CACHE_VERSION 2u

struct head {
	char magic[8];
	uint32_t version, comp;
	uint32_t node_size, obj_size; /* the format of this build's structures */
	uint64_t size, dev, ino, stream_size, body_len;
	uint64_t wins_len;            /* gzip's windows after the body, read when used */
	int64_t mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
	char digest[72];              /* "sha256:<hex>" verified by the build, or "" */
	unsigned char body_sha[32];   /* damage shows, the body need not be parsed */
};

static void cache_name(const char *name, char *out, size_t len)
{
	snprintf(out, len, ".%s.ovl-index", name);
}

static void head_fill(struct head *h, const struct stat *st, const char *digest, const struct oci_blob *b)
{
	memset(h, 0, sizeof *h);
	memcpy(h->magic, MAGIC, 8);
	h->version = CACHE_VERSION;
	h->comp = b->comp;
	h->node_size = (uint32_t)oci_index_node_size();
	h->obj_size = (uint32_t)oci_index_obj_size();
	h->size = (uint64_t)st->st_size, h->dev = st->st_dev, h->ino = st->st_ino;
	h->mtime_sec = st->st_mtim.tv_sec, h->mtime_nsec = st->st_mtim.tv_nsec;
	h->ctime_sec = st->st_ctim.tv_sec, h->ctime_nsec = st->st_ctim.tv_nsec;
	h->stream_size = b->stream_size;
	snprintf(h->digest, sizeof h->digest, "%s", digest ? digest : "");
}

/* The head, and the body (at most max bytes) after it, or NULL: the rest,
 * gzip's windows, is read when a read needs it (gzip.c). */
static unsigned char *read_body(int fd, struct head *h, uint64_t max)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || oci_pread_full(fd, h, sizeof *h, 0) != sizeof *h ||
	    h->body_len > max || h->wins_len > (uint64_t)st.st_size ||
	    (uint64_t)st.st_size != sizeof *h + h->body_len + h->wins_len)
		return NULL;
	unsigned char *p = malloc(h->body_len ? (size_t)h->body_len : 1);
	if (p && oci_pread_full(fd, p, (size_t)h->body_len, sizeof *h) != (ssize_t)h->body_len) {
		free(p);
		return NULL;
	}
	return p;
}

static bool head_matches(const struct head *h, const struct head *want, size_t body_len,
			 const unsigned char *body)
{
	unsigned char sha[32];
	struct sha256 s;
	if (memcmp(h->magic, MAGIC, 8) || h->version != CACHE_VERSION || h->comp != want->comp ||
	    h->node_size != want->node_size || h->obj_size != want->obj_size || h->size != want->size ||
	    h->dev != want->dev || h->ino != want->ino || h->mtime_sec != want->mtime_sec ||
	    h->mtime_nsec != want->mtime_nsec || h->ctime_sec != want->ctime_sec ||
	    h->ctime_nsec != want->ctime_nsec || h->body_len != body_len ||
	    (want->digest[0] && strncmp(h->digest, want->digest, sizeof h->digest)))
		return false;
	sha256_init(&s);
	sha256_update(&s, body, body_len);
	sha256_final(&s, sha);
	return !memcmp(sha, h->body_sha, 32);
}

/* The body: the index, then the points or frames; 0 or -1. */
static int body_load(struct oci_rbuf *r, const struct head *h, int fd, const struct oci_limits *lim,
		     struct oci_blob *b, struct oci_index **ixp)
{
	const char *why;
	uint64_t bytes = 0;
	uint64_t bound = b->comp == OCI_TAR ? b->size : oci_limits_out(lim, b->size);
	if (h->stream_size > bound || (b->comp == OCI_TAR && h->stream_size != b->size))
		return -1;
	struct oci_index *ix = oci_index_load(r, lim, h->stream_size, &why);
	if (!ix)
		return -1;
	if (b->comp == OCI_GZIP)
		b->gz = oci_gz_load(r, b->size, h->stream_size, fd, sizeof *h + h->body_len, h->wins_len, &bytes);
	else if (b->comp == OCI_ZSTD)
		b->zs = oci_zs_load(r, b->size, h->stream_size, &bytes);
	if ((b->comp == OCI_GZIP && !b->gz) || (b->comp == OCI_ZSTD && !b->zs) || r->off != r->len ||
	    oci_index_charge(ix, bytes) < 0) {
		oci_index_free(ix);
		if (b->gz)
			oci_gz_free(b->gz);
		if (b->zs)
			oci_zs_free(b->zs);
		b->gz = NULL, b->zs = NULL;
		return -1;
	}
	b->stream_size = h->stream_size;
	*ixp = ix;
	return 0;
}

int oci_cache_load(int dirfd, const char *name, const struct stat *st, const char *digest,
		   const struct oci_limits *lim, struct oci_blob *b, struct oci_index **ixp)
{
	char cname[300];
	struct head want, h;
	cache_name(name, cname, sizeof cname);
	int fd = openat(dirfd, cname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	unsigned char *p = read_body(fd, &h, 2 * lim->max_index_bytes);
	head_fill(&want, st, digest, b);
	struct oci_rbuf r = { p, p ? (size_t)h.body_len : 0, 0 };
	int ret = p && head_matches(&h, &want, r.len, r.p) ? body_load(&r, &h, fd, lim, b, ixp) : -1;
	free(p);
	close(fd); /* (gzip.c keeps a copy for its windows) */
	return ret;
}

static bool write_all(int fd, const struct oci_wbuf *w)
{
	bool ok = true;
	for (size_t off = 0; ok && off < w->len;) {
		ssize_t r = write(fd, w->p + off, w->len - off);
		ok = r > 0 || (r < 0 && errno == EINTR);
		off += r > 0 ? (size_t)r : 0;
	}
	return ok;
}

void oci_cache_save(int dirfd, const char *name, const struct stat *st, const char *digest,
		    const struct oci_blob *b, const struct oci_index *ix)
{
	char cname[300], tmp[340];
	struct head h;
	struct oci_wbuf w = { 0 }, wins = { 0 };
	uint32_t rnd = 0;
	head_fill(&h, st, digest, b);
	oci_wbuf_put(&w, &h, sizeof h);
	oci_index_save(ix, &w);
	if (b->gz)
		oci_gz_save(b->gz, &w, &wins);
	if (b->zs)
		oci_zs_save(b->zs, &w);
	if (w.failed || wins.failed)
		goto out;
	struct sha256 s;
	sha256_init(&s);
	sha256_update(&s, w.p + sizeof h, w.len - sizeof h);
	sha256_final(&s, h.body_sha);
	h.body_len = w.len - sizeof h;
	h.wins_len = wins.len;
	memcpy(w.p, &h, sizeof h);
	cache_name(name, cname, sizeof cname);
	if (getrandom(&rnd, sizeof rnd, 0) < 0)
		rnd = (uint32_t)getpid();
	snprintf(tmp, sizeof tmp, "%s.%08x", cname, rnd);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		goto out; /* a read-only store: no cache */
	bool ok = write_all(fd, &w) && write_all(fd, &wins);
	if (close(fd) < 0 || !ok || renameat(dirfd, tmp, dirfd, cname) < 0)
		unlinkat(dirfd, tmp, 0);
out:
	free(w.p);
	free(wins.p);
}
