/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The VM registry and each VM's life cycle:
 *
 *   registered --PreserveVM--> preserved --(kexec)--> restored --verify--> verified
 *       ^   \                     |                                         |
 *       |    `--(error)--> failed  `--UnpreserveVM--> registered     RetrieveVM
 *       |                                                                   v
 *   RegisterVM <-------------------------- finished <--FinishVM------- retrieved
 *
 *   registering --RegisterVMPart(last)--> registered  (more files than one
 *                                                      message carries)
 *
 * Preserved VMs live in a LUO session of their own, named
 * "iommulu.<generation>.<vm>", whose fd the daemon keeps and pushes into
 * the service's fd store together with a record memfd (see record.c).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"
#include "util.h"
#include "verify.h"

static const char *const vm_state_table[_VM_STATE_MAX] = {
	[VM_REGISTERED] = "registered",
	[VM_PRESERVED] = "preserved",
	[VM_RESTORED] = "restored",
	[VM_VERIFIED] = "verified",
	[VM_RETRIEVED] = "retrieved",
	[VM_FINISHED] = "finished",
	[VM_FAILED] = "failed",
	[VM_REGISTERING] = "registering",
};

const char *vm_state_to_string(VmState s)
{
	return s < _VM_STATE_MAX ? vm_state_table[s] : NULL;
}

/* ---- VM objects ------------------------------------------------------ */

static void vm_drop_owner(Vm *v)
{
	v->owner_source = sd_event_source_disable_unref(v->owner_source);
	v->owner_pidfd = safe_close(v->owner_pidfd);
}

Vm *vm_free(Vm *v)
{
	if (!v)
		return NULL;
	vm_drop_owner(v);
	vm_close_files(v);
	safe_close(v->session_fd);
	safe_close(v->record_fd);
	iommulu_manifest_free(v->manifest);
	free(v->checks);
	free(v->restore_notes);
	free(v->last_error);
	free(v->ineligible);
	free(v->stored_content);
	for (size_t b = 0; b < VM_PROP_COUNT; b++)
		free(v->announced[b]);
	free(v->path);
	free(v);
	return NULL;
}

void vm_freep(Vm **v)
{
	vm_free(*v);
}

int vm_new(Manager *m, const char *name, Vm **ret)
{
	_cleanup_(vm_freep) Vm *v = NULL;
	int r;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->manager = m;
	v->id = ++m->next_vm_id;
	v->owner_pidfd = v->session_fd = v->record_fd = -EBADF;
	v->eligibility_stale = true;
	snprintf(v->name, sizeof(v->name), "%s", name);
	r = sd_bus_path_encode(VM_PATH_PREFIX, name, &v->path);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(v);
	return 0;
}

/* By VmProperty bit. */
static const char *const vm_property_names[] = {
	"State", "Devices", "HWPTs", "GuestMemoryBytes", "StateMemfds", "Session", "LastError",
	"Generation", "OwnerPID", "Memfds", "IneligibleReason", "RestoreNotes",
};

_Static_assert(ELEMENTSOF(vm_property_names) == __builtin_ctz(_VM_PROP_ALL + 1), "a name for each VmProperty");

_Static_assert(ELEMENTSOF(vm_property_names) == VM_PROP_COUNT, "VM_PROP_COUNT");

void vm_remember_properties(Vm *v)
{
	for (size_t b = 0; b < VM_PROP_COUNT; b++) {
		char *text = NULL;

		if (bus_vm_property_text(v, vm_property_names[b], &text) < 0)
			text = NULL;	/* unknown: announced at its next change */
		free(v->announced[b]);
		v->announced[b] = text;
	}
	v->changed = 0;
}

/* Announce, once per loop iteration, the properties marked as changed
 * whose value differs from what clients last saw: a state change marks
 * every property that can move with it, most of which did not. */
static int on_emit(sd_event_source *s, void *userdata)
{
	Manager *m = userdata;

	for (size_t i = 0; i < m->n_vms; i++) {
		Vm *v = m->vms[i];
		char *props[ELEMENTSOF(vm_property_names) + 1];
		size_t n = 0;

		for (size_t b = 0; b < ELEMENTSOF(vm_property_names); b++) {
			char *text = NULL;

			if (!(v->changed & (1u << b)))
				continue;
			if (bus_vm_property_text(v, vm_property_names[b], &text) >= 0 && v->announced[b] &&
			    streq_ptr(text, v->announced[b])) {
				free(text);
				continue;
			}
			free(v->announced[b]);
			v->announced[b] = text;
			props[n++] = (char *)vm_property_names[b];
		}
		props[n] = NULL;
		v->changed = 0;
		/* Errors here are not fatal for the daemon. */
		if (n)
			(void)sd_bus_emit_properties_changed_strv(m->bus, v->path, VM_IFACE, props);
	}
	return 0;
}

void vm_changed(Vm *v, unsigned props)
{
	Manager *m = v->manager;

	if (!m->bus || !m->event)
		return;	/* nobody to tell */
	v->changed |= props;
	if (!m->emit_source) {
		if (sd_event_add_defer(m->event, &m->emit_source, on_emit, m) < 0)
			return;
		/* Before the bus's next message: a caller sees the signals of
		 * its call before the reply to its next one. */
		(void)sd_event_source_set_priority(m->emit_source, SD_EVENT_PRIORITY_NORMAL - 1);
	}
	(void)sd_event_source_set_enabled(m->emit_source, SD_EVENT_ONESHOT);
}

void vm_set_state(Vm *v, VmState s, const char *error)
{
	bool changed = v->state != s;

	v->state = s;
	v->eligibility_stale = true;
	if (error || s != VM_FAILED) {
		if (!streq_ptr(v->last_error, error) && (error || v->last_error)) {
			free(v->last_error);
			v->last_error = error ? strdup(error) : NULL;
			changed = true;
		}
	}
	/* A state change may come with new files (restore), fewer files
	 * (finish), a new session or owner: announce all that can move. */
	if (changed)
		vm_changed(v, _VM_PROP_ALL & ~VM_PROP_INELIGIBLE_REASON);
	log_vm(s == VM_FAILED ? LOG_ERR : LOG_INFO, LOG_VM_SESSION(v->name, v->session_name[0] ? v->session_name : NULL),
	       "VM %s is %s%s%s", v->name, vm_state_to_string(s), error ? ": " : "", strempty(error));
}

Vm *manager_find_vm(Manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_vms; i++)
		if (streq_ptr(m->vms[i]->name, name))
			return m->vms[i];
	return NULL;
}

