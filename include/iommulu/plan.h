/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Preservation plan for one VM: validate that every fd is eligible, then
 * list the steps in the order the kernel requires:
 *   manifest (token 0), memfds, HWPT marks, iommufd, vfio cdevs.
 * The iommufd handler checks that every mapping's memfd is already in the
 * session, and the vfio handler that the device's iommufd is, hence the
 * order.
 */

#include "common.h"
#include "manifest.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Session tokens chosen by the plan. */
#define IOMMULU_TOKEN_MEMFD_BASE  0x100u	/* + memfd index */
#define IOMMULU_TOKEN_IOMMUFD     0x1000u
#define IOMMULU_TOKEN_DEVICE_BASE 0x2000u	/* + device index */
#define IOMMULU_TOKEN_HWPT_BASE   0x1u		/* + hwpt index; iommufd-local */

#define IOMMULU_PLAN_MAX_MEMFDS  64
#define IOMMULU_PLAN_MAX_DEVICES 32
#define IOMMULU_PLAN_MAX_HWPTS   32

typedef enum iommulu_reason {
	IOMMULU_REASON_NONE = 0,
	IOMMULU_REASON_WRONG_KIND,		/* "wrong-fd-kind" */
	IOMMULU_REASON_MEMFD_UNSEALED,		/* "unsealed-memfd" */
	IOMMULU_REASON_MEMFD_HUGETLB,		/* "hugetlb-memfd" */
	IOMMULU_REASON_DEVICE_SRIOV_PF,		/* "sriov-pf" */
	IOMMULU_REASON_DEVICE_SRIOV_VF,		/* "sriov-vf" */
	IOMMULU_REASON_DEVICE_NOT_VFIO_PCI,	/* "not-bound-to-vfio-pci" */
	IOMMULU_REASON_DUPLICATE,		/* "duplicate" (same device or hwpt twice) */
	IOMMULU_REASON_NO_IOMMUFD,		/* "devices-without-iommufd" */
	IOMMULU_REASON_TOO_MANY,		/* "too-many" */
	IOMMULU_REASON_HWPT_MAPPING,		/* "hwpt-maps-foreign-memory" (kernel refusal) */
	_IOMMULU_REASON_MAX,
} iommulu_reason;

const char *iommulu_reason_to_string(iommulu_reason reason);

typedef struct iommulu_vm_fds {
	const char *name;
	const int *memfds;
	size_t n_memfds;
	int iommufd;			/* -1 for a VM without devices */
	const uint32_t *hwpt_ids;
	size_t n_hwpts;
	const int *devices;		/* vfio cdev fds */
	size_t n_devices;
} iommulu_vm_fds;

typedef enum iommulu_step_kind {
	IOMMULU_STEP_MANIFEST = 0,	/* fd is -1: created by execute */
	IOMMULU_STEP_MEMFD,
	IOMMULU_STEP_MARK_HWPT,		/* fd is the iommufd */
	IOMMULU_STEP_IOMMUFD,
	IOMMULU_STEP_DEVICE,
	_IOMMULU_STEP_KIND_MAX,
} iommulu_step_kind;

const char *iommulu_step_kind_to_string(iommulu_step_kind kind);

typedef struct iommulu_plan_step {
	iommulu_step_kind kind;
	int fd;			/* borrowed from iommulu_vm_fds */
	uint64_t token;		/* session token; for MARK_HWPT the hwpt token */
	uint32_t hwpt_id;	/* MARK_HWPT only */
	size_t index;		/* index in the input array of its kind */
	char bdf[IOMMULU_BDF_MAX];	/* DEVICE only */
	bool skip;		/* caller-set: execute leaves this step out */
} iommulu_plan_step;

typedef struct iommulu_plan {
	iommulu_manifest *manifest;	/* owned; what execute writes at token 0 */
	iommulu_plan_step *steps;
	size_t n_steps;
} iommulu_plan;

/*
 * Validate vm and build its plan.  On an ineligible fd returns -EPERM,
 * sets *ret_reason (optional) and a message naming the fd or device and
 * the reason, e.g. "memfd #1 (fd 9): unsealed-memfd: lacks F_SEAL_GROW".
 * -EINVAL for malformed input (bad name, counts over the limits).
 */
int iommulu_plan_build(const iommulu_vm_fds *vm, uint64_t generation, iommulu_plan **ret,
		       iommulu_reason *ret_reason, iommulu_error *error);
iommulu_plan *iommulu_plan_free(iommulu_plan *plan);

/*
 * Run the steps into an outgoing session, stopping at the first failure
 * with the kernel's errno and a message naming the step, e.g.
 * "preserving device 0000:00:03.0 (token 0x2000): Operation not supported".
 * ret_done (optional) receives the number of steps dealt with (completed
 * or skipped) before the failing one, i.e. the failing step's index; on
 * success it is n_steps.  To roll
 * back, close the session fd: the kernel then unpreserves every file.
 * HWPT marks live in the iommufd and survive that roll-back; the kernel
 * takes a second mark with the same token as a successful no-op, so a
 * retry simply executes the same plan again.
 */
int iommulu_plan_execute(const iommulu_plan *plan, int session_fd, size_t *ret_done,
			 iommulu_error *error);

/*
 * Whether the kernel's refusal of a step (err: the negative errno
 * iommulu_plan_execute returned) is about the VM itself rather than the
 * kernel or the system: the iommufd handler refuses a marked HWPT whose IOAS
 * maps user memory or a file that is not a memfd (-EOPNOTSUPP), an
 * unsealed memfd (-EPERM), a memfd not preserved in the same session
 * (-ENOLINK), or pages the memfd no longer holds, because a hole was punched
 * in it or it was resized after the mapping (-ESTALE).  Returns
 * IOMMULU_REASON_HWPT_MAPPING then, otherwise
 * IOMMULU_REASON_NONE (a missing handler gives -ENOENT, a missing ioctl
 * -ENOTTY: the kernel's fault).
 */
iommulu_reason iommulu_plan_step_refusal(const iommulu_plan_step *step, int err);

#ifdef __cplusplus
}
#endif
