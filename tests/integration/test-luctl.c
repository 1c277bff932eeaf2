/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Integration tests of iommu-luctl: the real command ($IOMMU_LUCTL)
 * against the real daemon on a private system bus (lud-env.c): every
 * command's output and exit status, --json parsed with json-c, check with
 * an eligible and an ineligible VM, retrieve handing files to a command,
 * error paths and the bash completion ($IOMMU_LUCTL_COMPLETION).
 * Output is TAP.
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include <iommulu/iommulu.h>

#include "config.h"
#include "lud-env.h"
#include "../unit/fake-kimage.h"

#define DEST "org.iommulu.LiveUpdate1"
#define MPATH "/org/iommulu/LiveUpdate1"
#define MIFACE "org.iommulu.LiveUpdate1.Manager"
#define VIFACE "org.iommulu.LiveUpdate1.VM"

static unsigned n_test, n_fail;

static bool check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool check(bool ok, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	/* One TAP line, whatever the command printed. */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	printf("%s %u - %s\n", ok ? "ok" : "not ok", ++n_test, msg);
	fflush(stdout);
	if (!ok)
		n_fail++;
	return ok;
}

/* What one run of iommu-luctl printed and how it exited. */
typedef struct Run {
	int status;		/* exit status, 128+signal, -1 if it could not run */
	char out[32768];
	char err[8192];
} Run;

static Run run;

/* Prints what a failed check saw. */
static void dump(void)
{
	printf("# exit status %d\n# stdout:\n", run.status);
	for (char *l = run.out; *l;) {
		size_t n = strcspn(l, "\n");

		printf("#   %.*s\n", (int)n, l);
		l += n + (l[n] == '\n');
	}
	printf("# stderr: %s\n", run.err);
}

static size_t read_all(int fd, char *buf, size_t size)
{
	size_t have = 0;

	for (ssize_t k; have + 1 < size && (k = read(fd, buf + have, size - have - 1)) > 0;)
		have += (size_t)k;
	buf[have] = 0;
	return have;
}

/* Runs argv (argv[0] NULL: iommu-luctl, else the program itself) on env's
 * bus as uid (0: ourselves); fills run.  stderr goes through a memfd, so
 * that neither pipe can fill while the other is read. */
static int run_as(LudEnv *env, uid_t uid, const char *const *args)
{
	const char *luctl = getenv("IOMMU_LUCTL");
	char *argv[64], path[4096];
	size_t n = 0;
	int p[2], errfd, status = 0;
	pid_t pid;

	memset(&run, 0, sizeof(run));
	run.status = -1;
	if (!luctl || pipe2(p, O_CLOEXEC) < 0)
		return -1;
	errfd = memfd_create("luctl-stderr", MFD_CLOEXEC);
	if (errfd < 0)
		return -1;
	argv[n++] = (char *)luctl;
	for (size_t i = 0; args[i] && n < 63; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	/* The completion calls iommu-luctl by name. */
	snprintf(path, sizeof(path), "%.*s:%s", (int)(strrchr(luctl, '/') - luctl), luctl, getenv("PATH") ?: "/usr/bin:/bin");
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		dup2(errfd, STDERR_FILENO);
		setenv("DBUS_SYSTEM_BUS_ADDRESS", env->address, 1);
		setenv("PATH", path, 1);
		setenv("LC_ALL", "C", 1);
		{
			/* A login shell's soft limit, whatever the test runs with. */
			struct rlimit rl;

			if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max >= 1024) {
				rl.rlim_cur = 1024;
				setrlimit(RLIMIT_NOFILE, &rl);
			}
		}
		if (uid != 0 && (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0))
			_exit(125);
		execv(argv[0], argv);
		_exit(124);
	}
	close(p[1]);
	read_all(p[0], run.out, sizeof(run.out));
	close(p[0]);
	waitpid(pid, &status, 0);
	lseek(errfd, 0, SEEK_SET);
	read_all(errfd, run.err, sizeof(run.err));
	close(errfd);
	run.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return run.status;
}

#define LUCTL(env, ...) run_as(env, 0, (const char *const[]){ __VA_ARGS__, NULL })

static bool out_has(const char *s)
{
	return strstr(run.out, s) != NULL;
}

static bool err_has(const char *s)
{
	return strstr(run.err, s) != NULL;
}

/* The line of stdout that starts with word (followed by a blank), or "". */
static const char *out_line(const char *word, char *buf, size_t size)
{
	size_t n = strlen(word);

	buf[0] = 0;
	for (const char *l = run.out; *l;) {
		size_t len = strcspn(l, "\n");

		if (strncmp(l, word, n) == 0 && (l[n] == ' ' || l[n] == '\n' || l[n] == 0)) {
			snprintf(buf, size, "%.*s", (int)len, l);
			break;
		}
		l += len + (l[len] == '\n');
	}
	return buf;
}

/* Does the line starting with word contain every one of the words? */
static bool line_has(const char *word, const char *const *words)
{
	char line[4096];

	out_line(word, line, sizeof(line));
	if (!line[0])
		return false;
	for (; *words; words++)
		if (!strstr(line, *words))
			return false;
	return true;
}
#define LINE_HAS(word, ...) line_has(word, (const char *const[]){ __VA_ARGS__, NULL })

