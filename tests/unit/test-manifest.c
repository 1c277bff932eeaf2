/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * manifest.c: round trips (JSON text and sealed memfd), the builder API,
 * and one test per rejection, each checking the errno and the message
 * that names the field.  JSON in this file is written with ' for " and
 * converted before use.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/stat.h>

#include "iommulu/manifest.h"
#include "test-helpers.h"

#define F "'format':'iommulu-manifest'"
#define V "'version':{'major':1,'minor':0}"
#define N "'name':'vm1','generation':7"
#define M "'memfds':[{'token':256,'size':4096}]"
#define I "'iommufd':{'token':4096,'hwpts':[{'id':3,'token':1}]}"
#define D "'devices':[{'bdf':'0000:00:03.0','token':8192}]"

/* ' -> ", malloc()ed */
static char *q(const char *s)
{
	char *r = strdup(s);

	assert_non_null(r);
	for (char *p = r; *p; p++)
		if (*p == '\'')
			*p = '"';
	return r;
}

static int parse(const char *json_q, iommulu_manifest **ret, iommulu_error *e)
{
	char *json = q(json_q);
	int r = iommulu_manifest_from_json(json, strlen(json), ret, e);

	free(json);
	return r;
}

/* ---- accepted documents ---- */

static void test_parse_full(void **state)
{
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };

	assert_int_equal(parse("{" F "," V "," N ","
			       "'memfds':[{'token':256,'size':1073741824},{'token':257,'size':4096}],"
			       "'iommufd':{'token':4096,'hwpts':[{'id':3,'token':1},{'id':4,'token':2}]},"
			       "'devices':[{'bdf':'0000:00:03.0','token':8192},"
			       "{'bdf':'0000:00:04.0','token':18446744073709551615}]}",
			       &m, &e),
			 0);
	assert_non_null(m);
	assert_int_equal(m->version_major, 1);
	assert_int_equal(m->version_minor, 0);
	assert_string_equal(m->name, "vm1");
	assert_int_equal(m->generation, 7);
	assert_int_equal(m->n_memfds, 2);
	assert_int_equal(m->memfds[0].token, 256);
	assert_int_equal(m->memfds[0].size, 1073741824);
	assert_int_equal(m->memfds[1].token, 257);
	assert_true(m->has_iommufd);
	assert_int_equal(m->iommufd_token, 4096);
	assert_int_equal(m->n_hwpts, 2);
	assert_int_equal(m->hwpts[1].id, 4);
	assert_int_equal(m->hwpts[1].token, 2);
	assert_int_equal(m->n_devices, 2);
	assert_string_equal(m->devices[0].bdf, "0000:00:03.0");
	assert_int_equal(m->devices[1].token, UINT64_MAX);
	iommulu_manifest_free(m);
}

static void test_parse_memfd_only(void **state)
{
	iommulu_manifest *m = NULL;

	assert_int_equal(parse("{" F "," V "," N "," M ",'devices':[]}\n\t \r\n", &m, NULL), 0);
	assert_false(m->has_iommufd);
	assert_int_equal(m->n_memfds, 1);
	assert_int_equal(m->n_devices, 0);
	assert_null(m->devices);
	iommulu_manifest_free(m);
}

/* A newer minor may add keys anywhere; they are skipped. */
static void test_parse_newer_minor_ignores_unknown(void **state)
{
	iommulu_manifest *m = NULL;

	assert_int_equal(parse("{" F ",'version':{'major':1,'minor':3,'patch':1}," N
			       ",'memfds':[{'token':256,'size':4096,'numa':[0]}],"
			       "'iommufd':{'token':4096,'hwpts':[{'id':3,'token':1,'x':true}],'y':{}},"
			       "'devices':[{'bdf':'0000:00:03.0','token':8192,'vendor':'8086'}],"
			       "'future':{'a':[1,2,3]}}",
			       &m, NULL),
			 0);
	assert_int_equal(m->version_minor, 3);
	assert_int_equal(m->memfds[0].size, 4096);
	assert_int_equal(m->hwpts[0].id, 3);
	assert_string_equal(m->devices[0].bdf, "0000:00:03.0");

	/* Written back, it is a document of our minor, without the extras. */
	{
		iommulu_manifest *back = NULL;
		char *json = NULL;

		assert_int_equal(iommulu_manifest_to_json(m, &json, NULL), 0);
		assert_null(strstr(json, "future"));
		assert_int_equal(iommulu_manifest_from_json(json, strlen(json), &back, NULL), 0);
		assert_int_equal(back->version_minor, IOMMULU_MANIFEST_MINOR);
		assert_int_equal(back->n_devices, 1);
		iommulu_manifest_free(back);
		free(json);
	}
	iommulu_manifest_free(m);
}

