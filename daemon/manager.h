/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include <iommulu/iommulu.h>

#include "conf.h"
#include "fdlimits.h"
#include "kimage.h"

#define BUS_NAME "org.iommulu.LiveUpdate1"
#define MANAGER_PATH "/org/iommulu/LiveUpdate1"
#define MANAGER_IFACE "org.iommulu.LiveUpdate1.Manager"
#define VM_PATH_PREFIX "/org/iommulu/LiveUpdate1/vm"
#define VM_IFACE "org.iommulu.LiveUpdate1.VM"

#define ERROR_NO_SUCH_VM "org.iommulu.LiveUpdate1.Error.NoSuchVM"
#define ERROR_ALREADY_EXISTS "org.iommulu.LiveUpdate1.Error.AlreadyExists"
#define ERROR_INVALID_NAME "org.iommulu.LiveUpdate1.Error.InvalidName"
#define ERROR_NOT_ELIGIBLE "org.iommulu.LiveUpdate1.Error.NotEligible"
#define ERROR_INVALID_STATE "org.iommulu.LiveUpdate1.Error.InvalidState"
#define ERROR_KERNEL_UNSUPPORTED "org.iommulu.LiveUpdate1.Error.KernelUnsupported"
#define ERROR_BUSY "org.iommulu.LiveUpdate1.Error.Busy"
#define ERROR_KERNEL_NOT_CHECKED "org.iommulu.LiveUpdate1.Error.KernelNotChecked"
#define ERROR_KERNEL_INCOMPATIBLE "org.iommulu.LiveUpdate1.Error.KernelIncompatible"

/* Daemon-private session token: a sealed memfd with the daemon's record of
 * the VM (manifest text, HWPT ids, device config snapshots).  Token 0 is
 * the library's manifest; the plan uses 0x100.., 0x1000, 0x2000.. */
#define IOMMU_LUD_RECORD_TOKEN 0xf000u

/* FDNAME prefixes in the service's fd store. */
#define FDNAME_SESSION_PREFIX "session."
#define FDNAME_RECORD_PREFIX "record."
/* A registered VM's entries (see registration.c): its record
 * "vm.<serial>.<name>", its files "memfd.<N>.<name>", "iommufd.<name>",
 * "device.<N>.<name>", and its VMM's pidfd "owner.<name>". */
#define FDNAME_VM_PREFIX "vm."
#define FDNAME_MEMFD_PREFIX "memfd."
#define FDNAME_IOMMUFD_PREFIX "iommufd."
#define FDNAME_DEVICE_PREFIX "device."
#define FDNAME_OWNER_PREFIX "owner."
/* systemd's limit for FDNAME= */
#define FDNAME_MAX 256

typedef struct Manager Manager;
typedef struct PreserveAllJob PreserveAllJob;
typedef struct PolkitQuery PolkitQuery;
typedef struct Barrier Barrier;

/* polkit actions (org.iommulu.LiveUpdate1.policy) */
#define ACTION_MANAGE_VMS "org.iommulu.LiveUpdate1.manage-vms"
#define ACTION_PRESERVE_ALL "org.iommulu.LiveUpdate1.preserve-all"
#define ACTION_STAGE_KERNEL "org.iommulu.LiveUpdate1.stage-kernel"

/* The kernel StageKernel checked and loaded for kexec (stage.c): sealed
 * copies of its files, so that what boots is what was checked. */
typedef struct StagedKernel {
	char *name;		/* as the caller named it (a path), for messages */
	int kernel_fd;		/* sealed memfd copies */
	int initrd_fd;		/* -1: none */
	char *cmdline;
	KernelVerdict verdict;
} StagedKernel;

typedef enum VmState {
	VM_REGISTERED,
	VM_PRESERVED,
	VM_RESTORED,
	VM_VERIFIED,
	VM_RETRIEVED,
	VM_FINISHED,
	VM_FAILED,
	VM_REGISTERING,		/* RegisterVMPart: more files to come */
	_VM_STATE_MAX,
} VmState;

