/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The daemon's record of a preserved VM: what the library's manifest does
 * not carry but the daemon needs to rebuild its registry (after a restart
 * in the same boot, when an outgoing session cannot be read back) and to
 * verify devices after a kexec (config-space snapshots).  It is a sealed
 * memfd holding JSON:
 *   {"version":1, "vm":..., "session":..., "generation":N,
 *    "guest_memory_bytes":N, "hwpts":[...], "state_memfds":[...] (if any),
 *    "manifest":"<manifest JSON>",
 *    "devices":[{"bdf":..., "command":N, "bars":[6 x N], "irq":N, "irq_vectors":N}]}
 * One copy goes into the LUO session (IOMMU_LUD_RECORD_TOKEN), another
 * into the service's fd store.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "manager.h"
#include "util.h"

#define RECORD_VERSION 1
#define RECORD_MAX_BYTES (4u << 20)

static void json_putp(json_object **p)
{
	if (*p)
		json_object_put(*p);
}
#define _cleanup_json_ _cleanup_(json_putp)

static int text_to_sealed_memfd(const char *text, int *ret_fd);

static json_object *u32_array(const uint32_t *a, size_t n)
{
	json_object *j = json_object_new_array();

	for (size_t i = 0; j && i < n; i++)
		json_object_array_add(j, json_object_new_int64(a[i]));
	return j;
}

/* "hwpts" and, if there are any, "state_memfds". */
static int add_hwpts_and_state_memfds(json_object *root, const Vm *v)
{
	_cleanup_free_ uint32_t *state = NULL;
	size_t n_state;
	int r;

	r = vm_state_memfds(v, &state, &n_state);
	if (r < 0)
		return r;
	json_object_object_add(root, "hwpts", u32_array(v->hwpts, v->n_hwpts));
	if (n_state)
		json_object_object_add(root, "state_memfds", u32_array(state, n_state));
	return 0;
}

int record_to_memfd(const Vm *v, int *ret_fd)
{
	_cleanup_json_ json_object *root = NULL;
	_cleanup_free_ char *manifest_json = NULL;
	json_object *a;
	const char *text;
	int r;

	if (!v->manifest)
		return -EINVAL;
	r = iommulu_manifest_to_json(v->manifest, &manifest_json, NULL);
	if (r < 0)
		return r;

	root = json_object_new_object();
	if (!root)
		return -ENOMEM;
	json_object_object_add(root, "version", json_object_new_int(RECORD_VERSION));
	json_object_object_add(root, "vm", json_object_new_string(v->name));
	json_object_object_add(root, "session", json_object_new_string(v->session_name));
	json_object_object_add(root, "generation", json_object_new_int64((int64_t)v->generation));
	json_object_object_add(root, "guest_memory_bytes",
			       json_object_new_int64((int64_t)vm_guest_memory_bytes(v)));
	json_object_object_add(root, "manifest", json_object_new_string(manifest_json));

	r = add_hwpts_and_state_memfds(root, v);
	if (r < 0)
		return r;

	a = json_object_new_array();
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE) {
		json_object *d = json_object_new_object(), *bars = json_object_new_array();
		const DeviceSnapshot *sn = &f->device.snapshot;

		json_object_object_add(d, "bdf", json_object_new_string(f->device.bdf));
		if (sn->valid) {
			json_object_object_add(d, "command", json_object_new_int(sn->command));
			for (size_t b = 0; b < 6; b++)
				json_object_array_add(bars, json_object_new_int64(sn->bars[b]));
			json_object_object_add(d, "bars", bars);
			if (sn->irq_known) {
				json_object_object_add(d, "irq", json_object_new_int(sn->irq_type));
				json_object_object_add(d, "irq_vectors",
						       json_object_new_int64(sn->irq_vectors));
			}
		} else
			json_object_put(bars);
		json_object_array_add(a, d);
	}
	json_object_object_add(root, "devices", a);

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!text)
		return -ENOMEM;
	return text_to_sealed_memfd(text, ret_fd);
}

