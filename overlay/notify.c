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
	struct ovl_fs *fs;
	fuse_ino_t parent;           /* or the inode whose attributes go (len 0) */
	size_t len;
	char name[];
};

void ovl_notify_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->notify.lock, NULL);
	pthread_cond_init(&fs->notify.done, NULL);
}

static void *send_inval(void *arg)
{
	struct inval *iv = arg;
	struct ovl_notify *nt = &iv->fs->notify;
	if (iv->len == 0)
		fuse_lowlevel_notify_inval_inode(iv->fs->se, iv->parent, -1, 0); /* attributes only */
	else
		fuse_lowlevel_notify_inval_entry(iv->fs->se, iv->parent, iv->name, iv->len);
	free(iv);
	pthread_mutex_lock(&nt->lock);
	if (--nt->pending == 0)
		pthread_cond_broadcast(&nt->done);
	pthread_mutex_unlock(&nt->lock);
	return NULL;
}

static void send_later(struct ovl_fs *fs, fuse_ino_t parent, const char *name)
{
	size_t len = strlen(name);
	struct inval *iv = fs->se ? malloc(sizeof *iv + len + 1) : NULL;
	if (iv == NULL)
		return; /* the caller's ESTALE alone still makes path walks look again */
	*iv = (struct inval){ .fs = fs, .parent = parent, .len = len };
	memcpy(iv->name, name, len + 1);
	pthread_mutex_lock(&fs->notify.lock);
	if (ovl_thread_start(send_inval, iv) == 0)
		fs->notify.pending++;
	else
		free(iv);
	pthread_mutex_unlock(&fs->notify.lock);
}

void ovl_notify_inval_entry_later(struct ovl_fs *fs, fuse_ino_t parent, const char *name)
{
	send_later(fs, parent, name);
}

void ovl_notify_inval_attr_later(struct ovl_fs *fs, fuse_ino_t ino)
{
	send_later(fs, ino, "");
}

void ovl_notify_drain(struct ovl_fs *fs)
{
	struct ovl_notify *nt = &fs->notify;
	pthread_mutex_lock(&nt->lock);
	while (nt->pending > 0)
		pthread_cond_wait(&nt->done, &nt->lock);
	pthread_mutex_unlock(&nt->lock);
}
