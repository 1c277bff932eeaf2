/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"
#include "iommulu/memfd.h"
#include "memfd-internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/*
 * Recognising a memfd.  The "memfd:NAME" link text cannot be trusted: a
 * memfd retrieved from a LUO session after kexec is re-created by the
 * kernel with shmem_file_setup() and reads back as "/ (deleted)".  What
 * every shmem memfd does share, before and after kexec, is the kernel's
 * internal shm mount: fstatfs() says TMPFS_MAGIC and st_dev is that of any
 * other memfd.  A file on a mounted tmpfs (/dev/shm, /tmp) has its own
 * st_dev and is therefore not a memfd.  We learn the internal mount's
 * st_dev once from a probe memfd.
 *
 * hugetlb memfds live on the kernel's internal hugetlbfs mounts
 * (HUGETLBFS_MAGIC).  A regular file on a user-mounted hugetlbfs looks
 * the same; both are equally unusable for LUO, so both count as hugetlb.
 */
static pthread_once_t shm_dev_once = PTHREAD_ONCE_INIT;
static dev_t shm_dev;
static int shm_dev_error;

static void shm_dev_probe(void)
{
	_cleanup_close_ int fd = -EBADF;
	struct stat st;

	fd = memfd_create("iommulu-probe", MFD_CLOEXEC);
	if (fd < 0) {
		shm_dev_error = negative_errno();
		return;
	}
	if (fstat(fd, &st) < 0) {
		shm_dev_error = negative_errno();
		return;
	}
	shm_dev = st.st_dev;
}

int memfd_classify(int fd, memfd_kind *ret_kind, struct stat *ret_st)
{
	struct statfs sfs;
	struct stat st;

	if (fd < 0)
		return -EBADF;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (ret_st)
		*ret_st = st;
	if (!S_ISREG(st.st_mode)) {
		*ret_kind = MEMFD_KIND_NONE;
		return 0;
	}
	if (fstatfs(fd, &sfs) < 0)
		return negative_errno();
	if ((unsigned long)sfs.f_type == (unsigned long)HUGETLBFS_MAGIC) {
		*ret_kind = MEMFD_KIND_HUGETLB;
		return 0;
	}
	if ((unsigned long)sfs.f_type != (unsigned long)TMPFS_MAGIC) {
		*ret_kind = MEMFD_KIND_NONE;
		return 0;
	}
	pthread_once(&shm_dev_once, shm_dev_probe);
	if (shm_dev_error < 0)
		return shm_dev_error;
	*ret_kind = st.st_dev == shm_dev ? MEMFD_KIND_SHMEM : MEMFD_KIND_NONE;
	return 0;
}

_public_ int iommulu_memfd_create(const char *name, uint64_t size, int *ret_fd)
{
	_cleanup_close_ int fd = -EBADF;
	long page = sysconf(_SC_PAGESIZE);

	if (!ret_fd)
		return -EINVAL;
	if (page <= 0)
		page = 4096;
	if (size == 0 || size % (uint64_t)page != 0 || size > (uint64_t)INT64_MAX)
		return -EINVAL;

	fd = memfd_create(name && name[0] ? name : "iommulu", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)size) < 0)
		return negative_errno();
	if (fcntl(fd, F_ADD_SEALS, (int)IOMMULU_MEMFD_REQUIRED_SEALS) < 0)
		return negative_errno();

	*ret_fd = TAKE_FD(fd);
	return 0;
}

_public_ int iommulu_memfd_check(int fd, uint64_t *ret_size, unsigned *ret_missing_seals,
				 iommulu_error *error)
{
	char names[128];
	struct stat st;
	memfd_kind kind;
	unsigned missing;
	int seals, r;

	r = memfd_classify(fd, &kind, &st);
	if (r == -EBADF)
		return iommulu_error_setf(error, r, "fd %d is not open", fd);
	if (r < 0)
		return iommulu_error_setf(error, r, "fd %d: cannot inspect: %s", fd, strerror(-r));
	if (kind == MEMFD_KIND_NONE)
		return iommulu_error_setf(error, -ENOTTY, "fd %d is not a memfd", fd);
	if (kind == MEMFD_KIND_HUGETLB)
		return iommulu_error_setf(error, -EOPNOTSUPP, "fd %d is a hugetlb memfd", fd);

	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0) {
		r = negative_errno();
		return iommulu_error_setf(error, r, "fd %d: F_GET_SEALS: %s", fd, strerror(-r));
	}
	missing = IOMMULU_MEMFD_REQUIRED_SEALS & ~(unsigned)seals;
	if (ret_missing_seals)
		*ret_missing_seals = missing;
	if (missing) {
		r = iommulu_memfd_seals_to_string(missing, names, sizeof(names));
		return iommulu_error_setf(error, -EPERM, "fd %d lacks %s", fd, r < 0 ? "seals" : names);
	}
	if (ret_size)
		*ret_size = (uint64_t)st.st_size;
	return 0;
}

static const struct {
	unsigned bit;
	const char *name;
} seal_names[] = {
	{ F_SEAL_SEAL, "F_SEAL_SEAL" },
	{ F_SEAL_SHRINK, "F_SEAL_SHRINK" },
	{ F_SEAL_GROW, "F_SEAL_GROW" },
	{ F_SEAL_WRITE, "F_SEAL_WRITE" },
	{ F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE" },
	{ F_SEAL_EXEC, "F_SEAL_EXEC" },
};

/* Bits are named in ascending order; unknown bits are appended as one hex
 * number; 0 is "none".  -ENOBUFS if buf is too small. */
_public_ int iommulu_memfd_seals_to_string(unsigned seals, char *buf, size_t len)
{
	size_t used = 0;
	unsigned rest = seals;

	if (!buf || len == 0)
		return -EINVAL;
	buf[0] = '\0';
	if (seals == 0)
		return path_printf(buf, len, "none") < 0 ? -ENOBUFS : 0;

	for (size_t i = 0; i < ELEMENTSOF(seal_names); i++) {
		int n;

		if (!(seals & seal_names[i].bit))
			continue;
		rest &= ~seal_names[i].bit;
		n = snprintf(buf + used, len - used, "%s%s", used ? "|" : "", seal_names[i].name);
		if (n < 0 || (size_t)n >= len - used)
			return -ENOBUFS;
		used += (size_t)n;
	}
	if (rest) {
		int n = snprintf(buf + used, len - used, "%s0x%x", used ? "|" : "", rest);

		if (n < 0 || (size_t)n >= len - used)
			return -ENOBUFS;
	}
	return 0;
}
