/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-lu: preserve a vfio-pci device cdev (QEMU edu) through a LUO session
 * across kexec and check it afterwards.  Test program of the vfio-kexec
 * scenario (kernel series part 1, issue 5).
 *
 *   vfio-lu preserve BDF [--fdstore|--hold] [--session NAME] [--value V]
 *                        [--dma-probe] [--msix BDF2]
 *       create session NAME; bind the device cdev to an iommufd; write V to
 *       edu's liveness register (0x04, reads back as ~V); set bus mastering;
 *       check that preserving fails with EBUSY while INTx is enabled; arm
 *       MSI vector 0; preserve the cdev (token 1), with MSI armed, and a
 *       memfd with the device's BARs and V (token 2); then push the session
 *       into the service's fd store (--fdstore) or leave a child process
 *       holding it (--hold).
 *       --msix: also bind BDF2's cdev (any device with MSI-X, bound to
 *       vfio-pci) to an iommufd, arm every MSI-X vector and preserve it
 *       (token 3).
 *       --dma-probe: aim an edu DMA, 100 ms later, at a page of that memfd;
 *       check verifies the page is untouched (DMA blocked, never untranslated).
 *   vfio-lu refuse BDF
 *       the errnos for devices that cannot be preserved, and no half state:
 *       a device fd from a VFIO group -> EBADFD, an unbound cdev -> EBADFD; a
 *       bound cdev in low power (LOW_POWER_ENTRY) -> EBUSY; a
 *       bound cdev while the IOMMU has no memory to keep its DMA blocked
 *       (debugfs iommu_liveupdate/fail_prepare armed) -> ENOMEM;
 *       a session that preserved the bound cdev and is closed releases it
 *       (a second session can preserve it again, then is closed too).
 *   vfio-lu refuse-unpreservable BDF
 *       a bound cdev of a device whose translation a live update cannot hand
 *       over whole (behind a conventional PCI bridge, whose requester ID its
 *       DMA carries; or with ATS enabled) -> EOPNOTSUPP.
 *   vfio-lu check BDF [--fdstore] [--session NAME] [--no-finish]
 *       after kexec: bus mastering still set and BARs unchanged (sysfs
 *       config, before anything opens the device); a plain cdev open cannot
 *       use the device (BIND_IOMMUFD fails with EBUSY); retrieve the cdev;
 *       neither a plain cdev nor a device fd from the group opens the
 *       device before the retrieved cdev (EBUSY); bind the retrieved cdev
 *       to a new iommufd, read edu's identification register and the
 *       liveness register (still ~V: no reset); arm MSI vector 0 again:
 *       its eventfd is signalled exactly once (the replay of what the device
 *       may have raised across the kexec); close it: still no plain cdev
 *       open until FINISH; FINISH the session; then a plainly opened cdev
 *       binds.
 *       --msix BDF2: before FINISH, BDF2 still has MSI-X enabled and masked
 *       (sysfs config); retrieve it, bind it, arm every MSI-X vector again:
 *       each eventfd is signalled exactly once.
 *
 * Exit status 0 on success; every failure prints "IOMMULU-FAIL: ..." and
 * exits 1.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <iommulu/uapi.h>

#define EDU_ID_REG	0x00
#define EDU_LIVE_REG	0x04
#define EDU_ID_MASK	0x000000ff
#define EDU_ID_LOW	0xed
#define TOKEN_DEV	1
#define TOKEN_STATE	2
#define TOKEN_MSIX	3
#define MSIX_MAX	32
#define FDNAME		"vfio-lu"

struct state {
	char magic[8];
	uint32_t value;
	uint32_t bars[6];
	uint32_t dma_page;	/* memfd page a stray DMA was aimed at, or ~0 */
	uint64_t dma_addr;	/* its physical address */
	uint32_t msix_vectors;	/* --msix: vectors armed on BDF2, 0 without */
};

#define STATE_PAGES	64
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_CNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_BUF		0x40000
#define EDU_DMA_LEN	64
#define EDU_DMA_MASK	((1ull << 28) - 1)
#define DMA_PATTERN	0xa5

static const char state_magic[8] = "vfiolu1";

