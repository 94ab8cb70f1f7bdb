/* FUSE over io_uring (kernel 6.14+, fuse.enable_uring=1): requests come
 * through one queue per CPU, each served by daemon threads pinned to that
 * CPU, so a request and its reply rarely cross CPUs (DESIGN.md §3).
 * libfuse 3.14 has no transport for it: uring.c runs the queues and hands
 * each request to fuse_session_process_buf; devio.c negotiates it at INIT
 * and routes the replies here.  FORGET, INTERRUPT and notifications stay on
 * /dev/fuse, served by libfuse's loop as before.
 *
 * The kernel keeps one queue per possible CPU and puts a request on the queue
 * of the CPU its caller runs on; each registered entry (a header buffer and a
 * payload buffer) takes one request at a time, and its completion goes to the
 * thread that registered it.  Here every entry has a thread of its own,
 * pinned to the queue's CPU.  A queue starts with one and gains another (up
 * to THREADS_PER_QUEUE) whenever all of its threads are busy: a handler that
 * waits on the kernel (the writeback that lseek starts, say) may need
 * another request of its own CPU served meanwhile.
 *
 * The state is the transport's (t->uring, internal.h); a queue and its
 * servers point back to it. */
#include "config.h"

#include <errno.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* The io_uring part of the FUSE uapi (kernel 6.14+), which Debian 12's
 * linux/fuse.h predates. */
#define URING_IN_OUT_SZ 128
#define URING_OP_IN_SZ 128
struct uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;   /* the request's unique: named again by the commit */
	uint32_t payload_sz;  /* bytes in the payload buffer, either way */
	uint32_t padding;
	uint64_t reserved;
};
struct uring_req_header {
	char in_out[URING_IN_OUT_SZ];  /* fuse_in_header in, fuse_out_header out */
	char op_in[URING_OP_IN_SZ];    /* the opcode's fixed in-struct (first argument) */
	struct uring_ent_in_out ent;
};
enum { URING_CMD_REGISTER = 1, URING_CMD_COMMIT_AND_FETCH = 2 };
struct uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

#define THREADS_PER_QUEUE 8
/* Requests whose payload (names, link targets, xattr values) is at most this
 * are copied out of the ring buffer: a handler may still read them after it
 * has replied, when the buffer may already hold the next request.  Larger
 * ones (write data) are served in place. */
#define STAGE_PAYLOAD 8192
/* Room before the payload for the headers, to make a large request one
 * contiguous buffer as libfuse wants it. */
#define PREFIX 4096

struct server {
	struct ftr_queue *q;
	struct io_uring ring;
	struct uring_req_header hdr;
	struct iovec iov[2];
	char *region;          /* PREFIX, then the payload buffer */
	uint64_t commit_id;
	uint64_t unique;
	bool replied;
	bool registered;       /* a request came, so the entry is registered */
	/* read through struct fuse_in_header and the opcode's in-struct */
	_Alignas(struct fuse_in_header) char stage[sizeof(struct fuse_in_header) + URING_OP_IN_SZ + STAGE_PAYLOAD];
};

struct ftr_queue {
	struct ftr *t;
	unsigned qid;
	pthread_mutex_t lock;
	unsigned nthreads;     /* under lock */
	atomic_int idle;       /* threads waiting for a request */
};

/* The server whose request this thread is handling, for take_reply. */
static _Thread_local struct server *serving;

static bool kernel_allows_uring(void)
{
	FILE *f = fopen("/sys/module/fuse/parameters/enable_uring", "re");
	if (f == NULL)
		return false;
	int c = fgetc(f);
	fclose(f);
	return c == 'Y' || c == '1';
}

/* A ring for one thread's commands: SQE128 carries them; the kernels that
 * have FUSE over io_uring (6.14+) all take the single-issuer flags. */
static int make_ring(struct io_uring *ring)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	return io_uring_queue_init_params(2, ring, &p);
}

/* A /dev/fuse command for queue qid (sqe->addr, sqe->len and the commit id
 * are the caller's to add). */
static void fill_cmd(const struct ftr *t, struct io_uring_sqe *sqe, uint32_t op, unsigned qid)
{
	memset(sqe, 0, 128); /* SQE128 */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = t->io.devfd;
	sqe->cmd_op = op;
	((struct uring_cmd_req *)sqe->cmd)->qid = (uint16_t)qid;
}

/* Once asked for at INIT, the kernel holds every request back until each
 * queue has an entry: so ask only if this process can make rings at all
 * (seccomp profiles and kernel.io_uring_disabled forbid it). */
