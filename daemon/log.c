/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

static bool log_to_journal;
static int log_max_level = LOG_INFO;

void log_setup(void)
{
	const char *e;

	/* systemd sets JOURNAL_STREAM when stderr is connected to the
	 * journal; then log natively to keep the structured fields. */
	log_to_journal = getenv("JOURNAL_STREAM") != NULL;

	e = getenv("IOMMU_LUD_LOG_LEVEL");
	if (e) {
		static const char *const names[] = { "emerg", "alert", "crit", "err",
						     "warning", "notice", "info", "debug" };

		for (int i = 0; i < (int)ELEMENTSOF(names); i++)
			if (streq_ptr(e, names[i]))
				log_max_level = i;
	}
}

void log_set_max_level(int level)
{
	log_max_level = level;
}

static void add_field(struct iovec *iov, size_t *n, char *buf, size_t len, const char *key,
		      const char *value)
{
	int k;

	if (!value)
		return;
	k = snprintf(buf, len, "%s=%s", key, value);
	if (k < 0)
		return;
	iov[*n].iov_base = buf;
	iov[*n].iov_len = (size_t)k < len ? (size_t)k : len - 1;
	(*n)++;
}

int log_internal(int level, int error, const LogContext *ctx, const char *format, ...)
{
	char msg[1024];
	va_list ap;

	error = abs(error);
	if (level > log_max_level)
		return -error;

	errno = error;	/* for %m */
	va_start(ap, format);
	vsnprintf(msg, sizeof(msg), format, ap);
	va_end(ap);

	if (log_to_journal) {
		char b_msg[1100], b_prio[32], b_errno[32], b_vm[80], b_dev[48], b_sess[96];
		char b_id[40], prio[8];
		struct iovec iov[8];
		size_t n = 0;

		add_field(iov, &n, b_msg, sizeof(b_msg), "MESSAGE", msg);
		snprintf(prio, sizeof(prio), "%d", level);
		add_field(iov, &n, b_prio, sizeof(b_prio), "PRIORITY", prio);
		add_field(iov, &n, b_id, sizeof(b_id), "SYSLOG_IDENTIFIER", "iommu-lud");
		if (error > 0) {
			char e[16];

			snprintf(e, sizeof(e), "%d", error);
			add_field(iov, &n, b_errno, sizeof(b_errno), "ERRNO", e);
		}
		if (ctx) {
			add_field(iov, &n, b_vm, sizeof(b_vm), "VM", ctx->vm);
			add_field(iov, &n, b_dev, sizeof(b_dev), "DEVICE", ctx->device);
			add_field(iov, &n, b_sess, sizeof(b_sess), "SESSION", ctx->session);
		}
		if (sd_journal_sendv(iov, (int)n) >= 0)
			return -error;
	}

	if (ctx && ctx->vm)
		fprintf(stderr, "iommu-lud: VM=%s%s%s%s%s: %s\n", ctx->vm,
			ctx->device ? " DEVICE=" : "", strempty(ctx->device),
			ctx->session ? " SESSION=" : "", strempty(ctx->session), msg);
	else
		fprintf(stderr, "iommu-lud: %s\n", msg);
	return -error;
}
