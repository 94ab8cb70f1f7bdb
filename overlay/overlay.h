/* The few types the overlay core shares: the mount (ovl_fs), its nodes and
 * configuration.  One concern per file; see DESIGN.md §2. */
#ifndef OVL_OVERLAY_H
#define OVL_OVERLAY_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../layers/layer.h"
#include "hash.h"

#define OVL_PROGRAM "fuse-overlayfs"

/* ---- owners across the mount (idmap.c) ---- */
#define OVL_STR_(x) #x
#define OVL_STR(x) OVL_STR_(x)
/* The kernel's limit of ranges in a user namespace's map. */
#define OVL_IDMAP_MAX 340
struct ovl_idmap_range {
	uint32_t disk;   /* first id as stored in the layers */
	uint32_t shown;  /* the id the mount shows for it */
	uint32_t len;
};
struct ovl_idmap {
	size_t n;                 /* 0: no mapping, ids pass unchanged */
	uint32_t overflow;        /* what an id outside every range becomes */
	struct ovl_idmap_range r[OVL_IDMAP_MAX];
};
/* Parses "ID:HOST:LEN[:ID:HOST:LEN...]" (':' or ',' between items, empty
 * items skipped); on -EINVAL *why says what is wrong. */
int ovl_idmap_parse(const char *spec, struct ovl_idmap *m, const char **why);
uint32_t ovl_idmap_shown(const struct ovl_idmap *m, uint32_t disk);
uint32_t ovl_idmap_disk(const struct ovl_idmap *m, uint32_t shown);
bool ovl_xattr_is_acl(const char *name);
/* Rewrites the ids of a POSIX ACL xattr value in place (to disk, or to what
 * the mount shows); -EINVAL for a value that is not a version 2 ACL. */
int ovl_idmap_acl(const struct ovl_idmap *uids, const struct ovl_idmap *gids, void *value, size_t len,
		  bool to_disk);
/* The same for the rootid of a security.capability v3 value (v1, v2 pass). */
int ovl_idmap_caps(const struct ovl_idmap *uids, void *value, size_t len, bool to_disk);

/* ---- stat overrides (override.c) ---- */
enum ovl_override_kind { OVL_OVERRIDE_NONE, OVL_OVERRIDE_PRIVILEGED, OVL_OVERRIDE_CONTAINERS, OVL_OVERRIDE_USER };
#define OVL_OVERRIDE_MAX 64  /* longest value taken */
struct ovl_override {
	uint32_t uid, gid;
	mode_t mode;             /* type and permission bits */
	dev_t rdev;
};
/* Parses "UID:GID:MODE[:TYPE]" (MODE octal up to 07777; TYPE dir, file,
 * symlink, pipe, socket, block-MAJ-MIN, char-MAJ-MIN; none: disk_type). */
int ovl_override_parse(const char *value, size_t len, mode_t disk_type, struct ovl_override *o);
int ovl_override_format(const struct ovl_override *o, char *buf, size_t size);
const char *ovl_override_xattr(enum ovl_override_kind kind);
/* Whether name is one of the override xattrs (hidden, refused). */
bool ovl_override_xattr_name(const char *name);
void ovl_override_apply(const struct ovl_override *o, struct stat *st);


struct ovl_config {
	char *source;
	char *mountpoint;
	char *lowerdir;
	char *upperdir;
	char *workdir;
	char *uidmapping;            /* as given; parsed into uidmap at the end */
	char *gidmapping;
	struct ovl_idmap uidmap, gidmap;
	char *plugins;
	char *redirect_dir;
	char *xino;
	bool foreground;
	bool debug;
	bool show_help;
	bool show_version;
	bool squash_to_root;
	long squash_to_uid; /* -1: unset */
	long squash_to_gid;
	bool static_nlink;
	bool noacl;
	bool noxattrs;
	bool ino32;
	bool threaded;
	bool fsync;
	bool writeback;
	bool read_only; /* "ro" given */
	unsigned xattr_permissions;
	double timeout;
	unsigned fast_ino_check;
	/* options for libfuse and the kernel, "-o a,b,c" form */
	struct fuse_args fuse_args;
	char *kernel_opts;
};

