/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iommulu-vmm: a minimal VMM stand-in for the virtual host.
 *
 * It does for one VM what QEMU with an iommufd backend does: guest RAM is a
 * sealed memfd, mapped with IOMMU_IOAS_MAP_FILE at a fixed IOVA into an
 * IOAS; a paging HWPT is allocated on that IOAS; each assigned device's vfio
 * cdev is bound to the iommufd and attached to the HWPT.  The "guest" is
 * played by this program driving QEMU's edu device (a PCI device that does
 * DMA): every transfer goes device <-> IOVA through the vIOMMU and lands in
 * (or comes from) the memfd.
 *
 *   iommulu-vmm probe --device BDF [--device BDF ...] [options]
 *       DMA round trip through the HWPT, and a DMA to an IOVA that is not
 *       mapped, which the IOMMU must block.
 *   iommulu-vmm preserve --device BDF ... [options]       (needs kernel series)
 *       as probe, then write the pre-kexec pattern into guest RAM, mark the
 *       HWPT for preservation, and preserve memfd, a sealed memfd with the
 *       object IDs (as QEMU's CPR state records them), iommufd and devices
 *       in one LUO session that goes into the unit's fd store.
 *   iommulu-vmm restore-check --device BDF ... [options]  (needs kernel series)
 *       after the kexec: take the session back from the fd store, retrieve
 *       the memfds, check the pre-kexec pattern, have edu DMA a fresh
 *       pattern to the preserved IOVA before any device file is retrieved
 *       (BAR0 through sysfs), check it landed in the retrieved memfd, check
 *       that another iommufd cannot take the device and that FINISH is
 *       refused (EBUSY); then retrieve the iommufd (HWPT and IOAS under the
 *       recorded IDs) and the devices, which come back bound under their
 *       recorded IDs and attached to the recorded HWPT (no bind, no attach
 *       call), DMA through them, and FINISH.  --crash: exit after the
 *       refused FINISH instead, with the session dropped from the fd
 *       store, as a crashed VMM would.
 *   iommulu-vmm restore-again --device BDF ... [options]  (after --crash)
 *       retrieve the session again from /dev/liveupdate, check guest RAM,
 *       DMA into it with a canary memfd watching for stray writes, FINISH
 *       refused, retrieve iommufd and devices as restore-check does, FINISH.
 *   --dma-loop (preserve, restore-check, restore-again): a second thread keeps
 *       edu #1 doing DMA round trips while the VMM works: from before
 *       preserving until the session is in the fd store, and after the
 *       kexec from the first look at guest RAM until after FINISH; every
 *       round trip must land.
 *   --punch-hole (restore-check): before the takeover, punch a hole into
 *       guest RAM and DMA into it: the page stays pinned (the file reads as
 *       a hole, a canary stays intact); after the takeover, which gets a
 *       new page table, DMA there lands in the file's new page.
 *   iommulu-vmm stray-probe --device BDF ... [--dma-mask MASK]
 *       a preserved device this kernel gave no translation: fill a locked
 *       32 MiB buffer with a pattern, have each device DMA (BAR0 through
 *       sysfs, whatever its bus-master bit says) to physical addresses
 *       inside it, and check that not one byte changed.  MASK: the edu's
 *       dma_mask property (QEMU clamps DMA addresses to it; default 2^28-1).
 *   --chain (restore-check, restore-again): after FINISH, preserve the VM
 *       again right away, with the files taken over and the new HWPT
 *       marked, into a new session in the fd store: the next live update.
 *   --irq (preserve, restore-check, restore-again): edu #1's MSI stays armed
 *       across the live update.  Before preserving, an interrupt raised by
 *       the device must reach the eventfd exactly once; after the session is
 *       in the fd store a DMA with completion interrupt is started and left
 *       unacknowledged.  After the kexec, before the device file is
 *       retrieved, another one is raised: the device still has MSI enabled
 *       and its message goes to a remapping entry the kernel keeps parked.
 *       After the takeover the VMM arms the vector again with a new eventfd,
 *       which must be signalled exactly once (the replay), and the handler
 *       must find the DMA completion in edu's interrupt status; then a fresh
 *       interrupt must be delivered exactly once.
 *
 *   iommulu-vmm register NAME --device BDF ... [options]
 *       the daemon path: as probe (one round trip per device), fill guest
 *       RAM with the pattern, then hand memfd, iommufd, cdevs and the HWPT
 *       id to iommu-lud with RegisterVM and keep running (SIGTERM ends it),
 *       as a VMM does.  iommu-lud preserves the VM at `systemctl kexec`.
 *   iommulu-vmm retrieve NAME [--device BDF ...] [--rebind] [options]
 *       after the kexec: VerifyVM (every check must pass), RetrieveVM,
 *       check the guest RAM pattern; for each device fd handed back, have
 *       edu DMA into the preserved IOVA and check it landed, then check
 *       that it came back bound and attached (as restore-check does);
 *       FinishVM.
 *       --irq (register, retrieve): as for preserve and restore-check, with
 *       VerifyVM reporting edu #1's MSI and the vector to re-arm.
 *       --rebind: then drop the retrieved device and iommufd files and
 *       attach each device afresh (new iommufd and HWPT mapping the
 *       retrieved memfd), with a DMA round trip: after FINISH the device
 *       is an ordinary vfio-pci device again.
 *
 * Options: --mem BYTES (64 MiB)  --iova ADDR (0x1000000)  --xfer BYTES (2048)
 *          --seed N  --session NAME (vmm-vm1)  --fdname NAME (vmm-session)
 *          --corrupt (preserve: damage guest RAM after preserving)
 *          --anon BYTES (also map BYTES of anonymous memory with IOMMU_IOAS_MAP
 *          right after guest RAM: a HWPT the kernel must refuse to preserve)
 * edu limits (QEMU 7.2): DMA addresses below 2^28 (its dma_mask), and a
 * transfer must stay inside its 4 KiB buffer at 0x40000 without touching
 * the last byte, so transfers are at most 2048 bytes from offset 0.
 *
 * Prints progress lines; each failure prints "IOMMULU-FAIL: ..." and the
 * program exits 1.
 */

#include <errno.h>
#include <linux/falloc.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

#include <iommulu/iommufd.h>
#include <iommulu/luo.h>
#include <iommulu/memfd.h>
#include <iommulu/pci.h>
#include <iommulu/plan.h>
#include <iommulu/vfio.h>

#include "pattern.h"

#define MAX_DEVICES 8

/* IOMMU_IOAS_MAP (user VA) from include/uapi/linux/iommufd.h, which
 * Debian 12's headers lack; only --anon uses it. */
struct vmm_ioas_map {
	uint32_t size;
	uint32_t flags;
	uint32_t ioas_id;
	uint32_t reserved;
	uint64_t user_va;
	uint64_t length;
	uint64_t iova;
};
#define VMM_IOMMU_IOAS_MAP _IO(';', 0x85)
#define VMM_IOAS_MAP_FIXED_IOVA (1u << 0)
#define VMM_IOAS_MAP_WRITEABLE (1u << 1)
#define VMM_IOAS_MAP_READABLE (1u << 2)
struct vmm_ioas_unmap {
	uint32_t size;
	uint32_t ioas_id;
	uint64_t iova;
	uint64_t length;
};
#define VMM_IOMMU_IOAS_UNMAP _IO(';', 0x86)

/* QEMU hw/misc/edu.c */
#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_REG_IDENT 0x00
#define EDU_REG_LIVENESS 0x04
#define EDU_REG_FACTORIAL 0x08
#define EDU_REG_STATUS 0x20
#define EDU_STATUS_COMPUTING 0x01
#define EDU_REG_IRQ_STATUS 0x24
#define EDU_REG_IRQ_RAISE 0x60
#define EDU_REG_IRQ_ACK 0x64
#define EDU_IRQ_TEST 0x1     /* the cause this VMM raises through 0x60 */
#define EDU_IRQ_DMA 0x100    /* raised by a DMA with EDU_DMA_IRQ */
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_COUNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_DMA_START 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_DMA_IRQ 0x4
#define EDU_BUFFER 0x40000
#define EDU_DMA_MASK ((1ull << 28) - 1)
#define EDU_XFER_MAX 2048

/* LUO tokens of the session this VMM preserves. */
#define TOKEN_MEMFD 1
#define TOKEN_IOMMUFD 2
#define TOKEN_STATE 3
#define TOKEN_DEVICE0 16
#define HWPT_TOKEN 0x1000

/*
 * What this VMM records before the kexec, as QEMU's CPR state does: the
 * iommufd object IDs it goes on with afterwards.  Kept in a sealed memfd of
 * the session (TOKEN_STATE).
 */
#define STATE_MAGIC 0x494f4d4d56535431ull /* "IOMMVST1" */
struct vmm_state {
	uint64_t magic;
	uint32_t ioas_id, hwpt_id, n_dev;
	uint32_t dev_id[MAX_DEVICES];
};

struct device {
	const char *bdf;
	int fd;
	uint32_t dev_id;
	volatile uint8_t *bar0;
	size_t bar0_size;
	int irq_efd;	/* --irq: eventfd of MSI vector 0, -1 until armed */
};

struct vmm {
	uint64_t mem, iova, xfer, seed, anon;
	const char *session_name, *fdname;
	int corrupt, rebind, crash, chain, dma_loop, punch_hole, irq;
	/* edu state written before the kexec by preserve_session() */
	int kept;
	int memfd, iommufd;
	uint8_t *ram;
	uint32_t ioas_id, hwpt_id;
	/* IDs recorded before the kexec are known (restored from TOKEN_STATE) */
	int ids_known;
	struct device dev[MAX_DEVICES];
	unsigned n_dev;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("vmm: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("IOMMULU-FAIL: vmm: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return -1;
}

static uint32_t rd32(const struct device *d, uint32_t reg)
{
	return *(volatile uint32_t *)(d->bar0 + reg);
}

static void wr32(const struct device *d, uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(d->bar0 + reg) = v;
}

static uint64_t rd64(const struct device *d, uint32_t reg)
{
	return *(volatile uint64_t *)(d->bar0 + reg);
}

static void wr64(const struct device *d, uint32_t reg, uint64_t v)
{
	*(volatile uint64_t *)(d->bar0 + reg) = v;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Guest RAM: a sealed memfd, mapped into this process for checking. */
static int ram_create(struct vmm *v)
{
	int r;

	r = iommulu_memfd_create("vmm-guest-ram", v->mem, &v->memfd);
	if (r < 0)
		return fail("guest RAM memfd of %" PRIu64 " bytes: %s", v->mem, strerror(-r));
	return 0;
}

static int ram_map(struct vmm *v)
{
	struct stat st;

	if (fstat(v->memfd, &st) < 0)
		return fail("fstat guest RAM memfd: %m");
	if ((uint64_t)st.st_size != v->mem)
		return fail("guest RAM memfd is %jd bytes, expected %" PRIu64, (intmax_t)st.st_size,
			    v->mem);
	v->ram = mmap(NULL, v->mem, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	if (v->ram == MAP_FAILED)
		return fail("mmap guest RAM: %m");
	return 0;
}

/* iommufd, IOAS with guest RAM at the fixed IOVA, one paging HWPT. */
static int iommu_setup(struct vmm *v)
{
	uint64_t iova = v->iova;
	int r;

	r = iommulu_iommufd_open(&v->iommufd);
	if (r < 0)
		return fail("open /dev/iommu: %s", strerror(-r));
	r = iommulu_iommufd_ioas_alloc(v->iommufd, &v->ioas_id);
	if (r < 0)
		return fail("IOMMU_IOAS_ALLOC: %s", strerror(-r));
	r = iommulu_iommufd_ioas_map_file(v->iommufd, v->ioas_id, v->memfd, 0, v->mem,
					  IOMMULU_MAP_FIXED_IOVA | IOMMULU_MAP_READABLE |
						  IOMMULU_MAP_WRITEABLE,
					  &iova);
	if (r < 0)
		return fail("IOMMU_IOAS_MAP_FILE of %" PRIu64 " bytes at IOVA %#" PRIx64 ": %s", v->mem,
			    v->iova, strerror(-r));
	say("guest RAM %" PRIu64 " MiB mapped at IOVA %#" PRIx64 " (ioas %u)", v->mem >> 20, iova,
	    v->ioas_id);
	if (v->anon) {
		/* Not guest RAM in a memfd: what a VMM must not do for a VM it
		 * wants preserved (the kernel refuses such a HWPT). */
		struct vmm_ioas_map map = {
			.size = sizeof(map),
			.flags = VMM_IOAS_MAP_FIXED_IOVA | VMM_IOAS_MAP_READABLE |
				 VMM_IOAS_MAP_WRITEABLE,
			.ioas_id = v->ioas_id,
			.length = v->anon,
			.iova = v->iova + v->mem,
		};
		void *p = mmap(NULL, v->anon, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);

		if (p == MAP_FAILED)
			return fail("mmap %" PRIu64 " bytes of anonymous memory: %m", v->anon);
		memset(p, 0x5a, v->anon);
		map.user_va = (uintptr_t)p;
		if (ioctl(v->iommufd, VMM_IOMMU_IOAS_MAP, &map) < 0)
			return fail("IOMMU_IOAS_MAP of anonymous memory at IOVA %#" PRIx64 ": %m",
				    (uint64_t)map.iova);
		say("%" PRIu64 " KiB of anonymous memory mapped at IOVA %#" PRIx64 " (IOMMU_IOAS_MAP)",
		    v->anon >> 10, (uint64_t)map.iova);
	}
	return 0;
}

static int device_open(struct vmm *v, struct device *d)
{
	char drv[IOMMULU_DRIVER_NAME_MAX];
	uint16_t ids[2];
	int r;

	r = iommulu_pci_driver(d->bdf, drv, sizeof(drv));
	if (r < 0)
		return fail("%s: driver: %s", d->bdf, strerror(-r));
	if (strcmp(drv, "vfio-pci") != 0)
		return fail("%s is bound to '%s', not vfio-pci", d->bdf, drv);
	r = iommulu_pci_config_read(d->bdf, 0, ids, sizeof(ids));
	if (r < 0)
		return fail("%s: config space: %s", d->bdf, strerror(-r));
	if (ids[0] != EDU_VENDOR || ids[1] != EDU_DEVICE)
		return fail("%s is %04x:%04x, not QEMU's edu (1234:11e8)", d->bdf, ids[0], ids[1]);
	r = iommulu_vfio_cdev_open(d->bdf, &d->fd);
	if (r < 0)
		return fail("%s: open vfio cdev: %s", d->bdf, strerror(-r));
	(void)v;
	return 0;
}

static int device_attach(struct vmm *v, struct device *d)
{
	int r;

	r = iommulu_vfio_bind_iommufd(d->fd, v->iommufd, &d->dev_id);
	if (r < 0)
		return fail("%s: VFIO_DEVICE_BIND_IOMMUFD: %s", d->bdf, strerror(-r));
	if (v->hwpt_id == 0) {
		r = iommulu_iommufd_hwpt_alloc(v->iommufd, d->dev_id, v->ioas_id, 0, &v->hwpt_id);
		if (r < 0)
			return fail("%s: IOMMU_HWPT_ALLOC: %s", d->bdf, strerror(-r));
		say("paging HWPT %u allocated on ioas %u", v->hwpt_id, v->ioas_id);
	}
	r = iommulu_vfio_attach_pt(d->fd, v->hwpt_id);
	if (r < 0)
		return fail("%s: VFIO_DEVICE_ATTACH_IOMMUFD_PT hwpt %u: %s", d->bdf, v->hwpt_id,
			    strerror(-r));
	say("%s bound to iommufd (dev_id %u), attached to HWPT %u", d->bdf, d->dev_id, v->hwpt_id);
	return 0;
}

/* Memory space + bus mastering, and BAR0 mapped for register access. */
static int device_enable(struct device *d)
{
	iommulu_vfio_region reg;
	uint16_t cmd;
	uint32_t x;
	void *p;
	int r;

	r = iommulu_vfio_config_read(d->fd, 0x04, &cmd, sizeof(cmd));
	if (r < 0)
		return fail("%s: read PCI command: %s", d->bdf, strerror(-r));
	cmd |= 0x0002 | 0x0004; /* memory space, bus master */
	r = iommulu_vfio_config_write(d->fd, 0x04, &cmd, sizeof(cmd));
	if (r < 0)
		return fail("%s: write PCI command: %s", d->bdf, strerror(-r));
	r = iommulu_vfio_region_info(d->fd, IOMMULU_VFIO_PCI_BAR0_REGION, &reg);
	if (r < 0)
		return fail("%s: BAR0 region info: %s", d->bdf, strerror(-r));
	p = mmap(NULL, reg.size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, (off_t)reg.offset);
	if (p == MAP_FAILED)
		return fail("%s: mmap BAR0 (%" PRIu64 " bytes): %m", d->bdf, reg.size);
	d->bar0 = p;
	d->bar0_size = reg.size;
	if ((rd32(d, EDU_REG_IDENT) & 0xff) != 0xed)
		return fail("%s: edu identification register reads %#x", d->bdf,
			    rd32(d, EDU_REG_IDENT));
	wr32(d, EDU_REG_LIVENESS, 0x12345678);
	x = rd32(d, EDU_REG_LIVENESS);
	if (x != ~0x12345678u)
		return fail("%s: edu liveness check read %#x, expected %#x", d->bdf, x, ~0x12345678u);
	return 0;
}

/*
 * After a kexec the retrieved vfio cdev is not bound to an iommufd, and
 * vfio refuses config and region access on it until the new VMM binds it.
 * The checks before that go through sysfs, as root on the host would: bus
 * mastering must still be on (the device kept running), and BAR0 is mapped
 * from resource0.
 */
/* Map edu's BAR0 through sysfs (as root, whatever driver is bound) and check
 * that it is an edu that answers. */
static int device_map_bar0(struct device *d)
{
	char path[128];
	struct stat st;
	uint32_t x;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource0", d->bdf);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail("%s: open %s: %m", d->bdf, path);
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return fail("%s: %s has no size", d->bdf, path);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return fail("%s: mmap %s: %m", d->bdf, path);
	d->bar0 = p;
	d->bar0_size = (size_t)st.st_size;
	if ((rd32(d, EDU_REG_IDENT) & 0xff) != 0xed)
		return fail("%s: edu identification register reads %#x", d->bdf,
			    rd32(d, EDU_REG_IDENT));
	wr32(d, EDU_REG_LIVENESS, 0x5a5a0f0f);
	x = rd32(d, EDU_REG_LIVENESS);
	if (x != ~0x5a5a0f0fu)
		return fail("%s: edu liveness check read %#x", d->bdf, x);
	return 0;
}

static int device_enable_sysfs(struct device *d)
{
	uint16_t cmd;
	int r;

	r = iommulu_pci_config_read(d->bdf, 0x04, &cmd, sizeof(cmd));
	if (r < 0)
		return fail("%s: read PCI command through sysfs: %s", d->bdf, strerror(-r));
	if (!(cmd & 0x0004))
		return fail("%s: bus mastering is off after the kexec (command %#x)", d->bdf, cmd);
	if (!(cmd & 0x0002))
		return fail("%s: memory space is off after the kexec (command %#x)", d->bdf, cmd);
	if (device_map_bar0(d) < 0)
		return -1;
	say("%s: bus mastering still on after the kexec (command %#x); BAR0 through sysfs", d->bdf,
	    cmd);
	return 0;
}

/*
 * edu has one DMA engine: a transfer is programmed and waited for under this
 * lock, so that the --dma-loop thread and the main thread take turns.
 */
static pthread_mutex_t edu_lock = PTHREAD_MUTEX_INITIALIZER;

/* edu's dma_mask property: QEMU clamps every DMA address to it (--dma-mask). */
static uint64_t edu_dma_mask = EDU_DMA_MASK;

static int edu_dma_locked(const struct device *d, uint64_t src, uint64_t dst, uint64_t count,
			  int to_ram, int irq);

/* One edu DMA; waits for the device to clear the start bit. */
static int edu_dma(const struct device *d, uint64_t src, uint64_t dst, uint64_t count,
		   int to_ram)
{
	int r;

	pthread_mutex_lock(&edu_lock);
	r = edu_dma_locked(d, src, dst, count, to_ram, 0);
	pthread_mutex_unlock(&edu_lock);
	return r;
}

static int edu_dma_locked(const struct device *d, uint64_t src, uint64_t dst, uint64_t count,
			  int to_ram, int irq)
{
	double t0 = now_s();

	if (count == 0 || count > EDU_XFER_MAX)
		return fail("edu transfer of %" PRIu64 " bytes (1..%d allowed)", count, EDU_XFER_MAX);
	if ((to_ram ? dst : src) + count - 1 > edu_dma_mask)
		return fail("DMA address %#" PRIx64 " is above edu's DMA mask %#" PRIx64,
			    to_ram ? dst : src, edu_dma_mask);
	if (rd64(d, EDU_REG_DMA_CMD) & EDU_DMA_START)
		return fail("%s: edu DMA engine busy", d->bdf);
	wr64(d, EDU_REG_DMA_SRC, src);
	wr64(d, EDU_REG_DMA_DST, dst);
	wr64(d, EDU_REG_DMA_COUNT, count);
	wr64(d, EDU_REG_DMA_CMD,
	     EDU_DMA_START | (to_ram ? EDU_DMA_TO_RAM : 0) | (irq ? EDU_DMA_IRQ : 0));
	/* edu runs the transfer from a 100 ms timer (virtual clock). */
	while (rd64(d, EDU_REG_DMA_CMD) & EDU_DMA_START) {
		if (now_s() - t0 > 10.0)
			return fail("%s: edu DMA did not complete in 10 s", d->bdf);
		usleep(1000);
	}
	return 0;
}

/*
 * Device state that only a reset clears: edu's factorial register.  Written
 * (10! = 3628800) right before preserving, it must read back after the kexec
 * and after the new VMM bound the device.
 */
#define EDU_KEPT_INPUT 10
#define EDU_KEPT_VALUE 3628800u

static int edu_set_kept(const struct device *d)
{
	double t0 = now_s();

	wr32(d, EDU_REG_FACTORIAL, EDU_KEPT_INPUT);
	while (rd32(d, EDU_REG_STATUS) & EDU_STATUS_COMPUTING) {
		if (now_s() - t0 > 5.0)
			return fail("%s: edu factorial did not complete", d->bdf);
		usleep(1000);
	}
	if (rd32(d, EDU_REG_FACTORIAL) != EDU_KEPT_VALUE)
		return fail("%s: edu factorial of %d reads %u", d->bdf, EDU_KEPT_INPUT,
			    rd32(d, EDU_REG_FACTORIAL));
	return 0;
}

static int edu_check_kept(const struct device *d, const char *when)
{
	uint32_t x = rd32(d, EDU_REG_FACTORIAL);

	if (x != EDU_KEPT_VALUE)
		return fail("%s: %s edu's factorial register reads %u, not the %u written before the "
			    "kexec: the device was reset",
			    d->bdf, when, x, EDU_KEPT_VALUE);
	say("%s: %s the device state written before the kexec reads back (no reset)", d->bdf,
	    when);
	return 0;
}

/*
 * Round trip through the IOMMU: pattern A at guest offset a goes
 * RAM -> device buffer, then device buffer -> guest offset b, which held
 * pattern B.  Only a DMA that really went through the HWPT in both
 * directions leaves A at b.
 */
static int dma_round_trip(struct vmm *v, const struct device *d, uint64_t a, uint64_t b,
			  uint64_t seed)
{
	size_t bad;

	pattern_fill(v->ram + a, v->xfer, seed, 0);
	pattern_fill(v->ram + b, v->xfer, ~seed, 0);
	if (edu_dma(d, v->iova + a, EDU_BUFFER, v->xfer, 0) < 0)
		return -1;
	if (edu_dma(d, EDU_BUFFER, v->iova + b, v->xfer, 1) < 0)
		return -1;
	bad = pattern_mismatch(v->ram + b, v->xfer, seed, 0);
	if (bad != v->xfer)
		return fail("%s: DMA round trip IOVA %#" PRIx64 " -> edu -> IOVA %#" PRIx64
			    ": byte %zu of guest RAM is %#x, expected the pattern",
			    d->bdf, v->iova + a, v->iova + b, bad, v->ram[b + bad]);
	say("%s: DMA round trip IOVA %#" PRIx64 " -> edu -> IOVA %#" PRIx64 ": %" PRIu64
	    " bytes OK",
	    d->bdf, v->iova + a, v->iova + b, v->xfer);
	return 0;
}

/*
 * --dma-loop: while the VMM works on the live update (preserving; after the
 * kexec from the first look at guest RAM until after FINISH), a second
 * thread keeps edu #1 doing DMA round trips through its own BAR0 mapping
 * (sysfs resource0, which stays valid whoever owns the device), between a
 * guest RAM region and a part of edu's buffer that nothing else uses.
 * Every round trip must land; afterwards the region holds the guest RAM
 * pattern again, so whole-RAM checks stay valid.
 */
#define LOOP_A 0x30000
#define LOOP_B 0x31000
#define LOOP_BUF (EDU_BUFFER + 0x800)
#define LOOP_XFER 1024

struct dma_loop {
	pthread_t thread;
	struct vmm *v;
	struct device dev;
	atomic_int stop;
	unsigned long rounds;
	int failed;
	double t0;
};

static struct dma_loop loop;

static void *dma_loop_run(void *arg)
{
	struct dma_loop *l = arg;
	struct vmm *v = l->v;

	while (!atomic_load(&l->stop)) {
		uint64_t seed = v->seed ^ 0x100bull ^ (l->rounds << 20);
		size_t bad;

		pattern_fill(v->ram + LOOP_A, LOOP_XFER, seed, 0);
		pattern_fill(v->ram + LOOP_B, LOOP_XFER, ~seed, 0);
		if (edu_dma(&l->dev, v->iova + LOOP_A, LOOP_BUF, LOOP_XFER, 0) < 0 ||
		    edu_dma(&l->dev, LOOP_BUF, v->iova + LOOP_B, LOOP_XFER, 1) < 0) {
			l->failed = 1;
			break;
		}
		bad = pattern_mismatch(v->ram + LOOP_B, LOOP_XFER, seed, 0);
		if (bad != LOOP_XFER) {
			fail("%s: DMA loop round trip %lu did not land (byte %zu of IOVA %#" PRIx64
			     ")", l->dev.bdf, l->rounds, bad, v->iova + LOOP_B);
			l->failed = 1;
			break;
		}
		l->rounds++;
	}
	/* Leave the guest RAM pattern behind */
	pattern_fill(v->ram + LOOP_A, LOOP_XFER, v->seed, LOOP_A);
	pattern_fill(v->ram + LOOP_B, LOOP_XFER, v->seed, LOOP_B);
	return NULL;
}

static int dma_loop_start(struct vmm *v, const char *when)
{
	struct device *d = &loop.dev;
	int r;

	if (!v->dma_loop || !v->n_dev || loop.v)
		return 0;
	/* Its own BAR0 mapping, which stays valid whoever owns the device */
	*d = (struct device){ .bdf = v->dev[0].bdf, .fd = -1 };
	if (device_map_bar0(d) < 0)
		return fail("DMA loop: cannot map BAR0 of %s", d->bdf);
	loop.v = v;
	loop.t0 = now_s();
	r = pthread_create(&loop.thread, NULL, dma_loop_run, &loop);
	if (r) {
		loop.v = NULL;
		return fail("DMA loop: pthread_create: %s", strerror(r));
	}
	say("%s: DMA loop started %s: round trips of %d bytes IOVA %#" PRIx64 " -> edu -> IOVA "
	    "%#" PRIx64 ", without pause", d->bdf, when, LOOP_XFER, v->iova + LOOP_A,
	    v->iova + LOOP_B);
	return 0;
}

static int dma_loop_stop(const char *when)
{
	if (!loop.v)
		return 0;
	atomic_store(&loop.stop, 1);
	pthread_join(loop.thread, NULL);
	munmap((void *)loop.dev.bar0, loop.dev.bar0_size);
	loop.v = NULL;
	atomic_store(&loop.stop, 0);
	if (loop.failed)
		return fail("%s: DMA loop failed after %lu round trips", loop.dev.bdf, loop.rounds);
	if (!loop.rounds)
		return fail("%s: DMA loop made no round trip", loop.dev.bdf);
	say("%s: DMA loop stopped %s: %lu round trips in %.1f s, every one landed", loop.dev.bdf,
	    when, loop.rounds, now_s() - loop.t0);
	return 0;
}

/*
 * DMA from the device to an IOVA outside every mapping must be blocked by
 * the IOMMU (QEMU logs a DMAR fault, the guest kernel too): the guest RAM
 * stays as it was.
 */
static int dma_unmapped(struct vmm *v, const struct device *d, uint64_t seed)
{
	uint64_t hole = v->iova + v->mem + 0x100000;
	uint64_t h0, h1;

	if (hole > EDU_DMA_MASK)
		hole = v->iova - 0x100000;
	pattern_fill(v->ram, v->xfer, seed, 0);
	if (edu_dma(d, v->iova, EDU_BUFFER, v->xfer, 0) < 0)
		return -1;
	h0 = pattern_hash(v->ram, v->mem);
	if (edu_dma(d, EDU_BUFFER, hole, v->xfer, 1) < 0)
		return -1;
	h1 = pattern_hash(v->ram, v->mem);
	if (h0 != h1)
		return fail("%s: DMA to unmapped IOVA %#" PRIx64 " changed guest RAM", d->bdf, hole);
	say("%s: DMA to unmapped IOVA %#" PRIx64 " blocked, guest RAM unchanged", d->bdf, hole);
	return 0;
}

/*
 * --irq.  A VMM arms edu's MSI vector 0 with an eventfd, as QEMU does for a
 * guest's MSI; the eventfd's count is the number of interrupts the guest
 * would see.
 */
static int msi_arm(const struct device *d, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	struct vfio_irq_set *set = (struct vfio_irq_set *)buf;

	memset(buf, 0, sizeof(buf));
	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSI_IRQ_INDEX;
	set->count = 1;
	memcpy(set->data, &efd, sizeof(int32_t));
	if (ioctl(d->fd, VFIO_DEVICE_SET_IRQS, set) < 0)
		return fail("%s: VFIO_DEVICE_SET_IRQS (MSI vector 0): %m", d->bdf);
	return 0;
}

/* Arm MSI vector 0 with a new eventfd, which becomes d->irq_efd. */
static int msi_arm_new(struct device *d)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	if (efd < 0)
		return fail("eventfd: %m");
	if (msi_arm(d, efd) < 0) {
		close(efd);
		return -1;
	}
	if (d->irq_efd >= 0)
		close(d->irq_efd);
	d->irq_efd = efd;
	return 0;
}

/* What the eventfd counted within @timeout_s seconds; 0 if nothing came. */
static uint64_t efd_wait(int efd, double timeout_s)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t n;

	if (poll(&p, 1, (int)(timeout_s * 1000)) <= 0 || read(efd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

/* Raise an interrupt through edu's register: it must be delivered once. */
static int irq_fire_check(const struct device *d, const char *when)
{
	uint64_t n;

	wr32(d, EDU_REG_IRQ_RAISE, EDU_IRQ_TEST);
	n = efd_wait(d->irq_efd, 5.0);
	wr32(d, EDU_REG_IRQ_ACK, EDU_IRQ_TEST);
	if (n != 1)
		return fail("%s: %s an interrupt raised by the device counted %" PRIu64
			    " on the eventfd, expected 1", d->bdf, when, n);
	n = efd_wait(d->irq_efd, 0.3);
	if (n)
		return fail("%s: %s the interrupt was delivered again (%" PRIu64 ")", d->bdf, when,
			    n);
	say("%s: %s an interrupt raised by the device was delivered exactly once", d->bdf, when);
	return 0;
}

/* Before preserving: MSI vector 0 armed (once), and an interrupt delivered. */
static int irq_before_preserve(struct vmm *v)
{
	struct device *d = &v->dev[0];

	if (d->irq_efd < 0) {
		if (msi_arm_new(d) < 0)
			return -1;
		say("%s: MSI vector 0 armed with an eventfd", d->bdf);
	}
	return irq_fire_check(d, "before preserving,");
}

/*
 * A DMA whose completion raises an interrupt, left unacknowledged: edu keeps
 * the cause in its interrupt status until a handler acknowledges it.  After
 * the kexec and before the re-arm the device's MSI goes to a parked
 * remapping entry, which must drop it.
 */
static int irq_pending_dma(struct vmm *v, const struct device *d, const char *when)
{
	uint32_t status;
	int r;

	pthread_mutex_lock(&edu_lock);
	r = edu_dma_locked(d, v->iova, EDU_BUFFER, 64, 0, 1);
	pthread_mutex_unlock(&edu_lock);
	if (r < 0)
		return -1;
	status = rd32(d, EDU_REG_IRQ_STATUS);
	if (!(status & EDU_IRQ_DMA))
		return fail("%s: %s edu's interrupt status %#x lacks the DMA completion", d->bdf,
			    when, status);
	say("%s: %s a DMA completed with an interrupt nobody acknowledges (status %#x)", d->bdf,
	    when, status);
	return 0;
}

/*
 * After the takeover: arm MSI vector 0 again with a new eventfd.  The kernel
 * signals it once (the replay), and the handler finds the DMA completions
 * raised across the kexec in edu's interrupt status.  Then a fresh
 * interrupt is delivered exactly once.
 */
static int irq_rearm(struct device *d)
{
	uint32_t status;
	uint64_t n;

	if (msi_arm_new(d) < 0)
		return -1;
	n = efd_wait(d->irq_efd, 5.0);
	if (n != 1)
		return fail("%s: re-arming MSI vector 0 after the kexec counted %" PRIu64
			    " on its eventfd, expected 1 (the replay)", d->bdf, n);
	status = rd32(d, EDU_REG_IRQ_STATUS);
	if (!(status & EDU_IRQ_DMA))
		return fail("%s: after the replay edu's interrupt status %#x lacks the DMA "
			    "completion raised across the kexec", d->bdf, status);
	wr32(d, EDU_REG_IRQ_ACK, status);
	say("%s: MSI vector 0 re-armed: signalled once (replay); the handler finds the DMA "
	    "completion raised across the kexec (status %#x) and acknowledges it", d->bdf, status);
	n = efd_wait(d->irq_efd, 0.3);
	if (n)
		return fail("%s: the re-armed vector was signalled again (%" PRIu64 ")", d->bdf, n);
	return irq_fire_check(d, "after the re-arm,");
}

/*
 * The device file retrieved after the kexec comes back bound to the
 * retrieved iommufd under its old device ID and attached to its old HWPT:
 * the new VMM makes no bind and no attach call.  Check that, with config
 * space and BAR0 now through vfio, and that DMA goes through it.
 */
static int device_takeover(struct vmm *v, struct device *d)
{
	uint32_t id2, hwpt2;
	uint16_t cmd;
	int r;

	r = iommulu_vfio_config_read(d->fd, 0x04, &cmd, sizeof(cmd));
	if (r < 0)
		return fail("%s: config space of the retrieved cdev, with no bind call: %s", d->bdf,
			    strerror(-r));
	if (!(cmd & 0x0004))
		return fail("%s: bus mastering is off on the retrieved cdev (command %#x)", d->bdf,
			    cmd);
	r = iommulu_vfio_bind_iommufd(d->fd, v->iommufd, &id2);
	if (r != -EINVAL)
		return fail("%s: binding the retrieved cdev again: %s, expected EINVAL (already "
			    "bound)", d->bdf, r < 0 ? strerror(-r) : "succeeded");
	if (v->ids_known) {
		/* The device object is back under its old ID: HWPT_ALLOC takes it. */
		r = iommulu_iommufd_hwpt_alloc(v->iommufd, d->dev_id, v->ioas_id, 0, &hwpt2);
		if (r < 0)
			return fail("%s: IOMMU_HWPT_ALLOC with the old device ID %u on the old IOAS "
				    "%u: %s", d->bdf, d->dev_id, v->ioas_id, strerror(-r));
		r = iommulu_iommufd_destroy(v->iommufd, hwpt2);
		if (r < 0)
			return fail("IOMMU_DESTROY %u: %s", hwpt2, strerror(-r));
	}
	/* Attaching the HWPT it is attached to changes nothing. */
	r = iommulu_vfio_attach_pt(d->fd, v->hwpt_id);
	if (r < 0)
		return fail("%s: VFIO_DEVICE_ATTACH_IOMMUFD_PT to its own HWPT %u: %s", d->bdf,
			    v->hwpt_id, strerror(-r));
	if (d->bar0)
		munmap((void *)d->bar0, d->bar0_size);
	d->bar0 = NULL;
	if (device_enable(d) < 0)
		return -1;
	if (v->kept && edu_check_kept(d, "through the retrieved cdev,") < 0)
		return -1;
	if (v->irq && d == &v->dev[0] && irq_rearm(d) < 0)
		return -1;
	if (dma_round_trip(v, d, 0x5000, 0x6000, v->seed ^ 0xbeef) < 0)
		return -1;
	if (v->ids_known)
		say("%s: retrieved bound (device ID %u) and attached to HWPT %u on IOAS %u, the IDs "
		    "it had: no bind, no attach, no reset; DMA OK",
		    d->bdf, d->dev_id, v->hwpt_id, v->ioas_id);
	else
		say("%s: retrieved bound and attached to HWPT %u: no bind, no attach, no reset; "
		    "DMA OK",
		    d->bdf, v->hwpt_id);
	return 0;
}

/*
 * The HWPT and IOAS of the retrieved iommufd are the ones the VMM had:
 * IOMMU_HWPT_LIVEUPDATE_QUERY by the token names the recorded IDs.
 */
static int check_restored_ids(struct vmm *v, uint64_t token, bool want_created)
{
	uint32_t hwpt_id, ioas_id;
	bool created;
	int r;

	r = iommulu_iommufd_hwpt_query(v->iommufd, token, &hwpt_id, &ioas_id, &created);
	if (r < 0)
		return fail("IOMMU_HWPT_LIVEUPDATE_QUERY of token %#" PRIx64 ": %s", token,
			    strerror(-r));
	if (!v->ids_known) {
		v->hwpt_id = hwpt_id;
		v->ioas_id = ioas_id;
	} else if (hwpt_id != v->hwpt_id || ioas_id != v->ioas_id) {
		return fail("restored HWPT %u on IOAS %u, but the VMM had HWPT %u on IOAS %u",
			    hwpt_id, ioas_id, v->hwpt_id, v->ioas_id);
	}
	if (created != want_created)
		return fail("HWPT %u %s, expected %s", hwpt_id,
			    created ? "exists" : "is only reserved",
			    want_created ? "to exist once its devices are retrieved"
					 : "only reserved until a device is retrieved");
	say("retrieved iommufd: HWPT %u on IOAS %u under the IDs of before the kexec (%s)",
	    hwpt_id, ioas_id, created ? "created with its devices" : "HWPT ID reserved");
	return 0;
}

/* Read the IDs recorded before the kexec (preserve_session()). */
static int state_load(struct vmm *v, int session)
{
	struct vmm_state st;
	int fd, r;

	r = iommulu_luo_session_retrieve_fd(session, TOKEN_STATE, &fd);
	if (r < 0)
		return fail("retrieve the VMM state memfd: %s", strerror(-r));
	r = pread(fd, &st, sizeof(st), 0) == (ssize_t)sizeof(st) ? 0 : -EIO;
	close(fd);
	if (r < 0 || st.magic != STATE_MAGIC || st.n_dev != v->n_dev)
		return fail("VMM state memfd: bad contents");
	v->ioas_id = st.ioas_id;
	v->hwpt_id = st.hwpt_id;
	for (unsigned i = 0; i < v->n_dev; i++)
		v->dev[i].dev_id = st.dev_id[i];
	v->ids_known = 1;
	say("recorded before the kexec: IOAS %u, HWPT %u, %u device ID(s)", v->ioas_id, v->hwpt_id,
	    v->n_dev);
	return 0;
}

/* A sealed memfd with the IDs the VMM goes on with after the kexec. */
static int state_save(struct vmm *v, int session)
{
	struct vmm_state st = {
		.magic = STATE_MAGIC,
		.ioas_id = v->ioas_id,
		.hwpt_id = v->hwpt_id,
		.n_dev = v->n_dev,
	};
	int fd, r;

	for (unsigned i = 0; i < v->n_dev; i++)
		st.dev_id[i] = v->dev[i].dev_id;
	fd = memfd_create("iommulu-vmm-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return fail("memfd_create for the VMM state: %m");
	if (pwrite(fd, &st, sizeof(st), 0) != (ssize_t)sizeof(st) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_WRITE) < 0) {
		close(fd);
		return fail("writing the VMM state memfd: %m");
	}
	r = iommulu_luo_session_preserve_fd(session, fd, TOKEN_STATE);
	close(fd);
	if (r < 0)
		return fail("preserve the VMM state memfd: %s", strerror(-r));
	return 0;
}

/*
 * The new VMM's part after the checks: retrieve the iommufd (its objects
 * under their old IDs), then the devices, which come back bound and
 * attached, then FINISH, which the kernel allows only now.
 */
static int takeover_and_finish(struct vmm *v, int session)
{
	int r;

	if (v->n_dev) {
		r = iommulu_luo_session_retrieve_fd(session, TOKEN_IOMMUFD, &v->iommufd);
		if (r < 0)
			return fail("retrieve iommufd: %s", strerror(-r));
		if (check_restored_ids(v, HWPT_TOKEN, false) < 0)
			return -1;
		for (unsigned i = 0; i < v->n_dev; i++) {
			struct device *d = &v->dev[i];

			r = iommulu_luo_session_retrieve_fd(session, TOKEN_DEVICE0 + i, &d->fd);
			if (r < 0)
				return fail("retrieve vfio cdev of %s: %s", d->bdf, strerror(-r));
			if (device_takeover(v, d) < 0)
				return -1;
		}
		if (check_restored_ids(v, HWPT_TOKEN, true) < 0)
			return -1;
	}
	r = iommulu_luo_session_finish(session);
	if (r < 0)
		return fail("FINISH after the takeover: %s", strerror(-r));
	return 0;
}

static int setup_vm(struct vmm *v)
{
	if (ram_create(v) < 0 || ram_map(v) < 0 || iommu_setup(v) < 0)
		return -1;
	for (unsigned i = 0; i < v->n_dev; i++)
		if (device_open(v, &v->dev[i]) < 0 || device_attach(v, &v->dev[i]) < 0 ||
		    device_enable(&v->dev[i]) < 0)
			return -1;
	return 0;
}

static int cmd_probe(struct vmm *v)
{
	if (setup_vm(v) < 0)
		return 1;
	for (unsigned i = 0; i < v->n_dev; i++) {
		/* Both ends well apart, the second in the last page of guest RAM. */
		if (dma_round_trip(v, &v->dev[i], 0x2000 + i * 0x10000, v->mem - 0x1000,
				   v->seed + i) < 0)
			return 1;
		if (dma_unmapped(v, &v->dev[i], v->seed ^ 0xdead) < 0)
			return 1;
	}
	say("probe: %u device(s) did DMA through iommufd HWPT %u in both directions", v->n_dev,
	    v->hwpt_id);
	return 0;
}

static int push_fdstore(int fd, const char *fdname)
{
	char state[128];
	int r;

	snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", fdname);
	r = sd_pid_notify_with_fds(0, 0, state, &fd, 1);
	if (r <= 0)
		return fail("FDSTORE=1 %s: %s", fdname, r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET");
	r = sd_notify_barrier(0, 5 * 1000000ull);
	if (r < 0)
		return fail("sd_notify_barrier: %s", strerror(-r));
	return 0;
}

/*
 * Fill guest RAM with the pattern the next kernel must find, mark the HWPT
 * and preserve memfd, iommufd and devices in a new session that goes into
 * the unit's fd store.  Also what a VMM does again right after a live
 * update (--chain), with the files it took over: no re-setup.
 */
static int preserve_session(struct vmm *v)
{
	int luo, session, r;

	/* With the DMA loop running the caller filled it before starting it */
	if (!loop.v)
		pattern_fill(v->ram, v->mem, v->seed, 0);
	say("guest RAM filled with pattern %#" PRIx64 " (fnv %#" PRIx64 ")", v->seed,
	    pattern_hash(v->ram, v->mem));
	for (unsigned i = 0; i < v->n_dev; i++)
		if (edu_set_kept(&v->dev[i]) < 0)
			return -1;
	if (v->irq && irq_before_preserve(v) < 0)
		return -1;

	r = iommulu_iommufd_hwpt_mark_preserve(v->iommufd, v->hwpt_id, HWPT_TOKEN);
	if (r < 0)
		return fail("IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE hwpt %u: %s%s", v->hwpt_id,
			    strerror(-r), r == -ENOTTY ? " (kernel series not applied)" : "");
	luo = iommulu_luo_open(5000);
	if (luo < 0)
		return fail("open /dev/liveupdate: %s", strerror(-luo));
	r = iommulu_luo_session_create(luo, v->session_name, &session);
	close(luo);
	if (r < 0)
		return fail("create session %s: %s", v->session_name, strerror(-r));
	/* Order the kernel requires: memfds, then the iommufd, then devices. */
	r = iommulu_luo_session_preserve_fd(session, v->memfd, TOKEN_MEMFD);
	if (r < 0)
		return fail("preserve guest RAM memfd: %s", strerror(-r));
	if (v->n_dev && state_save(v, session) < 0)
		return -1;
	r = iommulu_luo_session_preserve_fd(session, v->iommufd, TOKEN_IOMMUFD);
	if (r < 0)
		return fail("preserve iommufd: %s", strerror(-r));
	for (unsigned i = 0; i < v->n_dev; i++) {
		r = iommulu_luo_session_preserve_fd(session, v->dev[i].fd, TOKEN_DEVICE0 + i);
		if (r < 0)
			return fail("preserve vfio cdev of %s: %s", v->dev[i].bdf, strerror(-r));
	}
	say("session %s: memfd, iommufd (HWPT %u marked) and %u device(s) preserved",
	    v->session_name, v->hwpt_id, v->n_dev);
	if (v->corrupt) {
		v->ram[v->mem / 3] ^= 0xa5;
		say("corrupted guest RAM byte %" PRIu64 " after preserving (--corrupt)", v->mem / 3);
	}
	if (push_fdstore(session, v->fdname) < 0)
		return -1;
	say("session pushed into the fd store as %s", v->fdname);
	return 0;
}

/* Preserve, then (--irq) leave a DMA completion interrupt pending. */
static int preserve_and_pend(struct vmm *v)
{
	if (preserve_session(v) < 0)
		return -1;
	if (v->irq && irq_pending_dma(v, &v->dev[0], "after preserving,") < 0)
		return -1;
	return 0;
}

static int cmd_preserve(struct vmm *v)
{
	if (setup_vm(v) < 0)
		return 1;
	for (unsigned i = 0; i < v->n_dev; i++)
		if (dma_round_trip(v, &v->dev[i], 0x2000, 0x3000, v->seed + i) < 0)
			return 1;
	pattern_fill(v->ram, v->mem, v->seed, 0);
	if (dma_loop_start(v, "before preserving") < 0 || preserve_session(v) < 0)
		return 1;
	if (dma_loop_stop("with the session in the fd store") < 0)
		return 1;
	return v->irq && irq_pending_dma(v, &v->dev[0], "after preserving,") < 0;
}

/*
 * After FINISH the restored iommufd is an ordinary one: map new memory into
 * the restored IOAS and DMA into it, unmap the old guest RAM (DMA to it is
 * then blocked), replace the HWPT by a new one, detach, destroy everything.
 */
static int after_finish(struct vmm *v)
{
	uint64_t len = 4ull << 20, iova = v->iova + v->mem + (16ull << 20), seed = v->seed ^ 0x5eed;
	struct vmm_ioas_unmap unmap = {
		.size = sizeof(unmap),
		.ioas_id = v->ioas_id,
		.iova = v->iova,
		.length = v->mem,
	};
	struct device *d = &v->dev[0];
	uint32_t hwpt2;
	uint64_t h0;
	uint8_t *p;
	size_t bad;
	int fd, r;

	if (iova + len > EDU_DMA_MASK + 1)
		return fail("no room for new memory below edu's DMA mask");
	r = iommulu_memfd_create("vmm-new-ram", len, &fd);
	if (r < 0)
		return fail("memfd for new memory: %s", strerror(-r));
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return fail("mmap new memory: %m");
	r = iommulu_iommufd_ioas_map_file(v->iommufd, v->ioas_id, fd, 0, len,
					  IOMMULU_MAP_FIXED_IOVA | IOMMULU_MAP_READABLE |
						  IOMMULU_MAP_WRITEABLE,
					  &iova);
	if (r < 0)
		return fail("map new memory into the restored IOAS %u: %s", v->ioas_id, strerror(-r));
	pattern_fill(p, v->xfer, seed, 0);
	pattern_fill(p + 0x1000, v->xfer, ~seed, 0);
	if (edu_dma(d, iova, EDU_BUFFER, v->xfer, 0) < 0 ||
	    edu_dma(d, EDU_BUFFER, iova + 0x1000, v->xfer, 1) < 0)
		return -1;
	bad = pattern_mismatch(p + 0x1000, v->xfer, seed, 0);
	if (bad != v->xfer)
		return fail("%s: DMA into memory mapped after FINISH did not land (byte %zu)", d->bdf,
			    bad);
	say("after FINISH: new memory mapped into the restored IOAS at %#" PRIx64 ", DMA into it OK",
	    iova);

	if (ioctl(v->iommufd, VMM_IOMMU_IOAS_UNMAP, &unmap) < 0 || unmap.length != v->mem)
		return fail("unmap the old guest RAM from the restored IOAS: %m");
	h0 = pattern_hash(v->ram, v->mem);
	if (edu_dma(d, iova, EDU_BUFFER, v->xfer, 0) < 0 ||
	    edu_dma(d, EDU_BUFFER, v->iova + 0x2000, v->xfer, 1) < 0)
		return -1;
	if (pattern_hash(v->ram, v->mem) != h0)
		return fail("%s: DMA to the unmapped old guest RAM changed it", d->bdf);
	say("after FINISH: old guest RAM unmapped; DMA to it blocked, RAM unchanged");

	r = iommulu_iommufd_hwpt_alloc(v->iommufd, d->dev_id, v->ioas_id, 0, &hwpt2);
	if (r < 0)
		return fail("a second HWPT on the restored IOAS: %s", strerror(-r));
	for (unsigned i = 0; i < v->n_dev; i++) {
		r = iommulu_vfio_attach_pt(v->dev[i].fd, hwpt2);
		if (r < 0)
			return fail("%s: replace HWPT %u by %u: %s", v->dev[i].bdf, v->hwpt_id, hwpt2,
				    strerror(-r));
	}
	pattern_fill(p + 0x2000, v->xfer, ~seed, 0);
	if (edu_dma(d, EDU_BUFFER, iova + 0x2000, v->xfer, 1) < 0)
		return -1;
	bad = pattern_mismatch(p + 0x2000, v->xfer, seed, 0);
	if (bad != v->xfer)
		return fail("%s: DMA after replacing the HWPT did not land (byte %zu)", d->bdf, bad);
	say("after FINISH: HWPT %u replaced by HWPT %u, DMA OK", v->hwpt_id, hwpt2);

	for (unsigned i = 0; i < v->n_dev; i++) {
		r = iommulu_vfio_detach_pt(v->dev[i].fd);
		if (r < 0)
			return fail("%s: detach: %s", v->dev[i].bdf, strerror(-r));
	}
	uint32_t ids[] = { hwpt2, v->hwpt_id, v->ioas_id };
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		r = iommulu_iommufd_destroy(v->iommufd, ids[i]);
		if (r < 0)
			return fail("IOMMU_DESTROY %u: %s", ids[i], strerror(-r));
	}
	say("after FINISH: detached, HWPTs %u and %u and IOAS %u destroyed", hwpt2, v->hwpt_id,
	    v->ioas_id);
	munmap(p, len);
	close(fd);
	return 0;
}

static int hole_before_takeover(struct vmm *v);
static int hole_after_takeover(struct vmm *v);

/* Physical address of the page mapped at @va (pagemap; needs root). */
static int phys_addr(int pagemap, const void *va, uint64_t *pa)
{
	uint64_t e, page = (uint64_t)(uintptr_t)va / 4096;

	if (pread(pagemap, &e, sizeof(e), (off_t)(page * sizeof(e))) != sizeof(e))
		return fail("read /proc/self/pagemap: %m");
	if (!(e >> 63) || !(e & ((1ull << 55) - 1)))
		return fail("/proc/self/pagemap shows no frame for %p (entry %#" PRIx64 ")", va, e);
	*pa = (e & ((1ull << 55) - 1)) * 4096 + (uint64_t)(uintptr_t)va % 4096;
	return 0;
}

#define STRAY_BUF (32ull << 20)

/*
 * stray-probe: a preserved device that this kernel did not give a
 * translation must not reach its memory.  Fill a locked buffer with a
 * pattern and have each device DMA into physical addresses inside it, the
 * addresses an identity domain or switched-off translation would let the
 * DMA reach.  Whatever the IOMMU then does (block and fault) or the kernel
 * did before (clear bus mastering), not one byte of the buffer may change.
 * BAR0 through sysfs: the device may have no driver state at all yet.
 */
static int cmd_stray_probe(struct vmm *v)
{
	uint64_t seed = v->seed ^ 0x7374726179ull, pa = 0;
	uint8_t *buf;
	size_t bad;
	int pagemap;

	buf = mmap(NULL, STRAY_BUF, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED)
		return fail("stray-probe: mmap %llu MiB: %m", STRAY_BUF >> 20), 1;
	if (mlock(buf, STRAY_BUF) < 0)
		return fail("stray-probe: mlock: %m"), 1;
	pattern_fill(buf, STRAY_BUF, seed, 0);
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0)
		return fail("open /proc/self/pagemap: %m"), 1;

	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];
		size_t off = STRAY_BUF / (v->n_dev + 1) * (i + 1);
		uint16_t cmd;
		int r;

		r = iommulu_pci_config_read(d->bdf, 0x04, &cmd, sizeof(cmd));
		if (r < 0)
			return fail("%s: read PCI command through sysfs: %s", d->bdf, strerror(-r)), 1;
		if (device_map_bar0(d) < 0)
			return 1;
		/* The first page of the buffer from off on that edu can address */
		for (off -= off % 4096; off < STRAY_BUF; off += 4096) {
			if (phys_addr(pagemap, buf + off, &pa) < 0)
				return 1;
			if (pa + v->xfer - 1 <= edu_dma_mask)
				break;
		}
		if (off >= STRAY_BUF)
			return fail("%s: no page of the fill buffer is below edu's DMA mask %#" PRIx64
				    " (run the device with a wider dma_mask)", d->bdf, edu_dma_mask), 1;
		say("%s: bus mastering %s (command %#x); edu DMA to physical %#" PRIx64
		    " (%zu bytes into the fill buffer)", d->bdf, cmd & 0x0004 ? "on" : "off", cmd, pa,
		    off);
		if (edu_dma(d, EDU_BUFFER, pa, v->xfer, 1) < 0)
			return 1;
	}
	close(pagemap);

	bad = pattern_mismatch(buf, STRAY_BUF, seed, 0);
	if (bad != STRAY_BUF) {
		int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

		if (fd >= 0 && phys_addr(fd, buf + bad, &pa) == 0)
			return fail("stray DMA: byte %zu of the fill buffer (physical %#" PRIx64
				    ") changed", bad, pa), 1;
		return fail("stray DMA: byte %zu of the fill buffer changed", bad), 1;
	}
	say("no stray byte: the %llu MiB fill buffer is intact after %u DMA(s) into it",
	    STRAY_BUF >> 20, v->n_dev);
	munmap(buf, STRAY_BUF);
	return 0;
}

static int cmd_restore_check(struct vmm *v)
{
	char **names = NULL, drv[IOMMULU_DRIVER_NAME_MAX], state[128];
	int n, session = -1, r;
	size_t bad;

	v->kept = 1;

	n = sd_listen_fds_with_names(0, &names);
	if (n < 0)
		return fail("sd_listen_fds_with_names: %s", strerror(-n)), 1;
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], v->fdname) == 0)
			session = SD_LISTEN_FDS_START + i;
	if (session < 0)
		return fail("no fd named %s in the fd store (%d fds)", v->fdname, n), 1;

	r = iommulu_luo_session_retrieve_fd(session, TOKEN_MEMFD, &v->memfd);
	if (r < 0)
		return fail("retrieve guest RAM memfd: %s", strerror(-r)), 1;
	if (ram_map(v) < 0)
		return 1;
	bad = pattern_mismatch(v->ram, v->mem, v->seed, 0);
	if (bad != v->mem)
		return fail("pre-kexec guest RAM content lost: byte %zu differs", bad), 1;
	say("pre-kexec guest RAM content intact (%" PRIu64 " MiB)", v->mem >> 20);
	if (v->n_dev && state_load(v, session) < 0)
		return 1;
	if (dma_loop_start(v, "after the kexec, before any device file is retrieved") < 0)
		return 1;

	/*
	 * Before any device file is retrieved: the devices must already DMA
	 * through the preserved translation (BAR0 through sysfs).
	 */
	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];

		r = iommulu_pci_driver(d->bdf, drv, sizeof(drv));
		if (r < 0 || strcmp(drv, "vfio-pci") != 0)
			return fail("%s not bound to vfio-pci after kexec (%s)", d->bdf,
				    r < 0 ? strerror(-r) : drv), 1;
		if (device_enable_sysfs(d) < 0 || edu_check_kept(d, "after the kexec") < 0)
			return 1;
		pattern_fill(v->ram + 0x4000, v->xfer, v->seed ^ 0xf00d, 0);
		if (edu_dma(d, v->iova + 0x4000, EDU_BUFFER, v->xfer, 0) < 0 ||
		    edu_dma(d, EDU_BUFFER, v->iova + 0x8000, v->xfer, 1) < 0)
			return 1;
		bad = pattern_mismatch(v->ram + 0x8000, v->xfer, v->seed ^ 0xf00d, 0);
		if (bad != v->xfer)
			return fail("%s: DMA after kexec did not land in the preserved memfd "
				    "(byte %zu)", d->bdf, bad), 1;
		say("%s: device DMA after kexec landed in preserved guest RAM: OK", d->bdf);
		if (v->irq && i == 0 &&
		    irq_pending_dma(v, d, "after the kexec, before the re-arm (MSI to a parked "
				    "remapping entry),") < 0)
			return 1;
		/* DMA ownership stays claimed: a second iommufd cannot take the device. */
		{
			int fd2 = -1, ifd2 = -1;
			uint32_t id2;

			r = iommulu_vfio_cdev_open(d->bdf, &fd2);
			if (r == 0)
				r = iommulu_iommufd_open(&ifd2);
			if (r == 0)
				r = iommulu_vfio_bind_iommufd(fd2, ifd2, &id2);
			if (fd2 >= 0)
				close(fd2);
			if (ifd2 >= 0)
				close(ifd2);
			if (r == 0)
				return fail("%s: a new iommufd could bind the preserved device", d->bdf), 1;
			say("%s: binding a new iommufd refused (%s)", d->bdf, strerror(-r));
		}
	}
	/*
	 * The devices still translate through the preserved page tables, which
	 * point into the session's memfd: finishing now would let it go.
	 */
	if (v->n_dev) {
		r = iommulu_luo_session_finish(session);
		if (r != -EBUSY)
			return fail("FINISH before the devices were taken over: %s, expected EBUSY",
				    r < 0 ? strerror(-r) : "succeeded"), 1;
		say("FINISH before the takeover refused (EBUSY): the devices use the preserved "
		    "translation");
		if (v->crash) {
			/* Every fd of the session goes away with this process:
			 * LUO's finish on release is refused and the session
			 * waits to be retrieved again (restore-again).  The
			 * DMA loop stops first, so that its region holds the
			 * guest RAM pattern for restore-again's check. */
			if (dma_loop_stop("before the simulated crash") < 0)
				return 1;
			snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", v->fdname);
			r = sd_pid_notify(0, 0, state);
			if (r <= 0)
				return fail("FDSTOREREMOVE=1: %s",
					    r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET"), 1;
			say("simulated VMM crash: session dropped from the fd store, exiting "
			    "without FINISH");
			return 0;
		}
	}
	if (v->punch_hole && hole_before_takeover(v) < 0)
		return 1;
	if (takeover_and_finish(v, session) < 0 || dma_loop_stop("after FINISH") < 0)
		return 1;
	if (v->punch_hole && hole_after_takeover(v) < 0)
		return 1;
	snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", v->fdname);
	r = sd_pid_notify(0, 0, state);
	if (r <= 0)
		return fail("FDSTOREREMOVE=1: %s", r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET"), 1;
	say("session finished and removed from the fd store");
	/* Right after the update, with the device on the new HWPT: the next one. */
	if (v->chain)
		return preserve_and_pend(v) < 0;
	if (v->n_dev && after_finish(v) < 0)
		return 1;
	return 0;
}

/* Guest RAM outside [a, a + xfer) and [b, b + xfer) still holds the pattern. */
static int ram_check_except(struct vmm *v, uint64_t a, uint64_t b)
{
	uint64_t seg[3][2] = { { 0, a }, { a + v->xfer, b }, { b + v->xfer, v->mem } };

	for (unsigned i = 0; i < 3; i++) {
		size_t len = (size_t)(seg[i][1] - seg[i][0]);
		size_t bad = pattern_mismatch(v->ram + seg[i][0], len, v->seed, seg[i][0]);

		if (bad != len)
			return fail("guest RAM byte %#" PRIx64 " differs from the pre-kexec pattern",
				    seg[i][0] + bad);
	}
	return 0;
}

/* A constant fill (fast under TCG): edu's DMA writes pattern data, never it. */
#define CANARY_BYTE 0xc3

static size_t canary_mismatch(const uint8_t *buf, size_t len)
{
	const uint64_t word = 0x0101010101010101ull * CANARY_BYTE;
	size_t i = 0;

	for (; i + 8 <= len; i += 8)
		if (*(const uint64_t *)(buf + i) != word)
			break;
	for (; i < len; i++)
		if (buf[i] != CANARY_BYTE)
			return i;
	return len;
}

/*
 * --punch-hole (restore-check): after the memfd is retrieved and before the
 * device file is, the VMM punches a hole into guest RAM where the device
 * then writes.  The page leaves the file, but the kernel keeps it pinned
 * until FINISH, because the device still translates to it through the page
 * table it kept: the DMA must land in that page, not in the file (which
 * reads as a hole) and not in a canary memfd allocated after the punch,
 * which would have received the freed page.  The takeover then finds that
 * the kept table no longer matches the file and gives the HWPT a new page
 * table (the stage checks the kernel's line), through which DMA lands in
 * the file's new page.
 */
#define HOLE_OFF 0x40000
#define HOLE_CANARY (256ull << 20)

static int hole_before_takeover(struct vmm *v)
{
	struct device *d = &v->dev[0];
	uint64_t seed = v->seed ^ 0x401e;
	uint8_t *canary;
	int fd, r;
	size_t bad;

	if (fallocate(v->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, HOLE_OFF, 4096) < 0)
		return fail("punch a hole at %#x of guest RAM: %m", HOLE_OFF);
	say("punched a hole into guest RAM at %#x (IOVA %#" PRIx64 ") before the takeover",
	    HOLE_OFF, v->iova + HOLE_OFF);
	r = iommulu_memfd_create("vmm-hole-canary", HOLE_CANARY, &fd);
	if (r < 0)
		return fail("canary memfd: %s", strerror(-r));
	canary = mmap(NULL, HOLE_CANARY, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (canary == MAP_FAILED)
		return fail("mmap canary: %m");
	memset(canary, CANARY_BYTE, HOLE_CANARY);

	pattern_fill(v->ram + 0x4000, v->xfer, seed, 0);
	if (edu_dma(d, v->iova + 0x4000, EDU_BUFFER, v->xfer, 0) < 0 ||
	    edu_dma(d, EDU_BUFFER, v->iova + HOLE_OFF, v->xfer, 1) < 0)
		return -1;
	bad = canary_mismatch(canary, HOLE_CANARY);
	if (bad != HOLE_CANARY)
		return fail("%s: DMA into the punched page reached a canary memfd (byte %zu of %llu MiB)",
			    d->bdf, bad, HOLE_CANARY >> 20);
	for (size_t i = 0; i < v->xfer; i++)
		if (v->ram[HOLE_OFF + i])
			return fail("%s: DMA into the punched page reached the file (byte %zu is %#x)",
				    d->bdf, i, v->ram[HOLE_OFF + i]);
	munmap(canary, HOLE_CANARY);
	say("%s: DMA into the punched page stayed in the page the kernel kept pinned: the file "
	    "reads as a hole, a %llu MiB canary is intact", d->bdf, HOLE_CANARY >> 20);
	pattern_fill(v->ram + 0x4000, v->xfer, v->seed, 0x4000);
	return 0;
}

static int hole_after_takeover(struct vmm *v)
{
	struct device *d = &v->dev[0];
	uint64_t seed = v->seed ^ 0x401f;
	size_t bad;

	pattern_fill(v->ram + 0x4000, v->xfer, seed, 0);
	if (edu_dma(d, v->iova + 0x4000, EDU_BUFFER, v->xfer, 0) < 0 ||
	    edu_dma(d, EDU_BUFFER, v->iova + HOLE_OFF, v->xfer, 1) < 0)
		return -1;
	bad = pattern_mismatch(v->ram + HOLE_OFF, v->xfer, seed, 0);
	if (bad != v->xfer)
		return fail("%s: after the takeover, DMA to IOVA %#" PRIx64 " did not land in the "
			    "file's new page (byte %zu)", d->bdf, v->iova + HOLE_OFF, bad);
	say("%s: after the takeover, DMA to the punched IOVA lands in the file's new page", d->bdf);
	/* Guest RAM holds its pattern again for the checks that follow. */
	pattern_fill(v->ram + 0x4000, v->xfer, v->seed, 0x4000);
	pattern_fill(v->ram + HOLE_OFF, 4096, v->seed, HOLE_OFF);
	return 0;
}

/*
 * After restore-check --crash: the previous VMM died with the session
 * retrieved and its devices still on the preserved translation.  The session
 * must be retrievable again, with guest RAM intact and the device still
 * doing DMA into it, not into memory the kernel reused: a canary memfd
 * bigger than guest RAM, allocated now, must not see a single byte of that
 * DMA.  Then FINISH is still refused, the devices are taken over and the
 * session finishes.
 */
static int cmd_restore_again(struct vmm *v)
{
	uint64_t canary_len = 4 * v->mem;
	int luo, session = -1, canary_fd, r;
	uint8_t *canary;
	double t0 = now_s();
	size_t bad;

	v->kept = 1;
	luo = iommulu_luo_open(5000);
	if (luo < 0)
		return fail("open /dev/liveupdate: %s", strerror(-luo)), 1;
	/* systemd closes its copy of the session fd asynchronously */
	while ((r = iommulu_luo_session_retrieve(luo, v->session_name, &session)) == -EINVAL &&
	       now_s() - t0 < 10.0)
		usleep(100 * 1000);
	if (r < 0) {
		close(luo);
		return fail("retrieve session %s again after the crash: %s", v->session_name,
			    strerror(-r)), 1;
	}
	close(luo);	/* /dev/liveupdate has one opener at a time */
	say("session %s retrieved again after the VMM crash (%.1f s)", v->session_name, now_s() - t0);
	r = iommulu_luo_session_retrieve_fd(session, TOKEN_MEMFD, &v->memfd);
	if (r < 0)
		return fail("retrieve guest RAM memfd again: %s", strerror(-r)), 1;
	if (ram_map(v) < 0 || ram_check_except(v, 0x4000, 0x8000) < 0)
		return 1;
	bad = pattern_mismatch(v->ram + 0x8000, v->xfer, v->seed ^ 0xf00d, 0);
	if (bad != v->xfer)
		return fail("the crashed VMM's DMA at offset 0x8000 is gone (byte %zu)", bad), 1;
	say("guest RAM intact, with the crashed VMM's DMA in it");
	if (v->n_dev && state_load(v, session) < 0)
		return 1;
	if (dma_loop_start(v, "after the crash") < 0)
		return 1;

	r = iommulu_memfd_create("vmm-canary", canary_len, &canary_fd);
	if (r < 0)
		return fail("canary memfd: %s", strerror(-r)), 1;
	canary = mmap(NULL, canary_len, PROT_READ | PROT_WRITE, MAP_SHARED, canary_fd, 0);
	if (canary == MAP_FAILED)
		return fail("mmap canary: %m"), 1;
	memset(canary, CANARY_BYTE, canary_len);

	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];

		if (device_enable_sysfs(d) < 0 || edu_check_kept(d, "after the crash") < 0)
			return 1;
		if (v->irq && i == 0 &&
		    irq_pending_dma(v, d, "after the crash, before the re-arm (MSI to a parked "
				    "remapping entry),") < 0)
			return 1;
		if (dma_round_trip(v, d, 0xa000, 0xc000, v->seed ^ 0xa9a1) < 0)
			return 1;
		bad = canary_mismatch(canary, canary_len);
		if (bad != canary_len)
			return fail("%s: DMA after the crash wrote into memory of this kernel: "
				    "canary byte %zu changed", d->bdf, bad), 1;
		say("%s: after the crash DMA still lands in guest RAM; the %" PRIu64
		    " MiB canary is untouched", d->bdf, canary_len >> 20);
	}
	r = iommulu_luo_session_finish(session);
	if (r != -EBUSY)
		return fail("FINISH of the re-retrieved session before the takeover: %s, expected "
			    "EBUSY", r < 0 ? strerror(-r) : "succeeded"), 1;
	if (takeover_and_finish(v, session) < 0 || dma_loop_stop("after FINISH") < 0)
		return 1;
	bad = canary_mismatch(canary, canary_len);
	if (bad != canary_len)
		return fail("canary byte %zu changed", bad), 1;
	say("session %s finished after the takeover; canary untouched", v->session_name);
	munmap(canary, canary_len);
	close(canary_fd);
	if (v->chain)
		return preserve_and_pend(v) < 0;
	return 0;
}