int manager_add_vm(Manager *m, Vm *v)
{
	Vm **n = realloc(m->vms, (m->n_vms + 1) * sizeof(Vm *));

	if (!n)
		return -ENOMEM;
	m->vms = n;
	m->vms[m->n_vms++] = v;
	if (m->bus) {
		(void)sd_bus_emit_interfaces_added(m->bus, v->path, VM_IFACE, NULL);
		vm_remember_properties(v);
	}
	return 0;
}

void manager_remove_vm(Manager *m, Vm *v)
{
	for (size_t i = 0; i < m->n_vms; i++) {
		if (m->vms[i] != v)
			continue;
		memmove(m->vms + i, m->vms + i + 1, (m->n_vms - i - 1) * sizeof(Vm *));
		m->n_vms--;
		break;
	}
	if (m->bus)
		(void)sd_bus_emit_interfaces_removed(m->bus, v->path, VM_IFACE, NULL);
	/* Gone from the registry, gone from the fd store: a restart must
	 * not bring it back. */
	vm_forget_registration(v);
	vm_free(v);
}

/* ---- the fd store ---------------------------------------------------- */

int fdstore_push_name(Manager *m, int fd, const char *fdname, bool poll)
{
	char buf[FDNAME_MAX + 64];
	int r;

	if (!m->fdstore)
		return 0;	/* not under systemd: the daemon keeps the fd itself */
	snprintf(buf, sizeof(buf), "FDSTORE=1\nFDNAME=%s%s", fdname, poll ? "" : "\nFDPOLL=0");
	r = sd_pid_notify_with_fds(0, false, buf, &fd, 1);
	if (r < 0)
		return log_error_errno(r, "Failed to push %s into the fd store: %m", fdname);
	if (r == 0)
		return -ENOTCONN;
	return 0;
}

void fdstore_remove_name(Manager *m, const char *fdname)
{
	int r;

	if (!m->fdstore)
		return;
	r = sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", fdname);
	if (r < 0)
		log_warning_errno(r, "Failed to remove %s from the fd store: %m", fdname);
}

int fdstore_push(Manager *m, int fd, const char *prefix, const char *session_name)
{
	char name[FDNAME_MAX];

	snprintf(name, sizeof(name), "%s%s", prefix, session_name);
	return fdstore_push_name(m, fd, name, true);
}

void fdstore_remove(Manager *m, const char *prefix, const char *session_name)
{
	char name[FDNAME_MAX];

	snprintf(name, sizeof(name), "%s%s", prefix, session_name);
	fdstore_remove_name(m, name);
}

int fdstore_barrier(Manager *m)
{
	if (!m->fdstore)
		return 0;
	/* sd_notify_barrier() returns 0 also without $NOTIFY_SOCKET, and
	 * -ETIMEDOUT when PID 1 did not close the barrier fd in time. */
	return sd_notify_barrier(0, FDSTORE_BARRIER_TIMEOUT_USEC);
}

/* ---- persistent state ------------------------------------------------ *
 * <state dir>/state, rewritten atomically:
 *   boot_id=<this boot>  generation=<N>  live_updated=<0|1>
 *   session=<name>	one per preserved session
 * The session list lets a daemon that runs without an fd store (not under
 * systemd) retrieve its sessions by name after a kexec. */

void manager_save_state(Manager *m)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;

	if (!m->state_dir)
		return;
	snprintf(path, sizeof(path), "%s/state", m->state_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f) {
		log_warning_errno(errno, "Failed to write %s: %m", tmp);
		return;
	}
	fprintf(f, "boot_id=%s\ngeneration=%" PRIu64 "\nlive_updated=%d\n", m->boot_id,
		m->generation, m->live_updated);
	for (size_t i = 0; i < m->n_vms; i++)
		if (m->vms[i]->session_fd >= 0 && !m->vms[i]->session_incoming)
			fprintf(f, "session=%s\n", m->vms[i]->session_name);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0 || fclose(f) != 0) {
		log_warning_errno(errno, "Failed to write %s: %m", tmp);
		(void)unlink(tmp);
		return;
	}
	if (rename(tmp, path) < 0)
		log_warning_errno(errno, "Failed to rename %s: %m", tmp);
}

static uint64_t session_generation(const char *session_name)
{
	/* "iommulu.<gen>.<vm>" */
	const char *p;

	if (!startswith(session_name, "iommulu."))
		return 0;
	p = session_name + strlen("iommulu.");
	return strtoull(p, NULL, 10);
}

static const char *session_vm_name(const char *session_name)
{
	const char *p;

	if (!startswith(session_name, "iommulu."))
		return NULL;
	p = strchr(session_name + strlen("iommulu."), '.');
	return p && iommulu_vm_name_is_valid(p + 1) ? p + 1 : NULL;
}

/* ---- preservation ---------------------------------------------------- */

static void snapshot_device(const char *bdf, DeviceSnapshot *s)
{
	iommulu_pci_irqs irqs;
	uint8_t cfg[0x28];

	memset(s, 0, sizeof(*s));
	if (iommulu_pci_config_read(bdf, 0, cfg, sizeof(cfg)) < 0)
		return;
	s->command = (uint16_t)(cfg[4] | cfg[5] << 8);
	for (size_t b = 0; b < 6; b++) {
		const uint8_t *p = cfg + 0x10 + 4 * b;

		s->bars[b] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			     (uint32_t)p[3] << 24;
	}
	s->valid = true;
	if (iommulu_pci_irqs_read(bdf, &irqs) >= 0) {
		s->irq_known = true;
		s->irq_type = irqs.type;
		s->irq_vectors = irqs.set_up;
	}
}

static int vm_build_plan(Vm *v, iommulu_plan **ret, iommulu_reason *ret_reason, iommulu_error *e)
{
	_cleanup_(vm_fds_done) VmFds fds = {};
	int r;

	r = vm_fds_build(v, v->name, NULL, &fds);
	if (r < 0)
		return r;
	return iommulu_plan_build(&fds.fds, v->manager->generation, ret, ret_reason, e);
}

static void session_name_for(const Vm *v, uint64_t gen, char buf[static IOMMULU_LUO_SESSION_NAME_MAX + 1])
{
	/* 8 + at most 6 digits + 1 + 48 = 63 bytes: the generation wraps at
	 * a million live updates, long after older sessions are gone. */
	snprintf(buf, IOMMULU_LUO_SESSION_NAME_MAX + 1, "iommulu.%" PRIu64 ".%s", gen % 1000000,
		 v->name);
}

bool vm_can_preserve(const Vm *v)
{
	/* A VM restored after a kexec has to be finished and registered
	 * again: its incoming session cannot take new files. */
	return v->has_fds && v->session_fd < 0 && !v->session_incoming &&
	       (v->state == VM_REGISTERED || v->state == VM_FAILED);
}

static void plan_freep(iommulu_plan **p)
{
	iommulu_plan_free(*p);
}

