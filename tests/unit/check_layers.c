/* Unit tests of the core over layers without fds: mounts of two in-memory
 * lower layers (layers/memory.c) under an upper and workdir in a temporary
 * directory, driven through the core's own lookup, listing and copy-up
 * (no /dev/fuse): names across layers, whiteouts of every spelling, opaque
 * directories, the merged listing, inode numbers, and copy-up through the
 * layer's read op. */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../../layers/memory.h"
#include "../../overlay/overlay.h"
#include "../../overlay/readdir.h"
#include "check_main.h"

/* the layers' indexes in a mount: 0 is the upper */
enum { UPPER, TOP, BOTTOM, NLOWERS = 2 };

#define BIG_SIZE 200000 /* more than one read of copy-up's buffer */

static struct ovl_memory *lowers[NLOWERS];
static char tmp[64], upper[80], work[80];
static char big[BIG_SIZE + 1];

static void add(struct ovl_memory *m, const char *path, mode_t mode, const char *data)
{
	ck_assert_int_eq(ovl_memory_add(m, path, mode, 0, data), 0);
}

static const char *const opaque_names[] = { "opq_trusted", "opq_user", "opq_marker" };

/* The directories that are opaque in the top layer, each holding a file named name. */
static void add_opaque_dirs(struct ovl_memory *m, const char *name)
{
	for (size_t i = 0; i < 3; i++) {
		char path[64];
		add(m, opaque_names[i], S_IFDIR | 0755, NULL);
		snprintf(path, sizeof path, "%s/%s", opaque_names[i], name);
		add(m, path, S_IFREG | 0644, name);
	}
}

/* The top lower layer: its names, in an order that is not the listing's. */
static struct ovl_memory *make_top(void)
{
	struct ovl_memory *m = ovl_memory_new(makedev(4000, 1));
	ck_assert_ptr_nonnull(m);
	add(m, "shared", S_IFREG | 0644, "from top");
	add(m, "only_top", S_IFREG | 0644, "t");
	ck_assert_int_eq(ovl_memory_add(m, "gone_char", S_IFCHR, makedev(0, 0), NULL), 0);
	add(m, ".wh.gone_file", S_IFREG, "");
	add(m, ".wh.ghost", S_IFREG, ""); /* hides nothing */
	add(m, "d", S_IFDIR | 0750, NULL);
	add(m, "d/x", S_IFREG | 0644, "top x");
	add(m, "link", S_IFLNK | 0777, "only_top");
	add_opaque_dirs(m, "mine");
	ck_assert_int_eq(ovl_memory_set_xattr(m, "opq_trusted", "trusted.overlay.opaque", "y"), 0);
	ck_assert_int_eq(ovl_memory_set_xattr(m, "opq_user", "user.overlay.opaque", "y"), 0);
	add(m, "opq_marker/.wh..wh..opq", S_IFREG, "");
	return m;
}

static struct ovl_memory *make_bottom(void)
{
	struct ovl_memory *m = ovl_memory_new(makedev(4000, 2));
	ck_assert_ptr_nonnull(m);
	add(m, "only_bottom", S_IFREG | 0640, big);
	ck_assert_int_eq(ovl_memory_set_xattr(m, "only_bottom", "user.color", "blue"), 0);
	ck_assert_int_eq(ovl_memory_set_xattr(m, "only_bottom", "user.overlay.ours", "x"), 0);
	add(m, "shared", S_IFREG | 0644, "from bottom");
	add(m, "gone_char", S_IFREG | 0644, "hidden");
	add(m, "gone_file", S_IFREG | 0644, "hidden");
	ck_assert_int_eq(ovl_memory_add(m, "last_char", S_IFCHR, makedev(0, 0), NULL), 0);
	add(m, "d", S_IFDIR | 0755, NULL);
	add(m, "d/y", S_IFREG | 0644, "bottom y");
	add(m, "d/x", S_IFREG | 0644, "bottom x");
	add_opaque_dirs(m, "theirs");
	return m;
}

