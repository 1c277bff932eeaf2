/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Logging: to the journal with structured fields (VM=, DEVICE=, SESSION=,
 * ERRNO=) when running under systemd, to stderr otherwise.  Every function
 * returns -abs(error), so a caller can log and return in one statement:
 *	return log_error_errno(r, "Failed to preserve %s: %m", name);
 */

#include <syslog.h>

typedef struct LogContext {
	const char *vm;
	const char *device;
	const char *session;
} LogContext;

void log_setup(void);
void log_set_max_level(int level);

int log_internal(int level, int error, const LogContext *ctx, const char *format, ...)
	__attribute__((format(printf, 4, 5)));

#define LOG_VM(v) (&(const LogContext){ .vm = (v) })
#define LOG_VM_DEV(v, d) (&(const LogContext){ .vm = (v), .device = (d) })
#define LOG_VM_SESSION(v, s) (&(const LogContext){ .vm = (v), .session = (s) })

#define log_debug(...) log_internal(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, (e), NULL, __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, (e), NULL, __VA_ARGS__)
#define log_oom() log_internal(LOG_ERR, ENOMEM, NULL, "Out of memory.")

/* With structured fields. */
#define log_vm(level, ctx, ...) log_internal((level), 0, (ctx), __VA_ARGS__)
#define log_vm_errno(level, e, ctx, ...) log_internal((level), (e), (ctx), __VA_ARGS__)
