/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hwpt-refusals: the kernel series part 2 negative cases, before any kexec.
 *
 *   hwpt-refusals --device BDF
 *
 * The device must be bound to vfio-pci. One iommufd, one IOAS, one paging
 * HWPT with the device attached, the HWPT marked for preservation. Then:
 *   anon       an IOMMU_IOAS_MAP (anonymous memory) range: preserving the
 *              iommufd fails with EOPNOTSUPP
 *   unsealed   a memfd lacking F_SEAL_SHRINK|F_SEAL_SEAL, preserved in the
 *              session: EPERM
 *   not-in-session  a fully sealed memfd not preserved in the session: ENOLINK
 *   hole-punched  a sealed memfd with a hole punched after it was mapped
 *              (the seals allow it), preserved: the IOMMU maps a page the
 *              memfd no longer holds, so preserving the iommufd fails with
 *              ESTALE; mapped again, it can be preserved
 *   resized    a memfd shrunk and regrown after it was mapped, then
 *              sealed and preserved: ESTALE
 * Guest RAM in these cases carries a pattern: a refusal must leave every byte
 * the memfd still holds as it was (the punched page reads back as zeros).
 *   same-mark-again  marking the HWPT again with its own token: 0 (a no-op)
 *   dup-token  a mark of another HWPT with a token already used: EADDRINUSE
 *   unmark-while-preserved  IOMMU_HWPT_LIVEUPDATE_UNMARK while the iommufd
 *              is preserved: EBUSY
 *   unmark, unmark-again, token-free  unmarking works, twice is a no-op,
 *              and the token can then mark another HWPT
 *   device-unmarked-hwpt, device-unattached  with its iommufd preserved in
 *              the session, the vfio cdev of a device on an unmarked HWPT
 *              or on none: EOPNOTSUPP (its translation would be dropped)
 *   device-marked-hwpt  the device on the marked HWPT: preserved
 * After each refusal nothing may stay half preserved: the IOAS can still be
 * unmapped (it is not frozen), and the same iommufd can be preserved in a
 * fresh session once the mapping is valid (it is not left in the first one).
 * Prints one "CASE name: ok|FAIL ..." line per case and exits 1 on any FAIL.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <iommulu/iommufd.h>
#include <iommulu/luo.h>
#include <iommulu/uapi.h>
#include <iommulu/vfio.h>

/* Debian 12's headers predate iommufd; iommulu/uapi.h covers the rest. */
#ifndef IOMMU_IOAS_MAP
#define IOMMU_IOAS_MAP_FIXED_IOVA	(1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE	(1 << 1)
#define IOMMU_IOAS_MAP_READABLE		(1 << 2)
struct iommu_ioas_map {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
struct iommu_ioas_unmap {
	__u32 size;
	__u32 ioas_id;
	__aligned_u64 iova;
	__aligned_u64 length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#endif

#define LEN	(1u << 20)
#define IOVA	0x1000000ull
#define SEALS	(F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK)

static int failures;

static void result(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void result(const char *name, int ok, const char *fmt, ...)
{
	va_list ap;

	printf("CASE %s: %s", name, ok ? "ok" : "FAIL ");
	if (!ok) {
		failures++;
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	printf("\n");
}

static int ioas_unmap(int iommufd, uint32_t ioas, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = len,
	};

	return ioctl(iommufd, IOMMU_IOAS_UNMAP, &u) ? -errno : 0;
}

static int ioas_map_anon(int iommufd, uint32_t ioas, void *va)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas, .user_va = (uintptr_t)va, .length = LEN, .iova = IOVA,
	};

	return ioctl(iommufd, IOMMU_IOAS_MAP, &m) ? -errno : 0;
}

static int map_memfd(int iommufd, uint32_t ioas, int memfd)
{
	uint64_t iova = IOVA;

	return iommulu_iommufd_ioas_map_file(iommufd, ioas, memfd, 0, LEN,
					     IOMMULU_MAP_FIXED_IOVA | IOMMULU_MAP_READABLE |
					     IOMMULU_MAP_WRITEABLE, &iova);
}

static int new_session(const char *name)
{
	int luo, s, r;

	luo = iommulu_luo_open(5000);
	if (luo < 0)
		return luo;
	r = iommulu_luo_session_create(luo, name, &s);
	close(luo);
	return r < 0 ? r : s;
}

static int memfd_with(unsigned seals)
{
	int fd;

	fd = memfd_create("hwpt-refusals", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, LEN) < 0)
		return -errno;
	if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)
		return -errno;
	return fd;
}

static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)(i * 31 + (i >> 12) + 0x5a);
}

/* A sealed memfd of LEN bytes, filled with the pattern. */
static int memfd_with_pattern(unsigned seals)
{
	uint8_t buf[4096];
	int fd = memfd_with(0);
	size_t i, off;

	if (fd < 0)
		return fd;
	for (off = 0; off < LEN; off += sizeof(buf)) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = pattern_byte(off + i);
		if (pwrite(fd, buf, sizeof(buf), (off_t)off) != (ssize_t)sizeof(buf))
			return -errno;
	}
	if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)
		return -errno;
	return fd;
}