static bool can_make_rings(struct ftr *t)
{
	struct io_uring ring;
	int res = make_ring(&ring);
	if (res < 0) {
		ftr_log(t, FTR_DEBUG, "io_uring: io_uring_setup: %s", strerror(-res));
		return false;
	}
	io_uring_queue_exit(&ring);
	return true;
}

bool ftr_uring_wanted(struct ftr *t, struct fuse_session *se, bool threaded)
{
	const char *off = getenv("FUSE_OVERLAYFS_DISABLE_IO_URING");
	t->uring.se = se;
	t->uring.wanted = threaded && (off == NULL || *off == '\0') && kernel_allows_uring() && can_make_rings(t);
	return t->uring.wanted;
}

void ftr_uring_init(struct ftr *t, struct fuse_conn_info *conn)
{
	const char *why = !t->uring.wanted ? "not enabled (fuse.enable_uring=N, threaded=0, "
					     "FUSE_OVERLAYFS_DISABLE_IO_URING, or no io_uring for this process)"
			  : t->io.unwrapped != NULL ? t->io.unwrapped
			  : !(ftr_offered(t) & FTR_INIT_OVER_IO_URING) ? "the kernel does not offer it"
			  : NULL;
	t->uring.asked = why == NULL;
	ftr_ask(t, FTR_INIT_OVER_IO_URING, t->uring.asked);
	if (t->uring.asked) {
		/* a spliced reply would bypass writev, and so the ring */
		conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
		ftr_log(t, FTR_DEBUG, "io_uring: asked for");
	} else {
		ftr_log(t, FTR_DEBUG, "io_uring: not in use (%s)", why);
	}
}

/* Possible CPUs, as the kernel counts its queues (num_possible_cpus). */
static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned n = 0, a, b;
	if (f != NULL) {
		int c;
		do {
			if (fscanf(f, "%u", &a) != 1)
				break;
			b = a;
			if ((c = fgetc(f)) == '-') {
				if (fscanf(f, "%u", &b) != 1)
					break;
				c = fgetc(f);
			}
			n += b - a + 1;
		} while (c == ',');
		fclose(f);
	}
	return n > 0 ? n : (unsigned)sysconf(_SC_NPROCESSORS_CONF);
}

static void prep_cmd(struct server *s, uint32_t op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	if (sqe == NULL)
		return; /* cannot be: one command in flight at a time */
	fill_cmd(s->q->t, sqe, op, s->q->qid);
	if (op == URING_CMD_REGISTER) {
		sqe->addr = (uintptr_t)s->iov;
		sqe->len = 2;
	} else {
		((struct uring_cmd_req *)sqe->cmd)->commit_id = s->commit_id;
	}
}

static void reply_error(struct server *s, int err)
{
	struct fuse_out_header out = { .len = sizeof out, .error = -err, .unique = s->unique };
	memcpy(s->hdr.in_out, &out, sizeof out);
	s->hdr.ent.payload_sz = 0;
	s->replied = true;
}

ssize_t ftr_uring_take_reply(const struct iovec *iov, int count)
{
	struct server *s = serving;
	if (s == NULL || s->replied || count < 1 || iov[0].iov_len != sizeof(struct fuse_out_header))
		return -1;
	struct fuse_out_header out;
	memcpy(&out, iov[0].iov_base, sizeof out);
	if (out.unique != s->unique)
		return -1; /* a notification, or another request's */
	char *payload = s->region + PREFIX;
	size_t n = 0;
	for (int i = 1; i < count; i++) {
		if (iov[i].iov_len > s->q->t->uring.payload_size - n) {
			errno = EINVAL;
			return -1; /* cannot be: no reply is larger than the largest request */
		}
		memmove(payload + n, iov[i].iov_base, iov[i].iov_len);
		n += iov[i].iov_len;
	}
	memcpy(s->hdr.in_out, &out, sizeof out);
	s->hdr.ent.payload_sz = (uint32_t)n;
	s->replied = true;
	return (ssize_t)(sizeof out + n);
}

