/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * iommu-luctl: the operator's command line for iommu-lud, in the way
 * timedatectl serves timedated.  A thin sd-bus client: it reads the
 * daemon's properties into structs (as systemd's bus_map_all_properties()
 * does), prints them for people, or as JSON with --json, and calls the
 * daemon's methods.  See iommu-luctl(1) and docs/daemon.md.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-login.h>

#include <iommulu/common.h>
#include <iommulu/pci.h>

#include "config.h"
#include "kimage.h"
#include "util.h"

#define BUS_NAME "org.iommulu.LiveUpdate1"
#define MANAGER_PATH "/org/iommulu/LiveUpdate1"
#define MANAGER_IFACE "org.iommulu.LiveUpdate1.Manager"
#define VM_IFACE "org.iommulu.LiveUpdate1.VM"
#define ERROR_NO_SUCH_VM "org.iommulu.LiveUpdate1.Error.NoSuchVM"
/* dbus-daemon's max_message_unix_fds on the system bus */
#define FDS_PER_MESSAGE 16u

/* Exit statuses (iommu-luctl(1), EXIT STATUS). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,		/* the daemon refused, a check failed, a kexec would lose a VM */
	EXIT_USAGE = 2,		/* bad command line, invalid VM name */
	EXIT_NO_DAEMON = 3,	/* the daemon or the bus is not reachable */
	EXIT_NO_VM = 4,		/* no such VM */
	EXIT_EXEC_FAILED = 126,	/* retrieve -- CMD: CMD could not be run */
	EXIT_EXEC_NOT_FOUND = 127,	/* retrieve -- CMD: CMD not found */
};

static int arg_json = -1;	/* -1 off, else JSON_C_TO_STRING_* flags */
static bool arg_legend = true;
static bool arg_all;
static const char *arg_initrd;	/* stage */
static const char *arg_config;
static const char *arg_append;
static bool arg_reuse_cmdline;
static char **arg_command;	/* after "--": retrieve's command */

static void sd_bus_message_unrefp_(sd_bus_message **m)
{
	sd_bus_message_unref(*m);
}
#define _cleanup_msg_ _cleanup_(sd_bus_message_unrefp_)

static void sd_bus_flush_close_unrefp_(sd_bus **b)
{
	sd_bus_flush_close_unref(*b);
}

static void json_object_putp(json_object **j)
{
	json_object_put(*j);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

static void strv_free(char **l)
{
	for (char **p = l; p && *p; p++)
		free(*p);
	free(l);
}

static size_t strv_length(char **l)
{
	size_t n = 0;

	while (l && l[n])
		n++;
	return n;
}

/* ---- errors --------------------------------------------------------- */

/* The exit status for a failed call. */
static int exit_status_for(const sd_bus_error *e, int r)
{
	if (sd_bus_error_has_name(e, ERROR_NO_SUCH_VM))
		return EXIT_NO_VM;
	if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
				   SD_BUS_ERROR_NO_SERVER, SD_BUS_ERROR_DISCONNECTED))
		return EXIT_NO_DAEMON;
	if (!sd_bus_error_is_set(e) && IN_SET3(r, -ECONNREFUSED, -ENOENT, -ECONNRESET))
		return EXIT_NO_DAEMON;
	return EXIT_FAIL;
}

/* "Failed to <what>: <error name>: <message>", and the exit status. */
static int call_failed(const char *what, const sd_bus_error *e, int r)
{
	if (sd_bus_error_is_set(e))
		fprintf(stderr, "Failed to %s: %s: %s\n", what, e->name, e->message ?: "(no message)");
	else
		fprintf(stderr, "Failed to %s: %s\n", what, strerror(-r));
	return exit_status_for(e, r);
}

static int check_vm_name(const char *name)
{
	if (iommulu_vm_name_is_valid(name))
		return 0;
	fprintf(stderr, "Invalid VM name '%s': expected 1 to %d of [A-Za-z0-9_.-], not '.' or '..', "
		"not starting with '-'.\n", name, IOMMULU_VM_NAME_MAX);
	return -EINVAL;
}

/* ---- property mapping ------------------------------------------------ */

typedef struct U64Array {
	uint64_t *v;
	size_t n;
} U64Array;

/* One property read into a struct member: 's' char *, 'b' bool,
 * 'u' uint32_t, 't' uint64_t, "as" char ** (NULL-terminated), "at" and "au" U64Array. */
typedef struct PropMap {
	const char *name;
	const char *signature;
	size_t offset;
} PropMap;

static int map_one(sd_bus_message *m, const PropMap *p, void *data)
{
	void *field = (char *)data + p->offset;
	int r;

	if (streq_ptr(p->signature, "s")) {
		const char *s;
		char *dup;

		r = sd_bus_message_read(m, "s", &s);
		if (r < 0)
			return r;
		dup = strdup(s);
		if (!dup)
			return -ENOMEM;
		free(*(char **)field);
		*(char **)field = dup;
		return 0;
	}
	if (streq_ptr(p->signature, "b")) {
		int b;

		r = sd_bus_message_read(m, "b", &b);
		if (r >= 0)
			*(bool *)field = b;
		return r;
	}
	if (streq_ptr(p->signature, "u"))
		return sd_bus_message_read(m, "u", (uint32_t *)field);
	if (streq_ptr(p->signature, "t"))
		return sd_bus_message_read(m, "t", (uint64_t *)field);
	if (streq_ptr(p->signature, "as")) {
		char **l = NULL;

		r = sd_bus_message_read_strv(m, &l);
		if (r < 0)
			return r;
		strv_free(*(char ***)field);
		*(char ***)field = l;
		return 0;
	}
	if (streq_ptr(p->signature, "at") || streq_ptr(p->signature, "au")) {
		bool wide = p->signature[1] == 't';
		U64Array *a = field;
		const void *v;
		size_t size, n;
		uint64_t *copy;

		r = sd_bus_message_read_array(m, p->signature[1], &v, &size);
		if (r < 0)
			return r;
		n = size / (wide ? sizeof(uint64_t) : sizeof(uint32_t));
		copy = calloc(n + 1, sizeof(uint64_t));
		if (!copy)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			copy[i] = wide ? ((const uint64_t *)v)[i] : ((const uint32_t *)v)[i];
		free(a->v);
		a->v = copy;
		a->n = n;
		return 0;
	}
	return -EINVAL;
}

/* Properties.GetAll of iface on path into data, following map;
 * properties not in map are skipped, a type other than the map's fails. */
static int map_all_properties(sd_bus *bus, const char *path, const char *iface, const PropMap *map, void *data,
			      sd_bus_error *error)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	int r;

	r = sd_bus_call_method(bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", error, &reply,
			       "s", iface);
	if (r < 0)
		return r;
	r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const PropMap *p = NULL;
		const char *name;

		r = sd_bus_message_read(reply, "s", &name);
		if (r < 0)
			return r;
		for (const PropMap *i = map; i->name; i++)
			if (streq_ptr(i->name, name)) {
				p = i;
				break;
			}
		if (p) {
			r = sd_bus_message_enter_container(reply, 'v', p->signature);
			if (r < 0)
				return r;
			r = map_one(reply, p, data);
			if (r < 0)
				return r;
			r = sd_bus_message_exit_container(reply);
		} else
			r = sd_bus_message_skip(reply, "v");
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(reply);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(reply);
}

typedef struct ManagerInfo {
	char *version;
	bool live_updated;
	uint64_t generation;
	char *failure_policy;
	uint32_t max_vms;
	uint32_t max_fds_per_vm;
	bool fdstore;
	char *shutdown_blocked_by;
	char *staged_kernel;
	char *staged_kernel_adopts;
	char *staged_kernel_problem;
} ManagerInfo;

static const PropMap manager_map[] = {
	{ "Version", "s", offsetof(ManagerInfo, version) },
	{ "LiveUpdated", "b", offsetof(ManagerInfo, live_updated) },
	{ "Generation", "t", offsetof(ManagerInfo, generation) },
	{ "FailurePolicy", "s", offsetof(ManagerInfo, failure_policy) },
	{ "MaxVMs", "u", offsetof(ManagerInfo, max_vms) },
	{ "MaxFdsPerVM", "u", offsetof(ManagerInfo, max_fds_per_vm) },
	{ "FdStore", "b", offsetof(ManagerInfo, fdstore) },
	{ "ShutdownBlockedBy", "s", offsetof(ManagerInfo, shutdown_blocked_by) },
	{ "StagedKernel", "s", offsetof(ManagerInfo, staged_kernel) },
	{ "StagedKernelAdopts", "s", offsetof(ManagerInfo, staged_kernel_adopts) },
	{ "StagedKernelProblem", "s", offsetof(ManagerInfo, staged_kernel_problem) },
	{}
};