void ovl_config_init(struct ovl_config *cfg);
/* Whether owners are shown squashed (squash_to_root, squash_to_uid/gid). */
static inline bool ovl_squashing(const struct ovl_config *cfg)
{
	return cfg->squash_to_root || cfg->squash_to_uid >= 0 || cfg->squash_to_gid >= 0;
}
void ovl_config_free(struct ovl_config *cfg);
/* Parses argv; on failure writes "option: reason" into err and returns -1. */
int ovl_options_parse(int argc, char **argv, struct ovl_config *cfg, char *err, size_t errlen);
/* Splits a lowerdir spec at unescaped ':' and removes the escapes. */
int ovl_split_layers(const char *spec, char ***out, size_t *count);
void ovl_free_strv(char **v, size_t n);
/* Checks the config against the filesystem (paths, nesting); touches nothing. */
int ovl_options_check_paths(const struct ovl_config *cfg, char *err, size_t errlen);
void ovl_print_usage(const char *argv0);

/* ---- our own xattr names (xattr_names.c: the one table) ---- */
#define OVL_OPAQUE_XATTRS 3
extern const char *const ovl_opaque_xattrs[OVL_OPAQUE_XATTRS];
extern const char *const ovl_origin_xattr_trusted, *const ovl_origin_xattr_user;
/* security.* xattrs of the containers override kind are kept under this prefix */
#define OVL_XATTR_CONTAINERS_ENCODED "user.containers.override_"
/* Whether the merged view hides name (the overlay's own prefixes). */
bool ovl_xattr_is_internal(const char *name);

/* ---- inode numbers (ino.c) ---- */
/* High bits st_ino needs for nfs filesystems (0: one, numbers as they are). */
unsigned ovl_ino_bits(uint32_t nfs, bool ino32);
/* The st_ino of number ino of filesystem fsid, in width (64 or 32) bits. */
uint64_t ovl_ino_compose(unsigned width, unsigned bits, uint32_t fsid, uint64_t ino);
struct ovl_fs;
/* The st_ino shown for number ino of layer. */
ino_t ovl_st_ino(const struct ovl_fs *fs, uint32_t layer, ino_t ino);
/* Records the identity lower of an object of layer from on the copy fd/name
 * (name NULL: fd); 0 where the upper takes no such xattr, or from's numbers
 * are not stable (OVL_LAYER_STABLE_INO). */
int ovl_origin_set(struct ovl_fs *fs, int fd, const char *name, const struct ovl_layer *from,
		   const struct stat *lower);
/* The st_ino a copied-up upper object dirfd/name (name NULL: dirfd) shows. */
bool ovl_origin_ino(struct ovl_fs *fs, int dirfd, const char *name, ino_t *shown);

/* ---- nodes (nodes.c) ---- */
struct ovl_listing;

/* Listings a directory keeps for passes still reading them (readdir.c). */
#define OVL_SERVED_LISTINGS 8

struct ovl_dir {
	pthread_rwlock_t ns;          /* its names (locks.c) */
	pthread_rwlock_t lock;        /* guards listing and served */
	struct ovl_listing *listing;  /* merged snapshot, or NULL */
	struct ovl_listing *served[OVL_SERVED_LISTINGS]; /* what the last passes from offset 0 read,
					newest first (readdir.c) */
	atomic_uint version;          /* grows with every change made through us */
	atomic_uint listings;         /* numbers its listings, for their offsets (ovl_listing_set_offsets) */
	uint32_t nlayers;             /* layers holding this dir, top first */
	uint32_t *layers;
	pthread_mutex_t fd_lock;      /* guards fds against eviction */
	int *fds;                     /* per entry of layers[]; -1: closed */
	atomic_int fd_users;
	atomic_uint probe_cost;       /* layers probed by lookups so far */
	atomic_uint list_after;       /* probe cost that pays for a listing; 0: the default */
	atomic_bool prefetched;       /* read ahead once (prefetch.c) */
	atomic_uint_fast64_t fd_stamp;
	bool in_fd_list;
	struct ovl_node *fd_prev, *fd_next;
};

/* Another name of a node (nodes.c: aliases). */
struct ovl_alias {
	struct ovl_node *node;       /* whose name it is */
	struct ovl_node *parent;     /* holds a ref */
	char *name;
	struct ovl_alias *next, **pprev; /* the node's list */
	struct ovl_alias *hash_next; /* nodes.c's table of aliases */
};

/* Things few nodes need, kept apart: every node of a big tree is in memory. */
struct ovl_node_rare {
	struct ovl_alias *aliases;   /* other names of an upper hard link (fs->aliases.lock) */
	int orphan_fd;               /* O_PATH fd of an upper object unlinked while open, or -1 */
	atomic_bool has_override;    /* override below set (it is guarded by fs->override_lock) */
	struct ovl_override override;
};

