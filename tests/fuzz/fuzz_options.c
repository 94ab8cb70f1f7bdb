/* libFuzzer target: the daemon's command line in options.c, as mount.fuse3,
 * podman and containerd hand it over.  The first byte picks the shape: the
 * rest as the one -o string of "fuse-overlayfs [SOURCE] -o STRING /mnt"; the
 * rest as argv, one argument a line; or the rest as a lowerdir= value for
 * ovl_split_layers.  Bit 3 of the first byte gives the error buffer a small
 * size (AddressSanitizer sees a write past it).  Checks, beyond not crashing,
 * leaking or calling exit():
 *   - a refusal says why; an acceptance says nothing, and its config is
 *     consistent: a mountpoint, a non-empty lowerdir, upperdir and workdir
 *     together, xattr_permissions 0-2, ids and timeout in range, a mapping
 *     given is parsed (every range maps both ways back) and none is made up;
 *   - the kernel options handed to libfuse ("-o" KERNEL_OPTS, split again by
 *     libfuse at ',' and '\') are the kernel options the caller gave, in
 *     order, then our defaults, then fsname= and subtype= once: no option
 *     is smuggled in through an escaped ',';
 *   - ovl_split_layers agrees with a plain re-implementation (split at
 *     unescaped ':', '\' takes the next byte, no empty entry). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../overlay/overlay.h"

/* options.c's one call into the rest of the daemon */
void ovl_log(enum ovl_log_level level, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	(void)level;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap); /* formats what it is given */
	va_end(ap);
}

#define MAX_ITEMS 4096

struct items {
	char *v[MAX_ITEMS];
	size_t n;
};

static void items_free(struct items *it)
{
	for (size_t i = 0; i < it->n; i++)
		free(it->v[i]);
	it->n = 0;
}

static int collect(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct items *it = data;
	(void)outargs;
	if (key == FUSE_OPT_KEY_OPT && arg[0] != '-' && it->n < MAX_ITEMS)
		it->v[it->n++] = strdup(arg);
	return 0;
}

/* The options libfuse makes of argv, as it makes them for options.c and,
 * from "-o KERNEL_OPTS", for the session. */
static int split_options(int argc, char **argv, struct items *it)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	int res = fuse_opt_parse(&args, it, NULL, collect);
	fuse_opt_free_args(&args);
	return res;
}

/* The options handed to the kernel as they are (options.c's OPT_KERNEL rows,
 * and "ro"); a value makes one ignored. */
static bool is_kernel_option(const char *item)
{
	static const char *const names[] = { "allow_root", "allow_other", "default_permissions", "auto_unmount",
					     "suid",       "nosuid",      "dev",                 "nodev",
					     "exec",       "noexec",      "atime",               "noatime",
					     "rw",         "ro" };
	size_t len = strlen(item);
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == len && strncmp(item, names[i], len) == 0)
			return true;
	return false;
}

static bool in_items(const struct items *it, size_t from, size_t to, const char *s)
{
	for (size_t i = from; i < to; i++)
		if (strcmp(it->v[i], s) == 0)
			return true;
	return false;
}

static void check_map(const struct ovl_idmap *m, const char *spec)
{
	if ((spec != NULL) != (m->n != 0))
		abort();
	for (size_t i = 0; i < m->n; i++) {
		const struct ovl_idmap_range *r = &m->r[i];
		if (r->len == 0 || ovl_idmap_shown(m, r->disk) != r->shown ||
		    ovl_idmap_disk(m, r->shown + r->len - 1) != r->disk + r->len - 1)
			abort();
	}
}

static void check_kernel_opts(const struct ovl_config *cfg, const struct items *given)
{
	struct items got = { .n = 0 };
	char *argv[] = { "x", "-o", cfg->kernel_opts };
	if (cfg->kernel_opts == NULL || split_options(3, argv, &got) < 0)
		abort();
	/* what the caller gave, in order */
	size_t k = 0;
	for (size_t i = 0; i < given->n; i++) {
		if (!is_kernel_option(given->v[i]))
			continue;
		if (k == got.n || strcmp(got.v[k], given->v[i]) != 0)
			abort();
		k++;
	}
	/* then each default at most once, if not given; then fsname and subtype */
	static const char *const defaults[] = { "default_permissions", "noatime", "allow_other", "suid", "ro" };
	for (size_t i = k; i + 2 < got.n; i++) {
		bool known = false;
		for (size_t d = 0; d < sizeof defaults / sizeof defaults[0]; d++)
			known |= strcmp(got.v[i], defaults[d]) == 0;
		if (!known || in_items(&got, 0, i, got.v[i]))
			abort();
	}
	if (got.n < k + 2 || strcmp(got.v[got.n - 2], "fsname=" OVL_PROGRAM) != 0 ||
	    strcmp(got.v[got.n - 1], "subtype=" OVL_PROGRAM) != 0)
		abort();
	if (!in_items(&got, 0, got.n, "default_permissions") || !in_items(&got, 0, got.n, "noatime") ||
	    (cfg->upperdir == NULL && !in_items(&got, 0, got.n, "ro")))
		abort();
	items_free(&got);
}

