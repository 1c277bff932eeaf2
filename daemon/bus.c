/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The D-Bus API: org.iommulu.LiveUpdate1.Manager and .VM (see docs/daemon.md). */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "util.h"

#define UID_INVALID_VALUE ((uid_t)-1)

/* ---- helpers ---------------------------------------------------------- */

/* The uid of a process, from its /proc directory (owned by its euid). */
static uid_t process_uid(pid_t pid)
{
	char path[32];
	struct stat st;

	if (pid <= 0)
		return UID_INVALID_VALUE;
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	return stat(path, &st) < 0 ? UID_INVALID_VALUE : st.st_uid;
}

/*
 * May the caller of msg do what (a method, for messages) under polkit's
 * action on VM vm (NULL: not about one VM)?  Root may, without polkit;
 * anyone else if polkit authorizes the action (polkit.c), and, for a VM
 * that exists, only if the VM's VMM runs under the caller's uid.  1:
 * allowed (*ret_pid: the caller's pid, optional); 0: polkit was asked, the
 * call is dispatched again when it answers (the handler returns 1); <0:
 * refused, error set.
 */
static int check_access(Manager *m, sd_bus_message *msg, const char *action, const char *vm, const char *what,
			sd_bus_error *error, pid_t *ret_pid)
{
	sd_bus_creds *creds = NULL;
	uid_t uid = UID_INVALID_VALUE;
	pid_t pid = 0;
	Vm *v;
	int r;

	r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID | (ret_pid ? SD_BUS_CREDS_PID : 0), &creds);
	if (r >= 0) {
		r = sd_bus_creds_get_euid(creds, &uid);
		if (r >= 0 && ret_pid && sd_bus_creds_get_pid(creds, &pid) < 0)
			pid = 0;
		sd_bus_creds_unref(creds);
	}
	if (r < 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "Cannot determine the caller's credentials: %s", strerror(-r));
	r = bus_verify_polkit_async(m, msg, action, vm, what, uid, error);
	if (r <= 0)
		return r;
	if (uid != 0 && vm && (v = manager_find_vm(m, vm)) && v->state != VM_FINISHED &&
	    process_uid(v->owner_pid) != uid)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "VM %s belongs to a VMM of another user (pid %d); uid %u may not call %s on it",
					 vm, (int)v->owner_pid, (unsigned)uid, what);
	if (ret_pid)
		*ret_pid = pid;
	return 1;
}

static int check_vm_name(const char *name, sd_bus_error *error)
{
	const char *why;

	if (iommulu_vm_name_is_valid(name))
		return 0;
	if (streq_ptr(name, ".") || streq_ptr(name, ".."))
		why = "'.' and '..' are path components";
	else if (name[0] == '-')
		why = "a name must not start with '-'";
	else
		why = "expected [A-Za-z0-9_.-]{1,48}";
	return sd_bus_error_setf(error, ERROR_INVALID_NAME, "Invalid VM name '%s': %s", name, why);
}

static int find_vm_or_error(Manager *m, const char *name, Vm **ret, sd_bus_error *error)
{
	Vm *v;
	int r;

	r = check_vm_name(name, error);
	if (r < 0)
		return r;
	v = manager_find_vm(m, name);
	if (!v)
		return sd_bus_error_setf(error, ERROR_NO_SUCH_VM, "No VM named '%s'", name);
	*ret = v;
	return 0;
}

/* Refuse before an EMFILE could hit us, or the bus reading our next
 * message (which would cost us the connection). */
static int check_fds_available(Manager *m, const char *name, size_t n_new, sd_bus_error *error)
{
	int open_fds = limits_count_open_fds();

	if (limits_fds_available(&m->limits, open_fds, n_new))
		return 0;
	log_vm(LOG_WARNING, LOG_VM(name),
	       "Refusing files of VM %s: %zu more fds with %d open would leave fewer than %u free of RLIMIT_NOFILE=%lu",
	       name, n_new, open_fds, LIMITS_FD_HEADROOM, m->limits.nofile);
	return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
				 "VM %s: the daemon has %d of RLIMIT_NOFILE=%lu fds open and cannot take %zu more",
				 name, open_fds, m->limits.nofile, n_new);
}

static int invalid_state(sd_bus_error *error, const Vm *v, const char *hint)
{
	return sd_bus_error_setf(error, ERROR_INVALID_STATE, "VM %s is %s%s%s", v->name,
				 vm_state_to_string(v->state), hint ? "; " : "", strempty(hint));
}

/* ---- errors: the D-Bus error of each outcome of the core --------------- */

int bus_error_from_errno(sd_bus_error *error, int r, const char *message)
{
	r = abs(r);
	switch (r) {
	case ENOTTY:
	case EOPNOTSUPP:
	case ENOENT:
		return sd_bus_error_setf(error, ERROR_KERNEL_UNSUPPORTED,
					 "%s: the running kernel does not support this (%s)", message,
					 strerror(r));
	case EBUSY:
		return sd_bus_error_setf(error, ERROR_BUSY, "%s: %s", message, strerror(r));
	default:
		return sd_bus_error_set_errnof(error, r, "%s: %s", message, strerror(r));
	}
}

static const char *const vm_outcome_errors[_VM_OUTCOME_MAX] = {
	[VM_OUTCOME_ERRNO] = NULL,	/* by the errno: bus_error_from_errno() */
	[VM_OUTCOME_INVALID_STATE] = ERROR_INVALID_STATE,
	[VM_OUTCOME_NOT_ELIGIBLE] = ERROR_NOT_ELIGIBLE,
	[VM_OUTCOME_KERNEL_UNSUPPORTED] = ERROR_KERNEL_UNSUPPORTED,
	[VM_OUTCOME_BUSY] = ERROR_BUSY,
	[VM_OUTCOME_UNCONFIRMED] = SD_BUS_ERROR_TIMEOUT,
	[VM_OUTCOME_KERNEL_NOT_CHECKED] = ERROR_KERNEL_NOT_CHECKED,
	[VM_OUTCOME_KERNEL_INCOMPATIBLE] = ERROR_KERNEL_INCOMPATIBLE,
};

int bus_error_set_vm(sd_bus_error *error, const VmError *e)
{
	const char *name = e->outcome < _VM_OUTCOME_MAX ? vm_outcome_errors[e->outcome] : NULL;

	if (!name)
		return bus_error_from_errno(error, e->errnum ?: EIO, e->message);
	if (e->errnum)
		return sd_bus_error_setf(error, name, "%s: %s", e->message, strerror(e->errnum));
	return sd_bus_error_setf(error, name, "%s", e->message);
}

static void manager_emit(Manager *m, const char *prop)
{
	(void)sd_bus_emit_properties_changed(m->bus, MANAGER_PATH, MANAGER_IFACE, prop, NULL);
}

static int persist_error(const char *name, int r, sd_bus_error *error)
{
	char what[IOMMULU_VM_NAME_MAX + 96];

	if (r == -ETIMEDOUT)
		return sd_bus_error_setf(error, SD_BUS_ERROR_TIMEOUT,
					 "VM %s: systemd did not confirm within %u s that its fd store holds the "
					 "registration (BARRIER=1 unanswered); this call registered nothing", name,
					 (unsigned)(FDSTORE_BARRIER_TIMEOUT_USEC / 1000000));
	snprintf(what, sizeof(what), "VM %s: failed to keep the registration in the fd store; this call "
		 "registered nothing", name);
	return bus_error_from_errno(error, r, what);
}

/* ---- answering once the fd store holds it ----------------------------- *
 * A call whose effect the fd store must hold (so that a SIGKILL right after
 * the reply loses nothing) is answered from a barrier's callback
 * (manager_barrier_async()); the event loop serves other calls meanwhile,
 * and holds those that change state (manager_hold_call()). */

typedef enum StoredKind {
	STORED_REMOVAL,		/* UnregisterVM, UnpreserveVM, FinishVM: answered anyway */
	STORED_PRESERVATION,	/* PreserveVM: rolled back if unconfirmed */
	STORED_REGISTRATION,	/* RegisterVM*: rolled back if unconfirmed */
	STORED_FAILURE,		/* a call that failed and stored why (LastError): its error */
} StoredKind;