/* ---- builder and round trips ---- */

static iommulu_manifest *build_full(void)
{
	iommulu_manifest *m = NULL;

	assert_int_equal(iommulu_manifest_new("vm-full_1.x", &m), 0);
	m->generation = UINT64_MAX;
	assert_int_equal(iommulu_manifest_add_memfd(m, 0x100, 1ull << 40), 0);
	assert_int_equal(iommulu_manifest_add_memfd(m, 0x101, 4096), 0);
	assert_int_equal(iommulu_manifest_set_iommufd(m, 0x1000), 0);
	assert_int_equal(iommulu_manifest_add_hwpt(m, UINT32_MAX, 1), 0);
	assert_int_equal(iommulu_manifest_add_hwpt(m, 0, UINT64_MAX), 0);
	assert_int_equal(iommulu_manifest_add_device(m, "0000:00:03.0", 0x2000), 0);
	assert_int_equal(iommulu_manifest_add_device(m, "10000:ff:1f.7", UINT64_MAX), 0);
	return m;
}

static void assert_manifest_equal(const iommulu_manifest *a, const iommulu_manifest *b)
{
	assert_int_equal(a->version_major, b->version_major);
	assert_int_equal(a->version_minor, b->version_minor);
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->generation, b->generation);
	assert_int_equal(a->n_memfds, b->n_memfds);
	for (size_t i = 0; i < a->n_memfds; i++) {
		assert_int_equal(a->memfds[i].token, b->memfds[i].token);
		assert_int_equal(a->memfds[i].size, b->memfds[i].size);
	}
	assert_int_equal(a->has_iommufd, b->has_iommufd);
	assert_int_equal(a->iommufd_token, b->iommufd_token);
	assert_int_equal(a->n_hwpts, b->n_hwpts);
	for (size_t i = 0; i < a->n_hwpts; i++) {
		assert_int_equal(a->hwpts[i].id, b->hwpts[i].id);
		assert_int_equal(a->hwpts[i].token, b->hwpts[i].token);
	}
	assert_int_equal(a->n_devices, b->n_devices);
	for (size_t i = 0; i < a->n_devices; i++) {
		assert_string_equal(a->devices[i].bdf, b->devices[i].bdf);
		assert_int_equal(a->devices[i].token, b->devices[i].token);
	}
}

static void test_round_trip_json(void **state)
{
	iommulu_manifest *m = build_full(), *back = NULL;
	char *json = NULL, *json2 = NULL;
	iommulu_error e = { "" };

	assert_int_equal(iommulu_manifest_to_json(m, &json, &e), 0);
	assert_non_null(strstr(json, "\"format\": \"iommulu-manifest\""));
	assert_int_equal(iommulu_manifest_from_json(json, strlen(json), &back, &e), 0);
	assert_manifest_equal(m, back);

	/* Deterministic: the parsed copy serializes to the same text. */
	assert_int_equal(iommulu_manifest_to_json(back, &json2, &e), 0);
	assert_string_equal(json, json2);

	free(json);
	free(json2);
	iommulu_manifest_free(m);
	iommulu_manifest_free(back);
}