/* PCI config registers captured at preservation, compared after kexec. */
typedef struct DeviceSnapshot {
	bool valid;
	uint16_t command;
	uint32_t bars[6];
	/* MSI or MSI-X enabled at preservation: a live update carries it over */
	bool irq_known;
	iommulu_pci_irq_type irq_type;
	unsigned irq_vectors;		/* vectors the kernel had set up */
} DeviceSnapshot;

/*
 * One of a VM's files.  Memfds and devices are numbered by kind, in the
 * order they came: memfd number N is "memfd:N" in RetrieveVM and
 * "memfd.<N>.<vm>" in the fd store, as device N is "device.<N>.<vm>"; a VM
 * has one iommufd at most.
 */
typedef enum VmFileKind {
	VM_FILE_MEMFD,
	VM_FILE_IOMMUFD,
	VM_FILE_DEVICE,
	_VM_FILE_KIND_MAX,
} VmFileKind;

typedef struct VmFile {
	VmFileKind kind;
	int fd;			/* ours; -EBADF where the kernel did not restore it, the fd store
				 * lost it, or it stays in the session (Vm.has_fds false) */
	bool stored;		/* in the fd store, as an entry of the registration (registration.c) */
	union {
		struct {
			uint64_t size;
			/* 0: guest RAM; n > 0: VMM state, the n-th memfd named in
			 * StateMemfds (which keeps the order the VMM gave) */
			uint32_t state;
		} memfd;
		struct {
			char bdf[IOMMULU_BDF_MAX];
			DeviceSnapshot snapshot;	/* taken at preservation, for VerifyVM */
		} device;
	};
} VmFile;

typedef struct VmCheck {
	char what[IOMMULU_BDF_MAX + 16];	/* BDF, "memfd:N", "iommufd", "manifest" */
	bool ok;
	char detail[256];
} VmCheck;

/* VM properties, for PropertiesChanged: each a bit, in the vtable's order
 * (vm_changed()). */
typedef enum VmProperty {
	VM_PROP_STATE = 1u << 0,
	VM_PROP_DEVICES = 1u << 1,
	VM_PROP_HWPTS = 1u << 2,
	VM_PROP_GUEST_MEMORY_BYTES = 1u << 3,
	VM_PROP_STATE_MEMFDS = 1u << 4,
	VM_PROP_SESSION = 1u << 5,
	VM_PROP_LAST_ERROR = 1u << 6,
	VM_PROP_GENERATION = 1u << 7,
	VM_PROP_OWNER_PID = 1u << 8,
	VM_PROP_MEMFDS = 1u << 9,
	VM_PROP_INELIGIBLE_REASON = 1u << 10,
	VM_PROP_RESTORE_NOTES = 1u << 11,
	_VM_PROP_ALL = (1u << 12) - 1,
} VmProperty;
#define VM_PROP_COUNT 12

typedef struct Vm {
	Manager *manager;
	uint64_t id;		/* unique for the daemon's life: tells a VM from a later one of the same name */
	unsigned changed;	/* VmProperty bits that may have changed since announced */
	char *announced[VM_PROP_COUNT];	/* each property as clients last saw it (bus_vm_property_text()), or NULL */
	char name[IOMMULU_VM_NAME_MAX + 1];
	char *path;
	VmState state;
	char *last_error;
	char *ineligible;	/* why it cannot be preserved right now, or NULL */
	bool eligibility_stale;	/* ineligible needs re-evaluating */

	/* The VM's files (VmFile, in the order they came): the VMM's (dup'ed
	 * at registration) or, after a kexec, those retrieved from the
	 * session.  has_fds false: only their names, the files are in an
	 * outgoing session taken back without the registration. */
	bool has_fds;
	bool kernel_refused;	/* the last PreserveVM was refused for what the VM maps */
	VmFile *files;
	size_t n_files;
	uint32_t *hwpts;	/* HWPT ids: numbers in the iommufd, not files */
	size_t n_hwpts;
	char *restore_notes;	/* what the kernel did not hand back */

	pid_t owner_pid;
	int owner_pidfd;
	sd_event_source *owner_source;

	/* LUO session: outgoing while preserved, incoming after a kexec. */
	uint64_t generation;
	char session_name[IOMMULU_LUO_SESSION_NAME_MAX + 1];
	int session_fd;
	bool session_incoming;
	bool preserved_by_hook;	/* preserved for a kexec logind announced */
	int record_fd;		/* copy of the record kept in the fd store */
	iommulu_manifest *manifest;

	VmCheck *checks;
	size_t n_checks;

	/* The registration in the fd store (registration.c): the serial of
	 * the record stored last (0: none), whether the owner's pidfd is
	 * stored (the files say so each, VmFile.stored), and the record's
	 * text (a new one is stored only when it changes).  files_lost:
	 * restored without some of its files. */
	uint64_t reg_serial;
	bool stored_owner;
	char *stored_content;
	bool files_lost;
} Vm;

