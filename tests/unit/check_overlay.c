/* Unit tests of the pure parts: the option table, the escape-aware layer
 * splitter, id mapping parsing, whiteout and opaque recognition, the xattr
 * filter and the listing merge on fake layers (a mount's nodes and locks:
 * check_nodes.c). */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../../overlay/overlay.h"
#include "../../overlay/readdir.h"
#include "check_main.h"

/* ---- options ---- */
static int parse(struct ovl_config *cfg, char *err, int argc, char **argv)
{
	ovl_config_init(cfg);
	return ovl_options_parse(argc, argv, cfg, err, 512);
}

#define ARGV(...) ((char *[]){ "fuse-overlayfs", __VA_ARGS__, NULL })
#define ARGC(...) ((int)(sizeof((char *[]){ "fuse-overlayfs", __VA_ARGS__ }) / sizeof(char *)))
#define PARSE(cfg, err, ...) parse(cfg, err, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

START_TEST(options_source_and_mountpoint)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "overlay", "/mnt", "-o", "lowerdir=/a"), 0);
	ck_assert_str_eq(c.source, "overlay");
	ck_assert_str_eq(c.mountpoint, "/mnt");
	ck_assert_str_eq(c.lowerdir, "/a");
	ck_assert_ptr_null(c.upperdir);
	ck_assert(strstr(c.kernel_opts, "ro") != NULL); /* lowerdir only: read-only */
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a", "/mnt"), 0);
	ck_assert_ptr_null(c.source);
	ck_assert_str_eq(c.mountpoint, "/mnt");
	ovl_config_free(&c);
}
END_TEST

START_TEST(options_repeated_and_empty)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a,,upperdir=/u", "-o", "workdir=/w,timeout=2.5,,", "/m"), 0);
	ck_assert_str_eq(c.upperdir, "/u");
	ck_assert_str_eq(c.workdir, "/w");
	ck_assert(c.timeout == 2.5);
	ck_assert(strstr(c.kernel_opts, ",ro") == NULL);
	ovl_config_free(&c);
}
END_TEST

START_TEST(options_accepted_for_compat)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "-o",
			       "rw,dev,suid,lazytime,context=\"system_u:object_r:container_file_t:s0\",lowerdir=/a,"
			       "splice_read,kernel_cache,fast_ino=1,redirect_dir=off,xino=off,volatile,threaded=0,"
			       "noacl,static_nlink,squash_to_uid=5,squash_to_gid=6,noxattrs=1,somethingunknown=1",
			       "/m"),
			 0);
	ck_assert(!c.fsync);
	ck_assert(!c.threaded);
	ck_assert(c.noacl && c.static_nlink && c.noxattrs);
	ck_assert_int_eq(c.squash_to_uid, 5);
	ck_assert_int_eq(c.squash_to_gid, 6);
	ck_assert(strstr(c.kernel_opts, "lazytime") == NULL); /* libfuse would refuse the mount */
	ck_assert(strstr(c.kernel_opts, "somethingunknown") == NULL);
	ovl_config_free(&c);
}
END_TEST

START_TEST(options_flags)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "-f", "-o", "lowerdir=/a", "/m"), 0);
	ck_assert(c.foreground && !c.debug);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-d", "-o", "lowerdir=/a", "/m"), 0);
	ck_assert(c.foreground && c.debug);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-o", "debug,lowerdir=/a", "/m"), 0);
	ck_assert(c.foreground && c.debug);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-V"), 0);
	ck_assert(c.show_version);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "--help"), 0);
	ck_assert(c.show_help);
	ovl_config_free(&c);
}
END_TEST

static const struct {
	const char *opts;
	const char *msg;
} bad_options[] = {
	{ "upperdir=/u", "lowerdir: missing" },
	{ "lowerdir=/a,upperdir=/u", "upperdir: given without workdir" },
	{ "lowerdir=/a,workdir=/w", "workdir: given without upperdir" },
	{ "lowerdir=/a,timeout=abc", "timeout: not a number" },
	{ "lowerdir=/a,timeout=-1", "timeout: not a number" },
	{ "lowerdir=/a,threaded=2", "threaded: want 0 or 1" },
	{ "lowerdir=/a,squash_to_uid=x", "squash_to_uid: not a valid id" },
	{ "lowerdir=/a,redirect_dir=on", "redirect_dir: only 'off'" },
	{ "lowerdir=/a,uidmapping=0:1", "uidmapping: want ID:HOST:LEN" },
	{ "lowerdir=/a,gidmapping=0:1:x", "gidmapping: want ID:HOST:LEN" },
	{ "lowerdir=/a,uidmapping=0:1000:0", "uidmapping: a range of length 0" },
	{ "lowerdir=/a,gidmapping=0:1000:5:3:2000:1", "gidmapping: overlapping ranges" },
	{ "lowerdir=/a,xattr_permissions=7", "xattr_permissions: want 0, 1 or 2" },
	{ "lowerdir=/a,xino=maybe", "xino: want off" },
	{ "lowerdir=/a,ino32_t=1", "ino32_t: takes no value" },
	{ "lowerdir=/a,static_nlink=1", "static_nlink: takes no value" },
	{ "lowerdir=/a,lowerdir", "lowerdir: needs a value" },
};

START_TEST(options_bad)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "-o", (char *)bad_options[_i].opts, "/m"), -1);
	ck_assert_msg(strstr(err, bad_options[_i].msg) != NULL, "'%s' gave '%s'", bad_options[_i].opts, err);
	ovl_config_free(&c);
}
END_TEST

