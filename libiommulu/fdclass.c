/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/fdclass.h"
#include "iommulu/luo.h"
#include "memfd-internal.h"

/*
 * How each kind is recognised (nothing relies on /proc/self/fd link names
 * except the LUO session, which has no other identity):
 *   memfd / hugetlb memfd   see memfd.c: internal shm mount, HUGETLBFS_MAGIC
 *   iommufd                 char device with the st_rdev of $IOMMULU_DEV_ROOT/iommu
 *                           or, restored by the kernel after a live update (LUO
 *                           RETRIEVE_FD), an anon inode named "[iommufd]"
 *   vfio cdev               char device whose <sysfs>/dev/char/MAJ:MIN/subsystem
 *                           is "vfio-dev"
 *   LUO session             anon inode named "[luo_session] ..." (luo.c)
 */

static int chardev_is_iommu(dev_t rdev)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	r = path_printf(path, sizeof(path), "%s/iommu", root_dev());
	if (r < 0)
		return r;
	if (stat(path, &st) < 0)
		return errno == ENOENT ? 0 : negative_errno();
	return S_ISCHR(st.st_mode) && st.st_rdev == rdev;
}

static int chardev_is_vfio_cdev(dev_t rdev)
{
	char subsystem[NAME_MAX + 1];
	int r;

	r = chardev_subsystem(rdev, subsystem, sizeof(subsystem));
	if (r == -ENOENT || r == -ENOTDIR)
		return 0;
	if (r < 0)
		return r;
	return streq(subsystem, "vfio-dev");
}

_public_ int iommulu_fd_classify(int fd, iommulu_fd_kind *ret_kind)
{
	struct stat st;
	int r;

	if (fd < 0)
		return -EBADF;
	if (!ret_kind)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return negative_errno();

	if (S_ISREG(st.st_mode)) {
		memfd_kind mk;

		r = memfd_classify(fd, &mk, NULL);
		if (r < 0)
			return r;
		*ret_kind = mk == MEMFD_KIND_SHMEM	 ? IOMMULU_FD_MEMFD
			    : mk == MEMFD_KIND_HUGETLB ? IOMMULU_FD_MEMFD_HUGETLB
						       : IOMMULU_FD_OTHER;
		return 0;
	}

	if (S_ISCHR(st.st_mode)) {
		r = chardev_is_iommu(st.st_rdev);
		if (r < 0)
			return r;
		if (r > 0) {
			*ret_kind = IOMMULU_FD_IOMMUFD;
			return 0;
		}
		r = chardev_is_vfio_cdev(st.st_rdev);
		if (r < 0)
			return r;
		*ret_kind = r > 0 ? IOMMULU_FD_VFIO_CDEV : IOMMULU_FD_OTHER;
		return 0;
	}

	{
		char path[64], link[256];
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			return errno == ENOENT ? -EBADF : negative_errno();
		link[n] = '\0';
		*ret_kind = (iommulu_fd_kind)fdclass_anon_link_kind(link);
	}
	return 0;
}

int fdclass_anon_link_kind(const char *link)
{
	/* The kernel names the file; userspace cannot fake an anon inode's
	 * name.  A retrieved iommufd is not the /dev/iommu char device. */
	if (streq(link, "anon_inode:[iommufd]"))
		return IOMMULU_FD_IOMMUFD;
	if (startswith(link, "anon_inode:[luo_session] "))
		return IOMMULU_FD_LUO_SESSION;
	return IOMMULU_FD_OTHER;
}

static const char *const fd_kind_names[_IOMMULU_FD_KIND_MAX] = {
	[IOMMULU_FD_OTHER] = "other",
	[IOMMULU_FD_MEMFD] = "memfd",
	[IOMMULU_FD_MEMFD_HUGETLB] = "hugetlb-memfd",
	[IOMMULU_FD_IOMMUFD] = "iommufd",
	[IOMMULU_FD_VFIO_CDEV] = "vfio-cdev",
	[IOMMULU_FD_LUO_SESSION] = "luo-session",
};

_public_ const char *iommulu_fd_kind_to_string(iommulu_fd_kind kind)
{
	if ((unsigned)kind >= _IOMMULU_FD_KIND_MAX)
		return NULL;
	return fd_kind_names[kind];
}
