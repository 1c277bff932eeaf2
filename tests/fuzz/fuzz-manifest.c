/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the manifest parser (libFuzzer entry point).
 *
 * Whatever the input, iommulu_manifest_from_json() must return cleanly
 * (no crash, leak or sanitizer report).  When it accepts a document, the
 * result must validate, serialize, and parse back to the same manifest:
 * anything the parser lets through, the writer can write.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommulu/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what, const iommulu_error *e)
{
	if (!cond) {
		fprintf(stderr, "fuzz-manifest: invariant broken: %s (%s)\n", what,
			e ? e->message : "");
		abort();
	}
}

static void check_equal(const iommulu_manifest *a, const iommulu_manifest *b)
{
	check(a->version_major == b->version_major && strcmp(a->name, b->name) == 0 &&
		      a->generation == b->generation && a->n_memfds == b->n_memfds &&
		      a->has_iommufd == b->has_iommufd && a->iommufd_token == b->iommufd_token &&
		      a->n_hwpts == b->n_hwpts && a->n_devices == b->n_devices,
	      "round trip changed the header or counts", NULL);
	for (size_t i = 0; i < a->n_memfds; i++)
		check(a->memfds[i].token == b->memfds[i].token &&
			      a->memfds[i].size == b->memfds[i].size,
		      "round trip changed a memfd", NULL);
	for (size_t i = 0; i < a->n_hwpts; i++)
		check(a->hwpts[i].id == b->hwpts[i].id && a->hwpts[i].token == b->hwpts[i].token,
		      "round trip changed an HWPT", NULL);
	for (size_t i = 0; i < a->n_devices; i++)
		check(strcmp(a->devices[i].bdf, b->devices[i].bdf) == 0 &&
			      a->devices[i].token == b->devices[i].token,
		      "round trip changed a device", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	iommulu_manifest *m = NULL, *back = NULL;
	iommulu_error e = { "" };
	char *json = NULL;
	int r;

	r = iommulu_manifest_from_json((const char *)data, size, &m, &e);
	if (r < 0) {
		check(m == NULL, "output written on failure", &e);
		check(e.message[0] != '\0', "refusal without a message", &e);
		return 0;
	}
	check(m != NULL, "success without a manifest", &e);
	check(iommulu_manifest_validate(m, &e) == 0, "accepted manifest does not validate", &e);
	check(iommulu_manifest_to_json(m, &json, &e) == 0, "accepted manifest cannot be written",
	      &e);
	check(iommulu_manifest_from_json(json, strlen(json), &back, &e) == 0,
	      "written manifest cannot be read back", &e);
	check_equal(m, back);

	free(json);
	iommulu_manifest_free(back);
	iommulu_manifest_free(m);
	return 0;
}
