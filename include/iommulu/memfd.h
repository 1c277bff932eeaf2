/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Guest-RAM memfds, sealed the way LUO memfd preservation requires. */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK */
#define IOMMULU_MEMFD_REQUIRED_SEALS 0x0007u

/*
 * Create a memfd of size bytes (MFD_CLOEXEC|MFD_ALLOW_SEALING), sized with
 * ftruncate and sealed with IOMMULU_MEMFD_REQUIRED_SEALS.  size must be a
 * non-zero multiple of the page size (-EINVAL otherwise).
 */
int iommulu_memfd_create(const char *name, uint64_t size, int *ret_fd);

/*
 * Check that fd is a non-hugetlb memfd carrying all required seals.
 *   -EBADF       fd is not open
 *   -ENOTTY      fd is not a memfd                ("... is not a memfd")
 *   -EOPNOTSUPP  fd is a hugetlb memfd           ("... is a hugetlb memfd")
 *   -EPERM       a required seal is missing      ("... lacks F_SEAL_GROW")
 * ret_size (optional) receives the file size; ret_missing_seals (optional)
 * the required seals that are absent (also set on -EPERM).
 */
int iommulu_memfd_check(int fd, uint64_t *ret_size, unsigned *ret_missing_seals,
			iommulu_error *error);

/* Names of seal bits, e.g. "F_SEAL_SHRINK|F_SEAL_GROW", into buf: known
 * bits in ascending order, unknown ones as one hex number, 0 as "none".
 * -ENOBUFS if buf is too small. */
int iommulu_memfd_seals_to_string(unsigned seals, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
