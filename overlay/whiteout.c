/* Every whiteout and opaque-directory format (COMPAT.md): recognised here, in
 * one place, in every layer.  Writing them belongs to issue "writable". */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "overlay.h"

#define WH_PREFIX ".wh."
#define WH_META_PREFIX ".wh..wh."
#define WH_OPAQUE_MARKER ".wh..wh..opq"

static const char *const opaque_xattrs[] = {
	"trusted.overlay.opaque",
	"user.overlay.opaque",
	"user.fuseoverlayfs.opaque",
};

bool ovl_name_is_reserved(const char *name)
{
	return strncmp(name, WH_PREFIX, sizeof WH_PREFIX - 1) == 0;
}

const char *ovl_whiteout_target(const char *name)
{
	if (!ovl_name_is_reserved(name) || strncmp(name, WH_META_PREFIX, sizeof WH_META_PREFIX - 1) == 0)
		return NULL;
	const char *target = name + sizeof WH_PREFIX - 1;
	if (target[0] == '\0' || strcmp(target, ".") == 0 || strcmp(target, "..") == 0)
		return NULL;
	return target;
}

bool ovl_name_is_opaque_marker(const char *name)
{
	return strcmp(name, WH_OPAQUE_MARKER) == 0;
}

bool ovl_stat_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && major(st->st_rdev) == 0 && minor(st->st_rdev) == 0;
}

bool ovl_opaque_xattr_name(const char *xname)
{
	for (size_t i = 0; i < sizeof opaque_xattrs / sizeof opaque_xattrs[0]; i++)
		if (strcmp(xname, opaque_xattrs[i]) == 0)
			return true;
	return false;
}

/* One listxattr, and a getxattr only for a name that is present. */
static int opaque_by_xattr(struct ovl_layer *layer, int dirfd)
{
	char small[1024], *list = small;
	ssize_t len = layer->ops->listxattrat(layer, dirfd, NULL, small, sizeof small);
	if (len < 0 && errno == ERANGE) {
		len = layer->ops->listxattrat(layer, dirfd, NULL, NULL, 0);
		if (len > 0 && (list = malloc((size_t)len)) != NULL)
			len = layer->ops->listxattrat(layer, dirfd, NULL, list, (size_t)len);
		else if (len > 0)
			return -ENOMEM;
	}
	if (len < 0) {
		int e = errno;
		if (list != small)
			free(list);
		return (e == ENOTSUP || e == ENODATA) ? 0 : -e;
	}
	int res = 0;
	for (ssize_t off = 0; off < len && res == 0; off += (ssize_t)strlen(list + off) + 1) {
		if (!ovl_opaque_xattr_name(list + off))
			continue;
		char v[2];
		ssize_t vl = layer->ops->getxattrat(layer, dirfd, NULL, list + off, v, sizeof v);
		res = vl == 1 && v[0] == 'y';
	}
	if (list != small)
		free(list);
	return res;
}

int ovl_layer_dir_is_opaque(struct ovl_layer *layer, int dirfd)
{
	int res = opaque_by_xattr(layer, dirfd);
	if (res != 0)
		return res;
	struct stat st;
	if (layer->ops->statat(layer, dirfd, WH_OPAQUE_MARKER, &st) == 0)
		return 1;
	return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
}

int ovl_has_whiteout_file(struct ovl_layer *layer, int dirfd, const char *name)
{
	char wh[NAME_MAX + 1];
	struct stat st;
	if ((size_t)snprintf(wh, sizeof wh, WH_PREFIX "%s", name) >= sizeof wh)
		return 0; /* such a whiteout name cannot exist */
	if (layer->ops->statat(layer, dirfd, wh, &st) == 0)
		return 1;
	return (errno == ENOENT || errno == ENAMETOOLONG) ? 0 : -errno;
}
