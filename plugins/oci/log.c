/* The one log helper of the oci plugin, and the one-line reasons of
 * refusals.  Lines go to stderr: layers are opened at mount time, before
 * the daemon detaches. */
#include "config.h"

#include <stdio.h>

#include "oci.h"

void oci_log(struct oci_log *log, const char *fmt, ...)
{
	unsigned max = log && log->max ? log->max : OCI_LOG_MAX;
	/* reads may log from several threads at once */
	unsigned count = log ? __atomic_fetch_add(&log->count, 1, __ATOMIC_RELAXED) : 0;
	char line[1024];
	int n = 0;
	if (count >= max) {
		if (count != max)
			return;
		snprintf(line, sizeof line, "%s: further messages suppressed", log->what);
	} else {
		if (log && log->what)
			n = snprintf(line, sizeof line, "%s: ", log->what);
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
		va_end(ap);
	}
	if (log && log->sink)
		log->sink(log->arg, line);
	else
		fprintf(stderr, "fuse-overlayfs: oci: %s\n", line);
}

void oci_err(char *err, size_t errlen, const char *what, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	int n = snprintf(err, errlen, "%s: ", what);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}
