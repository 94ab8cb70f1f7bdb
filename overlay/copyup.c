/* Copy-up (DESIGN.md §3): an object of a lower layer is rebuilt in
 * <workdir>/work under a temporary name (data by FICLONE, else by
 * copy_file_range keeping holes, or by the layer's read op where its handles
 * are no fds; xattrs through the layers' ops, owner, mode, times last), made
 * crash-safe (make_data_crash_safe), then renamed into the upper layer.  A
 * crash leaves the old state or the new one.  Parents are copied up first,
 * top-down.  The data is copied with no namespace lock held; only the rename
 * takes its directory's lock (locks.c). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../fuse/transport.h"
#include "../layers/upper.h"
#include "ops.h"

/* ---- building the copy in work ---- */
/* By the layer's read op: for layers without fds, and where no fd call copies. */
static int copy_range_rw(struct ovl_layer *lower, int src, int dst, off_t in, off_t end)
{
	char buf[1 << 16];
	while (in < end) {
		size_t want = (size_t)(end - in) < sizeof buf ? (size_t)(end - in) : sizeof buf;
		ssize_t n = lower->ops->read(lower, src, buf, want, in);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(dst, buf + done, (size_t)(n - done), in + done);
			if (w < 0)
				return -errno;
			done += w;
		}
		in += n;
	}
	return 0;
}

/* Copies the data of src (stat *st, from layer lower) to dst in upper's
 * work, leaving holes where it has them. */
static int copy_data(struct ovl_layer *upper, struct ovl_layer *lower, int src, int dst, const struct stat *st)
{
	off_t size = st->st_size;
	if (size == 0)
		return 0;
	if (!(lower->caps & OVL_LAYER_REAL_FDS))
		return copy_range_rw(lower, src, dst, 0, size);
	/* a filesystem that cannot clone says so every time: ask once a layer */
	if (!atomic_load_explicit(&lower->no_clone, memory_order_relaxed)) {
		if (ioctl(dst, FICLONE, src) == 0)
			return 0;
		if (errno == EOPNOTSUPP || errno == EXDEV || errno == ENOTTY)
			atomic_store_explicit(&lower->no_clone, true, memory_order_relaxed);
	}
	/* as many blocks as bytes: no hole worth looking for */
	bool dense = (off_t)st->st_blocks * 512 >= size;
	off_t pos = 0;
	while (pos < size) {
		off_t data = dense ? pos : lseek(src, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break; /* a hole to the end */
		if (data < 0)
			data = pos; /* no SEEK_DATA here: copy it all */
		off_t hole = dense ? size : lseek(src, data, SEEK_HOLE);
		if (hole < 0 || hole > size)
			hole = size;
		off_t in = data, out = data;
		while (in < hole) {
			ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(hole - in), 0);
			if (n < 0) {
				if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
					return -errno;
				int res = copy_range_rw(lower, src, dst, in, hole);
				if (res < 0)
					return res;
				break;
			}
			if (n == 0)
				break;
		}
		pos = hole;
	}
	/* only a trailing hole is left to make (a truncate to the same size
	 * would still cost ext4 a journalled truncate) */
	return pos < size ? ovl_upper_truncate(upper, dst, NULL, size) : 0;
}

/* Gives the copy (fd, or name in dirfd) the owner of the original.  Under
 * squash_* an owner the upper cannot take (an id this user namespace does
 * not map: `unshare -U -r`) is no error and the copy stays ours, as 1.10;
 * without squash it is the kernel overlay's EOVERFLOW. */
static int copy_owner(struct ovl_fs *fs, int fd, const char *name, const struct stat *st)
{
	int res = ovl_upper_chown(&fs->layers[0], fd, name, st->st_uid, st->st_gid);
	if (res == 0 || ovl_squashing(fs->cfg))
		return 0;
	/* an owner this namespace cannot write: the kernel overlay's answer */
	return res == -EINVAL ? -EOVERFLOW : res;
}

/* Copies the xattrs of h/name (name NULL: h) of lower to dst/dst_name of the
 * upper (NULL: dst), through their ops, but our internal ones.  As libattr's
 * attr_copy_*: an xattr the upper does not take (ENOTSUP) is left out. */