/* A registration record read back from the fd store. */
typedef struct Registration {
	char name[IOMMULU_VM_NAME_MAX + 1];
	char boot_id[40];
	VmState state;
	char *last_error;
	bool kernel_refused;
	pid_t owner_pid;
	uint32_t *hwpts;
	size_t n_hwpts;
	uint64_t *memfd_sizes;
	size_t n_memfds;
	uint32_t *state_memfds;
	size_t n_state_memfds;
	bool has_iommufd;
	char (*bdfs)[IOMMULU_BDF_MAX];
	size_t n_devices;
} Registration;

/* An fd systemd handed back from the store, by name. */
typedef struct StoredFd {
	int fd;
	char *name;
	bool used;
} StoredFd;

struct Manager {
	sd_event *event;
	sd_bus *bus;
	Config config;		/* as loaded, clamped to limits */
	Limits limits;
	const char *config_path;
	char *state_dir;
	char boot_id[40];

	Vm **vms;
	size_t n_vms;

	uint64_t generation;
	bool live_updated;
	bool fdstore;		/* running under systemd with a notify socket */
	Barrier *barriers;	/* BARRIER=1 sent, not yet answered (barrier.c) */
	sd_bus_message **held_calls;	/* calls that change state, held while barriers are pending */
	size_t n_held_calls;
	uint64_t next_vm_id;
	PreserveAllJob *preserve_jobs;	/* running PreserveAll, then the queued ones */
	PreserveAllJob *hook_job;	/* the one the logind hook started, while it runs */

	StagedKernel *staged;	/* StageKernel's, or NULL */
	PolkitQuery *polkit_queries;	/* calls waiting for (or with) polkit's answer */

	/* logind */
	bool have_logind;
	bool have_logind_metadata;
	int delay_fd;
	int block_fd;
	char *block_why;
	sd_event_source *recheck_source;
	sd_event_source *trim_source;
	sd_event_source *emit_source;	/* announces the VMs' changed properties */
	bool exiting;
};

int manager_new(Manager **ret, const char *config_path);
Manager *manager_free(Manager *m);

int manager_load_state(Manager *m);
int manager_connect_bus(Manager *m);
void manager_save_state(Manager *m);

Vm *manager_find_vm(Manager *m, const char *name);
int manager_add_vm(Manager *m, Vm *v);
void manager_remove_vm(Manager *m, Vm *v);
int manager_request_name(Manager *m);
void manager_emit_changed(Manager *m, const char *prop);
void manager_emit_changed_strv(Manager *m, char **props);
/* Files a registration call hands over (borrowed). */
typedef struct VmFiles {
	const int *memfds;
	size_t n_memfds;
	int iommufd;		/* -1: none */
	const int *devices;
	size_t n_devices;
	const uint32_t *hwpts;
	size_t n_hwpts;
	const uint32_t *state_memfds;	/* memfd numbers of the VM (not of add) */
	size_t n_state_memfds;
} VmFiles;

int vm_new(Manager *m, const char *name, Vm **ret);
Vm *vm_free(Vm *v);
void vm_freep(Vm **v);

