/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Integration tests: the real iommu-lud binary on a private system bus,
 * driven over D-Bus with sd-bus.  The host has no /dev/liveupdate (forced
 * with $IOMMULU_LIVEUPDATE_DEV), so preservation must fail cleanly with
 * KernelUnsupported; everything else runs for real.  Output is TAP.
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include <iommulu/iommulu.h>

#include "config.h"
#include "lud-env.h"

#define DEST "org.iommulu.LiveUpdate1"
#define MPATH "/org/iommulu/LiveUpdate1"
#define MIFACE "org.iommulu.LiveUpdate1.Manager"
#define VIFACE "org.iommulu.LiveUpdate1.VM"
#define ERR(x) "org.iommulu.LiveUpdate1.Error." x
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static unsigned n_test, n_fail;

static bool check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool check(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s %u - ", ok ? "ok" : "not ok", ++n_test);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!ok)
		n_fail++;
	return ok;
}

/* RegisterVM with explicit fd arrays.  Returns 0 or -errno, error filled. */
static int register_vm(sd_bus *bus, const char *name, const int *memfds, size_t n_memfds,
		       const int *iommufds, size_t n_iommufds, const int *devices, size_t n_devices,
		       sd_bus_error *error, char **ret_path)
{
	sd_bus_message *call = NULL, *reply = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &call, DEST, MPATH, MIFACE, "RegisterVM");
	if (r >= 0)
		r = sd_bus_message_append(call, "s", name);
#define APPEND_FDS(a, n)                                                     \
	do {                                                                 \
		if (r >= 0)                                                  \
			r = sd_bus_message_open_container(call, 'a', "h");  \
		for (size_t _i = 0; r >= 0 && _i < (n); _i++)                \
			r = sd_bus_message_append(call, "h", (a)[_i]);       \
		if (r >= 0)                                                  \
			r = sd_bus_message_close_container(call);           \
	} while (0)
	APPEND_FDS(memfds, n_memfds);
	APPEND_FDS(iommufds, n_iommufds);
	APPEND_FDS(devices, n_devices);
	if (r >= 0)
		r = sd_bus_message_append(call, "at", 0);
	if (r >= 0)
		r = sd_bus_call(bus, call, 0, error, &reply);
	if (r >= 0 && ret_path) {
		const char *p;

		r = sd_bus_message_read(reply, "o", &p);
		if (r >= 0)
			*ret_path = strdup(p);
	}
	sd_bus_message_unref(call);
	sd_bus_message_unref(reply);
	return r;
}

static int call_s(sd_bus *bus, const char *method, const char *name, sd_bus_error *error)
{
	return sd_bus_call_method(bus, DEST, MPATH, MIFACE, method, error, NULL, "s", name);
}

static bool error_is(const sd_bus_error *e, const char *name)
{
	return e->name && strcmp(e->name, name) == 0;
}

static int vm_state(sd_bus *bus, const char *path, char **ret)
{
	return sd_bus_get_property_string(bus, DEST, path, VIFACE, "State", NULL, ret);
}

static int count_vms(sd_bus *bus)
{
	sd_bus_message *reply = NULL;
	const char *n, *s, *o;
	int r, count = 0;

	r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "ListVMs", NULL, &reply, NULL);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "(sso)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sso)", &n, &s, &o)) > 0)
		count++;
	sd_bus_message_unref(reply);
	return r < 0 ? r : count;
}

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* The daemon frees a call's message (and the fds in it) only after its
 * reply went out, so give it a moment to settle. */
static int settled_fds(pid_t pid, int expect)
{
	int n = count_fds(pid);

	for (int i = 0; i < 100 && n != expect; i++) {
		msleep(10);
		n = count_fds(pid);
	}
	return n;
}

/* The names in a PropertiesChanged signal (after its interface), each appended
 * to names as " Name ". */
static void signal_names(sd_bus_message *m, char *names, size_t size)
{
	size_t n = strlen(names);
	const char *prop;

	if (sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
		while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
			if (sd_bus_message_read(m, "s", &prop) > 0 && n + strlen(prop) + 3 < size)
				n += (size_t)snprintf(names + n, size - n, " %s ", prop);
			sd_bus_message_skip(m, "v");
			sd_bus_message_exit_container(m);
		}
		sd_bus_message_exit_container(m);
	}
	if (sd_bus_message_enter_container(m, 'a', "s") > 0) {
		while (sd_bus_message_read(m, "s", &prop) > 0)
			if (n + strlen(prop) + 3 < size)
				n += (size_t)snprintf(names + n, size - n, " %s ", prop);
		sd_bus_message_exit_container(m);
	}
}

/* Collects the property names of the manager's PropertiesChanged signals
 * seen within ms milliseconds into names (space separated), stopping
 * early once want appears. */
static void collect_manager_changes(sd_bus *bus, unsigned ms, const char *want, char *names, size_t size)
{
	names[0] = 0;
	for (unsigned waited = 0; waited < ms && !(want && strstr(names, want));) {
		sd_bus_message *m = NULL;
		const char *iface;
		int r = sd_bus_process(bus, &m);

		if (r > 0 && m && sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged") &&
		    strcmp(sd_bus_message_get_path(m) ?: "", MPATH) == 0 &&
		    sd_bus_message_read(m, "s", &iface) > 0 && strcmp(iface, MIFACE) == 0)
			signal_names(m, names, size);
		sd_bus_message_unref(m);
		if (r == 0) {
			sd_bus_wait(bus, 10000);
			waited += 10;
		}
	}
}

static void test_introspection(sd_bus *bus)
{
	sd_bus_message *reply = NULL;
	const char *xml = "";
	char *version = NULL;
	int lu = -1, r;

	r = sd_bus_call_method(bus, DEST, MPATH, "org.freedesktop.DBus.Introspectable", "Introspect",
			       NULL, &reply, NULL);
	if (r >= 0)
		r = sd_bus_message_read(reply, "s", &xml);
	check(r >= 0, "introspect the manager");
	{
		static const char *const want[] = {
			"RegisterVM", "RegisterVMPart", "UnregisterVM", "PreserveVM", "UnpreserveVM", "PreserveAll",
			"RetrieveVMPart", "type=\"b\" name=\"last\"", "type=\"u\" name=\"total\"",
			"ListVMs", "VerifyVM", "RetrieveVM", "FinishVM", "type=\"ah\" name=\"memfds\"",
			"type=\"at\" name=\"hwpt_ids\"", "type=\"o\" name=\"vm\"", "type=\"a(ss)\"", "type=\"a(sso)\"",
			"type=\"a(sbs)\"", "type=\"a(sh)\"", "\"Version\"", "\"LiveUpdated\"",
			"StageKernel", "type=\"h\" name=\"kernel\"", "type=\"ah\" name=\"initrd\"",
			"type=\"ah\" name=\"config\"", "type=\"s\" name=\"cmdline\"", "type=\"s\" name=\"adopts\"",
			"UnstageKernel", "\"StagedKernel\"", "\"StagedKernelAdopts\"", "\"StagedKernelProblem\"",
		};
		bool all = true;

		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
			if (!strstr(xml, want[i])) {
				printf("# missing in introspection: %s\n", want[i]);
				all = false;
			}
		check(all, "introspection shows the whole contract");
	}
	sd_bus_message_unref(reply);

	r = sd_bus_get_property_string(bus, DEST, MPATH, MIFACE, "Version", NULL, &version);
	check(r >= 0 && version && strcmp(version, PACKAGE_VERSION) == 0, "Version is %s", PACKAGE_VERSION);
	free(version);
	r = sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, "LiveUpdated", NULL, 'b', &lu);
	check(r >= 0 && lu == 0, "LiveUpdated is false on a fresh boot");
	check(count_vms(bus) == 0, "ListVMs is empty at start");
}

static void test_register(sd_bus *bus, pid_t daemon_pid)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char *path = NULL, *state = NULL, *session = NULL;
	uint64_t bytes = 0;
	int memfd[2], r, fds_before;

	r = iommulu_memfd_create("ram0", 1 << 20, &memfd[0]);
	r = r < 0 ? r : iommulu_memfd_create("ram1", 2 << 20, &memfd[1]);
	if (!check(r >= 0, "create sealed memfds"))
		return;

	fds_before = count_fds(daemon_pid);
	r = register_vm(bus, "vm-1.a_b", memfd, 2, NULL, 0, NULL, 0, &e, &path);
	check(r >= 0, "RegisterVM of a memfd-only VM succeeds (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	check(path && strcmp(path, "/org/iommulu/LiveUpdate1/vm/vm_2d1_2ea_5fb") == 0,
	      "object path is escaped: %s", path ?: "(null)");
	r = settled_fds(daemon_pid, fds_before + 3);
	check(r == fds_before + 2 + 1, "daemon keeps dups of 2 memfds and a pidfd (%d -> %d)", fds_before, r);

	r = vm_state(bus, path, &state);
	check(r >= 0 && state && strcmp(state, "registered") == 0, "State is registered");
	free(state);
	r = sd_bus_get_property_trivial(bus, DEST, path, VIFACE, "GuestMemoryBytes", NULL, 't', &bytes);
	check(r >= 0 && bytes == 3 << 20, "GuestMemoryBytes = 3 MiB (%" PRIu64 ")", bytes);
	r = sd_bus_get_property_string(bus, DEST, path, VIFACE, "Session", NULL, &session);
	check(r >= 0 && session && !session[0], "Session is empty before preservation");
	free(session);
	check(count_vms(bus) == 1, "ListVMs has the VM");

	r = register_vm(bus, "vm-1.a_b", memfd, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("AlreadyExists")), "double registration: AlreadyExists (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);
	{
		int swapped[2] = { memfd[1], memfd[0] };
		char *again = NULL;

		r = register_vm(bus, "vm-1.a_b", swapped, 2, NULL, 0, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, ERR("AlreadyExists")),
		      "registration with the same memfds in another order: AlreadyExists (%s)", e.name ?: "none");
		sd_bus_error_free(&e);
		r = register_vm(bus, "vm-1.a_b", memfd, 2, NULL, 0, NULL, 0, &e, &again);
		check(r >= 0 && again && path && strcmp(again, path) == 0 && count_vms(bus) == 1 &&
			      settled_fds(daemon_pid, fds_before + 3) == fds_before + 3,
		      "an identical retry of RegisterVM by its VMM succeeds, same VM, no new fds (%s)",
		      e.message ?: again ?: "");
		sd_bus_error_free(&e);
		free(again);
	}

	/* Closing our copies must not matter: the daemon holds its own. */
	close(memfd[0]);
	close(memfd[1]);

	/* Wrong states for a registered VM. */
	{
		static const char *const methods[] = { "VerifyVM", "RetrieveVM", "FinishVM" };

		for (size_t i = 0; i < 3; i++) {
			r = call_s(bus, methods[i], "vm-1.a_b", &e);
			check(r < 0 && error_is(&e, ERR("InvalidState")), "%s of a registered VM: InvalidState (%s)",
			      methods[i], e.name ?: "none");
			sd_bus_error_free(&e);
		}
	}
	r = call_s(bus, "UnpreserveVM", "vm-1.a_b", &e);
	check(r >= 0, "UnpreserveVM of a registered VM: nothing to do, succeeds (%s)", e.name ?: "ok");
	sd_bus_error_free(&e);

	/* No /dev/liveupdate on this host. */
	r = call_s(bus, "PreserveVM", "vm-1.a_b", &e);
	check(r < 0 && error_is(&e, ERR("KernelUnsupported")), "PreserveVM without LUO: KernelUnsupported (%s: %s)",
	      e.name ?: "none", e.message ?: "");
	sd_bus_error_free(&e);
	r = vm_state(bus, path, &state);
	check(r >= 0 && state && strcmp(state, "registered") == 0, "VM stays registered after that");
	free(state);

	{
		sd_bus_message *reply = NULL;
		const char *n = NULL, *res = NULL;

		r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", &e, &reply, NULL);
		if (r >= 0)
			r = sd_bus_message_read(reply, "a(ss)", 1, &n, &res);
		check(r >= 0 && n && strcmp(n, "vm-1.a_b") == 0 && res &&
			      strstr(res, ERR("KernelUnsupported")),
		      "PreserveAll reports the VM with KernelUnsupported (%s)", res ?: "");
		sd_bus_message_unref(reply);
		sd_bus_error_free(&e);
	}

	r = call_s(bus, "UnregisterVM", "vm-1.a_b", &e);
	check(r >= 0, "UnregisterVM succeeds");
	sd_bus_error_free(&e);
	check(count_vms(bus) == 0, "ListVMs is empty again");
	r = settled_fds(daemon_pid, fds_before);
	check(r == fds_before, "daemon closed the VM's fds (%d vs %d)", r, fds_before);
	free(path);
}

