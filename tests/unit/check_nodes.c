/* Unit tests of a mount's nodes over a real directory, without /dev/fuse:
 * two mounts' node tables in one process, and the namespace locks
 * (overlay/locks.c): which a rename takes, a reader following a moved
 * file, two directory locks in either order, and a hard link's node taking
 * a name in another directory only with that directory locked. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../overlay/overlay.h"
#include "check_main.h"

/* ---- two mounts in one process: each owns its node table (DESIGN.md §3) ---- */
/* A mount of the lower layer dir, as ovl_fs_open builds it; no session, no
 * upper layer, and the workdir steps (ovl_fs_prepare_workdir) are not run. */
static struct ovl_fs *open_lower(struct ovl_config *cfg, const char *dir)
{
	char err[512];
	struct ovl_fs *fs;
	ovl_config_init(cfg);
	cfg->lowerdir = strdup(dir);
	ck_assert_ptr_nonnull(cfg->lowerdir);
	ck_assert_msg(ovl_fs_open(cfg, &fs, err, sizeof err) == 0, "ovl_fs_open: %s", err);
	return fs;
}

/* Looks name up in the root as a LOOKUP request does; the node it made or found. */
static struct ovl_node *look_up(struct ovl_fs *fs, const char *name, struct fuse_entry_param *e)
{
	ovl_ns_lock(fs, fs->root, false);
	int res = ovl_lookup_entry(fs, fs->root, name, e);
	ovl_ns_unlock(fs, fs->root);
	ck_assert_int_eq(res, 0);
	struct ovl_node *n = ovl_node_get(fs, e->ino);
	ck_assert_ptr_nonnull(n);
	return n;
}

static void add_iteration(void *arg, size_t i)
{
	atomic_fetch_add((atomic_size_t *)arg, i + 1);
}

static void expect_counts(struct ovl_fs *fs, long nodes, long dirs)
{
	long n, d;
	ovl_nodes_counters(fs, &n, &d);
	ck_assert_int_eq(n, nodes);
	ck_assert_int_eq(d, dirs);
}

