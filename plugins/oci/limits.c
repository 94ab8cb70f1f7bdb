/* The bounds that keep a hostile blob from costing unbounded memory or
 * time: defaults, and their overrides from the environment (the plugin has
 * no options of its own: its DATA is the image reference). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "oci.h"

#define GiB (1ULL << 30)

void oci_limits_default(struct oci_limits *l)
{
	l->max_entries = 10 * 1000 * 1000;
	l->max_index_bytes = 2 * GiB;
	/* index builds run at the speed of decompression, about 0.3-1 GiB/s: a
	 * 64 GiB stream is minutes, not hours */
	l->max_size = 64 * GiB;
	/* deflate cannot pass 1032:1; zstd can (a gigabyte of zeros is 32 KiB) */
	l->max_ratio = 200;
	l->ratio_floor = 1 * GiB;
	l->cache = true;
}

int oci_parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	if (!n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*out = x;
	return 0;
}

int oci_parse_i64(const char *s, size_t n, int64_t *out)
{
	bool neg = n && s[0] == '-';
	uint64_t x;
	if (oci_parse_u64(s + neg, n - neg, &x) < 0 || x > (uint64_t)INT64_MAX)
		return -1;
	*out = neg ? -(int64_t)x : (int64_t)x;
	return 0;
}

int oci_parse_size(const char *s, uint64_t *out)
{
	if (!s)
		return -1;
	size_t digits = strspn(s, "0123456789");
	uint64_t v;
	if (oci_parse_u64(s, digits, &v) < 0)
		return -1;
	const char *end = s + digits;
	unsigned shift = 0;
	switch (*end) {
	case 0: break;
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	case 'T': shift = 40; break;
	default: return -1;
	}
	if (shift && end[1])
		return -1;
	if (v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

int oci_limits_get(struct oci_limits *l, char *err, size_t errlen)
{
	static const struct {
		const char *env;
		size_t off;
	} vars[] = {
		{ "FUSE_OVERLAYFS_OCI_MAX_ENTRIES", offsetof(struct oci_limits, max_entries) },
		{ "FUSE_OVERLAYFS_OCI_MAX_INDEX", offsetof(struct oci_limits, max_index_bytes) },
		{ "FUSE_OVERLAYFS_OCI_MAX_SIZE", offsetof(struct oci_limits, max_size) },
		{ "FUSE_OVERLAYFS_OCI_MAX_RATIO", offsetof(struct oci_limits, max_ratio) },
	};
	oci_limits_default(l);
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const char *v = getenv(vars[i].env);
		uint64_t n;
		if (!v)
			continue;
		if (oci_parse_size(v, &n) < 0 || n == 0) {
			oci_err(err, errlen, vars[i].env, "not a positive number (with K, M, G or T): '%s'", v);
			return -1;
		}
		*(uint64_t *)((char *)l + vars[i].off) = n;
	}
	const char *c = getenv("FUSE_OVERLAYFS_OCI_CACHE");
	if (c && strcmp(c, "0") && strcmp(c, "1")) {
		oci_err(err, errlen, "FUSE_OVERLAYFS_OCI_CACHE", "0 or 1, not '%s'", c);
		return -1;
	}
	l->cache = !c || !strcmp(c, "1");
	return 0;
}

uint64_t oci_limits_out(const struct oci_limits *l, uint64_t compressed)
{
	uint64_t by_ratio = compressed > UINT64_MAX / l->max_ratio ? UINT64_MAX : compressed * l->max_ratio;
	uint64_t m = by_ratio > l->ratio_floor ? by_ratio : l->ratio_floor;
	return m < l->max_size ? m : l->max_size;
}
