/* The /dev/fuse io, wrapped with fuse_session_custom_io for what libfuse 3.14
 * cannot negotiate itself: FUSE passthrough and FUSE over io_uring
 * (DESIGN.md §3); and polled before sleeping, while requests come fast.
 * The read side notes what the kernel's INIT offers, the
 * write side adds what we ask for to our INIT reply and hands the replies of
 * requests that came through io_uring to uring.c. */
#ifndef OVL_DEVIO_H
#define OVL_DEVIO_H

#include <stdbool.h>
#include <stdint.h>

#include "overlay.h"

/* The 64-bit INIT flags (flags | flags2 << 32), as the kernel and we use them. */
#define OVL_INIT_HANDLE_KILLPRIV_V2 (1ULL << 28)
#define OVL_INIT_PASSTHROUGH (1ULL << 37)
#define OVL_INIT_OVER_IO_URING (1ULL << 41)

/* main.c, after fuse_session_mount: wraps the device io. */
int ovl_devio_setup(struct fuse_session *se);
/* Why the io is not wrapped, or NULL. */
const char *ovl_devio_unwrapped(void);
/* The session's /dev/fuse fd, once wrapped; -1 before. */
int ovl_devio_fd(void);
/* The flags the last INIT request offered (0 before one came). */
uint64_t ovl_devio_offered(void);
/* From the init op: flags to add to our INIT reply, or to leave out of it. */
void ovl_devio_ask(uint64_t flag, bool on);
/* Notes, for the thread about to serve it, what the raw request says beyond
 * what libfuse passes on (both transports call it before dispatching). */
void ovl_devio_note_request(const void *buf, size_t len);
/* Whether the request being served asks set-id bits to go: its caller lacks
 * CAP_FSETID (a write, a truncate or an O_TRUNC open). */
bool ovl_devio_kill_suidgid(void);
/* How often a thread polled for the next request, and how often one came. */
void ovl_devio_poll_counters(long *polls, long *caught);

#endif