START_TEST(two_mounts_node_tables)
{
	char dir[] = "/tmp/check_overlay.XXXXXX", path[64];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/f", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	snprintf(path, sizeof path, "%s/d", dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);

	/* two mounts of the same layer: the same objects, so the same identities */
	struct ovl_config ca, cb;
	struct ovl_fs *a = open_lower(&ca, dir), *b = open_lower(&cb, dir);
	ck_assert_ptr_ne(a->nodes, b->nodes);
	expect_counts(a, 1, 1);
	expect_counts(b, 1, 1);

	/* a node made in a is found in a only, by nodeid and by identity */
	struct fuse_entry_param ea, eb;
	struct ovl_node *na = look_up(a, "f", &ea), *found;
	struct ovl_node_peek peek;
	ck_assert_uint_eq(ea.generation, 1);
	ck_assert_ptr_null(ovl_node_get(b, ea.ino));
	ck_assert_ptr_null(ovl_node_find(b, na->dev, na->ino, NULL, NULL));
	ck_assert(!ovl_node_peek(b, na->dev, na->ino, NULL, NULL, &peek));
	ck_assert_ptr_eq(found = ovl_node_find(a, na->dev, na->ino, NULL, NULL), na);
	ovl_node_unref(a, found);
	ck_assert(ovl_node_peek(a, na->dev, na->ino, NULL, NULL, &peek) && peek.held);
	expect_counts(a, 2, 1);
	expect_counts(b, 1, 1);

	/* the same object looked up in b gets b's own node, under the same
	 * nodeid (this thread allocates from the same shard of either table) */
	struct ovl_node *nb = look_up(b, "f", &eb);
	ck_assert_ptr_ne(nb, na);
	ck_assert_uint_eq(eb.ino, ea.ino);
	ck_assert_uint_eq(eb.generation, 1);
	ck_assert_ptr_eq(ovl_node_get(a, ea.ino), na);
	ck_assert_ptr_eq(ovl_node_get(b, eb.ino), nb);
	ck_assert_ptr_eq(found = ovl_node_find(b, nb->dev, nb->ino, NULL, NULL), nb);
	ovl_node_unref(b, found);

	/* lookups count per table: a's two, forgotten, free a's node only */
	ck_assert_ptr_eq(look_up(a, "f", &ea), na);
	ovl_node_forget(a, na, 2);
	ck_assert_ptr_null(ovl_node_get(a, ea.ino));
	ck_assert(!ovl_node_peek(a, nb->dev, nb->ino, NULL, NULL, &peek));
	ck_assert_ptr_eq(ovl_node_get(b, eb.ino), nb);
	ck_assert(ovl_node_peek(b, nb->dev, nb->ino, NULL, NULL, &peek) && peek.held);
	expect_counts(a, 1, 1);
	expect_counts(b, 2, 1);

	/* a's slot comes back under a new generation; b's keeps its own */
	struct fuse_entry_param again;
	look_up(a, "f", &again);
	ck_assert_uint_eq(again.ino, ea.ino);
	ck_assert_uint_eq(again.generation, 2);
	ck_assert_uint_eq(ovl_node_generation(b, nb), 1);

	/* directories count per table too */
	struct ovl_node *da = look_up(a, "d", &ea);
	expect_counts(a, 3, 2);
	expect_counts(b, 2, 1);

	/* each mount has its own worker pool and read-ahead thread */
	atomic_size_t sum = 0;
	ovl_parallel_for(a, 100, add_iteration, &sum);
	ovl_parallel_for(b, 100, add_iteration, &sum);
	ck_assert_uint_eq(atomic_load(&sum), 2 * 5050);
	ck_assert(a->workers.have_workers && b->workers.have_workers);
	ovl_prefetch_dir(a, da);
	ck_assert(a->prefetch.running && !atomic_load(&b->prefetch.started));

	/* b outlives a, whose threads end with it */
	ovl_fs_close(a);
	ck_assert_ptr_eq(ovl_node_get(b, eb.ino), nb);
	look_up(b, "d", &eb);
	expect_counts(b, 3, 2);
	ovl_parallel_for(b, 100, add_iteration, &sum);
	ck_assert_uint_eq(atomic_load(&sum), 3 * 5050);
	ovl_fs_close(b);
	ovl_config_free(&ca);
	ovl_config_free(&cb);

	ck_assert_int_eq(rmdir(path), 0);
	snprintf(path, sizeof path, "%s/f", dir);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ---- namespace locks ---- */
START_TEST(rename_locks_only_what_moves)
{
	/* within one directory: its lock, also for a directory */
	ck_assert_int_eq(ovl_rename_locks(true, false), OVL_LOCK_DIR);
	ck_assert_int_eq(ovl_rename_locks(true, true), OVL_LOCK_DIR);
	/* a file between two: both, and no rename lock */
	ck_assert_int_eq(ovl_rename_locks(false, false), OVL_LOCK_TWO_DIRS);
	/* the rename lock: only for a directory between two */
	ck_assert_int_eq(ovl_rename_locks(false, true), OVL_LOCK_TREE);
}
END_TEST

struct locker {
	struct ovl_fs *fs;
	struct ovl_node *node, *a, *b, *got;
};

static void *lock_place_of(void *arg)
{
	struct locker *l = arg;
	l->got = ovl_ns_lock_place(l->fs, l->node, false);
	ovl_ns_unlock(l->fs, l->got);
	return NULL;
}

static void *lock_pairs(void *arg)
{
	struct locker *l = arg;
	for (int i = 0; i < 20000; i++) {
		ovl_ns_lock_two(l->fs, l->a, true, l->b, i % 2 == 0);
		ovl_ns_unlock_two(l->fs, l->a, l->b);
	}
	return NULL;
}

/* A lower directory of d1, d2 and f, a mount of it, and their nodes. */
struct three_names {
	char dir[32];
	struct ovl_config cfg;
	struct ovl_fs *fs;
	struct ovl_node *d1, *d2, *f;
};

static void three_names_open(struct three_names *t)
{
	char path[64];
	snprintf(t->dir, sizeof t->dir, "/tmp/check_overlay.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(t->dir));
	snprintf(path, sizeof path, "%s/d1", t->dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof path, "%s/d2", t->dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof path, "%s/f", t->dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	t->fs = open_lower(&t->cfg, t->dir);
	struct fuse_entry_param e;
	t->d1 = look_up(t->fs, "d1", &e);
	t->d2 = look_up(t->fs, "d2", &e);
	t->f = look_up(t->fs, "f", &e);
}

static void three_names_close(struct three_names *t)
{
	char cmd[64];
	ovl_fs_close(t->fs);
	ovl_config_free(&t->cfg);
	snprintf(cmd, sizeof cmd, "rm -r '%s'", t->dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(lock_place_follows_a_move)
{
	struct three_names n;
	three_names_open(&n);
	/* a reader of f's place waits for the root, where f is; f moves to d1
	 * meanwhile (under the root's lock, as a rename): the reader ends up
	 * holding d1's lock, the place f has now */
	struct locker l = { .fs = n.fs, .node = n.f };
	pthread_t t;
	ovl_ns_lock(n.fs, n.fs->root, true);
	ck_assert_int_eq(pthread_create(&t, NULL, lock_place_of, &l), 0);
	usleep(100000);
	ovl_node_renamed(n.fs, n.f, n.fs->root, "f", n.d1, "g");
	ovl_ns_unlock(n.fs, n.fs->root);
	pthread_join(t, NULL);
	ck_assert_ptr_eq(l.got, n.d1);
	three_names_close(&n);
}
END_TEST

START_TEST(two_dir_locks_any_order)
{
	struct three_names n;
	three_names_open(&n);
	/* two movers between the same directories, named in opposite orders:
	 * neither waits for the other for ever (the test's timeout) */
	struct locker x = { .fs = n.fs, .a = n.d1, .b = n.d2 }, y = { .fs = n.fs, .a = n.d2, .b = n.d1 };
	pthread_t tx, ty;
	ck_assert_int_eq(pthread_create(&tx, NULL, lock_pairs, &x), 0);
	ck_assert_int_eq(pthread_create(&ty, NULL, lock_pairs, &y), 0);
	pthread_join(tx, NULL);
	pthread_join(ty, NULL);
	/* and one directory named twice is locked once */
	ovl_ns_lock_two(n.fs, n.d1, false, n.d1, true);
	ck_assert_int_eq(pthread_rwlock_tryrdlock(&n.d1->dir->ns), EBUSY);
	ovl_ns_unlock_two(n.fs, n.d1, n.d1);
	three_names_close(&n);
}
END_TEST

/* Looks name up in dir as a LOOKUP request does. */
static struct ovl_node *look_up_in(struct ovl_fs *fs, struct ovl_node *dir, const char *name)
{
	struct fuse_entry_param e;
	ovl_ns_lock(fs, dir, false);
	int res = ovl_lookup_entry(fs, dir, name, &e);
	ovl_ns_unlock(fs, dir);
	ck_assert_int_eq(res, 0);
	return ovl_node_get(fs, e.ino);
}

START_TEST(hard_link_takes_a_name_elsewhere_only_locked)
{
	/* an upper layer with one object named d1/f and d2/f */
	char dir[] = "/tmp/check_overlay.XXXXXX", path[96], path2[96], cmd[160];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cmd, sizeof cmd, "cd '%s' && mkdir l u w u/d1 u/d2 && echo x >u/d1/f && ln u/d1/f u/d2/f", dir);
	ck_assert_int_eq(system(cmd), 0);
	struct ovl_config cfg;
	char err[512];
	struct ovl_fs *fs;
	ovl_config_init(&cfg);
	snprintf(path, sizeof path, "%s/l", dir);
	cfg.lowerdir = strdup(path);
	snprintf(path, sizeof path, "%s/u", dir);
	cfg.upperdir = strdup(path);
	snprintf(path2, sizeof path2, "%s/w", dir);
	cfg.workdir = strdup(path2);
	ck_assert_msg(ovl_fs_open(&cfg, &fs, err, sizeof err) == 0, "ovl_fs_open: %s", err);
	struct fuse_entry_param e;
	struct ovl_node *d1 = look_up(fs, "d1", &e), *d2 = look_up(fs, "d2", &e);
	struct ovl_node *f = look_up_in(fs, d1, "f");
	ck_assert_ptr_eq(look_up_in(fs, d2, "f"), f); /* one node, d2/f its alias */
	ck_assert_ptr_eq(f->parent, d1);

	/* d1/f goes while d2 is busy (a lookup there): the node may not take
	 * d2/f unseen, so the caller must do it again under the tree lock */
	ovl_ns_lock(fs, d1, true);
	ovl_dir_lock(d2, false);
	ck_assert(!ovl_node_name_gone(fs, f, d1, "f", false));
	ck_assert_ptr_eq(f->parent, d1);
	ck_assert(!f->unlinked);
	ovl_dir_unlock(d2);
	/* d2 free: it takes d2/f */
	ck_assert(ovl_node_name_gone(fs, f, d1, "f", false));
	ovl_ns_unlock(fs, d1);
	ck_assert_ptr_eq(f->parent, d2);
	ck_assert_str_eq(f->name, "f");
	ck_assert(!f->unlinked);

	/* its last name goes: a lookup elsewhere that found it just before
	 * may not name it again (it gets a node of its own) */
	ovl_ns_lock(fs, d2, true);
	ck_assert(ovl_node_name_gone(fs, f, d2, "f", false));
	ovl_ns_unlock(fs, d2);
	ck_assert(f->unlinked);
	ck_assert_int_eq(ovl_node_add_alias(fs, f, d1, "g"), -ESTALE);

	ovl_fs_close(fs);
	ovl_config_free(&cfg);
	snprintf(cmd, sizeof cmd, "rm -r '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("nodes");
	TCase *t = tcase_create("nodes");
	tcase_add_test(t, two_mounts_node_tables);
	suite_add_tcase(s, t);
	t = tcase_create("locks");
	tcase_add_test(t, rename_locks_only_what_moves);
	tcase_add_test(t, lock_place_follows_a_move);
	tcase_add_test(t, two_dir_locks_any_order);
	tcase_add_test(t, hard_link_takes_a_name_elsewhere_only_locked);
	suite_add_tcase(s, t);
	return s;
}

CHECK_MAIN(suite)