static void setup(void)
{
	for (size_t i = 0; i < BIG_SIZE; i++)
		big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
	snprintf(tmp, sizeof tmp, "/tmp/check_layers.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(upper, sizeof upper, "%s/u", tmp);
	snprintf(work, sizeof work, "%s/w", tmp);
	ck_assert_int_eq(mkdir(upper, 0755), 0);
	ck_assert_int_eq(mkdir(work, 0755), 0);
	lowers[0] = make_top();
	lowers[1] = make_bottom();
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void teardown(void)
{
	nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < NLOWERS; i++)
		ovl_memory_free(lowers[i]);
}

/* ---- a mount over the memory layers ---- */
struct mnt {
	struct ovl_config cfg;
	struct ovl_fs *fs;
};

static void mount_with(struct mnt *t, uint32_t caps)
{
	struct ovl_layer layers[NLOWERS];
	char err[512];
	ovl_config_init(&t->cfg);
	t->cfg.upperdir = strdup(upper);
	t->cfg.workdir = strdup(work);
	for (size_t i = 0; i < NLOWERS; i++)
		ovl_memory_layer(lowers[i], caps, &layers[i]);
	ck_assert_msg(ovl_fs_open_with(&t->cfg, layers, NLOWERS, &t->fs, err, sizeof err) == 0, "open: %s", err);
	ck_assert_msg(ovl_fs_prepare_workdir(t->fs, err, sizeof err) == 0, "workdir: %s", err);
}

/* Unmounts; every handle the core opened was closed through the layer. */
static void unmount(struct mnt *t)
{
	ovl_fs_close(t->fs);
	ovl_config_free(&t->cfg);
	for (size_t i = 0; i < NLOWERS; i++)
		ck_assert_int_eq(ovl_memory_open_handles(lowers[i]), 0);
}

/* ovl_lookup_entry as a LOOKUP runs it: -errno, or 0 and the node in *n. */
static int look_up(struct mnt *t, struct ovl_node *dir, const char *name, struct fuse_entry_param *e,
		   struct ovl_node **n)
{
	ovl_ns_lock(t->fs, dir, false);
	int res = ovl_lookup_entry(t->fs, dir, name, e);
	ovl_ns_unlock(t->fs, dir);
	*n = res == 0 ? ovl_node_get(t->fs, e->ino) : NULL;
	ck_assert(res < 0 || *n != NULL);
	return res;
}

static struct ovl_node *node_at(struct mnt *t, struct ovl_node *dir, const char *name)
{
	struct fuse_entry_param e;
	struct ovl_node *n;
	ck_assert_msg(look_up(t, dir, name, &e, &n) == 0, "lookup %s", name);
	return n;
}

static void expect_absent(struct mnt *t, struct ovl_node *dir, const char *name)
{
	struct fuse_entry_param e;
	struct ovl_node *n;
	ck_assert_msg(look_up(t, dir, name, &e, &n) == -ENOENT, "%s is shown", name);
}

/* The merged listing of dir (loaded through the layers' list ops), as "name:layer" words. */
static void listing_of(struct mnt *t, struct ovl_node *dir, char *out, size_t size)
{
	ovl_ns_lock(t->fs, dir, false);
	ck_assert_int_eq(ovl_dir_load_listing(t->fs, dir), 0);
	ovl_ns_unlock(t->fs, dir);
	const struct ovl_listing *l = dir->dir->listing;
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < ovl_listing_count(l); i++) {
		uint32_t layer, nlower;
		uint8_t type;
		ovl_listing_entry(l, i, &layer, &type, &nlower);
		len += (size_t)snprintf(out + len, size - len, "%s%s:%u", i ? " " : "", ovl_listing_name(l, i), layer);
		ck_assert_uint_lt(len, size);
	}
}

