/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iommufd wrappers against the ioctl mock (tests/mock): each test scripts
 * the exact request the kernel must receive (byte for byte: size field,
 * ids, flags, iova, fd, zeroed reserved fields) and the kernel's reply.
 *
 * Expected sizes are literal numbers on purpose: they pin the ABI of
 * Linux 7.3 and of the series' MARK_PRESERVE, rather than repeating
 * sizeof() of the very struct under test.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake-sysfs.h"
#include "iommulu/iommufd.h"
#include "iommulu/uapi.h"
#include "mock.h"

struct fixture {
	char *root;	/* fake root; <root>/dev is $IOMMULU_DEV_ROOT */
	int iommufd;	/* fd of <root>/dev/iommu (a regular file) */
	int memfd;	/* any other fd, stands in for a guest-RAM memfd */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char path[PATH_MAX];

	assert_non_null(f);
	f->root = fake_root_new();
	fake_write(f->root, "", "dev/iommu");
	fake_write(f->root, "", "dev/guest-ram");
	snprintf(path, sizeof(path), "%s/dev/guest-ram", f->root);
	f->memfd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(f->memfd > 2);
	assert_int_equal(iommulu_iommufd_open(&f->iommufd), 0);
	assert_true(f->iommufd > 2);
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
	close(f->iommufd);
	close(f->memfd);
	fake_root_free(f->root);
	free(f);
	return err ? -1 : 0;
}

static void test_abi_sizes(void **state)
{
	assert_int_equal(sizeof(struct iommu_destroy), 8);
	assert_int_equal(sizeof(struct iommu_ioas_alloc), 12);
	assert_int_equal(sizeof(struct iommu_ioas_map_file), 40);
	assert_int_equal(sizeof(struct iommu_hwpt_alloc), 48);
	assert_int_equal(sizeof(struct iommu_hwpt_liveupdate_mark_preserve), 24);
	assert_int_equal(offsetof(struct iommu_hwpt_liveupdate_mark_preserve, hwpt_token), 8);
	assert_int_equal(offsetof(struct iommu_hwpt_liveupdate_mark_preserve, flags), 16);
	assert_int_equal(IOMMU_HWPT_LIVEUPDATE_UNMARK, 1);
	/* _IO(';', 0x80 + n): type 0x3b in bits 8-15, no size, no direction */
	assert_int_equal(IOMMU_DESTROY, 0x3b80);
	assert_int_equal(IOMMU_IOAS_ALLOC, 0x3b81);
	assert_int_equal(IOMMU_HWPT_ALLOC, 0x3b89);
	assert_int_equal(IOMMU_IOAS_MAP_FILE, 0x3b8f);
	assert_int_equal(IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, 0x3b96);
}

static void test_open(void **state)
{
	struct fixture *f = *state;
	char link[64], target[PATH_MAX], want[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", f->iommufd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	snprintf(want, sizeof(want), "%s/dev/iommu", f->root);
	assert_string_equal(target, want);
	/* O_CLOEXEC */
	assert_true(fcntl(f->iommufd, F_GETFD) & FD_CLOEXEC);
}

static void test_open_missing(void **state)
{
	struct fixture *f = *state;
	char path[PATH_MAX];
	int fd = -42;

	snprintf(path, sizeof(path), "%s/dev/iommu", f->root);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(iommulu_iommufd_open(&fd), -ENOENT);
	assert_int_equal(fd, -42);
	assert_int_equal(iommulu_iommufd_open(NULL), -EINVAL);
}

static void test_ioas_alloc(void **state)
{
	struct fixture *f = *state;
	struct iommu_ioas_alloc want = { .size = 12 };
	struct iommu_ioas_alloc reply = { .size = 12, .out_ioas_id = 7 };
	uint32_t id = 0;

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_ALLOC,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_iommufd_ioas_alloc(f->iommufd, &id), 0);
	assert_int_equal(id, 7);
	assert_mock_end();
}

static void test_ioas_alloc_errno(void **state)
{
	struct fixture *f = *state;
	struct iommu_ioas_alloc want = { .size = 12 };
	uint32_t id = 99;

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_ALLOC,
		.in = &want, .in_len = sizeof(want), .err = ENOMEM,
	});
	assert_int_equal(iommulu_iommufd_ioas_alloc(f->iommufd, &id), -ENOMEM);
	assert_int_equal(id, 99);	/* untouched on failure */
	assert_mock_end();
}

static void test_map_file_fixed(void **state)
{
	struct fixture *f = *state;
	const uint32_t flags = IOMMULU_MAP_FIXED_IOVA | IOMMULU_MAP_READABLE | IOMMULU_MAP_WRITEABLE;
	struct iommu_ioas_map_file want = {
		.size = 40,
		.flags = 0x7,
		.ioas_id = 7,
		.fd = f->memfd,
		.start = 0x1000,
		.length = 0x40000000,
		.iova = 0x100000000ull,
	};
	uint64_t iova = 0x100000000ull;

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_MAP_FILE,
		.in = &want, .in_len = sizeof(want),
		.out = &want, .out_len = sizeof(want),
	});
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 7, f->memfd, 0x1000, 0x40000000,
						       flags, &iova),
			 0);
	assert_int_equal(iova, 0x100000000ull);
	assert_mock_end();
}