static void test_refusals(sd_bus *bus, pid_t daemon_pid)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int good, unsealed, pipefd[2], devnull, r, before;
	static const char *const bad_names[] = {
		"", "has space", "slash/x", "0123456789012345678901234567890123456789012345678",
		"ümlaut", "a:b", ".", "..", "-rf", "-",
	};

	r = iommulu_memfd_create("good", 1 << 16, &good);
	check(r >= 0, "create a sealed memfd");
	unsealed = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	check(unsealed >= 0 && ftruncate(unsealed, 1 << 16) == 0, "create an unsealed memfd");
	check(pipe2(pipefd, O_CLOEXEC) == 0, "create a pipe");
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);

	before = count_fds(daemon_pid);

	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		r = register_vm(bus, bad_names[i], &good, 1, NULL, 0, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, ERR("InvalidName")), "bad name '%s': InvalidName (%s)",
		      bad_names[i], e.name ?: "none");
		sd_bus_error_free(&e);
	}

	{
		char path[64];
		int opath;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", good);
		opath = open(path, O_PATH | O_CLOEXEC);
		r = register_vm(bus, "opath", &opath, 1, NULL, 0, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "memfd #0") &&
			      strstr(e.message, "O_PATH"),
		      "an O_PATH fd of a sealed memfd: NotEligible naming it (%s: %s)", e.name ?: "none",
		      e.message ?: "");
		sd_bus_error_free(&e);
		close(opath);
	}

	r = register_vm(bus, "unsealed", &unsealed, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "memfd") &&
		      strstr(e.message, "F_SEAL"),
	      "unsealed memfd: NotEligible naming the memfd and seal (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	{
		int two[2] = { good, unsealed };

		r = register_vm(bus, "second-bad", two, 2, NULL, 0, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "#1"),
		      "second memfd unsealed: message names memfd #1 (%s)", e.message ?: "");
		sd_bus_error_free(&e);
	}

	r = register_vm(bus, "pipe", &pipefd[0], 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "wrong-fd-kind"),
	      "a pipe as memfd: NotEligible wrong-fd-kind (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	r = register_vm(bus, "memfd-as-iommufd", &good, 1, &good, 1, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "iommufd"),
	      "a memfd as iommufd: NotEligible (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	r = register_vm(bus, "null-as-device", &good, 1, NULL, 0, &devnull, 1, &e, NULL);
	check(r < 0 && error_is(&e, ERR("NotEligible")), "/dev/null as a device: NotEligible (%s)",
	      e.message ?: "");
	sd_bus_error_free(&e);

	{
		int two[2] = { good, good };

		r = register_vm(bus, "two-iommufds", &good, 1, two, 2, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS), "two iommufds: InvalidArgs (%s)",
		      e.name ?: "none");
		sd_bus_error_free(&e);
	}

	r = register_vm(bus, "no-memory", NULL, 0, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS), "no memfd: InvalidArgs (%s)", e.name ?: "none");
	sd_bus_error_free(&e);

	check(count_vms(bus) == 0, "nothing registered by refused calls");
	r = settled_fds(daemon_pid, before);
	check(r == before, "daemon kept no fd from refused calls (%d vs %d)", r, before);

	{
		static const char *const methods[] = { "UnregisterVM", "PreserveVM", "UnpreserveVM",
						       "VerifyVM",     "RetrieveVM", "FinishVM" };

		for (size_t i = 0; i < 6; i++) {
			r = call_s(bus, methods[i], "no-such-vm", &e);
			check(r < 0 && error_is(&e, ERR("NoSuchVM")), "%s of an unknown VM: NoSuchVM (%s)",
			      methods[i], e.name ?: "none");
			sd_bus_error_free(&e);
			r = call_s(bus, methods[i], "bad name", &e);
			check(r < 0 && error_is(&e, ERR("InvalidName")), "%s with a bad name: InvalidName (%s)",
			      methods[i], e.name ?: "none");
			sd_bus_error_free(&e);
		}
	}

	close(good);
	close(unsealed);
	close(pipefd[0]);
	close(pipefd[1]);
	close(devnull);
}

/* A VMM that registers and exits: the daemon drops the VM. */
static void test_vmm_exit(LudEnv *env, sd_bus *bus)
{
	int status = 0, n = -1;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		sd_bus *b = NULL;
		sd_bus_error e = SD_BUS_ERROR_NULL;
		int fd;

		if (lud_env_connect(env, &b) < 0 || iommulu_memfd_create("x", 1 << 16, &fd) < 0)
			_exit(2);
		_exit(register_vm(b, "ephemeral", &fd, 1, NULL, 0, NULL, 0, &e, NULL) < 0 ? 1 : 0);
	}
	waitpid(pid, &status, 0);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a short-lived VMM registered its VM");
	for (int i = 0; i < 300; i++) {
		n = count_vms(bus);
		if (n == 0)
			break;
		msleep(10);
	}
	check(n == 0, "the daemon dropped the VM when its VMM exited");
}

static void test_signals(sd_bus *bus)
{
	/* InterfacesAdded/Removed on registration and removal. */
	sd_bus *b = bus;
	sd_bus_slot *slot = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int added = 0, removed = 0, fd, r;

	r = sd_bus_match_signal(b, &slot, DEST, MPATH, "org.freedesktop.DBus.ObjectManager", NULL, NULL, NULL);
	check(r >= 0, "subscribe to ObjectManager signals");
	iommulu_memfd_create("sig", 1 << 16, &fd);
	r = register_vm(bus, "signals", &fd, 1, NULL, 0, NULL, 0, &e, NULL);
	sd_bus_error_free(&e);
	call_s(bus, "UnregisterVM", "signals", &e);
	sd_bus_error_free(&e);
	for (int i = 0; i < 200 && !(added && removed); i++) {
		sd_bus_message *m = NULL;

		r = sd_bus_process(b, &m);
		if (r > 0 && m) {
			if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.ObjectManager", "InterfacesAdded"))
				added++;
			if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.ObjectManager", "InterfacesRemoved"))
				removed++;
		}
		sd_bus_message_unref(m);
		if (r == 0)
			sd_bus_wait(b, 10000);
	}
	check(added == 1 && removed == 1, "InterfacesAdded and InterfacesRemoved emitted (%d, %d)", added, removed);
	sd_bus_slot_unref(slot);
	close(fd);
}

static void test_fd_leak(sd_bus *bus, pid_t daemon_pid)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fd, before, after, failures = 0;

	iommulu_memfd_create("leak", 1 << 16, &fd);
	before = count_fds(daemon_pid);
	for (int i = 0; i < 1000; i++) {
		if (register_vm(bus, "cycle", &fd, 1, NULL, 0, NULL, 0, &e, NULL) < 0)
			failures++;
		sd_bus_error_free(&e);
		if (call_s(bus, "UnregisterVM", "cycle", &e) < 0)
			failures++;
		sd_bus_error_free(&e);
	}
	after = settled_fds(daemon_pid, before);
	check(failures == 0, "1000 register/unregister cycles succeed (%d failures)", failures);
	check(before == after, "no fd leaked over 1000 cycles (%d before, %d after)", before, after);
	close(fd);
}

/* The non-root caller: the bus policy (first env) and the daemon's own
 * check (second env, permissive bus) must both refuse. */
static void test_non_root(LudEnv *env, bool expect_policy)
{
	int pipefd[2], status = 0;
	char buf[1024] = "";
	ssize_t k;
	pid_t pid;

	if (pipe(pipefd) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		sd_bus *b = NULL;
		sd_bus_error e = SD_BUS_ERROR_NULL;
		char out[1024];
		int fd = -1, r, ok = 0;
		char *version = NULL;

		close(pipefd[0]);
		iommulu_memfd_create("nobody", 1 << 16, &fd);
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		if (lud_env_connect(env, &b) < 0)
			_exit(3);
		r = register_vm(b, "nobodys", &fd, 1, NULL, 0, NULL, 0, &e, NULL);
		ok |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED)) << 0;
		snprintf(out, sizeof(out), "%s|", e.message ?: "");
		sd_bus_error_free(&e);
		r = call_s(b, "PreserveVM", "x", &e);
		ok |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED)) << 1;
		sd_bus_error_free(&e);
		r = sd_bus_call_method(b, DEST, MPATH, MIFACE, "PreserveAll", &e, NULL, NULL);
		ok |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED)) << 2;
		sd_bus_error_free(&e);
		r = sd_bus_call_method(b, DEST, MPATH, MIFACE, "ListVMs", &e, NULL, NULL);
		ok |= (r >= 0) << 3;
		sd_bus_error_free(&e);
		r = sd_bus_get_property_string(b, DEST, MPATH, MIFACE, "Version", &e, &version);
		ok |= (r >= 0) << 4;
		free(version);
		sd_bus_error_free(&e);
		r = sd_bus_call_method(b, DEST, MPATH, "org.freedesktop.DBus.Introspectable", "Introspect",
				       &e, NULL, NULL);
		ok |= (r >= 0) << 5;
		if (write(pipefd[1], out, strlen(out)) < 0)
			_exit(4);
		_exit(ok == 0x3f ? 0 : 10 + ok);
	}
	close(pipefd[1]);
	k = read(pipefd[0], buf, sizeof(buf) - 1);
	buf[k > 0 ? k : 0] = 0;
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "uid 65534: mutating calls AccessDenied, ListVMs/properties/introspection allowed (%s status %d, \"%s\")",
	      expect_policy ? "bus policy" : "daemon check", WEXITSTATUS(status), buf);
	if (!expect_policy)
		check(strstr(buf, "Only root may call RegisterVM") != NULL,
		      "the refusal came from the daemon's own credential check");
}

static void test_quota(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[5], r, ok = 0;
	uint32_t max = 0;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false,
						   .config = "[Daemon]\nMaxVMs=3\nMaxFdsPerVM=4\n" });
	if (!check(r >= 0, "start a daemon with MaxVMs=3 MaxFdsPerVM=4 on a permissive bus")) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	for (int i = 0; i < 5; i++)
		iommulu_memfd_create("q", 1 << 16, &fds[i]);

	r = sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, "MaxVMs", NULL, 'u', &max);
	check(r >= 0 && max == 3, "MaxVMs property reflects the config (%u)", max);

	r = register_vm(bus, "five", fds, 5, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_LIMITS_EXCEEDED), "5 fds > MaxFdsPerVM=4: LimitsExceeded (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);
	for (int i = 0; i < 3; i++) {
		char n[8];

		snprintf(n, sizeof(n), "q%d", i);
		ok += register_vm(bus, n, fds, 4, NULL, 0, NULL, 0, &e, NULL) >= 0;
		sd_bus_error_free(&e);
	}
	check(ok == 3, "3 VMs with 4 fds each register");
	r = register_vm(bus, "q3", fds, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_LIMITS_EXCEEDED), "a 4th VM: LimitsExceeded (%s)", e.name ?: "none");
	sd_bus_error_free(&e);

	test_non_root(&env, false);

	/* SIGHUP re-reads the config; a bad one keeps the old values. */
	{
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "%s/iommu-lud.conf", env.dir);
		f = fopen(path, "we");
		char changed[256];
		sd_bus_slot *slot = NULL;

		fputs("[Daemon]\nMaxVMs=5\nMaxFdsPerVM=8\nFailurePolicy=continue\n", f);
		fclose(f);
		sd_bus_match_signal(bus, &slot, DEST, MPATH, "org.freedesktop.DBus.Properties", "PropertiesChanged",
				    NULL, NULL);
		kill(env.daemon_pid, SIGHUP);
		collect_manager_changes(bus, 2000, "MaxFdsPerVM", changed, sizeof(changed));
		sd_bus_slot_unref(slot);
		check(strstr(changed, "MaxVMs") && strstr(changed, "MaxFdsPerVM") && strstr(changed, "FailurePolicy"),
		      "a SIGHUP that changes MaxVMs, MaxFdsPerVM and FailurePolicy signals all three (%s)", changed);
		for (int i = 0; i < 200 && max != 5; i++) {
			msleep(10);
			sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, "MaxVMs", NULL, 'u', &max);
		}
		check(max == 5, "SIGHUP reloads the config (MaxVMs now %u)", max);
		r = register_vm(bus, "q3", fds, 1, NULL, 0, NULL, 0, &e, NULL);
		check(r >= 0, "a 4th VM registers after raising MaxVMs");
		sd_bus_error_free(&e);

		f = fopen(path, "we");
		fputs("[Daemon]\nMaxVMs=zero\n", f);
		fclose(f);
		kill(env.daemon_pid, SIGHUP);
		msleep(200);
		sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, "MaxVMs", NULL, 'u', &max);
		check(max == 5 && kill(env.daemon_pid, 0) == 0, "a bad config on reload keeps the old one (MaxVMs %u)", max);
	}

	sd_bus_flush_close_unref(bus);
	r = lud_env_stop_daemon(&env);
	check(r == 0, "daemon exits cleanly on SIGTERM with VMs registered (status %d)", r);
	lud_env_stop(&env);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
}

/* The daemon must not live on off the bus: it would miss every call and
 * PrepareForShutdown. */
static void test_exit_on_disconnect(void)
{
	LudEnv env;
	int r, status = 0;
	pid_t w = 0;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false });
	if (!check(r >= 0, "start a daemon to cut off its bus")) {
		lud_env_stop(&env);
		return;
	}
	kill(env.bus_pid, SIGKILL);
	waitpid(env.bus_pid, NULL, 0);
	env.bus_pid = 0;
	for (int i = 0; i < 500 && w == 0; i++) {
		w = waitpid(env.daemon_pid, &status, WNOHANG);
		if (w == 0)
			msleep(10);
	}
	if (w == env.daemon_pid)
		env.daemon_pid = 0;
	check(w > 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
	      "the daemon exits with a failure status when the bus goes away (%s, status %d)",
	      w > 0 ? "exited" : "still running", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	lud_env_stop(&env);
}

static uint32_t property_u(sd_bus *bus, const char *path, const char *iface, const char *prop)
{
	uint32_t u = 0;

	sd_bus_get_property_trivial(bus, DEST, path, iface, prop, NULL, 'u', &u);
	return u;
}

static uint32_t manager_u(sd_bus *bus, const char *prop)
{
	return property_u(bus, MPATH, MIFACE, prop);
}

/* MaxVMs and MaxFdsPerVM are clamped to RLIMIT_NOFILE, the fd store and
 * the bus; what is beyond is refused with LimitsExceeded, and the daemon
 * stays on the bus. */
static void test_limits(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[16], r, ok = 0;
	char n[16];

	/* 200 fds - 64 reserved = 136, 16 + 3 fds per VM: 7 VMs. */
	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false, .nofile = 200,
						   .config = "[Daemon]\nMaxVMs=50\nMaxFdsPerVM=16\n" });
	if (!check(r >= 0, "start a daemon with RLIMIT_NOFILE=200, MaxVMs=50, MaxFdsPerVM=16")) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	check(manager_u(bus, "MaxVMs") == 7 && manager_u(bus, "MaxFdsPerVM") == 16,
	      "MaxVMs clamped to what RLIMIT_NOFILE=200 holds (MaxVMs %u, MaxFdsPerVM %u)",
	      manager_u(bus, "MaxVMs"), manager_u(bus, "MaxFdsPerVM"));
	for (int i = 0; i < 16; i++)
		iommulu_memfd_create("lim", 1 << 16, &fds[i]);
	for (int i = 0; i < 7; i++) {
		snprintf(n, sizeof(n), "lim%d", i);
		ok += register_vm(bus, n, fds, 16, NULL, 0, NULL, 0, &e, NULL) >= 0;
		sd_bus_error_free(&e);
	}
	check(ok == 7, "7 VMs of 16 fds register under RLIMIT_NOFILE=200 (%d)", ok);
	r = register_vm(bus, "lim7", fds, 16, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_LIMITS_EXCEEDED), "an 8th VM: LimitsExceeded (%s: %s)",
	      e.name ?: "none", e.message ?: "");
	sd_bus_error_free(&e);
	check(count_vms(bus) == 7 && kill(env.daemon_pid, 0) == 0, "the daemon is still on the bus with 7 VMs");
	sd_bus_flush_close_unref(bus);
	bus = NULL;
	lud_env_stop(&env);

	/* FileDescriptorStoreMax=692: the staged kernel takes 3 entries, a
	 * VM of 64 files 64 + 5 (files, owner, registration record and its
	 * successor, session, record), so 689 / 69 = 9 VMs. */
	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false, .fdstore = "692",
						   .config = "[Daemon]\nMaxVMs=50\nMaxFdsPerVM=64\n" });
	if (check(r >= 0, "start a daemon with FDSTORE=692, MaxVMs=50, MaxFdsPerVM=64")) {
		lud_env_connect(&env, &bus);
		check(manager_u(bus, "MaxVMs") == 9,
		      "MaxVMs clamped to what the fd store holds: (692 - 3) / (64 + 5) (%u)",
		      manager_u(bus, "MaxVMs"));
		check(manager_u(bus, "MaxFdsPerVM") == 64,
		      "MaxFdsPerVM is not clamped to the bus's 16 fds per message: more go in parts (%u)",
		      manager_u(bus, "MaxFdsPerVM"));
		sd_bus_flush_close_unref(bus);
	}
	lud_env_stop(&env);

	/* FileDescriptorStoreMax=11 holds not even one VM of 64 files. */
	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false, .fdstore = "11",
						   .config = "[Daemon]\nMaxVMs=10\nMaxFdsPerVM=64\n" });
	if (check(r >= 0, "start a daemon with FDSTORE=11, MaxVMs=10, MaxFdsPerVM=64")) {
		lud_env_connect(&env, &bus);
		check(manager_u(bus, "MaxFdsPerVM") == 3 && manager_u(bus, "MaxVMs") == 1,
		      "MaxFdsPerVM lowered to 11 - 3 - 5 and MaxVMs to 1 (%u, %u)", manager_u(bus, "MaxFdsPerVM"),
		      manager_u(bus, "MaxVMs"));
		sd_bus_flush_close_unref(bus);
	}
	lud_env_stop(&env);
	for (int i = 0; i < 16; i++)
		close(fds[i]);
}

