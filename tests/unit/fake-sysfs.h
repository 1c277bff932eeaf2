/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Fake /sys and /dev trees for unit tests (header-only).
 *
 * Real char devices with harmless semantics (/dev/null 1:3, /dev/zero 1:5,
 * /dev/full 1:7, /dev/urandom 1:9) stand in for vfio cdevs and /dev/iommu:
 * the library only looks at their st_rdev and at the sysfs tree, which we
 * fake under a temporary root and point $IOMMULU_SYSFS_ROOT and
 * $IOMMULU_DEV_ROOT at.  Layout, as on a real machine:
 *
 *   <root>/sys/devices/pci0000:00/BDF/            device directory
 *        .../BDF/driver -> ../../../bus/pci/drivers/DRIVER
 *        .../BDF/sriov_totalvfs, .../BDF/physfn   (SR-IOV, optional)
 *        .../BDF/vfio-dev/vfioN/{subsystem,device}
 *   <root>/sys/bus/pci/devices/BDF -> ../../../devices/pci0000:00/BDF
 *   <root>/sys/dev/char/MAJ:MIN -> ../../devices/pci0000:00/BDF/vfio-dev/vfioN
 *   <root>/dev/iommu -> /dev/null   (st_rdev of the "iommufd")
 *
 * Any failure to build the tree aborts the test: it is a test bug.
 */

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static inline void fake_die(const char *what, const char *path)
{
	fprintf(stderr, "fake-sysfs: %s %s: %s\n", what, path, strerror(errno));
	abort();
}

static inline __attribute__((format(printf, 3, 0))) void fake_path(char *buf, const char *root,
								     const char *fmt, va_list ap)
{
	char rel[PATH_MAX / 2];
	int n;

	n = vsnprintf(rel, sizeof(rel), fmt, ap);
	if (n < 0 || (size_t)n >= sizeof(rel))
		abort();
	n = snprintf(buf, PATH_MAX, "%s/%s", root, rel);
	if (n < 0 || n >= PATH_MAX)
		abort();
}

/* mkdir -p <root>/<rel> */
static inline __attribute__((format(printf, 2, 3))) void fake_mkdir(const char *root,
								  const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	fake_path(path, root, fmt, ap);
	va_end(ap);
	for (char *p = path + strlen(root) + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				fake_die("mkdir", path);
			*p = '/';
		}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		fake_die("mkdir", path);
}

/* <root>/<rel> -> target (replacing an old link) */
static inline __attribute__((format(printf, 3, 4))) void fake_symlink(const char *root,
								    const char *target,
								    const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	fake_path(path, root, fmt, ap);
	va_end(ap);
	(void)unlink(path);
	if (symlink(target, path) < 0)
		fake_die("symlink", path);
}

static inline __attribute__((format(printf, 3, 4))) void fake_write(const char *root,
								  const char *content,
								  const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	fake_path(path, root, fmt, ap);
	va_end(ap);
	f = fopen(path, "we");
	if (!f)
		fake_die("fopen", path);
	fputs(content, f);
	fclose(f);
}

/* A fresh temporary root with sys/ and dev/, exported through the
 * environment.  Returns a malloc()ed path for fake_root_free(). */
static inline char *fake_root_new(void)
{
	char tmpl[] = "/tmp/iommulu-fake-XXXXXX", path[PATH_MAX];
	char *root;

	root = mkdtemp(tmpl);
	if (!root)
		fake_die("mkdtemp", tmpl);
	root = strdup(root);
	if (!root)
		abort();
	fake_mkdir(root, "sys/dev/char");
	fake_mkdir(root, "sys/bus/pci/devices");
	fake_mkdir(root, "sys/bus/pci/drivers/vfio-pci");
	fake_mkdir(root, "dev");
	snprintf(path, sizeof(path), "%s/sys", root);
	setenv("IOMMULU_SYSFS_ROOT", path, 1);
	snprintf(path, sizeof(path), "%s/dev", root);
	setenv("IOMMULU_DEV_ROOT", path, 1);
	return root;
}

static inline int fake_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

static inline void fake_root_free(char *root)
{
	if (!root)
		return;
	unsetenv("IOMMULU_SYSFS_ROOT");
	unsetenv("IOMMULU_DEV_ROOT");
	if (nftw(root, fake_rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		fake_die("nftw", root);
	free(root);
}

/* <root>/dev/iommu -> chardev (e.g. "/dev/null"). */
static inline void fake_iommu(const char *root, const char *chardev)
{
	fake_symlink(root, chardev, "dev/iommu");
}

static inline dev_t fake_rdev(const char *chardev)
{
	struct stat st;

	if (stat(chardev, &st) < 0)
		fake_die("stat", chardev);
	return st.st_rdev;
}

/* A PCI device bdf whose vfio cdev (vfio<n>) has the st_rdev of chardev.
 * driver: NULL for unbound; totalvfs: < 0 for no SR-IOV capability;
 * is_vf: add a physfn link.  subsystem: normally "vfio-dev". */
static inline void fake_pci_device(const char *root, const char *chardev, int n, const char *bdf,
				   const char *driver, int totalvfs, bool is_vf,
				   const char *subsystem)
{
	dev_t rdev = fake_rdev(chardev);
	char target[PATH_MAX], num[32];

	fake_mkdir(root, "sys/devices/pci0000:00/%s/vfio-dev/vfio%d", bdf, n);
	snprintf(target, sizeof(target), "../../../devices/pci0000:00/%s", bdf);
	fake_symlink(root, target, "sys/bus/pci/devices/%s", bdf);
	if (driver) {
		fake_mkdir(root, "sys/bus/pci/drivers/%s", driver);
		snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s", driver);
		fake_symlink(root, target, "sys/devices/pci0000:00/%s/driver", bdf);
	}
	if (totalvfs >= 0) {
		snprintf(num, sizeof(num), "%d\n", totalvfs);
		fake_write(root, num, "sys/devices/pci0000:00/%s/sriov_totalvfs", bdf);
	}
	if (is_vf)
		fake_symlink(root, "../0000:00:01.0", "sys/devices/pci0000:00/%s/physfn", bdf);
	snprintf(target, sizeof(target), "../../../../class/%s", subsystem);
	fake_symlink(root, target, "sys/devices/pci0000:00/%s/vfio-dev/vfio%d/subsystem", bdf, n);
	snprintf(target, sizeof(target), "../../../%s", bdf);
	fake_symlink(root, target, "sys/devices/pci0000:00/%s/vfio-dev/vfio%d/device", bdf, n);
	snprintf(target, sizeof(target), "../../devices/pci0000:00/%s/vfio-dev/vfio%d", bdf, n);
	fake_symlink(root, target, "sys/dev/char/%u:%u", major(rdev), minor(rdev));
}