static json_object *out_json(void)
{
	return json_tokener_parse(run.out);
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v) : NULL;
}

static int64_t jint(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int)
		       ? json_object_get_int64(v) : -1;
}

static int jbool(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean)
		       ? json_object_get_boolean(v) : -1;
}

static bool streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* ---- sd-bus helpers -------------------------------------------------- */

static int register_vm(sd_bus *bus, const char *method, const char *name, int fd, bool last, sd_bus_error *e)
{
	sd_bus_message *call = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &call, DEST, MPATH, MIFACE, method);
	if (r >= 0)
		r = sd_bus_message_append(call, "sah", name, 1, fd);
	if (r >= 0)
		r = sd_bus_message_append(call, "ahahat", 0, 0, 0);
	if (r >= 0 && strcmp(method, "RegisterVMPart") == 0)
		r = sd_bus_message_append(call, "b", (int)last);
	if (r >= 0)
		r = sd_bus_call(bus, call, 0, e, NULL);
	sd_bus_message_unref(call);
	return r;
}

static char *vm_state(sd_bus *bus, const char *name)
{
	char path[128], *v = NULL;

	snprintf(path, sizeof(path), "/org/iommulu/LiveUpdate1/vm/%s", name);
	if (sd_bus_get_property_string(bus, DEST, path, VIFACE, "State", NULL, &v) < 0)
		return strdup("(unreadable)");
	return v;
}

static bool state_is(sd_bus *bus, const char *name, const char *want)
{
	char *s = vm_state(bus, name);
	bool ok = streq(s, want);

	if (!ok)
		printf("# VM %s is %s, expected %s\n", name, s ?: "?", want);
	free(s);
	return ok;
}

static uint32_t manager_u(sd_bus *bus, const char *prop)
{
	uint32_t v = 0;

	sd_bus_get_property_trivial(bus, DEST, MPATH, MIFACE, prop, NULL, 'u', &v);
	return v;
}

/* ---- the bash completion ------------------------------------------- */

/* Runs bash -c script with iommu-luctl on PATH, on env's bus. */
static int run_bash(LudEnv *env, const char *script)
{
	const char *luctl = getenv("IOMMU_LUCTL");
	char path[4096];
	int p[2], status = 0;
	pid_t pid;

	memset(&run, 0, sizeof(run));
	if (!luctl || pipe2(p, O_CLOEXEC) < 0)
		return -1;
	snprintf(path, sizeof(path), "%.*s:%s", (int)(strrchr(luctl, '/') - luctl), luctl,
		 getenv("PATH") ?: "/usr/bin:/bin");
	pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		setenv("DBUS_SYSTEM_BUS_ADDRESS", env->address, 1);
		setenv("PATH", path, 1);
		execlp("bash", "bash", "--norc", "--noprofile", "-c", script, (char *)NULL);
		_exit(124);
	}
	close(p[1]);
	read_all(p[0], run.out, sizeof(run.out));
	close(p[0]);
	waitpid(pid, &status, 0);
	run.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return run.status;
}

/* COMPREPLY of the completion for words (a bash array body) at cword. */
static int complete(LudEnv *env, const char *words, int cword)
{
	char script[4096];

	snprintf(script, sizeof(script),
		 "source \"$IOMMU_LUCTL_COMPLETION\" && COMP_WORDS=(%s) && COMP_CWORD=%d && "
		 "COMP_LINE=\"${COMP_WORDS[*]}\" && _iommu_luctl && printf '%%s\\n' \"${COMPREPLY[@]}\" | sort",
		 words, cword);
	return run_bash(env, script);
}

/*
 * Start a daemon with o (what names it in the check), connect and register
 * one VM of a memfd of size bytes: what most cases below start from.
 */
static bool start_with_vm(LudEnv *env, const LudEnvOptions *o, const char *what, const char *vm, uint64_t size,
			  sd_bus **ret_bus, int *ret_fd)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = lud_env_start(env, o);
	if (!check(r >= 0, "start a daemon %s (%s)", what, strerror(-r))) {
		lud_env_stop(env);
		return false;
	}
	lud_env_connect(env, ret_bus);
	iommulu_memfd_create(vm, size, ret_fd);
	r = register_vm(*ret_bus, "RegisterVM", vm, *ret_fd, true, &e);
	check(r >= 0, "RegisterVM %s (%s)", vm, e.message ?: "");
	sd_bus_error_free(&e);
	return true;
}

/* ---- 1: no /dev/liveupdate: every VM is ineligible ------------------- */