/* For messages: newlines as spaces, in place. */
static const char *oneline(char *s)
{
	for (char *p = s; p && *p; p++)
		if (*p == '\n')
			*p = ' ';
	return s ?: "";
}

static char *vm_string(sd_bus *bus, const char *name, const char *prop)
{
	char path[128], *v = NULL;

	snprintf(path, sizeof(path), "/org/iommulu/LiveUpdate1/vm/%s", name);
	if (sd_bus_get_property_string(bus, DEST, path, VIFACE, prop, NULL, &v) < 0)
		return strdup("(unreadable)");
	return v;
}

static bool vm_state_is(sd_bus *bus, const char *name, const char *want)
{
	char *s = vm_string(bus, name, "State");
	bool ok = s && strcmp(s, want) == 0;

	if (!ok)
		printf("# VM %s is %s, expected %s\n", name, s ?: "?", want);
	free(s);
	return ok;
}

/* The fake PID 1's fd store, waiting up to 5 s for it to hold want fds
 * (it may still be working through the daemon's messages). */
static int fdstore_settled(LudEnv *env, int want, char **ret)
{
	char *names = NULL;
	int n = -1;

	for (int i = 0; i < 500; i++) {
		free(names);
		names = NULL;
		n = lud_env_fdstore(env, &names);
		if (n == want)
			break;
		msleep(10);
	}
	if (ret)
		*ret = names;
	else
		free(names);
	return n;
}

/* A daemon with a fake /dev/liveupdate and a fake PID 1 (notify), and
 * one memfd-only VM registered on it. */
static bool start_fake_host(LudEnv *env, LudNotify notify, const char *vm, sd_bus **ret_bus, int *ret_fd)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = lud_env_start(env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = notify });
	if (!check(r >= 0, "start a daemon with a fake /dev/liveupdate and a fake PID 1%s (%s)",
		   notify == LUD_NOTIFY_NO_BARRIER ? " that never answers BARRIER=1" : "", strerror(-r))) {
		lud_env_stop(env);
		return false;
	}
	lud_env_connect(env, ret_bus);
	iommulu_memfd_create(vm, 1 << 16, ret_fd);
	r = register_vm(*ret_bus, vm, ret_fd, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r >= 0, "RegisterVM %s (%s)", vm, e.message ?: "");
	sd_bus_error_free(&e);
	return true;
}

/* Preservation with a fake /dev/liveupdate and a fake PID 1 that keeps
 * an fd store and answers BARRIER=1. */
static void test_preserve(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char *names = NULL;
	int fd = -1, r, n;
	bool ok;

	if (!start_fake_host(&env, LUD_NOTIFY_ACK, "pres", &bus, &fd))
		return;

	r = call_s(bus, "PreserveVM", "pres", &e);
	check(r >= 0 && vm_state_is(bus, "pres", "preserved"), "PreserveVM succeeds with the fake LUO (%s: %s)",
	      e.name ?: "-", e.message ?: "");
	sd_bus_error_free(&e);
	n = fdstore_settled(&env, 5, &names);
	ok = n == 5 && strstr(names, "session.iommulu.1.pres\n") && strstr(names, "record.iommulu.1.pres\n") &&
	     strstr(names, "memfd.0.pres\n") && strstr(names, "owner.pres\n") && strstr(names, "vm.1.pres\n");
	check(ok, "the fd store holds the registration (memfd, owner, record) and the session with its record (%d: %s)",
	      n, oneline(names));
	free(names);

	/* Idempotent: a second PreserveVM (a retry, or after a daemon
	 * restart) succeeds and changes nothing. */
	{
		char *session = vm_string(bus, "pres", "Session");

		r = call_s(bus, "PreserveVM", "pres", &e);
		check(r >= 0, "PreserveVM of a preserved VM succeeds (%s: %s)", e.name ?: "-", e.message ?: "");
		sd_bus_error_free(&e);
		{
			char *again = vm_string(bus, "pres", "Session");

			check(vm_state_is(bus, "pres", "preserved") && session && again && strcmp(session, again) == 0 &&
				      fdstore_settled(&env, 5, NULL) == 5,
			      "... and leaves the VM in its session %s with 5 fd store entries", again ?: "");
			free(again);
		}
		free(session);
	}

	r = call_s(bus, "UnpreserveVM", "pres", &e);
	check(r >= 0 && vm_state_is(bus, "pres", "registered"), "UnpreserveVM succeeds (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	n = fdstore_settled(&env, 3, &names);
	check(n == 3 && !strstr(names, "session."), "UnpreserveVM leaves only the registration in the fd store (%d: %s)",
	      n, oneline(names));
	free(names);
	r = call_s(bus, "UnpreserveVM", "pres", &e);
	check(r >= 0 && vm_state_is(bus, "pres", "registered"),
	      "UnpreserveVM of a VM that is not preserved succeeds and changes nothing (%s: %s)", e.name ?: "-",
	      e.message ?: "");
	sd_bus_error_free(&e);
	r = call_s(bus, "PreserveVM", "pres", &e);
	check(r >= 0 && vm_state_is(bus, "pres", "preserved") && fdstore_settled(&env, 5, NULL) == 5,
	      "PreserveVM again after UnpreserveVM (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
}

static bool wait_state(sd_bus *bus, const char *name, const char *want)
{
	for (int i = 0; i < 250; i++) {
		if (vm_state_is(bus, name, want))
			return true;
		msleep(20);
	}
	return false;
}

/* What logind sends: PrepareForShutdownWithMetadata(start, {type}). */
static int emit_prepare(sd_bus *logind, bool start, const char *type)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_signal(logind, &m, "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
				      "PrepareForShutdownWithMetadata");
	if (r >= 0)
		r = sd_bus_message_append(m, "b", start);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && type)
		r = sd_bus_message_append(m, "{sv}", "type", "s", type);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_send(logind, m, NULL);
	if (r >= 0)
		r = sd_bus_flush(logind);
	sd_bus_message_unref(m);
	return r;
}

/* logind announces a kexec and then cancels it: the VM the daemon's hook
 * preserved is unpreserved again (its VMM can map and unmap as before),
 * while a VM preserved by an explicit PreserveVM stays preserved. */