/* Fields ordered for size: with a short name, one 112-byte malloc chunk. */
struct ovl_node {
	fuse_ino_t nodeid;           /* its generation is in the node table */
	uint64_t nlookup;            /* under the node's shard lock */
	struct ovl_node *parent;     /* holds a ref; NULL for the root */
	char *name;
	dev_t dev;                   /* identity of the backing object */
	ino_t ino;
	struct ovl_dir *dir;         /* directories only */
	struct ovl_node *hash_next;
	ino_t origin_ino;            /* st_ino shown for a copied-up object, 0: its own */
	struct ovl_node_rare *_Atomic rare; /* NULL until needed (ovl_node_rare) */
	uint32_t layer;              /* layer holding the object shown */
	atomic_int opens;            /* open files */
	uint32_t refs;               /* kernel (1 while nlookup>0) + children + handles */
	uint16_t type;               /* S_IFMT bits */
	bool hashed;                 /* found by identity; false once its object is gone */
	bool per_name;               /* one name of a lower hard link (nodes.c node_per_name) */
	bool unlinked;               /* its name went away (parent's ns): only an open file reaches it */
	bool detached;               /* copied up while the kernel kept its lower file as the
					passthrough backing file: metadata calls (on an fd opened
					before) reach the copy, opens get ESTALE and a new node */
	char first_name[];           /* where name points until a rename (one allocation a node) */
};

/* override.c, the parts that touch layers */
struct ovl_fs;
/* Tells each layer's kind from its root; the upper's from xattr_permissions. */
int ovl_override_setup(struct ovl_fs *fs, char *err, size_t errlen);
/* The override of dirfd/name (name NULL: dirfd) in layer, whose stat is st:
 * 1 read, 0 none (or malformed: logged once). */
int ovl_override_read(struct ovl_fs *fs, uint32_t layer, int dirfd, const char *name, const struct stat *st,
		      struct ovl_override *o);
/* Writes o to the upper object dirfd/name; -errno. */
int ovl_override_write(struct ovl_fs *fs, int dirfd, const char *name, const struct ovl_override *o);
struct ovl_node;
void ovl_node_set_override(struct ovl_fs *fs, struct ovl_node *node, const struct ovl_override *o);
bool ovl_node_get_override(struct ovl_fs *fs, const struct ovl_node *node, struct ovl_override *o);
/* Reads the override of node's object dirfd/name (stat st) into the node, if it has one. */
void ovl_node_load_override(struct ovl_fs *fs, struct ovl_node *node, int dirfd, const char *name,
			    const struct stat *st);
/* The name an xattr of the mount is stored under in layer l (security.* as
 * user.containers.override_security.* in the containers kind); NULL: too long,
 * or asked for in that encoded form. */
const char *ovl_override_stored_xattr(const struct ovl_layer *l, const char *name, char *buf, size_t size);
/* The name a stored xattr shows as, or NULL if it is hidden. */
const char *ovl_override_shown_xattr(const struct ovl_layer *l, const char *stored);

/* ---- the mount ---- */
/* nodes.c: one table of the other names of every node */
struct ovl_aliases {
	pthread_mutex_t lock;        /* guards every node's aliases and the table */
	struct ovl_chain chain;
};

/* notify.c: invalidations sent from threads of their own */
struct ovl_notify {
	pthread_mutex_t lock;
	pthread_cond_t done;         /* pending came down to 0 */
	unsigned pending;            /* threads not yet done sending */
};

/* workers.c: the pool ovl_parallel_for runs on, started at its first use */
struct ovl_job;
struct ovl_workers {
	pthread_mutex_t lock;        /* guards all but started */
	pthread_cond_t cond;         /* a job queued, stopping, or a worker gone */
	struct ovl_job *queue;
	atomic_bool started;
	bool have_workers;           /* set once, when started */
	bool stopping;
	unsigned threads;            /* running */
};

/* prefetch.c: directories queued for read-ahead, and its thread */
#define OVL_PREFETCH_QUEUE 64
struct ovl_prefetch {
	pthread_mutex_t lock;        /* guards all but started */
	pthread_cond_t cond;         /* queued, stopping, or the thread gone */
	struct ovl_node *queue[OVL_PREFETCH_QUEUE]; /* each holds a ref */
	size_t head, count;
	atomic_bool started;
	bool running;                /* the thread runs */
	bool stopping;
};

#define OVL_COPYUP_LOCKS 64

