/* The /dev/fuse io, wrapped with fuse_session_custom_io for what libfuse 3.14
 * cannot negotiate itself: FUSE passthrough and FUSE over io_uring
 * (DESIGN.md §3); and polled before sleeping, while requests come fast.
 * The read side notes what the kernel's INIT offers and what a request says
 * beyond what libfuse passes on, the write side adds what we ask for to our
 * INIT reply and hands the replies of requests that came through io_uring to
 * uring.c.  Every channel goes through the wrapper, the clone_fd ones too
 * (libfuse passes each its own fd).
 *
 * The state is the transport's (struct ftr, internal.h), which the callbacks
 * find first in the session's userdata (transport.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Byte offsets in fuse_init_in/fuse_init_out, fixed by the protocol; spelled
 * out because the headers' field names differ by version (flags2 from 7.36,
 * max_stack_depth from 7.40, which older headers call unused[0]). */
enum {
	INIT_IN_MAJOR = 0, INIT_IN_MINOR = 4, INIT_IN_FLAGS = 12, INIT_IN_FLAGS2 = 16, INIT_IN_MIN = 20,
	INIT_OUT_FLAGS = 12, INIT_OUT_MAX_WRITE = 20, INIT_OUT_MAX_PAGES = 28, INIT_OUT_FLAGS2 = 32,
	INIT_OUT_MAX_STACK_DEPTH = 36, INIT_OUT_MAX = 64,
};

static uint32_t get32(const void *p, size_t off)
{
	uint32_t v;
	memcpy(&v, (const char *)p + off, sizeof v);
	return v;
}

static void set32(void *p, size_t off, uint32_t v)
{
	memcpy((char *)p + off, &v, sizeof v);
}

/* Of the request this thread read or serves (per thread, not per mount). */
static _Thread_local bool read_a_forget;
static _Thread_local bool kill_suidgid;

/* The transport of the session whose io callback runs (transport.h). */
static struct ftr *of_session(void *userdata)
{
	return *(struct ftr **)userdata;
}

/* Where a request says that its caller lacks CAP_FSETID and set-id bits
 * must go (FUSE_HANDLE_KILLPRIV_V2), which libfuse 3.14 does not pass on
 * (ftr_kill_suidgid): byte offsets in the opcode's in-struct, and the bit. */
static const struct {
	uint32_t opcode;
	size_t off;
	uint32_t bit;
} kill_flags[] = {
	{ FUSE_OPEN, 4, 1u << 0 },     /* fuse_open_in.open_flags: FUSE_OPEN_KILL_SUIDGID */
	{ FUSE_CREATE, 12, 1u << 0 },  /* fuse_create_in.open_flags */
	{ FUSE_SETATTR, 0, 1u << 11 }, /* fuse_setattr_in.valid: FATTR_KILL_SUIDGID */
	/* (a WRITE's FUSE_WRITE_KILL_SUIDGID is not needed: before each write
	 * the kernel's file_remove_privs sends an empty SETATTR, whose caller's
	 * CAP_FSETID the filesystem checks itself) */
};

void ftr_devio_note_request(const void *buf, size_t len)
{
	const struct fuse_in_header *in = buf;
	kill_suidgid = false;
	for (size_t i = 0; len >= sizeof *in && i < sizeof kill_flags / sizeof kill_flags[0]; i++)
		if (in->opcode == kill_flags[i].opcode && len >= sizeof *in + kill_flags[i].off + 4)
			kill_suidgid = (get32(in + 1, kill_flags[i].off) & kill_flags[i].bit) != 0;
}

bool ftr_kill_suidgid(void)
{
	return kill_suidgid;
}

/* Polling /dev/fuse for a moment before sleeping in read.  A caller waits
 * for each request's reply and sends its next one a few microseconds later;
 * a daemon thread asleep by then must be woken, which costs a context switch
 * and, on an idle CPU (a VM's halted vCPU above all), an interrupt: creating
 * files in a loop takes 9% less time, removing them 19%.  One thread at a
 * time polls, and only while requests come closer together than the window,
 * so an idle or slow-paced mount never burns CPU for it.  Past the first
 * part of the window the poller yields its CPU to anything runnable (four
 * processes creating files at once ran 8% slower without it). */
#define POLL_WINDOW_NS 50000
#define POLL_YIELD_AFTER_NS 20000

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether something came to read (or the session ended) within the window. */
static bool poll_for_request(int fd)
{
	int64_t start = now_ns(), spent;
	do {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 0) != 0)
			return true;
		spent = now_ns() - start;
		if (spent > POLL_YIELD_AFTER_NS)
			sched_yield();
	} while (spent < POLL_WINDOW_NS);
	return false;
}

static void poll_if_busy(struct ftr *t, int fd)
{
	if (atomic_load_explicit(&t->poller.last_gap, memory_order_relaxed) >= POLL_WINDOW_NS ||
	    atomic_exchange(&t->poller.busy, true))
		return;
	atomic_fetch_add_explicit(&t->poller.polls, 1, memory_order_relaxed);
	if (poll_for_request(fd))
		atomic_fetch_add_explicit(&t->poller.caught, 1, memory_order_relaxed);
	atomic_store(&t->poller.busy, false);
}

