/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * iommu-lud-qemu: runs an unmodified QEMU for one VM so that the VM
 * survives a host kexec through iommu-lud (the main process of
 * iommu-lud-qemu@NAME.service).
 *
 *   iommu-lud-qemu run NAME
 *   iommu-lud-qemu resume
 *
 * Guest RAM is a sealed memfd (F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL) that
 * this helper creates and hands to QEMU as
 *	-object memory-backend-file,mem-path=/proc/self/fd/N,share=on
 * (a memory-backend-memfd cannot be skipped by x-ignore-shared, which
 * needs a shared, named file).  A second sealed memfd of STATE_SIZE bytes
 * will hold QEMU's device state.  Both are registered with iommu-lud as
 * the VM's memfds 0 and 1 before QEMU starts; this process stays the VM's
 * VMM as far as the daemon is concerned.
 *
 * Stop (SIGTERM, e.g. in the shutdown of `systemctl kexec`): if the
 * daemon has preserved the VM (its logind hook runs before any unit
 * stops) or a kexec job is queued, QEMU is stopped and migrated with
 * x-ignore-shared (guest RAM stays where it is) through a pipe, which
 * this process copies into the state memfd at offset 4096, and a header
 * (page 0) records the stream, the time QEMU stopped and the last lines
 * of the guest console.  Otherwise QEMU just quits.
 *
 * Start: if the daemon holds the VM restored from a live update, the
 * helper verifies and retrieves it, starts QEMU with the same RAM memfd
 * and -incoming defer, loads the state (file: on an fdset holding the
 * state memfd), resumes the guest, logs the
 * blackout (QEMU stop to guest running again, VM= fields), finishes the
 * session and registers the VM again for the next update.  Otherwise it
 * boots the VM afresh.
 *
 * Resume (iommu-lud-qemu-resume.service, started with iommu-lud.service):
 * after a live update, starts iommu-lud-qemu@NAME.service for each VM the
 * daemon restored (restored or verified) that has a config in
 * /etc/iommu-lud/qemu/, so that the VMs come back without the operator.
 *
 * Config: $IOMMULU_QEMU_CONFIG or /etc/iommu-lud/qemu/NAME.conf, lines
 * KEY=VALUE: MEMORY (guest RAM, e.g. 16M), STATE_SIZE (default 8M), QEMU
 * (default qemu-system-x86_64 on $PATH), ARGS (QEMU arguments split at
 * white space, no quoting; several ARGS lines add up).  The helper adds
 * the memory backend, -m, -serial (the guest console, logged to the
 * journal with VM= and IOMMULU_QEMU_CONSOLE=1), -qmp and -incoming.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include <iommulu/iommulu.h>

#include "config.h"

#define BUS_NAME "org.iommulu.LiveUpdate1"
#define MANAGER_PATH "/org/iommulu/LiveUpdate1"
#define MANAGER_IFACE "org.iommulu.LiveUpdate1.Manager"

/* Where the VMs' configs live: IOMMULU_CONF_DIR is $sysconfdir/iommu-lud. */
#define QEMU_CONF_DIR IOMMULU_CONF_DIR "/qemu"

#define STATE_MAGIC "IOMMULUQ"
#define STATE_VERSION 1u
#define STATE_HDR 4096u
#define TAIL_MAX 3072u
#define LINE_MAX_ 512u
#define MAX_ARGS 256u
/* The fdset that carries the state memfd into an incoming QEMU */
#define STATE_FDSET 9

/* Page 0 of the state memfd; valid only once the stream is complete. */
struct state_hdr {
	char magic[8];
	uint32_t version, hdr_size;
	uint64_t stream_offset, stream_len, mem_size;
	int64_t stop_ns, saved_ns; /* CLOCK_REALTIME */
	uint32_t tail_len, pad;
	char vm[IOMMULU_VM_NAME_MAX + 1];
	char qemu_version[64];
	char tail[TAIL_MAX];
};
_Static_assert(sizeof(struct state_hdr) <= STATE_HDR, "state header exceeds its page");

struct vm {
	const char *name;
	uint64_t mem_size, state_size;
	char qemu[256];
	char *args[MAX_ARGS];
	size_t n_args;
	int ram_fd, state_fd;
	pid_t qemu_pid;
	int qemu_pidfd, qmp_fd, con_rd, sig_fd;
	char qmp_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char qmp_buf[65536];
	size_t qmp_len;
	char qemu_version[64];
	const char *how; /* "fresh boot" or "resumed after a live update" */
	char blocked[1024]; /* why the VM cannot be saved, "" if it can */
	uint64_t state_need; /* an upper bound of the device state's size, 0 unknown */
	int64_t blockers_checked; /* CLOCK_MONOTONIC */
	char line[LINE_MAX_]; /* the console line being received */
	size_t line_len;
	char tail[TAIL_MAX]; /* the last complete console lines */
	size_t tail_len;
	sd_bus *bus;
};

static int64_t now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Journal line of this VM; also on stderr for `systemctl status`. */
__attribute__((format(printf, 3, 4)))
static void vm_log(const struct vm *vm, int prio, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", prio, "VM=%s", vm->name,
			"SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
}

#define log_err(vm, ...) (vm_log(vm, 3, __VA_ARGS__), -1)

