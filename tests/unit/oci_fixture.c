/* The fixture of tests/unit/check_oci.c and check_loader.c (see oci_fixture.h). */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "../../plugins/oci/sha256.h"
#include "oci_fixture.h"

const struct ovl_plugin *fuse_overlayfs_plugin_v1(void);

char fx_tmp[64];

void fx_setup(void)
{
	snprintf(fx_tmp, sizeof fx_tmp, "/tmp/%s.XXXXXX", program_invocation_short_name);
	ck_assert_ptr_nonnull(mkdtemp(fx_tmp));
}

void fx_teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx_tmp);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- a tar writer ---- */


void put(struct tw *t, const void *p, size_t n)
{
	if (t->n + n > t->cap) {
		t->cap = (t->n + n) * 2 + 4096;
		t->b = realloc(t->b, t->cap);
		ck_assert_ptr_nonnull(t->b);
	}
	memcpy(t->b + t->n, p, n);
	t->n += n;
}

void pad(struct tw *t)
{
	static const unsigned char z[512];
	put(t, z, (512 - t->n % 512) % 512);
}

void octal(unsigned char *f, size_t n, unsigned long long v)
{
	char s[32];
	snprintf(s, sizeof s, "%0*llo", (int)n - 1, v);
	memcpy(f, s, n - 1);
}


void header(struct tw *t, const struct hdr *h)
{
	unsigned char b[512] = { 0 };
	unsigned sum = 0;
	memcpy(b, h->name, strnlen(h->name, 100));
	octal(b + 100, 8, h->mode);
	octal(b + 108, 8, h->uid);
	octal(b + 116, 8, h->gid);
	octal(b + 124, 12, h->size);
	octal(b + 136, 12, (unsigned long long)h->mtime);
	b[156] = (unsigned char)h->type;
	if (h->link)
		memcpy(b + 157, h->link, strnlen(h->link, 100));
	memcpy(b + 257, "ustar\0" "00", 8);
	octal(b + 329, 8, h->maj);
	octal(b + 337, 8, h->min);
	if (h->prefix)
		memcpy(b + 345, h->prefix, strnlen(h->prefix, 155));
	memset(b + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += b[i];
	octal(b + 148, 7, sum);
	put(t, b, 512);
}

void t_data(struct tw *t, const char *name, char type, unsigned mode, const void *data, size_t len)
{
	header(t, &(struct hdr){ .name = name, .type = type, .mode = mode, .size = len, .mtime = 1000 });
	put(t, data, len);
	pad(t);
}

void t_file(struct tw *t, const char *name, const char *data)
{
	t_data(t, name, '0', 0644, data, strlen(data));
}

/* A list op's callback: appends "NAME " ("NAME/ " for a directory) to arg. */
int collect(void *arg, const char *name, uint8_t type, ino_t ino)
{
	(void)ino;
	char *s = arg;
	strcat(s, name);
	strcat(s, type == DT_DIR ? "/ " : " ");
	return 0;
}

/* A GNU long name ('L') or link ('K') record. */
void t_gnu(struct tw *t, char type, const char *text)
{
	t_data(t, "././@LongLink", type, 0644, text, strlen(text) + 1);
}

void t_node(struct tw *t, const char *name, char type, unsigned mode, const char *link)
{
	header(t, &(struct hdr){ .name = name, .type = type, .mode = mode, .link = link, .mtime = 1000 });
}

/* A PAX header of keys and values (len -1: strlen). */

void t_pax(struct tw *t, const struct kv *kv, size_t n)
{
	struct tw r = { 0 };
	for (size_t i = 0; i < n; i++) {
		size_t vl = kv[i].len < 0 ? strlen(kv[i].v) : (size_t)kv[i].len, base = strlen(kv[i].k) + vl + 3, len = base;
		char num[24];
		while (len != base + (size_t)snprintf(num, sizeof num, "%zu", len))
			len = base + strlen(num);
		put(&r, num, strlen(num));
		put(&r, " ", 1);
		put(&r, kv[i].k, strlen(kv[i].k));
		put(&r, "=", 1);
		put(&r, kv[i].v, vl);
		put(&r, "\n", 1);
	}
	t_data(t, "PaxHeaders/x", 'x', 0644, r.b, r.n);
	free(r.b);
}

void t_end(struct tw *t)
{
	static const unsigned char z[1024];
	put(t, z, sizeof z);
}

/* ---- compression ---- */


void gzip_into(struct tw *out, const unsigned char *d, size_t n)
{
	z_stream zs = { 0 };
	ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t cap = deflateBound(&zs, n);
	unsigned char *buf = malloc(cap);
	zs.next_in = (unsigned char *)d, zs.avail_in = (uInt)n;
	zs.next_out = buf, zs.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
	put(out, buf, cap - zs.avail_out);
	deflateEnd(&zs);
	free(buf);
}

void zstd_into(struct tw *out, const unsigned char *d, size_t n)
{
	size_t cap = ZSTD_compressBound(n);
	unsigned char *buf = malloc(cap);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1); /* as the zstd tool writes frames */
	size_t r = ZSTD_compress2(cc, buf, cap, d, n);
	ck_assert(!ZSTD_isError(r));
	ZSTD_freeCCtx(cc);
	put(out, buf, r);
	free(buf);
}

