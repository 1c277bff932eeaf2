/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Print the layout of every uAPI definition libiommulu relies on, one
 * "KEY = VALUE" line each, so that two builds can be compared:
 *   -DSIDE_OURS    with include/iommulu/uapi.h (what libiommulu uses on
 *                  this build host: its own definitions where the system
 *                  headers are too old);
 *   -DSIDE_KERNEL  with the patched kernel's exported headers only.
 * A definition the kernel headers lack prints "missing:NAME".
 */
#include <stddef.h>
#include <stdio.h>

#if defined(SIDE_OURS)
#include <iommulu/uapi.h>
#elif defined(SIDE_KERNEL)
#include <linux/iommufd.h>
#include <linux/liveupdate.h>
#include <linux/vfio.h>
#else
#error "define SIDE_OURS or SIDE_KERNEL"
#endif

#define SIZE(T) printf("sizeof:%s = %zu\n", #T, sizeof(struct T))
#define FIELD(T, F)                                                          \
	printf("field:%s.%s = offset %zu size %zu\n", #T, #F, offsetof(struct T, F), \
	       sizeof(((struct T *)0)->F))
#define IOC(N) printf("ioctl:%s = %#lx\n", #N, (unsigned long)(N))
#define VAL(N) printf("value:%s = %#lx\n", #N, (unsigned long)(N))
#define MISSING(N) printf("missing:%s = (not defined)\n", #N)