static void test_no_luo(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	json_object *j;
	static char status_out[sizeof(run.out)];
	char want[256];
	int fd = -1;

	if (!start_with_vm(&env, &(LudEnvOptions){ .with_policy = true }, "on a host without /dev/liveupdate",
			   "inel", 1 << 16, &bus, &fd))
		return;

	/* status */
	LUCTL(&env, "status");
	snprintf(want, sizeof(want), "Version: %s\n", PACKAGE_VERSION);
	if (!check(run.status == 0 && out_has(want) && out_has("    FailurePolicy: refuse\n") &&
			   out_has("FdStore: no\n") && out_has("LiveUpdated: no\n") && out_has("Generation: 1\n") &&
			   out_has("ShutdownBlockedBy: -\n") && out_has("VMs: 1 (1 registered)\n"),
		   "status: version, settings and VMs per state"))
		dump();
	snprintf(want, sizeof(want), "MaxVMs: %u\n", manager_u(bus, "MaxVMs"));
	check(out_has(want), "status: MaxVMs as the daemon has it (%s)", want);
	snprintf(status_out, sizeof(status_out), "%s", run.out);
	LUCTL(&env, "--no-pager");
	check(run.status == 0 && strcmp(run.out, status_out) == 0, "no command is status");

	LUCTL(&env, "status", "--json");
	j = out_json();
	if (!check(run.status == 0 && streq(jstr(j, "Version"), PACKAGE_VERSION) &&
			   jint(j, "MaxVMs") == manager_u(bus, "MaxVMs") &&
			   jint(j, "MaxFdsPerVM") == manager_u(bus, "MaxFdsPerVM") && jbool(j, "FdStore") == 0 &&
			   jint(j, "VMs") == 1 && streq(jstr(j, "FailurePolicy"), "refuse"),
		   "status --json parses, with the daemon's values"))
		dump();
	{
		json_object *s = NULL;

		json_object_object_get_ex(j, "VMsByState", &s);
		check(jint(s, "registered") == 1 && jint(s, "preserved") == 0,
		      "status --json: VMsByState counts 1 registered, 0 preserved");
	}
	json_object_put(j);

	/* list */
	LUCTL(&env, "list");
	if (!check(run.status == 0 && out_has("NAME ") && out_has("STATE") && out_has("1 VM listed.") &&
			   LINE_HAS("inel", "registered", " 64K ", "ineligible: the running kernel has no /dev/liveupdate"),
		   "list: a line for inel with state, memory and why it is ineligible"))
		dump();
	snprintf(want, sizeof(want), " %d ", (int)getpid());
	check(LINE_HAS("inel", want), "list: the owner pid is ours (%d)", (int)getpid());
	LUCTL(&env, "list", "--no-legend");
	check(run.status == 0 && !out_has("NAME") && !out_has("listed") && strncmp(run.out, "inel ", 5) == 0,
	      "list --no-legend: no header, no footer");
	LUCTL(&env, "list", "--json");
	j = out_json();
	{
		json_object *v = json_object_is_type(j, json_type_array) && json_object_array_length(j) == 1
					 ? json_object_array_get_idx(j, 0) : NULL;
		json_object *devices = NULL;

		json_object_object_get_ex(v, "Devices", &devices);
		if (!check(run.status == 0 && v && streq(jstr(v, "Name"), "inel") &&
				   streq(jstr(v, "State"), "registered") && jint(v, "Memfds") == 1 &&
				   jint(v, "GuestMemoryBytes") == 65536 && jint(v, "OwnerPID") == getpid() &&
				   jstr(v, "IneligibleReason") && strstr(jstr(v, "IneligibleReason"), "/dev/liveupdate") &&
				   json_object_is_type(devices, json_type_array) && json_object_array_length(devices) == 0,
			   "list --json: one VM with the daemon's properties"))
			dump();
	}
	json_object_put(j);

	/* show */
	LUCTL(&env, "show", "inel");
	snprintf(want, sizeof(want), "\nOwnerPID=%d\n", (int)getpid());
	if (!check(run.status == 0 && strncmp(run.out, "Name=inel\nState=registered\nDevices=\nHWPTs=\n", 43) == 0 &&
			   out_has("\nGuestMemoryBytes=65536\n") && out_has("\nMemfds=1\n") && out_has(want) &&
			   out_has("\nIneligibleReason=the running kernel has no /dev/liveupdate\n") &&
			   out_has("\nSession=\n") && out_has("\nRestoreNotes=\n") && out_has("\nStateMemfds=\n"),
		   "show: every property as Key=Value"))
		dump();
	LUCTL(&env, "show", "inel", "--json=pretty");
	j = out_json();
	check(run.status == 0 && json_object_is_type(j, json_type_object) && json_object_object_length(j) == 13 &&
		      streq(jstr(j, "Name"), "inel") && jint(j, "Generation") >= 0 && strchr(run.out, '\n') !=
		      strrchr(run.out, '\n'),
	      "show --json=pretty: 13 properties, on several lines");
	json_object_put(j);
	LUCTL(&env, "show", "nosuch");
	check(run.status == 4 && err_has("nosuch"), "show of an unknown VM: exit status 4, naming it (%d: %s)", run.status,
	      run.err);

	/* mutating commands and their errors */
	LUCTL(&env, "preserve", "nosuch");
	check(run.status == 4 && err_has("org.iommulu.LiveUpdate1.Error.NoSuchVM") && err_has("nosuch"),
	      "preserve of an unknown VM: exit status 4, the D-Bus error name and message (%d: %s)", run.status, run.err);
	LUCTL(&env, "preserve", "inel");
	check(run.status == 1 && err_has("Failed to preserve VM inel: org.iommulu.LiveUpdate1.Error.KernelUnsupported: "),
	      "preserve without /dev/liveupdate: exit status 1, KernelUnsupported (%d: %s)", run.status, run.err);
	LUCTL(&env, "verify", "inel");
	check(run.status == 1 && err_has("org.iommulu.LiveUpdate1.Error.InvalidState") && err_has("inel"),
	      "verify of a VM that was not restored: exit status 1, InvalidState (%d: %s)", run.status, run.err);
	LUCTL(&env, "retrieve", "inel");
	check(run.status == 1 && err_has("org.iommulu.LiveUpdate1.Error.InvalidState"),
	      "retrieve of a VM that was not restored: exit status 1, InvalidState (%d: %s)", run.status, run.err);
	LUCTL(&env, "finish", "nosuch");
	check(run.status == 4 && err_has("NoSuchVM"), "finish of an unknown VM: exit status 4 (%d)", run.status);
	LUCTL(&env, "unpreserve", "inel");
	check(run.status == 0 && !run.out[0], "unpreserve of a VM that is not preserved: exit status 0, silent");

	/* check: an ineligible VM */
	LUCTL(&env, "check");
	if (!check(run.status == 1 && LINE_HAS("inel", " no ", "the running kernel has no /dev/liveupdate") &&
			   out_has("Verdict: a kexec now would lose 1 of 1 VM.") && out_has("Kernel staged for kexec: "),
		   "check with an ineligible VM: exit status 1, the VM and why"))
		dump();
	LUCTL(&env, "check", "--json");
	j = out_json();
	{
		json_object *vms = NULL, *v;

		json_object_object_get_ex(j, "vms", &vms);
		v = json_object_is_type(vms, json_type_array) ? json_object_array_get_idx(vms, 0) : NULL;
		if (!check(run.status == 1 && jbool(j, "ok") == 0 && jint(j, "lost") == 1 && v &&
				   streq(jstr(v, "name"), "inel") && jbool(v, "survives") == 0 &&
				   strstr(jstr(v, "why") ?: "", "/dev/liveupdate"),
			   "check --json: ok false, inel does not survive, and why"))
			dump();
	}
	json_object_put(j);

	LUCTL(&env, "check", "--no-legend");
	check(run.status == 1 && strncmp(run.out, "inel ", 5) == 0 && !out_has("Verdict") && !out_has("SURVIVES"),
	      "check --no-legend: only the VM lines, the same exit status");

	/* usage errors */
	LUCTL(&env, "frobnicate");
	check(run.status == 2 && err_has("Unknown command 'frobnicate'"), "an unknown command: exit status 2 (%d: %s)",
	      run.status, run.err);
	LUCTL(&env, "show");
	check(run.status == 2, "show without a VM: exit status 2 (%d)", run.status);
	LUCTL(&env, "show", "a", "b");
	check(run.status == 2, "show with two VMs: exit status 2 (%d)", run.status);
	LUCTL(&env, "preserve");
	check(run.status == 2, "preserve with neither a VM nor --all: exit status 2 (%d)", run.status);
	LUCTL(&env, "preserve", "inel", "--all");
	check(run.status == 2, "preserve with a VM and --all: exit status 2 (%d)", run.status);
	LUCTL(&env, "preserve", "../x");
	check(run.status == 2 && err_has("Invalid VM name '../x'"), "an invalid VM name: exit status 2 (%d: %s)",
	      run.status, run.err);
	LUCTL(&env, "list", "--all");
	check(run.status == 2, "--all with list: exit status 2 (%d)", run.status);
	LUCTL(&env, "list", "--", "true");
	check(run.status == 2, "a command after -- for list: exit status 2 (%d)", run.status);
	LUCTL(&env, "list", "--json=yaml");
	check(run.status == 2, "--json=yaml: exit status 2 (%d)", run.status);
	LUCTL(&env, "--frob");
	check(run.status == 2, "an unknown option: exit status 2 (%d)", run.status);
	LUCTL(&env, "--help");
	check(run.status == 0 && out_has("  check ") && out_has("  retrieve VM [-- CMD...]") && out_has("--json"),
	      "--help lists the commands from the verb table");
	LUCTL(&env, "--version");
	snprintf(want, sizeof(want), "iommu-luctl %s\n", PACKAGE_VERSION);
	check(run.status == 0 && strcmp(run.out, want) == 0, "--version");

	/* not root: reading works, changing does not */
	run_as(&env, 65534, (const char *const[]){ "list", NULL });
	check(run.status == 0 && LINE_HAS("inel", "registered"), "uid 65534 may list (%d: %s)", run.status, run.err);
	run_as(&env, 65534, (const char *const[]){ "check", NULL });
	check(run.status == 1 && LINE_HAS("inel", " no "), "uid 65534 may check (%d: %s)", run.status, run.err);
	run_as(&env, 65534, (const char *const[]){ "preserve", "inel", NULL });
	check(run.status == 1 && err_has("Failed to preserve VM inel: org.freedesktop.DBus.Error.AccessDenied"),
	      "uid 65534 may not preserve: AccessDenied (%d: %s)", run.status, run.err);

	/* the shell completion */
	LUCTL(&env, "--list-names");
	check(run.status == 0 && strcmp(run.out, "inel\n") == 0, "--list-names prints the VM names (%s)", run.out);
	complete(&env, "iommu-luctl ''", 1);
	check(run.status == 0 && out_has("check\n") && out_has("preserve\n") && out_has("retrieve\n") &&
		      out_has("status\n") && !out_has("inel"),
	      "completion: the commands");
	complete(&env, "iommu-luctl pre", 1);
	check(run.status == 0 && strcmp(run.out, "preserve\n") == 0, "completion: 'pre' -> preserve (%s)", run.out);
	complete(&env, "iommu-luctl show ''", 2);
	check(run.status == 0 && strcmp(run.out, "inel\n") == 0, "completion: show completes the VM names (%s)", run.out);
	complete(&env, "iommu-luctl --json=pretty preserve i", 3);
	check(run.status == 0 && strcmp(run.out, "inel\n") == 0, "completion: after an option too (%s)", run.out);
	complete(&env, "iommu-luctl preserve --a", 2);
	check(run.status == 0 && strcmp(run.out, "--all\n") == 0, "completion: preserve --all (%s)", run.out);
	complete(&env, "iommu-luctl retrieve inel -- tru", 4);
	check(run.status == 0 && out_has("true\n"), "completion: a command after retrieve VM -- (%s)", run.out);
	complete(&env, "iommu-luctl show inel ''", 3);
	check(run.status == 0 && !out_has("inel"), "completion: one VM only (%s)", run.out);
	complete(&env, "iommu-luctl st", 1);
	check(run.status == 0 && strcmp(run.out, "stage\nstatus\n") == 0, "completion: 'st' -> stage, status (%s)",
	      run.out);
	complete(&env, "iommu-luctl stage /boot/vmlinuz --re", 3);
	check(run.status == 0 && strcmp(run.out, "--reuse-cmdline\n") == 0, "completion: stage --reuse-cmdline (%s)",
	      run.out);
	complete(&env, "iommu-luctl stage /de", 2);
	check(run.status == 0 && strcmp(run.out, "/dev\n") == 0, "completion: stage completes a file (%s)", run.out);

	/* the daemon gone */
	sd_bus_flush_close_unref(bus);
	(void)lud_env_stop_daemon(&env);
	LUCTL(&env, "status");
	check(run.status == 3 && err_has("org.freedesktop.DBus.Error.ServiceUnknown"),
	      "status without the daemon: exit status 3 (%d: %s)", run.status, run.err);
	lud_env_stop(&env);
	close(fd);
}