struct ftr;
struct ovl_fs {
	/* First: the FUSE transport (fuse/transport.h) finds itself at the start
	 * of the session's userdata.  Set up and owned by main.c; NULL: no
	 * passthrough (a mount driven without /dev/fuse). */
	struct ftr *transport;
	struct ovl_config *cfg;
	struct ovl_layer *layers;    /* [0] is upper when has_upper, then lowers top first */
	struct ovl_plugins *plugins; /* the loaded plugins (plugins/loader.h), or NULL */
	uint32_t nlayers;
	bool has_upper;
	int workdir_fd;              /* <workdir>, or -1 */
	int work_fd;                 /* <workdir>/work, or -1 */
	unsigned xino_bits;          /* 0: all layers on one fs */
	double timeout;
	struct ovl_node *root;
	struct ovl_nodes *nodes;     /* the node table (nodes.c) */
	long dir_fd_budget;
	atomic_long dir_fds_open;
	long file_fd_budget;         /* fds open files may hold (file.c) */
	atomic_long file_fds_open;
#define OVL_FD_SHARES 64
	atomic_long file_fds_of[OVL_FD_SHARES]; /* by the opener's uid % OVL_FD_SHARES */
	atomic_long stat_lookups, stat_forgets, stat_listings, stat_prefetches;
	pthread_rwlock_t tree_lock;  /* locks.c says who takes it */
	bool whiteout_files;         /* write .wh.NAME, not char 0/0 */
	bool keep_caps;              /* fsuid switches keep our capabilities */
	bool trusted_xattrs;         /* the upper takes trusted.* xattrs */
	bool writeback_cache;        /* the kernel caches writes (file.c: how backing files open) */
	atomic_ulong temp_counter;
	enum { OVL_COPY_SYNC_FSYNC, OVL_COPY_SYNC_ORDERED, OVL_COPY_SYNC_NONE } copy_sync; /* copyup.c; 0 the safe one */
	struct fuse_session *se;     /* for invalidations */
	atomic_flag logged_bad_xattr; /* a malformed ACL or capability in a layer (idmap) */
	atomic_flag logged_bad_override; /* a malformed override_stat (override.c) */
	pthread_mutex_t override_lock; /* guards the overrides kept in nodes */
	struct ovl_aliases aliases;
	pthread_mutex_t copyup_locks[OVL_COPYUP_LOCKS]; /* copyup.c: a node's by its address */
	struct ovl_notify notify;
	struct ovl_workers workers;
	struct ovl_prefetch prefetch;
};

/* fs.c: set up and tear down the layer stack */
int ovl_fs_open(struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen);
/* The same over the lower layers given (ops, caps, root, dev, path and data
 * set; top first) instead of cfg->lowerdir's: it takes them over, also when
 * it fails (ovl_fs_close closes their roots, frees their paths). */
int ovl_fs_open_with(struct ovl_config *cfg, const struct ovl_layer *given, size_t ngiven, struct ovl_fs **out,
		     char *err, size_t errlen);
int ovl_fs_prepare_workdir(struct ovl_fs *fs, char *err, size_t errlen);
void ovl_fs_close(struct ovl_fs *fs);
/* The mount is gone and no request runs: plugin layers are released (their
 * plugins may keep state outside the process).  The last call on fs. */
void ovl_fs_unmounted(struct ovl_fs *fs);

/* nodes.c: the node table of a mount (fs->nodes), with the identity hash
 * and the directory-fd LRU */
struct ovl_nodes *ovl_nodes_new(void);
/* Frees the table and every node left in it (no request runs any more). */
void ovl_nodes_free(struct ovl_fs *fs);
struct ovl_node *ovl_node_get(struct ovl_fs *fs, fuse_ino_t nodeid);
/* The node a request names, or NULL once the reply (ESTALE) is sent. */
struct ovl_node *ovl_req_node(fuse_req_t req, fuse_ino_t nodeid);
/* The same for a directory (ENOTDIR for any other node). */
struct ovl_node *ovl_req_dir(fuse_req_t req, fuse_ino_t nodeid);
/* Finds the node for a backing object or makes one; takes one lookup ref.
 * layers/nlayers are used only when a directory node is made (copied). */
struct ovl_node *ovl_node_lookup_or_create(struct ovl_fs *fs, struct ovl_node *parent, const char *name,
					   uint32_t layer, const struct stat *st, const uint32_t *layers,
					   uint32_t nlayers);
struct ovl_node *ovl_node_new_root(struct ovl_fs *fs, const struct stat *st, const uint32_t *layers,
				   uint32_t nlayers);
void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup);
void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node);
/* A directory fd of `node` in the i-th of its layers; pair with ovl_dir_fd_put. */
int ovl_dir_fd_get(struct ovl_fs *fs, struct ovl_node *node, uint32_t i);
/* dirfds.c: the node's directory fds go (it is freed); ovl_dir_fds_close
 * closes them only (the mount goes). */
