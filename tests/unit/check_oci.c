/* Unit tests of the oci plugin (plugins/oci), as any user, without a mount:
 * SHA-256 and JSON against known answers; tars written here byte by byte
 * (ustar, PAX, GNU long names, hostile headers) or by GNU tar (sparse
 * files), compressed here with zlib and libzstd, opened through the
 * plugin's open_layers and read back through its ops: the index (names,
 * types, modes, owners, times, xattrs, hard links, later entries replacing
 * earlier ones, whiteout names), reads at offsets in all three compressions,
 * image layouts built by hand, and the hostile cases, each refused or left
 * out with one log line. */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../../plugins/oci/json.h"
#include "../../plugins/oci/oci.h"
#include "../../plugins/oci/sha256.h"
#include "../../plugins/oci/tar.h"
#include "../../plugins/plugin.h"
#include "check_main.h"
#include "oci_fixture.h"

START_TEST(sha256_vectors)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
		{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
	};
	char hex[65];
	for (int portable = 0; portable < 2; portable++) {
		for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
			sha_hex(v[i].in, strlen(v[i].in), portable, hex);
			ck_assert_str_eq(hex, v[i].out);
		}
		char *a = malloc(1000000);
		memset(a, 'a', 1000000);
		sha_hex(a, 1000000, portable, hex);
		ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
		free(a);
	}
}
END_TEST

