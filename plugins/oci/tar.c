/* The tar header parser (see tar.h for the dialects and rules).  It pulls
 * the uncompressed stream through an oci_seq, reads headers and the records
 * that describe the next entry ('x', 'L', 'K', GNU sparse maps), and skips
 * file data without reading it: the index keeps where it lies. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tar.h"

#define BLOCK 512
#define PAD(n) (((n) + BLOCK - 1) & ~(uint64_t)(BLOCK - 1))

/* A growing byte buffer, bounded by TAR_MAX_META a use. */
struct buf {
	char *p;
	size_t len, cap;
};

/* What the PAX records before an entry say about it. */
struct pax {
	const char *path, *link, *sparse_name;
	size_t path_len, link_len;
	bool has_size, has_mtime, has_uid, has_gid;
	uint64_t size;
	int64_t mtime, uid, gid;
	uint32_t mtime_nsec;
	const char *sp_major, *sp_minor, *sp_size, *sp_realsize, *sp_map, *sp_numblocks;
	size_t nxattrs;
};

struct tar_parser {
	struct oci_seq *src;
	uint64_t pending;             /* data of the last entry or record, still to skip */
	size_t pad;                   /* then its padding, where the stream may end (Go) */
	unsigned char hdr[BLOCK];
	struct buf pax_raw, longname, longlink, sparse_map00;
	bool has_longname, has_longlink;
	struct pax pax;
	char name[256 + 155 + 1];     /* prefix "/" name */
	char linkname[101];
	struct tar_xattr xattrs[TAR_MAX_XATTRS];
	struct tar_sparse *sparse;
	size_t nsparse, sparse_cap;
	char err[256];
};

static int fail(struct tar_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct tar_parser *p, const char *fmt, ...)
{
	int n = snprintf(p->err, sizeof p->err, "tar stream at %llu: ", (unsigned long long)p->src->out);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof p->err)
		vsnprintf(p->err + n, sizeof p->err - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* Exactly n bytes: 0; 1 when the stream ends before the first; -1 on error. */
static int read_full(struct tar_parser *p, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = p->src->read(p->src, (char *)buf + got, n - got);
		if (r < 0)
			return fail(p, "%s", p->src->msg ? p->src->msg : "read error");
		if (r == 0) {
			if (got == 0)
				return 1;
			return fail(p, "truncated: the stream ends inside a block");
		}
		got += (size_t)r;
	}
	return 0;
}

static int skip(struct tar_parser *p, uint64_t n)
{
	if (n && p->src->skip(p->src, n) < 0)
		return fail(p, "%s", p->src->msg ? p->src->msg : "truncated: the stream ends inside an entry");
	return 0;
}

/* ---- numbers ---- */

int tar_parse_numeric(const unsigned char *f, size_t n, int64_t *out)
{
	if (n && (f[0] & 0x80)) {
		/* GNU base-256: big-endian two's complement, the top bit a marker */
		unsigned char inv = (f[0] & 0x40) ? 0xff : 0;
		uint64_t x = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = f[i] ^ inv;
			if (i == 0)
				c &= 0x7f;
			if (x >> 56)
				return -1;
			x = x << 8 | c;
		}
		if (x >> 63)
			return -1;
		*out = inv ? ~(int64_t)x : (int64_t)x;
		return 0;
	}
	/* octal, padded with spaces or NULs on either side */
	size_t a = 0, b = n;
	while (a < b && (f[a] == ' ' || f[a] == 0))
		a++;
	while (b > a && (f[b - 1] == ' ' || f[b - 1] == 0))
		b--;
	for (size_t i = a; i < b; i++)
		if (!f[i])
			b = i;
	uint64_t x = 0;
	for (size_t i = a; i < b; i++) {
		if (f[i] < '0' || f[i] > '7' || (x >> 60))
			return -1;
		x = x << 3 | (uint64_t)(f[i] - '0');
	}
	if (x > INT64_MAX)
		return -1;
	*out = (int64_t)x;
	return 0;
}