#define LUD_BUS "org.iommulu.LiveUpdate1"
#define LUD_PATH "/org/iommulu/LiveUpdate1"
#define LUD_IFACE "org.iommulu.LiveUpdate1.Manager"

static int bus_fail(const char *what, const sd_bus_error *e, int r)
{
	return fail("%s: %s: %s", what, e && e->name ? e->name : "error",
		    e && e->message ? e->message : strerror(-r));
}

static int cmd_register(struct vmm *v, const char *name)
{
	sd_bus_message *call = NULL, *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	const char *path;
	sigset_t ss;
	int r, sig;

	/* A VM without devices is only its guest RAM: no iommufd at all. */
	if (v->n_dev ? setup_vm(v) < 0 : (ram_create(v) < 0 || ram_map(v) < 0))
		return 1;
	for (unsigned i = 0; i < v->n_dev; i++)
		if (dma_round_trip(v, &v->dev[i], 0x2000, 0x3000, v->seed + i) < 0)
			return 1;
	pattern_fill(v->ram, v->mem, v->seed, 0);
	say("guest RAM filled with pattern %#" PRIx64, v->seed);
	/* --irq: the VM runs with MSI armed; iommu-lud preserves it so */
	if (v->irq && v->n_dev &&
	    (irq_before_preserve(v) < 0 || irq_pending_dma(v, &v->dev[0], "before registering,") < 0))
		return 1;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return fail("system bus: %s", strerror(-r)), 1;
	r = sd_bus_message_new_method_call(bus, &call, LUD_BUS, LUD_PATH, LUD_IFACE, "RegisterVM");
	if (r >= 0)
		r = sd_bus_message_append(call, "s", name);
	if (r >= 0)
		r = sd_bus_message_append(call, "ah", 1, v->memfd);
	if (r >= 0)
		r = v->n_dev ? sd_bus_message_append(call, "ah", 1, v->iommufd)
			     : sd_bus_message_append(call, "ah", 0);
	if (r >= 0)
		r = sd_bus_message_open_container(call, 'a', "h");
	for (unsigned i = 0; r >= 0 && i < v->n_dev; i++)
		r = sd_bus_message_append(call, "h", v->dev[i].fd);
	if (r >= 0)
		r = sd_bus_message_close_container(call);
	if (r >= 0)
		r = v->n_dev ? sd_bus_message_append(call, "at", 1, (uint64_t)v->hwpt_id)
			     : sd_bus_message_append(call, "at", 0);
	if (r < 0)
		return fail("building RegisterVM: %s", strerror(-r)), 1;
	r = sd_bus_call(bus, call, 0, &e, &reply);
	if (r < 0)
		return bus_fail("RegisterVM", &e, r), 1;
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return fail("RegisterVM reply: %s", strerror(-r)), 1;
	say("VM %s registered with iommu-lud at %s (%" PRIu64 " MiB, %u device(s), HWPT %u)", name,
	    path, v->mem >> 20, v->n_dev, v->hwpt_id);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(call);
	sd_bus_flush_close_unref(bus);

	/* A VMM keeps running; iommu-lud drops an unpreserved VM whose VMM exits. */
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sd_notify(0, "READY=1");
	(void)sigwait(&ss, &sig);
	return 0;
}

