/* The layer stack of one mount: layer roots opened once, the root node, and
 * the scratch directory <workdir>/work. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "../plugins/loader.h"
#include "overlay.h"

static int open_layer(struct ovl_fs *fs, uint32_t index, const char *path, bool upper, char *err, size_t errlen)
{
	struct ovl_layer *l = &fs->layers[index];
	int res = ovl_direct_layer_open(l, path);
	l->index = index;
	l->is_upper = upper;
	if (res < 0)
		snprintf(err, errlen, "%s: %s: %s", path, upper ? "upperdir" : "lowerdir", strerror(-res));
	return res < 0 ? -1 : 0;
}

/* Takes the given lower layers over, in their places below the upper. */
static void place_lowers(struct ovl_fs *fs, const struct ovl_layer *given, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t index = (uint32_t)i + fs->has_upper;
		fs->layers[index] = given[i];
		fs->layers[index].index = index;
		fs->layers[index].is_upper = false;
	}
}

/* Numbers the distinct filesystems; xino needs room for them in st_ino. */
static void assign_fsids(struct ovl_fs *fs)
{
	uint32_t nfs = 0;
	for (uint32_t i = 0; i < fs->nlayers; i++) {
		uint32_t j;
		for (j = 0; j < i && fs->layers[j].dev != fs->layers[i].dev; j++)
			;
		fs->layers[i].fsid = j < i ? fs->layers[j].fsid : nfs++;
	}
	fs->xino_bits = ovl_ino_bits(nfs, fs->cfg->ino32);
}

/* The number a /proc file holds; false if it cannot be read. */
static bool read_proc_number(const char *path, unsigned long *n)
{
	FILE *f = fopen(path, "re");
	bool ok = f && fscanf(f, "%lu", n) == 1;
	if (f)
		fclose(f);
	return ok;
}

/* What an id outside the mappings becomes: the kernel's overflow ids, as in 1.10. */
static void read_overflow_id(const char *path, struct ovl_idmap *m)
{
	unsigned long id;
	if (read_proc_number(path, &id) && id <= UINT32_MAX)
		m->overflow = (uint32_t)id;
}

static long raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	/* With CAP_SYS_RESOURCE (root mounts) the hard limit rises to the
	 * kernel's: the callers of an allow_other mount share our fds. */
	unsigned long nr_open;
	if (read_proc_number("/proc/sys/fs/nr_open", &nr_open) && nr_open > rl.rlim_max) {
		struct rlimit more = { .rlim_cur = nr_open, .rlim_max = nr_open };
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			rl = more;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur > (1 << 20) ? (1 << 20) : (long)rl.rlim_cur;
}

/* Closes l's root handle and frees its path (its layer data is its own). */
static void close_layer(struct ovl_layer *l)
{
	if (l->root_fd >= 0)
		l->ops->close(l, l->root_fd);
	l->root_fd = -1;
	free(l->path);
	l->path = NULL;
}

/* The lower layers of cfg->lowerdir, top first: directories, and the layers
 * of plugin entries //NAME/DATA/PATH (one entry may stand for several). */
struct lowers {
	struct ovl_layer *v;
	size_t n, cap;
	struct ovl_plugins *plugins;
};

static void lowers_close(struct lowers *lw)
{
	for (size_t i = 0; i < lw->n; i++)
		close_layer(&lw->v[i]);
	free(lw->v);
	ovl_plugins_free(lw->plugins);
}

static int lowers_room(struct lowers *lw, size_t more, char *err, size_t errlen)
{
	if (lw->n + more <= lw->cap)
		return 0;
	size_t cap = lw->cap * 2 > lw->n + more ? lw->cap * 2 : lw->n + more;
	struct ovl_layer *v = realloc(lw->v, cap * sizeof *v);
	if (v == NULL) {
		snprintf(err, errlen, "lowerdir: %s", strerror(ENOMEM));
		return -1;
	}
	lw->v = v;
	lw->cap = cap;
	return 0;
}