static void note_arrival(struct ftr *t)
{
	int64_t now = now_ns();
	int64_t prev = atomic_exchange_explicit(&t->poller.last_arrival, now, memory_order_relaxed);
	atomic_store_explicit(&t->poller.last_gap, now - prev, memory_order_relaxed);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct ftr *t = of_session(userdata);
	/* With io_uring serving every request, /dev/fuse brings FORGETs (and rare
	 * INTERRUPTs): waking for each one costs the caller a cross-CPU wakeup,
	 * so let them gather into one BATCH_FORGET. */
	bool serving = ftr_uring_serving(t);
	if (read_a_forget && serving) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	if (!serving)
		poll_if_busy(t, fd);
	ssize_t n = read(fd, buf, len);
	if (n > 0) {
		note_arrival(t);
		ftr_devio_note_request(buf, (size_t)n);
	}
	const struct fuse_in_header *in = buf;
	read_a_forget = n >= (ssize_t)sizeof *in && (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET);
	if (n >= (ssize_t)(sizeof *in + INIT_IN_MIN) && in->opcode == FUSE_INIT) {
		const void *arg = in + 1;
		uint64_t flags = get32(arg, INIT_IN_FLAGS);
		/* flags2 exists from 7.36 on and counts only with FUSE_INIT_EXT */
		if (get32(arg, INIT_IN_MAJOR) == 7 && get32(arg, INIT_IN_MINOR) >= 36 && (flags & FUSE_INIT_EXT))
			flags |= (uint64_t)get32(arg, INIT_IN_FLAGS2) << 32;
		atomic_store(&t->io.offered, flags);
		atomic_store(&t->io.init_unique, in->unique);
	}
	return n;
}

/* Our INIT reply, with the flags asked for; then io_uring's queues start. */
static ssize_t write_init_reply(struct ftr *t, int fd, struct iovec *iov)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	char arg[INIT_OUT_MAX];
	size_t len = iov[1].iov_len;
	uint64_t asked = atomic_load(&t->io.asked);
	if (out->error != 0 || asked == 0 || len < INIT_OUT_MAX_STACK_DEPTH + 4 || len > sizeof arg)
		return writev(fd, iov, 2);
	memcpy(arg, iov[1].iov_base, len);
	set32(arg, INIT_OUT_FLAGS, get32(arg, INIT_OUT_FLAGS) | FUSE_INIT_EXT | (uint32_t)asked);
	set32(arg, INIT_OUT_FLAGS2, get32(arg, INIT_OUT_FLAGS2) | (uint32_t)(asked >> 32));
	/* Backing files are one level below our mount; one on a filesystem
	 * that is itself stacked (overlayfs) gets ELOOP at BACKING_OPEN and is
	 * served by the daemon. */
	if (asked & FTR_INIT_PASSTHROUGH)
		set32(arg, INIT_OUT_MAX_STACK_DEPTH, 1);
	struct iovec v[2] = { iov[0], { arg, len } };
	ssize_t n = writev(fd, v, 2);
	/* The kernel has taken the reply when writev returns: io_uring entries
	 * can be registered from now on. */
	if (n >= 0 && (asked & FTR_INIT_OVER_IO_URING)) {
		uint16_t max_pages;
		memcpy(&max_pages, arg + INIT_OUT_MAX_PAGES, sizeof max_pages);
		ftr_uring_start(t, get32(arg, INIT_OUT_MAX_WRITE), max_pages);
	}
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct ftr *t = of_session(userdata);
	ssize_t n = ftr_uring_take_reply(iov, count);
	if (n >= 0)
		return n;
	uint64_t init = atomic_load_explicit(&t->io.init_unique, memory_order_relaxed);
	const struct fuse_out_header *out = iov[0].iov_base;
	/* do_init answers with exactly two pieces: header and fuse_init_out */
	if (init == 0 || count != 2 || iov[0].iov_len != sizeof *out || out->unique != init)
		return writev(fd, iov, count);
	atomic_store(&t->io.init_unique, 0);
	return write_init_reply(t, fd, iov);
}

static ssize_t io_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned flags,
			 void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int ftr_devio_setup(struct ftr *t, struct fuse_session *se)
{
	/* Splice both ways, as without custom io: libfuse offers splice only
	 * for the directions the io implements. */
	static const struct fuse_custom_io ops = {
		.read = io_read,
		.writev = io_writev,
		.splice_receive = io_splice,
		.splice_send = io_splice,
	};
	int fd = fuse_session_fd(se);
	int res = fuse_session_custom_io(se, &ops, fd);
	if (res < 0)
		return res;
	t->io.devfd = fd;
	t->io.unwrapped = NULL;
	return 0;
}

uint64_t ftr_offered(const struct ftr *t)
{
	return atomic_load(&t->io.offered);
}

void ftr_ask(struct ftr *t, uint64_t flag, bool on)
{
	if (on)
		atomic_fetch_or(&t->io.asked, flag);
	else
		atomic_fetch_and(&t->io.asked, ~flag);
}