/* ------------------------------------------------------------ config */

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'G':
		v <<= 10;
		/* fallthrough */
	case 'M':
		v <<= 10;
		/* fallthrough */
	case 'K':
		v <<= 10;
		end++;
		break;
	}
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int load_config(struct vm *vm)
{
	char def[256], line[4096];
	const char *path = getenv("IOMMULU_QEMU_CONFIG");
	unsigned lineno = 0;
	FILE *f;

	if (!path || !*path) {
		snprintf(def, sizeof(def), QEMU_CONF_DIR "/%s.conf", vm->name);
		path = def;
	}
	f = fopen(path, "re");
	if (!f)
		return log_err(vm, "VM %s: cannot open its config %s: %s", vm->name, path, strerror(errno));
	vm->state_size = 8u << 20;
	snprintf(vm->qemu, sizeof(vm->qemu), "qemu-system-x86_64");
	while (fgets(line, sizeof(line), f)) {
		char *eq, *v, *tok, *save = NULL;

		lineno++;
		line[strcspn(line, "\n")] = 0;
		if (!line[strspn(line, " \t")] || line[strspn(line, " \t")] == '#')
			continue;
		eq = strchr(line, '=');
		if (!eq)
			goto bad;
		*eq = 0;
		v = eq + 1;
		if (strcmp(line, "MEMORY") == 0) {
			if (parse_size(v, &vm->mem_size) < 0)
				goto bad;
		} else if (strcmp(line, "STATE_SIZE") == 0) {
			if (parse_size(v, &vm->state_size) < 0)
				goto bad;
		} else if (strcmp(line, "QEMU") == 0) {
			snprintf(vm->qemu, sizeof(vm->qemu), "%s", v);
		} else if (strcmp(line, "ARGS") == 0) {
			for (tok = strtok_r(v, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
				if (vm->n_args >= MAX_ARGS - 32) {
					fclose(f);
					return log_err(vm, "VM %s: %s: more than %u QEMU arguments", vm->name,
						       path, MAX_ARGS - 32);
				}
				vm->args[vm->n_args++] = strdup(tok);
			}
		} else
			goto bad;
	}
	fclose(f);
	if (vm->mem_size == 0 || vm->mem_size % (1u << 20))
		return log_err(vm, "VM %s: %s: MEMORY must be a non-zero multiple of 1M", vm->name, path);
	if (vm->state_size < 2 * STATE_HDR || vm->state_size % 4096)
		return log_err(vm, "VM %s: %s: STATE_SIZE must be a multiple of 4K, at least 8K", vm->name, path);
	return 0;
bad:
	fclose(f);
	return log_err(vm, "VM %s: %s line %u: expected MEMORY=, STATE_SIZE=, QEMU= or ARGS=", vm->name, path,
		       lineno);
}

/* ------------------------------------------------------------ daemon */

static int bus_fail(const struct vm *vm, const char *what, sd_bus_error *e, int r)
{
	vm_log(vm, 3, "VM %s: %s: %s", vm->name, what,
	       sd_bus_error_is_set(e) ? e->message : strerror(-r));
	sd_bus_error_free(e);
	return -1;
}

/* The VM's state in the daemon into buf ("" if it does not know it). */
static int daemon_state(struct vm *vm, char *buf, size_t size)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *n, *s, *p;
	int r;

	buf[0] = 0;
	r = sd_bus_call_method(vm->bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListVMs", &e, &reply, "");
	if (r < 0)
		return bus_fail(vm, "ListVMs", &e, r);
	r = sd_bus_message_enter_container(reply, 'a', "(sso)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sso)", &n, &s, &p)) > 0)
		if (strcmp(n, vm->name) == 0)
			snprintf(buf, size, "%s", s);
	sd_bus_message_unref(reply);
	return r < 0 ? bus_fail(vm, "ListVMs reply", &e, r) : 0;
}

static int daemon_call_name(struct vm *vm, const char *method)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call_method(vm->bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, method, &e, NULL, "s", vm->name);
	return r < 0 ? bus_fail(vm, method, &e, r) : 0;
}

static int daemon_register(struct vm *vm)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	/* memfd:1 holds QEMU's device state, not guest RAM: StateMemfds
	 * keeps it out of the VM's GuestMemoryBytes. */
	r = sd_bus_call_method(vm->bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RegisterVMWithOptions", &e, NULL,
			       "sahahahata{sv}", vm->name, 2, vm->ram_fd, vm->state_fd, 0, 0, 0,
			       1, "StateMemfds", "au", 1, (uint32_t)1);
	return r < 0 ? bus_fail(vm, "RegisterVMWithOptions (guest RAM and state memfds)", &e, r) : 0;
}

/* VerifyVM (every check must pass), then RetrieveVM: memfd:0 and memfd:1. */
static int daemon_retrieve(struct vm *vm)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *what, *detail, *role;
	int ok, r, fd, failed = 0;

	r = sd_bus_call_method(vm->bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "VerifyVM", &e, &reply, "s",
			       vm->name);
	if (r < 0)
		return bus_fail(vm, "VerifyVM", &e, r);
	r = sd_bus_message_enter_container(reply, 'a', "(sbs)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sbs)", &what, &ok, &detail)) > 0)
		if (!ok) {
			vm_log(vm, 3, "VM %s: check %s failed after the live update: %s", vm->name, what, detail);
			failed++;
		}
	reply = sd_bus_message_unref(reply);
	if (r < 0 || failed)
		return log_err(vm, "VM %s: VerifyVM: %d check(s) failed, not resuming it", vm->name, failed);

	r = sd_bus_call_method(vm->bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RetrieveVM", &e, &reply, "s",
			       vm->name);
	if (r < 0)
		return bus_fail(vm, "RetrieveVM", &e, r);
	r = sd_bus_message_enter_container(reply, 'a', "(sh)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0) {
		int *slot = strcmp(role, "memfd:0") == 0 ? &vm->ram_fd :
			    strcmp(role, "memfd:1") == 0 ? &vm->state_fd : NULL;

		if (slot && *slot < 0)
			*slot = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	}
	sd_bus_message_unref(reply);
	if (vm->ram_fd < 0 || vm->state_fd < 0)
		return log_err(vm, "VM %s: RetrieveVM handed back no %s", vm->name,
			       vm->ram_fd < 0 ? "guest RAM (memfd:0)" : "state memfd (memfd:1)");
	return 0;
}

/* Is the host going down for a live update?  The daemon preserved the
 * VM (logind's PrepareForShutdown) or PID 1 has a kexec job queued. */