/* Fill e; returns -errnum (or -EIO when the outcome has no errno). */
static int vm_fail(VmError *e, VmOutcome outcome, int errnum, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int vm_fail(VmError *e, VmOutcome outcome, int errnum, const char *fmt, ...)
{
	va_list ap;

	e->outcome = outcome;
	e->errnum = abs(errnum);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return e->errnum ? -e->errnum : -EIO;
}

/* v was just preserved, but systemd did not confirm that its fd store
 * holds the session (BARRIER=1 unanswered): a crash now would lose the
 * VM's preservation silently.  Undo it; the VM becomes failed, with its
 * files, and can be preserved again.  Fills msg with what happened. */
void vm_rollback_unconfirmed(Vm *v, int r, VmError *e)
{
	Manager *m = v->manager;
	char session[IOMMULU_LUO_SESSION_NAME_MAX + 1];

	snprintf(session, sizeof(session), "%s", v->session_name);
	if (r == -ETIMEDOUT)
		vm_fail(e, VM_OUTCOME_UNCONFIRMED, 0, "VM %s: systemd did not confirm within %u s that its fd store "
			"holds session %s (BARRIER=1 unanswered); preservation rolled back", v->name,
			(unsigned)(FDSTORE_BARRIER_TIMEOUT_USEC / 1000000), session);
	else
		vm_fail(e, VM_OUTCOME_ERRNO, r, "VM %s: waiting for systemd to take session %s into its fd store "
			"failed; preservation rolled back", v->name, session);
	/* Should PID 1 process the store request late, it processes the
	 * removal after it: the socket keeps the order. */
	fdstore_remove(m, FDNAME_SESSION_PREFIX, session);
	fdstore_remove(m, FDNAME_RECORD_PREFIX, session);
	v->session_fd = safe_close(v->session_fd);	/* the kernel unpreserves everything */
	v->record_fd = safe_close(v->record_fd);
	v->session_name[0] = 0;
	vm_set_state(v, VM_FAILED, e->message);
	log_vm_errno(LOG_ERR, r, LOG_VM_SESSION(v->name, session), "%s", e->message);
	(void)vm_persist(v);
	manager_save_state(m);
}

static int vm_preserve_one(Vm *v, VmError *error);

bool vm_is_preserved(const Vm *v)
{
	return v->state == VM_PRESERVED && v->session_fd >= 0 && !v->session_incoming;
}

int vm_preserve(Vm *v, VmError *error)
{
	int r = vm_preserve_one(v, error);

	/* A failure (LastError, a refusal by the kernel) is part of the
	 * registration a restart brings back; a success changes nothing in
	 * it (the session's presence in the fd store says "preserved"). */
	if (r < 0)
		(void)vm_persist(v);
	return r;
}

static int vm_preserve_one(Vm *v, VmError *error)
{
	Manager *m = v->manager;
	_cleanup_(plan_freep) iommulu_plan *plan = NULL;
	_cleanup_close_ int luo = -EBADF, session = -EBADF, rec = -EBADF, rec_store = -EBADF;
	char name[IOMMULU_LUO_SESSION_NAME_MAX + 1], msg[IOMMULU_ERROR_MAX + 192];
	iommulu_reason reason = IOMMULU_REASON_NONE;
	iommulu_error e = {};
	size_t done = 0;
	int r;

	if (vm_is_preserved(v)) {
		/* Already in its session (e.g. preserved before a daemon
		 * restart, or by the kexec hook): what the caller asked for
		 * holds, nothing to do. */
		log_vm(LOG_DEBUG, LOG_VM_SESSION(v->name, v->session_name),
		       "VM %s is already preserved in session %s", v->name, v->session_name);
		return 0;
	}
	if (!vm_can_preserve(v))
		return vm_fail(error, VM_OUTCOME_INVALID_STATE, 0, "VM %s is %s; only a registered VM can be preserved",
			       v->name, vm_state_to_string(v->state));

	r = vm_build_plan(v, &plan, &reason, &e);
	if (r == -EPERM || (r < 0 && reason != IOMMULU_REASON_NONE))
		return vm_fail(error, VM_OUTCOME_NOT_ELIGIBLE, 0, "VM %s: %s", v->name, e.message);
	if (r < 0)
		return vm_fail(error, VM_OUTCOME_ERRNO, r, "VM %s: cannot plan preservation%s%s", v->name,
			       e.message[0] ? ": " : "", e.message);

	luo = iommulu_luo_open(m->config.busy_timeout_ms);
	if (luo == -ENOENT)
		return vm_fail(error, VM_OUTCOME_KERNEL_UNSUPPORTED, 0,
			       "VM %s: /dev/liveupdate is not available: the running kernel "
			       "has no Live Update Orchestrator (or liveupdate=off)", v->name);
	if (luo == -EBUSY)
		return vm_fail(error, VM_OUTCOME_BUSY, 0, "VM %s: /dev/liveupdate stayed busy for %u ms", v->name,
			       m->config.busy_timeout_ms);
	if (luo < 0)
		return vm_fail(error, VM_OUTCOME_ERRNO, luo, "Failed to open /dev/liveupdate");

	session_name_for(v, m->generation, name);
	/* An unpreserved session of the same name goes away only when the
	 * fd store's copy is closed too; give systemd a moment. */
	for (unsigned waited = 0;; waited += 50) {
		r = iommulu_luo_session_create(luo, name, &session);
		if (r != -EEXIST || waited >= m->config.busy_timeout_ms)
			break;
		(void)usleep(50 * 1000);
	}
	luo = safe_close(luo);	/* PID 1 needs it at shutdown; never keep it */
	if (r == -EEXIST)
		return vm_fail(error, VM_OUTCOME_BUSY, 0, "VM %s: LUO session %s already exists", v->name, name);
	if (r < 0)
		return vm_fail(error, VM_OUTCOME_ERRNO, r, "VM %s: failed to create LUO session %s", v->name, name);

	r = iommulu_plan_execute(plan, session, &done, &e);
	if (r < 0) {
		const iommulu_plan_step *failed = done < plan->n_steps ? &plan->steps[done] : NULL;

		/* Closing the session makes the kernel unpreserve every file. */
		session = safe_close(session);
		/* The iommufd handler refusing what a marked HWPT maps (user
		 * memory, an unsealed or foreign memfd) is the VM's fault, not
		 * the kernel's: NotEligible, not KernelUnsupported (which
		 * EOPNOTSUPP would give), and it blocks a kexec like any other
		 * ineligible VM until the VMM fixes it or goes away. */
		v->kernel_refused = iommulu_plan_step_refusal(failed, r) != IOMMULU_REASON_NONE;
		if (v->kernel_refused)
			snprintf(msg, sizeof(msg), "%s (a marked HWPT maps memory other than the VM's "
				 "sealed guest-RAM memfds; the kernel log names the IOVA range)",
				 e.message[0] ? e.message : strerror(-r));
		else
			snprintf(msg, sizeof(msg), "%s", e.message[0] ? e.message : strerror(-r));
		vm_set_state(v, VM_FAILED, msg);
		log_vm_errno(LOG_ERR, r, LOG_VM_SESSION(v->name, name),
			     "Preserving VM %s failed, session rolled back: %s", v->name, msg);
		if (v->kernel_refused)
			return vm_fail(error, VM_OUTCOME_NOT_ELIGIBLE, 0, "VM %s: %s", v->name, msg);
		return vm_fail(error, VM_OUTCOME_ERRNO, r, "VM %s: %s", v->name,
			       e.message[0] ? e.message : "preservation failed");
	}
	v->kernel_refused = false;

	/* The daemon's record: device snapshots and the manifest text. */
	iommulu_manifest_free(v->manifest);
	v->manifest = TAKE_PTR(plan->manifest);
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE)
		snapshot_device(f->device.bdf, &f->device.snapshot);
	snprintf(v->session_name, sizeof(v->session_name), "%s", name);
	v->generation = m->generation;

	r = record_to_memfd(v, &rec);
	if (r >= 0)
		r = iommulu_luo_session_preserve_fd(session, rec, IOMMU_LUD_RECORD_TOKEN);
	if (r >= 0)
		r = record_to_memfd(v, &rec_store);
	if (r < 0) {
		session = safe_close(session);
		v->session_name[0] = 0;
		snprintf(msg, sizeof(msg), "VM %s: failed to preserve the daemon record", v->name);
		vm_set_state(v, VM_FAILED, msg);
		return vm_fail(error, VM_OUTCOME_ERRNO, r, "%s", msg);
	}

	/* The record first: a SIGKILL between the two leaves a record
	 * without a session, which the next start drops, never a session
	 * the daemon cannot describe. */
	r = fdstore_push(m, rec_store, FDNAME_RECORD_PREFIX, name);
	if (r >= 0)
		r = fdstore_push(m, session, FDNAME_SESSION_PREFIX, name);
	if (r < 0) {
		/* Without the store a crash would lose the session: refuse. */
		fdstore_remove(m, FDNAME_SESSION_PREFIX, name);
		fdstore_remove(m, FDNAME_RECORD_PREFIX, name);
		session = safe_close(session);
		v->session_name[0] = 0;
		snprintf(msg, sizeof(msg), "VM %s: failed to keep session %s in the fd store", v->name, name);
		vm_set_state(v, VM_FAILED, msg);
		return vm_fail(error, VM_OUTCOME_ERRNO, r, "%s", msg);
	}

	v->session_fd = TAKE_FD(session);
	v->record_fd = TAKE_FD(rec_store);
	v->session_incoming = false;

	vm_set_state(v, VM_PRESERVED, NULL);
	log_vm(LOG_NOTICE, LOG_VM_SESSION(v->name, name),
	       "Preserved VM %s in LUO session %s: %zu memfd(s), %zu device(s), %" PRIu64 " bytes",
	       v->name, name, vm_files_count(v, VM_FILE_MEMFD), vm_files_count(v, VM_FILE_DEVICE),
	       vm_guest_memory_bytes(v));
	manager_save_state(m);
	return 0;
}

