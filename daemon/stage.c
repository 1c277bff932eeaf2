/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The kernel loaded for kexec (StageKernel).
 *
 * A kexec into a kernel that cannot adopt preserved devices (one without
 * the kernel-patches series, without LUO on its command line, or with the
 * IOMMU switched off) resets the IOMMU under devices that are still doing
 * DMA.  The running kernel does not tell what is loaded for kexec (only
 * /sys/kernel/kexec_loaded), so the daemon loads it itself: StageKernel
 * takes the image, initrd and config as fds, copies the image and initrd
 * into sealed memfds, checks the copy (kimage.c) and loads that copy with
 * kexec_file_load(2).  When logind announces the kexec, the daemon loads
 * the same copy again (manager_reload_staged_kernel()), so whatever was
 * loaded meanwhile (`kexec -l` behind its back), the kernel that boots is
 * the one it checked.
 *
 * VMs with devices (or an iommufd) are preserved for a kexec only into a
 * kernel staged this way that carries the series; memfd-only VMs need only
 * LUO, which a plain `kexec -l` may give too (their loss would lose guest
 * RAM, but no DMA runs through them), so they are refused only when the
 * staged kernel is known to lack it.
 *
 * The staged kernel lives in the service's fd store too (staged.kernel,
 * staged.initrd, staged.record: the sealed copies and what was checked),
 * so that a restarted daemon still knows what is loaded for kexec, instead
 * of refusing every VM with devices until the operator stages again.  A
 * record of an earlier boot is dropped: that kernel has booted.  They are
 * removed before the kexec, so that systemd does not carry an image
 * through it.
 *
 * IOMMULU_KEXEC_FAKE=PATH (tests only): instead of kexec_file_load(2),
 * append one line per load or unload to PATH.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "manager.h"
#include "util.h"

#ifndef KEXEC_FILE_UNLOAD
#define KEXEC_FILE_UNLOAD 0x00000001
#endif
#ifndef KEXEC_FILE_NO_INITRAMFS
#define KEXEC_FILE_NO_INITRAMFS 0x00000004
#endif

#define STAGE_IMAGE_MAX (256ull << 20)
#define STAGE_INITRD_MAX (2ull << 30)
#define STAGE_CONFIG_MAX (8u << 20)

StagedKernel *staged_kernel_free(StagedKernel *k)
{
	if (!k)
		return NULL;
	safe_close(k->kernel_fd);
	safe_close(k->initrd_fd);
	free(k->name);
	free(k->cmdline);
	free(k);
	return NULL;
}

static void staged_kernel_freep(StagedKernel **k)
{
	staged_kernel_free(*k);
}

#define FDNAME_STAGED_KERNEL "staged.kernel"
#define FDNAME_STAGED_INITRD "staged.initrd"
#define FDNAME_STAGED_RECORD "staged.record"

bool fdname_is_staged(const char *fdname)
{
	return startswith(fdname, "staged.");
}

void manager_forget_staged_kernel(Manager *m)
{
	if (!m->fdstore)
		return;
	/* The record first: without it the copies are strays. */
	fdstore_remove_name(m, FDNAME_STAGED_RECORD);
	fdstore_remove_name(m, FDNAME_STAGED_KERNEL);
	fdstore_remove_name(m, FDNAME_STAGED_INITRD);
}

/* Replace the fd store's staged kernel with k.  A failure is logged: the
 * kernel is staged all the same, but a restart would forget it. */
static void staged_persist(Manager *m, const StagedKernel *k)
{
	_cleanup_close_ int rec = -EBADF;
	int r;

	if (!m->fdstore)
		return;
	manager_forget_staged_kernel(m);
	r = fdstore_push_name(m, k->kernel_fd, FDNAME_STAGED_KERNEL, true);
	if (r >= 0 && k->initrd_fd >= 0)
		r = fdstore_push_name(m, k->initrd_fd, FDNAME_STAGED_INITRD, true);
	if (r >= 0)
		r = staged_record_to_memfd(k, m->boot_id, &rec);
	if (r >= 0)
		r = fdstore_push_name(m, rec, FDNAME_STAGED_RECORD, true);
	if (r < 0) {
		manager_forget_staged_kernel(m);
		log_warning_errno(r, "Failed to keep staged kernel %s in the fd store: %m; a restart of iommu-lud "
				  "would forget it (and refuse VMs with devices until it is staged again)", k->name);
	}
}