int tar_parse_pax_time(const char *s, size_t n, int64_t *sec, uint32_t *nsec)
{
	const char *dot = memchr(s, '.', n);
	size_t il = dot ? (size_t)(dot - s) : n;
	int64_t secs;
	uint32_t ns = 0;
	if (oci_parse_i64(s, il, &secs) < 0)
		return -1;
	if (dot) {
		size_t fl = n - il - 1;
		uint32_t scale = 100000000;
		for (size_t i = 0; i < fl; i++) {
			char c = dot[1 + i];
			if (c < '0' || c > '9')
				return -1;
			ns += (uint32_t)(c - '0') * scale;
			scale /= 10;
		}
	}
	if (ns && s[0] == '-') {
		/* -1.5 is a second and a half before the epoch */
		if (secs == INT64_MIN)
			return -1;
		secs--;
		ns = 1000000000 - ns;
	}
	*sec = secs;
	*nsec = ns;
	return 0;
}

/* ---- buffers of records ---- */

/* Appends the n-byte data of a record ('x', 'L', 'K') to b; its padding is left in p->pad
 * for the next header's read to skip. */
static int read_meta(struct tar_parser *p, struct buf *b, uint64_t n, const char *what)
{
	if (n > TAR_MAX_META || b->len + n > 4 * (size_t)TAR_MAX_META)
		return fail(p, "%s record of %llu bytes (more than %u)", what, (unsigned long long)n, TAR_MAX_META);
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->len + (size_t)n + 1;
		char *q = realloc(b->p, cap);
		if (!q)
			return fail(p, "out of memory");
		b->p = q;
		b->cap = cap;
	}
	int r = read_full(p, b->p + b->len, (size_t)n);
	if (r)
		return r < 0 ? -1 : fail(p, "truncated: the stream ends inside a %s record", what);
	b->len += (size_t)n;
	b->p[b->len] = 0;
	p->pad = (size_t)(PAD(n) - n);
	return 0;
}

static int sparse_add(struct tar_parser *p, uint64_t off, uint64_t len)
{
	if (p->nsparse == TAR_MAX_SPARSE)
		return fail(p, "sparse map of more than %u stretches", TAR_MAX_SPARSE);
	if (p->nsparse == p->sparse_cap) {
		size_t cap = p->sparse_cap ? p->sparse_cap * 2 : 16;
		struct tar_sparse *s = realloc(p->sparse, cap * sizeof *s);
		if (!s)
			return fail(p, "out of memory");
		p->sparse = s;
		p->sparse_cap = cap;
	}
	p->sparse[p->nsparse++] = (struct tar_sparse){ off, len };
	return 0;
}

/* ---- PAX records ---- */

static int pax_value_u(struct tar_parser *p, const char *k, const char *v, size_t vl, int64_t *out)
{
	if (oci_parse_i64(v, vl, out) < 0)
		return fail(p, "PAX record %s: not a number", k);
	return 0;
}

/* GNU sparse 0.0 gives its map as alternating offset and numbytes records. */
static int pax_sparse00(struct tar_parser *p, const char *k, const char *v, size_t vl)
{
	bool is_off = !strcmp(k, "GNU.sparse.offset");
	struct buf *b = &p->sparse_map00;
	size_t nfields = 0;
	for (size_t i = 0; i < b->len; i++)
		nfields += b->p[i] == ',';
	if (b->len)
		nfields++;
	if ((nfields % 2 == 0) != is_off)
		return fail(p, "PAX GNU sparse 0.0 records out of order");
	if (b->len + vl + 2 > TAR_MAX_META)
		return fail(p, "PAX GNU sparse 0.0 map too long");
	if (b->len + vl + 2 > b->cap) {
		size_t cap = (b->len + vl + 2) * 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return fail(p, "out of memory");
		b->p = q;
		b->cap = cap;
	}
	if (b->len)
		b->p[b->len++] = ',';
	memcpy(b->p + b->len, v, vl);
	b->len += vl;
	b->p[b->len] = 0;
	return 0;
}