static void test_map_file_kernel_picks_iova(void **state)
{
	struct fixture *f = *state;
	struct iommu_ioas_map_file want = {
		.size = 40,
		.flags = IOMMULU_MAP_READABLE,
		.ioas_id = 3,
		.fd = f->memfd,
		.start = 0,
		.length = 0x200000,
		.iova = 0,	/* the caller's stale value must not be sent */
	};
	struct iommu_ioas_map_file reply = want;
	uint64_t iova = 0xdeadbeef000ull;

	reply.iova = 0x7f0000200000ull;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_MAP_FILE,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 3, f->memfd, 0, 0x200000,
						       IOMMULU_MAP_READABLE, &iova),
			 0);
	assert_int_equal(iova, 0x7f0000200000ull);
	assert_mock_end();
}

static void test_map_file_errno(void **state)
{
	struct fixture *f = *state;
	struct iommu_ioas_map_file want = {
		.size = 40, .flags = 0x3, .ioas_id = 7, .fd = f->memfd,
		.start = 0, .length = 0x1000, .iova = 0x1234,
	};
	uint64_t iova = 0x1234;

	/* e.g. an unaligned fixed iova, and an overlapping one */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_MAP_FILE,
		.in = &want, .in_len = sizeof(want), .err = EINVAL,
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_IOAS_MAP_FILE,
		.in = &want, .in_len = sizeof(want), .err = EEXIST,
	});
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 7, f->memfd, 0, 0x1000, 0x3,
						       &iova),
			 -EINVAL);
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 7, f->memfd, 0, 0x1000, 0x3,
						       &iova),
			 -EEXIST);
	assert_int_equal(iova, 0x1234);
	assert_mock_end();
}

static void test_map_file_bad_args(void **state)
{
	struct fixture *f = *state;
	uint64_t iova = 0;

	/* refused before any ioctl: the mock is armed with an empty script */
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 7, f->memfd, 0, 0x1000, 0, NULL),
			 -EINVAL);
	assert_int_equal(iommulu_iommufd_ioas_map_file(f->iommufd, 7, -1, 0, 0x1000, 0, &iova),
			 -EBADF);
	assert_int_equal(iommulu_iommufd_ioas_map_file(-1, 7, f->memfd, 0, 0x1000, 0, &iova),
			 -EBADF);
	assert_mock_end();
}

static void test_hwpt_alloc(void **state)
{
	struct fixture *f = *state;
	struct iommu_hwpt_alloc want = {
		.size = 48,
		.flags = 0,
		.dev_id = 5,
		.pt_id = 7,
		.data_type = 0,	/* IOMMU_HWPT_DATA_NONE */
	};
	struct iommu_hwpt_alloc reply = want;
	uint32_t hwpt = 0;

	reply.out_hwpt_id = 11;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_ALLOC,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_iommufd_hwpt_alloc(f->iommufd, 5, 7, 0, &hwpt), 0);
	assert_int_equal(hwpt, 11);
	assert_mock_end();
}

static void test_hwpt_alloc_flags_and_errno(void **state)
{
	struct fixture *f = *state;
	struct iommu_hwpt_alloc want = {
		.size = 48,
		.flags = 0x2,	/* IOMMU_HWPT_ALLOC_DIRTY_TRACKING, passed as given */
		.dev_id = 1,
		.pt_id = 2,
	};
	uint32_t hwpt = 77;

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_ALLOC,
		.in = &want, .in_len = sizeof(want), .err = EOPNOTSUPP,
	});
	assert_int_equal(iommulu_iommufd_hwpt_alloc(f->iommufd, 1, 2, 0x2, &hwpt), -EOPNOTSUPP);
	assert_int_equal(hwpt, 77);
	assert_int_equal(iommulu_iommufd_hwpt_alloc(f->iommufd, 1, 2, 0, NULL), -EINVAL);
	assert_mock_end();
}

static void test_destroy(void **state)
{
	struct fixture *f = *state;
	struct iommu_destroy want = { .size = 8, .id = 11 };

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_DESTROY,
		.in = &want, .in_len = sizeof(want),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_DESTROY,
		.in = &want, .in_len = sizeof(want), .err = EBUSY,
	});
	assert_int_equal(iommulu_iommufd_destroy(f->iommufd, 11), 0);
	assert_int_equal(iommulu_iommufd_destroy(f->iommufd, 11), -EBUSY);
	assert_int_equal(iommulu_iommufd_destroy(-1, 11), -EBADF);
	assert_mock_end();
}

static void test_mark_preserve(void **state)
{
	struct fixture *f = *state;
	struct iommu_hwpt_liveupdate_mark_preserve want = {
		.size = 24,
		.hwpt_id = 11,
		.hwpt_token = 0x1122334455667788ull,
	};

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE,
		.in = &want, .in_len = sizeof(want),
	});
	assert_int_equal(iommulu_iommufd_hwpt_mark_preserve(f->iommufd, 11, 0x1122334455667788ull),
			 0);
	assert_mock_end();
}

