/* A lower layer held in memory (memory.h): a flat array of objects, each
 * knowing its parent, looked up by a scan (test trees are small).  Read-only
 * to the core: changes answer EROFS.  Built into the unit tests only. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory.h"

/* st_ino of object i is i + FIRST_INO: no handle (an index) passes for an inode number */
#define FIRST_INO 100

struct mem_xattr {
	char *name;
	char *value;
	size_t len;
};

struct mem_obj {
	char *name;      /* "" for the root */
	uint32_t parent; /* index; the root's is its own */
	mode_t mode;
	dev_t rdev;
	char *data;      /* a file's contents, a symlink's target */
	size_t len;
	struct mem_xattr *xattrs;
	size_t nxattrs;
};

struct ovl_memory {
	dev_t dev;
	uid_t uid;
	gid_t gid;
	struct mem_obj *objs;
	size_t n, cap;
	atomic_long open, reads;
};

static struct mem_obj *obj_of(struct ovl_memory *m, int h)
{
	if (h < 0 || (size_t)h >= m->n) {
		errno = EBADF;
		return NULL;
	}
	return &m->objs[h];
}

/* The object name below directory dir (name NULL or "": dir itself). */
static struct mem_obj *child(struct ovl_memory *m, int dir, const char *name)
{
	struct mem_obj *d = obj_of(m, dir);
	if (d == NULL || name == NULL || name[0] == '\0')
		return d;
	if (!S_ISDIR(d->mode)) {
		errno = ENOTDIR;
		return NULL;
	}
	if (strcmp(name, ".") == 0)
		return d;
	if (strchr(name, '/') || strcmp(name, "..") == 0) {
		errno = EINVAL; /* one name below the directory, as in direct.c */
		return NULL;
	}
	for (size_t i = 1; i < m->n; i++)
		if (m->objs[i].parent == (uint32_t)dir && strcmp(m->objs[i].name, name) == 0)
			return &m->objs[i];
	errno = ENOENT;
	return NULL;
}

static struct ovl_memory *mem(struct ovl_layer *l)
{
	return l->data;
}

static int mem_openat(struct ovl_layer *l, int dirfd, const char *name, int flags, mode_t mode)
{
	struct ovl_memory *m = mem(l);
	struct mem_obj *o = child(m, dirfd, name);
	(void)mode;
	if (o == NULL)
		return -1;
	if ((flags & O_DIRECTORY) && !S_ISDIR(o->mode)) {
		errno = ENOTDIR;
		return -1;
	}
	if (S_ISLNK(o->mode) && !(flags & O_PATH)) {
		errno = ELOOP; /* O_NOFOLLOW, always */
		return -1;
	}
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC))) {
		errno = EROFS;
		return -1;
	}
	atomic_fetch_add(&m->open, 1);
	return (int)(o - m->objs);
}

static int mem_close(struct ovl_layer *l, int h)
{
	struct ovl_memory *m = mem(l);
	if (obj_of(m, h) == NULL)
		return -1;
	atomic_fetch_sub(&m->open, 1);
	return 0;
}

static int mem_statat(struct ovl_layer *l, int dirfd, const char *name, struct stat *st)
{
	struct ovl_memory *m = mem(l);
	struct mem_obj *o = child(m, dirfd, name);
	if (o == NULL)
		return -1;
	size_t i = (size_t)(o - m->objs);
	memset(st, 0, sizeof *st);
	st->st_dev = m->dev;
	st->st_ino = FIRST_INO + i;
	st->st_mode = o->mode;
	st->st_nlink = S_ISDIR(o->mode) ? 2 : 1;
	st->st_uid = m->uid;
	st->st_gid = m->gid;
	st->st_rdev = o->rdev;
	st->st_size = (off_t)o->len;
	st->st_blocks = (blkcnt_t)((o->len + 511) / 512);
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = st->st_atim.tv_sec = st->st_ctim.tv_sec = 1200000000 + (time_t)i;
	return 0;
}

