/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Conventions shared by every libiommulu module:
 *  - functions return 0 (or a non-negative count/fd) on success and a
 *    negative errno on failure; outputs named ret_* are written only on
 *    success;
 *  - the library never prints.  Where a caller needs to tell a user *why*
 *    something failed, the function takes an optional (NULL allowed)
 *    iommulu_error that receives a message naming the object and reason.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOMMULU_ERROR_MAX 256

typedef struct iommulu_error {
	char message[IOMMULU_ERROR_MAX];
} iommulu_error;

/* "0000:00:03.0" plus NUL, with room for 5-digit domains. */
#define IOMMULU_BDF_MAX 16

/* VM names: [A-Za-z0-9_.-]{1,48}, not "." or "..", not starting with '-' */
#define IOMMULU_VM_NAME_MAX 48

bool iommulu_vm_name_is_valid(const char *name);

/* PCI addresses in canonical sysfs form: DDDD:BB:DD.F (lower-case hex). */
bool iommulu_bdf_is_valid(const char *bdf);

/* Library version string, e.g. "0.1.0". */
const char *iommulu_version(void);

#ifdef __cplusplus
}
#endif
