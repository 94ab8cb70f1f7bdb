/* FUSE passthrough (kernel 6.9+) with libfuse 3.14 (DESIGN.md §3 "Data
 * path"): reads and writes of an open file go from the kernel straight to
 * the backing file.  libfuse 3.14 neither tells us that the kernel offers
 * FUSE_PASSTHROUGH nor lets us ask for it: devio.c negotiates it.  Backing
 * files are registered on the session fd, and the open and create replies
 * that name them are built here.
 *
 * The state is the transport's (t->pt, internal.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* What /usr/include/linux/fuse.h (6.1) lacks; values from the 6.9+ uapi. */
#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH (1 << 7)
#endif
#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#endif
/* fuse_open_out as 6.9+ has it (padding became backing_id). */
struct pt_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};
_Static_assert(sizeof(struct pt_open_out) == sizeof(struct fuse_open_out), "fuse_open_out layout");

bool ftr_passthrough_wanted(struct ftr *t, bool may_passthrough)
{
	const char *off = getenv("FUSE_OVERLAYFS_DISABLE_PASSTHROUGH");
	if (off != NULL && *off != '\0')
		t->pt.unusable = "FUSE_OVERLAYFS_DISABLE_PASSTHROUGH set";
	else if (!may_passthrough) /* CAP_SYS_ADMIN in the initial user namespace: what BACKING_OPEN checks */
		t->pt.unusable = "no CAP_SYS_ADMIN in the initial user namespace";
	else
		t->pt.unusable = NULL;
	return t->pt.unusable == NULL;
}

static const char *why_not(const struct ftr *t)
{
	if (t->pt.unusable != NULL)
		return t->pt.unusable;
	if (t->io.unwrapped != NULL)
		return t->io.unwrapped;
	if (!(ftr_offered(t) & FTR_INIT_PASSTHROUGH))
		return "the kernel does not offer it";
	return NULL;
}

bool ftr_passthrough_possible(const struct ftr *t)
{
	return why_not(t) == NULL;
}

void ftr_passthrough_init(struct ftr *t, const struct fuse_conn_info *conn)
{
	const char *why = why_not(t);
	if (why == NULL && (conn->want & FUSE_CAP_WRITEBACK_CACHE))
		why = "writeback cache in use";
	atomic_store(&t->pt.enabled, why == NULL);
	ftr_ask(t, FTR_INIT_PASSTHROUGH, why == NULL);
	if (why == NULL)
		ftr_log(t, FTR_DEBUG, "passthrough: in use");
	else
		ftr_log(t, FTR_DEBUG, "passthrough: not in use (%s)", why);
}

/* ---- backing ids, one per nodeid while it has passthrough opens ----
 * The kernel keeps one backing file per inode and fails (EIO) an open that
 * names another one, so every open of a nodeid must get the same id. */

struct ftr_backing {
	fuse_ino_t nodeid;
	dev_t dev; /* the backing file: an open of another one must not share the id */
	ino_t ino;
	int id;
	unsigned refs;
	struct ftr_backing *next;
};

/* Under t->pt.lock. */
static struct ftr_backing **backing_slot(struct ftr *t, fuse_ino_t nodeid)
{
	struct ftr_backing **p =
		&t->pt.buckets[((uint64_t)nodeid * 0x9E3779B97F4A7C15ULL) >> (64 - FTR_BACKING_BUCKET_BITS)];
	while (*p != NULL && (*p)->nodeid != nodeid)
		p = &(*p)->next;
	return p;
}

int ftr_passthrough_get(struct ftr *t, fuse_ino_t nodeid, int fd)
{
	/* EPERM comes on the first BACKING_OPEN or never (its conditions do
	 * not change), so once disabled no id exists to be shared. */
	if (t == NULL || !atomic_load_explicit(&t->pt.enabled, memory_order_relaxed))
		return 0;
	int id = 0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	pthread_mutex_lock(&t->pt.lock);
	struct ftr_backing **slot = backing_slot(t, nodeid);
	if (*slot != NULL && ((*slot)->dev != st.st_dev || (*slot)->ino != st.st_ino)) {
		id = -EIO; /* a copy-up must have made a new node: never share */
		ftr_log(t, FTR_ERR, "passthrough: nodeid %lu: open of another backing file", (unsigned long)nodeid);
	} else if (*slot != NULL) {
		(*slot)->refs++;
		id = (*slot)->id;
	} else {
		/* Registered under the lock so two first opens cannot make two ids.
		 * The fd's open flags do not matter: the kernel opens its own
		 * backing file per open, with that open's flags. */
		struct fuse_backing_map map = { .fd = fd };
		struct ftr_backing *b = malloc(sizeof *b);
		id = b ? ioctl(t->io.devfd, FUSE_DEV_IOC_BACKING_OPEN, &map) : -1;
		if (id > 0) {
			*b = (struct ftr_backing){ .nodeid = nodeid, .dev = st.st_dev, .ino = st.st_ino, .id = id, .refs = 1 };
			*slot = b;
			ftr_log(t, FTR_DEBUG, "passthrough: nodeid %lu: backing id %d opened", (unsigned long)nodeid, id);
		} else {
			int err = b ? errno : ENOMEM;
			free(b);
			id = 0;
			if (err == EPERM) {
				atomic_store(&t->pt.enabled, false);
				ftr_log(t, FTR_WARN, "passthrough: refused by the kernel (EPERM), serving reads ourselves");
			} else {
				/* e.g. ELOOP: a file on a stacked filesystem (overlayfs) */
				ftr_log(t, FTR_DEBUG, "passthrough: nodeid %lu: BACKING_OPEN: %s; served by the daemon",
					(unsigned long)nodeid, strerror(err));
			}
		}
	}
	pthread_mutex_unlock(&t->pt.lock);
	return id;
}

