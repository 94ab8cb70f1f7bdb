/* The namespace locks, and the one place their rules are written down.
 *
 * tree_lock (fs): read by every operation that resolves a node to a place
 * in a layer; written only by changes to the tree's shape that readers
 * cannot see coming: a directory renamed (its name is read, without its
 * parent's lock, by whoever opens a directory below it), a move between
 * two parents (as the VFS takes
 * s_vfs_rename_mutex for them), a link, and the removal of a name of an
 * upper hard link (its node may take a name in another directory).
 *
 * ns (each directory): read to look names up in it, list it, or use a
 * child's name; written to change its names (create, remove, a rename
 * within it, the final rename of a copy-up).  Held after tree_lock, one
 * directory at a time, but by the copy-up of a directory: its parent's,
 * then its own (its list of layers changes; a walk from below reads that
 * list under the directory's fd_lock, nodes.c).
 *
 * No directory lock is held while a copy-up copies data. */
#include "config.h"

#include "overlay.h"

void ovl_locks_init(pthread_rwlock_t *lock)
{
	pthread_rwlockattr_t rwa;
	pthread_rwlockattr_init(&rwa);
	/* writers must not starve behind a stream of lookups */
	pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(lock, &rwa);
	pthread_rwlockattr_destroy(&rwa);
}

void ovl_tree_read(struct ovl_fs *fs)
{
	pthread_rwlock_rdlock(&fs->tree_lock);
}

void ovl_tree_read_end(struct ovl_fs *fs)
{
	pthread_rwlock_unlock(&fs->tree_lock);
}

void ovl_dir_lock(struct ovl_node *dir, bool write)
{
	(write ? pthread_rwlock_wrlock : pthread_rwlock_rdlock)(&dir->dir->ns);
}

void ovl_dir_unlock(struct ovl_node *dir)
{
	pthread_rwlock_unlock(&dir->dir->ns);
}

void ovl_ns_lock(struct ovl_fs *fs, struct ovl_node *dir, bool write)
{
	ovl_tree_read(fs);
	ovl_dir_lock(dir, write);
}

void ovl_ns_unlock(struct ovl_fs *fs, struct ovl_node *dir)
{
	ovl_dir_unlock(dir);
	ovl_tree_read_end(fs);
}

/* The directory whose lock guards node's name: its parent (the root has none). */
static struct ovl_node *place_of(struct ovl_node *node)
{
	return node->parent ? node->parent : node;
}

struct ovl_node *ovl_ns_lock_place(struct ovl_fs *fs, struct ovl_node *node, bool write)
{
	ovl_tree_read(fs);
	/* stable now: a node changes parents only under tree_lock written */
	struct ovl_node *dir = place_of(node);
	ovl_dir_lock(dir, write);
	return dir;
}

void ovl_tree_lock(struct ovl_fs *fs)
{
	pthread_rwlock_wrlock(&fs->tree_lock);
}

void ovl_tree_unlock(struct ovl_fs *fs)
{
	pthread_rwlock_unlock(&fs->tree_lock);
}

void ovl_change_lock(struct ovl_fs *fs, struct ovl_node *dir, bool tree)
{
	if (tree)
		ovl_tree_lock(fs);
	else
		ovl_ns_lock(fs, dir, true);
}

void ovl_change_unlock(struct ovl_fs *fs, struct ovl_node *dir, bool tree)
{
	if (tree)
		ovl_tree_unlock(fs);
	else
		ovl_ns_unlock(fs, dir);
}