#define FAIL(...)						\
	do {							\
		printf("IOMMULU-FAIL: vfio-lu: " __VA_ARGS__);	\
		putchar('\n');					\
		fflush(stdout);					\
		exit(1);					\
	} while (0)

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("vfio-lu: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* ---- LUO ---- */

static int luo_open(void)
{
	int fd, i;

	/* PID 1 opens /dev/liveupdate briefly at times: retry on EBUSY */
	for (i = 0; i < 50; i++) {
		fd = open("/dev/liveupdate", O_RDWR | O_CLOEXEC);
		if (fd >= 0 || errno != EBUSY)
			break;
		usleep(100000);
	}
	if (fd < 0)
		FAIL("open /dev/liveupdate: %s", strerror(errno));
	return fd;
}

static int session_create(const char *name)
{
	struct liveupdate_ioctl_create_session a = { .size = sizeof(a) };
	int luo = luo_open();

	snprintf((char *)a.name, sizeof(a.name), "%s", name);
	if (ioctl(luo, LIVEUPDATE_IOCTL_CREATE_SESSION, &a) < 0)
		FAIL("create session %s: %s", name, strerror(errno));
	close(luo);
	return a.fd;
}

static int session_retrieve(const char *name)
{
	struct liveupdate_ioctl_retrieve_session a = { .size = sizeof(a) };
	int luo = luo_open();

	snprintf((char *)a.name, sizeof(a.name), "%s", name);
	if (ioctl(luo, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &a) < 0)
		FAIL("retrieve session %s: %s", name, strerror(errno));
	close(luo);
	return a.fd;
}

/* 0 or -errno */
static int preserve_fd(int session, int fd, uint64_t token)
{
	struct liveupdate_session_preserve_fd a = {
		.size = sizeof(a), .fd = fd, .token = token,
	};

	return ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &a) < 0 ? -errno : 0;
}

static int retrieve_fd(int session, uint64_t token)
{
	struct liveupdate_session_retrieve_fd a = {
		.size = sizeof(a), .token = token,
	};

	if (ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &a) < 0)
		FAIL("retrieve token %" PRIu64 ": %s", token, strerror(errno));
	return a.fd;
}

static void session_finish(int session)
{
	struct liveupdate_session_finish a = { .size = sizeof(a) };

	if (ioctl(session, LIVEUPDATE_SESSION_FINISH, &a) < 0)
		FAIL("session FINISH: %s", strerror(errno));
}

/* ---- PCI / VFIO ---- */

static void sysfs_path(char *buf, size_t len, const char *bdf, const char *f)
{
	snprintf(buf, len, "/sys/bus/pci/devices/%s/%s", bdf, f);
}

static void read_sysfs_config(const char *bdf, uint8_t cfg[64])
{
	char p[PATH_MAX];
	int fd;

	sysfs_path(p, sizeof(p), bdf, "config");
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, cfg, 64, 0) != 64)
		FAIL("read %s: %s", p, strerror(errno));
	close(fd);
}

static uint16_t cfg16(const uint8_t *cfg, int off)
{
	return cfg[off] | cfg[off + 1] << 8;
}

static uint32_t cfg32(const uint8_t *cfg, int off)
{
	return (uint32_t)cfg16(cfg, off) | (uint32_t)cfg16(cfg, off + 2) << 16;
}

static void open_cdev_path(const char *bdf, char *out, size_t len)
{
	char p[PATH_MAX];
	struct dirent *de;
	DIR *d;

	sysfs_path(p, sizeof(p), bdf, "vfio-dev");
	d = opendir(p);
	if (!d)
		FAIL("%s: %s (not bound to vfio-pci?)", p, strerror(errno));
	while ((de = readdir(d))) {
		if (!strncmp(de->d_name, "vfio", 4)) {
			snprintf(out, len, "/dev/vfio/devices/%s", de->d_name);
			closedir(d);
			return;
		}
	}
	closedir(d);
	FAIL("%s has no vfio device node", p);
}

static int open_cdev(const char *bdf)
{
	char path[PATH_MAX];
	int fd;

	open_cdev_path(bdf, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		FAIL("open %s: %s", path, strerror(errno));
	return fd;
}

/* 0 or -errno */
static int bind_iommufd(int dev, int *iommufd)
{
	struct vfio_device_bind_iommufd b = { .argsz = sizeof(b) };

	*iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (*iommufd < 0)
		FAIL("open /dev/iommu: %s", strerror(errno));
	b.iommufd = *iommufd;
	return ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &b) < 0 ? -errno : 0;
}

static uint64_t region_offset(int dev, unsigned int index)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = index };

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0)
		FAIL("GET_REGION_INFO %u: %s", index, strerror(errno));
	return ri.offset;
}

static uint32_t dev_read32(int dev, uint64_t off)
{
	uint32_t v;

	if (pread(dev, &v, 4, off) != 4)
		FAIL("read device at %#" PRIx64 ": %s", off, strerror(errno));
	return v;
}

static void dev_write32(int dev, uint64_t off, uint32_t v)
{
	if (pwrite(dev, &v, 4, off) != 4)
		FAIL("write device at %#" PRIx64 ": %s", off, strerror(errno));
}

static uint16_t cfg_read16(int dev, uint64_t cfg, int reg)
{
	uint16_t v;

	if (pread(dev, &v, 2, cfg + reg) != 2)
		FAIL("config read %#x: %s", reg, strerror(errno));
	return v;
}