static void test_cancelled_kexec(void)
{
	LudEnv env;
	sd_bus *bus = NULL, *logind = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[2] = { -1, -1 }, r;

	r = lud_env_start(&env, &(LudEnvOptions){ .fake_luo = true, .notify = LUD_NOTIFY_ACK });
	if (!check(r >= 0, "start a daemon with a fake /dev/liveupdate, PID 1 and logind (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	lud_env_connect(&env, &logind);
	iommulu_memfd_create("hook", 1 << 16, &fds[0]);
	iommulu_memfd_create("manual", 1 << 16, &fds[1]);
	r = register_vm(bus, "hook", &fds[0], 1, NULL, 0, NULL, 0, &e, NULL);
	if (r >= 0)
		r = register_vm(bus, "manual", &fds[1], 1, NULL, 0, NULL, 0, &e, NULL);
	if (r >= 0)
		r = call_s(bus, "PreserveVM", "manual", &e);
	check(r >= 0, "register hook and manual, PreserveVM manual (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = sd_bus_request_name(logind, "org.freedesktop.login1", 0);
	check(r >= 0, "a fake logind owns org.freedesktop.login1 (%s)", strerror(-r));

	r = emit_prepare(logind, true, "kexec");
	check(r >= 0 && wait_state(bus, "hook", "preserved"),
	      "PrepareForShutdownWithMetadata(true, kexec): the hook preserves the registered VM");
	r = emit_prepare(logind, false, NULL);
	check(r >= 0 && wait_state(bus, "hook", "registered"),
	      "PrepareForShutdown(false), a cancelled kexec: the hook's VM is unpreserved");
	check(vm_state_is(bus, "manual", "preserved"), "the VM preserved by PreserveVM stays preserved");
	check(fdstore_settled(&env, 8, NULL) == 8,
	      "the fd store holds both registrations (3 entries each) and only the manual VM's session and record");

	sd_bus_flush_close_unref(logind);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fds[0]);
	close(fds[1]);
}

/* A PID 1 that never answers BARRIER=1: PreserveVM and PreserveAll must
 * not report success for a session systemd never confirmed holding. */
static void test_barrier_unanswered(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct timespec t0, t1;
	char *err = NULL;
	int fd = -1, r, n;
	double s;

	if (!start_fake_host(&env, LUD_NOTIFY_ACK, "nobar", &bus, &fd))
		return;
	lud_env_answer_barriers(&env, false);

	/* A registration is answered only once it is in the fd store. */
	{
		int other = -1;

		iommulu_memfd_create("nobar2", 1 << 16, &other);
		r = register_vm(bus, "nobar2", &other, 1, NULL, 0, NULL, 0, &e, NULL);
		check(r < 0 && error_is(&e, SD_BUS_ERROR_TIMEOUT) && e.message && strstr(e.message, "registered nothing"),
		      "RegisterVM fails with Timeout when the barrier is not answered (%s: %s)", e.name ?: "-",
		      e.message ?: "");
		sd_bus_error_free(&e);
		check(count_vms(bus) == 1 && fdstore_settled(&env, 3, NULL) == 3,
		      "... keeps nothing and withdraws its fd store entries (%d VM(s))", count_vms(bus));
		close(other);
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = call_s(bus, "PreserveVM", "nobar", &e);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	check(r < 0 && error_is(&e, SD_BUS_ERROR_TIMEOUT) && e.message && strstr(e.message, "BARRIER=1") &&
		      strstr(e.message, "rolled back"),
	      "PreserveVM fails with Timeout when the barrier is not answered (%.1f s, %s: %s)", s,
	      e.name ?: "-", e.message ?: "");
	sd_bus_error_free(&e);
	check(s >= 4.0 && s < 20.0, "... after a bounded wait (%.1f s)", s);
	check(vm_state_is(bus, "nobar", "failed"), "the VM is failed");
	err = vm_string(bus, "nobar", "LastError");
	check(err && strstr(err, "BARRIER=1"), "LastError says why (%s)", err ?: "");
	free(err);
	err = vm_string(bus, "nobar", "Session");
	check(err && !err[0], "the VM has no session any more (\"%s\")", err ?: "");
	free(err);
	n = fdstore_settled(&env, 3, NULL);
	check(n == 3, "the store request was withdrawn: the fd store holds only the registration (%d)", n);

	/* PreserveAll waits once, after the last VM: it rolls back every VM
	 * it preserved. */
	{
		sd_bus_message *reply = NULL;
		const char *name = NULL, *res = NULL;

		r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", &e, &reply, NULL);
		if (r >= 0)
			r = sd_bus_message_read(reply, "a(ss)", 1, &name, &res);
		check(r >= 0 && name && strcmp(name, "nobar") == 0 && res && strstr(res, SD_BUS_ERROR_TIMEOUT) &&
			      strstr(res, "rolled back"),
		      "PreserveAll reports the unconfirmed VM as failed (%s)", res ?: e.message ?: "");
		sd_bus_message_unref(reply);
		sd_bus_error_free(&e);
	}
	check(vm_state_is(bus, "nobar", "failed") && fdstore_settled(&env, 3, NULL) == 3,
	      "... and rolls it back");

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
}

static int on_async_reply(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	*(sd_bus_message **)userdata = sd_bus_message_ref(m);
	return 0;
}

/* PreserveAll does not block the event loop: while it waits for a BARRIER=1
 * PID 1 never answers, other calls are answered at once and the watchdog
 * keeps being fed; then it rolls back as before. */
static void test_preserve_all_async(void)
{
	LudEnv env;
	sd_bus *bus = NULL, *other = NULL;
	sd_bus_message *reply = NULL;
	sd_bus_slot *slot = NULL;
	int fds[2] = { -1, -1 }, r, wd0, wd1, n_timeout = 0;
	struct timespec t0, t1, t2;
	double list_s, all_s;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK,
						   .watchdog_usec = 1000000 });
	if (!check(r >= 0, "start a daemon with a fake LUO, fd store and WatchdogSec=1s (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	lud_env_connect(&env, &other);
	iommulu_memfd_create("wd1", 1 << 16, &fds[0]);
	iommulu_memfd_create("wd2", 1 << 16, &fds[1]);
	r = register_vm(bus, "wd1", &fds[0], 1, NULL, 0, NULL, 0, NULL, NULL);
	if (r >= 0)
		r = register_vm(bus, "wd2", &fds[1], 1, NULL, 0, NULL, 0, NULL, NULL);
	check(r >= 0, "register wd1 and wd2");
	lud_env_answer_barriers(&env, false);

	wd0 = lud_env_notify_count(&env, "WATCHDOG=1");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = sd_bus_call_method_async(bus, &slot, DEST, MPATH, MIFACE, "PreserveAll", on_async_reply, &reply, NULL);
	if (r >= 0)
		r = sd_bus_flush(bus);
	msleep(300);	/* the daemon is waiting for the barrier by now */
	r = r < 0 ? r : count_vms(other);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	list_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 - 0.3;
	check(r == 2 && list_s < 1.0, "during a PreserveAll that waits for an unanswered barrier, ListVMs is answered "
	      "at once (%.2f s, %d VMs)", list_s, r);

	/* The reply, when the barrier has timed out. */
	for (int i = 0; i < 2000 && !reply; i++)
		if (sd_bus_process(bus, NULL) == 0)
			(void)sd_bus_wait(bus, 10 * 1000);
	sd_bus_slot_unref(slot);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	all_s = (double)(t2.tv_sec - t0.tv_sec) + (double)(t2.tv_nsec - t0.tv_nsec) / 1e9;
	wd1 = lud_env_notify_count(&env, "WATCHDOG=1");
	if (reply) {
		const char *name, *res;

		r = sd_bus_message_enter_container(reply, 'a', "(ss)");
		while (r >= 0 && sd_bus_message_read(reply, "(ss)", &name, &res) > 0)
			n_timeout += strstr(res, SD_BUS_ERROR_TIMEOUT) && strstr(res, "rolled back");
	}
	check(reply && n_timeout == 2, "PreserveAll answers after the barrier's timeout (%.1f s): both VMs rolled back "
	      "with Timeout (%d)", all_s, n_timeout);
	check(wd1 - wd0 >= 3, "the daemon sent WATCHDOG=1 %d times meanwhile", wd1 - wd0);
	check(vm_state_is(other, "wd1", "failed") && vm_state_is(other, "wd2", "failed") &&
		      fdstore_settled(&env, 6, NULL) == 6,
	      "both VMs failed, the fd store holds only their registrations");

	lud_env_answer_barriers(&env, true);
	reply = sd_bus_message_unref(reply);
	r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", NULL, &reply, NULL);
	check(r >= 0 && vm_state_is(other, "wd1", "preserved") && vm_state_is(other, "wd2", "preserved") &&
		      fdstore_settled(&env, 10, NULL) == 10,
	      "with barriers answered again, PreserveAll preserves both");
	sd_bus_message_unref(reply);

	sd_bus_flush_close_unref(other);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fds[0]);
	close(fds[1]);
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Wait for an async call's reply (up to 20 s); the seconds since t0. */
static double wait_reply(sd_bus *bus, sd_bus_message **reply, const struct timespec *t0)
{
	for (int i = 0; i < 2000 && !*reply; i++)
		if (sd_bus_process(bus, NULL) == 0)
			(void)sd_bus_wait(bus, 10 * 1000);
	return since(t0);
}

/* Single-VM calls do not block the event loop either: while PreserveVM or
 * RegisterVM waits for a BARRIER=1 PID 1 does not answer, calls that only
 * read are answered at once, and calls that change state are held and
 * dispatched after it, in order. */
static void test_calls_while_storing(void)
{
	LudEnv env;
	sd_bus *bus = NULL, *other = NULL;
	sd_bus_message *preserved = NULL, *unregistered = NULL, *registered = NULL;
	sd_bus_slot *s1 = NULL, *s2 = NULL, *s3 = NULL;
	const sd_bus_error *e;
	struct timespec t0;
	double list_s, preserve_s, unregister_s, register_s;
	int fd = -1, fd2 = -1, fd3 = -1, r, n;

	if (!start_fake_host(&env, LUD_NOTIFY_ACK, "hold1", &bus, &fd))
		return;
	lud_env_connect(&env, &other);
	iommulu_memfd_create("hold2", 1 << 16, &fd2);
	r = register_vm(bus, "hold2", &fd2, 1, NULL, 0, NULL, 0, NULL, NULL);
	check(r >= 0, "register hold2");
	lud_env_answer_barriers(&env, false);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = sd_bus_call_method_async(bus, &s1, DEST, MPATH, MIFACE, "PreserveVM", on_async_reply, &preserved, "s",
				     "hold1");
	if (r >= 0)
		r = sd_bus_flush(bus);
	msleep(300);	/* the daemon waits for the barrier by now */
	r = sd_bus_call_method_async(other, &s2, DEST, MPATH, MIFACE, "UnregisterVM", on_async_reply, &unregistered,
				     "s", "hold2");
	if (r >= 0)
		r = sd_bus_flush(other);
	n = r < 0 ? r : count_vms(other);
	list_s = since(&t0) - 0.3;
	check(n == 2 && list_s < 1.0, "while PreserveVM waits for an unanswered barrier, ListVMs is answered at once "
	      "(%.2f s, %d VMs: the UnregisterVM sent meanwhile is held)", list_s, n);
	check(vm_state_is(other, "hold1", "preserved"), "... and shows the VM preserved, pending confirmation");

	preserve_s = wait_reply(bus, &preserved, &t0);
	e = preserved ? sd_bus_message_get_error(preserved) : NULL;
	check(e && sd_bus_error_has_name(e, SD_BUS_ERROR_TIMEOUT) && strstr(e->message, "rolled back") &&
		      preserve_s >= 4.0,
	      "PreserveVM fails after the barrier's timeout (%.1f s) and is rolled back (%s)", preserve_s,
	      e ? e->message : "no reply");
	unregister_s = wait_reply(other, &unregistered, &t0);
	check(unregistered && !sd_bus_message_is_method_error(unregistered, NULL) && unregister_s >= preserve_s,
	      "the held UnregisterVM is carried out after it (%.1f s) and succeeds", unregister_s);
	check(vm_state_is(other, "hold1", "failed") && count_vms(other) == 1,
	      "hold1 is failed, hold2 is gone");

	/* RegisterVM: the VM is listed at once, answered after the wait. */
	iommulu_memfd_create("hold3", 1 << 16, &fd3);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = sd_bus_call_method_async(bus, &s3, DEST, MPATH, MIFACE, "RegisterVM", on_async_reply, &registered,
				     "sahahahat", "hold3", 1, fd3, 0, 0, 0);
	if (r >= 0)
		r = sd_bus_flush(bus);
	msleep(300);
	n = r < 0 ? r : count_vms(other);
	list_s = since(&t0) - 0.3;
	check(n == 2 && list_s < 1.0, "while RegisterVM waits for an unanswered barrier, ListVMs is answered at once "
	      "(%.2f s, %d VMs)", list_s, n);
	register_s = wait_reply(bus, &registered, &t0);
	e = registered ? sd_bus_message_get_error(registered) : NULL;
	check(e && sd_bus_error_has_name(e, SD_BUS_ERROR_TIMEOUT) && strstr(e->message, "registered nothing"),
	      "RegisterVM fails after the barrier's timeout (%.1f s: %s)", register_s, e ? e->message : "no reply");
	check(count_vms(other) == 1 && fdstore_settled(&env, 3, NULL) == 3,
	      "... and keeps nothing: hold1's registration alone is in the fd store");

	sd_bus_slot_unref(s1);
	sd_bus_slot_unref(s2);
	sd_bus_slot_unref(s3);
	sd_bus_message_unref(preserved);
	sd_bus_message_unref(unregistered);
	sd_bus_message_unref(registered);
	sd_bus_flush_close_unref(other);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
	close(fd2);
	close(fd3);
}

/* Runs iommu-lud-vmm-client with args on env's bus; its exit status, its
 * standard output in out. */
static int run_vmm_client(LudEnv *env, const char *const *args, char *out, size_t size)
{
	const char *client = getenv("IOMMU_LUD_VMM_CLIENT");
	char *argv[16];
	size_t have = 0, n = 0;
	int p[2], status = 0;
	pid_t pid;

	out[0] = 0;
	if (!client || pipe2(p, O_CLOEXEC) < 0)
		return -1;
	argv[n++] = (char *)client;
	for (size_t i = 0; args[i] && n < ELEMENTSOF(argv) - 1; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		setenv("DBUS_SYSTEM_BUS_ADDRESS", env->address, 1);
		execv(client, argv);
		_exit(127);
	}
	close(p[1]);
	for (ssize_t k; have + 1 < size && (k = read(p[0], out + have, size - have - 1)) > 0;)
		have += (size_t)k;
	out[have] = 0;
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* RegisterVMPart with fds[first, first + n) of fds. */
static int register_part(sd_bus *bus, const char *name, const int *fds, size_t n, bool last, sd_bus_error *error)
{
	sd_bus_message *call = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &call, DEST, MPATH, MIFACE, "RegisterVMPart");
	if (r >= 0)
		r = sd_bus_message_append(call, "s", name);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "h");
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = sd_bus_message_append(call, "h", fds[i]);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = sd_bus_message_append(call, "ahahatb", 0, 0, 0, (int)last);
	if (r >= 0)
		r = sd_bus_call(bus, call, 0, error, NULL);
	sd_bus_message_unref(call);
	return r;
}

static uint32_t vm_u(sd_bus *bus, const char *name, const char *prop)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/vm/%s", MPATH, name);
	return property_u(bus, path, VIFACE, prop);
}

/* RegisterVMPart from a new process that exits right after; true if the
 * call failed with want_error (NULL: succeeded). */
static bool part_from_other_process(LudEnv *env, const char *name, const int *fds, size_t n, bool last,
				    const char *want_error)
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		sd_bus *b = NULL;
		sd_bus_error e = SD_BUS_ERROR_NULL;
		int r;

		if (lud_env_connect(env, &b) < 0)
			_exit(2);
		r = register_part(b, name, fds, n, last, &e);
		_exit((want_error ? r < 0 && error_is(&e, want_error) : r >= 0) ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* More files than one message carries (16 on the system bus): a VM of 40
 * memfds registers in three parts and is preserved. */
static void test_register_parts(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[40], r, n;
	char *why;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true,
						   .notify = LUD_NOTIFY_ACK });
	if (!check(r >= 0, "start a daemon with a fake LUO for a VM of 40 files (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	for (int i = 0; i < 40; i++)
		iommulu_memfd_create("part", 1 << 16, &fds[i]);

	r = register_part(bus, "big", fds, 16, false, &e);
	check(r >= 0 && vm_state_is(bus, "big", "registering"), "RegisterVMPart of 16 memfds: registering (%s)",
	      e.message ?: "");
	sd_bus_error_free(&e);
	why = vm_string(bus, "big", "IneligibleReason");
	check(why && strstr(why, "registration not complete"), "IneligibleReason says so (%s)", why ?: "");
	free(why);
	r = call_s(bus, "PreserveVM", "big", &e);
	check(r < 0 && error_is(&e, ERR("InvalidState")), "PreserveVM of an incomplete VM: InvalidState (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);
	r = register_vm(bus, "big", fds, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("AlreadyExists")), "RegisterVM of its name: AlreadyExists (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);

	check(part_from_other_process(&env, "big", &fds[16], 1, true, SD_BUS_ERROR_ACCESS_DENIED),
	      "another process cannot add files to it");

	r = register_part(bus, "big", &fds[15], 2, false, &e);
	check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "duplicate"),
	      "a part repeating a memfd of an earlier part: NotEligible (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	check(vm_u(bus, "big", "Memfds") == 16, "... and keeps nothing of it (Memfds %u)", vm_u(bus, "big", "Memfds"));

	r = register_part(bus, "big", &fds[16], 16, false, &e);
	check(r >= 0 && vm_u(bus, "big", "Memfds") == 32, "a second part adds 16 memfds (%u; %s)",
	      vm_u(bus, "big", "Memfds"), e.message ?: "");
	sd_bus_error_free(&e);
	r = register_part(bus, "big", &fds[32], 8, true, &e);
	check(r >= 0 && vm_state_is(bus, "big", "registered") && vm_u(bus, "big", "Memfds") == 40,
	      "the last part completes it: registered with 40 memfds (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	{
		char path[128];
		uint64_t bytes = 0;

		snprintf(path, sizeof(path), "%s/vm/big", MPATH);
		sd_bus_get_property_trivial(bus, DEST, path, VIFACE, "GuestMemoryBytes", NULL, 't', &bytes);
		check(bytes == 40u << 16, "GuestMemoryBytes counts all parts (%" PRIu64 ")", bytes);
	}
	r = call_s(bus, "PreserveVM", "big", &e);
	n = fdstore_settled(&env, 44, NULL);
	check(r >= 0 && vm_state_is(bus, "big", "preserved") && n == 44,
	      "the VM of 40 memfds is preserved: 44 fd store entries (40 memfds, owner, records, session) (%d; %s)", n,
	      e.message ?: "");
	sd_bus_error_free(&e);

	/* The VMM stand-in registers its 40 memfds in parts too. */
	{
		static const char *const args[] = { "register", "client40", "--memfds=40", "--size=65536",
						    "--preserve", NULL };
		static char out[8192];

		r = run_vmm_client(&env, args, out, sizeof(out));
		check(r == 0 && strstr(out, "40 memfd(s)") && strstr(out, "preserved client40") &&
			      vm_u(bus, "client40", "Memfds") == 40 && vm_state_is(bus, "client40", "preserved"),
		      "iommu-lud-vmm-client registers and preserves a VM of 40 memfds (status %d)", r);
	}

	/* A VMM that goes away half-way: its incomplete VM goes too. */
	{
		int half[3];

		for (int i = 0; i < 3; i++)
			iommulu_memfd_create("half", 1 << 16, &half[i]);
		check(part_from_other_process(&env, "half", half, 3, false, NULL), "a VMM registers part of a VM and exits");
		for (int i = 0; i < 3; i++)
			close(half[i]);
	}
	for (int i = 0; i < 300 && count_vms(bus) != 2; i++)
		msleep(10);
	check(count_vms(bus) == 2, "its incomplete VM is dropped (%d VM(s) left)", count_vms(bus));

	/* The last part changes the files and the state: one PropertiesChanged
	 * announces both. */
	{
		sd_bus_slot *slot = NULL;
		int signals = 0, first = -1, mem = -1;
		char names[512] = "";
		size_t len = 0;

		iommulu_memfd_create("burst", 1 << 16, &first);
		iommulu_memfd_create("burst", 1 << 16, &mem);
		r = register_part(bus, "burst", &first, 1, false, &e);
		if (r < 0)
			printf("# RegisterVMPart burst: %s\n", e.message ?: strerror(-r));
		sd_bus_error_free(&e);
		/* A call after it: the daemon has announced the first part's
		 * changes before it answers. */
		if (r >= 0)
			r = count_vms(bus);
		if (r >= 0)
			r = sd_bus_match_signal(bus, &slot, DEST, MPATH "/vm/burst", "org.freedesktop.DBus.Properties",
						"PropertiesChanged", NULL, NULL);
		if (r >= 0)
			r = register_part(bus, "burst", &mem, 1, true, &e);
		sd_bus_error_free(&e);
		for (int i = 0; r >= 0 && i < 50; i++) {
			sd_bus_message *m = NULL;
			const char *iface, *prop;
			int k = sd_bus_process(bus, &m);

			if (k > 0 && m && sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged") &&
			    sd_bus_message_read(m, "s", &iface) > 0) {
				signals++;
				if (sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
					while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
						if (sd_bus_message_read(m, "s", &prop) > 0 && len + strlen(prop) + 2 < sizeof(names))
							len += (size_t)snprintf(names + len, sizeof(names) - len, "%s ", prop);
						sd_bus_message_skip(m, "v");
						sd_bus_message_exit_container(m);
					}
					sd_bus_message_exit_container(m);
				}
			}
			sd_bus_message_unref(m);
			if (k == 0)
				sd_bus_wait(bus, 10000);
		}
		check(r >= 0 && signals == 1 && strstr(names, "State ") && strstr(names, "Memfds ") &&
			      strstr(names, "GuestMemoryBytes "),
		      "the last RegisterVMPart: one PropertiesChanged with State, Memfds and GuestMemoryBytes (%d: %s)",
		      signals, names);
		sd_bus_slot_unref(slot);
		close(first);
		close(mem);
	}

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	for (int i = 0; i < 40; i++)
		close(fds[i]);
}

/* RetrieveVMPart(name, first, count): appends the roles to roles (space
 * separated), checks each fd is a memfd of 64 KiB; returns the number of
 * files or -errno, *ret_total the total. */
static int retrieve_part(sd_bus *bus, const char *name, uint32_t first, uint32_t count, char *roles,
			 size_t size, uint32_t *ret_total, bool *all_ok, sd_bus_error *error)
{
	sd_bus_message *reply = NULL;
	const char *role;
	int fd, r, n = 0;

	r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "RetrieveVMPart", error, &reply, "suu", name, first, count);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "(sh)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0) {
		struct stat st;

		snprintf(roles + strlen(roles), size - strlen(roles), "%s ", role);
		if (fstat(fd, &st) < 0 || st.st_size != 1 << 16)
			*all_ok = false;
		n++;
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "u", ret_total);
	sd_bus_message_unref(reply);
	return r < 0 ? r : n;
}