static void test_round_trip_empty(void **state)
{
	iommulu_manifest *m = NULL, *back = NULL;
	char *json = NULL;

	assert_int_equal(iommulu_manifest_new("vm", &m), 0);
	assert_int_equal(iommulu_manifest_to_json(m, &json, NULL), 0);
	assert_int_equal(iommulu_manifest_from_json(json, strlen(json), &back, NULL), 0);
	assert_manifest_equal(m, back);
	assert_false(back->has_iommufd);
	free(json);
	iommulu_manifest_free(m);
	iommulu_manifest_free(back);
}

static void test_round_trip_memfd(void **state)
{
	iommulu_manifest *m = build_full(), *back = NULL;
	iommulu_error e = { "" };
	char *json = NULL;
	struct stat st;
	int fd = -1;

	assert_int_equal(iommulu_manifest_to_memfd(m, &fd, &e), 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GET_SEALS),
			 F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	assert_int_equal(iommulu_manifest_to_json(m, &json, NULL), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((size_t)st.st_size, strlen(json));
	/* Nobody can edit it. */
	assert_int_equal(pwrite(fd, "x", 1, 0), -1);
	assert_int_equal(errno, EPERM);

	/* from_fd reads from offset 0 whatever the file position. */
	assert_int_equal(lseek(fd, 0, SEEK_END), st.st_size);
	assert_int_equal(iommulu_manifest_from_fd(fd, &back, &e), 0);
	assert_manifest_equal(m, back);

	free(json);
	close(fd);
	iommulu_manifest_free(m);
	iommulu_manifest_free(back);
}

static void test_from_fd_errors(void **state)
{
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };
	int p[2], fd;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(iommulu_manifest_from_fd(p[0], &m, &e), -EINVAL);
	assert_non_null(strstr(e.message, "is not a regular file"));
	close(p[0]);
	close(p[1]);
	assert_int_equal(iommulu_manifest_from_fd(p[0], &m, &e), -EBADF);

	fd = test_memfd(IOMMULU_MANIFEST_MAX_BYTES + 4096, 0, true);
	assert_int_equal(iommulu_manifest_from_fd(fd, &m, &e), -EINVAL);
	assert_string_equal(e.message, "manifest: 1052672 bytes, more than 1048576");
	close(fd);

	fd = test_memfd(0, 0, true);
	assert_int_equal(iommulu_manifest_from_fd(fd, &m, &e), -EINVAL);
	assert_string_equal(e.message, "manifest: empty");
	close(fd);
	assert_null(m);
}

static void test_builder_errors(void **state)
{
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };
	char *json = NULL;
	int fd = -5;

	assert_int_equal(iommulu_manifest_new("bad name", &m), -EINVAL);
	assert_int_equal(iommulu_manifest_new(NULL, &m), -EINVAL);
	assert_null(m);
	assert_null(iommulu_manifest_free(NULL));

	assert_int_equal(iommulu_manifest_new("vm", &m), 0);
	assert_int_equal(iommulu_manifest_add_device(m, "0000:00:03", 5), -EINVAL);
	assert_int_equal(iommulu_manifest_add_device(m, NULL, 5), -EINVAL);
	assert_int_equal(m->n_devices, 0);
	for (unsigned i = 0; i < IOMMULU_MANIFEST_MAX_ENTRIES; i++)
		assert_int_equal(iommulu_manifest_add_memfd(m, 0x100 + i, 4096), 0);
	assert_int_equal(iommulu_manifest_add_memfd(m, 0x1000, 4096), -E2BIG);
	assert_int_equal(m->n_memfds, IOMMULU_MANIFEST_MAX_ENTRIES);
	assert_int_equal(iommulu_manifest_validate(m, &e), 0);

	/* The writer validates: a duplicate token is refused. */
	assert_int_equal(iommulu_manifest_set_iommufd(m, 0x100), 0);
	assert_int_equal(iommulu_manifest_to_json(m, &json, &e), -EINVAL);
	assert_string_equal(e.message, "iommufd.token: duplicate token 0x100 (also memfds[0].token)");
	assert_int_equal(iommulu_manifest_to_memfd(m, &fd, &e), -EINVAL);
	assert_null(json);
	assert_int_equal(fd, -5);
	iommulu_manifest_free(m);
}

