/* The shim's one logging helper, and the status a call ends with. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shim.h"

bool shim_debug;

void shim_vlog(const char *fmt, va_list ap)
{
	fputs("containerd-fuse-overlayfs-grpc: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void shim_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	shim_vlog(fmt, ap);
	va_end(ap);
}

void status_set(struct status *st, enum grpc_code code, const char *fmt, ...)
{
	va_list ap;
	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
}

enum grpc_code status_code_of_errno(int err)
{
	switch (err) {
	case ENOENT:
		return GRPC_NOT_FOUND;
	case EEXIST:
		return GRPC_ALREADY_EXISTS;
	case EINVAL:
	case ENAMETOOLONG:
		return GRPC_INVALID_ARGUMENT;
	case ENOSPC:
	case EDQUOT:
	case ENOMEM:
		return GRPC_RESOURCE_EXHAUSTED;
	default:
		return GRPC_UNKNOWN;
	}
}
