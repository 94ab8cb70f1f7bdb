/* The command line: one table row per -o option (COMPAT.md), parsed with
 * libfuse's splitter (which handles ',' and one level of '\' escapes), then
 * checked against the filesystem before anything is created. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../plugins/loader.h"
#include "overlay.h"

enum opt_kind {
	OPT_STRING,  /* char * field, value required */
	OPT_FLAG,    /* bool field set to true, no value */
	OPT_BOOL,    /* bool field, value 0 or 1 */
	OPT_UINT,    /* unsigned field, value in [min, max] */
	OPT_ID,      /* long field, a uid/gid */
	OPT_DOUBLE,  /* double field >= 0 */
	OPT_KERNEL,  /* handed to libfuse / the kernel as given */
	OPT_IGNORED, /* accepted for compatibility, no effect */
	OPT_DROPPED, /* a kernel option libfuse 3.14 refuses: warned about, then dropped (as 1.10) */
	OPT_CUSTOM,  /* checked by row->check */
};

struct opt_row {
	const char *name;
	enum opt_kind kind;
	size_t offset;
	unsigned max;
	bool prefix; /* name matches any option starting with it */
	int (*check)(struct ovl_config *cfg, const char *value, char *err, size_t errlen);
	bool invert; /* OPT_FLAG/OPT_BOOL: store the negation */
};

#define F(field) offsetof(struct ovl_config, field)

/* Appends item to the ','-separated list *field (NULL: empty); -1: no memory.
 * A mapping is kept so (several uidmapping= join) and parsed once all options
 * are in (ovl_options_parse). */
static int append_item(char **field, const char *item)
{
	size_t old = *field ? strlen(*field) : 0;
	char *n = realloc(*field, old + strlen(item) + 2);
	if (n == NULL)
		return -1;
	if (old)
		n[old++] = ',';
	strcpy(n + old, item);
	*field = n;
	return 0;
}

static int check_uidmapping(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	return append_item(&cfg->uidmapping, v ? v : "");
}

static int check_gidmapping(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	return append_item(&cfg->gidmapping, v ? v : "");
}

static int parse_mapping(const char *name, const char *spec, struct ovl_idmap *m, char *err, size_t errlen)
{
	const char *why;
	if (spec == NULL)
		return 0;
	if (ovl_idmap_parse(spec, m, &why) == 0)
		return 0;
	snprintf(err, errlen, "%s: %s in '%s'", name, why, spec);
	return -1;
}

static int check_redirect_dir(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)cfg;
	if (v == NULL || strcmp(v, "off") != 0) {
		snprintf(err, errlen, "redirect_dir: only 'off' is supported, got '%s'", v ? v : "");
		return -1;
	}
	return 0;
}

static int check_xino(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)cfg;
	if (v && strcmp(v, "off") == 0)
		return 0;
	if (v && (strcmp(v, "auto") == 0 || strcmp(v, "on") == 0))
		return 0; /* as off: a FUSE mount has one st_dev, so numbers are always made unique */
	snprintf(err, errlen, "xino: want off, auto or on, got '%s'", v ? v : "");
	return -1;
}

static int check_ino32(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	if (v) {
		snprintf(err, errlen, "ino32_t: takes no value");
		return -1;
	}
	cfg->ino32 = true;
	return 0;
}

static int check_xattr_permissions(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	if (v && strcmp(v, "0") == 0) {
		cfg->xattr_permissions = 0;
		return 0;
	}
	if (v && (strcmp(v, "1") == 0 || strcmp(v, "2") == 0)) {
		cfg->xattr_permissions = (unsigned)(v[0] - '0');
		return 0;
	}
	snprintf(err, errlen, "xattr_permissions: want 0, 1 or 2, got '%s'", v ? v : "");
	return -1;
}

static int check_volatile(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)v;
	(void)err;
	(void)errlen;
	cfg->fsync = false;
	return 0;
}

static int check_debug(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)v;
	(void)err;
	(void)errlen;
	cfg->debug = cfg->foreground = true;
	return 0;
}

static int check_ro(struct ovl_config *cfg, const char *v, char *err, size_t errlen)
{
	(void)v;
	(void)err;
	(void)errlen;
	cfg->read_only = true;
	return 1; /* also handed to the kernel */
}