static void manager_info_done(ManagerInfo *i)
{
	free(i->version);
	free(i->failure_policy);
	free(i->shutdown_blocked_by);
	free(i->staged_kernel);
	free(i->staged_kernel_adopts);
	free(i->staged_kernel_problem);
}

typedef struct VmInfo {
	char *path;
	char *name;
	char *state;
	char **devices;
	U64Array hwpts;
	uint64_t guest_memory_bytes;
	U64Array state_memfds;
	char *session;
	char *last_error;
	uint64_t generation;
	uint32_t owner_pid;
	uint32_t memfds;
	char *ineligible_reason;
	char *restore_notes;
} VmInfo;

/* In the daemon's (introspection) order, which show follows. */
static const PropMap vm_map[] = {
	{ "Name", "s", offsetof(VmInfo, name) },
	{ "State", "s", offsetof(VmInfo, state) },
	{ "Devices", "as", offsetof(VmInfo, devices) },
	{ "HWPTs", "at", offsetof(VmInfo, hwpts) },
	{ "GuestMemoryBytes", "t", offsetof(VmInfo, guest_memory_bytes) },
	{ "StateMemfds", "au", offsetof(VmInfo, state_memfds) },
	{ "Session", "s", offsetof(VmInfo, session) },
	{ "LastError", "s", offsetof(VmInfo, last_error) },
	{ "Generation", "t", offsetof(VmInfo, generation) },
	{ "OwnerPID", "u", offsetof(VmInfo, owner_pid) },
	{ "Memfds", "u", offsetof(VmInfo, memfds) },
	{ "IneligibleReason", "s", offsetof(VmInfo, ineligible_reason) },
	{ "RestoreNotes", "s", offsetof(VmInfo, restore_notes) },
	{}
};

static void vm_info_done(VmInfo *i)
{
	free(i->path);
	free(i->name);
	free(i->state);
	strv_free(i->devices);
	free(i->hwpts.v);
	free(i->state_memfds.v);
	free(i->session);
	free(i->last_error);
	free(i->ineligible_reason);
	free(i->restore_notes);
}

typedef struct VmList {
	VmInfo *vms;
	size_t n;
} VmList;

static void vm_list_done(VmList *l)
{
	for (size_t i = 0; i < l->n; i++)
		vm_info_done(&l->vms[i]);
	free(l->vms);
	*l = (VmList){};
}

static int get_manager(sd_bus *bus, ManagerInfo *ret)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	r = map_all_properties(bus, MANAGER_PATH, MANAGER_IFACE, manager_map, ret, &e);
	if (r < 0)
		return -call_failed("read the daemon's properties", &e, r);
	return 0;
}

/* ListVMs, then every VM's properties.  A VM that goes away in between is
 * left out.  with_props false: names, states and paths only.  Returns
 * 0 or -(exit status). */
static int get_vms(sd_bus *bus, bool with_props, VmList *ret)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_(vm_list_done) VmList l = {};
	const char *name, *state, *path;
	int r;

	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListVMs", &e, &reply, NULL);
	if (r < 0)
		return -call_failed("list VMs", &e, r);
	r = sd_bus_message_enter_container(reply, 'a', "(sso)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sso)", &name, &state, &path)) > 0) {
		VmInfo *n = realloc(l.vms, (l.n + 1) * sizeof(VmInfo)), *v;

		if (!n)
			return -call_failed("list VMs", &e, -ENOMEM);
		l.vms = n;
		v = &l.vms[l.n];
		*v = (VmInfo){ .path = strdup(path), .name = strdup(name), .state = strdup(state) };
		l.n++;
		if (!v->path || !v->name || !v->state)
			return -call_failed("list VMs", &e, -ENOMEM);
	}
	if (r < 0)
		return -call_failed("read the VM list", &e, r);

	for (size_t i = 0; with_props && i < l.n;) {
		r = map_all_properties(bus, l.vms[i].path, VM_IFACE, vm_map, &l.vms[i], &e);
		if (r < 0 && sd_bus_error_has_names(&e, SD_BUS_ERROR_UNKNOWN_OBJECT, SD_BUS_ERROR_UNKNOWN_INTERFACE)) {
			/* gone since ListVMs */
			sd_bus_error_free(&e);
			vm_info_done(&l.vms[i]);
			memmove(&l.vms[i], &l.vms[i + 1], (l.n - i - 1) * sizeof(VmInfo));
			l.n--;
			continue;
		}
		if (r < 0) {
			char what[IOMMULU_VM_NAME_MAX + 64];

			snprintf(what, sizeof(what), "read the properties of VM %s", l.vms[i].name);
			return -call_failed(what, &e, r);
		}
		i++;
	}
	*ret = l;
	l = (VmList){};
	return 0;
}

static VmInfo *vm_list_find(VmList *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (streq_ptr(l->vms[i].name, name))
			return &l->vms[i];
	return NULL;
}

/* The properties of VM name, found with ListVMs (the daemon names the
 * object).  0, or the exit status after printing why not. */
static int get_vm(sd_bus *bus, const char *name, const char *verb, VmList *l, VmInfo **ret)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	char what[IOMMULU_VM_NAME_MAX + 64];
	VmInfo *v;
	int r;

	snprintf(what, sizeof(what), "%s VM %s", verb, name);
	if ((r = get_vms(bus, false, l)) < 0)
		return -r;
	v = vm_list_find(l, name);
	if (v)
		r = map_all_properties(bus, v->path, VM_IFACE, vm_map, v, &e);
	if (!v || sd_bus_error_has_names(&e, SD_BUS_ERROR_UNKNOWN_OBJECT, SD_BUS_ERROR_UNKNOWN_INTERFACE)) {
		fprintf(stderr, "Failed to %s: %s: No VM named '%s'\n", what, ERROR_NO_SUCH_VM, name);
		return EXIT_NO_VM;
	}
	if (r < 0)
		return call_failed(what, &e, r);
	*ret = v;
	return 0;
}

/* ---- output ---------------------------------------------------------- */

/* 65536 -> "64K", 1610612736 -> "1.5G", as systemd's format_bytes(). */
static const char *format_bytes(char *buf, size_t size, uint64_t v)
{
	static const char suffixes[] = "KMGTPE";
	unsigned i = 0;
	uint64_t unit = 1024;

	if (v < 1024) {
		snprintf(buf, size, "%" PRIu64 "B", v);
		return buf;
	}
	while (i + 1 < sizeof(suffixes) - 1 && v >= unit * 1024) {
		unit *= 1024;
		i++;
	}
	if (v % unit == 0)
		snprintf(buf, size, "%" PRIu64 "%c", v / unit, suffixes[i]);
	else
		snprintf(buf, size, "%.1f%c", (double)v / (double)unit, suffixes[i]);
	return buf;
}

