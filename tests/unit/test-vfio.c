/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio module.
 *
 * Path lookups (BDF -> cdev, cdev fd -> BDF) run against a fake sysfs
 * tree (fake-sysfs.h), with harmless real char devices (/dev/null etc.)
 * standing in for vfio cdevs: the library only looks at their st_rdev.
 * The ioctls run against the ioctl mock, which checks each request byte
 * for byte.  Config space access goes through pread/pwrite at the offset
 * the region-info reply gives, so a regular file stands in for the device
 * fd there.
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
#include <unistd.h>

#include "fake-sysfs.h"
#include "iommulu/uapi.h"
#include "iommulu/vfio.h"
#include "mock.h"

#define BDF "0000:00:03.0"
#define CONFIG_OFFSET 0x1000	/* where the fake config region lives */

struct fixture {
	char *root;
	int dev_fd;		/* <root>/dev/vfio/devices/vfio3, a regular file */
	int iommufd;		/* any other fd */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	uint8_t config[256];
	char path[PATH_MAX];

	assert_non_null(f);
	f->root = fake_root_new();
	/* The device whose cdev /dev/null stands in for. */
	fake_pci_device(f->root, "/dev/null", 3, BDF, "vfio-pci", -1, false, "vfio-dev");
	/* /dev/full: a char device of another class. */
	fake_pci_device(f->root, "/dev/full", 4, "0000:00:04.0", "vfio-pci", -1, false, "misc");
	/* /dev/urandom: a vfio cdev whose device is not a PCI device. */
	fake_pci_device(f->root, "/dev/urandom", 5, "platform-dma0", "vfio-platform", -1, false,
			"vfio-dev");
	/* An unbound PCI device: no vfio-dev directory. */
	fake_mkdir(f->root, "sys/devices/pci0000:00/0000:00:05.0");
	fake_symlink(f->root, "../../../devices/pci0000:00/0000:00:05.0",
		     "sys/bus/pci/devices/0000:00:05.0");
	/* vfio-dev directory with nothing that looks like a cdev in it. */
	fake_mkdir(f->root, "sys/devices/pci0000:00/0000:00:06.0/vfio-dev/vfiox");
	fake_symlink(f->root, "../../../devices/pci0000:00/0000:00:06.0",
		     "sys/bus/pci/devices/0000:00:06.0");

	fake_mkdir(f->root, "dev/vfio/devices");
	fake_write(f->root, "", "dev/vfio/devices/vfio3");
	snprintf(path, sizeof(path), "%s/dev/vfio/devices/vfio3", f->root);
	f->dev_fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(f->dev_fd > 2);
	for (size_t i = 0; i < sizeof(config); i++)
		config[i] = (uint8_t)(0xff - i);
	assert_int_equal(pwrite(f->dev_fd, config, sizeof(config), CONFIG_OFFSET), sizeof(config));

	fake_write(f->root, "", "dev/iommu");
	snprintf(path, sizeof(path), "%s/dev/iommu", f->root);
	f->iommufd = open(path, O_RDWR | O_CLOEXEC);
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
	close(f->dev_fd);
	close(f->iommufd);
	fake_root_free(f->root);
	free(f);
	return err ? -1 : 0;
}

