/* A small plugin for tests/integration/plugins.sh, built out of the tree
 * against the installed <fuse-overlayfs/plugin.h> (pkg-config
 * fuse-overlayfs-plugin).  "//mem/DATA/two" stands for two layers of a fixed
 * tree (DATA goes into f.txt); any other PATH is refused.  -DMEM_API_VERSION=2
 * builds one of another interface version, -DMEM_NO_ENTRY one without the
 * entry symbol.  Handles are indexes into a layer's table; both layers
 * number their objects from 1, so only the daemon's st_dev keeps their
 * inode numbers apart. */
#define _GNU_SOURCE /* S_IF*, IFTODT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fuse-overlayfs/plugin.h>

#ifndef MEM_API_VERSION
#define MEM_API_VERSION OVL_PLUGIN_API_VERSION
#endif

struct obj {
	const char *name;
	int parent;
	mode_t mode;
	const char *data; /* contents, link target; NULL: the layer's f.txt text */
};

static const struct obj top[] = {
	{ "", 0, S_IFDIR | 0755, NULL },
	{ "f.txt", 0, S_IFREG | 0644, NULL },
	{ "link", 0, S_IFLNK | 0777, "f.txt" },
	{ "d", 0, S_IFDIR | 0755, NULL },
	{ "top.txt", 3, S_IFREG | 0600, "top\n" },
	{ "shadow.txt", 0, S_IFREG | 0644, "top shadow\n" },
	{ ".wh.hidden", 0, S_IFREG | 0000, "" },
};
static const struct obj bottom[] = {
	{ "", 0, S_IFDIR | 0755, NULL },
	{ "d", 0, S_IFDIR | 0755, NULL },
	{ "bottom.txt", 1, S_IFREG | 0644, "bottom\n" },
	{ "shadow.txt", 0, S_IFREG | 0644, "bottom shadow\n" },
	{ "only2.txt", 0, S_IFREG | 0644, "in layer two\n" },
};

struct mem {
	const struct obj *objs;
	int n;
	char ftxt[256];
};

static const char *contents(const struct mem *m, int h)
{
	return m->objs[h].data ? m->objs[h].data : m->ftxt;
}

static int child(const struct mem *m, int dir, const char *name)
{
	if (dir < 0 || dir >= m->n) {
		errno = EBADF;
		return -1;
	}
	if (name == NULL || strcmp(name, ".") == 0)
		return dir;
	if (!S_ISDIR(m->objs[dir].mode)) {
		errno = ENOTDIR;
		return -1;
	}
	for (int i = 1; i < m->n; i++)
		if (m->objs[i].parent == dir && strcmp(m->objs[i].name, name) == 0)
			return i;
	errno = ENOENT;
	return -1;
}

static int mem_openat(void *layer, int dir, const char *name, int flags)
{
	int h = child(layer, dir, name);
	if (h < 0)
		return -1;
	const struct obj *o = &((struct mem *)layer)->objs[h];
	if (S_ISLNK(o->mode) || ((flags & O_DIRECTORY) && !S_ISDIR(o->mode))) {
		errno = S_ISLNK(o->mode) ? ELOOP : ENOTDIR;
		return -1;
	}
	return h;
}

static int mem_close(void *layer, int h)
{
	(void)layer, (void)h;
	return 0;
}

static int mem_statat(void *layer, int dir, const char *name, struct stat *st)
{
	struct mem *m = layer;
	int h = child(m, dir, name);
	if (h < 0)
		return -1;
	memset(st, 0, sizeof *st);
	st->st_ino = (ino_t)h + 1;
	st->st_mode = m->objs[h].mode;
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	st->st_size = S_ISDIR(st->st_mode) ? 0 : (off_t)strlen(contents(m, h));
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = 1500000000;
	return 0;
}

static int mem_list(void *layer, int h, ovl_plugin_list_fn fn, void *arg)
{
	struct mem *m = layer;
	for (int i = 1; i < m->n; i++) {
		if (m->objs[i].parent != h)
			continue;
		int res = fn(arg, m->objs[i].name, (uint8_t)IFTODT(m->objs[i].mode), (ino_t)i + 1);
		if (res)
			return res;
	}
	return 0;
}

