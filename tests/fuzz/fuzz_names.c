/* libFuzzer target: names with a meaning to the overlay, from hostile layers
 * and callers.  The first byte picks one:
 *   0: the rest as a name: whiteout.c's recognisers (.wh.NAME, .wh..wh.
 *      metadata, the .wh..wh..opq marker) against plain re-implementations,
 *      and that a name one can create, once written as .wh.NAME (when that
 *      fits in NAME_MAX), is recognised as a whiteout of exactly that name;
 *   1: the rest as up to four layers of directory entries ('/' between
 *      entries, each a control byte then a name): listing.c's listing
 *      (whiteouts by name and char 0/0, opaque markers, directories merged
 *      down until a non-directory or whiteout) against a plain model: the
 *      same names, each once, sorted, each from the right layer with the
 *      right type and lower layers, no whiteout or marker shown, and every
 *      name found again by ovl_listing_index (absent ones not);
 *   2: the rest as an xattr name for each stat-override kind of a layer:
 *      the internal and override names recognised as a re-implementation
 *      says; a name a caller may ask for is stored under a name that is
 *      neither internal nor an override one and is listed back as itself;
 *      a stored name that is listed is read again from itself;
 *   3: the rest as a listxattr value: ovl_xattr_filter_list keeps exactly
 *      the whole entries that are not internal, in order. */
#include "config.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <linux/limits.h>

#include "../../overlay/overlay.h"
#include "../../overlay/readdir.h"

/* whiteout.c's and xattr.c's calls into the rest of the daemon, never
 * reached by their pure parts */
int ovl_rename(struct ovl_fs *fs, int olddirfd, const char *old, int newdirfd, const char *new, unsigned flags)
{
	(void)fs, (void)olddirfd, (void)old, (void)newdirfd, (void)new, (void)flags;
	abort();
}

int ovl_work_discard(struct ovl_fs *fs, int dirfd, const char *name)
{
	(void)fs, (void)dirfd, (void)name;
	abort();
}

int ovl_work_remove(struct ovl_fs *fs, const char *name)
{
	(void)fs, (void)name;
	abort();
}

void ovl_work_tempname(struct ovl_fs *fs, char buf[OVL_TEMPNAME_MAX])
{
	(void)fs, (void)buf;
	abort();
}

struct ovl_node_rare *ovl_node_rare(struct ovl_node *node)
{
	(void)node;
	abort();
}

struct ovl_node *ovl_node_get(struct ovl_fs *fs, fuse_ino_t nodeid)
{
	(void)fs, (void)nodeid;
	abort();
}

int ovl_dir_fd_get(struct ovl_fs *fs, struct ovl_node *node, uint32_t i)
{
	(void)fs, (void)node, (void)i;
	abort();
}

void ovl_dir_fd_put(struct ovl_node *node)
{
	(void)node;
	abort();
}

int ovl_copy_up_in_place(struct ovl_fs *fs, struct ovl_node *node, bool with_data)
{
	(void)fs, (void)node, (void)with_data;
	abort();
}

int ovl_node_at(struct ovl_fs *fs, struct ovl_node *node, ovl_at_fn fn, void *arg)
{
	(void)fs, (void)node, (void)fn, (void)arg;
	abort();
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- 0: one name ---- */

/* What .wh.NAME whites out (COMPAT.md), or NULL. */
static const char *reference_target(const char *name)
{
	if (!has_prefix(name, ".wh.") || has_prefix(name, ".wh..wh."))
		return NULL;
	const char *t = name + 4;
	return strcmp(t, "") && strcmp(t, ".") && strcmp(t, "..") ? t : NULL;
}

static void check_name(const char *name)
{
	const char *target = ovl_whiteout_target(name);
	bool marker = ovl_name_is_opaque_marker(name);
	if (ovl_name_is_reserved(name) != has_prefix(name, ".wh.") || target != reference_target(name) ||
	    marker != (strcmp(name, ".wh..wh..opq") == 0) || (target && ovl_name_is_reserved(target)) ||
	    (marker && (target || !ovl_name_is_reserved(name))))
		abort();
	/* a name one may create: its .wh. file whites out exactly it */
	if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") || ovl_name_is_reserved(name) ||
	    strlen(name) > NAME_MAX)
		return;
	static struct ovl_fs files = { .whiteout_files = true }, chars = { .whiteout_files = false };
	bool fits = ovl_whiteout_fits(&files, name);
	if (!ovl_whiteout_fits(&chars, name) || fits != (strlen(name) + 4 <= NAME_MAX))
		abort();
	if (!fits)
		return;
	char wh[NAME_MAX + 1] = ".wh.";
	strcat(wh, name);
	target = ovl_whiteout_target(wh);
	if (target == NULL || strcmp(target, name) != 0 || ovl_name_is_opaque_marker(wh))
		abort();
}