/* FailurePolicy=continue: nothing blocks, check says what would be lost. */
static void test_policy_continue(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	int fd = -1;

	if (!start_with_vm(&env,
			   &(LudEnvOptions){ .with_policy = true,
					     .config = "[Daemon]\nFailurePolicy=continue\nMaxVMs=7\n" },
			   "with FailurePolicy=continue, MaxVMs=7", "lost", 1 << 16, &bus, &fd))
		return;
	LUCTL(&env, "status");
	check(run.status == 0 && out_has("    FailurePolicy: continue\n") && out_has("           MaxVMs: 7\n"),
	      "status shows the configured FailurePolicy and MaxVMs");
	LUCTL(&env, "check");
	if (!check(run.status == 1 && LINE_HAS("lost", " no ") &&
			   out_has("FailurePolicy=continue: nothing blocks a kexec, the VMs marked \"no\" would be lost."),
		   "check with FailurePolicy=continue: exit status 1, says nothing blocks the loss"))
		dump();
	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
}

/* ---- 2: a fake /dev/liveupdate and fd store: eligible VMs ------------ */

static void test_eligible(void)
{
	LudEnv env;
	sd_bus *bus = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	json_object *j;
	int fd = -1, half = -1, r;

	if (!start_with_vm(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK },
			   "with a fake /dev/liveupdate and fd store", "good", 1 << 20, &bus, &fd))
		return;

	LUCTL(&env, "check");
	if (!check(run.status == 0 && LINE_HAS("good", "registered", " yes ", "preserved automatically") &&
			   out_has("Verdict: a kexec now would preserve its 1 VM."),
		   "check with an eligible VM: exit status 0"))
		dump();
	LUCTL(&env, "check", "--json");
	j = out_json();
	check(run.status == 0 && jbool(j, "ok") == 1 && jint(j, "lost") == 0, "check --json: ok true");
	json_object_put(j);

	LUCTL(&env, "preserve", "good");
	check(run.status == 0 && !run.out[0] && !run.err[0] && state_is(bus, "good", "preserved"),
	      "preserve: exit status 0, silent, the VM is preserved (%s)", run.err);
	LUCTL(&env, "preserve", "good");
	check(run.status == 0, "preserve again: exit status 0 (%d)", run.status);
	LUCTL(&env, "check");
	check(run.status == 0 && LINE_HAS("good", "preserved", " yes ", "preserved in LUO session iommulu.1.good"),
	      "check: the preserved VM survives in its session");
	LUCTL(&env, "status");
	check(run.status == 0 && out_has("FdStore: yes\n") && out_has("VMs: 1 (1 preserved)\n"),
	      "status: fd store, 1 preserved");
	LUCTL(&env, "list");
	check(run.status == 0 && LINE_HAS("good", "preserved", " 1M ") &&
		      run.out[strcspn(run.out, "\n") + 1] && strstr(run.out, " -\n"), "list: the preserved VM, 1M, no note");
	LUCTL(&env, "unpreserve", "good");
	check(run.status == 0 && state_is(bus, "good", "registered"), "unpreserve: exit status 0, registered again");

	/* An incomplete registration blocks */
	iommulu_memfd_create("half", 1 << 16, &half);
	r = register_vm(bus, "RegisterVMPart", "half", half, false, &e);
	check(r >= 0, "RegisterVMPart half, not the last part (%s)", e.message ?: "");
	sd_bus_error_free(&e);
	LUCTL(&env, "check");
	if (!check(run.status == 1 && LINE_HAS("good", " yes ") &&
			   LINE_HAS("half", "registering", " no ", "registration not complete") &&
			   out_has("would lose 1 of 2 VMs"),
		   "check with an incomplete VM: exit status 1, half does not survive"))
		dump();
	LUCTL(&env, "status", "--json");
	j = out_json();
	{
		json_object *s = NULL;

		json_object_object_get_ex(j, "VMsByState", &s);
		check(jint(s, "registering") == 1 && jint(s, "registered") == 1 && jint(j, "VMs") == 2,
		      "status --json: 1 registering, 1 registered");
	}
	json_object_put(j);

	LUCTL(&env, "preserve", "--all");
	if (!check(run.status == 1 && LINE_HAS("good", "ok") &&
			   LINE_HAS("half", "org.iommulu.LiveUpdate1.Error.InvalidState") &&
			   out_has("1 of 2 VMs preserved."),
		   "preserve --all: exit status 1, a result per VM"))
		dump();
	LUCTL(&env, "preserve", "--all", "--json");
	j = out_json();
	{
		json_object *a = json_object_is_type(j, json_type_array) && json_object_array_length(j) == 2 ? j : NULL;
		json_object *g = a ? json_object_array_get_idx(a, 0) : NULL, *h = a ? json_object_array_get_idx(a, 1) : NULL;

		check(run.status == 1 && streq(jstr(g, "name"), "good") && jbool(g, "ok") == 1 &&
			      streq(jstr(h, "name"), "half") && jbool(h, "ok") == 0 &&
			      strstr(jstr(h, "result") ?: "", "InvalidState"),
		      "preserve --all --json: good ok, half not");
	}
	json_object_put(j);

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
	close(half);
}

