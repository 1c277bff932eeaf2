/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The VM manifest, stored as a sealed memfd under session token 0.
 *
 * Document (version 1.0), as written by iommulu_manifest_to_json():
 *
 *   {
 *     "format": "iommulu-manifest",
 *     "version": { "major": 1, "minor": 0 },
 *     "name": "vm1",
 *     "generation": 3,
 *     "memfds": [ { "token": 256, "size": 1073741824 } ],
 *     "iommufd": {                                  (optional)
 *       "token": 4096,
 *       "hwpts": [ { "id": 2, "token": 1 } ]
 *     },
 *     "devices": [ { "bdf": "0000:00:03.0", "token": 8192 } ]
 *   }
 *
 * All integers are JSON integers (no fractions, no exponents, no signs):
 * tokens, sizes and the generation are 0..2^64-1, version numbers and
 * HWPT ids 0..2^32-1.  "format", "version", "name", "generation",
 * "memfds" and "devices" are required; "iommufd" may be left out by a VM
 * without devices, and then "devices" must be empty.
 *
 * Strictness rules (iommulu_manifest_from_json):
 *  - "version" is read before anything else; a major other than
 *    IOMMULU_MANIFEST_MAJOR is -EPROTONOSUPPORT, whatever else is in the
 *    document.
 *  - Unknown keys, at any level, are refused when the document's minor
 *    is <= IOMMULU_MANIFEST_MINOR: we know every key such a document may
 *    have, so an unknown one is corruption.  When the document's minor is
 *    newer than ours they are ignored: within one major, a newer minor may
 *    only add keys that an older reader can safely skip.  A change that an
 *    older reader must not ignore needs a new major.
 *  - Session tokens (the manifest's 0, memfds, iommufd, devices) share
 *    one namespace and must all differ; HWPT tokens and ids are local to
 *    the iommufd and must differ among HWPTs.  BDFs must be canonical and
 *    unique.  Memfd sizes are non-zero multiples of 4096.  Each array
 *    holds at most IOMMULU_MANIFEST_MAX_ENTRIES entries; the text is at
 *    most IOMMULU_MANIFEST_MAX_BYTES.
 *  - Duplicate keys inside one JSON object are not detected: json-c keeps
 *    the last one.  The duplicate checks above are on values.
 *  - Nesting deeper than 8 levels is refused by the tokenizer (the format
 *    itself uses 4).
 * The writer always writes IOMMULU_MANIFEST_MINOR, whatever version_minor
 * says: re-serializing a document of a newer minor drops the keys we do
 * not know, so claiming that newer minor would be a lie.
 * Every refusal is -EINVAL (or -EPROTONOSUPPORT) with a message that
 * starts with the field path, e.g. "devices[1].bdf: duplicate 0000:00:03.0".
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/manifest.h"

#define MANIFEST_FORMAT "iommulu-manifest"
#define MANIFEST_PAGE 4096u
#define MANIFEST_JSON_DEPTH 8

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)
DEFINE_TRIVIAL_CLEANUP_FUNC(json_tokener *, json_tokener_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(iommulu_manifest *, iommulu_manifest_free)

_public_ int iommulu_manifest_new(const char *name, iommulu_manifest **ret)
{
	iommulu_manifest *m;

	if (!ret || !iommulu_vm_name_is_valid(name))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->version_major = IOMMULU_MANIFEST_MAJOR;
	m->version_minor = IOMMULU_MANIFEST_MINOR;
	strcpy(m->name, name);
	*ret = m;
	return 0;
}

_public_ iommulu_manifest *iommulu_manifest_free(iommulu_manifest *m)
{
	if (!m)
		return NULL;
	free(m->memfds);
	free(m->hwpts);
	free(m->devices);
	free(m);
	return NULL;
}

/* Grow *array (of n elements of size sz) by one; -E2BIG over the limit. */
static int grow(void **array, size_t n, size_t sz)
{
	void *p;

	if (n >= IOMMULU_MANIFEST_MAX_ENTRIES)
		return -E2BIG;
	p = reallocarray(*array, n + 1, sz);
	if (!p)
		return -ENOMEM;
	*array = p;
	return 0;
}

_public_ int iommulu_manifest_add_memfd(iommulu_manifest *m, uint64_t token, uint64_t size)
{
	int r;

	if (!m)
		return -EINVAL;
	r = grow((void **)&m->memfds, m->n_memfds, sizeof(*m->memfds));
	if (r < 0)
		return r;
	m->memfds[m->n_memfds++] = (iommulu_manifest_memfd){ .token = token, .size = size };
	return 0;
}

_public_ int iommulu_manifest_set_iommufd(iommulu_manifest *m, uint64_t token)
{
	if (!m)
		return -EINVAL;
	m->has_iommufd = true;
	m->iommufd_token = token;
	return 0;
}

_public_ int iommulu_manifest_add_hwpt(iommulu_manifest *m, uint32_t id, uint64_t token)
{
	int r;

	if (!m)
		return -EINVAL;
	r = grow((void **)&m->hwpts, m->n_hwpts, sizeof(*m->hwpts));
	if (r < 0)
		return r;
	m->hwpts[m->n_hwpts++] = (iommulu_manifest_hwpt){ .id = id, .token = token };
	return 0;
}

/* Only a canonical BDF can be stored; duplicates are left to validate. */
_public_ int iommulu_manifest_add_device(iommulu_manifest *m, const char *bdf, uint64_t token)
{
	int r;

	if (!m || !iommulu_bdf_is_valid(bdf))
		return -EINVAL;
	r = grow((void **)&m->devices, m->n_devices, sizeof(*m->devices));
	if (r < 0)
		return r;
	m->devices[m->n_devices] = (iommulu_manifest_device){ .token = token };
	strcpy(m->devices[m->n_devices].bdf, bdf);
	m->n_devices++;
	return 0;
}

/* ---- validation ---- */

/* One session token and the field it came from, for duplicate messages. */
typedef struct token_use {
	uint64_t token;
	const char *array;	/* "memfds", "devices", or "iommufd" */
	size_t index;
} token_use;

static void token_use_name(const token_use *u, char *buf, size_t len)
{
	if (streq(u->array, "iommufd"))
		snprintf(buf, len, "iommufd.token");
	else
		snprintf(buf, len, "%s[%zu].token", u->array, u->index);
}

static int check_session_token(token_use *uses, size_t *n_uses, const char *array, size_t index,
			       uint64_t token, iommulu_error *error)
{
	token_use u = { .token = token, .array = array, .index = index };
	char here[64], there[64];

	token_use_name(&u, here, sizeof(here));
	if (token == IOMMULU_MANIFEST_TOKEN)
		return iommulu_error_setf(error, -EINVAL, "%s: token 0 is reserved for the manifest",
					  here);
	for (size_t i = 0; i < *n_uses; i++)
		if (uses[i].token == token) {
			token_use_name(&uses[i], there, sizeof(there));
			return iommulu_error_setf(error, -EINVAL,
						  "%s: duplicate token 0x%" PRIx64 " (also %s)", here,
						  token, there);
		}
	uses[(*n_uses)++] = u;
	return 0;
}

_public_ int iommulu_manifest_validate(const iommulu_manifest *m, iommulu_error *error)
{
	_cleanup_free_ token_use *uses = NULL;
	size_t n_uses = 0;
	int r;

	if (!m)
		return iommulu_error_setf(error, -EINVAL, "manifest: missing");
	if (m->version_major != IOMMULU_MANIFEST_MAJOR)
		return iommulu_error_setf(error, -EPROTONOSUPPORT,
					  "version.major: unsupported %u (this library reads %u)",
					  m->version_major, IOMMULU_MANIFEST_MAJOR);
	if (!iommulu_vm_name_is_valid(m->name))
		return iommulu_error_setf(error, -EINVAL,
					  "name: invalid VM name (want [A-Za-z0-9_.-]{1,%d})",
					  IOMMULU_VM_NAME_MAX);

#define CHECK_COUNT(field)                                                                     \
	do {                                                                                   \
		if (m->n_##field > IOMMULU_MANIFEST_MAX_ENTRIES)                               \
			return iommulu_error_setf(error, -EINVAL,                              \
						  #field ": %zu entries, more than %u", m->n_##field, \
						  IOMMULU_MANIFEST_MAX_ENTRIES);               \
		if (m->n_##field > 0 && !m->field)                                             \
			return iommulu_error_setf(error, -EINVAL, #field ": missing array");   \
	} while (0)
	CHECK_COUNT(memfds);
	CHECK_COUNT(hwpts);
	CHECK_COUNT(devices);
#undef CHECK_COUNT

	if (!m->has_iommufd && m->n_hwpts > 0)
		return iommulu_error_setf(error, -EINVAL, "iommufd.hwpts: HWPTs without an iommufd");
	if (!m->has_iommufd && m->n_devices > 0)
		return iommulu_error_setf(error, -EINVAL, "devices: devices without an iommufd");

	uses = calloc(m->n_memfds + m->n_devices + 1, sizeof(*uses));
	if (!uses)
		return -ENOMEM;

	for (size_t i = 0; i < m->n_memfds; i++) {
		const iommulu_manifest_memfd *f = &m->memfds[i];

		r = check_session_token(uses, &n_uses, "memfds", i, f->token, error);
		if (r < 0)
			return r;
		if (f->size == 0 || f->size % MANIFEST_PAGE != 0)
			return iommulu_error_setf(error, -EINVAL,
						  "memfds[%zu].size: %" PRIu64
						  " is not a non-zero multiple of %u",
						  i, f->size, MANIFEST_PAGE);
	}

	if (m->has_iommufd) {
		r = check_session_token(uses, &n_uses, "iommufd", 0, m->iommufd_token, error);
		if (r < 0)
			return r;
	}

	for (size_t i = 0; i < m->n_hwpts; i++)
		for (size_t j = 0; j < i; j++) {
			if (m->hwpts[i].id == m->hwpts[j].id)
				return iommulu_error_setf(error, -EINVAL,
							  "iommufd.hwpts[%zu].id: duplicate %" PRIu32
							  " (also iommufd.hwpts[%zu].id)",
							  i, m->hwpts[i].id, j);
			if (m->hwpts[i].token == m->hwpts[j].token)
				return iommulu_error_setf(error, -EINVAL,
							  "iommufd.hwpts[%zu].token: duplicate 0x%" PRIx64
							  " (also iommufd.hwpts[%zu].token)",
							  i, m->hwpts[i].token, j);
		}

	for (size_t i = 0; i < m->n_devices; i++) {
		const iommulu_manifest_device *d = &m->devices[i];

		if (strnlen(d->bdf, sizeof(d->bdf)) >= sizeof(d->bdf) ||
		    !iommulu_bdf_is_valid(d->bdf))
			return iommulu_error_setf(error, -EINVAL,
						  "devices[%zu].bdf: invalid PCI address \"%.*s\"", i,
						  (int)sizeof(d->bdf), d->bdf);
		for (size_t j = 0; j < i; j++)
			if (streq(d->bdf, m->devices[j].bdf))
				return iommulu_error_setf(error, -EINVAL,
							  "devices[%zu].bdf: duplicate %s (also devices[%zu].bdf)",
							  i, d->bdf, j);
		r = check_session_token(uses, &n_uses, "devices", i, d->token, error);
		if (r < 0)
			return r;
	}

	return 0;
}

/* ---- writing ---- */

static int json_add(json_object *obj, const char *key, json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_object_add_ex(obj, key, val, JSON_C_OBJECT_ADD_KEY_IS_NEW |
							   JSON_C_OBJECT_ADD_CONSTANT_KEY) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static int json_append(json_object *arr, json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_array_add(arr, val) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static json_object *manifest_to_object(const iommulu_manifest *m)
{
	_cleanup_(json_object_putp) json_object *root = NULL;
	json_object *version, *memfds, *devices;

	root = json_object_new_object();
	if (!root)
		return NULL;

	version = json_object_new_object();
	if (json_add(root, "format", json_object_new_string(MANIFEST_FORMAT)) < 0 ||
	    json_add(root, "version", version) < 0 ||
	    json_add(version, "major", json_object_new_uint64(m->version_major)) < 0 ||
	    json_add(version, "minor", json_object_new_uint64(IOMMULU_MANIFEST_MINOR)) < 0 ||
	    json_add(root, "name", json_object_new_string(m->name)) < 0 ||
	    json_add(root, "generation", json_object_new_uint64(m->generation)) < 0)
		return NULL;

	memfds = json_object_new_array_ext((int)m->n_memfds);
	if (json_add(root, "memfds", memfds) < 0)
		return NULL;
	for (size_t i = 0; i < m->n_memfds; i++) {
		json_object *e = json_object_new_object();

		if (json_append(memfds, e) < 0 ||
		    json_add(e, "token", json_object_new_uint64(m->memfds[i].token)) < 0 ||
		    json_add(e, "size", json_object_new_uint64(m->memfds[i].size)) < 0)
			return NULL;
	}

	if (m->has_iommufd) {
		json_object *iommufd = json_object_new_object(), *hwpts;

		if (json_add(root, "iommufd", iommufd) < 0 ||
		    json_add(iommufd, "token", json_object_new_uint64(m->iommufd_token)) < 0)
			return NULL;
		hwpts = json_object_new_array_ext((int)m->n_hwpts);
		if (json_add(iommufd, "hwpts", hwpts) < 0)
			return NULL;
		for (size_t i = 0; i < m->n_hwpts; i++) {
			json_object *e = json_object_new_object();

			if (json_append(hwpts, e) < 0 ||
			    json_add(e, "id", json_object_new_uint64(m->hwpts[i].id)) < 0 ||
			    json_add(e, "token", json_object_new_uint64(m->hwpts[i].token)) < 0)
				return NULL;
		}
	}

	devices = json_object_new_array_ext((int)m->n_devices);
	if (json_add(root, "devices", devices) < 0)
		return NULL;
	for (size_t i = 0; i < m->n_devices; i++) {
		json_object *e = json_object_new_object();

		if (json_append(devices, e) < 0 ||
		    json_add(e, "bdf", json_object_new_string(m->devices[i].bdf)) < 0 ||
		    json_add(e, "token", json_object_new_uint64(m->devices[i].token)) < 0)
			return NULL;
	}

	return TAKE_PTR(root);
}

_public_ int iommulu_manifest_to_json(const iommulu_manifest *m, char **ret_json,
				      iommulu_error *error)
{
	_cleanup_(json_object_putp) json_object *root = NULL;
	const char *text;
	char *copy;
	size_t len;
	int r;

	if (!ret_json)
		return -EINVAL;
	r = iommulu_manifest_validate(m, error);
	if (r < 0)
		return r;
	root = manifest_to_object(m);
	if (!root)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	/* Pretty-printed with a final newline: it is meant to be read by
	 * humans too (e.g. from /proc/PID/fd of the daemon). */
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							    JSON_C_TO_STRING_SPACED |
							    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	len = strlen(text);
	if (len + 1 > IOMMULU_MANIFEST_MAX_BYTES)
		return iommulu_error_setf(error, -E2BIG, "manifest: %zu bytes, more than %u",
					  len + 1, IOMMULU_MANIFEST_MAX_BYTES);
	copy = malloc(len + 2);
	if (!copy)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	memcpy(copy, text, len);
	copy[len] = '\n';
	copy[len + 1] = '\0';
	*ret_json = copy;
	return 0;
}

/* ---- parsing ---- */

typedef struct parse_ctx {
	bool allow_unknown;	/* document minor is newer than ours */
	iommulu_error *error;
} parse_ctx;

static const char *type_name_of(json_object *o)
{
	return json_type_to_name(json_object_get_type(o));
}

static int type_error(parse_ctx *c, const char *path, const char *want, json_object *o)
{
	return iommulu_error_setf(c->error, -EINVAL, "%s: expected %s, got %s", path, want,
				  type_name_of(o));
}

/* Look up key in obj; -EINVAL "missing" if required and absent. */
static int get_field(parse_ctx *c, json_object *obj, const char *path, const char *key,
		     bool required, json_object **ret)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(obj, key, &v)) {
		*ret = NULL;
		if (required)
			return iommulu_error_setf(c->error, -EINVAL, "%s%s%s: missing", path,
						  path[0] ? "." : "", key);
		return 0;
	}
	*ret = v;
	return 0;
}

static int check_keys(parse_ctx *c, json_object *obj, const char *path, const char *const *known)
{
	if (c->allow_unknown)
		return 0;
	json_object_object_foreach(obj, key, val) {
		bool found = false;

		(void)val;
		for (const char *const *k = known; *k; k++)
			if (streq(*k, key)) {
				found = true;
				break;
			}
		if (!found)
			return iommulu_error_setf(c->error, -EINVAL, "%s%s%s: unknown key", path,
						  path[0] ? "." : "", key);
	}
	return 0;
}

static int parse_u64(parse_ctx *c, json_object *o, const char *path, uint64_t *ret)
{
	if (!json_object_is_type(o, json_type_int))
		return type_error(c, path, "an unsigned integer", o);
	if (json_object_get_int64(o) < 0)
		return iommulu_error_setf(c->error, -EINVAL, "%s: %" PRId64 " is negative", path,
					  json_object_get_int64(o));
	*ret = json_object_get_uint64(o);
	return 0;
}

static int parse_u32(parse_ctx *c, json_object *o, const char *path, uint32_t *ret)
{
	uint64_t v;
	int r;

	r = parse_u64(c, o, path, &v);
	if (r < 0)
		return r;
	if (v > UINT32_MAX)
		return iommulu_error_setf(c->error, -EINVAL, "%s: %" PRIu64 " is out of range", path,
					  v);
	*ret = (uint32_t)v;
	return 0;
}

/* Required u64 member key of obj, at path "<path>.<key>". */
static int member_u64(parse_ctx *c, json_object *obj, const char *path, const char *key,
		      uint64_t *ret)
{
	char fpath[128];
	json_object *v;
	int r;

	snprintf(fpath, sizeof(fpath), "%s%s%s", path, path[0] ? "." : "", key);
	r = get_field(c, obj, path, key, true, &v);
	if (r < 0)
		return r;
	return parse_u64(c, v, fpath, ret);
}

static int member_u32(parse_ctx *c, json_object *obj, const char *path, const char *key,
		      uint32_t *ret)
{
	char fpath[128];
	json_object *v;
	int r;

	snprintf(fpath, sizeof(fpath), "%s%s%s", path, path[0] ? "." : "", key);
	r = get_field(c, obj, path, key, true, &v);
	if (r < 0)
		return r;
	return parse_u32(c, v, fpath, ret);
}

/* Required array member; checks the entry limit. */
static int member_array(parse_ctx *c, json_object *obj, const char *path, const char *key,
			json_object **ret, size_t *ret_n)
{
	char fpath[128];
	json_object *v;
	size_t n;
	int r;

	snprintf(fpath, sizeof(fpath), "%s%s%s", path, path[0] ? "." : "", key);
	r = get_field(c, obj, path, key, true, &v);
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_array))
		return type_error(c, fpath, "an array", v);
	n = json_object_array_length(v);
	if (n > IOMMULU_MANIFEST_MAX_ENTRIES)
		return iommulu_error_setf(c->error, -EINVAL, "%s: %zu entries, more than %u", fpath, n,
					  IOMMULU_MANIFEST_MAX_ENTRIES);
	*ret = v;
	*ret_n = n;
	return 0;
}

static int array_entry(parse_ctx *c, json_object *arr, const char *apath, size_t i,
		       const char *const *known, char *path, size_t path_len, json_object **ret)
{
	json_object *e = json_object_array_get_idx(arr, i);
	int r;

	snprintf(path, path_len, "%s[%zu]", apath, i);
	if (!json_object_is_type(e, json_type_object))
		return type_error(c, path, "an object", e);
	r = check_keys(c, e, path, known);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

static int parse_version(parse_ctx *c, json_object *root, unsigned *ret_major,
			 unsigned *ret_minor)
{
	static const char *const known[] = { "major", "minor", NULL };
	json_object *v;
	uint32_t major, minor;
	int r;

	r = get_field(c, root, "", "version", true, &v);
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_object))
		return type_error(c, "version", "an object", v);
	r = member_u32(c, v, "version", "major", &major);
	if (r < 0)
		return r;
	if (major != IOMMULU_MANIFEST_MAJOR)
		return iommulu_error_setf(c->error, -EPROTONOSUPPORT,
					  "version.major: unsupported %" PRIu32
					  " (this library reads %u)",
					  major, IOMMULU_MANIFEST_MAJOR);
	r = member_u32(c, v, "version", "minor", &minor);
	if (r < 0)
		return r;
	c->allow_unknown = minor > IOMMULU_MANIFEST_MINOR;
	r = check_keys(c, v, "version", known);
	if (r < 0)
		return r;
	*ret_major = major;
	*ret_minor = minor;
	return 0;
}

static int parse_root(parse_ctx *c, json_object *root, iommulu_manifest *m)
{
	static const char *const root_keys[] = { "format",  "version", "name",	  "generation",
						 "memfds",  "iommufd", "devices", NULL };
	static const char *const memfd_keys[] = { "token", "size", NULL };
	static const char *const iommufd_keys[] = { "token", "hwpts", NULL };
	static const char *const hwpt_keys[] = { "id", "token", NULL };
	static const char *const device_keys[] = { "bdf", "token", NULL };
	json_object *v, *arr;
	char path[64];
	size_t n;
	int r;

	if (!json_object_is_type(root, json_type_object))
		return type_error(c, "manifest", "an object", root);

	r = parse_version(c, root, &m->version_major, &m->version_minor);
	if (r < 0)
		return r;
	r = check_keys(c, root, "", root_keys);
	if (r < 0)
		return r;

	r = get_field(c, root, "", "format", true, &v);
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_string))
		return type_error(c, "format", "a string", v);
	if (!streq(json_object_get_string(v), MANIFEST_FORMAT))
		return iommulu_error_setf(c->error, -EINVAL, "format: expected \"%s\"",
					  MANIFEST_FORMAT);

	r = get_field(c, root, "", "name", true, &v);
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_string))
		return type_error(c, "name", "a string", v);
	if ((size_t)json_object_get_string_len(v) != strlen(json_object_get_string(v)) ||
	    !iommulu_vm_name_is_valid(json_object_get_string(v)))
		return iommulu_error_setf(c->error, -EINVAL,
					  "name: invalid VM name (want [A-Za-z0-9_.-]{1,%d})",
					  IOMMULU_VM_NAME_MAX);
	strcpy(m->name, json_object_get_string(v));

	r = member_u64(c, root, "", "generation", &m->generation);
	if (r < 0)
		return r;

	r = member_array(c, root, "", "memfds", &arr, &n);
	if (r < 0)
		return r;
	if (n > 0) {
		m->memfds = calloc(n, sizeof(*m->memfds));
		if (!m->memfds)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++, m->n_memfds++) {
		json_object *e;

		r = array_entry(c, arr, "memfds", i, memfd_keys, path, sizeof(path), &e);
		if (r < 0)
			return r;
		r = member_u64(c, e, path, "token", &m->memfds[i].token);
		if (r < 0)
			return r;
		r = member_u64(c, e, path, "size", &m->memfds[i].size);
		if (r < 0)
			return r;
	}

	r = get_field(c, root, "", "iommufd", false, &v);
	if (r < 0)
		return r;
	if (v) {
		if (!json_object_is_type(v, json_type_object))
			return type_error(c, "iommufd", "an object", v);
		r = check_keys(c, v, "iommufd", iommufd_keys);
		if (r < 0)
			return r;
		r = member_u64(c, v, "iommufd", "token", &m->iommufd_token);
		if (r < 0)
			return r;
		m->has_iommufd = true;

		r = member_array(c, v, "iommufd", "hwpts", &arr, &n);
		if (r < 0)
			return r;
		if (n > 0) {
			m->hwpts = calloc(n, sizeof(*m->hwpts));
			if (!m->hwpts)
				return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++, m->n_hwpts++) {
			json_object *e;

			r = array_entry(c, arr, "iommufd.hwpts", i, hwpt_keys, path, sizeof(path),
					&e);
			if (r < 0)
				return r;
			r = member_u32(c, e, path, "id", &m->hwpts[i].id);
			if (r < 0)
				return r;
			r = member_u64(c, e, path, "token", &m->hwpts[i].token);
			if (r < 0)
				return r;
		}
	}

	r = member_array(c, root, "", "devices", &arr, &n);
	if (r < 0)
		return r;
	if (n > 0) {
		m->devices = calloc(n, sizeof(*m->devices));
		if (!m->devices)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++, m->n_devices++) {
		char fpath[80];
		json_object *e, *b;
		const char *bdf;

		r = array_entry(c, arr, "devices", i, device_keys, path, sizeof(path), &e);
		if (r < 0)
			return r;
		r = get_field(c, e, path, "bdf", true, &b);
		if (r < 0)
			return r;
		snprintf(fpath, sizeof(fpath), "%s.bdf", path);
		if (!json_object_is_type(b, json_type_string))
			return type_error(c, fpath, "a string", b);
		bdf = json_object_get_string(b);
		if ((size_t)json_object_get_string_len(b) != strlen(bdf) ||
		    !iommulu_bdf_is_valid(bdf))
			return iommulu_error_setf(c->error, -EINVAL,
						  "%s: invalid PCI address (want DDDD:BB:DD.F)",
						  fpath);
		strcpy(m->devices[i].bdf, bdf);
		r = member_u64(c, e, path, "token", &m->devices[i].token);
		if (r < 0)
			return r;
	}

	/* Cross-field rules (tokens, duplicates, sizes) are shared with the
	 * writer. */
	return iommulu_manifest_validate(m, c->error);
}