static int stored_fd(StoredFd *fds, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!fds[i].used && streq_ptr(fds[i].name, name)) {
			fds[i].used = true;
			return fds[i].fd;
		}
	return -EBADF;
}

/* A copy StageKernel made: a memfd sealed against any change. */
static bool is_sealed_copy(int fd)
{
	int seals = fcntl(fd, F_GET_SEALS);

	return seals >= 0 && (seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
				     (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

void manager_restore_staged_kernel(Manager *m, StoredFd *fds, size_t n)
{
	_cleanup_(staged_kernel_freep) StagedKernel *k = NULL;
	StagedRecord *rec = NULL;
	int rec_fd, kernel_fd, initrd_fd, r;

	rec_fd = stored_fd(fds, n, FDNAME_STAGED_RECORD);
	kernel_fd = stored_fd(fds, n, FDNAME_STAGED_KERNEL);
	initrd_fd = stored_fd(fds, n, FDNAME_STAGED_INITRD);
	if (rec_fd < 0 && kernel_fd < 0 && initrd_fd < 0)
		return;
	rec = calloc(1, sizeof(*rec));
	if (!rec) {
		log_oom();
		goto drop;
	}
	if (rec_fd < 0 || kernel_fd < 0) {
		log_warning("The fd store holds part of a staged kernel only (a stop during StageKernel); "
			    "dropping it.");
		goto drop;
	}
	r = staged_record_parse_fd(rec_fd, rec);
	if (r < 0) {
		log_error_errno(r, "The staged kernel's record in the fd store is unreadable, dropping it: %m");
		goto drop;
	}
	if (!streq_ptr(rec->boot_id, m->boot_id)) {
		log_info("Dropping kernel %s (%s) staged in an earlier boot.", rec->name, rec->verdict.release);
		goto drop;
	}
	if (!is_sealed_copy(kernel_fd) || rec->initrd != (initrd_fd >= 0) ||
	    (initrd_fd >= 0 && !is_sealed_copy(initrd_fd))) {
		log_error("The staged kernel %s in the fd store is not the sealed copy that was checked; "
			  "dropping it.", rec->name);
		goto drop;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		log_oom();
		goto drop;
	}
	k->kernel_fd = kernel_fd;
	k->initrd_fd = initrd_fd;
	kernel_fd = initrd_fd = -EBADF;
	k->name = strdup(rec->name);
	k->cmdline = strdup(rec->cmdline);
	k->verdict = rec->verdict;
	if (!k->name || !k->cmdline) {
		log_oom();
		goto drop;
	}
	log_notice("Took back kernel %s (%s) staged before the restart; it adopts LUO sessions%s.", k->name,
		   k->verdict.release, k->verdict.devices ? " and devices" : ", but not devices");
	safe_close(rec_fd);
	free(rec);
	staged_kernel_free(m->staged);
	m->staged = TAKE_PTR(k);
	return;
drop:
	free(rec);
	safe_close(rec_fd);
	safe_close(kernel_fd);
	safe_close(initrd_fd);
	manager_forget_staged_kernel(m);
}

/* Copy fd (from its start) into a sealed memfd of at most max bytes. */
static int copy_sealed(int fd, const char *what, uint64_t max, int *ret, uint64_t *ret_size)
{
	_cleanup_close_ int mfd = -EBADF;
	_cleanup_free_ uint8_t *buf = NULL;
	char path[64];
	uint64_t total = 0;
	off_t off = 0;
	int rfd;

	mfd = memfd_create(what, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -errno;
	buf = malloc(1u << 20);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = pread(fd, buf, 1u << 20, off), w;

		if (n < 0) {
			if (errno == ESPIPE) {	/* a pipe: read on */
				n = read(fd, buf, 1u << 20);
				if (n < 0)
					return -errno;
			} else
				return -errno;
		}
		if (n == 0)
			break;
		total += (uint64_t)n;
		off += n;
		if (total > max)
			return -EFBIG;
		for (ssize_t done = 0; done < n; done += w) {
			w = write(mfd, buf + done, (size_t)(n - done));
			if (w < 0)
				return -errno;
		}
	}
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		return -errno;
	/* kexec_file_load(2) refuses a file anyone has open for writing
	 * (ETXTBSY): keep a read-only open of it instead. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	rfd = open(path, O_RDONLY | O_CLOEXEC);
	if (rfd < 0)
		return -errno;
	*ret = rfd;
	*ret_size = total;
	return 0;
}

static int read_text(int fd, char **ret)
{
	_cleanup_free_ char *s = NULL;
	size_t len = 0, cap = 0;
	off_t off = 0;

	for (;;) {
		ssize_t n;

		if (cap - len < 65536) {
			char *p;

			if (cap >= STAGE_CONFIG_MAX)
				return -EFBIG;
			cap = cap ? cap * 2 : 262144;
			p = realloc(s, cap + 1);
			if (!p)
				return -ENOMEM;
			s = p;
		}
		n = pread(fd, s + len, cap - len, off);
		if (n < 0 && errno == ESPIPE)
			n = read(fd, s + len, cap - len);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
		off += n;
	}
	if (!s && !(s = malloc(1)))
		return -ENOMEM;
	s[len] = 0;
	*ret = TAKE_PTR(s);
	return 0;
}

static int kexec_load(int kernel_fd, int initrd_fd, const char *cmdline, unsigned long flags)
{
	const char *fake = getenv("IOMMULU_KEXEC_FAKE");

	if (!(flags & KEXEC_FILE_UNLOAD) && initrd_fd < 0)
		flags |= KEXEC_FILE_NO_INITRAMFS;
	if (fake) {
		struct stat k = {}, i = {};
		FILE *f = fopen(fake, "ae");

		if (!f)
			return -errno;
		if (flags & KEXEC_FILE_UNLOAD)
			fprintf(f, "unload\n");
		else {
			(void)fstat(kernel_fd, &k);
			if (initrd_fd >= 0)
				(void)fstat(initrd_fd, &i);
			fprintf(f, "load kernel=%" PRIu64 " initrd=%" PRIu64 " cmdline=%s\n", (uint64_t)k.st_size,
				(uint64_t)i.st_size, cmdline);
		}
		fclose(f);
		return 0;
	}
	if (syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, (unsigned long)(cmdline ? strlen(cmdline) + 1 : 0),
		    cmdline ?: "", flags) < 0)
		return -errno;
	return 0;
}

static void stage_fail(VmError *e, VmOutcome outcome, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void stage_fail(VmError *e, VmOutcome outcome, int errnum, const char *fmt, ...)
{
	va_list ap;

	e->outcome = outcome;
	e->errnum = errnum;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

static void emit_staged(Manager *m)
{
	manager_emit_changed_strv(m, (char *[]){ (char *)"StagedKernel", (char *)"StagedKernelAdopts",
						 (char *)"StagedKernelProblem", NULL });
}

static bool vm_needs_series(const Vm *v)
{
	return vm_files_count(v, VM_FILE_DEVICE) > 0 || vm_iommufd(v) >= 0;
}

/* The VMs a kexec would carry: registered (ready or not), preserved. */
static bool vm_goes_along(const Vm *v)
{
	return v->state == VM_REGISTERED || v->state == VM_PRESERVED || v->state == VM_FAILED ||
	       v->state == VM_REGISTERING;
}

static bool verdict_adopts(const StagedKernel *k, const Vm *v, VmError *e)
{
	const KernelVerdict *kv = &k->verdict;

	if (!kv->luo) {
		stage_fail(e, VM_OUTCOME_KERNEL_INCOMPATIBLE, 0,
			   "VM %s: kernel %s (%s) for the kexec cannot adopt LUO sessions: %s", v->name, k->name,
			   kv->release, kv->luo_problem);
		return false;
	}
	if (vm_needs_series(v) && !kv->devices) {
		stage_fail(e, VM_OUTCOME_KERNEL_INCOMPATIBLE, 0,
			   "VM %s: kernel %s (%s) for the kexec cannot adopt its %s: %s", v->name, k->name,
			   kv->release, vm_files_count(v, VM_FILE_DEVICE) ? "devices" : "iommufd", kv->devices_problem);
		return false;
	}
	return true;
}

bool manager_kernel_adopts(Manager *m, const Vm *v, VmError *e)
{
	if (m->staged)
		return verdict_adopts(m->staged, v, e);
	if (!vm_needs_series(v))
		return true;
	stage_fail(e, VM_OUTCOME_KERNEL_NOT_CHECKED, 0, "VM %s: its %s a kernel staged with `iommu-luctl stage` "
		 "(StageKernel), which checks that it can adopt them; none was", v->name,
		 vm_files_count(v, VM_FILE_DEVICE) ? "devices need" : "iommufd needs");
	return false;
}

int manager_stage_kernel(Manager *m, const char *name, int kernel_fd, int initrd_fd, int config_fd,
			 const char *cmdline, VmError *e)
{
	_cleanup_(staged_kernel_freep) StagedKernel *k = NULL;
	_cleanup_free_ uint8_t *vmlinux = NULL;
	_cleanup_free_ char *config = NULL;
	char image_err[256] = "", source[128];
	const uint8_t *img;
	uint64_t size, isize = 0;
	size_t vlen = 0;
	int r;

	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->kernel_fd = k->initrd_fd = -EBADF;
	k->name = strdup(name && name[0] ? name : "(unnamed image)");
	k->cmdline = strdup(cmdline);
	if (!k->name || !k->cmdline)
		return -ENOMEM;

	r = copy_sealed(kernel_fd, "iommu-lud-kernel", STAGE_IMAGE_MAX, &k->kernel_fd, &size);
	if (r < 0) {
		stage_fail(e, VM_OUTCOME_ERRNO, -r, "kernel %s: %s", k->name,
			 r == -EFBIG ? "larger than 256 MiB" : "cannot read it");
		return r;
	}
	if (initrd_fd >= 0) {
		r = copy_sealed(initrd_fd, "iommu-lud-initrd", STAGE_INITRD_MAX, &k->initrd_fd, &isize);
		if (r < 0) {
			stage_fail(e, VM_OUTCOME_ERRNO, -r, "initrd of kernel %s: %s", k->name,
				 r == -EFBIG ? "larger than 2 GiB" : "cannot read it");
			return r;
		}
	}
	if (size == 0) {
		stage_fail(e, VM_OUTCOME_ERRNO, EINVAL, "kernel %s is empty", k->name);
		return -EINVAL;
	}
	img = mmap(NULL, size, PROT_READ, MAP_SHARED, k->kernel_fd, 0);
	if (img == MAP_FAILED) {
		stage_fail(e, VM_OUTCOME_ERRNO, errno, "kernel %s: cannot map it", k->name);
		return -e->errnum;
	}
	r = kimage_release(img, size, k->verdict.release);
	if (r == -EINVAL) {
		munmap((void *)img, size);
		stage_fail(e, VM_OUTCOME_ERRNO, EINVAL, "kernel %s is not an x86 bzImage (no \"HdrS\" setup header)",
			 k->name);
		return -EINVAL;
	}
	if (r < 0)
		snprintf(k->verdict.release, sizeof(k->verdict.release), "unknown release");
	if (kimage_decompress(img, size, &vmlinux, &vlen, image_err, sizeof(image_err)) < 0)
		vmlinux = NULL;
	munmap((void *)img, size);

	if (config_fd >= 0) {
		r = read_text(config_fd, &config);
		if (r < 0) {
			stage_fail(e, VM_OUTCOME_ERRNO, -r, "config of kernel %s: cannot read it", k->name);
			return r;
		}
		snprintf(source, sizeof(source), "the config given");
	} else if (vmlinux && kimage_ikconfig(vmlinux, vlen, &config) >= 0)
		snprintf(source, sizeof(source), "embedded IKCONFIG");
	else
		snprintf(source, sizeof(source), "none");
	kimage_verdict(config, source, vmlinux, vlen, image_err, k->cmdline, &k->verdict);
	log_info("Kernel %s (%s), command line \"%s\": LUO sessions: %s; devices: %s", k->name, k->verdict.release,
		 k->cmdline, k->verdict.luo ? "yes" : k->verdict.luo_problem,
		 k->verdict.devices ? "yes" : k->verdict.devices_problem);

	/* Refuse a kernel that could not adopt a VM that would go along. */
	for (size_t i = 0; i < m->n_vms; i++) {
		Vm *v = m->vms[i];

		if (vm_goes_along(v) && !verdict_adopts(k, v, e)) {
			log_vm(LOG_ERR, LOG_VM(v->name), "Refusing to stage kernel %s: %s", k->name, e->message);
			return -EPERM;
		}
	}
	if (!k->verdict.luo) {
		stage_fail(e, VM_OUTCOME_KERNEL_INCOMPATIBLE, 0, "kernel %s (%s) cannot adopt LUO sessions: %s", k->name,
			 k->verdict.release, k->verdict.luo_problem);
		log_error("Refusing to stage kernel: %s", e->message);
		return -EPERM;
	}

	r = kexec_load(k->kernel_fd, k->initrd_fd, k->cmdline, 0);
	if (r < 0) {
		stage_fail(e, VM_OUTCOME_ERRNO, -r, "kexec_file_load of kernel %s (%s) failed", k->name,
			 k->verdict.release);
		return log_error_errno(r, "%s: %m", e->message);
	}
	log_notice("Staged kernel %s (%s, %" PRIu64 " bytes%s) for kexec; it adopts LUO sessions%s.", k->name,
		   k->verdict.release, size, k->initrd_fd >= 0 ? ", with an initrd" : "",
		   k->verdict.devices ? " and devices" : ", but not devices");
	staged_persist(m, k);
	staged_kernel_free(m->staged);
	m->staged = TAKE_PTR(k);
	emit_staged(m);
	shutdown_recheck_all(m);
	return 0;
}

int manager_unstage_kernel(Manager *m)
{
	int r;

	if (!m->staged)
		return 0;
	r = kexec_load(-1, -1, NULL, KEXEC_FILE_UNLOAD);
	if (r < 0)
		return log_error_errno(r, "Failed to unload kernel %s: %m", m->staged->name);
	log_notice("Unstaged kernel %s.", m->staged->name);
	manager_forget_staged_kernel(m);
	m->staged = staged_kernel_free(m->staged);
	emit_staged(m);
	shutdown_recheck_all(m);
	return 0;
}

int manager_reload_staged_kernel(Manager *m)
{
	StagedKernel *k = m->staged;
	int r;

	if (!k)
		return 0;
	r = kexec_load(k->kernel_fd, k->initrd_fd, k->cmdline, 0);
	if (r < 0) {
		log_error_errno(r, "Failed to load the staged kernel %s again for the kexec: %m; VMs with devices "
				"will not be preserved", k->name);
		manager_forget_staged_kernel(m);
		m->staged = staged_kernel_free(m->staged);
		emit_staged(m);
		shutdown_recheck_all(m);
		return r;
	}
	log_info("Loaded the staged kernel %s (%s) again for the kexec.", k->name, k->verdict.release);
	return 0;
}

void manager_unpreserve_unadoptable(Manager *m)
{
	size_t i = 0;

	while (i < m->n_vms) {
		Vm *v = m->vms[i];
		VmError e = {};

		if (v->state != VM_PRESERVED || v->session_incoming || manager_kernel_adopts(m, v, &e)) {
			i++;
			continue;
		}
		log_vm(LOG_ERR, LOG_VM(v->name), "Unpreserving VM %s before the kexec: %s", v->name, e.message);
		v->preserved_by_hook = false;
		if (vm_unpreserve(v) == 0)
			i++;	/* else removed: m->vms[i] is the next VM now */
	}
}
