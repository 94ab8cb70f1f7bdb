/* Set-id bits go when someone without CAP_FSETID changes a file's data, as
 * on the kernel overlay (fs/attr.c setattr_should_drop_suidgid); file
 * capabilities go with any write (the kernel sends their REMOVEXATTR itself).
 *
 * We ask the kernel for FUSE_HANDLE_KILLPRIV_V2.  It then marks our
 * superblock SB_NOSEC, so that a write stops asking us for
 * security.capability once an inode is known to have neither set-id bits nor
 * capabilities (the GETXATTR every write cost), and it leaves the bits to us:
 *   - a write's file_remove_privs, when it finds bits to drop, strips them
 *     from its SETATTR and sends what is left: nothing (fs/fuse/dir.c
 *     fuse_setattr), a SETATTR that sets nothing.  The same empty SETATTR
 *     comes when only a capability went, for a caller who may keep the bits:
 *     the caller's CAP_FSETID decides;
 *   - a truncate or an O_TRUNC open by a caller without CAP_FSETID is flagged
 *     (FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID: the transport reads
 *     them, ftr_kill_suidgid).
 * chown needs nothing from us: the upper filesystem drops the bits itself. */
#include "config.h"

#include <sys/stat.h>
#include <linux/capability.h>

#include "ops.h"

static bool caller_in_group(fuse_req_t req, gid_t gid)
{
	gid_t groups[64];
	if (fuse_req_ctx(req)->gid == gid)
		return true;
	int n = fuse_req_getgroups(req, sizeof groups / sizeof groups[0], groups);
	for (int i = 0; i < n && i < (int)(sizeof groups / sizeof groups[0]); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

mode_t ovl_killpriv_mode(fuse_req_t req, const struct stat *st, bool flagged)
{
	mode_t mode = st->st_mode;
	if (!S_ISREG(mode) || !(mode & (S_ISUID | S_ISGID)))
		return mode;
	/* the caller's CAP_FSETID where the kernel checks it; unknown (the
	 * process is gone, another pid namespace): none, so that the bits go */
	if (!flagged && ovl_has_initial_cap(fuse_req_ctx(req)->pid, CAP_FSETID))
		return mode;
	if (mode & S_ISUID)
		mode &= ~(mode_t)S_ISUID;
	/* setgid without group execute marks mandatory locking, not a set-id
	 * program: it goes only for a caller outside the file's group */
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || !caller_in_group(req, st->st_gid)))
		mode &= ~(mode_t)S_ISGID;
	return mode;
}