static int copy_xattrs(struct ovl_fs *fs, struct ovl_layer *lower, int h, const char *name, int dst,
		       const char *dst_name)
{
	struct ovl_layer *upper = &fs->layers[0];
	char small_list[1024], small_value[4096], *list, *value, *big_list = NULL, *big_value = NULL;
	/* most files have none: one call learns it */
	ssize_t len = ovl_layer_xattr(lower, h, name, NULL, small_list, sizeof small_list, &big_list, &list);
	int res = len < 0 && errno != ENOTSUP && errno != ENOSYS ? -errno : 0;
	for (ssize_t off = 0; off < len && res == 0; off += (ssize_t)strlen(list + off) + 1) {
		const char *x = list + off;
		if (x[0] == '\0' || ovl_xattr_is_internal(x))
			continue;
		ssize_t vlen = ovl_layer_xattr(lower, h, name, x, small_value, sizeof small_value, &big_value, &value);
		res = vlen < 0 ? -errno : ovl_upper_setxattr(upper, dst, dst_name, x, value, (size_t)vlen, 0);
		if (res == -ENOTSUP)
			res = 0;
	}
	free(big_list);
	free(big_value);
	return res;
}

/* A crash must not leave an empty or zeroed upper file hiding intact lower
 * data: the kernel overlay fsyncs every data copy-up before its rename.  On
 * ext4 with data=ordered the journal commits in order, and a commit first
 * writes the data of the blocks it allocates.  Once the copy's writeback has
 * completed, its allocation (and, with dioread_nolock, the conversion of its
 * unwritten extents, done before the pages leave writeback) belongs to a
 * transaction no later than the rename's: a crash shows the rename only with
 * the data.  ext4's auto_da_alloc relies on the same for renames over files.
 * That is the kernel's crash guarantee without a journal commit per file. */
static int make_data_crash_safe(struct ovl_fs *fs, int dst)
{
	switch (fs->copy_sync) {
	case OVL_COPY_SYNC_ORDERED:
		return ovl_upper_writeback(&fs->layers[0], dst);
	case OVL_COPY_SYNC_NONE:
		return 0; /* fsync=0, volatile */
	default:
		return ovl_upper_fsync(&fs->layers[0], dst, false);
	}
}

/* Whether the filesystem of fd is ext4 journalling with data=ordered (or
 * data=journal): its options are in /proc/fs/ext4/<block device name>. */
static bool commits_data_before_metadata(int fd, char *dev, size_t devlen)
{
	struct statfs sfs;
	struct stat st;
	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != EXT4_SUPER_MAGIC || fstat(fd, &st) < 0)
		return false;
	char path[PATH_MAX], target[PATH_MAX];
	snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	/* layering-ok: /sys, where the upper's block device is named, no layer */
	ssize_t len = readlink(path, target, sizeof target - 1);
	if (len <= 0)
		return false;
	target[len] = '\0';
	const char *slash = strrchr(target, '/');
	snprintf(dev, devlen, "%.*s", NAME_MAX, slash ? slash + 1 : target);
	snprintf(path, sizeof path, "/proc/fs/ext4/%s/options", dev);
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return false;
	bool ordered = false;
	char line[128];
	while (fgets(line, sizeof line, f))
		if (strcmp(line, "data=ordered\n") == 0 || strcmp(line, "data=journal\n") == 0)
			ordered = true;
	fclose(f);
	return ordered;
}

void ovl_copy_up_setup(struct ovl_fs *fs)
{
	char dev[NAME_MAX + 1];
	if (!fs->cfg->fsync) {
		fs->copy_sync = OVL_COPY_SYNC_NONE;
		ovl_log(OVL_DEBUG, "copy-up data made crash-safe by: nothing (fsync=0 or volatile)");
	} else if (commits_data_before_metadata(fs->work_fd, dev, sizeof dev)) {
		fs->copy_sync = OVL_COPY_SYNC_ORDERED;
		ovl_log(OVL_DEBUG, "copy-up data made crash-safe by: writeback before the rename (ext4 data=ordered on %s)",
			dev);
	} else {
		fs->copy_sync = OVL_COPY_SYNC_FSYNC;
		ovl_log(OVL_DEBUG, "copy-up data made crash-safe by: fsync");
	}
}

/* Builds in work/tmp a copy of the object `name` below the lower directory
 * fd pfd; *st gets its lower stat, *copy the copy's. */
