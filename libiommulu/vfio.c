/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio device cdevs (/dev/vfio/devices/vfioN) of PCI devices.
 *
 * Finding the cdev:   <sysfs>/bus/pci/devices/BDF/vfio-dev/vfioN
 *                       -> <dev>/vfio/devices/vfioN
 * And back, fd -> BDF: fstat st_rdev -> <sysfs>/dev/char/MAJ:MIN, whose
 * "subsystem" link must name the vfio-dev class and whose "device" link
 * points at the PCI device directory, named after its BDF.
 *
 * ioctls use argsz = sizeof(struct) and flags = 0 and pass the kernel's
 * errno through.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/uapi.h"
#include "iommulu/vfio.h"
#include "pci-internal.h"

static int vfio_ioctl(int device_fd, unsigned long request, void *arg)
{
	if (device_fd < 0)
		return -EBADF;
	if (ioctl(device_fd, request, arg) < 0)
		return negative_errno();
	return 0;
}

/* "vfio" followed by one or more decimal digits. */
static bool vfio_cdev_name_is_valid(const char *name)
{
	const char *p = startswith(name, "vfio");

	if (!p || !*p)
		return false;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

_public_ int iommulu_vfio_cdev_path(const char *bdf, char *buf, size_t len)
{
	_cleanup_closedir_ DIR *d = NULL;
	char path[PATH_MAX];
	struct dirent *de;
	int r;

	if (!buf || len == 0)
		return -EINVAL;
	r = pci_device_path(bdf, "vfio-dev", path, sizeof(path));
	if (r < 0)
		return r;
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? -ENODEV : negative_errno();
	/* A device has at most one vfio cdev; take the first. */
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			return errno ? negative_errno() : -ENODEV;
		if (vfio_cdev_name_is_valid(de->d_name))
			break;
	}
	return path_printf(buf, len, "%s/vfio/devices/%s", root_dev(), de->d_name);
}

_public_ int iommulu_vfio_cdev_open(const char *bdf, int *ret_fd)
{
	char path[PATH_MAX];
	int fd, r;

	if (!ret_fd)
		return -EINVAL;
	r = iommulu_vfio_cdev_path(bdf, path, sizeof(path));
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	*ret_fd = fd;
	return 0;
}

_public_ int iommulu_vfio_fd_to_bdf(int fd, char *buf, size_t len)
{
	char subsystem[64], path[PATH_MAX], bdf[IOMMULU_BDF_MAX];
	dev_t rdev;
	int r;

	if (!buf || len == 0)
		return -EINVAL;
	r = fd_chardev(fd, &rdev);
	if (r < 0)
		return r;
	r = chardev_subsystem(rdev, subsystem, sizeof(subsystem));
	if (r == -ENOENT || r == -ENAMETOOLONG)
		return -ENOTTY;		/* unknown to sysfs, or not a class we know */
	if (r < 0)
		return r;
	if (!streq(subsystem, "vfio-dev"))
		return -ENOTTY;

	r = chardev_sysfs_path(rdev, "device", path, sizeof(path));
	if (r < 0)
		return r;
	r = link_basename(path, bdf, sizeof(bdf));
	/* A vfio cdev of something that is not a PCI device (platform, mdev):
	 * its device directory is not named after a BDF. */
	if (r == -ENAMETOOLONG || r == -ENOENT)
		return -ENODEV;
	if (r < 0)
		return r;
	if (!iommulu_bdf_is_valid(bdf))
		return -ENODEV;
	if (strlen(bdf) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, bdf);
	return 0;
}

_public_ int iommulu_vfio_bind_iommufd(int device_fd, int iommufd, uint32_t *ret_dev_id)
{
	struct vfio_device_bind_iommufd cmd = {
		.argsz = sizeof(cmd),
		.flags = 0,
		.iommufd = iommufd,
	};
	int r;

	if (!ret_dev_id)
		return -EINVAL;
	if (iommufd < 0)
		return -EBADF;
	r = vfio_ioctl(device_fd, VFIO_DEVICE_BIND_IOMMUFD, &cmd);
	if (r < 0)
		return r;
	*ret_dev_id = cmd.out_devid;
	return 0;
}

_public_ int iommulu_vfio_attach_pt(int device_fd, uint32_t pt_id)
{
	struct vfio_device_attach_iommufd_pt cmd = {
		.argsz = sizeof(cmd),
		.flags = 0,
		.pt_id = pt_id,
	};

	return vfio_ioctl(device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &cmd);
}

_public_ int iommulu_vfio_detach_pt(int device_fd)
{
	struct vfio_device_detach_iommufd_pt cmd = {
		.argsz = sizeof(cmd),
		.flags = 0,
	};

	return vfio_ioctl(device_fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &cmd);
}

_public_ int iommulu_vfio_region_info(int device_fd, uint32_t index, iommulu_vfio_region *ret)
{
	/* Capabilities are not requested: argsz covers the fixed part only,
	 * and a larger argsz the kernel reports back just means there are
	 * capability chains we do not read. */
	struct vfio_region_info cmd = {
		.argsz = sizeof(cmd),
		.index = index,
	};
	int r;

	if (!ret)
		return -EINVAL;
	r = vfio_ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &cmd);
	if (r < 0)
		return r;
	*ret = (iommulu_vfio_region){
		.index = cmd.index,
		.flags = cmd.flags,
		.size = cmd.size,
		.offset = cmd.offset,
	};
	return 0;
}

/* Look up the config region and check [offset, offset+len) lies inside it
 * and that it allows the access. */
static int config_region(int device_fd, uint32_t offset, size_t len, uint32_t need_flag,
			 uint64_t *ret_file_offset)
{
	iommulu_vfio_region region;
	int r;

	r = iommulu_vfio_region_info(device_fd, IOMMULU_VFIO_PCI_CONFIG_REGION, &region);
	if (r < 0)
		return r;
	if (!(region.flags & need_flag))
		return -EACCES;
	if (len > region.size || offset > region.size - len)
		return -ERANGE;
	if (region.offset > (uint64_t)INT64_MAX - region.size)
		return -EOVERFLOW;
	*ret_file_offset = region.offset + offset;
	return 0;
}

_public_ int iommulu_vfio_config_read(int device_fd, uint32_t offset, void *buf, size_t len)
{
	uint64_t pos;
	size_t done = 0;
	int r;

	if (!buf && len > 0)
		return -EINVAL;
	r = config_region(device_fd, offset, len, VFIO_REGION_INFO_FLAG_READ, &pos);
	if (r < 0)
		return r;
	while (done < len) {
		ssize_t n = pread(device_fd, (uint8_t *)buf + done, len - done, (off_t)(pos + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

_public_ int iommulu_vfio_config_write(int device_fd, uint32_t offset, const void *buf, size_t len)
{
	uint64_t pos;
	size_t done = 0;
	int r;

	if (!buf && len > 0)
		return -EINVAL;
	r = config_region(device_fd, offset, len, VFIO_REGION_INFO_FLAG_WRITE, &pos);
	if (r < 0)
		return r;
	while (done < len) {
		ssize_t n = pwrite(device_fd, (const uint8_t *)buf + done, len - done,
				   (off_t)(pos + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}
