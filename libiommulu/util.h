/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Small systemd-style helpers shared by libiommulu's sources, its unit
 * tests and the daemon (iommu-lud).  Self-contained on purpose: it needs
 * only libc, so the daemon can use it with
 *	include_directories('../libiommulu')	(meson, from daemon/)
 * and #include "util.h" without pulling in anything else of the library's
 * internals.  Nothing here is exported from libiommulu.so.
 *
 *   _cleanup_free_    char *p = ...;         free(p) at scope exit
 *   _cleanup_close_   int fd = ...;          close(fd) at scope exit if >= 0
 *   _cleanup_fclose_  FILE *f = ...;
 *   _cleanup_closedir_ DIR *d = ...;
 *   _cleanup_(foo_freep) struct foo *x = NULL;   with DEFINE_TRIVIAL_CLEANUP_FUNC
 *   TAKE_PTR(p) / TAKE_FD(fd): hand ownership on, leaving NULL / -EBADF.
 *
 * Library sources mark every exported definition with _public_: the
 * library is built with -fvisibility=hidden, and a version script cannot
 * export a hidden symbol.
 */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _public_ __attribute__((visibility("default")))
#define _hidden_ __attribute__((visibility("hidden")))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))

#define _cleanup_(f) __attribute__((cleanup(f)))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* close() that keeps errno and accepts negative fds; returns -1. */
static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
#define _cleanup_closedir_ _cleanup_(closedirp)

/* static void foo_freep(struct foo **p) calling foo_free(*p) */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)		\
	static inline void func##p(type *p)		\
	{						\
		if (*p)					\
			func(*p);			\
	}

#define TAKE_GENERIC(var, type, nullvalue)			\
	({							\
		type *_pvar_ = &(var);				\
		type _var_ = *_pvar_;				\
		type _nullvalue_ = nullvalue;			\
		*_pvar_ = _nullvalue_;				\
		_var_;						\
	})
#define TAKE_PTR_TYPE(ptr, type) TAKE_GENERIC(ptr, type, NULL)
#define TAKE_PTR(ptr) TAKE_PTR_TYPE(ptr, __typeof__(ptr))
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

/* errno as a negative return value, never 0 (defensive against libc
 * paths that fail without setting errno). */
static inline int negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static inline const char *strempty(const char *s)
{
	return s ? s : "";
}

static inline const char *strna(const char *s)
{
	return s ? s : "n/a";
}

static inline int streq_ptr(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline const char *startswith(const char *s, const char *prefix)
{
	size_t l = strlen(prefix);

	return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}