static const struct opt_row opt_table[] = {
	{ .name = "lowerdir", .kind = OPT_STRING, .offset = F(lowerdir) },
	{ .name = "upperdir", .kind = OPT_STRING, .offset = F(upperdir) },
	{ .name = "workdir", .kind = OPT_STRING, .offset = F(workdir) },
	{ .name = "uidmapping", .kind = OPT_CUSTOM, .check = check_uidmapping },
	{ .name = "gidmapping", .kind = OPT_CUSTOM, .check = check_gidmapping },
	{ .name = "squash_to_root", .kind = OPT_FLAG, .offset = F(squash_to_root) },
	{ .name = "squash_to_uid", .kind = OPT_ID, .offset = F(squash_to_uid) },
	{ .name = "squash_to_gid", .kind = OPT_ID, .offset = F(squash_to_gid) },
	{ .name = "static_nlink", .kind = OPT_FLAG, .offset = F(static_nlink) },
	{ .name = "noacl", .kind = OPT_FLAG, .offset = F(noacl) },
	{ .name = "noxattrs", .kind = OPT_BOOL, .offset = F(noxattrs) },
	{ .name = "xattr_permissions", .kind = OPT_CUSTOM, .check = check_xattr_permissions },
	{ .name = "timeout", .kind = OPT_DOUBLE, .offset = F(timeout) },
	{ .name = "threaded", .kind = OPT_BOOL, .offset = F(threaded) },
	{ .name = "fsync", .kind = OPT_BOOL, .offset = F(fsync) },
	{ .name = "sync", .kind = OPT_BOOL, .offset = F(fsync) },
	{ .name = "volatile", .kind = OPT_CUSTOM, .check = check_volatile },
	{ .name = "writeback", .kind = OPT_BOOL, .offset = F(writeback) },
	{ .name = "fast_ino", .kind = OPT_IGNORED },
	{ .name = "fast_ino_check", .kind = OPT_UINT, .offset = F(fast_ino_check), .max = UINT_MAX },
	{ .name = "plugins", .kind = OPT_STRING, .offset = F(plugins) },
	{ .name = "redirect_dir", .kind = OPT_CUSTOM, .check = check_redirect_dir },
	{ .name = "xino", .kind = OPT_CUSTOM, .check = check_xino },
	{ .name = "ino32_t", .kind = OPT_CUSTOM, .check = check_ino32 },
	{ .name = "context", .kind = OPT_IGNORED },
	{ .name = "debug", .kind = OPT_CUSTOM, .check = check_debug },
	{ .name = "ro", .kind = OPT_CUSTOM, .check = check_ro },
	{ .name = "splice_", .kind = OPT_IGNORED, .prefix = true },
	{ .name = "kernel_cache", .kind = OPT_IGNORED },
	{ .name = "max_write", .kind = OPT_IGNORED },
	{ .name = "clone_fd", .kind = OPT_IGNORED },
	{ .name = "max_idle_threads", .kind = OPT_IGNORED },
	{ .name = "allow_root", .kind = OPT_KERNEL },
	{ .name = "allow_other", .kind = OPT_KERNEL },
	{ .name = "default_permissions", .kind = OPT_KERNEL },
	{ .name = "auto_unmount", .kind = OPT_KERNEL },
	{ .name = "suid", .kind = OPT_KERNEL },
	{ .name = "nosuid", .kind = OPT_KERNEL },
	{ .name = "dev", .kind = OPT_KERNEL },
	{ .name = "nodev", .kind = OPT_KERNEL },
	{ .name = "exec", .kind = OPT_KERNEL },
	{ .name = "noexec", .kind = OPT_KERNEL },
	{ .name = "atime", .kind = OPT_KERNEL },
	{ .name = "noatime", .kind = OPT_KERNEL },
	{ .name = "diratime", .kind = OPT_DROPPED },
	{ .name = "nodiratime", .kind = OPT_DROPPED },
	{ .name = "relatime", .kind = OPT_DROPPED },
	{ .name = "lazytime", .kind = OPT_DROPPED },
	{ .name = "rw", .kind = OPT_KERNEL },
};

static const struct opt_row *find_row(const char *name, size_t namelen)
{
	for (size_t i = 0; i < sizeof opt_table / sizeof opt_table[0]; i++) {
		const struct opt_row *r = &opt_table[i];
		size_t rl = strlen(r->name);
		if (r->prefix ? (namelen >= rl && strncmp(name, r->name, rl) == 0)
			      : (namelen == rl && strncmp(name, r->name, rl) == 0))
			return r;
	}
	return NULL;
}