typedef struct StoredReply {
	StoredKind kind;
	sd_bus_message *msg;	/* NULL: nobody to answer (the kexec hook) */
	char name[IOMMULU_VM_NAME_MAX + 1];
	uint64_t vm_id;
	char *path;
	char session[IOMMULU_LUO_SESSION_NAME_MAX + 1];	/* preservation: the session created */
	/* registration: what the VM had before the call */
	bool created;
	VmState was;
	size_t have_files, have_hwpts;
	VmError failure;	/* STORED_FAILURE: the error to answer with */
} StoredReply;

static StoredReply *stored_reply_free(StoredReply *d)
{
	if (!d)
		return NULL;
	sd_bus_message_unref(d->msg);
	free(d->path);
	free(d);
	return NULL;
}

/* The VM d is about, if it is still the same one. */
static Vm *stored_reply_vm(Manager *m, const StoredReply *d)
{
	Vm *v = manager_find_vm(m, d->name);

	return v && v->id == d->vm_id ? v : NULL;
}

static void registration_unconfirmed(Manager *m, Vm *v, const StoredReply *d, int r)
{
	log_vm_errno(LOG_ERR, r, LOG_VM(d->name), "systemd did not confirm storing the registration of VM %s%s; "
		     "rolling this call back: %m", d->name, r == -ETIMEDOUT ? " (BARRIER=1 unanswered)" : "");
	/* The fd store entries go, those of the earlier parts are pushed
	 * again: PID 1 processes them in order, should it be only slow. */
	vm_forget_registration(v);
	if (d->created) {
		manager_remove_vm(m, v);
		return;
	}
	vm_truncate_files(v, d->have_files, d->have_hwpts);
	vm_changed(v, VM_PROP_MEMFDS | VM_PROP_DEVICES | VM_PROP_HWPTS | VM_PROP_GUEST_MEMORY_BYTES |
			      VM_PROP_STATE_MEMFDS);
	if (v->state != d->was)
		vm_set_state(v, d->was, NULL);
	(void)vm_persist(v);
}

static void on_stored(Manager *m, int r, void *userdata)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	StoredReply *d = userdata;
	Vm *v;
	int q = 0;

	if (r == -ECANCELED) {	/* the daemon is exiting */
		stored_reply_free(d);
		return;
	}
	v = stored_reply_vm(m, d);
	switch (d->kind) {
	case STORED_REMOVAL:
		if (r < 0)
			log_vm_errno(LOG_WARNING, r, LOG_VM(d->name),
				     "systemd did not confirm that VM %s's entries left its fd store: %m", d->name);
		if (d->msg)
			q = sd_bus_reply_method_return(d->msg, NULL);
		break;
	case STORED_FAILURE:
		if (r < 0)
			log_vm_errno(LOG_WARNING, r, LOG_VM(d->name),
				     "systemd did not confirm storing why VM %s failed: %m", d->name);
		(void)bus_error_set_vm(&error, &d->failure);
		if (d->msg)
			q = sd_bus_reply_method_error(d->msg, &error);
		break;
	case STORED_PRESERVATION:
		if (r < 0 && v && vm_is_preserved(v) && streq_ptr(v->session_name, d->session)) {
			VmError e = {};

			vm_rollback_unconfirmed(v, r, &e);
			shutdown_update_block(m);
			if (d->msg) {
				(void)bus_error_set_vm(&error, &e);
				q = sd_bus_reply_method_error(d->msg, &error);
			}
		} else if (d->msg)
			q = sd_bus_reply_method_return(d->msg, NULL);
		break;
	case STORED_REGISTRATION:
		if (r < 0 && v) {
			registration_unconfirmed(m, v, d, r);
			shutdown_update_block(m);
		}
		if (r < 0) {
			(void)persist_error(d->name, r, &error);
			q = sd_bus_reply_method_error(d->msg, &error);
		} else
			q = sd_bus_reply_method_return(d->msg, "o", d->path);
		break;
	}
	if (q < 0)
		log_vm_errno(LOG_WARNING, q, LOG_VM(d->name), "Failed to answer %s for VM %s: %m",
			     strempty(d->msg ? sd_bus_message_get_member(d->msg) : NULL), d->name);
	stored_reply_free(d);
}

/* Answer msg (or, with msg NULL, only check) once the fd store holds what
 * the call changed; d is consumed.  Returns what the handler returns. */
static int reply_when_stored(Manager *m, sd_bus_message *msg, StoredReply *d)
{
	int r;

	d->msg = msg ? sd_bus_message_ref(msg) : NULL;
	r = manager_barrier_async(m, on_stored, d, NULL);
	if (r < 0)
		on_stored(m, r, d);	/* as if unanswered */
	return 1;
}

static int stored_reply_new(Vm *v, StoredKind kind, StoredReply **ret)
{
	StoredReply *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->kind = kind;
	snprintf(d->name, sizeof(d->name), "%s", v->name);
	d->vm_id = v->id;
	if (kind == STORED_PRESERVATION)
		snprintf(d->session, sizeof(d->session), "%s", v->session_name);
	*ret = d;
	return 0;
}

/* Answer msg once the fd store holds what the call did to v: for
 * STORED_REMOVAL, once systemd removed its entries (a SIGKILL after the
 * reply must not bring them back); for STORED_PRESERVATION (v was just
 * preserved), once it holds v's session, else v's preservation is rolled
 * back. */
static int reply_once_stored(Manager *m, sd_bus_message *msg, Vm *v, StoredKind kind)
{
	StoredReply *d;
	int r;

	r = stored_reply_new(v, kind, &d);
	if (r < 0)
		return r;
	return reply_when_stored(m, msg, d);
}

/* The same for a call that failed with e and stored why (STORED_FAILURE):
 * answered with e. */
static int reply_error_once_stored(Manager *m, sd_bus_message *msg, Vm *v, const VmError *e,
				   sd_bus_error *error)
{
	StoredReply *d;

	if (stored_reply_new(v, STORED_FAILURE, &d) < 0)
		return bus_error_set_vm(error, e);	/* answered at once, as before */
	d->failure = *e;
	return reply_when_stored(m, msg, d);
}

/* ---- the VMM's pid ----------------------------------------------------- */


#ifndef PIDFS_MAGIC
#define PIDFS_MAGIC 0x50494446
#endif

static int on_owner_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Vm *v = userdata;
	Manager *m = v->manager;
	char name[sizeof(v->name)];

	v->owner_source = sd_event_source_disable_unref(v->owner_source);
	v->owner_pidfd = safe_close(v->owner_pidfd);
	if (v->stored_owner) {
		char fdname[FDNAME_MAX];

		snprintf(fdname, sizeof(fdname), "%s%s", FDNAME_OWNER_PREFIX, v->name);
		fdstore_remove_name(m, fdname);
		v->stored_owner = false;
	}
	if (v->state != VM_REGISTERED && v->state != VM_FAILED && v->state != VM_REGISTERING) {
		/* preserved (or later): the daemon owns it now */
		vm_changed(v, VM_PROP_OWNER_PID);
		return 0;
	}

	if (shutdown_kexec_pending(m)) {
		VmError error = {};

		/* The VMM was stopped as part of the kexec transaction. */
		if (vm_preserve(v, &error) >= 0) {
			if (reply_once_stored(m, NULL, v, STORED_PRESERVATION) < 0)
				log_oom();
			return 0;
		}
		log_vm(LOG_ERR, LOG_VM(v->name), "VMM of VM %s exited during kexec, preserving failed: %s%s%s",
		       v->name, error.message, error.errnum ? ": " : "", error.errnum ? strerror(error.errnum) : "");
	}
	snprintf(name, sizeof(name), "%s", v->name);
	log_vm(LOG_NOTICE, LOG_VM(name), "VMM (pid %d) of unpreserved VM %s exited, dropping the VM.",
	       (int)v->owner_pid, name);
	manager_remove_vm(m, v);
	shutdown_update_block(m);
	return 0;
}

/* The pid of the process pidfd refers to (its "Pid:" in fdinfo): -EBADF
 * if it is not a pidfd, -ESRCH if the process is gone (-1), -EREMOTE if it
 * is in another pid namespace (0). */
