/* libFuzzer target: the snapshotter shim's parsers of gRPC input.  The first
 * byte picks one:
 *   0: the rest as a uidmapping/gidmapping label value (or another label's):
 *      idmap_validate accepts exactly what a plain re-implementation accepts
 *      (CTR:HOST:SIZE joined by ',', decimal below 2^32, sizes above 0, no
 *      range past 2^32, none overlapping another on either side, at most
 *      340), a refusal is InvalidArgument with a message, and what it
 *      accepts the daemon's own parser takes too, as idmap_option hands it
 *      over, with the same ranges;
 *   1: the rest as up to two filters and a snapshot ('\0' between):
 *      filter_parse refuses with InvalidArgument and a message, or gives a
 *      filter that matches and frees; two filters accepted are accepted
 *      joined by ',', which matches exactly where both do (only where both
 *      do when both hold regular expressions, which share a budget);
 *   2: the rest as bytes X: name=="X" and labels."X" with X Go-quoted
 *      (escapes chosen by the bytes) are accepted and match a snapshot
 *      named, or labelled, X and no other, and name!="X" the other way;
 *   3: the rest as label lines KEY=VALUE ("u" and "g" stand for the mapping
 *      keys): labels_set and labels_get as a map (an empty value removes),
 *      labels_validate as a re-implementation of containerd's limits. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../contrib/snapshotter/shim.h"
#include "../../overlay/overlay.h"

/* ---- 0: id maps ---- */
struct range {
	uint64_t ctr, host, size;
};

/* A decimal number below 2^32 up to a ':' or ','; NULL if it is not one. */
static const char *number(const char *p, uint64_t *out)
{
	size_t n = strspn(p, "0123456789");
	if (n == 0 || (n > 10 && strspn(p, "0") < n - 10))
		return NULL; /* leading zeros are fine */
	*out = 0;
	for (size_t i = 0; i < n; i++)
		*out = *out * 10 + (uint64_t)(p[i] - '0');
	return *out > UINT32_MAX ? NULL : p + n;
}

/* The ranges of value, or -1: the label's rules, plainly. */
static int reference_map(const char *value, struct range *r)
{
	int n = 0;
	for (const char *p = value;; p++) {
		struct range x;
		if (n == 340 || !(p = number(p, &x.ctr)) || *p++ != ':' || !(p = number(p, &x.host)) ||
		    *p++ != ':' || !(p = number(p, &x.size)) || (*p != ',' && *p != '\0'))
			return -1;
		if (x.size == 0 || x.ctr + x.size > 1ULL << 32 || x.host + x.size > 1ULL << 32)
			return -1;
		for (int i = 0; i < n; i++) {
			bool ctr_apart = r[i].ctr + r[i].size <= x.ctr || x.ctr + x.size <= r[i].ctr;
			bool host_apart = r[i].host + r[i].size <= x.host || x.host + x.size <= r[i].host;
			if (!ctr_apart || !host_apart)
				return -1;
		}
		r[n++] = x;
		if (*p == '\0')
			return n;
	}
}

static void check_idmap(const char *value, bool mapping)
{
	static struct range want[341];
	static struct ovl_idmap daemon;
	struct status st = { .code = GRPC_OK };
	const char *key = mapping ? LABEL_UIDMAPPING : "containerd.io/snapshot/other";
	int res = idmap_validate(key, value, &st);
	int n = reference_map(value, want);
	if (!mapping) {
		if (res != 0 || st.code != GRPC_OK)
			abort();
		return;
	}
	if ((res == 0) != (n >= 0) ||
	    (res < 0 && (res != -1 || st.code != GRPC_INVALID_ARGUMENT || st.message[0] == '\0')))
		abort();
	if (res < 0)
		return;
	/* the daemon takes what the shim hands it, as the shim understood it */
	char *opt = idmap_option("uidmapping", value);
	const char *why;
	if (opt == NULL || strncmp(opt, "uidmapping=", 11) != 0 || strchr(opt, ',') ||
	    ovl_idmap_parse(opt + 11, &daemon, &why) != 0 || daemon.n != (size_t)n)
		abort();
	for (int i = 0; i < n; i++)
		if (daemon.r[i].disk != want[i].ctr || daemon.r[i].shown != want[i].host ||
		    daemon.r[i].len != want[i].size)
			abort();
	free(opt);
}