/* After a "kexec": a VM of 40 memfds comes back in a session and is
 * retrieved in parts; a VM of 2 with RetrieveVM as before. */
static void test_retrieve_parts(void)
{
	static const char *const names[] = { "session.iommulu.1.big", "session.iommulu.1.small" };
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int sessions[2], r, lu = 0, calls = 0, got = 0;
	char roles[1024] = "", want[1024] = "";
	uint32_t total = 0;
	bool sizes_ok = true;

	sessions[0] = lud_incoming_session("big", 40, NULL);
	sessions[1] = lud_incoming_session("small", 2, NULL);
	if (!check(sessions[0] >= 0 && sessions[1] >= 0, "make two incoming fake LUO sessions"))
		return;
	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK,
						   .listen_fds = sessions, .listen_names = names, .n_listen = 2 });
	close(sessions[0]);
	close(sessions[1]);
	if (!check(r >= 0, "start a daemon that gets them back from its fd store (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, "LiveUpdated", NULL, 'b', &lu);
	check(lu && vm_state_is(bus, "big", "verified") && vm_state_is(bus, "small", "verified") &&
		      vm_u(bus, "big", "Memfds") == 40,
	      "both VMs are restored and verified, big with 40 memfds (%u)", vm_u(bus, "big", "Memfds"));

	{
		sd_bus_message *reply = NULL;
		const char *role;
		int fd;

		r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "RetrieveVM", &e, &reply, "s", "small");
		if (r >= 0)
			r = sd_bus_message_enter_container(reply, 'a', "(sh)");
		while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0)
			snprintf(roles + strlen(roles), sizeof(roles) - strlen(roles), "%s ", role);
		check(r >= 0 && strcmp(roles, "memfd:0 memfd:1 ") == 0, "RetrieveVM of a VM of 2 files as before (%s%s)",
		      roles, e.message ?: "");
		sd_bus_message_unref(reply);
		sd_bus_error_free(&e);
	}

	r = call_s(bus, "RetrieveVM", "big", &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_LIMITS_EXCEEDED) && e.message && strstr(e.message, "RetrieveVMPart"),
	      "RetrieveVM of a VM of 40 files: LimitsExceeded pointing to RetrieveVMPart (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	check(kill(env.daemon_pid, 0) == 0 && count_vms(bus) == 2, "the daemon is still on the bus");

	roles[0] = 0;
	for (uint32_t first = 0; calls < 10; calls++) {
		r = retrieve_part(bus, "big", first, 100, roles, sizeof(roles), &total, &sizes_ok, &e);
		if (r <= 0)
			break;
		check(r <= 16, "RetrieveVMPart from %u hands out %d files, at most 16", first, r);
		got += r;
		first += (uint32_t)r;
		if (first >= total)
			break;
	}
	sd_bus_error_free(&e);
	for (int i = 0; i < 40; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "memfd:%d ", i);
	check(got == 40 && total == 40 && calls == 2 && strcmp(roles, want) == 0 && sizes_ok,
	      "RetrieveVMPart hands out all 40 files in order, 64 KiB each, in 3 calls (%d of %u, %d calls)", got,
	      total, calls + 1);
	roles[0] = 0;
	r = retrieve_part(bus, "big", 40, 1, roles, sizeof(roles), &total, &sizes_ok, &e);
	check(r == 0 && total == 40, "RetrieveVMPart at the end: no files, total 40 (%d)", r);
	sd_bus_error_free(&e);
	r = retrieve_part(bus, "big", 41, 1, roles, sizeof(roles), &total, &sizes_ok, &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS), "RetrieveVMPart past the end: InvalidArgs (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);
	check(vm_state_is(bus, "big", "retrieved"), "the VM is retrieved");
	{
		/* The fake restores zero-filled memfds, so the stand-in
		 * finds no pattern in them; what counts is that it got all
		 * 40 through RetrieveVMPart. */
		static const char *const args[] = { "retrieve", "big", NULL };
		static char out[16384];
		int lines = 0;

		r = run_vmm_client(&env, args, out, sizeof(out));
		for (const char *p = out; (p = strstr(p, "retrieve memfd:")); p++)
			lines++;
		check(r == 1 && lines == 40 && strstr(out, "retrieve memfd:39: 65536 bytes"),
		      "iommu-lud-vmm-client retrieves all 40 memfds in parts (status %d, %d memfds)", r, lines);
	}
	{
		/* The kernel refuses FINISH while a device still uses the
		 * preserved translation: a named error, and the VM stays. */
		char busy[512];
		int fd;

		snprintf(busy, sizeof(busy), "%s/fake-liveupdate.finish-busy", env.dir);
		fd = open(busy, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		check(fd >= 0, "create %s", busy);
		if (fd >= 0)
			close(fd);
		r = call_s(bus, "FinishVM", "big", &e);
		check(r < 0 && error_is(&e, ERR("Busy")) && vm_state_is(bus, "big", "retrieved"),
		      "FinishVM refused by the kernel: Busy, the VM stays retrieved (%s: %s)",
		      e.name ?: "none", e.message ?: "");
		sd_bus_error_free(&e);
		unlink(busy);
	}
	r = call_s(bus, "FinishVM", "big", &e);
	check(r >= 0 && vm_state_is(bus, "big", "finished"), "FinishVM (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
}

/* A VMM that exits while the daemon handles its RegisterVM, between the
 * credentials query and pidfd_open() (widened to 1 s by the fake): the
 * VM must not stay registered with nobody watching it, or with a pidfd on
 * whatever process got the pid next. */
static void test_owner_race(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	int status = 0, n = -1, r;
	pid_t pid;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .pidfd_delay_ms = 1000 });
	if (!check(r >= 0, "start a daemon whose pidfd_open() takes 1 s (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	pid = fork();
	if (pid == 0) {
		sd_bus_message *call = NULL;
		sd_bus *b = NULL;
		int fd;

		if (lud_env_connect(&env, &b) < 0 || iommulu_memfd_create("gone", 1 << 16, &fd) < 0)
			_exit(2);
		if (sd_bus_message_new_method_call(b, &call, DEST, MPATH, MIFACE, "RegisterVM") < 0 ||
		    sd_bus_message_append(call, "sah", "gone", 1, fd) < 0 ||
		    sd_bus_message_append(call, "ahah", 0, 0) < 0 || sd_bus_message_append(call, "at", 0) < 0 ||
		    sd_bus_send(b, call, NULL) < 0 || sd_bus_flush(b) < 0)
			_exit(3);
		msleep(300);	/* the daemon has asked for our credentials by now */
		_exit(0);
	}
	waitpid(pid, &status, 0);	/* reaped: its pid is free for reuse */
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a VMM sent RegisterVM and exited");
	msleep(1500);
	for (int i = 0; i < 1000; i++) {	/* up to 10 s on a loaded host */
		n = count_vms(bus);
		if (n == 0)
			break;
		msleep(10);
	}
	check(n == 0, "the VM of a VMM that exited during RegisterVM is not kept (%d VM(s))", n);
	check(kill(env.daemon_pid, 0) == 0, "the daemon is still running");
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
}

static void test_bad_config(void)
{
	LudEnv env;
	int r;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false,
						   .config = "[Daemon]\nFailurePolicy=maybe\n" });
	check(r < 0, "a malformed config makes the daemon refuse to start");
	lud_env_stop(&env);
}

/* ---- a SIGKILL at every step, then a restart from the fd store ---------- */

#define KILL_MEMFDS 40
#define KILL_OPTIONS (&(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK })

typedef struct KillCase {
	const char *what;
	const char *vm;
	size_t n_memfds;	/* of the VM */
	const char *before, *after;	/* its State before and after the call ("absent": unknown) */
	bool (*setup)(sd_bus *bus, const struct KillCase *c, const int *fds);
	int (*call)(sd_bus *bus, const struct KillCase *c, const int *fds, sd_bus_error *e);
} KillCase;

static bool kill_register(sd_bus *bus, const KillCase *c, const int *fds)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r = register_vm(bus, c->vm, fds, c->n_memfds, NULL, 0, NULL, 0, &e, NULL);

	if (r < 0)
		printf("# RegisterVM %s: %s\n", c->vm, e.message ?: strerror(-r));
	sd_bus_error_free(&e);
	return r >= 0;
}

static bool kill_register_preserve(sd_bus *bus, const KillCase *c, const int *fds)
{
	return kill_register(bus, c, fds) && call_s(bus, "PreserveVM", c->vm, NULL) >= 0;
}

static int kill_call_register(sd_bus *bus, const KillCase *c, const int *fds, sd_bus_error *e)
{
	return register_vm(bus, c->vm, fds, c->n_memfds, NULL, 0, NULL, 0, e, NULL);
}

/* The rest of a registration in parts of 16, from what the VM has. */
static int register_rest(sd_bus *bus, const char *vm, const int *fds, size_t have, size_t n, sd_bus_error *e)
{
	int r = 0;

	for (size_t i = have; r >= 0 && i < n; i += 16)
		r = register_part(bus, vm, fds + i, n - i < 16 ? n - i : 16, i + 16 >= n, e);
	return r;
}

static int kill_call_parts(sd_bus *bus, const KillCase *c, const int *fds, sd_bus_error *e)
{
	return register_rest(bus, c->vm, fds, 0, c->n_memfds, e);
}

static int kill_call_method(sd_bus *bus, const KillCase *c, const int *fds, sd_bus_error *e)
{
	/* what: "<Method> ..." */
	char method[32];

	snprintf(method, sizeof(method), "%.*s", (int)strcspn(c->what, " "), c->what);
	return call_s(bus, method, c->vm, e);
}

static int kill_call_preserve_all(sd_bus *bus, const KillCase *c, const int *fds, sd_bus_error *e)
{
	sd_bus_message *reply = NULL;
	const char *name = NULL, *res = NULL;
	int r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", e, &reply, NULL);

	if (r >= 0)
		r = sd_bus_message_read(reply, "a(ss)", 1, &name, &res);
	if (r >= 0 && (!res || strcmp(res, "ok") != 0))
		r = -EBADE;
	sd_bus_message_unref(reply);
	return r;
}

/* After a restart: is vm in a consistent state, and which?  Consistent: as
 * registered, with all n (or, while registering, a whole number of parts
 * of) memfds, its memory, the test as its owner and exactly its files,
 * owner and record in the fd store; preserved with a session and that
 * session and its record besides; or unknown with an empty fd store. */
static bool vm_consistent(LudEnv *env, sd_bus *bus, const char *vm, size_t n, char *state, size_t size)
{
	char *st = vm_string(bus, vm, "State"), *session = vm_string(bus, vm, "Session"), *names = NULL;
	uint32_t memfds = vm_u(bus, vm, "Memfds"), owner = vm_u(bus, vm, "OwnerPID");
	uint64_t bytes = 0;
	char path[128];
	int want = -1, got;
	bool ok = true;

	snprintf(path, sizeof(path), "%s/vm/%s", MPATH, vm);
	sd_bus_get_property_trivial(bus, DEST, path, VIFACE, "GuestMemoryBytes", NULL, 't', &bytes);
	snprintf(state, size, "%s", st && strcmp(st, "(unreadable)") != 0 ? st : "absent");
	if (strcmp(state, "absent") == 0)
		want = 0;
	else if (strcmp(state, "registered") == 0 || strcmp(state, "registering") == 0 ||
		 strcmp(state, "preserved") == 0) {
		bool preserved = strcmp(state, "preserved") == 0;

		want = (int)memfds + 2 + (preserved ? 2 : 0);
		ok = (strcmp(state, "registering") == 0 ? memfds % 16 == 0 && memfds > 0 && memfds < n : memfds == n) &&
		     bytes == (uint64_t)memfds << 16 && owner == (uint32_t)getpid() &&
		     (preserved ? session && session[0] : session && !session[0]);
		if (!ok)
			printf("# VM %s %s: Memfds %u, GuestMemoryBytes %" PRIu64 ", OwnerPID %u (want %d), Session '%s'\n",
			       vm, state, memfds, bytes, owner, (int)getpid(), session ?: "");
	} else
		ok = false;
	got = fdstore_settled(env, want, &names);
	if (got != want) {
		printf("# VM %s %s: fd store holds %d entries, want %d: %s\n", vm, state, got, want, oneline(names));
		ok = false;
	}
	free(names);
	free(st);
	free(session);
	return ok;
}