void ovl_dir_fds_drop(struct ovl_fs *fs, struct ovl_node *node);
void ovl_dir_fds_close(struct ovl_fs *fs, struct ovl_dir *d);
void ovl_dir_fd_put(struct ovl_node *node);
/* layer->ops->openat, and on EMFILE once more after idle directories gave their fds back. */
int ovl_layer_open(struct ovl_fs *fs, struct ovl_layer *layer, int dirfd, const char *name, int flags);
/* Index of `layer` in dir->layers, or -1. */
int ovl_dir_layer_pos(const struct ovl_dir *dir, uint32_t layer);
void ovl_nodes_counters(struct ovl_fs *fs, long *nodes, long *dirs);
/* The node now stands for another backing object (after a copy-up). */
void ovl_node_rehash(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino);
/* The same, for a node lookups must not find (it becomes detached). */
void ovl_node_detach(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino);
/* The object (dev, ino) is gone: a later lookup of the same identity (a
 * reused inode number) must make a new node. */
void ovl_node_unhash_id(struct ovl_fs *fs, dev_t dev, ino_t ino);
/* The node of a backing object, with a ref (ovl_node_unref), or NULL; with
 * parent set, only the one standing for parent/name. */
struct ovl_node *ovl_node_find(struct ovl_fs *fs, dev_t dev, ino_t ino, const struct ovl_node *parent,
			       const char *name);
/* What a node tells without a ref taken: whether the kernel holds it
 * (looked up, not forgotten), and the st_ino it shows for its origin (0:
 * none), also where no origin xattr could be written (a symlink under
 * user.* xattrs), as stat shows it until the next mount. */
struct ovl_node_peek {
	bool held;
	ino_t origin_ino;
};
/* Reads the node of backing object (dev, ino), as ovl_node_find finds it,
 * into out; false when there is none. */
bool ovl_node_peek(struct ovl_fs *fs, dev_t dev, ino_t ino, const struct ovl_node *parent, const char *name,
		   struct ovl_node_peek *out);
/* ---- namespace locks (locks.c) ---- */
void ovl_locks_init(pthread_rwlock_t *lock);
/* tree_lock for reading (no one takes it twice), and the lock of one
 * directory's names under it. */
void ovl_tree_read(struct ovl_fs *fs);
void ovl_tree_read_end(struct ovl_fs *fs);
void ovl_dir_lock(struct ovl_node *dir, bool write);
void ovl_dir_unlock(struct ovl_node *dir);
/* Both: tree_lock for reading, then dir's own lock. */
void ovl_ns_lock(struct ovl_fs *fs, struct ovl_node *dir, bool write);
void ovl_ns_unlock(struct ovl_fs *fs, struct ovl_node *dir);
/* The same for the directory holding node's name (the root's own); returns
 * it, for ovl_ns_unlock. */
struct ovl_node *ovl_ns_lock_place(struct ovl_fs *fs, struct ovl_node *node, bool write);
/* tree_lock for writing: nothing else resolves names meanwhile. */
void ovl_tree_lock(struct ovl_fs *fs);
void ovl_tree_unlock(struct ovl_fs *fs);
/* tree_lock for reading, then the locks of a and b (one if the same or b
 * is NULL), in address order. */
void ovl_ns_lock_two(struct ovl_fs *fs, struct ovl_node *a, bool write_a, struct ovl_node *b, bool write_b);
void ovl_ns_unlock_two(struct ovl_fs *fs, struct ovl_node *a, struct ovl_node *b);
/* ovl_ns_lock_two of the directory holding node's name and dir; returns
 * the former, for ovl_ns_unlock_two. */
struct ovl_node *ovl_ns_lock_place_and(struct ovl_fs *fs, struct ovl_node *node, bool write, struct ovl_node *dir,
				       bool write_dir);
/* What a change of names locks: its directory, two directories, or the tree. */
enum ovl_change_locks { OVL_LOCK_DIR, OVL_LOCK_TWO_DIRS, OVL_LOCK_TREE };
/* The locks of a rename within one directory or between two (same_dir),
 * of a directory or not (moves_dir). */
enum ovl_change_locks ovl_rename_locks(bool same_dir, bool moves_dir);
/* Takes them: the write locks of from and to (one if the same), or the tree lock. */
void ovl_change_lock(struct ovl_fs *fs, enum ovl_change_locks how, struct ovl_node *from, struct ovl_node *to);
void ovl_change_unlock(struct ovl_fs *fs, enum ovl_change_locks how, struct ovl_node *from, struct ovl_node *to);