int main(void)
{
	/* Live Update Orchestrator */
#ifdef LIVEUPDATE_IOCTL_CREATE_SESSION
	VAL(LIVEUPDATE_SESSION_NAME_LENGTH);
	IOC(LIVEUPDATE_IOCTL_CREATE_SESSION);
	SIZE(liveupdate_ioctl_create_session);
	FIELD(liveupdate_ioctl_create_session, size);
	FIELD(liveupdate_ioctl_create_session, fd);
	FIELD(liveupdate_ioctl_create_session, name);
	IOC(LIVEUPDATE_IOCTL_RETRIEVE_SESSION);
	SIZE(liveupdate_ioctl_retrieve_session);
	FIELD(liveupdate_ioctl_retrieve_session, size);
	FIELD(liveupdate_ioctl_retrieve_session, fd);
	FIELD(liveupdate_ioctl_retrieve_session, name);
	IOC(LIVEUPDATE_SESSION_PRESERVE_FD);
	SIZE(liveupdate_session_preserve_fd);
	FIELD(liveupdate_session_preserve_fd, size);
	FIELD(liveupdate_session_preserve_fd, fd);
	FIELD(liveupdate_session_preserve_fd, token);
	IOC(LIVEUPDATE_SESSION_RETRIEVE_FD);
	SIZE(liveupdate_session_retrieve_fd);
	FIELD(liveupdate_session_retrieve_fd, size);
	FIELD(liveupdate_session_retrieve_fd, fd);
	FIELD(liveupdate_session_retrieve_fd, token);
	IOC(LIVEUPDATE_SESSION_FINISH);
	SIZE(liveupdate_session_finish);
	FIELD(liveupdate_session_finish, size);
	FIELD(liveupdate_session_finish, reserved);
	IOC(LIVEUPDATE_SESSION_GET_NAME);
	SIZE(liveupdate_session_get_name);
	FIELD(liveupdate_session_get_name, size);
	FIELD(liveupdate_session_get_name, reserved);
	FIELD(liveupdate_session_get_name, name);
#else
	MISSING(LIVEUPDATE_IOCTL_CREATE_SESSION);
#endif

	/* iommufd */
	VAL(IOMMUFD_TYPE);
	IOC(IOMMU_DESTROY);
	SIZE(iommu_destroy);
	FIELD(iommu_destroy, size);
	FIELD(iommu_destroy, id);
	IOC(IOMMU_IOAS_ALLOC);
	SIZE(iommu_ioas_alloc);
	FIELD(iommu_ioas_alloc, size);
	FIELD(iommu_ioas_alloc, flags);
	FIELD(iommu_ioas_alloc, out_ioas_id);
	IOC(IOMMU_HWPT_ALLOC);
	SIZE(iommu_hwpt_alloc);
	FIELD(iommu_hwpt_alloc, size);
	FIELD(iommu_hwpt_alloc, flags);
	FIELD(iommu_hwpt_alloc, dev_id);
	FIELD(iommu_hwpt_alloc, pt_id);
	FIELD(iommu_hwpt_alloc, out_hwpt_id);
	FIELD(iommu_hwpt_alloc, __reserved);
	FIELD(iommu_hwpt_alloc, data_type);
	FIELD(iommu_hwpt_alloc, data_len);
	FIELD(iommu_hwpt_alloc, data_uptr);
	FIELD(iommu_hwpt_alloc, fault_id);
	FIELD(iommu_hwpt_alloc, __reserved2);
	VAL(IOMMU_HWPT_ALLOC_NEST_PARENT);
	VAL(IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
	VAL(IOMMU_HWPT_FAULT_ID_VALID);
	VAL(IOMMU_HWPT_ALLOC_PASID);
	IOC(IOMMU_IOAS_MAP_FILE);
	SIZE(iommu_ioas_map_file);
	FIELD(iommu_ioas_map_file, size);
	FIELD(iommu_ioas_map_file, flags);
	FIELD(iommu_ioas_map_file, ioas_id);
	FIELD(iommu_ioas_map_file, fd);
	FIELD(iommu_ioas_map_file, start);
	FIELD(iommu_ioas_map_file, length);
	FIELD(iommu_ioas_map_file, iova);
#ifdef IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE
	IOC(IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE);
	SIZE(iommu_hwpt_liveupdate_mark_preserve);
	FIELD(iommu_hwpt_liveupdate_mark_preserve, size);
	FIELD(iommu_hwpt_liveupdate_mark_preserve, hwpt_id);
	FIELD(iommu_hwpt_liveupdate_mark_preserve, hwpt_token);
	FIELD(iommu_hwpt_liveupdate_mark_preserve, flags);
	FIELD(iommu_hwpt_liveupdate_mark_preserve, __reserved);
	VAL(IOMMU_HWPT_LIVEUPDATE_UNMARK);
#else
	MISSING(IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE);
#endif
#ifdef IOMMU_HWPT_LIVEUPDATE_QUERY
	IOC(IOMMU_HWPT_LIVEUPDATE_QUERY);
	SIZE(iommu_hwpt_liveupdate_query);
	FIELD(iommu_hwpt_liveupdate_query, size);
	FIELD(iommu_hwpt_liveupdate_query, flags);
	FIELD(iommu_hwpt_liveupdate_query, hwpt_token);
	FIELD(iommu_hwpt_liveupdate_query, out_flags);
	FIELD(iommu_hwpt_liveupdate_query, out_hwpt_id);
	FIELD(iommu_hwpt_liveupdate_query, out_ioas_id);
	FIELD(iommu_hwpt_liveupdate_query, __reserved);
	VAL(IOMMU_HWPT_LIVEUPDATE_QUERY_CREATED);
#else
	MISSING(IOMMU_HWPT_LIVEUPDATE_QUERY);
#endif

	/* vfio device cdev */
	IOC(VFIO_DEVICE_BIND_IOMMUFD);
	SIZE(vfio_device_bind_iommufd);
	FIELD(vfio_device_bind_iommufd, argsz);
	FIELD(vfio_device_bind_iommufd, flags);
	FIELD(vfio_device_bind_iommufd, iommufd);
	FIELD(vfio_device_bind_iommufd, out_devid);
	FIELD(vfio_device_bind_iommufd, token_uuid_ptr);
	VAL(VFIO_DEVICE_BIND_FLAG_TOKEN);
	IOC(VFIO_DEVICE_ATTACH_IOMMUFD_PT);
	SIZE(vfio_device_attach_iommufd_pt);
	FIELD(vfio_device_attach_iommufd_pt, argsz);
	FIELD(vfio_device_attach_iommufd_pt, flags);
	FIELD(vfio_device_attach_iommufd_pt, pt_id);
	FIELD(vfio_device_attach_iommufd_pt, pasid);
	IOC(VFIO_DEVICE_DETACH_IOMMUFD_PT);
	SIZE(vfio_device_detach_iommufd_pt);
	FIELD(vfio_device_detach_iommufd_pt, argsz);
	FIELD(vfio_device_detach_iommufd_pt, flags);
	FIELD(vfio_device_detach_iommufd_pt, pasid);
	return 0;
}
