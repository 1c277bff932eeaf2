/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PCI devices through sysfs.
 *
 * Everything is read from $IOMMULU_SYSFS_ROOT (default /sys) so the unit
 * tests can build a fake tree of files and symlinks.  The error mapping is
 * documented in include/iommulu/pci.h: the BDF is checked first (-EINVAL),
 * then the device directory (-ENODEV), then the attribute itself.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/pci.h"
#include "pci-internal.h"

int pci_device_path(const char *bdf, const char *suffix, char *buf, size_t len)
{
	struct stat st;
	int r;

	if (!iommulu_bdf_is_valid(bdf))
		return -EINVAL;
	r = path_printf(buf, len, "%s/bus/pci/devices/%s", root_sysfs(), bdf);
	if (r < 0)
		return r;
	/* stat() follows the bus/pci/devices/BDF -> ../../../devices/... link. */
	if (stat(buf, &st) < 0)
		return errno == ENOENT ? -ENODEV : negative_errno();
	if (!S_ISDIR(st.st_mode))
		return -ENODEV;
	if (!suffix)
		return 0;
	return path_printf(buf, len, "%s/bus/pci/devices/%s/%s", root_sysfs(), bdf, suffix);
}

int link_basename(const char *path, char *buf, size_t len)
{
	char target[PATH_MAX];
	const char *base;
	ssize_t n;

	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return negative_errno();
	target[n] = '\0';
	/* Tolerate a trailing slash, which sysfs never writes but a
	 * hand-made test tree might. */
	while (n > 1 && target[n - 1] == '/')
		target[--n] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	if (!base[0])
		return -EBADMSG;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, base);
	return 0;
}

/* A driver name becomes a path component under bus/pci/drivers/ and is
 * written verbatim to driver_override: refuse anything that could escape
 * the directory or that the kernel would cut at whitespace. */
static bool driver_name_is_valid(const char *driver)
{
	size_t n;

	if (!driver)
		return false;
	n = strnlen(driver, IOMMULU_DRIVER_NAME_MAX);
	if (n == 0 || n >= IOMMULU_DRIVER_NAME_MAX)
		return false;
	if (streq(driver, ".") || streq(driver, ".."))
		return false;
	for (const char *p = driver; *p; p++)
		if (*p == '/' || *p <= ' ' || *p == 0x7f)
			return false;
	return true;
}

/* One write(2) of the whole value, as sysfs attributes expect. */
static int write_attr(const char *path, const char *value)
{
	_cleanup_close_ int fd = -EBADF;
	size_t len = strlen(value);
	ssize_t n;

	fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_TRUNC);
	if (fd < 0)
		return negative_errno();
	do
		n = write(fd, value, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	if ((size_t)n != len)
		return -EIO;
	return 0;
}

_public_ int iommulu_pci_driver(const char *bdf, char *buf, size_t len)
{
	char path[PATH_MAX];
	int r;

	if (!buf || len == 0)
		return -EINVAL;
	r = pci_device_path(bdf, "driver", path, sizeof(path));
	if (r < 0)
		return r;
	r = link_basename(path, buf, len);
	if (r == -ENOENT) {
		buf[0] = '\0';
		return 0;
	}
	return r;
}

_public_ int iommulu_pci_iommu_group(const char *bdf, int *ret_group)
{
	char path[PATH_MAX], name[32];
	unsigned long group;
	char *end;
	int r;

	if (!ret_group)
		return -EINVAL;
	r = pci_device_path(bdf, "iommu_group", path, sizeof(path));
	if (r < 0)
		return r;
	r = link_basename(path, name, sizeof(name));
	if (r == -ENAMETOOLONG)
		return -EBADMSG;
	if (r < 0)
		return r;
	if (name[0] < '0' || name[0] > '9')
		return -EBADMSG;
	errno = 0;
	group = strtoul(name, &end, 10);
	if (errno != 0 || *end != '\0' || group > INT_MAX)
		return -EBADMSG;
	*ret_group = (int)group;
	return 0;
}

_public_ const char *iommulu_pci_irq_type_to_string(iommulu_pci_irq_type type)
{
	switch (type) {
	case IOMMULU_PCI_IRQ_NONE:
		return "none";
	case IOMMULU_PCI_IRQ_MSI:
		return "MSI";
	case IOMMULU_PCI_IRQ_MSIX:
		return "MSI-X";
	}
	return NULL;
}

/* Entries of the device's msi_irqs/ directory: the vectors set up, and
 * whether the first says "msix". */
static int count_msi_irqs(const char *bdf, unsigned *ret, bool *ret_msix)
{
	char path[PATH_MAX], entry[PATH_MAX + 16];
	struct dirent *de;
	unsigned n = 0;
	DIR *d;
	int r;

	r = pci_device_path(bdf, "msi_irqs", path, sizeof(path));
	if (r < 0)
		return r;
	d = opendir(path);
	if (!d) {
		if (errno != ENOENT)
			return negative_errno();
		*ret = 0;
		return 0;
	}
	while ((de = readdir(d))) {
		_cleanup_free_ char *mode = NULL;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		if (n++ == 0 && snprintf(entry, sizeof(entry), "%s/%s", path, de->d_name) <
					(int)sizeof(entry) &&
		    read_small_file(entry, 16, &mode) >= 0)
			*ret_msix = strcmp(mode, "msix") == 0;
	}
	closedir(d);
	*ret = n;
	return 0;
}

#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_MSI 0x05
#define PCI_CAP_ID_MSIX 0x11

