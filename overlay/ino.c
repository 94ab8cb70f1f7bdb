/* st_ino across layers (DESIGN.md "Inode numbers"): with every layer on one
 * filesystem the object's own number, as the kernel overlay shows it; with
 * several, the kernel's xino: the filesystem's index in the high bits, so
 * that numbers are unique and stay the same across remounts.  A number too
 * large for the bits left (or for 32 bits with ino32_t) is not cut, which
 * could give two objects one number: it goes to the area of the highest
 * index, which no filesystem gets, as a hash of (filesystem, number). */
#include "config.h"

#include <xxhash.h>

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