/* A sealed memfd holding text. */
static int text_to_sealed_memfd(const char *text, int *ret_fd)
{
	_cleanup_close_ int fd = -EBADF;
	size_t len = strlen(text);

	fd = memfd_create("iommu-lud-record", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len;) {
		ssize_t k = write(fd, text + off, len - off);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)k;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;

	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int read_all(int fd, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t off = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > RECORD_MAX_BYTES)
		return -EBADMSG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (off < (size_t)st.st_size) {
		ssize_t k = pread(fd, buf + off, (size_t)st.st_size - off, (off_t)off);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		off += (size_t)k;
	}
	buf[off] = 0;
	*ret_len = off;
	*ret = TAKE_PTR(buf);
	return 0;
}

static bool get_u64(json_object *o, const char *key, uint64_t *ret)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*ret = (uint64_t)json_object_get_int64(v);
	return true;
}

/* The array of numbers under key, if there is one (else nothing): at most
 * max of them, each at most UINT32_MAX. */
static int get_u32_array(json_object *o, const char *key, size_t max, uint32_t **ret, size_t *ret_n)
{
	json_object *a;
	uint32_t *l;
	size_t n;

	if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array))
		return 0;
	n = json_object_array_length(a);
	if (n > max)
		return -EBADMSG;
	l = calloc(n ?: 1, sizeof(uint32_t));
	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int64_t x = json_object_get_int64(json_object_array_get_idx(a, i));

		if (x < 0 || x > UINT32_MAX) {
			free(l);
			return -EBADMSG;
		}
		l[i] = (uint32_t)x;
	}
	free(*ret);
	*ret = l;
	*ret_n = n;
	return 0;
}

/* The record in fd as a JSON object of our version, with its VM's name. */
/* Read a record: a JSON object of our RECORD_VERSION. */
static int json_record_read(int fd, json_object **ret_root)
{
	_cleanup_json_ json_object *root = NULL;
	_cleanup_free_ char *text = NULL;
	uint64_t u;
	size_t len;
	int r;

	r = read_all(fd, &text, &len);
	if (r < 0)
		return r;
	root = json_tokener_parse(text);
	if (!root || !json_object_is_type(root, json_type_object))
		return -EBADMSG;
	if (!get_u64(root, "version", &u) || u != RECORD_VERSION)
		return -EPROTONOSUPPORT;
	*ret_root = TAKE_PTR(root);
	return 0;
}

static int record_read(int fd, json_object **ret_root, char name[static IOMMULU_VM_NAME_MAX + 1])
{
	_cleanup_json_ json_object *root = NULL;
	json_object *o;
	int r;

	r = json_record_read(fd, &root);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(root, "vm", &o) || !json_object_is_type(o, json_type_string) ||
	    !iommulu_vm_name_is_valid(json_object_get_string(o)))
		return -EBADMSG;
	snprintf(name, IOMMULU_VM_NAME_MAX + 1, "%s", json_object_get_string(o));
	*ret_root = TAKE_PTR(root);
	return 0;
}

void record_done(Vm *rec)
{
	iommulu_manifest_free(rec->manifest);
	vm_close_files(rec);
	*rec = (Vm){ .session_fd = -EBADF };
}