/* t's bytes compressed c, in pieces (members, frames) split off-block. */
struct tw compress_tw(const struct tw *t, enum comp c)
{
	struct tw out = { 0 };
	size_t pieces = c == GZ_MEMBERS || c == ZST_FRAMES ? 4 : 1, step = t->n / pieces + 77;
	for (size_t off = 0; off < t->n; off += step) {
		size_t k = t->n - off < step ? t->n - off : step;
		if (c == RAW)
			put(&out, t->b + off, k);
		else if (c == GZ || c == GZ_MEMBERS)
			gzip_into(&out, t->b + off, k);
		else
			zstd_into(&out, t->b + off, k);
	}
	return out;
}

void write_file(const char *path, const void *d, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, d, n), (ssize_t)n);
	close(fd);
}

/* ---- opening through the plugin, stderr captured ---- */


int open_cap(const char *data, const char *path, struct opened *o)
{
	char tmpl[] = "/tmp/check_oci_log.XXXXXX";
	int fd = mkstemp(tmpl), saved = dup(2);
	ck_assert_int_ge(fd, 0);
	unlink(tmpl);
	fflush(stderr);
	dup2(fd, 2);
	o->err[0] = 0;
	o->n = fuse_overlayfs_plugin_v1()->open_layers(data, path, o->l, 8, o->err, sizeof o->err);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ssize_t k = pread(fd, o->log, sizeof o->log - 1, 0);
	o->log[k > 0 ? k : 0] = 0;
	close(fd);
	o->lines = 0;
	for (char *p = o->log; *p; p++)
		o->lines += *p == '\n';
	return o->n;
}

void close_all(struct opened *o)
{
	for (int i = 0; i < o->n; i++) {
		o->l[i].ops->release(o->l[i].layer);
		free(o->l[i].name);
	}
	o->n = 0;
}

/* The tar of t, compressed c, as a blob in fx_tmp, opened. */
struct ovl_plugin_layer *open_tw(const struct tw *t, enum comp c, struct opened *o)
{
	static int seq;
	char path[128];
	struct tw z = compress_tw(t, c);
	snprintf(path, sizeof path, "%s/blob%d", fx_tmp, seq++);
	write_file(path, z.b, z.n);
	free(z.b);
	ck_assert_msg(open_cap("", path, o) == 1, "open %s: %s", path, o->err);
	return &o->l[0];
}

/* The parent handle of path (the caller closes it) and its last name. */
int parent_of(struct ovl_plugin_layer *L, const char *path, char *base)
{
	int h = L->root;
	char comp[4096];
	for (;;) {
		size_t n = strcspn(path, "/");
		memcpy(comp, path, n);
		comp[n] = 0;
		if (!path[n]) {
			strcpy(base, comp);
			return h;
		}
		int nh = L->ops->openat(L->layer, h, comp, O_RDONLY | O_DIRECTORY);
		if (h != L->root)
			L->ops->close(L->layer, h);
		if (nh < 0)
			return -1;
		h = nh;
		path += n + 1;
	}
}

int st_path(struct ovl_plugin_layer *L, const char *path, struct stat *st)
{
	char base[4096];
	int d = parent_of(L, path, base);
	if (d < 0)
		return -errno;
	int r = L->ops->statat(L->layer, d, base, st) < 0 ? -errno : 0;
	if (d != L->root)
		L->ops->close(L->layer, d);
	return r;
}