bool ftr_passthrough_active(struct ftr *t, fuse_ino_t nodeid)
{
	if (t == NULL)
		return false;
	pthread_mutex_lock(&t->pt.lock);
	bool active = *backing_slot(t, nodeid) != NULL;
	pthread_mutex_unlock(&t->pt.lock);
	return active;
}

void ftr_passthrough_put(struct ftr *t, fuse_ino_t nodeid)
{
	if (t == NULL)
		return;
	pthread_mutex_lock(&t->pt.lock);
	struct ftr_backing **slot = backing_slot(t, nodeid);
	struct ftr_backing *b = *slot;
	if (b != NULL && --b->refs == 0) {
		*slot = b->next;
		/* Only now: the kernel looks the id up after our open reply, and
		 * its inode keeps its own reference for the opens it still has. */
		uint32_t id = (uint32_t)b->id;
		if (ioctl(t->io.devfd, FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0)
			ftr_log(t, FTR_WARN, "passthrough: closing backing id %u: %s", id, strerror(errno));
		ftr_log(t, FTR_DEBUG, "passthrough: nodeid %lu: backing id %u closed", (unsigned long)nodeid, id);
		free(b);
	}
	pthread_mutex_unlock(&t->pt.lock);
}

int ftr_passthrough_reply_open(fuse_req_t req, uint64_t fh, int backing_id)
{
	/* No FOPEN_KEEP_CACHE: the kernel refuses it with FOPEN_PASSTHROUGH
	 * (no page cache of ours is used). */
	struct pt_open_out out = { .fh = fh, .open_flags = FOPEN_PASSTHROUGH | FOPEN_NOFLUSH, .backing_id = backing_id };
	return fuse_reply_buf(req, (const char *)&out, sizeof out);
}

static uint64_t timeout_sec(double t)
{
	return t <= 0 ? 0 : t >= 1.8e19 ? UINT64_MAX : (uint64_t)t;
}

static uint32_t timeout_nsec(double t)
{
	double frac = t - (double)timeout_sec(t);
	return frac <= 0 ? 0 : frac >= 0.999999999 ? 999999999 : (uint32_t)(frac * 1e9);
}

int ftr_passthrough_reply_create(fuse_req_t req, const struct fuse_entry_param *e, uint64_t fh, int backing_id)
{
	/* libfuse 3.14 builds this reply only without a backing id: the same
	 * fuse_entry_out + fuse_open_out, by hand */
	struct {
		struct fuse_entry_out entry;
		struct pt_open_out open;
	} out;
	const struct stat *st = &e->attr;
	memset(&out, 0, sizeof out);
	out.entry.nodeid = e->ino;
	out.entry.generation = e->generation;
	out.entry.entry_valid = timeout_sec(e->entry_timeout);
	out.entry.entry_valid_nsec = timeout_nsec(e->entry_timeout);
	out.entry.attr_valid = timeout_sec(e->attr_timeout);
	out.entry.attr_valid_nsec = timeout_nsec(e->attr_timeout);
	out.entry.attr = (struct fuse_attr){ .ino = st->st_ino, .size = (uint64_t)st->st_size,
					     .blocks = (uint64_t)st->st_blocks, .atime = (uint64_t)st->st_atim.tv_sec,
					     .mtime = (uint64_t)st->st_mtim.tv_sec, .ctime = (uint64_t)st->st_ctim.tv_sec,
					     .atimensec = (uint32_t)st->st_atim.tv_nsec,
					     .mtimensec = (uint32_t)st->st_mtim.tv_nsec,
					     .ctimensec = (uint32_t)st->st_ctim.tv_nsec, .mode = st->st_mode,
					     .nlink = (uint32_t)st->st_nlink, .uid = st->st_uid, .gid = st->st_gid,
					     .rdev = (uint32_t)st->st_rdev, .blksize = (uint32_t)st->st_blksize };
	out.open = (struct pt_open_out){ .fh = fh, .open_flags = FOPEN_PASSTHROUGH | FOPEN_NOFLUSH, .backing_id = backing_id };
	return fuse_reply_buf(req, (const char *)&out, sizeof out);
}