static void json_print(json_object *j)
{
	puts(json_object_to_json_string_ext(j, arg_json | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A plain table: a header row (printed unless --no-legend) and rows of
 * cells; every column but the last is padded. */
typedef struct Table {
	size_t n_columns;
	char **cells;		/* row-major, the header first */
	size_t n_cells;
} Table;

static void table_done(Table *t)
{
	for (size_t i = 0; i < t->n_cells; i++)
		free(t->cells[i]);
	free(t->cells);
}

static int table_add(Table *t, const char *cell)
{
	char **n = realloc(t->cells, (t->n_cells + 1) * sizeof(char *));

	if (!n)
		return -ENOMEM;
	t->cells = n;
	t->cells[t->n_cells] = strdup(cell ?: "");
	if (!t->cells[t->n_cells])
		return -ENOMEM;
	t->n_cells++;
	return 0;
}

static int table_addf(Table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int table_addf(Table *t, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return table_add(t, buf);
}

static void table_print(const Table *t)
{
	size_t rows = t->n_cells / t->n_columns, width[16] = {};

	for (size_t row = arg_legend ? 0 : 1; row < rows; row++)
		for (size_t c = 0; c < t->n_columns && c < ELEMENTSOF(width); c++) {
			size_t len = strlen(t->cells[row * t->n_columns + c]);

			if (len > width[c])
				width[c] = len;
		}
	for (size_t row = arg_legend ? 0 : 1; row < rows; row++) {
		for (size_t c = 0; c < t->n_columns; c++) {
			const char *cell = t->cells[row * t->n_columns + c];

			if (c + 1 == t->n_columns)
				printf("%s\n", cell);
			else
				printf("%-*s ", (int)width[c], cell);
		}
	}
}

static json_object *json_string_or_empty(const char *s)
{
	return json_object_new_string(s ?: "");
}

static json_object *vm_to_json(const VmInfo *v)
{
	json_object *j = json_object_new_object(), *a;

	json_object_object_add(j, "Name", json_string_or_empty(v->name));
	json_object_object_add(j, "State", json_string_or_empty(v->state));
	a = json_object_new_array();
	for (char **d = v->devices; d && *d; d++)
		json_object_array_add(a, json_object_new_string(*d));
	json_object_object_add(j, "Devices", a);
	a = json_object_new_array();
	for (size_t i = 0; i < v->hwpts.n; i++)
		json_object_array_add(a, json_object_new_uint64(v->hwpts.v[i]));
	json_object_object_add(j, "HWPTs", a);
	json_object_object_add(j, "GuestMemoryBytes", json_object_new_uint64(v->guest_memory_bytes));
	a = json_object_new_array();
	for (size_t i = 0; i < v->state_memfds.n; i++)
		json_object_array_add(a, json_object_new_uint64(v->state_memfds.v[i]));
	json_object_object_add(j, "StateMemfds", a);
	json_object_object_add(j, "Session", json_string_or_empty(v->session));
	json_object_object_add(j, "LastError", json_string_or_empty(v->last_error));
	json_object_object_add(j, "Generation", json_object_new_uint64(v->generation));
	json_object_object_add(j, "OwnerPID", json_object_new_uint64(v->owner_pid));
	json_object_object_add(j, "Memfds", json_object_new_uint64(v->memfds));
	json_object_object_add(j, "IneligibleReason", json_string_or_empty(v->ineligible_reason));
	json_object_object_add(j, "RestoreNotes", json_string_or_empty(v->restore_notes));
	return j;
}

/* ---- verbs ------------------------------------------------------------ */

static const char *const vm_states[] = {
	"registering", "registered", "preserved", "restored", "verified", "retrieved", "finished", "failed",
};

static int verb_status(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(manager_info_done) ManagerInfo mi = {};
	_cleanup_(vm_list_done) VmList l = {};
	size_t counts[ELEMENTSOF(vm_states) + 1] = {};
	char by_state[512] = "";
	int r;

	if ((r = get_manager(bus, &mi)) < 0 || (r = get_vms(bus, false, &l)) < 0)
		return -r;
	for (size_t i = 0; i < l.n; i++) {
		size_t k = 0;

		while (k < ELEMENTSOF(vm_states) && !streq_ptr(vm_states[k], l.vms[i].state))
			k++;
		counts[k]++;	/* [ELEMENTSOF] = a state this tool does not know */
	}

	if (arg_json >= 0) {
		_cleanup_json_ json_object *j = json_object_new_object();
		json_object *s = json_object_new_object();

		json_object_object_add(j, "Version", json_string_or_empty(mi.version));
		json_object_object_add(j, "FailurePolicy", json_string_or_empty(mi.failure_policy));
		json_object_object_add(j, "MaxVMs", json_object_new_uint64(mi.max_vms));
		json_object_object_add(j, "MaxFdsPerVM", json_object_new_uint64(mi.max_fds_per_vm));
		json_object_object_add(j, "FdStore", json_object_new_boolean(mi.fdstore));
		json_object_object_add(j, "LiveUpdated", json_object_new_boolean(mi.live_updated));
		json_object_object_add(j, "Generation", json_object_new_uint64(mi.generation));
		json_object_object_add(j, "ShutdownBlockedBy", json_string_or_empty(mi.shutdown_blocked_by));
		json_object_object_add(j, "StagedKernel", json_string_or_empty(mi.staged_kernel));
		json_object_object_add(j, "StagedKernelAdopts", json_string_or_empty(mi.staged_kernel_adopts));
		json_object_object_add(j, "VMs", json_object_new_uint64(l.n));
		for (size_t k = 0; k < ELEMENTSOF(vm_states); k++)
			json_object_object_add(s, vm_states[k], json_object_new_uint64(counts[k]));
		if (counts[ELEMENTSOF(vm_states)])
			json_object_object_add(s, "other", json_object_new_uint64(counts[ELEMENTSOF(vm_states)]));
		json_object_object_add(j, "VMsByState", s);
		json_print(j);
		return EXIT_OK;
	}

	for (size_t k = 0; k <= ELEMENTSOF(vm_states); k++)
		if (counts[k])
			snprintf(by_state + strlen(by_state), sizeof(by_state) - strlen(by_state), "%s%zu %s",
				 by_state[0] ? ", " : "", counts[k],
				 k < ELEMENTSOF(vm_states) ? vm_states[k] : "other");
	printf("          Version: %s\n", strempty(mi.version));
	printf("    FailurePolicy: %s\n", strempty(mi.failure_policy));
	printf("           MaxVMs: %" PRIu32 "\n", mi.max_vms);
	printf("      MaxFdsPerVM: %" PRIu32 "\n", mi.max_fds_per_vm);
	printf("          FdStore: %s\n", mi.fdstore ? "yes" : "no");
	printf("      LiveUpdated: %s\n", mi.live_updated ? "yes" : "no");
	printf("       Generation: %" PRIu64 "\n", mi.generation);
	printf("ShutdownBlockedBy: %s\n", mi.shutdown_blocked_by && mi.shutdown_blocked_by[0] ?
					      mi.shutdown_blocked_by : "-");
	printf("     StagedKernel: %s%s%s\n", mi.staged_kernel && mi.staged_kernel[0] ? mi.staged_kernel : "-",
	       mi.staged_kernel && mi.staged_kernel[0] ? ", adopts " : "",
	       mi.staged_kernel && mi.staged_kernel[0] ? (streq_ptr(mi.staged_kernel_adopts, "devices") ?
							   "memfds and devices" : "memfds only") : "");
	printf("              VMs: %zu%s%s%s\n", l.n, by_state[0] ? " (" : "", by_state, by_state[0] ? ")" : "");
	return EXIT_OK;
}

/* What list shows in its last column. */
static const char *vm_note(const VmInfo *v, char *buf, size_t size)
{
	if (v->ineligible_reason && v->ineligible_reason[0])
		snprintf(buf, size, "ineligible: %s", v->ineligible_reason);
	else if (v->last_error && v->last_error[0])
		snprintf(buf, size, "last error: %s", v->last_error);
	else if (v->restore_notes && v->restore_notes[0])
		snprintf(buf, size, "restore: %s", v->restore_notes);
	else
		snprintf(buf, size, "-");
	return buf;
}

static int verb_list(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(vm_list_done) VmList l = {};
	_cleanup_(table_done) Table t = { .n_columns = 8 };
	int r;

	if ((r = get_vms(bus, true, &l)) < 0)
		return -r;
	if (arg_json >= 0) {
		_cleanup_json_ json_object *j = json_object_new_array();

		for (size_t i = 0; i < l.n; i++)
			json_object_array_add(j, vm_to_json(&l.vms[i]));
		json_print(j);
		return EXIT_OK;
	}
	if (l.n == 0) {
		if (arg_legend)
			printf("No VMs.\n");
		return EXIT_OK;
	}
	for (const char *const *h = (const char *const[]){ "NAME", "STATE", "MEMFDS", "MEMORY", "DEVICES", "HWPTS",
							    "OWNER", "NOTE", NULL };
	     *h; h++)
		if (table_add(&t, *h) < 0)
			return call_failed("list VMs", &SD_BUS_ERROR_NULL, -ENOMEM);
	for (size_t i = 0; i < l.n; i++) {
		const VmInfo *v = &l.vms[i];
		char mem[32], note[2048];

		r = table_add(&t, v->name);
		if (r >= 0)
			r = table_add(&t, v->state);
		if (r >= 0)
			r = table_addf(&t, "%" PRIu32, v->memfds);
		if (r >= 0)
			r = table_add(&t, format_bytes(mem, sizeof(mem), v->guest_memory_bytes));
		if (r >= 0)
			r = table_addf(&t, "%zu", strv_length(v->devices));
		if (r >= 0)
			r = table_addf(&t, "%zu", v->hwpts.n);
		if (r >= 0)
			r = v->owner_pid ? table_addf(&t, "%" PRIu32, v->owner_pid) : table_add(&t, "-");
		if (r >= 0)
			r = table_add(&t, vm_note(v, note, sizeof(note)));
		if (r < 0)
			return call_failed("list VMs", &SD_BUS_ERROR_NULL, r);
	}
	table_print(&t);
	if (arg_legend)
		printf("\n%zu VM%s listed.\n", l.n, l.n == 1 ? "" : "s");
	return EXIT_OK;
}

static int verb_show(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(vm_list_done) VmList l = {};
	const char *name = argv[1];
	VmInfo *v;
	int r;

	if (check_vm_name(name) < 0)
		return EXIT_USAGE;
	if ((r = get_vm(bus, name, "show", &l, &v)) != 0)
		return r;
	if (arg_json >= 0) {
		_cleanup_json_ json_object *j = vm_to_json(v);

		json_print(j);
		return EXIT_OK;
	}
	printf("Name=%s\n", strempty(v->name));
	printf("State=%s\n", strempty(v->state));
	printf("Devices=");
	for (char **d = v->devices; d && *d; d++)
		printf("%s%s", d == v->devices ? "" : " ", *d);
	printf("\nHWPTs=");
	for (size_t i = 0; i < v->hwpts.n; i++)
		printf("%s%" PRIu64, i ? " " : "", v->hwpts.v[i]);
	printf("\nGuestMemoryBytes=%" PRIu64 "\n", v->guest_memory_bytes);
	printf("StateMemfds=");
	for (size_t i = 0; i < v->state_memfds.n; i++)
		printf("%s%" PRIu64, i ? " " : "", v->state_memfds.v[i]);
	printf("\n");
	printf("Session=%s\n", strempty(v->session));
	printf("LastError=%s\n", strempty(v->last_error));
	printf("Generation=%" PRIu64 "\n", v->generation);
	printf("OwnerPID=%" PRIu32 "\n", v->owner_pid);
	printf("Memfds=%" PRIu32 "\n", v->memfds);
	printf("IneligibleReason=%s\n", strempty(v->ineligible_reason));
	printf("RestoreNotes=%s\n", strempty(v->restore_notes));
	return EXIT_OK;
}

/* A method taking the VM name and returning nothing. */
static int call_vm_method(sd_bus *bus, const char *method, const char *verb, const char *name)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	char what[IOMMULU_VM_NAME_MAX + 64];
	int r;

	if (check_vm_name(name) < 0)
		return EXIT_USAGE;
	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, method, &e, NULL, "s", name);
	if (r < 0) {
		snprintf(what, sizeof(what), "%s VM %s", verb, name);
		return call_failed(what, &e, r);
	}
	return EXIT_OK;
}

static int preserve_all(sd_bus *bus)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_(table_done) Table t = { .n_columns = 2 };
	_cleanup_json_ json_object *j = json_object_new_array();
	const char *name, *result;
	size_t n = 0, failed = 0;
	int r;

	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "PreserveAll", &e, &reply, NULL);
	if (r < 0)
		return call_failed("preserve all VMs", &e, r);
	r = table_add(&t, "NAME");
	if (r >= 0)
		r = table_add(&t, "RESULT");
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "(ss)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(ss)", &name, &result)) > 0) {
		json_object *o = json_object_new_object();
		bool ok = streq_ptr(result, "ok");

		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "ok", json_object_new_boolean(ok));
		json_object_object_add(o, "result", json_object_new_string(result));
		json_object_array_add(j, o);
		n++;
		failed += !ok;
		r = table_add(&t, name);
		if (r >= 0)
			r = table_add(&t, result);
	}
	if (r < 0)
		return call_failed("read PreserveAll's results", &e, r);
	if (arg_json >= 0)
		json_print(j);
	else {
		table_print(&t);
		if (arg_legend)
			printf("\n%zu of %zu VM%s preserved.\n", n - failed, n, n == 1 ? "" : "s");
	}
	return failed ? EXIT_FAIL : EXIT_OK;
}