static void test_validate_struct_only(void **state)
{
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };

	/* HWPTs without an iommufd cannot be written as JSON at all. */
	assert_int_equal(iommulu_manifest_new("vm", &m), 0);
	assert_int_equal(iommulu_manifest_add_hwpt(m, 1, 1), 0);
	assert_int_equal(iommulu_manifest_validate(m, &e), -EINVAL);
	assert_string_equal(e.message, "iommufd.hwpts: HWPTs without an iommufd");

	m->version_major = 2;
	assert_int_equal(iommulu_manifest_validate(m, &e), -EPROTONOSUPPORT);
	assert_string_equal(e.message, "version.major: unsupported 2 (this library reads 1)");
	m->version_major = 1;

	m->name[0] = '\0';
	assert_int_equal(iommulu_manifest_validate(m, &e), -EINVAL);
	assert_string_equal(e.message, "name: invalid VM name (want [A-Za-z0-9_.-]{1,48})");

	assert_int_equal(iommulu_manifest_validate(NULL, &e), -EINVAL);
	iommulu_manifest_free(m);
}

/* ---- rejections: one case each ---- */

typedef struct reject_case {
	const char *name;
	const char *json;	/* with ' for " */
	int r;
	const char *message;	/* exact, or prefix when ending in '*' */
} reject_case;

