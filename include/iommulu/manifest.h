/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The self-describing JSON manifest every preserved VM's LUO session
 * carries as a sealed memfd under token 0.  After a kexec it is the only
 * description of what the session holds, so parsing is strict: an unknown
 * major version, a wrong type, a duplicate token or BDF, or an
 * out-of-range value is refused with a message naming the field.
 *
 * Compatibility within a major version: a document whose minor is <= ours
 * may contain only the keys we know (anything else is refused as
 * corruption); keys unknown to us in a document with a newer minor are
 * ignored, so a newer minor may only add keys an older reader can skip.
 * The JSON layout and every rule are described at the top of
 * libiommulu/manifest.c.
 */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IOMMULU_MANIFEST_MAJOR 1
#define IOMMULU_MANIFEST_MINOR 0
#define IOMMULU_MANIFEST_TOKEN 0	/* session token of the manifest memfd */
#define IOMMULU_MANIFEST_MAX_ENTRIES 256	/* per array */
#define IOMMULU_MANIFEST_MAX_BYTES (1u << 20)	/* JSON text */

typedef struct iommulu_manifest_memfd {
	uint64_t token;
	uint64_t size;		/* bytes, non-zero multiple of 4096 */
} iommulu_manifest_memfd;

typedef struct iommulu_manifest_hwpt {
	uint32_t id;		/* HWPT id in the preserved iommufd */
	uint64_t token;		/* hwpt_token passed to MARK_PRESERVE */
} iommulu_manifest_hwpt;

typedef struct iommulu_manifest_device {
	char bdf[IOMMULU_BDF_MAX];
	uint64_t token;
} iommulu_manifest_device;

typedef struct iommulu_manifest {
	unsigned version_major;
	unsigned version_minor;
	char name[IOMMULU_VM_NAME_MAX + 1];
	uint64_t generation;		/* live-update generation that wrote it */

	iommulu_manifest_memfd *memfds;
	size_t n_memfds;

	bool has_iommufd;
	uint64_t iommufd_token;
	iommulu_manifest_hwpt *hwpts;	/* only with has_iommufd */
	size_t n_hwpts;

	iommulu_manifest_device *devices;	/* only with has_iommufd */
	size_t n_devices;
} iommulu_manifest;

/* Allocate an empty manifest of the current version for VM name. */
int iommulu_manifest_new(const char *name, iommulu_manifest **ret);
iommulu_manifest *iommulu_manifest_free(iommulu_manifest *m);

int iommulu_manifest_add_memfd(iommulu_manifest *m, uint64_t token, uint64_t size);
int iommulu_manifest_set_iommufd(iommulu_manifest *m, uint64_t token);
int iommulu_manifest_add_hwpt(iommulu_manifest *m, uint32_t id, uint64_t token);
int iommulu_manifest_add_device(iommulu_manifest *m, const char *bdf, uint64_t token);

/* Check every invariant the parser checks.  -EINVAL with a message. */
int iommulu_manifest_validate(const iommulu_manifest *m, iommulu_error *error);

/* Serialize (validates first).  *ret_json is malloc()ed, NUL-terminated. */
int iommulu_manifest_to_json(const iommulu_manifest *m, char **ret_json, iommulu_error *error);

/* Parse strictly.  -EINVAL malformed, -EPROTONOSUPPORT unknown major. */
int iommulu_manifest_from_json(const char *json, size_t len, iommulu_manifest **ret,
			       iommulu_error *error);

/* A sealed memfd holding the JSON, ready to preserve under token 0. */
int iommulu_manifest_to_memfd(const iommulu_manifest *m, int *ret_fd, iommulu_error *error);

/* Read and parse the JSON from an fd (e.g. the retrieved token-0 memfd). */
int iommulu_manifest_from_fd(int fd, iommulu_manifest **ret, iommulu_error *error);

#ifdef __cplusplus
}
#endif
