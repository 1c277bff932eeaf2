/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PCI sysfs lookups shared by pci.c and vfio.c (implemented in pci.c). */

#include <stddef.h>

/*
 * "<sysfs>/bus/pci/devices/BDF" or, with a suffix, ".../BDF/suffix".
 * -EINVAL if bdf is not a canonical PCI address, -ENODEV if no such
 * device exists in sysfs, -ENAMETOOLONG if the path does not fit.
 */
int pci_device_path(const char *bdf, const char *suffix, char *buf, size_t len);

/* Basename of the symlink target at path, e.g. ".../drivers/vfio-pci"
 * gives "vfio-pci".  readlink()'s errno (-ENOENT: no link), -EBADMSG for
 * an empty target, -ENAMETOOLONG if buf is too small. */
int link_basename(const char *path, char *buf, size_t len);