static void cfg_write16(int dev, uint64_t cfg, int reg, uint16_t v)
{
	if (pwrite(dev, &v, 2, cfg + reg) != 2)
		FAIL("config write %#x: %s", reg, strerror(errno));
}

/*
 * 0 or -errno: arm vectors 0..n-1 of an interrupt index with the eventfds
 * in @efds, or disable the index (n == 0)
 */
static int set_irqs(int dev, unsigned int index, const int *efds, unsigned int n)
{
	char buf[sizeof(struct vfio_irq_set) + MSIX_MAX * sizeof(int32_t)];
	struct vfio_irq_set *s = (struct vfio_irq_set *)buf;

	memset(buf, 0, sizeof(buf));
	s->argsz = sizeof(*s) + n * sizeof(int32_t);
	s->index = index;
	s->start = 0;
	s->count = n;
	s->flags = VFIO_IRQ_SET_ACTION_TRIGGER |
		   (n ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
	memcpy(s->data, efds, n * sizeof(int32_t));
	return ioctl(dev, VFIO_DEVICE_SET_IRQS, s) < 0 ? -errno : 0;
}

/* 0 or -errno: enable (efd >= 0) or disable (efd < 0) MSI vector 0 */
static int set_msi(int dev, int efd)
{
	return set_irqs(dev, VFIO_PCI_MSI_IRQ_INDEX, &efd, efd >= 0);
}

/* Number of vectors of an interrupt index */
static unsigned int irq_count(int dev, unsigned int index)
{
	struct vfio_irq_info info = { .argsz = sizeof(info), .index = index };

	if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0)
		FAIL("VFIO_DEVICE_GET_IRQ_INFO %u: %s", index, strerror(errno));
	return info.count;
}

/* New non-blocking eventfds */
static void new_eventfds(int *efds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		efds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (efds[i] < 0)
			FAIL("eventfd: %s", strerror(errno));
	}
}

/* What an eventfd counted within @ms milliseconds */
static uint64_t efd_count(int efd, int ms)
{
	uint64_t n = 0;

	for (int t = 0; t <= ms; t += 10) {
		if (read(efd, &n, sizeof(n)) == sizeof(n))
			return n;
		usleep(10000);
	}
	return 0;
}

/*
 * Arm vectors 0..n-1 of @index with new eventfds: after a live update each
 * must be signalled exactly once (the replay), then stay quiet.
 */
static void rearm_replayed(int dev, unsigned int index, unsigned int n, const char *what)
{
	int efds[MSIX_MAX], r;
	uint64_t c;

	new_eventfds(efds, n);
	r = set_irqs(dev, index, efds, n);
	if (r)
		FAIL("arm %u %s vector(s) again: %s", n, what, strerror(-r));
	for (unsigned int i = 0; i < n; i++) {
		c = efd_count(efds[i], 2000);
		if (c != 1)
			FAIL("%s vector %u re-armed after the kexec: its eventfd counted %" PRIu64
			     ", expected 1 (the replay)", what, i, c);
	}
	for (unsigned int i = 0; i < n; i++) {
		c = efd_count(efds[i], i ? 0 : 300);
		if (c)
			FAIL("%s vector %u signalled again after the replay (%" PRIu64 ")", what, i,
			     c);
		close(efds[i]);
	}
	say("ok: %u %s vector(s) re-armed, each signalled exactly once (replay)", n, what);
}

/* MSI-X Message Control of @bdf through sysfs, 0 if it has no MSI-X */
static uint16_t sysfs_msix_ctrl(const char *bdf)
{
	uint8_t cfg[256];
	char path[PATH_MAX];
	unsigned int pos, n = 0;
	int fd;

	sysfs_path(path, sizeof(path), bdf, "config");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, cfg, sizeof(cfg), 0) != sizeof(cfg))
		FAIL("read %s: %s", path, strerror(errno));
	close(fd);
	for (pos = cfg[0x34] & ~3u; pos && n < 48; pos = cfg[pos + 1] & ~3u, n++)
		if (cfg[pos] == 0x11)
			return cfg16(cfg, pos + 2);
	return 0;
}

static void expect_errno(const char *what, int got, int want)
{
	if (got != -want)
		FAIL("%s: got %s, expected %s", what,
		     got ? strerror(-got) : "success", strerror(want));
	say("ok: %s -> %s", what, strerror(want));
}

/* ---- sub-commands ---- */

static void hold_forever(void)
{
	pid_t pid = fork();

	if (pid < 0)
		FAIL("fork: %s", strerror(errno));
	if (pid > 0) {
		say("child %d holds the session; kexec now", (int)pid);
		exit(0);
	}
	setsid();
	for (;;)
		pause();
}

/*
 * Aim an edu DMA (device buffer -> RAM) at the physical address of a page of
 * the state memfd, which is preserved in the same session. edu starts the
 * transfer 100 ms after the command, i.e. typically during the kexec. The
 * device has no page table attached (iommufd bound, nothing attached), so
 * the DMA must be blocked by the IOMMU in either kernel; had translation
 * been switched off, the pattern would land in the memfd page, which the
 * next kernel checks.
 */
