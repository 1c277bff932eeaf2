/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small fd factories for unit tests (include after <cmocka.h>). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

/* A memfd of size bytes carrying exactly the seals given (plus the
 * F_SEAL_SEAL the kernel adds when sealing is not allowed). */
static inline int test_memfd(size_t size, unsigned seals, bool allow_sealing)
{
	int fd = memfd_create("test", MFD_CLOEXEC | (allow_sealing ? MFD_ALLOW_SEALING : 0));

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, (int)seals), 0);
	return fd;
}

/* A hugetlb memfd, or skip() the test with the reason. */
static inline int test_hugetlb_memfd_or_skip(void)
{
	int fd = memfd_create("test-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);

	if (fd < 0) {
		print_message("[  SKIPPED ] hugetlb memfds unavailable on this machine "
			      "(memfd_create(MFD_HUGETLB): %s)\n",
			      strerror(errno));
		skip();
	}
	return fd;
}

static inline int test_regular_file(void)
{
	char tmpl[] = "/tmp/iommulu-test-XXXXXX";
	int fd = mkostemp(tmpl, O_CLOEXEC);

	assert_true(fd >= 0);
	unlink(tmpl);
	assert_int_equal(ftruncate(fd, 4096), 0);
	return fd;
}
