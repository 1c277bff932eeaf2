/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PCI devices through sysfs ($IOMMULU_SYSFS_ROOT, default /sys). */

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

/* Read config space from sysfs "config" (what root sees). */
int iommulu_pci_config_read(const char *bdf, uint32_t offset, void *buf, size_t len);

/* driver_override ("" or NULL clears it), bind, unbind. */
int iommulu_pci_set_driver_override(const char *bdf, const char *driver);
int iommulu_pci_bind(const char *bdf, const char *driver);
int iommulu_pci_unbind(const char *bdf);

#ifdef __cplusplus
}
#endif
