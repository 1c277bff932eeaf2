/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/fdclass.h"
#include "iommulu/iommufd.h"
#include "iommulu/luo.h"
#include "iommulu/memfd.h"
#include "iommulu/pci.h"
#include "iommulu/plan.h"
#include "iommulu/vfio.h"

#define PLAN_PAGE 4096u

DEFINE_TRIVIAL_CLEANUP_FUNC(iommulu_plan *, iommulu_plan_free)

static const char *const reason_names[_IOMMULU_REASON_MAX] = {
	[IOMMULU_REASON_NONE] = "none",
	[IOMMULU_REASON_WRONG_KIND] = "wrong-fd-kind",
	[IOMMULU_REASON_MEMFD_UNSEALED] = "unsealed-memfd",
	[IOMMULU_REASON_MEMFD_HUGETLB] = "hugetlb-memfd",
	[IOMMULU_REASON_DEVICE_SRIOV_PF] = "sriov-pf",
	[IOMMULU_REASON_DEVICE_SRIOV_VF] = "sriov-vf",
	[IOMMULU_REASON_DEVICE_NOT_VFIO_PCI] = "not-bound-to-vfio-pci",
	[IOMMULU_REASON_DUPLICATE] = "duplicate",
	[IOMMULU_REASON_NO_IOMMUFD] = "devices-without-iommufd",
	[IOMMULU_REASON_TOO_MANY] = "too-many",
	[IOMMULU_REASON_HWPT_MAPPING] = "hwpt-maps-foreign-memory",
};

_public_ const char *iommulu_reason_to_string(iommulu_reason reason)
{
	if ((unsigned)reason >= _IOMMULU_REASON_MAX)
		return NULL;
	return reason_names[reason];
}

static const char *const step_names[_IOMMULU_STEP_KIND_MAX] = {
	[IOMMULU_STEP_MANIFEST] = "manifest",
	[IOMMULU_STEP_MEMFD] = "memfd",
	[IOMMULU_STEP_MARK_HWPT] = "mark-hwpt",
	[IOMMULU_STEP_IOMMUFD] = "iommufd",
	[IOMMULU_STEP_DEVICE] = "device",
};

_public_ const char *iommulu_step_kind_to_string(iommulu_step_kind kind)
{
	if ((unsigned)kind >= _IOMMULU_STEP_KIND_MAX)
		return NULL;
	return step_names[kind];
}

_public_ iommulu_plan *iommulu_plan_free(iommulu_plan *plan)
{
	if (!plan)
		return NULL;
	iommulu_manifest_free(plan->manifest);
	free(plan->steps);
	free(plan);
	return NULL;
}

typedef struct build_ctx {
	iommulu_reason reason;
	iommulu_error *error;
} build_ctx;

/* Record an ineligibility: -EPERM unless r says otherwise. */
_printf_(4, 5) static int refuse(build_ctx *c, int r, iommulu_reason reason, const char *fmt, ...)
{
	c->reason = reason;
	if (c->error) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(c->error->message, sizeof(c->error->message), fmt, ap);
		va_end(ap);
	}
	return r;
}

static const char *kind_of(int fd)
{
	iommulu_fd_kind k;

	if (iommulu_fd_classify(fd, &k) < 0)
		return "unclassifiable fd";
	return iommulu_fd_kind_to_string(k);
}

/* An O_PATH descriptor names a file without opening it: fstat() works, so
 * it classifies like the file itself, but it cannot be preserved (the
 * kernel's fdget() refuses it) nor used by the VMM.  Refused up front, so
 * that the caller learns why instead of a later EBADF. */
static int check_not_opath(build_ctx *c, int fd, const char *what, size_t i)
{
	char name[32];
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 && errno == EBADF)
		return 0;	/* "not open": reported by the kind checks */
	if (fl < 0 || !(fl & O_PATH))
		return 0;
	if (i != SIZE_MAX)
		snprintf(name, sizeof(name), "%s #%zu", what, i);
	else
		snprintf(name, sizeof(name), "%s", what);
	return refuse(c, -EPERM, IOMMULU_REASON_WRONG_KIND,
		      "%s (fd %d): wrong-fd-kind: an O_PATH descriptor, not an open file", name, fd);
}