static int verb_preserve(int argc, char **argv, sd_bus *bus)
{
	if (arg_all != (argc < 2)) {
		fprintf(stderr, "preserve takes either a VM name or --all.\n");
		return EXIT_USAGE;
	}
	if (arg_all)
		return preserve_all(bus);
	return call_vm_method(bus, "PreserveVM", "preserve", argv[1]);
}

static int verb_unpreserve(int argc, char **argv, sd_bus *bus)
{
	return call_vm_method(bus, "UnpreserveVM", "unpreserve", argv[1]);
}

static int verb_finish(int argc, char **argv, sd_bus *bus)
{
	return call_vm_method(bus, "FinishVM", "finish", argv[1]);
}

static int verb_verify(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_(table_done) Table t = { .n_columns = 3 };
	_cleanup_json_ json_object *j = json_object_new_array();
	const char *name = argv[1], *what, *detail;
	char msg[IOMMULU_VM_NAME_MAX + 64];
	size_t n = 0, failed = 0;
	int ok, r;

	if (check_vm_name(name) < 0)
		return EXIT_USAGE;
	snprintf(msg, sizeof(msg), "verify VM %s", name);
	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "VerifyVM", &e, &reply, "s", name);
	if (r < 0)
		return call_failed(msg, &e, r);
	r = table_add(&t, "CHECK");
	if (r >= 0)
		r = table_add(&t, "RESULT");
	if (r >= 0)
		r = table_add(&t, "DETAIL");
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "(sbs)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sbs)", &what, &ok, &detail)) > 0) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "check", json_object_new_string(what));
		json_object_object_add(o, "ok", json_object_new_boolean(ok));
		json_object_object_add(o, "detail", json_object_new_string(detail));
		json_object_array_add(j, o);
		n++;
		failed += !ok;
		r = table_add(&t, what);
		if (r >= 0)
			r = table_add(&t, ok ? "ok" : "FAILED");
		if (r >= 0)
			r = table_add(&t, detail[0] ? detail : "-");
	}
	if (r < 0)
		return call_failed(msg, &e, r);
	if (arg_json >= 0)
		json_print(j);
	else {
		table_print(&t);
		if (arg_legend)
			printf("\n%zu of %zu check%s passed.\n", n - failed, n, n == 1 ? "" : "s");
	}
	if (failed)
		fprintf(stderr, "VM %s failed %zu of %zu checks.\n", name, failed, n);
	return failed || n == 0 ? EXIT_FAIL : EXIT_OK;
}

typedef struct Retrieved {
	char **roles;
	int *fds;		/* owned */
	size_t n;
} Retrieved;

static void retrieved_done(Retrieved *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->roles[i]);
		safe_close(f->fds[i]);
	}
	free(f->roles);
	free(f->fds);
}

/* Appends the (sh) entries of reply to f, duplicating the fds (the
 * message owns its own). */
static int read_files(sd_bus_message *reply, Retrieved *f, size_t *ret_n)
{
	const char *role;
	size_t n = 0;
	int fd, r;

	r = sd_bus_message_enter_container(reply, 'a', "(sh)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0) {
		char **roles = realloc(f->roles, (f->n + 1) * sizeof(char *));
		int *fds;

		if (!roles)
			return -ENOMEM;
		f->roles = roles;
		fds = realloc(f->fds, (f->n + 1) * sizeof(int));
		if (!fds)
			return -ENOMEM;
		f->fds = fds;
		f->fds[f->n] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (f->fds[f->n] < 0)
			return -errno;
		f->roles[f->n] = strdup(role);
		f->n++;
		if (!f->roles[f->n - 1])
			return -ENOMEM;
		n++;
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	if (ret_n)
		*ret_n = n;
	return r < 0 ? r : 0;
}

/* The VM's restored files: RetrieveVM for a VM that surely fits into one
 * message (memfds + devices + an iommufd <= 16), else RetrieveVMPart
 * until it has them all. */
static int retrieve_files(sd_bus *bus, const char *name, Retrieved *f)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(vm_list_done) VmList l = {};
	char what[IOMMULU_VM_NAME_MAX + 64];
	VmInfo *v;
	int r;

	snprintf(what, sizeof(what), "retrieve VM %s", name);
	if ((r = get_vm(bus, name, "retrieve", &l, &v)) != 0)
		return r;
	if (v->memfds + strv_length(v->devices) + 1 <= FDS_PER_MESSAGE) {
		_cleanup_msg_ sd_bus_message *reply = NULL;

		r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RetrieveVM", &e, &reply, "s",
				       name);
		if (r >= 0)
			r = read_files(reply, f, NULL);
		return r < 0 ? call_failed(what, &e, r) : EXIT_OK;
	}
	for (uint32_t total = UINT32_MAX; f->n < total;) {
		_cleanup_msg_ sd_bus_message *reply = NULL;
		size_t got = 0;

		r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RetrieveVMPart", &e, &reply, "suu",
				       name, (uint32_t)f->n, FDS_PER_MESSAGE);
		if (r >= 0)
			r = read_files(reply, f, &got);
		if (r >= 0)
			r = sd_bus_message_read(reply, "u", &total);
		if (r < 0)
			return call_failed(what, &e, r);
		if (got == 0 && f->n < total) {
			fprintf(stderr, "Failed to %s: the daemon handed out %zu of %" PRIu32 " files and then none.\n",
				what, f->n, total);
			return EXIT_FAIL;
		}
	}
	return EXIT_OK;
}

