/* plugins/loader.c without a mount: lowerdir entries //NAME/DATA/PATH taken
 * apart, and the loader's refusals that need no plugin built (a file that is
 * not there, a missing plugin directory, no plugin of a name). */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/loader.h"
#include "check_main.h"

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

static Suite *suite(void)
{
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("loader");
	tcase_add_test(tc, spec_parts);
	tcase_add_test(tc, spec_refused);
	tcase_add_test(tc, load_missing_file_names_it);
	tcase_add_test(tc, missing_dir_is_no_error_but_no_plugin);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(suite)
