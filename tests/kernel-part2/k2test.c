// SPDX-License-Identifier: GPL-2.0
/*
 * k2test: in-guest test for the part-2 kernel series (iommufd live update).
 *   k2test pre <bzImage> <initrd> "<cmdline>"   marks, negative preserves, kexec
 *   k2test post                                 retrieves after the kexec
 * Prints "K2TEST PASS <name>" / "K2TEST FAIL <name> ..." lines, then
 * "K2TEST RESULT ok|fail".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/liveupdate.h>
#include <linux/reboot.h>
#include <linux/vfio.h>

static int failures;

#define CHECK(name, cond, ...) do {					\
	if (cond) {							\
		printf("K2TEST PASS %s\n", name);			\
	} else {							\
		failures++;						\
		printf("K2TEST FAIL %s: ", name);			\
		printf(__VA_ARGS__);					\
		printf(" (errno %d %s)\n", errno, strerror(errno));	\
	}								\
} while (0)

#define EXPECT_ERR(name, rc, want) \
	CHECK(name, (rc) < 0 && errno == (want), "rc=%d want errno %d", rc, want)
#define EXPECT_OK(name, rc) CHECK(name, (rc) == 0, "rc=%d", rc)

#define IOVA 0x100000ULL
#define IOVA2 0x800000ULL
#define LEN (64 * 1024)

static int mark(int ifd, uint32_t hwpt, uint64_t token)
{
	struct iommu_hwpt_liveupdate_mark_preserve m = {
		.size = sizeof(m), .hwpt_id = hwpt, .hwpt_token = token,
	};
	return ioctl(ifd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, &m);
}

static int map_file(int ifd, uint32_t ioas, int fd, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_map_file m = {
		.size = sizeof(m), .ioas_id = ioas, .fd = fd, .start = 0,
		.length = len, .iova = iova,
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
	};
	return ioctl(ifd, IOMMU_IOAS_MAP_FILE, &m);
}

static int map_user(int ifd, uint32_t ioas, void *p, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m), .ioas_id = ioas, .user_va = (uintptr_t)p,
		.length = len, .iova = iova,
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
			 IOMMU_IOAS_MAP_WRITEABLE,
	};
	return ioctl(ifd, IOMMU_IOAS_MAP, &m);
}

static int unmap(int ifd, uint32_t ioas, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = len,
	};
	return ioctl(ifd, IOMMU_IOAS_UNMAP, &u);
}

static int lu = -1;	/* /dev/liveupdate is exclusive: one open for all */

static int new_session(const char *name)
{
	struct liveupdate_ioctl_create_session c = { .size = sizeof(c) };

	if (lu < 0)
		lu = open("/dev/liveupdate", O_RDWR);
	if (lu < 0) {
		perror("open /dev/liveupdate");
		exit(2);
	}
	snprintf((char *)c.name, sizeof(c.name), "%s", name);
	if (ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, &c)) {
		perror("CREATE_SESSION");
		exit(2);
	}
	return c.fd;
}

static int preserve(int s, int fd, uint64_t token)
{
	struct liveupdate_session_preserve_fd p = {
		.size = sizeof(p), .fd = fd, .token = token,
	};
	return ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, &p);
}

static int memfd(unsigned int seals, const char *fill)
{
	int fd = memfd_create("k2", MFD_ALLOW_SEALING);

	if (fd < 0 || ftruncate(fd, LEN)) {
		perror("memfd");
		exit(2);
	}
	if (fill && pwrite(fd, fill, strlen(fill) + 1, 0) < 0)
		exit(2);
	if (seals && fcntl(fd, F_ADD_SEALS, seals)) {
		perror("F_ADD_SEALS");
		exit(2);
	}
	return fd;
}

static int open_vfio_dev(void)
{
	DIR *d = opendir("/dev/vfio/devices");
	struct dirent *e;
	char path[300];

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "vfio", 4))
			continue;
		snprintf(path, sizeof(path), "/dev/vfio/devices/%s", e->d_name);
		closedir(d);
		return open(path, O_RDWR);
	}
	closedir(d);
	return -1;
}

#define SEALS (F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK)

#define EDU_BUFFER 0x40000
#define XFER 2048
static volatile uint8_t *bar0;

static uint64_t rd64(unsigned int off) { return *(volatile uint64_t *)(bar0 + off); }
static void wr64(unsigned int off, uint64_t v) { *(volatile uint64_t *)(bar0 + off) = v; }
static uint32_t rd32(unsigned int off) { return *(volatile uint32_t *)(bar0 + off); }