static void handle(struct server *s)
{
	struct ftr *t = s->q->t;
	struct fuse_in_header in;
	memcpy(&in, s->hdr.in_out, sizeof in);
	size_t psz = s->hdr.ent.payload_sz, fixed = sizeof in;
	s->commit_id = s->hdr.ent.commit_id;
	s->unique = in.unique;
	s->replied = false;
	if (in.len < fixed + psz || in.len - fixed - psz > URING_OP_IN_SZ || psz > t->uring.payload_size) {
		ftr_log(t, FTR_ERR, "io_uring: malformed request (opcode %u, len %u, payload %zu)", in.opcode, in.len, psz);
		reply_error(s, EIO);
		return;
	}
	size_t op = in.len - fixed - psz;
	char *payload = s->region + PREFIX;
	char *start = psz <= STAGE_PAYLOAD ? s->stage : payload - fixed - op;
	memcpy(start, &in, fixed);
	memcpy(start + fixed, s->hdr.op_in, op);
	if (start == s->stage)
		memcpy(start + fixed + op, payload, psz);
	struct fuse_buf buf = { .size = in.len, .mem = start };
	ftr_devio_note_request(start, in.len);
	serving = s;
	fuse_session_process_buf(t->uring.se, &buf);
	serving = NULL;
	atomic_fetch_add_explicit(&t->uring.requests, 1, memory_order_relaxed);
	if (!s->replied) {
		ftr_log(t, FTR_ERR, "io_uring: opcode %u got no reply", in.opcode);
		reply_error(s, EIO);
	}
}

/* A queue could not get its first entry.  Unless io_uring already serves
 * (then every queue has one), the kernel holds every request back until it
 * does: a REGISTER it refuses (no iovec) makes it give io_uring up and take
 * /dev/fuse again. */
static void give_up(struct ftr *t, unsigned qid, const char *what, int err)
{
	if (ftr_uring_serving(t))
		return;
	ftr_log(t, FTR_WARN, "io_uring: queue %u: %s: %s; requests come through /dev/fuse", qid, what, strerror(err));
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	if (make_ring(&ring) < 0) {
		ftr_log(t, FTR_ERR, "io_uring: cannot turn io_uring off: requests stay held");
		return;
	}
	if ((sqe = io_uring_get_sqe(&ring)) != NULL) {
		fill_cmd(t, sqe, URING_CMD_REGISTER, qid); /* no iovec: refused */
		io_uring_submit_and_wait(&ring, 1);
	}
	io_uring_queue_exit(&ring);
}

static void thread_gone(struct ftr *t)
{
	pthread_mutex_lock(&t->uring.live_lock);
	if (atomic_fetch_sub(&t->uring.threads, 1) == 1)
		pthread_cond_broadcast(&t->uring.live_cond);
	pthread_mutex_unlock(&t->uring.live_lock);
}

static void grow(struct ftr_queue *q);

static void *serve(void *arg)
{
	struct server *s = arg;
	struct ftr_queue *q = s->q;
	struct ftr *t = q->t;
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus); /* a cpuset may forbid it: then unpinned */

	int res = make_ring(&s->ring);
	if (res < 0) {
		give_up(t, q->qid, "io_uring_setup", -res);
		atomic_fetch_sub(&q->idle, 1);
		thread_gone(t);
		return NULL;
	}
	prep_cmd(s, URING_CMD_REGISTER);
	for (int tries = 0;;) {
		struct io_uring_cqe *cqe;
		res = io_uring_submit_and_wait(&s->ring, 1);
		if (res < 0 && res != -EINTR) {
			if (s->registered)
				ftr_log(t, FTR_WARN, "io_uring: queue %u: io_uring_enter: %s", q->qid, strerror(-res));
			else
				give_up(t, q->qid, "io_uring_enter", -res);
			break;
		}
		if (io_uring_peek_cqe(&s->ring, &cqe) != 0)
			continue;
		res = cqe->res;
		io_uring_cqe_seen(&s->ring, cqe);
		if (res == -EAGAIN && !s->registered && ++tries < 200) {
			/* the kernel has not finished INIT yet */
			struct timespec ts = { 0, 5000000 };
			nanosleep(&ts, NULL);
			prep_cmd(s, URING_CMD_REGISTER);
			continue;
		}
		if (res < 0) {
			/* ENOTCONN, ECANCELED: the mount is going away.  A refused
			 * REGISTER has made the kernel give io_uring up already;
			 * EAGAIN to the end has not. */
			if (res == -EAGAIN)
				give_up(t, q->qid, "register", -res);
			else if (!s->registered)
				ftr_log(t, FTR_WARN, "io_uring: queue %u: register: %s; requests come through /dev/fuse",
					q->qid, strerror(-res));
			break;
		}
		if (!s->registered)
			ftr_log(t, FTR_DEBUG, "io_uring: queue %u: a thread registered", q->qid);
		s->registered = true;
		if (atomic_fetch_sub(&q->idle, 1) == 1)
			grow(q);
		handle(s);
		atomic_fetch_add(&q->idle, 1);
		prep_cmd(s, URING_CMD_COMMIT_AND_FETCH);
	}
	atomic_fetch_sub(&q->idle, 1);
	io_uring_queue_exit(&s->ring);
	/* The region stays: a request still in flight may name it.  The process ends soon. */
	thread_gone(t);
	return NULL;
}