static void aim_dma(int dev, uint64_t bar0, int mfd, struct state *st)
{
	uint8_t *map;
	uint64_t ent, pa;
	int pm, i;

	map = mmap(NULL, STATE_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (map == MAP_FAILED)
		FAIL("mmap state memfd: %s", strerror(errno));
	memset(map, 0, STATE_PAGES * 4096);
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		FAIL("open pagemap: %s", strerror(errno));
	for (i = 1; i < STATE_PAGES; i++) {
		if (pread(pm, &ent, 8, ((uintptr_t)map / 4096 + i) * 8) != 8)
			FAIL("read pagemap: %s", strerror(errno));
		if (!(ent >> 63))
			continue;
		pa = (ent & ((1ull << 55) - 1)) * 4096;
		if (pa && pa + EDU_DMA_LEN <= EDU_DMA_MASK)
			break;
	}
	close(pm);
	munmap(map, STATE_PAGES * 4096);
	if (i == STATE_PAGES) {
		say("no state memfd page below 256 MiB (edu's DMA limit): no DMA probe");
		return;
	}
	st->dma_page = i;
	st->dma_addr = pa;
	for (i = 0; i < EDU_DMA_LEN; i += 4)
		dev_write32(dev, bar0 + EDU_BUF + i, DMA_PATTERN * 0x01010101u);
	dev_write32(dev, bar0 + EDU_DMA_SRC, EDU_BUF);
	dev_write32(dev, bar0 + EDU_DMA_SRC + 4, 0);
	dev_write32(dev, bar0 + EDU_DMA_DST, (uint32_t)pa);
	dev_write32(dev, bar0 + EDU_DMA_DST + 4, (uint32_t)(pa >> 32));
	dev_write32(dev, bar0 + EDU_DMA_CNT, EDU_DMA_LEN);
	dev_write32(dev, bar0 + EDU_DMA_CNT + 4, 0);
	dev_write32(dev, bar0 + EDU_DMA_CMD, 0x1 | 0x2);	/* start, edu -> RAM */
	say("edu DMA of %d bytes aimed at memfd page %u (physical %#" PRIx64 ") in 100 ms",
	    EDU_DMA_LEN, st->dma_page, pa);
}

/* --msix: a device with MSI-X, every vector armed, preserved as token 3 */
static unsigned int preserve_msix(int session, const char *bdf)
{
	int dev, iommufd, efds[MSIX_MAX], r;
	unsigned int n;

	dev = open_cdev(bdf);
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("%s: BIND_IOMMUFD: %s", bdf, strerror(-r));
	n = irq_count(dev, VFIO_PCI_MSIX_IRQ_INDEX);
	if (n == 0 || n > MSIX_MAX)
		FAIL("%s has %u MSI-X vectors (1..%d wanted)", bdf, n, MSIX_MAX);
	new_eventfds(efds, n);
	r = set_irqs(dev, VFIO_PCI_MSIX_IRQ_INDEX, efds, n);
	if (r)
		FAIL("%s: arm %u MSI-X vectors: %s", bdf, n, strerror(-r));
	for (unsigned int i = 0; i < n; i++)
		close(efds[i]);
	r = preserve_fd(session, dev, TOKEN_MSIX);
	if (r)
		FAIL("%s: preserve with %u MSI-X vectors armed: %s", bdf, n, strerror(-r));
	say("ok: %s preserved with its %u MSI-X vectors armed (token %d)", bdf, n, TOKEN_MSIX);
	return n;
}

/* --msix after the kexec: still enabled and masked; re-armed, replayed */
static void check_msix(int session, const char *bdf, unsigned int n)
{
	uint16_t ctrl = sysfs_msix_ctrl(bdf);
	int dev, iommufd, r;

	if (!(ctrl & 0x8000))
		FAIL("%s: MSI-X was disabled across the kexec (control %#x)", bdf, ctrl);
	if (!(ctrl & 0x4000))
		FAIL("%s: MSI-X is not masked after the kexec (control %#x)", bdf, ctrl);
	say("ok: %s kept MSI-X enabled and masked across the kexec (control %#x)", bdf, ctrl);
	dev = retrieve_fd(session, TOKEN_MSIX);
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("%s: BIND_IOMMUFD on the retrieved cdev: %s", bdf, strerror(-r));
	rearm_replayed(dev, VFIO_PCI_MSIX_IRQ_INDEX, n, "MSI-X");
	ctrl = sysfs_msix_ctrl(bdf);
	if ((ctrl & 0xc000) != 0x8000)
		FAIL("%s: after the re-arm MSI-X control is %#x, expected enabled, unmasked", bdf,
		     ctrl);
	close(dev);
	close(iommufd);
}

static int cmd_preserve(const char *bdf, const char *name, uint32_t value,
			int fdstore, int hold, int dma_probe, const char *msix_bdf)
{
	struct state st = { 0 };
	uint64_t bar0, cfg;
	uint8_t sysfs_cfg[64];
	int session, dev, iommufd, mfd, efd, r, i;
	uint16_t cmd;
	uint32_t v;

	session = session_create(name);
	dev = open_cdev(bdf);
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("BIND_IOMMUFD: %s", strerror(-r));
	bar0 = region_offset(dev, VFIO_PCI_BAR0_REGION_INDEX);
	cfg = region_offset(dev, VFIO_PCI_CONFIG_REGION_INDEX);

	cmd = cfg_read16(dev, cfg, 0x04);
	cfg_write16(dev, cfg, 0x04, cmd | 0x6);	/* memory + bus master */

	v = dev_read32(dev, bar0 + EDU_ID_REG);
	if ((v & EDU_ID_MASK) != EDU_ID_LOW)
		FAIL("%s is not an edu device (id register %#x)", bdf, v);
	dev_write32(dev, bar0 + EDU_LIVE_REG, value);
	v = dev_read32(dev, bar0 + EDU_LIVE_REG);
	if (v != (uint32_t)~value)
		FAIL("liveness register reads %#x after writing %#x", v, value);

	read_sysfs_config(bdf, sysfs_cfg);
	if (!(cfg16(sysfs_cfg, 0x04) & 0x4))
		FAIL("bus mastering did not stick (command %#x)",
		     cfg16(sysfs_cfg, 0x04));
	say("%s: edu id %#x, liveness %#x, command %#x", bdf,
	    dev_read32(dev, bar0 + EDU_ID_REG), v, cfg16(sysfs_cfg, 0x04));

	/* INTx cannot be carried over: refused, nothing preserved */
	new_eventfds(&efd, 1);
	r = set_irqs(dev, VFIO_PCI_INTX_IRQ_INDEX, &efd, 1);
	if (r)
		FAIL("enable INTx: %s", strerror(-r));
	expect_errno("preserve with INTx enabled", preserve_fd(session, dev, TOKEN_DEV), EBUSY);
	r = set_irqs(dev, VFIO_PCI_INTX_IRQ_INDEX, NULL, 0);
	if (r)
		FAIL("disable INTx: %s", strerror(-r));
	close(efd);

	/* MSI is carried over armed; the kernel keeps the eventfd */
	new_eventfds(&efd, 1);
	r = set_msi(dev, efd);
	if (r)
		FAIL("arm MSI vector 0: %s", strerror(-r));
	close(efd);
	r = preserve_fd(session, dev, TOKEN_DEV);
	if (r)
		FAIL("preserve device cdev with MSI armed: %s", strerror(-r));
	say("ok: device cdev preserved with MSI vector 0 armed (token %d)", TOKEN_DEV);
	if (msix_bdf)
		st.msix_vectors = preserve_msix(session, msix_bdf);

	/* What stage 2 compares with */
	memcpy(st.magic, state_magic, sizeof(st.magic));
	st.value = value;
	for (i = 0; i < 6; i++)
		st.bars[i] = cfg32(sysfs_cfg, 0x10 + 4 * i);
	mfd = memfd_create("vfio-lu-state", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, STATE_PAGES * 4096))
		FAIL("state memfd: %s", strerror(errno));
	st.dma_page = ~0u;
	if (dma_probe)
		aim_dma(dev, bar0, mfd, &st);
	if (pwrite(mfd, &st, sizeof(st), 0) != sizeof(st))
		FAIL("state memfd: %s", strerror(errno));
	r = preserve_fd(session, mfd, TOKEN_STATE);
	if (r)
		FAIL("preserve state memfd: %s", strerror(-r));
	say("state: value %#x, BAR0 %#x BAR1 %#x", st.value, st.bars[0], st.bars[1]);

	if (fdstore) {
		char msg[64];

		snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", FDNAME);
		r = sd_pid_notify_with_fds(0, 0, msg, &session, 1);
		if (r <= 0)
			FAIL("FDSTORE=1: %s", r ? strerror(-r) : "no $NOTIFY_SOCKET");
		r = sd_notify_barrier(0, 5 * 1000000ull);
		if (r < 0)
			FAIL("sd_notify_barrier: %s", strerror(-r));
		say("session %s is in the fd store", name);
		return 0;
	}
	if (hold)
		hold_forever();
	say("not holding the session (no --fdstore/--hold): it is released at exit");
	return 0;
}

