/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Durable registrations: a registered VM lives in the service's fd store
 * as well as in the daemon, so that a SIGKILL or a restart loses nothing.
 *
 *   memfd.<N>.<vm>, iommufd.<vm>, device.<N>.<vm>   the VM's files
 *   owner.<vm>                                      its VMM's pidfd (FDPOLL=0)
 *   vm.<serial>.<vm>                                its record (record.c)
 *
 * Files go in before the record that names them, and a new record before
 * the old one is removed; UnregisterVM removes the record first.  systemd
 * processes the notify socket in order, so whatever a SIGKILL interrupts,
 * the store holds a complete record of the VM before or after the call
 * (and perhaps files no record names, which the next start removes).  A
 * restart takes the newest record of this boot whose files are there.
 * Only the VM's files and its owner are kept here; a preserved VM's LUO
 * session and the daemon's record of it are the session.* and record.*
 * entries (manager.c).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "manager.h"
#include "util.h"

static const char *const registration_prefixes[] = {
	FDNAME_VM_PREFIX, FDNAME_MEMFD_PREFIX, FDNAME_IOMMUFD_PREFIX, FDNAME_DEVICE_PREFIX, FDNAME_OWNER_PREFIX,
};

bool fdname_is_registration(const char *fdname)
{
	for (size_t i = 0; i < ELEMENTSOF(registration_prefixes); i++)
		if (startswith(fdname, registration_prefixes[i]))
			return true;
	return false;
}

/* "<prefix><N>.<vm>" or, with index < 0, "<prefix><vm>" */
static void fdname_of(char buf[static FDNAME_MAX], const char *prefix, long long index, const char *vm)
{
	if (index < 0)
		snprintf(buf, FDNAME_MAX, "%s%s", prefix, vm);
	else
		snprintf(buf, FDNAME_MAX, "%s%lld.%s", prefix, index, vm);
}

/* Splits "<prefix><N>.<vm>": the VM name, *ret_index N; NULL if malformed. */
static const char *fdname_parse_indexed(const char *fdname, const char *prefix, uint64_t *ret_index)
{
	const char *p = fdname + strlen(prefix);
	char *end;

	if (!startswith(fdname, prefix) || *p < '0' || *p > '9')
		return NULL;
	errno = 0;
	*ret_index = strtoull(p, &end, 10);
	if (errno || *end != '.' || !iommulu_vm_name_is_valid(end + 1))
		return NULL;
	return end + 1;
}

static bool vm_is_registration(const Vm *v)
{
	/* Files of its own, not those of an incoming session (after a
	 * kexec: those live in the session) and all of them. */
	return v->has_fds && !v->session_incoming && !v->files_lost &&
	       (v->state == VM_REGISTERING || v->state == VM_REGISTERED || v->state == VM_FAILED ||
		v->state == VM_PRESERVED);
}

/* The FDNAME of v's file f: "memfd.<N>.<vm>", "iommufd.<vm>", "device.<N>.<vm>". */
static void fdname_of_file(char buf[static FDNAME_MAX], const Vm *v, const VmFile *f)
{
	switch (f->kind) {
	case VM_FILE_MEMFD:
		fdname_of(buf, FDNAME_MEMFD_PREFIX, (long long)vm_file_number(v, f), v->name);
		break;
	case VM_FILE_DEVICE:
		fdname_of(buf, FDNAME_DEVICE_PREFIX, (long long)vm_file_number(v, f), v->name);
		break;
	default:
		fdname_of(buf, FDNAME_IOMMUFD_PREFIX, -1, v->name);
	}
}

/* Whether v's iommufd is in the fd store. */
static bool iommufd_stored(const Vm *v)
{
	const VmFile *f = vm_files_next(v, VM_FILE_IOMMUFD, NULL);

	return f && f->stored;
}

/* Remove v's files of kind that are (stored) or are not (!stored) in the
 * fd store. */
static void remove_files(Vm *v, VmFileKind kind, bool stored)
{
	char name[FDNAME_MAX];

	VM_FOREACH_FILE(f, v, kind)
		if (f->stored == stored) {
			fdname_of_file(name, v, f);
			fdstore_remove_name(v->manager, name);
		}
}

/* Withdraw what vm_persist() pushed beyond v's stored state. */
static void withdraw_unconfirmed(Vm *v, uint64_t serial)
{
	Manager *m = v->manager;
	char name[FDNAME_MAX];

	fdname_of(name, FDNAME_VM_PREFIX, (long long)serial, v->name);
	fdstore_remove_name(m, name);
	remove_files(v, VM_FILE_MEMFD, false);
	remove_files(v, VM_FILE_DEVICE, false);
	if (!iommufd_stored(v)) {
		fdname_of(name, FDNAME_IOMMUFD_PREFIX, -1, v->name);
		fdstore_remove_name(m, name);
	}
	if (!v->stored_owner) {
		fdname_of(name, FDNAME_OWNER_PREFIX, -1, v->name);
		fdstore_remove_name(m, name);
	}
}