static int parse_ulong(const char *v, unsigned long max, unsigned long *out)
{
	if (v == NULL || *v < '0' || *v > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || n > max)
		return -1;
	*out = n;
	return 0;
}

static int append_kernel_opt(struct ovl_config *cfg, const char *opt)
{
	return append_item(&cfg->kernel_opts, opt);
}

static bool kernel_opt_given(const struct ovl_config *cfg, const char *opt)
{
	const char *s = cfg->kernel_opts;
	size_t len = strlen(opt);
	while (s && *s) {
		if (strncmp(s, opt, len) == 0 && (s[len] == ',' || s[len] == '\0'))
			return true;
		s = strchr(s, ',');
		if (s)
			s++;
	}
	return false;
}

/* Applies one "name[=value]" option; 0 ok, -1 error in err. */
static int apply_option(struct ovl_config *cfg, const char *opt, char *err, size_t errlen)
{
	const char *eq = strchr(opt, '=');
	size_t namelen = eq ? (size_t)(eq - opt) : strlen(opt);
	const char *value = eq ? eq + 1 : NULL;
	const struct opt_row *r = find_row(opt, namelen);
	char *base = (char *)cfg;
	unsigned long n;

	if (r == NULL) {
		ovl_log(OVL_WARN, "unknown option '%.*s' ignored", (int)namelen, opt);
		return 0;
	}
	if (value && (r->kind == OPT_KERNEL || r->check == check_ro)) {
		/* libfuse refuses a kernel flag with a value, after splitting it
		 * again at a ',' that was escaped in ours */
		ovl_log(OVL_WARN, "%s: takes no value, option ignored", r->name);
		return 0;
	}
	bool needs_value = r->kind == OPT_STRING || r->kind == OPT_UINT || r->kind == OPT_ID ||
			   r->kind == OPT_DOUBLE || r->kind == OPT_BOOL;
	if (needs_value && value == NULL) {
		snprintf(err, errlen, "%s: needs a value", r->name);
		return -1;
	}
	switch (r->kind) {
	case OPT_STRING: {
		char **field = (char **)(base + r->offset);
		free(*field);
		*field = strdup(value);
		return *field ? 0 : -1;
	}
	case OPT_FLAG:
		if (value) {
			snprintf(err, errlen, "%s: takes no value", r->name);
			return -1;
		}
		*(bool *)(base + r->offset) = true;
		return 0;
	case OPT_BOOL:
		if (parse_ulong(value, 1, &n) < 0) {
			snprintf(err, errlen, "%s: want 0 or 1, got '%s'", r->name, value);
			return -1;
		}
		*(bool *)(base + r->offset) = n != 0;
		return 0;
	case OPT_UINT:
		if (parse_ulong(value, r->max, &n) < 0) {
			snprintf(err, errlen, "%s: not a number in range: '%s'", r->name, value);
			return -1;
		}
		*(unsigned *)(base + r->offset) = (unsigned)n;
		return 0;
	case OPT_ID:
		if (parse_ulong(value, UINT32_MAX - 1, &n) < 0) {
			snprintf(err, errlen, "%s: not a valid id: '%s'", r->name, value);
			return -1;
		}
		*(long *)(base + r->offset) = (long)n;
		return 0;
	case OPT_DOUBLE: {
		char *end;
		errno = 0;
		double d = strtod(value, &end);
		if (errno || end == value || *end || !(d >= 0) || d > 1e12) {
			snprintf(err, errlen, "%s: not a number of seconds: '%s'", r->name, value);
			return -1;
		}
		*(double *)(base + r->offset) = d;
		return 0;
	}
	case OPT_KERNEL:
		return append_kernel_opt(cfg, opt);
	case OPT_IGNORED:
		return 0;
	case OPT_DROPPED:
		ovl_log(OVL_WARN, "%s: not supported by libfuse, ignored", r->name);
		return 0;
	case OPT_CUSTOM: {
		int res = r->check(cfg, value, err, errlen);
		if (res > 0)
			return append_kernel_opt(cfg, opt);
		return res;
	}
	}
	return 0;
}

struct parse_ctx {
	struct ovl_config *cfg;
	char *err;
	size_t errlen;
	char *positional[3];
	int npositional;
	bool failed;
	char **mapping; /* the mapping the last option set: "uidmapping=A:B:C,D:E:F" reaches us in two items */
};

