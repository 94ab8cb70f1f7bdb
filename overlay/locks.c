/* The namespace locks, and the one place their rules are written down.
 *
 * tree_lock (fs), the rename lock: read by every operation that resolves a
 * node to a place in a layer; written only where a node may take a place
 * in another directory that readers cannot see coming: a directory moved
 * between parents (the ancestry every walk from below relies on changes).
 * Besides, a change that takes an upper hard link's name away, when its
 * node must take another of its names (an alias) in a third directory
 * whose lock is busy, is made again under it (nodes.c ovl_node_name_gone).
 *
 * ns (each directory): read to look names up in it, list it, or use a
 * child's name; written to change its names (create, remove, a rename
 * within it, the final rename of a copy-up).  Held after tree_lock.  Two at
 * once, in address order (ovl_ns_lock_two), by a file moved between
 * directories and by a link (its source's directory read); every directory
 * they lock is in the upper layer already.  The copy-up of a directory
 * holds its parent's, then its own (its list of layers changes; a walk
 * from below reads that list under the directory's fd_lock, nodes.c): the
 * only order by ancestry, and only of a directory not yet in upper.
 *
 * A node's place (parent, name) changes with the write locks of the
 * directory it leaves and the one it enters held, and the alias table's
 * lock (nodes.c); a directory's name also under its fd_lock, since a walk
 * from below reads it holding only that (dirfds.c).
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
	struct ovl_node *parent = __atomic_load_n(&node->parent, __ATOMIC_ACQUIRE);
	return parent ? parent : node;
}

struct ovl_node *ovl_ns_lock_place(struct ovl_fs *fs, struct ovl_node *node, bool write)
{
	return ovl_ns_lock_place_and(fs, node, write, NULL, false);
}

void ovl_ns_lock_two(struct ovl_fs *fs, struct ovl_node *a, bool write_a, struct ovl_node *b, bool write_b)
{
	ovl_tree_read(fs);
	if (b == NULL || a == b) {
		ovl_dir_lock(a, write_a || write_b);
		return;
	}
	bool a_first = (uintptr_t)a < (uintptr_t)b;
	ovl_dir_lock(a_first ? a : b, a_first ? write_a : write_b);
	ovl_dir_lock(a_first ? b : a, a_first ? write_b : write_a);
}

void ovl_ns_unlock_two(struct ovl_fs *fs, struct ovl_node *a, struct ovl_node *b)
{
	if (b != NULL && a != b)
		ovl_dir_unlock(b);
	ovl_ns_unlock(fs, a);
}

struct ovl_node *ovl_ns_lock_place_and(struct ovl_fs *fs, struct ovl_node *node, bool write, struct ovl_node *dir,
				       bool write_dir)
{
	for (;;) {
		struct ovl_node *place = place_of(node);
		ovl_ns_lock_two(fs, place, write, dir, write_dir);
		/* a file may have moved before we got there: its place changes
		 * under the lock of the directory it leaves, so this one holds */
		if (place_of(node) == place)
			return place;
		ovl_ns_unlock_two(fs, place, dir);
	}
}

enum ovl_change_locks ovl_rename_locks(bool same_dir, bool moves_dir)
{
	if (same_dir)
		return OVL_LOCK_DIR;
	return moves_dir ? OVL_LOCK_TREE : OVL_LOCK_TWO_DIRS;
}

void ovl_tree_lock(struct ovl_fs *fs)
{
	pthread_rwlock_wrlock(&fs->tree_lock);
}

void ovl_tree_unlock(struct ovl_fs *fs)
{
	pthread_rwlock_unlock(&fs->tree_lock);
}

void ovl_change_lock(struct ovl_fs *fs, enum ovl_change_locks how, struct ovl_node *from, struct ovl_node *to)
{
	if (how == OVL_LOCK_TREE)
		ovl_tree_lock(fs);
	else
		ovl_ns_lock_two(fs, from, true, to, true);
}

void ovl_change_unlock(struct ovl_fs *fs, enum ovl_change_locks how, struct ovl_node *from, struct ovl_node *to)
{
	if (how == OVL_LOCK_TREE)
		ovl_tree_unlock(fs);
	else
		ovl_ns_unlock_two(fs, from, to);
}
