/* The oci plugin: "//oci//BLOB" serves one layer blob (tar, tar+gzip,
 * tar+zstd), "//oci/REF//LAYOUT" the layers of image REF of an OCI image
 * layout, top first.  Layers are indexed when opened (build.c), several at
 * once; afterwards an index is read-only, and the only shared state of a
 * layer is its handle table and its blob's decoder cursors, each behind its
 * own lock.  Reads go through the interface's read op: there is no file to
 * pass through. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../plugin.h"
#include "build.h"
#include "layout.h"

struct oci_layer {
	char *what; /* the blob's path, for messages */
	struct oci_blob blob;
	struct oci_index *ix;
	struct oci_log log;
	pthread_mutex_t lock; /* the handle table */
	uint32_t *nodes;      /* node of each handle; OCI_NONE: free */
	uint32_t *free_slots;
	size_t n, cap, nfree;
};

/* ---- handles ---- */

static int handle_new(struct oci_layer *l, uint32_t node)
{
	int h = -1;
	pthread_mutex_lock(&l->lock);
	if (l->nfree) {
		h = (int)l->free_slots[--l->nfree];
	} else if (l->n < INT32_MAX) {
		if (l->n == l->cap) {
			size_t cap = l->cap ? l->cap * 2 : 64;
			uint32_t *nodes = realloc(l->nodes, cap * sizeof *nodes);
			if (nodes)
				l->nodes = nodes;
			uint32_t *fs = nodes ? realloc(l->free_slots, cap * sizeof *fs) : NULL;
			if (fs)
				l->free_slots = fs, l->cap = cap;
		}
		if (l->n < l->cap)
			h = (int)l->n++;
	}
	if (h >= 0)
		l->nodes[h] = node;
	pthread_mutex_unlock(&l->lock);
	if (h < 0)
		errno = ENOMEM;
	return h;
}

/* The node of handle h, or OCI_NONE (EBADF). */
static uint32_t handle_node(struct oci_layer *l, int h)
{
	uint32_t n = OCI_NONE;
	pthread_mutex_lock(&l->lock);
	if (h >= 0 && (size_t)h < l->n)
		n = l->nodes[h];
	pthread_mutex_unlock(&l->lock);
	if (!n)
		errno = EBADF;
	return n;
}

static int op_close(void *layer, int h)
{
	struct oci_layer *l = layer;
	int r = -1;
	pthread_mutex_lock(&l->lock);
	if (h > 0 && (size_t)h < l->n && l->nodes[h]) { /* handle 0, the root, stays */
		l->nodes[h] = OCI_NONE;
		l->free_slots[l->nfree++] = (uint32_t)h;
		r = 0;
	} else if (h == 0) {
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		errno = EBADF;
	return r;
}

/* The node of name below handle dir (NULL or ".": dir itself). */
static uint32_t node_at(struct oci_layer *l, int dir, const char *name)
{
	uint32_t d = handle_node(l, dir);
	if (!d || !name)
		return d;
	if (!*name || strchr(name, '/')) {
		errno = EINVAL;
		return OCI_NONE;
	}
	if (!S_ISDIR(oci_mode(l->ix, d))) {
		errno = ENOTDIR;
		return OCI_NONE;
	}
	uint32_t n = oci_lookup(l->ix, d, name);
	if (!n)
		errno = ENOENT;
	return n;
}

/* ---- the ops ---- */

static int op_openat(void *layer, int dir, const char *name, int flags)
{
	struct oci_layer *l = layer;
	uint32_t n = node_at(l, dir, name);
	if (!n)
		return -1;
	mode_t m = oci_mode(l->ix, n);
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC))) {
		errno = EROFS;
		return -1;
	}
	if (S_ISLNK(m)) {
		errno = ELOOP;
		return -1;
	}
	if ((flags & O_DIRECTORY) && !S_ISDIR(m)) {
		errno = ENOTDIR;
		return -1;
	}
	return handle_new(l, n);
}

static int op_statat(void *layer, int dir, const char *name, struct stat *st)
{
	struct oci_layer *l = layer;
	uint32_t n = node_at(l, dir, name);
	if (!n)
		return -1;
	oci_stat(l->ix, n, st);
	return 0;
}

