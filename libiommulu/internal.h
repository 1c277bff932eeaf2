/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * libiommulu-internal helpers (not exported; hidden by -fvisibility=hidden).
 * Implemented in common.c.  Shared by all modules:
 *
 *  - iommulu_error_setf(): fill an optional iommulu_error and return r, so
 *    a module can `return iommulu_error_setf(error, -EPERM, "...")`.
 *  - root_sysfs()/root_dev(): $IOMMULU_SYSFS_ROOT / $IOMMULU_DEV_ROOT or
 *    "/sys" / "/dev", read on every call so tests may change them.
 *  - chardev_*(): the char-device <-> sysfs lookup used by fdclass.c to
 *    recognise vfio cdevs (subsystem "vfio-dev") and, for helper L2's
 *    vfio.c, to go from a vfio cdev fd to its PCI device:
 *        fd --fstat--> st_rdev --> <sysfs>/dev/char/MAJ:MIN
 *           --realpath--> .../0000:00:03.0/vfio-dev/vfio0
 *    chardev_sysfs_path() builds that path, chardev_subsystem() names the
 *    class, fd_chardev() checks an fd is a char device and returns st_rdev.
 */

#include <stdarg.h>
#include <sys/types.h>

#include "iommulu/common.h"
#include "util.h"

_printf_(3, 4) int iommulu_error_setf(iommulu_error *error, int r, const char *fmt, ...);

const char *root_sysfs(void);
const char *root_dev(void);

/* Kind of an anon-inode file from its /proc/self/fd link: an iommufd the
 * kernel restored after a live update ("anon_inode:[iommufd]"), a LUO
 * session, or IOMMULU_FD_OTHER. */
int fdclass_anon_link_kind(const char *link);

/* fd must be an open char device: 0 and its st_rdev; -ENOTTY if it is
 * something else; -EBADF etc. from fstat. */
int fd_chardev(int fd, dev_t *ret_rdev);

/* "<sysfs>/dev/char/MAJ:MIN" (+ "/" suffix if suffix is non-NULL).
 * -ENAMETOOLONG if it does not fit. */
int chardev_sysfs_path(dev_t rdev, const char *suffix, char *buf, size_t len);

/* Basename of the <sysfs>/dev/char/MAJ:MIN/subsystem link, e.g.
 * "vfio-dev", "misc", "iommu".  -ENOENT if the device is unknown to sysfs. */
int chardev_subsystem(dev_t rdev, char *buf, size_t len);

/* Read a small sysfs-style file (at most max bytes), strip one trailing
 * newline; *ret is malloc()ed. */
int read_small_file(const char *path, size_t max, char **ret);

/* Concatenate a path with snprintf semantics; -ENAMETOOLONG on overflow. */
_printf_(3, 4) int path_printf(char *buf, size_t len, const char *fmt, ...);
