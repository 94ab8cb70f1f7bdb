/* The fuse_lowlevel_ops table and the capabilities asked of the kernel. */
#include "config.h"

#include "../fuse/transport.h"
#include "ops.h"

static void ovl_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ovl_fs *fs = userdata;
	struct ftr *t = fs->transport;
	unsigned want = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_READDIRPLUS |
			FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_ASYNC_READ;
	if (!fs->cfg->noacl)
		want |= FUSE_CAP_POSIX_ACL;
	/* the caller's umask comes to us: the upper filesystem applies it, or a
	 * default ACL instead (creds.c) */
	want |= FUSE_CAP_DONT_MASK | FUSE_CAP_IOCTL_DIR;
	/* Passthrough, where it can be had, excludes the writeback cache and is
	 * faster still; elsewhere the writeback cache turns small writes into
	 * few large requests (DESIGN.md §3, COMPAT.md writeback=). */
	if (fs->cfg->writeback && !ftr_passthrough_possible(t))
		want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want |= want & conn->capable;
	fs->writeback_cache = (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
	conn->max_readahead = conn->max_readahead ? conn->max_readahead : 1 << 20;
	/* the set-id rule is then ours (killpriv.c), and writes stop asking us
	 * for security.capability each time */
	ftr_ask(t, FTR_INIT_HANDLE_KILLPRIV_V2, (ftr_offered(t) & FTR_INIT_HANDLE_KILLPRIV_V2) != 0);
	/* Last: io_uring and passthrough depend on the final want. */
	ftr_init(t, conn);
}

static void ovl_destroy(void *userdata)
{
	ovl_notify_drain(userdata); /* they use the session, which goes next */
}

const struct fuse_lowlevel_ops ovl_ops = {
	.init = ovl_init,
	.destroy = ovl_destroy,
	.lookup = ovl_op_lookup,
	.forget = ovl_op_forget,
	.forget_multi = ovl_op_forget_multi,
	.getattr = ovl_op_getattr,
	.setattr = ovl_op_setattr,
	.readlink = ovl_op_readlink,
	.mknod = ovl_op_mknod,
	.mkdir = ovl_op_mkdir,
	.unlink = ovl_op_unlink,
	.rmdir = ovl_op_rmdir,
	.symlink = ovl_op_symlink,
	.rename = ovl_op_rename,
	.link = ovl_op_link,
	.open = ovl_op_open,
	.read = ovl_op_read,
	.write_buf = ovl_op_write_buf,
	.flush = ovl_op_flush,
	.release = ovl_op_release,
	.fsync = ovl_op_fsync,
	.opendir = ovl_op_opendir,
	.readdir = ovl_op_readdir,
	.readdirplus = ovl_op_readdirplus,
	.releasedir = ovl_op_releasedir,
	.statfs = ovl_op_statfs,
	.setxattr = ovl_op_setxattr,
	.getxattr = ovl_op_getxattr,
	.listxattr = ovl_op_listxattr,
	.removexattr = ovl_op_removexattr,
	.create = ovl_op_create,
	.fallocate = ovl_op_fallocate,
	.lseek = ovl_op_lseek,
	.fsyncdir = ovl_op_fsyncdir,
	.copy_file_range = ovl_op_copy_file_range,
	.ioctl = ovl_op_ioctl,
};