/* Another name of the node's object (a hard link made through us). */
int ovl_node_add_alias(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name);
/* The node's rare part, made when first needed; NULL: no memory. */
struct ovl_node_rare *ovl_node_rare(struct ovl_node *node);
/* The FUSE generation of node's nodeid. */
uint64_t ovl_node_generation(struct ovl_fs *fs, const struct ovl_node *node);
/* The O_PATH fd that keeps node's unlinked upper object, or -1. */
int ovl_node_orphan_fd(const struct ovl_node *node);
/* Keeps node's upper object, upfd/name, reachable while files are open on it. */
void ovl_node_keep_orphan(struct ovl_fs *fs, struct ovl_node *node, int upfd, const char *name);
/* parent/name of the node's object goes away: the node takes another of its
 * names if it stood for that one (parent's lock written).  false, with the
 * node where it was: another directory's name could not be checked without
 * the tree lock (tree_held: it is held; locks.c). */
bool ovl_node_name_gone(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name,
			bool tree_held);
/* parent/name of the node's object is now newparent/newname (both
 * directories' locks written): the node moves if that was its name, else
 * the alias does. */
void ovl_node_renamed(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent, const char *name,
		      struct ovl_node *newparent, const char *newname);
/* Frees the node's aliases (the node is going). */
void ovl_node_drop_aliases(struct ovl_fs *fs, struct ovl_node *node);
void ovl_aliases_init(struct ovl_fs *fs);
/* Frees every alias left, without a ref dropped (the mount goes). */
void ovl_aliases_free(struct ovl_fs *fs);
/* Takes node out of the identity hash: no lookup finds it any more. */
void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node);
/* A directory copied up: the upper layer joins its layers, on top. */
int ovl_dir_add_upper(struct ovl_fs *fs, struct ovl_node *node, int upper_fd);
/* Drops the cached merged listing (the directory changed). */
void ovl_dir_changed(struct ovl_node *dir);
/* name was removed: the listing stays for lookups of the other names, so
 * that removing a directory's entries one by one (rm -rf) probes no layer. */
void ovl_dir_name_removed(struct ovl_node *dir, const char *name);
/* name was made in the upper layer (an object of that mode): the listing
 * stays for lookups too, so that filling a directory probes no layer. */
void ovl_dir_name_added(struct ovl_node *dir, const char *name, mode_t mode);
/* Whether the node's object is in the upper layer. */
static inline bool ovl_node_is_upper(const struct ovl_fs *fs, const struct ovl_node *n)
{
	return fs->has_upper && n->layer == 0;
}

/* lookup.c */
struct ovl_found {
	struct stat st;              /* of the top object, as on disk */
	uint32_t layer;
	uint32_t nlayers;            /* directories: layers merged */
	uint32_t *layers;
	int upper_wh;                /* -ENOENT after probing the upper: OVL_WH_* there; else -1 */
};
int ovl_lookup_name(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f);
void ovl_found_free(struct ovl_found *f);
/* Looks up name and fills a FUSE entry (taking a lookup ref); -ENOENT gives a negative entry. */
int ovl_lookup_entry(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct fuse_entry_param *e);
/* The same for a name whose layers the parent's listing gave in f (consumed). */
int ovl_lookup_entry_listed(struct ovl_fs *fs, struct ovl_node *parent, const char *name, struct ovl_found *f,
			    struct fuse_entry_param *e);

/* Whether a layer below the upper one shows name in parent: 1, 0, or -errno. */
int ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *parent, const char *name);

/* copyup.c */
void ovl_copy_up_init(struct ovl_fs *fs);
/* Chooses how copied data is made crash-safe before its rename (at mount). */
void ovl_copy_up_setup(struct ovl_fs *fs);
/* Makes node an object of the upper layer (parents first).  -ESTALE: the
 * name got a new node (see copyup.c), the caller answers ESTALE. */
int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node, bool with_data);
/* Makes a directory (and its parents) part of the upper layer. */
int ovl_copy_up_dirs(struct ovl_fs *fs, struct ovl_node *dir);
/* ovl_copy_up for a handler the kernel calls with no directory locked (open,
 * setattr, xattrs, ioctl): on -ESTALE the kernel is also told to drop the
 * name, so that its retry reaches the new node. */
int ovl_copy_up_in_place(struct ovl_fs *fs, struct ovl_node *node, bool with_data);
/* An open of a detached node: the kernel is told to drop the name, and the
 * open answers -ESTALE, so that the VFS looks the name up again and opens
 * the copy's node (an inode keeps one passthrough backing file). */
