/* A small pool that runs the iterations of a loop in parallel.  Used where
 * one request needs many independent layer calls that may each wait on the
 * disk (the lookups of a READDIRPLUS batch): their reads then overlap. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "overlay.h"

#define WORKERS 4

struct job {
	void (*fn)(void *arg, size_t i);
	void *arg;
	size_t n;
	atomic_size_t next;   /* next iteration to claim */
	atomic_size_t done;
	unsigned users;       /* workers inside work_on(); under lock */
	struct job *link;
	pthread_mutex_t lock; /* with cond: the caller waits for done == n */
	pthread_cond_t cond;
};

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct job *queue;
static pthread_once_t started = PTHREAD_ONCE_INIT;
static bool have_workers;

/* Runs iterations of job until none is left to claim. */
static void work_on(struct job *j)
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

static void *worker(void *unused)
{
	(void)unused;
	for (;;) {
		pthread_mutex_lock(&queue_lock);
		while (queue == NULL)
			pthread_cond_wait(&queue_cond, &queue_lock);
		struct job *j = queue;
		if (atomic_load(&j->next) >= j->n) {
			queue = j->link; /* every iteration claimed: drop it rather than spin on it */
			pthread_mutex_unlock(&queue_lock);
			continue;
		}
		pthread_mutex_lock(&j->lock);
		j->users++; /* taken under queue_lock: the caller waits for us */
		pthread_mutex_unlock(&j->lock);
		pthread_mutex_unlock(&queue_lock);
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

static void start_workers(void)
{
	for (int i = 0; i < WORKERS; i++)
		if (ovl_thread_start(worker, NULL) == 0)
			have_workers = true;
}

void ovl_parallel_for(size_t n, void (*fn)(void *arg, size_t i), void *arg)
{
	pthread_once(&started, start_workers);
	if (n < 2 || !have_workers) {
		for (size_t i = 0; i < n; i++)
			fn(arg, i);
		return;
	}
	struct job j = { .fn = fn, .arg = arg, .n = n };
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.cond, NULL);
	pthread_mutex_lock(&queue_lock);
	struct job **tail = &queue;
	while (*tail)
		tail = &(*tail)->link;
	*tail = &j;
	pthread_cond_broadcast(&queue_cond);
	pthread_mutex_unlock(&queue_lock);

	work_on(&j);

	/* Unlink before returning: the job lives on this stack. */
	pthread_mutex_lock(&queue_lock);
	for (struct job **p = &queue; *p; p = &(*p)->link)
		if (*p == &j) {
			*p = j.link;
			break;
		}
	pthread_mutex_unlock(&queue_lock);
	pthread_mutex_lock(&j.lock);
	while (atomic_load(&j.done) < n || j.users > 0)
		pthread_cond_wait(&j.cond, &j.lock);
	pthread_mutex_unlock(&j.lock);
	pthread_mutex_destroy(&j.lock);
	pthread_cond_destroy(&j.cond);
}