static int check_memfd(build_ctx *c, const iommulu_vm_fds *vm, size_t i, struct stat *ret_st,
		       uint64_t *ret_size)
{
	int fd = vm->memfds[i], r;
	char seals[128];
	unsigned missing = 0;

	r = check_not_opath(c, fd, "memfd", i);
	if (r < 0)
		return r;
	r = iommulu_memfd_check(fd, ret_size, &missing, NULL);
	switch (r) {
	case 0:
		break;
	case -EBADF:
		return refuse(c, -EBADF, IOMMULU_REASON_NONE, "memfd #%zu (fd %d): not open", i, fd);
	case -ENOTTY:
		return refuse(c, -EPERM, IOMMULU_REASON_WRONG_KIND,
			      "memfd #%zu (fd %d): wrong-fd-kind: is %s, not a memfd", i, fd,
			      kind_of(fd));
	case -EOPNOTSUPP:
		return refuse(c, -EPERM, IOMMULU_REASON_MEMFD_HUGETLB,
			      "memfd #%zu (fd %d): hugetlb-memfd: LUO preserves only shmem memfds",
			      i, fd);
	case -EPERM:
		if (iommulu_memfd_seals_to_string(missing, seals, sizeof(seals)) < 0)
			strcpy(seals, "required seals");
		return refuse(c, -EPERM, IOMMULU_REASON_MEMFD_UNSEALED,
			      "memfd #%zu (fd %d): unsealed-memfd: lacks %s", i, fd, seals);
	default:
		return refuse(c, r, IOMMULU_REASON_NONE, "memfd #%zu (fd %d): %s", i, fd,
			      strerror(-r));
	}
	if (*ret_size == 0 || *ret_size % PLAN_PAGE != 0)
		return refuse(c, -EINVAL, IOMMULU_REASON_NONE,
			      "memfd #%zu (fd %d): size %" PRIu64
			      " is not a non-zero multiple of %u",
			      i, fd, *ret_size, PLAN_PAGE);
	if (fstat(fd, ret_st) < 0)
		return refuse(c, negative_errno(), IOMMULU_REASON_NONE, "memfd #%zu (fd %d): %m", i,
			      fd);
	return 0;
}

static int check_kind(build_ctx *c, int fd, iommulu_fd_kind want, const char *what)
{
	iommulu_fd_kind k;
	int r;

	r = iommulu_fd_classify(fd, &k);
	if (r < 0)
		return refuse(c, r, IOMMULU_REASON_NONE, "%s (fd %d): %s", what, fd,
			      r == -EBADF ? "not open" : strerror(-r));
	if (k != want)
		return refuse(c, -EPERM, IOMMULU_REASON_WRONG_KIND, "%s (fd %d): wrong-fd-kind: is %s, not %s",
			      what, fd, iommulu_fd_kind_to_string(k), iommulu_fd_kind_to_string(want));
	return 0;
}

static int check_device(build_ctx *c, int fd, size_t i, char bdf[IOMMULU_BDF_MAX])
{
	char what[64], driver[IOMMULU_DRIVER_NAME_MAX];
	bool is_pf = false, is_vf = false;
	int r;

	snprintf(what, sizeof(what), "device #%zu", i);
	r = check_not_opath(c, fd, "device", i);
	if (r < 0)
		return r;
	r = check_kind(c, fd, IOMMULU_FD_VFIO_CDEV, what);
	if (r < 0)
		return r;
	r = iommulu_vfio_fd_to_bdf(fd, bdf, IOMMULU_BDF_MAX);
	if (r < 0)
		return refuse(c, r, IOMMULU_REASON_NONE, "device #%zu (fd %d): cannot find its PCI device: %s",
			      i, fd, strerror(-r));
	r = iommulu_pci_sriov(bdf, &is_pf, &is_vf);
	if (r < 0)
		return refuse(c, r, IOMMULU_REASON_NONE, "device %s (fd %d): reading SR-IOV state: %s",
			      bdf, fd, strerror(-r));
	if (is_pf)
		return refuse(c, -EPERM, IOMMULU_REASON_DEVICE_SRIOV_PF,
			      "device %s (fd %d): sriov-pf: SR-IOV physical functions cannot be preserved",
			      bdf, fd);
	if (is_vf)
		return refuse(c, -EPERM, IOMMULU_REASON_DEVICE_SRIOV_VF,
			      "device %s (fd %d): sriov-vf: SR-IOV virtual functions cannot be preserved",
			      bdf, fd);
	r = iommulu_pci_driver(bdf, driver, sizeof(driver));
	if (r < 0)
		return refuse(c, r, IOMMULU_REASON_NONE, "device %s (fd %d): reading its driver: %s",
			      bdf, fd, strerror(-r));
	if (!streq(driver, "vfio-pci"))
		return refuse(c, -EPERM, IOMMULU_REASON_DEVICE_NOT_VFIO_PCI,
			      "device %s (fd %d): not-bound-to-vfio-pci: driver is %s", bdf, fd,
			      driver[0] ? driver : "(none)");
	return 0;
}

