/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ioctl()/open() mock for the libiommulu unit tests.  See mock.h.
 */

/* This file defines open() and open64() itself, so it must see the
 * plain prototypes: no large-file redirection (meson adds
 * -D_FILE_OFFSET_BITS=64) and no fortify inline wrappers. */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "mock.h"

#define MOCK_SCRIPT_MAX 64
#define MOCK_OPEN_RULES_MAX 8
#define MOCK_MSG_MAX 512

struct expectation {
	int fd;
	bool has_path;
	char path[PATH_MAX];
	unsigned long req;
	uint8_t in[MOCK_BUF_MAX];
	size_t in_len;
	uint8_t out[MOCK_BUF_MAX];
	size_t out_len;
	int ret;
	int err;
};

struct open_rule {
	char path[PATH_MAX];
	int err;
	int times;
	unsigned seen;
};

static struct {
	bool armed;
	struct expectation script[MOCK_SCRIPT_MAX];
	size_t n, next;
	unsigned calls;
	struct open_rule open_rules[MOCK_OPEN_RULES_MAX];
	size_t n_open_rules;
	char failure[MOCK_MSG_MAX];	/* first problem, "" if none */
	char end_msg[MOCK_MSG_MAX];
} mock;

typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open_2_fn)(const char *, int);

static void *next_symbol(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p) {
		fprintf(stderr, "ioctl mock: dlsym(RTLD_NEXT, %s): %s\n", name, dlerror());
		abort();
	}
	return p;
}

__attribute__((format(printf, 1, 2))) static void record_failure(const char *fmt, ...)
{
	va_list ap;

	if (mock.failure[0])
		return;		/* keep the first: later ones are usually fallout */
	va_start(ap, fmt);
	vsnprintf(mock.failure, sizeof(mock.failure), fmt, ap);
	va_end(ap);
}

void mock_begin(void)
{
	memset(&mock, 0, sizeof(mock));
	mock.armed = true;
}

void mock_ioctl_expect(const struct mock_ioctl *e)
{
	struct expectation *x;

	if (!e || mock.n >= MOCK_SCRIPT_MAX || e->in_len > MOCK_BUF_MAX ||
	    e->out_len > MOCK_BUF_MAX || (e->in_len && !e->in) || (e->out_len && !e->out) ||
	    (e->path && strlen(e->path) >= PATH_MAX)) {
		fprintf(stderr, "ioctl mock: malformed expectation or script full\n");
		abort();
	}
	x = &mock.script[mock.n++];
	memset(x, 0, sizeof(*x));
	x->fd = e->fd;
	if (e->path) {
		x->has_path = true;
		strcpy(x->path, e->path);
	}
	x->req = e->req;
	if (e->in_len)
		memcpy(x->in, e->in, e->in_len);
	x->in_len = e->in_len;
	if (e->out_len)
		memcpy(x->out, e->out, e->out_len);
	x->out_len = e->out_len;
	x->ret = e->ret;
	x->err = e->err;
}

void mock_open_fail(const char *path, int err, int times)
{
	struct open_rule *r;

	if (!path || strlen(path) >= PATH_MAX || mock.n_open_rules >= MOCK_OPEN_RULES_MAX ||
	    err <= 0) {
		fprintf(stderr, "ioctl mock: malformed open rule\n");
		abort();
	}
	r = &mock.open_rules[mock.n_open_rules++];
	strcpy(r->path, path);
	r->err = err;
	r->times = times;
	r->seen = 0;
}

unsigned mock_open_count(const char *path)
{
	for (size_t i = 0; i < mock.n_open_rules; i++)
		if (strcmp(mock.open_rules[i].path, path) == 0)
			return mock.open_rules[i].seen;
	return 0;
}

