/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A VM's files: one array of typed entries (VmFile), in the order they
 * came.  Memfds and devices are numbered by kind, which is how every
 * outside name of a file counts them ("memfd:N" in RetrieveVM,
 * "memfd.<N>.<vm>" and "device.<N>.<vm>" in the fd store, StateMemfds).
 * A registration only ever appends, and a part rolled back is cut off the
 * end again (vm_truncate_files()).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager.h"
#include "util.h"

size_t vm_files_count(const Vm *v, VmFileKind kind)
{
	size_t n = 0;

	for (size_t i = 0; i < v->n_files; i++)
		n += v->files[i].kind == kind;
	return n;
}

VmFile *vm_files_next(const Vm *v, VmFileKind kind, const VmFile *f)
{
	for (size_t i = f ? (size_t)(f - v->files) + 1 : 0; i < v->n_files; i++)
		if (v->files[i].kind == kind)
			return &v->files[i];
	return NULL;
}

VmFile *vm_file(const Vm *v, VmFileKind kind, size_t i)
{
	VM_FOREACH_FILE(f, v, kind)
		if (i-- == 0)
			return f;
	return NULL;
}

size_t vm_file_number(const Vm *v, const VmFile *f)
{
	size_t n = 0;

	for (const VmFile *o = v->files; o < f; o++)
		n += o->kind == f->kind;
	return n;
}

const char *vm_file_role(const Vm *v, const VmFile *f, char buf[static VM_FILE_ROLE_MAX])
{
	switch (f->kind) {
	case VM_FILE_MEMFD:
		snprintf(buf, VM_FILE_ROLE_MAX, "memfd:%zu", vm_file_number(v, f));
		break;
	case VM_FILE_IOMMUFD:
		snprintf(buf, VM_FILE_ROLE_MAX, "iommufd");
		break;
	case VM_FILE_DEVICE:
		snprintf(buf, VM_FILE_ROLE_MAX, "device:%s", f->device.bdf);
		break;
	default:
		buf[0] = 0;
	}
	return buf;
}

int vm_iommufd(const Vm *v)
{
	const VmFile *f = vm_files_next(v, VM_FILE_IOMMUFD, NULL);

	return f ? f->fd : -EBADF;
}

int vm_files_append(Vm *v, VmFileKind kind, int fd, VmFile **ret)
{
	VmFile *files = reallocarray(v->files, v->n_files + 1, sizeof(VmFile));

	if (!files) {
		safe_close(fd);
		return -ENOMEM;
	}
	v->files = files;
	files[v->n_files] = (VmFile){ .kind = kind, .fd = fd };
	if (ret)
		*ret = &files[v->n_files];
	v->n_files++;
	return 0;
}

/* Our own copy of fd: the message's fds close with it. */
static int vm_files_append_dup(Vm *v, VmFileKind kind, int fd)
{
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);

	if (copy < 0)
		return -errno;
	return vm_files_append(v, kind, copy, NULL);
}

int vm_add_files(Vm *v, const VmFiles *add, const iommulu_plan *plan)
{
	size_t had = v->n_files, i;
	uint32_t *hwpts;
	int r = 0;

	if (add->iommufd >= 0 && vm_iommufd(v) >= 0)
		return -EEXIST;
	hwpts = reallocarray(v->hwpts, v->n_hwpts + add->n_hwpts ?: 1, sizeof(uint32_t));
	if (!hwpts)
		return -ENOMEM;
	v->hwpts = hwpts;

	for (i = 0; r >= 0 && i < add->n_memfds; i++)
		r = vm_files_append_dup(v, VM_FILE_MEMFD, add->memfds[i]);
	if (r >= 0 && add->iommufd >= 0)
		r = vm_files_append_dup(v, VM_FILE_IOMMUFD, add->iommufd);
	for (i = 0; r >= 0 && i < add->n_devices; i++)
		r = vm_files_append_dup(v, VM_FILE_DEVICE, add->devices[i]);
	if (r < 0) {
		vm_truncate_files(v, had, v->n_hwpts);
		return r;
	}

	/* Sizes and BDFs as the plan of all the VM's files found them. */
	i = 0;
	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD)
		if (i < plan->manifest->n_memfds)
			f->memfd.size = plan->manifest->memfds[i++].size;
	for (i = 0; i < plan->n_steps; i++) {
		VmFile *f;

		if (plan->steps[i].kind == IOMMULU_STEP_DEVICE &&
		    (f = vm_file(v, VM_FILE_DEVICE, plan->steps[i].index)))
			snprintf(f->device.bdf, sizeof(f->device.bdf), "%s", plan->steps[i].bdf);
	}
	for (i = 0; i < add->n_state_memfds; i++)
		vm_memfd_mark_state(v, add->state_memfds[i]);
	if (add->n_hwpts)
		memcpy(v->hwpts + v->n_hwpts, add->hwpts, add->n_hwpts * sizeof(uint32_t));
	v->n_hwpts += add->n_hwpts;
	v->has_fds = true;
	v->eligibility_stale = true;
	return 0;
}