/* ---- 1: a merged listing ---- */
#define LAYERS 4

struct model_ent {
	const char *key;
	uint32_t layer;
	uint8_t type;
	bool visible;
	bool closed;
	uint32_t nlower;
	uint32_t lower[LAYERS];
};

static struct model_ent *model_find(struct model_ent *m, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i].key, key) == 0)
			return &m[i];
	return NULL;
}

/* The merge as COMPAT.md and the kernel describe it, one name at a time. */
static size_t model_merge(struct ovl_raw_entry *raw[LAYERS], const size_t nraw[LAYERS], struct model_ent *m)
{
	size_t n = 0;
	for (uint32_t l = 0; l < LAYERS; l++) {
		bool opaque = false;
		for (int pass = 0; pass < 2; pass++) {
			for (size_t i = 0; i < nraw[l]; i++) {
				const struct ovl_raw_entry *r = &raw[l][i];
				if (!strcmp(r->name, ".") || !strcmp(r->name, ".."))
					continue;
				opaque |= strcmp(r->name, ".wh..wh..opq") == 0;
				const char *hidden = r->whiteout ? r->name : reference_target(r->name);
				if ((pass == 0) != (hidden == NULL) || (!hidden && has_prefix(r->name, ".wh.")))
					continue;
				const char *key = hidden ? hidden : r->name;
				struct model_ent *e = model_find(m, n, key);
				if (e == NULL) {
					m[n++] = (struct model_ent){ .key = key, .layer = l, .type = r->type,
								     .visible = !hidden };
				} else if (e->visible && e->type == DT_DIR && !e->closed) {
					if (hidden || r->type != DT_DIR)
						e->closed = true;
					else
						e->lower[e->nlower++] = l;
				}
			}
		}
		if (opaque)
			break;
	}
	return n;
}

static void check_merge(const uint8_t *data, size_t size)
{
	static const uint8_t types[] = { DT_DIR, DT_REG, DT_LNK, DT_DIR, DT_CHR, DT_FIFO, DT_SOCK, DT_UNKNOWN };
	struct ovl_raw_entry *raw[LAYERS];
	size_t nraw[LAYERS] = { 0 };
	char *names = malloc(size + 1);
	memcpy(names, data, size);
	names[size] = '\0';
	for (int l = 0; l < LAYERS; l++)
		raw[l] = calloc(size + 1, sizeof *raw[l]);
	/* entries: a control byte (layer, type, char 0/0, length known) then the name */
	for (char *p = names, *end; p < names + size; p = end + 1) {
		end = memchr(p, '/', (size_t)(names + size - p));
		if (end == NULL)
			end = names + size;
		*end = '\0';
		if (p == end)
			continue;
		uint8_t c = (uint8_t)*p++;
		unsigned l = c % LAYERS;
		size_t len = strlen(p);
		if (len == 0 || len > NAME_MAX)
			continue;
		bool dup = false;
		for (size_t i = 0; i < nraw[l]; i++)
			dup |= strcmp(raw[l][i].name, p) == 0; /* a directory holds a name once */
		if (dup)
			continue;
		bool whiteout = c & 0x20;
		raw[l][nraw[l]++] = (struct ovl_raw_entry){ .name = p,
							    .len = c & 0x40 ? (uint16_t)len : 0,
							    .type = whiteout ? DT_CHR : types[(c >> 2) & 7],
							    .ino = (ino_t)(p - names + 1),
							    .whiteout = whiteout };
	}

	struct ovl_merge *merge = ovl_merge_new();
	if (merge == NULL)
		abort();
	bool stopped = false;
	for (uint32_t l = 0; l < LAYERS; l++) {
		int res = ovl_merge_layer(merge, l, raw[l], nraw[l]);
		bool opaque = false;
		for (size_t i = 0; i < nraw[l]; i++)
			opaque |= strcmp(raw[l][i].name, ".wh..wh..opq") == 0;
		if (res != (stopped ? 1 : opaque))
			abort();
		stopped |= opaque;
	}
	struct ovl_listing *list = ovl_merge_finish(merge);
	if (list == NULL)
		abort();

	struct model_ent *m = calloc(4 * size + 1, sizeof *m);
	size_t nm = model_merge(raw, nraw, m), visible = 0;
	for (size_t i = 0; i < nm; i++)
		visible += m[i].visible;
	if (ovl_listing_count(list) != visible)
		abort();
	for (size_t i = 0; i < list->n; i++) {
		const struct ovl_dirent *d = &list->ents[i];
		const char *name = dirent_name(list, d);
		const struct model_ent *e = model_find(m, nm, name);
		if (e == NULL || !e->visible || ovl_name_is_reserved(name) || d->name_len != strlen(name) ||
		    d->layer != e->layer || d->type != e->type || dirent_nlower(list, d) != e->nlower ||
		    (i > 0 && strcmp(dirent_name(list, &list->ents[i - 1]), name) >= 0) ||
		    ovl_listing_index(list, name) != (ssize_t)i)
			abort();
		for (uint32_t k = 0; k < e->nlower; k++)
			if (list->lowers[d->lower_off + k] != e->lower[k])
				abort();
	}
	for (size_t i = 0; i < nm; i++)
		if (!m[i].visible && ovl_listing_index(list, m[i].key) != -1)
			abort();
	ovl_listing_unref(list);
	free(m);
	for (int l = 0; l < LAYERS; l++)
		free(raw[l]);
	free(names);
}