/* Closes and forgets v's LUO session (both fd store entries too).  For an
 * outgoing session that unpreserves everything; for an incoming one it
 * finishes it. */
/*
 * Hand the VMM its iommufd back as it was before registration: drop the marks
 * preservation put on its HWPTs (the plan's tokens), so that a VM no longer
 * managed here is not carried over by a later preservation of the same
 * iommufd.  Best effort: the VMM may have destroyed a HWPT meanwhile, and a
 * kernel series older than IOMMU_HWPT_LIVEUPDATE_UNMARK cannot do it.  Not
 * for a VM restored from an incoming session: its HWPT ids name nothing in
 * this kernel's iommufd.
 */
void vm_unmark_hwpts(Vm *v)
{
	int r;

	if (vm_iommufd(v) < 0 || v->session_incoming)
		return;
	for (size_t i = 0; i < v->n_hwpts; i++) {
		r = iommulu_iommufd_hwpt_unmark_preserve(vm_iommufd(v), v->hwpts[i],
							 IOMMULU_TOKEN_HWPT_BASE + i);
		if (r >= 0) {
			log_vm(LOG_INFO, LOG_VM(v->name), "Unmarked HWPT %" PRIu32 " of VM %s",
			       v->hwpts[i], v->name);
			continue;
		}
		if (r == -ENOENT || r == -EINVAL)
			continue;
		log_vm_errno(r == -ENOTTY || r == -E2BIG ? LOG_DEBUG : LOG_WARNING, r, LOG_VM(v->name),
			     "Could not unmark HWPT %" PRIu32 " of VM %s: %m", v->hwpts[i], v->name);
	}
}

int vm_unpreserve(Vm *v)
{
	Manager *m = v->manager;

	log_vm(LOG_INFO, LOG_VM_SESSION(v->name, v->session_name), "Unpreserving VM %s (session %s)", v->name,
	       v->session_name);
	v->preserved_by_hook = false;
	vm_finish_session(v);
	if (!v->has_fds || v->files_lost) {
		/* Taken back from the fd store after a restart: the VMM's
		 * files are only in the (now closed) session.  The VMM
		 * registers again. */
		log_vm(LOG_NOTICE, LOG_VM(v->name),
		       "VM %s had no files of its own after the daemon restart; dropped, register it again.",
		       v->name);
		manager_remove_vm(m, v);
		return 1;
	}
	vm_set_state(v, VM_REGISTERED, NULL);
	(void)vm_persist(v);
	return 0;
}

void vm_finish_session(Vm *v)
{
	Manager *m = v->manager;
	int r;

	if (v->session_fd < 0 && !v->session_name[0])
		return;
	if (v->session_incoming && v->session_fd >= 0) {
		r = iommulu_luo_session_finish(v->session_fd);
		if (r < 0)
			log_vm_errno(LOG_WARNING, r, LOG_VM_SESSION(v->name, v->session_name),
				     "LUO FINISH of session %s failed: %m", v->session_name);
	}
	fdstore_remove(m, FDNAME_SESSION_PREFIX, v->session_name);
	fdstore_remove(m, FDNAME_RECORD_PREFIX, v->session_name);
	v->session_fd = safe_close(v->session_fd);
	v->record_fd = safe_close(v->record_fd);
	v->session_name[0] = 0;
	v->session_incoming = false;
	manager_save_state(m);
}