/* exec arg_command with the files at fds 3, 4, ... and $IOMMULU_FDS. */
static int exec_with_files(sd_bus **bus, Retrieved *f)
{
	size_t size = 1;
	char *env;

	for (size_t i = 0; i < f->n; i++)
		size += strlen(f->roles[i]) + 16;
	env = calloc(1, size);
	if (!env)
		return call_failed("run the command", &SD_BUS_ERROR_NULL, -ENOMEM);
	for (size_t i = 0; i < f->n; i++)
		snprintf(env + strlen(env), size - strlen(env), "%s%s=%zu", i ? " " : "", f->roles[i], 3 + i);
	if (setenv("IOMMULU_FDS", env, 1) < 0) {
		free(env);
		return call_failed("run the command", &SD_BUS_ERROR_NULL, -errno);
	}
	free(env);

	/* Out of the way of 3 .. 3+n-1 first, so that no dup2() below
	 * overwrites a file still to be moved. */
	for (size_t i = 0; i < f->n; i++) {
		int fd = fcntl(f->fds[i], F_DUPFD_CLOEXEC, (int)(3 + f->n));

		if (fd < 0) {
			fprintf(stderr, "Failed to pass %s to the command: %m\n", f->roles[i]);
			return EXIT_FAIL;
		}
		safe_close(f->fds[i]);
		f->fds[i] = fd;
	}
	/* The bus connection is not the command's business. */
	*bus = sd_bus_flush_close_unref(*bus);
	fflush(stdout);
	for (size_t i = 0; i < f->n; i++) {
		/* dup2() leaves the copy without FD_CLOEXEC; the
		 * originals close on exec. */
		if (dup2(f->fds[i], 3 + (int)i) < 0) {
			fprintf(stderr, "Failed to pass %s as fd %zu: %m\n", f->roles[i], 3 + i);
			return EXIT_FAIL;
		}
	}
	execvp(arg_command[0], arg_command);
	fprintf(stderr, "Failed to execute %s: %m\n", arg_command[0]);
	return errno == ENOENT ? EXIT_EXEC_NOT_FOUND : EXIT_EXEC_FAILED;
}

static int verb_retrieve(int argc, char **argv, sd_bus *bus_in)
{
	_cleanup_(retrieved_done) Retrieved f = {};
	sd_bus *bus = bus_in;
	int r;

	if (check_vm_name(argv[1]) < 0)
		return EXIT_USAGE;
	r = retrieve_files(bus, argv[1], &f);
	if (r != EXIT_OK)
		return r;
	if (arg_command)
		/* The bus is the caller's (main() unrefs it); keep a
		 * reference across the close in exec_with_files(). */
		return exec_with_files(&(sd_bus *){ sd_bus_ref(bus) }, &f);

	if (arg_json >= 0) {
		_cleanup_json_ json_object *j = json_object_new_array();

		for (size_t i = 0; i < f.n; i++) {
			json_object *o = json_object_new_object();
			struct stat st;

			json_object_object_add(o, "role", json_object_new_string(f.roles[i]));
			if (startswith(f.roles[i], "memfd:") && fstat(f.fds[i], &st) >= 0)
				json_object_object_add(o, "size", json_object_new_uint64((uint64_t)st.st_size));
			json_object_array_add(j, o);
		}
		json_print(j);
		return EXIT_OK;
	}
	for (size_t i = 0; i < f.n; i++) {
		struct stat st;
		char size[32];

		if (startswith(f.roles[i], "memfd:") && fstat(f.fds[i], &st) >= 0)
			printf("%s %s\n", f.roles[i], format_bytes(size, sizeof(size), (uint64_t)st.st_size));
		else
			printf("%s\n", f.roles[i]);
	}
	return EXIT_OK;
}

/* Will VM v survive a kexec now, and why (not). */
static bool vm_survives(const VmInfo *v, char *why, size_t size)
{
	const char *state = strempty(v->state);

	/* A preserved VM too: the kernel staged for kexec may not adopt it. */
	if (v->ineligible_reason && v->ineligible_reason[0]) {
		snprintf(why, size, "%s", v->ineligible_reason);
		return false;
	}
	if (streq_ptr(state, "preserved")) {
		snprintf(why, size, "preserved in LUO session %s", strempty(v->session));
		return true;
	}
	if (streq_ptr(state, "registered")) {
		snprintf(why, size, "preserved automatically when the kexec starts");
		return true;
	}
	/* The daemon fills IneligibleReason lazily (on a change, a
	 * re-check, a logind inhibitor); the state alone tells these. */
	if (streq_ptr(state, "restored") || streq_ptr(state, "verified") || streq_ptr(state, "retrieved") ||
	    (streq_ptr(state, "failed") && v->session && v->session[0])) {
		snprintf(why, size, "restored from the last live update and %s%s%s; finish it and let its VMM "
			 "register it again", state, streq_ptr(state, "failed") ? ": " : "",
			 streq_ptr(state, "failed") ? strempty(v->last_error) : "");
		return false;
	}
	if (streq_ptr(state, "failed")) {
		snprintf(why, size, "the last preservation failed (retried at kexec): %s",
			 v->last_error && v->last_error[0] ? v->last_error : "no error recorded");
		return false;
	}
	if (streq_ptr(state, "finished")) {
		snprintf(why, size, "finished after the last live update and not registered again; "
			 "its VMM has to register it");
		return false;
	}
	if (streq_ptr(state, "registering")) {
		snprintf(why, size, "registration not complete");
		return false;
	}
	snprintf(why, size, "%s: not preservable in this state", state);
	return false;
}

/* A VM run by iommu-lud-qemu@NAME.service (vmm/qemu) survives only if its
 * helper saves QEMU's device state in the kexec's shutdown: the unit must be
 * running with the helper (its main process) as the VM's registered owner,
 * and both of its memfds registered, guest RAM and the state memfd, and
 * the helper must not have found it unsaveable (its StatusText says "cannot
 * be saved for a live update": QEMU blocks migration, or the state memfd is
 * too small).  After the kexec iommu-lud-qemu-resume.service starts the
 * unit again when the VM's config is in IOMMULU_CONF_DIR/qemu/: until it
 * registers the VM again, a restored VM with such a config is the unit's to
 * resume, not the operator's to finish.  Adds to why, may turn ok off;
 * *ret_unit is the VMM's unit (NULL if none or not found). */
static bool qemu_vm_survives(sd_bus *bus, const VmInfo *v, bool ok, char *why, size_t size, char **ret_unit)
{
	_cleanup_free_ char *unit = NULL, *path = NULL, *active = NULL, *sub = NULL, *status = NULL;
	char conf[512];
	size_t len = strlen(why);
	uint32_t main_pid = 0;
	size_t ulen;

	*ret_unit = NULL;
	snprintf(conf, sizeof(conf), IOMMULU_CONF_DIR "/qemu/%s.conf", v->name);
	if (v->owner_pid == 0 &&
	    (streq_ptr(v->state, "restored") || streq_ptr(v->state, "verified") || streq_ptr(v->state, "retrieved")) &&
	    access(conf, F_OK) == 0) {
		char u[128];

		snprintf(u, sizeof(u), "iommu-lud-qemu@%s.service", v->name);
		unit = strdup(u);
		if (!unit || sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit, &path) < 0 ||
		    sd_bus_get_property_string(bus, "org.freedesktop.systemd1", path, "org.freedesktop.systemd1.Unit",
					       "ActiveState", NULL, &active) < 0)
			active = NULL;
		if (streq_ptr(active, "failed"))
			snprintf(why, size, "restored from the last live update and %s; %s failed to resume it (its "
				 "journal says why); if QEMU was not saved, `iommu-luctl finish %s` drops the preserved "
				 "RAM and a new start of the unit boots the VM afresh", v->state, u, v->name);
		else
			snprintf(why, size, "restored from the last live update and %s; %s resumes it and registers it "
				 "again (the unit is %s; do not finish the VM: that drops its preserved RAM)", v->state, u,
				 active ? active : "not loaded");
		*ret_unit = TAKE_PTR(unit);
		return ok;
	}
	if (v->owner_pid == 0 || sd_pid_get_unit((pid_t)v->owner_pid, &unit) < 0)
		return ok;
	ulen = strlen(unit);
	if (!startswith(unit, "iommu-lud-qemu@") || ulen < strlen(".service") ||
	    !streq_ptr(unit + ulen - strlen(".service"), ".service")) {
		*ret_unit = TAKE_PTR(unit);
		return ok;
	}
	if (sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit, &path) < 0 ||
	    sd_bus_get_property_string(bus, "org.freedesktop.systemd1", path, "org.freedesktop.systemd1.Unit",
				       "ActiveState", NULL, &active) < 0 ||
	    sd_bus_get_property_string(bus, "org.freedesktop.systemd1", path, "org.freedesktop.systemd1.Unit",
				       "SubState", NULL, &sub) < 0 ||
	    sd_bus_get_property_trivial(bus, "org.freedesktop.systemd1", path, "org.freedesktop.systemd1.Service",
					"MainPID", NULL, 'u', &main_pid) < 0 ||
	    sd_bus_get_property_string(bus, "org.freedesktop.systemd1", path, "org.freedesktop.systemd1.Service",
				       "StatusText", NULL, &status) < 0) {
		snprintf(why, size, "its VMM unit %s cannot be queried: whether QEMU will be saved is unknown", unit);
		ok = false;
	} else if (!streq_ptr(active, "active") || !streq_ptr(sub, "running")) {
		snprintf(why, size, "its VMM unit %s is %s (%s): QEMU's device state would not be saved", unit,
			 strempty(active), strempty(sub));
		ok = false;
	} else if (main_pid != v->owner_pid) {
		snprintf(why, size, "registered by pid %" PRIu32 ", not by %s's helper (pid %" PRIu32 "), which saves "
			 "QEMU when the unit stops", v->owner_pid, unit, main_pid);
		ok = false;
	} else if (strstr(status, "cannot be saved for a live update")) {
		snprintf(why, size, "%s: %s", unit, status);
		ok = false;
	} else if (v->memfds < 2) {
		snprintf(why, size, "%s registered %" PRIu32 " memfd(s), not guest RAM and QEMU's state memfd: "
			 "the device state would have nowhere to go", unit, v->memfds);
		ok = false;
	} else if (ok) {
		if (access(conf, F_OK) == 0)
			snprintf(why + len, size - len, "; %s saves QEMU in the kexec and is resumed after it (%s)",
				 unit, conf);
		else
			snprintf(why + len, size - len, "; %s saves QEMU in the kexec, but no %s: start the unit by hand "
				 "after it", unit, conf);
	}
	*ret_unit = TAKE_PTR(unit);
	return ok;
}