static int pax_xattr(struct tar_parser *p, const char *name, const char *v, size_t vl)
{
	struct pax *x = &p->pax;
	size_t nl = strlen(name);
	if (!nl || nl > TAR_MAX_XATTR_NAME || vl > TAR_MAX_XATTR_VALUE)
		return 1;
	for (size_t i = 0; i < x->nxattrs; i++) {
		if (!strcmp(p->xattrs[i].name, name)) {
			p->xattrs[i].value = (const unsigned char *)v; /* the later record wins */
			p->xattrs[i].len = vl;
			return 0;
		}
	}
	if (x->nxattrs == TAR_MAX_XATTRS)
		return 1;
	p->xattrs[x->nxattrs++] = (struct tar_xattr){ name, (const unsigned char *)v, vl };
	return 0;
}

/* One record: key k (NUL-terminated), value v of vl bytes (NUL-terminated
 * too).  An empty value unsets the key.  Returns 1 when the entry must be
 * left out (an xattr beyond the bounds). */
static int pax_record(struct tar_parser *p, const char *k, const char *v, size_t vl)
{
	struct pax *x = &p->pax;
	bool has_nul = memchr(v, 0, vl) != NULL;
	int64_t n;
	if (!strncmp(k, "SCHILY.xattr.", 13))
		return pax_xattr(p, k + 13, v, vl);
	if (!strcmp(k, "path") || !strcmp(k, "linkpath") || !strcmp(k, "GNU.sparse.name")) {
		if (has_nul)
			return fail(p, "PAX record %s: NUL in the value", k);
		if (k[0] == 'p')
			x->path = vl ? v : NULL, x->path_len = vl;
		else if (k[0] == 'l')
			x->link = vl ? v : NULL, x->link_len = vl;
		else
			x->sparse_name = vl ? v : NULL;
		return 0;
	}
	if (!vl)
		return 0;
	if (!strcmp(k, "size")) {
		if (pax_value_u(p, k, v, vl, &n) < 0 || n < 0)
			return fail(p, "PAX record size: not a size");
		x->has_size = true, x->size = (uint64_t)n;
	} else if (!strcmp(k, "mtime")) {
		if (tar_parse_pax_time(v, vl, &x->mtime, &x->mtime_nsec) < 0)
			return fail(p, "PAX record mtime: not a time");
		x->has_mtime = true;
	} else if (!strcmp(k, "uid")) {
		if (pax_value_u(p, k, v, vl, &x->uid) < 0)
			return -1;
		x->has_uid = true;
	} else if (!strcmp(k, "gid")) {
		if (pax_value_u(p, k, v, vl, &x->gid) < 0)
			return -1;
		x->has_gid = true;
	} else if (!strcmp(k, "GNU.sparse.offset") || !strcmp(k, "GNU.sparse.numbytes")) {
		return pax_sparse00(p, k, v, vl);
	} else if (!strncmp(k, "GNU.sparse.", 11)) {
		static const char *const keys[] = { "major", "minor", "size", "realsize", "map", "numblocks" };
		const char **slots[] = { &x->sp_major, &x->sp_minor, &x->sp_size, &x->sp_realsize, &x->sp_map,
					 &x->sp_numblocks };
		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
			if (!strcmp(k + 11, keys[i]))
				*slots[i] = v;
	}
	/* uname, gname, atime, ctime, comment, charset...: not needed */
	return 0;
}

/* Parses the PAX records in p->pax_raw ("LEN KEY=VALUE\n", Go's rules);
 * keys and values are NUL-terminated in place.  1: leave the entry out. */
static int pax_parse(struct tar_parser *p)
{
	if (!p->pax_raw.len)
		return 0;
	char *s = p->pax_raw.p, *end = s + p->pax_raw.len;
	int out = 0;
	while (s < end) {
		size_t avail = (size_t)(end - s), nl = 0, len = 0;
		while (nl < avail && nl < 19 && s[nl] >= '0' && s[nl] <= '9')
			len = len * 10 + (size_t)(s[nl++] - '0');
		if (!nl || nl >= avail || s[nl] != ' ' || len < 5 || len > avail || len <= nl + 1)
			return fail(p, "malformed PAX record");
		char *rec = s + nl + 1, *recend = s + len - 1;
		if (*recend != '\n')
			return fail(p, "malformed PAX record: no newline at its end");
		char *eq = memchr(rec, '=', (size_t)(recend - rec));
		if (!eq || eq == rec || memchr(rec, 0, (size_t)(eq - rec)))
			return fail(p, "malformed PAX record: no key");
		*eq = 0;
		*recend = 0;
		int r = pax_record(p, rec, eq + 1, (size_t)(recend - eq - 1));
		if (r < 0)
			return -1;
		out |= r;
		s += len;
	}
	return out;
}