static const reject_case reject_cases[] = {
	{ "major-2", "{" F ",'version':{'major':2,'minor':0}," N "," M ",'devices':[]}",
	  -EPROTONOSUPPORT, "version.major: unsupported 2 (this library reads 1)" },
	{ "major-2-anything-else", "{'version':{'major':2,'minor':9,'z':1},'whatever':[1]}",
	  -EPROTONOSUPPORT, "version.major: unsupported 2 (this library reads 1)" },
	{ "major-0", "{" F ",'version':{'major':0,'minor':0}," N "," M ",'devices':[]}",
	  -EPROTONOSUPPORT, "version.major: unsupported 0 (this library reads 1)" },
	{ "version-missing", "{" F "," N "," M ",'devices':[]}", -EINVAL, "version: missing" },
	{ "version-string", "{" F ",'version':'1.0'," N "," M ",'devices':[]}", -EINVAL,
	  "version: expected an object, got string" },
	{ "major-missing", "{" F ",'version':{'minor':0}," N "," M ",'devices':[]}", -EINVAL,
	  "version.major: missing" },
	{ "major-string", "{" F ",'version':{'major':'1','minor':0}," N "," M ",'devices':[]}",
	  -EINVAL, "version.major: expected an unsigned integer, got string" },
	{ "major-negative", "{" F ",'version':{'major':-1,'minor':0}," N "," M ",'devices':[]}",
	  -EINVAL, "version.major: -1 is negative" },
	{ "minor-out-of-range",
	  "{" F ",'version':{'major':1,'minor':4294967296}," N "," M ",'devices':[]}", -EINVAL,
	  "version.minor: 4294967296 is out of range" },
	{ "format-missing", "{" V "," N "," M ",'devices':[]}", -EINVAL, "format: missing" },
	{ "format-wrong", "{'format':'other'," V "," N "," M ",'devices':[]}", -EINVAL,
	  "format: expected \"iommulu-manifest\"" },
	{ "name-missing", "{" F "," V ",'generation':1," M ",'devices':[]}", -EINVAL,
	  "name: missing" },
	{ "name-number", "{" F "," V ",'name':5,'generation':1," M ",'devices':[]}", -EINVAL,
	  "name: expected a string, got int" },
	{ "name-invalid", "{" F "," V ",'name':'vm 1','generation':1," M ",'devices':[]}", -EINVAL,
	  "name: invalid VM name (want [A-Za-z0-9_.-]{1,48})" },
	{ "name-embedded-nul", "{" F "," V ",'name':'vm\\u0000x','generation':1," M ",'devices':[]}",
	  -EINVAL, "name: invalid VM name (want [A-Za-z0-9_.-]{1,48})" },
	{ "generation-missing", "{" F "," V ",'name':'vm'," M ",'devices':[]}", -EINVAL,
	  "generation: missing" },
	{ "generation-double", "{" F "," V ",'name':'vm','generation':1.5," M ",'devices':[]}",
	  -EINVAL, "generation: expected an unsigned integer, got double" },
	{ "generation-exponent", "{" F "," V ",'name':'vm','generation':1e3," M ",'devices':[]}",
	  -EINVAL, "generation: expected an unsigned integer, got double" },
	{ "generation-bool", "{" F "," V ",'name':'vm','generation':true," M ",'devices':[]}",
	  -EINVAL, "generation: expected an unsigned integer, got boolean" },
	{ "generation-overflow",
	  "{" F "," V ",'name':'vm','generation':18446744073709551616," M ",'devices':[]}", -EINVAL,
	  "manifest: integer at byte *" },
	{ "memfds-missing", "{" F "," V "," N ",'devices':[]}", -EINVAL, "memfds: missing" },
	{ "memfds-object", "{" F "," V "," N ",'memfds':{},'devices':[]}", -EINVAL,
	  "memfds: expected an array, got object" },
	{ "memfds-entry-int", "{" F "," V "," N ",'memfds':[1],'devices':[]}", -EINVAL,
	  "memfds[0]: expected an object, got int" },
	{ "memfd-token-string", "{" F "," V "," N ",'memfds':[{'token':'1','size':4096}],'devices':[]}",
	  -EINVAL, "memfds[0].token: expected an unsigned integer, got string" },
	{ "memfd-token-negative",
	  "{" F "," V "," N ",'memfds':[{'token':-5,'size':4096}],'devices':[]}", -EINVAL,
	  "memfds[0].token: -5 is negative" },
	{ "memfd-size-missing", "{" F "," V "," N ",'memfds':[{'token':1}],'devices':[]}", -EINVAL,
	  "memfds[0].size: missing" },
	{ "memfd-size-null", "{" F "," V "," N ",'memfds':[{'token':1,'size':null}],'devices':[]}",
	  -EINVAL, "memfds[0].size: expected an unsigned integer, got null" },
	{ "memfd-size-0", "{" F "," V "," N ",'memfds':[{'token':1,'size':0}],'devices':[]}",
	  -EINVAL, "memfds[0].size: 0 is not a non-zero multiple of 4096" },
	{ "memfd-size-unaligned",
	  "{" F "," V "," N ",'memfds':[{'token':1,'size':4096},{'token':2,'size':4097}],'devices':[]}",
	  -EINVAL, "memfds[1].size: 4097 is not a non-zero multiple of 4096" },
	{ "memfd-token-0", "{" F "," V "," N ",'memfds':[{'token':0,'size':4096}],'devices':[]}",
	  -EINVAL, "memfds[0].token: token 0 is reserved for the manifest" },
	{ "iommufd-token-0", "{" F "," V "," N "," M ",'iommufd':{'token':0,'hwpts':[]},'devices':[]}",
	  -EINVAL, "iommufd.token: token 0 is reserved for the manifest" },
	{ "device-token-0", "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0','token':0}]}",
	  -EINVAL, "devices[0].token: token 0 is reserved for the manifest" },
	{ "memfd-tokens-duplicate",
	  "{" F "," V "," N ",'memfds':[{'token':256,'size':4096},{'token':256,'size':4096}],'devices':[]}",
	  -EINVAL, "memfds[1].token: duplicate token 0x100 (also memfds[0].token)" },
	{ "iommufd-token-duplicates-memfd",
	  "{" F "," V "," N "," M ",'iommufd':{'token':256,'hwpts':[]},'devices':[]}", -EINVAL,
	  "iommufd.token: duplicate token 0x100 (also memfds[0].token)" },
	{ "device-token-duplicates-memfd",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0','token':256}]}", -EINVAL,
	  "devices[0].token: duplicate token 0x100 (also memfds[0].token)" },
	{ "device-token-duplicates-iommufd",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0','token':4096}]}", -EINVAL,
	  "devices[0].token: duplicate token 0x1000 (also iommufd.token)" },
	{ "device-tokens-duplicate",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0','token':9},"
	  "{'bdf':'0000:00:04.0','token':9}]}",
	  -EINVAL, "devices[1].token: duplicate token 0x9 (also devices[0].token)" },
	{ "device-bdf-duplicate",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0','token':9},"
	  "{'bdf':'0000:00:03.0','token':10}]}",
	  -EINVAL, "devices[1].bdf: duplicate 0000:00:03.0 (also devices[0].bdf)" },
	{ "device-bdf-upper-case",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:0A:03.0','token':9}]}", -EINVAL,
	  "devices[0].bdf: invalid PCI address (want DDDD:BB:DD.F)" },
	{ "device-bdf-no-function",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03','token':9}]}", -EINVAL,
	  "devices[0].bdf: invalid PCI address (want DDDD:BB:DD.F)" },
	{ "device-bdf-too-long",
	  "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0000000000000','token':9}]}",
	  -EINVAL, "devices[0].bdf: invalid PCI address (want DDDD:BB:DD.F)" },
	{ "device-bdf-number", "{" F "," V "," N "," M "," I ",'devices':[{'bdf':3,'token':9}]}",
	  -EINVAL, "devices[0].bdf: expected a string, got int" },
	{ "device-bdf-missing", "{" F "," V "," N "," M "," I ",'devices':[{'token':9}]}", -EINVAL,
	  "devices[0].bdf: missing" },
	{ "devices-missing", "{" F "," V "," N "," M "}", -EINVAL, "devices: missing" },
	{ "devices-null", "{" F "," V "," N "," M ",'devices':null}", -EINVAL,
	  "devices: expected an array, got null" },
	{ "devices-without-iommufd", "{" F "," V "," N "," M "," D "}", -EINVAL,
	  "devices: devices without an iommufd" },
	{ "iommufd-array", "{" F "," V "," N "," M ",'iommufd':[],'devices':[]}", -EINVAL,
	  "iommufd: expected an object, got array" },
	{ "iommufd-hwpts-missing", "{" F "," V "," N "," M ",'iommufd':{'token':4096},'devices':[]}",
	  -EINVAL, "iommufd.hwpts: missing" },
	{ "hwpt-id-duplicate",
	  "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':[{'id':3,'token':1},"
	  "{'id':3,'token':2}]},'devices':[]}",
	  -EINVAL, "iommufd.hwpts[1].id: duplicate 3 (also iommufd.hwpts[0].id)" },
	{ "hwpt-token-duplicate",
	  "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':[{'id':3,'token':1},"
	  "{'id':4,'token':1}]},'devices':[]}",
	  -EINVAL, "iommufd.hwpts[1].token: duplicate 0x1 (also iommufd.hwpts[0].token)" },
	{ "hwpt-id-out-of-range",
	  "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':[{'id':4294967296,'token':1}]},"
	  "'devices':[]}",
	  -EINVAL, "iommufd.hwpts[0].id: 4294967296 is out of range" },
	{ "hwpt-token-missing",
	  "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':[{'id':1}]},'devices':[]}",
	  -EINVAL, "iommufd.hwpts[0].token: missing" },
	{ "unknown-key-root", "{" F "," V "," N "," M ",'devices':[],'extra':1}", -EINVAL,
	  "extra: unknown key" },
	{ "unknown-key-version", "{" F ",'version':{'major':1,'minor':0,'patch':0}," N "," M
	  ",'devices':[]}", -EINVAL, "version.patch: unknown key" },
	{ "unknown-key-memfd", "{" F "," V "," N ",'memfds':[{'token':1,'size':4096,'numa':0}],"
	  "'devices':[]}", -EINVAL, "memfds[0].numa: unknown key" },
	{ "unknown-key-iommufd", "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':[],'x':1},"
	  "'devices':[]}", -EINVAL, "iommufd.x: unknown key" },
	{ "unknown-key-hwpt", "{" F "," V "," N "," M ",'iommufd':{'token':4096,'hwpts':"
	  "[{'id':1,'token':1,'x':1}]},'devices':[]}", -EINVAL, "iommufd.hwpts[0].x: unknown key" },
	{ "unknown-key-device", "{" F "," V "," N "," M "," I ",'devices':[{'bdf':'0000:00:03.0',"
	  "'token':9,'x':1}]}", -EINVAL, "devices[0].x: unknown key" },
	{ "root-array", "[]", -EINVAL, "manifest: expected an object, got array" },
	{ "truncated", "{" F "," V, -EINVAL, "manifest: truncated JSON" },
	{ "invalid-json", "{'a' 1}", -EINVAL, "manifest: invalid JSON at byte *" },
	{ "trailing-comma", "{" F "," V "," N "," M ",'devices':[],}", -EINVAL,
	  "manifest: invalid JSON at byte *" },
	{ "trailing-data", "{" F "," V "," N "," M ",'devices':[]} {}", -EINVAL,
	  "manifest: invalid JSON at byte *" },
	{ "trailing-garbage", "{" F "," V "," N "," M ",'devices':[]}x", -EINVAL,
	  "manifest: invalid JSON at byte *" },
	{ "empty", "", -EINVAL, "manifest: empty" },
	{ "too-deep", "{'a':[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", -EINVAL,
	  "manifest: invalid JSON at byte *" },
};