/* ---- 3: after a "kexec": restored VMs --------------------------------- */

static void test_restored(void)
{
	static const char *const names[] = { "session.iommulu.1.big", "session.iommulu.1.small",
					     "session.iommulu.1.dev" };
	LudEnv env;
	sd_bus *bus = NULL;
	json_object *j;
	int sessions[3], r;
	char want[2048] = "";

	sessions[0] = lud_incoming_session("big", 40, NULL);
	sessions[1] = lud_incoming_session("small", 2, NULL);
	sessions[2] = lud_incoming_session("dev", 1, "0000:00:1f.7");
	if (!check(sessions[0] >= 0 && sessions[1] >= 0 && sessions[2] >= 0, "make three incoming fake LUO sessions"))
		return;
	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK,
						   .listen_fds = sessions, .listen_names = names, .n_listen = 3 });
	for (int i = 0; i < 3; i++)
		close(sessions[i]);
	if (!check(r >= 0, "start a daemon that gets them back from its fd store (%s)", strerror(-r))) {
		lud_env_stop(&env);
		return;
	}
	lud_env_connect(&env, &bus);

	LUCTL(&env, "status");
	check(run.status == 0 && out_has("LiveUpdated: yes\n") && out_has("VMs: 3 (2 verified, 1 failed)\n"),
	      "status after a live update: LiveUpdated, 2 verified, 1 failed");
	if (!out_has("VMs: 3 (2 verified, 1 failed)"))
		dump();

	LUCTL(&env, "verify", "small");
	if (!check(run.status == 0 && LINE_HAS("manifest", " ok") && LINE_HAS("memfd:0", " ok") &&
			   LINE_HAS("memfd:1", " ok") && out_has("3 of 3 checks passed."),
		   "verify: the checks as a table, exit status 0"))
		dump();
	LUCTL(&env, "verify", "small", "--json");
	j = out_json();
	{
		size_t n = json_object_is_type(j, json_type_array) ? json_object_array_length(j) : 0, good = 0;

		for (size_t i = 0; i < n; i++)
			good += jbool(json_object_array_get_idx(j, i), "ok") == 1;
		check(run.status == 0 && n == 3 && good == 3 &&
			      streq(jstr(json_object_array_get_idx(j, 1), "check"), "memfd:0"),
		      "verify --json: 3 checks, all ok");
	}
	json_object_put(j);
	LUCTL(&env, "verify", "dev");
	if (!check(run.status == 1 && LINE_HAS("0000:00:1f.7", "FAILED") && LINE_HAS("memfd:0", " ok") &&
			   err_has("VM dev failed"),
		   "verify of a VM whose device did not come back: exit status 1, the failed check"))
		dump();

	LUCTL(&env, "retrieve", "small");
	check(run.status == 0 && strcmp(run.out, "memfd:0 64K\nmemfd:1 64K\n") == 0 && state_is(bus, "small", "retrieved"),
	      "retrieve without a command: the roles and sizes (%s)", run.out);
	LUCTL(&env, "retrieve", "small", "--", "sh", "-c", "echo \"$IOMMULU_FDS\"; stat -L -c %s /dev/fd/3 /dev/fd/4");
	check(run.status == 0 && strcmp(run.out, "memfd:0=3 memfd:1=4\n65536\n65536\n") == 0,
	      "retrieve -- CMD: the files at fds 3 and 4, $IOMMULU_FDS names them (%d: %s%s)", run.status, run.out,
	      run.err);
	LUCTL(&env, "retrieve", "big", "--", "sh", "-c", "echo \"$IOMMULU_FDS\"; stat -L -c %s /dev/fd/42; "
							 "test ! -e /dev/fd/43");
	for (int i = 0; i < 40; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%smemfd:%d=%d", i ? " " : "", i, 3 + i);
	strcat(want, "\n65536\n");
	check(run.status == 0 && strcmp(run.out, want) == 0,
	      "retrieve of a VM of 40 files (RetrieveVMPart): fds 3 to 42 (%d: %.60s... %s)", run.status, run.out,
	      run.err);
	LUCTL(&env, "retrieve", "small", "--", "/nonexistent/command");
	check(run.status == 127 && err_has("/nonexistent/command"), "retrieve -- a missing command: exit status 127 (%d)",
	      run.status);
	LUCTL(&env, "retrieve", "small", "--", "sh", "-c", "exit 7");
	check(run.status == 7, "retrieve -- CMD: CMD's exit status (%d)", run.status);
	LUCTL(&env, "retrieve", "small", "--json");
	j = out_json();
	check(run.status == 0 && json_object_array_length(j) == 2 &&
		      streq(jstr(json_object_array_get_idx(j, 1), "role"), "memfd:1") &&
		      jint(json_object_array_get_idx(j, 1), "size") == 65536,
	      "retrieve --json: roles and sizes");
	json_object_put(j);

	LUCTL(&env, "check");
	if (!check(run.status == 1 && LINE_HAS("small", "retrieved", " no ", "restored from the last live update") &&
			   LINE_HAS("dev", "failed", " no ", "restored from the last live update and failed: verification failed") &&
			   out_has("would lose 3 of 3 VMs"),
		   "check after a live update: restored VMs do not survive another one until finished"))
		dump();

	LUCTL(&env, "finish", "small");
	check(run.status == 0 && state_is(bus, "small", "finished"), "finish: exit status 0, finished (%s)", run.err);
	LUCTL(&env, "finish", "small");
	check(run.status == 1 && err_has("Failed to finish VM small: org.iommulu.LiveUpdate1.Error.InvalidState"),
	      "finish again: exit status 1, InvalidState (%s)", run.err);
	LUCTL(&env, "check");
	check(run.status == 1 && LINE_HAS("small", "finished", " no ", "not registered again"),
	      "check: a finished VM that was not registered again does not survive");
	LUCTL(&env, "list");
	if (!check(run.status == 0 && LINE_HAS("dev", "failed", "ineligible: restored from the last live update and failed"), "list: the failed VM's note"))
		dump();

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
}