static void test_abi(void **state)
{
	assert_int_equal(sizeof(struct vfio_device_bind_iommufd), 24);
	assert_int_equal(sizeof(struct vfio_device_attach_iommufd_pt), 16);
	assert_int_equal(sizeof(struct vfio_device_detach_iommufd_pt), 12);
	assert_int_equal(sizeof(struct vfio_region_info), 32);
	assert_int_equal(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
	assert_int_equal(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
	assert_int_equal(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
	assert_int_equal(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
	assert_int_equal(IOMMULU_VFIO_PCI_CONFIG_REGION, VFIO_PCI_CONFIG_REGION_INDEX);
	assert_int_equal(IOMMULU_VFIO_PCI_BAR0_REGION, VFIO_PCI_BAR0_REGION_INDEX);
}

static void test_cdev_path(void **state)
{
	struct fixture *f = *state;
	char buf[PATH_MAX], want[PATH_MAX];

	assert_int_equal(iommulu_vfio_cdev_path(BDF, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/dev/vfio/devices/vfio3", f->root);
	assert_string_equal(buf, want);
}

static void test_cdev_path_errors(void **state)
{
	char buf[PATH_MAX];

	assert_int_equal(iommulu_vfio_cdev_path("0000:00:05.0", buf, sizeof(buf)), -ENODEV);
	assert_int_equal(iommulu_vfio_cdev_path("0000:00:06.0", buf, sizeof(buf)), -ENODEV);
	assert_int_equal(iommulu_vfio_cdev_path("0000:00:07.0", buf, sizeof(buf)), -ENODEV);
	assert_int_equal(iommulu_vfio_cdev_path("0000:00:03", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(iommulu_vfio_cdev_path("../../../../", buf, sizeof(buf)), -EINVAL);
	assert_int_equal(iommulu_vfio_cdev_path(NULL, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(iommulu_vfio_cdev_path(BDF, buf, 8), -ENAMETOOLONG);
	assert_int_equal(iommulu_vfio_cdev_path(BDF, NULL, 0), -EINVAL);
}

static void test_cdev_open(void **state)
{
	struct fixture *f = *state;
	char link[64], target[PATH_MAX], want[PATH_MAX];
	int fd = -1;
	ssize_t n;

	assert_int_equal(iommulu_vfio_cdev_open(BDF, &fd), 0);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	snprintf(want, sizeof(want), "%s/dev/vfio/devices/vfio3", f->root);
	assert_string_equal(target, want);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	close(fd);

	/* sysfs says vfio3 but the node is missing under $IOMMULU_DEV_ROOT */
	snprintf(target, sizeof(target), "%s/dev/vfio/devices/vfio3", f->root);
	assert_int_equal(unlink(target), 0);
	fd = -42;
	assert_int_equal(iommulu_vfio_cdev_open(BDF, &fd), -ENOENT);
	assert_int_equal(fd, -42);
	assert_int_equal(iommulu_vfio_cdev_open("0000:00:05.0", &fd), -ENODEV);
}

static void test_fd_to_bdf(void **state)
{
	char buf[IOMMULU_BDF_MAX];
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(iommulu_vfio_fd_to_bdf(fd, buf, sizeof(buf)), 0);
	assert_string_equal(buf, BDF);
	assert_int_equal(iommulu_vfio_fd_to_bdf(fd, buf, 5), -ENAMETOOLONG);
	close(fd);
}

static void test_fd_to_bdf_not_vfio(void **state)
{
	struct fixture *f = *state;
	char buf[IOMMULU_BDF_MAX];
	int fd;

	/* a regular file */
	assert_int_equal(iommulu_vfio_fd_to_bdf(f->dev_fd, buf, sizeof(buf)), -ENOTTY);
	/* a char device of another class */
	fd = open("/dev/full", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(iommulu_vfio_fd_to_bdf(fd, buf, sizeof(buf)), -ENOTTY);
	close(fd);
	/* a char device sysfs does not know */
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(iommulu_vfio_fd_to_bdf(fd, buf, sizeof(buf)), -ENOTTY);
	close(fd);
	/* a pipe */
	{
		int p[2];

		assert_int_equal(pipe2(p, O_CLOEXEC), 0);
		assert_int_equal(iommulu_vfio_fd_to_bdf(p[0], buf, sizeof(buf)), -ENOTTY);
		close(p[0]);
		close(p[1]);
	}
	assert_int_equal(iommulu_vfio_fd_to_bdf(-1, buf, sizeof(buf)), -EBADF);
}

static void test_fd_to_bdf_not_pci(void **state)
{
	char buf[IOMMULU_BDF_MAX] = "unchanged";
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(iommulu_vfio_fd_to_bdf(fd, buf, sizeof(buf)), -ENODEV);
	assert_string_equal(buf, "unchanged");
	close(fd);
}

static void test_bind_iommufd(void **state)
{
	struct fixture *f = *state;
	struct vfio_device_bind_iommufd want = {
		.argsz = 24, .flags = 0, .iommufd = f->iommufd,
	};
	struct vfio_device_bind_iommufd reply = want;
	uint32_t dev_id = 0;

	reply.out_devid = 5;
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_BIND_IOMMUFD,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
	assert_int_equal(iommulu_vfio_bind_iommufd(f->dev_fd, f->iommufd, &dev_id), 0);
	assert_int_equal(dev_id, 5);
	assert_mock_end();
}

static void test_bind_iommufd_errors(void **state)
{
	struct fixture *f = *state;
	struct vfio_device_bind_iommufd want = {
		.argsz = 24, .flags = 0, .iommufd = f->iommufd,
	};
	uint32_t dev_id = 42;

	/* already bound; device fd opened before the device was ready */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_BIND_IOMMUFD,
		.in = &want, .in_len = sizeof(want), .err = EBUSY,
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_BIND_IOMMUFD,
		.in = &want, .in_len = sizeof(want), .err = EINVAL,
	});
	assert_int_equal(iommulu_vfio_bind_iommufd(f->dev_fd, f->iommufd, &dev_id), -EBUSY);
	assert_int_equal(iommulu_vfio_bind_iommufd(f->dev_fd, f->iommufd, &dev_id), -EINVAL);
	assert_int_equal(dev_id, 42);
	/* no ioctl for these */
	assert_int_equal(iommulu_vfio_bind_iommufd(f->dev_fd, -1, &dev_id), -EBADF);
	assert_int_equal(iommulu_vfio_bind_iommufd(-1, f->iommufd, &dev_id), -EBADF);
	assert_int_equal(iommulu_vfio_bind_iommufd(f->dev_fd, f->iommufd, NULL), -EINVAL);
	assert_mock_end();
}

static void test_attach_detach(void **state)
{
	struct fixture *f = *state;
	struct vfio_device_attach_iommufd_pt attach = { .argsz = 16, .flags = 0, .pt_id = 11 };
	struct vfio_device_detach_iommufd_pt detach = { .argsz = 12, .flags = 0 };

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_ATTACH_IOMMUFD_PT,
		.in = &attach, .in_len = sizeof(attach),
		.out = &attach, .out_len = sizeof(attach),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_ATTACH_IOMMUFD_PT,
		.in = &attach, .in_len = sizeof(attach), .err = ENOENT,
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_DETACH_IOMMUFD_PT,
		.in = &detach, .in_len = sizeof(detach),
	});
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_DETACH_IOMMUFD_PT,
		.in = &detach, .in_len = sizeof(detach), .err = EINVAL,
	});
	assert_int_equal(iommulu_vfio_attach_pt(f->dev_fd, 11), 0);
	assert_int_equal(iommulu_vfio_attach_pt(f->dev_fd, 11), -ENOENT);
	assert_int_equal(iommulu_vfio_detach_pt(f->dev_fd), 0);
	assert_int_equal(iommulu_vfio_detach_pt(f->dev_fd), -EINVAL);
	assert_int_equal(iommulu_vfio_attach_pt(-1, 11), -EBADF);
	assert_int_equal(iommulu_vfio_detach_pt(-1), -EBADF);
	assert_mock_end();
}

static void expect_region_info(int fd, uint32_t index, uint32_t flags, uint64_t size,
			       uint64_t offset)
{
	struct vfio_region_info want = { .argsz = 32, .index = index };
	struct vfio_region_info reply = {
		.argsz = 32, .flags = flags, .index = index, .size = size, .offset = offset,
	};

	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = fd, .req = VFIO_DEVICE_GET_REGION_INFO,
		.in = &want, .in_len = sizeof(want),
		.out = &reply, .out_len = sizeof(reply),
	});
}

#define RW (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)

static void test_region_info(void **state)
{
	struct fixture *f = *state;
	struct vfio_region_info want = { .argsz = 32, .index = 9 };
	iommulu_vfio_region r = { .index = 1234 };

	expect_region_info(f->dev_fd, 0, RW | VFIO_REGION_INFO_FLAG_MMAP, 0x100000, 0);
	expect_region_info(f->dev_fd, 7, RW, 4096, 0x70000000000ull);
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_GET_REGION_INFO,
		.in = &want, .in_len = sizeof(want), .err = EINVAL,
	});

	assert_int_equal(iommulu_vfio_region_info(f->dev_fd, IOMMULU_VFIO_PCI_BAR0_REGION, &r), 0);
	assert_int_equal(r.index, 0);
	assert_int_equal(r.flags, RW | VFIO_REGION_INFO_FLAG_MMAP);
	assert_int_equal(r.size, 0x100000);
	assert_int_equal(r.offset, 0);

	assert_int_equal(iommulu_vfio_region_info(f->dev_fd, IOMMULU_VFIO_PCI_CONFIG_REGION, &r), 0);
	assert_int_equal(r.index, 7);
	assert_int_equal(r.flags, RW);
	assert_int_equal(r.size, 4096);
	assert_int_equal(r.offset, 0x70000000000ull);

	assert_int_equal(iommulu_vfio_region_info(f->dev_fd, 9, &r), -EINVAL);
	assert_int_equal(r.index, 7);	/* untouched */
	assert_int_equal(iommulu_vfio_region_info(f->dev_fd, 0, NULL), -EINVAL);
	assert_mock_end();
}

static void test_config_read(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[8];

	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, 0x10, buf, sizeof(buf)), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], (uint8_t)(0xff - (0x10 + i)));

	/* the last byte is inside, one more is not (no pread then) */
	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, 255, buf, 1), 0);
	assert_int_equal(buf[0], 0);
	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, 252, buf, 8), -ERANGE);
	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, UINT32_MAX, buf, 2), -ERANGE);

	/* region without the read flag */
	expect_region_info(f->dev_fd, 7, VFIO_REGION_INFO_FLAG_WRITE, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, 0, buf, 1), -EACCES);
	/* region info fails: passed through */
	mock_ioctl_expect(&(struct mock_ioctl){
		.fd = f->dev_fd, .req = VFIO_DEVICE_GET_REGION_INFO, .err = ENOTTY,
	});
	assert_int_equal(iommulu_vfio_config_read(f->dev_fd, 0, buf, 1), -ENOTTY);
	assert_mock_end();
}

