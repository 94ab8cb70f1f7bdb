/* libFuzzer target: the parsers of untrusted input in idmap.c.  The first
 * byte picks one: the uidmapping= parser (callers' strings), or the ACL and
 * capability rewrites (xattr values from hostile layers) under a mapping.
 * Checks what must hold for any input, beyond not crashing: a parsed map has
 * no overlap and maps both ways back, a rewrite keeps the length. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "../../overlay/overlay.h"

static struct ovl_idmap map, uids, gids;

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
	switch (data[0] % 3) {
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
