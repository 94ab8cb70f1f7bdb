/* The plugin loader (loader.h): shared objects implementing plugin.h are
 * dlopen'ed, and each layer a plugin opens becomes a struct ovl_layer whose
 * ops forward to the plugin's with its own pointer.  Plugin layers have no
 * real fds (the core reads through the read op: no passthrough, no
 * FICLONE), are read-only, and get a st_dev of their own so their inode
 * numbers never meet another layer's.  Errors are one line in err. */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <elf.h>
#include <link.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/sysmacros.h>

#include "loader.h"
#include "plugin.h"

#ifndef OVL_PLUGIN_DIR
#define OVL_PLUGIN_DIR "/usr/local/lib/fuse-overlayfs/plugins"
#endif
#ifndef OVL_PLUGIN_DAEMON
#define OVL_PLUGIN_DAEMON "/usr/local/libexec/fuse-overlayfs/fuse-overlayfs-plugins"
#endif
/* No kernel device has a major above 4095 (12 bits): ours start there. */
#define PLUGIN_DEV_MAJOR 4096

struct plugin {
	void *dl;
	const struct ovl_plugin *p;
	char *path;
};

/* A layer a plugin opened: the ovl_layer's data. */
struct plugin_layer {
	struct ovl_plugin_layer pl;
	struct plugin_layer *next;
};

struct ovl_plugins {
	struct plugin *v;
	size_t n;
	struct plugin_layer *layers; /* every one opened, released at the end */
	unsigned ndevs;
};

/* ---- //NAME/DATA/PATH ---- */
bool ovl_plugin_spec_is(const char *entry)
{
	return strncmp(entry, "//", 2) == 0;
}

int ovl_plugin_spec_parse(const char *entry, struct ovl_plugin_spec *spec)
{
	if (!ovl_plugin_spec_is(entry))
		return -EINVAL;
	const char *name = entry + 2;
	const char *end_name = strchr(name, '/');
	if (end_name == NULL || end_name == name)
		return -EINVAL;
	const char *data = end_name + 1;
	const char *path = strchr(data, '/'); /* PATH keeps its '/': absolute */
	if (path == NULL)
		return -EINVAL;
	size_t nl = (size_t)(end_name - name), dl = (size_t)(path - data), pl = strlen(path);
	char *buf = malloc(nl + dl + pl + 3);
	if (buf == NULL)
		return -ENOMEM;
	spec->name = memcpy(buf, name, nl);
	spec->name[nl] = '\0';
	spec->data = memcpy(buf + nl + 1, data, dl);
	spec->data[dl] = '\0';
	spec->path = memcpy(buf + nl + dl + 2, path, pl + 1);
	return 0;
}

void ovl_plugin_spec_free(struct ovl_plugin_spec *spec)
{
	free(spec->name);
	spec->name = spec->data = spec->path = NULL;
}

/* ---- loading ---- */
const char *ovl_plugins_dir(void)
{
	const char *env = getenv("FUSE_OVERLAYFS_PLUGIN_DIR");
	return env && env[0] ? env : OVL_PLUGIN_DIR;
}

bool ovl_plugins_runnable(void)
{
	const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
	unsigned long n = getauxval(AT_PHNUM);
	for (unsigned long i = 0; ph != NULL && i < n; i++)
		if (ph[i].p_type == PT_INTERP)
			return true;
	return false;
}

const char *ovl_plugins_daemon(void)
{
	const char *env = getenv("FUSE_OVERLAYFS_PLUGIN_DAEMON");
	return env && env[0] ? env : OVL_PLUGIN_DAEMON;
}

static const char *find_plugin(const struct ovl_plugins *ps, const char *name)
{
	for (size_t i = 0; i < ps->n; i++)
		if (strcmp(ps->v[i].p->name, name) == 0)
			return ps->v[i].path;
	return NULL;
}