static int op_list(void *layer, int h, ovl_plugin_list_fn fn, void *arg)
{
	struct oci_layer *l = layer;
	uint32_t d = handle_node(l, h);
	if (!d)
		return -1;
	if (!S_ISDIR(oci_mode(l->ix, d))) {
		errno = ENOTDIR;
		return -1;
	}
	for (uint32_t c = oci_first_child(l->ix, d); c; c = oci_next_sibling(l->ix, c)) {
		int r = fn(arg, oci_name(l->ix, c), (uint8_t)IFTODT(oci_mode(l->ix, c)), oci_ino(l->ix, c));
		if (r)
			return r;
	}
	return 0;
}

/* n bytes of the stream at off, all of them (the index says they exist). */
static int stream_read(struct oci_layer *l, char *buf, size_t n, uint64_t off)
{
	ssize_t r = oci_blob_pread(&l->blob, buf, n, off);
	if (r < 0 || (size_t)r != n) {
		oci_log(&l->log, "read of %zu bytes at %llu of the stream failed: %s", n, (unsigned long long)off,
			r < 0 ? strerror(errno) : "short (has the blob changed?)");
		errno = EIO;
		return -1;
	}
	return 0;
}

/* A sparse file: its stretches where they meet [off, off+size), zeros between. */
static int read_sparse(struct oci_layer *l, const struct oci_file *f, char *buf, size_t size, uint64_t off)
{
	uint64_t stored = f->data, end = off + size;
	memset(buf, 0, size);
	for (uint32_t i = 0; i < f->sparse.n; i++) {
		uint64_t so, sl;
		oci_sparse_get(&f->sparse, i, &so, &sl);
		if (so >= end)
			break;
		if (so + sl > off) {
			uint64_t a = so > off ? so : off, b = so + sl < end ? so + sl : end;
			if (stream_read(l, buf + (a - off), (size_t)(b - a), stored + (a - so)) < 0)
				return -1;
		}
		stored += sl;
	}
	return 0;
}

static ssize_t op_read(void *layer, int h, void *buf, size_t size, off_t off)
{
	struct oci_layer *l = layer;
	struct oci_file f;
	uint32_t n = handle_node(l, h);
	if (!n)
		return -1;
	if (oci_file(l->ix, n, &f) < 0 || off < 0) {
		errno = S_ISDIR(oci_mode(l->ix, n)) ? EISDIR : EINVAL;
		return -1;
	}
	if ((uint64_t)off >= f.size)
		return 0;
	if (size > f.size - (uint64_t)off)
		size = (size_t)(f.size - (uint64_t)off);
	int r = f.sparse.map ? read_sparse(l, &f, buf, size, (uint64_t)off)
			     : stream_read(l, buf, size, f.data + (uint64_t)off);
	return r < 0 ? -1 : (ssize_t)size;
}

static ssize_t op_readlinkat(void *layer, int dir, const char *name, char *buf, size_t size)
{
	struct oci_layer *l = layer;
	uint32_t n = node_at(l, dir, name);
	if (!n)
		return -1;
	const char *t = oci_link_target(l->ix, n);
	if (!t) {
		errno = EINVAL;
		return -1;
	}
	size_t len = strlen(t);
	if (len > size)
		len = size;
	memcpy(buf, t, len);
	return (ssize_t)len;
}

static ssize_t op_getxattrat(void *layer, int dir, const char *name, const char *xname, void *buf, size_t size)
{
	struct oci_layer *l = layer;
	uint32_t n = node_at(l, dir, name);
	return n ? oci_getxattr(l->ix, n, xname, buf, size) : -1;
}

static ssize_t op_listxattrat(void *layer, int dir, const char *name, char *buf, size_t size)
{
	struct oci_layer *l = layer;
	uint32_t n = node_at(l, dir, name);
	return n ? oci_listxattr(l->ix, n, buf, size) : -1;
}

static int op_statfs(void *layer, struct statvfs *st)
{
	struct oci_layer *l = layer;
	memset(st, 0, sizeof *st);
	st->f_bsize = st->f_frsize = 4096;
	st->f_blocks = (fsblkcnt_t)((l->blob.size + 4095) / 4096);
	st->f_files = (fsfilcnt_t)oci_index_entries(l->ix);
	st->f_namemax = 255;
	st->f_flag = ST_RDONLY;
	return 0;
}

