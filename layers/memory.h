/* A lower layer held in memory, the second implementation of layer.h: what
 * the unit tests mount to drive the core over a layer without fds.  A test
 * builds its tree (directories, files with contents, symlinks, devices such
 * as char 0/0 whiteouts, xattrs), then mounts it; the tree does not change
 * while mounted.  Handles are the indexes of its objects. */
#ifndef OVL_MEMORY_H
#define OVL_MEMORY_H

#include "layer.h"

struct ovl_memory;

/* An empty tree (its root a directory) whose objects have st_dev dev and the
 * caller's owner. */
struct ovl_memory *ovl_memory_new(dev_t dev);
void ovl_memory_free(struct ovl_memory *m);
/* Adds path ("a/b": its parent must be there) as an object of mode (with
 * S_IFMT): a file holding data, a symlink to data, a device rdev; 0 or -errno. */
int ovl_memory_add(struct ovl_memory *m, const char *path, mode_t mode, dev_t rdev, const char *data);
/* Sets the xattr name of path ("": the root) to the string value; 0 or -errno. */
int ovl_memory_set_xattr(struct ovl_memory *m, const char *path, const char *name, const char *value);
/* The st_ino of path, or 0 if there is none. */
ino_t ovl_memory_ino(const struct ovl_memory *m, const char *path);
/* Makes l a lower layer over m that can do caps (never OVL_LAYER_REAL_FDS:
 * its handles are no fds), for ovl_fs_open_with; its root handle is open. */
void ovl_memory_layer(struct ovl_memory *m, uint32_t caps, struct ovl_layer *l);
/* Handles open now, and read calls made so far. */
long ovl_memory_open_handles(const struct ovl_memory *m);
long ovl_memory_reads(const struct ovl_memory *m);

#endif
