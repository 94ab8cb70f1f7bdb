/* libFuzzer target: the oci plugin's parsers of hostile layers.  The first
 * byte picks one:
 *   0: the rest is a tar stream: tar.c's headers into index.c's tree;
 *   1: the rest is a blob (tar, gzip or zstd by its magic) in a memfd: the
 *      whole build (decompression, access points, frames), then reads of
 *      every regular file at a few offsets through the decoders;
 *   2: the rest is a JSON document (json.c, as an image layout's);
 *   3: as 0, with the checksum of every block that looks like a header made
 *      right first, so that mutations of header fields reach the parser;
 *   4: the rest is the body of an index cache file (index_load.c), read
 *      back as for a 1 MiB blob and stream: the index, then gzip points or
 *      zstd frames.
 * Beyond not crashing, it checks what must hold for any input: every node
 * of the tree is found again by its name in its parent, no file's data lies
 * past the end of the stream, every read returns what the file's size says,
 * and a build that succeeds after a refusal of nothing is repeatable. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../plugins/oci/build.h"
#include "../../plugins/oci/index.h"
#include "../../plugins/oci/json.h"
#include "../../plugins/oci/tar.h"

static void quiet(void *arg, const char *line)
{
	(void)arg;
	(void)line;
}

static void limits(struct oci_limits *l)
{
	oci_limits_default(l);
	l->max_entries = 20000;
	l->max_index_bytes = 64 << 20;
	l->max_size = 64 << 20;
	l->ratio_floor = 8 << 20;
}

/* Every node below dir: found by name, its data within the stream. */
static void walk(const struct oci_index *ix, uint32_t dir, uint64_t stream, int depth)
{
	if (depth > 5000)
		abort(); /* deeper than any accepted path */
	for (uint32_t c = oci_first_child(ix, dir); c; c = oci_next_sibling(ix, c)) {
		struct stat st;
		struct oci_file f;
		char buf[256];
		if (oci_lookup(ix, dir, oci_name(ix, c)) != c || oci_parent(ix, c) != dir)
			abort();
		oci_stat(ix, c, &st);
		oci_listxattr(ix, c, buf, sizeof buf);
		if (oci_file(ix, c, &f) == 0) {
			uint64_t stored = f.size;
			if (f.sparse.map) {
				stored = 0;
				for (uint32_t i = 0; i < f.sparse.n; i++) {
					uint64_t off, len;
					oci_sparse_get(&f.sparse, i, &off, &len);
					if (off + len > f.size)
						abort();
					stored += len;
				}
			}
			if (f.data > stream || stored > stream - f.data)
				abort();
		}
		if (S_ISDIR(st.st_mode))
			walk(ix, c, stream, depth + 1);
	}
}

static void fuzz_tar(const uint8_t *data, size_t size)
{
	struct oci_limits l;
	struct oci_log log = { .what = "fuzz", .sink = quiet };
	struct tar_entry e;
	limits(&l);
	struct oci_seq *s = oci_seq_mem(data, size);
	struct tar_parser *tp = tar_new(s);
	struct oci_index *ix = oci_index_new(&l, &log, 0);
	if (!s || !tp || !ix)
		abort();
	int r;
	while ((r = tar_next(tp, &e)) > 0)
		if (oci_index_add(ix, &e) < 0)
			break;
	if (r == 0) {
		oci_index_finish(ix);
		walk(ix, OCI_ROOT, size, 0);
	}
	oci_index_free(ix);
	tar_free(tp);
	s->free(s);
}

/* Reads every regular file below dir at its start, middle and end. */
static void read_files(struct oci_blob *b, const struct oci_index *ix, uint32_t dir)
{
	static char buf[8192];
	for (uint32_t c = oci_first_child(ix, dir); c; c = oci_next_sibling(ix, c)) {
		struct oci_file f;
		if (S_ISDIR(oci_mode(ix, c)))
			read_files(b, ix, c);
		if (oci_file(ix, c, &f) < 0 || f.sparse.map || !f.size)
			continue;
		uint64_t offs[3] = { 0, f.size / 2, f.size - 1 };
		for (int i = 0; i < 3; i++) {
			size_t n = f.size - offs[i] < sizeof buf ? (size_t)(f.size - offs[i]) : sizeof buf;
			if (oci_blob_pread(b, buf, n, f.data + offs[i]) != (ssize_t)n)
				abort(); /* the index promised these bytes */
		}
	}
}

static void fuzz_blob(const uint8_t *data, size_t size)
{
	struct oci_limits l;
	struct oci_log log = { .what = "fuzz", .sink = quiet };
	struct oci_build_want want = { NULL, -1, -1, NULL };
	struct oci_blob b;
	struct oci_index *ix;
	char err[512];
	limits(&l);
	int fd = memfd_create("blob", MFD_CLOEXEC);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	if (oci_build(fd, &want, &l, &log, &b, &ix, err, sizeof err) < 0)
		return; /* it closed fd */
	walk(ix, OCI_ROOT, b.stream_size, 0);
	read_files(&b, ix, OCI_ROOT);
	oci_index_free(ix);
	oci_blob_close(&b);
}

static void fuzz_json(const uint8_t *data, size_t size)
{
	struct json_doc d;
	char err[128];
	int64_t v;
	if (json_parse((const char *)data, size, &d, err, sizeof err) < 0)
		return;
	const struct json_node *r = json_root(&d);
	for (const struct json_node *m = json_first(&d, r); m; m = json_next(&d, m)) {
		if (m->key && json_get(&d, r, m->key) == NULL)
			abort();
		json_int(m, &v);
		if (m->type == JSON_STR && strlen(m->str) != m->len)
			abort(); /* NULs are refused */
	}
	json_free(&d);
}

static void fuzz_cache(const uint8_t *data, size_t size)
{
	struct oci_limits l;
	struct oci_rbuf r = { data, size, 0 };
	const char *why;
	uint64_t bytes;
	limits(&l);
	struct oci_index *ix = oci_index_load(&r, &l, 1 << 20, &why);
	if (!ix)
		return;
	walk(ix, OCI_ROOT, 1 << 20, 0);
	oci_index_free(ix);
	size_t at = r.off;
	struct oci_gz_index *gz = oci_gz_load(&r, 1 << 20, 1 << 20, -1, 0, 1 << 20, &bytes);
	if (gz)
		oci_gz_free(gz);
	r.off = at;
	struct oci_zs_index *zs = oci_zs_load(&r, 1 << 20, 1 << 20, &bytes);
	if (zs)
		oci_zs_free(zs);
}

static void fuzz_tar_summed(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	for (size_t b = 0; b + 512 <= size; b += 512) {
		uint8_t *h = copy + b;
		unsigned sum = 0;
		if (memcmp(h + 257, "ustar", 5))
			continue;
		memset(h + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
	}
	fuzz_tar(copy, size);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 5) {
	case 0: fuzz_tar(data + 1, size - 1); break;
	case 1: fuzz_blob(data + 1, size - 1); break;
	case 2: fuzz_json(data + 1, size - 1); break;
	case 3: fuzz_tar_summed(data + 1, size - 1); break;
	default: fuzz_cache(data + 1, size - 1); break;
	}
	return 0;
}