static int open_lower(struct lowers *lw, const char *entry, char *err, size_t errlen)
{
	if (!ovl_plugin_spec_is(entry)) {
		if (lowers_room(lw, 1, err, errlen) < 0)
			return -1;
		memset(&lw->v[lw->n], 0, sizeof lw->v[lw->n]);
		int res = ovl_direct_layer_open(&lw->v[lw->n], entry);
		if (res < 0) {
			snprintf(err, errlen, "%s: lowerdir: %s", entry, strerror(-res));
			return -1;
		}
		lw->n++;
		return 0;
	}
	/* without -o plugins=, those of the plugin directory, as 1.10 */
	if (lw->plugins == NULL && ovl_plugins_load(NULL, &lw->plugins, err, errlen) < 0)
		return -1;
	if (lowers_room(lw, OVL_PLUGIN_MAX_LAYERS, err, errlen) < 0)
		return -1;
	int n = ovl_plugins_open_layers(lw->plugins, entry, &lw->v[lw->n], err, errlen);
	lw->n += n > 0 ? (size_t)n : 0;
	return n < 0 ? -1 : 0;
}

static int open_lower_list(const struct ovl_config *cfg, struct lowers *lw, char *err, size_t errlen)
{
	char **paths;
	size_t npaths;
	if (ovl_split_layers(cfg->lowerdir, &paths, &npaths) < 0) {
		snprintf(err, errlen, "lowerdir: cannot parse");
		return -1;
	}
	int res = 0;
	if (cfg->plugins && cfg->plugins[0])
		res = ovl_plugins_load(cfg->plugins, &lw->plugins, err, errlen);
	for (size_t i = 0; res == 0 && i < npaths; i++)
		res = open_lower(lw, paths[i], err, errlen);
	ovl_free_strv(paths, npaths);
	return res;
}

int ovl_fs_open(struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen)
{
	struct lowers lw = { 0 };
	raise_nofile(); /* before the lowers: each may hold fds (an oci layer its blob) */
	if (open_lower_list(cfg, &lw, err, errlen) < 0) {
		lowers_close(&lw);
		return -1;
	}
	int res = ovl_fs_open_with(cfg, lw.v, lw.n, out, err, errlen);
	free(lw.v); /* the layers are the mount's now */
	if (res < 0)
		ovl_plugins_free(lw.plugins);
	else
		(*out)->plugins = lw.plugins;
	return res;
}

int ovl_fs_open_with(struct ovl_config *cfg, const struct ovl_layer *given, size_t ngiven, struct ovl_fs **out,
		     char *err, size_t errlen)
{
	struct ovl_fs *fs = calloc(1, sizeof *fs);
	uint32_t *all = NULL;
	if (fs == NULL || (fs->layers = calloc(ngiven + 1, sizeof *fs->layers)) == NULL) {
		free(fs);
		for (size_t i = 0; i < ngiven; i++) {
			struct ovl_layer l = given[i];
			close_layer(&l);
		}
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		return -1;
	}
	ovl_direct_probe_syscalls();
	ovl_log(OVL_DEBUG, "openat2: %s; *xattrat: %s; fchmodat2: %s", ovl_direct_has_openat2() ? "in use" : "fallback",
		ovl_direct_has_xattrat() ? "in use" : "fallback", ovl_direct_has_fchmodat2() ? "in use" : "fallback");
	fs->cfg = cfg;
	ovl_aliases_init(fs);
	ovl_copy_up_init(fs);
	ovl_notify_init(fs);
	ovl_workers_init(fs);
	ovl_prefetch_init(fs);
	read_overflow_id("/proc/sys/kernel/overflowuid", &cfg->uidmap);
	read_overflow_id("/proc/sys/kernel/overflowgid", &cfg->gidmap);
	fs->timeout = cfg->timeout;
	fs->has_upper = cfg->upperdir != NULL;
	fs->nlayers = (uint32_t)ngiven + fs->has_upper;
	fs->workdir_fd = fs->work_fd = -1;
	ovl_locks_init(&fs->tree_lock);
	fs->layers[0].root_fd = -1;
	place_lowers(fs, given, ngiven); /* first: from here on ovl_fs_close closes them */
	all = calloc(fs->nlayers, sizeof *all);
	if (all == NULL)
		goto fail_nomem;
	if (fs->has_upper && open_layer(fs, 0, cfg->upperdir, true, err, errlen) < 0)
		goto fail;
	if (fs->has_upper) {
		/* layering-ok: the workdir's root, opened once as the layers' roots are */
		fs->workdir_fd = open(cfg->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fs->workdir_fd < 0) {
			snprintf(err, errlen, "%s: workdir: %s", cfg->workdir, strerror(errno));
			goto fail;
		}
	}
	assign_fsids(fs);
	pthread_mutex_init(&fs->override_lock, NULL);
	if (ovl_override_setup(fs, err, errlen) < 0)
		goto fail;

	long nofile = raise_nofile();
	fs->dir_fd_budget = (nofile - (long)fs->nlayers) / 2;
	if (fs->dir_fd_budget < 16)
		fs->dir_fd_budget = 16;
	/* what open files may hold: the rest, less a reserve for the work of
	 * lookups, listings and copy-ups (a caller opening files by the
	 * thousand must not stop them for everyone) */
	long reserve = nofile / 16 < 64 ? nofile / 16 : 64;
	fs->file_fd_budget = nofile - (long)fs->nlayers - fs->dir_fd_budget - reserve;
	if (fs->file_fd_budget < 8)
		fs->file_fd_budget = 8;

	struct stat st;
	struct ovl_layer *top = &fs->layers[0];
	if (top->ops->statat(top, top->root_fd, NULL, &st) < 0) {
		snprintf(err, errlen, "%s: %s", fs->layers[0].path, strerror(errno));
		goto fail;
	}
	for (uint32_t i = 0; i < fs->nlayers; i++)
		all[i] = i;
	fs->nodes = ovl_nodes_new();
	if (fs->nodes == NULL)
		goto fail_nomem;
	fs->root = ovl_node_new_root(fs, &st, all, fs->nlayers);
	if (fs->root == NULL)
		goto fail_nomem;
	ovl_node_load_override(fs, fs->root, fs->layers[0].root_fd, NULL, &st);
	free(all);
	*out = fs;
	return 0;
fail_nomem:
	snprintf(err, errlen, "%s", strerror(ENOMEM));
fail:
	free(all);
	ovl_fs_close(fs);
	return -1;
}

