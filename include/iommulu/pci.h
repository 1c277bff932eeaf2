/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * PCI devices through sysfs ($IOMMULU_SYSFS_ROOT, default /sys).
 *
 * Errors common to every call, checked in this order:
 *   -EINVAL        bdf is not canonical (iommulu_bdf_is_valid), or a driver
 *                  name is empty, too long, or contains '/' or whitespace
 *   -ENODEV        no such device under bus/pci/devices/
 *   -ENAMETOOLONG  a caller's buffer is too small for the answer
 *   -EBADMSG       a sysfs attribute holds something unparsable
 * Otherwise errnos from the file system, and for writes (driver_override,
 * bind, unbind) the kernel's answer to the write, are passed through.
 */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IOMMULU_DRIVER_NAME_MAX 64

/* Name of the bound driver; "" (and 0) when unbound. -ENODEV no device. */
int iommulu_pci_driver(const char *bdf, char *buf, size_t len);

/* IOMMU group number; -ENOENT if the device has no group. */
int iommulu_pci_iommu_group(const char *bdf, int *ret_group);

/* SR-IOV role: PF (has sriov_totalvfs > 0) and/or VF (has physfn). */
int iommulu_pci_sriov(const char *bdf, bool *ret_is_pf, bool *ret_is_vf);

/* Read config space from sysfs "config" (what root sees).  -ERANGE if
 * [offset, offset+len) runs past what sysfs exposes (256 bytes for
 * conventional PCI, 4096 for PCIe, 64 for unprivileged readers). */
int iommulu_pci_config_read(const char *bdf, uint32_t offset, void *buf, size_t len);

/*
 * Interrupts of a device as a live update carries them over: which of MSI
 * and MSI-X is enabled in its config space, how many vectors that enables
 * (MSI: Multiple Message Enable; MSI-X: the table size), whether MSI-X is
 * masked as a whole, and how many vectors the running kernel has set up
 * (its msi_irqs/ directory; 0 after a live update until the owner arms the
 * vectors again).  INTx is not visible here.  -EBADMSG for a capability
 * list that loops or leaves config space.
 *
 * Without CAP_SYS_ADMIN sysfs shows only the first 64 bytes of config space,
 * which hold no capability: then enabled_known is false, and type is taken
 * from the vectors set up (msi_irqs/ says "msi" or "msix"), NONE if none is.
 */
typedef enum iommulu_pci_irq_type {
	IOMMULU_PCI_IRQ_NONE,
	IOMMULU_PCI_IRQ_MSI,
	IOMMULU_PCI_IRQ_MSIX,
} iommulu_pci_irq_type;

typedef struct iommulu_pci_irqs {
	iommulu_pci_irq_type type;
	unsigned vectors;
	unsigned set_up;
	bool masked;
	bool enabled_known;	/* type, vectors and masked read from config space */
} iommulu_pci_irqs;

int iommulu_pci_irqs_read(const char *bdf, iommulu_pci_irqs *ret);

/* "none", "MSI", "MSI-X"; NULL for anything else. */
const char *iommulu_pci_irq_type_to_string(iommulu_pci_irq_type type);

/* driver_override ("" or NULL clears it), bind, unbind.
 * bind: -ENOENT if no driver of that name is registered; the kernel
 * answers -EBUSY if the device already has a driver and -ENODEV if the
 * driver does not take it.  unbind of an unbound device is a no-op (0). */
int iommulu_pci_set_driver_override(const char *bdf, const char *driver);
int iommulu_pci_bind(const char *bdf, const char *driver);
int iommulu_pci_unbind(const char *bdf);

#ifdef __cplusplus
}
#endif
