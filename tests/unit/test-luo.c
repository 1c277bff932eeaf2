/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * luo.c without a LUO kernel: opening (path override, errors), argument
 * checks, errno pass-through from a real non-LUO fd, and session
 * recognition.  The ioctl request/reply encoding and the EBUSY backoff are
 * tested against the scripted ioctl()/open() mock (tests/mock) by helper
 * L2's luo mock test.
 *
 * This executable interposes readlink(): a LUO session cannot be created
 * on a kernel without LUO, so for one chosen fd number the test plays the
 * kernel's part and returns the link text luo_session.c gives session
 * files ("anon_inode:[luo_session] NAME").
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/eventfd.h>
#include <sys/syscall.h>

#include "iommulu/fdclass.h"
#include "iommulu/luo.h"
#include "test-helpers.h"

static int fake_session_fd = -1;
static const char *fake_session_link;

ssize_t readlink(const char *path, char *buf, size_t len)
{
	char want[64];

	if (fake_session_fd >= 0) {
		snprintf(want, sizeof(want), "/proc/self/fd/%d", fake_session_fd);
		if (strcmp(path, want) == 0) {
			size_t n = strlen(fake_session_link);

			if (n > len)
				n = len;
			memcpy(buf, fake_session_link, n);
			return (ssize_t)n;
		}
	}
	return syscall(SYS_readlinkat, AT_FDCWD, path, buf, len);
}

static void test_open_missing(void **state)
{
	setenv("IOMMULU_LIVEUPDATE_DEV", "/nonexistent/liveupdate", 1);
	assert_int_equal(iommulu_luo_open(0), -ENOENT);
	assert_int_equal(iommulu_luo_open(100), -ENOENT);	/* ENOENT is not retried */
	unsetenv("IOMMULU_LIVEUPDATE_DEV");
}

static void test_open_override(void **state)
{
	int fd;

	setenv("IOMMULU_LIVEUPDATE_DEV", "/dev/null", 1);
	fd = iommulu_luo_open(0);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	close(fd);
	unsetenv("IOMMULU_LIVEUPDATE_DEV");
}

static void test_open_default_path(void **state)
{
	int fd;

	unsetenv("IOMMULU_LIVEUPDATE_DEV");
	fd = iommulu_luo_open(0);
	if (access("/dev/liveupdate", F_OK) < 0) {
		assert_int_equal(fd, -ENOENT);
	} else {
		/* A LUO kernel: we get it, or it is held by someone else. */
		assert_true(fd >= 0 || fd == -EBUSY);
		if (fd >= 0)
			close(fd);
	}
}

static void test_arguments(void **state)
{
	char long_name[IOMMULU_LUO_SESSION_NAME_MAX + 2];
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC), out = -7;
	char buf[8];

	assert_true(fd >= 0);
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';

	assert_int_equal(iommulu_luo_session_create(-1, "vm", &out), -EBADF);
	assert_int_equal(iommulu_luo_session_create(fd, NULL, &out), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(fd, "", &out), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(fd, long_name, &out), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(fd, "vm", NULL), -EINVAL);
	assert_int_equal(iommulu_luo_session_retrieve(-1, "vm", &out), -EBADF);
	assert_int_equal(iommulu_luo_session_retrieve(fd, long_name, &out), -EINVAL);
	assert_int_equal(iommulu_luo_session_retrieve(fd, "vm", NULL), -EINVAL);
	assert_int_equal(iommulu_luo_session_preserve_fd(-1, fd, 1), -EBADF);
	assert_int_equal(iommulu_luo_session_preserve_fd(fd, -1, 1), -EBADF);
	assert_int_equal(iommulu_luo_session_retrieve_fd(-1, 1, &out), -EBADF);
	assert_int_equal(iommulu_luo_session_retrieve_fd(fd, 1, NULL), -EINVAL);
	assert_int_equal(iommulu_luo_session_finish(-1), -EBADF);
	assert_int_equal(iommulu_luo_session_get_name(-1, buf, sizeof(buf)), -EBADF);
	assert_int_equal(iommulu_luo_session_get_name(fd, NULL, 64), -EINVAL);
	assert_int_equal(iommulu_luo_session_get_name(fd, buf, 0), -EINVAL);
	assert_int_equal(out, -7);
	close(fd);
}

/* A 63-byte name is the longest accepted: it reaches the kernel (here
 * /dev/null, which answers every ioctl with ENOTTY). */
static void test_errno_passthrough(void **state)
{
	char name[IOMMULU_LUO_SESSION_NAME_MAX + 1];
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC), out = -7;
	char buf[64];

	assert_true(fd >= 0);
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';

	assert_int_equal(iommulu_luo_session_create(fd, name, &out), -ENOTTY);
	assert_int_equal(iommulu_luo_session_retrieve(fd, "vm", &out), -ENOTTY);
	assert_int_equal(iommulu_luo_session_preserve_fd(fd, fd, 1), -ENOTTY);
	assert_int_equal(iommulu_luo_session_retrieve_fd(fd, 1, &out), -ENOTTY);
	assert_int_equal(iommulu_luo_session_finish(fd), -ENOTTY);
	assert_int_equal(iommulu_luo_session_get_name(fd, buf, sizeof(buf)), -ENOTTY);
	assert_int_equal(out, -7);
	close(fd);
}

static void test_is_session_real_fds(void **state)
{
	int p[2], fd;

	fd = test_memfd(4096, 0, true);
	assert_int_equal(iommulu_luo_is_session(fd), 0);
	close(fd);

	fd = eventfd(0, EFD_CLOEXEC);	/* anon_inode:[eventfd] */
	assert_true(fd >= 0);
	assert_int_equal(iommulu_luo_is_session(fd), 0);
	close(fd);

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(iommulu_luo_is_session(p[0]), 0);
	close(p[0]);
	close(p[1]);

	assert_int_equal(iommulu_luo_is_session(p[0]), -EBADF);
	assert_int_equal(iommulu_luo_is_session(-1), -EBADF);
}

static void test_is_session_faked(void **state)
{
	iommulu_fd_kind kind;
	int fd = eventfd(0, EFD_CLOEXEC);

	assert_true(fd >= 0);
	fake_session_fd = fd;

	fake_session_link = "anon_inode:[luo_session] vm1";
	assert_int_equal(iommulu_luo_is_session(fd), 1);
	assert_int_equal(iommulu_fd_classify(fd, &kind), 0);
	assert_int_equal(kind, IOMMULU_FD_LUO_SESSION);

	fake_session_link = "anon_inode:[luo_sessionX] vm1";
	assert_int_equal(iommulu_luo_is_session(fd), 0);
	fake_session_link = "anon_inode:[luo_session]";
	assert_int_equal(iommulu_luo_is_session(fd), 0);
	fake_session_link = "anon_inode:[liveupdate] vm1";
	assert_int_equal(iommulu_luo_is_session(fd), 0);
	assert_int_equal(iommulu_fd_classify(fd, &kind), 0);
	assert_int_equal(kind, IOMMULU_FD_OTHER);

	fake_session_fd = -1;
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_missing),
		cmocka_unit_test(test_open_override),
		cmocka_unit_test(test_open_default_path),
		cmocka_unit_test(test_arguments),
		cmocka_unit_test(test_errno_passthrough),
		cmocka_unit_test(test_is_session_real_fds),
		cmocka_unit_test(test_is_session_faked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
