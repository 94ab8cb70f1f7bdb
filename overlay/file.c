/* Open files: where the kernel has FUSE passthrough (root mounts) it reads and
 * writes the backing file itself; elsewhere the daemon holds the backing fd
 * and serves reads by splice (fuse_reply_data with an fd buffer) and writes
 * with fuse_buf_copy into it.  Opening for writing copies the object up
 * first (without its data when the open truncates).  Data calls take no
 * namespace lock. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../fuse/transport.h"
#include "ops.h"

#include "handles.h"

/* Open files hold fds from a budget that leaves lookups, listings and
 * copy-ups theirs; each caller (by uid, in OVL_FD_SHARES shares) may take at
 * most half of it, so that one user of an allow_other mount opening files by
 * the thousand cannot stop the others' opens either. */
static unsigned fd_share(fuse_req_t req)
{
	return fuse_req_ctx(req)->uid % OVL_FD_SHARES;
}

/* may_refuse false: counted only (a create's file exists already). */
static bool file_fd_take(struct ovl_fs *fs, unsigned share, bool may_refuse)
{
	bool over = atomic_fetch_add(&fs->file_fds_open, 1) >= fs->file_fd_budget;
	over |= atomic_fetch_add(&fs->file_fds_of[share], 1) >= fs->file_fd_budget / 2;
	if (over && may_refuse) {
		atomic_fetch_sub(&fs->file_fds_open, 1);
		atomic_fetch_sub(&fs->file_fds_of[share], 1);
		return false;
	}
	return true;
}

static void file_fd_give(struct ovl_fs *fs, unsigned share)
{
	atomic_fetch_sub(&fs->file_fds_open, 1);
	atomic_fetch_sub(&fs->file_fds_of[share], 1);
}

static unsigned fh_share(const struct fuse_file_info *fi)
{
	return (unsigned)((fi->fh >> FH_SHARE_SHIFT) & FH_SHARE_MASK);
}

int ovl_backing_open_flags(const struct ovl_fs *fs, int flags)
{
	if (!fs->writeback_cache)
		return flags;
	/* The kernel reads pages around a partial write, through any open file,
	 * and writes back at offsets of its own choosing, O_APPEND ones too. */
	if ((flags & O_ACCMODE) == O_WRONLY)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	return flags & ~O_APPEND;
}

struct open_call {
	struct ovl_fs *fs;
	int flags;
	int asked_mode; /* O_ACCMODE bits the caller asked for */
	int fd;
	struct ovl_layer *layer; /* of fd */
};

static int open_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct open_call *c = arg;
	int flags = ovl_backing_open_flags(c->fs, c->flags);
	c->layer = layer;
	c->fd = ovl_layer_open(c->fs, layer, dirfd, name, flags);
	if (c->fd < 0 && errno == EACCES && (flags & O_ACCMODE) != c->asked_mode) /* a write-only file */
		c->fd = ovl_layer_open(c->fs, layer, dirfd, name, (flags & ~O_ACCMODE) | c->asked_mode);
	return c->fd < 0 ? -errno : 0;
}

static bool opens_for_writing(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Replies to an open (e NULL) or a create of nodeid with the backing fd
 * (a handle of layer). */
static void reply_opened(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi, struct ovl_layer *layer,
			 int fd, const struct fuse_entry_param *e)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *node = ovl_node_get(fs, nodeid);
	/* without an fd the kernel has no backing file: we serve the reads */
	int backing_id = layer->caps & OVL_LAYER_REAL_FDS ? ftr_passthrough_get(fs->transport, nodeid, fd) : 0;
	unsigned share = fd_share(req);
	uint64_t fh_of = (uint64_t)share << FH_SHARE_SHIFT | (uint64_t)layer->index << FH_LAYER_SHIFT;
	int res;
	if (backing_id < 0) {
		file_fd_give(fs, share);
		layer->ops->close(layer, fd);
		if (e)
			ovl_node_forget(fs, node, 1);
		fuse_reply_err(req, -backing_id);
		return;
	}
	/* counted before the reply: the opener may unlink the name at once */
	if (node)
		atomic_fetch_add(&node->opens, 1);
	if (backing_id > 0 && (fi->flags & O_ACCMODE) == O_RDONLY) {
		/* the kernel reads the file itself: no fd of ours per reader */
		layer->ops->close(layer, fd);
		file_fd_give(fs, share);
		fd = -1;
	}
	if (backing_id > 0) {
		/* A writer's fd stays open for fsync, lseek, fallocate and copy_file_range. */
		uint64_t fh = (fd >= 0 ? (uint64_t)fd : FH_NO_FD) | FH_PASSTHROUGH | fh_of;
		res = e ? ftr_passthrough_reply_create(req, e, fh, backing_id)
			: ftr_passthrough_reply_open(req, fh, backing_id);
		if (res == -ENOENT)
			ftr_passthrough_put(fs->transport, nodeid);
	} else {
		fi->fh = (uint64_t)(uint32_t)fd | fh_of;
		/* Everything reaches the files through us: keep the page cache across opens. */
		fi->keep_cache = fs->timeout > 0;
		fi->noflush = 1;
		res = e ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
	}
	if (res == -ENOENT) {
		if (fd >= 0) {
			layer->ops->close(layer, fd); /* interrupted: no release will come */
			file_fd_give(fs, share);
		}
		if (node)
			atomic_fetch_sub(&node->opens, 1);
		if (e)
			ovl_node_forget(fs, node, 1);
	}
}