/*
 * json-c clamps an integer literal above 2^64-1 to UINT64_MAX instead of
 * failing, which would silently turn an out-of-range token into a valid
 * one.  So before parsing, find the first non-negative integer literal
 * (outside strings, no fraction or exponent) that does not fit in 64 bits.
 * Negative literals need no check: they stay negative when clamped and
 * are refused as negative.  Returns the byte offset or -1.
 */
static ssize_t find_integer_overflow(const char *json, size_t len)
{
	static const char u64_max[] = "18446744073709551615";
	bool in_string = false, escape = false;

	for (size_t i = 0; i < len; i++) {
		char ch = json[i];
		size_t start, ndig;

		if (in_string) {
			if (escape)
				escape = false;
			else if (ch == '\\')
				escape = true;
			else if (ch == '"')
				in_string = false;
			continue;
		}
		if (ch == '"') {
			in_string = true;
			continue;
		}
		if (ch != '-' && (ch < '0' || ch > '9'))
			continue;

		start = i;
		if (ch == '-')
			i++;
		while (i < len && json[i] == '0' && i + 1 < len && json[i + 1] >= '0' &&
		       json[i + 1] <= '9')
			i++;	/* leading zeros (invalid JSON anyway) */
		ndig = 0;
		while (i + ndig < len && json[i + ndig] >= '0' && json[i + ndig] <= '9')
			ndig++;
		if (json[start] != '-' &&
		    !(i + ndig < len && (json[i + ndig] == '.' || json[i + ndig] == 'e' ||
					 json[i + ndig] == 'E')) &&
		    (ndig > sizeof(u64_max) - 1 ||
		     (ndig == sizeof(u64_max) - 1 && memcmp(json + i, u64_max, ndig) > 0)))
			return (ssize_t)start;
		i += ndig;
		if (i > start)
			i--;	/* the for loop's i++ */
	}
	return -1;
}