/*
 * After FinishVM the device is an ordinary vfio-pci device again: drop the
 * files of the old VM (as a VMM that sets up its VM afresh would) and
 * attach the device to a new iommufd and HWPT mapping the retrieved guest
 * RAM, then do a DMA round trip through it.
 */
static int rebind_after_finish(struct vmm *v)
{
	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];

		if (d->bar0)
			munmap((void *)d->bar0, d->bar0_size);
		d->bar0 = NULL;
		if (d->fd >= 0)
			close(d->fd);
		d->fd = -1;
	}
	if (v->iommufd >= 0)
		close(v->iommufd);
	v->iommufd = -1;
	v->hwpt_id = 0;
	if (iommu_setup(v) < 0)
		return -1;
	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];

		if (device_open(v, d) < 0 || device_attach(v, d) < 0 || device_enable(d) < 0)
			return -1;
		if (dma_round_trip(v, d, 0x5000, 0x6000, v->seed ^ 0xbeef) < 0)
			return -1;
		say("%s: after FinishVM re-bound to a new iommufd (HWPT %u) and did DMA: OK", d->bdf,
		    v->hwpt_id);
	}
	return 0;
}

static int cmd_retrieve(struct vmm *v, const char *name)
{
	sd_bus_message *reply = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	const char *what, *detail, *role;
	unsigned n_checks = 0, n_failed = 0;
	sd_bus *bus = NULL;
	int r, ok, fd;
	size_t bad;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return fail("system bus: %s", strerror(-r)), 1;
	r = sd_bus_call_method(bus, LUD_BUS, LUD_PATH, LUD_IFACE, "VerifyVM", &e, &reply, "s", name);
	if (r < 0)
		return bus_fail("VerifyVM", &e, r), 1;
	r = sd_bus_message_enter_container(reply, 'a', "(sbs)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sbs)", &what, &ok, &detail)) > 0) {
		say("VerifyVM %s: %s: %s", what, ok ? "ok" : "FAILED", detail);
		n_checks++;
		n_failed += !ok;
		if (v->irq && v->n_dev && strcmp(what, v->dev[0].bdf) == 0 &&
		    (!strstr(detail, "MSI ") || !strstr(detail, "1 vector(s) set up") ||
		     !strstr(detail, "re-arm them"))) {
			fail("VerifyVM %s: %s does not report its MSI (1 vector to re-arm)", name, what);
			n_failed++;
		}
	}
	if (r < 0 || n_failed)
		return fail("VerifyVM %s: %u of %u checks failed", name, n_failed, n_checks), 1;
	reply = sd_bus_message_unref(reply);

	r = sd_bus_call_method(bus, LUD_BUS, LUD_PATH, LUD_IFACE, "RetrieveVM", &e, &reply, "s", name);
	if (r < 0)
		return bus_fail("RetrieveVM", &e, r), 1;
	r = sd_bus_message_enter_container(reply, 'a', "(sh)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0) {
		say("RetrieveVM %s: %s", name, role);
		if (strcmp(role, "memfd:0") == 0) {
			v->memfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		} else if (strcmp(role, "iommufd") == 0) {
			v->iommufd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		} else if (strncmp(role, "device:", 7) == 0) {
			for (unsigned i = 0; i < v->n_dev; i++)
				if (strcmp(v->dev[i].bdf, role + 7) == 0)
					v->dev[i].fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		}
	}
	if (r < 0)
		return fail("RetrieveVM reply: %s", strerror(-r)), 1;
	if (v->memfd < 0)
		return fail("RetrieveVM %s returned no memfd:0", name), 1;
	if (v->n_dev && v->iommufd < 0)
		return fail("RetrieveVM %s returned devices but no iommufd", name), 1;
	if (ram_map(v) < 0)
		return 1;
	bad = pattern_mismatch(v->ram, v->mem, v->seed, 0);
	if (bad != v->mem)
		return fail("guest RAM of %s differs from the pre-kexec pattern at byte %zu", name, bad), 1;
	say("guest RAM of %s intact (%" PRIu64 " MiB)", name, v->mem >> 20);

	for (unsigned i = 0; i < v->n_dev; i++) {
		struct device *d = &v->dev[i];

		if (d->fd < 0)
			return fail("RetrieveVM %s returned no fd for device %s", name, d->bdf), 1;
		/* No bind, no attach: the restored translation must already work. */
		if (device_enable_sysfs(d) < 0 ||
		    dma_round_trip(v, d, 0x4000, 0x8000, v->seed ^ 0xf00d) < 0)
			return 1;
		say("%s: device DMA after kexec landed in preserved guest RAM: OK", d->bdf);
	}
	reply = sd_bus_message_unref(reply);
	/*
	 * iommu-lud retrieved the devices when it restored the VM, so they
	 * came back bound and attached; iommu-lud marked the HWPT with its own
	 * token (IOMMULU_TOKEN_HWPT_BASE + index), which names it here.
	 */
	if (v->n_dev && check_restored_ids(v, IOMMULU_TOKEN_HWPT_BASE, true) < 0)
		return 1;
	for (unsigned i = 0; i < v->n_dev; i++)
		if (device_takeover(v, &v->dev[i]) < 0)
			return 1;
	r = sd_bus_call_method(bus, LUD_BUS, LUD_PATH, LUD_IFACE, "FinishVM", &e, NULL, "s", name);
	if (r < 0)
		return bus_fail("FinishVM", &e, r), 1;
	say("VM %s finished", name);
	sd_bus_flush_close_unref(bus);
	if (v->rebind && rebind_after_finish(v) < 0)
		return 1;
	return 0;
}