static int mem_list(struct ovl_layer *l, int h, ovl_list_fn fn, void *arg)
{
	struct ovl_memory *m = mem(l);
	struct mem_obj *d = obj_of(m, h);
	if (d == NULL)
		return -1;
	if (!S_ISDIR(d->mode)) {
		errno = ENOTDIR;
		return -1;
	}
	for (size_t i = 1; i < m->n; i++) {
		if (m->objs[i].parent != (uint32_t)h)
			continue;
		int res = fn(arg, m->objs[i].name, (uint8_t)IFTODT(m->objs[i].mode), FIRST_INO + i);
		if (res)
			return res;
	}
	return 0;
}

static ssize_t mem_read(struct ovl_layer *l, int h, void *buf, size_t size, off_t off)
{
	struct ovl_memory *m = mem(l);
	struct mem_obj *o = obj_of(m, h);
	if (o == NULL)
		return -1;
	if (!S_ISREG(o->mode) || off < 0) {
		errno = S_ISDIR(o->mode) ? EISDIR : EINVAL;
		return -1;
	}
	atomic_fetch_add(&m->reads, 1);
	if ((size_t)off >= o->len)
		return 0;
	size_t n = o->len - (size_t)off < size ? o->len - (size_t)off : size;
	memcpy(buf, o->data + off, n);
	return (ssize_t)n;
}

static ssize_t mem_readlinkat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	struct mem_obj *o = child(mem(l), dirfd, name);
	if (o == NULL)
		return -1;
	if (!S_ISLNK(o->mode)) {
		errno = EINVAL;
		return -1;
	}
	size_t n = o->len < size ? o->len : size;
	memcpy(buf, o->data, n);
	return (ssize_t)n;
}

/* size 0 asks for the length; a smaller buffer is ERANGE, as the syscalls. */
static ssize_t copy_out(void *buf, size_t size, const void *what, size_t len)
{
	if (size == 0)
		return (ssize_t)len;
	if (size < len) {
		errno = ERANGE;
		return -1;
	}
	memcpy(buf, what, len);
	return (ssize_t)len;
}

static ssize_t mem_getxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, void *buf,
			      size_t size)
{
	struct mem_obj *o = child(mem(l), dirfd, name);
	if (o == NULL)
		return -1;
	for (size_t i = 0; i < o->nxattrs; i++)
		if (strcmp(o->xattrs[i].name, xname) == 0)
			return copy_out(buf, size, o->xattrs[i].value, o->xattrs[i].len);
	errno = ENODATA;
	return -1;
}

static ssize_t mem_listxattrat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	struct mem_obj *o = child(mem(l), dirfd, name);
	if (o == NULL)
		return -1;
	char list[4096];
	size_t len = 0;
	for (size_t i = 0; i < o->nxattrs; i++) {
		size_t n = strlen(o->xattrs[i].name) + 1;
		if (len + n > sizeof list) {
			errno = E2BIG;
			return -1;
		}
		memcpy(list + len, o->xattrs[i].name, n);
		len += n;
	}
	return copy_out(buf, size, list, len);
}

static int mem_setxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, const void *value,
			  size_t size, int flags)
{
	(void)l, (void)dirfd, (void)name, (void)xname, (void)value, (void)size, (void)flags;
	errno = EROFS;
	return -1;
}

static int mem_removexattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname)
{
	(void)l, (void)dirfd, (void)name, (void)xname;
	errno = EROFS;
	return -1;
}

static int mem_chmodat(struct ovl_layer *l, int dirfd, const char *name, mode_t mode)
{
	(void)l, (void)dirfd, (void)name, (void)mode;
	errno = EROFS;
	return -1;
}

static int mem_statfs(struct ovl_layer *l, struct statvfs *st)
{
	(void)l;
	memset(st, 0, sizeof *st);
	st->f_bsize = st->f_frsize = 4096;
	st->f_namemax = 255;
	st->f_flag = ST_RDONLY;
	return 0;
}

static const struct ovl_layer_ops memory_ops = {
	.openat = mem_openat,
	.close = mem_close,
	.statat = mem_statat,
	.list = mem_list,
	.read = mem_read,
	.readlinkat = mem_readlinkat,
	.getxattrat = mem_getxattrat,
	.listxattrat = mem_listxattrat,
	.setxattrat = mem_setxattrat,
	.removexattrat = mem_removexattrat,
	.chmodat = mem_chmodat,
	.statfs = mem_statfs,
};