int vm_persist(Vm *v)
{
	static const VmFileKind push_order[] = { VM_FILE_MEMFD, VM_FILE_DEVICE, VM_FILE_IOMMUFD };
	Manager *m = v->manager;
	_cleanup_free_ char *content = NULL;
	_cleanup_close_ int rec = -EBADF;
	char name[FDNAME_MAX];
	uint64_t serial = v->reg_serial + 1;
	bool files_new;
	int r = 0;

	if (!m->fdstore || !vm_is_registration(v))
		return 0;
	r = registration_content(v, m->boot_id, &content);
	if (r < 0)
		return r;
	files_new = v->owner_pidfd >= 0 && !v->stored_owner;
	for (size_t i = 0; i < v->n_files; i++)
		files_new = files_new || !v->files[i].stored;
	if (!files_new && streq_ptr(content, v->stored_content))
		return 0;

	/* The files before the record that names them. */
	for (size_t k = 0; k < ELEMENTSOF(push_order); k++)
		VM_FOREACH_FILE(f, v, push_order[k])
			if (r >= 0 && !f->stored) {
				fdname_of_file(name, v, f);
				r = fdstore_push_name(m, f->fd, name, true);
			}
	if (r >= 0 && v->owner_pidfd >= 0 && !v->stored_owner) {
		/* A pidfd signals POLLHUP once its process is reaped; systemd
		 * would drop it then, and the restarted daemon would not learn
		 * that the VMM is gone. */
		fdname_of(name, FDNAME_OWNER_PREFIX, -1, v->name);
		r = fdstore_push_name(m, v->owner_pidfd, name, false);
	}
	if (r >= 0)
		r = registration_to_memfd(content, &rec);
	if (r >= 0) {
		fdname_of(name, FDNAME_VM_PREFIX, (long long)serial, v->name);
		r = fdstore_push_name(m, rec, name, true);
	}
	if (r < 0) {
		withdraw_unconfirmed(v, serial);
		return r;
	}

	if (v->reg_serial > 0) {
		fdname_of(name, FDNAME_VM_PREFIX, (long long)v->reg_serial, v->name);
		fdstore_remove_name(m, name);
	}
	v->reg_serial = serial;
	for (size_t i = 0; i < v->n_files; i++)
		v->files[i].stored = true;
	v->stored_owner = v->owner_pidfd >= 0;
	free(v->stored_content);
	v->stored_content = TAKE_PTR(content);
	log_vm(LOG_DEBUG, LOG_VM(v->name), "Registration of VM %s stored as record %" PRIu64, v->name, serial);
	return 0;
}

void vm_forget_registration(Vm *v)
{
	Manager *m = v->manager;
	char name[FDNAME_MAX];

	if (!m->fdstore || v->reg_serial == 0)
		return;
	/* The record first: without it the files are strays. */
	fdname_of(name, FDNAME_VM_PREFIX, (long long)v->reg_serial, v->name);
	fdstore_remove_name(m, name);
	remove_files(v, VM_FILE_MEMFD, true);
	remove_files(v, VM_FILE_DEVICE, true);
	remove_files(v, VM_FILE_IOMMUFD, true);
	if (v->stored_owner) {
		fdname_of(name, FDNAME_OWNER_PREFIX, -1, v->name);
		fdstore_remove_name(m, name);
	}
	v->reg_serial = 0;
	for (size_t i = 0; i < v->n_files; i++)
		v->files[i].stored = false;
	v->stored_owner = false;
	free(v->stored_content);
	v->stored_content = NULL;
}

#ifndef F_DUPFD_QUERY
#define F_DUPFD_QUERY 1027	/* Linux 6.10 */
#endif

/* Whether a and b are the same open file description, as systemd's
 * same_fd() asks before it stores an fd: 1, 0, or -errno if the kernel
 * cannot tell. */
static int same_open_file(int a, int b)
{
	pid_t self = getpid();
	int r;

	r = fcntl(a, F_DUPFD_QUERY, b);
	if (r >= 0)
		return r > 0;
	r = (int)syscall(SYS_kcmp, self, self, KCMP_FILE, a, b);
	if (r >= 0)
		return r == 0;
	return -errno;
}

/*
 * Whether fd (with st) cannot be registered beside o_fd: a memfd is kept per
 * inode by the kernel's LUO (preserved in one session only), anything else
 * (iommufd, vfio cdevs: separate opens share the device node's inode) counts
 * as the same file only as the same open file description, which the fd
 * store keeps once.
 */