void vm_truncate_files(Vm *v, size_t n_files, size_t n_hwpts)
{
	for (size_t i = n_files; i < v->n_files; i++)
		v->files[i].fd = safe_close(v->files[i].fd);
	v->n_files = MIN(v->n_files, n_files);
	v->n_hwpts = MIN(v->n_hwpts, n_hwpts);
	v->eligibility_stale = true;
}

void vm_close_files(Vm *v)
{
	vm_truncate_files(v, 0, 0);
	free(v->files);
	free(v->hwpts);
	v->files = NULL;
	v->hwpts = NULL;
	v->has_fds = false;
}

void vm_files_move(Vm *v, Vm *from)
{
	vm_truncate_files(v, 0, 0);
	free(v->files);
	free(v->hwpts);
	v->files = TAKE_PTR(from->files);
	v->n_files = from->n_files;
	v->hwpts = TAKE_PTR(from->hwpts);
	v->n_hwpts = from->n_hwpts;
	from->n_files = from->n_hwpts = 0;
}

int vm_files_from_manifest(Vm *v, const iommulu_manifest *mf)
{
	VmFile *f;
	int r;

	if (!v->hwpts) {
		v->hwpts = calloc(mf->n_hwpts ?: 1, sizeof(uint32_t));
		if (!v->hwpts)
			return -ENOMEM;
		v->n_hwpts = mf->n_hwpts;
		for (size_t i = 0; i < mf->n_hwpts; i++)
			v->hwpts[i] = mf->hwpts[i].id;
	}
	for (size_t i = 0; i < mf->n_memfds; i++) {
		r = vm_files_append(v, VM_FILE_MEMFD, -EBADF, &f);
		if (r < 0)
			return r;
		f->memfd.size = mf->memfds[i].size;
	}
	if (mf->has_iommufd && (r = vm_files_append(v, VM_FILE_IOMMUFD, -EBADF, NULL)) < 0)
		return r;
	for (size_t i = 0; i < mf->n_devices; i++) {
		r = vm_files_append(v, VM_FILE_DEVICE, -EBADF, &f);
		if (r < 0)
			return r;
		snprintf(f->device.bdf, sizeof(f->device.bdf), "%s", mf->devices[i].bdf);
	}
	return 0;
}

bool vm_memfd_is_state(const Vm *v, size_t i)
{
	const VmFile *f = vm_file(v, VM_FILE_MEMFD, i);

	return f && f->memfd.state > 0;
}

void vm_memfd_mark_state(Vm *v, size_t i)
{
	VmFile *f = vm_file(v, VM_FILE_MEMFD, i);
	uint32_t last = 0;

	if (!f || f->memfd.state > 0)
		return;
	VM_FOREACH_FILE(o, v, VM_FILE_MEMFD)
		if (o->memfd.state > last)
			last = o->memfd.state;
	f->memfd.state = last + 1;
}

size_t vm_n_state_memfds(const Vm *v)
{
	size_t n = 0;

	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD)
		n += f->memfd.state > 0;
	return n;
}

