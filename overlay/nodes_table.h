/* The node table's layout, shared by nodes.c (the table) and dirfds.c (the
 * directory fds its nodes hold, in the table's LRU list). */
#ifndef OVL_NODES_TABLE_H
#define OVL_NODES_TABLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "hash.h"
#include "overlay.h"

/* ---- slots: nodeid -> node ---- */
#define SLOT_SHARD_BITS 4
#define SLOT_SHARDS (1u << SLOT_SHARD_BITS)
#define CHUNK_BITS 12
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096

struct slot {
	_Atomic(struct ovl_node *) node;
	uint64_t generation;
	uint64_t next_free; /* index + 1 of the next free slot, 0: none */
};

struct slot_shard {
	pthread_mutex_t lock;
	uint64_t used;      /* slots ever handed out */
	uint64_t free_head; /* index + 1 */
};

/* identity hash: (dev, ino) -> node; guards nlookup and refs */
#define ID_SHARDS 64

struct id_shard {
	pthread_mutex_t lock;
	struct ovl_chain chain;
};

/* The node table of one mount (fs->nodes).  The id shards (one line each),
 * the fd list with its clock, and the chunk pointers every request reads
 * start cache lines of their own: a write to one part does not take the
 * line another part is read from. */
#define CACHE_LINE 64
struct ovl_nodes {
	struct slot_shard slot_shards[SLOT_SHARDS];
	atomic_uint next_slot_shard;
	atomic_long nodes_alive, dirs_alive;
	_Alignas(CACHE_LINE) struct id_shard id_shards[ID_SHARDS];
	/* directory fds: every directory node holding some, least recently used first */
	_Alignas(CACHE_LINE) pthread_mutex_t fd_list_lock;
	struct ovl_node *fd_list_head, *fd_list_tail;
	atomic_uint_fast64_t fd_clock;
	/* Chunk-major, so the first chunks of every shard share one page: the
	 * table is mmap'ed, untouched pages cost no memory, and a small mount
	 * touches one page here, not one per shard. */
	_Alignas(CACHE_LINE) struct slot *chunk_dir[MAX_CHUNKS][SLOT_SHARDS];
};

#endif