static void run_reject_case(void **state)
{
	const reject_case *c = *state;
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };
	size_t n = strlen(c->message);

	assert_int_equal(parse(c->json, &m, &e), c->r);
	assert_null(m);
	if (n > 0 && c->message[n - 1] == '*') {
		if (strncmp(e.message, c->message, n - 1) != 0)
			fail_msg("message \"%s\" does not start with \"%.*s\"", e.message,
				 (int)(n - 1), c->message);
	} else {
		assert_string_equal(e.message, c->message);
	}
}

/* Cases that need a generated document. */

static char *doc_with_entries(const char *array, unsigned n)
{
	size_t cap = 256 + (size_t)n * 64, used;
	char *s = malloc(cap);

	assert_non_null(s);
	used = (size_t)snprintf(s, cap,
				"{\"format\":\"iommulu-manifest\",\"version\":{\"major\":1,\"minor\":0},"
				"\"name\":\"vm\",\"generation\":1,\"iommufd\":{\"token\":1,\"hwpts\":[]},");
	used += (size_t)snprintf(s + used, cap - used, "\"%s\":[", array);
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(array, "memfds") == 0)
			used += (size_t)snprintf(s + used, cap - used, "%s{\"token\":%u,\"size\":4096}",
						 i ? "," : "", 2 + i);
		else
			used += (size_t)snprintf(s + used, cap - used,
						 "%s{\"bdf\":\"0000:%02x:%02x.%u\",\"token\":%u}",
						 i ? "," : "", i / 256, (i / 8) % 32, i % 8, 2 + i);
	}
	snprintf(s + used, cap - used, "]%s}",
		 strcmp(array, "memfds") == 0 ? ",\"devices\":[]" : ",\"memfds\":[]");
	return s;
}