static int pidfd_get_pid(int pidfd, pid_t *ret)
{
	_cleanup_free_ char *line = NULL;
	char path[64];
	size_t size = 0;
	int pid = 0, r = -EBADF;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &size, f) >= 0)
		if (sscanf(line, "Pid: %d", &pid) == 1) {
			r = pid > 0 ? 0 : pid == 0 ? -EREMOTE : -ESRCH;
			break;
		}
	fclose(f);
	if (r == 0)
		*ret = pid;
	return r;
}

/*
 * Do pidfds a and b name the same process?  Only pidfs (Linux 6.9) can
 * tell: every pidfd of a process is a file on its one inode there.  Without
 * pidfs all pidfds share one anonymous inode, and the answer is false.
 */
static bool pidfd_same_process(int a, int b)
{
	struct statfs sfs;
	struct stat sa, sb;

	if (fstatfs(a, &sfs) < 0 || sfs.f_type != PIDFS_MAGIC)
		return false;
	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		return false;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/*
 * A pidfd for the sender of msg, whose pid the bus reported as pid.
 *
 * Race-free where the bus offers it: a bus that took the caller's pidfd
 * from its socket (SO_PEERPIDFD) hands it out as "ProcessFD" in
 * GetConnectionCredentials (dbus-broker, dbus-daemon >= 1.15.?); libsystemd
 * 252 has no SD_BUS_CREDS_PIDFD to ask for it, so the daemon calls the
 * bus itself.  Our own SO_PEERPIDFD would name the bus, not the caller.
 * The pidfd kept is always one the daemon opened itself, checked against
 * the bus's (pidfd_same_process()): a copy of the bus's would be the same
 * file for every VM the caller registers, and systemd's fd store keeps one
 * entry per file, so all but one of those VMs would lose their owner there.
 *
 * Fallback (dbus-daemon 1.14, Debian 12): pidfd_open() on the pid, which
 * races with the caller exiting (and its pid being reused) after the
 * credentials query.  So the pidfd is opened first and the bus asked
 * afterwards who sent the message: if the sender is still connected with
 * the same pid, the pidfd is the caller's (a pid is reused only after its
 * process is gone, and the bus drops a connection whose process is gone,
 * long before pids wrap around).  -ESRCH when the caller is gone.
 */
static int open_sender_pidfd(sd_bus_message *msg, pid_t pid, int *ret_fd)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_close_ int fd = -EBADF;
	const char *sender = sd_bus_message_get_sender(msg);
	uint32_t again = 0;
	int r;

	if (pid <= 0)
		return -ESRCH;
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -errno;
	if (!sender) {	/* a direct connection: no bus to ask */
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
	r = sd_bus_call_method(sd_bus_message_get_bus(msg), "org.freedesktop.DBus", "/org/freedesktop/DBus",
			       "org.freedesktop.DBus", "GetConnectionCredentials", NULL, &reply, "s", sender);
	if (r < 0)
		return -ESRCH;	/* disconnected */
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key;
		int pfd = -EBADF;
		pid_t of = 0;

		r = sd_bus_message_read(reply, "s", &key);
		if (r >= 0 && streq_ptr(key, "ProcessID"))
			r = sd_bus_message_read(reply, "v", "u", &again);
		else if (r >= 0 && streq_ptr(key, "ProcessFD")) {
			r = sd_bus_message_read(reply, "v", "h", &pfd);
			if (r >= 0 && pidfd_get_pid(pfd, &of) >= 0 && of == pid &&
			    pidfd_same_process(fd, pfd)) {
				/* Ours names the bus's caller: no race. */
				again = (uint32_t)pid;
				break;
			}
		} else if (r >= 0)
			r = sd_bus_message_skip(reply, "v");
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r < 0 || again != (uint32_t)pid)
		return -ESRCH;	/* disconnected (or a different process now) */
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Takes pidfd. */
int vm_watch_owner(Vm *v, pid_t pid, int pidfd)
{
	int r;

	r = sd_event_add_io(v->manager->event, &v->owner_source, pidfd, EPOLLIN, on_owner_exit, v);
	if (r < 0) {
		safe_close(pidfd);
		return r;
	}
	v->owner_pidfd = pidfd;
	v->owner_pid = pid;
	return 0;
}

/* ---- Manager methods ---------------------------------------------------- */

static int read_fd_array(sd_bus_message *msg, int **ret, size_t *ret_n)
{
	_cleanup_free_ int *a = NULL;
	size_t n = 0;
	int fd, r;

	r = sd_bus_message_enter_container(msg, 'a', "h");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_read(msg, "h", &fd)) > 0) {
		int *na = realloc(a, (n + 1) * sizeof(int));

		if (!na)
			return -ENOMEM;
		a = na;
		a[n++] = fd;	/* borrowed from the message */
	}
	if (r < 0)
		return r;
	r = sd_bus_message_exit_container(msg);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(a);
	*ret_n = n;
	return 0;
}

static void plan_freep(iommulu_plan **p)
{
	iommulu_plan_free(*p);
}

/*
 * With an fd store, a file can be registered for one VM only (see
 * manager_find_file_holder()): systemd keeps one copy of an open file in
 * the store (it drops the duplicate), so a restart would bring the second
 * VM back without it; and the kernel preserves a memfd in one LUO session
 * only.
 */
static int check_files_unshared(Manager *m, const Vm *v, const char *name, const int *memfds, size_t n_memfds,
				size_t have_memfds, const int *iommufds, size_t n_iommufds, const int *devices,
				size_t n_devices, size_t have_devices, sd_bus_error *error)
{
	Vm *holder;

	if (!m->fdstore)
		return 0;
	for (size_t i = 0; i < n_memfds + n_iommufds + n_devices; i++) {
		int fd = i < n_memfds ? memfds[i] : i < n_memfds + n_iommufds ? iommufds[i - n_memfds]
									      : devices[i - n_memfds - n_iommufds];
		char what[48];

		if (!(holder = manager_find_file_holder(m, v, fd)))
			continue;
		if (i < n_memfds)
			snprintf(what, sizeof(what), "memfd #%zu (fd %d)", have_memfds + i, fd);
		else if (i < n_memfds + n_iommufds)
			snprintf(what, sizeof(what), "iommufd (fd %d)", fd);
		else
			snprintf(what, sizeof(what), "device #%zu (fd %d)", have_devices + i - n_memfds - n_iommufds, fd);
		return sd_bus_error_setf(error, ERROR_NOT_ELIGIBLE,
					 "VM %s: %s: shared-file: already registered for VM %s (a file is kept "
					 "and preserved for one VM only)", name, what, holder->name);
	}
	return 0;
}

typedef enum RegisterMethod {
	REGISTER_VM,
	REGISTER_VM_PART,
	REGISTER_VM_WITH_OPTIONS,
} RegisterMethod;

/* RegisterVMWithOptions' a{sv}; everything borrowed from the message. */
typedef struct RegisterOptions {
	int owner_pidfd;	/* OwnerPIDFD, or -EBADF: the caller owns the VM */
	const uint32_t *state_memfds;	/* StateMemfds */
	size_t n_state_memfds;
	int last;		/* Last (default true) */
} RegisterOptions;

static int read_register_options(sd_bus_message *msg, RegisterOptions *o, sd_bus_error *error)
{
	int r;

	r = sd_bus_message_enter_container(msg, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
		const char *key, *type;

		r = sd_bus_message_read(msg, "s", &key);
		if (r < 0)
			return r;
		if (streq_ptr(key, "OwnerPIDFD")) {
			type = "h";
			r = sd_bus_message_read(msg, "v", "h", &o->owner_pidfd);
		} else if (streq_ptr(key, "StateMemfds")) {
			const void *a = NULL;
			size_t bytes = 0;

			type = "au";
			r = sd_bus_message_enter_container(msg, 'v', "au");
			if (r >= 0)
				r = sd_bus_message_read_array(msg, 'u', &a, &bytes);
			if (r >= 0)
				r = sd_bus_message_exit_container(msg);
			o->state_memfds = a;
			o->n_state_memfds = bytes / sizeof(uint32_t);
		} else if (streq_ptr(key, "Last")) {
			type = "b";
			r = sd_bus_message_read(msg, "v", "b", &o->last);
		} else
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Unknown option '%s' (known: OwnerPIDFD, StateMemfds, Last)", key);
		if (r == -ENXIO)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "Option %s must be of type '%s'", key, type);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(msg);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(msg);
}

