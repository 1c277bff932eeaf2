/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Verdicts of the checks VerifyVM runs on a device restored after a live
 * update, kept apart from the probing itself so that they can be tested
 * without a device.
 */

#include <stdbool.h>
#include <stddef.h>

/*
 * DMA ownership of a restored device, judged from a probe: open_r is the
 * result of opening the device's vfio cdev and a fresh iommufd, bind_r the
 * result of binding the two (looked at only when open_r >= 0).  Only a
 * bind refused with EBUSY shows that the preserved binding still owns the
 * device; a probe that could not be made, or a bind that failed for
 * another reason, proves nothing and fails the check.  Appends what was
 * seen to detail.
 */
bool verify_dma_ownership(int open_r, int bind_r, char *detail, size_t size);