static void test_reject_too_many(void **state)
{
	static const char *const arrays[] = { "memfds", "devices" };

	for (size_t a = 0; a < 2; a++) {
		iommulu_manifest *m = NULL;
		iommulu_error e = { "" };
		char want[64], *s;

		s = doc_with_entries(arrays[a], IOMMULU_MANIFEST_MAX_ENTRIES);
		assert_int_equal(iommulu_manifest_from_json(s, strlen(s), &m, &e), 0);
		iommulu_manifest_free(m);
		m = NULL;
		free(s);

		s = doc_with_entries(arrays[a], IOMMULU_MANIFEST_MAX_ENTRIES + 1);
		assert_int_equal(iommulu_manifest_from_json(s, strlen(s), &m, &e), -EINVAL);
		snprintf(want, sizeof(want), "%s: 257 entries, more than 256", arrays[a]);
		assert_string_equal(e.message, want);
		assert_null(m);
		free(s);
	}
}

static void test_reject_too_big(void **state)
{
	size_t len = IOMMULU_MANIFEST_MAX_BYTES + 1;
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };
	char *s = malloc(len);

	assert_non_null(s);
	memset(s, ' ', len);
	s[0] = '{';
	s[len - 1] = '}';
	assert_int_equal(iommulu_manifest_from_json(s, len, &m, &e), -EINVAL);
	assert_string_equal(e.message, "manifest: 1048577 bytes, more than 1048576");
	free(s);
}