/*
 * OwnerPIDFD: the VMM a helper registers the VM for.  A pidfd names its
 * process for good (no pid race), so the daemon keeps a duplicate and
 * watches it instead of the caller.  The process must still be running.
 */
/*
 * The owner a RegisterVMWithOptions names with OwnerPIDFD: a live process
 * in the daemon's pid namespace and, unless the caller is root, one of the
 * caller's own uid.  A VM lives as long as its owner, and only callers of
 * the owner's uid may manage it: naming another user's process would keep
 * a VM alive on that process and hand it to that user.
 */
static int take_owner_pidfd(sd_bus_message *msg, const char *name, int fd, int *ret_fd, pid_t *ret_pid,
			    sd_bus_error *error)
{
	_cleanup_close_ int copy = -EBADF;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	sd_bus_creds *creds = NULL;
	uid_t caller = UID_INVALID_VALUE, owner;
	pid_t pid = 0;
	int r;

	r = pidfd_get_pid(fd, &pid);
	if (r == -EBADF)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "VM %s: OwnerPIDFD is not a pidfd (see pidfd_open(2))", name);
	if (r == -EREMOTE)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "VM %s: OwnerPIDFD names a process outside the daemon's pid namespace", name);
	if (r == -ESRCH || (r >= 0 && poll(&p, 1, 0) > 0 && (p.revents & POLLIN)))
		return sd_bus_error_setf(error, SD_BUS_ERROR_UNIX_PROCESS_ID_UNKNOWN,
					 "VM %s: the owner given as OwnerPIDFD (pid %d) has exited", name, (int)pid);
	if (r < 0)
		return r;
	r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
	if (r >= 0) {
		r = sd_bus_creds_get_euid(creds, &caller);
		sd_bus_creds_unref(creds);
	}
	if (r < 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "VM %s: cannot determine the caller's credentials: %s", name, strerror(-r));
	owner = process_uid(pid);
	/* The pid read from the pidfd names the same process only while it
	 * runs: ask the pidfd again after reading its uid. */
	if (owner == UID_INVALID_VALUE || (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)))
		return sd_bus_error_setf(error, SD_BUS_ERROR_UNIX_PROCESS_ID_UNKNOWN,
					 "VM %s: the owner given as OwnerPIDFD (pid %d) has exited", name, (int)pid);
	if (caller != 0 && owner != caller)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "VM %s: OwnerPIDFD names pid %d of uid %u; uid %u may only name a process "
					 "of its own (root may name any)", name, (int)pid, (unsigned)owner,
					 (unsigned)caller);
	copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (copy < 0)
		return -errno;
	*ret_fd = TAKE_FD(copy);
	*ret_pid = pid;
	return 0;
}

/*
 * Whether a RegisterVM is a retry of the one that registered v: from v's
 * VMM, with the same files in the same order and the same HWPT ids.  A
 * VMM whose first call got no answer (the daemon was killed after it
 * stored the registration, and restarted) retries, and must not be told
 * AlreadyExists for its own VM.
 */
static bool is_identical_retry(const Vm *v, pid_t owner, const int *memfds, size_t n_memfds, const int *iommufds,
			       size_t n_iommufds, const int *devices, size_t n_devices, const uint64_t *hwpts,
			       size_t n_hwpts, const RegisterOptions *opts)
{
	_cleanup_free_ uint32_t *ids = NULL;

	if (v->owner_pidfd < 0 || v->owner_pid != owner || n_iommufds > 1 ||
	    (v->state != VM_REGISTERED && v->state != VM_PRESERVED && v->state != VM_FAILED))
		return false;
	ids = calloc(n_hwpts + 1, sizeof(uint32_t));
	if (!ids)
		return false;
	for (size_t i = 0; i < n_hwpts; i++) {
		if (hwpts[i] > UINT32_MAX)
			return false;
		ids[i] = (uint32_t)hwpts[i];
	}
	return vm_has_files(v, &(VmFiles){ .memfds = memfds, .n_memfds = n_memfds,
					   .iommufd = n_iommufds ? iommufds[0] : -1,
					   .devices = devices, .n_devices = n_devices,
					   .hwpts = ids, .n_hwpts = n_hwpts,
					   .state_memfds = opts->state_memfds,
					   .n_state_memfds = opts->n_state_memfds });
}

/*
 * RegisterVM and RegisterVMPart.  A part for a name that is not known
 * (or finished) creates the VM; further parts from the same caller append
 * to it while it is "registering"; the part with last=true completes it
 * ("registered").  Every call is checked against all of the VM's files so
 * far and keeps nothing on a refusal.
 */