int ovl_fs_prepare_workdir(struct ovl_fs *fs, char *err, size_t errlen)
{
	if (!fs->has_upper)
		return 0;
	int res = ovl_upper_mkdir(&fs->layers[0], fs->workdir_fd, "work", 0700);
	if (res < 0 && res != -EEXIST) {
		snprintf(err, errlen, "%s/work: workdir: %s", fs->cfg->workdir, strerror(-res));
		return -1;
	}
	fs->work_fd = ovl_layer_open(fs, &fs->layers[0], fs->workdir_fd, "work", O_RDONLY | O_DIRECTORY);
	res = fs->work_fd < 0 ? -errno : ovl_work_empty_dir(fs, fs->work_fd);
	if (res < 0) {
		snprintf(err, errlen, "%s/work: workdir: cannot empty: %s", fs->cfg->workdir, strerror(-res));
		return -1;
	}
	ovl_whiteout_setup(fs);
	ovl_copy_up_setup(fs);
	ovl_creds_setup(fs);
	return 0;
}

void ovl_fs_unmounted(struct ovl_fs *fs)
{
	if (fs->plugins == NULL)
		return; /* the rest goes with the process */
	ovl_prefetch_stop(fs);
	ovl_workers_stop(fs);
	for (uint32_t i = 0; i < fs->nlayers; i++)
		close_layer(&fs->layers[i]);
	ovl_plugins_free(fs->plugins);
	fs->plugins = NULL;
}

void ovl_fs_close(struct ovl_fs *fs)
{
	if (fs == NULL)
		return;
	/* the threads of the mount end before what they use goes */
	ovl_prefetch_stop(fs);
	ovl_workers_stop(fs);
	ovl_notify_drain(fs);
	ovl_nodes_free(fs);
	ovl_aliases_free(fs);
	for (uint32_t i = 0; fs->layers && i < fs->nlayers; i++)
		close_layer(&fs->layers[i]);
	ovl_plugins_free(fs->plugins); /* after their roots: releases plugin layers */
	if (fs->work_fd >= 0)
		close(fs->work_fd);
	if (fs->workdir_fd >= 0)
		close(fs->workdir_fd);
	free(fs->layers);
	free(fs);
}