/* ---- the tests ---- */
START_TEST(lookup_across_layers)
{
	struct mnt t;
	mount_with(&t, OVL_LAYER_STABLE_INO);
	struct ovl_node *root = t.fs->root, *n;
	ck_assert_uint_eq((n = node_at(&t, root, "shared"))->layer, TOP);
	ck_assert_uint_eq(n->type, S_IFREG);
	ck_assert_uint_eq(node_at(&t, root, "only_top")->layer, TOP);
	ck_assert_uint_eq(node_at(&t, root, "only_bottom")->layer, BOTTOM);
	ck_assert_uint_eq(node_at(&t, root, "link")->type, S_IFLNK);
	struct ovl_node *d = node_at(&t, root, "d");
	ck_assert_ptr_nonnull(d->dir);
	ck_assert_uint_eq(d->dir->nlayers, 2);
	ck_assert_uint_eq(node_at(&t, d, "x")->layer, TOP);
	ck_assert_uint_eq(node_at(&t, d, "y")->layer, BOTTOM);
	expect_absent(&t, root, "nothing");
	expect_absent(&t, d, "nothing");
	struct ovl_found f;
	ovl_ns_lock(t.fs, root, false);
	ck_assert_int_eq(ovl_lookup_name(t.fs, root, "shared", &f), 0);
	ovl_ns_unlock(t.fs, root);
	ck_assert_int_eq(f.st.st_size, strlen("from top"));
	ovl_found_free(&f);
	unmount(&t);
}
END_TEST

START_TEST(whiteouts_hide_lower_names)
{
	struct mnt t;
	mount_with(&t, OVL_LAYER_STABLE_INO);
	struct ovl_node *root = t.fs->root;
	/* char 0/0 and .wh.NAME hide the bottom's names; neither shows itself */
	expect_absent(&t, root, "gone_char");
	expect_absent(&t, root, "gone_file");
	expect_absent(&t, root, ".wh.gone_file");
	expect_absent(&t, root, "ghost");
	expect_absent(&t, root, "last_char"); /* a whiteout in the last layer hides nothing, and is no file */
	char names[1024];
	listing_of(&t, root, names, sizeof names);
	ck_assert_ptr_null(strstr(names, "gone"));
	ck_assert_ptr_null(strstr(names, "ghost"));
	ck_assert_ptr_null(strstr(names, "last_char"));
	/* looked up again, now from the listing */
	expect_absent(&t, root, "gone_char");
	expect_absent(&t, root, "gone_file");
	unmount(&t);
}
END_TEST

START_TEST(opaque_dirs)
{
	struct mnt t;
	for (int listed = 0; listed < 2; listed++) {
		/* a lookup probes the layers, or completes what the root's listing told */
		mount_with(&t, OVL_LAYER_STABLE_INO);
		if (listed) {
			char names[1024];
			listing_of(&t, t.fs->root, names, sizeof names);
		}
		for (size_t i = 0; i < 3; i++) {
			struct ovl_node *d = node_at(&t, t.fs->root, opaque_names[i]);
			ck_assert_msg(d->dir->nlayers == 1, "%s merges %u layers", opaque_names[i], d->dir->nlayers);
			ck_assert_uint_eq(node_at(&t, d, "mine")->layer, TOP);
			expect_absent(&t, d, "theirs");
			expect_absent(&t, d, ".wh..wh..opq");
			char names[256];
			listing_of(&t, d, names, sizeof names);
			ck_assert_str_eq(names, "mine:1");
		}
		unmount(&t);
	}
}
END_TEST

