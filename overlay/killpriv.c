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
 *     (FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID: devio.c reads them).
 * chown needs nothing from us: the upper filesystem drops the bits itself. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/capability.h>

#include "ops.h"

/* Inode number of the initial user namespace (the kernel's PROC_USER_INIT_INO). */
#define USER_NS_INIT_INO 0xEFFFFFFDU

/* Whether the caller holds CAP_FSETID in the initial user namespace, where
 * the kernel checks it (capable()).  Unknown (the process is gone, another
 * pid namespace): no, so that the bits go. */
static bool caller_has_fsetid(fuse_req_t req)
{
	char path[64];
	struct stat st;
	pid_t pid = fuse_req_ctx(req)->pid;
	snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
	if (pid <= 0 || stat(path, &st) < 0 || st.st_ino != USER_NS_INIT_INO)
		return false;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return false;
	char line[256];
	unsigned long long caps = 0;
	bool found = false;
	while (!found && fgets(line, sizeof line, f))
		found = sscanf(line, "CapEff: %llx", &caps) == 1;
	fclose(f);
	return found && (caps & (1ULL << CAP_FSETID));
}

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
	if (!flagged && caller_has_fsetid(req))
		return mode;
	if (mode & S_ISUID)
		mode &= ~(mode_t)S_ISUID;
	/* setgid without group execute marks mandatory locking, not a set-id
	 * program: it goes only for a caller outside the file's group */
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || !caller_in_group(req, st->st_gid)))
		mode &= ~(mode_t)S_ISGID;
	return mode;
}
