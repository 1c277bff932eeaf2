/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* memfd.c against the real kernel: creation, seals, kinds of non-memfds. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/stat.h>

#include "iommulu/memfd.h"
#include "memfd-internal.h"
#include "test-helpers.h"

static void test_create(void **state)
{
	uint64_t size = 0;
	unsigned missing = 99;
	struct stat st;
	int fd = -1;

	assert_int_equal(iommulu_memfd_create("ram", 2 * 1024 * 1024, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GET_SEALS), (int)IOMMULU_MEMFD_REQUIRED_SEALS);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 2 * 1024 * 1024);
	/* Sealed: cannot grow or shrink. */
	assert_int_equal(ftruncate(fd, 4096), -1);
	assert_int_equal(errno, EPERM);

	assert_int_equal(iommulu_memfd_check(fd, &size, &missing, NULL), 0);
	assert_int_equal(size, 2 * 1024 * 1024);
	assert_int_equal(missing, 0);
	close(fd);

	/* NULL name gets a default. */
	assert_int_equal(iommulu_memfd_create(NULL, 4096, &fd), 0);
	close(fd);
}

static void test_create_bad_size(void **state)
{
	int fd = -7;

	assert_int_equal(iommulu_memfd_create("x", 0, &fd), -EINVAL);
	assert_int_equal(iommulu_memfd_create("x", 4095, &fd), -EINVAL);
	assert_int_equal(iommulu_memfd_create("x", 4096 + 1, &fd), -EINVAL);
	assert_int_equal(iommulu_memfd_create("x", UINT64_MAX - 4095, &fd), -EINVAL);
	assert_int_equal(iommulu_memfd_create("x", 4096, NULL), -EINVAL);
	assert_int_equal(fd, -7);
}

static void test_check_sealed_preexisting(void **state)
{
	int fd = test_memfd(8192, IOMMULU_MEMFD_REQUIRED_SEALS, true);
	iommulu_error e = { "" };
	uint64_t size = 0;

	assert_int_equal(iommulu_memfd_check(fd, &size, NULL, &e), 0);
	assert_int_equal(size, 8192);
	close(fd);

	/* Extra seals (F_SEAL_WRITE) are fine. */
	fd = test_memfd(4096, IOMMULU_MEMFD_REQUIRED_SEALS | F_SEAL_WRITE, true);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, NULL), 0);
	close(fd);
}

static void test_check_unsealed(void **state)
{
	int fd = test_memfd(4096, 0, true);
	iommulu_error e = { "" };
	unsigned missing = 0;
	uint64_t size = 77;
	char want[128];

	assert_int_equal(iommulu_memfd_check(fd, &size, &missing, &e), -EPERM);
	assert_int_equal(missing, IOMMULU_MEMFD_REQUIRED_SEALS);
	assert_int_equal(size, 77);	/* untouched on failure */
	snprintf(want, sizeof(want), "fd %d lacks F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_GROW", fd);
	assert_string_equal(e.message, want);
	close(fd);
}

/* Each required seal missing on its own is named. */
static void test_check_each_missing_seal(void **state)
{
	static const struct {
		unsigned seal;
		const char *name;
	} seals[] = {
		{ F_SEAL_SEAL, "F_SEAL_SEAL" },
		{ F_SEAL_SHRINK, "F_SEAL_SHRINK" },
		{ F_SEAL_GROW, "F_SEAL_GROW" },
	};

	for (size_t i = 0; i < sizeof(seals) / sizeof(seals[0]); i++) {
		int fd = test_memfd(4096, IOMMULU_MEMFD_REQUIRED_SEALS & ~seals[i].seal, true);
		iommulu_error e = { "" };
		unsigned missing = 0;
		char want[128];

		assert_int_equal(iommulu_memfd_check(fd, NULL, &missing, &e), -EPERM);
		assert_int_equal(missing, seals[i].seal);
		snprintf(want, sizeof(want), "fd %d lacks %s", fd, seals[i].name);
		assert_string_equal(e.message, want);
		close(fd);
	}
}