int ovl_copy_up_reopen(struct ovl_fs *fs, struct ovl_node *node);

/* backing.c */
typedef int (*ovl_at_fn)(struct ovl_layer *layer, int dirfd, const char *name, void *arg);
/* Runs fn on (directory fd, name) of a non-directory node's backing object. */
int ovl_node_at(struct ovl_fs *fs, struct ovl_node *node, ovl_at_fn fn, void *arg);
int ovl_node_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
/* The stat of node's backing object as the merged view shows it. */
void ovl_node_present(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
void ovl_present_stat(struct ovl_fs *fs, uint32_t layer, uint32_t nlayers, struct stat *st);

/* handles.c */
/* The backing fd of an open file (-1: a passthrough reader's, we hold none),
 * a handle of the layer it is of. */
int ovl_file_fd(const struct fuse_file_info *fi);
/* Whether the file's handle is an fd the fd calls work on. */
bool ovl_file_is_fd(struct ovl_fs *fs, const struct fuse_file_info *fi);
struct ovl_layer *ovl_file_layer(struct ovl_fs *fs, const struct fuse_file_info *fi);
/* The same, or for one we hold none of (or fi NULL) a new read-only fd of
 * node ino's object in *reopened (close it after); -errno. */
int ovl_file_fd_get(struct ovl_fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi, int *reopened);

/* file.c */
/* The flags a backing file is opened with for an open or create with flags. */
int ovl_backing_open_flags(const struct ovl_fs *fs, int flags);
/* Replies to a create that made the entry e and opened fd. */
void ovl_file_reply_create(fuse_req_t req, const struct fuse_entry_param *e, struct fuse_file_info *fi, int fd);

/* listing.c */
void ovl_listing_unref(struct ovl_listing *l);
/* listing_read.c */
/* Builds and caches dir's merged listing if it has none. */
int ovl_dir_load_listing(struct ovl_fs *fs, struct ovl_node *dir);
/* Finds name in the cached listing of dir (if any): 1 found, 0 absent, -1 no
 * listing.  Absent, f->upper_wh is OVL_WH_NONE where the listing knows the
 * upper part holds no whiteout. */
int ovl_listing_find(struct ovl_node *dir, const char *name, struct ovl_found *f);
/* readdir.c */
/* 1 if the merged directory shows no entry, 0 if it does, or -errno. */
int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *dir);
/* The d_ino a READDIR gives for the i-th name of listing l. */
ino_t ovl_listing_ino(const struct ovl_fs *fs, const struct ovl_listing *l, size_t i);

/* whiteout.c */
bool ovl_name_is_reserved(const char *name);
const char *ovl_whiteout_target(const char *name);
bool ovl_name_is_opaque_marker(const char *name);
bool ovl_stat_is_whiteout(const struct stat *st);
bool ovl_opaque_xattr_name(const char *xname);
int ovl_layer_dir_is_opaque(struct ovl_layer *layer, int dirfd);
int ovl_has_whiteout_file(struct ovl_layer *layer, int dirfd, const char *name);
enum { OVL_WH_NONE, OVL_WH_CHAR, OVL_WH_FILE };
/* Chooses the format we write (probes mknod in work). */
void ovl_whiteout_setup(struct ovl_fs *fs);
/* Whether name can get a whiteout of the format we write (.wh.NAME costs 4 bytes). */
bool ovl_whiteout_fits(const struct ovl_fs *fs, const char *name);
/* Which whiteout the upper directory dirfd holds for name: OVL_WH_*, or -errno. */
int ovl_upper_whiteout_at(struct ovl_fs *fs, int dirfd, const char *name);
/* Makes name in the upper directory dirfd a whiteout.  present: the S_IFMT of
 * the upper object there now (0: none), replaced where the format allows it
 * atomically. */
int ovl_whiteout_put(struct ovl_fs *fs, int dirfd, const char *name, mode_t present);
/* Moves dirfd/name to newdirfd/newname leaving a whiteout at name, in one
 * step where the format and the kernel allow it (RENAME_WHITEOUT). */
int ovl_whiteout_rename(struct ovl_fs *fs, int dirfd, const char *name, int newdirfd, const char *newname);
/* Removes a .wh.NAME once NAME itself was put in its place. */
int ovl_whiteout_drop_file(struct ovl_fs *fs, int dirfd, const char *name);
/* Marks an upper directory opaque. */
int ovl_set_opaque(struct ovl_fs *fs, int dirfd);

/* xattr.c */
size_t ovl_xattr_filter_list(char *list, size_t len);

