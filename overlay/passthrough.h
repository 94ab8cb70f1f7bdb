/* FUSE passthrough (kernel 6.9+): reads of an open file go from the kernel
 * straight to the backing file.  libfuse 3.14 has no API for it, so the
 * /dev/fuse traffic is wrapped (devio.c, DESIGN.md §3). */
#ifndef OVL_PASSTHROUGH_H
#define OVL_PASSTHROUGH_H

#include "overlay.h"

/* main.c: whether passthrough may be used (CAP_SYS_ADMIN in the initial user
 * namespace, not disabled), so that devio.c wraps the device io for it. */
bool ovl_passthrough_wanted(void);
/* ops.c init: decides from what the kernel's INIT offered and conn->want
 * (passthrough excludes the writeback cache), and says so in the debug log. */
void ovl_passthrough_init(const struct fuse_conn_info *conn);
/* ops.c init, before: whether passthrough can be used, so the writeback cache
 * (which it excludes) is asked for only where it cannot. */
bool ovl_passthrough_possible(void);
/* A backing id (> 0) for an open of nodeid whose backing fd is fd, shared by
 * all opens of nodeid until the last ovl_passthrough_put; 0: serve this open
 * through the daemon; -EIO: nodeid has a backing id for another file. */
int ovl_passthrough_get(fuse_ino_t nodeid, int fd);
/* Whether some open of nodeid is in passthrough now. */
bool ovl_passthrough_active(fuse_ino_t nodeid);
void ovl_passthrough_put(fuse_ino_t nodeid);
/* fuse_reply_open for a passthrough open; returns what fuse_reply_buf does. */
int ovl_passthrough_reply_open(fuse_req_t req, uint64_t fh, int backing_id);
/* fuse_reply_create for a passthrough open. */
int ovl_passthrough_reply_create(fuse_req_t req, const struct fuse_entry_param *e, uint64_t fh, int backing_id);

#endif