static void test_config_write(void **state)
{
	struct fixture *f = *state;
	const uint8_t cmd[2] = { 0x06, 0x04 };	/* memory space + bus master */
	uint8_t back[4];

	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_write(f->dev_fd, 0x04, cmd, sizeof(cmd)), 0);
	assert_int_equal(pread(f->dev_fd, back, sizeof(back), CONFIG_OFFSET + 0x03), sizeof(back));
	assert_int_equal(back[0], 0xff - 0x03);	/* neighbours untouched */
	assert_int_equal(back[1], 0x06);
	assert_int_equal(back[2], 0x04);
	assert_int_equal(back[3], 0xff - 0x06);

	expect_region_info(f->dev_fd, 7, VFIO_REGION_INFO_FLAG_READ, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_write(f->dev_fd, 0x04, cmd, sizeof(cmd)), -EACCES);
	expect_region_info(f->dev_fd, 7, RW, 256, CONFIG_OFFSET);
	assert_int_equal(iommulu_vfio_config_write(f->dev_fd, 255, cmd, sizeof(cmd)), -ERANGE);
	assert_int_equal(pread(f->dev_fd, back, 1, CONFIG_OFFSET + 255), 1);
	assert_int_equal(back[0], 0);
	assert_int_equal(iommulu_vfio_config_write(f->dev_fd, 0, NULL, 1), -EINVAL);
	assert_mock_end();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_abi),
		cmocka_unit_test_setup_teardown(test_cdev_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cdev_path_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cdev_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_to_bdf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_to_bdf_not_vfio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_to_bdf_not_pci, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_iommufd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_iommufd_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_attach_detach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_write, setup, teardown),
	};

	return cmocka_run_group_tests_name("vfio", tests, NULL, NULL);
}
