/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* common.c: name/BDF validation, version, and the internal helpers
 * (error messages, roots, char-device sysfs lookup, small-file reads). */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <sys/sysmacros.h>

#include "config.h"
#include "fake-sysfs.h"
#include "internal.h"
#include "iommulu/common.h"

static void test_vm_name(void **state)
{
	char name[IOMMULU_VM_NAME_MAX + 2];

	assert_true(iommulu_vm_name_is_valid("vm1"));
	assert_true(iommulu_vm_name_is_valid("A-b_c.9"));
	assert_true(iommulu_vm_name_is_valid(".vm"));
	assert_true(iommulu_vm_name_is_valid("..."));
	assert_true(iommulu_vm_name_is_valid("vm-"));
	assert_false(iommulu_vm_name_is_valid("."));
	assert_false(iommulu_vm_name_is_valid(".."));
	assert_false(iommulu_vm_name_is_valid("-rf"));
	assert_false(iommulu_vm_name_is_valid("-"));
	assert_false(iommulu_vm_name_is_valid(NULL));
	assert_false(iommulu_vm_name_is_valid(""));
	assert_false(iommulu_vm_name_is_valid("vm 1"));
	assert_false(iommulu_vm_name_is_valid("vm/1"));
	assert_false(iommulu_vm_name_is_valid("vm\n"));
	assert_false(iommulu_vm_name_is_valid("v\xc3\xa9"));

	memset(name, 'a', IOMMULU_VM_NAME_MAX);
	name[IOMMULU_VM_NAME_MAX] = '\0';
	assert_true(iommulu_vm_name_is_valid(name));
	name[IOMMULU_VM_NAME_MAX] = 'a';
	name[IOMMULU_VM_NAME_MAX + 1] = '\0';
	assert_false(iommulu_vm_name_is_valid(name));
}

static void test_bdf(void **state)
{
	assert_true(iommulu_bdf_is_valid("0000:00:03.0"));
	assert_true(iommulu_bdf_is_valid("0000:ff:1f.7"));
	assert_true(iommulu_bdf_is_valid("10000:00:00.0"));	/* VMD-style domain */
	assert_false(iommulu_bdf_is_valid(NULL));
	assert_false(iommulu_bdf_is_valid(""));
	assert_false(iommulu_bdf_is_valid("00:03.0"));		/* no domain */
	assert_false(iommulu_bdf_is_valid("0000:00:03"));	/* no function */
	assert_false(iommulu_bdf_is_valid("0000:00:03.8"));	/* function > 7 */
	assert_false(iommulu_bdf_is_valid("0000:00:20.0"));	/* device > 0x1f */
	assert_false(iommulu_bdf_is_valid("0000:0A:03.0"));	/* upper case */
	assert_false(iommulu_bdf_is_valid("0000:00:03.0\n"));
	assert_false(iommulu_bdf_is_valid("0000-00:03.0"));
	assert_false(iommulu_bdf_is_valid("000g:00:03.0"));
	assert_false(iommulu_bdf_is_valid("100000:00:00.0"));	/* 6-digit domain */
	assert_false(iommulu_bdf_is_valid("0000:00:03.0.0"));
}

static void test_version(void **state)
{
	assert_string_equal(iommulu_version(), PACKAGE_VERSION);
}