_public_ int iommulu_pci_irqs_read(const char *bdf, iommulu_pci_irqs *ret)
{
	iommulu_pci_irqs irqs = {};
	uint8_t cfg[256];
	unsigned pos, hops = 0;
	bool msix = false;
	int r;

	if (!ret)
		return -EINVAL;
	r = iommulu_pci_config_read(bdf, 0, cfg, sizeof(cfg));
	if (r < 0 && r != -ERANGE)
		return r;
	irqs.enabled_known = r >= 0;
	if (irqs.enabled_known && (cfg[0x06] & PCI_STATUS_CAP_LIST)) {
		for (pos = cfg[0x34] & ~3u; pos; pos = cfg[pos + 1] & ~3u) {
			uint16_t ctrl;

			if (pos < 0x40 || pos > sizeof(cfg) - 4 || ++hops > 48)
				return -EBADMSG;
			ctrl = (uint16_t)(cfg[pos + 2] | cfg[pos + 3] << 8);
			if (cfg[pos] == PCI_CAP_ID_MSI && (ctrl & 0x0001)) {
				irqs.type = IOMMULU_PCI_IRQ_MSI;
				irqs.vectors = 1u << ((ctrl >> 4) & 7);
			} else if (cfg[pos] == PCI_CAP_ID_MSIX && (ctrl & 0x8000)) {
				irqs.type = IOMMULU_PCI_IRQ_MSIX;
				irqs.vectors = (ctrl & 0x7ff) + 1u;
				irqs.masked = ctrl & 0x4000;
			}
		}
	}
	r = count_msi_irqs(bdf, &irqs.set_up, &msix);
	if (r < 0)
		return r;
	if (!irqs.enabled_known && irqs.set_up)
		irqs.type = msix ? IOMMULU_PCI_IRQ_MSIX : IOMMULU_PCI_IRQ_MSI;
	*ret = irqs;
	return 0;
}

_public_ int iommulu_pci_sriov(const char *bdf, bool *ret_is_pf, bool *ret_is_vf)
{
	_cleanup_free_ char *totalvfs = NULL;
	char path[PATH_MAX];
	bool is_pf = false, is_vf = false;
	struct stat st;
	int r;

	if (!ret_is_pf && !ret_is_vf)
		return -EINVAL;

	r = pci_device_path(bdf, "sriov_totalvfs", path, sizeof(path));
	if (r < 0)
		return r;
	r = read_small_file(path, 32, &totalvfs);
	if (r >= 0) {
		unsigned long n;
		char *end;

		if (totalvfs[0] < '0' || totalvfs[0] > '9')
			return -EBADMSG;
		errno = 0;
		n = strtoul(totalvfs, &end, 10);
		if (errno != 0 || *end != '\0')
			return -EBADMSG;
		is_pf = n > 0;
	} else if (r != -ENOENT) {
		return r;
	}

	r = pci_device_path(bdf, "physfn", path, sizeof(path));
	if (r < 0)
		return r;
	if (lstat(path, &st) >= 0)
		is_vf = true;
	else if (errno != ENOENT)
		return negative_errno();

	if (ret_is_pf)
		*ret_is_pf = is_pf;
	if (ret_is_vf)
		*ret_is_vf = is_vf;
	return 0;
}

_public_ int iommulu_pci_config_read(const char *bdf, uint32_t offset, void *buf, size_t len)
{
	_cleanup_close_ int fd = -EBADF;
	char path[PATH_MAX];
	size_t done = 0;
	int r;

	if (!buf && len > 0)
		return -EINVAL;
	if (len > UINT32_MAX || (uint64_t)offset + len > UINT32_MAX)
		return -ERANGE;
	r = pci_device_path(bdf, "config", path, sizeof(path));
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)offset + (off_t)done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -ERANGE;	/* past the end of what sysfs exposes */
		done += (size_t)n;
	}
	return 0;
}

_public_ int iommulu_pci_set_driver_override(const char *bdf, const char *driver)
{
	char path[PATH_MAX];
	int r;

	if (driver && driver[0] && !driver_name_is_valid(driver))
		return -EINVAL;
	r = pci_device_path(bdf, "driver_override", path, sizeof(path));
	if (r < 0)
		return r;
	/* The kernel strips one trailing newline; an empty value (here "\n",
	 * since a zero-length write never reaches the store method) clears
	 * the override. */
	return write_attr(path, driver && driver[0] ? driver : "\n");
}

_public_ int iommulu_pci_bind(const char *bdf, const char *driver)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	if (!driver_name_is_valid(driver))
		return -EINVAL;
	r = pci_device_path(bdf, NULL, path, sizeof(path));
	if (r < 0)
		return r;
	r = path_printf(path, sizeof(path), "%s/bus/pci/drivers/%s", root_sysfs(), driver);
	if (r < 0)
		return r;
	if (stat(path, &st) < 0)
		return negative_errno();	/* -ENOENT: no such driver registered */
	r = path_printf(path, sizeof(path), "%s/bus/pci/drivers/%s/bind", root_sysfs(), driver);
	if (r < 0)
		return r;
	return write_attr(path, bdf);
}

_public_ int iommulu_pci_unbind(const char *bdf)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	r = pci_device_path(bdf, "driver", path, sizeof(path));
	if (r < 0)
		return r;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : negative_errno();	/* already unbound */
	r = pci_device_path(bdf, "driver/unbind", path, sizeof(path));
	if (r < 0)
		return r;
	return write_attr(path, bdf);
}
