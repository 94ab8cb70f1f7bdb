/* A small pool that runs the iterations of a loop in parallel.  Used where
 * one request needs many independent layer calls that may each wait on the
 * disk (the lookups of a READDIRPLUS batch): their reads then overlap.  The
 * pool is the mount's (fs->workers); its threads get it as their arg. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "overlay.h"

#define WORKERS 4

struct ovl_job {
	void (*fn)(void *arg, size_t i);
	void *arg;
	size_t n;
	atomic_size_t next;   /* next iteration to claim */
	atomic_size_t done;
	unsigned users;       /* workers inside work_on(); under lock */
	struct ovl_job *link;
	pthread_mutex_t lock; /* with cond: the caller waits for done == n */
	pthread_cond_t cond;
};

/* Runs iterations of job until none is left to claim. */
static void work_on(struct ovl_job *j)
{
	size_t i;
	while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
		j->fn(j->arg, i);
		if (atomic_fetch_add(&j->done, 1) + 1 == j->n) {
			pthread_mutex_lock(&j->lock);
			pthread_cond_broadcast(&j->cond);
			pthread_mutex_unlock(&j->lock);
		}
	}
}

static void *worker(void *arg)
{
	struct ovl_workers *w = arg;
	for (;;) {
		pthread_mutex_lock(&w->lock);
		while (w->queue == NULL && !w->stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->stopping) {
			w->threads--;
			pthread_cond_broadcast(&w->cond);
			pthread_mutex_unlock(&w->lock);
			return NULL;
		}
		struct ovl_job *j = w->queue;
		if (atomic_load(&j->next) >= j->n) {
			w->queue = j->link; /* every iteration claimed: drop it rather than spin on it */
			pthread_mutex_unlock(&w->lock);
			continue;
		}
		pthread_mutex_lock(&j->lock);
		j->users++; /* taken under the pool's lock: the caller waits for us */
		pthread_mutex_unlock(&j->lock);
		pthread_mutex_unlock(&w->lock);
		work_on(j);
		pthread_mutex_lock(&j->lock);
		if (--j->users == 0)
			pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&j->lock);
	}
	return NULL;
}

int ovl_thread_start(void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* signals stay with the session's threads */
	pthread_t t;
	int res = pthread_create(&t, NULL, fn, arg);
	if (res == 0)
		pthread_detach(t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -res;
}

void ovl_once(atomic_bool *done, pthread_mutex_t *lock, void (*fn)(void *arg), void *arg)
{
	if (atomic_load_explicit(done, memory_order_acquire))
		return;
	pthread_mutex_lock(lock);
	if (!atomic_load_explicit(done, memory_order_relaxed)) {
		fn(arg);
		atomic_store_explicit(done, true, memory_order_release);
	}
	pthread_mutex_unlock(lock);
}

void ovl_workers_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->workers.lock, NULL);
	pthread_cond_init(&fs->workers.cond, NULL);
}

/* Under the pool's lock (ovl_once). */
static void start_workers(void *arg)
{
	struct ovl_workers *w = arg;
	for (int i = 0; i < WORKERS; i++)
		if (ovl_thread_start(worker, w) == 0)
			w->threads++;
	w->have_workers = w->threads > 0;
}

void ovl_parallel_for(struct ovl_fs *fs, size_t n, void (*fn)(void *arg, size_t i), void *arg)
{
	struct ovl_workers *w = &fs->workers;
	ovl_once(&w->started, &w->lock, start_workers, w);
	if (n < 2 || !w->have_workers) {
		for (size_t i = 0; i < n; i++)
			fn(arg, i);
		return;
	}
	struct ovl_job j = { .fn = fn, .arg = arg, .n = n };
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.cond, NULL);
	pthread_mutex_lock(&w->lock);
	struct ovl_job **tail = &w->queue;
	while (*tail)
		tail = &(*tail)->link;
	*tail = &j;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);

	work_on(&j);

	/* Unlink before returning: the job lives on this stack. */
	pthread_mutex_lock(&w->lock);
	for (struct ovl_job **p = &w->queue; *p; p = &(*p)->link)
		if (*p == &j) {
			*p = j.link;
			break;
		}
	pthread_mutex_unlock(&w->lock);
	pthread_mutex_lock(&j.lock);
	while (atomic_load(&j.done) < n || j.users > 0)
		pthread_cond_wait(&j.cond, &j.lock);
	pthread_mutex_unlock(&j.lock);
	pthread_mutex_destroy(&j.lock);
	pthread_cond_destroy(&j.cond);
}

void ovl_workers_stop(struct ovl_fs *fs)
{
	struct ovl_workers *w = &fs->workers;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	while (w->threads > 0)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
}