/* Back to an empty registry and fd store. */
static void kill_cleanup(LudEnv *env, sd_bus *bus, const char *vm)
{
	(void)call_s(bus, "UnpreserveVM", vm, NULL);
	(void)call_s(bus, "UnregisterVM", vm, NULL);
	(void)fdstore_settled(env, 0, NULL);
}

/* What a VM restarted in state shows it can still do: a registering one
 * completes its registration, a registered one is preserved, a preserved
 * one is unpreserved back to registered (with its files) and preserved
 * again. */
static bool kill_usable(LudEnv *env, sd_bus *bus, const KillCase *c, const int *fds, const char *state)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char now[32];
	int r = 0;

	if (c->call == kill_call_register) {
		/* The VMM got no answer (or got one just before the kill) and
		 * retries: its own VM must not be AlreadyExists. */
		r = c->call(bus, c, fds, &e);
		if (r >= 0 && (!vm_consistent(env, bus, c->vm, c->n_memfds, now, sizeof(now)) ||
			       strcmp(now, "registered") != 0))
			r = -EBADE;
		state = "registered";
	} else if (strcmp(state, "registering") == 0) {
		r = register_rest(bus, c->vm, fds, vm_u(bus, c->vm, "Memfds"), c->n_memfds, &e);
		state = "registered";
	} else if (strcmp(state, "preserved") == 0) {
		r = call_s(bus, "UnpreserveVM", c->vm, &e);
		if (r >= 0 && (!vm_consistent(env, bus, c->vm, c->n_memfds, now, sizeof(now)) ||
			       strcmp(now, "registered") != 0))
			r = -EBADE;
	}
	if (r >= 0 && strcmp(state, "absent") != 0)
		r = call_s(bus, "PreserveVM", c->vm, &e);
	if (r >= 0 && strcmp(state, "absent") != 0 &&
	    (!vm_consistent(env, bus, c->vm, c->n_memfds, now, sizeof(now)) || strcmp(now, "preserved") != 0))
		r = -EBADE;
	if (r < 0)
		printf("# VM %s, %s after the restart, is not usable: %s\n", c->vm, state, e.message ?: strerror(-r));
	sd_bus_error_free(&e);
	return r >= 0;
}

static void test_kill_case(LudEnv *env, sd_bus **bus, const KillCase *c, const int *fds)
{
	unsigned kills = 0, n_before = 0, n_after = 0, bad = 0;
	bool done = false;

	for (int k = 0; k < 200 && !done; k++) {
		sd_bus_error e = SD_BUS_ERROR_NULL;
		char state[32];
		bool killed;
		int r;

		if (c->setup && !c->setup(*bus, c, fds)) {
			bad++;
			break;
		}
		lud_env_kill_after(env, k);
		r = c->call(*bus, c, fds, &e);
		sd_bus_error_free(&e);
		/* A call the kill cut off fails (no reply); the daemon may
		 * take a moment to finish dying on a loaded machine. */
		killed = lud_env_reap_daemon(env, r < 0 ? 10000 : 50) == 128 + SIGKILL;
		lud_env_kill_after(env, -1);
		if (!killed) {
			/* The call went through: a SIGKILL right after its
			 * reply must find it done. */
			done = true;
			lud_env_kill_daemon(env);
		} else
			kills++;
		r = lud_env_restart_daemon(env, KILL_OPTIONS);
		if (r < 0) {
			printf("# %s: restart after step %d failed: %s\n", c->what, k, strerror(-r));
			bad++;
			break;
		}
		if (!vm_consistent(env, *bus, c->vm, c->n_memfds, state, sizeof(state)) ||
		    (strcmp(state, c->before) != 0 && strcmp(state, c->after) != 0 && strcmp(state, "registering") != 0) ||
		    (done && strcmp(state, c->after) != 0)) {
			printf("# %s: killed %s step %d: VM %s is %s\n", c->what, killed ? "at" : "after the reply, past",
			       k, c->vm, state);
			bad++;
		} else if (!kill_usable(env, *bus, c, fds, state))
			bad++;
		n_before += strcmp(state, c->before) == 0;
		n_after += strcmp(state, c->after) == 0;
		kill_cleanup(env, *bus, c->vm);
	}
	check(done && bad == 0 && kills >= 3 && n_before > 0 && n_after > 0,
	      "%s: SIGKILL at each of its %u steps and after its reply, then a restart with the fd store: VM %s is "
	      "%s (%u times) or %s (%u), consistent and usable (%u bad)",
	      c->what, kills, c->vm, c->before, n_before, c->after, n_after, bad);
}

/* The VMM exits while the daemon is away: its registered VM goes at the
 * restart, as it would have with the daemon there. */
static void test_owner_exits_while_away(LudEnv *env, sd_bus *bus, const int *fds)
{
	int p[2], status = 0, r;
	pid_t pid;
	char c = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		sd_bus *b = NULL;
		sd_bus_error e = SD_BUS_ERROR_NULL;

		close(p[1]);
		if (lud_env_connect(env, &b) < 0 || register_vm(b, "orphan", fds, 1, NULL, 0, NULL, 0, &e, NULL) < 0)
			_exit(1);
		if (read(p[0], &c, 1) < 0)
			_exit(2);
		_exit(0);
	}
	close(p[0]);
	for (int i = 0; i < 300 && vm_u(bus, "orphan", "Memfds") != 1; i++)
		msleep(10);
	check(vm_state_is(bus, "orphan", "registered") && fdstore_settled(env, 3, NULL) == 3,
	      "another process registers VM orphan (3 fd store entries)");
	lud_env_kill_daemon(env);
	close(p[1]);
	waitpid(pid, &status, 0);
	r = lud_env_restart_daemon(env, KILL_OPTIONS);
	for (int i = 0; i < 300 && count_vms(bus) != 0; i++)
		msleep(10);
	check(r >= 0 && count_vms(bus) == 0 && fdstore_settled(env, 0, NULL) == 0,
	      "its VMM exits while the daemon is killed: after the restart the VM is dropped and the fd store empty");
}

/* Registrations survive a SIGKILL or a restart at any point: every VM is
 * back, registered (with its files, properties and owner) or preserved,
 * never half of either. */
static void test_kill_steps(void)
{
	static const KillCase cases[] = {
		{ "RegisterVM of 2 memfds", "kreg", 2, "absent", "registered", NULL, kill_call_register },
		{ "RegisterVMPart x 3 (40 memfds)", "kparts", KILL_MEMFDS, "absent", "registered", NULL,
		  kill_call_parts },
		{ "UnregisterVM", "kunreg", 2, "registered", "absent", kill_register, kill_call_method },
		{ "PreserveVM", "kpres", 2, "registered", "preserved", kill_register, kill_call_method },
		{ "PreserveAll", "kpall", 2, "registered", "preserved", kill_register, kill_call_preserve_all },
		{ "UnpreserveVM", "kunpres", 2, "preserved", "registered", kill_register_preserve, kill_call_method },
	};
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[KILL_MEMFDS], r;

	r = lud_env_start(&env, KILL_OPTIONS);
	if (!check(r >= 0, "start a daemon with a fake LUO and fd store for the crash tests (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	for (int i = 0; i < KILL_MEMFDS; i++)
		iommulu_memfd_create("kill", 1 << 16, &fds[i]);

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		test_kill_case(&env, &bus, &cases[i], fds);

	/* A plain restart (SIGTERM, no kexec queued) keeps them too. */
	r = register_vm(bus, "kterm", fds, 2, NULL, 0, NULL, 0, &e, NULL);
	sd_bus_error_free(&e);
	if (r >= 0)
		r = lud_env_stop_daemon(&env);
	if (r >= 0)
		r = lud_env_restart_daemon(&env, KILL_OPTIONS);
	check(r >= 0 && vm_state_is(bus, "kterm", "registered") && vm_u(bus, "kterm", "Memfds") == 2 &&
		      fdstore_settled(&env, 4, NULL) == 4,
	      "systemctl restart (SIGTERM): VM kterm is registered again with its 2 memfds");
	kill_cleanup(&env, bus, "kterm");

	/* One open file for one VM: systemd keeps one copy of it. */
	r = register_vm(bus, "share1", fds, 1, NULL, 0, NULL, 0, &e, NULL);
	sd_bus_error_free(&e);
	if (r >= 0)
		r = register_vm(bus, "share2", fds, 1, NULL, 0, NULL, 0, &e, NULL);
	check(r < 0 && error_is(&e, ERR("NotEligible")) && e.message && strstr(e.message, "already registered for VM share1"),
	      "with an fd store, a file of one VM is refused for another (%s: %s)", e.name ?: "-", e.message ?: "");
	sd_bus_error_free(&e);
	kill_cleanup(&env, bus, "share1");

	/* The same files from another process are not a retry. */
	r = register_vm(bus, "mine", &fds[20], 2, NULL, 0, NULL, 0, &e, NULL);
	sd_bus_error_free(&e);
	{
		pid_t pid = fork();
		int status = -1;

		if (pid == 0) {
			sd_bus *b = NULL;
			sd_bus_error ce = SD_BUS_ERROR_NULL;

			if (lud_env_connect(&env, &b) < 0)
				_exit(2);
			_exit(register_vm(b, "mine", &fds[20], 2, NULL, 0, NULL, 0, &ce, NULL) < 0 &&
					      error_is(&ce, ERR("AlreadyExists")) ? 0 : 1);
		}
		if (pid > 0)
			waitpid(pid, &status, 0);
		check(r >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && vm_u(bus, "mine", "OwnerPID") == (uint32_t)getpid(),
		      "RegisterVM of a VM with its very files from another process: AlreadyExists, the owner stays");
	}
	kill_cleanup(&env, bus, "mine");

	test_owner_exits_while_away(&env, bus, &fds[10]);

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	for (int i = 0; i < KILL_MEMFDS; i++)
		close(fds[i]);
}

/* ---- RegisterVMWithOptions: an owner pidfd, state memfds ------------------ */

/* RegisterVMWithOptions(name, memfds, [], [], [], options): options holds
 * OwnerPIDFD if owner >= 0, StateMemfds if n_state, and one more entry
 * "<key>" of type "s" if bad_key (an unknown option). */
static int register_with_options(sd_bus *bus, const char *name, const int *memfds, size_t n, int owner,
				 const uint32_t *state, size_t n_state, const char *bad_key, sd_bus_error *e)
{
	sd_bus_message *call = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &call, DEST, MPATH, MIFACE, "RegisterVMWithOptions");
	if (r >= 0)
		r = sd_bus_message_append(call, "s", name);
	APPEND_FDS(memfds, n);	/* register_vm()'s */
	if (r >= 0)
		r = sd_bus_message_append(call, "ahahat", 0, 0, 0);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "{sv}");
	if (r >= 0 && owner >= 0)
		r = sd_bus_message_append(call, "{sv}", "OwnerPIDFD", "h", owner);
	if (r >= 0 && n_state) {
		r = sd_bus_message_open_container(call, 'e', "sv");
		if (r >= 0)
			r = sd_bus_message_append(call, "s", "StateMemfds");
		if (r >= 0)
			r = sd_bus_message_open_container(call, 'v', "au");
		if (r >= 0)
			r = sd_bus_message_append_array(call, 'u', state, n_state * sizeof(uint32_t));
		if (r >= 0)
			r = sd_bus_message_close_container(call);
		if (r >= 0)
			r = sd_bus_message_close_container(call);
	}
	if (r >= 0 && bad_key)
		r = sd_bus_message_append(call, "{sv}", bad_key, "s", "x");
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = sd_bus_call(bus, call, 0, e, NULL);
	sd_bus_message_unref(call);
	return r;
}

static char *vm_state_memfds(sd_bus *bus, const char *name)
{
	sd_bus_message *reply = NULL;
	char path[128], *out = NULL;
	const void *a = NULL;
	size_t bytes = 0, len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/vm/%s", MPATH, name);
	if (sd_bus_get_property(bus, DEST, path, VIFACE, "StateMemfds", NULL, &reply, "au") < 0 ||
	    sd_bus_message_read_array(reply, 'u', &a, &bytes) < 0) {
		sd_bus_message_unref(reply);
		return strdup("(unreadable)");
	}
	f = open_memstream(&out, &len);
	for (size_t i = 0; f && i < bytes / sizeof(uint32_t); i++)
		fprintf(f, "%s%" PRIu32, i ? "," : "", ((const uint32_t *)a)[i]);
	if (f)
		fclose(f);
	sd_bus_message_unref(reply);
	return out;
}

static uint64_t vm_t(sd_bus *bus, const char *name, const char *prop)
{
	char path[128];
	uint64_t t = 0;

	snprintf(path, sizeof(path), "%s/vm/%s", MPATH, name);
	(void)sd_bus_get_property_trivial(bus, DEST, path, VIFACE, prop, NULL, 't', &t);
	return t;
}

/* GuestMemoryBytes 1 MiB, StateMemfds "1", OwnerPID owner: the helper's VM. */
static bool helped_vm_ok(sd_bus *bus, pid_t owner, const char *state)
{
	char *st = vm_state_memfds(bus, "helped");
	bool ok = vm_state_is(bus, "helped", state) && vm_u(bus, "helped", "Memfds") == 2 &&
		  vm_t(bus, "helped", "GuestMemoryBytes") == 1 << 20 && st && strcmp(st, "1") == 0 &&
		  vm_u(bus, "helped", "OwnerPID") == (uint32_t)owner;

	if (!ok)
		printf("# helped: Memfds %u, GuestMemoryBytes %" PRIu64 ", StateMemfds %s, OwnerPID %u (want %d)\n",
		       vm_u(bus, "helped", "Memfds"), vm_t(bus, "helped", "GuestMemoryBytes"), st ?: "",
		       vm_u(bus, "helped", "OwnerPID"), (int)owner);
	free(st);
	return ok;
}