/* A VM's files (vm-files.c) */
/* How many files of kind v has. */
size_t vm_files_count(const Vm *v, VmFileKind kind);
/* v's file of kind after f (NULL: the first), or NULL: one kind in order. */
VmFile *vm_files_next(const Vm *v, VmFileKind kind, const VmFile *f);
#define VM_FOREACH_FILE(f, v, kind) \
	for (VmFile *f = vm_files_next((v), (kind), NULL); f; f = vm_files_next((v), (kind), f))
/* File number i of kind (memfd:i, device.<i>), or NULL. */
VmFile *vm_file(const Vm *v, VmFileKind kind, size_t i);
/* f's number among v's files of its kind. */
size_t vm_file_number(const Vm *v, const VmFile *f);
/* f's role, as RetrieveVM and VerifyVM name it: "memfd:N", "iommufd",
 * "device:BDF". */
#define VM_FILE_ROLE_MAX (IOMMULU_BDF_MAX + 16)
const char *vm_file_role(const Vm *v, const VmFile *f, char buf[static VM_FILE_ROLE_MAX]);
/* The iommufd's fd, or -EBADF: none, or not restored. */
int vm_iommufd(const Vm *v);
/* Appends a file of kind holding fd (taken; -EBADF: none), its other
 * fields zero.  Pointers to v's files do not survive it. */
int vm_files_append(Vm *v, VmFileKind kind, int fd, VmFile **ret);
/* Appends duplicates of add's files and its HWPT ids to v; plan is the
 * plan of v's files followed by add's (sizes, BDFs).  On failure v is
 * unchanged. */
int vm_add_files(Vm *v, const VmFiles *add, const iommulu_plan *plan);
/* Undo vm_add_files(): keep the first n_files files and n_hwpts HWPTs. */
void vm_truncate_files(Vm *v, size_t n_files, size_t n_hwpts);
/* Close and forget all of v's files and HWPT ids. */
void vm_close_files(Vm *v);
/* v's files and HWPT ids (closed first) become from's, which is left
 * without any. */
void vm_files_move(Vm *v, Vm *from);
/* The files of the manifest mf, none restored (-EBADF), and its HWPT ids
 * unless v has some. */
int vm_files_from_manifest(Vm *v, const iommulu_manifest *mf);
/* Whether memfd number i of v holds VMM state (StateMemfds), not guest RAM. */
bool vm_memfd_is_state(const Vm *v, size_t i);
/* Marks memfd number i as the next one named in StateMemfds. */
void vm_memfd_mark_state(Vm *v, size_t i);
/* How many of v's memfds hold VMM state. */
size_t vm_n_state_memfds(const Vm *v);
/* StateMemfds: the numbers of v's state memfds in the order they were
 * named, into *ret (NULL if none; freed by the caller). */
int vm_state_memfds(const Vm *v, uint32_t **ret, size_t *ret_n);
/* GuestMemoryBytes: the sizes of v's memfds that are not state memfds. */
uint64_t vm_guest_memory_bytes(const Vm *v);
/* v's device of that BDF, or NULL. */
VmFile *vm_device(const Vm *v, const char *bdf);
/* The snapshot of v's device bdf (valid ones only), or NULL. */
const DeviceSnapshot *vm_device_snapshot(const Vm *v, const char *bdf);
/* Gives each of v's devices the snapshot of from's device of the same
 * BDF (none if from has none). */
void vm_take_snapshots(Vm *v, const Vm *from);
/* What the record rec (record_parse_fd()) says of v's files: which memfds
 * hold VMM state (by number), the device snapshots (by BDF). */
void vm_files_take_record(Vm *v, const Vm *rec);

/* The fds iommulu_plan_build() takes: v's files (v may be NULL), followed
 * by add's (NULL: none), in arrays of their own. */
typedef struct VmFds {
	iommulu_vm_fds fds;
	int *memfds, *devices;
	uint32_t *hwpts;
} VmFds;
int vm_fds_build(const Vm *v, const char *name, const VmFiles *add, VmFds *ret);
void vm_fds_done(VmFds *f);

