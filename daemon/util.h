/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Small ownership helpers in the style of systemd's internal macros
 * (which are not exported by libsystemd), see docs/CODING_STYLE.md there.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _unused_ __attribute__((unused))

#define IN_SET3(x, a, b, c) ((x) == (a) || (x) == (b) || (x) == (c))

#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;

		(void)close(fd);
		errno = saved;
	}
	return -EBADF;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}

#define TAKE_PTR(p)                             \
	({                                      \
		__typeof__(p) _p = (p);         \
		(p) = NULL;                     \
		_p;                             \
	})

#define TAKE_FD(fd)                             \
	({                                      \
		int _fd = (fd);                 \
		(fd) = -EBADF;                  \
		_fd;                            \
	})

static inline bool streq_ptr(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static inline const char *strempty(const char *s)
{
	return s ?: "";
}

static inline bool startswith(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}
