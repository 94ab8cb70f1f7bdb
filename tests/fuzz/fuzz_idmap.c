/* libFuzzer target: the parsers of untrusted input in idmap.c and
 * override.c.  The first byte picks one: the uidmapping= parser (callers'
 * strings), the ACL and capability rewrites (xattr values from hostile
 * layers) under a mapping, or the override_stat parser.  Checks what must
 * hold for any input, beyond not crashing: a parsed map maps both ways back,
 * an accepted ACL is accepted again, an override read back from what we write
 * is the same. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "../../overlay/overlay.h"

static struct ovl_idmap map, uids, gids;

/* override.c's calls into the rest of the daemon, never reached by its parser */
struct ovl_node_rare *ovl_node_rare(struct ovl_node *node)
{
	(void)node;
	abort();
}

void ovl_log_once(atomic_flag *done, enum ovl_log_level level, const char *fmt, ...)
{
	(void)done;
	(void)level;
	(void)fmt;
	abort();
}

static void check_override(const uint8_t *data, size_t size)
{
	struct ovl_override o, back;
	char buf[OVL_OVERRIDE_MAX + 1];
	if (ovl_override_parse((const char *)data, size, S_IFREG, &o) < 0)
		return;
	int n = ovl_override_format(&o, buf, sizeof buf);
	if (n <= 0 || n > OVL_OVERRIDE_MAX || ovl_override_parse(buf, (size_t)n, S_IFDIR, &back) < 0 ||
	    back.uid != o.uid || back.gid != o.gid || back.mode != o.mode ||
	    ((S_ISCHR(o.mode) || S_ISBLK(o.mode)) && back.rdev != o.rdev))
		abort();
}

static void check_map(const struct ovl_idmap *m)
{
	for (size_t i = 0; i < m->n; i++) {
		const struct ovl_idmap_range *r = &m->r[i];
		if (r->len == 0 || ovl_idmap_shown(m, r->disk) != r->shown ||
		    ovl_idmap_disk(m, r->shown + r->len - 1) != r->disk + r->len - 1)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (uids.n == 0) {
		const char *why;
		if (ovl_idmap_parse(":0:1000:1000:1000:0:1:1001:100000:65536", &uids, &why) < 0 ||
		    ovl_idmap_parse("0:5000:10", &gids, &why) < 0)
			abort();
		uids.overflow = gids.overflow = 65534;
	}
	unsigned char *buf = malloc(size);
	memcpy(buf, data + 1, size - 1);
	switch (data[0] % 4) {
	case 3:
		check_override(data + 1, size - 1);
		break;
	case 0: {
		char *spec = malloc(size);
		memcpy(spec, data + 1, size - 1);
		spec[size - 1] = '\0';
		const char *why;
		if (ovl_idmap_parse(spec, &map, &why) == 0)
			check_map(&map);
		else if (map.n != 0 || why == NULL)
			abort();
		free(spec);
		break;
	}
	case 1:
		if (ovl_idmap_acl(&uids, &gids, buf, size - 1, data[0] & 4) == 0 &&
		    ovl_idmap_acl(&uids, &gids, buf, size - 1, !(data[0] & 4)) != 0)
			abort(); /* a value accepted once is accepted again */
		break;
	default:
		ovl_idmap_caps(&uids, buf, size - 1, data[0] & 4);
		break;
	}
	free(buf);
	return 0;
}