/* ---- 1, 2: filters ---- */
static struct snap_info infos[4];

static void infos_init(void)
{
	if (infos[0].name)
		return;
	static const char *const names[] = { "default/1/sha256:abc", "k8s.io/7/extract-1", "", "a,b c" };
	static const enum snap_kind kinds[] = { KIND_COMMITTED, KIND_ACTIVE, KIND_VIEW, KIND_UNKNOWN };
	for (int i = 0; i < 4; i++) {
		infos[i].name = strdup(names[i]);
		infos[i].parent = strdup(i ? names[i - 1] : "");
		infos[i].kind = kinds[i];
	}
	labels_set(&infos[0].labels, "containerd.io/gc.root", "2024-01-01T00:00:00Z");
	labels_set(&infos[0].labels, "a.b", "c");
	labels_set(&infos[1].labels, LABEL_UIDMAPPING, "0:1000:1");
	labels_set(&infos[1].labels, "containerd.io/snapshot.ref", "sha256:abc");
}

/* Parses text: NULL when refused (and the refusal is checked). */
static struct filter *parse(const char *text)
{
	struct filter *f = NULL;
	struct status st = { .code = GRPC_OK };
	if (filter_parse(text, &f, &st) == 0) {
		if (f == NULL || st.code != GRPC_OK)
			abort();
		return f;
	}
	if (f != NULL || st.code != GRPC_INVALID_ARGUMENT || st.message[0] == '\0')
		abort();
	return NULL;
}

static void check_filters(const char *data, size_t size)
{
	const char *a = data, *b = a + strlen(a) + 1, *rest = b < data + size ? b + strlen(b) + 1 : NULL;
	if (b >= data + size)
		b = NULL;
	/* a snapshot of the input's own: name, then label lines */
	struct snap_info own = { .name = (char *)"", .parent = (char *)"", .kind = KIND_ACTIVE };
	char *spec = rest && rest < data + size ? strdup(rest) : NULL;
	if (spec) {
		char *save, *line = strtok_r(spec, "\n", &save);
		own.name = line ? line : (char *)"";
		while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
			char *eq = strchr(line, '=');
			if (eq)
				*eq++ = '\0';
			labels_set(&own.labels, line, eq ? eq : "1");
		}
	}
	const struct snap_info *all[] = { &infos[0], &infos[1], &infos[2], &infos[3], &own };
	struct filter *fa = parse(a), *fb = b ? parse(b) : NULL;
	bool ma[5], mb[5];
	for (int i = 0; i < 5; i++) {
		ma[i] = fa && filter_match(fa, all[i]);
		mb[i] = fb && filter_match(fb, all[i]);
	}
	if (fa && fb && a[0] && b[0]) {
		char *both;
		if (asprintf(&both, "%s,%s", a, b) < 0)
			abort();
		struct filter *f = parse(both);
		if (f == NULL)
			abort();
		/* the regular expressions share one budget: joined, one may match nothing */
		bool budget = strstr(a, "~=") && strstr(b, "~=");
		for (int i = 0; i < 5; i++) {
			bool m = filter_match(f, all[i]);
			if (budget ? m && !(ma[i] && mb[i]) : m != (ma[i] && mb[i]))
				abort();
		}
		filter_free(f);
		free(both);
	}
	filter_free(fa);
	filter_free(fb);
	labels_free(&own.labels);
	free(spec);
}

/* x as a Go string literal in double quotes; how picks the escapes. */
static char *go_quote(const char *x, const char *how)
{
	size_t hn = strlen(how);
	char *q = malloc(strlen(x) * 4 + 3), *o = q;
	*o++ = '"';
	for (size_t i = 0; x[i]; i++) {
		unsigned char c = (unsigned char)x[i];
		unsigned style = hn ? (unsigned char)how[i % hn] % 3 : 0;
		if (c == '"' || c == '\\')
			o += sprintf(o, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f || style == 1)
			o += style == 2 ? sprintf(o, "\\%03o", c) : sprintf(o, "\\x%02x", c);
		else
			*o++ = (char)c;
	}
	*o++ = '"';
	*o = '\0';
	return q;
}