/* A device fd through the device's VFIO group (type1 container), or -errno */
static int group_device_fd(const char *bdf)
{
	char p[PATH_MAX], link[256];
	int container, group, dev;
	ssize_t n;
	char *g;
	struct vfio_group_status gs = { .argsz = sizeof(gs) };

	sysfs_path(p, sizeof(p), bdf, "iommu_group");
	n = readlink(p, link, sizeof(link) - 1);
	if (n < 0)
		FAIL("readlink %s: %s", p, strerror(errno));
	link[n] = 0;
	g = strrchr(link, '/');
	snprintf(p, sizeof(p), "/dev/vfio/%s", g ? g + 1 : link);
	group = open(p, O_RDWR | O_CLOEXEC);
	if (group < 0)
		FAIL("open %s: %s", p, strerror(errno));
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs) < 0 ||
	    !(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		FAIL("group %s not viable", p);
	container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (container < 0)
		FAIL("open /dev/vfio/vfio: %s", strerror(errno));
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		FAIL("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		FAIL("VFIO_SET_IOMMU: %s", strerror(errno));
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		dev = -errno;
	close(group);
	close(container);
	return dev;
}

/*
 * The IOMMU driver allocates what keeps a preserved device's DMA blocked
 * through the kexec when the device is preserved (the kexec shutdown cannot
 * allocate).  With the fault injection knob armed that allocation fails:
 * the preservation must be refused with ENOMEM, and the knob consumed.
 */
#define FAIL_PREPARE "/sys/kernel/debug/iommu_liveupdate/fail_prepare"

static void refuse_without_iommu_memory(int session, int dev)
{
	char buf[16] = "";
	int fd;

	fd = open(FAIL_PREPARE, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		say("skip: no %s (%s): kernel without its fault injection", FAIL_PREPARE,
		    strerror(errno));
		return;
	}
	if (write(fd, "1", 1) != 1)
		FAIL("arm %s: %s", FAIL_PREPARE, strerror(errno));
	close(fd);
	expect_errno("preserve while the IOMMU has no memory to block its DMA",
		     preserve_fd(session, dev, 4), ENOMEM);
	/* debugfs attributes are read from a fresh open */
	fd = open(FAIL_PREPARE, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0 || atoi(buf) != 0)
		FAIL("%s reads '%s' after the refused preservation, expected 0", FAIL_PREPARE,
		     buf);
	close(fd);
}

/* VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY (@entry) or _EXIT: 0 or -errno */
static int low_power(int dev, int entry)
{
	struct vfio_device_feature f = {
		.argsz = sizeof(f),
		.flags = VFIO_DEVICE_FEATURE_SET |
			 (entry ? VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY :
				  VFIO_DEVICE_FEATURE_LOW_POWER_EXIT),
	};

	return ioctl(dev, VFIO_DEVICE_FEATURE, &f) < 0 ? -errno : 0;
}

/*
 * A device in a low power state could lose its state on the way back to D0
 * in the next kernel: preserving it is refused with EBUSY until it is awake.
 */
static void refuse_in_low_power(int session, int dev)
{
	int r = low_power(dev, 1);

	if (r)
		FAIL("VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY: %s", strerror(-r));
	expect_errno("preserve a device in low power (LOW_POWER_ENTRY)",
		     preserve_fd(session, dev, 4), EBUSY);
	r = low_power(dev, 0);
	if (r)
		FAIL("VFIO_DEVICE_FEATURE_LOW_POWER_EXIT: %s", strerror(-r));
}

static int cmd_refuse(const char *bdf)
{
	int session, dev, iommufd, r;

	session = session_create("vfio-lu-refuse");

	dev = group_device_fd(bdf);
	if (dev < 0)
		FAIL("VFIO_GROUP_GET_DEVICE_FD: %s", strerror(-dev));
	expect_errno("preserve a device fd from a VFIO group",
		     preserve_fd(session, dev, 1), EBADFD);
	close(dev);

	dev = open_cdev(bdf);
	expect_errno("preserve a cdev not bound to an iommufd",
		     preserve_fd(session, dev, 2), EBADFD);

	/* The refusals left nothing behind: the bound cdev can be preserved */
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("BIND_IOMMUFD: %s", strerror(-r));
	refuse_in_low_power(session, dev);
	refuse_without_iommu_memory(session, dev);
	r = preserve_fd(session, dev, 3);
	if (r)
		FAIL("preserve after refusals: %s", strerror(-r));
	say("ok: bound cdev preserved after the refusals");
	close(session);
	say("ok: session closed (device unpreserved)");

	/* ... and closing the session released it again */
	session = session_create("vfio-lu-refuse2");
	r = preserve_fd(session, dev, 1);
	if (r)
		FAIL("preserve again after closing the first session: %s", strerror(-r));
	say("ok: a new session can preserve it again");
	close(session);
	close(dev);
	close(iommufd);
	return 0;
}

/*
 * A device whose translation cannot be handed over whole cannot be
 * preserved: one whose DMA carries another requester ID (behind a
 * conventional PCI bridge), or one with ATS enabled.
 */
static int cmd_refuse_unpreservable(const char *bdf)
{
	char what[128];
	int session, dev, iommufd, r;

	struct iommu_ioas_alloc ioas = { .size = sizeof(ioas) };
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at) };

	session = session_create("vfio-lu-unpreservable");
	dev = open_cdev(bdf);
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("BIND_IOMMUFD: %s", strerror(-r));
	/* Attached to a paging domain, as a VM's device is (legacy VT-d enables ATS then) */
	if (ioctl(iommufd, IOMMU_IOAS_ALLOC, &ioas) < 0)
		FAIL("IOMMU_IOAS_ALLOC: %s", strerror(errno));
	at.pt_id = ioas.out_ioas_id;
	if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) < 0)
		FAIL("VFIO_DEVICE_ATTACH_IOMMUFD_PT (IOAS %u): %s", ioas.out_ioas_id, strerror(errno));
	snprintf(what, sizeof(what), "preserve %s (DMA alias or ATS)", bdf);
	expect_errno(what, preserve_fd(session, dev, 1), EOPNOTSUPP);
	close(session);
	close(dev);
	close(iommufd);
	return 0;
}

