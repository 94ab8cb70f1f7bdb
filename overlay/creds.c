/* New objects get the caller's owner and umask from their first instant, as
 * on the kernel overlay: the request's thread switches its fsuid/fsgid (our
 * capabilities are kept, SECBIT_NO_SETUID_FIXUP) and its own umask (after
 * unsharing its fs attributes), so the upper filesystem applies setgid
 * directories and default ACLs itself. */
#include "config.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <stdio.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../layers/upper.h"
#include "ops.h"

/* Whether this thread has fs attributes of its own (unshare(CLONE_FS)), so
 * that its umask is its own: a fact of the thread, not of a mount. */
static __thread bool fs_attrs_private;

void ovl_creds_setup(struct ovl_fs *fs)
{
	umask(0);
	int bits = prctl(PR_GET_SECUREBITS);
	fs->keep_caps = geteuid() == 0 && bits >= 0 &&
			prctl(PR_SET_SECUREBITS, (unsigned long)bits | SECBIT_NO_SETUID_FIXUP) == 0;
	if (!fs->keep_caps)
		ovl_log(OVL_DEBUG, "creating objects as ourselves, then chown (no SECBIT_NO_SETUID_FIXUP)");
}

void ovl_creds_enter(struct ovl_fs *fs, fuse_req_t req, struct ovl_creds *c)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	c->uid = ovl_idmap_disk(&fs->cfg->uidmap, ctx->uid);
	c->gid = ovl_idmap_disk(&fs->cfg->gidmap, ctx->gid);
	c->switched = false;
	c->owner_may_fail = ovl_squashing(fs->cfg);
	if (!fs_attrs_private)
		fs_attrs_private = unshare(CLONE_FS) == 0;
	c->umask_set = fs_attrs_private;
	if (c->umask_set)
		umask(ctx->umask);
	if (fs->keep_caps) {
		/* between calls our fsuid and fsgid are 0: a root caller needs no switch */
		if (c->gid != 0)
			setfsgid(c->gid);
		if (c->uid != 0)
			setfsuid(c->uid);
		c->switched = true;
	}
}

void ovl_creds_leave(struct ovl_creds *c)
{
	if (c->switched) {
		if (c->uid != 0)
			setfsuid(0);
		if (c->gid != 0)
			setfsgid(0);
	}
	if (c->umask_set)
		umask(0);
}

int ovl_creds_fix_owner(struct ovl_fs *fs, const struct ovl_creds *c, int dirfd, const char *name)
{
	if (c->switched)
		return 0;
	int res = ovl_upper_chown(&fs->layers[0], dirfd, name, c->uid, c->gid);
	return c->owner_may_fail ? 0 : res;
}

/* Inode number of the initial user namespace (the kernel's PROC_USER_INIT_INO). */
#define USER_NS_INIT_INO 0xEFFFFFFDU

bool ovl_has_initial_cap(pid_t pid, int cap)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = pid };
	struct __user_cap_data_struct data[2];
	char path[64];
	struct stat st;
	if (pid < 0 || syscall(SYS_capget, &hdr, data) < 0 || !(data[cap / 32].effective & (1U << (cap % 32))))
		return false;
	snprintf(path, sizeof path, pid ? "/proc/%d/ns/user" : "/proc/self/ns/user", (int)pid);
	return stat(path, &st) == 0 && st.st_ino == USER_NS_INIT_INO;
}