static void layer_free(struct oci_layer *l)
{
	if (!l)
		return;
	oci_blob_close(&l->blob);
	oci_index_free(l->ix);
	pthread_mutex_destroy(&l->lock);
	free(l->nodes);
	free(l->free_slots);
	free(l->what);
	free(l);
}

static void op_release(void *layer)
{
	layer_free(layer);
}

static const struct ovl_plugin_layer_ops oci_ops = {
	.openat = op_openat,
	.close = op_close,
	.statat = op_statat,
	.list = op_list,
	.read = op_read,
	.readlinkat = op_readlinkat,
	.getxattrat = op_getxattrat,
	.listxattrat = op_listxattrat,
	.statfs = op_statfs,
	.release = op_release,
};

/* ---- opening layers ---- */

/* One layer from the open blob fd: the layer, or NULL with err. */
static struct oci_layer *layer_open(const char *what, int fd, const struct oci_build_want *want,
				    const struct oci_limits *lim, char *err, size_t errlen)
{
	struct oci_layer *l = calloc(1, sizeof *l);
	char why[512];
	if (!l || !(l->what = strdup(what))) {
		free(l);
		close(fd);
		oci_err(err, errlen, what, "out of memory");
		return NULL;
	}
	l->blob.fd = -1;
	l->log.what = l->what;
	pthread_mutex_init(&l->lock, NULL);
	if (oci_build(fd, want, lim, &l->log, &l->blob, &l->ix, why, sizeof why) < 0) {
		oci_err(err, errlen, what, "%s", why);
		layer_free(l);
		return NULL;
	}
	if (handle_new(l, OCI_ROOT) != 0) { /* the root: handle 0 */
		oci_err(err, errlen, what, "out of memory");
		layer_free(l);
		return NULL;
	}
	return l;
}

static int layer_out(struct oci_layer *l, struct ovl_plugin_layer *out)
{
	out->layer = l;
	out->root = 0;
	out->ops = &oci_ops;
	out->name = strdup(l->what);
	return out->name ? 0 : -1;
}

/* A blob named by its digest (…/sha256/<hex>, as in a layout) is verified. */
static void digest_from_path(const char *path, char digest[72])
{
	size_t len = strlen(path);
	digest[0] = 0;
	if (len < 72 || strncmp(path + len - 72, "/sha256/", 8))
		return;
	snprintf(digest, 72, "sha256:%s", path + len - 64);
	if (!oci_digest_hex(digest))
		digest[0] = 0;
}