START_TEST(json_strict)
{
	struct json_doc d;
	char err[128];
	const char *doc = "{\"a\": [1, -2.5e3, true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\", \"a\": 7}";
	ck_assert_int_eq(json_parse(doc, strlen(doc), &d, err, sizeof err), 0);
	int64_t v;
	ck_assert_int_eq(json_int(json_get(&d, json_root(&d), "a"), &v), 0); /* the last "a" */
	ck_assert_int_eq(v, 7);
	ck_assert_str_eq(json_str(json_get(&d, json_root(&d), "s")), "x\xc3\xa9\xf0\x9f\x98\x80\n");
	json_free(&d);
	const char *nums = "[-2.5e3, 1.0, 9223372036854775808, -9223372036854775807]";
	ck_assert_int_eq(json_parse(nums, strlen(nums), &d, err, sizeof err), 0);
	const struct json_node *e = json_first(&d, json_root(&d));
	for (int i = 0; i < 3; i++, e = json_next(&d, e))
		ck_assert_int_lt(json_int(e, &v), 0); /* no integer, or none in int64 range */
	ck_assert(json_int(e, &v) == 0 && v == -INT64_MAX);
	json_free(&d);
	static const char *const bad[] = {
		"", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "\"\\u0000\"", "\"a\x01\"", "\"\\ud800\"", "\"\\x\"",
		"{} {}", "[1 2]", "{\"a\" 1}", "tru", "nul", "\"abc",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(json_parse(bad[i], strlen(bad[i]), &d, err, sizeof err) < 0, "accepted '%s'", bad[i]);
	char deep[200];
	memset(deep, '[', 65);
	memset(deep + 65, ']', 65);
	ck_assert_int_lt(json_parse(deep, 130, &d, err, sizeof err), 0);
	ck_assert_int_eq(json_parse(deep + 1, 128, &d, err, sizeof err), 0); /* 64 deep is fine */
	json_free(&d);
}
END_TEST

START_TEST(tar_numbers)
{
	int64_t v;
	uint32_t ns;
	ck_assert_int_eq(tar_parse_numeric((const unsigned char *)"0000644\0", 8, &v), 0);
	ck_assert_int_eq(v, 0644);
	ck_assert_int_eq(tar_parse_numeric((const unsigned char *)"  755 \0\0", 8, &v), 0);
	ck_assert_int_eq(v, 0755);
	ck_assert_int_eq(tar_parse_numeric((const unsigned char *)"\0\0\0\0\0\0\0\0", 8, &v), 0);
	ck_assert_int_eq(v, 0);
	ck_assert_int_lt(tar_parse_numeric((const unsigned char *)"0000 98\0", 8, &v), 0);
	const unsigned char b256[8] = { 0x80, 0, 0, 0, 0, 0, 0x01, 0x00 };
	ck_assert_int_eq(tar_parse_numeric(b256, 8, &v), 0);
	ck_assert_int_eq(v, 256);
	const unsigned char neg[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe };
	ck_assert_int_eq(tar_parse_numeric(neg, 8, &v), 0);
	ck_assert_int_eq(v, -2);
	const unsigned char big[12] = { 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	ck_assert_int_lt(tar_parse_numeric(big, 12, &v), 0); /* beyond int64 */
	ck_assert_int_eq(tar_parse_pax_time("1700000000.123456789123", 23, &v, &ns), 0);
	ck_assert_int_eq(v, 1700000000);
	ck_assert_int_eq(ns, 123456789);
	ck_assert_int_eq(tar_parse_pax_time("-1.5", 4, &v, &ns), 0);
	ck_assert_int_eq(v, -2);
	ck_assert_int_eq(ns, 500000000);
	ck_assert_int_lt(tar_parse_pax_time("1.x", 3, &v, &ns), 0);
	ck_assert_int_lt(tar_parse_pax_time("", 0, &v, &ns), 0);
	uint64_t sz;
	ck_assert_int_eq(oci_parse_size("16M", &sz), 0);
	ck_assert_int_eq(sz, 16 << 20);
	ck_assert_int_lt(oci_parse_size("16MB", &sz), 0);
	ck_assert_int_lt(oci_parse_size("-1", &sz), 0);
	ck_assert(oci_parse_size("18446744073709551615", &sz) == 0 && sz == UINT64_MAX);
	ck_assert_int_lt(oci_parse_size("18446744073709551616", &sz), 0);
	ck_assert_int_lt(oci_parse_size("17179869184G", &sz), 0); /* 2^64 */
	/* the one decimal parser of tar (PAX), json and the limits */
	static const char *const not_i64[] = { "9223372036854775808", "-9223372036854775808", "", "-", "+1", " 1", "1 ",
						"1.5", "1e3", "0x10" };
	for (size_t i = 0; i < sizeof not_i64 / sizeof not_i64[0]; i++)
		ck_assert_msg(oci_parse_i64(not_i64[i], strlen(not_i64[i]), &v) < 0, "took '%s'", not_i64[i]);
	ck_assert(oci_parse_i64("9223372036854775807", 19, &v) == 0 && v == INT64_MAX);
	ck_assert(oci_parse_i64("-9223372036854775807", 20, &v) == 0 && v == -INT64_MAX);
	ck_assert(oci_parse_i64("-007x", 4, &v) == 0 && v == -7); /* n bytes, no NUL needed */
	struct oci_limits l;
	oci_limits_default(&l);
	ck_assert_uint_eq(oci_limits_out(&l, 1000), l.ratio_floor); /* small blobs: the floor */
	ck_assert_uint_eq(oci_limits_out(&l, 100ULL << 20), 100ULL << 20 > l.ratio_floor / l.max_ratio ?
								    (100ULL << 20) * l.max_ratio > l.max_size ? l.max_size : (100ULL << 20) * l.max_ratio
								    : l.ratio_floor);
	ck_assert_uint_eq(oci_limits_out(&l, UINT64_MAX / 2), l.max_size);
}
END_TEST

/* ---- the index ---- */

static const enum comp all_comps[] = { RAW, GZ, GZ_MEMBERS, ZST, ZST_FRAMES };

START_TEST(index_entries)
{
	struct tw t = { 0 };
	tree_tar(&t);
	for (size_t c = 0; c < sizeof all_comps / sizeof all_comps[0]; c++) {
		struct opened o;
		struct ovl_plugin_layer *L = open_tw(&t, all_comps[c], &o);
		struct stat st, st2;
		char buf[64] = "";
		ck_assert_int_eq(o.lines, 0);
		ck_assert_int_eq(L->ops->statat(L->layer, L->root, NULL, &st), 0);
		ck_assert_int_eq(st.st_mode, S_IFDIR | 0750);
		ck_assert_int_eq(st.st_nlink, 2 + 5); /* etc dev run a in */
		ck_assert_int_eq(st_path(L, "etc/passwd", &st), 0);
		ck_assert_int_eq(st.st_mode, S_IFREG | 04755);
		ck_assert_int_eq(st.st_uid, 12);
		ck_assert_int_eq(st.st_gid, 34);
		ck_assert_int_eq(st.st_mtim.tv_sec, 1234567);
		ck_assert_int_eq(st.st_size, 5);
		assert_content(L, "etc/passwd", "root\n");
		assert_content(L, "etc/hard", "box\n");
		ck_assert_int_eq(st_path(L, "etc/hard", &st), 0);
		ck_assert_int_eq(st_path(L, "etc/hostname", &st2), 0);
		ck_assert_int_eq(st.st_ino, st2.st_ino);
		ck_assert_int_eq(st.st_nlink, 2);
		ck_assert_int_eq(st_path(L, "etc/link", &st), 0);
		ck_assert(S_ISLNK(st.st_mode));
		ck_assert_int_eq(st.st_size, 8);
		int etc = L->ops->openat(L->layer, L->root, "etc", O_RDONLY | O_DIRECTORY);
		ck_assert_int_ge(etc, 0);
		ck_assert_int_eq(L->ops->readlinkat(L->layer, etc, "link", buf, sizeof buf), 8);
		ck_assert(!memcmp(buf, "hostname", 8));
		L->ops->close(L->layer, etc);
		ck_assert_int_eq(st_path(L, "dev/null", &st), 0);
		ck_assert(S_ISCHR(st.st_mode));
		ck_assert_int_eq(st.st_rdev, makedev(1, 3));
		ck_assert_int_eq(st_path(L, "dev/sda", &st), 0);
		ck_assert(S_ISBLK(st.st_mode));
		ck_assert_int_eq(st.st_rdev, makedev(8, 0));
		ck_assert_int_eq(st_path(L, "run/fifo", &st), 0);
		ck_assert(S_ISFIFO(st.st_mode));
		ck_assert_int_eq(st_path(L, "a/b", &st), 0); /* implied */
		ck_assert_int_eq(st.st_mode, S_IFDIR | 0755);
		assert_content(L, "a/b/c/d.txt", "deep");
		assert_content(L, "in/the/prefix/name", "");
		buf[0] = 0;
		ck_assert_int_eq(L->ops->list(L->layer, L->root, collect, buf), 0);
		ck_assert_int_eq(strlen(buf), strlen("etc/ dev/ run/ a/ in/ "));
		ck_assert(strstr(buf, "etc/ ") && strstr(buf, "run/ ") && strstr(buf, "in/ "));
		close_all(&o);
	}
	free(t.b);
}
END_TEST

START_TEST(index_replacement)
{
	struct tw t = { 0 };
	struct opened o;
	struct stat st;
	t_file(&t, "f", "one");
	t_file(&t, "f", "two");
	t_node(&t, "d/", '5', 0755, NULL);
	t_file(&t, "d/x", "x");
	t_node(&t, "d/", '5', 0700, NULL);     /* a directory over a directory: keeps d/x */
	t_file(&t, "e/y", "y");
	t_file(&t, "e", "plain");              /* a file over a directory: e/y goes */
	t_file(&t, "g", "orig");
	t_node(&t, "h", '1', 0644, "g");
	t_file(&t, "g", "new");                /* h keeps the old object */
	t_node(&t, "s", '2', 0777, "x");
	t_node(&t, "s", '5', 0755, NULL);
	t_node(&t, "self", '2', 0777, "f");
	t_node(&t, "f2", '1', 0644, "f");
	t_node(&t, "f2", '1', 0644, "f");      /* the same link again */
	/* deep directories in turn, one replaced by a file and made again */
	t_file(&t, "p/q/r/s/f1", "1");
	t_file(&t, "x/y/f2", "2");
	t_file(&t, "p/q/r/s/f3", "3");
	t_file(&t, "p/q", "file");
	t_file(&t, "p/q/r/g", "through a file");
	t_node(&t, "p/q/", '5', 0755, NULL);
	t_file(&t, "p/q/r/h", "h");
	t_file(&t, "x/y/f4", "4");
	t_end(&t);
	struct ovl_plugin_layer *L = open_tw(&t, GZ, &o);
	ck_assert_msg(o.lines == 1 && strstr(o.log, "'p/q/r/g': left out: the path goes through a non-directory"), "%s",
		      o.log);
	ck_assert(!exists(L, "p/q/r/s/f1") && !exists(L, "p/q/r/s"));
	assert_content(L, "p/q/r/h", "h");
	assert_content(L, "x/y/f2", "2");
	assert_content(L, "x/y/f4", "4");
	assert_content(L, "f", "two");
	ck_assert_int_eq(st_path(L, "d", &st), 0);
	ck_assert_int_eq(st.st_mode, S_IFDIR | 0700);
	assert_content(L, "d/x", "x");
	ck_assert_int_eq(st_path(L, "e", &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_int_eq(st_path(L, "e/y", &st), -ENOTDIR);
	assert_content(L, "h", "orig");
	assert_content(L, "g", "new");
	ck_assert_int_eq(st_path(L, "h", &st), 0);
	ck_assert_int_eq(st.st_nlink, 1);
	ck_assert_int_eq(st_path(L, "s", &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_int_eq(st_path(L, "f", &st), 0);
	ck_assert_int_eq(st.st_nlink, 2);
	close_all(&o);
	free(t.b);
}
END_TEST

START_TEST(index_whiteouts)
{
	struct tw t = { 0 };
	struct opened o;
	struct stat st;
	t_file(&t, "dir/.wh.gone", "");
	t_file(&t, "dir/.wh..wh..opq", "");
	t_node(&t, ".wh.sym", '2', 0777, "target");
	t_node(&t, ".wh.adir", '5', 0755, NULL);
	t_file(&t, ".wh.withdata", "xyz");
	t_end(&t);
	struct ovl_plugin_layer *L = open_tw(&t, RAW, &o);
	static const char *const names[] = { "dir/.wh.gone", "dir/.wh..wh..opq", ".wh.sym", ".wh.adir", ".wh.withdata" };
	for (size_t i = 0; i < 5; i++) {
		ck_assert_int_eq(st_path(L, names[i], &st), 0);
		ck_assert_msg(S_ISREG(st.st_mode) && st.st_size == 0, "%s", names[i]);
	}
	close_all(&o);
	free(t.b);
}
END_TEST

START_TEST(index_pax_gnu)
{
	char longp[301], longl[401], longg[201], longk[201];
	memset(longp, 'p', 300), longp[300] = 0, longp[100] = '/';
	memset(longl, 'l', 400), longl[400] = 0;
	memset(longg, 'g', 200), longg[200] = 0, longg[50] = '/';
	memset(longk, 'k', 200), longk[200] = 0;
	const char cap[20] = { 0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	const char acl[28] = { 2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0,
			       0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff };
	struct tw t = { 0 };
	struct opened o;
	struct stat st;
	t_data(&t, "global", 'g', 0644, "20 comment=ignored\n", 19);
	t_pax(&t, (struct kv[]){ { "path", longp, -1 }, { "mtime", "1700000000.5", -1 }, { "uid", "3000000", -1 },
				 { "gid", "4000000", -1 }, { "uname", "nobody", -1 }, { "SCHILY.xattr.user.x", "1", -1 },
				 { "SCHILY.xattr.security.capability", cap, 20 },
				 { "SCHILY.xattr.system.posix_acl_access", acl, 28 } },
	      8);
	t_file(&t, "short-name-replaced", "pax");
	t_pax(&t, (struct kv[]){ { "linkpath", longl, -1 } }, 1);
	t_node(&t, "sym", '2', 0777, "short");
	t_pax(&t, (struct kv[]){ { "size", "5", -1 } }, 1);
	header(&t, &(struct hdr){ .name = "sized", .type = '0', .mode = 0644, .size = 0 });
	put(&t, "12345", 5);
	pad(&t);
	t_gnu(&t, 'L', longg);
	t_file(&t, "gnu-short", "gnu");
	t_gnu(&t, 'K', longk);
	t_gnu(&t, 'L', "gnusym");
	t_node(&t, "x", '2', 0777, "y");
	t_end(&t);
	struct ovl_plugin_layer *L = open_tw(&t, ZST, &o);
	ck_assert_int_eq(o.lines, 0);
	assert_content(L, longp, "pax");
	ck_assert_int_eq(st_path(L, longp, &st), 0);
	ck_assert_int_eq(st.st_mtim.tv_sec, 1700000000);
	ck_assert_int_eq(st.st_mtim.tv_nsec, 500000000);
	ck_assert_int_eq(st.st_uid, 3000000);
	ck_assert_int_eq(st.st_gid, 4000000);
	char base[4096], buf[512];
	int d = parent_of(L, longp, base);
	ck_assert_int_eq(L->ops->listxattrat(L->layer, d, base, NULL, 0),
			 strlen("user.x") + strlen("security.capability") + strlen("system.posix_acl_access") + 3);
	ck_assert_int_eq(L->ops->getxattrat(L->layer, d, base, "security.capability", buf, sizeof buf), 20);
	ck_assert(!memcmp(buf, cap, 20));
	ck_assert_int_eq(L->ops->getxattrat(L->layer, d, base, "system.posix_acl_access", buf, sizeof buf), 28);
	ck_assert(!memcmp(buf, acl, 28));
	ck_assert_int_eq(L->ops->getxattrat(L->layer, d, base, "user.x", NULL, 0), 1);
	ck_assert_int_eq(L->ops->getxattrat(L->layer, d, base, "user.nope", buf, sizeof buf), -1);
	ck_assert_int_eq(errno, ENODATA);
	ck_assert_int_eq(L->ops->getxattrat(L->layer, d, base, "security.capability", buf, 4), -1);
	ck_assert_int_eq(errno, ERANGE);
	L->ops->close(L->layer, d);
	ck_assert_int_eq(L->ops->readlinkat(L->layer, L->root, "sym", buf, sizeof buf), 400);
	ck_assert(!memcmp(buf, longl, 400));
	assert_content(L, "sized", "12345");
	assert_content(L, longg, "gnu");
	ck_assert_int_eq(L->ops->readlinkat(L->layer, L->root, "gnusym", buf, sizeof buf), 200);
	ck_assert(!memcmp(buf, longk, 200));
	ck_assert(!exists(L, "short-name-replaced"));
	ck_assert(!exists(L, "global"));
	close_all(&o);
	free(t.b);
}
END_TEST

/* ---- sparse files, written by GNU tar ---- */

START_TEST(sparse_formats)
{
	static const struct {
		const char *args, *marker;
	} fmts[] = {
		{ "--format=gnu", NULL },
		{ "--format=posix --sparse-version=0.0", "GNU.sparse.offset" },
		{ "--format=posix --sparse-version=0.1", "GNU.sparse.map" },
		{ "--format=posix --sparse-version=1.0", "GNU.sparse.major" },
	};
	unsigned char *want, *got;
	size_t len;
	sparse_src(fx_tmp, &want, &len);
	got = malloc(len);
	for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
		char cmd[512], path[256];
		struct opened o;
		struct stat st;
		snprintf(path, sizeof path, "%s/sparse%zu.tar", fx_tmp, i);
		snprintf(cmd, sizeof cmd, "tar --sparse %s -cf %s -C %s/src sparse", fmts[i].args, path, fx_tmp);
		ck_assert_msg(system(cmd) == 0, "GNU tar is needed: %s", cmd);
		/* the tar must hold a sparse entry, or the test proves nothing */
		FILE *f = fopen(path, "rb");
		size_t n = fread(got, 1, len, f);
		fclose(f);
		bool marked = fmts[i].marker ? memmem(got, n, fmts[i].marker, strlen(fmts[i].marker)) != NULL
					     : got[156] == 'S';
		ck_assert_msg(marked && n < len, "%s: no sparse entry (does %s keep holes?)", fmts[i].args, fx_tmp);
		ck_assert_msg(open_cap("", path, &o) == 1, "%s: %s", fmts[i].args, o.err);
		struct ovl_plugin_layer *L = &o.l[0];
		ck_assert_int_eq(st_path(L, "sparse", &st), 0);
		ck_assert_int_eq(st.st_size, (off_t)len);
		ck_assert_int_lt(st.st_blocks, 64);
		memset(got, 0xaa, len);
		ck_assert_int_eq(read_path(L, "sparse", got, len, 0), (ssize_t)len);
		ck_assert_msg(!memcmp(got, want, len), "%s: content differs", fmts[i].args);
		ck_assert_int_eq(read_path(L, "sparse", got, 10, (1 << 20) - 4), 10);
		ck_assert(!memcmp(got, want + (1 << 20) - 4, 10));
		close_all(&o);
	}
	free(want);
	free(got);
}
END_TEST

/* ---- reads at offsets ---- */

START_TEST(reads_at_offsets)
{
	unsigned char *big = big_data(), *buf = malloc(BIG);
	struct tw t = { 0 };
	big_tar(&t, big);
	for (size_t c = 0; c < sizeof all_comps / sizeof all_comps[0]; c++) {
		struct opened o;
		struct ovl_plugin_layer *L = open_tw(&t, all_comps[c], &o);
		uint32_t x = 99;
		/* from the end backwards: each read restarts at an access point or frame */
		for (int i = 0; i < 40; i++) {
			x = x * 1103515245 + 12345;
			size_t len = 1 + x % 200000, off = BIG - (size_t)i * (BIG / 40) - 1 - (x >> 8) % 1000;
			ssize_t want = (ssize_t)(off + len > BIG ? BIG - off : len);
			ck_assert_int_eq(read_path(L, "big", buf, len, (off_t)off), want);
			ck_assert_msg(!memcmp(buf, big + off, (size_t)want), "comp %zu: at %zu", c, off);
		}
		int h = L->ops->openat(L->layer, L->root, "big", O_RDONLY);
		for (size_t off = 0; off < BIG; off += 131072) { /* sequential, as the kernel reads */
			ck_assert_int_eq(L->ops->read(L->layer, h, buf, 131072, (off_t)off), 131072);
			ck_assert(!memcmp(buf, big + off, 131072));
		}
		ck_assert_int_eq(L->ops->read(L->layer, h, buf, 100, BIG), 0);
		ck_assert_int_eq(L->ops->read(L->layer, h, buf, 100, BIG - 10), 10);
		L->ops->close(L->layer, h);
		assert_content(L, "after", "after");
		assert_content(L, "before", "before");
		close_all(&o);
	}
	free(t.b);
	free(big);
	free(buf);
}
END_TEST

struct reader {
	struct ovl_plugin_layer *L;
	const unsigned char *big;
	uint32_t seed;
	int bad;
};

static void *reader(void *arg)
{
	struct reader *r = arg;
	unsigned char *buf = malloc(65536);
	int h = r->L->ops->openat(r->L->layer, r->L->root, "big", O_RDONLY);
	for (int i = 0; i < 30; i++) {
		r->seed = r->seed * 1103515245 + 12345;
		size_t off = (r->seed >> 4) % (BIG - 65536);
		if (r->L->ops->read(r->L->layer, h, buf, 65536, (off_t)off) != 65536 || memcmp(buf, r->big + off, 65536))
			r->bad++;
	}
	r->L->ops->close(r->L->layer, h);
	free(buf);
	return NULL;
}

START_TEST(reads_in_threads)
{
	unsigned char *big = big_data();
	struct tw t = { 0 };
	big_tar(&t, big);
	static const enum comp comps[] = { GZ, ZST_FRAMES };
	for (size_t c = 0; c < 2; c++) {
		struct opened o;
		struct ovl_plugin_layer *L = open_tw(&t, comps[c], &o);
		pthread_t th[6];
		struct reader r[6];
		for (int i = 0; i < 6; i++) {
			r[i] = (struct reader){ L, big, (uint32_t)i * 7919u + 1, 0 };
			pthread_create(&th[i], NULL, reader, &r[i]);
		}
		for (int i = 0; i < 6; i++) {
			pthread_join(th[i], NULL);
			ck_assert_int_eq(r[i].bad, 0);
		}
		close_all(&o);
	}
	free(t.b);
	free(big);
}
END_TEST

/* ---- image layouts, built by hand ---- */

START_TEST(layout_expands)
{
	char lay[256], dg[3][72];
	struct opened o;
	make_layout(lay, dg);
	ck_assert_msg(open_cap("v1", lay, &o) == 3, "%s", o.err);
	check_image(&o);
	ck_assert_ptr_nonnull(strstr(o.l[0].name, dg[2] + 7)); /* named by its blob */
	close_all(&o);
#if defined(__x86_64__) || defined(__aarch64__)
	ck_assert_msg(open_cap("multi", lay, &o) == 3, "%s", o.err); /* through the index, this platform */
	check_image(&o);
	close_all(&o);
#endif
	ck_assert_int_eq(open_cap("nope", lay, &o), -1);
	ck_assert_ptr_nonnull(strstr(o.err, "no image named 'nope'"));
	ck_assert_ptr_nonnull(strstr(o.err, lay));
	ck_assert_int_eq(open_cap("v1", "relative/layout", &o), -1);
	ck_assert_int_eq(open_cap("v1", fx_tmp, &o), -1); /* no oci-layout */
}
END_TEST

/* Layouts as umoci makes them (gzip layers) and skopeo copies them (through
 * a docker-archive: plain tar; and with zstd), of an image of two layers. */
START_TEST(layout_tools)
{
	static const char *const refs[][2] = { { "img", "latest" }, { "sk", "v1" }, { "sk", "z" } };
	char cmd[4096], dir[512];
	snprintf(cmd, sizeof cmd,
		 "set -e; cd %s; exec >log 2>&1; umoci init --layout img; umoci new --image img:latest;"
		 "umoci unpack --rootless --image img:latest b1; mkdir -p b1/rootfs/etc b1/rootfs/usr/bin;"
		 "echo hello >b1/rootfs/etc/greeting; cp /bin/sh b1/rootfs/usr/bin/sh; ln -s sh b1/rootfs/usr/bin/dash;"
		 "umoci repack --image img:latest b1; rm -rf b1; umoci unpack --rootless --image img:latest b2;"
		 "rm b2/rootfs/etc/greeting; echo top >b2/rootfs/etc/motd; umoci repack --image img:latest b2;"
		 "skopeo copy oci:img:latest docker-archive:$PWD/da.tar:app:latest;"
		 "skopeo copy docker-archive:$PWD/da.tar oci:$PWD/sk:v1;"
		 "skopeo copy --dest-compress --dest-compress-format zstd oci:img:latest oci:$PWD/sk:z",
		 fx_tmp);
	ck_assert_msg(system(cmd) == 0, "umoci and skopeo are needed (contrib/install-deps.sh): see %s/log", fx_tmp);
	for (size_t i = 0; i < 3; i++) {
		struct opened o;
		struct stat st, sh;
		char buf[64];
		snprintf(dir, sizeof dir, "%s/%s", fx_tmp, refs[i][0]);
		ck_assert_msg(open_cap(refs[i][1], dir, &o) == 2, "%s: %s", refs[i][1], o.err);
		assert_content(&o.l[0], "etc/motd", "top\n");
		ck_assert(exists(&o.l[0], "etc/.wh.greeting"));
		assert_content(&o.l[1], "etc/greeting", "hello\n");
		ck_assert_int_eq(st_path(&o.l[1], "usr/bin/sh", &st), 0);
		ck_assert_int_eq(stat("/bin/sh", &sh), 0);
		ck_assert_int_eq(st.st_size, sh.st_size);
		ck_assert_int_eq(o.l[1].ops->statat(o.l[1].layer, o.l[1].root, NULL, &st), 0);
		int d = parent_of(&o.l[1], "usr/bin/dash", buf);
		ck_assert_int_eq(o.l[1].ops->readlinkat(o.l[1].layer, d, "dash", buf, sizeof buf), 2);
		close_all(&o);
	}
}
END_TEST

START_TEST(layout_digest_mismatch)
{
	char lay[256], dg[3][72], path[512];
	struct opened o;
	make_layout(lay, dg);
	/* one byte of the gzip layer changed, its size kept */
	snprintf(path, sizeof path, "%s/blobs/sha256/%s", lay, dg[1] + 7);
	int fd = open(path, O_RDWR);
	struct stat st;
	fstat(fd, &st);
	unsigned char c;
	ck_assert_int_eq(pread(fd, &c, 1, 4), 1); /* the header's mtime: still a valid stream */
	c ^= 1;
	ck_assert_int_eq(pwrite(fd, &c, 1, 4), 1);
	close(fd);
	ck_assert_int_eq(open_cap("v1", lay, &o), -1);
	ck_assert_msg(strstr(o.err, path) && strstr(o.err, "digest mismatch"), "%s", o.err);
	/* the blob alone, named by its digest, is verified too */
	ck_assert_int_eq(open_cap("", path, &o), -1);
	ck_assert_ptr_nonnull(strstr(o.err, "digest mismatch"));
	/* a blob that is a symlink is not followed */
	char target[512];
	snprintf(target, sizeof target, "%s/moved", fx_tmp);
	ck_assert_int_eq(rename(path, target), 0);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_int_eq(open_cap("v1", lay, &o), -1);
	ck_assert_ptr_nonnull(strstr(o.err, path));
}
END_TEST

START_TEST(layout_manifest_checked)
{
	char lay[256], dg[3][72], path[512], doc[4096];
	struct opened o;
	make_layout(lay, dg);
	/* index.json naming a manifest by a digest its content does not have */
	snprintf(path, sizeof path, "%s/index.json", lay);
	FILE *f = fopen(path, "r");
	size_t n = fread(doc, 1, sizeof doc - 1, f);
	fclose(f);
	doc[n] = 0;
	char *d = strstr(doc, "sha256:");
	d[7] = d[7] == '0' ? '1' : '0';
	write_file(path, doc, n);
	ck_assert_int_eq(open_cap("v1", lay, &o), -1);
	ck_assert_msg(strstr(o.err, lay) != NULL, "%s", o.err);
	/* a layer of a media type that is no tar layer */
	write_file(path, "{\"manifests\": 5}", 16);
	ck_assert_int_eq(open_cap("v1", lay, &o), -1);
	write_file(path, "not json", 8);
	ck_assert_int_eq(open_cap("v1", lay, &o), -1);
	ck_assert_ptr_nonnull(strstr(o.err, "not JSON"));
}
END_TEST

/* ---- hostile blobs ---- */

START_TEST(hostile_left_out)
{
	char longp[5001], longc[301];
	memset(longp, 'a', 5000), longp[5000] = 0;
	for (int i = 1; i < 5000; i += 2)
		longp[i] = '/';
	memset(longc, 'c', 300), longc[300] = 0;
	struct tw t = { 0 };
	struct opened o;
	t_file(&t, "../evil", "x");
	t_file(&t, "/abs", "x");
	t_node(&t, "/", '5', 0755, NULL);              /* the root, as "./": no line */
	t_file(&t, "a/../../up", "x");
	t_node(&t, "lnk", '2', 0777, "/etc");
	t_file(&t, "lnk/passwd", "x");                 /* through a symlink */
	t_file(&t, "f", "x");
	t_file(&t, "f/x", "x");                        /* through a file */
	t_pax(&t, (struct kv[]){ { "path", longp, -1 } }, 1);
	t_file(&t, "toolong", "x");                    /* longer than PATH_MAX */
	t_pax(&t, (struct kv[]){ { "path", longc, -1 } }, 1);
	t_file(&t, "longcomp", "x");                   /* longer than NAME_MAX */
	t_node(&t, "hl", '1', 0644, "missing");
	t_node(&t, "dir", '5', 0755, NULL);
	t_node(&t, "hd", '1', 0644, "dir");            /* a hard link to a directory */
	t_node(&t, "hs", '1', 0644, "lnk/passwd");     /* a hard link through a symlink */
	t_node(&t, "weird", 'Z', 0644, NULL);          /* an unknown type */
	t_node(&t, "empty", '2', 0777, "");
	t_file(&t, "ok", "fine");
	t_end(&t);
	struct ovl_plugin_layer *L = open_tw(&t, GZ, &o);
	ck_assert_msg(o.lines == 12, "%d lines:\n%s", o.lines, o.log);
	static const char *const gone[] = { "evil", "abs", "up", "lnk/passwd", "f/x", "toolong", "longcomp",
					    "hl", "hd", "hs", "weird", "empty" };
	for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
		ck_assert_msg(!exists(L, gone[i]), "%s", gone[i]);
	ck_assert_ptr_nonnull(strstr(o.log, "'../evil': left out: '..' in the name"));
	ck_assert_ptr_nonnull(strstr(o.log, "'lnk/passwd': left out: the path goes through a symlink"));
	ck_assert_ptr_nonnull(strstr(o.log, "left out: name longer than PATH_MAX"));
	ck_assert_ptr_nonnull(strstr(o.log, "'hd': left out: hard link to a directory"));
	ck_assert_ptr_nonnull(strstr(o.log, o.l[0].name)); /* each line names the blob */
	assert_content(L, "ok", "fine");
	close_all(&o);
	free(t.b);
}
END_TEST

START_TEST(hostile_refused)
{
	struct tw t = { 0 }, z;
	unsigned char *big = big_data();
	t_file(&t, "a", "hello");
	t_data(&t, "big", '0', 0644, big, BIG);
	t_end(&t);
	/* a header's checksum */
	struct tw b = { 0 };
	put(&b, t.b, t.n);
	b.b[0] ^= 1;
	refused(b.b, b.n, "bad header checksum");
	/* truncated inside an entry, in each compression */
	struct tw cut = { 0 };
	put(&cut, t.b, 512 * 4 + 1000);
	refused_tw(&cut, RAW, "truncated");
	refused_tw(&cut, ZST, "truncated");
	refused_tw(&cut, GZ, "truncated");
	z = compress_tw(&t, GZ);
	refused(z.b, z.n / 2, "truncated gzip stream");
	z.b[z.n / 2] ^= 0x55, z.b[z.n / 2 + 1] ^= 0x55, z.b[z.n / 2 + 2] ^= 0x55;
	refused(z.b, z.n, "corrupt gzip stream");
	free(z.b);
	z = compress_tw(&t, ZST);
	refused(z.b, z.n / 2, "truncated zstd stream");
	z.b[z.n / 2] ^= 0x55, z.b[z.n / 2 + 1] ^= 0x55, z.b[z.n / 2 + 2] ^= 0x55;
	refused(z.b, z.n, "corrupt zstd stream");
	free(z.b);
	/* a decompression bomb (the absolute bound, lowered) */
	setenv("FUSE_OVERLAYFS_OCI_MAX_SIZE", "1M", 1);
	refused_tw(&t, GZ, "decompression bomb");
	refused_tw(&t, ZST, "decompression bomb");
	unsetenv("FUSE_OVERLAYFS_OCI_MAX_SIZE");
	/* other compressions */
	refused("\xfd" "7zXZ\0\0\0\0\0\0\0\0", 12, "xz compression is not supported");
	setenv("FUSE_OVERLAYFS_OCI_MAX_ENTRIES", "ten", 1);
	refused(t.b, t.n, "not a positive number");
	unsetenv("FUSE_OVERLAYFS_OCI_MAX_ENTRIES");
	free(cut.b);
	free(b.b);
	free(t.b);
	free(big);
}
END_TEST

/* A stream that ends where an entry's padding would begin ends the archive,
 * as Go's reader has it (umoci 0.4's `insert --opaque` layers end so); one
 * that ends inside the padding is truncated. */
START_TEST(tar_unpadded_end)
{
	struct tw t = { 0 };
	struct opened o;
	t_file(&t, "a", "first");
	header(&t, &(struct hdr){ .name = "b", .type = '0', .mode = 0644, .size = 5, .mtime = 1000 });
	put(&t, "hello", 5);
	for (size_t c = 0; c < 3; c++) {
		assert_content(open_tw(&t, (enum comp[]){ RAW, GZ, ZST }[c], &o), "b", "hello");
		close_all(&o);
	}
	put(&t, "\0\0\0", 3);
	refused_tw(&t, RAW, "truncated");
	free(t.b);
}
END_TEST

START_TEST(hostile_headers)
{
	struct tw t = { 0 };
	char name[200];
	/* a malformed PAX record (its length runs past the records) */
	t_data(&t, "x", 'x', 0644, "99 path=a\n", 10);
	t_file(&t, "a", "a");
	t_end(&t);
	refused_tw(&t, RAW, "malformed PAX record");
	free(t.b), memset(&t, 0, sizeof t);
	/* a NUL in a PAX path */
	t_pax(&t, (struct kv[]){ { "path", "a\0b", 3 } }, 1);
	t_file(&t, "a", "a");
	t_end(&t);
	refused_tw(&t, RAW, "NUL in the value");
	free(t.b), memset(&t, 0, sizeof t);
	/* a lone zero block between entries */
	t_file(&t, "a", "a");
	put(&t, (unsigned char[512]){ 0 }, 512);
	t_file(&t, "b", "b");
	t_end(&t);
	refused_tw(&t, GZ, "a lone zero block");
	free(t.b), memset(&t, 0, sizeof t);
	/* a PAX record set beyond 1 MiB */
	char *huge = malloc(2 << 20);
	memset(huge, 'v', 2 << 20);
	huge[(2 << 20) - 1] = 0;
	t_pax(&t, (struct kv[]){ { "comment", huge, -1 } }, 1);
	t_end(&t);
	refused_tw(&t, GZ, "more than 1048576");
	free(huge);
	free(t.b), memset(&t, 0, sizeof t);
	/* a bad number */
	t_file(&t, "a", "a");
	memcpy(t.b + 100, "0000x44", 7); /* mode */
	unsigned sum = 0;
	memset(t.b + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += t.b[i];
	octal(t.b + 148, 7, sum);
	t_end(&t);
	refused_tw(&t, RAW, "malformed number");
	free(t.b), memset(&t, 0, sizeof t);
	/* a bound passed (env=value): count empty files named PREFIX%0*d (width) */
	static const struct {
		const char *env, *value, *prefix, *why;
		int count, width;
		enum comp comp;
	} bounds[] = {
		{ "FUSE_OVERLAYFS_OCI_MAX_ENTRIES", "10", "f", "more than 10 entries", 20, 0, ZST },
		{ "FUSE_OVERLAYFS_OCI_MAX_INDEX", "256K", "", "index larger than 262144 bytes", 3000, 99, RAW },
	};
	for (size_t k = 0; k < sizeof bounds / sizeof bounds[0]; k++) {
		setenv(bounds[k].env, bounds[k].value, 1);
		for (int i = 0; i < bounds[k].count; i++) {
			snprintf(name, sizeof name, "%s%0*d", bounds[k].prefix, bounds[k].width, i);
			t_file(&t, name, "");
		}
		t_end(&t);
		refused_tw(&t, bounds[k].comp, bounds[k].why);
		unsetenv(bounds[k].env);
		free(t.b), memset(&t, 0, sizeof t);
	}
}
END_TEST

/* ---- the index cache ---- */

START_TEST(index_cache)
{
	unsigned char *big = big_data();
	struct tw t = { 0 };
	t_file(&t, "../bad", "x"); /* a line when built, none from the cache */
	big_tar(&t, big);
	for (size_t c = 0; c < sizeof all_comps / sizeof all_comps[0]; c++) {
		char blob[128], cache[160];
		struct tw z = compress_tw(&t, all_comps[c]);
		snprintf(blob, sizeof blob, "%s/blob%zu", fx_tmp, c);
		cache_path(blob, cache, sizeof cache);
		write_file(blob, z.b, z.n);
		free(z.b);
		ck_assert_int_eq(open_lines(blob, big), 1);
		ck_assert_int_eq(access(cache, F_OK), 0);
		ck_assert_int_eq(open_lines(blob, big), 0);
		/* the blob touched: built again */
		struct timespec ts[2] = { { 0, UTIME_OMIT }, { 12345, 0 } };
		ck_assert_int_eq(utimensat(AT_FDCWD, blob, ts, 0), 0);
		ck_assert_int_eq(open_lines(blob, big), 1);
		ck_assert_int_eq(open_lines(blob, big), 0);
		/* a damaged cache: built again */
		int fd = open(cache, O_RDWR);
		unsigned char b;
		ck_assert_int_eq(pread(fd, &b, 1, 400), 1);
		b ^= 0x10;
		ck_assert_int_eq(pwrite(fd, &b, 1, 400), 1);
		close(fd);
		ck_assert_int_eq(open_lines(blob, big), 1);
		ck_assert_int_eq(open_lines(blob, big), 0);
		if (all_comps[c] == GZ) { /* a damaged window (the file's end): the mount stands, a read there fails */
			struct opened o;
			unsigned char buf[64];
			flip_last_byte(cache);
			ck_assert_int_eq(open_cap("", blob, &o), 1);
			ck_assert_int_eq(read_path(&o.l[0], "big", buf, sizeof buf, BIG - 100), -1);
			ck_assert_int_eq(errno, EIO);
			close_all(&o);
			ck_assert_int_eq(unlink(cache), 0);
			ck_assert_int_eq(open_lines(blob, big), 1);
		}
		/* a cache copied along with the blob does not match the copy */
		char copy[160], cmd[1024];
		snprintf(copy, sizeof copy, "%s/copy%zu", fx_tmp, c);
		snprintf(cmd, sizeof cmd, "cp -p %s %s && cp -p %s %s/.copy%zu.ovl-index", blob, copy, cache, fx_tmp, c);
		ck_assert_int_eq(system(cmd), 0);
		ck_assert_int_eq(open_lines(copy, big), 1);
	}
	/* no cache files when told so */
	setenv("FUSE_OVERLAYFS_OCI_CACHE", "0", 1);
	char blob[128], cache[160];
	snprintf(blob, sizeof blob, "%s/nocache", fx_tmp);
	cache_path(blob, cache, sizeof cache);
	write_file(blob, t.b, t.n);
	ck_assert_int_eq(open_lines(blob, big), 1);
	ck_assert_int_eq(open_lines(blob, big), 1);
	ck_assert_int_eq(access(cache, F_OK), -1);
	unsetenv("FUSE_OVERLAYFS_OCI_CACHE");
	free(t.b);
	free(big);
}
END_TEST

/* A cache whose body is changed, its checksum made right again: hostile
 * input that passes the header; never a crash, and the layer still opens. */
START_TEST(index_cache_hostile)
{
	struct tw t = { 0 };
	tree_tar(&t);
	for (size_t c = 0; c < 2; c++) {
		char blob[128], cache[160];
		struct tw z = compress_tw(&t, c ? GZ : RAW);
		struct opened o;
		snprintf(blob, sizeof blob, "%s/blob%zu", fx_tmp, c);
		cache_path(blob, cache, sizeof cache);
		write_file(blob, z.b, z.n);
		free(z.b);
		ck_assert_int_eq(open_cap("", blob, &o), 1);
		close_all(&o);
		FILE *f = fopen(cache, "rb");
		ck_assert_ptr_nonnull(f);
		static unsigned char good[1 << 20], bad[1 << 20];
		size_t n = fread(good, 1, sizeof good, f), head;
		fclose(f);
		uint64_t body_len, wins_len; /* struct head: magic, 4 uint32, size, dev, ino, stream, body_len, wins_len */
		memcpy(&body_len, good + 56, 8), memcpy(&wins_len, good + 64, 8);
		head = n - (size_t)body_len - (size_t)wins_len;
		uint32_t x = 7;
		for (int i = 0; i < 600; i++) {
			memcpy(bad, good, n);
			for (int k = 0; k < 1 + i % 4; k++) {
				x = x * 1103515245 + 12345;
				size_t at = head + (x >> 8) % (body_len + wins_len); /* a window too */
				if (i % 2) { /* a field of a node or object: a small number, as a wrong index would be */
					at = head + 24 + ((x >> 8) % ((body_len - 24) / 2)) / 4 * 4;
					uint32_t v = (x >> 24) % 24;
					memcpy(bad + at, &v, 4);
				} else {
					bad[at] ^= (unsigned char)(1 + (x >> 24) % 255);
				}
			}
			struct sha256 s;
			sha256_init(&s);
			sha256_update(&s, bad + head, body_len);
			sha256_final(&s, bad + head - 32);
			write_file(cache, bad, n);
			ck_assert_msg(open_cap("", blob, &o) == 1, "%s", o.err);
			walk_all(&o.l[0], o.l[0].root, 0);
			close_all(&o);
		}
	}
	free(t.b);
}
END_TEST

/* ---- the ops' errors ---- */

START_TEST(ops_errors)
{
	struct tw t = { 0 };
	struct opened o;
	char buf[64];
	tree_tar(&t);
	struct ovl_plugin_layer *L = open_tw(&t, RAW, &o);
	void *l = L->layer;
	const struct ovl_plugin_layer_ops *ops = L->ops;
	int etc = ops->openat(l, L->root, "etc", O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(etc, 0);
	ck_assert_int_eq(ops->openat(l, etc, "link", O_RDONLY), -1);
	ck_assert_int_eq(errno, ELOOP);
	ck_assert_int_eq(ops->openat(l, etc, "passwd", O_RDONLY | O_DIRECTORY), -1);
	ck_assert_int_eq(errno, ENOTDIR);
	ck_assert_int_eq(ops->openat(l, etc, "passwd", O_WRONLY), -1);
	ck_assert_int_eq(errno, EROFS);
	ck_assert_int_eq(ops->openat(l, etc, "nope", O_RDONLY), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(ops->openat(l, L->root, "etc/passwd", O_RDONLY), -1);
	ck_assert_int_eq(errno, EINVAL);
	int f = ops->openat(l, etc, "passwd", O_RDONLY);
	ck_assert_int_ge(f, 0);
	ck_assert_int_eq(ops->openat(l, f, "x", O_RDONLY), -1);
	ck_assert_int_eq(errno, ENOTDIR);
	ck_assert_int_eq(ops->readlinkat(l, etc, "passwd", buf, sizeof buf), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(ops->read(l, etc, buf, sizeof buf, 0), -1);
	ck_assert_int_eq(errno, EISDIR);
	ck_assert_int_eq(ops->list(l, f, collect, buf), -1);
	ck_assert_int_eq(errno, ENOTDIR);
	ck_assert_int_eq(ops->listxattrat(l, etc, "passwd", NULL, 0), 0);
	struct stat st, st2;
	ck_assert_int_eq(ops->statat(l, f, NULL, &st), 0);
	ck_assert_int_eq(ops->statat(l, etc, "passwd", &st2), 0);
	ck_assert_int_eq(st.st_ino, st2.st_ino);
	ck_assert_int_eq(ops->statat(l, etc, "..", &st), 0);
	ck_assert_int_eq(st.st_mode, S_IFDIR | 0750);
	ck_assert_int_eq(ops->close(l, f), 0);
	ck_assert_int_eq(ops->close(l, f), -1);
	ck_assert_int_eq(errno, EBADF);
	ck_assert_int_eq(ops->statat(l, f, NULL, &st), -1);
	ck_assert_int_eq(errno, EBADF);
	ck_assert_int_eq(ops->statat(l, 12345, NULL, &st), -1);
	ck_assert_int_eq(ops->close(l, L->root), 0); /* the root stays */
	ck_assert_int_eq(ops->statat(l, L->root, NULL, &st), 0);
	struct statvfs sv;
	ck_assert_int_eq(ops->statfs(l, &sv), 0);
	ck_assert(sv.f_flag & ST_RDONLY);
	ck_assert_uint_eq(sv.f_files, 18);
	ops->close(l, etc);
	close_all(&o);
	ck_assert_int_eq(open_cap("", "relative/blob", &o), -1);
	ck_assert_int_eq(open_cap("", "/nonexistent/blob", &o), -1);
	ck_assert_ptr_nonnull(strstr(o.err, "/nonexistent/blob: No such file"));
	free(t.b);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("oci");
	struct {
		const char *name;
		const TTest *test;
		int timeout;
	} cases[] = {
		{ "sha256", sha256_vectors, 0 },	{ "json", json_strict, 0 },
		{ "numbers", tar_numbers, 0 },	  { "entries", index_entries, 0 },
		{ "replacement", index_replacement, 0 }, { "whiteouts", index_whiteouts, 0 },
		{ "pax_gnu", index_pax_gnu, 0 },	{ "sparse", sparse_formats, 0 },
		{ "offsets", reads_at_offsets, 60 },	{ "threads", reads_in_threads, 60 },
		{ "layout", layout_expands, 0 },	{ "layout_tools", layout_tools, 60 },	{ "layout_digest", layout_digest_mismatch, 0 },
		{ "layout_manifest", layout_manifest_checked, 0 }, { "left_out", hostile_left_out, 0 },
		{ "refused", hostile_refused, 60 },	{ "headers", hostile_headers, 0 },
		{ "ops", ops_errors, 0 },	       { "cache", index_cache, 60 },
		{ "cache_hostile", index_cache_hostile, 60 }, { "unpadded_end", tar_unpadded_end, 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
		if (cases[i].timeout)
			tcase_set_timeout(tc, cases[i].timeout);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	return s;
}

CHECK_MAIN(suite)
