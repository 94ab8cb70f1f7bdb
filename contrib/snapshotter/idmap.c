/* The id-mapping labels of user-namespace snapshots (containerd 2's
 * containerd.io/snapshot/uidmapping and gidmapping): CTR:HOST:SIZE ranges,
 * several joined by ','.  A label is checked whole when it is set, so a
 * mount never gets a map that is half understood; fuse-overlayfs takes the
 * same triples joined by ':' (an id CTR on disk is shown as HOST). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

/* The kernel's limit on the lines of a uid_map. */
#define MAX_RANGES 340

struct id_range {
	uint64_t ctr, host, size;
};

/* A decimal uint32 with nothing else (no sign, blank or leading '+'). */
static const char *parse_u32(const char *p, uint64_t *out)
{
	if (*p < '0' || *p > '9')
		return NULL;
	uint64_t v = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return NULL;
	}
	*out = v;
	return p;
}

static bool overlap(uint64_t a, uint64_t b, uint64_t size_a, uint64_t size_b)
{
	return a < b + size_b && b < a + size_a;
}

/* The ranges of VALUE; on error WHY says what is wrong, naming the range. */
static int parse_map(const char *value, struct id_range *r, size_t *n, char *why, size_t whylen)
{
	*n = 0;
	const char *p = value;
	for (;;) {
		if (*n == MAX_RANGES) {
			snprintf(why, whylen, "more than %d ranges", MAX_RANGES);
			return -1;
		}
		struct id_range *x = &r[*n];
		size_t at = (size_t)(p - value);
		if (!(p = parse_u32(p, &x->ctr)) || *p++ != ':' || !(p = parse_u32(p, &x->host)) || *p++ != ':' ||
		    !(p = parse_u32(p, &x->size)) || (*p && *p != ',')) {
			snprintf(why, whylen, "at byte %zu: not CTR:HOST:SIZE (decimal ids below 2^32)", at);
			return -1;
		}
		if (x->size == 0 || x->ctr + x->size > (1ULL << 32) || x->host + x->size > (1ULL << 32)) {
			snprintf(why, whylen, "range %zu (%" PRIu64 ":%" PRIu64 ":%" PRIu64 ") %s", *n + 1, x->ctr,
				 x->host, x->size, x->size == 0 ? "is empty" : "goes past id 4294967295");
			return -1;
		}
		for (size_t i = 0; i < *n; i++)
			if (overlap(r[i].ctr, x->ctr, r[i].size, x->size) ||
			    overlap(r[i].host, x->host, r[i].size, x->size)) {
				snprintf(why, whylen, "range %zu overlaps range %zu on the %s side", *n + 1, i + 1,
					 overlap(r[i].ctr, x->ctr, r[i].size, x->size) ? "container" : "host");
				return -1;
			}
		++*n;
		if (!*p)
			return 0;
		p++;
	}
}

static bool is_mapping_label(const char *key)
{
	return strcmp(key, LABEL_UIDMAPPING) == 0 || strcmp(key, LABEL_GIDMAPPING) == 0;
}

int idmap_validate(const char *key, const char *value, struct status *st)
{
	if (!is_mapping_label(key))
		return 0;
	struct id_range *r = malloc(MAX_RANGES * sizeof(*r));
	if (!r) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	size_t n;
	char why[160];
	int ret = parse_map(value, r, &n, why, sizeof(why));
	free(r);
	if (ret < 0)
		status_set(st, GRPC_INVALID_ARGUMENT, "label %s=%.128s: %s", key, value, why);
	return ret;
}

bool idmap_labelled(const struct labels *l)
{
	return labels_get(l, LABEL_UIDMAPPING) || labels_get(l, LABEL_GIDMAPPING);
}

char *idmap_option(const char *name, const char *value)
{
	char *opt;
	if (asprintf(&opt, "%s=%s", name, value) < 0)
		return NULL;
	for (char *p = opt + strlen(name) + 1; *p; p++)
		if (*p == ',')
			*p = ':';
	return opt;
}