/* ---- building a tree ---- */
static int push(struct ovl_memory *m, const char *name, uint32_t parent, mode_t mode, dev_t rdev,
		const char *data)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		struct mem_obj *objs = realloc(m->objs, cap * sizeof *objs);
		if (objs == NULL)
			return -ENOMEM;
		m->objs = objs;
		m->cap = cap;
	}
	struct mem_obj *o = &m->objs[m->n];
	*o = (struct mem_obj){ .name = strdup(name), .parent = parent, .mode = mode, .rdev = rdev,
			       .data = data ? strdup(data) : NULL, .len = data ? strlen(data) : 0 };
	if (o->name == NULL || (data && o->data == NULL)) {
		free(o->name);
		free(o->data);
		return -ENOMEM;
	}
	m->n++;
	return 0;
}

struct ovl_memory *ovl_memory_new(dev_t dev)
{
	struct ovl_memory *m = calloc(1, sizeof *m);
	if (m == NULL)
		return NULL;
	m->dev = dev;
	m->uid = geteuid();
	m->gid = getegid();
	if (push(m, "", 0, S_IFDIR | 0755, 0, NULL) < 0) {
		free(m);
		return NULL;
	}
	return m;
}

void ovl_memory_free(struct ovl_memory *m)
{
	for (size_t i = 0; i < m->n; i++) {
		for (size_t k = 0; k < m->objs[i].nxattrs; k++) {
			free(m->objs[i].xattrs[k].name);
			free(m->objs[i].xattrs[k].value);
		}
		free(m->objs[i].xattrs);
		free(m->objs[i].name);
		free(m->objs[i].data);
	}
	free(m->objs);
	free(m);
}

/* The index of path's object, or -1 with errno. */
static int resolve(struct ovl_memory *m, const char *path)
{
	char buf[4096];
	int h = 0;
	if (strlen(path) >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(buf, path);
	for (char *save, *part = strtok_r(buf, "/", &save); part && h >= 0; part = strtok_r(NULL, "/", &save)) {
		struct mem_obj *o = child(m, h, part);
		h = o ? (int)(o - m->objs) : -1;
	}
	return h;
}

int ovl_memory_add(struct ovl_memory *m, const char *path, mode_t mode, dev_t rdev, const char *data)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	char parent[4096];
	snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - path) : 0, path);
	int dir = resolve(m, parent);
	if (dir < 0)
		return -errno;
	if (child(m, dir, name) != NULL)
		return -EEXIST;
	return errno != ENOENT ? -errno : push(m, name, (uint32_t)dir, mode, rdev, data);
}

int ovl_memory_set_xattr(struct ovl_memory *m, const char *path, const char *name, const char *value)
{
	int h = resolve(m, path);
	if (h < 0)
		return -errno;
	struct mem_obj *o = &m->objs[h];
	struct mem_xattr *x = realloc(o->xattrs, (o->nxattrs + 1) * sizeof *x);
	if (x == NULL)
		return -ENOMEM;
	o->xattrs = x;
	x[o->nxattrs] = (struct mem_xattr){ .name = strdup(name), .value = strdup(value), .len = strlen(value) };
	if (x[o->nxattrs].name == NULL || x[o->nxattrs].value == NULL) {
		free(x[o->nxattrs].name);
		free(x[o->nxattrs].value);
		return -ENOMEM;
	}
	o->nxattrs++;
	return 0;
}

ino_t ovl_memory_ino(const struct ovl_memory *m, const char *path)
{
	int h = resolve((struct ovl_memory *)m, path);
	return h < 0 ? 0 : FIRST_INO + (ino_t)h;
}

void ovl_memory_layer(struct ovl_memory *m, uint32_t caps, struct ovl_layer *l)
{
	memset(l, 0, sizeof *l);
	l->ops = &memory_ops;
	l->caps = caps & ~(uint32_t)OVL_LAYER_REAL_FDS;
	l->data = m;
	l->dev = m->dev;
	l->path = strdup("(memory)");
	l->root_fd = mem_openat(l, 0, ".", O_RDONLY | O_DIRECTORY, 0);
}

long ovl_memory_open_handles(const struct ovl_memory *m)
{
	return atomic_load(&m->open);
}

long ovl_memory_reads(const struct ovl_memory *m)
{
	return atomic_load(&m->reads);
}
