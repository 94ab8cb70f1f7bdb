/* FUSE over io_uring (kernel 6.14+, fuse.enable_uring=1): requests come
 * through one queue per CPU, each served by daemon threads pinned to that
 * CPU, so a request and its reply rarely cross CPUs (DESIGN.md §3).
 * libfuse 3.14 has no transport for it: uring.c runs the queues and hands
 * each request to fuse_session_process_buf; devio.c negotiates it at INIT
 * and routes the replies here.  FORGET, INTERRUPT and notifications stay on
 * /dev/fuse, served by libfuse's loop as before. */
#ifndef OVL_URING_H
#define OVL_URING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "overlay.h"

/* main.c: whether io_uring may be used (the kernel allows it, not disabled
 * by FUSE_OVERLAYFS_DISABLE_IO_URING, threaded); remembers the session. */
bool ovl_uring_wanted(struct fuse_session *se, bool threaded);
/* ops.c init: asks for io_uring in the INIT reply if the kernel offers it;
 * replies then go through writev only, never splice. */
void ovl_uring_init(struct fuse_conn_info *conn);
/* devio.c, once our INIT reply is written: registers the queues. */
void ovl_uring_start(int devfd, uint32_t max_write, uint16_t max_pages);
/* devio.c writev: takes the reply to the io_uring request this thread is
 * serving; its length, or -1 if iov is not that reply. */
ssize_t ovl_uring_take_reply(const struct iovec *iov, int count);
/* main.c, after unmounting: waits (5 s at most) for the queue threads to
 * end; false if some did not, and the session must then not be destroyed. */
bool ovl_uring_stop(void);
/* Whether requests come through io_uring (one has been served). */
bool ovl_uring_serving(void);
/* Requests served through io_uring so far, and the threads serving them. */
void ovl_uring_counters(long *requests, long *threads);

#endif