void ovl_file_reply_create(fuse_req_t req, const struct fuse_entry_param *e, struct fuse_file_info *fi, int fd)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	file_fd_take(fs, fd_share(req), false);
	reply_opened(req, e->ino, fi, &fs->layers[0], fd, e);
}

/* An O_TRUNC open by a caller without CAP_FSETID: set-id bits go (killpriv.c). */
static void drop_set_id_bits_on_trunc(fuse_req_t req, fuse_ino_t ino, struct ovl_node *n, int fd)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return;
	ovl_node_present(fs, n, &st);
	mode_t mode = ovl_killpriv_mode(req, &st, true);
	if (mode != st.st_mode && ovl_setattr_mode_fd(fs, n, fd, mode) == 0)
		ovl_notify_inval_attr_later(fs, ino); /* the kernel still has the bits */
}

void ovl_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_node_get(fs, ino);
	if (n == NULL || n->dir) {
		fuse_reply_err(req, n ? EISDIR : ESTALE);
		return;
	}
	int res = 0;
	if (opens_for_writing(fi->flags))
		res = ovl_copy_up_in_place(fs, n, !(fi->flags & O_TRUNC));
	if (res == 0 && n->detached)
		res = ovl_copy_up_reopen(fs, n);
	struct open_call c = { .fs = fs, .flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY),
			       .asked_mode = fi->flags & O_ACCMODE };
	/* the fds of lookups, listings and copy-ups are kept out of reach */
	if (res == 0 && !file_fd_take(fs, fd_share(req), true))
		res = -EMFILE;
	if (res == 0) {
		struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
		res = ovl_node_at(fs, n, open_cb, &c);
		ovl_ns_unlock(fs, dir);
		if (res < 0)
			file_fd_give(fs, fd_share(req));
	}
	if (res == 0 && (fi->flags & O_TRUNC) && ftr_kill_suidgid())
		drop_set_id_bits_on_trunc(req, ino, n, c.fd);
	if (res < 0)
		fuse_reply_err(req, -res);
	else
		reply_opened(req, ino, fi, c.layer, c.fd, NULL);
}

/* A read of a file of a layer without fds: by its read op. */
static void read_by_op(fuse_req_t req, struct ovl_layer *layer, int h, size_t size, off_t off)
{
	char *buf = malloc(size);
	ssize_t n = buf ? layer->ops->read(layer, h, buf, size, off) : -1;
	if (n < 0)
		fuse_reply_err(req, buf ? errno : ENOMEM);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

void ovl_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	(void)ino;
	if (!ovl_file_is_fd(ovl_fs_of(req), fi)) {
		read_by_op(req, ovl_file_layer(ovl_fs_of(req), fi), ovl_file_fd(fi), size, off);
		return;
	}
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = ovl_file_fd(fi);
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void ovl_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
		      struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(bufv));
	(void)ino;
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = ovl_file_fd(fi);
	out.buf[0].pos = off;
	ssize_t res = fuse_buf_copy(&out, bufv, 0);
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
}

void ovl_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ovl_node *n = ovl_node_get(ovl_fs_of(req), ino);
	if (n)
		atomic_fetch_sub(&n->opens, 1);
	if (ovl_file_fd(fi) >= 0) {
		struct ovl_layer *layer = ovl_file_layer(ovl_fs_of(req), fi);
		layer->ops->close(layer, ovl_file_fd(fi));
		file_fd_give(ovl_fs_of(req), fh_share(fi));
	}
	if (fi->fh & FH_PASSTHROUGH)
		ftr_passthrough_put(ovl_fs_of(req)->transport, ino);
	fuse_reply_err(req, 0);
}

void ovl_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static int sync_fd(struct ovl_fs *fs, int fd, int datasync)
{
	if (!fs->cfg->fsync)
		return -ENOSYS; /* fsync=0/volatile: the kernel stops asking */
	/* layering-ok: the caller's own file, lower or upper (the kernel overlay's vfs_fsync on its real file) */
	return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

void ovl_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	int reopened, fd = ovl_file_fd_get(fs, ino, fi, &reopened);
	/* a layer without fds: a lower file, nothing of ours to sync */
	fuse_reply_err(req, fd == -EXDEV ? 0 : fd < 0 ? -fd : -sync_fd(fs, fd, datasync));
	if (reopened >= 0)
		close(reopened);
}

void ovl_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_req_dir(req, ino);
	(void)fi;
	if (n == NULL)
		return;
	if (!ovl_node_is_upper(fs, n)) {
		fuse_reply_err(req, 0); /* nothing of ours to sync */
		return;
	}
	int fd = ovl_dir_fd_get(fs, n, 0);
	int res = fd < 0 ? fd : sync_fd(fs, fd, datasync);
	if (fd >= 0)
		ovl_dir_fd_put(n);
	fuse_reply_err(req, -res);
}