/* Whether arg is the rest of a mapping cut at ',' by libfuse's splitter. */
static bool is_mapping_rest(const char *arg)
{
	return arg[strspn(arg, "0123456789:")] == '\0';
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct parse_ctx *ctx = data;
	struct ovl_config *cfg = ctx->cfg;
	(void)outargs;
	if (ctx->failed)
		return 0;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (ctx->npositional == 2) {
			snprintf(ctx->err, ctx->errlen, "%s: too many arguments (want [SOURCE] MOUNTPOINT)", arg);
			ctx->failed = true;
			return 0;
		}
		ctx->positional[ctx->npositional++] = strdup(arg);
		return 0;
	}
	if (arg[0] == '-') {
		if (!strcmp(arg, "-f"))
			cfg->foreground = true;
		else if (!strcmp(arg, "-d") || !strcmp(arg, "--debug"))
			cfg->debug = cfg->foreground = true;
		else if (!strcmp(arg, "-h") || !strcmp(arg, "--help"))
			cfg->show_help = true;
		else if (!strcmp(arg, "-V") || !strcmp(arg, "--version"))
			cfg->show_version = true;
		else if (!strcmp(arg, "-s"))
			cfg->threaded = false;
		else {
			snprintf(ctx->err, ctx->errlen, "%s: unknown option", arg);
			ctx->failed = true;
		}
		return 0;
	}
	if (arg[0] == '\0')
		return 0;
	if (ctx->mapping && is_mapping_rest(arg)) {
		if (append_item(ctx->mapping, arg) < 0)
			ctx->failed = true;
		return 0;
	}
	ctx->mapping = !strncmp(arg, "uidmapping=", 11) ? &cfg->uidmapping
		       : !strncmp(arg, "gidmapping=", 11) ? &cfg->gidmapping
							   : NULL;
	if (apply_option(cfg, arg, ctx->err, ctx->errlen) < 0)
		ctx->failed = true;
	return 0;
}

void ovl_config_init(struct ovl_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->squash_to_uid = cfg->squash_to_gid = -1;
	cfg->uidmap.overflow = cfg->gidmap.overflow = 65534; /* the kernel's default; ovl_fs_open reads the real ones */
	cfg->threaded = true;
	cfg->fsync = true;
	cfg->writeback = true;
	cfg->timeout = 1e9; /* effectively forever: every change goes through us */
}

void ovl_config_free(struct ovl_config *cfg)
{
	free(cfg->source);
	free(cfg->mountpoint);
	free(cfg->lowerdir);
	free(cfg->upperdir);
	free(cfg->workdir);
	free(cfg->plugins);
	free(cfg->uidmapping);
	free(cfg->gidmapping);
	free(cfg->kernel_opts);
	fuse_opt_free_args(&cfg->fuse_args);
}

int ovl_options_parse(int argc, char **argv, struct ovl_config *cfg, char *err, size_t errlen)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct parse_ctx ctx = { .cfg = cfg, .err = err, .errlen = errlen };
	err[0] = '\0';
	int res = fuse_opt_parse(&args, &ctx, NULL, opt_proc);
	fuse_opt_free_args(&args);
	if (res < 0 && !ctx.failed) {
		snprintf(err, errlen, "command line: cannot parse");
		ctx.failed = true;
	}
	if (!ctx.failed && !cfg->show_help && !cfg->show_version) {
		if (ctx.npositional == 0) {
			snprintf(err, errlen, "mountpoint: missing (usage: %s [-o OPTIONS] [SOURCE] MOUNTPOINT)",
				 OVL_PROGRAM);
			ctx.failed = true;
		} else if (cfg->lowerdir == NULL || cfg->lowerdir[0] == '\0') {
			snprintf(err, errlen, "lowerdir: missing (required)");
			ctx.failed = true;
		} else if ((cfg->upperdir != NULL) != (cfg->workdir != NULL)) {
			snprintf(err, errlen, cfg->upperdir ? "upperdir: given without workdir"
							    : "workdir: given without upperdir");
			ctx.failed = true;
		} else if (parse_mapping("uidmapping", cfg->uidmapping, &cfg->uidmap, err, errlen) < 0 ||
			   parse_mapping("gidmapping", cfg->gidmapping, &cfg->gidmap, err, errlen) < 0) {
			ctx.failed = true;
		}
	}
	if (ctx.npositional > 0) {
		cfg->mountpoint = ctx.positional[ctx.npositional - 1];
		if (ctx.npositional == 2)
			cfg->source = ctx.positional[0];
	}
	if (ctx.failed)
		return -1;

	/* 1.10's defaults: permission checks are the kernel's. */
	const char *defaults[] = { "default_permissions", "noatime", geteuid() == 0 ? "allow_other" : NULL,
				   geteuid() == 0 ? "suid" : NULL };
	for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
		if (defaults[i] && !kernel_opt_given(cfg, defaults[i]) && append_kernel_opt(cfg, defaults[i]) < 0)
			return -1;
	if (cfg->upperdir == NULL && !cfg->read_only && append_kernel_opt(cfg, "ro") < 0)
		return -1;
	if (append_kernel_opt(cfg, "fsname=" OVL_PROGRAM ",subtype=" OVL_PROGRAM) < 0)
		return -1;
	return 0;
}

