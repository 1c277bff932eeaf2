/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * ioctl()/open() mock for the libiommulu unit tests, in the style of
 * libnvme's test/ioctl/mock.c.
 *
 * libmock-ioctl.so defines ioctl(), open(), open64(), openat(),
 * openat64(), __open_2() and __open64_2().  It is linked into each mock
 * test executable (for the mock_* API below) and, in the plain build, also
 * put in LD_PRELOAD by meson; either way its definitions come before
 * libc's in the global symbol search order, so libiommulu's calls reach it.
 * When not armed it forwards everything to the next definition (libc, or
 * the sanitizer runtime's interceptor, which forwards to libc).
 *
 * Use:
 *	mock_begin();
 *	mock_ioctl_expect(&(struct mock_ioctl){
 *		.fd = fd, .req = IOMMU_IOAS_ALLOC,
 *		.in = &expected_request, .in_len = sizeof(expected_request),
 *		.out = &reply, .out_len = sizeof(reply),
 *	});
 *	r = iommulu_iommufd_ioas_alloc(fd, &id);
 *	assert_mock_end();
 *
 * While armed (between mock_begin() and mock_end()) every ioctl() on an
 * fd > 2 must be the next expectation of the script, in order: same fd
 * (or, if .path is set, an fd whose /proc/self/fd link ends in .path), the
 * same request number, and an argument whose first .in_len bytes equal
 * .in.  The mock then copies .out_len bytes of .out over the argument and
 * returns .ret, or, if .err is non-zero, copies nothing and fails with
 * errno = .err.  A call that does not match fails with EPROTO and is
 * recorded; mock_end() reports it, and any expectation left unconsumed.
 * fds 0-2 pass through so that terminal queries by stdio never count.
 *
 * mock_open_fail() makes open() of one exact path fail with an errno a
 * given number of times (negative: every time) before it succeeds again;
 * this is how the tests make /dev/liveupdate "busy".
 *
 * Expectations are copied; .in and .out need not outlive the call.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOCK_BUF_MAX 512

struct mock_ioctl {
	int fd;
	const char *path;	/* optional: match the fd by its path suffix */
	unsigned long req;
	const void *in;
	size_t in_len;
	const void *out;
	size_t out_len;
	int ret;		/* return value when err == 0 */
	int err;		/* non-zero: return -1 with this errno */
};

/* Arm the mock with an empty script; forget earlier failures and open
 * rules. */
void mock_begin(void);

/* Append one expectation (aborts the process on a malformed one: a test
 * bug, not a library bug). */
void mock_ioctl_expect(const struct mock_ioctl *e);

/* Make open(path) fail with err the next `times` times (< 0: always). */
void mock_open_fail(const char *path, int err, int times);

/* Number of open() calls of path seen since mock_begin(). */
unsigned mock_open_count(const char *path);

/* Disarm.  NULL if every expectation was met and nothing unexpected
 * happened, else a description of the first problem (static storage,
 * valid until the next mock_begin()). */
const char *mock_end(void);

/* For cmocka tests (include <cmocka.h> first). */
#define assert_mock_end()					\
	do {							\
		const char *_mock_err = mock_end();		\
		if (_mock_err)					\
			fail_msg("ioctl mock: %s", _mock_err);	\
	} while (0)
