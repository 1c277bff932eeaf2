/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The /dev/liveupdate ioctl wrappers of luo.c against the ioctl mock.
 *
 * /dev/liveupdate is a regular file under a temporary root, selected with
 * $IOMMULU_LIVEUPDATE_DEV; its EBUSY (another process holds it) comes
 * from the mock's open() rules.  Session fds are plain files: the mock
 * answers their ioctls.  Sizes and ioctl numbers are literals so they pin
 * Linux 7.3's include/uapi/linux/liveupdate.h.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fake-sysfs.h"
#include "iommulu/luo.h"
#include "iommulu/uapi.h"
#include "mock.h"

struct fixture {
	char *root;
	char luo_path[PATH_MAX];
	int luo_fd;		/* <root>/dev/liveupdate, a regular file */
	int session_fd;		/* <root>/dev/session */
	int other_fd;		/* an fd to preserve / to hand out as a reply */
};

static int open_under(const char *root, const char *rel)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	return open(path, O_RDWR | O_CLOEXEC);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->root = fake_root_new();
	fake_write(f->root, "", "dev/liveupdate");
	fake_write(f->root, "", "dev/session");
	fake_write(f->root, "", "dev/other");
	snprintf(f->luo_path, sizeof(f->luo_path), "%s/dev/liveupdate", f->root);
	setenv("IOMMULU_LIVEUPDATE_DEV", f->luo_path, 1);
	f->luo_fd = open_under(f->root, "dev/liveupdate");
	f->session_fd = open_under(f->root, "dev/session");
	f->other_fd = open_under(f->root, "dev/other");
	assert_true(f->luo_fd > 2 && f->session_fd > 2 && f->other_fd > 2);
	mock_begin();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	const char *err = mock_end();

	if (err)
		fprintf(stderr, "ioctl mock left over: %s\n", err);
	close(f->luo_fd);
	close(f->session_fd);
	close(f->other_fd);
	unsetenv("IOMMULU_LIVEUPDATE_DEV");
	fake_root_free(f->root);
	free(f);
	return err ? -1 : 0;
}

static void test_abi(void **state)
{
	assert_int_equal(LIVEUPDATE_IOCTL_CREATE_SESSION, 0xba00);
	assert_int_equal(LIVEUPDATE_IOCTL_RETRIEVE_SESSION, 0xba01);
	assert_int_equal(LIVEUPDATE_SESSION_PRESERVE_FD, 0xba40);
	assert_int_equal(LIVEUPDATE_SESSION_RETRIEVE_FD, 0xba41);
	assert_int_equal(LIVEUPDATE_SESSION_FINISH, 0xba42);
	assert_int_equal(LIVEUPDATE_SESSION_GET_NAME, 0xba43);
	assert_int_equal(sizeof(struct liveupdate_ioctl_create_session), 72);
	assert_int_equal(sizeof(struct liveupdate_ioctl_retrieve_session), 72);
	assert_int_equal(sizeof(struct liveupdate_session_preserve_fd), 16);
	assert_int_equal(sizeof(struct liveupdate_session_retrieve_fd), 16);
	assert_int_equal(sizeof(struct liveupdate_session_finish), 8);
	assert_int_equal(sizeof(struct liveupdate_session_get_name), 72);
	assert_int_equal(IOMMULU_LUO_SESSION_NAME_MAX + 1, LIVEUPDATE_SESSION_NAME_LENGTH);
}

/* ---- iommulu_luo_open ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void test_open(void **state)
{
	struct fixture *f = *state;
	char link[64], target[PATH_MAX];
	ssize_t n;
	int fd;

	mock_open_fail(f->luo_path, EBUSY, 0);	/* count only */
	fd = iommulu_luo_open(1000);
	assert_true(fd > 2);
	assert_int_equal(mock_open_count(f->luo_path), 1);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(target, f->luo_path);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	close(fd);
	assert_mock_end();
}

