/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What kind of object an arbitrary fd refers to.  Used to validate every
 * fd a client hands over. */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum iommulu_fd_kind {
	IOMMULU_FD_OTHER = 0,
	IOMMULU_FD_MEMFD,		/* shmem memfd */
	IOMMULU_FD_MEMFD_HUGETLB,	/* hugetlbfs memfd */
	IOMMULU_FD_IOMMUFD,		/* /dev/iommu */
	IOMMULU_FD_VFIO_CDEV,		/* /dev/vfio/devices/vfioN */
	IOMMULU_FD_LUO_SESSION,		/* a /dev/liveupdate session */
	_IOMMULU_FD_KIND_MAX,
} iommulu_fd_kind;

/*
 * Classify fd.  Works for memfds retrieved after a kexec too (they lose
 * their "memfd:" name).  Returns 0 and the kind, or -EBADF etc.
 * Device paths are resolved under $IOMMULU_SYSFS_ROOT (default /sys) and
 * $IOMMULU_DEV_ROOT (default /dev) so tests can use fake trees.
 */
int iommulu_fd_classify(int fd, iommulu_fd_kind *ret_kind);

/* "memfd", "hugetlb-memfd", "iommufd", "vfio-cdev", "luo-session", "other" */
const char *iommulu_fd_kind_to_string(iommulu_fd_kind kind);

#ifdef __cplusplus
}
#endif
