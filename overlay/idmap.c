/* uid/gid mappings.  The parser is strict: its input comes from callers that
 * build it out of container configuration (containers/storage sends a leading
 * ':'; 1.10's man page shows ',' between triples). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

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

int ovl_idmap_parse(const char *spec, struct ovl_idmap_range **out, size_t *count)
{
	struct ovl_idmap_range *v = NULL;
	size_t n = 0;
	const char *p = spec;
	if (p == NULL)
		return -EINVAL;
	if (*p == ':')
		p++;
	while (*p) {
		uint32_t f[3];
		for (int i = 0; i < 3; i++) {
			if (i > 0 && !is_sep(*p++))
				goto bad;
			if (parse_u32(&p, &f[i]) < 0)
				goto bad;
		}
		if (f[2] == 0 || (uint64_t)f[0] + f[2] > (uint64_t)UINT32_MAX + 1 ||
		    (uint64_t)f[1] + f[2] > (uint64_t)UINT32_MAX + 1)
			goto bad;
		struct ovl_idmap_range *nv = realloc(v, (n + 1) * sizeof *v);
		if (nv == NULL) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[n++] = (struct ovl_idmap_range){ .id = f[0], .host = f[1], .len = f[2] };
		if (*p == '\0')
			break;
		if (!is_sep(*p++) || *p == '\0')
			goto bad;
	}
	if (n == 0)
		goto bad;
	*out = v;
	*count = n;
	return 0;
bad:
	free(v);
	return -EINVAL;
}