int record_parse_fd(int fd, Vm *v)
{
	_cleanup_json_ json_object *root = NULL;
	_cleanup_free_ uint32_t *state = NULL;
	json_object *o, *a;
	iommulu_error e = {};
	uint64_t u;
	size_t n, n_state = 0;
	int r;

	r = record_read(fd, &root, v->name);
	if (r < 0)
		return r;

	if (!json_object_object_get_ex(root, "session", &o) || !json_object_is_type(o, json_type_string) ||
	    strlen(json_object_get_string(o)) > IOMMULU_LUO_SESSION_NAME_MAX)
		return -EBADMSG;
	snprintf(v->session_name, sizeof(v->session_name), "%s", json_object_get_string(o));

	/* guest_memory_bytes: the files the manifest names tell it again */
	if (!get_u64(root, "generation", &v->generation) || !get_u64(root, "guest_memory_bytes", &u))
		return -EBADMSG;

	if (!json_object_object_get_ex(root, "manifest", &o) || !json_object_is_type(o, json_type_string))
		return -EBADMSG;
	r = iommulu_manifest_from_json(json_object_get_string(o), (size_t)json_object_get_string_len(o),
				       &v->manifest, &e);
	if (r < 0)
		return log_warning_errno(r, "Record of VM %s carries a bad manifest: %s", v->name,
					 e.message);

	r = get_u32_array(root, "hwpts", IOMMULU_PLAN_MAX_HWPTS, &v->hwpts, &v->n_hwpts);
	if (r >= 0)
		r = get_u32_array(root, "state_memfds", IOMMULU_PLAN_MAX_MEMFDS, &state, &n_state);
	if (r < 0)
		return r;
	r = vm_files_from_manifest(v, v->manifest);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_state; i++)
		vm_memfd_mark_state(v, state[i]);

	if (json_object_object_get_ex(root, "devices", &a) && json_object_is_type(a, json_type_array)) {
		n = json_object_array_length(a);
		if (n > IOMMULU_PLAN_MAX_DEVICES)
			return -EBADMSG;
		for (size_t i = 0; i < n; i++) {
			json_object *d = json_object_array_get_idx(a, i), *bars;
			DeviceSnapshot unused = {}, *s = &unused;
			VmFile *f;

			if (!json_object_object_get_ex(d, "bdf", &o) ||
			    !iommulu_bdf_is_valid(json_object_get_string(o)))
				return -EBADMSG;
			/* The snapshot of the manifest's device of that BDF (of
			 * one the manifest lacks: read, and dropped). */
			f = vm_device(v, json_object_get_string(o));
			if (f)
				s = &f->device.snapshot;
			if (get_u64(d, "command", &u) && json_object_object_get_ex(d, "bars", &bars) &&
			    json_object_is_type(bars, json_type_array) &&
			    json_object_array_length(bars) == 6) {
				s->command = (uint16_t)u;
				for (size_t b = 0; b < 6; b++)
					s->bars[b] = (uint32_t)json_object_get_int64(
						json_object_array_get_idx(bars, b));
				s->valid = true;
				/* Absent in records of older versions: unknown */
				if (get_u64(d, "irq", &u) && u <= IOMMULU_PCI_IRQ_MSIX) {
					s->irq_known = true;
					s->irq_type = (iommulu_pci_irq_type)u;
				}
				if (get_u64(d, "irq_vectors", &u) && u <= 2048)
					s->irq_vectors = (unsigned)u;
			}
		}
	}
	return 0;
}

/*
 * The record of a registered VM (not a preserved one), kept in the fd
 * store as FDNAME_VM_PREFIX "<serial>.<name>" beside the VM's own files,
 * so that a restarted daemon registers the VM again:
 *   {"version":1, "kind":"registration", "vm":..., "boot_id":...,
 *    "state":"registering|registered|failed", "last_error":...,
 *    "kernel_refused":b, "owner_pid":N, "hwpts":[...], "state_memfds":[...],
 *    "memfds":[size, ...], "iommufd":b, "devices":[bdf, ...]}
 * The text is also what the daemon compares to decide whether the stored
 * record is still current.
 */
int registration_content(const Vm *v, const char *boot_id, char **ret)
{
	_cleanup_json_ json_object *root = NULL;
	json_object *a;
	const char *text, *state;
	char *copy;
	int r;

	state = v->state == VM_REGISTERING ? "registering" : v->state == VM_FAILED ? "failed" : "registered";
	root = json_object_new_object();
	if (!root)
		return -ENOMEM;
	json_object_object_add(root, "version", json_object_new_int(RECORD_VERSION));
	json_object_object_add(root, "kind", json_object_new_string("registration"));
	json_object_object_add(root, "vm", json_object_new_string(v->name));
	json_object_object_add(root, "boot_id", json_object_new_string(strempty(boot_id)));
	json_object_object_add(root, "state", json_object_new_string(state));
	if (v->state == VM_FAILED && v->last_error)
		json_object_object_add(root, "last_error", json_object_new_string(v->last_error));
	json_object_object_add(root, "kernel_refused", json_object_new_boolean(v->kernel_refused));
	json_object_object_add(root, "owner_pid", json_object_new_int64(v->owner_pid));
	r = add_hwpts_and_state_memfds(root, v);
	if (r < 0)
		return r;
	a = json_object_new_array();
	VM_FOREACH_FILE(f, v, VM_FILE_MEMFD)
		json_object_array_add(a, json_object_new_int64((int64_t)f->memfd.size));
	json_object_object_add(root, "memfds", a);
	json_object_object_add(root, "iommufd", json_object_new_boolean(vm_iommufd(v) >= 0));
	a = json_object_new_array();
	VM_FOREACH_FILE(f, v, VM_FILE_DEVICE)
		json_object_array_add(a, json_object_new_string(f->device.bdf));
	json_object_object_add(root, "devices", a);

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!text)
		return -ENOMEM;
	copy = strdup(text);
	if (!copy)
		return -ENOMEM;
	*ret = copy;
	return 0;
}