/* ---- 4: stage: the kernel for the kexec, checked by the daemon --------- */

static void test_stage(void)
{
	static const char pristine[] = "memfd-v1\0";
	char kdir[96], img[160], bad[160], junk[160], cfg[160], log[160];
	LudEnv env;
	sd_bus *bus = NULL;
	FILE *f;
	int fd = -1;

	snprintf(kdir, sizeof(kdir), "/tmp/iommulu-stage-XXXXXX");
	if (!check(mkdtemp(kdir) != NULL, "a directory for kernel images"))
		return;
	chmod(kdir, 0755);
	snprintf(img, sizeof(img), "%s/vmlinuz-7.3.4-test", kdir);
	snprintf(bad, sizeof(bad), "%s/vmlinuz-pristine", kdir);
	snprintf(junk, sizeof(junk), "%s/not-a-kernel", kdir);
	snprintf(cfg, sizeof(cfg), "%s/config-7.3.4-test", kdir);	/* next to the image */
	snprintf(log, sizeof(log), "%s/kexec.log", kdir);
	write_bzimage(img, SERIES, sizeof(SERIES));
	write_bzimage(bad, pristine, sizeof(pristine));
	if ((f = fopen(cfg, "we"))) {
		fputs(good_config, f);
		fclose(f);
	}
	if ((f = fopen(junk, "we"))) {
		fputs("not a kernel\n", f);
		fclose(f);
	}
	chmod(img, 0644);
	setenv("IOMMULU_KEXEC_FAKE", log, 1);	/* the daemon logs loads instead of kexec_file_load */
	if (!start_with_vm(&env, &(LudEnvOptions){ .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK },
			   "with a fake /dev/liveupdate, logging kexec loads", "mem", 1 << 16, &bus, &fd))
		goto out;

	LUCTL(&env, "stage", img);
	check(run.status == 2 && err_has("--append"), "stage without a command line: usage, exit status 2 (%d)",
	      run.status);
	LUCTL(&env, "stage", img, "--append=console=ttyS0 kho=on intel_iommu=on");
	if (!check(run.status == 1 && err_has("Failed to stage kernel") &&
			   err_has("org.iommulu.LiveUpdate1.Error.KernelIncompatible: VM mem: ") &&
			   err_has("lacks liveupdate=on") && lud_count_lines(log, "load") == 0,
		   "stage with no liveupdate=on: KernelIncompatible naming the VM and why, nothing loaded"))
		dump();
	LUCTL(&env, "stage", junk, "--append=liveupdate=on kho=on");
	check(run.status == 1 && err_has("not an x86 bzImage"), "stage of a file that is no bzImage: exit 1 (%s)",
	      run.err);
	/* Without the series: memfd-only VMs are fine with it */
	LUCTL(&env, "stage", bad, "--append=liveupdate=on kho=on intel_iommu=on", "--config", cfg);
	if (!check(run.status == 0 && out_has("it adopts LUO sessions (memfds), but not devices") &&
			   lud_count_lines(log, "load kernel=") == 1,
		   "stage of a kernel without the series, only memfd VMs registered: loaded, memfds only"))
		dump();
	LUCTL(&env, "check");
	check(run.status == 0 && out_has("(7.3.4-test), checked by iommu-lud") && out_has("but not devices: ") &&
	      out_has("lacks the kernel-patches series"), "check names the staged kernel and what it cannot adopt");
	/* With the series; its config found next to it */
	LUCTL(&env, "stage", img, "--append=liveupdate=on kho=on intel_iommu=on");
	if (!check(run.status == 0 && out_has("it adopts LUO sessions and devices") && out_has(cfg) &&
			   lud_count_lines(log, "load kernel=") == 2,
		   "stage of a kernel with the series, config-RELEASE next to it: loaded, adopts devices"))
		dump();
	{
		char line[512] = "";

		if ((f = fopen(log, "re"))) {
			while (fgets(line, sizeof(line), f))
				;
			fclose(f);
		}
		check(strstr(line, "initrd=0 cmdline=liveupdate=on kho=on intel_iommu=on\n") != NULL,
		      "the kernel was loaded with the command line it was checked with (%s)", line);
	}
	LUCTL(&env, "status");
	check(run.status == 0 && out_has("     StagedKernel: ") && out_has("(7.3.4-test), adopts memfds and devices\n"),
	      "status shows the staged kernel");
	LUCTL(&env, "check", "--json");
	{
		json_object *j = out_json();

		check(run.status == 0 && strstr(jstr(j, "staged_kernel") ?: "", "(7.3.4-test)") &&
			      streq(jstr(j, "staged_kernel_adopts"), "devices"),
		      "check --json: staged_kernel, staged_kernel_adopts");
		json_object_put(j);
	}
	/* A restart keeps it: the sealed copy and its verdict are in the fd
	 * store, and nothing is loaded again. */
	{
		const LudEnvOptions o = { .with_policy = true, .fake_luo = true, .notify = LUD_NOTIFY_ACK };
		char *names = NULL;
		int n;

		sd_bus_flush_close_unref(bus);
		bus = NULL;
		n = lud_env_fdstore(&env, &names);
		check(n > 0 && names && strstr(names, "staged.kernel\n") && strstr(names, "staged.record\n") &&
			      !strstr(names, "staged.initrd\n"),
		      "the fd store holds the staged kernel's copy and record (%s)", names ?: "");
		free(names);
		lud_env_kill_daemon(&env);
		check(lud_env_restart_daemon(&env, &o) >= 0 && lud_env_connect(&env, &bus) >= 0,
		      "SIGKILL the daemon and restart it");
		LUCTL(&env, "status");
		check(run.status == 0 && out_has("(7.3.4-test), adopts memfds and devices\n") &&
			      lud_count_lines(log, "load kernel=") == 2,
		      "after the restart status still shows the staged kernel, not loaded again (%s)", run.out);
	}
	run_as(&env, 65534, (const char *const[]){ "stage", img, "--append=liveupdate=on kho=on", NULL });
	check(run.status == 1 && err_has("org.freedesktop.DBus.Error.AccessDenied"),
	      "uid 65534 may not stage a kernel: AccessDenied (%d: %s)", run.status, run.err);
	LUCTL(&env, "unstage");
	check(run.status == 0 && lud_count_lines(log, "unload") == 1, "unstage: the kernel is unloaded");
	LUCTL(&env, "check");
	check(!out_has("checked by iommu-lud"), "check: no staged kernel after unstage");
	{
		char *names = NULL;

		check(lud_env_fdstore(&env, &names) >= 0 && names && !strstr(names, "staged."),
		      "... and none in the fd store (%s)", names ?: "");
		free(names);
	}

	sd_bus_flush_close_unref(bus);
	lud_env_stop(&env);
	close(fd);
out:
	unsetenv("IOMMULU_KEXEC_FAKE");
	unlink(img);
	unlink(bad);
	unlink(junk);
	unlink(cfg);
	unlink(log);
	rmdir(kdir);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (to test a non-root caller)\n");
		return 77;
	}
	test_no_luo();
	test_policy_continue();
	test_eligible();
	test_restored();
	test_stage();
	printf("1..%u\n", n_test);
	return n_fail ? 1 : 0;
}
