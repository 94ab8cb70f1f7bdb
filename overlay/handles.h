/* The layout of an open file's fh (file.c makes it, handles.c reads it). */
#ifndef OVL_HANDLES_H
#define OVL_HANDLES_H

#include <stdint.h>

#include "overlay.h"

/* fh = the backing handle (an fd in a layer with fds), plus this bit when
 * the open holds a passthrough ref. */
#define FH_PASSTHROUGH (UINT64_C(1) << 32)
/* the fd part of a passthrough read-only open: we hold no fd (the kernel
 * has the file), the few calls that need one reopen the object */
#define FH_NO_FD UINT64_C(0xffffffff)
/* bits 33-39: the opener's share of the fds of open files (see fd_share) */
#define FH_SHARE_SHIFT 33
#define FH_SHARE_MASK UINT64_C(0x7f)
_Static_assert(OVL_FD_SHARES <= FH_SHARE_MASK + 1, "shares fit in fh");
/* bits 40-63: the layer the handle is of (no mount has 2^24 layers: each holds an fd) */
#define FH_LAYER_SHIFT 40

#endif