static iommulu_plan_step *add_step(iommulu_plan *p, iommulu_step_kind kind, int fd,
				   uint64_t token, size_t index)
{
	iommulu_plan_step *s = &p->steps[p->n_steps++];

	*s = (iommulu_plan_step){ .kind = kind, .fd = fd, .token = token, .index = index };
	return s;
}

static int plan_build(build_ctx *c, const iommulu_vm_fds *vm, uint64_t generation,
		      iommulu_plan **ret)
{
	_cleanup_(iommulu_plan_freep) iommulu_plan *p = NULL;
	_cleanup_free_ struct stat *memfd_st = NULL;
	_cleanup_free_ uint64_t *memfd_size = NULL;
	char (*bdfs)[IOMMULU_BDF_MAX] = NULL;
	_cleanup_free_ void *bdfs_mem = NULL;
	bool has_iommufd;
	int r;

	if (!vm || !ret)
		return refuse(c, -EINVAL, IOMMULU_REASON_NONE, "no VM description");
	if (!iommulu_vm_name_is_valid(vm->name))
		return refuse(c, -EINVAL, IOMMULU_REASON_NONE,
			      "VM name \"%s\" is invalid (want [A-Za-z0-9_.-]{1,%d})",
			      strna(vm->name), IOMMULU_VM_NAME_MAX);
	if (vm->n_memfds > IOMMULU_PLAN_MAX_MEMFDS)
		return refuse(c, -EINVAL, IOMMULU_REASON_TOO_MANY, "too-many: %zu memfds, at most %u",
			      vm->n_memfds, IOMMULU_PLAN_MAX_MEMFDS);
	if (vm->n_hwpts > IOMMULU_PLAN_MAX_HWPTS)
		return refuse(c, -EINVAL, IOMMULU_REASON_TOO_MANY, "too-many: %zu HWPTs, at most %u",
			      vm->n_hwpts, IOMMULU_PLAN_MAX_HWPTS);
	if (vm->n_devices > IOMMULU_PLAN_MAX_DEVICES)
		return refuse(c, -EINVAL, IOMMULU_REASON_TOO_MANY,
			      "too-many: %zu devices, at most %u", vm->n_devices,
			      IOMMULU_PLAN_MAX_DEVICES);
	if ((vm->n_memfds && !vm->memfds) || (vm->n_hwpts && !vm->hwpt_ids) ||
	    (vm->n_devices && !vm->devices))
		return refuse(c, -EINVAL, IOMMULU_REASON_NONE, "a non-empty fd array is NULL");
	has_iommufd = vm->iommufd >= 0;
	if (!has_iommufd && (vm->n_devices > 0 || vm->n_hwpts > 0))
		return refuse(c, -EINVAL, IOMMULU_REASON_NO_IOMMUFD,
			      "devices-without-iommufd: %zu devices and %zu HWPTs but no iommufd",
			      vm->n_devices, vm->n_hwpts);

	/* Memfds: shmem, sealed, page-sized, each file only once. */
	memfd_st = calloc(vm->n_memfds + 1, sizeof(*memfd_st));
	memfd_size = calloc(vm->n_memfds + 1, sizeof(*memfd_size));
	if (!memfd_st || !memfd_size)
		return -ENOMEM;
	for (size_t i = 0; i < vm->n_memfds; i++) {
		r = check_memfd(c, vm, i, &memfd_st[i], &memfd_size[i]);
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (memfd_st[j].st_dev == memfd_st[i].st_dev &&
			    memfd_st[j].st_ino == memfd_st[i].st_ino)
				return refuse(c, -EPERM, IOMMULU_REASON_DUPLICATE,
					      "memfd #%zu (fd %d): duplicate: same memfd as memfd #%zu",
					      i, vm->memfds[i], j);
	}

	if (has_iommufd) {
		r = check_not_opath(c, vm->iommufd, "iommufd", SIZE_MAX);
		if (r >= 0)
			r = check_kind(c, vm->iommufd, IOMMULU_FD_IOMMUFD, "iommufd");
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < vm->n_hwpts; i++)
		for (size_t j = 0; j < i; j++)
			if (vm->hwpt_ids[i] == vm->hwpt_ids[j])
				return refuse(c, -EPERM, IOMMULU_REASON_DUPLICATE,
					      "HWPT #%zu: duplicate: id %" PRIu32 " is also HWPT #%zu",
					      i, vm->hwpt_ids[i], j);

	bdfs_mem = calloc(vm->n_devices + 1, IOMMULU_BDF_MAX);
	if (!bdfs_mem)
		return -ENOMEM;
	bdfs = bdfs_mem;
	for (size_t i = 0; i < vm->n_devices; i++) {
		r = check_device(c, vm->devices[i], i, bdfs[i]);
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (streq(bdfs[i], bdfs[j]))
				return refuse(c, -EPERM, IOMMULU_REASON_DUPLICATE,
					      "device %s (fd %d): duplicate: same device as device #%zu",
					      bdfs[i], vm->devices[i], j);
	}

	/* Everything is eligible: the manifest and the steps. */
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->steps = calloc(1 + vm->n_memfds + vm->n_hwpts + (has_iommufd ? 1 : 0) + vm->n_devices,
			  sizeof(*p->steps));
	if (!p->steps)
		return -ENOMEM;
	r = iommulu_manifest_new(vm->name, &p->manifest);
	if (r < 0)
		return r;
	p->manifest->generation = generation;

	add_step(p, IOMMULU_STEP_MANIFEST, -1, IOMMULU_MANIFEST_TOKEN, 0);
	for (size_t i = 0; i < vm->n_memfds; i++) {
		uint64_t token = IOMMULU_TOKEN_MEMFD_BASE + i;

		add_step(p, IOMMULU_STEP_MEMFD, vm->memfds[i], token, i);
		r = iommulu_manifest_add_memfd(p->manifest, token, memfd_size[i]);
		if (r < 0)
			return r;
	}
	if (has_iommufd) {
		r = iommulu_manifest_set_iommufd(p->manifest, IOMMULU_TOKEN_IOMMUFD);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < vm->n_hwpts; i++) {
		uint64_t token = IOMMULU_TOKEN_HWPT_BASE + i;

		add_step(p, IOMMULU_STEP_MARK_HWPT, vm->iommufd, token, i)->hwpt_id = vm->hwpt_ids[i];
		r = iommulu_manifest_add_hwpt(p->manifest, vm->hwpt_ids[i], token);
		if (r < 0)
			return r;
	}
	if (has_iommufd)
		add_step(p, IOMMULU_STEP_IOMMUFD, vm->iommufd, IOMMULU_TOKEN_IOMMUFD, 0);
	for (size_t i = 0; i < vm->n_devices; i++) {
		uint64_t token = IOMMULU_TOKEN_DEVICE_BASE + i;

		strcpy(add_step(p, IOMMULU_STEP_DEVICE, vm->devices[i], token, i)->bdf, bdfs[i]);
		r = iommulu_manifest_add_device(p->manifest, bdfs[i], token);
		if (r < 0)
			return r;
	}

	r = iommulu_manifest_validate(p->manifest, c->error);
	if (r < 0)
		return r;

	*ret = TAKE_PTR(p);
	return 0;
}