/* Starts one more thread on q if it has room for one. */
static void grow(struct ftr_queue *q)
{
	struct ftr *t = q->t;
	size_t payload_size = t->uring.payload_size;
	pthread_mutex_lock(&q->lock);
	if (q->nthreads >= THREADS_PER_QUEUE) {
		pthread_mutex_unlock(&q->lock);
		return;
	}
	struct server *s = calloc(1, sizeof *s);
	char *region = s ? mmap(NULL, PREFIX + payload_size, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : MAP_FAILED;
	if (region == MAP_FAILED) {
		free(s);
		if (q->nthreads == 0)
			give_up(t, q->qid, "buffers", ENOMEM);
		else
			ftr_log(t, FTR_WARN, "io_uring: queue %u: no memory for another thread", q->qid);
		pthread_mutex_unlock(&q->lock);
		return;
	}
	s->q = q;
	s->region = region;
	s->iov[0] = (struct iovec){ &s->hdr, sizeof s->hdr };
	s->iov[1] = (struct iovec){ region + PREFIX, payload_size };
	/* Signals go to libfuse's loop threads: an io_uring_enter here is not interrupted. */
	atomic_fetch_add(&q->idle, 1);
	atomic_fetch_add(&t->uring.threads, 1);
	int err = -t->env.thread_start(serve, s);
	if (err != 0) {
		atomic_fetch_sub(&q->idle, 1);
		thread_gone(t);
		munmap(region, PREFIX + payload_size);
		free(s);
		if (q->nthreads == 0)
			give_up(t, q->qid, "pthread_create", err);
		else
			ftr_log(t, FTR_WARN, "io_uring: queue %u: pthread_create: %s", q->qid, strerror(err));
	} else {
		q->nthreads++;
	}
	pthread_mutex_unlock(&q->lock);
}

void ftr_uring_start(struct ftr *t, uint32_t max_write, uint16_t max_pages)
{
	/* what the kernel requires of every payload buffer (fuse_uring_create) */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t size = 8192;
	if (max_write > size)
		size = max_write;
	if ((size_t)(max_pages ? max_pages : 32) * page > size)
		size = (size_t)(max_pages ? max_pages : 32) * page;
	t->uring.payload_size = size;
	unsigned nqueues = possible_cpus();
	struct ftr_queue *queues = calloc(nqueues, sizeof *queues);
	if (queues == NULL) {
		ftr_log(t, FTR_ERR, "io_uring: no memory for %u queues", nqueues);
		return;
	}
	t->uring.nqueues = nqueues;
	t->uring.queues = queues;
	/* Until every queue has an entry the kernel holds requests back: a queue
	 * that cannot start makes it give up io_uring (EOPNOTSUPP-like errors at
	 * register do so too), and requests come through /dev/fuse. */
	for (unsigned i = 0; i < nqueues; i++) {
		queues[i].t = t;
		queues[i].qid = i;
		pthread_mutex_init(&queues[i].lock, NULL);
		grow(&queues[i]);
	}
	ftr_log(t, FTR_DEBUG, "io_uring: %u queues, payload buffers of %zu bytes", nqueues, size);
}

bool ftr_uring_stop(struct ftr *t)
{
	/* The unmount has completed every entry with ENOTCONN; a thread still
	 * inside a handler finishes it first. */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&t->uring.live_lock);
	int res = 0;
	while (atomic_load(&t->uring.threads) > 0 && res != ETIMEDOUT)
		res = pthread_cond_timedwait(&t->uring.live_cond, &t->uring.live_lock, &until);
	bool done = atomic_load(&t->uring.threads) == 0;
	pthread_mutex_unlock(&t->uring.live_lock);
	if (!done)
		ftr_log(t, FTR_WARN, "io_uring: %ld threads still running at exit", atomic_load(&t->uring.threads));
	return done;
}

bool ftr_uring_serving(const struct ftr *t)
{
	return atomic_load_explicit(&t->uring.requests, memory_order_relaxed) > 0;
}