int registration_to_memfd(const char *content, int *ret_fd)
{
	return text_to_sealed_memfd(content, ret_fd);
}

void registration_done(Registration *g)
{
	free(g->last_error);
	free(g->hwpts);
	free(g->state_memfds);
	free(g->memfd_sizes);
	free(g->bdfs);
	*g = (Registration){};
}

int registration_parse_fd(int fd, Registration *ret)
{
	_cleanup_json_ json_object *root = NULL;
	Registration g = {};
	json_object *o, *a;
	const char *state;
	uint64_t u;
	size_t n;
	int r;

	r = record_read(fd, &root, g.name);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(root, "kind", &o) ||
	    !streq_ptr(json_object_get_string(o), "registration"))
		return -EBADMSG;
	if (json_object_object_get_ex(root, "boot_id", &o) && json_object_is_type(o, json_type_string))
		snprintf(g.boot_id, sizeof(g.boot_id), "%s", json_object_get_string(o));
	if (!json_object_object_get_ex(root, "state", &o) || !json_object_is_type(o, json_type_string))
		return -EBADMSG;
	state = json_object_get_string(o);
	if (streq_ptr(state, "registering"))
		g.state = VM_REGISTERING;
	else if (streq_ptr(state, "registered"))
		g.state = VM_REGISTERED;
	else if (streq_ptr(state, "failed"))
		g.state = VM_FAILED;
	else
		return -EBADMSG;
	g.kernel_refused = json_object_object_get_ex(root, "kernel_refused", &o) && json_object_get_boolean(o);
	g.has_iommufd = json_object_object_get_ex(root, "iommufd", &o) && json_object_get_boolean(o);
	if (get_u64(root, "owner_pid", &u) && u <= INT32_MAX)
		g.owner_pid = (pid_t)u;

	if (json_object_object_get_ex(root, "last_error", &o) && json_object_is_type(o, json_type_string)) {
		g.last_error = strdup(json_object_get_string(o));
		if (!g.last_error)
			goto oom;
	}
	r = get_u32_array(root, "hwpts", IOMMULU_PLAN_MAX_HWPTS, &g.hwpts, &g.n_hwpts);
	if (r >= 0)
		r = get_u32_array(root, "state_memfds", IOMMULU_PLAN_MAX_MEMFDS, &g.state_memfds, &g.n_state_memfds);
	if (r < 0) {
		registration_done(&g);
		return r;
	}
	if (!json_object_object_get_ex(root, "memfds", &a) || !json_object_is_type(a, json_type_array))
		goto bad;
	n = json_object_array_length(a);
	if (n > IOMMULU_PLAN_MAX_MEMFDS)
		goto bad;
	g.memfd_sizes = calloc(n ?: 1, sizeof(uint64_t));
	if (!g.memfd_sizes)
		goto oom;
	for (size_t i = 0; i < n; i++)
		g.memfd_sizes[i] = (uint64_t)json_object_get_int64(json_object_array_get_idx(a, i));
	g.n_memfds = n;
	if (json_object_object_get_ex(root, "devices", &a) && json_object_is_type(a, json_type_array)) {
		n = json_object_array_length(a);
		if (n > IOMMULU_PLAN_MAX_DEVICES)
			goto bad;
		g.bdfs = calloc(n ?: 1, IOMMULU_BDF_MAX);
		if (!g.bdfs)
			goto oom;
		for (size_t i = 0; i < n; i++) {
			const char *bdf = json_object_get_string(json_object_array_get_idx(a, i));

			if (!bdf || !iommulu_bdf_is_valid(bdf))
				goto bad;
			snprintf(g.bdfs[i], IOMMULU_BDF_MAX, "%s", bdf);
		}
		g.n_devices = n;
	}
	*ret = g;
	return 0;
