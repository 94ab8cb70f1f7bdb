/* Directory read-ahead for tree walks.  find, rm -rf, chmod -R and du read a
 * directory and then open its subdirectories one after another; on a cold
 * tree each of those waits first for its own blocks, then for the inodes of
 * its entries.  Once a listing shows subdirectories, one thread of ours reads
 * them ahead (their blocks and the inodes of their first entries) into the
 * kernel's caches, so that the walk finds them warm.  Nothing of ours is kept
 * but the directory fds the walk opens anyway; a full queue drops work.  The
 * queue is the mount's (fs->prefetch); its thread gets fs as its arg. */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "overlay.h"

/* the entries the first READDIRPLUS batch of a directory looks up */
#define ENTRIES_WARMED 256

struct warm_pass {
	struct ovl_layer *layer;
	int dirfd;
	unsigned warmed;
};

static int warm_entry(void *arg, const char *name, uint8_t type, ino_t ino)
{
	struct warm_pass *p = arg;
	struct stat st;
	(void)type;
	(void)ino;
	if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
		p->layer->ops->statat(p->layer, p->dirfd, name, &st);
		p->warmed++;
	}
	return p->warmed >= ENTRIES_WARMED;
}

static void warm_layer(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd)
{
	struct warm_pass p = { .layer = layer, .dirfd = dirfd };
	int fd = ovl_layer_open(fs, layer, dirfd, ".", O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return;
	layer->ops->list(layer, fd, warm_entry, &p);
	layer->ops->close(layer, fd);
}

static bool is_listed(struct ovl_node *n)
{
	return __atomic_load_n(&n->dir->listing, __ATOMIC_RELAXED) != NULL;
}

static void warm(struct ovl_fs *fs, struct ovl_node *n)
{
	/* the walk may have got there first: its listing read it already */
	if (is_listed(n))
		return;
	for (uint32_t i = 0;; i++) {
		/* a directory's layers change only under its own lock written */
		ovl_ns_lock(fs, n, false);
		struct ovl_layer *layer = i < n->dir->nlayers ? &fs->layers[n->dir->layers[i]] : NULL;
		int fd = layer ? ovl_dir_fd_get(fs, n, i) : -1;
		ovl_ns_unlock(fs, n);
		if (fd < 0)
			break;
		warm_layer(fs, layer, fd);
		ovl_dir_fd_put(n);
	}
	atomic_fetch_add(&fs->stat_prefetches, 1);
}

static void *prefetcher(void *arg)
{
	struct ovl_fs *fs = arg;
	struct ovl_prefetch *p = &fs->prefetch;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (p->count == 0 && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stopping) {
			p->running = false;
			pthread_cond_broadcast(&p->cond);
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		struct ovl_node *n = p->queue[p->head];
		p->head = (p->head + 1) % OVL_PREFETCH_QUEUE;
		p->count--;
		pthread_mutex_unlock(&p->lock);
		warm(fs, n);
		ovl_node_unref(fs, n);
	}
}

void ovl_prefetch_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->prefetch.lock, NULL);
	pthread_cond_init(&fs->prefetch.cond, NULL);
}

/* Under the queue's lock (ovl_once). */
static void start(void *arg)
{
	struct ovl_fs *fs = arg;
	fs->prefetch.running = ovl_thread_start(prefetcher, fs) == 0;
}

void ovl_prefetch_dir(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_prefetch *p = &fs->prefetch;
	/* once a node: a listed or read-ahead directory is warm already */
	if (is_listed(dir) || atomic_exchange(&dir->dir->prefetched, true))
		return;
	ovl_once(&p->started, &p->lock, start, fs);
	pthread_mutex_lock(&p->lock);
	if (p->running && p->count < OVL_PREFETCH_QUEUE) {
		ovl_node_ref(fs, dir);
		p->queue[(p->head + p->count) % OVL_PREFETCH_QUEUE] = dir;
		p->count++;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

void ovl_prefetch_stop(struct ovl_fs *fs)
{
	struct ovl_prefetch *p = &fs->prefetch;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	while (p->running)
		pthread_cond_wait(&p->cond, &p->lock);
	/* the nodes still queued go with the node table */
	pthread_mutex_unlock(&p->lock);
}
