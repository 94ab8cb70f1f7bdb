/* Runs a command as a kernel without openat2, statx, the *xattrat calls,
 * fchmodat2, copy_file_range, renameat2 and io_uring would: each answers ENOSYS (as
 * container seccomp profiles answer io_uring_setup).  The daemon must
 * then work through its fallbacks. */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <unistd.h>

#include "../../layers/syscall_nr.h"

/* Numbers for libseccomp versions older than the call (-1: every version knows it). */
static const struct {
	const char *name;
	int nr;
} calls[] = {
	{ "openat2", -1 },
	{ "statx", -1 },
	{ "getxattrat", SYS_getxattrat },
	{ "listxattrat", SYS_listxattrat },
	{ "setxattrat", SYS_setxattrat },
	{ "removexattrat", SYS_removexattrat },
	{ "fchmodat2", SYS_fchmodat2 },
	{ "copy_file_range", -1 },
	{ "renameat2", -1 },
	{ "io_uring_setup", -1 },
};

int main(int argc, char *argv[])
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL)
		return 2;
	for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
		int nr = seccomp_syscall_resolve_name(calls[i].name);
		if (nr == __NR_SCMP_ERROR)
			nr = calls[i].nr;
		if (nr < 0) {
			fprintf(stderr, "%s: unknown syscall %s\n", argv[0], calls[i].name);
			return 2;
		}
		if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0) < 0) {
			fprintf(stderr, "%s: cannot filter %s\n", argv[0], calls[i].name);
			return 2;
		}
	}
	if (seccomp_load(ctx) < 0) {
		perror("seccomp_load");
		return 2;
	}
	seccomp_release(ctx);
	execvp(argv[1], argv + 1);
	perror(argv[1]);
	return 127;
}