/* ---- restore after a restart or a kexec ------------------------------ */

static int vm_note(Vm *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vm_note(Vm *v, const char *fmt, ...)
{
	char buf[256], *n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (asprintf(&n, "%s%s%s", strempty(v->restore_notes), v->restore_notes ? "; " : "", buf) < 0)
		return -ENOMEM;
	free(v->restore_notes);
	v->restore_notes = n;
	return 0;
}

static int retrieve_note(Vm *v, int session, uint64_t token, const char *what, int *ret_fd)
{
	int r = iommulu_luo_session_retrieve_fd(session, token, ret_fd);

	if (r < 0) {
		*ret_fd = -EBADF;
		log_vm_errno(r == -ENOENT || r == -EOPNOTSUPP ? LOG_WARNING : LOG_ERR, r,
			     LOG_VM_SESSION(v->name, v->session_name),
			     "Kernel did not restore %s (token 0x%" PRIx64 ") of VM %s: %m", what, token,
			     v->name);
		vm_note(v, "%s not restored: %s", what, strerror(-r));
	}
	return r;
}

int manager_restore_incoming(Manager *m, int session_fd, const char *fdname)
{
	_cleanup_(vm_freep) Vm *v = NULL;
	_cleanup_(record_done) Vm rec = { .session_fd = -EBADF };
	_cleanup_close_ int mfd = -EBADF, rfd = -EBADF;
	char sname[IOMMULU_LUO_SESSION_NAME_MAX + 1] = "";
	iommulu_manifest *mf = NULL;
	iommulu_error e = {};
	int r;

	r = iommulu_luo_session_get_name(session_fd, sname, sizeof(sname));
	if (r < 0)
		snprintf(sname, sizeof(sname), "%s", strempty(fdname));

	r = iommulu_luo_session_retrieve_fd(session_fd, IOMMULU_MANIFEST_TOKEN, &mfd);
	if (r < 0)
		return log_vm_errno(LOG_ERR, r, LOG_VM_SESSION(NULL, sname),
				    "Session %s has no manifest (token 0): %m", sname);
	r = iommulu_manifest_from_fd(mfd, &mf, &e);
	if (r < 0)
		return log_vm_errno(LOG_ERR, r, LOG_VM_SESSION(NULL, sname),
				    "Session %s: invalid manifest: %s", sname, e.message);

	r = vm_new(m, mf->name, &v);
	if (r < 0) {
		iommulu_manifest_free(mf);
		return r;
	}
	v->manifest = mf;
	v->session_incoming = true;
	v->generation = mf->generation;
	snprintf(v->session_name, sizeof(v->session_name), "%s", sname);

	if (manager_find_vm(m, mf->name))
		return log_vm_errno(LOG_ERR, EEXIST, LOG_VM_SESSION(mf->name, sname),
				    "Session %s holds VM %s, which is already known; leaving it alone.",
				    sname, mf->name);

	/* The daemon's own record (HWPT ids, state memfds, device
	 * snapshots); optional. */
	if (iommulu_luo_session_retrieve_fd(session_fd, IOMMU_LUD_RECORD_TOKEN, &rfd) >= 0) {
		r = record_parse_fd(rfd, &rec);
		if (r < 0) {
			log_vm_errno(LOG_WARNING, r, LOG_VM_SESSION(v->name, sname),
				     "Ignoring unreadable daemon record in session %s: %m", sname);
			record_done(&rec);
		}
		v->hwpts = TAKE_PTR(rec.hwpts);
		v->n_hwpts = rec.n_hwpts;
	}
	r = vm_files_from_manifest(v, mf);
	if (r < 0)
		return r;
	vm_files_take_record(v, &rec);
	v->has_fds = true;

	/* Each file by its token: the files are in the manifest's order. */
	for (size_t i = 0; i < v->n_files; i++) {
		VmFile *f = &v->files[i];
		size_t number = vm_file_number(v, f);
		char role[VM_FILE_ROLE_MAX];
		uint64_t token = f->kind == VM_FILE_MEMFD ? mf->memfds[number].token :
				 f->kind == VM_FILE_DEVICE ? mf->devices[number].token : mf->iommufd_token;

		(void)retrieve_note(v, session_fd, token, vm_file_role(v, f, role), &f->fd);
	}

	v->state = VM_RESTORED;
	r = manager_add_vm(m, v);
	if (r < 0)
		return r;
	v->session_fd = session_fd;	/* owned only on success */
	TAKE_PTR(v);
	m->live_updated = true;
	if (m->generation <= m->vms[m->n_vms - 1]->generation)
		m->generation = m->vms[m->n_vms - 1]->generation + 1;

	log_vm(LOG_NOTICE, LOG_VM_SESSION(m->vms[m->n_vms - 1]->name, sname),
	       "Restored VM %s from live-update session %s (generation %" PRIu64 ")",
	       m->vms[m->n_vms - 1]->name, sname, m->vms[m->n_vms - 1]->generation);
	(void)vm_verify(m->vms[m->n_vms - 1]);
	return 0;
}

int manager_restore_outgoing(Manager *m, int session_fd, int record_fd, const char *session_name)
{
	_cleanup_(vm_freep) Vm *v = NULL;
	Vm *old;
	const char *vm_name = session_vm_name(session_name);
	int r;

	if (record_fd >= 0) {
		_cleanup_(record_done) Vm rec = { .session_fd = -EBADF };

		r = record_parse_fd(record_fd, &rec);
		if (r >= 0)
			vm_name = NULL;
		if (r >= 0 && !streq_ptr(rec.session_name, session_name))
			r = -EBADMSG;
		if (r >= 0) {
			r = vm_new(m, rec.name, &v);
			if (r >= 0) {
				/* The files by name: they stay in the kernel's session. */
				v->manifest = TAKE_PTR(rec.manifest);
				vm_files_move(v, &rec);
				v->generation = rec.generation;
			}
		} else
			log_vm_errno(LOG_WARNING, r, LOG_VM_SESSION(NULL, session_name),
				     "Record of session %s unreadable: %m", session_name);
		if (r < 0 && !session_vm_name(session_name))
			return r;
		if (r < 0)
			vm_name = session_vm_name(session_name);
	}
	if (!v) {
		/* No record: the name still says which VM it is. */
		if (!vm_name)
			return log_error_errno(EBADMSG, "Cannot tell which VM session %s holds.",
					       session_name);
		r = vm_new(m, vm_name, &v);
		if (r < 0)
			return r;
		v->generation = session_generation(session_name);
	}
	old = manager_find_vm(m, v->name);
	if (old && old->has_fds && !old->session_incoming && old->session_fd < 0 &&
	    (old->state == VM_REGISTERED || old->state == VM_FAILED)) {
		/* Its registration came back too: the VM is preserved, with
		 * its files, and UnpreserveVM makes it registered again. */
		iommulu_manifest_free(old->manifest);
		old->manifest = TAKE_PTR(v->manifest);
		vm_take_snapshots(old, v);
		old->generation = v->generation;
		old->session_fd = session_fd;
		old->record_fd = record_fd;
		snprintf(old->session_name, sizeof(old->session_name), "%s", session_name);
		free(old->last_error);
		old->last_error = NULL;
		old->state = VM_PRESERVED;
		old->eligibility_stale = true;
		if (m->generation < old->generation)
			m->generation = old->generation;
		log_vm(LOG_NOTICE, LOG_VM_SESSION(old->name, session_name),
		       "Took back preserved VM %s (session %s) and its registration from the fd store", old->name,
		       session_name);
		return 0;
	}
	if (old)
		return log_vm_errno(LOG_ERR, EEXIST, LOG_VM_SESSION(v->name, session_name),
				    "Session %s holds VM %s, which is already known.", session_name, v->name);

	v->has_fds = false;
	v->session_fd = session_fd;
	v->record_fd = record_fd;
	v->session_incoming = false;
	snprintf(v->session_name, sizeof(v->session_name), "%s", session_name);
	v->state = VM_PRESERVED;

	r = manager_add_vm(m, v);
	if (r < 0) {
		v->session_fd = v->record_fd = -EBADF;
		return r;
	}
	if (m->generation < v->generation)
		m->generation = v->generation;
	log_vm(LOG_NOTICE, LOG_VM_SESSION(v->name, session_name),
	       "Took back preserved VM %s (session %s) from the fd store", v->name, session_name);
	TAKE_PTR(v);
	return 0;
}

/* ---- verification ---------------------------------------------------- */

static void check_add(Vm *v, const char *what, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void check_add(Vm *v, const char *what, bool ok, const char *fmt, ...)
{
	VmCheck *c = realloc(v->checks, (v->n_checks + 1) * sizeof(VmCheck));
	va_list ap;

	if (!c)
		return;
	v->checks = c;
	c = &v->checks[v->n_checks++];
	snprintf(c->what, sizeof(c->what), "%s", what);
	c->ok = ok;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
}

/* The kernel brings a preserved HWPT and its IOAS back under their old IDs;
 * the VMM goes on with the IDs it recorded, so a different one is a failure. */
static void verify_hwpt(Vm *v, const iommulu_manifest_hwpt *h)
{
	uint32_t hwpt_id, ioas_id;
	char what[32];
	bool created;
	int r;

	snprintf(what, sizeof(what), "hwpt:%" PRIu32, h->id);
	r = iommulu_iommufd_hwpt_query(vm_iommufd(v), h->token, &hwpt_id, &ioas_id, &created);
	if (r < 0)
		check_add(v, what, false, "IOMMU_HWPT_LIVEUPDATE_QUERY of token 0x%" PRIx64 ": %s",
			  h->token, strerror(-r));
	else if (hwpt_id != h->id)
		check_add(v, what, false, "restored as HWPT %" PRIu32 ", not under its old ID",
			  hwpt_id);
	else
		check_add(v, what, true, "restored under its old ID, on IOAS %" PRIu32 "%s", ioas_id,
			  created ? "" : " (created when its device is retrieved)");
}

static bool verify_device_irqs(const char *bdf, const DeviceSnapshot *snap, char *detail,
			       size_t size)
{
	iommulu_pci_irqs now = {};
	int r;

	r = iommulu_pci_irqs_read(bdf, &now);
	return verify_irqs(snap && snap->irq_known, snap ? snap->irq_type : IOMMULU_PCI_IRQ_NONE,
			   snap ? snap->irq_vectors : 0, r, &now, detail, size);
}

static void verify_device(Vm *v, const VmFile *f)
{
	const char *bdf = f->device.bdf;
	const DeviceSnapshot *snap = vm_device_snapshot(v, bdf);
	char driver[IOMMULU_DRIVER_NAME_MAX] = "", detail[256] = "";
	DeviceSnapshot now;
	bool ok = true;
	int r;

#define APPEND(...) snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail), __VA_ARGS__)
	if (f->fd < 0) {
		ok = false;
		APPEND("device fd not restored by the kernel; ");
	}

	r = iommulu_pci_driver(bdf, driver, sizeof(driver));
	if (r < 0) {
		ok = false;
		APPEND("no such PCI device (%s)", strerror(-r));
		goto done;
	}
	if (!streq_ptr(driver, "vfio-pci")) {
		ok = false;
		APPEND("bound to '%s', not vfio-pci; ", driver[0] ? driver : "(none)");
	} else
		APPEND("vfio-pci; ");

	/* DMA ownership: a second bind of the device to a fresh iommufd
	 * must be refused while the restored file (bound to the retrieved
	 * iommufd) or the preserved translation owns it. */
	{
		_cleanup_close_ int dev = -EBADF, ictx = -EBADF;
		bool restored_bound = false;
		uint16_t vendor;
		uint32_t dev_id;
		int bind_r = 0;

		if (f->fd >= 0)
			restored_bound = iommulu_vfio_config_read(f->fd, 0, &vendor, sizeof(vendor)) >= 0;
		r = iommulu_vfio_cdev_open(bdf, &dev);
		if (r >= 0)
			r = iommulu_iommufd_open(&ictx);
		if (r >= 0)
			bind_r = iommulu_vfio_bind_iommufd(dev, ictx, &dev_id);
		if (!verify_dma_ownership(r, bind_r, restored_bound, detail, sizeof(detail)))
			ok = false;
	}

	snapshot_device(bdf, &now);
	if (!now.valid) {
		ok = false;
		APPEND("config space unreadable; ");
	} else {
		if (!(now.command & 0x4)) {
			ok = false;
			APPEND("bus mastering off; ");
		} else
			APPEND("bus mastering on; ");
		if (snap) {
			if ((snap->command & 0x4) != (now.command & 0x4)) {
				ok = false;
				APPEND("bus master bit changed (0x%04x -> 0x%04x); ", snap->command, now.command);
			}
			if (memcmp(snap->bars, now.bars, sizeof(now.bars)) != 0) {
				ok = false;
				APPEND("BARs differ from the preserved ones; ");
			} else
				APPEND("BARs as preserved; ");
		} else
			APPEND("no config snapshot to compare BARs with; ");
	}
	if (!verify_device_irqs(bdf, snap, detail, sizeof(detail)))
		ok = false;
done:
	/* Each finding ends in "; ": not the last one. */
	if (strlen(detail) >= 2 && streq_ptr(detail + strlen(detail) - 2, "; "))
		detail[strlen(detail) - 2] = 0;
	check_add(v, bdf, ok, "%s", detail);
	log_vm(ok ? LOG_INFO : LOG_ERR, LOG_VM_DEV(v->name, bdf), "VM %s device %s: %s: %s", v->name,
	       bdf, ok ? "ok" : "FAILED", detail);
#undef APPEND
}

int vm_verify(Vm *v)
{
	const iommulu_manifest *mf = v->manifest;
	size_t failed = 0;

	free(v->checks);
	v->checks = NULL;
	v->n_checks = 0;

	if (!mf || !v->session_incoming) {
		check_add(v, "manifest", false, "VM %s was not restored from a live update", v->name);
		return -EINVAL;
	}
	check_add(v, "manifest", true, "version %u.%u, generation %" PRIu64 ", session %s",
		  mf->version_major, mf->version_minor, mf->generation, v->session_name);

	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD) {
		char what[VM_FILE_ROLE_MAX];
		struct stat st;
		iommulu_fd_kind kind = IOMMULU_FD_OTHER;

		vm_file_role(v, f, what);
		if (f->fd < 0)
			check_add(v, what, false, "not restored by the kernel");
		else if (iommulu_fd_classify(f->fd, &kind) < 0 || kind != IOMMULU_FD_MEMFD)
			check_add(v, what, false, "restored file is a %s, not a memfd",
				  iommulu_fd_kind_to_string(kind));
		else if (fstat(f->fd, &st) < 0)
			check_add(v, what, false, "fstat: %s", strerror(errno));
		else if ((uint64_t)st.st_size != f->memfd.size)
			check_add(v, what, false, "size %" PRIu64 " bytes, manifest says %" PRIu64,
				  (uint64_t)st.st_size, f->memfd.size);
		else
			check_add(v, what, true, "%" PRIu64 " bytes as in the manifest", f->memfd.size);
	}
	if (mf->has_iommufd) {
		iommulu_fd_kind kind = IOMMULU_FD_OTHER;

		if (vm_iommufd(v) < 0)
			check_add(v, "iommufd", false, "not restored by the kernel");
		else if (iommulu_fd_classify(vm_iommufd(v), &kind) < 0 || kind != IOMMULU_FD_IOMMUFD)
			check_add(v, "iommufd", false, "restored file is not an iommufd");
		else {
			check_add(v, "iommufd", true, "restored with %zu HWPT(s)", v->n_hwpts);
			for (size_t i = 0; i < mf->n_hwpts; i++)
				verify_hwpt(v, &mf->hwpts[i]);
		}
	}
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE)
		verify_device(v, f);

	for (size_t i = 0; i < v->n_checks; i++)
		if (!v->checks[i].ok) {
			failed++;
			log_vm(LOG_ERR, LOG_VM_SESSION(v->name, v->session_name),
			       "VM %s: check %s failed: %s", v->name, v->checks[i].what, v->checks[i].detail);
		}

	if (failed) {
		char msg[128];

		snprintf(msg, sizeof(msg), "verification failed: %zu of %zu checks", failed, v->n_checks);
		vm_set_state(v, VM_FAILED, msg);
		return -EIO;
	}
	if (v->state == VM_RESTORED)
		vm_set_state(v, VM_VERIFIED, NULL);
	log_vm(LOG_NOTICE, LOG_VM_SESSION(v->name, v->session_name),
	       "VM %s verified: %zu check(s) passed", v->name, v->n_checks);
	return 0;
}

