/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Thin wrappers over /dev/iommu. Kernel errnos are passed through. */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* IOMMU_IOAS_MAP_* flags (kernel values) */
#define IOMMULU_MAP_FIXED_IOVA 0x1u
#define IOMMULU_MAP_WRITEABLE  0x2u
#define IOMMULU_MAP_READABLE   0x4u

/* Open $IOMMULU_DEV_ROOT/iommu (default /dev/iommu), O_RDWR|O_CLOEXEC. */
int iommulu_iommufd_open(int *ret_fd);

int iommulu_iommufd_ioas_alloc(int iommufd, uint32_t *ret_ioas_id);

/* IOMMU_IOAS_MAP_FILE: map [start, start+length) of memfd at iova. With
 * IOMMULU_MAP_FIXED_IOVA the mapping goes exactly at *iova; otherwise the
 * kernel picks one and *iova receives it. */
int iommulu_iommufd_ioas_map_file(int iommufd, uint32_t ioas_id, int memfd, uint64_t start,
				  uint64_t length, uint32_t flags, uint64_t *iova);

/* IOMMU_HWPT_ALLOC of a paging HWPT for dev_id on pt_id (an IOAS). */
int iommulu_iommufd_hwpt_alloc(int iommufd, uint32_t dev_id, uint32_t pt_id, uint32_t flags,
			       uint32_t *ret_hwpt_id);

/* IOMMU_DESTROY of any object id. */
int iommulu_iommufd_destroy(int iommufd, uint32_t id);

/*
 * IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE (kernel series).  -ENOTTY when the
 * running kernel does not have it; -EINVAL not a paging HWPT;
 * -EADDRINUSE token already used by another HWPT of this iommufd.  Marking
 * a HWPT again with the token it has is a successful no-op.
 */
int iommulu_iommufd_hwpt_mark_preserve(int iommufd, uint32_t hwpt_id, uint64_t token);

/*
 * Remove the mark of a HWPT (IOMMU_HWPT_LIVEUPDATE_UNMARK): token must be the
 * one it is marked with (-EALREADY otherwise); unmarking a HWPT that is not
 * marked is a successful no-op.  -EBUSY while the iommufd is preserved;
 * -E2BIG from a kernel series that predates unmarking.
 */
int iommulu_iommufd_hwpt_unmark_preserve(int iommufd, uint32_t hwpt_id, uint64_t token);

/*
 * IOMMU_HWPT_LIVEUPDATE_QUERY (kernel series) on an iommufd retrieved from a
 * LUO session: the IDs of the HW pagetable marked with token before the
 * kexec and of its IOAS, which are the IDs they had then, and whether the HW
 * pagetable object exists yet (it is created when the first of its devices
 * is retrieved).  -ENOENT when the iommufd was not retrieved or has no such
 * token; -ENOTTY when the running kernel lacks the ioctl.  Any of the output
 * pointers may be NULL.
 */
int iommulu_iommufd_hwpt_query(int iommufd, uint64_t token, uint32_t *ret_hwpt_id,
			       uint32_t *ret_ioas_id, bool *ret_created);

#ifdef __cplusplus
}
#endif