/* ---- sparse maps ---- */

/* "o,l,o,l" (PAX 0.1, and 0.0 as collected) with numblocks pairs (if given). */
static int sparse_from_list(struct tar_parser *p, const char *list, const char *numblocks)
{
	int64_t want = -1, v[2];
	if (numblocks && (oci_parse_i64(numblocks, strlen(numblocks), &want) < 0 || want < 0))
		return fail(p, "GNU sparse: bad numblocks");
	const char *s = list;
	while (*s) {
		for (int i = 0; i < 2; i++) {
			const char *c = s;
			while (*c && *c != ',')
				c++;
			if (oci_parse_i64(s, (size_t)(c - s), &v[i]) < 0 || v[i] < 0 || (i == 0 && *c != ','))
				return fail(p, "GNU sparse: malformed map");
			s = *c ? c + 1 : c;
		}
		if (sparse_add(p, (uint64_t)v[0], (uint64_t)v[1]) < 0)
			return -1;
	}
	if (want >= 0 && (uint64_t)want != p->nsparse)
		return fail(p, "GNU sparse: numblocks does not match the map");
	return 0;
}

/* PAX 1.0: the map leads the data, decimals each ended by a newline,
 * padded to a block.  Returns the bytes it took, or -1. */
static int64_t sparse_from_data(struct tar_parser *p, uint64_t stored)
{
	char blk[BLOCK];
	size_t have = 0, at = 0;
	uint64_t used = 0, count = 0;
	int64_t want = -1, v[2];
	int field = 0;
	for (;;) {
		char num[21];
		size_t nl = 0;
		for (;;) {
			if (at == have) {
				if (used + BLOCK > stored)
					return fail(p, "GNU sparse 1.0: map runs past the data");
				int r = read_full(p, blk, BLOCK);
				if (r)
					return r < 0 ? -1 : fail(p, "truncated: inside a GNU sparse map");
				used += BLOCK, have = BLOCK, at = 0;
			}
			char c = blk[at++];
			if (c == '\n')
				break;
			if (nl == 20)
				return fail(p, "GNU sparse 1.0: number too long");
			num[nl++] = c;
		}
		int64_t n;
		if (oci_parse_i64(num, nl, &n) < 0 || n < 0)
			return fail(p, "GNU sparse 1.0: malformed map");
		if (want < 0) {
			if (n > TAR_MAX_SPARSE)
				return fail(p, "sparse map of more than %u stretches", TAR_MAX_SPARSE);
			want = n;
		} else {
			v[field++] = n;
			if (field == 2) {
				field = 0;
				count++;
				if (sparse_add(p, (uint64_t)v[0], (uint64_t)v[1]) < 0)
					return -1;
			}
		}
		if ((uint64_t)want == count && field == 0)
			return (int64_t)used;
	}
}

/* Old GNU 'S': four stretches in the header, more in extension blocks. */
static int sparse_from_gnu(struct tar_parser *p, int64_t *realsize)
{
	const unsigned char *h = p->hdr;
	unsigned char ext[BLOCK];
	if (tar_parse_numeric(h + 483, 12, realsize) < 0 || *realsize < 0)
		return fail(p, "GNU sparse: bad real size");
	const unsigned char *map = h + 386;
	int n = 4;
	bool more = h[482] != 0;
	for (;;) {
		for (int i = 0; i < n && map[24 * i]; i++) {
			int64_t off, len;
			if (tar_parse_numeric(map + 24 * i, 12, &off) < 0 || tar_parse_numeric(map + 24 * i + 12, 12, &len) < 0)
				return fail(p, "GNU sparse: bad map entry");
			if (sparse_add(p, (uint64_t)off, (uint64_t)len) < 0)
				return -1;
		}
		if (!more)
			return 0;
		int r = read_full(p, ext, BLOCK);
		if (r)
			return r < 0 ? -1 : fail(p, "truncated: inside a GNU sparse extension");
		map = ext, n = 21, more = ext[504] != 0;
	}
}