/* ---- startup --------------------------------------------------------- */

static void read_boot_id(char buf[static 40])
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	buf[0] = 0;
	if (!f)
		return;
	if (!fgets(buf, 40, f))
		buf[0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	fclose(f);
}

int manager_new(Manager **ret, const char *config_path)
{
	Manager *m = calloc(1, sizeof(*m));
	const char *e;

	if (!m)
		return -ENOMEM;
	m->delay_fd = m->block_fd = -EBADF;
	m->config_path = config_path;
	config_init(&m->config);
	read_boot_id(m->boot_id);
	m->generation = 1;
	m->fdstore = getenv("NOTIFY_SOCKET") != NULL;

	/* StateDirectory= sets $STATE_DIRECTORY; tests point it elsewhere. */
	e = getenv("IOMMU_LUD_STATE_DIR") ?: getenv("STATE_DIRECTORY");
	m->state_dir = strdup(e ?: "/var/lib/iommu-lud");
	if (!m->state_dir) {
		free(m);
		return -ENOMEM;
	}
	*ret = m;
	return 0;
}

static int on_trim(sd_event_source *s, uint64_t usec, void *userdata)
{
	/* Long-lived VM objects sit between freed message buffers; without
	 * this the heap only grows (256 VMs: ~900 KiB instead of ~250). */
	(void)malloc_trim(0);
	return 0;
}