static int edu_dma(uint64_t src, uint64_t dst, int to_ram)
{
	int i;

	wr64(0x80, src);
	wr64(0x88, dst);
	wr64(0x90, XFER);
	wr64(0x98, 1 | (to_ram ? 2 : 0));
	for (i = 0; i < 20000 && (rd64(0x98) & 1); i++)
		usleep(1000);
	return (rd64(0x98) & 1) ? -1 : 0;
}

/* config space + BAR0 through the vfio cdev; memory + bus master on */
static int edu_enable(int dfd)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri) };
	uint16_t cmd;

	ri.index = VFIO_PCI_CONFIG_REGION_INDEX;
	if (ioctl(dfd, VFIO_DEVICE_GET_REGION_INFO, &ri))
		return -1;
	if (pread(dfd, &cmd, 2, ri.offset + 4) != 2)
		return -1;
	printf("K2TEST edu PCI command %#x\n", cmd);
	cmd |= 6;
	if (pwrite(dfd, &cmd, 2, ri.offset + 4) != 2)
		return -1;
	ri.argsz = sizeof(ri);
	ri.index = VFIO_PCI_BAR0_REGION_INDEX;
	if (ioctl(dfd, VFIO_DEVICE_GET_REGION_INFO, &ri))
		return -1;
	bar0 = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, ri.offset);
	if (bar0 == MAP_FAILED) {
		bar0 = NULL;
		return -1;
	}
	return (rd32(0) & 0xff) == 0xed ? 0 : -1;
}

/* The same through sysfs, for a device whose cdev is not bound (yet) */
static int edu_enable_sysfs(void)
{
	char path[320];
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	uint16_t cmd;
	int fd;

	while (d && (e = readdir(d))) {
		char id[16] = { 0 };

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", e->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		if (read(fd, id, sizeof(id) - 1) < 0)
			id[0] = 0;
		close(fd);
		if (strncmp(id, "0x11e8", 6))
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", e->d_name);
		fd = open(path, O_RDWR);
		if (fd < 0 || pread(fd, &cmd, 2, 4) != 2)
			return -1;
		printf("K2TEST edu PCI command after kexec %#x\n", cmd);
		cmd |= 6;
		if (pwrite(fd, &cmd, 2, 4) != 2)
			return -1;
		close(fd);
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource0", e->d_name);
		fd = open(path, O_RDWR | O_SYNC);
		if (fd < 0)
			return -1;
		bar0 = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		closedir(d);
		if (bar0 == MAP_FAILED)
			return -1;
		return (rd32(0) & 0xff) == 0xed ? 0 : -1;
	}
	return -1;
}

/* DMA a pattern memfd[src_off] -> edu -> memfd[dst_off] through the IOMMU */
static int dma_roundtrip(int mfd, uint64_t src_off, uint64_t dst_off, unsigned char seed)
{
	unsigned char in[XFER], out[XFER];
	int i;

	for (i = 0; i < XFER; i++)
		in[i] = (unsigned char)(seed + i * 7);
	memset(out, 0, sizeof(out));
	if (pwrite(mfd, in, XFER, src_off) != XFER || pwrite(mfd, out, XFER, dst_off) != XFER)
		return -2;
	if (edu_dma(IOVA + src_off, EDU_BUFFER, 0) || edu_dma(EDU_BUFFER, IOVA + dst_off, 1))
		return -3;
	if (pread(mfd, out, XFER, dst_off) != XFER)
		return -4;
	return memcmp(in, out, XFER) ? -1 : 0;
}
#define PATTERN "iommu-lud part 2 survives kexec"

