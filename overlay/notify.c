/* Entry (and attribute) invalidations sent from outside request handlers.  The kernel takes
 * the parent directory's lock to drop an entry, and the request being served
 * may have come from a caller that holds that very lock (with the writeback
 * cache, rename flushes the moved inode's times by SETATTR while it still
 * holds both directories): sent from the handler, neither side would move. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

struct inval {
	struct fuse_session *se;
	fuse_ino_t parent;           /* or the inode whose attributes go (len 0) */
	size_t len;
	char name[];
};

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pending_done = PTHREAD_COND_INITIALIZER;
static unsigned pending;

static void *send_inval(void *arg)
{
	struct inval *iv = arg;
	if (iv->len == 0)
		fuse_lowlevel_notify_inval_inode(iv->se, iv->parent, -1, 0); /* attributes only */
	else
		fuse_lowlevel_notify_inval_entry(iv->se, iv->parent, iv->name, iv->len);
	free(iv);
	pthread_mutex_lock(&pending_lock);
	if (--pending == 0)
		pthread_cond_broadcast(&pending_done);
	pthread_mutex_unlock(&pending_lock);
	return NULL;
}

static void send_later(struct ovl_fs *fs, fuse_ino_t parent, const char *name)
{
	size_t len = strlen(name);
	struct inval *iv = fs->se ? malloc(sizeof *iv + len + 1) : NULL;
	if (iv == NULL)
		return; /* the caller's ESTALE alone still makes path walks look again */
	*iv = (struct inval){ .se = fs->se, .parent = parent, .len = len };
	memcpy(iv->name, name, len + 1);
	pthread_mutex_lock(&pending_lock);
	if (ovl_thread_start(send_inval, iv) == 0)
		pending++;
	else
		free(iv);
	pthread_mutex_unlock(&pending_lock);
}

void ovl_notify_inval_entry_later(struct ovl_fs *fs, fuse_ino_t parent, const char *name)
{
	send_later(fs, parent, name);
}

void ovl_notify_inval_attr_later(struct ovl_fs *fs, fuse_ino_t ino)
{
	send_later(fs, ino, "");
}

void ovl_notify_drain(void)
{
	pthread_mutex_lock(&pending_lock);
	while (pending > 0)
		pthread_cond_wait(&pending_done, &pending_lock);
	pthread_mutex_unlock(&pending_lock);
}