/* In order, within the file, not overlapping, and adding up to the data. */
static int sparse_check(struct tar_parser *p, uint64_t realsize, uint64_t stored)
{
	uint64_t end = 0, sum = 0;
	for (size_t i = 0; i < p->nsparse; i++) {
		const struct tar_sparse *s = &p->sparse[i];
		if (s->off < end || s->len > realsize || s->off > realsize - s->len)
			return fail(p, "GNU sparse: map out of order or past the end of the file");
		end = s->off + s->len;
		sum += s->len;
	}
	if (sum != stored)
		return fail(p, "GNU sparse: the map holds %llu bytes, the entry %llu", (unsigned long long)sum,
			    (unsigned long long)stored);
	return 0;
}

/* The sparse map of the entry in p->hdr, if it is a sparse file; sets the
 * logical size and consumes a map at the start of the data (PAX 1.0). */
static int sparse_entry(struct tar_parser *p, struct tar_entry *e, uint64_t *stored)
{
	struct pax *x = &p->pax;
	int64_t realsize = -1, used = 0;
	bool v1 = false;
	p->nsparse = 0;
	if (p->hdr[156] == 'S') {
		if (sparse_from_gnu(p, &realsize) < 0)
			return -1;
	} else {
		const char *ma = x->sp_major ? x->sp_major : "", *mi = x->sp_minor ? x->sp_minor : "";
		if (!strcmp(ma, "1") && !strcmp(mi, "0"))
			v1 = true;
		else if (!(!strcmp(ma, "0") && (!strcmp(mi, "0") || !strcmp(mi, "1"))) && (*ma || *mi))
			return 0; /* an unknown version: a plain file, as Go reads it */
		else if (!*ma && !x->sp_map && !p->sparse_map00.len)
			return 0;
		if (x->sparse_name)
			e->path = x->sparse_name, e->path_len = strlen(x->sparse_name);
		const char *sz = x->sp_size ? x->sp_size : x->sp_realsize;
		if (sz && (oci_parse_i64(sz, strlen(sz), &realsize) < 0 || realsize < 0))
			return fail(p, "GNU sparse: bad size");
		if (v1)
			used = sparse_from_data(p, *stored);
		else
			used = sparse_from_list(p, x->sp_map ? x->sp_map : p->sparse_map00.p ? p->sparse_map00.p : "",
						x->sp_numblocks);
		if (used < 0)
			return -1;
	}
	*stored -= (uint64_t)used;
	if (realsize < 0)
		realsize = (int64_t)*stored;
	if (sparse_check(p, (uint64_t)realsize, *stored) < 0)
		return -1;
	e->size = (uint64_t)realsize;
	e->sparse = p->sparse;
	e->nsparse = p->nsparse;
	return 1;
}

/* ---- headers ---- */