/* ---- 2, 3: xattr names ---- */
static bool reference_internal(const char *name)
{
	return has_prefix(name, "trusted.overlay.") || has_prefix(name, "user.overlay.") ||
	       has_prefix(name, "user.fuseoverlayfs.");
}

static bool reference_override(const char *name)
{
	return !strcmp(name, "security.fuseoverlayfs.override_stat") || !strcmp(name, "user.containers.override_stat") ||
	       !strcmp(name, "user.fuseoverlayfs.override_stat");
}

static void check_xattr_name(const char *name)
{
	if (ovl_xattr_is_internal(name) != reference_internal(name) ||
	    ovl_override_xattr_name(name) != reference_override(name))
		abort();
	if (strlen(name) > XATTR_NAME_MAX)
		return; /* the kernel refuses it before asking us, and never lists one */
	for (int kind = OVL_OVERRIDE_NONE; kind <= OVL_OVERRIDE_USER; kind++) {
		struct ovl_layer layer = { .override_kind = (uint8_t)kind };
		char buf[XATTR_NAME_MAX + 1], again[XATTR_NAME_MAX + 1];
		/* asked by a caller (getxattr, setxattr): xattr.c refuses these first */
		if (!reference_internal(name) && !reference_override(name)) {
			const char *stored = ovl_override_stored_xattr(&layer, name, buf, sizeof buf);
			if (stored) {
				const char *shown = ovl_override_shown_xattr(&layer, stored);
				if (strlen(stored) > XATTR_NAME_MAX || reference_internal(stored) ||
				    reference_override(stored) || shown == NULL || strcmp(shown, name) != 0)
					abort();
			}
		}
		/* stored in a layer and listed: read again by the name shown */
		if (!reference_internal(name)) {
			const char *shown = ovl_override_shown_xattr(&layer, name);
			if (shown) {
				const char *stored = ovl_override_stored_xattr(&layer, shown, again, sizeof again);
				if (reference_internal(shown) || reference_override(shown) || stored == NULL ||
				    strcmp(stored, name) != 0)
					abort();
			}
		}
	}
}

static void check_xattr_list(const uint8_t *data, size_t size)
{
	char *list = malloc(size ? size : 1), *want = malloc(size ? size : 1);
	memcpy(list, data, size);
	size_t wn = 0;
	for (size_t off = 0; off < size;) {
		const char *end = memchr(list + off, '\0', size - off);
		if (end == NULL)
			break;
		size_t n = (size_t)(end - (list + off));
		if (!reference_internal(list + off)) {
			memcpy(want + wn, list + off, n + 1);
			wn += n + 1;
		}
		off += n + 1;
	}
	size_t got = ovl_xattr_filter_list(list, size);
	if (got != wn || memcmp(list, want, wn) != 0)
		abort();
	free(list);
	free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	char *text = strndup((const char *)data + 1, size - 1);
	switch (data[0] % 4) {
	case 0:
		check_name(text);
		break;
	case 1:
		check_merge(data + 1, size - 1);
		break;
	case 2:
		check_xattr_name(text);
		break;
	default:
		check_xattr_list(data + 1, size - 1);
		break;
	}
	free(text);
	return 0;
}