static void test_register_with_options(void)
{
	static const uint32_t state1[] = { 1 }, state0[] = { 0 }, state5[] = { 5 };
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fds[2] = { -1, -1 }, p[2] = { -1, -1 }, vmm_pidfd = -1, status = -1, r;
	pid_t vmm, helper;

	r = lud_env_start(&env, KILL_OPTIONS);
	if (!check(r >= 0, "start a daemon with a fake LUO and fd store for RegisterVMWithOptions (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	iommulu_memfd_create("ram", 1 << 20, &fds[0]);
	iommulu_memfd_create("state", 1 << 16, &fds[1]);

	/* The VMM: a process that lives until the pipe closes. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return;
	vmm = fork();
	if (vmm == 0) {
		char c;

		close(p[1]);
		_exit(read(p[0], &c, 1) < 0);
	}
	close(p[0]);
	vmm_pidfd = (int)syscall(SYS_pidfd_open, vmm, 0);

	/* A helper registers the VM for it and exits. */
	helper = fork();
	if (helper == 0) {
		sd_bus *b = NULL;
		sd_bus_error ce = SD_BUS_ERROR_NULL;

		if (lud_env_connect(&env, &b) < 0)
			_exit(2);
		r = register_with_options(b, "helped", fds, 2, vmm_pidfd, state1, 1, NULL, &ce);
		if (r < 0)
			printf("# helper: %s: %s\n", ce.name ?: "-", ce.message ?: strerror(-r));
		_exit(r < 0);
	}
	waitpid(helper, &status, 0);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "a helper registers VM helped with OwnerPIDFD of its VMM and StateMemfds [1], and exits");
	msleep(200);
	check(helped_vm_ok(bus, vmm, "registered"),
	      "the VM stays after the helper exits: owner the VMM, GuestMemoryBytes 1 MiB without the 64 KiB state "
	      "memfd, StateMemfds [1]");

	r = register_with_options(bus, "helped", fds, 2, vmm_pidfd, state1, 1, NULL, &e);
	check(r >= 0, "an identical RegisterVMWithOptions for the same owner is a retry: success (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "helped", fds, 2, vmm_pidfd, NULL, 0, NULL, &e);
	check(r < 0 && error_is(&e, ERR("AlreadyExists")), "the same files without StateMemfds: AlreadyExists (%s)",
	      e.name ?: "none");
	sd_bus_error_free(&e);

	lud_env_kill_daemon(&env);
	r = lud_env_restart_daemon(&env, KILL_OPTIONS);
	check(r >= 0 && helped_vm_ok(bus, vmm, "registered"),
	      "SIGKILL and restart: the VM comes back with its owner, StateMemfds and GuestMemoryBytes");
	r = call_s(bus, "PreserveVM", "helped", &e);
	sd_bus_error_free(&e);
	lud_env_kill_daemon(&env);
	if (r >= 0)
		r = lud_env_restart_daemon(&env, KILL_OPTIONS);
	check(r >= 0 && helped_vm_ok(bus, vmm, "preserved"), "preserved, SIGKILL and restart: the same");
	(void)call_s(bus, "UnpreserveVM", "helped", NULL);

	close(p[1]);	/* the VMM exits */
	waitpid(vmm, &status, 0);
	for (int i = 0; i < 300 && count_vms(bus) != 0; i++)
		msleep(10);
	check(count_vms(bus) == 0 && fdstore_settled(&env, 0, NULL) == 0,
	      "the VMM named by OwnerPIDFD exits: its VM is dropped, the fd store empty");

	/* Refusals. */
	r = register_with_options(bus, "bad", fds, 2, vmm_pidfd, NULL, 0, NULL, &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_UNIX_PROCESS_ID_UNKNOWN),
	      "OwnerPIDFD of a process that exited: UnixProcessIdUnknown (%s: %s)", e.name ?: "-", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "bad", fds, 1, fds[1], NULL, 0, NULL, &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS) && strstr(e.message, "not a pidfd"),
	      "OwnerPIDFD that is a memfd: InvalidArgs (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "bad", fds, 2, -1, state5, 1, NULL, &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS) && strstr(e.message, "#5"),
	      "StateMemfds naming a memfd the call does not have: InvalidArgs (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "bad", fds, 1, -1, state0, 1, NULL, &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS) && strstr(e.message, "guest-RAM"),
	      "StateMemfds naming every memfd: InvalidArgs (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "bad", fds, 1, -1, NULL, 0, "Colour", &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS) && strstr(e.message, "Colour"),
	      "an unknown option: InvalidArgs naming it (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	r = register_with_options(bus, "bad", fds, 1, -1, NULL, 0, "Last", &e);
	check(r < 0 && error_is(&e, SD_BUS_ERROR_INVALID_ARGS) && strstr(e.message, "type 'b'"),
	      "an option of the wrong type: InvalidArgs (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	check(count_vms(bus) == 0 && fdstore_settled(&env, 0, NULL) == 0, "... none of them kept anything");

	/* Without options it is RegisterVM, owned by the caller. */
	r = register_with_options(bus, "plain", fds, 2, -1, NULL, 0, NULL, &e);
	check(r >= 0 && vm_u(bus, "plain", "OwnerPID") == (uint32_t)getpid() &&
		      vm_t(bus, "plain", "GuestMemoryBytes") == (1 << 20) + (1 << 16),
	      "RegisterVMWithOptions without options: the caller owns the VM, every memfd is guest RAM (%s)",
	      e.message ?: "");
	sd_bus_error_free(&e);
	kill_cleanup(&env, bus, "plain");

	close(vmm_pidfd);
	close(fds[0]);
	close(fds[1]);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
}

/* A logind that hands out inhibitor fds (Inhibit), in a child process. */
static int fake_inhibit(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	int p[2], r;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	r = sd_bus_reply_method_return(m, "h", p[0]);
	close(p[0]);	/* p[1] stays open: the inhibitor is held until the daemon closes its end */
	return r;
}

static const sd_bus_vtable fake_logind_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Inhibit", "ssss", "h", fake_inhibit, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_VTABLE_END
};

static pid_t start_fake_logind(LudEnv *env)
{
	sd_bus *b = NULL;
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	if (lud_env_connect(env, &b) < 0 ||
	    sd_bus_add_object_vtable(b, NULL, "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
				     fake_logind_vtable, NULL) < 0 ||
	    sd_bus_request_name(b, "org.freedesktop.login1", 0) < 0)
		_exit(1);
	for (;;)
		if (sd_bus_process(b, NULL) == 0 && sd_bus_wait(b, UINT64_MAX) < 0)
			_exit(0);
}

/* A VM taken back from the fd store counts for FailurePolicy=refuse like
 * any other: one that cannot be preserved after the restart blocks the
 * kexec instead of being lost with it. */
static void test_restored_blocks(void)
{
	/* No policy: the fake logind must own its name on this bus. */
#define BLOCK_OPTIONS (&(LudEnvOptions){ .fake_luo = true, .notify = LUD_NOTIFY_ACK })
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char path[128], *why = NULL, *blocked = NULL;
	pid_t logind;
	int fd = -1, r;

	r = lud_env_start(&env, BLOCK_OPTIONS);
	if (!check(r >= 0, "start a daemon with a fake LUO, fd store and logind (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	logind = start_fake_logind(&env);
	for (int i = 0; i < 300 && sd_bus_get_name_creds(bus, "org.freedesktop.login1", 0, NULL) < 0; i++)
		msleep(10);
	iommulu_memfd_create("blk", 1 << 16, &fd);
	r = register_vm(bus, "blk", &fd, 1, NULL, 0, NULL, 0, &e, NULL);
	sd_bus_error_free(&e);
	lud_env_kill_daemon(&env);
	/* The kernel the daemon comes back on has no LUO (liveupdate=off). */
	snprintf(path, sizeof(path), "%s/fake-liveupdate", env.dir);
	unlink(path);
	if (r >= 0)
		r = lud_env_restart_daemon(&env, BLOCK_OPTIONS);
	why = vm_string(bus, "blk", "IneligibleReason");
	sd_bus_get_property_string(bus, DEST, MPATH, MIFACE, "ShutdownBlockedBy", NULL, &blocked);
	check(r >= 0 && vm_state_is(bus, "blk", "registered") && why && strstr(why, "no /dev/liveupdate") && blocked &&
		      strstr(blocked, "VM blk cannot be preserved"),
	      "a VM registered before a SIGKILL and ineligible after the restart blocks the kexec (%s; %s)", why ?: "",
	      blocked ?: "");
	free(why);
	free(blocked);
	sd_bus_flush_close_unref(bus);
	kill(logind, SIGTERM);
	waitpid(logind, NULL, 0);
	lud_env_stop(&env);
	close(fd);
#undef BLOCK_OPTIONS
}

/* ---- polkit: root bypasses it, others are allowed or denied ------------ */

/* A fake polkit authority on the private bus: CheckAuthorization says yes
 * to the actions in allow (comma-separated) and appends one line per
 * question, "<action> vm=<detail>", to log.  Runs in a child until killed. */
static int fake_polkit_check(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	const char *allow = userdata, *kind, *action, *key, *value, *vm = "", *cancel;
	uint32_t flags;
	FILE *f;
	char *log = getenv("FAKE_POLKIT_LOG");
	size_t n;
	int r;

	r = sd_bus_message_enter_container(msg, 'r', "sa{sv}");
	if (r >= 0)
		r = sd_bus_message_read(msg, "s", &kind);
	if (r >= 0)
		r = sd_bus_message_skip(msg, "a{sv}");
	if (r >= 0)
		r = sd_bus_message_exit_container(msg);
	if (r >= 0)
		r = sd_bus_message_read(msg, "s", &action);
	if (r >= 0)
		r = sd_bus_message_enter_container(msg, 'a', "{ss}");
	while (r >= 0 && (r = sd_bus_message_read(msg, "{ss}", &key, &value)) > 0)
		if (strcmp(key, "vm") == 0)
			vm = value;
	if (r >= 0)
		r = sd_bus_message_exit_container(msg);
	if (r >= 0)
		r = sd_bus_message_read(msg, "us", &flags, &cancel);
	if (r < 0)
		return r;
	n = strlen(action);
	bool yes = false;
	for (const char *p = allow; (p = strstr(p, action)); p += n)
		if ((p == allow || p[-1] == ',') && (p[n] == ',' || !p[n]))
			yes = true;
	if (log && (f = fopen(log, "ae"))) {
		fprintf(f, "%s vm=%s %s\n", action, vm, strcmp(kind, "system-bus-name") == 0 ? "bus-name" : kind);
		fclose(f);
	}
	return sd_bus_reply_method_return(msg, "(bba{ss})", yes, false, 0);
}

static pid_t start_fake_polkit(LudEnv *env, const char *allow, const char *log)
{
	static const sd_bus_vtable vtable[] = {
		SD_BUS_VTABLE_START(0),
		SD_BUS_METHOD("CheckAuthorization", "(sa{sv})sa{ss}us", "(bba{ss})", fake_polkit_check, 0),
		SD_BUS_VTABLE_END
	};
	pid_t pid = fork();

	if (pid == 0) {
		sd_bus *b = NULL;

		setenv("FAKE_POLKIT_LOG", log, 1);
		if (lud_env_connect(env, &b) < 0 ||
		    sd_bus_add_object_vtable(b, NULL, "/org/freedesktop/PolicyKit1/Authority",
					     "org.freedesktop.PolicyKit1.Authority", vtable, (void *)allow) < 0 ||
		    sd_bus_request_name(b, "org.freedesktop.PolicyKit1", 0) < 0)
			_exit(1);
		for (;;) {
			int r = sd_bus_process(b, NULL);

			if (r < 0)
				_exit(2);
			if (r == 0)
				sd_bus_wait(b, UINT64_MAX);
		}
	}
	return pid;
}

/* In a child running as uid, with a bus connection of its own: run fn, whose
 * result (0 ok) and message come back through a pipe. */
typedef int (*as_uid_fn)(sd_bus *b, char *out, size_t size);
static int as_uid(LudEnv *env, uid_t uid, as_uid_fn fn, char *out, size_t size)
{
	int p[2], status = 0;
	ssize_t k;
	pid_t pid;

	if (pipe(p) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		sd_bus *b = NULL;
		char buf[2048] = "";

		close(p[0]);
		if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
			_exit(100);
		if (lud_env_connect(env, &b) < 0)
			_exit(101);
		int r = fn(b, buf, sizeof(buf));
		if (write(p[1], buf, strlen(buf)) < 0)
			_exit(102);
		_exit(r);
	}
	close(p[1]);
	k = read(p[0], out, size - 1);
	out[k > 0 ? k : 0] = 0;
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* uid 65534, polkit allowing manage-vms only: its VMM's VM (pkvm) can be
 * preserved (the call gets through: no /dev/liveupdate here), PreserveAll
 * and StageKernel are denied, and it registers a VM of its own. */
static int polkit_allowed_user(sd_bus *b, char *out, size_t size)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int fd = -1, bits = 0, r;

	r = call_s(b, "PreserveVM", "pkvm", &e);
	bits |= (r < 0 && error_is(&e, "org.iommulu.LiveUpdate1.Error.KernelUnsupported")) << 0;
	snprintf(out, size, "PreserveVM: %s|", e.name ?: "ok");
	sd_bus_error_free(&e);
	r = sd_bus_call_method(b, DEST, MPATH, MIFACE, "PreserveAll", &e, NULL, NULL);
	bits |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED) &&
		 strstr(e.message, "org.iommulu.LiveUpdate1.preserve-all")) << 1;
	snprintf(out + strlen(out), size - strlen(out), "PreserveAll: %s|", e.message ?: "ok");
	sd_bus_error_free(&e);
	r = sd_bus_call_method(b, DEST, MPATH, MIFACE, "StageKernel", &e, NULL, "hahahsa{sv}", 0, 0, 0, "", 0);
	bits |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED) &&
		 strstr(e.message, "org.iommulu.LiveUpdate1.stage-kernel")) << 2;
	snprintf(out + strlen(out), size - strlen(out), "StageKernel: %s|", e.message ?: "ok");
	sd_bus_error_free(&e);
	iommulu_memfd_create("pkown", 1 << 16, &fd);
	r = register_vm(b, "pkown", &fd, 1, NULL, 0, NULL, 0, &e, NULL);
	bits |= (r >= 0) << 3;
	snprintf(out + strlen(out), size - strlen(out), "RegisterVM: %s|", e.message ?: "ok");
	sd_bus_error_free(&e);
	/* Naming a process of another user (root's: the test) as the owner. */
	{
		int other = -1, root_pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);

		iommulu_memfd_create("pkroot", 1 << 16, &other);
		r = register_with_options(b, "pkroot", &other, 1, root_pidfd, NULL, 0, NULL, &e);
		bits |= (r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED) && strstr(e.message, "OwnerPIDFD") &&
			 strstr(e.message, "uid 0")) << 4;
		snprintf(out + strlen(out), size - strlen(out), "RegisterVM OwnerPIDFD of root: %s",
			 e.message ?: "ok");
		sd_bus_error_free(&e);
		close(other);
		close(root_pidfd);
	}
	return bits == 0x1f ? 0 : 10 + bits;
}

/* PreserveVM pkvm must be AccessDenied with polkit_expect in its message:
 * uid 1 allowed by polkit while pkvm's VMM runs as 65534, or anyone
 * without polkit on the bus. */