/* /sys/kernel/kexec_loaded: 1 staged, 0 not, -errno unreadable. */
static int kexec_loaded(void)
{
	char buf[8] = "";
	int fd = open("/sys/kernel/kexec_loaded", O_RDONLY | O_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return -errno;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return k < 0 ? -errno : -EIO;
	return buf[0] == '1';
}

/*
 * The interrupts of a VM's devices, read from sysfs as the kernel sees them:
 * MSI and MSI-X are carried over enabled (the VMM re-arms the vectors after
 * the kexec, each then fires once); INTx is refused at preservation.
 */
static void vm_irqs(const VmInfo *v, char *why, size_t size, json_object *o)
{
	json_object *a = json_object_new_array();

	for (char **d = v->devices; d && *d; d++) {
		json_object *e = json_object_new_object();
		iommulu_pci_irqs irqs;
		size_t n = strlen(why);
		int r;

		r = iommulu_pci_irqs_read(*d, &irqs);
		json_object_object_add(e, "device", json_object_new_string(*d));
		if (r < 0) {
			snprintf(why + n, size - n, "; %s: interrupts unreadable (%s)", *d, strerror(-r));
			json_object_object_add(e, "error", json_object_new_string(strerror(-r)));
		} else {
			if (irqs.type == IOMMULU_PCI_IRQ_NONE)
				snprintf(why + n, size - n, "; %s: no MSI/MSI-X", *d);
			else
				snprintf(why + n, size - n, "; %s: %s, %u vector(s) set up, carried over "
					 "(re-arm them after the kexec)", *d,
					 iommulu_pci_irq_type_to_string(irqs.type), irqs.set_up);
			json_object_object_add(e, "type", json_object_new_string(
						       iommulu_pci_irq_type_to_string(irqs.type)));
			json_object_object_add(e, "vectors", json_object_new_uint64(irqs.vectors));
			json_object_object_add(e, "set_up", json_object_new_uint64(irqs.set_up));
		}
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "interrupts", a);
}

static int verb_check(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(manager_info_done) ManagerInfo mi = {};
	_cleanup_(vm_list_done) VmList l = {};
	_cleanup_(table_done) Table t = { .n_columns = 4 };
	_cleanup_json_ json_object *j = json_object_new_object();
	json_object *vms = json_object_new_array();
	size_t lost = 0;
	bool blocked;
	int staged, r;

	json_object_object_add(j, "vms", vms);
	if ((r = get_manager(bus, &mi)) < 0 || (r = get_vms(bus, true, &l)) < 0)
		return -r;
	r = table_add(&t, "VM");
	if (r >= 0)
		r = table_add(&t, "STATE");
	if (r >= 0)
		r = table_add(&t, "SURVIVES");
	if (r >= 0)
		r = table_add(&t, "WHY");
	for (size_t i = 0; r >= 0 && i < l.n; i++) {
		_cleanup_free_ char *unit = NULL;
		char why[2048];
		bool ok = vm_survives(&l.vms[i], why, sizeof(why));
		json_object *o = json_object_new_object();

		ok = qemu_vm_survives(bus, &l.vms[i], ok, why, sizeof(why), &unit);
		/* Devices go only into a kernel the daemon checked (the daemon
		 * says so in IneligibleReason, which it may fill lazily). */
		if (ok && strv_length(l.vms[i].devices) > 0 && !streq_ptr(mi.staged_kernel_adopts, "devices")) {
			ok = false;
			if (mi.staged_kernel && mi.staged_kernel[0])
				snprintf(why, sizeof(why), "the kernel staged for kexec, %s, cannot adopt its devices: %s",
					 mi.staged_kernel, strempty(mi.staged_kernel_problem));
			else
				snprintf(why, sizeof(why), "its devices need a kernel staged with `iommu-luctl stage`, "
					 "which checks that it can adopt them; none was");
		}

		vm_irqs(&l.vms[i], why, sizeof(why), o);
		lost += !ok;
		json_object_object_add(o, "name", json_object_new_string(l.vms[i].name));
		json_object_object_add(o, "state", json_object_new_string(strempty(l.vms[i].state)));
		json_object_object_add(o, "survives", json_object_new_boolean(ok));
		json_object_object_add(o, "why", json_object_new_string(why));
		json_object_object_add(o, "vmm_unit", unit ? json_object_new_string(unit) : NULL);
		json_object_array_add(vms, o);
		r = table_add(&t, l.vms[i].name);
		if (r >= 0)
			r = table_add(&t, l.vms[i].state);
		if (r >= 0)
			r = table_add(&t, ok ? "yes" : "no");
		if (r >= 0)
			r = table_add(&t, why);
	}
	if (r < 0)
		return call_failed("check", &SD_BUS_ERROR_NULL, r);
	blocked = mi.shutdown_blocked_by && mi.shutdown_blocked_by[0];
	staged = kexec_loaded();

	json_object_object_add(j, "ok", json_object_new_boolean(lost == 0 && !blocked));
	json_object_object_add(j, "lost", json_object_new_uint64(lost));
	json_object_object_add(j, "FailurePolicy", json_string_or_empty(mi.failure_policy));
	json_object_object_add(j, "ShutdownBlockedBy", json_string_or_empty(mi.shutdown_blocked_by));
	json_object_object_add(j, "kexec_loaded", staged < 0 ? NULL : json_object_new_boolean(staged));
	json_object_object_add(j, "staged_kernel", json_string_or_empty(mi.staged_kernel));
	json_object_object_add(j, "staged_kernel_adopts", json_string_or_empty(mi.staged_kernel_adopts));
	json_object_object_add(j, "staged_kernel_problem", json_string_or_empty(mi.staged_kernel_problem));

	if (arg_json >= 0)
		json_print(j);
	else {
		if (l.n > 0)
			table_print(&t);
		if (arg_legend) {
			if (l.n > 0)
				printf("\n");
			if (blocked)
				printf("systemctl kexec is blocked by iommu-lud (FailurePolicy=%s): %s\n",
				       strempty(mi.failure_policy), mi.shutdown_blocked_by);
			else if (lost && streq_ptr(mi.failure_policy, "continue"))
				printf("FailurePolicy=continue: nothing blocks a kexec, the VMs marked \"no\" would be lost.\n");
			if (mi.staged_kernel && mi.staged_kernel[0])
				printf("Kernel staged for kexec: %s, checked by iommu-lud (loaded again when the kexec "
				       "starts): it adopts LUO sessions%s%s\n", mi.staged_kernel,
				       streq_ptr(mi.staged_kernel_adopts, "devices") ? " and devices" :
				       ", but not devices: ", streq_ptr(mi.staged_kernel_adopts, "devices") ? "" :
				       strempty(mi.staged_kernel_problem));
			else
				printf("Kernel staged for kexec: %s\n",
				       staged < 0 ? "unknown (cannot read /sys/kernel/kexec_loaded)" :
				       staged ? "yes, not through `iommu-luctl stage`: unchecked; VMs with devices are "
						"not preserved into it" : "no");
			if (l.n == 0)
				printf("Verdict: no VMs registered, a kexec loses nothing.\n");
			else if (lost == 0 && !blocked)
				printf("Verdict: a kexec now would preserve %s%zu VM%s.\n", l.n == 1 ? "its " : "all ", l.n,
				       l.n == 1 ? "" : "s");
			else if (lost)
				printf("Verdict: a kexec now would lose %zu of %zu VM%s.\n", lost, l.n, l.n == 1 ? "" : "s");
			else
				printf("Verdict: a kexec now would be refused.\n");
		}
	}
	return lost == 0 && !blocked ? EXIT_OK : EXIT_FAIL;
}

/* The release in a bzImage's header, for its config's name. */
static int image_release(int fd, char ret[KIMAGE_RELEASE_MAX])
{
	uint8_t buf[0x1000];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);

	if (n < 0)
		return -errno;
	/* The version string lies within the setup code (the first 32 KiB
	 * at most); read on if the pointer leads past the first page. */
	if ((size_t)n >= 0x210 && (size_t)(buf[0x20e] | buf[0x20f] << 8) + 0x200 + KIMAGE_RELEASE_MAX > sizeof(buf)) {
		_cleanup_free_ uint8_t *big = malloc(0x10000);
		ssize_t m;

		if (!big)
			return -ENOMEM;
		m = pread(fd, big, 0x10000, 0);
		if (m < 0)
			return -errno;
		return kimage_release(big, (size_t)m, ret);
	}
	return kimage_release(buf, (size_t)n, ret);
}