/*
 * Every byte of the memfd is the pattern, except [hole, hole + hole_len),
 * which reads as zeros.  Returns the first bad offset, or -1.
 */
static long pattern_check(int fd, size_t hole, size_t hole_len)
{
	uint8_t buf[4096];
	size_t i, off;

	for (off = 0; off < LEN; off += sizeof(buf)) {
		if (pread(fd, buf, sizeof(buf), (off_t)off) != (ssize_t)sizeof(buf))
			return (long)off;
		for (i = 0; i < sizeof(buf); i++) {
			size_t at = off + i;
			uint8_t want = at >= hole && at < hole + hole_len ? 0 : pattern_byte(at);

			if (buf[i] != want)
				return (long)at;
		}
	}
	return -1;
}

/* The refusal left nothing behind: IOAS mutable, iommufd preservable. */
static void check_clean(const char *name, int iommufd, uint32_t ioas)
{
	int r = ioas_unmap(iommufd, ioas, IOVA, LEN);

	result(name, r == 0, "IOAS still frozen after the refusal: unmap %s",
	       strerror(-r));
}

/*
 * In a fresh session named after the case: preserve the iommufd, then the
 * device's vfio cdev, which must give want.  Closing the session undoes it.
 */
static void device_case(const char *name, int iommufd, int dev, int want)
{
	int s = new_session(name), r;

	r = s < 0 ? s : iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	if (!r)
		r = iommulu_luo_session_preserve_fd(s, dev, 0x2000);
	result(name, r == want, "preserve iommufd + vfio cdev: got %s", strerror(-r));
	if (s >= 0)
		close(s);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' }, {}
	};
	const char *bdf = NULL;
	uint32_t dev_id, ioas, hwpt, hwpt2;
	int c, r, iommufd, dev, s, fd;
	void *anon;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'd')
			goto usage;
		bdf = optarg;
	}
	if (!bdf || optind != argc)
		goto usage;

	if (iommulu_vfio_cdev_open(bdf, &dev) < 0 ||
	    iommulu_iommufd_open(&iommufd) < 0 ||
	    iommulu_vfio_bind_iommufd(dev, iommufd, &dev_id) < 0 ||
	    iommulu_iommufd_ioas_alloc(iommufd, &ioas) < 0 ||
	    iommulu_iommufd_hwpt_alloc(iommufd, dev_id, ioas, 0, &hwpt) < 0 ||
	    iommulu_iommufd_hwpt_alloc(iommufd, dev_id, ioas, 0, &hwpt2) < 0 ||
	    iommulu_vfio_attach_pt(dev, hwpt) < 0) {
		printf("IOMMULU-FAIL: setting up iommufd, IOAS, HWPT for %s\n", bdf);
		return 1;
	}

	/* dup-token */
	r = iommulu_iommufd_hwpt_mark_preserve(iommufd, hwpt, 1);
	result("mark", r == 0, "first mark: %s", strerror(-r));
	r = iommulu_iommufd_hwpt_mark_preserve(iommufd, hwpt, 1);
	result("same-mark-again", r == 0, "a second identical mark: %s", strerror(-r));
	r = iommulu_iommufd_hwpt_mark_preserve(iommufd, hwpt2, 1);
	result("dup-token", r == -EADDRINUSE, "got %s", strerror(-r));

	/* anon */
	s = new_session("hwpt-refusals-anon");
	anon = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = anon == MAP_FAILED ? -errno : ioas_map_anon(iommufd, ioas, anon);
	if (s < 0 || r < 0) {
		printf("IOMMULU-FAIL: anon setup: session %d map %d\n", s, r);
		return 1;
	}
	r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("anon", r == -EOPNOTSUPP, "preserve iommufd: got %s", strerror(-r));
	close(s);
	check_clean("anon-clean", iommufd, ioas);

	/* unsealed */
	s = new_session("hwpt-refusals-unsealed");
	fd = memfd_with(F_SEAL_GROW);
	if (s < 0 || fd < 0 || iommulu_luo_session_preserve_fd(s, fd, 0x100) < 0 ||
	    map_memfd(iommufd, ioas, fd) < 0) {
		printf("IOMMULU-FAIL: unsealed setup\n");
		return 1;
	}
	r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("unsealed", r == -EPERM, "preserve iommufd: got %s", strerror(-r));
	close(s);
	check_clean("unsealed-clean", iommufd, ioas);
	close(fd);

	/* not-in-session */
	s = new_session("hwpt-refusals-loose");
	fd = memfd_with(SEALS);
	if (s < 0 || fd < 0 || map_memfd(iommufd, ioas, fd) < 0) {
		printf("IOMMULU-FAIL: not-in-session setup\n");
		return 1;
	}
	r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("not-in-session", r == -ENOLINK, "preserve iommufd: got %s", strerror(-r));

	/* Positive control in the same session: preserve the memfd first. */
	r = iommulu_luo_session_preserve_fd(s, fd, 0x100);
	if (!r)
		r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("valid-after-refusals", r == 0, "preserve memfd+iommufd: %s", strerror(-r));
	r = ioas_unmap(iommufd, ioas, IOVA, LEN);
	result("frozen-while-preserved", r == -EBUSY, "unmap got %s", strerror(-r));
	r = iommulu_iommufd_hwpt_unmark_preserve(iommufd, hwpt, 1);
	result("unmark-while-preserved", r == -EBUSY, "unmark got %s", strerror(-r));
	close(s);
	check_clean("abort-clean", iommufd, ioas);
	close(fd);

	/* hole-punched: the seals allow a hole; the IOMMU keeps the old page */
	s = new_session("hwpt-refusals-hole");
	fd = memfd_with_pattern(SEALS);
	if (s < 0 || fd < 0 || map_memfd(iommufd, ioas, fd) < 0 ||
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, LEN / 2, 4096) < 0 ||
	    iommulu_luo_session_preserve_fd(s, fd, 0x100) < 0) {
		printf("IOMMULU-FAIL: hole-punched setup: %s\n", strerror(errno));
		return 1;
	}
	r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("hole-punched", r == -ESTALE, "preserve iommufd: got %s", strerror(-r));
	result("hole-punched-pattern", pattern_check(fd, LEN / 2, 4096) < 0,
	       "guest RAM changed at byte %ld", pattern_check(fd, LEN / 2, 4096));
	close(s);
	check_clean("hole-punched-clean", iommufd, ioas);
	/* Mapped again, the IOMMU maps the memfd's own pages: preservable. */
	s = new_session("hwpt-refusals-hole-remapped");
	r = s < 0 ? s : map_memfd(iommufd, ioas, fd);
	if (!r)
		r = iommulu_luo_session_preserve_fd(s, fd, 0x100);
	if (!r)
		r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("hole-remapped", r == 0, "preserve memfd+iommufd: %s", strerror(-r));
	close(s);
	check_clean("hole-remapped-clean", iommufd, ioas);
	close(fd);

	/* resized: shrunk and regrown after the map, sealed only then */
	s = new_session("hwpt-refusals-resized");
	fd = memfd_with_pattern(0);
	if (s < 0 || fd < 0 || map_memfd(iommufd, ioas, fd) < 0 ||
	    ftruncate(fd, LEN / 2) < 0 || ftruncate(fd, LEN) < 0 ||
	    fcntl(fd, F_ADD_SEALS, SEALS) < 0 ||
	    iommulu_luo_session_preserve_fd(s, fd, 0x100) < 0) {
		printf("IOMMULU-FAIL: resized setup: %s\n", strerror(errno));
		return 1;
	}
	r = iommulu_luo_session_preserve_fd(s, iommufd, 0x1000);
	result("resized", r == -ESTALE, "preserve iommufd: got %s", strerror(-r));
	result("resized-pattern", pattern_check(fd, LEN / 2, LEN / 2) < 0,
	       "guest RAM changed at byte %ld", pattern_check(fd, LEN / 2, LEN / 2));
	close(s);
	check_clean("resized-clean", iommufd, ioas);
	close(fd);

	/* unmark: the mark goes, twice is a no-op, its token is free again */
	r = iommulu_iommufd_hwpt_unmark_preserve(iommufd, hwpt, 1);
	result("unmark", r == 0, "unmark: %s", strerror(-r));
	r = iommulu_iommufd_hwpt_unmark_preserve(iommufd, hwpt, 1);
	result("unmark-again", r == 0, "a second unmark: %s", strerror(-r));
	r = iommulu_iommufd_hwpt_mark_preserve(iommufd, hwpt2, 1);
	result("token-free", r == 0, "marking another HWPT with the freed token: %s", strerror(-r));

	/*
	 * The device's own translation: with its iommufd preserved in the same
	 * session, a device on an unmarked HWPT or on none would lose it at the
	 * kexec, so preserving its cdev is refused; on the marked HWPT it works.
	 * (hwpt2 is the marked one now, the device is on hwpt.)
	 */
	device_case("device-unmarked-hwpt", iommufd, dev, -EOPNOTSUPP);
	r = iommulu_vfio_detach_pt(dev);
	result("detach", r == 0, "detach: %s", strerror(-r));
	device_case("device-unattached", iommufd, dev, -EOPNOTSUPP);
	r = iommulu_vfio_attach_pt(dev, hwpt2);
	result("attach-marked", r == 0, "attach to the marked HWPT: %s", strerror(-r));
	device_case("device-marked-hwpt", iommufd, dev, 0);

	printf("%d failure(s)\n", failures);
	return failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: hwpt-refusals --device BDF\n");
	return 2;
}