_public_ int iommulu_plan_build(const iommulu_vm_fds *vm, uint64_t generation, iommulu_plan **ret,
				iommulu_reason *ret_reason, iommulu_error *error)
{
	build_ctx c = { .reason = IOMMULU_REASON_NONE, .error = error };
	int r;

	r = plan_build(&c, vm, generation, ret);
	if (r == -ENOMEM)
		iommulu_error_setf(error, r, "out of memory");
	if (ret_reason)
		*ret_reason = r < 0 ? c.reason : IOMMULU_REASON_NONE;
	return r;
}

static void step_describe(const iommulu_plan_step *s, char *buf, size_t len)
{
	switch (s->kind) {
	case IOMMULU_STEP_MANIFEST:
		snprintf(buf, len, "preserving manifest (token 0x%" PRIx64 ")", s->token);
		break;
	case IOMMULU_STEP_MEMFD:
		snprintf(buf, len, "preserving memfd #%zu (token 0x%" PRIx64 ")", s->index, s->token);
		break;
	case IOMMULU_STEP_MARK_HWPT:
		snprintf(buf, len, "marking HWPT %" PRIu32 " for preservation (hwpt token 0x%" PRIx64 ")",
			 s->hwpt_id, s->token);
		break;
	case IOMMULU_STEP_IOMMUFD:
		snprintf(buf, len, "preserving iommufd (token 0x%" PRIx64 ")", s->token);
		break;
	case IOMMULU_STEP_DEVICE:
		snprintf(buf, len, "preserving device %s (token 0x%" PRIx64 ")", s->bdf, s->token);
		break;
	default:
		snprintf(buf, len, "step of unknown kind %d", (int)s->kind);
		break;
	}
}