static void test_open_missing(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(unlink(f->luo_path), 0);
	mock_open_fail(f->luo_path, EBUSY, 0);
	assert_int_equal(iommulu_luo_open(1000), -ENOENT);
	assert_int_equal(mock_open_count(f->luo_path), 1);	/* no retry */
	assert_mock_end();
}

static void test_open_other_error_not_retried(void **state)
{
	struct fixture *f = *state;

	mock_open_fail(f->luo_path, EACCES, -1);
	assert_int_equal(iommulu_luo_open(1000), -EACCES);
	assert_int_equal(mock_open_count(f->luo_path), 1);
	assert_mock_end();
}

/* PID 1 holds it for a moment: busy three times, then free. */
static void test_open_busy_then_free(void **state)
{
	struct fixture *f = *state;
	int fd;

	mock_open_fail(f->luo_path, EBUSY, 3);
	fd = iommulu_luo_open(5000);
	assert_true(fd > 2);
	assert_int_equal(mock_open_count(f->luo_path), 4);
	close(fd);
	assert_mock_end();
}

/* Busy for good: give up with -EBUSY once the timeout has passed, not
 * before and not much after. */
static void test_open_busy_gives_up(void **state)
{
	struct fixture *f = *state;
	uint64_t t0, elapsed;
	unsigned tries;

	mock_open_fail(f->luo_path, EBUSY, -1);
	t0 = now_ms();
	assert_int_equal(iommulu_luo_open(200), -EBUSY);
	elapsed = now_ms() - t0;
	tries = mock_open_count(f->luo_path);
	assert_true(elapsed >= 200);
	assert_true(elapsed < 5000);	/* bounded; generous for a loaded CI box */
	assert_true(tries >= 3);	/* it did retry ... */
	assert_true(tries <= 200);	/* ... with a backoff, not a busy loop */
	assert_mock_end();
}

static void test_open_busy_timeout_zero(void **state)
{
	struct fixture *f = *state;

	mock_open_fail(f->luo_path, EBUSY, -1);
	assert_int_equal(iommulu_luo_open(0), -EBUSY);
	assert_int_equal(mock_open_count(f->luo_path), 1);
	assert_mock_end();
}

/* ---- create / retrieve session ---- */

static void session_req(struct liveupdate_ioctl_create_session *req, const char *name)
{
	memset(req, 0, sizeof(*req));
	req->size = 72;
	req->fd = -1;
	memcpy(req->name, name, strlen(name));	/* rest stays zero: NUL-terminated */
}

static void test_session_create(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_ioctl_create_session want, reply;
	int new_fd = dup(f->other_fd), sfd = -1;

	assert_true(new_fd > 2);
	session_req(&want, "vm-alpha");
	reply = want;
	reply.fd = new_fd;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_CREATE_SESSION,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, "vm-alpha", &sfd), 0);
	assert_int_equal(sfd, new_fd);
	close(sfd);
	assert_mock_end();
}

static void test_session_create_longest_name(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_ioctl_create_session want, reply;
	char name[IOMMULU_LUO_SESSION_NAME_MAX + 1];
	int new_fd = dup(f->other_fd), sfd = -1;

	memset(name, 'n', IOMMULU_LUO_SESSION_NAME_MAX);
	name[IOMMULU_LUO_SESSION_NAME_MAX] = '\0';
	session_req(&want, name);
	assert_int_equal(want.name[63], 0);
	reply = want;
	reply.fd = new_fd;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_CREATE_SESSION,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, name, &sfd), 0);
	assert_int_equal(sfd, new_fd);
	close(sfd);
	assert_mock_end();
}

/* Refused before the ioctl: the mock is armed with an empty script, so
 * any ioctl would be reported. */