/* Why the plugin dl at path cannot be used, or NULL; *out its description. */
static const char *check_plugin(const struct ovl_plugins *ps, void *dl, const struct ovl_plugin **out, char *why,
				size_t whylen)
{
	ovl_plugin_entry_fn entry = (ovl_plugin_entry_fn)dlsym(dl, OVL_PLUGIN_ENTRY_SYMBOL);
	if (entry == NULL)
		return "no symbol " OVL_PLUGIN_ENTRY_SYMBOL " (not a fuse-overlayfs plugin)";
	const struct ovl_plugin *p = entry();
	if (p == NULL || p->api_version != OVL_PLUGIN_API_VERSION) {
		snprintf(why, whylen, "plugin interface version %u, this fuse-overlayfs has %d", p ? p->api_version : 0,
			 OVL_PLUGIN_API_VERSION);
		return why;
	}
	if (p->name == NULL || p->name[0] == '\0' || strchr(p->name, '/') || p->open_layers == NULL)
		return "no name or no open_layers";
	const char *other = find_plugin(ps, p->name);
	if (other) {
		snprintf(why, whylen, "a plugin named '%s' is loaded already, from %s", p->name, other);
		return why;
	}
	*out = p;
	return NULL;
}

static int load_one(struct ovl_plugins *ps, const char *file, char *err, size_t errlen)
{
	char path[4096], why[512];
	if (snprintf(path, sizeof path, "%s%s%s", strchr(file, '/') ? "" : ovl_plugins_dir(),
		     strchr(file, '/') ? "" : "/", file) >= (int)sizeof path) {
		snprintf(err, errlen, "%.256s: plugins: %s", file, strerror(ENAMETOOLONG));
		return -1;
	}
	/* a plugin runs on our libc (main.c hands plugin mounts of a static
	 * daemon to its dynamic build, so only a static one of those gets here) */
	if (!ovl_plugins_runnable()) {
		snprintf(err, errlen,
			 "%s: plugins: this fuse-overlayfs is linked statically and cannot run plugins; neither can its "
			 "plugin daemon %s",
			 path, ovl_plugins_daemon());
		return -1;
	}
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		const char *msg = dlerror();
		size_t pl = strlen(path); /* dlerror names the file too, mostly */
		if (strncmp(msg, path, pl) == 0 && strncmp(msg + pl, ": ", 2) == 0)
			msg += pl + 2;
		snprintf(err, errlen, "%s: plugins: cannot load: %s", path, msg);
		return -1;
	}
	const struct ovl_plugin *p = NULL;
	const char *bad = check_plugin(ps, dl, &p, why, sizeof why);
	struct plugin *v = bad ? NULL : realloc(ps->v, (ps->n + 1) * sizeof *v);
	if (v)
		ps->v = v;
	char *copy = v ? strdup(path) : NULL;
	if (copy == NULL) {
		snprintf(err, errlen, "%s: plugins: %s", path, bad ? bad : strerror(ENOMEM));
		dlclose(dl);
		return -1;
	}
	ps->v[ps->n++] = (struct plugin){ .dl = dl, .p = p, .path = copy };
	return 0;
}

static int load_list(struct ovl_plugins *ps, const char *list, char *err, size_t errlen)
{
	char *copy = strdup(list), *save = NULL;
	if (copy == NULL) {
		snprintf(err, errlen, "plugins: %s", strerror(ENOMEM));
		return -1;
	}
	int res = 0;
	for (char *f = strtok_r(copy, ":", &save); f && res == 0; f = strtok_r(NULL, ":", &save))
		res = load_one(ps, f, err, errlen);
	free(copy);
	return res;
}

static int is_so(const struct dirent *d)
{
	size_t len = strlen(d->d_name);
	return len > 3 && strcmp(d->d_name + len - 3, ".so") == 0;
}

/* Every *.so of the plugin directory, in name order, as 1.10 loads them. */
static int load_dir(struct ovl_plugins *ps, char *err, size_t errlen)
{
	const char *dir = ovl_plugins_dir();
	struct dirent **names;
	int n = scandir(dir, &names, is_so, alphasort);
	if (n < 0 && errno == ENOENT)
		return 0;
	if (n < 0) {
		snprintf(err, errlen, "%s: plugin directory: %s", dir, strerror(errno));
		return -1;
	}
	int res = 0;
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		if (res == 0)
			res = load_one(ps, path, err, errlen);
		free(names[i]);
	}
	free(names);
	return res;
}

