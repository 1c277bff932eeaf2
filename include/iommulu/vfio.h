/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* vfio device cdevs (/dev/vfio/devices/vfioN). */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Region indexes of vfio-pci (VFIO_PCI_*_REGION_INDEX). */
#define IOMMULU_VFIO_PCI_BAR0_REGION   0u
#define IOMMULU_VFIO_PCI_CONFIG_REGION 7u

typedef struct iommulu_vfio_region {
	uint32_t index;
	uint32_t flags;		/* VFIO_REGION_INFO_FLAG_* */
	uint64_t size;
	uint64_t offset;	/* file offset for pread/pwrite/mmap */
} iommulu_vfio_region;

/* /sys/bus/pci/devices/BDF/vfio-dev/vfioN -> "/dev/vfio/devices/vfioN".
 * -ENODEV if the device has no vfio cdev (not bound to a vfio driver). */
int iommulu_vfio_cdev_path(const char *bdf, char *buf, size_t len);

/* Open the cdev of bdf, O_RDWR|O_CLOEXEC. */
int iommulu_vfio_cdev_open(const char *bdf, int *ret_fd);

/* Reverse: which PCI device does a vfio cdev fd belong to?  buf must
 * hold IOMMULU_BDF_MAX.  -ENOTTY if fd is not a vfio cdev, -ENODEV if it
 * is the cdev of a device that is not PCI. */
int iommulu_vfio_fd_to_bdf(int fd, char *buf, size_t len);

int iommulu_vfio_bind_iommufd(int device_fd, int iommufd, uint32_t *ret_dev_id);
int iommulu_vfio_attach_pt(int device_fd, uint32_t pt_id);
int iommulu_vfio_detach_pt(int device_fd);
int iommulu_vfio_region_info(int device_fd, uint32_t index, iommulu_vfio_region *ret);

/* PCI config space through the device fd (config region).  -ERANGE if
 * [offset, offset+len) is not inside the region, -EACCES if the region
 * does not allow the access. */
int iommulu_vfio_config_read(int device_fd, uint32_t offset, void *buf, size_t len);
int iommulu_vfio_config_write(int device_fd, uint32_t offset, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