static bool live_update_pending(struct vm *vm)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *unit, *type, *state, *p1, *p2;
	char st[32];
	uint32_t id;
	bool kexec = false;
	int r;

	if (daemon_state(vm, st, sizeof(st)) == 0 && strcmp(st, "preserved") == 0)
		return true;
	r = sd_bus_call_method(vm->bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			       "org.freedesktop.systemd1.Manager", "ListJobs", &e, &reply, "");
	if (r < 0) {
		bus_fail(vm, "ListJobs", &e, r);
		return false;
	}
	r = sd_bus_message_enter_container(reply, 'a', "(usssoo)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(usssoo)", &id, &unit, &type, &state, &p1, &p2)) > 0)
		if (strcmp(unit, "kexec.target") == 0 || strcmp(unit, "systemd-kexec.service") == 0)
			kexec = true;
	sd_bus_message_unref(reply);
	return kexec;
}

/* ------------------------------------------------------------ console */

static void tail_add(struct vm *vm, const char *s, size_t n)
{
	if (n >= TAIL_MAX) {
		s += n - (TAIL_MAX - 1);
		n = TAIL_MAX - 1;
	}
	if (vm->tail_len + n > TAIL_MAX) {
		size_t drop = vm->tail_len + n - TAIL_MAX;
		const char *nl = memchr(vm->tail + drop, '\n', vm->tail_len - drop);

		/* Keep whole lines only. */
		drop = nl ? (size_t)(nl + 1 - vm->tail) : vm->tail_len;
		memmove(vm->tail, vm->tail + drop, vm->tail_len - drop);
		vm->tail_len -= drop;
	}
	memcpy(vm->tail + vm->tail_len, s, n);
	vm->tail_len += n;
}

static void console_line(struct vm *vm, const char *line, const char *kind)
{
	sd_journal_send("MESSAGE=%s", line, "PRIORITY=6", "VM=%s", vm->name, "IOMMULU_QEMU_CONSOLE=%s", kind,
			"SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
}

static void console_feed(struct vm *vm, const char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = buf[i];

		if (c == '\r')
			continue;
		if (c == '\n' || vm->line_len == LINE_MAX_ - 2) {
			vm->line[vm->line_len] = 0;
			console_line(vm, vm->line, "1");
			vm->line[vm->line_len++] = '\n';
			tail_add(vm, vm->line, vm->line_len);
			vm->line_len = 0;
			if (c == '\n')
				continue;
		}
		vm->line[vm->line_len++] = c;
	}
}

static void console_drain(struct vm *vm)
{
	char buf[4096];
	ssize_t n;

	while ((n = read(vm->con_rd, buf, sizeof(buf))) > 0)
		console_feed(vm, buf, (size_t)n);
}

/* ------------------------------------------------------------ QEMU */