ssize_t read_path(struct ovl_plugin_layer *L, const char *path, void *buf, size_t size, off_t off)
{
	char base[4096];
	int d = parent_of(L, path, base), h;
	ck_assert_int_ge(d, 0);
	h = L->ops->openat(L->layer, d, base, O_RDONLY);
	ck_assert_int_ge(h, 0);
	ssize_t r = L->ops->read(L->layer, h, buf, size, off);
	L->ops->close(L->layer, h);
	if (d != L->root)
		L->ops->close(L->layer, d);
	return r;
}

void assert_content(struct ovl_plugin_layer *L, const char *path, const char *want)
{
	char buf[256];
	ssize_t r = read_path(L, path, buf, sizeof buf - 1, 0);
	ck_assert_int_ge(r, 0);
	buf[r] = 0;
	ck_assert_str_eq(buf, want);
}

bool exists(struct ovl_plugin_layer *L, const char *path)
{
	struct stat st;
	return st_path(L, path, &st) == 0;
}

void sha_hex(const void *d, size_t n, int portable, char hex[65])
{
	struct sha256 s;
	unsigned char out[32];
	sha256_init(&s);
	if (portable)
		sha256_force_portable(&s);
	for (size_t i = 0; i < n; i += 7) /* odd pieces: the partial-block path too */
		sha256_update(&s, (const char *)d + i, n - i < 7 ? n - i : 7);
	sha256_final(&s, out);
	sha256_hex(out, hex);
}


void tree_tar(struct tw *t)
{
	t_node(t, "./", '5', 0750, NULL);
	t_node(t, "./etc/", '5', 0755, NULL);
	header(t, &(struct hdr){ .name = "./etc/passwd", .type = '0', .mode = 04755, .uid = 12, .gid = 34, .size = 5,
				 .mtime = 1234567 });
	put(t, "root\n", 5);
	pad(t);
	t_file(t, "./etc/hostname", "box\n");
	t_node(t, "./etc/link", '2', 0777, "hostname");
	t_node(t, "./etc/hard", '1', 0644, "./etc/hostname");
	header(t, &(struct hdr){ .name = "dev/null", .type = '3', .mode = 0666, .maj = 1, .min = 3 });
	header(t, &(struct hdr){ .name = "dev/sda", .type = '4', .mode = 0660, .maj = 8, .min = 0 });
	t_node(t, "run/fifo", '6', 0600, NULL);
	t_file(t, "a/b/c/d.txt", "deep");
	header(t, &(struct hdr){ .name = "name", .prefix = "in/the/prefix", .type = '0', .mode = 0600 });
	t_end(t);
}


unsigned char *big_data(void)
{
	unsigned char *d = malloc(BIG);
	uint32_t x = 12345;
	for (size_t i = 0; i < BIG; i++) { /* compressible, but not to nothing */
		x = x * 1103515245 + 12345;
		d[i] = (unsigned char)"abcdefgh"[(x >> 16) & 7] ^ (unsigned char)((i >> 12) & 1);
	}
	return d;
}

void big_tar(struct tw *t, const unsigned char *big)
{
	t_file(t, "before", "before");
	t_data(t, "big", '0', 0644, big, BIG);
	t_file(t, "after", "after");
	t_end(t);
}


/* Puts d into the layout's blobs; digest gets "sha256:<hex>". */
void blob_put(const char *lay, const void *d, size_t n, char digest[72])
{
	char hex[65], path[512];
	sha_hex(d, n, 0, hex);
	snprintf(digest, 72, "sha256:%s", hex);
	snprintf(path, sizeof path, "%s/blobs/sha256/%s", lay, hex);
	write_file(path, d, n);
}

static void layer_blob(const char *lay, struct tw *t, enum comp c, char digest[72], size_t *size)
{
	struct tw z = compress_tw(t, c);
	blob_put(lay, z.b, z.n, digest);
	*size = z.n;
	free(z.b);
	free(t->b);
	memset(t, 0, sizeof *t);
}

/* An empty layout at fx_tmp/lay. */
static void layout_dir(char lay[256])
{
	char path[512];
	snprintf(lay, 256, "%s/lay", fx_tmp);
	snprintf(path, sizeof path, "mkdir -p %s/blobs/sha256", lay);
	ck_assert_int_eq(system(path), 0);
	snprintf(path, sizeof path, "%s/oci-layout", lay);
	write_file(path, "{\"imageLayoutVersion\": \"1.0.0\"}", 31);
}