static int build_copy(struct ovl_fs *fs, struct ovl_layer *lower, int pfd, const char *name, const char *tmp,
		      bool with_data, struct stat *st, struct stat *copy)
{
	struct ovl_layer *upper = &fs->layers[0];
	int src = -1, dst = -1, res = 0;
	int wfd = fs->work_fd;
	if (lower->ops->statat(lower, pfd, name, st) < 0)
		return -errno;
	mode_t type = st->st_mode & S_IFMT;
	const struct timespec times[2] = { st->st_atim, st->st_mtim };
	if (S_ISREG(type)) {
		src = ovl_layer_open(fs, lower, pfd, name, O_RDONLY | O_NONBLOCK);
		dst = src < 0 ? -errno : ovl_upper_create(upper, wfd, tmp, O_WRONLY, 0600);
		if (dst < 0)
			res = dst;
		else if (with_data)
			res = copy_data(upper, lower, src, dst, st);
	} else if (S_ISLNK(type)) {
		char target[PATH_MAX + 1];
		ssize_t len = lower->ops->readlinkat(lower, pfd, name, target, sizeof target - 1);
		if (len < 0)
			return -errno;
		target[len] = '\0';
		if ((res = ovl_upper_symlink(upper, wfd, tmp, target)) < 0)
			return res;
	} else if ((res = ovl_upper_mknod(upper, wfd, tmp, type | 0600, st->st_rdev)) < 0) {
		return res; /* fifo, socket, device: recreated as what they are */
	}
	/* the copy by its fd where it has one, else by its name in work */
	int cfd = dst >= 0 ? dst : wfd;
	const char *cname = dst >= 0 ? NULL : tmp;
	if (res == 0)
		res = copy_owner(fs, cfd, cname, st);
	if (res == 0)
		res = src >= 0 && dst >= 0 ? copy_xattrs(fs, lower, src, NULL, dst, NULL)
					   : copy_xattrs(fs, lower, pfd, name, wfd, tmp);
	/* not for a lower hard link: the copy is a new inode (kernel, index=off) */
	if (res == 0 && st->st_nlink == 1)
		res = ovl_origin_set(fs, cfd, cname, lower, st);
	if (res == 0 && !S_ISLNK(type))
		res = ovl_upper_chmod(upper, cfd, cname, st->st_mode & 07777);
	if (res == 0)
		res = ovl_upper_utimens(upper, cfd, cname, times);
	if (res == 0 && dst >= 0 && with_data && st->st_size > 0)
		res = make_data_crash_safe(fs, dst);
	if (res == 0 && (dst >= 0 ? fstat(dst, copy) : fstatat(wfd, tmp, copy, AT_SYMLINK_NOFOLLOW)) < 0)
		res = -errno;
	if (src >= 0)
		lower->ops->close(lower, src);
	if (dst >= 0)
		close(dst);
	if (res < 0)
		ovl_work_remove(fs, tmp);
	return res;
}

/* The copy of node's object, dirfd/name (name NULL: dirfd), keeps the owner
 * and mode the node shows from its layer's stat override, under the upper
 * layer's name for it. */
static int carry_override(struct ovl_fs *fs, struct ovl_node *node, int dirfd, const char *name)
{
	struct ovl_override o;
	if (fs->layers[0].override_kind == OVL_OVERRIDE_NONE || !ovl_node_get_override(fs, node, &o))
		return 0;
	return ovl_override_write(fs, dirfd, name, &o);
}

/* Puts work/tmp at upfd/name.  A copy-up is no change the user made: the
 * parent keeps its times, as on the kernel overlay. */
static int rename_into_upper(struct ovl_fs *fs, const char *tmp, int upfd, const char *name)
{
	struct stat pst;
	if (fstat(upfd, &pst) < 0)
		return -errno;
	int res = ovl_rename(fs, fs->work_fd, tmp, upfd, name, RENAME_NOREPLACE);
	if (res < 0)
		return res;
	const struct timespec times[2] = { pst.st_atim, pst.st_mtim };
	ovl_upper_utimens(&fs->layers[0], upfd, NULL, times);
	return 0;
}

