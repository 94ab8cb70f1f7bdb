/* Stat overrides (xattr_permissions=1|2, COMPAT.md): owner, mode and type of
 * an object kept in an xattr instead of the inode, for layers written without
 * the privileges to chown or mknod (rootless image unpacking, containers/
 * storage's force_mask).  Each layer says by its root's xattr which name it
 * uses; the upper one by the option.  The value, "UID:GID:MODE[:TYPE]", comes
 * from hostile layers: it is parsed strictly, and a bad one is ignored whole
 * (with one log line), never trusted in part. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "../layers/upper.h"
#include "ops.h"

/* ---- the value ---- */
static bool parse_num(const char **s, unsigned base, uint64_t max, uint64_t *out)
{
	const char *p = *s;
	uint64_t n = 0;
	if (!(*p >= '0' && *p < '0' + (int)base))
		return false;
	for (; *p >= '0' && *p < '0' + (int)base; p++)
		if ((n = n * base + (uint64_t)(*p - '0')) > max)
			return false;
	*s = p;
	*out = n;
	return true;
}

/* "-MAJOR-MINOR" of a block or char type */
static bool parse_device(const char *p, dev_t *rdev)
{
	uint64_t major, minor;
	if (*p++ != '-' || !parse_num(&p, 10, UINT32_MAX, &major) || *p++ != '-' ||
	    !parse_num(&p, 10, UINT32_MAX, &minor) || *p != '\0')
		return false;
	*rdev = makedev((unsigned)major, (unsigned)minor);
	return true;
}

static const struct {
	const char *name;
	mode_t type;
} type_names[] = {
	{ "dir", S_IFDIR }, { "file", S_IFREG }, { "symlink", S_IFLNK }, { "pipe", S_IFIFO },
	{ "socket", S_IFSOCK }, { "block", S_IFBLK }, { "char", S_IFCHR },
};

static bool parse_type(const char *p, struct ovl_override *o)
{
	for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
		size_t n = strlen(type_names[i].name);
		if (strncmp(p, type_names[i].name, n) != 0)
			continue;
		o->mode |= type_names[i].type;
		if (S_ISBLK(o->mode) || S_ISCHR(o->mode))
			return parse_device(p + n, &o->rdev);
		return p[n] == '\0';
	}
	return false;
}

int ovl_override_parse(const char *value, size_t len, mode_t disk_type, struct ovl_override *o)
{
	char v[OVL_OVERRIDE_MAX + 1];
	uint64_t uid, gid, mode;
	if (len == 0 || len > OVL_OVERRIDE_MAX || memchr(value, '\0', len))
		return -EINVAL;
	memcpy(v, value, len);
	v[len] = '\0';
	const char *p = v;
	if (!parse_num(&p, 10, UINT32_MAX, &uid) || *p++ != ':' || !parse_num(&p, 10, UINT32_MAX, &gid) ||
	    *p++ != ':' || !parse_num(&p, 8, 07777, &mode))
		return -EINVAL;
	*o = (struct ovl_override){ .uid = (uint32_t)uid, .gid = (uint32_t)gid, .mode = (mode_t)mode };
	if (*p == '\0') {
		o->mode |= disk_type & S_IFMT; /* no type: the object's own */
		return 0;
	}
	return *p++ == ':' && parse_type(p, o) ? 0 : -EINVAL;
}

int ovl_override_format(const struct ovl_override *o, char *buf, size_t size)
{
	const char *type = "file";
	for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
		if ((o->mode & S_IFMT) == type_names[i].type)
			type = type_names[i].name;
	if (S_ISBLK(o->mode) || S_ISCHR(o->mode))
		return snprintf(buf, size, "%u:%u:0%o:%s-%u-%u", o->uid, o->gid, o->mode & 07777, type,
				major(o->rdev), minor(o->rdev));
	return snprintf(buf, size, "%u:%u:0%o:%s", o->uid, o->gid, o->mode & 07777, type);
}

/* ---- layers ---- */
static enum ovl_override_kind root_kind(struct ovl_layer *l)
{
	char v[OVL_OVERRIDE_MAX];
	for (int k = OVL_OVERRIDE_PRIVILEGED; k <= OVL_OVERRIDE_USER; k++)
		if (l->ops->getxattrat(l, l->root_fd, NULL, ovl_override_xattr(k), v, sizeof v) >= 0)
			return (enum ovl_override_kind)k;
	return OVL_OVERRIDE_NONE;
}

int ovl_override_setup(struct ovl_fs *fs, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < fs->nlayers; i++)
		fs->layers[i].override_kind = root_kind(&fs->layers[i]);
	unsigned want = fs->cfg->xattr_permissions;
	if (!fs->has_upper || want == 0)
		return 0;
	struct ovl_layer *upper = &fs->layers[0];
	/* mode 2 keeps the name of an upper that 1.10 made (user.fuseoverlayfs.*) */
	if (want == 1 || upper->override_kind != OVL_OVERRIDE_USER)
		upper->override_kind = want == 1 ? OVL_OVERRIDE_PRIVILEGED : OVL_OVERRIDE_CONTAINERS;
	char v[OVL_OVERRIDE_MAX];
	const char *name = ovl_override_xattr(upper->override_kind);
	if (upper->ops->getxattrat(upper, upper->root_fd, NULL, name, v, sizeof v) >= 0)
		return 0;
	/* the root carries the mark that tells this layer's kind to later mounts */
	struct stat st;
	if (fstat(upper->root_fd, &st) < 0)
		return -1;
	struct ovl_override o = { .uid = st.st_uid, .gid = st.st_gid, .mode = st.st_mode };
	int res = ovl_override_write(fs, upper->root_fd, NULL, &o);
	if (res < 0) {
		snprintf(err, errlen, "%s: upperdir: cannot set %s: %s", fs->cfg->upperdir, name, strerror(-res));
		return -1;
	}
	return 0;
}