/*
 * *ret_done counts the steps dealt with before the one that failed,
 * skipped ones included, so on failure it is also the index of the failed
 * step, and on success it is n_steps.
 */
_public_ int iommulu_plan_execute(const iommulu_plan *plan, int session_fd, size_t *ret_done,
				  iommulu_error *error)
{
	size_t done = 0;
	int r = 0;

	if (!plan || (plan->n_steps > 0 && !plan->steps))
		return iommulu_error_setf(error, -EINVAL, "no plan");
	if (session_fd < 0)
		return iommulu_error_setf(error, -EBADF, "no session fd");

	for (; done < plan->n_steps; done++) {
		const iommulu_plan_step *s = &plan->steps[done];
		char what[128];

		if (s->skip)
			continue;

		switch (s->kind) {
		case IOMMULU_STEP_MANIFEST: {
			_cleanup_close_ int fd = -EBADF;
			iommulu_error merr = { .message = "" };

			r = iommulu_manifest_to_memfd(plan->manifest, &fd, &merr);
			if (r < 0) {
				step_describe(s, what, sizeof(what));
				iommulu_error_setf(error, r, "%s: %s", what, merr.message);
				goto out;
			}
			/* The session holds its own reference once preserved. */
			r = iommulu_luo_session_preserve_fd(session_fd, fd, s->token);
			break;
		}
		case IOMMULU_STEP_MEMFD:
		case IOMMULU_STEP_IOMMUFD:
		case IOMMULU_STEP_DEVICE:
			r = iommulu_luo_session_preserve_fd(session_fd, s->fd, s->token);
			break;
		case IOMMULU_STEP_MARK_HWPT:
			r = iommulu_iommufd_hwpt_mark_preserve(s->fd, s->hwpt_id, s->token);
			break;
		default:
			r = -EINVAL;
			break;
		}
		if (r < 0) {
			step_describe(s, what, sizeof(what));
			iommulu_error_setf(error, r, "%s: %s", what, strerror(-r));
			goto out;
		}
	}
out:
	if (ret_done)
		*ret_done = done;
	return r;
}

_public_ iommulu_reason iommulu_plan_step_refusal(const iommulu_plan_step *step, int err)
{
	if (!step || step->kind != IOMMULU_STEP_IOMMUFD)
		return IOMMULU_REASON_NONE;
	switch (err) {
	case -EOPNOTSUPP:
	case -EPERM:
	case -ENOLINK:
	case -ESTALE:
		return IOMMULU_REASON_HWPT_MAPPING;
	default:
		return IOMMULU_REASON_NONE;
	}
}