START_TEST(merged_listing)
{
	struct mnt t;
	mount_with(&t, OVL_LAYER_STABLE_INO);
	char names[1024];
	/* sorted by name, each from its top layer, whatever order the layers gave */
	listing_of(&t, t.fs->root, names, sizeof names);
	ck_assert_str_eq(names, "d:1 link:1 only_bottom:2 only_top:1 opq_marker:1 opq_trusted:1 opq_user:1 shared:1");
	const struct ovl_listing *l = t.fs->root->dir->listing;
	uint32_t layer, nlower;
	uint8_t type;
	ovl_listing_entry(l, 0, &layer, &type, &nlower);
	ck_assert(type == DT_DIR && nlower == 1); /* d: the bottom's merges below the top's */
	ovl_listing_entry(l, 1, &layer, &type, &nlower);
	ck_assert(type == DT_LNK && nlower == 0);
	ovl_listing_entry(l, 2, &layer, &type, &nlower);
	ck_assert(type == DT_REG);
	listing_of(&t, node_at(&t, t.fs->root, "d"), names, sizeof names);
	ck_assert_str_eq(names, "x:1 y:2");
	unmount(&t);
}
END_TEST

/* st_ino (lookup) and d_ino (listing) of every name agree, and are the
 * lowest layer's number with its filesystem in the high bits (xino). */
START_TEST(inode_numbers)
{
	struct mnt t;
	mount_with(&t, OVL_LAYER_STABLE_INO);
	struct ovl_fs *fs = t.fs;
	char names[1024];
	listing_of(&t, fs->root, names, sizeof names);
	ck_assert_uint_gt(fs->xino_bits, 0); /* the upper and two layers: three filesystems */
	const struct ovl_listing *l = fs->root->dir->listing;
	for (size_t i = 0; i < ovl_listing_count(l); i++) {
		const char *name = ovl_listing_name(l, i);
		struct fuse_entry_param e;
		struct ovl_node *n;
		ck_assert_int_eq(look_up(&t, fs->root, name, &e, &n), 0);
		ck_assert_msg(e.attr.st_ino == ovl_listing_ino(fs, l, i), "%s: st_ino %lu, d_ino %lu", name,
			      (unsigned long)e.attr.st_ino, (unsigned long)ovl_listing_ino(fs, l, i));
		const struct ovl_memory *m = lowers[n->layer - TOP];
		ino_t expect = (ino_t)ovl_ino_compose(64, fs->xino_bits, fs->layers[n->layer].fsid, ovl_memory_ino(m, name));
		ck_assert_uint_eq(e.attr.st_ino, expect);
	}
	/* the same number in two layers: two inodes */
	ck_assert_uint_eq(ovl_memory_ino(lowers[0], "shared"), ovl_memory_ino(lowers[1], "only_bottom"));
	struct fuse_entry_param a, b;
	struct ovl_node *n;
	look_up(&t, fs->root, "shared", &a, &n);
	look_up(&t, fs->root, "only_bottom", &b, &n);
	ck_assert_uint_ne(a.attr.st_ino, b.attr.st_ino);
	ck_assert_uint_ne(a.ino, b.ino);
	unmount(&t);
}
END_TEST

static void expect_upper_file(const char *name, const char *data, size_t len, mode_t mode)
{
	char path[128], *buf = malloc(len + 1);
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", upper, name);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert_msg(S_ISREG(st.st_mode) && (st.st_mode & 07777) == mode, "%s: mode %o", name, st.st_mode);
	ck_assert_int_eq(st.st_size, len);
	int fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, len + 1), len);
	ck_assert(memcmp(buf, data, len) == 0);
	close(fd);
	free(buf);
}

/* Whether upper/name carries our origin record. */
static bool has_origin(const char *name)
{
	char path[128], v[64];
	snprintf(path, sizeof path, "%s/%s", upper, name);
	return lgetxattr(path, "trusted.overlay.fuseoverlayfs.origin", v, sizeof v) > 0 ||
	       lgetxattr(path, "user.overlay.fuseoverlayfs.origin", v, sizeof v) > 0;
}