static void test_session_bad_names(void **state)
{
	struct fixture *f = *state;
	char name[IOMMULU_LUO_SESSION_NAME_MAX + 2];
	int sfd = -42;

	memset(name, 'n', IOMMULU_LUO_SESSION_NAME_MAX + 1);
	name[IOMMULU_LUO_SESSION_NAME_MAX + 1] = '\0';
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, name, &sfd), -EINVAL);
	assert_int_equal(iommulu_luo_session_retrieve(f->luo_fd, name, &sfd), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, "", &sfd), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, NULL, &sfd), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, "vm", NULL), -EINVAL);
	assert_int_equal(iommulu_luo_session_create(-1, "vm", &sfd), -EBADF);
	assert_int_equal(sfd, -42);
	assert_mock_end();
}

static void test_session_create_errno(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_ioctl_create_session want;
	int sfd = -42;

	session_req(&want, "vm-alpha");
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_CREATE_SESSION,
		.in = &want, .in_len = sizeof(want), .err = EEXIST,
	});
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, "vm-alpha", &sfd), -EEXIST);
	assert_int_equal(sfd, -42);
	assert_mock_end();
}

static void test_session_retrieve(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_ioctl_create_session want, reply;
	int new_fd = dup(f->other_fd), sfd = -42;

	/* create and retrieve share a layout */
	session_req(&want, "vm-beta");
	reply = want;
	reply.fd = new_fd;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
		.in = &want, .in_len = sizeof(want), .err = ENOENT,
	});
	assert_int_equal(iommulu_luo_session_retrieve(f->luo_fd, "vm-beta", &sfd), 0);
	assert_int_equal(sfd, new_fd);
	close(sfd);
	sfd = -42;
	assert_int_equal(iommulu_luo_session_retrieve(f->luo_fd, "vm-beta", &sfd), -ENOENT);
	assert_int_equal(sfd, -42);
	assert_mock_end();
}

/* A kernel that "succeeds" without an fd is a protocol error, not a
 * session fd of -1. */
static void test_session_reply_without_fd(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_ioctl_create_session want;
	int sfd = -42;

	session_req(&want, "vm-alpha");
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->luo_fd, .req = LIVEUPDATE_IOCTL_CREATE_SESSION,
		.in = &want, .in_len = sizeof(want),
		.out = &want, .out_len = sizeof(want),	/* fd stays -1 */
	});
	assert_int_equal(iommulu_luo_session_create(f->luo_fd, "vm-alpha", &sfd), -EIO);
	assert_int_equal(sfd, -42);
	assert_mock_end();
}

/* ---- session fd ioctls ---- */

static void test_preserve_fd(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_session_preserve_fd want = {
		.size = 16, .fd = f->other_fd, .token = 0xfedcba9876543210ull,
	};

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_PRESERVE_FD,
		.in = &want, .in_len = sizeof(want),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_PRESERVE_FD,
		.in = &want, .in_len = sizeof(want), .err = EEXIST,
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_PRESERVE_FD,
		.in = &want, .in_len = sizeof(want), .err = EOPNOTSUPP,
	});
	assert_int_equal(
		iommulu_luo_session_preserve_fd(f->session_fd, f->other_fd, 0xfedcba9876543210ull),
		0);
	assert_int_equal(
		iommulu_luo_session_preserve_fd(f->session_fd, f->other_fd, 0xfedcba9876543210ull),
		-EEXIST);
	assert_int_equal(
		iommulu_luo_session_preserve_fd(f->session_fd, f->other_fd, 0xfedcba9876543210ull),
		-EOPNOTSUPP);
	assert_int_equal(iommulu_luo_session_preserve_fd(f->session_fd, -1, 1), -EBADF);
	assert_int_equal(iommulu_luo_session_preserve_fd(-1, f->other_fd, 1), -EBADF);
	assert_mock_end();
}