/* The config of the kernel in path: --config, else config-RELEASE next to
 * the image, else in /boot; -ENOENT if none (the daemon then looks for an
 * embedded IKCONFIG). */
static int find_config(const char *path, int kernel_fd, char **ret_path)
{
	char release[KIMAGE_RELEASE_MAX], *p;
	_cleanup_free_ char *dir = strdup(path);
	int r;

	if (!dir)
		return -ENOMEM;
	if (arg_config)
		return (*ret_path = strdup(arg_config)) ? 0 : -ENOMEM;
	r = image_release(kernel_fd, release);
	if (r < 0)
		return r;
	p = strrchr(dir, '/');
	if (p)
		*p = 0;
	for (int i = 0; i < 2; i++) {
		_cleanup_free_ char *c = NULL;

		if (asprintf(&c, "%s/config-%s", i == 0 ? (p ? (dir[0] ? dir : "/") : ".") : "/boot", release) < 0)
			return -ENOMEM;
		if (access(c, R_OK) == 0) {
			*ret_path = TAKE_PTR(c);
			return 0;
		}
	}
	return -ENOENT;
}

/* The running kernel's command line without the boot loader's BOOT_IMAGE=,
 * and --append's arguments. */
static int stage_cmdline(char **ret)
{
	_cleanup_free_ char *cur = NULL, *out = NULL;
	size_t len = 0, n = 0;
	FILE *f;

	if (arg_reuse_cmdline) {
		f = fopen("/proc/cmdline", "re");
		if (!f)
			return -errno;
		if (getline(&cur, &n, f) < 0) {
			fclose(f);
			return -EIO;
		}
		fclose(f);
	}
	out = calloc(1, (cur ? strlen(cur) : 0) + (arg_append ? strlen(arg_append) : 0) + 2);
	if (!out)
		return -ENOMEM;
	for (char *w = cur ? strtok(cur, " \t\n") : NULL; w; w = strtok(NULL, " \t\n")) {
		if (startswith(w, "BOOT_IMAGE="))
			continue;
		len += (size_t)sprintf(out + len, "%s%s", len ? " " : "", w);
	}
	if (arg_append && arg_append[0])
		sprintf(out + len, "%s%s", len ? " " : "", arg_append);
	*ret = TAKE_PTR(out);
	return 0;
}

static int verb_stage(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp_) sd_bus_message *call = NULL, *reply = NULL;
	_cleanup_close_ int kfd = -EBADF, ifd = -EBADF, cfd = -EBADF;
	_cleanup_free_ char *config = NULL, *cmdline = NULL, *name = NULL;
	const char *release, *adopts;
	int r;

	if (!arg_reuse_cmdline && !arg_append) {
		fprintf(stderr, "stage needs the new kernel's command line: --append=ARGS and/or --reuse-cmdline.\n");
		return EXIT_USAGE;
	}
	kfd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (kfd < 0) {
		fprintf(stderr, "Cannot open kernel %s: %s\n", argv[1], strerror(errno));
		return EXIT_FAIL;
	}
	if (arg_initrd && (ifd = open(arg_initrd, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "Cannot open initrd %s: %s\n", arg_initrd, strerror(errno));
		return EXIT_FAIL;
	}
	r = find_config(argv[1], kfd, &config);
	if (r == -EINVAL) {
		fprintf(stderr, "Kernel %s is not an x86 bzImage (no \"HdrS\" setup header).\n", argv[1]);
		return EXIT_FAIL;
	}
	if (r < 0 && r != -ENOENT && r != -ENODATA)
		return call_failed("stage kernel", &SD_BUS_ERROR_NULL, r);
	if (config && (cfd = open(config, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "Cannot open kernel config %s: %s\n", config, strerror(errno));
		return EXIT_FAIL;
	}
	r = stage_cmdline(&cmdline);
	if (r < 0)
		return call_failed("stage kernel", &SD_BUS_ERROR_NULL, r);
	name = realpath(argv[1], NULL);

	r = sd_bus_message_new_method_call(bus, &call, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "StageKernel");
	if (r >= 0)
		r = sd_bus_message_append(call, "h", kfd);
	if (r >= 0)
		r = ifd >= 0 ? sd_bus_message_append(call, "ah", 1, ifd) : sd_bus_message_append(call, "ah", 0);
	if (r >= 0)
		r = cfd >= 0 ? sd_bus_message_append(call, "ah", 1, cfd) : sd_bus_message_append(call, "ah", 0);
	if (r >= 0)
		r = sd_bus_message_append(call, "sa{sv}", cmdline, 1, "Name", "s", name ?: argv[1]);
	if (r < 0)
		return call_failed("stage kernel", &SD_BUS_ERROR_NULL, r);
	/* Copying and decompressing the image takes a moment under TCG. */
	r = sd_bus_call(bus, call, 120 * 1000 * 1000, &error, &reply);
	if (r < 0) {
		fprintf(stderr, "Failed to stage kernel %s: %s: %s\n", argv[1],
			error.name ?: "error", error.message ?: strerror(-r));
		return exit_status_for(&error, r);
	}
	r = sd_bus_message_read(reply, "ss", &release, &adopts);
	if (r < 0)
		return call_failed("stage kernel", &SD_BUS_ERROR_NULL, r);
	if (arg_json >= 0) {
		_cleanup_json_ json_object *j = json_object_new_object();

		json_object_object_add(j, "kernel", json_object_new_string(name ?: argv[1]));
		json_object_object_add(j, "release", json_object_new_string(release));
		json_object_object_add(j, "adopts", json_object_new_string(adopts));
		json_object_object_add(j, "config", config ? json_object_new_string(config) : NULL);
		json_object_object_add(j, "cmdline", json_object_new_string(cmdline));
		json_print(j);
	} else
		printf("Staged kernel %s (%s) for kexec, config %s: it adopts LUO sessions%s.\n", name ?: argv[1],
		       release, config ?: "embedded (IKCONFIG)",
		       streq_ptr(adopts, "devices") ? " and devices" : " (memfds), but not devices");
	return EXIT_OK;
}

static int verb_unstage(int argc, char **argv, sd_bus *bus)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	int r;

	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "UnstageKernel", &error, NULL, NULL);
	if (r < 0)
		return call_failed("unstage the kernel", &error, r);
	return EXIT_OK;
}

static int list_names(sd_bus *bus)
{
	_cleanup_(vm_list_done) VmList l = {};
	int r;

	if ((r = get_vms(bus, false, &l)) < 0)
		return -r;
	for (size_t i = 0; i < l.n; i++)
		printf("%s\n", l.vms[i].name);
	return EXIT_OK;
}

/* ---- the verb table and the command line ------------------------------ */

#define VERB_ANY ((unsigned)-1)
#define VERB_DEFAULT 1u
#define VERB_NO_BUS 2u

