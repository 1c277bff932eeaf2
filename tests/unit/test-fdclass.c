/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* fdclass.c: real memfds, pipes, files, sockets, anon inodes; fake
 * /sys and /dev trees for iommufd and vfio cdevs. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/eventfd.h>
#include <sys/socket.h>

#include "fake-sysfs.h"
#include "internal.h"
#include "iommulu/fdclass.h"
#include "iommulu/memfd.h"
#include "test-helpers.h"

static iommulu_fd_kind classify(int fd)
{
	iommulu_fd_kind k = (iommulu_fd_kind)-1;

	assert_int_equal(iommulu_fd_classify(fd, &k), 0);
	return k;
}

static int open_dev(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

static void test_memfds(void **state)
{
	int fd;

	assert_int_equal(iommulu_memfd_create("ram", 4096, &fd), 0);
	assert_int_equal(classify(fd), IOMMULU_FD_MEMFD);
	close(fd);

	/* Unsealed memfds are memfds too: eligibility is plan's business. */
	fd = test_memfd(4096, 0, false);
	assert_int_equal(classify(fd), IOMMULU_FD_MEMFD);
	close(fd);
}

static void test_hugetlb(void **state)
{
	int fd = test_hugetlb_memfd_or_skip();

	assert_int_equal(classify(fd), IOMMULU_FD_MEMFD_HUGETLB);
	close(fd);
}

static void test_other(void **state)
{
	int p[2], s[2], fd;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(classify(p[0]), IOMMULU_FD_OTHER);
	assert_int_equal(classify(p[1]), IOMMULU_FD_OTHER);
	close(p[0]);
	close(p[1]);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
	assert_int_equal(classify(s[0]), IOMMULU_FD_OTHER);
	close(s[0]);
	close(s[1]);

	fd = test_regular_file();
	assert_int_equal(classify(fd), IOMMULU_FD_OTHER);
	close(fd);

	/* An anon inode, but not a LUO session. */
	fd = eventfd(0, EFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(classify(fd), IOMMULU_FD_OTHER);
	close(fd);

	fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(classify(fd), IOMMULU_FD_OTHER);
	close(fd);
}

/* The link names of anon-inode files: a restored iommufd and a LUO
 * session are recognised, nothing else. */
static void test_anon_links(void **state)
{
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[iommufd]"), IOMMULU_FD_IOMMUFD);
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[luo_session] iommulu.1.vm1"),
			 IOMMULU_FD_LUO_SESSION);
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[iommufd] x"), IOMMULU_FD_OTHER);
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[iommufd"), IOMMULU_FD_OTHER);
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[luo_session]"), IOMMULU_FD_OTHER);
	assert_int_equal(fdclass_anon_link_kind("anon_inode:[eventfd]"), IOMMULU_FD_OTHER);
	assert_int_equal(fdclass_anon_link_kind("/dev/iommu"), IOMMULU_FD_OTHER);
	assert_int_equal(fdclass_anon_link_kind(""), IOMMULU_FD_OTHER);
}

/* With the real /sys and /dev, /dev/null is just a char device. */
static void test_real_chardev(void **state)
{
	int fd = open_dev("/dev/null");

	unsetenv("IOMMULU_SYSFS_ROOT");
	unsetenv("IOMMULU_DEV_ROOT");
	assert_int_equal(classify(fd), IOMMULU_FD_OTHER);
	close(fd);
}

static void test_fake_iommufd(void **state)
{
	char *root = fake_root_new();
	int null_fd = open_dev("/dev/null"), zero_fd = open_dev("/dev/zero");

	/* No <dev>/iommu at all: not an iommufd. */
	assert_int_equal(classify(null_fd), IOMMULU_FD_OTHER);

	fake_iommu(root, "/dev/null");
	assert_int_equal(classify(null_fd), IOMMULU_FD_IOMMUFD);
	assert_int_equal(classify(zero_fd), IOMMULU_FD_OTHER);

	close(null_fd);
	close(zero_fd);
	fake_root_free(root);
}

static void test_fake_vfio_cdev(void **state)
{
	char *root = fake_root_new();
	int zero_fd = open_dev("/dev/zero"), full_fd = open_dev("/dev/full");

	assert_int_equal(classify(zero_fd), IOMMULU_FD_OTHER);

	fake_pci_device(root, "/dev/zero", 0, "0000:00:03.0", "vfio-pci", -1, false, "vfio-dev");
	assert_int_equal(classify(zero_fd), IOMMULU_FD_VFIO_CDEV);
	assert_int_equal(classify(full_fd), IOMMULU_FD_OTHER);

	/* Same layout, but another class: not a vfio cdev. */
	fake_pci_device(root, "/dev/full", 1, "0000:00:04.0", "vfio-pci", -1, false, "misc");
	assert_int_equal(classify(full_fd), IOMMULU_FD_OTHER);

	close(zero_fd);
	close(full_fd);
	fake_root_free(root);
}

static void test_bad_fd(void **state)
{
	iommulu_fd_kind k = IOMMULU_FD_MEMFD;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[0]);
	close(p[1]);
	assert_int_equal(iommulu_fd_classify(p[0], &k), -EBADF);
	assert_int_equal(iommulu_fd_classify(-1, &k), -EBADF);
	assert_int_equal(k, IOMMULU_FD_MEMFD);	/* untouched */
	assert_int_equal(iommulu_fd_classify(0, NULL), -EINVAL);
}

static void test_kind_to_string(void **state)
{
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_OTHER), "other");
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_MEMFD), "memfd");
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_MEMFD_HUGETLB), "hugetlb-memfd");
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_IOMMUFD), "iommufd");
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_VFIO_CDEV), "vfio-cdev");
	assert_string_equal(iommulu_fd_kind_to_string(IOMMULU_FD_LUO_SESSION), "luo-session");
	assert_null(iommulu_fd_kind_to_string(_IOMMULU_FD_KIND_MAX));
	assert_null(iommulu_fd_kind_to_string((iommulu_fd_kind)-1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memfds),
		cmocka_unit_test(test_hugetlb),
		cmocka_unit_test(test_other),
		cmocka_unit_test(test_anon_links),
		cmocka_unit_test(test_real_chardev),
		cmocka_unit_test(test_fake_iommufd),
		cmocka_unit_test(test_fake_vfio_cdev),
		cmocka_unit_test(test_bad_fd),
		cmocka_unit_test(test_kind_to_string),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