void ovl_free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int ovl_split_layers(const char *spec, char ***out, size_t *count)
{
	size_t len = strlen(spec), n = 0, cap = 4;
	char **v = calloc(cap, sizeof *v);
	char *cur = malloc(len + 1);
	size_t cl = 0;
	if (v == NULL || cur == NULL)
		goto nomem;
	for (size_t i = 0;; i++) {
		char c = spec[i];
		if (c == '\\' && spec[i + 1] != '\0') {
			cur[cl++] = spec[++i];
			continue;
		}
		if (c != ':' && c != '\0') {
			cur[cl++] = c;
			continue;
		}
		if (cl == 0) {
			free(cur);
			ovl_free_strv(v, n);
			return -EINVAL; /* empty entry */
		}
		if (n == cap) {
			char **nv = realloc(v, (cap *= 2) * sizeof *v);
			if (nv == NULL)
				goto nomem;
			v = nv;
		}
		cur[cl] = '\0';
		if ((v[n++] = strdup(cur)) == NULL)
			goto nomem;
		cl = 0;
		if (c == '\0')
			break;
	}
	free(cur);
	*out = v;
	*count = n;
	return 0;
nomem:
	free(cur);
	ovl_free_strv(v, n);
	return -ENOMEM;
}

/* Whether `inner` is `outer` or lies below it (both resolved; NULL, a
 * plugin's layer, is within nothing). */
static bool path_within(const char *inner, const char *outer)
{
	if (inner == NULL || outer == NULL)
		return false;
	size_t ol = strlen(outer);
	if (strcmp(outer, "/") == 0)
		return true;
	return strncmp(inner, outer, ol) == 0 && (inner[ol] == '\0' || inner[ol] == '/');
}

static int check_dir(const char *role, const char *path, bool writable, char **resolved, struct stat *st,
		     char *err, size_t errlen)
{
	char *real = realpath(path, NULL);
	if (real == NULL) {
		snprintf(err, errlen, "%s: %s: %s", path, role, strerror(errno));
		return -1;
	}
	const char *why = stat(real, st) < 0 ? strerror(errno) : !S_ISDIR(st->st_mode) ? "not a directory" : NULL;
	if (why) {
		snprintf(err, errlen, "%s: %s: %s", path, role, why);
		free(real);
		return -1;
	}
	if (access(real, writable ? R_OK | W_OK | X_OK : R_OK | X_OK) < 0) {
		snprintf(err, errlen, "%s: %s: %s", path, role, strerror(errno));
		free(real);
		return -1;
	}
	*resolved = real;
	return 0;
}

