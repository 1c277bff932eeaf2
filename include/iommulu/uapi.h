/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Kernel uAPI definitions libiommulu needs that Debian 12's linux-libc-dev
 * (6.1) lacks: the Live Update Orchestrator (/dev/liveupdate, Linux 7.3),
 * the iommufd and vfio cdev calls added after 6.1, and the HWPT
 * live-update marking ioctl from this project's kernel series.
 *
 * Everything is guarded on the ioctl macro, so a newer system header that
 * already carries a definition wins and the two never clash.  The
 * virtual-host suite (tests/vm, scenario uapi-headers) checks sizes,
 * offsets and ioctl numbers against the patched kernel's exported headers.
 */
#pragma once

#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/vfio.h>
/* Debian 12's linux-libc-dev (6.1) has no <linux/iommufd.h> at all (it
 * appeared in 6.2), so it is optional and the base definitions below fill
 * in for it. */
#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

#ifndef __aligned_u64
#define __aligned_u64 __u64 __attribute__((aligned(8)))
#endif

/* ---- Live Update Orchestrator: include/uapi/linux/liveupdate.h (7.3) ---- */
#ifndef LIVEUPDATE_IOCTL_CREATE_SESSION
#define LIVEUPDATE_IOCTL_TYPE 0xBA
#define LIVEUPDATE_SESSION_NAME_LENGTH 64

enum {
	LIVEUPDATE_CMD_BASE = 0x00,
	LIVEUPDATE_CMD_CREATE_SESSION = LIVEUPDATE_CMD_BASE,
	LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01,
};

enum {
	LIVEUPDATE_CMD_SESSION_BASE = 0x40,
	LIVEUPDATE_CMD_SESSION_PRESERVE_FD = LIVEUPDATE_CMD_SESSION_BASE,
	LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41,
	LIVEUPDATE_CMD_SESSION_FINISH = 0x42,
	LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43,
};

struct liveupdate_ioctl_create_session {
	__u32 size;
	__s32 fd;				/* out: the new session fd */
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};
#define LIVEUPDATE_IOCTL_CREATE_SESSION _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION)

struct liveupdate_ioctl_retrieve_session {
	__u32 size;
	__s32 fd;				/* out: the retrieved session fd */
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];
};
#define LIVEUPDATE_IOCTL_RETRIEVE_SESSION _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION)

struct liveupdate_session_preserve_fd {
	__u32 size;
	__s32 fd;
	__aligned_u64 token;
};
#define LIVEUPDATE_SESSION_PRESERVE_FD _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD)

struct liveupdate_session_retrieve_fd {
	__u32 size;
	__s32 fd;				/* out */
	__aligned_u64 token;
};
#define LIVEUPDATE_SESSION_RETRIEVE_FD _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD)

struct liveupdate_session_finish {
	__u32 size;
	__u32 reserved;
};
#define LIVEUPDATE_SESSION_FINISH _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH)

struct liveupdate_session_get_name {
	__u32 size;
	__u32 reserved;
	__u8 name[LIVEUPDATE_SESSION_NAME_LENGTH];	/* out */
};
#define LIVEUPDATE_SESSION_GET_NAME _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME)
#endif /* LIVEUPDATE_IOCTL_CREATE_SESSION */

/* ---- iommufd (include/uapi/linux/iommufd.h), pieces newer than 6.1 ---- */
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#endif

#ifndef IOMMU_DESTROY
#define IOMMUFD_CMD_DESTROY 0x80
struct iommu_destroy {
	__u32 size;
	__u32 id;
};
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
#endif