static int register_files(sd_bus_message *msg, Manager *m, RegisterMethod kind, sd_bus_error *error)
{
	static const char *const method_names[] = {
		[REGISTER_VM] = "RegisterVM",
		[REGISTER_VM_PART] = "RegisterVMPart",
		[REGISTER_VM_WITH_OPTIONS] = "RegisterVMWithOptions",
	};
	const char *method = method_names[kind];
	bool part = kind != REGISTER_VM;
	RegisterOptions opts = { .owner_pidfd = -EBADF, .last = 1 };
	_cleanup_free_ int *memfds = NULL, *iommufds = NULL, *devices = NULL;
	_cleanup_free_ uint32_t *hwpts = NULL;
	_cleanup_(vm_fds_done) VmFds all = {};
	_cleanup_(plan_freep) iommulu_plan *plan = NULL;
	_cleanup_(vm_freep) Vm *created = NULL;
	const uint64_t *hwpts_in = NULL;
	size_t n_memfds = 0, n_iommufds = 0, n_devices = 0, hwpt_bytes = 0, n_hwpts, n_active = 0;
	size_t have_files = 0, have_memfds = 0, have_devices = 0, have_iommufd = 0, have_hwpts = 0, total;
	iommulu_reason reason = IOMMULU_REASON_NONE;
	iommulu_error e = {};
	const char *name;
	VmFiles add;
	pid_t caller = 0, owner;
	_cleanup_close_ int pidfd = -EBADF;
	int last = 1;
	Vm *old, *v = NULL;
	bool is_new;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	r = sd_bus_message_rewind(msg, true);
	if (r >= 0)
		r = sd_bus_message_read(msg, "s", &name);
	if (r < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, method, error, &caller);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = read_fd_array(msg, &memfds, &n_memfds)) < 0 ||
	    (r = read_fd_array(msg, &iommufds, &n_iommufds)) < 0 ||
	    (r = read_fd_array(msg, &devices, &n_devices)) < 0)
		return r;
	r = sd_bus_message_read_array(msg, 't', (const void **)&hwpts_in, &hwpt_bytes);
	if (r < 0)
		return r;
	n_hwpts = hwpt_bytes / sizeof(uint64_t);
	if (kind == REGISTER_VM_PART && (r = sd_bus_message_read(msg, "b", &last)) < 0)
		return r;
	if (kind == REGISTER_VM_WITH_OPTIONS) {
		r = read_register_options(msg, &opts, error);
		if (r < 0)
			return r;
		last = opts.last;
	}

	r = check_vm_name(name, error);
	if (r < 0)
		return r;
	/* The VM's owner: the VMM whose pidfd came with the call, or else
	 * the caller. */
	owner = caller;
	if (opts.owner_pidfd >= 0) {
		r = take_owner_pidfd(msg, name, opts.owner_pidfd, &pidfd, &owner, error);
		if (r < 0)
			return r;
	}
	old = manager_find_vm(m, name);
	if (old && old->state == VM_REGISTERING && part) {
		if (old->owner_pid != owner)
			return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
						 "VM %s is being registered for pid %d; only it (or a caller passing its "
						 "pidfd as OwnerPIDFD) may add files", name, (int)old->owner_pid);
		v = old;
		have_files = v->n_files;
		have_memfds = vm_files_count(v, VM_FILE_MEMFD);
		have_devices = vm_files_count(v, VM_FILE_DEVICE);
		have_iommufd = vm_iommufd(v) >= 0;
		have_hwpts = v->n_hwpts;
	} else if (old && old->state != VM_FINISHED) {
		if (last && is_identical_retry(old, owner, memfds, n_memfds, iommufds, n_iommufds, devices, n_devices,
					       hwpts_in, n_hwpts, &opts)) {
			log_vm(LOG_INFO, LOG_VM(name),
			       "%s of VM %s repeated for its VMM (pid %d) with the same files: already %s, "
			       "nothing to do", method, name, (int)owner, vm_state_to_string(old->state));
			return sd_bus_reply_method_return(msg, "o", old->path);
		}
		return sd_bus_error_setf(error, ERROR_ALREADY_EXISTS,
					 "VM %s is already registered (%s) with other files or for another process",
					 name, vm_state_to_string(old->state));
	}

	if (n_iommufds + have_iommufd > 1)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "VM %s: iommufd must hold at most one fd, got %zu", name,
					 n_iommufds + have_iommufd);
	for (size_t i = 0; i < opts.n_state_memfds; i++) {
		uint32_t k = opts.state_memfds[i];

		if (k < have_memfds || k >= have_memfds + n_memfds)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "VM %s: StateMemfds names memfd #%" PRIu32 ", not one of this call's "
						 "memfds (#%zu to #%zu)", name, k, have_memfds, have_memfds + n_memfds - 1);
		for (size_t j = 0; j < i; j++)
			if (opts.state_memfds[j] == k)
				return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
							 "VM %s: StateMemfds names memfd #%" PRIu32 " twice", name, k);
	}
	if (last && n_memfds + have_memfds <= opts.n_state_memfds + (v ? vm_n_state_memfds(v) : 0))
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "VM %s: at least one guest-RAM memfd is required%s", name,
					 opts.n_state_memfds ? " (all memfds are named in StateMemfds)" : "");
	for (size_t i = 0; i < n_hwpts; i++)
		if (hwpts_in[i] > UINT32_MAX)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "VM %s: HWPT id %" PRIu64 " out of range", name, hwpts_in[i]);
	total = have_memfds + have_iommufd + have_devices + n_memfds + n_iommufds + n_devices;
	if (total > m->config.max_fds_per_vm)
		return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
					 "VM %s: %zu fds exceed MaxFdsPerVM=%u", name, total,
					 m->config.max_fds_per_vm);
	if (!v) {
		for (size_t i = 0; i < m->n_vms; i++)
			if (m->vms[i]->state != VM_FINISHED)
				n_active++;
		if (n_active >= m->config.max_vms)
			return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
						 "MaxVMs=%u VMs are registered already", m->config.max_vms);
	}
	r = check_fds_available(m, name, n_memfds + n_iommufds + n_devices + (v ? 0 : 1), error);
	if (r < 0)
		return r;

	/* Check this call's files together with those the VM has. */
	hwpts = calloc(n_hwpts + 1, sizeof(uint32_t));
	if (!hwpts)
		return -ENOMEM;
	for (size_t i = 0; i < n_hwpts; i++)
		hwpts[i] = (uint32_t)hwpts_in[i];
	add = (VmFiles){
		.memfds = memfds,
		.n_memfds = n_memfds,
		.iommufd = n_iommufds ? iommufds[0] : -1,
		.devices = devices,
		.n_devices = n_devices,
		.hwpts = hwpts,
		.n_hwpts = n_hwpts,
		.state_memfds = opts.state_memfds,
		.n_state_memfds = opts.n_state_memfds,
	};
	r = vm_fds_build(v, name, &add, &all);
	if (r < 0)
		return r;
	r = iommulu_plan_build(&all.fds, m->generation, &plan, &reason, &e);
	if (r == -EPERM || (r < 0 && reason != IOMMULU_REASON_NONE)) {
		log_vm(LOG_WARNING, LOG_VM(name), "Refusing VM %s: %s", name, e.message);
		return sd_bus_error_setf(error, ERROR_NOT_ELIGIBLE, "VM %s: %s", name, e.message);
	}
	if (r < 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "VM %s: %s", name,
					 e.message[0] ? e.message : strerror(-r));
	r = check_files_unshared(m, v, name, memfds, n_memfds, have_memfds, iommufds, n_iommufds, devices, n_devices,
				 have_devices, error);
	if (r < 0)
		return r;

	is_new = !v;
	if (!v) {
		r = vm_new(m, name, &created);
		if (r < 0)
			return r;
		v = created;
	}
	r = vm_add_files(v, &add, plan);
	if (r < 0)
		return r;

	if (created) {
		/* The VM lives as long as its VMM: one that is gone already,
		 * or cannot be watched, must not leave a VM nobody owns. */
		if (pidfd < 0) {
			r = open_sender_pidfd(msg, caller, &pidfd);
			if (r < 0) {
				log_vm_errno(LOG_WARNING, r, LOG_VM(name),
					     "Not registering VM %s: cannot watch its VMM (pid %d): %m", name,
					     (int)caller);
				return sd_bus_error_setf(error, SD_BUS_ERROR_UNIX_PROCESS_ID_UNKNOWN,
							 "VM %s: the caller (pid %d) cannot be watched: %s", name,
							 (int)caller,
							 r == -ESRCH ? "it exited during the call" : strerror(-r));
			}
		}
		r = vm_watch_owner(v, owner, TAKE_FD(pidfd));
		if (r < 0)
			return r;
		v->state = last ? VM_REGISTERED : VM_REGISTERING;
		/* Durable before it is answered (below): a SIGKILL after the
		 * reply must not lose it. */
		r = vm_persist(v);
		if (r < 0)
			return persist_error(name, r, error);
		if (old)
			manager_remove_vm(m, old);	/* a finished VM is replaced */
		r = manager_add_vm(m, v);
		if (r < 0) {
			vm_forget_registration(v);
			return r;
		}
		TAKE_PTR(created);
	} else {
		VmState was = v->state;

		v->state = last ? VM_REGISTERED : VM_REGISTERING;
		r = vm_persist(v);
		v->state = was;
		if (r < 0) {
			/* Keep what earlier parts added, nothing of this one. */
			vm_truncate_files(v, have_files, have_hwpts);
			return persist_error(name, r, error);
		}
		vm_changed(v, VM_PROP_MEMFDS | VM_PROP_DEVICES | VM_PROP_HWPTS | VM_PROP_GUEST_MEMORY_BYTES |
				      VM_PROP_STATE_MEMFDS);
		if (last)
			vm_set_state(v, VM_REGISTERED, NULL);
	}
	log_vm(LOG_INFO, LOG_VM(name),
	       "%s VM %s (VMM pid %d): %zu memfd(s), %" PRIu64 " bytes, %zu device(s), %zu HWPT(s)%s",
	       last ? "Registered" : "Registering", name, (int)v->owner_pid, vm_files_count(v, VM_FILE_MEMFD),
	       vm_guest_memory_bytes(v), vm_files_count(v, VM_FILE_DEVICE), v->n_hwpts,
	       last ? "" : "; more files to come");
	shutdown_update_block(m);
	manager_schedule_trim(m);
	{
		StoredReply *d = NULL;

		r = stored_reply_new(v, STORED_REGISTRATION, &d);
		if (r >= 0) {
			d->path = strdup(v->path);
			if (!d->path)
				r = -ENOMEM;
		}
		if (r < 0) {
			stored_reply_free(d);
			return r;
		}
		d->created = is_new;
		d->was = VM_REGISTERING;	/* an earlier part's */
		d->have_files = have_files;
		d->have_hwpts = have_hwpts;
		return reply_when_stored(m, msg, d);
	}
}

static int method_register_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	return register_files(msg, userdata, REGISTER_VM, error);
}

static int method_register_vm_part(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	return register_files(msg, userdata, REGISTER_VM_PART, error);
}

static int method_register_vm_with_options(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	return register_files(msg, userdata, REGISTER_VM_WITH_OPTIONS, error);
}

/*
 * The error for a failed LUO FINISH of a VM's incoming session.  The kernel
 * refuses it (EBUSY) while one of the VM's devices still translates DMA
 * through the page tables the previous kernel handed over: they point into
 * the VM's memfds, which FINISH lets go.  The VMM takes the devices over
 * first.
 */
static int finish_error(Vm *v, int r, sd_bus_error *error)
{
	char what[160];

	if (r == -EBUSY && vm_files_count(v, VM_FILE_DEVICE) > 0) {
		log_vm(LOG_WARNING, LOG_VM_SESSION(v->name, v->session_name),
		       "Not finishing VM %s: a device still uses the translation preserved across the kexec",
		       v->name);
		return sd_bus_error_setf(error, ERROR_BUSY,
					 "VM %s: a device still does DMA through the IOMMU translation preserved "
					 "across the kexec, which maps the VM's memory; its VMM must bind the "
					 "retrieved device to the retrieved iommufd and attach a HWPT before the "
					 "session %s can be finished (the kernel log names the device)",
					 v->name, v->session_name);
	}
	snprintf(what, sizeof(what), "VM %s: LUO FINISH of session %s failed", v->name, v->session_name);
	return bus_error_from_errno(error, r, what);
}