static int parse_u64(const char *s, uint64_t *ret)
{
	unsigned long long x;
	char *end;

	errno = 0;
	x = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'K': x <<= 10; end++; break;
	case 'M': x <<= 20; end++; break;
	case 'G': x <<= 30; end++; break;
	}
	if (*end)
		return -EINVAL;
	*ret = x;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "mem", required_argument, NULL, 'm' },
		{ "iova", required_argument, NULL, 'i' },
		{ "xfer", required_argument, NULL, 'x' },
		{ "seed", required_argument, NULL, 's' },
		{ "session", required_argument, NULL, 'S' },
		{ "fdname", required_argument, NULL, 'f' },
		{ "corrupt", no_argument, NULL, 'c' },
		{ "anon", required_argument, NULL, 'a' },
		{ "rebind", no_argument, NULL, 'r' },
		{ "crash", no_argument, NULL, 'C' },
		{ "chain", no_argument, NULL, 'N' },
		{ "dma-loop", no_argument, NULL, 'L' },
		{ "dma-mask", required_argument, NULL, 'M' },
		{ "punch-hole", no_argument, NULL, 'H' },
		{ "irq", no_argument, NULL, 'I' },
		{}
	};
	struct vmm v = {
		.mem = 64ull << 20,
		.iova = 0x1000000,
		.xfer = EDU_XFER_MAX,
		.seed = 0x766d6d31,
		.session_name = "vmm-vm1",
		.fdname = "vmm-session",
		.memfd = -1,
		.iommufd = -1,
	};
	const char *cmd;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (v.n_dev == MAX_DEVICES || !iommulu_bdf_is_valid(optarg))
				goto usage;
			v.dev[v.n_dev++] = (struct device){ .bdf = optarg, .fd = -1, .irq_efd = -1 };
			break;
		case 'm': if (parse_u64(optarg, &v.mem) < 0) goto usage; break;
		case 'i': if (parse_u64(optarg, &v.iova) < 0) goto usage; break;
		case 'x': if (parse_u64(optarg, &v.xfer) < 0) goto usage; break;
		case 's': if (parse_u64(optarg, &v.seed) < 0) goto usage; break;
		case 'S': v.session_name = optarg; break;
		case 'f': v.fdname = optarg; break;
		case 'c': v.corrupt = 1; break;
		case 'a': if (parse_u64(optarg, &v.anon) < 0 || v.anon % 4096) goto usage; break;
		case 'r': v.rebind = 1; break;
		case 'C': v.crash = 1; break;
		case 'N': v.chain = 1; break;
		case 'L': v.dma_loop = 1; break;
		case 'M': if (parse_u64(optarg, &edu_dma_mask) < 0) goto usage; break;
		case 'H': v.punch_hole = 1; break;
		case 'I': v.irq = 1; break;
		default: goto usage;
		}
	}
	if (optind >= argc)
		goto usage;
	cmd = argv[optind];
	if (strcmp(cmd, "register") == 0 || strcmp(cmd, "retrieve") == 0) {
		if (optind + 2 != argc || !iommulu_vm_name_is_valid(argv[optind + 1]))
			goto usage;
	} else if (optind + 1 != argc || v.n_dev == 0) {
		goto usage;
	}
	if (v.mem < 0x10000 || v.mem % 4096 || v.iova % 4096 || v.iova + v.mem > EDU_DMA_MASK + 1 ||
	    v.xfer == 0 || v.xfer > EDU_XFER_MAX || v.iova + v.mem + v.anon > EDU_DMA_MASK + 1) {
		fprintf(stderr, "vmm: --mem/--iova/--xfer out of edu's range (IOVA + mem <= 2^28, "
				"xfer <= %d)\n", EDU_XFER_MAX);
		return 2;
	}
	if (strcmp(cmd, "register") == 0)
		return cmd_register(&v, argv[optind + 1]);
	if (strcmp(cmd, "retrieve") == 0)
		return cmd_retrieve(&v, argv[optind + 1]);
	if (strcmp(cmd, "probe") == 0)
		return cmd_probe(&v);
	if (strcmp(cmd, "preserve") == 0)
		return cmd_preserve(&v);
	if (strcmp(cmd, "restore-check") == 0)
		return cmd_restore_check(&v);
	if (strcmp(cmd, "restore-again") == 0)
		return cmd_restore_again(&v);
	if (strcmp(cmd, "stray-probe") == 0)
		return cmd_stray_probe(&v);
usage:
	fprintf(stderr, "usage: iommulu-vmm probe|preserve|restore-check|restore-again|stray-probe --device BDF [--device BDF]... \n"
			"       iommulu-vmm register|retrieve NAME [--device BDF]... \n"
			"       options: "
			"[--mem BYTES] [--iova ADDR] [--xfer BYTES] [--seed N] [--session NAME] "
			"[--fdname NAME] [--corrupt] [--anon BYTES] [--rebind] [--crash] [--chain] "
			"[--dma-loop] [--dma-mask MASK] [--punch-hole] [--irq]\n");
	return 2;
}
