/* The overlay's own xattr names, in one table: what we write, what we read
 * from layers, and what the merged view hides (COMPAT.md).  Every file that
 * names one of them takes it from here. */
#include "config.h"

#include <string.h>

#include "overlay.h"

/* Prefixes the merged view never shows: the kernel overlay's and 1.10's. */
static const char *const internal_prefixes[] = {
	"trusted.overlay.",
	"user.overlay.",
	"user.fuseoverlayfs.",
};

/* An opaque directory, in every spelling read; the first two are written. */
const char *const ovl_opaque_xattrs[OVL_OPAQUE_XATTRS] = {
	"trusted.overlay.opaque",
	"user.overlay.opaque",
	"user.fuseoverlayfs.opaque",
};

/* Where stat overrides are kept, by kind (xattr_permissions, override.c). */
static const char *const override_xattrs[] = {
	[OVL_OVERRIDE_PRIVILEGED] = "security.fuseoverlayfs.override_stat",
	[OVL_OVERRIDE_CONTAINERS] = "user.containers.override_stat",
	[OVL_OVERRIDE_USER] = "user.fuseoverlayfs.override_stat",
};

const char *const ovl_origin_xattr_trusted = "trusted.overlay.fuseoverlayfs.origin";
const char *const ovl_origin_xattr_user = "user.overlay.fuseoverlayfs.origin";

bool ovl_xattr_is_internal(const char *name)
{
	for (size_t i = 0; i < sizeof internal_prefixes / sizeof internal_prefixes[0]; i++)
		if (strncmp(name, internal_prefixes[i], strlen(internal_prefixes[i])) == 0)
			return true;
	return false;
}

const char *ovl_override_xattr(enum ovl_override_kind kind)
{
	return kind == OVL_OVERRIDE_NONE ? NULL : override_xattrs[kind];
}

bool ovl_override_xattr_name(const char *name)
{
	for (size_t k = OVL_OVERRIDE_PRIVILEGED; k < sizeof override_xattrs / sizeof override_xattrs[0]; k++)
		if (strcmp(name, override_xattrs[k]) == 0)
			return true;
	return false;
}