static int start_qemu(struct vm *vm, int incoming_fd)
{
	char *argv[MAX_ARGS + 1], mem[64], obj[512], chr[128], qmp[256], memarg[32], addfd[64];
	int pipefd[2], pidfd;
	size_t n = 0;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return log_err(vm, "VM %s: console pipe: %s", vm->name, strerror(errno));
	snprintf(mem, sizeof(mem), "%" PRIu64, vm->mem_size);
	snprintf(obj, sizeof(obj),
		 "memory-backend-file,id=iommulu-ram,size=%s,mem-path=/proc/self/fd/%d,share=on", mem, vm->ram_fd);
	snprintf(memarg, sizeof(memarg), "%" PRIu64 "M", vm->mem_size >> 20);
	snprintf(chr, sizeof(chr), "file,id=iommulu-con,path=/proc/self/fd/%d", pipefd[1]);
	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", vm->qmp_path);
	argv[n++] = vm->qemu;
	for (size_t i = 0; i < vm->n_args; i++)
		argv[n++] = vm->args[i];
	argv[n++] = (char *)"-object";
	argv[n++] = obj;
	argv[n++] = (char *)"-machine";
	argv[n++] = (char *)"memory-backend=iommulu-ram";
	argv[n++] = (char *)"-m";
	argv[n++] = memarg;
	argv[n++] = (char *)"-chardev";
	argv[n++] = chr;
	argv[n++] = (char *)"-serial";
	argv[n++] = (char *)"chardev:iommulu-con";
	argv[n++] = (char *)"-qmp";
	argv[n++] = qmp;
	if (incoming_fd >= 0) {
		snprintf(addfd, sizeof(addfd), "fd=%d,set=%d,opaque=iommulu-state", incoming_fd, STATE_FDSET);
		argv[n++] = (char *)"-add-fd";
		argv[n++] = addfd;
		argv[n++] = (char *)"-incoming";
		argv[n++] = (char *)"defer";
	}
	argv[n] = NULL;

	unlink(vm->qmp_path);
	pid = fork();
	if (pid < 0)
		return log_err(vm, "VM %s: fork: %s", vm->name, strerror(errno));
	if (pid == 0) {
		sigset_t none;
		int keep[] = { vm->ram_fd, pipefd[1], incoming_fd };

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
			if (keep[i] >= 0 && fcntl(keep[i], F_SETFD, 0) < 0)
				_exit(127);
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, 0);
		execvp(argv[0], argv);
		fprintf(stderr, "iommu-lud-qemu: VM %s: cannot execute %s: %s\n", vm->name, argv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	vm->con_rd = pipefd[0];
	fcntl(vm->con_rd, F_SETFL, O_NONBLOCK);
	vm->qemu_pid = pid;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	vm->qemu_pidfd = pidfd;
	vm_log(vm, 6, "VM %s: QEMU started (pid %d)%s", vm->name, (int)pid, incoming_fd >= 0 ? ", incoming" : "");
	return 0;
}

static bool qemu_exited(struct vm *vm, int timeout_ms)
{
	int status;

	for (int t = 0; t <= timeout_ms; t += 10) {
		pid_t r = waitpid(vm->qemu_pid, &status, WNOHANG);

		if (r == vm->qemu_pid || (r < 0 && errno == ECHILD)) {
			vm->qemu_pid = 0;
			return true;
		}
		console_drain(vm);
		usleep(10000);
	}
	return false;
}

static void qemu_kill(struct vm *vm)
{
	if (vm->qemu_pid > 0 && !qemu_exited(vm, 0)) {
		kill(vm->qemu_pid, SIGKILL);
		qemu_exited(vm, 5000);
	}
}

/* One QMP object (a line); NULL on timeout, error or EOF. */
static json_object *qmp_read(struct vm *vm, int timeout_ms)
{
	int64_t deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)timeout_ms * 1000000;

	for (;;) {
		char *nl = memchr(vm->qmp_buf, '\n', vm->qmp_len);
		struct pollfd p = { .fd = vm->qmp_fd, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (nl) {
			json_object *o;

			*nl = 0;
			o = json_tokener_parse(vm->qmp_buf);
			vm->qmp_len -= (size_t)(nl + 1 - vm->qmp_buf);
			memmove(vm->qmp_buf, nl + 1, vm->qmp_len);
			if (o)
				return o;
			continue;
		}
		left = (deadline - now_ns(CLOCK_MONOTONIC)) / 1000000;
		if (left <= 0 || vm->qmp_len == sizeof(vm->qmp_buf))
			return NULL;
		if (poll(&p, 1, left > 100 ? 100 : (int)left) < 0 && errno != EINTR)
			return NULL;
		console_drain(vm);
		if (!(p.revents & (POLLIN | POLLHUP)))
			continue;
		n = read(vm->qmp_fd, vm->qmp_buf + vm->qmp_len, sizeof(vm->qmp_buf) - vm->qmp_len);
		if (n <= 0)
			return NULL;
		vm->qmp_len += (size_t)n;
	}
}

/* Runs one QMP command (with an fd passed along if pass_fd >= 0);
 * *ret gets the "return" value (caller puts it), if ret is not NULL. */
static int qmp_exec(struct vm *vm, const char *cmd, int pass_fd, json_object **ret, int timeout_ms)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)cmd, .iov_len = strlen(cmd) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (pass_fd >= 0) {
		struct cmsghdr *c;

		m.msg_control = ctl;
		m.msg_controllen = sizeof(ctl);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	if (sendmsg(vm->qmp_fd, &m, MSG_NOSIGNAL) != (ssize_t)iov.iov_len)
		return log_err(vm, "VM %s: QMP %s: send: %s", vm->name, cmd, strerror(errno));
	for (;;) {
		json_object *o = qmp_read(vm, timeout_ms), *v;

		if (!o)
			return log_err(vm, "VM %s: QMP %s: no answer from QEMU within %d ms", vm->name, cmd,
				       timeout_ms);
		if (json_object_object_get_ex(o, "return", &v)) {
			if (ret)
				*ret = json_object_get(v);
			json_object_put(o);
			return 0;
		}
		if (json_object_object_get_ex(o, "error", &v)) {
			json_object *d = NULL;

			json_object_object_get_ex(v, "desc", &d);
			vm_log(vm, 3, "VM %s: QMP %s: %s", vm->name, cmd, d ? json_object_get_string(d) : "error");
			json_object_put(o);
			return -1;
		}
		json_object_put(o); /* an event */
	}
}

static int qmp_connect(struct vm *vm)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	json_object *greet, *q, *ver;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", vm->qmp_path);
	for (int i = 0;; i++) {
		vm->qmp_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (vm->qmp_fd >= 0 && connect(vm->qmp_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		if (vm->qmp_fd >= 0)
			close(vm->qmp_fd);
		vm->qmp_fd = -1;
		if (i >= 6000 || qemu_exited(vm, 0))
			return log_err(vm, "VM %s: QEMU did not open its QMP socket %s (%s)", vm->name,
				       vm->qmp_path, vm->qemu_pid ? "timeout" : "QEMU exited");
		usleep(10000);
	}
	greet = qmp_read(vm, 60000);
	if (!greet || !json_object_object_get_ex(greet, "QMP", &q))
		return json_object_put(greet), log_err(vm, "VM %s: no QMP greeting from QEMU", vm->name);
	if (json_object_object_get_ex(q, "version", &ver) && json_object_object_get_ex(ver, "qemu", &ver)) {
		json_object *a, *b, *c;

		if (json_object_object_get_ex(ver, "major", &a) && json_object_object_get_ex(ver, "minor", &b) &&
		    json_object_object_get_ex(ver, "micro", &c))
			snprintf(vm->qemu_version, sizeof(vm->qemu_version), "%d.%d.%d", json_object_get_int(a),
				 json_object_get_int(b), json_object_get_int(c));
	}
	json_object_put(greet);
	return qmp_exec(vm, "{\"execute\":\"qmp_capabilities\"}", -1, NULL, 10000);
}

/* Polls query-migrate until the migration completed; 0 or -1. */
static int qmp_wait_migration(struct vm *vm, const char *what, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		json_object *r = NULL, *s, *d;
		const char *st;

		if (qmp_exec(vm, "{\"execute\":\"query-migrate\"}", -1, &r, 10000) < 0)
			return -1;
		st = json_object_object_get_ex(r, "status", &s) ? json_object_get_string(s) : "";
		if (strcmp(st, "completed") == 0)
			return json_object_put(r), 0;
		if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) {
			vm_log(vm, 3, "VM %s: %s %s: %s", vm->name, what, st,
			       json_object_object_get_ex(r, "error-desc", &d) ? json_object_get_string(d) : "no reason given");
			json_object_put(r);
			return -1;
		}
		json_object_put(r);
		usleep(20000);
	}
	return log_err(vm, "VM %s: %s did not complete within %d ms", vm->name, what, timeout_ms);
}

static const char set_caps[] = "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":"
			       "[{\"capability\":\"x-ignore-shared\",\"state\":true}]}}";