static int fdstore_session(void)
{
	char **names = NULL;
	int n, i, s = -1;

	n = sd_listen_fds_with_names(0, &names);
	if (n < 0)
		FAIL("sd_listen_fds_with_names: %s", strerror(-n));
	for (i = 0; i < n; i++) {
		if (!strcmp(names[i], FDNAME))
			s = SD_LISTEN_FDS_START + i;
		free(names[i]);
	}
	free(names);
	if (s < 0)
		FAIL("no fd named %s among %d passed fds", FDNAME, n);
	return s;
}

/*
 * A plainly opened cdev does not open @bdf (@err: EBUSY while nothing has it
 * open, EINVAL while the retrieved file does), nor (@group) does a device fd
 * from its group.
 */
static void others_refused(const char *bdf, const char *when, int err, int group)
{
	char what[160];
	int plain, iommufd, dev;

	plain = open_cdev(bdf);
	snprintf(what, sizeof(what), "BIND_IOMMUFD on a plainly opened cdev %s", when);
	expect_errno(what, bind_iommufd(plain, &iommufd), err);
	close(plain);
	close(iommufd);
	if (!group)
		return;
	dev = group_device_fd(bdf);
	if (dev >= 0)
		close(dev);
	snprintf(what, sizeof(what), "VFIO_GROUP_GET_DEVICE_FD %s", when);
	expect_errno(what, dev < 0 ? dev : 0, EBUSY);
}