static bool files_conflict(int fd, const struct stat *st, int o_fd)
{
	struct stat b;

	if (o_fd < 0 || fstat(o_fd, &b) < 0 || b.st_dev != st->st_dev || b.st_ino != st->st_ino)
		return false;
	if (S_ISREG(st->st_mode))
		return true;
	return same_open_file(fd, o_fd) > 0;
}

/* Whether a and b are the same file in the sense of files_conflict(). */
static bool same_file(int a, int b)
{
	struct stat st;

	return a >= 0 && b >= 0 && fstat(a, &st) >= 0 && files_conflict(a, &st, b);
}

bool vm_has_files(const Vm *v, const VmFiles *f)
{
	size_t n_memfds = 0, n_devices = 0;

	if (!v->has_fds || v->session_incoming || v->files_lost ||
	    f->n_memfds != vm_files_count(v, VM_FILE_MEMFD) || f->n_devices != vm_files_count(v, VM_FILE_DEVICE) ||
	    f->n_hwpts != v->n_hwpts || (f->iommufd >= 0) != (vm_iommufd(v) >= 0))
		return false;
	for (size_t i = 0; i < v->n_files; i++) {
		const VmFile *o = &v->files[i];
		int fd = o->kind == VM_FILE_MEMFD ? f->memfds[n_memfds++] :
			 o->kind == VM_FILE_DEVICE ? f->devices[n_devices++] : f->iommufd;

		if (!same_file(fd, o->fd))
			return false;
	}
	for (size_t i = 0; i < f->n_hwpts; i++)
		if (f->hwpts[i] != v->hwpts[i])
			return false;
	if (f->n_state_memfds != vm_n_state_memfds(v))
		return false;
	for (size_t i = 0; i < f->n_state_memfds; i++)
		if (!vm_memfd_is_state(v, f->state_memfds[i]))
			return false;
	return true;
}

Vm *manager_find_file_holder(Manager *m, const Vm *v, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return NULL;
	for (size_t i = 0; i < m->n_vms; i++) {
		Vm *o = m->vms[i];

		if (o == v || !o->has_fds)
			continue;
		for (size_t k = 0; k < o->n_files; k++)
			if (files_conflict(fd, &st, o->files[k].fd))
				return o;
	}
	return NULL;
}

/* ---- restart ----------------------------------------------------------- */

/* The stored fd named "<prefix>[<index>.]<vm>", or NULL. */
static StoredFd *stored_find(StoredFd *fds, size_t n, const char *prefix, long long index, const char *vm)
{
	char name[FDNAME_MAX];

	fdname_of(name, prefix, index, vm);
	for (size_t i = 0; i < n; i++)
		if (!fds[i].used && streq_ptr(fds[i].name, name))
			return &fds[i];
	return NULL;
}

/* Takes the stored fd for one of the VM's files: its fd, or -EBADF (and a
 * note in lost) if the store does not hold it. */
static int take_file(StoredFd *fds, size_t n, const char *prefix, long long index, const char *vm,
		     char *lost, size_t size)
{
	StoredFd *f = stored_find(fds, n, prefix, index, vm);
	size_t len = strlen(lost);

	if (f) {
		f->used = true;
		return f->fd;
	}
	if (index < 0)
		snprintf(lost + len, size - len, "%s%s", len ? ", " : "", prefix);
	else
		snprintf(lost + len, size - len, "%s%s%lld", len ? ", " : "", prefix, index);
	return -EBADF;
}