static const char *polkit_expect;
static int polkit_denied(sd_bus *b, char *out, size_t size)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r = call_s(b, "PreserveVM", "pkvm", &e), ok;

	ok = r < 0 && error_is(&e, SD_BUS_ERROR_ACCESS_DENIED) && strstr(e.message, polkit_expect);
	snprintf(out, size, "%s: %s", e.name ?: "ok", e.message ?: "");
	sd_bus_error_free(&e);
	return ok ? 0 : 1;
}

static void test_polkit(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char log[128], out[2048];
	pid_t vmm, polkit;
	int fd = -1, vmm_pidfd, before, r;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = false });
	if (!check(r >= 0, "start a daemon on a bus with a fake polkit (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	snprintf(log, sizeof(log), "%s/polkit.log", env.dir);
	polkit = start_fake_polkit(&env, "org.iommulu.LiveUpdate1.manage-vms", log);
	for (int i = 0; i < 100; i++) {
		if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
				       "GetNameOwner", NULL, NULL, "s", "org.freedesktop.PolicyKit1") >= 0)
			break;
		msleep(20);
	}

	/* pkvm: registered by root for a VMM that runs as uid 65534 */
	vmm = fork();
	if (vmm == 0) {
		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(1);
		pause();
		_exit(0);
	}
	msleep(100);
	vmm_pidfd = (int)syscall(SYS_pidfd_open, vmm, 0);
	iommulu_memfd_create("pkvm", 1 << 16, &fd);
	r = register_with_options(bus, "pkvm", &fd, 1, vmm_pidfd, NULL, 0, NULL, &e);
	check(r >= 0 && lud_count_lines(log, "") == 0,
	      "root registers pkvm for a VMM of uid 65534 without polkit being asked (%s)", e.message ?: "");
	sd_bus_error_free(&e);

	r = as_uid(&env, 65534, polkit_allowed_user, out, sizeof(out));
	check(r == 0, "uid 65534, polkit allowing manage-vms: PreserveVM of its VMM's VM gets through, PreserveAll "
	      "and StageKernel are AccessDenied naming their actions, RegisterVM of its own VM succeeds, naming "
	      "root's process as OwnerPIDFD is AccessDenied (%d: %s)", r, out);
	check(lud_count_lines(log, "org.iommulu.LiveUpdate1.manage-vms vm=pkvm bus-name") >= 1 &&
		      lud_count_lines(log, "org.iommulu.LiveUpdate1.preserve-all vm= ") == 1 &&
		      lud_count_lines(log, "org.iommulu.LiveUpdate1.stage-kernel vm= ") == 1 &&
		      lud_count_lines(log, "org.iommulu.LiveUpdate1.manage-vms vm=pkown ") == 1,
	      "polkit was asked about each action, with the VM as detail and the caller's bus name as subject");
	polkit_expect = "another user";
	r = as_uid(&env, 1, polkit_denied, out, sizeof(out));
	check(r == 0, "uid 1, allowed by polkit: AccessDenied for a VM whose VMM runs as another user (%s)", out);

	before = lud_count_lines(log, "");
	r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", &e, NULL, NULL);
	check(r >= 0 && lud_count_lines(log, "") == before, "root: PreserveAll without asking polkit (%s)",
	      e.message ?: "");
	sd_bus_error_free(&e);

	kill(polkit, SIGKILL);
	waitpid(polkit, NULL, 0);
	msleep(100);
	polkit_expect = "polkit: org.freedesktop.DBus.Error.ServiceUnknown";
	r = as_uid(&env, 65534, polkit_denied, out, sizeof(out));
	check(r == 0, "no polkit on the bus: non-root callers are AccessDenied, saying polkit could not answer (%s)",
	      out);

	kill(vmm, SIGKILL);
	waitpid(vmm, NULL, 0);
	close(vmm_pidfd);
	close(fd);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
}

/* ---- PropertiesChanged: exactly the properties that changed ------------ */

typedef struct PropDef {
	const char *name, *type;
} PropDef;

static const PropDef manager_props[] = {
	{ "LiveUpdated", "b" }, { "Generation", "t" }, { "FailurePolicy", "s" }, { "MaxVMs", "u" },
	{ "MaxFdsPerVM", "u" }, { "ShutdownBlockedBy", "s" }, { "StagedKernel", "s" },
	{ "StagedKernelAdopts", "s" }, { "StagedKernelProblem", "s" },
};
static const PropDef vm_props[] = {
	{ "State", "s" }, { "Devices", "as" }, { "HWPTs", "at" }, { "GuestMemoryBytes", "t" },
	{ "StateMemfds", "au" }, { "Session", "s" }, { "LastError", "s" }, { "Generation", "t" },
	{ "OwnerPID", "u" }, { "Memfds", "u" }, { "IneligibleReason", "s" }, { "RestoreNotes", "s" },
};
#define N_PROPS (ELEMENTSOF(manager_props) + ELEMENTSOF(vm_props))

/* A property's value as text ("?" if it cannot be read). */
static void prop_text(sd_bus *bus, const char *path, const char *iface, const PropDef *p, char *buf, size_t size)
{
	sd_bus_message *reply = NULL;
	size_t n = 0;
	int r;

	snprintf(buf, size, "?");
	r = sd_bus_get_property(bus, DEST, path, iface, p->name, NULL, &reply, p->type);
	if (r < 0)
		return;
	if (p->type[0] == 'a') {
		char t = p->type[1];

		r = sd_bus_message_enter_container(reply, 'a', p->type + 1);
		buf[0] = 0;
		while (r > 0) {
			const char *str;
			uint64_t u64;
			uint32_t u32;

			if (t == 's')
				r = sd_bus_message_read(reply, "s", &str);
			else if (t == 't')
				r = sd_bus_message_read(reply, "t", &u64);
			else
				r = sd_bus_message_read(reply, "u", &u32);
			if (r > 0 && n < size)
				n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? "," : "",
						      t == 's' ? str : "");
			if (r > 0 && t != 's' && n < size)
				n += (size_t)snprintf(buf + n, size - n, "%" PRIu64,
						      t == 't' ? u64 : (uint64_t)u32);
		}
	} else if (p->type[0] == 's') {
		const char *str;

		if (sd_bus_message_read(reply, "s", &str) > 0)
			snprintf(buf, size, "%s", str);
	} else if (p->type[0] == 'b') {
		int b;

		if (sd_bus_message_read(reply, "b", &b) > 0)
			snprintf(buf, size, "%d", b);
	} else if (p->type[0] == 't') {
		uint64_t u;

		if (sd_bus_message_read(reply, "t", &u) > 0)
			snprintf(buf, size, "%" PRIu64, u);
	} else {
		uint32_t u;

		if (sd_bus_message_read(reply, "u", &u) > 0)
			snprintf(buf, size, "%" PRIu32, u);
	}
	sd_bus_message_unref(reply);
}

static void props_snapshot(sd_bus *bus, const char *vm_path, char values[N_PROPS][512])
{
	for (size_t i = 0; i < ELEMENTSOF(manager_props); i++)
		prop_text(bus, MPATH, MIFACE, &manager_props[i], values[i], sizeof(values[i]));
	for (size_t i = 0; i < ELEMENTSOF(vm_props); i++)
		prop_text(bus, vm_path, VIFACE, &vm_props[i], values[ELEMENTSOF(manager_props) + i],
			  sizeof(values[0]));
}

/* Every PropertiesChanged the daemon sent so far, sorted by object: the
 * daemon flushes them once per loop iteration, so after two Peer.Ping
 * round trips the ones a call caused have all arrived. */
static void collect_changes(sd_bus *bus, const char *vm_path, char *mgr, char *vm, size_t size)
{
	mgr[0] = vm[0] = 0;
	for (int ping = 0; ping < 2; ping++)
		(void)sd_bus_call_method(bus, DEST, MPATH, "org.freedesktop.DBus.Peer", "Ping", NULL, NULL, NULL);
	for (;;) {
		sd_bus_message *m = NULL;
		const char *iface = NULL, *path;
		int r = sd_bus_process(bus, &m);

		if (r <= 0)
			break;
		if (m && sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged") &&
		    sd_bus_message_read(m, "s", &iface) > 0) {
			path = sd_bus_message_get_path(m) ?: "";
			if (strcmp(path, MPATH) == 0 && strcmp(iface, MIFACE) == 0)
				signal_names(m, mgr, size);
			else if (strcmp(path, vm_path) == 0 && strcmp(iface, VIFACE) == 0)
				signal_names(m, vm, size);
		}
		sd_bus_message_unref(m);
	}
}

/* After step: every property whose value changed was announced, and no
 * other; false with what differs in diff. */
static bool changes_exact(const char before[N_PROPS][512], const char after[N_PROPS][512], const char *mgr,
			  const char *vm, char *diff, size_t size)
{
	size_t n = 0;
	bool ok = true;

	diff[0] = 0;
	for (size_t i = 0; i < N_PROPS; i++) {
		bool is_vm = i >= ELEMENTSOF(manager_props);
		const char *name = is_vm ? vm_props[i - ELEMENTSOF(manager_props)].name : manager_props[i].name;
		char key[64];
		bool changed = strcmp(before[i], after[i]) != 0, announced;

		snprintf(key, sizeof(key), " %s ", name);
		announced = strstr(is_vm ? vm : mgr, key) != NULL;
		if (changed == announced)
			continue;
		ok = false;
		if (n < size)
			n += (size_t)snprintf(diff + n, size - n, "%s%s.%s %s (\"%s\" -> \"%s\"); ", "",
					      is_vm ? "VM" : "Manager", name,
					      changed ? "changed, not announced" : "announced, unchanged", before[i],
					      after[i]);
	}
	return ok;
}

/* PropertiesChanged is exact: at each step of a VM's life, the manager's
 * and the VM's signals name every property whose value changed, and no
 * other (compared with Get before and after). */
static void test_properties_exact(void)
{
	static char before[N_PROPS][512], after[N_PROPS][512];
	LudEnv env;
	sd_bus *bus = NULL, *watch = NULL;
	sd_bus_slot *slot = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char mgr[1024], vm[1024], diff[2048];
	int fds[2] = { -1, -1 }, r;
	const char *vm_path = "/org/iommulu/LiveUpdate1/vm/exact";

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK });
	if (!check(r >= 0, "start a daemon with a fake LUO and fd store (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);
	lud_env_connect(&env, &watch);
	sd_bus_match_signal(watch, &slot, DEST, NULL, "org.freedesktop.DBus.Properties", "PropertiesChanged", NULL,
			    NULL);
	iommulu_memfd_create("exact-a", 1 << 16, &fds[0]);
	iommulu_memfd_create("exact-b", 1 << 17, &fds[1]);

	r = register_part(bus, "exact", &fds[0], 1, false, &e);
	check(r >= 0, "RegisterVMPart exact, 1 of 2 (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	collect_changes(watch, vm_path, mgr, vm, sizeof(mgr));

#define STEP(what, call)                                                                               \
	do {                                                                                           \
		props_snapshot(watch, vm_path, before);                                                \
		call;                                                                                  \
		collect_changes(watch, vm_path, mgr, vm, sizeof(mgr));                                 \
		props_snapshot(watch, vm_path, after);                                                 \
		check(changes_exact((const char(*)[512])before, (const char(*)[512])after, mgr, vm, diff, \
				    sizeof(diff)),                                                     \
		      "%s: PropertiesChanged names exactly what changed (manager:%s; VM:%s) %s", what, mgr, \
		      vm, diff);                                                                       \
		sd_bus_error_free(&e);                                                                 \
	} while (0)

	STEP("the last RegisterVMPart", register_part(bus, "exact", &fds[1], 1, true, &e));
	STEP("PreserveVM", call_s(bus, "PreserveVM", "exact", &e));
	STEP("UnpreserveVM", call_s(bus, "UnpreserveVM", "exact", &e));
	/* Unconfirmed: preserved while the barrier is pending, then rolled
	 * back; each half is a step of its own. */
	lud_env_answer_barriers(&env, false);
	{
		sd_bus_message *reply = NULL;
		sd_bus_slot *pending = NULL;

		STEP("PreserveVM, while its barrier is pending",
		     (sd_bus_call_method_async(bus, &pending, DEST, MPATH, MIFACE, "PreserveVM", on_async_reply,
					       &reply, "s", "exact"), sd_bus_flush(bus), msleep(300)));
		STEP("... rolled back when it is not answered", wait_reply(bus, &reply, &(struct timespec){}));
		check(reply && sd_bus_message_is_method_error(reply, SD_BUS_ERROR_TIMEOUT), "... with Timeout");
		sd_bus_message_unref(reply);
		sd_bus_slot_unref(pending);
	}
	lud_env_answer_barriers(&env, true);
	STEP("PreserveVM again", call_s(bus, "PreserveVM", "exact", &e));
	STEP("PreserveAll (nothing to do)", sd_bus_call_method(bus, DEST, MPATH, MIFACE, "PreserveAll", &e, NULL,
								NULL));
	STEP("UnpreserveVM again", call_s(bus, "UnpreserveVM", "exact", &e));
#undef STEP
	check(vm_state_is(bus, "exact", "registered"), "the VM went through its states and is registered");

	sd_bus_slot_unref(slot);
	sd_bus_flush_close_unref(watch);
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	int r;

	signal(SIGPIPE, SIG_IGN);
	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (to test a non-root caller)\n");
		return 77;
	}

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true });
	if (!check(r >= 0, "start dbus-daemon with the policy and iommu-lud (%s)", strerror(-r))) {
		lud_env_stop(&env);
		printf("1..%u\n", n_test);
		return 1;
	}
	r = lud_env_connect(&env, &bus);
	check(r >= 0, "connect to the private bus");

	test_introspection(bus);
	test_register(bus, env.daemon_pid);
	test_refusals(bus, env.daemon_pid);
	test_vmm_exit(&env, bus);
	test_signals(bus);
	test_non_root(&env, true);
	test_fd_leak(bus, env.daemon_pid);

	sd_bus_flush_close_unref(bus);
	r = lud_env_stop_daemon(&env);
	check(r == 0, "daemon exits cleanly on SIGTERM (status %d)", r);
	lud_env_stop(&env);

	test_quota();
	test_preserve();
	test_cancelled_kexec();
	test_barrier_unanswered();
	test_preserve_all_async();
	test_calls_while_storing();
	test_properties_exact();
	test_owner_race();
	test_register_parts();
	test_kill_steps();
	test_register_with_options();
	test_restored_blocks();
	test_retrieve_parts();
	test_bad_config();
	test_exit_on_disconnect();
	test_limits();
	test_polkit();

	printf("1..%u\n", n_test);
	return n_fail ? 1 : 0;
}
