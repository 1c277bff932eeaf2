/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Verdicts of the checks VerifyVM runs on a device restored after a live
 * update, kept apart from the probing itself so that they can be tested
 * without a device.
 */

#include <stdbool.h>
#include <stddef.h>

#include "iommulu/pci.h"

/*
 * DMA ownership of a restored device, judged from a probe: open_r is the
 * result of opening the device's vfio cdev and a fresh iommufd, bind_r the
 * result of binding the two (looked at only when open_r >= 0), and
 * restored_bound whether the restored device file is bound to an iommufd
 * (vfio answers config space reads on it).  A kernel that hands the file
 * back bound to the retrieved iommufd has the device open through it, and
 * vfio refuses a second cdev bind of an open device with EINVAL; a file
 * handed back unbound leaves the device claimed by the preserved
 * translation, and the bind is refused with EBUSY.  Only the refusal that
 * matches the restored file shows ownership; a probe that could not be
 * made, a bind that succeeded, or any other refusal proves nothing and
 * fails the check.  Appends what was seen to detail.
 */
bool verify_dma_ownership(int open_r, int bind_r, bool restored_bound, char *detail,
			  size_t size);

/*
 * Interrupts of a restored device.  known: a snapshot taken at preservation
 * says which of MSI and MSI-X was enabled then (before) and how many vectors
 * the kernel had set up (before_set_up); read_r and now: reading the device
 * now.  A live update carries MSI and MSI-X over enabled, so the same one
 * must still be enabled; the VMM arms the vectors again on the retrieved
 * device, and each vector armed before the kexec then fires once.  Fails on
 * an unreadable state or a different one.  A reader without CAP_SYS_ADMIN
 * sees no enable bits (now->enabled_known false): then only what was set up
 * at preservation is reported.  Appends what was seen to detail.
 */
bool verify_irqs(bool known, iommulu_pci_irq_type before, unsigned before_set_up, int read_r,
		 const iommulu_pci_irqs *now, char *detail, size_t size);