static int cmd_check(const char *bdf, const char *name, int fdstore, int finish,
		     const char *msix_bdf)
{
	uint8_t cfg_before[64], cfg_after[64];
	struct state st;
	uint64_t bar0, cfg;
	int session, mfd, dev, plain, iommufd, iommufd2, r, i;
	uint32_t v;

	/* Before anything opens the device */
	read_sysfs_config(bdf, cfg_before);
	if (!(cfg16(cfg_before, 0x04) & 0x4))
		FAIL("bus mastering was cleared across kexec (command %#x)",
		     cfg16(cfg_before, 0x04));
	say("ok: command register %#x, bus mastering still set", cfg16(cfg_before, 0x04));

	session = fdstore ? fdstore_session() : session_retrieve(name);
	mfd = retrieve_fd(session, TOKEN_STATE);
	if (pread(mfd, &st, sizeof(st), 0) != sizeof(st) ||
	    memcmp(st.magic, state_magic, sizeof(st.magic)))
		FAIL("state memfd is corrupt");
	for (i = 0; i < 6; i++) {
		v = cfg32(cfg_before, 0x10 + 4 * i);
		if (v != st.bars[i])
			FAIL("BAR%d changed across kexec: %#x, was %#x", i, v, st.bars[i]);
	}
	say("ok: BARs unchanged (BAR0 %#x)", st.bars[0]);
	if (st.dma_page != ~0u) {
		uint8_t page[EDU_DMA_LEN];

		if (pread(mfd, page, sizeof(page), (off_t)st.dma_page * 4096) != sizeof(page))
			FAIL("read state memfd page %u: %s", st.dma_page, strerror(errno));
		for (i = 0; i < EDU_DMA_LEN; i++)
			if (page[i] == DMA_PATTERN)
				FAIL("stray DMA reached memory at %#" PRIx64 ": translation was off",
				     st.dma_addr);
		say("ok: the edu DMA aimed at %#" PRIx64 " did not reach memory", st.dma_addr);
	}

	/* Somebody else opening the cdev cannot use the device */
	plain = open_cdev(bdf);
	expect_errno("BIND_IOMMUFD on a plainly opened cdev before retrieve",
		     bind_iommufd(plain, &iommufd2), EBUSY);
	close(plain);
	close(iommufd2);

	dev = retrieve_fd(session, TOKEN_DEV);
	say("ok: device cdev retrieved");
	/*
	 * Only the retrieved file opens the device without a reset: another
	 * cdev or a device fd from the group cannot open it first.
	 */
	others_refused(bdf, "after retrieve, before the retrieved cdev is bound", EBUSY, 1);
	r = bind_iommufd(dev, &iommufd);
	if (r)
		FAIL("BIND_IOMMUFD on the retrieved cdev: %s", strerror(-r));
	bar0 = region_offset(dev, VFIO_PCI_BAR0_REGION_INDEX);
	cfg = region_offset(dev, VFIO_PCI_CONFIG_REGION_INDEX);
	v = dev_read32(dev, bar0 + EDU_ID_REG);
	if ((v & EDU_ID_MASK) != EDU_ID_LOW)
		FAIL("edu identification register reads %#x through the retrieved fd", v);
	say("ok: edu identification register %#x", v);
	v = dev_read32(dev, bar0 + EDU_LIVE_REG);
	if (v != (uint32_t)~st.value)
		FAIL("liveness register %#x, expected %#x: the device was reset", v,
		     (uint32_t)~st.value);
	say("ok: liveness register still %#x (value %#x written before kexec)", v, st.value);
	dev_write32(dev, bar0 + EDU_LIVE_REG, 0x5a5a0f0f);
	v = dev_read32(dev, bar0 + EDU_LIVE_REG);
	if (v != (uint32_t)~0x5a5a0f0fu)
		FAIL("device does not answer: liveness register %#x", v);
	say("ok: device answers through the retrieved fd");
	if (!(cfg_read16(dev, cfg, 0x04) & 0x4))
		FAIL("bus mastering cleared by BIND_IOMMUFD of the retrieved fd");
	read_sysfs_config(bdf, cfg_after);
	say("ok: command register %#x after bind", cfg16(cfg_after, 0x04));
	rearm_replayed(dev, VFIO_PCI_MSI_IRQ_INDEX, 1, "MSI");
	if (st.msix_vectors) {
		if (!msix_bdf)
			FAIL("stage 1 preserved an MSI-X device: pass --msix");
		check_msix(session, msix_bdf, st.msix_vectors);
	}

	if (finish) {
		/*
		 * Nor once our fd of the retrieved file is closed: the session
		 * holds the file, bound, until FINISH (vfio's one open per
		 * cdev: EINVAL; the bound cdev keeps the group closed).
		 */
		close(dev);
		close(iommufd);
		dev = iommufd = -1;
		others_refused(bdf, "after the retrieved cdev was closed, before FINISH", EINVAL, 0);
		session_finish(session);
		say("ok: session finished");
		plain = open_cdev(bdf);
		r = bind_iommufd(plain, &iommufd2);
		if (r)
			FAIL("BIND_IOMMUFD on a plainly opened cdev after FINISH: %s", strerror(-r));
		say("ok: after FINISH a plainly opened cdev binds");
		close(plain);
		close(iommufd2);
		if (fdstore) {
			r = sd_notify(0, "FDSTOREREMOVE=1\nFDNAME=" FDNAME);
			if (r <= 0)
				FAIL("FDSTOREREMOVE: %s", r ? strerror(-r) : "no $NOTIFY_SOCKET");
		}
		close(session);
	}
	close(mfd);
	if (dev >= 0) {
		close(dev);
		close(iommufd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = "vfio-lu", *cmd, *bdf, *msix_bdf = NULL;
	uint32_t value = 0x1c0ffee5;
	int fdstore = 0, hold = 0, finish = 1, dma_probe = 0, i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3)
		FAIL("usage: vfio-lu preserve|refuse|refuse-unpreservable|check BDF [options]");
	cmd = argv[1];
	bdf = argv[2];
	for (i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--fdstore"))
			fdstore = 1;
		else if (!strcmp(argv[i], "--hold"))
			hold = 1;
		else if (!strcmp(argv[i], "--no-finish"))
			finish = 0;
		else if (!strcmp(argv[i], "--dma-probe"))
			dma_probe = 1;
		else if (!strcmp(argv[i], "--session") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--value") && i + 1 < argc)
			value = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--msix") && i + 1 < argc)
			msix_bdf = argv[++i];
		else
			FAIL("unknown argument %s", argv[i]);
	}

	if (!strcmp(cmd, "preserve"))
		return cmd_preserve(bdf, name, value, fdstore, hold, dma_probe, msix_bdf);
	if (!strcmp(cmd, "refuse"))
		return cmd_refuse(bdf);
	if (!strcmp(cmd, "refuse-unpreservable"))
		return cmd_refuse_unpreservable(bdf);
	if (!strcmp(cmd, "check"))
		return cmd_check(bdf, name, fdstore, finish, msix_bdf);
	FAIL("unknown command %s", cmd);
}
