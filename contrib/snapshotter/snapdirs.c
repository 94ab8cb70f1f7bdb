/* The directories under ROOT, as containerd's Go fuse-overlayfs snapshotter
 * lays them out (ROOT/snapshots/ID/{fs,work}), the mounts handed back for
 * them, and, in self-mount mode, ROOT/snapshots/ID/merged mounted by us.
 * Snapshot trees hold image content: they are walked and removed through
 * directory fds, never following a symlink nor crossing a mount. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "shim.h"

#define ID_LEN 24
/* ROOT/empty: the lower of an id-mapped active snapshot without parents */
#define EMPTY_DIR "empty"

static void id_name(int64_t id, char *buf)
{
	snprintf(buf, ID_LEN, "%" PRId64, id);
}

static int sys_fail(struct status *st, int err, const char *what, const char *path)
{
	status_set(st, status_code_of_errno(err), "%s %s: %s", what, path, strerror(err));
	return -1;
}

int make_dirs(const char *path, mode_t mode, bool with_last)
{
	char *p = strdup(path);
	if (!p)
		return -1;
	for (char *slash = strchr(p + 1, '/');; slash = strchr(slash + 1, '/')) {
		if (slash)
			*slash = '\0';
		if ((slash || with_last) && mkdir(p, mode) < 0 && errno != EEXIST) {
			int err = errno;
			free(p);
			errno = err;
			return -1;
		}
		if (!slash)
			break;
		*slash = '/';
	}
	free(p);
	return 0;
}

int snapdirs_open(struct shim *sh, struct status *st)
{
	/* As the Go shim: ROOT and ROOT/snapshots are private to root. */
	if (make_dirs(sh->root, 0700, true) < 0)
		return sys_fail(st, errno, "cannot create", sh->root);
	char *real = realpath(sh->root, NULL);
	if (!real)
		return sys_fail(st, errno, "cannot resolve", sh->root);
	free(sh->root);
	sh->root = real;
	sh->root_fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sh->root_fd < 0)
		return sys_fail(st, errno, "cannot open", real);
	if (mkdirat(sh->root_fd, "snapshots", 0700) < 0 && errno != EEXIST)
		return sys_fail(st, errno, "cannot create snapshots in", real);
	if (mkdirat(sh->root_fd, EMPTY_DIR, 0755) < 0 && errno != EEXIST)
		return sys_fail(st, errno, "cannot create " EMPTY_DIR " in", real);
	sh->snapshots_fd = openat(sh->root_fd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sh->snapshots_fd < 0)
		return sys_fail(st, errno, "cannot open snapshots in", real);
	return 0;
}

/* ---- walking and removing trees through fds ---- */