static int restore_registration(Manager *m, Registration *g, uint64_t serial, StoredFd *fds, size_t n)
{
	_cleanup_(vm_freep) Vm *v = NULL;
	char lost[256] = "";
	StoredFd *owner;
	VmFile *f;
	int r;

	r = vm_new(m, g->name, &v);
	if (r < 0)
		return r;
	/* What the record names is the store's: its memfds and devices
	 * count as stored even where the store lost one. */
	for (size_t i = 0; i < g->n_memfds; i++) {
		int fd = take_file(fds, n, FDNAME_MEMFD_PREFIX, (long long)i, v->name, lost, sizeof(lost));
		struct stat st;

		if (fd >= 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != g->memfd_sizes[i]))
			log_vm(LOG_WARNING, LOG_VM(v->name), "memfd #%zu of VM %s changed size while the daemon was away",
			       i, v->name);
		r = vm_files_append(v, VM_FILE_MEMFD, fd, &f);
		if (r < 0)
			return r;
		f->memfd.size = g->memfd_sizes[i];
		f->stored = true;
	}
	for (size_t i = 0; i < g->n_state_memfds; i++)
		vm_memfd_mark_state(v, g->state_memfds[i]);
	for (size_t i = 0; i < g->n_devices; i++) {
		r = vm_files_append(v, VM_FILE_DEVICE,
				    take_file(fds, n, FDNAME_DEVICE_PREFIX, (long long)i, v->name, lost, sizeof(lost)), &f);
		if (r < 0)
			return r;
		snprintf(f->device.bdf, sizeof(f->device.bdf), "%s", g->bdfs[i]);
		f->stored = true;
	}
	if (g->has_iommufd) {
		r = vm_files_append(v, VM_FILE_IOMMUFD,
				    take_file(fds, n, FDNAME_IOMMUFD_PREFIX, -1, v->name, lost, sizeof(lost)), &f);
		if (r < 0)
			return r;
		f->stored = f->fd >= 0;
	}
	v->hwpts = TAKE_PTR(g->hwpts);
	v->n_hwpts = g->n_hwpts;
	v->has_fds = true;
	v->state = g->state;
	v->kernel_refused = g->kernel_refused;
	v->last_error = TAKE_PTR(g->last_error);
	v->owner_pid = g->owner_pid;

	owner = stored_find(fds, n, FDNAME_OWNER_PREFIX, -1, v->name);
	if (owner) {
		/* If the VMM exited meanwhile, the pidfd is readable at once
		 * and the VM goes as if the daemon had been there. */
		r = vm_watch_owner(v, g->owner_pid, owner->fd);
		owner->used = true;	/* closed by vm_watch_owner() on failure */
		if (r < 0)
			return r;
	} else
		log_vm(LOG_WARNING, LOG_VM(v->name),
		       "The fd store holds no pidfd of VM %s's VMM (pid %d): the VM stays until UnregisterVM.",
		       v->name, (int)v->owner_pid);

	if (lost[0]) {
		char msg[384];

		/* Nothing silent: the VM is failed, says what it lost, and
		 * blocks a kexec with FailurePolicy=refuse. */
		snprintf(msg, sizeof(msg), "the fd store lost %s across a daemon restart; unregister the VM and "
			 "register it again", lost);
		free(v->last_error);
		v->last_error = strdup(msg);
		v->state = VM_FAILED;
		v->files_lost = true;
		log_vm(LOG_ERR, LOG_VM(v->name), "VM %s: %s", v->name, msg);
	}

	v->reg_serial = serial;
	v->stored_owner = v->owner_pidfd >= 0;
	r = registration_content(v, m->boot_id, &v->stored_content);
	if (r < 0)
		return r;
	r = manager_add_vm(m, v);
	if (r < 0)
		return r;
	log_vm(LOG_NOTICE, LOG_VM(v->name),
	       "Took back %s VM %s from the fd store: %zu memfd(s), %zu device(s), %zu HWPT(s), VMM pid %d",
	       vm_state_to_string(v->state), v->name, vm_files_count(v, VM_FILE_MEMFD),
	       vm_files_count(v, VM_FILE_DEVICE), v->n_hwpts, (int)v->owner_pid);
	TAKE_PTR(v);
	return 0;
}

void manager_restore_registrations(Manager *m, StoredFd *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		Registration g = {};
		uint64_t serial, best = 0;
		const char *vm;
		size_t pick = i;
		int r;

		if (fds[i].used || !fds[i].name ||
		    !(vm = fdname_parse_indexed(fds[i].name, FDNAME_VM_PREFIX, &serial)))
			continue;
		if (manager_find_vm(m, vm))
			continue;	/* done with a newer record of it */
		/* The newest record of this VM. */
		for (size_t k = 0; k < n; k++) {
			uint64_t s;
			const char *other;

			if (!fds[k].used && fds[k].name &&
			    (other = fdname_parse_indexed(fds[k].name, FDNAME_VM_PREFIX, &s)) &&
			    streq_ptr(other, vm) && s >= best) {
				best = s;
				pick = k;
			}
		}
		r = registration_parse_fd(fds[pick].fd, &g);
		if (r >= 0 && !streq_ptr(g.name, vm))
			r = -EBADMSG;
		if (r < 0) {
			log_vm_errno(LOG_ERR, r, LOG_VM(vm), "Record %s in the fd store is unreadable, dropping VM %s: %m",
				     fds[pick].name, vm);
			registration_done(&g);
			continue;
		}
		if (!streq_ptr(g.boot_id, m->boot_id)) {
			/* The VMM is gone with the previous kernel. */
			log_vm(LOG_INFO, LOG_VM(vm), "Dropping the registration of VM %s from an earlier boot.", vm);
			registration_done(&g);
			continue;
		}
		r = restore_registration(m, &g, best, fds, n);
		if (r < 0)
			log_vm_errno(LOG_ERR, r, LOG_VM(vm), "Failed to take back the registration of VM %s: %m", vm);
		else
			fds[pick].used = true;
		registration_done(&g);
	}
}