const char *vm_state_to_string(VmState s);
void vm_set_state(Vm *v, VmState s, const char *error);
/* props (VmProperty bits) of v changed: one PropertiesChanged per VM
 * announces all that changed in an event-loop iteration, before the next
 * bus message is handled. */
void vm_changed(Vm *v, unsigned props);

/*
 * What a failed operation of the core tells its caller: an outcome, with a
 * message for people.  The core names no D-Bus error; the bus layer maps
 * each outcome to one (bus_error_set_vm(), one table in bus.c).
 */
typedef enum VmOutcome {
	VM_OUTCOME_ERRNO,		/* a kernel or system call failed with errnum */
	VM_OUTCOME_INVALID_STATE,	/* not in a state that allows it */
	VM_OUTCOME_NOT_ELIGIBLE,	/* the VM's files cannot be preserved */
	VM_OUTCOME_KERNEL_UNSUPPORTED,	/* no Live Update Orchestrator */
	VM_OUTCOME_BUSY,		/* /dev/liveupdate or the session name is busy */
	VM_OUTCOME_UNCONFIRMED,		/* systemd did not confirm its fd store in time */
	VM_OUTCOME_KERNEL_NOT_CHECKED,	/* devices, and no kernel staged through StageKernel */
	VM_OUTCOME_KERNEL_INCOMPATIBLE,	/* the staged kernel cannot adopt the VM */
	_VM_OUTCOME_MAX,
} VmOutcome;

typedef struct VmError {
	VmOutcome outcome;
	int errnum;		/* > 0: the errno, whose text the message lacks */
	char message[IOMMULU_ERROR_MAX + 256];
} VmError;

/* Whether v is in a state and has the files to be preserved. */
bool vm_can_preserve(const Vm *v);
/* Preserve v; on failure fills e (and returns -errno). */
int vm_preserve(Vm *v, VmError *e);
/* Whether v is preserved in an outgoing session of its own. */
bool vm_is_preserved(const Vm *v);
/* v was just preserved but systemd did not confirm holding its session
 * (r from the barrier): close the session, v becomes failed; e says why. */
void vm_rollback_unconfirmed(Vm *v, int r, VmError *e);

/* PreserveAll (preserve-all.c): one result per VM it went through. */
typedef struct PreserveResult {
	char *name;
	bool ok;
	VmError error;		/* unless ok */
} PreserveResult;
/* failed: how many VMs failed, or -errno (no results).  The results belong
 * to the job. */
typedef void (*preserve_all_done_t)(Manager *m, PreserveAllJob *j, const PreserveResult *results, size_t n_results,
				    int failed, void *userdata);
/* Preserve every VM, one per event-loop iteration, then one BARRIER=1
 * without blocking; done is called at the end (never from within this
 * call).  Jobs run one after the other.  *ret (optional): the job, valid
 * until done is called. */
int manager_preserve_all_async(Manager *m, preserve_all_done_t done, void *userdata, PreserveAllJob **ret);
/* Preserve no further VM; the job still waits for its barrier and ends. */
void preserve_all_job_cancel(PreserveAllJob *j);
/* The same, blocking (the daemon is exiting), with the results logged
 * under context; failed or -errno. */
int manager_preserve_all(Manager *m, const char *context);
/* End every job now, done called with -ECANCELED (the daemon is exiting). */
void manager_cancel_preserve_jobs(Manager *m);
void manager_log_preserve_results(const PreserveResult *results, size_t n, int failed, const char *context);

/* Restore from the fd store or by name; verify. */
int manager_restore_incoming(Manager *m, int session_fd, const char *fdname);
int manager_restore_outgoing(Manager *m, int session_fd, int record_fd, const char *session_name);
int vm_verify(Vm *v);
void vm_finish_session(Vm *v);
void vm_unmark_hwpts(Vm *v);
/* Close a preserved VM's outgoing session: 1 if the VM was dropped (it had
 * no files of its own after a restart), else 0 (back to registered). */
int vm_unpreserve(Vm *v);

