/* plugins/loader.c without a mount: lowerdir entries //NAME/DATA/PATH taken
 * apart, the loader's refusals that need no plugin built (a file that is
 * not there, a missing plugin directory, no plugin of a name), and the
 * chain of a layout as deep as images get (the tree's oci.so loaded, its
 * layers given to the core, a name looked up) without /dev/fuse. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../../overlay/overlay.h"
#include "../../plugins/loader.h"
#include "check_main.h"
#include "oci_fixture.h"

static void parses(const char *entry, const char *name, const char *data, const char *path)
{
	struct ovl_plugin_spec s;
	ck_assert_msg(ovl_plugin_spec_parse(entry, &s) == 0, "%s: refused", entry);
	ck_assert_str_eq(s.name, name);
	ck_assert_str_eq(s.data, data);
	ck_assert_str_eq(s.path, path);
	ovl_plugin_spec_free(&s);
}

START_TEST(spec_parts)
{
	parses("//mem/x/y", "mem", "x", "/y");
	parses("//oci//abs/path", "oci", "", "/abs/path");
	parses("//oci//srv/x", "oci", "", "/srv/x");
	parses("//oci/sha256:ab/srv/x/y", "oci", "sha256:ab", "/srv/x/y");
	parses("//n/d/", "n", "d", "/");
	parses("//n/d//p", "n", "d", "//p");
}
END_TEST

START_TEST(spec_refused)
{
	static const char *const bad[] = { "/mem/x/y", "mem/x/y", "//", "///x/y", "//mem", "//mem/", "//mem/x", "" };
	struct ovl_plugin_spec s;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(ovl_plugin_spec_parse(bad[i], &s) == -EINVAL, "'%s' accepted", bad[i]);
	ck_assert(ovl_plugin_spec_is("//a/b/c"));
	ck_assert(!ovl_plugin_spec_is("/a/b/c"));
}
END_TEST

START_TEST(load_missing_file_names_it)
{
	struct ovl_plugins *p = NULL;
	char err[512];
	ck_assert_int_eq(ovl_plugins_load("/nonexistent/x.so", &p, err, sizeof err), -1);
	ck_assert_ptr_null(p);
	ck_assert_msg(strstr(err, "/nonexistent/x.so: plugins: cannot load") == err, "%s", err);
	ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(missing_dir_is_no_error_but_no_plugin)
{
	struct ovl_plugins *p = NULL;
	struct ovl_layer out[OVL_PLUGIN_MAX_LAYERS];
	char err[512];
	setenv("FUSE_OVERLAYFS_PLUGIN_DIR", "/nonexistent/plugins", 1);
	ck_assert_str_eq(ovl_plugins_dir(), "/nonexistent/plugins");
	ck_assert_int_eq(ovl_plugins_load(NULL, &p, err, sizeof err), 0);
	ck_assert_int_eq(ovl_plugins_open_layers(p, "//mem/x/y", out, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "//mem/x/y: lowerdir: no plugin named 'mem'") == err, "%s", err);
	ck_assert_int_eq(ovl_plugins_open_layers(p, "//mem/x", out, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "want //NAME/DATA/PATH") != NULL, "%s", err);
	ovl_plugins_free(p);
	unsetenv("FUSE_OVERLAYFS_PLUGIN_DIR");
	ck_assert_str_eq(ovl_plugins_dir(), OVL_PLUGIN_DIR);
}
END_TEST

/* The content of name in dir of fs, as its layer serves it, and that layer's index. */
static uint32_t read_merged(struct ovl_fs *fs, const char *name, char *buf, size_t size)
{
	struct fuse_entry_param e;
	ovl_ns_lock(fs, fs->root, false);
	int res = ovl_lookup_entry(fs, fs->root, name, &e);
	ovl_ns_unlock(fs, fs->root);
	ck_assert_msg(res == 0, "lookup %s: %s", name, strerror(-res));
	struct ovl_node *n = ovl_node_get(fs, e.ino);
	ck_assert_ptr_nonnull(n);
	struct ovl_layer *l = &fs->layers[n->layer];
	int h = l->ops->openat(l, l->root_fd, name, O_RDONLY, 0);
	ck_assert_int_ge(h, 0);
	ssize_t got = l->ops->read(l, h, buf, size - 1, 0);
	ck_assert_int_ge(got, 0);
	buf[got] = 0;
	l->ops->close(l, h);
	return n->layer;
}

/* OCI images have up to 127 layers (Docker's bound; more than the 64 an
 * entry took once): a layout of 128 mounts, the top layer's file wins and
 * the bottom layer's shows through. */
START_TEST(layout_of_128_layers)
{
	enum { N = 128 };
	char lay[256], lower[300], err[512], buf[64];
	make_stack(lay, N);
	struct ovl_config cfg;
	ovl_config_init(&cfg);
	snprintf(lower, sizeof lower, "//oci/v1%s", lay);
	cfg.lowerdir = strdup(lower);
	cfg.plugins = strdup(OCI_PLUGIN_SO);
	/* fewer fds than layers hold (a blob each): raised before they are opened */
	struct rlimit rl;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = N / 2;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	struct ovl_fs *fs;
	ck_assert_msg(ovl_fs_open(&cfg, &fs, err, sizeof err) == 0, "%s", err);
	ck_assert_uint_eq(fs->nlayers, N);
	ck_assert_uint_eq(read_merged(fs, "shared", buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "layer 127");
	ck_assert_uint_eq(read_merged(fs, "only_0", buf, sizeof buf), N - 1);
	ck_assert_str_eq(buf, "layer 0");
	ovl_fs_close(fs);
	ovl_config_free(&cfg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("loader");
	tcase_add_test(tc, spec_parts);
	tcase_add_test(tc, spec_refused);
	tcase_add_test(tc, load_missing_file_names_it);
	tcase_add_test(tc, missing_dir_is_no_error_but_no_plugin);
	suite_add_tcase(s, tc);
	tc = tcase_create("deep_layout");
	/* unchecked: in the runner's process, so the directory goes also when the test failed */
	tcase_add_unchecked_fixture(tc, fx_setup, fx_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, layout_of_128_layers);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(suite)