static void check_config(const struct ovl_config *cfg, const struct items *given)
{
	check_kernel_opts(cfg, given);
	if (cfg->show_help || cfg->show_version)
		return;
	if (cfg->mountpoint == NULL || cfg->lowerdir == NULL || cfg->lowerdir[0] == '\0' ||
	    (cfg->upperdir == NULL) != (cfg->workdir == NULL) || cfg->xattr_permissions > 2 ||
	    !(cfg->timeout >= 0 && cfg->timeout <= 1e12) || cfg->squash_to_uid < -1 ||
	    cfg->squash_to_uid > (long)UINT32_MAX - 1 || cfg->squash_to_gid < -1 ||
	    cfg->squash_to_gid > (long)UINT32_MAX - 1)
		abort();
	check_map(&cfg->uidmap, cfg->uidmapping);
	check_map(&cfg->gidmap, cfg->gidmapping);
}

/* ovl_split_layers, written plainly: NULL-terminated entries, or NULL when refused. */
static char **reference_split(const char *spec, size_t *count)
{
	size_t len = strlen(spec);
	char **v = calloc(len + 2, sizeof *v);
	char *cur = malloc(len + 1);
	size_t n = 0, cl = 0;
	for (size_t i = 0; i <= len; i++) {
		if (spec[i] == '\\' && i + 1 < len) {
			cur[cl++] = spec[++i];
		} else if (spec[i] != ':' && spec[i] != '\0') {
			cur[cl++] = spec[i];
		} else if (cl == 0) {
			ovl_free_strv(v, n);
			free(cur);
			return NULL;
		} else {
			v[n++] = strndup(cur, cl);
			cl = 0;
		}
	}
	free(cur);
	*count = n;
	return v;
}

static void check_split(const char *spec)
{
	char **v, **want;
	size_t n, wn = 0;
	int res = ovl_split_layers(spec, &v, &n);
	want = reference_split(spec, &wn);
	if ((res == 0) != (want != NULL) || (res < 0 && res != -EINVAL))
		abort();
	if (res < 0)
		return;
	if (n != wn)
		abort();
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], want[i]) != 0)
			abort();
	ovl_free_strv(v, n);
	ovl_free_strv(want, wn);
}

static void check_parse(char **argv, int argc, size_t errlen)
{
	struct ovl_config cfg;
	struct items given = { .n = 0 };
	char *err = malloc(errlen); /* exactly: a write past it is seen */
	ovl_config_init(&cfg);
	int res = ovl_options_parse(argc, argv, &cfg, err, errlen);
	if (res == 0) {
		if (err[0] != '\0' || split_options(argc, argv, &given) < 0)
			abort();
		check_config(&cfg, &given);
	} else if (res != -1 || err[0] == '\0' || strlen(err) >= errlen) {
		abort();
	}
	items_free(&given);
	ovl_config_free(&cfg);
	free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	uint8_t how = data[0];
	size_t len = strnlen((const char *)data + 1, size - 1);
	char *text = strndup((const char *)data + 1, len); /* arguments hold no NUL */
	size_t errlen = how & 8 ? 2 + how % 64 : 1024;
	switch (how % 3) {
	case 0: { /* as mount.fuse3 runs us: [SOURCE] -o STRING MOUNTPOINT */
		char prog[] = OVL_PROGRAM, src[] = "src", o[] = "-o", mnt[] = "/mnt";
		char *with[] = { prog, src, o, text, mnt }, *without[] = { prog, o, text, mnt };
		if (how & 4)
			check_parse(with, 5, errlen);
		else
			check_parse(without, 4, errlen);
		break;
	}
	case 1: { /* argv, one argument a line */
		char prog[] = OVL_PROGRAM, *argv[64];
		int argc = 0;
		argv[argc++] = prog;
		for (char *p = text; argc < 64;) {
			argv[argc++] = p;
			char *nl = strchr(p, '\n');
			if (nl == NULL)
				break;
			*nl = '\0';
			p = nl + 1;
		}
		check_parse(argv, argc, errlen);
		break;
	}
	default:
		check_split(text);
		break;
	}
	free(text);
	return 0;
}