START_TEST(options_positionals)
{
	struct ovl_config c;
	char err[512];
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a"), -1);
	ck_assert(strstr(err, "mountpoint: missing") != NULL);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "a", "b", "c", "-o", "lowerdir=/a"), -1);
	ck_assert(strstr(err, "too many arguments") != NULL);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-x", "-o", "lowerdir=/a", "/m"), -1);
	ck_assert(strstr(err, "-x: unknown option") != NULL);
	ovl_config_free(&c);
}
END_TEST

/* ---- layer splitter ---- */
START_TEST(split_layers)
{
	char **v;
	size_t n;
	ck_assert_int_eq(ovl_split_layers("/a:/b/c:rel", &v, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(v[0], "/a");
	ck_assert_str_eq(v[1], "/b/c");
	ck_assert_str_eq(v[2], "rel");
	ovl_free_strv(v, n);
	ck_assert_int_eq(ovl_split_layers("/a\\:b:/c\\\\d", &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(v[0], "/a:b");
	ck_assert_str_eq(v[1], "/c\\d");
	ovl_free_strv(v, n);
	ck_assert_int_eq(ovl_split_layers("/a::/b", &v, &n), -EINVAL);
	ck_assert_int_eq(ovl_split_layers("/a:", &v, &n), -EINVAL);
	ck_assert_int_eq(ovl_split_layers("", &v, &n), -EINVAL);
	ck_assert_int_eq(ovl_split_layers("/trailing\\", &v, &n), 0);
	ck_assert_str_eq(v[0], "/trailing\\");
	ovl_free_strv(v, n);
}
END_TEST

/* ---- id mappings ---- */
static struct ovl_idmap map;

START_TEST(idmap_parse)
{
	const char *why;
	ck_assert_int_eq(ovl_idmap_parse(":0:1:65536", &map, &why), 0);
	ck_assert_uint_eq(map.n, 1);
	ck_assert_uint_eq(map.r[0].disk, 0);
	ck_assert_uint_eq(map.r[0].shown, 1);
	ck_assert_uint_eq(map.r[0].len, 65536);
	ck_assert_int_eq(ovl_idmap_parse(":0:1:1000:1000:0:1:1001:1001:64535", &map, &why), 0);
	ck_assert_uint_eq(map.n, 3);
	ck_assert_uint_eq(map.r[1].disk, 1000);
	ck_assert_uint_eq(map.r[1].shown, 0);
	ck_assert_uint_eq(map.r[2].len, 64535);
	/* ',' between triples, empty items anywhere (1.10 skips them) */
	const char *good[] = { "0:100000:65536,65536:0:1", "0:1:2:", "0:1:2,,3:4:5", "::0::1:2::", ",0,1,2,",
			       "0:0:4294967295", "4294967295:0:1" };
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		ck_assert_msg(ovl_idmap_parse(good[i], &map, &why) == 0, "refused '%s': %s", good[i], why);
	ck_assert_int_eq(ovl_idmap_parse("0:1:2,,3:4:5", &map, &why), 0);
	ck_assert_uint_eq(map.n, 2);
	ck_assert_uint_eq(map.r[1].disk, 3);
	ck_assert_uint_eq(map.r[1].len, 5);
}
END_TEST

static const struct {
	const char *spec, *why;
} bad_maps[] = {
	{ "", "want ID:HOST:LEN" },          { ":", "want ID:HOST:LEN" },
	{ "0:1", "want ID:HOST:LEN" },       { "a:b:c", "want ID:HOST:LEN" },
	{ "0:1:2:3", "want ID:HOST:LEN" },   { "-1:0:1", "want ID:HOST:LEN" },
	{ "0 :1:2", "want ID:HOST:LEN" },    { "0:4294967296:1", "want ID:HOST:LEN" },
	{ "0:1:0", "length 0" },             { "4294967295:0:2", "past the largest id" },
	{ "0:4294967295:2", "past the largest id" },
	{ "0:100:10:5:200:1", "overlapping" }, /* on disk */
	{ "0:100:10:50:105:1", "overlapping" }, /* shown */
};

START_TEST(idmap_parse_bad)
{
	const char *why = NULL;
	ck_assert_msg(ovl_idmap_parse(bad_maps[_i].spec, &map, &why) == -EINVAL, "accepted '%s'", bad_maps[_i].spec);
	ck_assert_msg(strstr(why, bad_maps[_i].why) != NULL, "'%s': %s", bad_maps[_i].spec, why);
	ck_assert_uint_eq(map.n, 0);
}
END_TEST

START_TEST(idmap_too_many_ranges)
{
	char spec[341 * 24], *p = spec;
	const char *why;
	for (int i = 0; i < OVL_IDMAP_MAX; i++)
		p += sprintf(p, ":%d:%d:1", i, 1000 + i);
	ck_assert_int_eq(ovl_idmap_parse(spec, &map, &why), 0);
	ck_assert_uint_eq(map.n, OVL_IDMAP_MAX);
	sprintf(p, ":5000:9000:1");
	ck_assert_int_eq(ovl_idmap_parse(spec, &map, &why), -EINVAL);
	ck_assert_msg(strstr(why, "more than 340") != NULL, "%s", why);
}
END_TEST

START_TEST(idmap_directions)
{
	const char *why;
	/* podman --userns=keep-id for user 1001 */
	ck_assert_int_eq(ovl_idmap_parse(":0:1:1001:1001:0:1:1002:1002:64534", &map, &why), 0);
	map.overflow = 65534;
	ck_assert_uint_eq(ovl_idmap_shown(&map, 0), 1);     /* image root shows as 1 */
	ck_assert_uint_eq(ovl_idmap_shown(&map, 1000), 1001);
	ck_assert_uint_eq(ovl_idmap_shown(&map, 1001), 0);  /* the user's files show as root */
	ck_assert_uint_eq(ovl_idmap_shown(&map, 1002), 1002);
	ck_assert_uint_eq(ovl_idmap_shown(&map, 65535), 65535);
	ck_assert_uint_eq(ovl_idmap_shown(&map, 65536), 65534); /* outside: overflow */
	ck_assert_uint_eq(ovl_idmap_disk(&map, 0), 1001);   /* root inside creates as 1001 */
	ck_assert_uint_eq(ovl_idmap_disk(&map, 1), 0);
	ck_assert_uint_eq(ovl_idmap_disk(&map, 1001), 1000);
	ck_assert_uint_eq(ovl_idmap_disk(&map, 70000), 65534);
	for (uint32_t id = 0; id < 65536; id += 7)
		ck_assert_uint_eq(ovl_idmap_disk(&map, ovl_idmap_shown(&map, id)), id);
	/* the last id of the whole range, and no mapping at all */
	ck_assert_int_eq(ovl_idmap_parse("4294967295:0:1", &map, &why), 0);
	ck_assert_uint_eq(ovl_idmap_shown(&map, 4294967295u), 0);
	ck_assert_uint_eq(ovl_idmap_disk(&map, 0), 4294967295u);
	ck_assert_uint_eq(ovl_idmap_shown(&map, 0), map.overflow);
	struct ovl_idmap none = { .n = 0, .overflow = 65534 };
	ck_assert_uint_eq(ovl_idmap_shown(&none, 123456), 123456);
	ck_assert_uint_eq(ovl_idmap_disk(&none, 123456), 123456);
}
END_TEST

/* a POSIX ACL xattr value: version 2, then (tag, perm, id) entries, little endian */
static size_t acl_value(unsigned char *v, const uint16_t *tags, const uint32_t *ids, size_t n)
{
	uint32_t version = htole32(2);
	memcpy(v, &version, 4);
	for (size_t i = 0; i < n; i++) {
		uint16_t tag = htole16(tags[i]), perm = htole16(7);
		uint32_t id = htole32(ids[i]);
		memcpy(v + 4 + 8 * i, &tag, 2);
		memcpy(v + 6 + 8 * i, &perm, 2);
		memcpy(v + 8 + 8 * i, &id, 4);
	}
	return 4 + 8 * n;
}

static uint32_t acl_id(const unsigned char *v, size_t i)
{
	uint32_t id;
	memcpy(&id, v + 8 + 8 * i, 4);
	return le32toh(id);
}

START_TEST(idmap_acl_ids)
{
	static struct ovl_idmap uids, gids;
	const char *why;
	ck_assert_int_eq(ovl_idmap_parse("0:100000:65536", &uids, &why), 0);
	ck_assert_int_eq(ovl_idmap_parse("0:200000:65536", &gids, &why), 0);
	uids.overflow = gids.overflow = 65534;
	/* USER_OBJ, USER 1000, GROUP_OBJ, GROUP 50, MASK, OTHER, USER 70000 (unmapped) */
	const uint16_t tags[] = { 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x02 };
	const uint32_t ids[] = { 0xffffffff, 1000, 0xffffffff, 50, 0xffffffff, 0xffffffff, 70000 };
	unsigned char v[64];
	size_t len = acl_value(v, tags, ids, 7);
	ck_assert_int_eq(ovl_idmap_acl(&uids, &gids, v, len, false), 0);
	ck_assert_uint_eq(acl_id(v, 0), 0xffffffff); /* entries without an id keep it */
	ck_assert_uint_eq(acl_id(v, 1), 101000);
	ck_assert_uint_eq(acl_id(v, 3), 200050);      /* groups by the gid map */
	ck_assert_uint_eq(acl_id(v, 4), 0xffffffff);
	ck_assert_uint_eq(acl_id(v, 6), 65534);
	ck_assert_int_eq(ovl_idmap_acl(&uids, &gids, v, len, true), 0);
	ck_assert_uint_eq(acl_id(v, 1), 1000);
	ck_assert_uint_eq(acl_id(v, 3), 50);
	/* hostile values: truncated, a partial entry, another version */
	ck_assert_int_eq(ovl_idmap_acl(&uids, &gids, v, 3, false), -EINVAL);
	ck_assert_int_eq(ovl_idmap_acl(&uids, &gids, v, len - 1, false), -EINVAL);
	v[0] = 1;
	ck_assert_int_eq(ovl_idmap_acl(&uids, &gids, v, len, false), -EINVAL);
	/* without a mapping a valid value passes unchanged, a bad one is still refused */
	struct ovl_idmap none = { 0 };
	len = acl_value(v, tags, ids, 7);
	ck_assert_int_eq(ovl_idmap_acl(&none, &none, v, len, false), 0);
	ck_assert_uint_eq(acl_id(v, 1), 1000);
	ck_assert_int_eq(ovl_idmap_acl(&none, &none, v, 2, false), -EINVAL);
}
END_TEST

START_TEST(idmap_capability_rootid)
{
	static struct ovl_idmap uids;
	const char *why;
	ck_assert_int_eq(ovl_idmap_parse("0:100000:65536", &uids, &why), 0);
	uids.overflow = 65534;
	uint32_t v3[6] = { htole32(0x03000000 | 1), htole32(1 << 12), 0, 0, 0, htole32(0) };
	ck_assert_int_eq(ovl_idmap_caps(&uids, v3, sizeof v3, false), 0);
	ck_assert_uint_eq(le32toh(v3[5]), 100000);
	ck_assert_int_eq(ovl_idmap_caps(&uids, v3, sizeof v3, true), 0);
	ck_assert_uint_eq(le32toh(v3[5]), 0);
	ck_assert_uint_eq(le32toh(v3[1]), 1 << 12); /* the capability sets stay */
	uint32_t v2[5] = { htole32(0x02000000 | 1), htole32(1 << 12), 0, 0, 0 };
	ck_assert_int_eq(ovl_idmap_caps(&uids, v2, sizeof v2, false), 0); /* no id in v2 */
	ck_assert_uint_eq(le32toh(v2[1]), 1 << 12);
	ck_assert_int_eq(ovl_idmap_caps(&uids, v3, 20, false), -EINVAL); /* v3 too short */
	ck_assert_int_eq(ovl_idmap_caps(&uids, v3, 2, false), -EINVAL);
}
END_TEST

START_TEST(options_mappings)
{
	struct ovl_config c;
	char err[512];
	/* libfuse's splitter cuts "uidmapping=A,B" at the ','; the rest joins the mapping */
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a,uidmapping=0:1000:1,1:100000:65536,,gidmapping=:0:1:1:1:2:3,work,",
			       "/m"), 0);
	ck_assert_uint_eq(c.uidmap.n, 2);
	ck_assert_uint_eq(c.uidmap.r[1].shown, 100000);
	ck_assert_uint_eq(c.gidmap.n, 2);
	ck_assert_uint_eq(c.gidmap.r[1].len, 3);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a", "-o", "uidmapping=0:0:10", "-o", "5:5:1", "/m"), -1);
	ck_assert_msg(strstr(err, "uidmapping: overlapping ranges") != NULL, "%s", err);
	ovl_config_free(&c);
	ck_assert_int_eq(PARSE(&c, err, "-o", "lowerdir=/a,squash_to_uid=abc", "/m"), -1);
	ck_assert_msg(strstr(err, "squash_to_uid") != NULL, "%s", err);
	ovl_config_free(&c);
}
END_TEST

/* ---- inode numbers ---- */
START_TEST(ino_compose)
{
	/* one filesystem: numbers as they are */
	ck_assert_uint_eq(ovl_ino_bits(1, false), 0);
	ck_assert_uint_eq(ovl_ino_compose(64, 0, 0, UINT64_C(0xfedcba9876543210)), UINT64_C(0xfedcba9876543210));
	/* two filesystems: index 0 and 1 in two high bits, 3 the overflow area */
	unsigned bits = ovl_ino_bits(2, false);
	ck_assert_uint_eq(bits, 2);
	ck_assert_uint_eq(ovl_ino_compose(64, bits, 0, 12345), 12345);
	ck_assert_uint_eq(ovl_ino_compose(64, bits, 1, 12345), (UINT64_C(1) << 62) | 12345);
	uint64_t big = ovl_ino_compose(64, bits, 1, UINT64_C(1) << 62);
	ck_assert_uint_eq(big >> 62, 3); /* never cut into another's numbers */
	ck_assert_uint_eq(big, ovl_ino_compose(64, bits, 1, UINT64_C(1) << 62)); /* stable */
	ck_assert_uint_ne(big, ovl_ino_compose(64, bits, 0, UINT64_C(1) << 62));
	ck_assert_uint_eq(ovl_ino_bits(3, false), 2);
	ck_assert_uint_eq(ovl_ino_bits(4, false), 3);
	/* ino32_t: every number below 2^32, one filesystem too */
	bits = ovl_ino_bits(1, true);
	ck_assert_uint_eq(bits, 1);
	ck_assert_uint_eq(ovl_ino_compose(32, bits, 0, 77), 77);
	uint64_t folded = ovl_ino_compose(32, bits, 0, UINT64_C(1) << 40 | 77);
	ck_assert(folded < (UINT64_C(1) << 32) && folded >= (UINT64_C(1) << 31));
	bits = ovl_ino_bits(2, true);
	for (uint64_t ino = 1; ino < (UINT64_C(1) << 40); ino = ino * 3 + 1)
		for (uint32_t fsid = 0; fsid < 2; fsid++)
			ck_assert(ovl_ino_compose(32, bits, fsid, ino) < (UINT64_C(1) << 32));
	ck_assert_uint_eq(ovl_ino_compose(32, bits, 1, 5), (UINT64_C(1) << 30) | 5);
}
END_TEST

/* ---- stat overrides ---- */
START_TEST(override_parse_good)
{
	struct ovl_override o;
#define OVR(s, type) ovl_override_parse(s, strlen(s), type, &o)
	ck_assert_int_eq(OVR("1000:1000:04750:file", S_IFREG), 0);
	ck_assert_uint_eq(o.uid, 1000);
	ck_assert_uint_eq(o.mode, S_IFREG | 04750);
	ck_assert_int_eq(OVR("0:0:755", S_IFDIR), 0); /* 1.10's form: no leading 0, no type */
	ck_assert_uint_eq(o.mode, S_IFDIR | 0755);
	ck_assert_int_eq(OVR("4294967295:7:0", S_IFREG), 0);
	ck_assert_uint_eq(o.uid, 4294967295u);
	ck_assert_uint_eq(o.mode, S_IFREG);
	ck_assert_int_eq(OVR("0:0:0660:char-1-3", S_IFREG), 0); /* a device stored as a plain file */
	ck_assert_uint_eq(o.mode, S_IFCHR | 0660);
	ck_assert_uint_eq(o.rdev, makedev(1, 3));
	ck_assert_int_eq(OVR("0:6:0640:block-8-1", S_IFREG), 0);
	ck_assert_uint_eq(o.mode, S_IFBLK | 0640);
	ck_assert_uint_eq(o.rdev, makedev(8, 1));
	const struct {
		const char *v;
		mode_t type;
	} typed[] = { { "1:2:0755:dir", S_IFDIR },   { "1:2:0644:file", S_IFREG },  { "1:2:0777:symlink", S_IFLNK },
		      { "1:2:0600:pipe", S_IFIFO }, { "1:2:0600:socket", S_IFSOCK } };
	for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
		ck_assert_msg(OVR(typed[i].v, S_IFREG) == 0, "refused %s", typed[i].v);
		ck_assert_uint_eq(o.mode & S_IFMT, typed[i].type);
	}
	/* what we write reads back the same */
	char buf[OVL_OVERRIDE_MAX + 1];
	struct ovl_override in = { .uid = 12, .gid = 34, .mode = S_IFCHR | 02755, .rdev = makedev(4095, 1048575) }, back;
	int n = ovl_override_format(&in, buf, sizeof buf);
	ck_assert_str_eq(buf, "12:34:02755:char-4095-1048575");
	ck_assert_int_eq(ovl_override_parse(buf, (size_t)n, S_IFREG, &back), 0);
	ck_assert(back.uid == 12 && back.gid == 34 && back.mode == in.mode && back.rdev == in.rdev);
	in.mode = S_IFDIR | 0700;
	ovl_override_format(&in, buf, sizeof buf);
	ck_assert_str_eq(buf, "12:34:0700:dir");
#undef OVR
}
END_TEST

/* hostile values: each is refused whole */
static const char *const bad_overrides[] = {
	"", ":", "0:0", "0:0:", "0:0:0644:", "a:0:0644", "0:b:0644", "0:0:0649", "0:0:10000", "0:0:0644:fifo",
	"0:0:0644:file ", " 0:0:0644", "0:0:0644:filex", "0:0:0644:dirx", "0:0:0644:char", "0:0:0644:char-1",
	"0:0:0644:char-1-", "0:0:0644:char-a-1", "0:0:0644:block-1-2-3", "4294967296:0:0644", "0:4294967296:0644",
	"-1:0:0644", "0:0:-644", "0:0:0644\n", "0:0:0644:file:x", "0:0:0644:char-99999999999-1",
	"0000000000000000000000000000000000000000000000000000000000000000000:0:0644",
};

START_TEST(override_parse_bad)
{
	struct ovl_override o;
	const char *v = bad_overrides[_i];
	ck_assert_msg(ovl_override_parse(v, strlen(v), S_IFREG, &o) == -EINVAL, "accepted '%s'", v);
	/* not text: a NUL inside */
	ck_assert_int_eq(ovl_override_parse("0:0\0:0644", 9, S_IFREG, &o), -EINVAL);
}
END_TEST

/* ---- whiteouts ---- */
START_TEST(whiteout_names)
{
	ck_assert(ovl_name_is_reserved(".wh.foo"));
	ck_assert(ovl_name_is_reserved(".wh..wh..opq"));
	ck_assert(!ovl_name_is_reserved(".whx"));
	ck_assert(!ovl_name_is_reserved("wh.foo"));
	ck_assert_str_eq(ovl_whiteout_target(".wh.foo"), "foo");
	ck_assert_str_eq(ovl_whiteout_target(".wh..hidden"), ".hidden");
	ck_assert_ptr_null(ovl_whiteout_target(".wh..wh..opq"));
	ck_assert_ptr_null(ovl_whiteout_target(".wh..wh.plnk"));
	ck_assert_ptr_null(ovl_whiteout_target(".wh."));
	ck_assert_ptr_null(ovl_whiteout_target(".wh.."));
	ck_assert_ptr_null(ovl_whiteout_target("foo"));
	ck_assert(ovl_name_is_opaque_marker(".wh..wh..opq"));
	ck_assert(!ovl_name_is_opaque_marker(".wh..wh..opqx"));
	struct stat st = { .st_mode = S_IFCHR | 0, .st_rdev = makedev(0, 0) };
	ck_assert(ovl_stat_is_whiteout(&st));
	st.st_rdev = makedev(1, 3);
	ck_assert(!ovl_stat_is_whiteout(&st));
	st.st_mode = S_IFBLK;
	st.st_rdev = 0;
	ck_assert(!ovl_stat_is_whiteout(&st));
	ck_assert(ovl_opaque_xattr_name("trusted.overlay.opaque"));
	ck_assert(ovl_opaque_xattr_name("user.overlay.opaque"));
	ck_assert(ovl_opaque_xattr_name("user.fuseoverlayfs.opaque"));
	ck_assert(!ovl_opaque_xattr_name("user.opaque"));
}
END_TEST

START_TEST(xattr_filter)
{
	char list[] = "user.a\0trusted.overlay.opaque\0security.selinux\0user.overlay.x\0user.fuseoverlayfs.y\0user.b";
	size_t len = ovl_xattr_filter_list(list, sizeof list);
	ck_assert_uint_eq(len, sizeof "user.a" + sizeof "security.selinux" + sizeof "user.b");
	ck_assert_int_eq(memcmp(list, "user.a\0security.selinux\0user.b", len), 0);
	char unterminated[] = { 'u', 's', 'e', 'r', '.', 'a', 0, 'x', 'y' };
	ck_assert_uint_eq(ovl_xattr_filter_list(unterminated, sizeof unterminated), 7);
}
END_TEST

/* ---- the merge ---- */
#define RAW(n, t) { .name = (n), .type = (t), .ino = 1 }
#define WH(n) { .name = (n), .type = DT_CHR, .whiteout = true }

static struct ovl_listing *merge(const struct ovl_raw_entry *const *layers, const size_t *counts, size_t nlayers)
{
	struct ovl_merge *m = ovl_merge_new();
	for (size_t i = 0; i < nlayers; i++)
		if (ovl_merge_layer(m, (uint32_t)i, layers[i], counts[i]) != 0)
			break;
	return ovl_merge_finish(m);
}

/* Checks entry i of a listing; -1 leaves a field unchecked. */
static void expect_entry(const struct ovl_listing *l, size_t i, long layer, long type, long nlower)
{
	uint32_t got_layer, got_nlower;
	uint8_t got_type;
	ovl_listing_entry(l, i, &got_layer, &got_type, &got_nlower);
	if (layer >= 0)
		ck_assert_uint_eq(got_layer, (uint32_t)layer);
	if (type >= 0)
		ck_assert_uint_eq(got_type, (uint8_t)type);
	if (nlower >= 0)
		ck_assert_uint_eq(got_nlower, (uint32_t)nlower);
}

static void expect(const struct ovl_listing *l, const char *const *names, size_t n)
{
	ck_assert_uint_eq(ovl_listing_count(l), n);
	for (size_t i = 0; i < n; i++)
		ck_assert_str_eq(ovl_listing_name(l, i), names[i]);
}

static int cmp_range(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Listings never share an offset, whatever their sizes (a pass of 1,500
 * names once went on in the cached end of a 202-name one), until the
 * numbers of one width go round. */
START_TEST(listing_offsets_never_meet)
{
	static const size_t sizes[] = { 0, 1, 100, 202, 254, 1000, 1022, 1500, 5000, 70000, 1 << 20 };
	enum { NS = sizeof sizes / sizeof sizes[0], COUNTS = 2000 };
	uint64_t(*r)[2] = malloc(sizeof *r * NS * COUNTS);
	ck_assert_ptr_nonnull(r);
	size_t k = 0;
	for (size_t i = 0; i < NS; i++)
		for (uint32_t c = 0; c < COUNTS; c++) {
			struct ovl_listing l = { .n = sizes[i] };
			uint32_t count = c * NS + (uint32_t)i; /* each listing its own, as fs->listing_gens */
			ovl_listing_set_offsets(&l, count);
			if (count >= (1u << (26 - l.pos_bits)) - 1)
				break; /* the numbers of one width go round */
			ck_assert_uint_ne(l.gen, 0);
			ck_assert_uint_ge((uint64_t)1 << l.pos_bits, l.n + 3); /* every position and the end fit */
			r[k][0] = (uint64_t)l.gen << l.pos_bits;
			r[k][1] = (uint64_t)(l.gen + 1) << l.pos_bits;
			ck_assert_uint_le(r[k][1], (uint64_t)1 << 31);
			k++;
		}
	qsort(r, k, sizeof *r, cmp_range);
	for (size_t i = 1; i < k; i++)
		ck_assert_msg(r[i][0] >= r[i - 1][1], "offsets [%#llx, %#llx) and [%#llx, %#llx) meet",
			      (unsigned long long)r[i - 1][0], (unsigned long long)r[i - 1][1],
			      (unsigned long long)r[i][0], (unsigned long long)r[i][1]);
	free(r);
}
END_TEST

START_TEST(merge_whiteouts_all_spellings)
{
	const struct ovl_raw_entry top[] = { RAW(".", DT_DIR), RAW("..", DT_DIR), RAW("new", DT_REG),
					     WH("chrgone"), RAW(".wh.filegone", DT_REG), RAW("z", DT_REG) };
	const struct ovl_raw_entry low[] = { RAW("chrgone", DT_REG), RAW("filegone", DT_DIR), RAW("kept", DT_LNK),
					     RAW("z", DT_DIR), RAW(".wh.x", DT_REG) };
	const struct ovl_raw_entry *layers[] = { top, low };
	size_t counts[] = { 6, 5 };
	struct ovl_listing *l = merge(layers, counts, 2);
	const char *want[] = { "kept", "new", "z" };
	expect(l, want, 3);
	ck_assert_int_eq(ovl_listing_index(l, "kept"), 0);
	ck_assert_int_eq(ovl_listing_index(l, "chrgone"), -1);
	ck_assert_int_eq(ovl_listing_index(l, "filegone"), -1);
	expect_entry(l, 2, 0, DT_REG, 0); /* a file hides the directory below it */
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_whiteout_hides_only_below)
{
	/* A whiteout and an object of the same name in one layer: the object shows. */
	const struct ovl_raw_entry top[] = { RAW(".wh.d", DT_REG), RAW("d", DT_DIR) };
	const struct ovl_raw_entry low[] = { RAW("d", DT_DIR) };
	const struct ovl_raw_entry *layers[] = { top, low };
	size_t counts[] = { 2, 1 };
	struct ovl_listing *l = merge(layers, counts, 2);
	const char *want[] = { "d" };
	expect(l, want, 1);
	expect_entry(l, 0, -1, -1, 0); /* and it is opaque */
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_after_empty_layers)
{
	/* names of the first layer that has any are not checked for repeats;
	 * the lookups of the next layer must still see them all */
	const struct ovl_raw_entry empty[] = { RAW(".", DT_DIR), RAW("..", DT_DIR) };
	const struct ovl_raw_entry first[] = { RAW("a", DT_DIR), RAW("b", DT_REG), RAW(".wh.c", DT_REG) };
	const struct ovl_raw_entry second[] = { RAW("a", DT_DIR), RAW("b", DT_DIR), RAW("c", DT_REG), RAW("d", DT_REG) };
	const struct ovl_raw_entry *layers[] = { empty, first, second };
	size_t counts[] = { 2, 3, 4 };
	struct ovl_listing *l = merge(layers, counts, 3);
	const char *want[] = { "a", "b", "d" };
	expect(l, want, 3);
	expect_entry(l, 0, 1, -1, 1);
	expect_entry(l, 1, -1, DT_REG, -1);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_opaque_marker_stops)
{
	const struct ovl_raw_entry top[] = { RAW(".wh..wh..opq", DT_REG), RAW("a", DT_REG) };
	const struct ovl_raw_entry low[] = { RAW("b", DT_REG) };
	const struct ovl_raw_entry *layers[] = { top, low };
	size_t counts[] = { 2, 1 };
	struct ovl_listing *l = merge(layers, counts, 2);
	const char *want[] = { "a" };
	expect(l, want, 1);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_directory_layers)
{
	/* d merges through layers 0 and 1, but a file in layer 2 ends it. */
	const struct ovl_raw_entry l0[] = { RAW("d", DT_DIR), RAW("e", DT_DIR) };
	const struct ovl_raw_entry l1[] = { RAW("d", DT_DIR), WH("e") };
	const struct ovl_raw_entry l2[] = { RAW("d", DT_REG), RAW("e", DT_DIR) };
	const struct ovl_raw_entry l3[] = { RAW("d", DT_DIR) };
	const struct ovl_raw_entry *layers[] = { l0, l1, l2, l3 };
	size_t counts[] = { 2, 2, 2, 1 };
	struct ovl_listing *l = merge(layers, counts, 4);
	const char *want[] = { "d", "e" };
	expect(l, want, 2);
	expect_entry(l, 0, 0, -1, 1);
	expect_entry(l, 1, -1, -1, 0);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_many_sorted)
{
	enum { N = 20000 };
	static struct ovl_raw_entry top[N], low[N];
	static char names[2 * N][16];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 16, "f%05d", N - 1 - i);
		top[i] = (struct ovl_raw_entry){ .name = names[i], .type = DT_REG };
		/* the lower layer holds the odd names, whited out in the top for multiples of 3 */
		snprintf(names[N + i], 16, (i % 3 == 0) ? ".wh.g%05d" : "g%05d", i);
		low[i] = (struct ovl_raw_entry){ .name = names[N + i], .type = DT_REG };
	}
	const struct ovl_raw_entry *layers[] = { top, low };
	size_t counts[] = { N, N };
	struct ovl_listing *l = merge(layers, counts, 2);
	size_t n = ovl_listing_count(l);
	ck_assert_uint_eq(n, N + N - (N + 2) / 3);
	for (size_t i = 0; i < n; i++) /* every name once, found where it stands */
		ck_assert_int_eq(ovl_listing_index(l, ovl_listing_name(l, i)), (ssize_t)i);
	for (size_t i = 1; i < n; i++)
		ck_assert(strcmp(ovl_listing_name(l, i - 1), ovl_listing_name(l, i)) < 0);
	ck_assert_str_eq(ovl_listing_name(l, 0), "f00000");
	ck_assert_int_eq(ovl_listing_index(l, "g00003"), -1);
	ck_assert_int_ne(ovl_listing_index(l, "g00004"), -1);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(merge_sort_order)
{
	/* long common prefixes, names ending inside and after the 8-byte key, high bytes */
	const struct ovl_raw_entry top[] = { RAW("prefix-prefix-b", DT_REG), RAW("prefix-prefix-", DT_REG),
					     RAW("prefix-prefix-aaaaaaaaaaz", DT_REG), RAW("prefix-prefix-aaaaaaaaaa", DT_REG),
					     RAW("prefix-prefix-\xc3\xa9", DT_REG), RAW("prefix-prefix-aaaaaaaab", DT_REG),
					     RAW("prefix-prefix-A", DT_REG) };
	const struct ovl_raw_entry *layers[] = { top };
	size_t counts[] = { 7 };
	struct ovl_listing *l = merge(layers, counts, 1);
	const char *want[] = { "prefix-prefix-", "prefix-prefix-A", "prefix-prefix-aaaaaaaaaa",
			       "prefix-prefix-aaaaaaaaaaz", "prefix-prefix-aaaaaaaab", "prefix-prefix-b",
			       "prefix-prefix-\xc3\xa9" };
	expect(l, want, 7);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(listing_remove_name)
{
	const struct ovl_raw_entry top[] = { RAW("a", DT_REG), RAW("b", DT_DIR), RAW("c", DT_REG) };
	const struct ovl_raw_entry *layers[] = { top };
	size_t counts[] = { 3 };
	struct ovl_listing *l = merge(layers, counts, 1);
	ck_assert(ovl_listing_remove_name(l, "b"));
	ck_assert_int_eq(ovl_listing_index(l, "b"), -1);
	ck_assert_int_eq(ovl_listing_index(l, "a"), 0);
	ck_assert_int_eq(ovl_listing_index(l, "c"), 2);
	ck_assert_uint_eq(ovl_listing_remaining(l), 2);
	/* a reader's offsets hold: the entry keeps its place */
	const char *want[] = { "a", "b", "c" };
	expect(l, want, 3);
	ck_assert(!ovl_listing_remove_name(l, "b")); /* removed twice: out of date */
	ck_assert(!ovl_listing_remove_name(l, "zz"));
	ck_assert(ovl_listing_remove_name(l, "a"));
	ck_assert(ovl_listing_remove_name(l, "c"));
	ck_assert_uint_eq(ovl_listing_remaining(l), 0);
	ovl_listing_unref(l);
}
END_TEST

START_TEST(listing_add_name)
{
	const struct ovl_raw_entry top[] = { RAW("a", DT_REG), RAW("c", DT_REG) };
	const struct ovl_raw_entry *layers[] = { top };
	size_t counts[] = { 2 };
	struct ovl_listing *l = merge(layers, counts, 1);
	ck_assert(ovl_listing_pristine(l));
	ck_assert(!ovl_listing_add_name(l, "a", DT_REG)); /* listed already: out of date */
	ck_assert(ovl_listing_add_name(l, "b", DT_DIR));
	ck_assert(!ovl_listing_pristine(l));
	ck_assert(!ovl_listing_add_name(l, "b", DT_REG)); /* added twice */
	ck_assert_uint_eq(ovl_listing_remaining(l), 3);
	/* the listing's own order and offsets are untouched */
	const char *want[] = { "a", "c" };
	expect(l, want, 2);
	ck_assert_int_eq(ovl_listing_index(l, "b"), -1);
	/* removed again, then made again; a listed name removed, then made again */
	ck_assert(ovl_listing_remove_name(l, "b"));
	ck_assert(!ovl_listing_remove_name(l, "b"));
	ck_assert_uint_eq(ovl_listing_remaining(l), 2);
	ck_assert(ovl_listing_add_name(l, "b", DT_REG));
	ck_assert(ovl_listing_remove_name(l, "a"));
	ck_assert(ovl_listing_add_name(l, "a", DT_LNK));
	ck_assert_uint_eq(ovl_listing_remaining(l), 3);
	/* many names: the set grows, every one stays found */
	char name[16];
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "n%d", i);
		ck_assert(ovl_listing_add_name(l, name, DT_REG));
	}
	for (int i = 0; i < 1000; i += 2) {
		snprintf(name, sizeof name, "n%d", i);
		ck_assert(ovl_listing_remove_name(l, name));
	}
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "n%d", i);
		ck_assert_int_eq(ovl_listing_add_name(l, name, DT_REG), i % 2 == 0);
	}
	ck_assert_uint_eq(ovl_listing_remaining(l), 1003);
	ovl_listing_unref(l);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("overlay");
	TCase *t = tcase_create("options");
	tcase_add_test(t, options_source_and_mountpoint);
	tcase_add_test(t, options_repeated_and_empty);
	tcase_add_test(t, options_accepted_for_compat);
	tcase_add_test(t, options_flags);
	tcase_add_loop_test(t, options_bad, 0, sizeof bad_options / sizeof bad_options[0]);
	tcase_add_test(t, options_positionals);
	tcase_add_test(t, split_layers);
	tcase_add_test(t, idmap_parse);
	tcase_add_loop_test(t, idmap_parse_bad, 0, sizeof bad_maps / sizeof bad_maps[0]);
	tcase_add_test(t, idmap_too_many_ranges);
	tcase_add_test(t, idmap_directions);
	tcase_add_test(t, idmap_acl_ids);
	tcase_add_test(t, idmap_capability_rootid);
	tcase_add_test(t, options_mappings);
	tcase_add_test(t, ino_compose);
	tcase_add_test(t, override_parse_good);
	tcase_add_loop_test(t, override_parse_bad, 0, sizeof bad_overrides / sizeof bad_overrides[0]);
	suite_add_tcase(s, t);
	t = tcase_create("whiteout");
	tcase_add_test(t, whiteout_names);
	tcase_add_test(t, xattr_filter);
	suite_add_tcase(s, t);
	t = tcase_create("merge");
	tcase_add_test(t, merge_whiteouts_all_spellings);
	tcase_add_test(t, merge_whiteout_hides_only_below);
	tcase_add_test(t, merge_opaque_marker_stops);
	tcase_add_test(t, merge_after_empty_layers);
	tcase_add_test(t, merge_directory_layers);
	tcase_add_test(t, merge_many_sorted);
	tcase_add_test(t, merge_sort_order);
	tcase_add_test(t, listing_remove_name);
	tcase_add_test(t, listing_add_name);
	tcase_add_test(t, listing_offsets_never_meet);
	suite_add_tcase(s, t);
	return s;
}

CHECK_MAIN(suite)