static bool is_zero_block(const unsigned char *b)
{
	for (int i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

static bool checksum_ok(const unsigned char *h)
{
	int64_t want;
	uint64_t u = 0;
	int64_t s = 0;
	if (tar_parse_numeric(h + 148, 8, &want) < 0)
		return false;
	for (int i = 0; i < BLOCK; i++) {
		unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
		u += c;
		s += (signed char)c;
	}
	return want == (int64_t)u || want == s; /* some old tars summed signed bytes */
}

/* A NUL-padded field as a string (at most n bytes). */
static size_t field_str(char *dst, const unsigned char *f, size_t n)
{
	size_t l = strnlen((const char *)f, n);
	memcpy(dst, f, l);
	dst[l] = 0;
	return l;
}

enum format { V7, USTAR, GNU, STAR };

static enum format header_format(const unsigned char *h)
{
	if (!memcmp(h + 257, "ustar\0", 6) && !memcmp(h + 263, "00", 2))
		return !memcmp(h + 508, "tar\0", 4) ? STAR : USTAR;
	if (!memcmp(h + 257, "ustar ", 6) && !memcmp(h + 263, " \0", 2))
		return GNU;
	return V7;
}

static void entry_names(struct tar_parser *p, struct tar_entry *e, enum format fmt)
{
	const unsigned char *h = p->hdr;
	struct pax *x = &p->pax;
	if (x->path) {
		e->path = x->path, e->path_len = x->path_len;
	} else if (p->has_longname) {
		e->path = p->longname.p, e->path_len = strlen(p->longname.p);
	} else {
		size_t pl = 0;
		if (fmt == USTAR || fmt == STAR)
			pl = field_str(p->name, h + 345, fmt == STAR ? 131 : 155);
		if (pl)
			p->name[pl++] = '/';
		e->path_len = pl + field_str(p->name + pl, h, 100);
		e->path = p->name;
	}
	if (x->link) {
		e->link = x->link, e->link_len = x->link_len;
	} else if (p->has_longlink) {
		e->link = p->longlink.p, e->link_len = strlen(p->longlink.p);
	} else {
		e->link_len = field_str(p->linkname, h + 157, 100);
		e->link = p->linkname;
	}
}

static int header_numbers(struct tar_parser *p, struct tar_entry *e, enum format fmt, int64_t *size)
{
	const unsigned char *h = p->hdr;
	struct pax *x = &p->pax;
	int64_t mode, uid, gid, mtime, maj = 0, min = 0;
	if (tar_parse_numeric(h + 100, 8, &mode) < 0 || tar_parse_numeric(h + 108, 8, &uid) < 0 ||
	    tar_parse_numeric(h + 116, 8, &gid) < 0 || tar_parse_numeric(h + 124, 12, size) < 0 ||
	    tar_parse_numeric(h + 136, 12, &mtime) < 0)
		return fail(p, "malformed number in a header");
	if (fmt != V7 && (tar_parse_numeric(h + 329, 8, &maj) < 0 || tar_parse_numeric(h + 337, 8, &min) < 0))
		return fail(p, "malformed device number in a header");
	if (x->has_size)
		*size = (int64_t)x->size;
	if (*size < 0)
		return fail(p, "negative size");
	uid = x->has_uid ? x->uid : uid;
	gid = x->has_gid ? x->gid : gid;
	if (uid < 0 || uid >= UINT32_MAX || gid < 0 || gid >= UINT32_MAX)
		e->skip = "owner out of range";
	if (maj < 0 || maj > UINT32_MAX || min < 0 || min > UINT32_MAX)
		e->skip = "device number out of range";
	e->mode = (uint32_t)mode & 07777;
	e->uid = (uint32_t)uid, e->gid = (uint32_t)gid;
	e->mtime = x->has_mtime ? x->mtime : mtime;
	e->mtime_nsec = x->has_mtime ? x->mtime_nsec : 0;
	e->devmajor = (uint32_t)maj, e->devminor = (uint32_t)min;
	return 0;
}

/* The type, the data to skip after the entry, and a sparse map: 0 or -1. */
static int entry_type(struct tar_parser *p, struct tar_entry *e, uint64_t size)
{
	char t = (char)p->hdr[156];
	uint64_t stored = size;
	int sp;
	switch (t) {
	case 0:
		t = e->path_len && e->path[e->path_len - 1] == '/' ? '5' : '0'; /* V7 directories */
		break;
	case '7': t = '0'; break;               /* contiguous: a regular file */
	case 'D': t = '5'; break;               /* GNU dump directory: its data is a listing */
	case 'S': t = '0'; break;
	case '1': case '2': case '3': case '4': case '5': case '6':
		stored = 0;                     /* header-only types carry no data (Go) */
		break;
	case '0':
		break;
	default:
		e->skip = "unsupported entry type";
		break;
	}
	e->type = t;
	e->size = t == '0' ? size : 0;
	if (t == '0' && (sp = sparse_entry(p, e, &stored)) < 0)
		return -1;
	e->data_off = p->src->out;
	e->data_len = t == '0' ? stored : 0;
	p->pending = stored;
	p->pad = (size_t)(PAD(p->src->out + stored) - p->src->out - stored);
	return 0;
}

/* The entry of the header in p->hdr, with the records read before it. */
static int entry(struct tar_parser *p, struct tar_entry *e)
{
	enum format fmt = header_format(p->hdr);
	int64_t size;
	memset(e, 0, sizeof *e);
	int px = pax_parse(p);
	if (px < 0)
		return -1;
	if (px)
		e->skip = "extended attributes beyond the bounds";
	entry_names(p, e, fmt);
	if (header_numbers(p, e, fmt, &size) < 0 || entry_type(p, e, (uint64_t)size) < 0)
		return -1;
	e->xattrs = p->xattrs;
	e->nxattrs = p->pax.nxattrs;
	return 1;
}

static void reset_meta(struct tar_parser *p)
{
	p->pax_raw.len = 0;
	p->longname.len = 0;
	p->longlink.len = 0;
	p->sparse_map00.len = 0;
	p->has_longname = p->has_longlink = false;
	memset(&p->pax, 0, sizeof p->pax);
}

/* The next header block: 0, 1 at the end of the archive, -1. */
static int next_header(struct tar_parser *p)
{
	int r = read_full(p, p->hdr, BLOCK);
	if (r)
		return r; /* a stream ending between entries ends the archive (Go) */
	if (is_zero_block(p->hdr)) {
		r = read_full(p, p->hdr, BLOCK);
		if (r)
			return r;
		if (is_zero_block(p->hdr))
			return 1;
		return fail(p, "a lone zero block between entries");
	}
	if (!checksum_ok(p->hdr))
		return fail(p, "bad header checksum");
	return 0;
}

int tar_next(struct tar_parser *p, struct tar_entry *e)
{
	reset_meta(p);
	for (;;) {
		if (skip(p, p->pending) < 0)
			return -1;
		p->pending = 0;
		if (p->pad) {
			/* Go's reader: a stream that ends where the padding of an
			 * entry's data would begin ends the archive (umoci 0.4's
			 * `insert --opaque` layers end so); one that ends inside
			 * it is truncated */
			unsigned char z[BLOCK];
			int r = read_full(p, z, p->pad);
			p->pad = 0;
			if (r)
				return r > 0 ? 0 : -1;
		}
		int r = next_header(p);
		if (r)
			return r > 0 ? 0 : -1;
		char t = (char)p->hdr[156];
		int64_t size;
		if (t != 'x' && t != 'g' && t != 'L' && t != 'K')
			return entry(p, e);
		if (tar_parse_numeric(p->hdr + 124, 12, &size) < 0 || size < 0)
			return fail(p, "malformed size of a '%c' record", t);
		if (t == 'g') {
			/* global PAX records: containerd skips them, and so do we */
			p->pending = (uint64_t)size;
			p->pad = (size_t)(PAD((uint64_t)size) - (uint64_t)size);
			continue;
		}
		struct buf *b = t == 'x' ? &p->pax_raw : t == 'L' ? &p->longname : &p->longlink;
		if (t == 'L' || t == 'K')
			b->len = 0; /* the last one counts */
		if (read_meta(p, b, (uint64_t)size, t == 'x' ? "PAX" : t == 'L' ? "GNU long name" : "GNU long link") < 0)
			return -1;
		if (t == 'L')
			p->has_longname = true;
		if (t == 'K')
			p->has_longlink = true;
	}
}

struct tar_parser *tar_new(struct oci_seq *src)
{
	struct tar_parser *p = calloc(1, sizeof *p);
	if (p)
		p->src = src;
	return p;
}

const char *tar_error(const struct tar_parser *p)
{
	return p->err;
}

void tar_free(struct tar_parser *p)
{
	if (!p)
		return;
	free(p->pax_raw.p);
	free(p->longname.p);
	free(p->longlink.p);
	free(p->sparse_map00.p);
	free(p->sparse);
	free(p);
}