int ovl_override_read(struct ovl_fs *fs, uint32_t layer, int dirfd, const char *name, const struct stat *st,
		      struct ovl_override *o)
{
	struct ovl_layer *l = &fs->layers[layer];
	char v[OVL_OVERRIDE_MAX + 1];
	if (l->override_kind == OVL_OVERRIDE_NONE || !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode)))
		return 0; /* only files and directories carry one, as in 1.10 */
	ssize_t len = l->ops->getxattrat(l, dirfd, name, ovl_override_xattr(l->override_kind), v, sizeof v);
	if (len < 0 && errno != ERANGE)
		return 0;
	if (len < 0 || ovl_override_parse(v, (size_t)len, st->st_mode, o) < 0) {
		ovl_log_once(&fs->logged_bad_override, OVL_WARN, "%s in layer %s (object '%s'): malformed, ignored",
			     ovl_override_xattr(l->override_kind), l->path, name ? name : ".");
		return 0;
	}
	return 1;
}

int ovl_override_write(struct ovl_fs *fs, int dirfd, const char *name, const struct ovl_override *o)
{
	struct ovl_layer *upper = &fs->layers[0];
	char v[OVL_OVERRIDE_MAX + 1];
	int len = ovl_override_format(o, v, sizeof v);
	return ovl_upper_setxattr(upper, dirfd, name, ovl_override_xattr(upper->override_kind), v, (size_t)len, 0);
}

void ovl_override_apply(const struct ovl_override *o, struct stat *st)
{
	st->st_uid = o->uid;
	st->st_gid = o->gid;
	st->st_mode = o->mode;
	if (S_ISBLK(o->mode) || S_ISCHR(o->mode))
		st->st_rdev = o->rdev;
}

/* ---- the override a node shows ---- */
void ovl_node_set_override(struct ovl_fs *fs, struct ovl_node *node, const struct ovl_override *o)
{
	struct ovl_node_rare *r = ovl_node_rare(node);
	if (r == NULL)
		return; /* no memory: the node shows its object as stored */
	pthread_mutex_lock(&fs->override_lock);
	r->override = *o;
	atomic_store(&r->has_override, true);
	pthread_mutex_unlock(&fs->override_lock);
}

bool ovl_node_get_override(struct ovl_fs *fs, const struct ovl_node *node, struct ovl_override *o)
{
	struct ovl_node_rare *r = atomic_load(&node->rare);
	if (r == NULL || !atomic_load(&r->has_override))
		return false; /* set once, never cleared: no lock needed to see none */
	pthread_mutex_lock(&fs->override_lock);
	*o = r->override;
	pthread_mutex_unlock(&fs->override_lock);
	return true;
}

void ovl_node_load_override(struct ovl_fs *fs, struct ovl_node *node, int dirfd, const char *name,
			    const struct stat *st)
{
	struct ovl_override o;
	if (fs->layers[node->layer].override_kind != OVL_OVERRIDE_NONE &&
	    ovl_override_read(fs, node->layer, dirfd, name, st, &o) > 0)
		ovl_node_set_override(fs, node, &o);
}

/* ---- xattr names under the containers kind: security.* kept as user.* ---- */
#define SECURITY_PREFIX "security."

const char *ovl_override_stored_xattr(const struct ovl_layer *l, const char *name, char *buf, size_t size)
{
	if (l->override_kind != OVL_OVERRIDE_CONTAINERS)
		return name;
	/* refused: it would be listed, and read, as the security.* name it encodes */
	if (strncmp(name, OVL_XATTR_CONTAINERS_ENCODED SECURITY_PREFIX, sizeof OVL_XATTR_CONTAINERS_ENCODED SECURITY_PREFIX - 1) == 0)
		return NULL;
	if (strncmp(name, SECURITY_PREFIX, sizeof SECURITY_PREFIX - 1))
		return name;
	if ((size_t)snprintf(buf, size, OVL_XATTR_CONTAINERS_ENCODED "%s", name) >= size)
		return NULL;
	return buf;
}

const char *ovl_override_shown_xattr(const struct ovl_layer *l, const char *stored)
{
	if (ovl_override_xattr_name(stored))
		return NULL;
	if (l->override_kind != OVL_OVERRIDE_CONTAINERS)
		return stored;
	if (strncmp(stored, SECURITY_PREFIX, sizeof SECURITY_PREFIX - 1) == 0)
		return NULL; /* the layer's own, not the container's */
	if (strncmp(stored, OVL_XATTR_CONTAINERS_ENCODED SECURITY_PREFIX, sizeof OVL_XATTR_CONTAINERS_ENCODED SECURITY_PREFIX - 1) == 0)
		return stored + sizeof OVL_XATTR_CONTAINERS_ENCODED - 1;
	return stored;
}