/* ---- directories (its parent's lock and its own written: locks.c) ---- */
static int copy_up_one_dir(struct ovl_fs *fs, struct ovl_node *d)
{
	struct ovl_node *parent = d->parent;
	char tmp[OVL_TEMPNAME_MAX];
	struct stat st, ust;
	int src = ovl_dir_fd_get(fs, d, 0);
	if (src < 0)
		return src;
	int upfd = ovl_dir_fd_get(fs, parent, 0);
	if (upfd < 0) {
		ovl_dir_fd_put(d);
		return upfd;
	}
	struct ovl_layer *upper = &fs->layers[0], *lower = &fs->layers[d->dir->layers[0]];
	ovl_work_tempname(fs, tmp);
	int fd = -1;
	int res = lower->ops->statat(lower, src, NULL, &st) < 0 ? -errno : ovl_upper_mkdir(upper, fs->work_fd, tmp, 0700);
	if (res < 0)
		goto out;
	fd = ovl_layer_open(fs, upper, fs->work_fd, tmp, O_RDONLY | O_DIRECTORY);
	const struct timespec times[2] = { st.st_atim, st.st_mtim };
	if (fd < 0)
		res = -errno;
	else
		res = copy_owner(fs, fd, NULL, &st);
	if (res == 0)
		res = copy_xattrs(fs, lower, src, NULL, fd, NULL);
	if (res == 0)
		res = ovl_origin_set(fs, fd, NULL, lower, &st);
	if (res == 0)
		res = carry_override(fs, d, fd, NULL);
	if (res == 0)
		res = ovl_upper_chmod(upper, fd, NULL, st.st_mode & 07777);
	if (res == 0)
		res = ovl_upper_utimens(upper, fd, NULL, times);
	if (res == 0 && fstat(fd, &ust) < 0)
		res = -errno;
	if (res == 0)
		res = rename_into_upper(fs, tmp, upfd, d->name);
	if (res < 0) {
		ovl_work_remove(fs, tmp);
		goto out;
	}
	ino_t shown = ovl_st_ino(fs, d->layer, d->ino);
	res = ovl_dir_add_upper(fs, d, fd);
	if (res == 0) {
		fd = -1; /* the directory's upper fd now */
		d->origin_ino = shown;
		ovl_node_rehash(fs, d, ust.st_dev, ust.st_ino);
		ovl_dir_changed(parent);
		/* now a merged directory: its st_nlink is 1, as the kernel overlay's;
		 * the kernel's cached attributes still hold the lower's count */
		if (fs->se && d->nodeid)
			fuse_lowlevel_notify_inval_inode(fs->se, d->nodeid, -1, 0);
	}
out:
	if (fd >= 0)
		close(fd);
	ovl_dir_fd_put(parent);
	ovl_dir_fd_put(d);
	return res;
}

static int copy_up_dirs_locked(struct ovl_fs *fs, struct ovl_node *dir)
{
	while (!ovl_node_is_upper(fs, dir)) {
		struct ovl_node *top = dir;
		while (top->parent && !ovl_node_is_upper(fs, top->parent))
			top = top->parent;
		if (top->parent == NULL)
			return -EIO; /* the root is always in the upper layer */
		ovl_dir_lock(top->parent, true);
		ovl_dir_lock(top, true);
		/* done once: a concurrent copy-up of the same chain waited for us */
		int res = ovl_node_is_upper(fs, top) ? 0 : copy_up_one_dir(fs, top);
		ovl_dir_unlock(top);
		ovl_dir_unlock(top->parent);
		if (res < 0)
			return res;
	}
	return 0;
}

int ovl_copy_up_dirs(struct ovl_fs *fs, struct ovl_node *dir)
{
	if (!fs->has_upper)
		return -EROFS;
	if (ovl_node_is_upper(fs, dir))
		return 0;
	ovl_tree_read(fs);
	int res = copy_up_dirs_locked(fs, dir);
	ovl_tree_read_end(fs);
	return res;
}

/* ---- other objects ---- */
void ovl_copy_up_init(struct ovl_fs *fs)
{
	for (size_t i = 0; i < OVL_COPYUP_LOCKS; i++)
		pthread_mutex_init(&fs->copyup_locks[i], NULL);
}

/* The lock under which node is copied up; taken before the namespace locks. */
static pthread_mutex_t *copy_up_lock(struct ovl_fs *fs, struct ovl_node *node)
{
	return &fs->copyup_locks[((uintptr_t)node >> 6) % OVL_COPYUP_LOCKS];
}

