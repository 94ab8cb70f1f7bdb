/* The fixture of tests/unit/check_oci.c (and check_loader.c): a tar writer (ustar headers, PAX
 * records, GNU long names), compression with zlib and libzstd (one member or
 * frame, or several), and the plugin's layers opened with stderr captured
 * and walked by path. */
#ifndef CHECK_OCI_FIXTURE_H
#define CHECK_OCI_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../../plugins/plugin.h"

/* The test's own temporary directory, /tmp/PROGRAM.XXXXXX: fx_setup makes
 * it, fx_teardown removes it (a Check fixture). */
extern char fx_tmp[64];
void fx_setup(void);
void fx_teardown(void);

struct tw {
	unsigned char *b;
	size_t n, cap;
};

struct hdr {
	const char *name, *link, *prefix;
	char type;
	unsigned mode, uid, gid, maj, min;
	unsigned long long size;
	long mtime;
};

struct kv {
	const char *k;
	const char *v;
	int len;
};

enum comp { RAW, GZ, GZ_MEMBERS, ZST, ZST_FRAMES };

struct opened {
	struct ovl_plugin_layer l[8];
	int n;
	char err[1024];
	char log[16384];
	int lines;
};

/* tar bytes: raw, headers, entries (mtime 1000), PAX records, the end */
void put(struct tw *t, const void *p, size_t n);
void pad(struct tw *t);
void octal(unsigned char *f, size_t n, unsigned long long v);
void header(struct tw *t, const struct hdr *h);
void t_data(struct tw *t, const char *name, char type, unsigned mode, const void *data, size_t len);
void t_file(struct tw *t, const char *name, const char *data);
int collect(void *arg, const char *name, uint8_t type, ino_t ino);
void t_gnu(struct tw *t, char type, const char *text);
void t_node(struct tw *t, const char *name, char type, unsigned mode, const char *link);
void t_pax(struct tw *t, const struct kv *kv, size_t n);
void t_end(struct tw *t);
/* compression: t's bytes as c (several members or frames, split off-block) */
void gzip_into(struct tw *out, const unsigned char *d, size_t n);
void zstd_into(struct tw *out, const unsigned char *d, size_t n);
struct tw compress_tw(const struct tw *t, enum comp c);
void write_file(const char *path, const void *d, size_t n);
/* the plugin's open_layers, stderr captured into o->log (o->lines lines) */
int open_cap(const char *data, const char *path, struct opened *o);
void close_all(struct opened *o);
/* t compressed c as a blob in fx_tmp, opened: its one layer */
struct ovl_plugin_layer *open_tw(const struct tw *t, enum comp c, struct opened *o);
/* by path from the layer's root */
int parent_of(struct ovl_plugin_layer *L, const char *path, char *base);
int st_path(struct ovl_plugin_layer *L, const char *path, struct stat *st);
ssize_t read_path(struct ovl_plugin_layer *L, const char *path, void *buf, size_t size, off_t off);
void assert_content(struct ovl_plugin_layer *L, const char *path, const char *want);
bool exists(struct ovl_plugin_layer *L, const char *path);
void sha_hex(const void *d, size_t n, int portable, char hex[65]);

/* the trees of the tests: a small one of every type (tree_tar), a big
 * file between two small ones (big_tar of big_data, BIG bytes) */
#define BIG (3u << 20)
void tree_tar(struct tw *t);
unsigned char *big_data(void);
void big_tar(struct tw *t, const unsigned char *big);
/* a layout in fx_tmp/lay: image "v1" of three layers (tar, gzip, zstd),
 * "multi" an index of it for linux/amd64 and arm64; dg the layers' digests */
void blob_put(const char *lay, const void *d, size_t n, char digest[72]);
void make_layout(char lay[256], char dg[3][72]);
/* a layout in fx_tmp/lay: image "v1" of n layers, layer i (0 the bottom)
 * holding "only_I" and "shared", both "layer I" */
void make_stack(char lay[256], size_t n);
/* every op on every entry below dir, answers not checked: only that they come */
void walk_all(struct ovl_plugin_layer *L, int dir, int depth);
/* the three layers of make_layout's image, top first */
void check_image(struct opened *o);
/* the index cache file of blob */
/* Opens blob: the lines it logged (1 when built, 0 when from the cache), the
 * big file checked at offsets through the points or frames. */
int open_lines(const char *blob, const unsigned char *big);
/* Changes the last byte of the file at path. */
void flip_last_byte(const char *path);
void cache_path(const char *blob, char *out, size_t len);

/* dir/src/sparse: 4 MiB with "start", "middle" and "end" at 0, 1 and 3 MiB;
 * *want its bytes (malloc'ed). */
void sparse_src(const char *dir, unsigned char **want, size_t *len);
/* d as a blob must be refused, the one-line reason naming the blob and why. */
void refused(const void *d, size_t n, const char *why);
void refused_tw(const struct tw *t, enum comp c, const char *why);

#endif
