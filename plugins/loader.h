/* What the core asks of the plugin loader (plugins/loader.c): the plugins of
 * -o plugins= (or of the plugin directory) loaded, and the lowerdir entries
 * "//NAME/DATA/PATH" made into layers whose ops forward to the plugin's. */
#ifndef OVL_PLUGINS_LOADER_H
#define OVL_PLUGINS_LOADER_H

#include <stdbool.h>
#include <stddef.h>

#include "../layers/layer.h"

/* The most layers one entry may stand for: the kernel overlay's bound on
 * lower layers (OVL_MAX_STACK), as oci's layouts (OCI_LAYOUT_MAX_LAYERS);
 * images have up to 127 (Docker's bound). */
#define OVL_PLUGIN_MAX_LAYERS 500

struct ovl_plugins;

/* A lowerdir entry "//NAME/DATA/PATH" taken apart: NAME not empty, DATA up
 * to the next '/' (may be empty), PATH the rest from that '/' (absolute).
 * One allocation, name's. */
struct ovl_plugin_spec {
	char *name, *data, *path;
};

/* Whether entry selects a plugin (begins with "//"). */
bool ovl_plugin_spec_is(const char *entry);
/* 0, -EINVAL (not of that form) or -ENOMEM. */
int ovl_plugin_spec_parse(const char *entry, struct ovl_plugin_spec *spec);
void ovl_plugin_spec_free(struct ovl_plugin_spec *spec);

/* Where plugins are without -o plugins=: $FUSE_OVERLAYFS_PLUGIN_DIR, else
 * the installed directory. */
const char *ovl_plugins_dir(void);
/* Whether plugins can run in this process: not in a static daemon (no
 * program interpreter), where dlopen brings a second libc whose errno,
 * heap and thread state the daemon's never see. */
bool ovl_plugins_runnable(void);
/* The dynamic build of the daemon a static one hands plugin mounts to:
 * $FUSE_OVERLAYFS_PLUGIN_DAEMON, else the installed one. */
const char *ovl_plugins_daemon(void);
/* Loads the plugins of list ("A.so:B.so"; a name without '/' is in the
 * plugin directory), or with list NULL every *.so of the plugin directory
 * (none if it is missing).  0, or -1 with one line naming the plugin in err. */
int ovl_plugins_load(const char *list, struct ovl_plugins **out, char *err, size_t errlen);
/* Opens the layers of the entry "//NAME/DATA/PATH" into out (room for
 * OVL_PLUGIN_MAX_LAYERS), top first: how many, or -1 with one line in err.
 * Each has its ops, caps, dev (one of ours, distinct), data, path and root
 * handle set; the layers are released by ovl_plugins_free. */
int ovl_plugins_open_layers(struct ovl_plugins *p, const char *entry, struct ovl_layer *out, char *err,
			    size_t errlen);
/* Releases every layer opened (their root handles closed before) and
 * unloads the plugins.  NULL: nothing. */
void ovl_plugins_free(struct ovl_plugins *p);

#endif