static int method_unregister_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *name;
	Vm *v;
	StoredReply *d;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, "UnregisterVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	if (v->state == VM_PRESERVED)
		return invalid_state(error, v, "call UnpreserveVM first");
	if (IN_SET3(v->state, VM_RESTORED, VM_VERIFIED, VM_RETRIEVED))
		return invalid_state(error, v, "call FinishVM first");
	/* registered, finished, or failed (an incoming session is finished) */
	if (v->session_incoming && v->session_fd >= 0) {
		/* Keep the VM while the kernel still needs its session; any
		 * other failure is logged and the VM dropped, as before. */
		r = iommulu_luo_session_finish(v->session_fd);
		if (r == -EBUSY)
			return finish_error(v, r, error);
		if (r < 0)
			log_vm_errno(LOG_WARNING, r, LOG_VM_SESSION(name, v->session_name),
				     "LUO FINISH of session %s failed: %m", v->session_name);
		v->session_incoming = false;	/* FINISH done or given up; do not repeat it */
	}
	r = stored_reply_new(v, STORED_REMOVAL, &d);
	if (r < 0)
		return r;
	vm_unmark_hwpts(v);
	vm_finish_session(v);
	log_vm(LOG_INFO, LOG_VM(name), "Unregistered VM %s", name);
	manager_remove_vm(m, v);
	shutdown_update_block(m);
	manager_schedule_trim(m);
	/* Answered once systemd has dropped the registration: a SIGKILL
	 * after the reply must not bring the VM back. */
	return reply_when_stored(m, msg, d);
}

static int method_preserve_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *name;
	Vm *v;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, "PreserveVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	{
		VmError e = {};
		bool was_preserved = vm_is_preserved(v);

		r = vm_preserve(v, &e);
		shutdown_update_block(m);
		if (r < 0)
			/* Answered once the fd store holds the failure (state,
			 * LastError), as a success is once it holds the session. */
			return reply_error_once_stored(m, msg, v, &e, error);
		if (was_preserved)
			return sd_bus_reply_method_return(msg, NULL);
	}
	/* Answered once the fd store holds the session: a SIGKILL after the
	 * reply must lose nothing.  Else the preservation is rolled back. */
	return reply_once_stored(m, msg, v, STORED_PRESERVATION);
}

static int method_unpreserve_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *name;
	Vm *v;
	StoredReply *d;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, "UnpreserveVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	if ((v->state == VM_REGISTERED || v->state == VM_FAILED || v->state == VM_REGISTERING) &&
	    !v->session_incoming &&
	    v->session_fd < 0) {
		/* Not preserved: what the caller asked for holds already. */
		log_vm(LOG_DEBUG, LOG_VM(name), "VM %s is not preserved, nothing to unpreserve", name);
		return sd_bus_reply_method_return(msg, NULL);
	}
	if (v->state != VM_PRESERVED)
		return invalid_state(error, v, "only a preserved (or a not yet preserved) VM can be unpreserved");

	r = stored_reply_new(v, STORED_REMOVAL, &d);	/* before v may be dropped */
	if (r < 0)
		return r;
	(void)vm_unpreserve(v);
	shutdown_update_block(m);
	return reply_when_stored(m, msg, d);
}

/* PreserveAll's a(ss): each VM's name and "ok" or "<error name>: <message>". */
static int reply_results(sd_bus_message *msg, const PreserveResult *res, size_t n)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_message_new_method_return(msg, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(ss)");
	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
		_cleanup_free_ char *text = NULL;

		if (!res[i].ok) {
			(void)bus_error_set_vm(&e, &res[i].error);
			if (asprintf(&text, "%s: %s", e.name, e.message) < 0)
				return -ENOMEM;
		}
		r = sd_bus_message_append(reply, "(ss)", res[i].name, text ?: "ok");
	}
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static void preserve_all_replied(Manager *m, PreserveAllJob *j, const PreserveResult *results, size_t n_results,
				 int failed, void *userdata)
{
	sd_bus_message *msg = userdata;
	int r;

	if (failed != -ECANCELED)	/* else the daemon is exiting */
		shutdown_update_block(m);
	r = failed < 0 ? sd_bus_reply_method_errno(msg, failed, NULL) : reply_results(msg, results, n_results);
	if (r < 0)
		log_warning_errno(r, "Failed to answer PreserveAll: %m");
	sd_bus_message_unref(msg);
}

/* Answered when the job is done; the event loop goes on meanwhile. */
static int method_preserve_all(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	r = check_access(m, msg, ACTION_PRESERVE_ALL, NULL, "PreserveAll", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;
	r = manager_preserve_all_async(m, preserve_all_replied, sd_bus_message_ref(msg), NULL);
	if (r < 0) {
		sd_bus_message_unref(msg);
		return r;
	}
	return 1;
}

/* Zero or one fd of an "ah" argument: -1 for none. */
static int read_optional_fd(sd_bus_message *msg, const char *what, int *ret, sd_bus_error *error)
{
	_cleanup_free_ int *fds = NULL;
	size_t n = 0;
	int r;

	r = read_fd_array(msg, &fds, &n);
	if (r < 0)
		return r;
	if (n > 1)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "At most one %s fd, got %zu", what, n);
	*ret = n ? fds[0] : -1;
	return 0;
}

static int method_stage_kernel(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *cmdline, *name = NULL;
	int kernel_fd, initrd_fd, config_fd, r;
	VmError e = {};

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	r = check_access(m, msg, ACTION_STAGE_KERNEL, NULL, "StageKernel", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;
	r = sd_bus_message_rewind(msg, true);
	if (r < 0)
		return r;
	r = sd_bus_message_read(msg, "h", &kernel_fd);
	if (r < 0)
		return r;
	if ((r = read_optional_fd(msg, "initrd", &initrd_fd, error)) < 0 ||
	    (r = read_optional_fd(msg, "config", &config_fd, error)) < 0)
		return r;
	r = sd_bus_message_read(msg, "s", &cmdline);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(msg, 'a', "{sv}");
	while (r > 0) {
		const char *key;

		r = sd_bus_message_enter_container(msg, 'e', "sv");
		if (r <= 0)
			break;
		r = sd_bus_message_read(msg, "s", &key);
		if (r < 0)
			return r;
		if (streq_ptr(key, "Name")) {
			r = sd_bus_message_read(msg, "v", "s", &name);
			if (r < 0)
				return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
							 "Option Name must be a string (s)");
		} else
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option %s", key);
		r = sd_bus_message_exit_container(msg);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	if (strlen(cmdline) >= 4096)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Command line of %zu bytes exceeds 4095",
					 strlen(cmdline));
	r = manager_stage_kernel(m, name, kernel_fd, initrd_fd, config_fd, cmdline, &e);
	if (r < 0)
		return bus_error_set_vm(error, &e);
	return sd_bus_reply_method_return(msg, "ss", m->staged->verdict.release,
					  m->staged->verdict.devices ? "devices" : "memfds");
}