/* QEMU's migration blockers (query-migrate's blocked-reasons), "; "
 * separated into buf, "" if none; 0, or -1 if QEMU did not answer. */
static int qemu_blockers(struct vm *vm, char *buf, size_t size)
{
	json_object *r = NULL, *a;
	size_t len = 0;

	buf[0] = 0;
	if (qmp_exec(vm, "{\"execute\":\"query-migrate\"}", -1, &r, 10000) < 0)
		return -1;
	if (json_object_object_get_ex(r, "blocked-reasons", &a) && json_object_is_type(a, json_type_array))
		for (size_t i = 0; i < json_object_array_length(a) && len + 1 < size; i++) {
			int n = snprintf(buf + len, size - len, "%s%s", i ? "; " : "",
					 json_object_get_string(json_object_array_get_idx(a, i)));

			len = n < 0 ? len : len + (size_t)n >= size ? size - 1 : len + (size_t)n;
		}
	json_object_put(r);
	return 0;
}

/* An upper bound of the device state QEMU will write into the state memfd:
 * every RAM block but guest RAM (ROMs, firmware, video RAM: not shared, so
 * x-ignore-shared copies them) in full, plus 1 MiB for the devices and the
 * stream's page headers.  From x-query-ramblock, a table whose columns are
 * the block's name, its page size ("4 KiB"), offset, used length, ...;
 * 0 if QEMU does not answer it. */
static uint64_t qemu_state_need(struct vm *vm)
{
	json_object *r = NULL, *t;
	const char *text;
	uint64_t need = 1u << 20;

	if (qmp_exec(vm, "{\"execute\":\"x-query-ramblock\"}", -1, &r, 10000) < 0)
		return 0;
	text = json_object_object_get_ex(r, "human-readable-text", &t) ? json_object_get_string(t) : "";
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		char name[256];
		unsigned long long used;

		if (sscanf(l, "%255s %*s %*s %*s %llx", name, &used) == 2 && strcmp(name, "iommulu-ram") != 0)
			need += used;
	}
	json_object_put(r);
	return need > 1u << 20 ? need : 0;
}

/* The unit's status: why the VM cannot be saved in the kexec, if it
 * cannot: QEMU's migration blockers, or a state memfd too small for the
 * device state.  `iommu-luctl check` reads this StatusText: "cannot be
 * saved for a live update" means the VM would be lost.  Logged (VM=,
 * MIGRATION_BLOCKED=, STATE_NEED=) when it changes.  ready: the guest
 * just started or resumed: sizes the device state and sends READY=1. */