int vm_state_memfds(const Vm *v, uint32_t **ret, size_t *ret_n)
{
	_cleanup_free_ uint32_t *numbers = NULL, *order = NULL;
	size_t n = 0, i = 0;

	*ret = NULL;
	*ret_n = 0;
	n = vm_n_state_memfds(v);
	if (n == 0)
		return 0;
	numbers = calloc(n, sizeof(uint32_t));
	order = calloc(n, sizeof(uint32_t));
	if (!numbers || !order)
		return -ENOMEM;
	n = 0;
	/* Insertion by the order they were named in. */
	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD) {
		size_t k = n;

		if (f->memfd.state > 0) {
			for (; k > 0 && order[k - 1] > f->memfd.state; k--) {
				order[k] = order[k - 1];
				numbers[k] = numbers[k - 1];
			}
			order[k] = f->memfd.state;
			numbers[k] = (uint32_t)i;
			n++;
		}
		i++;
	}
	*ret = TAKE_PTR(numbers);
	*ret_n = n;
	return 0;
}

uint64_t vm_guest_memory_bytes(const Vm *v)
{
	uint64_t bytes = 0;

	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD)
		if (f->memfd.state == 0)
			bytes += f->memfd.size;
	return bytes;
}

VmFile *vm_device(const Vm *v, const char *bdf)
{
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE)
		if (streq_ptr(f->device.bdf, bdf))
			return f;
	return NULL;
}

const DeviceSnapshot *vm_device_snapshot(const Vm *v, const char *bdf)
{
	const VmFile *f = vm_device(v, bdf);

	return f && f->device.snapshot.valid ? &f->device.snapshot : NULL;
}

void vm_take_snapshots(Vm *v, const Vm *from)
{
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE) {
		const DeviceSnapshot *s = vm_device_snapshot(from, f->device.bdf);

		f->device.snapshot = s ? *s : (DeviceSnapshot){};
	}
}

void vm_files_take_record(Vm *v, const Vm *rec)
{
	VmFile *f;
	size_t i = 0;

	/* Numbered as the record named them, so they keep its order. */
	VM_FOREACH_FILE(r, rec, VM_FILE_MEMFD) {
		if (r->memfd.state > 0 && (f = vm_file(v, VM_FILE_MEMFD, i)))
			f->memfd.state = r->memfd.state;
		i++;
	}
	vm_take_snapshots(v, rec);
}

void vm_fds_done(VmFds *f)
{
	free(f->memfds);
	free(f->devices);
	free(f->hwpts);
	*f = (VmFds){};
}

int vm_fds_build(const Vm *v, const char *name, const VmFiles *add, VmFds *ret)
{
	static const Vm none = {};
	static const VmFiles nothing = { .iommufd = -1 };
	size_t n_memfds = 0, n_devices = 0;
	VmFds f = {};

	v = v ?: &none;
	add = add ?: &nothing;
	f.memfds = calloc(vm_files_count(v, VM_FILE_MEMFD) + add->n_memfds + 1, sizeof(int));
	f.devices = calloc(vm_files_count(v, VM_FILE_DEVICE) + add->n_devices + 1, sizeof(int));
	f.hwpts = calloc(v->n_hwpts + add->n_hwpts + 1, sizeof(uint32_t));
	if (!f.memfds || !f.devices || !f.hwpts) {
		vm_fds_done(&f);
		return -ENOMEM;
	}
	VM_FOREACH_FILE(x, v, VM_FILE_MEMFD)
		f.memfds[n_memfds++] = x->fd;
	VM_FOREACH_FILE(x, v, VM_FILE_DEVICE)
		f.devices[n_devices++] = x->fd;
	for (size_t i = 0; i < add->n_memfds; i++)
		f.memfds[n_memfds++] = add->memfds[i];
	for (size_t i = 0; i < add->n_devices; i++)
		f.devices[n_devices++] = add->devices[i];
	if (v->n_hwpts)
		memcpy(f.hwpts, v->hwpts, v->n_hwpts * sizeof(uint32_t));
	if (add->n_hwpts)
		memcpy(f.hwpts + v->n_hwpts, add->hwpts, add->n_hwpts * sizeof(uint32_t));
	f.fds = (iommulu_vm_fds){
		.name = name,
		.memfds = f.memfds,
		.n_memfds = n_memfds,
		.iommufd = vm_iommufd(v) >= 0 ? vm_iommufd(v) : add->iommufd >= 0 ? add->iommufd : -1,
		.hwpt_ids = f.hwpts,
		.n_hwpts = v->n_hwpts + add->n_hwpts,
		.devices = f.devices,
		.n_devices = n_devices,
	};
	*ret = f;
	return 0;
}
