/* The FUSE transport (DESIGN.md §2, §3): the /dev/fuse io, wrapped for what
 * libfuse 3.14 cannot negotiate itself (devio.c), FUSE over io_uring
 * (uring.c) and FUSE passthrough (passthrough.c).  It knows the protocol and
 * nothing of overlays; this header is all that main.c and overlay/ see of it.
 *
 * The state of one mount's transport is a struct ftr, made by whoever sets
 * the session up (main.c), which also hands it a way to log and to start
 * threads.  libfuse gives the io callbacks only the session's userdata, so
 * that userdata (fuse_session_new's) must begin with the struct ftr pointer. */
#ifndef FTR_TRANSPORT_H
#define FTR_TRANSPORT_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

struct ftr;

enum ftr_log_level { FTR_ERR, FTR_WARN, FTR_INFO, FTR_DEBUG };

/* What the transport asks of its owner. */
struct ftr_env {
	/* writes one message (no newline) */
	void (*log)(enum ftr_log_level level, const char *fmt, va_list ap);
	/* starts a detached thread with every signal blocked; 0 or -errno */
	int (*thread_start)(void *(*fn)(void *), void *arg);
};

/* ---- its life (main.c) ---- */
/* A transport not yet set up on a session; NULL: no memory. */
struct ftr *ftr_new(const struct ftr_env *env);
/* After fuse_session_mount: wraps the device io; threaded: the session runs
 * the multi-threaded loop (io_uring needs it); may_passthrough: this process
 * holds CAP_SYS_ADMIN in the initial user namespace (what the kernel's
 * BACKING_OPEN checks).  -1: the io could not be wrapped. */
int ftr_setup(struct ftr *t, struct fuse_session *se, bool threaded, bool may_passthrough);
struct ftr_counters {
	long uring_requests;  /* requests served through io_uring */
	long uring_threads;   /* threads serving them */
	long polls;           /* times a thread polled for the next request */
	long polls_caught;    /* times one came while it polled */
};
void ftr_counters(const struct ftr *t, struct ftr_counters *c);
/* After unmounting: waits (5 s at most) for the io_uring threads to end;
 * false if some did not, and the session must then not be destroyed.  t
 * itself lives as long as the process (the io_uring buffers stay: a request
 * still in flight may name them). */
bool ftr_stop(struct ftr *t);

/* ---- INIT (the filesystem's init op) ---- */
/* The 64-bit INIT flags (flags | flags2 << 32), as the kernel and we use them. */
#define FTR_INIT_HANDLE_KILLPRIV_V2 (1ULL << 28)
#define FTR_INIT_PASSTHROUGH (1ULL << 37)
#define FTR_INIT_OVER_IO_URING (1ULL << 41)
/* The flags the kernel's INIT request offered (0 before one came). */
uint64_t ftr_offered(const struct ftr *t);
/* Adds flag to our INIT reply, or leaves it out. */
void ftr_ask(struct ftr *t, uint64_t flag, bool on);
/* Whether passthrough can be used, so that the writeback cache (which it
 * excludes) is asked for only where it cannot. */
bool ftr_passthrough_possible(const struct ftr *t);
/* Last in the init op: the transport's part of INIT.  io_uring, if the
 * kernel offers it (replies then go through writev, never splice); then
 * passthrough, decided from the final conn->want (no writeback cache).
 * Each says in the debug log whether it is in use. */
void ftr_init(struct ftr *t, struct fuse_conn_info *conn);

/* ---- the request being served ---- */
/* Whether it asks set-id bits to go: its caller lacks CAP_FSETID (a
 * truncate or an O_TRUNC open; FUSE_HANDLE_KILLPRIV_V2), which libfuse 3.14
 * does not pass on. */
bool ftr_kill_suidgid(void);

/* ---- passthrough: backing files (t NULL: no passthrough) ---- */
/* A backing id (> 0) for an open of nodeid whose backing fd is fd, shared by
 * all opens of nodeid until the last ftr_passthrough_put; 0: serve this open
 * through the daemon; -EIO: nodeid has a backing id for another file. */
int ftr_passthrough_get(struct ftr *t, fuse_ino_t nodeid, int fd);
/* Whether some open of nodeid is in passthrough now. */
bool ftr_passthrough_active(struct ftr *t, fuse_ino_t nodeid);
void ftr_passthrough_put(struct ftr *t, fuse_ino_t nodeid);
/* fuse_reply_open for a passthrough open; returns what fuse_reply_buf does. */
int ftr_passthrough_reply_open(fuse_req_t req, uint64_t fh, int backing_id);
/* fuse_reply_create for a passthrough open. */
int ftr_passthrough_reply_create(fuse_req_t req, const struct fuse_entry_param *e, uint64_t fh, int backing_id);

#endif
