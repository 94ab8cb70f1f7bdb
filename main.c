/* fuse-overlayfs: command line -> config -> session -> daemonize -> loop. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse/transport.h"
#include "overlay/overlay.h"
#include "plugins/loader.h"

/* SIGUSR1 (blocked in every thread) prints the counters of the mount, fs;
 * a thread of its own so printing is safe. */
static void *counters_thread(void *arg)
{
	struct ovl_fs *fs = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	int sig;
	while (sigwait(&set, &sig) == 0) {
		long nodes, dirs;
		struct ftr_counters t;
		ovl_nodes_counters(fs, &nodes, &dirs);
		ftr_counters(fs->transport, &t);
		ovl_log(OVL_INFO,
			"nodes=%ld dirs=%ld dir_fds=%ld lookups=%ld forgets=%ld listings=%ld prefetches=%ld io_uring_requests=%ld "
			"io_uring_threads=%ld polls=%ld polls_caught=%ld",
			nodes, dirs, atomic_load(&fs->dir_fds_open), atomic_load(&fs->stat_lookups),
			atomic_load(&fs->stat_forgets), atomic_load(&fs->stat_listings), atomic_load(&fs->stat_prefetches),
			t.uring_requests, t.uring_threads, t.polls, t.polls_caught);
	}
	return NULL;
}

/* The transport's messages go to the one log (overlay/log.c). */
static void transport_log(enum ftr_log_level level, const char *fmt, va_list ap)
{
	static const enum ovl_log_level levels[] = {
		[FTR_ERR] = OVL_ERR, [FTR_WARN] = OVL_WARN, [FTR_INFO] = OVL_INFO, [FTR_DEBUG] = OVL_DEBUG,
	};
	ovl_logv(levels[level], fmt, ap);
}

static int fail(const char *msg)
{
	fprintf(stderr, "%s: %s\n", OVL_PROGRAM, msg);
	return 1;
}

/* -o plugins= (loaded whatever the lowers), or a lower "//NAME/DATA/PATH" */
static bool wants_plugins(const struct ovl_config *cfg)
{
	char **paths;
	size_t n;
	bool any = cfg->plugins && cfg->plugins[0];
	if (any || cfg->lowerdir == NULL || ovl_split_layers(cfg->lowerdir, &paths, &n) < 0)
		return any;
	for (size_t i = 0; i < n; i++)
		any = any || ovl_plugin_spec_is(paths[i]);
	ovl_free_strv(paths, n);
	return any;
}

/* A static daemon cannot run plugins: it hands a mount with a plugin lower
 * to the dynamic build of itself, same arguments, same pid, before anything
 * is opened.  The variable stops a loop if that one is static too: its
 * loader then refuses the plugin. */
#define HANDED_OVER "FUSE_OVERLAYFS_HANDED_TO_PLUGIN_DAEMON"
static int hand_to_plugin_daemon(char *argv[])
{
	const char *daemon = ovl_plugins_daemon();
	char err[PATH_MAX + 128];
	if (setenv(HANDED_OVER, "1", 1) < 0) {
		snprintf(err, sizeof err, "plugins: cannot hand over to %s: %s", daemon, strerror(errno));
		return fail(err);
	}
	execv(daemon, argv);
	snprintf(err, sizeof err, "%s: lowerdir: plugins need this dynamically linked fuse-overlayfs: %s", daemon,
		 strerror(errno));
	return fail(err);
}

int main(int argc, char *argv[])
{
	static struct ovl_config cfg;
	char err[1024];
	struct ovl_fs *fs;

	/* malloc's default, 8 arenas a CPU, gives each of our request threads
	 * one: a few hundred KiB of RSS for no gain, as requests allocate little. */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (getenv("MALLOC_ARENA_MAX") == NULL && ncpu > 0)
		mallopt(M_ARENA_MAX, (int)ncpu);
	ovl_config_init(&cfg);
	if (ovl_options_parse(argc, argv, &cfg, err, sizeof err) < 0)
		return fail(err);
	if (cfg.show_help) {
		ovl_print_usage(argv[0]);
		return 0;
	}
	if (cfg.show_version) {
		printf("%s: version %s\nFUSE library version %s\n", OVL_PROGRAM, PACKAGE_VERSION, fuse_pkgversion());
		return 0;
	}
	bool handed_over = getenv(HANDED_OVER) != NULL;
	unsetenv(HANDED_OVER);
	if (!handed_over && !ovl_plugins_runnable() && wants_plugins(&cfg))
		return hand_to_plugin_daemon(argv);
	ovl_log_init(cfg.debug);
	if (ovl_options_check_paths(&cfg, err, sizeof err) < 0)
		return fail(err);
	if (ovl_fs_open(&cfg, &fs, err, sizeof err) < 0)
		return fail(err);
	static const struct ftr_env transport_env = { .log = transport_log, .thread_start = ovl_thread_start };
	struct ftr *transport = ftr_new(&transport_env);
	if (transport == NULL)
		return fail(strerror(ENOMEM));
	/* The session's userdata, fs, must begin with it (fuse/transport.h). */
	_Static_assert(offsetof(struct ovl_fs, transport) == 0, "the transport first in the session's userdata");
	fs->transport = transport;

	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	if (fuse_opt_add_arg(&args, argv[0]) < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, cfg.kernel_opts) < 0 || (cfg.debug && fuse_opt_add_arg(&args, "-d") < 0))
		return fail(strerror(ENOMEM));
	struct fuse_session *se = fuse_session_new(&args, &ovl_ops, sizeof ovl_ops, fs);
	fs->se = se;
	fuse_opt_free_args(&args);
	if (se == NULL)
		return fail("cannot create the FUSE session");
	if (fuse_set_signal_handlers(se) < 0)
		return fail("cannot install signal handlers");
	if (fuse_session_mount(se, cfg.mountpoint) < 0) {
		snprintf(err, sizeof err, "%s: mountpoint: cannot mount", cfg.mountpoint);
		return fail(err);
	}
	/* Wraps the /dev/fuse io for passthrough, io_uring and polling; the fd
	 * stays the mount's.  Passthrough needs what the kernel's BACKING_OPEN
	 * checks: CAP_SYS_ADMIN in the initial user namespace. */
	if (ftr_setup(transport, se, cfg.threaded, ovl_has_initial_cap(0, CAP_SYS_ADMIN)) < 0) {
		fuse_session_unmount(se);
		return fail("cannot set up the FUSE device io");
	}
	if (ovl_fs_prepare_workdir(fs, err, sizeof err) < 0) {
		fuse_session_unmount(se);
		return fail(err);
	}
	/* Returns in the child only once the mount is live; the caller's stdio is closed. */
	if (fuse_daemonize(cfg.foreground) < 0) {
		fuse_session_unmount(se);
		return fail("cannot daemonize");
	}
	if (!cfg.foreground)
		ovl_log_to_syslog();

	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	pthread_t tid;
	pthread_create(&tid, NULL, counters_thread, fs);

	int res;
	if (cfg.threaded) {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, 1);
		fuse_loop_cfg_set_max_threads(lc, 64);
		res = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	} else {
		res = fuse_session_loop(se);
	}
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	if (ftr_stop(transport)) {
		fuse_session_destroy(se);
		ovl_fs_unmounted(fs);
	}
	return res ? 1 : 0;
}