static int method_unstage_kernel(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	r = check_access(m, msg, ACTION_STAGE_KERNEL, NULL, "UnstageKernel", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;
	r = manager_unstage_kernel(m);
	if (r < 0)
		return bus_error_from_errno(error, r, "Failed to unload the staged kernel");
	return sd_bus_reply_method_return(msg, NULL);
}

static int method_list_vms(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	Manager *m = userdata;
	int r;

	r = sd_bus_message_new_method_return(msg, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sso)");
	for (size_t i = 0; r >= 0 && i < m->n_vms; i++)
		r = sd_bus_message_append(reply, "(sso)", m->vms[i]->name,
					  vm_state_to_string(m->vms[i]->state), m->vms[i]->path);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int method_verify_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	Manager *m = userdata;
	const char *name;
	Vm *v;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, "VerifyVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	if (!v->session_incoming ||
	    (!IN_SET3(v->state, VM_RESTORED, VM_VERIFIED, VM_RETRIEVED) && v->state != VM_FAILED))
		return invalid_state(error, v, "only a VM restored from a live update can be verified");

	(void)vm_verify(v);

	r = sd_bus_message_new_method_return(msg, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sbs)");
	for (size_t i = 0; r >= 0 && i < v->n_checks; i++)
		r = sd_bus_message_append(reply, "(sbs)", v->checks[i].what, (int)v->checks[i].ok,
					  v->checks[i].detail);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

/* A restored file handed back by RetrieveVM: role and fd (borrowed). */
typedef struct RetrievedFile {
	char role[IOMMULU_BDF_MAX + 16];
	int fd;
} RetrievedFile;

/* The VM's restored files in RetrieveVM's order: memfd:N, iommufd,
 * device:BDF; files the kernel did not restore are left out. */
static int retrieved_files(const Vm *v, RetrievedFile **ret, size_t *ret_n)
{
	static const VmFileKind order[] = { VM_FILE_MEMFD, VM_FILE_IOMMUFD, VM_FILE_DEVICE };
	RetrievedFile *r = calloc(v->n_files + 1, sizeof(RetrievedFile));
	size_t n = 0;

	if (!r)
		return -ENOMEM;
	for (size_t k = 0; k < ELEMENTSOF(order); k++)
		VM_FOREACH_FILE(f, v, order[k])
			if (f->fd >= 0) {
				vm_file_role(v, f, r[n].role);
				r[n++].fd = f->fd;
			}
	*ret = r;
	*ret_n = n;
	return 0;
}

/*
 * RetrieveVM and RetrieveVMPart: files [first, first + count) of the
 * VM's restored files, at most as many as one message carries; the part
 * variant also returns how many there are in all.
 */
static int retrieve_files(sd_bus_message *msg, Manager *m, bool part, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_free_ RetrievedFile *files = NULL;
	const char *name;
	uint32_t first = 0, count = UINT32_MAX;
	size_t n = 0, per_message = m->limits.bus_fds_per_message ?: LIMITS_BUS_FDS_PER_MESSAGE;
	Vm *v;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, part ? "RetrieveVMPart" : "RetrieveVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if (part && (r = sd_bus_message_read(msg, "uu", &first, &count)) < 0)
		return r;
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	if (v->state == VM_RESTORED)
		(void)vm_verify(v);
	if (v->state != VM_VERIFIED && v->state != VM_RETRIEVED)
		return invalid_state(error, v,
				     v->state == VM_FAILED ? v->last_error
							   : "only a verified VM restored from a live update can be retrieved");

	r = retrieved_files(v, &files, &n);
	if (r < 0)
		return r;
	if (!part && n > per_message)
		/* A reply with more fds than the bus carries would cost the
		 * daemon its connection. */
		return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
					 "VM %s has %zu restored files, more than the %zu one message carries; "
					 "retrieve them with RetrieveVMPart", name, n, per_message);
	if (first > n)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "VM %s has %zu restored files; cannot start at %" PRIu32, name, n, first);
	if (count > n - first)
		count = (uint32_t)(n - first);
	if (count > per_message)
		count = (uint32_t)per_message;

	r = sd_bus_message_new_method_return(msg, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sh)");
	for (size_t i = first; r >= 0 && i < first + count; i++)
		r = sd_bus_message_append(reply, "(sh)", files[i].role, files[i].fd);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r >= 0 && part)
		r = sd_bus_message_append(reply, "u", (uint32_t)n);
	if (r < 0)
		return r;
	r = sd_bus_send(NULL, reply, NULL);
	if (r < 0)
		return r;
	if (v->state != VM_RETRIEVED) {
		vm_set_state(v, VM_RETRIEVED, NULL);
		log_vm(LOG_NOTICE, LOG_VM_SESSION(v->name, v->session_name),
		       "Handed VM %s's restored files to the VMM", v->name);
	}
	/* Handled: the reply is sent.  0 would make sd-bus answer the call
	 * again, with UnknownMethod, after the reply. */
	return 1;
}

static int method_retrieve_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	return retrieve_files(msg, userdata, false, error);
}

static int method_retrieve_vm_part(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	return retrieve_files(msg, userdata, true, error);
}

static int method_finish_vm(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *name;
	Vm *v;
	int r;

	if (manager_hold_call(m, msg, error, &r))
		return r;	/* a barrier is pending: dispatched again after it */
	if ((r = sd_bus_message_rewind(msg, true)) < 0 || (r = sd_bus_message_read(msg, "s", &name)) < 0)
		return r;
	r = check_access(m, msg, ACTION_MANAGE_VMS, name, "FinishVM", error, NULL);
	if (r <= 0)
		return r < 0 ? r : 1;	/* 0: polkit asked, answered later */
	if ((r = find_vm_or_error(m, name, &v, error)) < 0)
		return r;
	if (!v->session_incoming ||
	    (!IN_SET3(v->state, VM_RESTORED, VM_VERIFIED, VM_RETRIEVED) && v->state != VM_FAILED))
		return invalid_state(error, v, "only a VM restored from a live update can be finished");

	r = iommulu_luo_session_finish(v->session_fd);
	if (r < 0)
		return finish_error(v, r, error);
	log_vm(LOG_NOTICE, LOG_VM_SESSION(name, v->session_name),
	       "Finished VM %s: session %s released and removed from the fd store", name, v->session_name);
	v->session_incoming = false;	/* FINISH done; do not repeat it */
	vm_finish_session(v);
	vm_close_files(v);
	vm_set_state(v, VM_FINISHED, NULL);
	shutdown_update_block(m);
	return reply_once_stored(m, msg, v, STORED_REMOVAL);
}

