/* Running helper programs, and the check made before serving: a read-only
 * mount with two lowers must work, through the same path containerd will
 * use (mount.fuse3 in helper mode, fuse-overlayfs itself in self mode). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

extern char **environ;

int run_program(char *const argv[], char *err, size_t errlen)
{
	int pipefd[2];
	err[0] = '\0';
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	/* stdout too: a daemonizing child keeps it until it is mounted, then closes it */
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (rc != 0) {
		close(pipefd[0]);
		snprintf(err, errlen, "%s: %s", argv[0], strerror(rc));
		return -1;
	}
	size_t got = 0;
	char buf[512];
	ssize_t r;
	while ((r = read(pipefd[0], buf, sizeof(buf))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		for (ssize_t i = 0; i < r && got + 1 < errlen; i++)
			err[got++] = buf[i] == '\n' ? ' ' : buf[i];
		err[got] = '\0';
	}
	close(pipefd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			snprintf(err, errlen, "%s: wait: %s", argv[0], strerror(errno));
			return -1;
		}
	while (got && err[got - 1] == ' ')
		err[--got] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (!got)
		snprintf(err, errlen, "%s exited with status %d", argv[0],
			 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return -1;
}

int unmount_path(const char *path, char *err, size_t errlen)
{
	if (umount2(path, 0) == 0 || umount2(path, MNT_DETACH) == 0)
		return 0;
	/* not root: the FUSE way */
	char *argv[] = { "fusermount3", "-u", "-z", (char *)path, NULL };
	return run_program(argv, err, errlen);
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	char *copy = strdup(path), *save = NULL;
	bool found = false;
	for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
		char *p;
		if (asprintf(&p, "%s/%s", *dir ? dir : ".", prog) >= 0) {
			found = access(p, X_OK) == 0;
			free(p);
		}
	}
	free(copy);
	return found;
}

/* CAP_SYS_ADMIN lets fuse-overlayfs mount by itself (as root, or as the
 * root of rootless containerd's namespaces); without it, fusermount3 mounts. */
static bool may_mount(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };
	if (syscall(SYS_capget, &hdr, data) < 0)
		return false;
	return data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

/* The number of uids this process's user namespace maps. */
static uint64_t mapped_uids(void)
{
	FILE *f = fopen("/proc/self/uid_map", "re");
	uint64_t total = 0, inside, outside, count;
	if (!f)
		return UINT32_MAX;
	while (fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64, &inside, &outside, &count) == 3)
		total += count;
	fclose(f);
	return total;
}

/* What any FUSE mount needs, named before one is tried. */
static int check_fuse_access(struct status *st)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		status_set(st, GRPC_UNAVAILABLE, "cannot open /dev/fuse: %s (%s)", strerror(err),
			   err == ENOENT ? "load the fuse module, or give this container the device"
					 : "the user needs read and write access, mode 0666 as udev sets it");
		return -1;
	}
	close(fd);
	if (!may_mount() && !in_path("fusermount3")) {
		status_set(st, GRPC_UNAVAILABLE,
			   "fusermount3 not found in PATH (Debian package fuse3): without CAP_SYS_ADMIN FUSE mounts go through it");
		return -1;
	}
	/* Not fatal: images whose files all belong to root still work. */
	uint64_t n = mapped_uids();
	if (n < 65536)
		shim_log("warning: this user namespace maps %" PRIu64 " uid%s (/proc/self/uid_map): no subordinate id range "
			 "for the user in /etc/subuid and /etc/subgid, so layers with files of other owners cannot be unpacked",
			 n, n == 1 ? "" : "s");
	return 0;
}

int shim_check_supported(struct shim *sh, struct status *st)
{
	if (check_fuse_access(st) < 0)
		return -1;
	if (!in_path(sh->fuse_overlayfs)) {
		status_set(st, GRPC_UNAVAILABLE, "%s not installed (not found in PATH)", sh->fuse_overlayfs);
		return -1;
	}
	if (sh->mode == MOUNT_HELPER && !in_path("mount.fuse3")) {
		status_set(st, GRPC_UNAVAILABLE, "mount.fuse3 not found in PATH (Debian package fuse3): containerd mounts fuse3.fuse-overlayfs through it");
		return -1;
	}
	char *td;
	if (asprintf(&td, "%s/fuseoverlayfs-checkXXXXXX", sh->root) < 0 || !mkdtemp(td)) {
		status_set(st, GRPC_UNKNOWN, "cannot create a check directory in %s: %s", sh->root, strerror(errno));
		return -1;
	}
	char *lower1, *lower2, *merged, *lowers;
	if (asprintf(&lower1, "%s/lower1", td) < 0 || asprintf(&lower2, "%s/lower2", td) < 0 ||
	    asprintf(&merged, "%s/merged", td) < 0 || asprintf(&lowers, "lowerdir=%s:%s", lower2, lower1) < 0)
		abort();
	mkdir(lower1, 0755);
	mkdir(lower2, 0755);
	mkdir(merged, 0755);
	char err[512];
	int r;
	if (sh->mode == MOUNT_HELPER) {
		char *argv[] = { "mount.fuse3", "overlay", merged, "-o", lowers, "-t", (char *)sh->fuse_overlayfs, NULL };
		r = run_program(argv, err, sizeof(err));
	} else {
		char *argv[] = { (char *)sh->fuse_overlayfs, "-o", lowers, merged, NULL };
		r = run_program(argv, err, sizeof(err));
	}
	char ignored[128];
	if (r == 0)
		unmount_path(merged, ignored, sizeof(ignored));
	rmdir(merged);
	rmdir(lower1);
	rmdir(lower2);
	rmdir(td);
	if (r != 0)
		status_set(st, GRPC_UNAVAILABLE,
			   "fuse-overlayfs not functional (make sure the kernel is 4.18 or newer and /dev/fuse exists): read-only mount with two lowers failed: %s",
			   err);
	free(lower1);
	free(lower2);
	free(merged);
	free(lowers);
	free(td);
	return r == 0 ? 0 : -1;
}