static void test_reject_embedded_nul(void **state)
{
	static const char s[] = "{}\0{}";
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };

	assert_int_equal(iommulu_manifest_from_json(s, sizeof(s) - 1, &m, &e), -EINVAL);
	assert_string_equal(e.message, "manifest: contains a NUL byte");
	assert_int_equal(iommulu_manifest_from_json(NULL, 0, &m, &e), -EINVAL);
	assert_int_equal(iommulu_manifest_from_json("{}", 2, NULL, &e), -EINVAL);
}

/* 2^64 - 1 is fine; 2^64 and more are refused, not clamped. */
static void test_integer_limits(void **state)
{
	iommulu_manifest *m = NULL;

	assert_int_equal(parse("{" F "," V ",'name':'vm','generation':18446744073709551615," M
			       ",'devices':[]}", &m, NULL), 0);
	assert_int_equal(m->generation, UINT64_MAX);
	iommulu_manifest_free(m);
	m = NULL;
	assert_int_equal(parse("{" F "," V ",'name':'vm','generation':99999999999999999999," M
			       ",'devices':[]}", &m, NULL), -EINVAL);
	assert_int_equal(parse("{" F "," V ",'name':'vm','generation':0," M
			       ",'devices':[{'bdf':'0000:00:03.0','token':100000000000000000000}]}",
			       &m, NULL), -EINVAL);
	/* Digits inside strings are not numbers. */
	assert_int_equal(parse("{" F "," V ",'name':'v99999999999999999999999','generation':0," M
			       ",'devices':[]}", &m, NULL), 0);
	iommulu_manifest_free(m);
}

int main(void)
{
	const size_t n_reject = sizeof(reject_cases) / sizeof(reject_cases[0]);
	const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_parse_full),
		cmocka_unit_test(test_parse_memfd_only),
		cmocka_unit_test(test_parse_newer_minor_ignores_unknown),
		cmocka_unit_test(test_round_trip_json),
		cmocka_unit_test(test_round_trip_empty),
		cmocka_unit_test(test_round_trip_memfd),
		cmocka_unit_test(test_from_fd_errors),
		cmocka_unit_test(test_builder_errors),
		cmocka_unit_test(test_validate_struct_only),
		cmocka_unit_test(test_reject_too_many),
		cmocka_unit_test(test_reject_too_big),
		cmocka_unit_test(test_reject_embedded_nul),
		cmocka_unit_test(test_integer_limits),
	};
	const size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
	struct CMUnitTest *tests = calloc(n_fixed + n_reject, sizeof(*tests));
	char (*names)[80] = calloc(n_reject, sizeof(*names));
	int r;

	if (!tests || !names)
		return 1;
	memcpy(tests, fixed, sizeof(fixed));
	for (size_t i = 0; i < n_reject; i++) {
		snprintf(names[i], sizeof(names[i]), "reject-%s", reject_cases[i].name);
		tests[n_fixed + i] = (struct CMUnitTest){
			.name = names[i],
			.test_func = run_reject_case,
			.initial_state = (void *)&reject_cases[i],
		};
	}
	r = _cmocka_run_group_tests("manifest", tests, n_fixed + n_reject, NULL, NULL);
	free(tests);
	free(names);
	return r;
}