/* SEEK_DATA/SEEK_HOLE (the kernel asks for no other) in a file of a layer
 * without fds: all data, as the kernel's generic llseek has it. */
static off_t lseek_by_size(struct ovl_fs *fs, const struct fuse_file_info *fi, off_t off, int whence)
{
	struct ovl_layer *layer = ovl_file_layer(fs, fi);
	struct stat st;
	if (layer->ops->statat(layer, ovl_file_fd(fi), NULL, &st) < 0)
		return -errno;
	if (off < 0 || off >= st.st_size)
		return -ENXIO;
	return whence == SEEK_DATA ? off : st.st_size;
}

void ovl_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	/* The kernel asks without writing its cached pages back first, so data
	 * still only in its cache would be reported as a hole (and skipped by a
	 * sparse copy).  Dropping the cache writes dirty pages back to us first
	 * (other threads serve those WRITEs; the kernel holds no lock they need). */
	if (fs->writeback_cache && (whence == SEEK_DATA || whence == SEEK_HOLE) && fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
	int reopened, fd = ovl_file_fd_get(fs, ino, fi, &reopened);
	off_t res = fd == -EXDEV ? lseek_by_size(fs, fi, off, whence) : fd < 0 ? fd : lseek(fd, off, whence);
	if (res < 0 && fd >= 0)
		res = -errno;
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_lseek(req, res);
	if (reopened >= 0)
		close(reopened);
}

void ovl_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		      struct fuse_file_info *fi)
{
	(void)ino;
	/* layering-ok: data of the caller's open file, as write(2) (the kernel overlay's vfs_fallocate) */
	fuse_reply_err(req, fallocate(ovl_file_fd(fi), mode, offset, length) < 0 ? errno : 0);
}

void ovl_op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			    fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	(void)ino_out;
	/* the handles were opened with their own modes: a destination whose mode
	 * changed to read-only since stays writable, as on a local filesystem;
	 * from a layer without fds, EXDEV: the kernel copies by splice itself */
	int reopened, in = ovl_file_fd_get(ovl_fs_of(req), ino_in, fi_in, &reopened);
	ssize_t res = in < 0 ? in : copy_file_range(in, &off_in, ovl_file_fd(fi_out), &off_out, len, (unsigned)flags);
	if (res < 0 && in >= 0)
		res = -errno;
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
	if (reopened >= 0)
		close(reopened);
}

/* A fresh fd of the object n shows, for its flags (an open one may be of the
 * lower copy, or write-only); *fd -1: its layer has no fds, and no flags. */
static int flags_fd(struct ovl_fs *fs, struct ovl_node *n, int *fd)
{
	int res = 0;
	*fd = -1;
	struct ovl_node *dir = ovl_ns_lock_place(fs, n, false);
	bool has_fds = fs->layers[n->layer].caps & OVL_LAYER_REAL_FDS;
	if (has_fds && n->dir) {
		int dfd = ovl_dir_fd_get(fs, n, 0);
		res = dfd < 0 ? dfd : (*fd = dup(dfd)) < 0 ? -errno : 0;
		if (dfd >= 0)
			ovl_dir_fd_put(n);
	} else if (has_fds) {
		struct open_call c = { .fs = fs, .flags = O_RDONLY | O_NONBLOCK };
		res = ovl_node_at(fs, n, open_cb, &c);
		*fd = res < 0 ? -1 : c.fd;
	}
	ovl_ns_unlock(fs, dir);
	return res;
}

/* FS_IOC_GETFLAGS/SETFLAGS: read from the object shown; set on its upper copy. */
void ovl_op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
		  unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	struct ovl_fs *fs = ovl_fs_of(req);
	struct ovl_node *n = ovl_req_node(req, ino);
	(void)arg;
	(void)flags;
	if (n == NULL)
		return;
	if (cmd != FS_IOC_GETFLAGS && cmd != FS_IOC_SETFLAGS) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	/* the ABI says long, the kernel reads and writes an int */
	long v = 0;
	int attr = 0, fd = -1, res = 0;
	if (cmd == FS_IOC_SETFLAGS) {
		if (in_bufsz < sizeof(int)) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		memcpy(&attr, in_buf, sizeof attr);
		res = ovl_copy_up_in_place(fs, n, true);
	} else if (out_bufsz < sizeof(int)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (res == 0)
		res = flags_fd(fs, n, &fd);
	(void)fi;
	if (res == 0 && fd >= 0 && ioctl(fd, cmd, &attr) < 0)
		res = -errno;
	if (fd >= 0)
		close(fd);
	if (res < 0) {
		fuse_reply_err(req, -res);
		return;
	}
	if (cmd == FS_IOC_SETFLAGS) {
		fuse_reply_ioctl(req, 0, NULL, 0);
		return;
	}
	memcpy(&v, &attr, sizeof attr);
	fuse_reply_ioctl(req, 0, &v, out_bufsz < sizeof v ? out_bufsz : sizeof v);
}