/* The manifest of n layers (bottom first: digests, sizes, compressions)
 * and an empty config, as a blob of lay: its size, its digest in mdg. */
static int manifest_put(const char *lay, size_t n, char (*dg)[72], const size_t *sz, const enum comp *c, char mdg[72])
{
	size_t cap = 512 + n * 200, len;
	char *man = malloc(cap), cfg[72];
	ck_assert_ptr_nonnull(man);
	blob_put(lay, "{}", 2, cfg);
	len = (size_t)snprintf(man, cap,
			       "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
			       "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":2},"
			       "\"layers\":[",
			       cfg);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(man + len, cap - len,
					"%s{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar%s\",\"digest\":\"%s\",\"size\":%zu}",
					i ? "," : "", c[i] == RAW ? "" : c[i] == ZST || c[i] == ZST_FRAMES ? "+zstd" : "+gzip",
					dg[i], sz[i]);
	len += (size_t)snprintf(man + len, cap - len, "]}");
	ck_assert_uint_lt(len, cap);
	blob_put(lay, man, len, mdg);
	free(man);
	return (int)len;
}

/* A layout in fx_tmp/lay: image "v1" of three layers (tar, gzip, zstd), and
 * "multi", an index holding it for linux/amd64 and linux/arm64.  The
 * layers' digests go to dg (bottom first). */
void make_layout(char lay[256], char dg[3][72])
{
	char path[512], idx[1024], mdg[72], ldg[72], doc[2048];
	size_t sz[3];
	static const enum comp comps[3] = { RAW, GZ, ZST };
	struct tw t = { 0 };
	layout_dir(lay);
	t_file(&t, "a", "1"), t_file(&t, "shared", "bottom"), t_end(&t);
	layer_blob(lay, &t, comps[0], dg[0], &sz[0]);
	t_file(&t, "b", "2"), t_file(&t, "shared", "middle"), t_end(&t);
	layer_blob(lay, &t, comps[1], dg[1], &sz[1]);
	t_file(&t, "c", "3"), t_file(&t, "shared", "top"), t_file(&t, ".wh.a", ""), t_end(&t);
	layer_blob(lay, &t, comps[2], dg[2], &sz[2]);
	int n = manifest_put(lay, 3, dg, sz, comps, mdg);
	int m = snprintf(idx, sizeof idx,
			 "{\"schemaVersion\":2,\"manifests\":["
			 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%d,"
			 "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
			 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%d,"
			 "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
			 mdg, n, mdg, n);
	blob_put(lay, idx, (size_t)m, ldg);
	int k = snprintf(doc, sizeof doc,
			 "{\"schemaVersion\":2,\"manifests\":["
			 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%d,"
			 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}},"
			 "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"%s\",\"size\":%d,"
			 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"multi\"}}]}",
			 mdg, n, ldg, m);
	snprintf(path, sizeof path, "%s/index.json", lay);
	write_file(path, doc, (size_t)k);
}

void make_stack(char lay[256], size_t n)
{
	char path[512], doc[1024], mdg[72], name[32], data[32];
	char (*dg)[72] = calloc(n, sizeof *dg);
	size_t *sz = calloc(n, sizeof *sz);
	enum comp *comps = calloc(n, sizeof *comps);
	ck_assert(dg && sz && comps);
	layout_dir(lay);
	for (size_t i = 0; i < n; i++) {
		struct tw t = { 0 };
		snprintf(name, sizeof name, "only_%zu", i);
		snprintf(data, sizeof data, "layer %zu", i);
		t_file(&t, name, data), t_file(&t, "shared", data), t_end(&t);
		comps[i] = i % 2 ? GZ : RAW;
		layer_blob(lay, &t, comps[i], dg[i], &sz[i]);
	}
	int m = manifest_put(lay, n, dg, sz, comps, mdg);
	int k = snprintf(doc, sizeof doc,
			 "{\"schemaVersion\":2,\"manifests\":["
			 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%d,"
			 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}",
			 mdg, m);
	snprintf(path, sizeof path, "%s/index.json", lay);
	write_file(path, doc, (size_t)k);
	free(dg), free(sz), free(comps);
}

struct walk_arg {
	struct ovl_plugin_layer *L;
	int dir, depth;
};