static void test_retrieve_fd(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_session_retrieve_fd want = { .size = 16, .fd = -1, .token = 3 };
	struct liveupdate_session_retrieve_fd reply = want;
	int new_fd = dup(f->other_fd), fd = -42;

	reply.fd = new_fd;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_RETRIEVE_FD,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_RETRIEVE_FD,
		.in = &want, .in_len = sizeof(want), .err = ENOENT,
	});
	assert_int_equal(iommulu_luo_session_retrieve_fd(f->session_fd, 3, &fd), 0);
	assert_int_equal(fd, new_fd);
	close(fd);
	fd = -42;
	assert_int_equal(iommulu_luo_session_retrieve_fd(f->session_fd, 3, &fd), -ENOENT);
	assert_int_equal(fd, -42);
	assert_int_equal(iommulu_luo_session_retrieve_fd(f->session_fd, 3, NULL), -EINVAL);
	assert_mock_end();
}

static void test_finish(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_session_finish want = { .size = 8 };

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_FINISH,
		.in = &want, .in_len = sizeof(want),
	});
	/* e.g. a file handler's can_finish said not yet */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_FINISH,
		.in = &want, .in_len = sizeof(want), .err = EBUSY,
	});
	assert_int_equal(iommulu_luo_session_finish(f->session_fd), 0);
	assert_int_equal(iommulu_luo_session_finish(f->session_fd), -EBUSY);
	assert_int_equal(iommulu_luo_session_finish(-1), -EBADF);
	assert_mock_end();
}

static void test_get_name(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_session_get_name want = { .size = 72 };
	struct liveupdate_session_get_name reply = { .size = 72 };
	char buf[IOMMULU_LUO_SESSION_NAME_MAX + 1] = "", small[4] = "abc";

	memcpy(reply.name, "vm-alpha", 8);
	for (int i = 0; i < 2; i++)
		mock_ioctl_expect(&(struct mock_ioctl){
			.fd = f->session_fd, .req = LIVEUPDATE_SESSION_GET_NAME,
			.in = &want, .in_len = sizeof(want),
			.out = &reply, .out_len = sizeof(reply),
		});
	assert_int_equal(iommulu_luo_session_get_name(f->session_fd, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "vm-alpha");
	assert_int_equal(iommulu_luo_session_get_name(f->session_fd, small, sizeof(small)),
			 -ERANGE);
	assert_string_equal(small, "abc");
	assert_mock_end();
}

static void test_get_name_errors(void **state)
{
	struct fixture *f = *state;
	struct liveupdate_session_get_name want = { .size = 72 };
	struct liveupdate_session_get_name bad = { .size = 72 };
	char buf[IOMMULU_LUO_SESSION_NAME_MAX + 1] = "";

	memset(bad.name, 'x', sizeof(bad.name));	/* no NUL */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_GET_NAME,
		.in = &want, .in_len = sizeof(want),
		.out = &bad, .out_len = sizeof(bad),
	});
	/* /dev/liveupdate itself, or an old kernel without GET_NAME */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->session_fd, .req = LIVEUPDATE_SESSION_GET_NAME,
		.in = &want, .in_len = sizeof(want), .err = ENOTTY,
	});
	assert_int_equal(iommulu_luo_session_get_name(f->session_fd, buf, sizeof(buf)), -EIO);
	assert_int_equal(iommulu_luo_session_get_name(f->session_fd, buf, sizeof(buf)), -ENOTTY);
	assert_string_equal(buf, "");
	assert_int_equal(iommulu_luo_session_get_name(f->session_fd, NULL, 0), -EINVAL);
	assert_mock_end();
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_abi),
		T(test_open),
		T(test_open_missing),
		T(test_open_other_error_not_retried),
		T(test_open_busy_then_free),
		T(test_open_busy_gives_up),
		T(test_open_busy_timeout_zero),
		T(test_session_create),
		T(test_session_create_longest_name),
		T(test_session_bad_names),
		T(test_session_create_errno),
		T(test_session_retrieve),
		T(test_session_reply_without_fd),
		T(test_preserve_fd),
		T(test_retrieve_fd),
		T(test_finish),
		T(test_get_name),
		T(test_get_name_errors),
	};
#undef T

	return cmocka_run_group_tests_name("luo-ioctl", tests, NULL, NULL);
}
