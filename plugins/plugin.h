/* The plugin interface of fuse-overlayfs: data sources for lower layers that
 * are not directories (an OCI layer blob, an image), selected by lowerdir
 * entries "//NAME/DATA/PATH" and loaded from -o plugins=A.so:B.so or, without
 * that option, from every .so in the installed plugin directory.
 *
 * It is layers/layer.h's data-source interface for code outside the tree:
 * a layer hands out int handles for the objects it opens (its root has one
 * from the start), answers for one name below a directory handle, lists a
 * directory in one pass, and reads a file at an offset.  Every call returns
 * -1 with errno set on failure, as the syscall it stands for.  The daemon is
 * multi-threaded: every op may be called from several threads at once.
 *
 * A plugin is a shared object exporting OVL_PLUGIN_ENTRY_SYMBOL, a function
 * returning its struct ovl_plugin.  man fuse-overlayfs-plugin(3). */
#ifndef FUSE_OVERLAYFS_PLUGIN_H
#define FUSE_OVERLAYFS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Raised on any change of the structures below; the daemon refuses a
 * plugin built against another version. */
#define OVL_PLUGIN_API_VERSION 1
#define OVL_PLUGIN_ENTRY_SYMBOL "fuse_overlayfs_plugin_v1"

/* One entry of a listing: type is a DT_* value; nonzero stops the pass. */
typedef int (*ovl_plugin_list_fn)(void *arg, const char *name, uint8_t type, ino_t ino);

/* What a layer does; layer is the plugin's own pointer from open_layers. */
struct ovl_plugin_layer_ops {
	/* A handle of name below directory handle dir ("." for dir itself);
	 * flags are O_RDONLY plus O_DIRECTORY when a directory is wanted.
	 * Never follows a symlink of the layer (ELOOP). */
	int (*openat)(void *layer, int dir, const char *name, int flags);
	int (*close)(void *layer, int h);
	/* name NULL: the object of dir itself.  st_dev is replaced by the
	 * daemon's own number for the layer; st_ino must be unique within it. */
	int (*statat)(void *layer, int dir, const char *name, struct stat *st);
	/* Each entry of directory h once, "." and ".." left out or not; 0 at the
	 * end, fn's nonzero answer, or -1 with errno. */
	int (*list)(void *layer, int h, ovl_plugin_list_fn fn, void *arg);
	/* Up to size bytes of the open file h at off; fewer only at its end. */
	ssize_t (*read)(void *layer, int h, void *buf, size_t size, off_t off);
	ssize_t (*readlinkat)(void *layer, int dir, const char *name, char *buf, size_t size);
	/* xattrs of name below dir (NULL: dir itself), as getxattr(2) and
	 * listxattr(2): size 0 asks for the length. */
	ssize_t (*getxattrat)(void *layer, int dir, const char *name, const char *xname, void *buf, size_t size);
	ssize_t (*listxattrat)(void *layer, int dir, const char *name, char *buf, size_t size);
	/* May be NULL: statfs of the mount then counts nothing for it. */
	int (*statfs)(void *layer, struct statvfs *st);
	/* The mount goes: free the layer. */
	void (*release)(void *layer);
};

/* One layer a lowerdir entry stands for. */
struct ovl_plugin_layer {
	void *layer;                           /* the plugin's own */
	int root;                              /* handle of its root directory */
	const struct ovl_plugin_layer_ops *ops;
	char *name;                            /* for messages (malloc'ed; the daemon frees it) */
};

struct ovl_plugin {
	uint32_t api_version;                  /* OVL_PLUGIN_API_VERSION */
	const char *name;                      /* NAME of //NAME/DATA/PATH */
	/* Opens the layers "//NAME/DATA/PATH" stands for, top first, into out
	 * (room for max); returns how many (at least 1), or -1 with a one-line
	 * reason naming the blob or path in err.  DATA may be empty. */
	int (*open_layers)(const char *data, const char *path, struct ovl_plugin_layer *out, size_t max, char *err,
			   size_t errlen);
};

/* The function every plugin exports under OVL_PLUGIN_ENTRY_SYMBOL. */
typedef const struct ovl_plugin *(*ovl_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
