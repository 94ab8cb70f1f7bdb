/* Directory read-ahead for tree walks.  find, rm -rf, chmod -R and du read a
 * directory and then open its subdirectories one after another; on a cold
 * tree each of those waits first for its own blocks, then for the inodes of
 * its entries.  Once a listing shows subdirectories, one thread of ours reads
 * them ahead (their blocks and the inodes of their first entries) into the
 * kernel's caches, so that the walk finds them warm.  Nothing of ours is kept
 * but the directory fds the walk opens anyway; a full queue drops work. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"

#define QUEUE 64
/* the entries the first READDIRPLUS batch of a directory looks up */
#define ENTRIES_WARMED 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct ovl_node *queue[QUEUE]; /* each holds a ref */
static size_t head, count;
static struct ovl_fs *queue_fs;
static pthread_once_t started = PTHREAD_ONCE_INIT;
static bool running;

static void warm_layer(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd)
{
	int fd = ovl_layer_open(fs, layer, dirfd, ".", O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return;
	char buf[32768];
	unsigned warmed = 0;
	ssize_t len;
	while (warmed < ENTRIES_WARMED && (len = getdents64(fd, buf, sizeof buf)) > 0) {
		for (ssize_t off = 0; off < len && warmed < ENTRIES_WARMED;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			off += d->d_reclen;
			struct stat st;
			if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) {
				layer->ops->statat(layer, dirfd, d->d_name, &st);
				warmed++;
			}
		}
	}
	close(fd);
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
		/* a directory's layers and place change only under ns_lock */
		pthread_rwlock_rdlock(&fs->ns_lock);
		struct ovl_layer *layer = i < n->dir->nlayers ? &fs->layers[n->dir->layers[i]] : NULL;
		int fd = layer ? ovl_dir_fd_get(fs, n, i) : -1;
		pthread_rwlock_unlock(&fs->ns_lock);
		if (fd < 0)
			break;
		warm_layer(fs, layer, fd);
		ovl_dir_fd_put(n);
	}
	atomic_fetch_add(&fs->stat_prefetches, 1);
}

static void *prefetcher(void *unused)
{
	(void)unused;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (count == 0)
			pthread_cond_wait(&cond, &lock);
		struct ovl_node *n = queue[head];
		head = (head + 1) % QUEUE;
		count--;
		pthread_mutex_unlock(&lock);
		warm(queue_fs, n);
		ovl_node_unref(queue_fs, n);
	}
	return NULL;
}

static void start(void)
{
	running = ovl_thread_start(prefetcher, NULL) == 0;
}

void ovl_prefetch_dir(struct ovl_fs *fs, struct ovl_node *dir)
{
	/* once a node: a listed or read-ahead directory is warm already */
	if (is_listed(dir) || atomic_exchange(&dir->dir->prefetched, true))
		return;
	pthread_once(&started, start);
	if (!running)
		return;
	pthread_mutex_lock(&lock);
	if (count < QUEUE) {
		ovl_node_ref(fs, dir);
		queue_fs = fs;
		queue[(head + count) % QUEUE] = dir;
		count++;
		pthread_cond_signal(&cond);
	}
	pthread_mutex_unlock(&lock);
}