bad:
	registration_done(&g);
	return -EBADMSG;
oom:
	registration_done(&g);
	return -ENOMEM;
}

/*
 * The staged kernel's record ("staged.record" in the fd store, next to
 * "staged.kernel" and "staged.initrd"): what StageKernel checked, so that
 * a restarted daemon knows the kernel loaded for kexec without the config
 * it was checked with.
 *   {"version":1, "kind":"staged-kernel", "boot_id":..., "name":...,
 *    "cmdline":..., "initrd":bool, "release":..., "luo":bool,
 *    "devices":bool, "luo_problem":..., "devices_problem":...}
 */
int staged_record_to_memfd(const StagedKernel *k, const char *boot_id, int *ret_fd)
{
	_cleanup_json_ json_object *root = json_object_new_object();
	const KernelVerdict *v = &k->verdict;

	if (!root)
		return -ENOMEM;
	json_object_object_add(root, "version", json_object_new_int64(RECORD_VERSION));
	json_object_object_add(root, "kind", json_object_new_string("staged-kernel"));
	json_object_object_add(root, "boot_id", json_object_new_string(strempty(boot_id)));
	json_object_object_add(root, "name", json_object_new_string(k->name));
	json_object_object_add(root, "cmdline", json_object_new_string(k->cmdline));
	json_object_object_add(root, "initrd", json_object_new_boolean(k->initrd_fd >= 0));
	json_object_object_add(root, "release", json_object_new_string(v->release));
	json_object_object_add(root, "luo", json_object_new_boolean(v->luo));
	json_object_object_add(root, "devices", json_object_new_boolean(v->devices));
	json_object_object_add(root, "luo_problem", json_object_new_string(v->luo_problem));
	json_object_object_add(root, "devices_problem", json_object_new_string(v->devices_problem));
	return text_to_sealed_memfd(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN), ret_fd);
}

static int get_string(json_object *o, const char *key, char *buf, size_t size)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return -EBADMSG;
	s = json_object_get_string(v);
	if (strlen(s) >= size)
		return -EBADMSG;
	memcpy(buf, s, strlen(s) + 1);
	return 0;
}

static int get_bool(json_object *o, const char *key, bool *ret)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean))
		return -EBADMSG;
	*ret = json_object_get_boolean(v);
	return 0;
}

int staged_record_parse_fd(int fd, StagedRecord *ret)
{
	_cleanup_json_ json_object *root = NULL;
	StagedRecord s = {};
	char kind[32];
	int r;

	r = json_record_read(fd, &root);
	if (r < 0)
		return r;
	if ((r = get_string(root, "kind", kind, sizeof(kind))) < 0 || !streq_ptr(kind, "staged-kernel") ||
	    (r = get_string(root, "boot_id", s.boot_id, sizeof(s.boot_id))) < 0 ||
	    (r = get_string(root, "name", s.name, sizeof(s.name))) < 0 ||
	    (r = get_string(root, "cmdline", s.cmdline, sizeof(s.cmdline))) < 0 ||
	    (r = get_bool(root, "initrd", &s.initrd)) < 0 ||
	    (r = get_string(root, "release", s.verdict.release, sizeof(s.verdict.release))) < 0 ||
	    (r = get_bool(root, "luo", &s.verdict.luo)) < 0 ||
	    (r = get_bool(root, "devices", &s.verdict.devices)) < 0 ||
	    (r = get_string(root, "luo_problem", s.verdict.luo_problem, sizeof(s.verdict.luo_problem))) < 0 ||
	    (r = get_string(root, "devices_problem", s.verdict.devices_problem,
			    sizeof(s.verdict.devices_problem))) < 0)
		return r < 0 ? r : -EBADMSG;
	*ret = s;
	return 0;
}