START_TEST(copy_up_by_read_op)
{
	struct mnt t;
	mount_with(&t, OVL_LAYER_STABLE_INO);
	struct fuse_entry_param e;
	struct ovl_node *n;
	ck_assert_int_eq(look_up(&t, t.fs->root, "only_bottom", &e, &n), 0);
	ino_t shown = e.attr.st_ino;
	long reads = ovl_memory_reads(lowers[1]);
	ck_assert_int_eq(ovl_copy_up(t.fs, n, true), 0);
	ck_assert_uint_eq(n->layer, UPPER);
	ck_assert_int_ge(ovl_memory_reads(lowers[1]) - reads, BIG_SIZE / 65536 + 1); /* the data came by the read op */
	expect_upper_file("only_bottom", big, BIG_SIZE, 0640);
	/* xattrs come along, but the overlay's own */
	char path[128], v[16];
	snprintf(path, sizeof path, "%s/only_bottom", upper);
	ck_assert_int_eq(lgetxattr(path, "user.color", v, sizeof v), 4);
	ck_assert(memcmp(v, "blue", 4) == 0);
	ck_assert_int_lt(lgetxattr(path, "user.overlay.ours", v, sizeof v), 0);
	ck_assert(has_origin("only_bottom"));
	struct stat st;
	struct ovl_node *place = ovl_ns_lock_place(t.fs, n, false);
	ck_assert_int_eq(ovl_node_stat(t.fs, n, &st), 0);
	ovl_ns_unlock(t.fs, place);
	ck_assert_uint_eq(st.st_ino, shown); /* the origin's number, kept */

	/* a file in a merged directory: the directory first, from the top layer */
	struct ovl_node *y = node_at(&t, node_at(&t, t.fs->root, "d"), "y");
	ck_assert_int_eq(ovl_copy_up(t.fs, y, true), 0);
	snprintf(path, sizeof path, "%s/d", upper);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750);
	expect_upper_file("d/y", "bottom y", 8, 0644);
	/* a symlink, by the layer's readlink */
	ck_assert_int_eq(ovl_copy_up(t.fs, node_at(&t, t.fs->root, "link"), true), 0);
	char target[64];
	snprintf(path, sizeof path, "%s/link", upper);
	ck_assert_int_eq(readlink(path, target, sizeof target), 8);
	ck_assert(memcmp(target, "only_top", 8) == 0);
	unmount(&t);

	/* the number survives a remount: the origin names the bottom layer's object */
	mount_with(&t, OVL_LAYER_STABLE_INO);
	ck_assert_int_eq(look_up(&t, t.fs->root, "only_bottom", &e, &n), 0);
	ck_assert_uint_eq(n->layer, UPPER);
	ck_assert_uint_eq(e.attr.st_ino, shown);
	unmount(&t);
}
END_TEST

/* A layer whose numbers may change between mounts records no origin: the
 * copy keeps the number for this mount only. */
START_TEST(copy_up_without_stable_ino)
{
	struct mnt t;
	mount_with(&t, 0);
	struct fuse_entry_param e;
	struct ovl_node *n;
	ck_assert_int_eq(look_up(&t, t.fs->root, "shared", &e, &n), 0);
	ino_t shown = e.attr.st_ino;
	ck_assert_int_eq(ovl_copy_up(t.fs, n, false), 0);
	expect_upper_file("shared", "", 0, 0644); /* no data asked for */
	ck_assert(!has_origin("shared"));
	ck_assert_int_eq(look_up(&t, t.fs->root, "shared", &e, &n), 0);
	ck_assert_uint_eq(e.attr.st_ino, shown);
	unmount(&t);
	mount_with(&t, 0);
	ck_assert_int_eq(look_up(&t, t.fs->root, "shared", &e, &n), 0);
	ck_assert_uint_ne(e.attr.st_ino, shown);
	unmount(&t);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("layers");
	TCase *t = tcase_create("memory");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, lookup_across_layers);
	tcase_add_test(t, whiteouts_hide_lower_names);
	tcase_add_test(t, opaque_dirs);
	tcase_add_test(t, merged_listing);
	tcase_add_test(t, inode_numbers);
	tcase_add_test(t, copy_up_by_read_op);
	tcase_add_test(t, copy_up_without_stable_ino);
	suite_add_tcase(s, t);
	return s;
}

CHECK_MAIN(suite)