static int open_blob(const char *path, struct ovl_plugin_layer *out, const struct oci_limits *lim, char *err,
		     size_t errlen)
{
	char digest[72];
	if (path[0] != '/') {
		oci_err(err, errlen, path, "//oci//PATH takes an absolute path to a layer blob");
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		oci_err(err, errlen, path, "%s", strerror(errno));
		return -1;
	}
	digest_from_path(path, digest);
	/* the index cache goes beside the blob */
	char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
	int dirfd = -1;
	if (slash) {
		*slash = 0;
		dirfd = open(slash == dir ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	struct oci_build_want want = { digest[0] ? digest : NULL, -1, dirfd, strrchr(path, '/') + 1 };
	struct oci_layer *l = layer_open(path, fd, &want, lim, err, errlen);
	if (dirfd >= 0)
		close(dirfd);
	free(dir);
	if (!l)
		return -1;
	if (layer_out(l, out) < 0) {
		layer_free(l);
		oci_err(err, errlen, path, "out of memory");
		return -1;
	}
	return 1;
}

/* The layers of a layout are built by a few threads at once. */
struct build_job {
	const char *dir;
	struct oci_layout *lay;
	const struct oci_limits *lim;
	struct oci_layer **built; /* bottom first, as the manifest */
	char (*errs)[512];
	atomic_size_t next;
};

static void *build_worker(void *arg)
{
	struct build_job *j = arg;
	size_t i;
	while ((i = atomic_fetch_add(&j->next, 1)) < j->lay->n) {
		const struct oci_layout_layer *x = &j->lay->layers[i];
		char what[4096];
		snprintf(what, sizeof what, "%s/blobs/sha256/%s", j->dir, x->digest + 7);
		int alg = -1, fd = oci_layout_open_blob(j->lay->dirfd, x->digest, &alg);
		if (fd < 0) {
			oci_err(j->errs[i], sizeof j->errs[i], what, "%s", strerror(errno));
			continue;
		}
		struct oci_build_want want = { x->digest, x->size, alg, x->digest + 7 };
		j->built[i] = layer_open(what, fd, &want, j->lim, j->errs[i], sizeof j->errs[i]);
		close(alg);
	}
	return NULL;
}

static void build_all(struct build_job *j)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nt = cpus > 1 ? (size_t)cpus : 1;
	pthread_t t[8];
	size_t started = 0;
	if (nt > 8)
		nt = 8;
	if (nt > j->lay->n)
		nt = j->lay->n;
	for (; started + 1 < nt; started++)
		if (pthread_create(&t[started], NULL, build_worker, j))
			break;
	build_worker(j);
	for (size_t i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}

static int open_layout(const char *ref, const char *path, struct ovl_plugin_layer *out, size_t max,
		       const struct oci_limits *lim, char *err, size_t errlen)
{
	struct oci_layout *lay = calloc(1, sizeof *lay);
	struct build_job j = { .dir = path, .lay = lay, .lim = lim };
	int r = -1;
	char why[512];
	if (!lay) {
		oci_err(err, errlen, path, "out of memory");
		return -1;
	}
	if (oci_layout_read(path, ref, lay, why, sizeof why) < 0) {
		oci_err(err, errlen, path, "%s", why);
		free(lay);
		return -1;
	}
	if (lay->n > max) {
		oci_err(err, errlen, path, "image '%s' has %zu layers, more than the %zu this mount takes", ref, lay->n, max);
		goto out;
	}
	j.built = calloc(lay->n, sizeof *j.built);
	j.errs = calloc(lay->n, sizeof *j.errs);
	if (!j.built || !j.errs) {
		oci_err(err, errlen, path, "out of memory");
		goto out;
	}
	build_all(&j);
	for (size_t i = 0; i < lay->n && r == -1; i++)
		if (!j.built[i])
			r = -2, snprintf(err, errlen, "%s", j.errs[i]);
	if (r == -2)
		goto out;
	for (size_t i = 0; i < lay->n; i++) { /* top first */
		if (layer_out(j.built[lay->n - 1 - i], &out[i]) < 0) {
			for (size_t k = 0; k < i; k++)
				free(out[k].name);
			oci_err(err, errlen, path, "out of memory");
			goto out;
		}
	}
	r = (int)lay->n;
out:
	if (r < 0 && j.built)
		for (size_t i = 0; i < lay->n; i++)
			layer_free(j.built[i]);
	free(j.built);
	free(j.errs);
	oci_layout_free(lay);
	free(lay);
	return r < 0 ? -1 : r;
}

static int oci_open_layers(const char *data, const char *path, struct ovl_plugin_layer *out, size_t max, char *err,
			   size_t errlen)
{
	struct oci_limits lim;
	char why[256];
	if (!path || !*path) {
		oci_err(err, errlen, "oci", "no path: //oci//BLOB or //oci/REF//LAYOUT");
		return -1;
	}
	if (oci_limits_get(&lim, why, sizeof why) < 0) {
		oci_err(err, errlen, path, "%s", why);
		return -1;
	}
	if (max < 1) {
		oci_err(err, errlen, path, "no room for a layer");
		return -1;
	}
	if (!data || !*data)
		return open_blob(path, out, &lim, err, errlen);
	if (path[0] != '/') {
		oci_err(err, errlen, path, "//oci/REF/PATH takes an absolute path to an OCI image layout");
		return -1;
	}
	return open_layout(data, path, out, max, &lim, err, errlen);
}

static const struct ovl_plugin oci_plugin = {
	.api_version = OVL_PLUGIN_API_VERSION,
	.name = "oci",
	.open_layers = oci_open_layers,
};

__attribute__((visibility("default"))) const struct ovl_plugin *fuse_overlayfs_plugin_v1(void);
const struct ovl_plugin *fuse_overlayfs_plugin_v1(void)
{
	return &oci_plugin;
}