static void test_unmark_preserve(void **state)
{
	struct fixture *f = *state;
	struct iommu_hwpt_liveupdate_mark_preserve want = {
		.size = 24, .hwpt_id = 11, .hwpt_token = 7,
		.flags = IOMMU_HWPT_LIVEUPDATE_UNMARK,
	};

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE,
		.in = &want, .in_len = sizeof(want),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE,
		.in = &want, .in_len = sizeof(want), .err = EBUSY,
	});
	assert_int_equal(iommulu_iommufd_hwpt_unmark_preserve(f->iommufd, 11, 7), 0);
	assert_int_equal(iommulu_iommufd_hwpt_unmark_preserve(f->iommufd, 11, 7), -EBUSY);
	assert_mock_end();
}

/* Each documented kernel answer comes back unchanged. */
static void test_mark_preserve_errnos(void **state)
{
	struct fixture *f = *state;
	static const int errs[] = { ENOTTY, EINVAL, EADDRINUSE, E2BIG, ENOENT };
	struct iommu_hwpt_liveupdate_mark_preserve want = {
		.size = 24, .hwpt_id = 4, .hwpt_token = 9,
	};

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		mock_ioctl_expect(&(struct mock_ioctl){
			.path = "/dev/iommu", .req = IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE,
			.in = &want, .in_len = sizeof(want), .err = errs[i],
		});
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		assert_int_equal(iommulu_iommufd_hwpt_mark_preserve(f->iommufd, 4, 9), -errs[i]);
	assert_mock_end();
}

/* The mock itself must catch a wrong request: otherwise every test above
 * could pass vacuously. */
static void test_mock_catches_mismatch(void **state)
{
	struct fixture *f = *state;
	struct iommu_hwpt_liveupdate_mark_preserve want = {
		.size = 24, .hwpt_id = 4, .hwpt_token = 9,
	};
	const char *err;

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE,
		.in = &want, .in_len = sizeof(want),
	});
	/* token 10 instead of 9 */
	assert_int_equal(iommulu_iommufd_hwpt_mark_preserve(f->iommufd, 4, 10), -EPROTO);
	err = mock_end();
	assert_non_null(err);
	assert_non_null(strstr(err, "byte 8"));

	mock_begin();
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->iommufd, .req = IOMMU_DESTROY,
	});
	err = mock_end();	/* never made */
	assert_non_null(err);
	assert_non_null(strstr(err, "not made"));

	mock_begin();
	assert_int_equal(iommulu_iommufd_destroy(f->iommufd, 1), -EPROTO);	/* not scripted */
	err = mock_end();
	assert_non_null(err);
	assert_non_null(strstr(err, "not in the script"));
	mock_begin();
}

/*
 * Against the real kernel, where this machine has /dev/iommu (the
 * virtual host does; a build box without CONFIG_IOMMUFD skips).  The mock
 * is loaded but not armed, so it forwards every call to libc.
 */
static void test_real_kernel(void **state)
{
	uint32_t ioas = 0;
	uint64_t iova = 0;
	int fd = -1, memfd, r;

	unsetenv("IOMMULU_DEV_ROOT");
	r = iommulu_iommufd_open(&fd);
	if (r == -ENOENT || r == -ENODEV || r == -EACCES || r == -EPERM)
		skip();
	assert_int_equal(r, 0);

	assert_int_equal(iommulu_iommufd_ioas_alloc(fd, &ioas), 0);
	assert_true(ioas > 0);

	memfd = memfd_create("iommulu-test-ram", MFD_CLOEXEC);
	assert_true(memfd >= 0);
	assert_int_equal(ftruncate(memfd, 2 << 20), 0);
	r = iommulu_iommufd_ioas_map_file(fd, ioas, memfd, 0, 2 << 20,
					  IOMMULU_MAP_READABLE | IOMMULU_MAP_WRITEABLE, &iova);
	/* IOMMU_IOAS_MAP_FILE is 6.13+; older kernels say ENOTTY */
	assert_true(r == 0 || r == -ENOTTY);
	close(memfd);

	/* An IOAS is not a paging HWPT: EINVAL on a kernel with the series,
	 * ENOTTY on one without. */
	r = iommulu_iommufd_hwpt_mark_preserve(fd, ioas, 1);
	assert_true(r == -EINVAL || r == -ENOTTY);

	assert_int_equal(iommulu_iommufd_destroy(fd, ioas), 0);
	assert_int_equal(iommulu_iommufd_destroy(fd, ioas), -ENOENT);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_abi_sizes),
		cmocka_unit_test_setup_teardown(test_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ioas_alloc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ioas_alloc_errno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_file_fixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_file_kernel_picks_iova, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_file_errno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_file_bad_args, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hwpt_alloc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hwpt_alloc_flags_and_errno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mark_preserve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unmark_preserve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mark_preserve_errnos, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mock_catches_mismatch, setup, teardown),
		cmocka_unit_test(test_real_kernel),
	};

	return cmocka_run_group_tests_name("iommufd", tests, NULL, NULL);
}
