/* The request handlers, each defined in the file of its concern and gathered
 * into the fuse_lowlevel_ops table by ops.c. */
#ifndef OVL_OPS_H
#define OVL_OPS_H

#include "overlay.h"

/* lookup.c */
void ovl_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void ovl_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void ovl_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
/* inode.c */
void ovl_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ovl_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi);
void ovl_op_readlink(fuse_req_t req, fuse_ino_t ino);
void ovl_op_statfs(fuse_req_t req, fuse_ino_t ino);
/* Sets the shown mode of n's open upper file fd (an override, where used). */
int ovl_setattr_mode_fd(struct ovl_fs *fs, struct ovl_node *n, int fd, mode_t mode);
/* killpriv.c: the mode st (as shown) keeps once the caller of req changed
 * the file's data; flagged: the kernel said the caller lacks CAP_FSETID. */
mode_t ovl_killpriv_mode(fuse_req_t req, const struct stat *st, bool flagged);
/* readdir.c */
void ovl_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ovl_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ovl_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ovl_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* file.c */
void ovl_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ovl_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ovl_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ovl_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ovl_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void ovl_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void ovl_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off,
		      struct fuse_file_info *fi);
void ovl_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		      struct fuse_file_info *fi);
void ovl_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void ovl_op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			    fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags);
void ovl_op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
		  unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz);
/* xattr.c */
void ovl_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void ovl_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void ovl_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags);
void ovl_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
/* dir.c */
void ovl_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void ovl_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void ovl_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void ovl_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void ovl_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void ovl_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		   unsigned int flags);
void ovl_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void ovl_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi);

#endif