static int walk_one(void *arg, const char *name, uint8_t type, ino_t ino)
{
	struct walk_arg *w = arg;
	struct ovl_plugin_layer *L = w->L;
	struct stat st;
	char buf[8192];
	L->ops->statat(L->layer, w->dir, name, &st);
	L->ops->readlinkat(L->layer, w->dir, name, buf, sizeof buf);
	L->ops->listxattrat(L->layer, w->dir, name, buf, sizeof buf);
	L->ops->getxattrat(L->layer, w->dir, name, "user.x", buf, sizeof buf);
	int h = L->ops->openat(L->layer, w->dir, name, O_RDONLY);
	if (h >= 0) {
		L->ops->read(L->layer, h, buf, sizeof buf, 0);
		if (type == DT_DIR && w->depth < 64)
			walk_all(L, h, w->depth + 1);
		L->ops->close(L->layer, h);
	}
	return 0;
}

void walk_all(struct ovl_plugin_layer *L, int dir, int depth)
{
	struct walk_arg w = { L, dir, depth };
	L->ops->list(L->layer, dir, walk_one, &w);
}


void check_image(struct opened *o)
{
	ck_assert_int_eq(o->n, 3);
	assert_content(&o->l[0], "shared", "top"); /* top first */
	assert_content(&o->l[0], "c", "3");
	assert_content(&o->l[1], "shared", "middle");
	assert_content(&o->l[2], "shared", "bottom");
	ck_assert(exists(&o->l[0], ".wh.a"));
	ck_assert(!exists(&o->l[0], "a"));
}

void cache_path(const char *blob, char *out, size_t len)
{
	const char *slash = strrchr(blob, '/');
	snprintf(out, len, "%.*s/.%s.ovl-index", (int)(slash - blob), blob, slash + 1);
}

/* A sparse source file of 4 MiB (three pieces of data), and its bytes. */
void sparse_src(const char *dir, unsigned char **want, size_t *len)
{
	char path[256];
	static const struct {
		off_t off;
		const char *s;
	} parts[] = { { 0, "start" }, { 1 << 20, "middle" }, { 3 << 20, "end" } };
	*len = 4 << 20;
	*want = calloc(1, *len);
	snprintf(path, sizeof path, "%s/src", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/src/sparse", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_int_eq(pwrite(fd, parts[i].s, strlen(parts[i].s), parts[i].off), (ssize_t)strlen(parts[i].s));
		memcpy(*want + parts[i].off, parts[i].s, strlen(parts[i].s));
	}
	ck_assert_int_eq(ftruncate(fd, (off_t)*len), 0);
	close(fd);
}

/* Opens t's bytes (as they are) as a blob: it must be refused, naming the blob and why. */
void refused(const void *d, size_t n, const char *why)
{
	static int seq;
	char path[128];
	struct opened o;
	snprintf(path, sizeof path, "%s/bad%d", fx_tmp, seq++);
	write_file(path, d, n);
	ck_assert_msg(open_cap("", path, &o) == -1, "accepted, want '%s'", why);
	ck_assert_msg(!strncmp(o.err, path, strlen(path)) && strstr(o.err, why), "'%s', want '%s'", o.err, why);
	ck_assert_msg(!strchr(o.err, '\n'), "%s", o.err);
}

void refused_tw(const struct tw *t, enum comp c, const char *why)
{
	struct tw z = compress_tw(t, c);
	refused(z.b, z.n, why);
	free(z.b);
}

/* Opens blob: the lines it logged (1 when built, 0 when from the cache),
 * and the big file checked at offsets through the points or frames. */
int open_lines(const char *blob, const unsigned char *big)
{
	struct opened o;
	unsigned char buf[4096];
	ck_assert_msg(open_cap("", blob, &o) == 1, "%s", o.err);
	for (size_t k = 7, off; k-- > 0;) { /* backwards: each read from a point or frame */
		off = k * (BIG / 7);
		ssize_t r = read_path(&o.l[0], "big", buf, sizeof buf, (off_t)off);
		ck_assert_msg(r == sizeof buf && !memcmp(buf, big + off, sizeof buf), "%s at %zu: %zd %s", blob, off, r,
			      strerror(errno));
	}
	assert_content(&o.l[0], "after", "after");
	close_all(&o);
	return o.lines;
}

void flip_last_byte(const char *path)
{
	int fd = open(path, O_RDWR);
	off_t end = lseek(fd, 0, SEEK_END);
	unsigned char b;
	ck_assert_int_eq(pread(fd, &b, 1, end - 1), 1);
	b ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &b, 1, end - 1), 1);
	close(fd);
}