static int copy_up_file(struct ovl_fs *fs, struct ovl_node *node, bool with_data)
{
	struct ovl_node *parent = node->parent;
	struct ovl_layer *lower = &fs->layers[node->layer];
	char tmp[OVL_TEMPNAME_MAX];
	struct stat st, ust;
	int res = ovl_copy_up_dirs(fs, parent);
	if (res < 0)
		return res;
	/* the node cannot move meanwhile (a rename copies it up first, under
	 * our lock), and a lower layer does not change */
	ovl_ns_lock(fs, parent, false);
	/* Every change of the parent's names through us counts here; one made
	 * before (the name removed since ovl_copy_up looked) marked the node. */
	unsigned names_version = atomic_load(&parent->dir->version);
	int pos = ovl_dir_layer_pos(parent->dir, node->layer);
	int pfd = node->unlinked ? -ENOENT : pos < 0 ? -EIO : ovl_dir_fd_get(fs, parent, (uint32_t)pos);
	int upfd = pfd < 0 ? pfd : ovl_dir_fd_get(fs, parent, 0);
	if (upfd >= 0) {
		/* copied up already under another node (a lower hard link, or a
		 * passthrough reader's): the name is that node's now */
		if (fstatat(upfd, node->name, &ust, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
			upfd = -ESTALE;
		else
			ovl_dir_fd_put(parent);
	}
	ovl_ns_unlock(fs, parent);
	if (upfd < 0 && pfd >= 0)
		ovl_dir_fd_put(parent);
	if (pfd < 0 || upfd < 0)
		return pfd < 0 ? pfd : upfd;
	ovl_work_tempname(fs, tmp);
	res = build_copy(fs, lower, pfd, node->name, tmp, with_data, &st, &ust);
	ovl_dir_fd_put(parent);
	if (res == 0 && (res = carry_override(fs, node, fs->work_fd, tmp)) < 0)
		ovl_work_remove(fs, tmp);
	if (res < 0)
		return res;

	ovl_ns_lock(fs, parent, true);
	/* still shown where it was? (it may have been removed meanwhile) */
	if (atomic_load(&parent->dir->version) != names_version) {
		struct ovl_found now;
		res = ovl_lookup_name(fs, parent, node->name, &now);
		if (res == 0 &&
		    (now.layer != node->layer || now.st.st_ino != st.st_ino || now.st.st_dev != st.st_dev))
			res = -ESTALE;
		ovl_found_free(&now);
	}
	upfd = res < 0 ? res : ovl_dir_fd_get(fs, parent, 0);
	if (upfd < 0) {
		res = upfd;
	} else {
		res = rename_into_upper(fs, tmp, upfd, node->name);
		ovl_dir_fd_put(parent);
	}
	if (res < 0) {
		ovl_work_remove(fs, tmp);
	} else {
		node->origin_ino = st.st_nlink == 1 ? ovl_st_ino(fs, node->layer, st.st_ino) : 0;
		node->layer = 0;
		/* The kernel's passthrough readers keep the lower file as this
		 * node's backing file: the node serves the calls of their fds
		 * (fchmod, fstat) from the copy, but the name gets a new node for
		 * any open (ovl_copy_up_reopen). */
		if (ftr_passthrough_active(fs->transport, node->nodeid))
			ovl_node_detach(fs, node, ust.st_dev, ust.st_ino);
		else
			ovl_node_rehash(fs, node, ust.st_dev, ust.st_ino);
		ovl_dir_changed(parent);
	}
	/* A broken lower hard link now shows the copy's st_ino (no origin), which
	 * the kernel takes only from fresh attributes and a fresh readdir. */
	if (res == 0 && st.st_nlink > 1 && fs->se) {
		fuse_lowlevel_notify_inval_inode(fs->se, node->nodeid, -1, 0);
		fuse_lowlevel_notify_inval_inode(fs->se, parent->nodeid, 0, 0);
	}
	ovl_ns_unlock(fs, parent);
	return res;
}

int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node, bool with_data)
{
	if (!fs->has_upper)
		return -EROFS;
	if (node->dir)
		return ovl_copy_up_dirs(fs, node);
	if (ovl_node_is_upper(fs, node))
		return 0;
	if (node->unlinked)
		return -ENOENT; /* what now has its name is another object */
	pthread_mutex_t *m = copy_up_lock(fs, node);
	pthread_mutex_lock(m);
	/* done once: a concurrent copy-up of the same node waited for us */
	int res = ovl_node_is_upper(fs, node) ? 0 : copy_up_file(fs, node, with_data);
	pthread_mutex_unlock(m);
	return res;
}

/* Makes the kernel drop node's name, so that callers that do not walk the
 * path again after ESTALE (an fd's setattr) reach the new node next time. */
static void copy_up_stale(struct ovl_fs *fs, struct ovl_node *node)
{
	char name[NAME_MAX + 1];
	struct ovl_node *dir = ovl_ns_lock_place(fs, node, false);
	fuse_ino_t parent = node->parent ? node->parent->nodeid : 0;
	snprintf(name, sizeof name, "%s", node->name);
	ovl_ns_unlock(fs, dir);
	if (parent)
		ovl_notify_inval_entry_later(fs, parent, name);
}

int ovl_copy_up_in_place(struct ovl_fs *fs, struct ovl_node *node, bool with_data)
{
	int res = ovl_copy_up(fs, node, with_data);
	if (res == -ESTALE)
		copy_up_stale(fs, node);
	return res;
}

int ovl_copy_up_reopen(struct ovl_fs *fs, struct ovl_node *node)
{
	copy_up_stale(fs, node);
	return -ESTALE;
}