void manager_schedule_trim(Manager *m)
{
	if (!m->event)
		return;
	if (!m->trim_source) {
		if (sd_event_add_time_relative(m->event, &m->trim_source, CLOCK_MONOTONIC, 500 * 1000,
					       100 * 1000, on_trim, m) < 0)
			return;
		(void)sd_event_source_set_priority(m->trim_source, SD_EVENT_PRIORITY_IDLE);
	} else
		(void)sd_event_source_set_time_relative(m->trim_source, 500 * 1000);
	(void)sd_event_source_set_enabled(m->trim_source, SD_EVENT_ONESHOT);
}

Manager *manager_free(Manager *m)
{
	if (!m)
		return NULL;
	m->trim_source = sd_event_source_disable_unref(m->trim_source);
	m->emit_source = sd_event_source_disable_unref(m->emit_source);
	manager_cancel_preserve_jobs(m);
	manager_cancel_barriers(m);
	shutdown_watch_done(m);
	m->staged = staged_kernel_free(m->staged);
	polkit_queries_free(m);
	for (size_t i = 0; i < m->n_vms; i++)
		vm_free(m->vms[i]);
	free(m->vms);
	m->bus = sd_bus_flush_close_unref(m->bus);
	m->event = sd_event_unref(m->event);
	free(m->state_dir);
	free(m);
	return NULL;
}