static bool matches(const char *text, const struct snap_info *info)
{
	struct filter *f = parse(text);
	if (f == NULL)
		abort();
	bool m = filter_match(f, info);
	filter_free(f);
	return m;
}

static void check_quoting(const char *x, const char *how)
{
	char *q = go_quote(x, how), *eq, *ne, *label;
	if (asprintf(&eq, "name==%s", q) < 0 || asprintf(&ne, "name!=%s", q) < 0 ||
	    asprintf(&label, "labels.%s", q) < 0)
		abort();
	char other[] = "x";
	struct snap_info it = { .name = (char *)x, .parent = (char *)"", .kind = KIND_ACTIVE };
	struct snap_info not = { .name = strcmp(x, other) ? other : (char *)"y", .parent = (char *)"" };
	if (!matches(eq, &it) || matches(eq, &not) || matches(ne, &it) || !matches(ne, &not))
		abort();
	if (x[0]) { /* containerd stores no empty key */
		labels_set(&it.labels, x, "v");
		labels_set(&not.labels, not.name, "v");
		if (!matches(label, &it) || matches(label, &not))
			abort();
	}
	labels_free(&it.labels);
	labels_free(&not.labels);
	free(q);
	free(eq);
	free(ne);
	free(label);
}

/* ---- 3: labels ---- */
static void check_labels(char *text)
{
	struct labels l = { 0 };
	char *keys[64], *values[64];
	size_t n = 0;
	char *save;
	for (char *line = strtok_r(text, "\n", &save); line && n < 64; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		char *key = line, *value = eq ? eq + 1 : NULL;
		if (eq)
			*eq = '\0';
		if (!strcmp(key, "u"))
			key = (char *)LABEL_UIDMAPPING;
		else if (!strcmp(key, "g"))
			key = (char *)LABEL_GIDMAPPING;
		if (labels_set(&l, key, value) != 0)
			abort();
		/* the model: the last value of each key, none once emptied */
		size_t i = 0;
		while (i < n && strcmp(keys[i], key))
			i++;
		if (i == n) {
			keys[n] = key;
			values[n++] = value && *value ? value : NULL;
		} else {
			values[i] = value && *value ? value : NULL;
		}
	}
	size_t live = 0;
	bool valid = true;
	for (size_t i = 0; i < n; i++) {
		const char *got = labels_get(&l, keys[i]);
		if ((got == NULL) != (values[i] == NULL) || (got && strcmp(got, values[i]) != 0))
			abort();
		if (values[i] == NULL)
			continue;
		live++;
		static struct range r[341];
		bool mapping = !strcmp(keys[i], LABEL_UIDMAPPING) || !strcmp(keys[i], LABEL_GIDMAPPING);
		if (!keys[i][0] || strlen(keys[i]) + strlen(values[i]) > 4096 ||
		    (mapping && reference_map(values[i], r) < 0))
			valid = false;
	}
	struct status st = { .code = GRPC_OK };
	int res = labels_validate(&l, &st);
	if (l.n != live || (res == 0) != valid ||
	    (res < 0 && (st.code != GRPC_INVALID_ARGUMENT || st.message[0] == '\0')))
		abort();
	labels_free(&l);
	if (l.n != 0 || l.keys || l.values)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	infos_init();
	/* a NUL-terminated copy, exactly sized: a read past it is seen */
	char *text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	switch (data[0] % 4) {
	case 0:
		check_idmap(text, !(data[0] & 4));
		break;
	case 1:
		check_filters(text, size - 1);
		break;
	case 2: {
		size_t n = strlen(text);
		check_quoting(text, n + 1 < size - 1 ? text + n + 1 : "");
		break;
	}
	default:
		check_labels(text);
		break;
	}
	free(text);
	return 0;
}