/* fd store */
/* How long a BARRIER=1 may stay unanswered before PreserveVM gives up and
 * rolls back: systemd answers at once unless PID 1 is stuck. */
#define FDSTORE_BARRIER_TIMEOUT_USEC (5 * 1000 * 1000ULL)
int fdstore_push(Manager *m, int fd, const char *prefix, const char *session_name);
void fdstore_remove(Manager *m, const char *prefix, const char *session_name);
/* The same by full FDNAME; poll=false sends FDPOLL=0 (systemd must not drop
 * the fd when it signals POLLHUP, as a pidfd does once its process is gone). */
int fdstore_push_name(Manager *m, int fd, const char *fdname, bool poll);
void fdstore_remove_name(Manager *m, const char *fdname);
/* Wait until systemd processed every message sent so far (BARRIER=1);
 * 0 without an fd store, -ETIMEDOUT if unanswered.  Blocks: only for the
 * start and the exit of the daemon; calls use manager_barrier_async(). */
int fdstore_barrier(Manager *m);

/* The same without blocking (barrier.c): done(m, r, userdata) runs from the
 * event loop once systemd answered (r = 0), after FDSTORE_BARRIER_TIMEOUT_USEC
 * (-ETIMEDOUT), or with -ECANCELED when the daemon exits.  Without an fd
 * store it runs in the next loop iteration.  On failure (< 0) done is never
 * called.  ret (optional): a handle for barrier_cancel(), valid until done
 * runs. */
typedef void (*barrier_done_t)(Manager *m, int r, void *userdata);
int manager_barrier_async(Manager *m, barrier_done_t done, void *userdata, Barrier **ret);
/* Forget a pending barrier; its done is not called. */
void barrier_cancel(Barrier *b);
/* At exit: every pending barrier's done gets -ECANCELED; held calls are
 * dropped unanswered. */
void manager_cancel_barriers(Manager *m);
/* At most this many calls are held while a barrier is pending; more are
 * refused with Busy (each may carry fds). */
#define HELD_CALLS_MAX 64
/* For a method that changes state: while a barrier is pending, hold msg
 * (true, *ret: what the handler returns: 1, or an error set in error) to
 * dispatch it again once none is; false: go on. */
bool manager_hold_call(Manager *m, sd_bus_message *msg, sd_bus_error *error, int *ret);

/* logind / shutdown (shutdown.c) */
int shutdown_watch_setup(Manager *m);
void shutdown_update_block(Manager *m);
void shutdown_recheck_all(Manager *m);
bool shutdown_kexec_pending(Manager *m);
void shutdown_watch_done(Manager *m);

/* The kernel loaded for kexec (stage.c) */
/* Check the image in kernel_fd (initrd_fd, config_fd: -1 if none) booted
 * with cmdline against what is registered, and load it with
 * kexec_file_load(2) if it can adopt every VM.  On refusal loads nothing,
 * keeps the previous staged kernel, fills e (KERNEL_INCOMPATIBLE, or
 * ERRNO/NOT_ELIGIBLE...). */
int manager_stage_kernel(Manager *m, const char *name, int kernel_fd, int initrd_fd, int config_fd,
			 const char *cmdline, VmError *e);
/* Forget the staged kernel and unload it. */
int manager_unstage_kernel(Manager *m);
/* Load the staged kernel again (the kexec is announced): whatever was loaded
 * since, the kernel that boots is the one checked.  On failure the staged
 * kernel is forgotten (VMs with devices are then not preserved). */
int manager_reload_staged_kernel(Manager *m);
/* The staged kernel in the fd store (stage.c): take it back at start, or
 * drop it (another boot's, incomplete, not a sealed copy); forget it before
 * a kexec.  Entries "staged.*". */
void manager_restore_staged_kernel(Manager *m, StoredFd *fds, size_t n);
void manager_forget_staged_kernel(Manager *m);
bool fdname_is_staged(const char *fdname);
/* Whether the kernel staged for kexec can adopt v; if not, e says why
 * (KERNEL_NOT_CHECKED, KERNEL_INCOMPATIBLE).  VMs with devices need a kernel
 * checked by StageKernel that carries the series; memfd-only VMs need LUO
 * only, and are refused only if a staged kernel is known to lack it. */