_public_ int iommulu_manifest_from_json(const char *json, size_t len, iommulu_manifest **ret,
					iommulu_error *error)
{
	_cleanup_(json_tokener_freep) json_tokener *tok = NULL;
	_cleanup_(json_object_putp) json_object *root = NULL;
	_cleanup_(iommulu_manifest_freep) iommulu_manifest *m = NULL;
	parse_ctx c = { .error = error };
	enum json_tokener_error jerr;
	ssize_t overflow;
	size_t end;
	int r;

	if (!ret || (!json && len > 0))
		return iommulu_error_setf(error, -EINVAL, "manifest: no input");
	if (len > IOMMULU_MANIFEST_MAX_BYTES)
		return iommulu_error_setf(error, -EINVAL, "manifest: %zu bytes, more than %u", len,
					  IOMMULU_MANIFEST_MAX_BYTES);
	if (len == 0)
		return iommulu_error_setf(error, -EINVAL, "manifest: empty");
	if (memchr(json, '\0', len))
		return iommulu_error_setf(error, -EINVAL, "manifest: contains a NUL byte");
	overflow = find_integer_overflow(json, len);
	if (overflow >= 0)
		return iommulu_error_setf(error, -EINVAL,
					  "manifest: integer at byte %zd is out of range", overflow);

	tok = json_tokener_new_ex(MANIFEST_JSON_DEPTH);
	if (!tok)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, json, (int)len);
	jerr = json_tokener_get_error(tok);
	if (!root || jerr != json_tokener_success) {
		if (jerr == json_tokener_continue)
			return iommulu_error_setf(error, -EINVAL, "manifest: truncated JSON");
		return iommulu_error_setf(error, -EINVAL, "manifest: invalid JSON at byte %zu: %s",
					  json_tokener_get_parse_end(tok),
					  json_tokener_error_desc(jerr));
	}
	end = json_tokener_get_parse_end(tok);
	for (size_t i = end; i < len; i++)
		if (!strchr(" \t\r\n", json[i]))
			return iommulu_error_setf(error, -EINVAL,
						  "manifest: trailing data at byte %zu", i);

	m = calloc(1, sizeof(*m));
	if (!m)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	r = parse_root(&c, root, m);
	if (r == -ENOMEM)
		return iommulu_error_setf(error, r, "manifest: out of memory");
	if (r < 0)
		return r;
	*ret = TAKE_PTR(m);
	return 0;
}