/* Without MFD_ALLOW_SEALING the kernel sets F_SEAL_SEAL only. */
static void test_check_no_allow_sealing(void **state)
{
	int fd = test_memfd(4096, 0, false);
	unsigned missing = 0;

	assert_int_equal(iommulu_memfd_check(fd, NULL, &missing, NULL), -EPERM);
	assert_int_equal(missing, F_SEAL_SHRINK | F_SEAL_GROW);
	close(fd);
}

static void test_check_not_memfd(void **state)
{
	iommulu_error e = { "" };
	char want[64];
	int p[2], fd;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(iommulu_memfd_check(p[0], NULL, NULL, &e), -ENOTTY);
	snprintf(want, sizeof(want), "fd %d is not a memfd", p[0]);
	assert_string_equal(e.message, want);
	close(p[0]);
	close(p[1]);

	fd = test_regular_file();
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, NULL), -ENOTTY);
	close(fd);

	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, NULL), -ENOTTY);
	close(fd);

	fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, NULL), -ENOTTY);
	close(fd);
}

/* A file on a mounted tmpfs is shmem too, but not a memfd: st_dev differs. */
static void test_check_tmpfs_file(void **state)
{
	char path[] = "/dev/shm/iommulu-test-XXXXXX";
	int fd = mkostemp(path, O_CLOEXEC);

	if (fd < 0) {
		print_message("[  SKIPPED ] no writable /dev/shm: %s\n", strerror(errno));
		skip();
	}
	unlink(path);
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, NULL), -ENOTTY);
	close(fd);
}

static void test_check_bad_fd(void **state)
{
	iommulu_error e = { "" };
	int fd = test_memfd(4096, 0, true);

	close(fd);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, &e), -EBADF);
	assert_int_equal(iommulu_memfd_check(-1, NULL, NULL, NULL), -EBADF);
}

static void test_check_hugetlb(void **state)
{
	int fd = test_hugetlb_memfd_or_skip();
	iommulu_error e = { "" };
	memfd_kind kind;
	char want[64];

	assert_int_equal(memfd_classify(fd, &kind, NULL), 0);
	assert_int_equal(kind, MEMFD_KIND_HUGETLB);
	assert_int_equal(iommulu_memfd_check(fd, NULL, NULL, &e), -EOPNOTSUPP);
	snprintf(want, sizeof(want), "fd %d is a hugetlb memfd", fd);
	assert_string_equal(e.message, want);
	close(fd);
}

static void test_seals_to_string(void **state)
{
	char buf[128];

	assert_int_equal(iommulu_memfd_seals_to_string(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "none");
	assert_int_equal(iommulu_memfd_seals_to_string(IOMMULU_MEMFD_REQUIRED_SEALS, buf,
						       sizeof(buf)), 0);
	assert_string_equal(buf, "F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_GROW");
	assert_int_equal(iommulu_memfd_seals_to_string(F_SEAL_WRITE | 0x10 | 0x20, buf,
						       sizeof(buf)), 0);
	assert_string_equal(buf, "F_SEAL_WRITE|F_SEAL_FUTURE_WRITE|F_SEAL_EXEC");
	assert_int_equal(iommulu_memfd_seals_to_string(F_SEAL_GROW | 0x300, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "F_SEAL_GROW|0x300");
	assert_int_equal(iommulu_memfd_seals_to_string(0x100, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0x100");

	assert_int_equal(iommulu_memfd_seals_to_string(IOMMULU_MEMFD_REQUIRED_SEALS, buf, 12),
			 -ENOBUFS);
	assert_int_equal(iommulu_memfd_seals_to_string(0, buf, 4), -ENOBUFS);
	assert_int_equal(iommulu_memfd_seals_to_string(1, NULL, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_bad_size),
		cmocka_unit_test(test_check_sealed_preexisting),
		cmocka_unit_test(test_check_unsealed),
		cmocka_unit_test(test_check_each_missing_seal),
		cmocka_unit_test(test_check_no_allow_sealing),
		cmocka_unit_test(test_check_not_memfd),
		cmocka_unit_test(test_check_tmpfs_file),
		cmocka_unit_test(test_check_bad_fd),
		cmocka_unit_test(test_check_hugetlb),
		cmocka_unit_test(test_seals_to_string),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