bool manager_kernel_adopts(Manager *m, const Vm *v, VmError *e);
/* Before a kexec: unpreserve the preserved VMs the staged kernel cannot
 * adopt (their devices are then stopped by the kexec, as unpreserved
 * devices are), and log it. */
void manager_unpreserve_unadoptable(Manager *m);
StagedKernel *staged_kernel_free(StagedKernel *k);

/* record (record.c) */
int record_to_memfd(const Vm *v, int *ret_fd);
/* Reads a record into rec, a Vm that is only that: name, session,
 * generation, manifest, HWPT ids, and the files the manifest names (none
 * restored) with the record's state memfds and device snapshots. */
int record_parse_fd(int fd, Vm *rec);
void record_done(Vm *rec);
int registration_content(const Vm *v, const char *boot_id, char **ret);
int registration_to_memfd(const char *content, int *ret_fd);
int registration_parse_fd(int fd, Registration *ret);
/* The staged kernel's record (record.c), as a restart reads it back. */
typedef struct StagedRecord {
	char boot_id[40];
	char name[4096];
	char cmdline[4096];
	bool initrd;
	KernelVerdict verdict;
} StagedRecord;
int staged_record_to_memfd(const StagedKernel *k, const char *boot_id, int *ret_fd);
int staged_record_parse_fd(int fd, StagedRecord *ret);
void registration_done(Registration *g);

/* Durable registrations (registration.c) */
/* Store what of v's registration the fd store lacks: new files, the
 * owner's pidfd, and a new record if its content changed (the old one is
 * removed after it).  Does not wait for systemd: a caller that answers
 * only once the store holds it waits with manager_barrier_async().  On
 * failure, withdraws what it pushed and leaves v's stored state as it was.
 * 0 without an fd store or for a VM that is not a registration of this
 * boot. */
int vm_persist(Vm *v);
/* Withdraw v's registration from the fd store: the record first. */
void vm_forget_registration(Vm *v);
/* Register again the VMs whose registrations fds holds; marks the entries
 * it took as used. */
void manager_restore_registrations(Manager *m, StoredFd *fds, size_t n);
/* Whether fdname is one of a registration's entries. */
bool fdname_is_registration(const char *fdname);
/* The VM (other than v) already holding fd's file: the same memfd (inode), or
 * the same open file description of anything else. */
Vm *manager_find_file_holder(Manager *m, const Vm *v, int fd);
/* Whether f names exactly v's files (the same memfds, iommufd and devices,
 * in the same order) and HWPT ids: a retry of the call that registered v. */
bool vm_has_files(const Vm *v, const VmFiles *f);

/* bus.c: watch the VMM's pidfd (taken) */
int vm_watch_owner(Vm *v, pid_t pid, int pidfd);

/* Give freed heap back to the kernel shortly after a burst of calls. */
void manager_schedule_trim(Manager *m);

/* polkit.c: may the caller (uid) of msg do what under action?  Root: 1
 * without asking; others: 0 after asking polkit (msg is dispatched again
 * when it answers), then 1, or -EACCES with error set. */
int bus_verify_polkit_async(Manager *m, sd_bus_message *msg, const char *action, const char *vm, const char *what,
			    uid_t uid, sd_bus_error *error);
void polkit_queries_free(Manager *m);

/* bus.c: the D-Bus error of a failure of the core. */
int bus_error_from_errno(sd_bus_error *error, int r, const char *message);
int bus_error_set_vm(sd_bus_error *error, const VmError *e);
/* VM property `property` as it reads on the bus now, as text (to announce
 * a property only when its value changed). */
int bus_vm_property_text(Vm *v, const char *property, char **ret);
/* Take v's properties as what clients know now (InterfacesAdded, or the
 * bus just connected). */
void vm_remember_properties(Vm *v);
