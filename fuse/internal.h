/* Inside the FUSE transport: the state of one mount's transport (struct ftr,
 * every field of it, by the file that keeps it) and the calls between the
 * files of fuse/.  Nothing outside fuse/ includes this header. */
#ifndef FTR_INTERNAL_H
#define FTR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "transport.h"

struct ftr_queue;    /* uring.c */
struct ftr_backing;  /* passthrough.c */

#define FTR_BACKING_BUCKET_BITS 10

struct ftr {
	struct ftr_env env;
	struct {                                /* devio.c: the wrapped io */
		const char *unwrapped;          /* why the custom io is not installed, or NULL */
		int devfd;                      /* session fd: backing ids and io_uring live on it */
		_Atomic uint64_t offered;       /* INIT flags the last INIT request offered */
		_Atomic uint64_t init_unique;   /* that INIT request, until answered */
		_Atomic uint64_t asked;         /* flags our INIT reply adds */
	} io;
	struct {                                /* devio.c: polling for the next request */
		atomic_bool busy;               /* a thread is polling */
		_Atomic int64_t last_arrival;   /* when a read last brought a request */
		_Atomic int64_t last_gap;       /* the time between the last two requests */
		atomic_long polls, caught;
	} poller;
	struct {                                /* uring.c: FUSE over io_uring */
		struct fuse_session *se;
		bool wanted;
		bool asked;
		size_t payload_size;
		unsigned nqueues;
		struct ftr_queue *queues;
		atomic_long requests;
		atomic_long threads;            /* alive */
		pthread_mutex_t live_lock;
		pthread_cond_t live_cond;
	} uring;
	struct {                                /* passthrough.c: backing files */
		const char *unusable;           /* why passthrough cannot be used, or NULL */
		atomic_bool enabled;            /* asked for in the INIT reply; cleared on EPERM */
		pthread_mutex_t lock;           /* guards buckets */
		struct ftr_backing *buckets[1 << FTR_BACKING_BUCKET_BITS]; /* by nodeid */
	} pt;
};

/* transport.c: logs through the owner's env.log. */
void ftr_log(const struct ftr *t, enum ftr_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* devio.c */
/* Wraps the session's device io (fuse_session_custom_io). */
int ftr_devio_setup(struct ftr *t, struct fuse_session *se);
/* Notes, for the thread about to serve it, what the raw request says beyond
 * what libfuse passes on (both transports call it before dispatching). */
void ftr_devio_note_request(const void *buf, size_t len);

/* uring.c */
/* Whether io_uring may be used (the kernel allows it, not disabled by
 * FUSE_OVERLAYFS_DISABLE_IO_URING, threaded); remembers the session. */
bool ftr_uring_wanted(struct ftr *t, struct fuse_session *se, bool threaded);
/* ftr_init: asks for io_uring in the INIT reply if the kernel offers it. */
void ftr_uring_init(struct ftr *t, struct fuse_conn_info *conn);
/* devio.c, once our INIT reply is written: registers the queues. */
void ftr_uring_start(struct ftr *t, uint32_t max_write, uint16_t max_pages);
/* devio.c writev: takes the reply to the io_uring request this thread is
 * serving; its length, or -1 if iov is not that reply. */
ssize_t ftr_uring_take_reply(const struct iovec *iov, int count);
/* ftr_stop: waits (5 s at most) for the queue threads to end. */
bool ftr_uring_stop(struct ftr *t);
/* Whether requests come through io_uring (one has been served). */
bool ftr_uring_serving(const struct ftr *t);

/* passthrough.c */
/* Whether passthrough may be used (may_passthrough, not disabled). */
bool ftr_passthrough_wanted(struct ftr *t, bool may_passthrough);
/* ftr_init: decides from what the kernel's INIT offered and conn->want. */
void ftr_passthrough_init(struct ftr *t, const struct fuse_conn_info *conn);

#endif
