/* Open files: where the kernel has FUSE passthrough (root mounts) it reads the
 * backing file itself; elsewhere the daemon holds the backing fd and serves
 * reads from it by splice (fuse_reply_data with an fd buffer), no copy
 * through userspace. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "ops.h"
#include "passthrough.h"

/* fh = the backing fd, plus this bit when the open holds a passthrough ref. */
#define FH_PASSTHROUGH (UINT64_C(1) << 32)

static int fh_fd(const struct fuse_file_info *fi)
{
	return (int)(uint32_t)fi->fh;
}

struct open_call {
	struct ovl_fs *fs;
	int flags;
	int fd;
};

static int open_cb(struct ovl_layer *layer, int dirfd, const char *name, void *arg)
{
	struct open_call *c = arg;
	c->fd = ovl_layer_open(c->fs, layer, dirfd, name, c->flags);
	return c->fd < 0 ? -errno : 0;
}

void ovl_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ovl_node *n = ovl_node_get(ino);
	if (n == NULL || n->dir) {
		fuse_reply_err(req, n ? EISDIR : ESTALE);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS); /* writes arrive with the writable-overlay issue */
		return;
	}
	struct open_call c = { .fs = ovl_fs_of(req), .flags = O_RDONLY | (fi->flags & (O_NONBLOCK | O_DIRECT | O_NOATIME)) };
	int res = ovl_node_at(ovl_fs_of(req), n, open_cb, &c);
	if (res < 0) {
		fuse_reply_err(req, -res);
		return;
	}
	int backing_id = ovl_passthrough_get(ino, c.fd);
	if (backing_id > 0) {
		/* Our fd stays open for lseek (SEEK_DATA/SEEK_HOLE come to us). */
		if (ovl_passthrough_reply_open(req, (uint64_t)c.fd | FH_PASSTHROUGH, backing_id) == -ENOENT) {
			close(c.fd); /* interrupted: no release will come */
			ovl_passthrough_put(ino);
		}
		return;
	}
	fi->fh = (uint64_t)c.fd;
	/* Lower objects never change under a mount: keep the page cache across opens. */
	fi->keep_cache = ovl_fs_of(req)->timeout > 0;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		close(c.fd);
}

void ovl_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	(void)ino;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fh_fd(fi);
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void ovl_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	close(fh_fd(fi));
	if (fi->fh & FH_PASSTHROUGH)
		ovl_passthrough_put(ino);
	fuse_reply_err(req, 0);
}

void ovl_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

void ovl_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, 0); /* nothing written through a read-only handle */
}

void ovl_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)ino;
	off_t res = lseek(fh_fd(fi), off, whence);
	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

void ovl_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
		      struct fuse_file_info *fi)
{
	(void)ino;
	(void)bufv;
	(void)off;
	(void)fi;
	fuse_reply_err(req, EBADF); /* no handle is ever opened for writing yet */
}

void ovl_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		      struct fuse_file_info *fi)
{
	(void)ino;
	(void)mode;
	(void)offset;
	(void)length;
	(void)fi;
	fuse_reply_err(req, EBADF);
}