typedef struct Verb {
	const char *name;
	unsigned min_args, max_args;	/* counting the verb itself */
	unsigned flags;
	int (*dispatch)(int argc, char **argv, sd_bus *bus);
	const char *args;
	const char *help;
} Verb;

static int verb_help(int argc, char **argv, sd_bus *bus);

static const Verb verbs[] = {
	{ "status", VERB_ANY, 1, VERB_DEFAULT, verb_status, "", "Show the daemon's settings and VMs per state" },
	{ "list", VERB_ANY, 1, 0, verb_list, "", "List the VMs" },
	{ "show", 2, 2, 0, verb_show, "VM", "Show every property of a VM" },
	{ "preserve", 1, 2, 0, verb_preserve, "VM|--all", "Preserve a VM (or every VM) now" },
	{ "unpreserve", 2, 2, 0, verb_unpreserve, "VM", "Undo preserve" },
	{ "verify", 2, 2, 0, verb_verify, "VM", "Verify a VM restored after a kexec" },
	{ "retrieve", 2, 2, 0, verb_retrieve, "VM [-- CMD...]",
	  "Receive a restored VM's files; run CMD with them" },
	{ "finish", 2, 2, 0, verb_finish, "VM", "Finish a restored VM's session" },
	{ "check", VERB_ANY, 1, 0, verb_check, "", "Tell whether a kexec now would preserve every VM" },
	{ "stage", 2, 2, 0, verb_stage, "KERNEL", "Check a kernel and load it for the kexec" },
	{ "unstage", VERB_ANY, 1, 0, verb_unstage, "", "Unload the kernel staged for the kexec" },
	{ "help", VERB_ANY, 1, VERB_NO_BUS, verb_help, "", "Show this help" },
	{}
};

static int verb_help(int argc, char **argv, sd_bus *bus)
{
	printf("%s [OPTIONS...] COMMAND ...\n\n"
	       "Query and control iommu-lud, the live-update daemon.\n\n"
	       "Commands:\n", program_invocation_short_name);
	for (const Verb *v = verbs; v->name; v++) {
		char left[64];

		snprintf(left, sizeof(left), "%s%s%s", v->name, v->args[0] ? " " : "", v->args);
		printf("  %-28s %s%s\n", left, v->help, v->flags & VERB_DEFAULT ? " (default)" : "");
	}
	printf("\nOptions:\n"
	       "  -h --help                    Show this help\n"
	       "     --version                 Show the version\n"
	       "     --json=pretty|short|off   Print JSON (--json: short)\n"
	       "     --no-legend               Print no column headers and no footer\n"
	       "     --no-pager                Accepted; output is never paged\n"
	       "     --all                     preserve: every VM (PreserveAll)\n"
	       "     --initrd=FILE             stage: the new kernel's initrd\n"
	       "     --append=ARGS             stage: its command line (after --reuse-cmdline's)\n"
	       "     --reuse-cmdline           stage: start from the running kernel's command line\n"
	       "     --config=FILE             stage: its config (else config-RELEASE next to it or in /boot)\n"
	       "\nSee the iommu-luctl(1) man page for details.\n");
	return EXIT_OK;
}

enum {
	ARG_VERSION = 0x100,
	ARG_JSON,
	ARG_NO_LEGEND,
	ARG_NO_PAGER,
	ARG_ALL,
	ARG_LIST_NAMES,
	ARG_INITRD,
	ARG_APPEND,
	ARG_REUSE_CMDLINE,
	ARG_CONFIG,
};

/* Parses the options (before "--" only) and leaves the positional
 * arguments in argv[optind..argc).  Returns 0 to go on, 1 to exit
 * successfully, -EXIT_USAGE. */
static int parse_argv(int argc, char **argv, bool *ret_list_names)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{ "json", optional_argument, NULL, ARG_JSON },
		{ "no-legend", no_argument, NULL, ARG_NO_LEGEND },
		{ "no-pager", no_argument, NULL, ARG_NO_PAGER },
		{ "all", no_argument, NULL, ARG_ALL },
		{ "initrd", required_argument, NULL, ARG_INITRD },
		{ "append", required_argument, NULL, ARG_APPEND },
		{ "reuse-cmdline", no_argument, NULL, ARG_REUSE_CMDLINE },
		{ "config", required_argument, NULL, ARG_CONFIG },
		{ "list-names", no_argument, NULL, ARG_LIST_NAMES },	/* for the shell completion */
		{}
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
		switch (c) {
		case 'h':
			verb_help(0, NULL, NULL);
			return 1;
		case ARG_VERSION:
			printf("iommu-luctl %s\n", PACKAGE_VERSION);
			return 1;
		case ARG_JSON:
			if (!optarg || streq_ptr(optarg, "short"))
				arg_json = JSON_C_TO_STRING_PLAIN;
			else if (streq_ptr(optarg, "pretty"))
				arg_json = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED;
			else if (streq_ptr(optarg, "off"))
				arg_json = -1;
			else {
				fprintf(stderr, "Unknown --json= mode '%s': expected pretty, short or off.\n", optarg);
				return -EXIT_USAGE;
			}
			break;
		case ARG_NO_LEGEND:
			arg_legend = false;
			break;
		case ARG_NO_PAGER:
			break;
		case ARG_ALL:
			arg_all = true;
			break;
		case ARG_LIST_NAMES:
			*ret_list_names = true;
			break;
		case ARG_INITRD:
			arg_initrd = optarg;
			break;
		case ARG_APPEND:
			arg_append = optarg;
			break;
		case ARG_REUSE_CMDLINE:
			arg_reuse_cmdline = true;
			break;
		case ARG_CONFIG:
			arg_config = optarg;
			break;
		case '?':
			return -EXIT_USAGE;
		default:
			return -EXIT_USAGE;
		}
	return 0;
}

static int connect_bus(sd_bus **ret)
{
	int r = sd_bus_open_system(ret);

	if (r < 0) {
		fprintf(stderr, "Failed to connect to the system bus: %s\n", strerror(-r));
		return EXIT_NO_DAEMON;
	}
	return 0;
}

int main(int argc, char **argv)
{
	_cleanup_(sd_bus_flush_close_unrefp_) sd_bus *bus = NULL;
	const Verb *verb = NULL;
	bool list = false;
	int n_opts = argc, r;

	/* Everything after "--" is retrieve's command, options included. */
	for (int i = 1; i < argc; i++)
		if (streq_ptr(argv[i], "--")) {
			n_opts = i;
			arg_command = i + 1 < argc ? &argv[i + 1] : NULL;
			if (!arg_command) {
				fprintf(stderr, "\"--\" must be followed by a command.\n");
				return EXIT_USAGE;
			}
			break;
		}
	r = parse_argv(n_opts, argv, &list);
	if (r != 0)
		return r > 0 ? EXIT_OK : -r;
	argv += optind;
	argc = n_opts - optind;

	if (list) {
		if ((r = connect_bus(&bus)) != 0)
			return r;
		return list_names(bus);
	}
	if (argc == 0) {
		for (const Verb *v = verbs; v->name; v++)
			if (v->flags & VERB_DEFAULT)
				verb = v;
	} else {
		for (const Verb *v = verbs; v->name; v++)
			if (streq_ptr(v->name, argv[0]))
				verb = v;
		if (!verb) {
			fprintf(stderr, "Unknown command '%s'; see '%s --help'.\n", argv[0],
				program_invocation_short_name);
			return EXIT_USAGE;
		}
	}
	if (argc > 0) {
		if (verb->min_args != VERB_ANY && (unsigned)argc < verb->min_args) {
			fprintf(stderr, "Too few arguments for '%s': %s %s\n", verb->name, verb->name, verb->args);
			return EXIT_USAGE;
		}
		if ((unsigned)argc > verb->max_args) {
			fprintf(stderr, "Too many arguments for '%s'.\n", verb->name);
			return EXIT_USAGE;
		}
	}
	if (arg_command && verb->dispatch != verb_retrieve) {
		fprintf(stderr, "Only retrieve takes a command after \"--\".\n");
		return EXIT_USAGE;
	}
	if ((arg_initrd || arg_append || arg_reuse_cmdline || arg_config) && verb->dispatch != verb_stage) {
		fprintf(stderr, "--initrd, --append, --reuse-cmdline and --config only go with stage.\n");
		return EXIT_USAGE;
	}
	if (arg_all && verb->dispatch != verb_preserve) {
		fprintf(stderr, "--all only goes with preserve.\n");
		return EXIT_USAGE;
	}
	if (!(verb->flags & VERB_NO_BUS) && (r = connect_bus(&bus)) != 0)
		return r;
	return verb->dispatch(argc ?: 1, argc ? argv : (char *[]){ (char *)verb->name, NULL }, bus);
}