#ifndef IOMMU_IOAS_ALLOC
#define IOMMUFD_CMD_IOAS_ALLOC 0x81
struct iommu_ioas_alloc {
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
#endif

#ifndef IOMMU_HWPT_ALLOC
#define IOMMUFD_CMD_HWPT_ALLOC 0x89
enum iommufd_hwpt_alloc_flags {
	IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0,
	IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1,
	IOMMU_HWPT_FAULT_ID_VALID = 1 << 2,
	IOMMU_HWPT_ALLOC_PASID = 1 << 3,
};

struct iommu_hwpt_alloc {
	__u32 size;
	__u32 flags;
	__u32 dev_id;
	__u32 pt_id;
	__u32 out_hwpt_id;
	__u32 __reserved;
	__u32 data_type;
	__u32 data_len;
	__aligned_u64 data_uptr;
	__u32 fault_id;
	__u32 __reserved2;
};
#define IOMMU_HWPT_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)
#endif

#ifndef IOMMU_IOAS_MAP_FILE
#define IOMMUFD_CMD_IOAS_MAP_FILE 0x8f
struct iommu_ioas_map_file {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__s32 fd;
	__aligned_u64 start;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)
#endif

/*
 * From this project's kernel series (kernel-patches/): mark a paging HWPT
 * so that preserving its iommufd in a LUO session preserves it too.
 * 0x96 is the first iommufd command number Linux 7.3 leaves free.
 *   -EINVAL      hwpt_id is not a paging HWPT
 *   -EADDRINUSE  hwpt_token is already used by another HWPT of this iommufd
 *                (marking a HWPT again with its own token returns 0)
 *   -EALREADY    hwpt_id is already marked with another token (also when
 *                unmarking with a token it is not marked with)
 *   -EBUSY       the iommufd is preserved (a change; the same mark, or an
 *                unmark of an unmarked HWPT, is 0)
 *   -EOPNOTSUPP  unknown flags, or __reserved not 0
 *   -E2BIG       non-zero bytes past the fields this kernel knows (a
 *                series without flags, asked to unmark)
 *   -ENOTTY      the running kernel lacks the series
 * IOMMU_HWPT_LIVEUPDATE_UNMARK in flags removes the mark instead.
 */
#ifndef IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE
#define IOMMUFD_CMD_HWPT_LIVEUPDATE_MARK_PRESERVE 0x96
enum iommu_hwpt_liveupdate_mark_flags {
	IOMMU_HWPT_LIVEUPDATE_UNMARK = 1 << 0,
};
struct iommu_hwpt_liveupdate_mark_preserve {
	__u32 size;
	__u32 hwpt_id;
	__aligned_u64 hwpt_token;
	__u32 flags;
	__u32 __reserved;
};
#define IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE \
	_IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_LIVEUPDATE_MARK_PRESERVE)
#endif

/*
 * IOMMU_HWPT_LIVEUPDATE_QUERY (kernel series): in an iommufd retrieved from
 * a LUO session, the IDs of the HW pagetable marked with hwpt_token before
 * the kexec and of its IOAS; they are the IDs the objects had then.
 * out_flags has IOMMU_HWPT_LIVEUPDATE_QUERY_CREATED once the HW pagetable
 * object exists (a device of it was retrieved); until then its ID is
 * reserved.  -ENOENT not a retrieved iommufd, or no such token;
 * -EOPNOTSUPP flags not 0; -ENOTTY the running kernel lacks it.
 */
#ifndef IOMMU_HWPT_LIVEUPDATE_QUERY
#define IOMMUFD_CMD_HWPT_LIVEUPDATE_QUERY 0x97
enum iommu_hwpt_liveupdate_query_out_flags {
	IOMMU_HWPT_LIVEUPDATE_QUERY_CREATED = 1 << 0,
};
struct iommu_hwpt_liveupdate_query {
	__u32 size;
	__u32 flags;
	__aligned_u64 hwpt_token;
	__u32 out_flags;
	__u32 out_hwpt_id;
	__u32 out_ioas_id;
	__u32 __reserved;
};
#define IOMMU_HWPT_LIVEUPDATE_QUERY \
	_IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_LIVEUPDATE_QUERY)
#endif

/* ---- vfio cdev (include/uapi/linux/vfio.h), pieces newer than 6.1 ---- */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
	__aligned_u64 token_uuid_ptr;	/* only with VFIO_DEVICE_BIND_FLAG_TOKEN */
};
#define VFIO_DEVICE_BIND_FLAG_TOKEN (1 << 0)
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
struct vfio_device_attach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
	__u32 pasid;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif

#ifndef VFIO_DEVICE_DETACH_IOMMUFD_PT
struct vfio_device_detach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pasid;
};
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#endif
