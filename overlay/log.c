/* The one logging helper: stderr until the daemon detaches, syslog after. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

#include "overlay.h"

static bool debug_on;
static bool use_syslog;

void ovl_log_init(bool debug)
{
	debug_on = debug;
}

void ovl_log_to_syslog(void)
{
	openlog(OVL_PROGRAM, LOG_PID | LOG_CONS, LOG_DAEMON);
	use_syslog = true;
}

bool ovl_debug_enabled(void)
{
	return debug_on;
}

static void log_v(enum ovl_log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	if (use_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		char line[4096];
		vsnprintf(line, sizeof line, fmt, ap);
		fprintf(stderr, "%s: %s\n", OVL_PROGRAM, line);
	}
}

void ovl_logv(enum ovl_log_level level, const char *fmt, va_list ap)
{
	if (level == OVL_DEBUG && !debug_on)
		return;
	log_v(level, fmt, ap);
}

void ovl_log(enum ovl_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ovl_logv(level, fmt, ap);
	va_end(ap);
}

void ovl_log_once(atomic_flag *done, enum ovl_log_level level, const char *fmt, ...)
{
	if (atomic_flag_test_and_set(done))
		return;
	va_list ap;
	va_start(ap, fmt);
	log_v(level, fmt, ap);
	va_end(ap);
}
