/* Owners across the mount: uidmapping/gidmapping, squash_*, and the ids
 * inside POSIX ACL and security.capability xattrs.
 *
 * A range ID:HOST:LEN (1.10's order, COMPAT.md) says that the id ID+k stored
 * on disk is shown as HOST+k, and that an id HOST+k of a caller (a create, a
 * chown) is stored as ID+k.  Ids outside every range are the overflow ids in
 * both directions, as in 1.10 and on the kernel's idmapped mounts.  The
 * parsers are strict and pure: their input comes from callers building it out
 * of container configuration, and ACL values come from hostile layers. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

static int parse_u32(const char **s, uint32_t *out)
{
	const char *p = *s;
	uint64_t n = 0;
	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		n = n * 10 + (uint64_t)(*p++ - '0');
		if (n > UINT32_MAX)
			return -1;
	}
	*s = p;
	*out = (uint32_t)n;
	return 0;
}

static bool is_sep(char c)
{
	return c == ':' || c == ',';
}

static bool ranges_overlap(uint32_t a, uint32_t alen, uint32_t b, uint32_t blen)
{
	return (uint64_t)a < (uint64_t)b + blen && (uint64_t)b < (uint64_t)a + alen;
}

/* Why a new range cannot join the map, or NULL. */
static const char *range_problem(const struct ovl_idmap *m, const struct ovl_idmap_range *r)
{
	if (r->len == 0)
		return "a range of length 0";
	if ((uint64_t)r->disk + r->len > (uint64_t)UINT32_MAX + 1 ||
	    (uint64_t)r->shown + r->len > (uint64_t)UINT32_MAX + 1)
		return "a range past the largest id";
	for (size_t i = 0; i < m->n; i++)
		if (ranges_overlap(m->r[i].disk, m->r[i].len, r->disk, r->len) ||
		    ranges_overlap(m->r[i].shown, m->r[i].len, r->shown, r->len))
			return "overlapping ranges";
	if (m->n == OVL_IDMAP_MAX)
		return "more than " OVL_STR(OVL_IDMAP_MAX) " ranges";
	return NULL;
}

int ovl_idmap_parse(const char *spec, struct ovl_idmap *m, const char **why)
{
	const char *p = spec;
	uint32_t f[3];
	int nf = 0;
	*why = "want ID:HOST:LEN[:ID:HOST:LEN...]";
	m->n = 0;
	while (*p) {
		/* empty items (a leading ':', '::', ',,') are skipped, as 1.10's strtok does */
		if (is_sep(*p)) {
			p++;
			continue;
		}
		if (parse_u32(&p, &f[nf]) < 0 || (*p && !is_sep(*p)))
			goto bad;
		if (++nf < 3)
			continue;
		nf = 0;
		struct ovl_idmap_range r = { .disk = f[0], .shown = f[1], .len = f[2] };
		const char *problem = range_problem(m, &r);
		if (problem) {
			*why = problem;
			goto bad;
		}
		m->r[m->n++] = r;
	}
	if (nf == 0 && m->n > 0)
		return 0;
bad:
	m->n = 0;
	return -EINVAL;
}

static uint32_t map_id(const struct ovl_idmap *m, uint32_t id, bool to_disk)
{
	if (m->n == 0)
		return id;
	for (size_t i = 0; i < m->n; i++) {
		uint32_t from = to_disk ? m->r[i].shown : m->r[i].disk, to = to_disk ? m->r[i].disk : m->r[i].shown;
		if (id - from < m->r[i].len) /* unsigned: also false below the range */
			return to + (id - from);
	}
	return m->overflow;
}

uint32_t ovl_idmap_shown(const struct ovl_idmap *m, uint32_t disk)
{
	return map_id(m, disk, false);
}

uint32_t ovl_idmap_disk(const struct ovl_idmap *m, uint32_t shown)
{
	return map_id(m, shown, true);
}

/* ---- ids inside xattr values ---- */
/* The POSIX ACL xattr (linux/posix_acl_xattr.h): a le32 version 2, then
 * entries of le16 tag, le16 perm, le32 id; only ACL_USER and ACL_GROUP
 * entries carry an id. */
#define ACL_XATTR_VERSION 2
#define ACL_HEADER_SIZE 4
#define ACL_ENTRY_SIZE 8
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP 0x08

bool ovl_xattr_is_acl(const char *name)
{
	return strcmp(name, "system.posix_acl_access") == 0 || strcmp(name, "system.posix_acl_default") == 0;
}

int ovl_idmap_acl(const struct ovl_idmap *uids, const struct ovl_idmap *gids, void *value, size_t len,
		  bool to_disk)
{
	unsigned char *v = value;
	uint32_t u32;
	uint16_t u16;
	if (len < ACL_HEADER_SIZE || (len - ACL_HEADER_SIZE) % ACL_ENTRY_SIZE != 0)
		return -EINVAL;
	memcpy(&u32, v, 4);
	if (le32toh(u32) != ACL_XATTR_VERSION)
		return -EINVAL;
	if (uids->n == 0 && gids->n == 0)
		return 0;
	for (size_t off = ACL_HEADER_SIZE; off < len; off += ACL_ENTRY_SIZE) {
		memcpy(&u16, v + off, 2);
		uint16_t tag = le16toh(u16);
		const struct ovl_idmap *m = tag == ACL_TAG_USER ? uids : tag == ACL_TAG_GROUP ? gids : NULL;
		if (m == NULL)
			continue;
		memcpy(&u32, v + off + 4, 4);
		u32 = htole32(map_id(m, le32toh(u32), to_disk));
		memcpy(v + off + 4, &u32, 4);
	}
	return 0;
}

/* security.capability (linux/capability.h): le32 magic_etc, then le32
 * permitted/inheritable pairs; revision 3 adds the le32 rootid, a uid. */
#define CAP_REVISION_MASK 0xFF000000u
#define CAP_REVISION_3 0x03000000u
#define CAP_V3_SIZE 24

int ovl_idmap_caps(const struct ovl_idmap *uids, void *value, size_t len, bool to_disk)
{
	uint32_t u32;
	if (len < 4)
		return -EINVAL;
	memcpy(&u32, value, 4);
	if ((le32toh(u32) & CAP_REVISION_MASK) != CAP_REVISION_3)
		return 0; /* v1 and v2 carry no id */
	if (len != CAP_V3_SIZE)
		return -EINVAL;
	unsigned char *rootid = (unsigned char *)value + CAP_V3_SIZE - 4;
	memcpy(&u32, rootid, 4);
	u32 = htole32(map_id(uids, le32toh(u32), to_disk));
	memcpy(rootid, &u32, 4);
	return 0;
}
