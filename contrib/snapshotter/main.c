/* containerd-fuse-overlayfs-grpc SOCKET ROOT: containerd's fuse-overlayfs
 * snapshotter as a proxy plugin.  This file is the command line and the
 * start-up; the service is in service.c. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "shim.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: containerd-fuse-overlayfs-grpc [OPTIONS] SOCKET ROOT\n"
		"Serves containerd's snapshots API on the unix socket SOCKET, keeping\n"
		"snapshots under ROOT, mounted with fuse-overlayfs.\n\n"
		"  --mount-mode=helper  hand back fuse3.fuse-overlayfs mounts (default)\n"
		"  --mount-mode=self    mount overlays under ROOT/snapshots/ID/merged and\n"
		"                       hand back bind mounts\n"
		"  -d, --debug          trace every call on stderr\n"
		"  -h, --help           this help\n"
		"  -V, --version        the version\n");
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	shim_vlog(fmt, ap);
	va_end(ap);
	return 1;
}

/* As the Go shim: the socket's directory is made, a stale socket replaced. */
static int listen_on(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	if (make_dirs(path, 0700, false) < 0)
		return -1;
	struct stat sb;
	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			errno = EEXIST;
			return -1;
		}
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 128) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static void ready(void)
{
	if (getenv("NOTIFY_SOCKET"))
		sd_notify(0, "READY=1");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mount-mode", required_argument, NULL, 'm' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct shim sh = { .mode = MOUNT_HELPER, .fuse_overlayfs = "fuse-overlayfs", .root_fd = -1, .snapshots_fd = -1 };
	int c;
	opterr = 0; /* one line of our own instead of getopt's */
	while ((c = getopt_long(argc, argv, ":dhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (strcmp(optarg, "helper") == 0)
				sh.mode = MOUNT_HELPER;
			else if (strcmp(optarg, "self") == 0)
				sh.mode = MOUNT_SELF;
			else
				return die("--mount-mode: expected helper or self, not '%s'", optarg);
			break;
		case 'd':
			shim_debug = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("containerd-fuse-overlayfs-grpc %s\n", PACKAGE_VERSION);
			return 0;
		case ':':
			return die("%s: needs a value (see --help)", argv[optind - 1]);
		default:
			return die("unknown option %s (see --help)", argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		return die("invalid args: expected SOCKET and ROOT, got %d arguments (see --help)", argc - optind);
	const char *socket_path = argv[optind];
	if (!*socket_path || !*argv[optind + 1])
		return die("SOCKET and ROOT must not be empty");
	/* Lower and upper paths travel in comma-separated, colon-joined options. */
	if (strpbrk(argv[optind + 1], ",:"))
		return die("ROOT %s: must not contain ',' or ':' (they separate mount options)", argv[optind + 1]);
	sh.root = strdup(argv[optind + 1]);
	struct status st = { 0 };
	char *db = NULL;
	if (snapdirs_open(&sh, &st) < 0)
		return die("ROOT: %s", st.message);
	if (shim_check_supported(&sh, &st) < 0)
		return die("%s", st.message);
	if (asprintf(&db, "%s/metadata.sqlite", sh.root) < 0 || store_open(&sh.store, db, &st) < 0)
		return die("metadata: %s", st.message);
	if (sh.mode == MOUNT_SELF && snapdirs_self_recover(&sh, &st) < 0)
		return die("restoring mounts: %s", st.message);
	int fd = listen_on(socket_path);
	if (fd < 0)
		return die("SOCKET %s: %s", socket_path, strerror(errno));
	int r = rpc_serve(fd, snapshots_service(&sh), ready);
	if (getenv("NOTIFY_SOCKET"))
		sd_notify(0, "STOPPING=1");
	unlink(socket_path);
	store_close(sh.store);
	free(db);
	free(sh.root);
	if (r < 0)
		return die("serving: %s", strerror(-r));
	return 0;
}