int ovl_plugins_load(const char *list, struct ovl_plugins **out, char *err, size_t errlen)
{
	struct ovl_plugins *ps = calloc(1, sizeof *ps);
	if (ps == NULL) {
		snprintf(err, errlen, "plugins: %s", strerror(ENOMEM));
		return -1;
	}
	if ((list ? load_list(ps, list, err, errlen) : load_dir(ps, err, errlen)) < 0) {
		ovl_plugins_free(ps);
		return -1;
	}
	*out = ps;
	return 0;
}

/* ---- the adapter: layer.h's ops over a plugin's ---- */
static struct ovl_plugin_layer *pl_of(struct ovl_layer *l)
{
	return &((struct plugin_layer *)l->data)->pl;
}

static int refuse_rofs(void)
{
	errno = EROFS;
	return -1;
}

static int pl_openat(struct ovl_layer *l, int dirfd, const char *name, int flags, mode_t mode)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	(void)mode;
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		return refuse_rofs();
	/* the plugin's contract: O_RDONLY, and O_DIRECTORY when a directory is wanted */
	return pl->ops->openat(pl->layer, dirfd, name, O_RDONLY | (flags & O_DIRECTORY));
}

static int pl_close(struct ovl_layer *l, int h)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->close(pl->layer, h);
}

static int pl_statat(struct ovl_layer *l, int dirfd, const char *name, struct stat *st)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	if (pl->ops->statat(pl->layer, dirfd, name && name[0] ? name : NULL, st) < 0)
		return -1;
	st->st_dev = l->dev;
	return 0;
}

static int pl_list(struct ovl_layer *l, int h, ovl_list_fn fn, void *arg)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->list(pl->layer, h, fn, arg);
}

static ssize_t pl_read(struct ovl_layer *l, int h, void *buf, size_t size, off_t off)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->read(pl->layer, h, buf, size, off);
}

static ssize_t pl_readlinkat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->readlinkat(pl->layer, dirfd, name, buf, size);
}

static ssize_t pl_getxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, void *buf,
			     size_t size)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->getxattrat(pl->layer, dirfd, name && name[0] ? name : NULL, xname, buf, size);
}

static ssize_t pl_listxattrat(struct ovl_layer *l, int dirfd, const char *name, char *buf, size_t size)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	return pl->ops->listxattrat(pl->layer, dirfd, name && name[0] ? name : NULL, buf, size);
}

static int pl_setxattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname, const void *value,
			 size_t size, int flags)
{
	(void)l, (void)dirfd, (void)name, (void)xname, (void)value, (void)size, (void)flags;
	return refuse_rofs();
}

static int pl_removexattrat(struct ovl_layer *l, int dirfd, const char *name, const char *xname)
{
	(void)l, (void)dirfd, (void)name, (void)xname;
	return refuse_rofs();
}

static int pl_chmodat(struct ovl_layer *l, int dirfd, const char *name, mode_t mode)
{
	(void)l, (void)dirfd, (void)name, (void)mode;
	return refuse_rofs();
}

static int pl_statfs(struct ovl_layer *l, struct statvfs *st)
{
	struct ovl_plugin_layer *pl = pl_of(l);
	if (pl->ops->statfs)
		return pl->ops->statfs(pl->layer, st);
	memset(st, 0, sizeof *st); /* counts nothing */
	st->f_bsize = st->f_frsize = 4096;
	st->f_namemax = 255;
	st->f_flag = ST_RDONLY;
	return 0;
}

static const struct ovl_layer_ops plugin_layer_ops = {
	.openat = pl_openat,
	.close = pl_close,
	.statat = pl_statat,
	.list = pl_list,
	.read = pl_read,
	.readlinkat = pl_readlinkat,
	.getxattrat = pl_getxattrat,
	.listxattrat = pl_listxattrat,
	.setxattrat = pl_setxattrat,
	.removexattrat = pl_removexattrat,
	.chmodat = pl_chmodat,
	.statfs = pl_statfs,
};

/* ---- opening an entry's layers ---- */
static bool ops_complete(const struct ovl_plugin_layer_ops *o)
{
	return o && o->openat && o->close && o->statat && o->list && o->read && o->readlinkat && o->getxattrat &&
	       o->listxattrat && o->release;
}

