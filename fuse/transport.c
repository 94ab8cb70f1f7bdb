/* The life of a mount's transport (see transport.h): made, set up on the
 * session, its part of INIT, stopped; and its log. */
#include "config.h"

#include <stdlib.h>

#include "internal.h"

struct ftr *ftr_new(const struct ftr_env *env)
{
	struct ftr *t = calloc(1, sizeof *t);
	if (t == NULL)
		return NULL;
	t->env = *env;
	t->io.unwrapped = "not set up";
	t->io.devfd = -1;
	t->poller.last_gap = INT64_MAX;
	pthread_mutex_init(&t->uring.live_lock, NULL);
	pthread_cond_init(&t->uring.live_cond, NULL);
	t->pt.unusable = "not set up";
	pthread_mutex_init(&t->pt.lock, NULL);
	return t;
}

int ftr_setup(struct ftr *t, struct fuse_session *se, bool threaded, bool may_passthrough)
{
	ftr_uring_wanted(t, se, threaded);
	ftr_passthrough_wanted(t, may_passthrough);
	return ftr_devio_setup(t, se);
}

void ftr_init(struct ftr *t, struct fuse_conn_info *conn)
{
	ftr_uring_init(t, conn);
	/* Last: passthrough depends on the final want (no writeback cache). */
	ftr_passthrough_init(t, conn);
}

void ftr_counters(const struct ftr *t, struct ftr_counters *c)
{
	c->uring_requests = atomic_load(&t->uring.requests);
	c->uring_threads = atomic_load(&t->uring.threads);
	c->polls = atomic_load(&t->poller.polls);
	c->polls_caught = atomic_load(&t->poller.caught);
}

bool ftr_stop(struct ftr *t)
{
	return ftr_uring_stop(t);
}

void ftr_log(const struct ftr *t, enum ftr_log_level level, const char *fmt, ...)
{
	if (t->env.log == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	t->env.log(level, fmt, ap);
	va_end(ap);
}
