/* Other names of a node that several names share: an upper hard link's, and
 * a lower hard link's on a mount without an upper layer (nodes.c).  Each such
 * node lists the names it was found under besides its own, so that it can
 * take one of them when its own goes.  One table over all lists finds
 * (node, parent, name) at once: a directory of thousands of names of one
 * inode is listed and emptied in linear time. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

/* The table is the mount's (fs->aliases).  Its lock guards every node's
 * aliases and the table: a lookup may add one while holding its
 * directory's lock only for reading. */

static uint64_t alias_key(const struct ovl_node *node, const struct ovl_node *parent, const char *name)
{
	uint64_t seed = (uint64_t)(uintptr_t)node * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)parent;
	return ovl_hash_bytes(name, strlen(name), seed);
}

static uint64_t key_of(const void *item)
{
	const struct ovl_alias *a = item;
	return alias_key(a->node, a->parent, a->name);
}

#define HASH_NEXT offsetof(struct ovl_alias, hash_next)

static bool is_name(const struct ovl_node *parent, const char *name, const struct ovl_node *p, const char *n)
{
	return parent == p && strcmp(name, n) == 0;
}

static struct ovl_alias *table_find(struct ovl_aliases *t, const struct ovl_node *node,
				    const struct ovl_node *parent, const char *name)
{
	for (struct ovl_alias *a = ovl_chain_first(&t->chain, alias_key(node, parent, name)); a; a = a->hash_next)
		if (a->node == node && is_name(a->parent, a->name, parent, name))
			return a;
	return NULL;
}

/* Takes a out of its node's list and the table; it goes on *dropped, to be
 * freed once the lock is let go (freeing unrefs its parent). */
static void unlink_alias(struct ovl_aliases *t, struct ovl_alias *a, struct ovl_alias **dropped)
{
	*a->pprev = a->next;
	if (a->next)
		a->next->pprev = a->pprev;
	ovl_chain_del(&t->chain, a, key_of(a), HASH_NEXT);
	a->next = *dropped;
	*dropped = a;
}

static void free_dropped(struct ovl_fs *fs, struct ovl_alias *a)
{
	for (struct ovl_alias *next; a; a = next) {
		next = a->next;
		ovl_node_unref(fs, a->parent);
		free(a->name);
		free(a);
	}
}

int ovl_node_add_alias(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name)
{
	struct ovl_aliases *t = &fs->aliases;
	int res = 0;
	pthread_mutex_lock(&t->lock);
	if (is_name(node->parent, node->name, parent, name) || table_find(t, node, parent, name)) {
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	struct ovl_node_rare *r = ovl_node_rare(node);
	struct ovl_alias *a = r ? calloc(1, sizeof *a) : NULL;
	if (a)
		*a = (struct ovl_alias){ .node = node, .parent = parent, .name = strdup(name) };
	if (a == NULL || a->name == NULL || ovl_chain_add(&t->chain, a, key_of(a), HASH_NEXT, key_of) < 0) {
		if (a)
			free(a->name);
		free(a);
		res = -ENOMEM;
	} else {
		ovl_node_ref(fs, parent);
		a->next = r->aliases;
		if (a->next)
			a->next->pprev = &a->next;
		a->pprev = &r->aliases;
		r->aliases = a;
	}
	pthread_mutex_unlock(&t->lock);
	return res;
}

/* Whether parent/name (in the upper layer) is still the node's object: an
 * alias may have been renamed away since it was seen. */
static bool alias_names_node(struct ovl_fs *fs, const struct ovl_alias *a, const struct ovl_node *node)
{
	struct stat st;
	int fd = a->parent->dir && ovl_node_is_upper(fs, a->parent) ? ovl_dir_fd_get(fs, a->parent, 0) : -1;
	if (fd < 0)
		return false;
	bool same = fstatat(fd, a->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == node->dev &&
		    st.st_ino == node->ino;
	ovl_dir_fd_put(a->parent);
	return same;
}

void ovl_node_name_gone(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name)
{
	struct ovl_aliases *t = &fs->aliases;
	struct ovl_alias *dropped = NULL, *a;
	pthread_mutex_lock(&t->lock);
	bool own = is_name(node->parent, node->name, parent, name);
	if (!own && (a = table_find(t, node, parent, name)) != NULL)
		unlink_alias(t, a, &dropped);
	/* the node loses its own name: it takes the first alias that still
	 * names its object; those that do not any more go */
	while (own && node->rare && (a = node->rare->aliases) != NULL) {
		bool taken = alias_names_node(fs, a, node);
		unlink_alias(t, a, &dropped);
		if (taken) {
			ovl_node_move(fs, node, a->parent, a->name);
			own = false;
		}
	}
	pthread_mutex_unlock(&t->lock);
	free_dropped(fs, dropped);
	if (own) {
		/* Its last name known to us went: a later lookup of another name
		 * of the object (never looked up so far) must get a node of its
		 * own, not this one, whose name is gone; open files keep this. */
		node->unlinked = true;
		ovl_node_unhash(fs, node);
	}
}

void ovl_node_drop_aliases(struct ovl_fs *fs, struct ovl_node *node)
{
	if (node->rare == NULL || node->rare->aliases == NULL)
		return;
	struct ovl_aliases *t = &fs->aliases;
	struct ovl_alias *dropped = NULL;
	pthread_mutex_lock(&t->lock);
	while (node->rare->aliases)
		unlink_alias(t, node->rare->aliases, &dropped);
	pthread_mutex_unlock(&t->lock);
	free_dropped(fs, dropped);
}

void ovl_aliases_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->aliases.lock, NULL);
}

void ovl_aliases_free(struct ovl_fs *fs)
{
	struct ovl_aliases *t = &fs->aliases;
	for (size_t i = 0; i < t->chain.nbuckets; i++)
		for (struct ovl_alias *a = t->chain.buckets[i], *next; a; a = next) {
			next = a->hash_next;
			free(a->name);
			free(a);
		}
	ovl_chain_free(&t->chain);
	pthread_mutex_destroy(&t->lock);
}