static int do_pre(const char *kernel, const char *initrd, const char *cmdline)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at) };
	struct iommu_ioas_alloc ia = { .size = sizeof(ia) };
	struct iommu_hwpt_alloc ha = { .size = sizeof(ha) };
	uint32_t ioas, hwpt, hwpt2;
	int ifd, dfd, rc, s, m_ok, m_unsealed, m_unpreserved;
	char big[64] = { 0 };
	void *anon;

	ifd = open("/dev/iommu", O_RDWR);
	dfd = open_vfio_dev();
	if (ifd < 0 || dfd < 0) {
		printf("K2TEST FAIL setup: iommu %d vfio %d (%s)\n", ifd, dfd,
		       strerror(errno));
		return 1;
	}
	bind.iommufd = ifd;
	if (ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, &bind) ||
	    ioctl(ifd, IOMMU_IOAS_ALLOC, &ia)) {
		perror("bind/ioas");
		return 1;
	}
	ioas = ia.out_ioas_id;
	ha.dev_id = bind.out_devid;
	ha.pt_id = ioas;
	if (ioctl(ifd, IOMMU_HWPT_ALLOC, &ha)) {
		perror("hwpt alloc");
		return 1;
	}
	hwpt = ha.out_hwpt_id;
	if (ioctl(ifd, IOMMU_HWPT_ALLOC, &ha)) {
		perror("hwpt alloc 2");
		return 1;
	}
	hwpt2 = ha.out_hwpt_id;
	at.pt_id = hwpt;
	if (ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)) {
		perror("attach");
		return 1;
	}

	/* mark ioctl error cases */
	EXPECT_ERR("mark-unknown-id", mark(ifd, 9999, 1), ENOENT);
	EXPECT_ERR("mark-ioas", mark(ifd, ioas, 1), EINVAL);
	EXPECT_ERR("mark-device", mark(ifd, bind.out_devid, 1), EINVAL);
	{
		struct iommu_hwpt_liveupdate_mark_preserve *m = (void *)big;

		m->size = sizeof(big);
		m->hwpt_id = hwpt;
		m->hwpt_token = 7;
		big[sizeof(*m) + 3] = 1;
		EXPECT_ERR("mark-trailing-nonzero",
			   ioctl(ifd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, m),
			   E2BIG);
		m->size = 8;
		EXPECT_ERR("mark-short",
			   ioctl(ifd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, m),
			   EINVAL);
		big[sizeof(*m) + 3] = 0;
		m->size = sizeof(big);
		EXPECT_OK("mark-trailing-zero",
			  ioctl(ifd, IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, m));
	}
	EXPECT_OK("mark-same-token-again", mark(ifd, hwpt, 7));
	EXPECT_ERR("mark-token-used-by-other", mark(ifd, hwpt2, 7), EADDRINUSE);
	EXPECT_ERR("mark-already-marked", mark(ifd, hwpt, 8), EALREADY);
	{
		struct iommu_destroy d = { .size = sizeof(d), .id = hwpt2 };

		EXPECT_OK("mark-hwpt2", mark(ifd, hwpt2, 8));
		EXPECT_OK("destroy-marked-unpreserved",
			  ioctl(ifd, IOMMU_DESTROY, &d));
		/* the token is free again once its HWPT is gone */
		ha.pt_id = ioas;
		rc = ioctl(ifd, IOMMU_HWPT_ALLOC, &ha);
		hwpt2 = ha.out_hwpt_id;
		EXPECT_OK("mark-token-reuse-after-destroy",
			  rc ? rc : mark(ifd, hwpt2, 8));
	}

	/* negative preserves: nothing may stay half preserved */
	anon = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s = new_session("k2-neg");
	EXPECT_OK("map-anon", map_user(ifd, ioas, anon, IOVA, LEN));
	EXPECT_ERR("preserve-anon", preserve(s, ifd, 100), EOPNOTSUPP);
	EXPECT_OK("unmap-anon-after-refusal", unmap(ifd, ioas, IOVA, LEN));

	m_unsealed = memfd(F_SEAL_GROW, NULL);
	EXPECT_OK("preserve-unsealed-memfd-itself", preserve(s, m_unsealed, 1));
	EXPECT_OK("map-unsealed", map_file(ifd, ioas, m_unsealed, IOVA, LEN));
	EXPECT_ERR("preserve-unsealed", preserve(s, ifd, 100), EPERM);
	EXPECT_OK("unmap-unsealed", unmap(ifd, ioas, IOVA, LEN));

	m_unpreserved = memfd(SEALS, NULL);
	EXPECT_OK("map-unpreserved", map_file(ifd, ioas, m_unpreserved, IOVA, LEN));
	EXPECT_ERR("preserve-memfd-not-in-session", preserve(s, ifd, 100), ENOLINK);
	EXPECT_OK("preserve-memfd-then", preserve(s, m_unpreserved, 2));
	EXPECT_OK("preserve-iommufd-now", preserve(s, ifd, 100));
	EXPECT_ERR("map-while-preserved", map_file(ifd, ioas, m_unpreserved, IOVA2, LEN), EBUSY);
	EXPECT_ERR("unmap-while-preserved", unmap(ifd, ioas, IOVA, LEN), EBUSY);
	{
		struct iommu_destroy d = { .size = sizeof(d), .id = hwpt };

		EXPECT_ERR("destroy-while-preserved", ioctl(ifd, IOMMU_DESTROY, &d), EBUSY);
	}
	{
		/* a fresh HWPT cannot be marked while the iommufd is preserved */
		struct iommu_hwpt_alloc h3 = { .size = sizeof(h3),
			.dev_id = bind.out_devid, .pt_id = ioas };

		rc = ioctl(ifd, IOMMU_HWPT_ALLOC, &h3);
		EXPECT_ERR("mark-while-preserved", rc ? rc : mark(ifd, h3.out_hwpt_id, 9), EBUSY);
	}
	close(s);	/* aborts the session: everything unpreserved */
	EXPECT_OK("unmap-after-abort", unmap(ifd, ioas, IOVA, LEN));
	close(m_unsealed);
	close(m_unpreserved);

	/* the real preserve for the kexec */
	s = new_session("k2");
	m_ok = memfd(SEALS, PATTERN);
	EXPECT_OK("map-ok", map_file(ifd, ioas, m_ok, IOVA, LEN));
	CHECK("edu-enable", edu_enable(dfd) == 0, "vfio config/BAR0");
	rc = dma_roundtrip(m_ok, 0x1000, 0x9000, 0x11);
	CHECK("dma-before-kexec", rc == 0, "rc=%d", rc);
	if (pwrite(m_ok, PATTERN, strlen(PATTERN) + 1, 0) < 0)
		return 1;
	EXPECT_OK("preserve-memfd", preserve(s, m_ok, 1));
	EXPECT_OK("preserve-iommufd", preserve(s, ifd, 2));
	rc = preserve(s, dfd, 3);
	printf("K2TEST preserve vfio cdev: %s\n", rc ? strerror(errno) : "ok");

	printf("K2TEST RESULT %s\n", failures ? "fail" : "ok");
	if (failures || !kernel)
		return failures ? 1 : 0;

	{
		int kfd = open(kernel, O_RDONLY), rfd = open(initrd, O_RDONLY);

		fflush(stdout);
		if (syscall(SYS_kexec_file_load, kfd, rfd, strlen(cmdline) + 1,
			    cmdline, 0UL)) {
			perror("kexec_file_load");
			return 1;
		}
		sync();
		printf("K2TEST kexec\n");
		fflush(stdout);
		reboot(LINUX_REBOOT_CMD_KEXEC);
		perror("reboot");
	}
	return 1;
}

