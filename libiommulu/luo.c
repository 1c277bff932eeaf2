/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/luo.h"
#include "iommulu/uapi.h"

#define LUO_DEFAULT_DEV "/dev/liveupdate"
/* The kernel names session files "[luo_session] NAME" (anon_inode_getfile
 * in kernel/liveupdate/luo_session.c). */
#define LUO_SESSION_LINK_PREFIX "anon_inode:[luo_session] "

#define LUO_BACKOFF_MIN_MS 1u
#define LUO_BACKOFF_MAX_MS 50u

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Only one process may hold /dev/liveupdate open, and PID 1 takes it for
 * short moments, so EBUSY is retried with an exponential backoff from 1 to
 * 50 ms until timeout_ms have passed (timeout 0: exactly one attempt).
 */
_public_ int iommulu_luo_open(unsigned timeout_ms)
{
	const char *path = secure_getenv("IOMMULU_LIVEUPDATE_DEV");
	uint64_t deadline = now_ms() + timeout_ms;
	unsigned backoff = LUO_BACKOFF_MIN_MS;

	if (!path || !path[0])
		path = LUO_DEFAULT_DEV;

	for (;;) {
		uint64_t now;
		int fd;

		fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0)
			return fd;
		if (errno == EINTR)
			continue;
		if (errno != EBUSY)
			return negative_errno();

		now = now_ms();
		if (now >= deadline)
			return -EBUSY;
		if (backoff > deadline - now)
			backoff = (unsigned)(deadline - now);
		sleep_ms(backoff);
		backoff = backoff * 2 > LUO_BACKOFF_MAX_MS ? LUO_BACKOFF_MAX_MS : backoff * 2;
	}
}

static int luo_name_copy(uint8_t dst[LIVEUPDATE_SESSION_NAME_LENGTH], const char *name)
{
	size_t n;

	if (!name)
		return -EINVAL;
	n = strnlen(name, IOMMULU_LUO_SESSION_NAME_MAX + 1);
	if (n == 0 || n > IOMMULU_LUO_SESSION_NAME_MAX)
		return -EINVAL;
	memset(dst, 0, LIVEUPDATE_SESSION_NAME_LENGTH);
	memcpy(dst, name, n);
	return 0;
}

/* CREATE_SESSION and RETRIEVE_SESSION take the same argument layout:
 * size, an out fd and the name. */
_Static_assert(sizeof(struct liveupdate_ioctl_create_session) ==
		       sizeof(struct liveupdate_ioctl_retrieve_session) &&
	       offsetof(struct liveupdate_ioctl_create_session, fd) ==
		       offsetof(struct liveupdate_ioctl_retrieve_session, fd) &&
	       offsetof(struct liveupdate_ioctl_create_session, name) ==
		       offsetof(struct liveupdate_ioctl_retrieve_session, name),
	       "LUO session create/retrieve layouts differ");

static int luo_session_open(int luo_fd, unsigned long request, const char *name,
			    int *ret_session_fd)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg), .fd = -1 };
	int r;

	if (luo_fd < 0)
		return -EBADF;
	if (!ret_session_fd)
		return -EINVAL;
	r = luo_name_copy(arg.name, name);
	if (r < 0)
		return r;
	if (ioctl(luo_fd, request, &arg) < 0)
		return negative_errno();
	if (arg.fd < 0)
		return -EIO;
	*ret_session_fd = arg.fd;
	return 0;
}

_public_ int iommulu_luo_session_create(int luo_fd, const char *name, int *ret_session_fd)
{
	return luo_session_open(luo_fd, LIVEUPDATE_IOCTL_CREATE_SESSION, name, ret_session_fd);
}

_public_ int iommulu_luo_session_retrieve(int luo_fd, const char *name, int *ret_session_fd)
{
	return luo_session_open(luo_fd, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, name, ret_session_fd);
}

_public_ int iommulu_luo_session_preserve_fd(int session_fd, int fd, uint64_t token)
{
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg),
		.fd = fd,
		.token = token,
	};

	if (session_fd < 0 || fd < 0)
		return -EBADF;
	if (ioctl(session_fd, LIVEUPDATE_SESSION_PRESERVE_FD, &arg) < 0)
		return negative_errno();
	return 0;
}

_public_ int iommulu_luo_session_retrieve_fd(int session_fd, uint64_t token, int *ret_fd)
{
	struct liveupdate_session_retrieve_fd arg = {
		.size = sizeof(arg),
		.fd = -1,
		.token = token,
	};

	if (session_fd < 0)
		return -EBADF;
	if (!ret_fd)
		return -EINVAL;
	if (ioctl(session_fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &arg) < 0)
		return negative_errno();
	if (arg.fd < 0)
		return -EIO;
	*ret_fd = arg.fd;
	return 0;
}

_public_ int iommulu_luo_session_finish(int session_fd)
{
	struct liveupdate_session_finish arg = { .size = sizeof(arg) };

	if (session_fd < 0)
		return -EBADF;
	if (ioctl(session_fd, LIVEUPDATE_SESSION_FINISH, &arg) < 0)
		return negative_errno();
	return 0;
}

/* -ERANGE if buf cannot hold the name and its NUL. */
_public_ int iommulu_luo_session_get_name(int session_fd, char *buf, size_t len)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	size_t n;

	if (session_fd < 0)
		return -EBADF;
	if (!buf || len == 0)
		return -EINVAL;
	if (ioctl(session_fd, LIVEUPDATE_SESSION_GET_NAME, &arg) < 0)
		return negative_errno();
	n = strnlen((const char *)arg.name, sizeof(arg.name));
	if (n >= sizeof(arg.name))
		return -EIO;	/* the kernel always NUL-terminates */
	if (n >= len)
		return -ERANGE;
	memcpy(buf, arg.name, n + 1);
	return 0;
}

_public_ int iommulu_luo_is_session(int fd)
{
	char path[64], link[256];
	ssize_t n;

	if (fd < 0)
		return -EBADF;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return errno == ENOENT ? -EBADF : negative_errno();
	link[n] = '\0';
	return startswith(link, LUO_SESSION_LINK_PREFIX) != NULL;
}
