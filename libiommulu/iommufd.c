/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thin wrappers over /dev/iommu.
 *
 * Every request struct is zeroed first and carries its own size (the
 * iommufd "size-first" convention, so a newer kernel can grow it), and the
 * kernel's errno comes back unchanged as a negative return value.  The
 * library does not second-guess flags the kernel validates itself: an
 * unknown map flag is for the kernel to refuse with -EOPNOTSUPP.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>

#include "internal.h"
#include "iommulu/iommufd.h"
#include "iommulu/uapi.h"

/* IOMMU_HWPT_DATA_NONE: a plain paging HWPT, no driver-specific data. */
#define HWPT_DATA_NONE 0u

static int iommufd_ioctl(int iommufd, unsigned long request, void *arg)
{
	if (iommufd < 0)
		return -EBADF;
	if (ioctl(iommufd, request, arg) < 0)
		return negative_errno();
	return 0;
}

_public_ int iommulu_iommufd_open(int *ret_fd)
{
	char path[PATH_MAX];
	int fd, r;

	if (!ret_fd)
		return -EINVAL;
	r = path_printf(path, sizeof(path), "%s/iommu", root_dev());
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	*ret_fd = fd;
	return 0;
}

_public_ int iommulu_iommufd_ioas_alloc(int iommufd, uint32_t *ret_ioas_id)
{
	struct iommu_ioas_alloc cmd = {
		.size = sizeof(cmd),
	};
	int r;

	if (!ret_ioas_id)
		return -EINVAL;
	r = iommufd_ioctl(iommufd, IOMMU_IOAS_ALLOC, &cmd);
	if (r < 0)
		return r;
	*ret_ioas_id = cmd.out_ioas_id;
	return 0;
}

_public_ int iommulu_iommufd_ioas_map_file(int iommufd, uint32_t ioas_id, int memfd,
					   uint64_t start, uint64_t length, uint32_t flags,
					   uint64_t *iova)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = flags,
		.ioas_id = ioas_id,
		.fd = memfd,
		.start = start,
		.length = length,
	};
	int r;

	if (!iova)
		return -EINVAL;
	if (memfd < 0)
		return -EBADF;
	/* Without FIXED_IOVA the kernel ignores the input iova and picks
	 * one; send 0 rather than whatever the caller's variable held. */
	if (flags & IOMMULU_MAP_FIXED_IOVA)
		cmd.iova = *iova;
	r = iommufd_ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &cmd);
	if (r < 0)
		return r;
	*iova = cmd.iova;
	return 0;
}

_public_ int iommulu_iommufd_hwpt_alloc(int iommufd, uint32_t dev_id, uint32_t pt_id,
					uint32_t flags, uint32_t *ret_hwpt_id)
{
	struct iommu_hwpt_alloc cmd = {
		.size = sizeof(cmd),
		.flags = flags,
		.dev_id = dev_id,
		.pt_id = pt_id,
		.data_type = HWPT_DATA_NONE,
	};
	int r;

	if (!ret_hwpt_id)
		return -EINVAL;
	r = iommufd_ioctl(iommufd, IOMMU_HWPT_ALLOC, &cmd);
	if (r < 0)
		return r;
	*ret_hwpt_id = cmd.out_hwpt_id;
	return 0;
}

_public_ int iommulu_iommufd_destroy(int iommufd, uint32_t id)
{
	struct iommu_destroy cmd = {
		.size = sizeof(cmd),
		.id = id,
	};

	return iommufd_ioctl(iommufd, IOMMU_DESTROY, &cmd);
}

_public_ int iommulu_iommufd_hwpt_mark_preserve(int iommufd, uint32_t hwpt_id, uint64_t token)
{
	struct iommu_hwpt_liveupdate_mark_preserve cmd = {
		.size = sizeof(cmd),
		.hwpt_id = hwpt_id,
		.hwpt_token = token,
	};

	return iommufd_ioctl(iommufd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, &cmd);
}

_public_ int iommulu_iommufd_hwpt_query(int iommufd, uint64_t token, uint32_t *ret_hwpt_id,
				       uint32_t *ret_ioas_id, bool *ret_created)
{
	struct iommu_hwpt_liveupdate_query cmd = {
		.size = sizeof(cmd),
		.hwpt_token = token,
	};
	int r;

	r = iommufd_ioctl(iommufd, IOMMU_HWPT_LIVEUPDATE_QUERY, &cmd);
	if (r < 0)
		return r;
	if (ret_hwpt_id)
		*ret_hwpt_id = cmd.out_hwpt_id;
	if (ret_ioas_id)
		*ret_ioas_id = cmd.out_ioas_id;
	if (ret_created)
		*ret_created = cmd.out_flags & IOMMU_HWPT_LIVEUPDATE_QUERY_CREATED;
	return 0;
}

_public_ int iommulu_iommufd_hwpt_unmark_preserve(int iommufd, uint32_t hwpt_id, uint64_t token)
{
	struct iommu_hwpt_liveupdate_mark_preserve cmd = {
		.size = sizeof(cmd),
		.hwpt_id = hwpt_id,
		.hwpt_token = token,
		.flags = IOMMU_HWPT_LIVEUPDATE_UNMARK,
	};

	return iommufd_ioctl(iommufd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, &cmd);
}
