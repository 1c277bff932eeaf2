/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The daemon's record of a preserved VM: what the library's manifest does
 * not carry but the daemon needs to rebuild its registry (after a restart
 * in the same boot, when an outgoing session cannot be read back) and to
 * verify devices after a kexec (config-space snapshots).  It is a sealed
 * memfd holding JSON:
 *   {"version":1, "vm":..., "session":..., "generation":N,
 *    "guest_memory_bytes":N, "hwpts":[...], "manifest":"<manifest JSON>",
 *    "devices":[{"bdf":..., "command":N, "bars":[6 x N]}]}
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

int record_to_memfd(const Vm *v, int *ret_fd)
{
	_cleanup_json_ json_object *root = NULL;
	_cleanup_free_ char *manifest_json = NULL;
	_cleanup_close_ int fd = -EBADF;
	json_object *a;
	const char *text;
	size_t len;
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
			       json_object_new_int64((int64_t)v->guest_memory_bytes));
	json_object_object_add(root, "manifest", json_object_new_string(manifest_json));

	a = json_object_new_array();
	for (size_t i = 0; i < v->n_hwpts; i++)
		json_object_array_add(a, json_object_new_int64(v->hwpts[i]));
	json_object_object_add(root, "hwpts", a);

	a = json_object_new_array();
	for (size_t i = 0; i < v->n_devices; i++) {
		json_object *d = json_object_new_object(), *bars = json_object_new_array();

		json_object_object_add(d, "bdf", json_object_new_string(v->bdfs[i]));
		if (v->snapshots && i < v->n_snapshots && v->snapshots[i].valid) {
			json_object_object_add(d, "command",
					       json_object_new_int(v->snapshots[i].command));
			for (size_t b = 0; b < 6; b++)
				json_object_array_add(bars,
						      json_object_new_int64(v->snapshots[i].bars[b]));
			json_object_object_add(d, "bars", bars);
		} else
			json_object_put(bars);
		json_object_array_add(a, d);
	}
	json_object_object_add(root, "devices", a);

	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!text)
		return -ENOMEM;
	len = strlen(text);

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

/* Fill name, session, generation, manifest, hwpts, bdfs, snapshots and
 * guest memory size of v (which must not have them yet). */
int record_parse_fd(int fd, Vm *v)
{
	_cleanup_json_ json_object *root = NULL;
	_cleanup_free_ char *text = NULL;
	json_object *o, *a;
	iommulu_error e = {};
	uint64_t u;
	size_t len, n;
	int r;

	r = read_all(fd, &text, &len);
	if (r < 0)
		return r;
	root = json_tokener_parse(text);
	if (!root || !json_object_is_type(root, json_type_object))
		return -EBADMSG;
	if (!get_u64(root, "version", &u) || u != RECORD_VERSION)
		return -EPROTONOSUPPORT;

	if (!json_object_object_get_ex(root, "vm", &o) || !json_object_is_type(o, json_type_string) ||
	    !iommulu_vm_name_is_valid(json_object_get_string(o)))
		return -EBADMSG;
	snprintf(v->name, sizeof(v->name), "%s", json_object_get_string(o));

	if (!json_object_object_get_ex(root, "session", &o) || !json_object_is_type(o, json_type_string) ||
	    strlen(json_object_get_string(o)) > IOMMULU_LUO_SESSION_NAME_MAX)
		return -EBADMSG;
	snprintf(v->session_name, sizeof(v->session_name), "%s", json_object_get_string(o));

	if (!get_u64(root, "generation", &v->generation) ||
	    !get_u64(root, "guest_memory_bytes", &v->guest_memory_bytes))
		return -EBADMSG;

	if (!json_object_object_get_ex(root, "manifest", &o) || !json_object_is_type(o, json_type_string))
		return -EBADMSG;
	r = iommulu_manifest_from_json(json_object_get_string(o), (size_t)json_object_get_string_len(o),
				       &v->manifest, &e);
	if (r < 0)
		return log_warning_errno(r, "Record of VM %s carries a bad manifest: %s", v->name,
					 e.message);

	if (json_object_object_get_ex(root, "hwpts", &a) && json_object_is_type(a, json_type_array)) {
		n = json_object_array_length(a);
		if (n > IOMMULU_PLAN_MAX_HWPTS)
			return -EBADMSG;
		v->hwpts = calloc(n ?: 1, sizeof(uint32_t));
		if (!v->hwpts)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			v->hwpts[i] = (uint32_t)json_object_get_int64(json_object_array_get_idx(a, i));
		v->n_hwpts = n;
	}

	if (json_object_object_get_ex(root, "devices", &a) && json_object_is_type(a, json_type_array)) {
		n = json_object_array_length(a);
		if (n > IOMMULU_PLAN_MAX_DEVICES)
			return -EBADMSG;
		v->snapshots = calloc(n ?: 1, sizeof(DeviceSnapshot));
		if (!v->snapshots)
			return -ENOMEM;
		v->n_snapshots = n;
		for (size_t i = 0; i < n; i++) {
			json_object *d = json_object_array_get_idx(a, i), *bars;
			DeviceSnapshot *s = &v->snapshots[i];

			if (!json_object_object_get_ex(d, "bdf", &o) ||
			    !iommulu_bdf_is_valid(json_object_get_string(o)))
				return -EBADMSG;
			snprintf(s->bdf, sizeof(s->bdf), "%s", json_object_get_string(o));
			if (get_u64(d, "command", &u) && json_object_object_get_ex(d, "bars", &bars) &&
			    json_object_is_type(bars, json_type_array) &&
			    json_object_array_length(bars) == 6) {
				s->command = (uint16_t)u;
				for (size_t b = 0; b < 6; b++)
					s->bars[b] = (uint32_t)json_object_get_int64(
						json_object_array_get_idx(bars, b));
				s->valid = true;
			}
		}
	}
	return 0;
}
