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

/* The lower layers: the directories of cfg->lowerdir, or those given. */
static int open_lowers(struct ovl_fs *fs, char **paths, const struct ovl_layer *given, size_t n, char *err,
		       size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t index = (uint32_t)i + fs->has_upper;
		if (given == NULL) {
			if (open_layer(fs, index, paths[i], false, err, errlen) < 0)
				return -1;
			continue;
		}
		fs->layers[index] = given[i];
		fs->layers[index].index = index;
		fs->layers[index].is_upper = false;
	}
	return 0;
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

int ovl_fs_open(struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen)
{
	return ovl_fs_open_with(cfg, NULL, 0, out, err, errlen);
}

int ovl_fs_open_with(struct ovl_config *cfg, const struct ovl_layer *given, size_t ngiven, struct ovl_fs **out,
		     char *err, size_t errlen)
{
	char **lowers = NULL; /* cfg->lowerdir's, without given */
	size_t npaths = 0;
	struct ovl_fs *fs = calloc(1, sizeof *fs);
	if (fs == NULL || (given == NULL && ovl_split_layers(cfg->lowerdir, &lowers, &npaths) < 0)) {
		snprintf(err, errlen, "lowerdir: cannot parse");
		free(fs);
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
	size_t nlowers = given ? ngiven : npaths;
	fs->nlayers = (uint32_t)nlowers + fs->has_upper;
	fs->workdir_fd = fs->work_fd = -1;
	ovl_locks_init(&fs->tree_lock);
	fs->layers = calloc(fs->nlayers, sizeof *fs->layers);
	uint32_t *all = calloc(fs->nlayers, sizeof *all);
	if (fs->layers == NULL || all == NULL)
		goto fail_nomem;
	for (uint32_t i = 0; i < fs->nlayers; i++)
		fs->layers[i].root_fd = -1;
	if ((fs->has_upper && open_layer(fs, 0, cfg->upperdir, true, err, errlen) < 0) ||
	    open_lowers(fs, lowers, given, nlowers, err, errlen) < 0)
		goto fail;
	if (fs->has_upper) {
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
	ovl_free_strv(lowers, npaths);
	*out = fs;
	return 0;
fail_nomem:
	snprintf(err, errlen, "%s", strerror(ENOMEM));
fail:
	free(all);
	ovl_free_strv(lowers, npaths);
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
	fs->work_fd = openat(fs->workdir_fd, "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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
	for (uint32_t i = 0; fs->layers && i < fs->nlayers; i++) {
		struct ovl_layer *l = &fs->layers[i];
		if (l->root_fd >= 0)
			l->ops->close(l, l->root_fd);
		free(fs->layers[i].path);
	}
	if (fs->work_fd >= 0)
		close(fs->work_fd);
	if (fs->workdir_fd >= 0)
		close(fs->workdir_fd);
	free(fs->layers);
	free(fs);
}