/* Makes out the layer for pl (kept in ps, to be released); false: no memory. */
static bool adopt(struct ovl_plugins *ps, const struct ovl_plugin_layer *pl, const char *entry,
		  struct ovl_layer *out)
{
	struct plugin_layer *x = malloc(sizeof *x);
	char *path = strdup(pl->name ? pl->name : entry);
	free(pl->name); /* ours to free: same libc (ovl_plugins_runnable) */
	if (x == NULL || path == NULL) {
		pl->ops->release(pl->layer);
		free(x);
		free(path);
		return false;
	}
	*x = (struct plugin_layer){ .pl = *pl, .next = ps->layers };
	x->pl.name = NULL;
	ps->layers = x;
	memset(out, 0, sizeof *out);
	out->ops = &plugin_layer_ops;
	out->caps = 0; /* no real fds, no inode numbers to record as origins */
	out->data = x;
	out->path = path;
	out->root_fd = pl->root;
	out->dev = makedev(PLUGIN_DEV_MAJOR + ps->ndevs++, 0);
	return true;
}

static int open_with(struct ovl_plugins *ps, const struct ovl_plugin *p, const struct ovl_plugin_spec *spec,
		     const char *entry, struct ovl_layer *out, char *err, size_t errlen)
{
	struct ovl_plugin_layer got[OVL_PLUGIN_MAX_LAYERS];
	char why[512] = "";
	memset(got, 0, sizeof got);
	int n = p->open_layers(spec->data, spec->path, got, OVL_PLUGIN_MAX_LAYERS, why, sizeof why);
	if (n < 0) {
		snprintf(err, errlen, "%s: lowerdir: plugin %s: %s", entry, p->name, why[0] ? why : "refused");
		return -1;
	}
	int bad = n == 0 || n > OVL_PLUGIN_MAX_LAYERS ? n : -1;
	for (int i = 0; bad < 0 && i < n; i++)
		if (!ops_complete(got[i].ops) || got[i].root < 0)
			bad = i;
	for (int i = 0; bad >= 0 && i < n && i < OVL_PLUGIN_MAX_LAYERS; i++) {
		if (got[i].ops && got[i].ops->release)
			got[i].ops->release(got[i].layer);
		free(got[i].name);
	}
	if (bad >= 0) {
		snprintf(err, errlen, "%s: lowerdir: plugin %s: %s", entry, p->name,
			 n == 0 || n > OVL_PLUGIN_MAX_LAYERS ? "open_layers answered no layers, or too many"
							     : "a layer without its ops or root");
		return -1;
	}
	for (int i = 0; i < n; i++)
		if (!adopt(ps, &got[i], entry, &out[i])) {
			for (int k = i + 1; k < n; k++) {
				got[k].ops->release(got[k].layer);
				free(got[k].name);
			}
			snprintf(err, errlen, "%s: lowerdir: %s", entry, strerror(ENOMEM));
			return -1; /* those adopted go with ps */
		}
	return n;
}

int ovl_plugins_open_layers(struct ovl_plugins *ps, const char *entry, struct ovl_layer *out, char *err,
			    size_t errlen)
{
	struct ovl_plugin_spec spec;
	int res = ovl_plugin_spec_parse(entry, &spec);
	if (res < 0) {
		snprintf(err, errlen, "%s: lowerdir: %s", entry,
			 res == -EINVAL ? "want //NAME/DATA/PATH (PATH absolute)" : strerror(-res));
		return -1;
	}
	const struct ovl_plugin *p = NULL;
	for (size_t i = 0; i < ps->n && p == NULL; i++)
		if (strcmp(ps->v[i].p->name, spec.name) == 0)
			p = ps->v[i].p;
	if (p == NULL)
		snprintf(err, errlen, "%s: lowerdir: no plugin named '%s' (%zu loaded%s%s)", entry, spec.name, ps->n,
			 ps->n ? "" : " from ", ps->n ? "" : ovl_plugins_dir());
	res = p ? open_with(ps, p, &spec, entry, out, err, errlen) : -1;
	ovl_plugin_spec_free(&spec);
	return res;
}

void ovl_plugins_free(struct ovl_plugins *ps)
{
	if (ps == NULL)
		return;
	for (struct plugin_layer *x = ps->layers, *next; x; x = next) {
		next = x->next;
		x->pl.ops->release(x->pl.layer);
		free(x);
	}
	for (size_t i = 0; i < ps->n; i++) {
		dlclose(ps->v[i].dl);
		free(ps->v[i].path);
	}
	free(ps->v);
	free(ps);
}