static void update_status(struct vm *vm, bool ready)
{
	char b[sizeof(vm->blocked) - 256], why[sizeof(vm->blocked)];
	uint64_t room = vm->state_size - STATE_HDR;

	vm->blockers_checked = now_ns(CLOCK_MONOTONIC);
	if (ready)
		vm->state_need = qemu_state_need(vm);
	if (qemu_blockers(vm, b, sizeof(b)) < 0)
		return;
	why[0] = 0;
	if (b[0])
		snprintf(why, sizeof(why), "QEMU blocks migration: %s", b);
	if (vm->state_need > room) {
		size_t n = strlen(why);

		snprintf(why + n, sizeof(why) - n, "%sSTATE_SIZE=%" PRIu64 " leaves %" PRIu64 " bytes for QEMU's "
			 "device state, which may take up to %" PRIu64 " (its RAM blocks besides guest RAM: ROMs, "
			 "video RAM): raise STATE_SIZE", n ? "; " : "", vm->state_size, room, vm->state_need);
	}
	if (ready || strcmp(why, vm->blocked) != 0) {
		if (why[0])
			sd_journal_send("MESSAGE=VM %s cannot be saved for a live update: %s", vm->name, why,
					"PRIORITY=4", "VM=%s", vm->name, "MIGRATION_BLOCKED=%s", b,
					"STATE_NEED=%" PRIu64, vm->state_need, "STATE_ROOM=%" PRIu64, room,
					"SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
		else if (vm->blocked[0])
			vm_log(vm, 5, "VM %s can be saved for a live update again", vm->name);
	}
	snprintf(vm->blocked, sizeof(vm->blocked), "%s", why);
	if (why[0])
		sd_notifyf(0, "%sSTATUS=VM %s running (%s), cannot be saved for a live update: %s",
			   ready ? "READY=1\n" : "", vm->name, vm->how, why);
	else
		sd_notifyf(0, "%sSTATUS=VM %s running (%s)", ready ? "READY=1\n" : "", vm->name, vm->how);
}

/* ------------------------------------------------------------ save */

static int clear_state_header(struct vm *vm)
{
	static const char zero[STATE_HDR];

	if (pwrite(vm->state_fd, zero, sizeof(zero), 0) != (ssize_t)sizeof(zero))
		return log_err(vm, "VM %s: clearing the state memfd's header: %s", vm->name, strerror(errno));
	return 0;
}

/* Copies QEMU's migration stream from the pipe into the state memfd after
 * its header, until QEMU closes the pipe; the stream's length or -1. */
static int64_t copy_stream(struct vm *vm, int rfd)
{
	int64_t deadline = now_ns(CLOCK_MONOTONIC) + 120 * INT64_C(1000000000);
	uint64_t off = STATE_HDR;
	char buf[65536];

	for (;;) {
		struct pollfd p = { .fd = rfd, .events = POLLIN };
		ssize_t n;

		if (now_ns(CLOCK_MONOTONIC) > deadline)
			return log_err(vm, "VM %s: QEMU's device state stream did not end within 120 s", vm->name);
		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			return log_err(vm, "VM %s: poll: %s", vm->name, strerror(errno));
		console_drain(vm);
		if (!p.revents)
			continue;
		n = read(rfd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_err(vm, "VM %s: reading QEMU's device state: %s", vm->name, strerror(errno));
		if (n == 0)
			return (int64_t)(off - STATE_HDR);
		if (off + (uint64_t)n > vm->state_size)
			return log_err(vm, "VM %s: QEMU's device state exceeds the state memfd (STATE_SIZE=%" PRIu64
				       " bytes, 4 KiB of which are the header)", vm->name, vm->state_size);
		if (pwrite(vm->state_fd, buf, (size_t)n, (off_t)off) != n)
			return log_err(vm, "VM %s: writing the state memfd: %s", vm->name, strerror(errno));
		off += (uint64_t)n;
	}
}

static int save(struct vm *vm)
{
	struct state_hdr *h;
	int64_t stop_ns, saved_ns, len = -1;
	int p[2], r;

	/* QEMU 11 refuses fd: migration into a regular file, and file:
	 * truncates it, which a sealed (and preserved) memfd refuses: the
	 * stream goes through a pipe and this process writes it. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return log_err(vm, "VM %s: pipe: %s", vm->name, strerror(errno));
	stop_ns = now_ns(CLOCK_REALTIME);
	r = qmp_exec(vm, "{\"execute\":\"stop\"}", -1, NULL, 10000);
	if (r == 0)
		r = qmp_exec(vm, set_caps, -1, NULL, 10000);
	if (r == 0)
		r = qmp_exec(vm, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"iommulu-state\"}}", p[1],
			     NULL, 10000);
	close(p[1]);
	if (r == 0)
		r = qmp_exec(vm, "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"fd:iommulu-state\"}}", -1, NULL,
			     10000);
	if (r == 0) {
		len = copy_stream(vm, p[0]);
		r = len < 0 ? -1 : qmp_wait_migration(vm, "saving the device state", 10000);
	}
	close(p[0]);
	if (r < 0) {
		qemu_kill(vm);
		return log_err(vm, "VM %s: device state NOT saved; the VM cannot resume after the update",
			       vm->name);
	}
	saved_ns = now_ns(CLOCK_REALTIME);
	qmp_exec(vm, "{\"execute\":\"quit\"}", -1, NULL, 10000);
	if (!qemu_exited(vm, 10000))
		qemu_kill(vm);
	console_drain(vm);

	h = calloc(1, STATE_HDR);
	if (!h)
		return log_err(vm, "VM %s: out of memory", vm->name);
	memcpy(h->magic, STATE_MAGIC, sizeof(h->magic));
	h->version = STATE_VERSION;
	h->hdr_size = STATE_HDR;
	h->stream_offset = STATE_HDR;
	h->stream_len = (uint64_t)len;
	h->mem_size = vm->mem_size;
	h->stop_ns = stop_ns;
	h->saved_ns = saved_ns;
	snprintf(h->vm, sizeof(h->vm), "%s", vm->name);
	snprintf(h->qemu_version, sizeof(h->qemu_version), "%s", vm->qemu_version);
	/* The last whole lines, then the line the guest was printing. */
	tail_add(vm, vm->line, vm->line_len);
	memcpy(h->tail, vm->tail, vm->tail_len);
	h->tail_len = (uint32_t)vm->tail_len;
	r = pwrite(vm->state_fd, h, STATE_HDR, 0) == STATE_HDR ? 0 : -errno;
	free(h);
	if (r < 0)
		return log_err(vm, "VM %s: writing the state header: %s", vm->name, strerror(-r));
	sd_journal_send("MESSAGE=VM %s saved for the live update: QEMU stopped, %" PRIu64
			" bytes of device state in the preserved state memfd, guest RAM (%" PRIu64
			" bytes) left in its memfd, in %" PRId64 " ms",
			vm->name, (uint64_t)len, vm->mem_size, (saved_ns - stop_ns) / 1000000,
			"PRIORITY=5", "VM=%s", vm->name, "SAVE_MS=%" PRId64, (saved_ns - stop_ns) / 1000000,
			"STATE_BYTES=%" PRIu64, (uint64_t)len, "SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
	return 0;
}

/* ------------------------------------------------------------ start */

static int start_fresh(struct vm *vm)
{
	char n[80];
	int r;

	snprintf(n, sizeof(n), "qemu-ram-%s", vm->name);
	r = iommulu_memfd_create(n, vm->mem_size, &vm->ram_fd);
	if (r < 0)
		return log_err(vm, "VM %s: guest RAM memfd of %" PRIu64 " bytes: %s", vm->name, vm->mem_size,
			       strerror(-r));
	snprintf(n, sizeof(n), "qemu-state-%s", vm->name);
	r = iommulu_memfd_create(n, vm->state_size, &vm->state_fd);
	if (r < 0)
		return log_err(vm, "VM %s: state memfd of %" PRIu64 " bytes: %s", vm->name, vm->state_size,
			       strerror(-r));
	if (daemon_register(vm) < 0 || start_qemu(vm, -1) < 0 || qmp_connect(vm) < 0)
		return -1;
	vm_log(vm, 5, "VM %s booted afresh under QEMU %s: %" PRIu64 " MiB of guest RAM in a sealed memfd, registered with iommu-lud",
	       vm->name, vm->qemu_version, vm->mem_size >> 20);
	vm->how = "fresh boot";
	update_status(vm, true);
	return 0;
}

static void replay_tail(struct vm *vm, const struct state_hdr *h)
{
	size_t len = h->tail_len < TAIL_MAX ? h->tail_len : TAIL_MAX, start = 0;

	for (size_t i = 0; i < len; i++)
		if (h->tail[i] == '\n') {
			char line[LINE_MAX_];

			snprintf(line, sizeof(line), "%.*s", (int)(i - start), h->tail + start);
			console_line(vm, line, "replay");
			tail_add(vm, h->tail + start, i + 1 - start);
			start = i + 1;
		}
	/* The line the guest was printing when QEMU stopped goes on. */
	for (; start < len && vm->line_len < LINE_MAX_ - 2; start++)
		vm->line[vm->line_len++] = h->tail[start];
}

static int start_restore(struct vm *vm)
{
	struct state_hdr *h;
	struct stat st;
	char path[64], cmd[128];
	int64_t t0, t_run, t_loaded;
	int rfd, r;

	t0 = now_ns(CLOCK_REALTIME);
	if (daemon_retrieve(vm) < 0)
		return -1;
	if (fstat(vm->ram_fd, &st) < 0 || (uint64_t)st.st_size != vm->mem_size)
		return log_err(vm, "VM %s: the retrieved guest RAM memfd has %jd bytes, the config says %" PRIu64,
			       vm->name, (intmax_t)st.st_size, vm->mem_size);
	if (fstat(vm->state_fd, &st) < 0)
		return log_err(vm, "VM %s: state memfd: %s", vm->name, strerror(errno));
	vm->state_size = (uint64_t)st.st_size;
	h = calloc(1, STATE_HDR);
	if (!h || pread(vm->state_fd, h, STATE_HDR, 0) != STATE_HDR) {
		free(h);
		return log_err(vm, "VM %s: reading the state memfd's header failed", vm->name);
	}
	if (memcmp(h->magic, STATE_MAGIC, sizeof(h->magic)) != 0 || h->version != STATE_VERSION ||
	    h->stream_offset != STATE_HDR || h->stream_len == 0 ||
	    h->stream_len > vm->state_size - STATE_HDR || h->mem_size != vm->mem_size ||
	    strncmp(h->vm, vm->name, sizeof(h->vm)) != 0) {
		free(h);
		return log_err(vm, "VM %s: the preserved state memfd holds no saved device state of this VM "
			       "(QEMU was not saved before the kexec); not booting over its preserved guest RAM",
			       vm->name);
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", vm->state_fd);
	rfd = open(path, O_RDONLY | O_CLOEXEC);
	if (rfd < 0) {
		free(h);
		return log_err(vm, "VM %s: opening the state memfd for reading: %s", vm->name, strerror(errno));
	}
	r = start_qemu(vm, rfd);
	if (r == 0)
		r = qmp_connect(vm);
	if (r == 0)
		r = qmp_exec(vm, set_caps, -1, NULL, 10000);
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"file:/dev/fdset/%d,offset=%u\"}}",
		 STATE_FDSET, STATE_HDR);
	if (r == 0)
		r = qmp_exec(vm, cmd, -1, NULL, 10000);
	if (r == 0)
		r = qmp_wait_migration(vm, "loading the device state", 120000);
	close(rfd);
	if (r < 0) {
		vm_log(vm, 3, "VM %s: QEMU %s could not load the device state saved by QEMU %s", vm->name,
		       vm->qemu_version, h->qemu_version);
		free(h);
		return -1;
	}
	t_loaded = now_ns(CLOCK_REALTIME);
	replay_tail(vm, h);
	r = qmp_exec(vm, "{\"execute\":\"cont\"}", -1, NULL, 10000);
	t_run = now_ns(CLOCK_REALTIME);
	if (r < 0) {
		free(h);
		return log_err(vm, "VM %s: the guest did not resume", vm->name);
	}
	sd_journal_send("MESSAGE=VM %s running again after the live update: blackout %" PRId64
			" ms from QEMU stop to guest running (save %" PRId64 " ms, restore %" PRId64
			" ms: retrieve, QEMU start and %" PRIu64 " bytes of device state loaded after %" PRId64 " ms)",
			vm->name, (t_run - h->stop_ns) / 1000000, (h->saved_ns - h->stop_ns) / 1000000,
			(t_run - t0) / 1000000, h->stream_len, (t_loaded - t0) / 1000000,
			"PRIORITY=5", "VM=%s", vm->name, "BLACKOUT_MS=%" PRId64, (t_run - h->stop_ns) / 1000000,
			"SAVE_MS=%" PRId64, (h->saved_ns - h->stop_ns) / 1000000,
			"RESTORE_MS=%" PRId64, (t_run - t0) / 1000000, "QEMU_STOP_REALTIME_NS=%" PRId64, h->stop_ns,
			"QEMU_RUN_REALTIME_NS=%" PRId64, t_run, "SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
	free(h);
	vm->how = "resumed after a live update";
	update_status(vm, true);

	/* Done with this update: the next one gets a fresh session. */
	if (daemon_call_name(vm, "FinishVM") < 0 || clear_state_header(vm) < 0 || daemon_register(vm) < 0)
		return log_err(vm, "VM %s: runs, but is NOT registered for the next live update", vm->name);
	vm_log(vm, 6, "VM %s: session finished, registered again for the next live update", vm->name);
	return 0;
}

/* ------------------------------------------------------------ main */

static int run(struct vm *vm)
{
	const char *rt = getenv("RUNTIME_DIRECTORY");
	char st[32], dir[sizeof(vm->qmp_path) - sizeof("/qmp.sock")];
	sigset_t ss;
	int r;

	if (rt && *rt && !strchr(rt, ':')) {
		if (strlen(rt) >= sizeof(dir))
			return log_err(vm, "VM %s: RUNTIME_DIRECTORY %s is too long for a socket path", vm->name, rt);
		snprintf(dir, sizeof(dir), "%s", rt);
	} else {
		snprintf(dir, sizeof(dir), "/run/iommu-lud-qemu/%s", vm->name);
		mkdir("/run/iommu-lud-qemu", 0755);
		mkdir(dir, 0700);
	}
	snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%s/qmp.sock", dir);
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	vm->sig_fd = signalfd(-1, &ss, SFD_CLOEXEC);
	r = sd_bus_open_system(&vm->bus);
	if (r < 0)
		return log_err(vm, "VM %s: system bus: %s", vm->name, strerror(-r));
	if (daemon_state(vm, st, sizeof(st)) < 0)
		return -1;
	if (strcmp(st, "restored") == 0 || strcmp(st, "verified") == 0)
		r = start_restore(vm);
	else
		r = start_fresh(vm);
	if (r < 0) {
		qemu_kill(vm);
		return -1;
	}

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = vm->sig_fd, .events = POLLIN },
			{ .fd = vm->con_rd, .events = POLLIN },
			{ .fd = vm->qemu_pidfd, .events = POLLIN },
		};

		if (poll(p, 3, 1000) < 0 && errno != EINTR)
			return log_err(vm, "VM %s: poll: %s", vm->name, strerror(errno));
		if (p[1].revents)
			console_drain(vm);
		if (vm->qmp_len < sizeof(vm->qmp_buf)) { /* drop QMP events */
			ssize_t n = recv(vm->qmp_fd, vm->qmp_buf, sizeof(vm->qmp_buf), MSG_DONTWAIT);

			if (n > 0)
				vm->qmp_len = 0;
		}
		if (p[2].revents || (vm->qemu_pidfd < 0 && qemu_exited(vm, 0))) {
			console_drain(vm);
			qemu_exited(vm, 1000);
			return log_err(vm, "VM %s: QEMU exited on its own; the VM is gone", vm->name);
		}
		/* A device added or removed on QMP may change them. */
		if (!p[0].revents && now_ns(CLOCK_MONOTONIC) - vm->blockers_checked > 10 * INT64_C(1000000000))
			update_status(vm, false);
		if (p[0].revents) {
			struct signalfd_siginfo si;

			if (read(vm->sig_fd, &si, sizeof(si)) != sizeof(si))
				continue;
			console_drain(vm);
			if (live_update_pending(vm)) {
				sd_notifyf(0, "STOPPING=1\nSTATUS=VM %s: saving for the live update", vm->name);
				return save(vm);
			}
			vm_log(vm, 5, "VM %s: stopping, no live update pending: QEMU quits and the guest ends", vm->name);
			if (qmp_exec(vm, "{\"execute\":\"quit\"}", -1, NULL, 10000) < 0 || !qemu_exited(vm, 10000))
				qemu_kill(vm);
			console_drain(vm);
			return 0;
		}
	}
}

/* ------------------------------------------------------------ resume */

/* After a live update: start iommu-lud-qemu@NAME.service for each VM that
 * iommu-lud restored and that has a config of ours; its `run` resumes it.
 * Other restored VMs belong to other VMMs and are left alone.  Returns 0,
 * or -1 if the daemon could not be asked or a unit could not be started. */
static int resume_all(void)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	sd_bus *bus = NULL;
	const char *n, *s, *p;
	unsigned started = 0, failed = 0, others = 0;
	int r;

	r = sd_bus_open_system(&bus);
	if (r < 0) {
		sd_journal_print(3, "cannot connect to the system bus: %s", strerror(-r));
		return -1;
	}
	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListVMs", &e, &reply, "");
	if (r < 0) {
		sd_journal_print(3, "cannot list iommu-lud's VMs (ListVMs): %s",
				 sd_bus_error_is_set(&e) ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		sd_bus_unref(bus);
		return -1;
	}
	r = sd_bus_message_enter_container(reply, 'a', "(sso)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sso)", &n, &s, &p)) > 0) {
		char conf[512], unit[128];
		int k;

		if (strcmp(s, "restored") != 0 && strcmp(s, "verified") != 0)
			continue;
		snprintf(conf, sizeof(conf), QEMU_CONF_DIR "/%s.conf", n);
		if (!iommulu_vm_name_is_valid(n) || access(conf, F_OK) < 0) {
			sd_journal_send("MESSAGE=VM %s is %s after the live update but has no %s: "
					"not a VM of iommu-lud-qemu, left to its own VMM", n, s, conf,
					"PRIORITY=6", "VM=%s", n, "SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
			others++;
			continue;
		}
		snprintf(unit, sizeof(unit), "iommu-lud-qemu@%s.service", n);
		/* Queued, not waited for: a resume takes as long as QEMU's
		 * start and the device state's load. */
		k = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
				       "org.freedesktop.systemd1.Manager", "StartUnit", &e, NULL, "ss", unit, "replace");
		if (k < 0) {
			sd_journal_send("MESSAGE=VM %s: starting %s to resume it after the live update failed: %s", n,
					unit, sd_bus_error_is_set(&e) ? e.message : strerror(-k), "PRIORITY=3", "VM=%s", n,
					"UNIT_TO_RESUME=%s", unit, "SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
			sd_bus_error_free(&e);
			failed++;
			continue;
		}
		sd_journal_send("MESSAGE=VM %s was kept across the live update (%s in iommu-lud): starting %s to resume it",
				n, s, unit, "PRIORITY=5", "VM=%s", n, "UNIT_TO_RESUME=%s", unit,
				"SYSLOG_IDENTIFIER=iommu-lud-qemu", NULL);
		started++;
	}
	if (r < 0)
		sd_journal_print(3, "reading iommu-lud's ListVMs reply: %s", strerror(-r));
	sd_bus_message_unref(reply);
	sd_bus_unref(bus);
	if (started || failed || others)
		sd_journal_print(6, "after the live update: %u QEMU VM(s) being resumed, %u failed to start, "
				 "%u restored VM(s) of other VMMs", started, failed, others);
	return r < 0 || failed ? -1 : 0;
}

int main(int argc, char *argv[])
{
	struct vm vm = { .ram_fd = -1, .state_fd = -1, .qemu_pidfd = -1, .qmp_fd = -1, .con_rd = -1,
			 .sig_fd = -1 };

	if (argc == 2 && strcmp(argv[1], "resume") == 0)
		return resume_all() < 0 ? 1 : 0;
	if (argc != 3 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "usage: %s run NAME\n       %s resume\n", argv[0], argv[0]);
		return 2;
	}
	vm.name = argv[2];
	if (!iommulu_vm_name_is_valid(vm.name)) {
		fprintf(stderr, "iommu-lud-qemu: invalid VM name '%s'\n", vm.name);
		return 2;
	}
	if (load_config(&vm) < 0)
		return 1;
	return run(&vm) < 0 ? 1 : 0;
}