static int do_post(void)
{
	struct liveupdate_ioctl_retrieve_session r = { .size = sizeof(r) };
	struct liveupdate_session_retrieve_fd f = { .size = sizeof(f) };
	int lu = open("/dev/liveupdate", O_RDWR), ifd, mfd;
	char buf[64] = { 0 };

	snprintf((char *)r.name, sizeof(r.name), "k2");
	if (lu < 0 || ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &r)) {
		printf("K2TEST FAIL retrieve-session (%s)\n", strerror(errno));
		return 1;
	}
	f.token = 2;
	EXPECT_OK("retrieve-iommufd", ioctl(r.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &f));
	ifd = f.fd;
	f.token = 1;
	EXPECT_OK("retrieve-memfd", ioctl(r.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &f));
	mfd = f.fd;
	CHECK("memfd-content", pread(mfd, buf, sizeof(buf), 0) > 0 &&
	      !strcmp(buf, PATTERN), "got '%s'", buf);
	f.token = 3;
	if (!ioctl(r.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, &f)) {
		struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
		int dfd = f.fd, i2 = open("/dev/iommu", O_RDWR), rc;

		rc = edu_enable(dfd) == 0 ? 0 : edu_enable_sysfs();
		CHECK("edu-enable-after-kexec", rc == 0, "vfio or sysfs config/BAR0");
		rc = rc ? -9 : dma_roundtrip(mfd, 0x2000, 0xa000, 0x5a);
		CHECK("dma-after-kexec-lands-in-memfd", rc == 0, "rc=%d", rc);
		/* an IOVA that was never mapped must be blocked (DMAR fault) */
		rc = edu_dma(0x4000000, EDU_BUFFER, 0);
		printf("K2TEST unmapped DMA done rc=%d\n", rc);
		bind.iommufd = i2;
		rc = ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, &bind);
		CHECK("new-iommufd-bind-refused", rc < 0 && errno == EBUSY, "rc=%d", rc);
	} else {
		printf("K2TEST no vfio cdev in the session (%s)\n", strerror(errno));
	}
	/* IOAS 1 is the restored IOAS of the first preserved HWPT */
	EXPECT_ERR("restored-map-is-fixed", map_file(ifd, 1, mfd, IOVA, LEN), EEXIST);
	EXPECT_OK("restored-unmap-exact", unmap(ifd, 1, IOVA, LEN));
	{
		struct liveupdate_session_finish fin = { .size = sizeof(fin) };

		EXPECT_OK("finish", ioctl(r.fd, LIVEUPDATE_SESSION_FINISH, &fin));
	}
	printf("K2TEST RESULT %s\n", failures ? "fail" : "ok");
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "pre"))
		return do_pre(argc > 2 ? argv[2] : NULL, argc > 3 ? argv[3] : NULL,
			      argc > 4 ? argv[4] : "");
	if (argc >= 2 && !strcmp(argv[1], "post"))
		return do_post();
	fprintf(stderr, "usage: k2test pre [bzImage initrd cmdline] | post\n");
	return 2;
}