/* Removes NAME under DIRFD and everything below it, never leaving DEV. */
static int remove_tree_at(int parent_fd, const char *name, dev_t dev)
{
	if (unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat sb;
	if (fstat(fd, &sb) < 0 || sb.st_dev != dev) {
		close(fd);
		return -EBUSY; /* a mount: never reach through it */
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int ret = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int r = remove_tree_at(dirfd(d), de->d_name, dev);
		if (r < 0 && !ret)
			ret = r;
	}
	closedir(d);
	if (ret == 0 && unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		ret = -errno;
	return ret;
}

static int remove_snapshot_dir(struct shim *sh, const char *name)
{
	struct stat sb;
	if (fstat(sh->snapshots_fd, &sb) < 0)
		return -errno;
	int r = remove_tree_at(sh->snapshots_fd, name, sb.st_dev);
	if (r < 0)
		shim_log("cannot remove %s/snapshots/%s: %s", sh->root, name, strerror(-r));
	return r;
}

struct inode_key {
	dev_t dev;
	ino_t ino;
};

static int inode_cmp(const void *a, const void *b)
{
	const struct inode_key *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

struct usage {
	void *seen;
	int64_t size, inodes;
	int err;
};

/* containerd's DiskUsage: blocks of each distinct inode, and their number. */
static void usage_at(int parent_fd, const char *name, struct usage *u)
{
	struct stat sb;
	if (fstatat(parent_fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		u->err = errno;
		return;
	}
	struct inode_key *k = malloc(sizeof(*k));
	if (!k) {
		u->err = ENOMEM;
		return;
	}
	k->dev = sb.st_dev;
	k->ino = sb.st_ino;
	struct inode_key **found = tsearch(k, &u->seen, inode_cmp);
	if (!found) {
		free(k);
		u->err = ENOMEM;
		return;
	}
	if (*found == k) {
		u->inodes++;
		u->size += (int64_t)sb.st_blocks * 512;
	} else {
		free(k);
	}
	if (!S_ISDIR(sb.st_mode))
		return;
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		u->err = errno;
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) && !u->err)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			usage_at(dirfd(d), de->d_name, u);
	closedir(d);
}

int snapdirs_usage(struct shim *sh, int64_t id, int64_t *size, int64_t *inodes, struct status *st)
{
	char path[ID_LEN + 8];
	snprintf(path, sizeof(path), "%" PRId64 "/fs", id);
	struct usage u = { 0 };
	usage_at(sh->snapshots_fd, path, &u);
	tdestroy(u.seen, free);
	if (u.err)
		return sys_fail(st, u.err, "cannot measure the usage of", path);
	*size = u.size;
	*inodes = u.inodes;
	return 0;
}

/* ---- creating and removing snapshot directories ---- */

int snapdirs_prepare(struct shim *sh, enum snap_kind kind, int64_t parent_id, char *tmpname, size_t len,
		     struct status *st)
{
	char *path;
	if (asprintf(&path, "%s/snapshots/new-XXXXXX", sh->root) < 0) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	if (!mkdtemp(path)) {
		sys_fail(st, errno, "cannot create a directory in", sh->root);
		free(path);
		return -1;
	}
	snprintf(tmpname, len, "%s", strrchr(path, '/') + 1);
	free(path);
	int fd = openat(sh->snapshots_fd, tmpname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		goto fail;
	/* the modes of the Go shim, whatever the umask */
	if (mkdirat(fd, "fs", 0755) < 0 || fchmodat(fd, "fs", 0755, 0) < 0)
		goto fail;
	if (kind == KIND_ACTIVE && (mkdirat(fd, "work", 0711) < 0 || fchmodat(fd, "work", 0711, 0) < 0))
		goto fail;
	if (sh->mode == MOUNT_SELF && mkdirat(fd, "merged", 0755) < 0)
		goto fail;
	if (parent_id) {
		/* The new upper belongs to whoever owns the parent's, as in the Go shim. */
		char parent[ID_LEN + 8];
		struct stat sb;
		snprintf(parent, sizeof(parent), "%" PRId64 "/fs", parent_id);
		if (fstatat(sh->snapshots_fd, parent, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchownat(fd, "fs", sb.st_uid, sb.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
			goto fail;
	}
	close(fd);
	return 0;
fail:
	sys_fail(st, errno, "cannot prepare snapshot directory", tmpname);
	if (fd >= 0)
		close(fd);
	remove_snapshot_dir(sh, tmpname);
	return -1;
}

int snapdirs_install(struct shim *sh, const char *tmpname, int64_t id, struct status *st)
{
	char name[ID_LEN];
	id_name(id, name);
	for (int attempt = 0;; attempt++) {
		if (renameat2(sh->snapshots_fd, tmpname, sh->snapshots_fd, name, RENAME_NOREPLACE) == 0)
			return 0;
		/* A directory without metadata, left by a crash before its commit. */
		if ((errno == EEXIST || errno == ENOTEMPTY) && attempt == 0 && remove_snapshot_dir(sh, name) == 0)
			continue;
		return sys_fail(st, errno, "cannot install snapshot directory", name);
	}
}

void snapdirs_discard(struct shim *sh, const char *name)
{
	remove_snapshot_dir(sh, name);
}

int snapdirs_remove(struct shim *sh, int64_t id)
{
	char name[ID_LEN];
	id_name(id, name);
	return remove_snapshot_dir(sh, name);
}

int snapdirs_cleanup(struct shim *sh, struct status *st)
{
	int fd = openat(sh->snapshots_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return sys_fail(st, errno, "cannot list", "snapshots");
	}
	struct dirent *de;
	int ret = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *end;
		errno = 0;
		long long id = strtoll(de->d_name, &end, 10);
		bool owned = false;
		if (!*end && !errno && id > 0 && store_has_id(sh->store, id, &owned, st) < 0) {
			ret = -1;
			break;
		}
		if (owned)
			continue;
		if (!*end && id > 0)
			snapdirs_self_unmount(sh, id, st);
		remove_snapshot_dir(sh, de->d_name);
	}
	closedir(d);
	return ret;
}

/* ---- the mounts handed back ---- */

void mount_specs_free(struct mount_spec *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].type);
		free(m[i].source);
		for (size_t j = 0; j < m[i].n_options; j++)
			free(m[i].options[j]);
		free(m[i].options);
	}
	free(m);
}

static int add_option(struct mount_spec *m, char *opt)
{
	char **p = opt ? realloc(m->options, (m->n_options + 1) * sizeof(char *)) : NULL;
	if (!p) {
		free(opt);
		return -1;
	}
	m->options = p;
	m->options[m->n_options++] = opt;
	return 0;
}

static char *printed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *printed(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

static char *snapshot_path(const struct shim *sh, int64_t id, const char *leaf)
{
	return printed("%s/snapshots/%" PRId64 "/%s", sh->root, id, leaf);
}

/* The lowers of the overlay, nearest first.  A snapshot with no parent has
 * an overlay only for an id mapping (a bind mount cannot map owners): a
 * view shows its own fs, an active snapshot writes over the empty dir. */
static int lower_option(const struct shim *sh, const struct snap_info *info, const int64_t *parents,
			size_t n_parents, struct mount_spec *m)
{
	char *lower = NULL;
	size_t size;
	FILE *f = open_memstream(&lower, &size);
	if (!f)
		return -1;
	fputs("lowerdir=", f);
	if (n_parents == 0 && info->kind == KIND_ACTIVE)
		fprintf(f, "%s/%s", sh->root, EMPTY_DIR);
	else if (n_parents == 0)
		fprintf(f, "%s/snapshots/%" PRId64 "/fs", sh->root, info->id);
	for (size_t i = 0; i < n_parents; i++)
		fprintf(f, "%s%s/snapshots/%" PRId64 "/fs", i ? ":" : "", sh->root, parents[i]);
	if (fclose(f) != 0)
		return -1;
	return add_option(m, lower);
}

/* The options of the overlay: upper and work for an active snapshot, the
 * lowers, and the id mappings of the labels. */
static int overlay_options(const struct shim *sh, const struct snap_info *info, const int64_t *parents,
			   size_t n_parents, struct mount_spec *m)
{
	if (info->kind == KIND_ACTIVE &&
	    (add_option(m, printed("workdir=%s/snapshots/%" PRId64 "/work", sh->root, info->id)) < 0 ||
	     add_option(m, printed("upperdir=%s/snapshots/%" PRId64 "/fs", sh->root, info->id)) < 0))
		return -1;
	if (lower_option(sh, info, parents, n_parents, m) < 0)
		return -1;
	const char *uid = labels_get(&info->labels, LABEL_UIDMAPPING);
	const char *gid = labels_get(&info->labels, LABEL_GIDMAPPING);
	if (uid && add_option(m, idmap_option("uidmapping", uid)) < 0)
		return -1;
	if (gid && add_option(m, idmap_option("gidmapping", gid)) < 0)
		return -1;
	return 0;
}

/* An active or view snapshot needs an overlay over several layers, and
 * for an id mapping (committed ones are never mounted). */
static bool needs_overlay(const struct snap_info *info, size_t n_parents)
{
	if (info->kind != KIND_ACTIVE && info->kind != KIND_VIEW)
		return false;
	return idmap_labelled(&info->labels) || (info->kind == KIND_ACTIVE && n_parents > 0) || n_parents > 1;
}

bool snapdirs_needs_self_mount(const struct shim *sh, const struct snap_info *info, size_t n_parents)
{
	return sh->mode == MOUNT_SELF && needs_overlay(info, n_parents);
}

int snapdirs_mounts(struct shim *sh, const struct snap_info *info, const int64_t *parents, size_t n_parents,
		    struct mount_spec **out, size_t *n_out, struct status *st)
{
	struct mount_spec *m = calloc(1, sizeof(*m));
	if (!m)
		goto oom;
	*out = m;
	*n_out = 1;
	const char *access = info->kind == KIND_VIEW ? "ro" : "rw";
	int64_t bind_of = 0;
	const char *leaf = "fs";
	if (snapdirs_needs_self_mount(sh, info, n_parents))
		bind_of = info->id, leaf = "merged";
	else if (!needs_overlay(info, n_parents))
		bind_of = n_parents ? parents[0] : info->id;
	if (bind_of) {
		m->type = strdup("bind");
		m->source = snapshot_path(sh, bind_of, leaf);
		if (!m->type || !m->source || add_option(m, strdup(access)) < 0 ||
		    add_option(m, strdup("rbind")) < 0)
			goto oom;
		return 0;
	}
	m->type = strdup("fuse3.fuse-overlayfs");
	m->source = strdup("overlay");
	if (!m->type || !m->source || overlay_options(sh, info, parents, n_parents, m) < 0)
		goto oom;
	return 0;
oom:
	mount_specs_free(*out, *n_out);
	*out = NULL;
	*n_out = 0;
	status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	return -1;
}

/* ---- self-mount mode ---- */

/* 1: something is mounted on ID/merged (a dead FUSE mount included), 0: not, -errno. */
static int merged_state(struct shim *sh, int64_t id)
{
	char dir[ID_LEN], merged[ID_LEN + 8];
	id_name(id, dir);
	snprintf(merged, sizeof(merged), "%s/merged", dir);
	struct stat top, below;
	if (fstatat(sh->snapshots_fd, dir, &below, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (fstatat(sh->snapshots_fd, merged, &top, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOTCONN ? 1 : -errno;
	return top.st_dev != below.st_dev;
}

int snapdirs_self_unmount(struct shim *sh, int64_t id, struct status *st)
{
	if (merged_state(sh, id) != 1)
		return 0;
	char *path = snapshot_path(sh, id, "merged");
	if (!path)
		return 0;
	int ret = 0;
	char err[256];
	if (unmount_path(path, err, sizeof(err)) != 0) {
		status_set(st, GRPC_UNKNOWN, "cannot unmount %s: %s", path, err);
		ret = -1;
	}
	free(path);
	return ret;
}

int snapdirs_self_mount(struct shim *sh, const struct snap_info *info, const int64_t *parents,
			size_t n_parents, struct status *st)
{
	int state = merged_state(sh, info->id);
	if (state == 1) {
		/* Already live?  A mount whose daemon died answers ENOTCONN: replace it.
		 * (stat may still be answered from the kernel's cache; statfs is not.) */
		char *path = snapshot_path(sh, info->id, "merged");
		struct statfs sf;
		bool live = path && statfs(path, &sf) == 0;
		free(path);
		if (live)
			return 0;
		if (snapdirs_self_unmount(sh, info->id, st) < 0)
			return -1;
	} else if (state == -ENOENT) {
		char merged[ID_LEN + 8];
		snprintf(merged, sizeof(merged), "%" PRId64 "/merged", info->id);
		if (mkdirat(sh->snapshots_fd, merged, 0755) < 0 && errno != EEXIST)
			return sys_fail(st, errno, "cannot create", merged);
	}
	struct mount_spec *m = calloc(1, sizeof(*m));
	char *target = snapshot_path(sh, info->id, "merged");
	char **argv = NULL;
	int ret = -1;
	if (!m || !target || overlay_options(sh, info, parents, n_parents, m) < 0 ||
	    !(argv = calloc(2 * m->n_options + 3, sizeof(char *)))) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	/* fuse-overlayfs -o OPT -o OPT ... TARGET */
	size_t a = 0;
	argv[a++] = (char *)sh->fuse_overlayfs;
	for (size_t i = 0; i < m->n_options; i++) {
		argv[a++] = "-o";
		argv[a++] = m->options[i];
	}
	argv[a++] = target;
	char err[512];
	if (run_program(argv, err, sizeof(err)) != 0) {
		status_set(st, GRPC_UNKNOWN, "cannot mount %s: %s", target, err);
		goto out;
	}
	ret = 0;
out:
	if (m)
		mount_specs_free(m, 1);
	free(argv);
	free(target);
	return ret;
}

struct recover_arg {
	struct shim *sh;
	struct status *st;
	int failures;
};

static int recover_one(struct snap_info *info, void *arg)
{
	struct recover_arg *ra = arg;
	struct status st;
	int64_t *parents;
	size_t n;
	if (store_parent_ids(ra->sh->store, info->id, &parents, &n, &st) < 0) {
		ra->failures++;
		return 0;
	}
	int r;
	if (snapdirs_needs_self_mount(ra->sh, info, n))
		r = snapdirs_self_mount(ra->sh, info, parents, n, &st);
	else
		r = snapdirs_self_unmount(ra->sh, info->id, &st);
	if (r < 0) {
		shim_log("snapshot %s: %s", info->name, st.message);
		ra->failures++;
	}
	free(parents);
	return 0;
}

int snapdirs_self_recover(struct shim *sh, struct status *st)
{
	struct recover_arg ra = { sh, st, 0 };
	if (store_begin(sh->store, false, st) < 0)
		return -1;
	int r = store_walk(sh->store, recover_one, &ra, st);
	store_rollback(sh->store);
	if (r < 0)
		return -1;
	if (ra.failures)
		shim_log("%d snapshot mounts could not be restored", ra.failures);
	return 0;
}