static void test_error_setf(void **state)
{
	iommulu_error e = { .message = "untouched" };
	char longer[2 * IOMMULU_ERROR_MAX];

	assert_int_equal(iommulu_error_setf(NULL, -EPERM, "x %d", 1), -EPERM);
	assert_int_equal(iommulu_error_setf(&e, -ENOENT, "field %s: %d", "a", 7), -ENOENT);
	assert_string_equal(e.message, "field a: 7");

	memset(longer, 'x', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	iommulu_error_setf(&e, -EINVAL, "%s", longer);
	assert_int_equal(strlen(e.message), IOMMULU_ERROR_MAX - 1);
}

static void test_roots(void **state)
{
	unsetenv("IOMMULU_SYSFS_ROOT");
	unsetenv("IOMMULU_DEV_ROOT");
	assert_string_equal(root_sysfs(), "/sys");
	assert_string_equal(root_dev(), "/dev");
	setenv("IOMMULU_SYSFS_ROOT", "/tmp/s", 1);
	setenv("IOMMULU_DEV_ROOT", "", 1);	/* empty means default */
	assert_string_equal(root_sysfs(), "/tmp/s");
	assert_string_equal(root_dev(), "/dev");
	unsetenv("IOMMULU_SYSFS_ROOT");
	unsetenv("IOMMULU_DEV_ROOT");
}

static void test_path_printf(void **state)
{
	char buf[8];

	assert_int_equal(path_printf(buf, sizeof(buf), "%s", "1234567"), 0);
	assert_string_equal(buf, "1234567");
	assert_int_equal(path_printf(buf, sizeof(buf), "%s", "12345678"), -ENAMETOOLONG);
}

static void test_fd_chardev(void **state)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC), p[2];
	dev_t rdev = 0;

	assert_true(fd >= 0);
	assert_int_equal(fd_chardev(fd, &rdev), 0);
	assert_int_equal(major(rdev), 1);
	assert_int_equal(minor(rdev), 3);
	close(fd);

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fd_chardev(p[0], &rdev), -ENOTTY);
	close(p[0]);
	close(p[1]);
	assert_int_equal(fd_chardev(p[0], &rdev), -EBADF);
	assert_int_equal(fd_chardev(-1, &rdev), -EBADF);
}

static void test_chardev_sysfs(void **state)
{
	char *root = fake_root_new(), buf[PATH_MAX], want[PATH_MAX];
	dev_t rdev = fake_rdev("/dev/zero");

	assert_int_equal(chardev_sysfs_path(rdev, NULL, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/sys/dev/char/1:5", root);
	assert_string_equal(buf, want);
	assert_int_equal(chardev_sysfs_path(rdev, "device", buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/sys/dev/char/1:5/device", root);
	assert_string_equal(buf, want);
	assert_int_equal(chardev_sysfs_path(rdev, "device", buf, 10), -ENAMETOOLONG);

	/* Unknown to (fake) sysfs. */
	assert_int_equal(chardev_subsystem(rdev, buf, sizeof(buf)), -ENOENT);

	fake_pci_device(root, "/dev/zero", 0, "0000:00:03.0", "vfio-pci", -1, false, "vfio-dev");
	assert_int_equal(chardev_subsystem(rdev, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "vfio-dev");
	assert_int_equal(chardev_subsystem(rdev, buf, 4), -ENAMETOOLONG);

	fake_root_free(root);
}

static void test_read_small_file(void **state)
{
	char *root = fake_root_new(), path[PATH_MAX];
	char *s = NULL;

	fake_write(root, "42\n", "one");
	snprintf(path, sizeof(path), "%s/one", root);
	assert_int_equal(read_small_file(path, 32, &s), 0);
	assert_string_equal(s, "42");
	free(s);
	s = NULL;

	fake_write(root, "no newline", "two");
	snprintf(path, sizeof(path), "%s/two", root);
	assert_int_equal(read_small_file(path, 32, &s), 0);
	assert_string_equal(s, "no newline");
	free(s);
	s = NULL;

	assert_int_equal(read_small_file(path, 4, &s), -EFBIG);
	assert_null(s);

	snprintf(path, sizeof(path), "%s/missing", root);
	assert_int_equal(read_small_file(path, 32, &s), -ENOENT);
	assert_null(s);

	fake_root_free(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vm_name),
		cmocka_unit_test(test_bdf),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_error_setf),
		cmocka_unit_test(test_roots),
		cmocka_unit_test(test_path_printf),
		cmocka_unit_test(test_fd_chardev),
		cmocka_unit_test(test_chardev_sysfs),
		cmocka_unit_test(test_read_small_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