/* ---- properties ----------------------------------------------------- */

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
				const char *property, sd_bus_message *reply, void *userdata,
				sd_bus_error *error)
{
	return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static int property_get_manager(sd_bus *bus, const char *path, const char *interface,
				const char *property, sd_bus_message *reply, void *userdata,
				sd_bus_error *error)
{
	Manager *m = userdata;

	if (streq_ptr(property, "LiveUpdated"))
		return sd_bus_message_append(reply, "b", (int)m->live_updated);
	if (streq_ptr(property, "Generation"))
		return sd_bus_message_append(reply, "t", m->generation);
	if (streq_ptr(property, "FailurePolicy"))
		return sd_bus_message_append(reply, "s", failure_policy_to_string(m->config.failure_policy));
	if (streq_ptr(property, "MaxVMs"))
		return sd_bus_message_append(reply, "u", m->config.max_vms);
	if (streq_ptr(property, "MaxFdsPerVM"))
		return sd_bus_message_append(reply, "u", m->config.max_fds_per_vm);
	if (streq_ptr(property, "FdStore"))
		return sd_bus_message_append(reply, "b", (int)m->fdstore);
	if (streq_ptr(property, "ShutdownBlockedBy"))
		return sd_bus_message_append(reply, "s", strempty(m->block_why));
	if (streq_ptr(property, "StagedKernel")) {
		_cleanup_free_ char *s = NULL;

		if (m->staged && asprintf(&s, "%s (%s)", m->staged->name, m->staged->verdict.release) < 0)
			return -ENOMEM;
		return sd_bus_message_append(reply, "s", strempty(s));
	}
	if (streq_ptr(property, "StagedKernelAdopts"))
		return sd_bus_message_append(reply, "s", !m->staged ? "" : m->staged->verdict.devices ? "devices" : "memfds");
	if (streq_ptr(property, "StagedKernelProblem"))
		return sd_bus_message_append(reply, "s", m->staged ? m->staged->verdict.devices_problem : "");
	return -EINVAL;
}

static const sd_bus_vtable manager_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("LiveUpdated", "b", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Generation", "t", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("FailurePolicy", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("MaxVMs", "u", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("MaxFdsPerVM", "u", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("FdStore", "b", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("ShutdownBlockedBy", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("StagedKernel", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("StagedKernelAdopts", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("StagedKernelProblem", "s", property_get_manager, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

	SD_BUS_METHOD_WITH_ARGS("RegisterVM",
				SD_BUS_ARGS("s", name, "ah", memfds, "ah", iommufd, "ah", devices, "at", hwpt_ids),
				SD_BUS_RESULT("o", vm), method_register_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("RegisterVMPart",
				SD_BUS_ARGS("s", name, "ah", memfds, "ah", iommufd, "ah", devices, "at", hwpt_ids,
					    "b", last),
				SD_BUS_RESULT("o", vm), method_register_vm_part, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("RegisterVMWithOptions",
				SD_BUS_ARGS("s", name, "ah", memfds, "ah", iommufd, "ah", devices, "at", hwpt_ids,
					    "a{sv}", options),
				SD_BUS_RESULT("o", vm), method_register_vm_with_options, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("UnregisterVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
				method_unregister_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("PreserveVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
				method_preserve_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("UnpreserveVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
				method_unpreserve_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("PreserveAll", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ss)", results),
				method_preserve_all, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("ListVMs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sso)", vms),
				method_list_vms, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("VerifyVM", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a(sbs)", checks),
				method_verify_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("RetrieveVM", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a(sh)", fds),
				method_retrieve_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("RetrieveVMPart", SD_BUS_ARGS("s", name, "u", first, "u", count),
				SD_BUS_RESULT("a(sh)", fds, "u", total), method_retrieve_vm_part,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("FinishVM", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
				method_finish_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("StageKernel",
				SD_BUS_ARGS("h", kernel, "ah", initrd, "ah", config, "s", cmdline, "a{sv}", options),
				SD_BUS_RESULT("s", release, "s", adopts), method_stage_kernel,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("UnstageKernel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_unstage_kernel,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_VTABLE_END
};

/* ---- VM objects ------------------------------------------------------ */

static int property_get_vm(sd_bus *bus, const char *path, const char *interface,
			   const char *property, sd_bus_message *reply, void *userdata,
			   sd_bus_error *error)
{
	Vm *v = userdata;
	int r;

	if (streq_ptr(property, "Name"))
		return sd_bus_message_append(reply, "s", v->name);
	if (streq_ptr(property, "State"))
		return sd_bus_message_append(reply, "s", vm_state_to_string(v->state));
	if (streq_ptr(property, "GuestMemoryBytes"))
		return sd_bus_message_append(reply, "t", vm_guest_memory_bytes(v));
	if (streq_ptr(property, "Session"))
		return sd_bus_message_append(reply, "s", v->session_name);
	if (streq_ptr(property, "LastError"))
		return sd_bus_message_append(reply, "s", strempty(v->last_error));
	if (streq_ptr(property, "Generation"))
		return sd_bus_message_append(reply, "t", v->generation);
	if (streq_ptr(property, "OwnerPID"))
		return sd_bus_message_append(reply, "u", (uint32_t)(v->owner_pidfd >= 0 ? v->owner_pid : 0));
	if (streq_ptr(property, "Memfds"))
		/* Those the VM has, held here or only in its session (a VM
		 * taken back from its session without its registration), as
		 * GuestMemoryBytes and StateMemfds count them. */
		return sd_bus_message_append(reply, "u", (uint32_t)vm_files_count(v, VM_FILE_MEMFD));
	if (streq_ptr(property, "IneligibleReason"))
		return sd_bus_message_append(reply, "s", strempty(v->ineligible));
	if (streq_ptr(property, "RestoreNotes"))
		return sd_bus_message_append(reply, "s", strempty(v->restore_notes));
	if (streq_ptr(property, "Devices")) {
		r = sd_bus_message_open_container(reply, 'a', "s");
		VM_FOREACH_FILE(f, v, VM_FILE_DEVICE)
			if (r >= 0)
				r = sd_bus_message_append(reply, "s", f->device.bdf);
		return r < 0 ? r : sd_bus_message_close_container(reply);
	}
	if (streq_ptr(property, "StateMemfds")) {
		_cleanup_free_ uint32_t *numbers = NULL;
		size_t n;

		r = vm_state_memfds(v, &numbers, &n);
		return r < 0 ? r : sd_bus_message_append_array(reply, 'u', numbers, n * sizeof(uint32_t));
	}
	if (streq_ptr(property, "HWPTs")) {
		r = sd_bus_message_open_container(reply, 'a', "t");
		for (size_t i = 0; r >= 0 && i < v->n_hwpts; i++)
			r = sd_bus_message_append(reply, "t", (uint64_t)v->hwpts[i]);
		return r < 0 ? r : sd_bus_message_close_container(reply);
	}
	return -EINVAL;
}

int bus_vm_property_text(Vm *v, const char *property, char **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
	_cleanup_free_ char *text = NULL;
	size_t size = 0;
	FILE *f;
	int r;

	if (!v->manager->bus)
		return -ENOTCONN;
	/* The getter's own output: what a Get would return. */
	r = sd_bus_message_new_signal(v->manager->bus, &msg, v->path, VM_IFACE, "Value");
	if (r >= 0)
		r = property_get_vm(v->manager->bus, v->path, VM_IFACE, property, msg, v, NULL);
	if (r >= 0)
		r = sd_bus_message_seal(msg, 1, 0);
	if (r < 0)
		return r;
	f = open_memstream(&text, &size);
	if (!f)
		return -ENOMEM;
	r = sd_bus_message_dump(msg, f, 0);
	if (fclose(f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0)
		return r;
	*ret = TAKE_PTR(text);
	return 0;
}

static const sd_bus_vtable vm_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("State", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Devices", "as", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("HWPTs", "at", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("GuestMemoryBytes", "t", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("StateMemfds", "au", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Session", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("LastError", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Generation", "t", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("OwnerPID", "u", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Memfds", "u", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("IneligibleReason", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("RestoreNotes", "s", property_get_vm, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END
};

static int vm_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
			  void **found, sd_bus_error *error)
{
	Manager *m = userdata;
	_cleanup_free_ char *name = NULL;
	Vm *v;
	int r;

	r = sd_bus_path_decode(path, VM_PATH_PREFIX, &name);
	if (r <= 0)
		return 0;
	v = manager_find_vm(m, name);
	if (!v)
		return 0;
	*found = v;
	return 1;
}

static int vm_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
			      sd_bus_error *error)
{
	Manager *m = userdata;
	char **l = calloc(m->n_vms + 1, sizeof(char *));

	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_vms; i++) {
		l[i] = strdup(m->vms[i]->path);
		if (!l[i]) {
			for (size_t k = 0; k < i; k++)
				free(l[k]);
			free(l);
			return -ENOMEM;
		}
	}
	*nodes = l;
	return 1;
}

int manager_connect_bus(Manager *m)
{
	int r;

	r = sd_bus_default_system(&m->bus);
	if (r < 0)
		return log_error_errno(r, "Failed to connect to the system bus: %m");
	r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
	/* Off the bus the daemon would see no call and no PrepareForShutdown,
	 * and the next kexec would preserve nothing: exit, so that systemd
	 * restarts it (Restart=on-failure). */
	r = sd_bus_set_exit_on_disconnect(m->bus, true);
	if (r < 0)
		return log_error_errno(r, "Failed to make bus disconnection exit the daemon: %m");

	r = sd_bus_add_object_vtable(m->bus, NULL, MANAGER_PATH, MANAGER_IFACE, manager_vtable, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the manager object: %m");
	r = sd_bus_add_fallback_vtable(m->bus, NULL, VM_PATH_PREFIX, VM_IFACE, vm_vtable, vm_object_find, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the VM objects: %m");
	r = sd_bus_add_node_enumerator(m->bus, NULL, VM_PATH_PREFIX, vm_node_enumerator, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the VM enumerator: %m");
	r = sd_bus_add_object_manager(m->bus, NULL, MANAGER_PATH);
	if (r < 0)
		return log_error_errno(r, "Failed to add the object manager: %m");
	/* What a client reads from now on is the baseline of PropertiesChanged. */
	for (size_t i = 0; i < m->n_vms; i++)
		vm_remember_properties(m->vms[i]);
	return 0;
}

int manager_request_name(Manager *m)
{
	int r = sd_bus_request_name(m->bus, BUS_NAME, 0);

	if (r < 0)
		return log_error_errno(r, "Failed to acquire bus name %s: %m", BUS_NAME);
	return 0;
}

void manager_emit_changed(Manager *m, const char *prop)
{
	manager_emit(m, prop);
}

void manager_emit_changed_strv(Manager *m, char **props)
{
	if (props && props[0])
		(void)sd_bus_emit_properties_changed_strv(m->bus, MANAGER_PATH, MANAGER_IFACE, props);
}
