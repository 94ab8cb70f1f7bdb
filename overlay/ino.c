/* Inode numbers (DESIGN.md "Inode numbers"): st_ino across layers, and the
 * origins that keep it across copy-up. with every layer on one
 * filesystem the object's own number, as the kernel overlay shows it; with
 * several, the kernel's xino: the filesystem's index in the high bits, so
 * that numbers are unique and stay the same across remounts.  A number too
 * large for the bits left (or for 32 bits with ino32_t) is not cut, which
 * could give two objects one number: it goes to the area of the highest
 * index, which no filesystem gets, as a hash of (filesystem, number). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <xxhash.h>

#include "../layers/upper.h"
#include "overlay.h"

unsigned ovl_ino_bits(uint32_t nfs, bool ino32)
{
	unsigned bits = 0;
	if (nfs < 2 && !ino32)
		return 0; /* one filesystem: its numbers as they are */
	while ((UINT64_C(1) << bits) < (uint64_t)nfs + 1) /* + the overflow area */
		bits++;
	return bits;
}

uint64_t ovl_ino_compose(unsigned width, unsigned bits, uint32_t fsid, uint64_t ino)
{
	if (bits == 0)
		return ino;
	unsigned low_bits = width - bits;
	uint64_t low_mask = (UINT64_C(1) << low_bits) - 1;
	if ((ino & ~low_mask) == 0)
		return (uint64_t)fsid << low_bits | ino;
	const uint64_t key[2] = { fsid, ino };
	uint64_t overflow_area = (UINT64_C(1) << bits) - 1;
	return overflow_area << low_bits | (XXH3_64bits(key, sizeof key) & low_mask);
}

ino_t ovl_st_ino(const struct ovl_fs *fs, uint32_t layer, ino_t ino)
{
	return (ino_t)ovl_ino_compose(fs->cfg->ino32 ? 32 : 64, fs->xino_bits, fs->layers[layer].fsid, ino);
}

/* ---- origins: a copied-up object keeps its origin's identity ("DEV:INO")
 * in an xattr, so that st_ino stays the same across copy-up and remount ---- */
int ovl_origin_set(struct ovl_fs *fs, int fd, const char *name, const struct ovl_layer *from,
		   const struct stat *lower)
{
	if (!(from->caps & OVL_LAYER_STABLE_INO))
		return 0; /* an identity the next mount may give another object */
	char v[64];
	int len = snprintf(v, sizeof v, "%" PRIu64 ":%" PRIu64, (uint64_t)lower->st_dev, (uint64_t)lower->st_ino);
	struct ovl_layer *upper = &fs->layers[0];
	if (fs->trusted_xattrs && ovl_upper_setxattr(upper, fd, name, ovl_origin_xattr_trusted, v, (size_t)len, 0) == 0)
		return 0;
	int res = ovl_upper_setxattr(upper, fd, name, ovl_origin_xattr_user, v, (size_t)len, 0);
	/* without xattrs st_ino merely changes at copy-up, as with 1.10 */
	return res == -ENOTSUP || res == -EPERM ? 0 : res;
}

bool ovl_origin_ino(struct ovl_fs *fs, int dirfd, const char *name, ino_t *shown)
{
	struct ovl_layer *upper = &fs->layers[0];
	char v[64];
	ssize_t len = upper->ops->getxattrat(upper, dirfd, name, ovl_origin_xattr_trusted, v, sizeof v - 1);
	if (len < 0)
		len = upper->ops->getxattrat(upper, dirfd, name, ovl_origin_xattr_user, v, sizeof v - 1);
	if (len <= 0)
		return false;
	v[len] = '\0';
	uint64_t dev, ino;
	char tail;
	if (sscanf(v, "%" SCNu64 ":%" SCNu64 "%c", &dev, &ino, &tail) != 2)
		return false; /* not ours: ignore */
	for (uint32_t i = 1; i < fs->nlayers; i++)
		if ((uint64_t)fs->layers[i].dev == dev) {
			*shown = ovl_st_ino(fs, i, (ino_t)ino);
			return true;
		}
	return false;
}