const char *mock_end(void)
{
	mock.armed = false;
	if (mock.failure[0]) {
		snprintf(mock.end_msg, sizeof(mock.end_msg), "%s", mock.failure);
		return mock.end_msg;
	}
	if (mock.next < mock.n) {
		const struct expectation *x = &mock.script[mock.next];

		snprintf(mock.end_msg, sizeof(mock.end_msg),
			 "%zu of %zu expected ioctl(s) not made; next: fd=%d%s%.128s req=0x%lx",
			 mock.n - mock.next, mock.n, x->fd, x->has_path ? " path=*" : "",
			 x->has_path ? x->path : "", x->req);
		return mock.end_msg;
	}
	return NULL;
}

static bool fd_matches(const struct expectation *x, int fd)
{
	char link[64], target[PATH_MAX];
	size_t tl, pl;
	ssize_t n;

	if (!x->has_path)
		return x->fd == fd;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	tl = (size_t)n;
	pl = strlen(x->path);
	return tl >= pl && strcmp(target + tl - pl, x->path) == 0;
}

int ioctl(int fd, unsigned long req, ...)
{
	static ioctl_fn real_ioctl;
	const struct expectation *x;
	unsigned call;
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (!mock.armed || fd <= 2) {
		if (!real_ioctl)
			real_ioctl = (ioctl_fn)next_symbol("ioctl");
		return real_ioctl(fd, req, arg);
	}

	call = ++mock.calls;
	if (mock.next >= mock.n) {
		record_failure("ioctl #%u (fd=%d req=0x%lx) not in the script (%zu expected)", call,
			       fd, req, mock.n);
		errno = EPROTO;
		return -1;
	}
	x = &mock.script[mock.next++];
	if (!fd_matches(x, fd) || x->req != req) {
		record_failure("ioctl #%u: got fd=%d req=0x%lx, expected fd=%d%s%s req=0x%lx", call,
			       fd, req, x->fd, x->has_path ? " path=*" : "",
			       x->has_path ? x->path : "", x->req);
		errno = EPROTO;
		return -1;
	}
	if (x->in_len) {
		const uint8_t *got = arg;

		if (!got) {
			record_failure("ioctl #%u (req=0x%lx): NULL argument", call, req);
			errno = EPROTO;
			return -1;
		}
		for (size_t i = 0; i < x->in_len; i++)
			if (got[i] != x->in[i]) {
				record_failure("ioctl #%u (req=0x%lx): request byte %zu is 0x%02x, "
					       "expected 0x%02x",
					       call, req, i, got[i], x->in[i]);
				errno = EPROTO;
				return -1;
			}
	}
	if (x->err) {
		errno = x->err;
		return -1;
	}
	if (x->out_len)
		memcpy(arg, x->out, x->out_len);
	return x->ret;
}

/* 0: go ahead with the real open; -1 with errno set: fail it. */
static int open_rule_check(const char *path)
{
	if (!mock.armed || !path)
		return 0;
	for (size_t i = 0; i < mock.n_open_rules; i++) {
		struct open_rule *r = &mock.open_rules[i];

		if (strcmp(r->path, path) != 0)
			continue;
		r->seen++;
		if (r->times == 0)
			return 0;
		if (r->times > 0)
			r->times--;
		errno = r->err;
		return -1;
	}
	return 0;
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	static open_fn real;
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (open_fn)next_symbol("open");
	return real(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	static open_fn real;
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (open_fn)next_symbol("open64");
	return real(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	static openat_fn real;
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (openat_fn)next_symbol("openat");
	return real(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	static openat_fn real;
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (openat_fn)next_symbol("openat64");
	return real(dirfd, path, flags, mode);
}

/* What _FORTIFY_SOURCE turns open() into when it cannot check the flags
 * at compile time. */
int __open_2(const char *path, int flags);
int __open_2(const char *path, int flags)
{
	static open_2_fn real;

	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (open_2_fn)next_symbol("__open_2");
	return real(path, flags);
}

int __open64_2(const char *path, int flags);
int __open64_2(const char *path, int flags)
{
	static open_2_fn real;

	if (open_rule_check(path) < 0)
		return -1;
	if (!real)
		real = (open_2_fn)next_symbol("__open64_2");
	return real(path, flags);
}