/* ---- memfd transport ---- */

#define MANIFEST_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/*
 * The manifest memfd is exactly as long as the JSON text and sealed
 * against every change (including F_SEAL_WRITE): nobody may edit a
 * session's description behind the daemon's back.
 */
_public_ int iommulu_manifest_to_memfd(const iommulu_manifest *m, int *ret_fd,
				       iommulu_error *error)
{
	_cleanup_free_ char *json = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t len, done = 0;
	int r;

	if (!ret_fd)
		return -EINVAL;
	r = iommulu_manifest_to_json(m, &json, error);
	if (r < 0)
		return r;
	len = strlen(json);

	fd = memfd_create("iommulu-manifest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		r = negative_errno();
		return iommulu_error_setf(error, r, "manifest: memfd_create: %s", strerror(-r));
	}
	while (done < len) {
		ssize_t n = pwrite(fd, json + done, len - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? negative_errno() : -EIO;
			return iommulu_error_setf(error, r, "manifest: write: %s", strerror(-r));
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, MANIFEST_SEALS) < 0) {
		r = negative_errno();
		return iommulu_error_setf(error, r, "manifest: sealing: %s", strerror(-r));
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Reads with pread from offset 0, so the fd's file position is irrelevant
 * and left alone. */
_public_ int iommulu_manifest_from_fd(int fd, iommulu_manifest **ret, iommulu_error *error)
{
	_cleanup_free_ char *buf = NULL;
	size_t have = 0;
	struct stat st;
	int r;

	if (fd < 0)
		return iommulu_error_setf(error, -EBADF, "manifest: fd %d is not open", fd);
	if (!ret)
		return -EINVAL;
	if (fstat(fd, &st) < 0) {
		r = negative_errno();
		return iommulu_error_setf(error, r, "manifest: fstat: %s", strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return iommulu_error_setf(error, -EINVAL, "manifest: fd %d is not a regular file",
					  fd);
	if ((uint64_t)st.st_size > IOMMULU_MANIFEST_MAX_BYTES)
		return iommulu_error_setf(error, -EINVAL, "manifest: %jd bytes, more than %u",
					  (intmax_t)st.st_size, IOMMULU_MANIFEST_MAX_BYTES);

	buf = malloc(IOMMULU_MANIFEST_MAX_BYTES + 1);
	if (!buf)
		return iommulu_error_setf(error, -ENOMEM, "manifest: out of memory");
	for (;;) {
		ssize_t n = pread(fd, buf + have, IOMMULU_MANIFEST_MAX_BYTES + 1 - have,
				  (off_t)have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = negative_errno();
			return iommulu_error_setf(error, r, "manifest: read: %s", strerror(-r));
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have > IOMMULU_MANIFEST_MAX_BYTES)
			return iommulu_error_setf(error, -EINVAL, "manifest: more than %u bytes",
						  IOMMULU_MANIFEST_MAX_BYTES);
	}
	return iommulu_manifest_from_json(buf, have, ret, error);
}
