/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"
#include "iommulu/common.h"

int iommulu_error_setf(iommulu_error *error, int r, const char *fmt, ...)
{
	if (error) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(error->message, sizeof(error->message), fmt, ap);
		va_end(ap);
	}
	return r;
}

static const char *root_from_env(const char *var, const char *def)
{
	const char *e = secure_getenv(var);

	return e && e[0] ? e : def;
}

const char *root_sysfs(void)
{
	return root_from_env("IOMMULU_SYSFS_ROOT", "/sys");
}

const char *root_dev(void)
{
	return root_from_env("IOMMULU_DEV_ROOT", "/dev");
}

int path_printf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

int fd_chardev(int fd, dev_t *ret_rdev)
{
	struct stat st;

	if (fd < 0)
		return -EBADF;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISCHR(st.st_mode))
		return -ENOTTY;
	if (ret_rdev)
		*ret_rdev = st.st_rdev;
	return 0;
}

int chardev_sysfs_path(dev_t rdev, const char *suffix, char *buf, size_t len)
{
	return path_printf(buf, len, "%s/dev/char/%u:%u%s%s", root_sysfs(), major(rdev),
			   minor(rdev), suffix ? "/" : "", strempty(suffix));
}

int chardev_subsystem(dev_t rdev, char *buf, size_t len)
{
	char path[PATH_MAX], link[PATH_MAX];
	const char *base;
	ssize_t n;
	int r;

	r = chardev_sysfs_path(rdev, "subsystem", path, sizeof(path));
	if (r < 0)
		return r;
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return negative_errno();
	link[n] = '\0';
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	if (!base[0])
		return -EINVAL;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, base);
	return 0;
}

int read_small_file(const char *path, size_t max, char **ret)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ char *buf = NULL;
	size_t have = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (have == max)
			return -EFBIG;
		n = read(fd, buf + have, max - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	if (have > 0 && buf[have - 1] == '\n')
		have--;
	buf[have] = '\0';
	*ret = TAKE_PTR(buf);
	return 0;
}

_public_ bool iommulu_vm_name_is_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;

		if (n >= IOMMULU_VM_NAME_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	/* Names end up in paths, unit names and command lines: "." and ".."
	 * are path components, a leading '-' reads as an option. */
	if (n == 0 || name[0] == '-' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	return true;
}

static int lhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* DDDD:BB:DD.F with a 4- or 5-digit domain, lower-case hex, device <= 0x1f,
 * function <= 7: exactly what the kernel's pci_name() produces. */
_public_ bool iommulu_bdf_is_valid(const char *bdf)
{
	size_t len, dom;
	const char *p;

	if (!bdf)
		return false;
	len = strnlen(bdf, IOMMULU_BDF_MAX);
	if (len >= IOMMULU_BDF_MAX || len < 12)
		return false;
	dom = len - 8;	/* ":BB:DD.F" */
	if (dom < 4 || dom > 5)
		return false;
	for (size_t i = 0; i < dom; i++)
		if (lhex(bdf[i]) < 0)
			return false;
	p = bdf + dom;
	if (p[0] != ':' || lhex(p[1]) < 0 || lhex(p[2]) < 0 || p[3] != ':' || lhex(p[4]) < 0 ||
	    lhex(p[5]) < 0 || p[6] != '.' || p[7] < '0' || p[7] > '7')
		return false;
	if (lhex(p[4]) * 16 + lhex(p[5]) > 0x1f)
		return false;
	return true;
}

_public_ const char *iommulu_version(void)
{
	return PACKAGE_VERSION;
}