/* creds.c: the caller's owner and umask for what we create */
struct ovl_creds {
	uid_t uid;                   /* the caller's, as stored on disk (mapped) */
	gid_t gid;
	bool switched;
	bool umask_set;
	bool owner_may_fail;         /* squash_*: as 1.10, an owner that cannot be set is no error */
};
void ovl_creds_setup(struct ovl_fs *fs);
void ovl_creds_enter(struct ovl_fs *fs, fuse_req_t req, struct ovl_creds *c);
void ovl_creds_leave(struct ovl_creds *c);
/* Gives dirfd/name (or dirfd itself, name NULL) the caller's owner if the
 * thread could not create it as the caller. */
int ovl_creds_fix_owner(struct ovl_fs *fs, const struct ovl_creds *c, int dirfd, const char *name);
/* Whether process pid (0: this one) holds capability cap in the initial user
 * namespace, where the kernel's capable() looks; unknown: no. */
bool ovl_has_initial_cap(pid_t pid, int cap);

/* work.c: the scratch directory */
#define OVL_TEMPNAME_MAX 32
/* Removes everything below dirfd without following any symlink. */
int ovl_work_empty_dir(struct ovl_fs *fs, int dirfd);
/* A name for a new temporary in work ("#ovl.N"). */
void ovl_work_tempname(struct ovl_fs *fs, char buf[OVL_TEMPNAME_MAX]);
/* ovl_upper_rename (its fallbacks for RENAME_NOREPLACE and RENAME_EXCHANGE)
 * with a free name in work for the steps of the latter; -errno. */
int ovl_rename(struct ovl_fs *fs, int olddirfd, const char *old, int newdirfd, const char *new, unsigned flags);
/* Moves dirfd/name out of sight into work in one step, then removes it. */
int ovl_work_discard(struct ovl_fs *fs, int dirfd, const char *name);
/* Removes work/name, whatever it is; logs what it cannot remove. */
int ovl_work_remove(struct ovl_fs *fs, const char *name);

/* grow.c: makes *ptr (an array of *cap elements) hold at least need elements. */
int ovl_grow(void *ptr, size_t *cap, size_t need, size_t elem_size, size_t initial);

/* notify.c: drops parent/name from the kernel's cache, from a thread of its
 * own (a handler must not: the caller may hold the parent's lock). */
void ovl_notify_inval_entry_later(struct ovl_fs *fs, fuse_ino_t parent, const char *name);
/* The same for the kernel's cached attributes of ino. */
void ovl_notify_inval_attr_later(struct ovl_fs *fs, fuse_ino_t ino);
/* Waits until every invalidation asked for has been sent (before the session goes). */
void ovl_notify_drain(struct ovl_fs *fs);
void ovl_notify_init(struct ovl_fs *fs);
/* workers.c: starts a detached helper thread, with every signal blocked (they
 * stay with the session's threads); 0 or -errno. */
int ovl_thread_start(void *(*fn)(void *), void *arg);
/* workers.c: pthread_once for a mount's state: the first caller runs fn(arg)
 * under lock, then *done is set; later callers return at once. */
void ovl_once(atomic_bool *done, pthread_mutex_t *lock, void (*fn)(void *arg), void *arg);
void ovl_workers_init(struct ovl_fs *fs);
/* workers.c: runs fn(arg, 0..n-1) on the mount's pool (and the caller),
 * returns when all ran. */
void ovl_parallel_for(struct ovl_fs *fs, size_t n, void (*fn)(void *arg, size_t i), void *arg);
/* Ends the pool's threads (the mount goes: no request runs). */
void ovl_workers_stop(struct ovl_fs *fs);

/* prefetch.c: reads a directory a walk is about to open into the kernel's
 * caches, from a thread of its own (takes a ref while queued). */
void ovl_prefetch_dir(struct ovl_fs *fs, struct ovl_node *dir);
void ovl_prefetch_init(struct ovl_fs *fs);
/* Ends the read-ahead thread (the mount goes: no request runs). */
void ovl_prefetch_stop(struct ovl_fs *fs);

/* log.c: the one logging helper */
enum ovl_log_level { OVL_ERR, OVL_WARN, OVL_INFO, OVL_DEBUG };
void ovl_log_init(bool debug);
void ovl_log_to_syslog(void);
bool ovl_debug_enabled(void);
void ovl_log(enum ovl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ovl_logv(enum ovl_log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* ovl_log the first time only (of a mount): hostile layers can hold many bad values. */
void ovl_log_once(atomic_flag *done, enum ovl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ops.c */
extern const struct fuse_lowlevel_ops ovl_ops;

static inline struct ovl_fs *ovl_fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

#endif