int ovl_options_check_paths(const struct ovl_config *cfg, char *err, size_t errlen)
{
	char **lowers = NULL, *upper = NULL, *work = NULL, *mnt = NULL;
	size_t nlowers = 0;
	struct stat st, ust, wst;
	int res = -1;

	int r = ovl_split_layers(cfg->lowerdir, &lowers, &nlowers);
	if (r < 0) {
		snprintf(err, errlen, "lowerdir: %s", r == -EINVAL ? "empty layer path" : strerror(-r));
		return -1;
	}
	char **real_lowers = calloc(nlowers, sizeof *real_lowers);
	if (real_lowers == NULL)
		goto out;
	for (size_t i = 0; i < nlowers; i++) {
		if (ovl_plugin_spec_is(lowers[i])) {
			struct ovl_plugin_spec spec; /* its plugin checks the rest (fs.c) */
			if (ovl_plugin_spec_parse(lowers[i], &spec) < 0) {
				snprintf(err, errlen, "%s: lowerdir: want //NAME/DATA/PATH (PATH absolute)", lowers[i]);
				goto out;
			}
			ovl_plugin_spec_free(&spec);
			continue;
		}
		if (check_dir("lowerdir", lowers[i], false, &real_lowers[i], &st, err, errlen) < 0)
			goto out;
	}
	if (cfg->upperdir) {
		if (ovl_plugin_spec_is(cfg->upperdir) || ovl_plugin_spec_is(cfg->workdir)) {
			bool up = ovl_plugin_spec_is(cfg->upperdir);
			snprintf(err, errlen, "%s: %s: plugin layers (//NAME/DATA/PATH) are lower layers only",
				 up ? cfg->upperdir : cfg->workdir, up ? "upperdir" : "workdir");
			goto out;
		}
		if (check_dir("upperdir", cfg->upperdir, true, &upper, &ust, err, errlen) < 0 ||
		    check_dir("workdir", cfg->workdir, true, &work, &wst, err, errlen) < 0)
			goto out;
		if (ust.st_dev != wst.st_dev) {
			snprintf(err, errlen, "%s: workdir: not on the same filesystem as upperdir", cfg->workdir);
			goto out;
		}
		if (path_within(upper, work) || path_within(work, upper)) {
			snprintf(err, errlen, "%s: workdir: upperdir and workdir must be separate trees", cfg->workdir);
			goto out;
		}
		for (size_t i = 0; i < nlowers; i++) {
			/* the kernel refuses this too (ELOOP, "overlapping lowerdir path") */
			const char *outer = path_within(real_lowers[i], upper) ? cfg->upperdir
					    : path_within(real_lowers[i], work) ? cfg->workdir
										 : NULL;
			if (outer) {
				snprintf(err, errlen, "%s: lowerdir: inside %s %s (overlapping layers)", lowers[i],
					 outer == cfg->upperdir ? "upperdir" : "workdir", outer);
				goto out;
			}
			const char *bad = path_within(upper, real_lowers[i]) ? cfg->upperdir
					  : path_within(work, real_lowers[i]) ? cfg->workdir
									       : NULL;
			if (bad) {
				snprintf(err, errlen, "%s: %s: inside lowerdir %s", bad,
					 bad == cfg->upperdir ? "upperdir" : "workdir", lowers[i]);
				goto out;
			}
		}
	}
	if (strncmp(cfg->mountpoint, "/dev/fd/", 8) != 0) {
		mnt = realpath(cfg->mountpoint, NULL);
		if (mnt == NULL || stat(mnt, &st) < 0) {
			snprintf(err, errlen, "%s: mountpoint: %s", cfg->mountpoint, strerror(errno));
			goto out;
		}
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s: mountpoint: not a directory", cfg->mountpoint);
			goto out;
		}
		for (size_t i = 0; i < nlowers; i++)
			if (path_within(real_lowers[i], mnt) && strcmp(real_lowers[i], "/") != 0) {
				snprintf(err, errlen, "%s: lowerdir: inside the mountpoint", lowers[i]);
				goto out;
			}
		if (upper && (path_within(upper, mnt) || path_within(work, mnt))) {
			snprintf(err, errlen, "%s: %s: inside the mountpoint",
				 path_within(upper, mnt) ? cfg->upperdir : cfg->workdir,
				 path_within(upper, mnt) ? "upperdir" : "workdir");
			goto out;
		}
	}
	res = 0;
out:
	if (real_lowers)
		ovl_free_strv(real_lowers, nlowers);
	ovl_free_strv(lowers, nlowers);
	free(upper);
	free(work);
	free(mnt);
	return res;
}

void ovl_print_usage(const char *argv0)
{
	printf("usage: %s [-f] [-d] [-o OPTIONS]... [SOURCE] MOUNTPOINT\n\n"
	       "  -o lowerdir=A:B:...    read-only layers, top-most first (required)\n"
	       "  -o upperdir=U,workdir=W  writable layer and its scratch directory\n"
	       "  -o timeout=S           entry and attribute cache time\n"
	       "  -o threaded=0|1        single- or multi-threaded loop\n"
	       "  -o squash_to_root, squash_to_uid=N, squash_to_gid=N\n"
	       "  -o static_nlink, noacl, noxattrs=1, redirect_dir=off\n"
	       "  -f  stay in the foreground    -d  trace every request\n"
	       "  -h  this help                 -V  version\n"
	       "See fuse-overlayfs(1).\n",
	       argv0);
}