static void load_state_file(Manager *m, char ***ret_sessions, uint64_t *ret_gen, bool *ret_same_boot,
			    bool *ret_live_updated)
{
	_cleanup_free_ char *line = NULL;
	char path[PATH_MAX], **sessions = NULL;
	size_t sz = 0, n = 0;
	FILE *f;

	*ret_sessions = NULL;
	*ret_gen = 0;
	*ret_same_boot = *ret_live_updated = false;
	snprintf(path, sizeof(path), "%s/state", m->state_dir);
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &sz, f) >= 0) {
		line[strcspn(line, "\n")] = 0;
		if (startswith(line, "boot_id="))
			*ret_same_boot = m->boot_id[0] && streq_ptr(line + 8, m->boot_id);
		else if (startswith(line, "generation="))
			*ret_gen = strtoull(line + 11, NULL, 10);
		else if (startswith(line, "live_updated="))
			*ret_live_updated = streq_ptr(line + 13, "1");
		else if (startswith(line, "session=") && strlen(line + 8) <= IOMMULU_LUO_SESSION_NAME_MAX) {
			char **s = realloc(sessions, (n + 2) * sizeof(char *));

			if (!s)
				break;
			sessions = s;
			sessions[n] = strdup(line + 8);
			if (sessions[n])
				n++;
			sessions[n] = NULL;
		}
	}
	fclose(f);
	*ret_sessions = sessions;
}

static void strv_free(char **l)
{
	for (char **p = l; p && *p; p++)
		free(*p);
	free(l);
}

int manager_load_state(Manager *m)
{
	_cleanup_free_ StoredFd *fds = NULL;
	char **names = NULL, **sessions = NULL;
	uint64_t saved_gen;
	bool same_boot, saved_lu;
	int n, r;

	load_state_file(m, &sessions, &saved_gen, &same_boot, &saved_lu);
	if (same_boot) {
		m->generation = saved_gen ?: 1;
		m->live_updated = saved_lu;
	} else if (saved_gen)
		m->generation = saved_gen + 1;

	n = sd_listen_fds_with_names(true, &names);
	if (n < 0) {
		log_warning_errno(n, "Failed to get fds from the fd store: %m");
		n = 0;
	}
	fds = calloc(n > 0 ? (size_t)n : 1, sizeof(StoredFd));
	if (!fds) {
		strv_free(names);
		strv_free(sessions);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++) {
		fds[i].fd = SD_LISTEN_FDS_START + i;
		fds[i].name = names && names[i] ? names[i] : NULL;
	}
	if (n > 0)
		log_info("Got %d fd(s) back from the fd store.", n);

	/* Registrations first: a preserved VM's session then finds the VM
	 * with its files. */
	manager_restore_registrations(m, fds, (size_t)n);
	manager_restore_staged_kernel(m, fds, (size_t)n);

	/* Sessions first: incoming ones (after a kexec) can be read back,
	 * outgoing ones (a restart in the same boot) need their record. */
	for (int i = 0; i < n; i++) {
		const char *sname;
		int probe = -EBADF;

		if (!fds[i].name || !startswith(fds[i].name, FDNAME_SESSION_PREFIX))
			continue;
		sname = fds[i].name + strlen(FDNAME_SESSION_PREFIX);
		if (iommulu_luo_is_session(fds[i].fd) <= 0) {
			log_warning("fd store entry %s is not a LUO session, dropping it.", fds[i].name);
			continue;
		}
		r = iommulu_luo_session_retrieve_fd(fds[i].fd, IOMMULU_MANIFEST_TOKEN, &probe);
		safe_close(probe);
		if (r >= 0) {
			/* Incoming: RETRIEVE_FD works only on those. */
			r = manager_restore_incoming(m, fds[i].fd, sname);
			if (r >= 0)
				fds[i].used = true;
		} else if (r == -EINVAL) {
			int rec = -EBADF;

			for (int k = 0; k < n; k++)
				if (fds[k].name && startswith(fds[k].name, FDNAME_RECORD_PREFIX) &&
				    streq_ptr(fds[k].name + strlen(FDNAME_RECORD_PREFIX), sname)) {
					rec = fds[k].fd;
					fds[k].used = true;
				}
			r = manager_restore_outgoing(m, fds[i].fd, rec, sname);
			if (r >= 0)
				fds[i].used = true;
			else
				for (int k = 0; k < n; k++)
					if (fds[k].fd == rec)
						fds[k].used = false;
		} else
			log_warning_errno(r, "Cannot probe session %s: %m", sname);

		/* Whatever we could not use must not be carried into the
		 * next kexec as a dead entry. */
		if (!fds[i].used)
			fdstore_remove(m, FDNAME_SESSION_PREFIX, sname);
	}

	for (int i = 0; i < n; i++) {
		if (fds[i].used)
			continue;
		/* Records of incoming sessions (read from the session itself),
		 * and anything unknown. */
		if (fds[i].name && startswith(fds[i].name, FDNAME_RECORD_PREFIX))
			fdstore_remove(m, FDNAME_RECORD_PREFIX, fds[i].name + strlen(FDNAME_RECORD_PREFIX));
		else if (fds[i].name && fdname_is_staged(fds[i].name))
			;	/* a second copy under a name restored: only closed */
		else if (fds[i].name && fdname_is_registration(fds[i].name))
			/* Of a registration of an earlier boot, superseded, or
			 * of a call that never completed. */
			fdstore_remove_name(m, fds[i].name);
		else if (fds[i].name && !startswith(fds[i].name, FDNAME_SESSION_PREFIX)) {
			log_warning("Unknown fd store entry %s, removing it.", fds[i].name);
			(void)sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", fds[i].name);
		}
		safe_close(fds[i].fd);
	}

	/* Without an fd store (not under systemd), or if systemd lost one:
	 * retrieve the sessions we preserved in the previous boot by name. */
	if (!same_boot && sessions) {
		_cleanup_close_ int luo = -EBADF;

		for (char **s = sessions; *s; s++) {
			int sfd = -EBADF;
			bool known = false;

			for (size_t i = 0; i < m->n_vms; i++)
				known = known || streq_ptr(m->vms[i]->session_name, *s);
			if (known)
				continue;
			if (luo < 0) {
				luo = iommulu_luo_open(m->config.busy_timeout_ms);
				if (luo < 0) {
					log_warning_errno(luo, "Cannot open /dev/liveupdate to retrieve sessions by name: %m");
					break;
				}
			}
			r = iommulu_luo_session_retrieve(luo, *s, &sfd);
			if (r < 0) {
				log_vm_errno(LOG_WARNING, r, LOG_VM_SESSION(session_vm_name(*s), *s),
					     "Session %s from the previous boot is gone: %m", *s);
				continue;
			}
			r = manager_restore_incoming(m, sfd, *s);
			if (r < 0)
				safe_close(sfd);
			else
				(void)fdstore_push(m, sfd, FDNAME_SESSION_PREFIX, *s);
		}
	}

	strv_free(names);
	strv_free(sessions);
	if (n > 0)
		(void)fdstore_barrier(m);
	manager_save_state(m);
	log_info("Generation %" PRIu64 "%s, %zu VM(s) known.", m->generation,
		 m->live_updated ? ", this boot came from a live update" : "", m->n_vms);
	return 0;
}