static ssize_t mem_read(void *layer, int h, void *buf, size_t size, off_t off)
{
	const char *s = contents(layer, h);
	size_t len = strlen(s);
	if ((size_t)off >= len)
		return 0;
	size_t n = len - (size_t)off < size ? len - (size_t)off : size;
	memcpy(buf, s + off, n);
	return (ssize_t)n;
}

static ssize_t mem_readlinkat(void *layer, int dir, const char *name, char *buf, size_t size)
{
	struct mem *m = layer;
	int h = child(m, dir, name);
	if (h < 0)
		return -1;
	if (!S_ISLNK(m->objs[h].mode)) {
		errno = EINVAL;
		return -1;
	}
	size_t n = strlen(m->objs[h].data) < size ? strlen(m->objs[h].data) : size;
	memcpy(buf, m->objs[h].data, n);
	return (ssize_t)n;
}

/* f.txt of the top layer has user.mem=yes */
static ssize_t answer(void *buf, size_t size, const char *v, size_t len)
{
	if (size == 0)
		return (ssize_t)len;
	if (size < len) {
		errno = ERANGE;
		return -1;
	}
	memcpy(buf, v, len);
	return (ssize_t)len;
}

static int has_xattr(struct mem *m, int h)
{
	return m->objs == top && h == 1;
}

static ssize_t mem_getxattrat(void *layer, int dir, const char *name, const char *xname, void *buf, size_t size)
{
	int h = child(layer, dir, name);
	if (h < 0)
		return -1;
	if (has_xattr(layer, h) && strcmp(xname, "user.mem") == 0)
		return answer(buf, size, "yes", 3);
	errno = ENODATA;
	return -1;
}

static ssize_t mem_listxattrat(void *layer, int dir, const char *name, char *buf, size_t size)
{
	int h = child(layer, dir, name);
	if (h < 0)
		return -1;
	return has_xattr(layer, h) ? answer(buf, size, "user.mem", 9) : 0;
}

/* $MEM_RELEASE_FILE gets a line a layer released (the daemon's stderr is
 * gone by then) */
static void mem_release(void *layer)
{
	const char *mark = getenv("MEM_RELEASE_FILE");
	FILE *f = mark ? fopen(mark, "a") : NULL;
	if (f) {
		fprintf(f, "released\n");
		fclose(f);
	}
	free(layer);
}

static const struct ovl_plugin_layer_ops ops = {
	.openat = mem_openat,
	.close = mem_close,
	.statat = mem_statat,
	.list = mem_list,
	.read = mem_read,
	.readlinkat = mem_readlinkat,
	.getxattrat = mem_getxattrat,
	.listxattrat = mem_listxattrat,
	.release = mem_release,
};

static int open_layers(const char *data, const char *path, struct ovl_plugin_layer *out, size_t max, char *err,
		       size_t errlen)
{
	if (strcmp(path, "/two") != 0 || max < 2) {
		snprintf(err, errlen, "mem: no tree at %s", path);
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		struct mem *m = calloc(1, sizeof *m);
		if (m == NULL) {
			snprintf(err, errlen, "mem: out of memory");
			return -1; /* a test plugin: the first layer leaks */
		}
		m->objs = i == 0 ? top : bottom;
		m->n = i == 0 ? (int)(sizeof top / sizeof top[0]) : (int)(sizeof bottom / sizeof bottom[0]);
		snprintf(m->ftxt, sizeof m->ftxt, "hello from mem %s\n", data);
		out[i] = (struct ovl_plugin_layer){ .layer = m, .root = 0, .ops = &ops, .name = strdup("mem") };
	}
	return 2;
}

static const struct ovl_plugin plugin = {
	.api_version = MEM_API_VERSION,
	.name = "mem",
	.open_layers = open_layers,
};

#ifndef MEM_NO_ENTRY
const struct ovl_plugin *fuse_overlayfs_plugin_v1(void)
{
	return &plugin;
}
#else
const struct ovl_plugin *not_the_entry(void)
{
	return &plugin;
}
#endif
