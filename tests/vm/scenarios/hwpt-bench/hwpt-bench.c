/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hwpt-bench: what preserving a VM's HWPT (I/O page table) costs, against
 * the same VM preserved without it (issue 6, the P2 figure).
 *
 *   hwpt-bench preserve --device BDF [--device BDF ...] [--sizes 64M,256M,1G] [--reps N]
 *                       [--corrupt]
 *   hwpt-bench restore  --device BDF [--device BDF ...] [--sizes 64M,256M,1G]
 *
 * For each guest RAM size and each folio size the guest kernel offers (4 KiB
 * always; 2 MiB when shmem THP exists, see below) two VMs are built the same
 * way: a sealed guest-RAM memfd filled with a pattern, an iommufd whose IOAS
 * maps the memfd with IOMMU_IOAS_MAP_FILE at IOVA 0x1000000, and a paging
 * HWPT allocated on that IOAS (so its page tables are populated).  The two
 * differ in one thing only: the "hwpt" VM marks its HWPT with
 * IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE, the "base" VM does not.  Each VM is
 * one LUO session (memfd, then iommufd) in this unit's fd store, named
 * hb-<4k|2m>-<size>-<hwpt|base>.  The difference between the two is
 * therefore exactly what the HWPT adds: freezing the IOAS, walking the
 * page tables and preserving every table page, describing the ranges, and
 * after the kexec the IOAS rebuilt by the kernel.
 *
 * The edu devices (--device, bound to vfio-pci) are needed to allocate a
 * HWPT.  The k-th device stays bound and attached to the k-th size's 4 KiB
 * "hwpt" VM and is preserved in that session too (its preserve and retrieve
 * are timed apart, not in the VM's figures).  The first device also
 * allocates every other VM's HWPT (bound to each iommufd in turn and closed
 * again) before its own VM is set up last.
 *
 * 4 KiB folios are written the first MiB of every 2 MiB first, then the
 * second, so that no 2 MiB of the file is physically contiguous: the IOMMU
 * then has to use 4 KiB IOPTEs (a fresh guest often hands out contiguous
 * pages, which would let it use 2 MiB ones).  2 MiB folios come from fallocate()
 * with /sys/kernel/mm/transparent_hugepage/shmem_enabled = always; a memfd
 * lives on the kernel's internal shm mount, whose huge= setting is that
 * sysfs file (there is no memfd_create() flag for THP).  Both are measured,
 * not assumed: ShmemHugePages (folios) and nr_iommu_pages (page table pages
 * of each HWPT) are read around the allocations.
 *
 * preserve: build the VMs; mark the "hwpt" VMs' HWPTs (timed); preserve every
 * VM --reps times, the repetitions interleaved across the VMs (closing a
 * session unpreserves it); each time the session create + memfd + iommufd
 * is timed, and the iommufd alone, which is where the two VMs of a pair
 * differ.  The last repetition stays preserved and goes into the fd store,
 * with a small warm-up session (see WARMUP).
 * restore (after the kexec): the warm-up session first (the "restored"
 * mark, kexec -> first retrieve); then per VM, time retrieve memfd +
 * retrieve iommufd (+ for "base", IOMMU_IOAS_ALLOC + IOMMU_IOAS_MAP_FILE,
 * so both end with guest RAM at its IOVA in an IOAS).  Then check: every
 * byte of every memfd, the folio size, the rebuilt IOAS (unmap returns the
 * whole size; "base" iommufds come back empty), and that edu DMA through
 * the preserved translation lands in each device's VM before its device
 * file is retrieved; then the takeover: retrieving the device file, which
 * hands it back bound and attached to its HWPT (created under its old ID
 * over the page table the device kept, which the kernel takes over and
 * checks page by page against the IOAS), and the first DMA through it, timed per size
 * beside the VM's restore.  FINISH every session.
 *
 * hugetlb memfds: see hugetlb_probe().
 *
 * Figures: "IOMMULU-METRIC: name=value unit" lines.  Failures:
 * "IOMMULU-FAIL: ..." and exit 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <iommulu/iommufd.h>
#include <iommulu/luo.h>
#include <iommulu/memfd.h>
#include <iommulu/pci.h>
#include <iommulu/uapi.h>
#include <iommulu/vfio.h>

#include "pattern.h"

/* Debian 12's headers predate iommufd; iommulu/uapi.h has no unmap. */
#ifndef IOMMU_IOAS_UNMAP
struct iommu_ioas_unmap {
	__u32 size;
	__u32 ioas_id;
	__aligned_u64 iova;
	__aligned_u64 length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#endif

#define IOVA 0x1000000ull
#define MAX_SIZES 4
#define MAX_VMS (2 * 2 * MAX_SIZES)
#define MAX_REPS 15
#define SZ_2M ((uint64_t)2 << 20)
#define PAGE ((uint64_t)4096)

#define TOKEN_MEMFD 1
#define TOKEN_IOMMUFD 2
#define TOKEN_DEVICE 16
#define HWPT_TOKEN 0x4857
/* What a fresh iommufd gives the IOAS, the device and the HWPT of a VM
 * (vm_iommu() allocates them in that order); they come back the same. */
#define IOAS_ID 1
#define HWPT_ID 3

/* A preserve or a restore slower than this is a hang, not a figure. */
#define SANITY_MS 120000.0

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

/* QEMU hw/misc/edu.c */
#define EDU_REG_IDENT 0x00
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_COUNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_DMA_START 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_BUFFER 0x40000
#define EDU_XFER 2048

struct vm {
	char name[40];
	char tag[24]; /* figure suffix: 4k_64m_hwpt */
	unsigned huge;  /* 0: 4 KiB folios, 1: 2 MiB */
	int hwpt;       /* 1: HWPT marked for preservation */
	uint64_t size, seed;
	int memfd, iommufd, session, devfd;
	const char *bdf; /* the edu device attached to its HWPT, or NULL */
	uint8_t *ram;
	uint32_t ioas_id, hwpt_id;
	long tables, thp;
	double mark_ms, rep_ms[MAX_REPS], rep_iommufd_ms[MAX_REPS];
	double preserve_ms, iommufd_ms, restore_ms, restore_iommufd_ms, dev_ms, takeover_ms,
	       attach_ms, hwpt_ms;
};

struct bench {
	/* bdfs[k] stays attached to the k-th size's 4k hwpt VM; bdfs[0] also
	 * allocates every other VM's HWPT before its own VM is set up. */
	const char *bdfs[MAX_SIZES + 1];
	unsigned n_bdf;
	/* One device more than sizes: the warm-up session's (see WARMUP) */
	const char *warm_bdf;
	uint64_t sizes[MAX_SIZES];
	unsigned n_sizes, reps;
	int corrupt;
	struct vm vm[MAX_VMS];
	unsigned n_vm;
	int have_thp;
	char thp_orig[32];
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("IOMMULU-FAIL: hwpt-bench: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return -1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("hwpt-bench: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void metric(const char *name, const char *tag, double v, const char *unit)
{
	printf("IOMMULU-METRIC: hwpt_bench_%s%s%s=%.3f %s\n", name, tag ? "_" : "", tag ? tag : "",
	       v, unit);
	fflush(stdout);
}

/*
 * The HWPT's own part of a takeover, as the kernel measured it: how long the
 * HWPT took to take the device's kept page table over (restore, check of
 * every page, pin), from its log line "live update: HW pagetable N (token
 * T) took the kept page table over in U us, and the pins of P pages from
 * their memfds" for @bdf.  -1 if there is none, i.e. the kept page table was
 * not taken over.  *@claimed is P: the pages the IOAS did not have to pin
 * again because their memfds still carried the pins of their preservation.
 */
static double kernel_hwpt_takeover_ms(const char *bdf, long long *claimed)
{
	static const char key[] = "took the kept page table over in ";
	static const char pins[] = "and the pins of ";
	char rec[2048], *p, *q;
	double ms = -1;
	ssize_t n;
	int fd;

	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)	/* overwritten records: go on */
			continue;
		if (n <= 0)
			break;
		rec[n] = '\0';
		if (strstr(rec, bdf) && (p = strstr(rec, key))) {
			ms = strtod(p + sizeof(key) - 1, NULL) / 1e3;
			q = strstr(p, pins);
			*claimed = q ? strtoll(q + sizeof(pins) - 1, NULL, 10) : -1;
		}
	}
	close(fd);
	return ms;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double boottime_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A "key value" line of /proc/meminfo or /proc/vmstat; -1 if absent. */
static long proc_value(const char *path, const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f;

	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && (line[n] == ' ' || line[n] == ':')) {
			v = strtol(line + n + 1 + strspn(line + n + 1, " :"), NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Fold the per-CPU vmstat deltas first, or small changes may not show. */
static void stat_refresh(void)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			say("stat_refresh: %m (counters may lag)");
		close(fd);
	}
}

static long shmem_thp(void)
{
	long kb;

	stat_refresh();
	kb = proc_value("/proc/meminfo", "ShmemHugePages");

	return kb < 0 ? -1 : kb / 2048;
}

static long iommu_pages(void)
{
	stat_refresh();
	return proc_value("/proc/vmstat", "nr_iommu_pages");
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -EIO;
}

/* shmem_enabled reads "always within_size advise [never] deny force". */
static int thp_current(char *buf, size_t len)
{
	char line[256], *a, *b;
	FILE *f = fopen(THP_SYSFS, "re");

	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	a = strchr(line, '[');
	b = a ? strchr(a, ']') : NULL;
	if (!a || !b || (size_t)(b - a) > len)
		return -EINVAL;
	memcpy(buf, a + 1, (size_t)(b - a - 1));
	buf[b - a - 1] = 0;
	return 0;
}

static int parse_size(const char *s, uint64_t *ret)
{
	unsigned long long x;
	char *end;

	errno = 0;
	x = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'M': x <<= 20; end++; break;
	case 'G': x <<= 30; end++; break;
	}
	if (*end || x < SZ_2M || x % SZ_2M || x > (64ull << 30))
		return -EINVAL;
	*ret = x;
	return 0;
}

static void size_tag(uint64_t size, char *buf, size_t len)
{
	if (size % (1ull << 30) == 0)
		snprintf(buf, len, "%" PRIu64 "g", size >> 30);
	else
		snprintf(buf, len, "%" PRIu64 "m", size >> 20);
}

/* The VMs in a fixed order: 4k before 2m, sizes ascending, hwpt then base. */
static void plan(struct bench *b)
{
	b->n_vm = 0;
	for (unsigned huge = 0; huge <= (unsigned)b->have_thp; huge++)
		for (unsigned s = 0; s < b->n_sizes; s++)
			for (int hwpt = 1; hwpt >= 0; hwpt--) {
				struct vm *v = &b->vm[b->n_vm++];
				char st[16];

				memset(v, 0, sizeof(*v));
				size_tag(b->sizes[s], st, sizeof(st));
				v->huge = huge;
				v->hwpt = hwpt;
				v->size = b->sizes[s];
				snprintf(v->tag, sizeof(v->tag), "%s_%s_%s", huge ? "2m" : "4k", st,
					 hwpt ? "hwpt" : "base");
				snprintf(v->name, sizeof(v->name), "hb-%s-%s-%s", huge ? "2m" : "4k",
					 st, hwpt ? "hwpt" : "base");
				/* Distinct per VM: a memfd handed to the wrong VM fails the check. */
				v->seed = 0x68776274ull ^ ((uint64_t)b->n_vm << 40);
				v->memfd = v->iommufd = v->session = v->devfd = -1;
				if (!huge && hwpt && s < b->n_bdf)
					v->bdf = b->bdfs[s];
			}
}

/* A VM whose HWPT a device stays attached to: a 4k hwpt VM, one per size
 * while there are devices. */
static int is_dev_vm(const struct bench *b, const struct vm *v)
{
	(void)b;
	return v->bdf != NULL;
}

/* ------------------------------------------------------------- edu DMA */

struct edu {
	volatile uint8_t *bar0;
	size_t len;
};

static uint64_t rd64(const struct edu *e, uint32_t r)
{
	return *(volatile uint64_t *)(e->bar0 + r);
}

static void wr64(const struct edu *e, uint32_t r, uint64_t v)
{
	*(volatile uint64_t *)(e->bar0 + r) = v;
}

static int edu_dma(const struct edu *e, uint64_t src, uint64_t dst, int to_ram)
{
	double t0 = now_ms();

	wr64(e, EDU_REG_DMA_SRC, src);
	wr64(e, EDU_REG_DMA_DST, dst);
	wr64(e, EDU_REG_DMA_COUNT, EDU_XFER);
	wr64(e, EDU_REG_DMA_CMD, EDU_DMA_START | (to_ram ? EDU_DMA_TO_RAM : 0));
	while (rd64(e, EDU_REG_DMA_CMD) & EDU_DMA_START) {
		if (now_ms() - t0 > 10000)
			return fail("edu DMA did not complete in 10 s");
		usleep(1000);
	}
	return 0;
}

/* After the kexec vfio refuses region access on the retrieved, unbound
 * cdev: bus mastering must still be on, BAR0 comes from sysfs. */
static int edu_open_sysfs(const char *bdf, struct edu *e)
{
	char path[128];
	struct stat st;
	uint16_t cmd;
	void *p;
	int fd, r;

	r = iommulu_pci_config_read(bdf, 0x04, &cmd, sizeof(cmd));
	if (r < 0)
		return fail("%s: PCI command register: %s", bdf, strerror(-r));
	if ((cmd & 0x6) != 0x6)
		return fail("%s: memory space or bus mastering off after the kexec (command %#x)",
			    bdf, cmd);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource0", bdf);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail("open %s: %m", path);
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return fail("%s has no size", path);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return fail("mmap %s: %m", path);
	e->bar0 = p;
	e->len = (size_t)st.st_size;
	if ((*(volatile uint32_t *)(e->bar0 + EDU_REG_IDENT) & 0xff) != 0xed)
		return fail("%s is not an edu device", bdf);
	return 0;
}

/* Before the kexec: memory space + bus mastering, BAR0 through vfio. */
static int edu_open_vfio(const char *bdf, int devfd, struct edu *e)
{
	iommulu_vfio_region reg;
	uint16_t cmd;
	void *p;
	int r;

	r = iommulu_vfio_config_read(devfd, 0x04, &cmd, sizeof(cmd));
	if (r == 0) {
		cmd |= 0x6;
		r = iommulu_vfio_config_write(devfd, 0x04, &cmd, sizeof(cmd));
	}
	if (r < 0)
		return fail("%s: enable memory space and bus mastering: %s", bdf, strerror(-r));
	r = iommulu_vfio_region_info(devfd, IOMMULU_VFIO_PCI_BAR0_REGION, &reg);
	if (r < 0)
		return fail("%s: BAR0 region info: %s", bdf, strerror(-r));
	p = mmap(NULL, reg.size, PROT_READ | PROT_WRITE, MAP_SHARED, devfd, (off_t)reg.offset);
	if (p == MAP_FAILED)
		return fail("%s: mmap BAR0: %m", bdf);
	e->bar0 = p;
	e->len = reg.size;
	if ((*(volatile uint32_t *)(e->bar0 + EDU_REG_IDENT) & 0xff) != 0xed)
		return fail("%s is not an edu device", bdf);
	return 0;
}

/* RAM at offset a -> edu -> RAM at offset b, through the IOMMU; check b. */
static int dma_check(const struct edu *e, struct vm *v, uint64_t a, uint64_t b, uint64_t seed)
{
	size_t bad;

	pattern_fill(v->ram + a, EDU_XFER, seed, 0);
	memset(v->ram + b, 0, EDU_XFER);
	if (edu_dma(e, IOVA + a, EDU_BUFFER, 0) < 0 || edu_dma(e, EDU_BUFFER, IOVA + b, 1) < 0)
		return -1;
	bad = pattern_mismatch(v->ram + b, EDU_XFER, seed, 0);
	if (bad != EDU_XFER)
		return fail("%s: edu DMA IOVA %#llx -> edu -> IOVA %#llx did not land in its memfd "
			    "(byte %zu)",
			    v->name, IOVA + a, IOVA + b, bad);
	return 0;
}

/* ------------------------------------------------------------- stage 1 */

#define CHUNK ((uint64_t)2 << 20)

/* Pattern into [off, off + len) of the memfd for every off = first + k * 2 MiB. */
static int write_pattern(struct vm *v, uint64_t first, uint64_t len)
{
	static uint8_t buf[2 << 20];

	for (uint64_t off = first; off < v->size; off += CHUNK) {
		uint64_t n = v->size - off < len ? v->size - off : len;

		ssize_t w;

		pattern_fill(buf, n, v->seed, off);
		w = pwrite(v->memfd, buf, n, (off_t)off);
		if (w != (ssize_t)n)
			return w < 0 ? -errno : -EIO;
	}
	return 0;
}

/* Offset of the first byte of the memfd that differs from the pattern, or
 * the size when all match; negative errno if it cannot be read. */
static int64_t check_pattern(const struct vm *v)
{
	static uint8_t buf[2 << 20];

	for (uint64_t off = 0; off < v->size; off += CHUNK) {
		uint64_t len = v->size - off < CHUNK ? v->size - off : CHUNK;
		ssize_t got = pread(v->memfd, buf, len, (off_t)off);
		size_t bad;

		if (got != (ssize_t)len)
			return got < 0 ? -errno : -EIO;
		bad = pattern_mismatch(buf, len, v->seed, off);
		if (bad != len)
			return (int64_t)(off + bad);
	}
	return (int64_t)v->size;
}

static int vm_ram(struct bench *b, struct vm *v)
{
	long thp0, thp1;
	int r;

	if (b->have_thp) {
		r = write_file(THP_SYSFS, v->huge ? "always" : "never");
		if (r < 0)
			return fail("write %s: %s", THP_SYSFS, strerror(-r));
	}
	r = iommulu_memfd_create(v->name, v->size, &v->memfd);
	if (r < 0)
		return fail("%s: memfd of %" PRIu64 " MiB: %s", v->name, v->size >> 20, strerror(-r));
	thp0 = shmem_thp();
	if (v->huge && fallocate(v->memfd, 0, 0, (off_t)v->size) < 0)
		return fail("%s: fallocate: %m", v->name);
	/*
	 * pwrite(), not stores through a mapping: under TCG a write fault per
	 * 4 KiB page costs more than the copy.  4 KiB folios: the first MiB of
	 * every 2 MiB, then the second one, so that no 2 MiB of the file is
	 * one physically contiguous run (which would let the IOMMU use a 2 MiB
	 * IOPTE; a fresh guest hands out contiguous pages).
	 */
	if (v->huge) {
		r = write_pattern(v, 0, CHUNK);
	} else {
		r = write_pattern(v, 0, CHUNK / 2);
		if (r == 0)
			r = write_pattern(v, CHUNK / 2, CHUNK / 2);
	}
	if (r < 0)
		return fail("%s: writing the pattern: %s", v->name, strerror(-r));
	/* Mapped only for the DMA windows of the device VM. */
	v->ram = mmap(NULL, v->size, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	if (v->ram == MAP_FAILED)
		return fail("%s: mmap: %m", v->name);
	thp1 = shmem_thp();
	v->thp = thp0 < 0 ? 0 : thp1 - thp0;
	if (v->huge && (uint64_t)v->thp != v->size / SZ_2M)
		return fail("%s: %ld of %" PRIu64 " 2 MiB folios with shmem_enabled=always", v->name,
			    v->thp, v->size / SZ_2M);
	if (!v->huge && v->thp != 0)
		return fail("%s: %ld 2 MiB folios with shmem_enabled=never", v->name, v->thp);
	return 0;
}

static int vm_iommu(struct bench *b, struct vm *v, int *devfd)
{
	uint64_t iova = IOVA;
	const char *bdf;
	uint32_t dev_id;
	long p0, p1;
	int r;

	r = iommulu_iommufd_open(&v->iommufd);
	if (r < 0)
		return fail("open /dev/iommu: %s", strerror(-r));
	r = iommulu_iommufd_ioas_alloc(v->iommufd, &v->ioas_id);
	if (r < 0)
		return fail("%s: IOMMU_IOAS_ALLOC: %s", v->name, strerror(-r));
	r = iommulu_iommufd_ioas_map_file(v->iommufd, v->ioas_id, v->memfd, 0, v->size,
					  IOMMULU_MAP_FIXED_IOVA | IOMMULU_MAP_READABLE |
						  IOMMULU_MAP_WRITEABLE,
					  &iova);
	if (r < 0)
		return fail("%s: IOMMU_IOAS_MAP_FILE: %s", v->name, strerror(-r));
	bdf = v->bdf ? v->bdf : b->bdfs[0];
	r = iommulu_vfio_cdev_open(bdf, devfd);
	if (r < 0)
		return fail("%s: open vfio cdev: %s", bdf, strerror(-r));
	r = iommulu_vfio_bind_iommufd(*devfd, v->iommufd, &dev_id);
	if (r < 0)
		return fail("%s: bind to the iommufd of %s: %s", bdf, v->name, strerror(-r));
	p0 = iommu_pages();
	r = iommulu_iommufd_hwpt_alloc(v->iommufd, dev_id, v->ioas_id, 0, &v->hwpt_id);
	p1 = iommu_pages();
	if (r < 0)
		return fail("%s: IOMMU_HWPT_ALLOC: %s", v->name, strerror(-r));
	if (v->ioas_id != IOAS_ID || v->hwpt_id != HWPT_ID)
		return fail("%s: IOAS %u and HWPT %u, expected %u and %u", v->name, v->ioas_id,
			    v->hwpt_id, IOAS_ID, HWPT_ID);
	v->tables = p0 < 0 ? -1 : p1 - p0;
	/* 4 KiB IOPTEs need a leaf table per 2 MiB; 2 MiB ones need none. */
	if (!v->huge && v->tables >= 0 && (uint64_t)v->tables < v->size / SZ_2M)
		return fail("%s: HWPT has %ld page table pages, fewer than the %" PRIu64
			    " leaf tables of 4 KiB IOPTEs: the figure would not be what it says",
			    v->name, v->tables, v->size / SZ_2M);
	if (v->huge && v->tables >= 0 && (uint64_t)v->tables >= v->size / SZ_2M)
		return fail("%s: HWPT has %ld page table pages with 2 MiB folios: no 2 MiB IOPTEs",
			    v->name, v->tables);
	say("%s: %" PRIu64 " MiB at IOVA %#llx, HWPT %u with %ld page table pages, %ld 2 MiB folios",
	    v->name, v->size >> 20, IOVA, v->hwpt_id, v->tables, v->thp);
	if (is_dev_vm(b, v)) {
		r = iommulu_vfio_attach_pt(*devfd, v->hwpt_id);
		if (r < 0)
			return fail("%s: attach to HWPT %u: %s", bdf, v->hwpt_id, strerror(-r));
		v->devfd = *devfd;
	} else {
		close(*devfd); /* unbinds: the device is free for the next iommufd */
	}
	*devfd = -1;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* One preserve of VM v: session create, memfd, iommufd (timed), then the
 * device when it is the device VM and keep is set. */
static int vm_preserve_once(struct bench *b, struct vm *v, unsigned rep, int keep)
{
	double t0, t1;
	int luo, r;

	luo = iommulu_luo_open(5000);
	if (luo < 0)
		return fail("open /dev/liveupdate: %s", strerror(-luo));
	t0 = now_ms();
	r = iommulu_luo_session_create(luo, v->name, &v->session);
	if (r == 0)
		r = iommulu_luo_session_preserve_fd(v->session, v->memfd, TOKEN_MEMFD);
	t1 = now_ms();
	if (r == 0)
		r = iommulu_luo_session_preserve_fd(v->session, v->iommufd, TOKEN_IOMMUFD);
	v->rep_ms[rep] = now_ms() - t0 + v->mark_ms;
	v->rep_iommufd_ms[rep] = now_ms() - t1;
	close(luo);
	if (r < 0)
		return fail("%s: preserve (repetition %u): %s", v->name, rep + 1, strerror(-r));
	if (!keep) {
		close(v->session); /* unpreserves memfd and iommufd */
		v->session = -1;
		return 0;
	}
	if (v->devfd >= 0) {
		t0 = now_ms();
		r = iommulu_luo_session_preserve_fd(v->session, v->devfd, TOKEN_DEVICE);
		v->dev_ms = now_ms() - t0;
		if (r < 0)
			return fail("%s: preserve vfio cdev of %s: %s", v->name, v->bdf, strerror(-r));
	}
	return 0;
}

static double median(double *t, unsigned n)
{
	double c[MAX_REPS];

	memcpy(c, t, n * sizeof(*t));
	qsort(c, n, sizeof(c[0]), cmp_double);
	return n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
}

/*
 * Every VM --reps times, the repetitions interleaved (VM 1..n, then again)
 * so that a change of the host's load hits both VMs of a pair alike; the
 * last repetition stays preserved and goes into the fd store.
 */
static int preserve_all(struct bench *b)
{
	char state[96];
	double t0;
	int r;

	for (unsigned i = 0; i < b->n_vm; i++) {
		struct vm *v = &b->vm[i];

		if (!v->hwpt)
			continue;
		t0 = now_ms();
		r = iommulu_iommufd_hwpt_mark_preserve(v->iommufd, v->hwpt_id, HWPT_TOKEN);
		v->mark_ms = now_ms() - t0;
		if (r < 0)
			return fail("%s: IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE: %s", v->name, strerror(-r));
	}
	for (unsigned rep = 0; rep < b->reps; rep++)
		for (unsigned i = 0; i < b->n_vm; i++)
			if (vm_preserve_once(b, &b->vm[i], rep, rep + 1 == b->reps) < 0)
				return -1;
	for (unsigned i = 0; i < b->n_vm; i++) {
		struct vm *v = &b->vm[i];

		v->preserve_ms = median(v->rep_ms, b->reps);
		v->iommufd_ms = median(v->rep_iommufd_ms, b->reps);
		if (v->preserve_ms > SANITY_MS)
			return fail("%s: preserve took %.0f ms (sanity bound %.0f ms)", v->name,
				    v->preserve_ms, SANITY_MS);
		say("%s: preserved in %.1f ms, of which iommufd %.2f ms (medians of %u)%s%s", v->name,
		    v->preserve_ms, v->iommufd_ms, b->reps, v->hwpt ? "; incl. the mark" : "",
		    v->devfd >= 0 ? "; device preserved too" : "");
		snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", v->name);
		r = sd_pid_notify_with_fds(0, 0, state, &v->session, 1);
		if (r <= 0)
			return fail("FDSTORE %s: %s", v->name,
				    r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET");
	}
	return 0;
}

/*
 * A small session retrieved first after the kexec and left out of the
 * figures: whatever the first retrieve of a boot pays once (cold code and
 * data, lazily set up kernel state) would otherwise go to the first VM.
 * Under TCG that includes translating every code path the first time it
 * runs, which costs milliseconds.  With a spare device (--device once more
 * than there are sizes) the warm-up VM also has a marked HWPT with that
 * device attached, so its device takeover runs first as well, and the
 * 64 MiB VM's takeover is timed warm like the others.
 */
#define WARMUP "hb-warmup"

static int warmup_preserve(struct bench *b)
{
	int memfd = -1, iommufd = -1, luo, session = -1, devfd = -1, r;
	struct vm w = { .name = WARMUP, .hwpt = 1, .size = SZ_2M, .seed = 0x7761726dull,
			.memfd = -1, .iommufd = -1, .session = -1, .devfd = -1 };
	char state[96];

	if (b->warm_bdf) {
		w.bdf = b->warm_bdf;
		r = vm_ram(b, &w);
		if (b->have_thp)	/* vm_ram() set it for the warm-up VM */
			(void)write_file(THP_SYSFS, b->thp_orig);
		if (r < 0 || vm_iommu(b, &w, &devfd) < 0)
			return -1;
		r = iommulu_iommufd_hwpt_mark_preserve(w.iommufd, w.hwpt_id, HWPT_TOKEN);
		if (r < 0)
			return fail("warm-up session: IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE: %s",
				    strerror(-r));
		munmap(w.ram, w.size);
		memfd = w.memfd;
		iommufd = w.iommufd;
		r = 0;
	} else {
		r = iommulu_memfd_create(WARMUP, SZ_2M, &memfd);
		if (r == 0)
			r = iommulu_iommufd_open(&iommufd);
	}
	if (r < 0)
		return fail("warm-up session: %s", strerror(-r));
	luo = iommulu_luo_open(5000);
	if (luo < 0)
		return fail("open /dev/liveupdate: %s", strerror(-luo));
	r = iommulu_luo_session_create(luo, WARMUP, &session);
	close(luo);
	if (r == 0)
		r = iommulu_luo_session_preserve_fd(session, memfd, TOKEN_MEMFD);
	if (r == 0)
		r = iommulu_luo_session_preserve_fd(session, iommufd, TOKEN_IOMMUFD);
	if (r == 0 && w.devfd >= 0)
		r = iommulu_luo_session_preserve_fd(session, w.devfd, TOKEN_DEVICE);
	if (r < 0)
		return fail("warm-up session: preserve: %s", strerror(-r));
	snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", WARMUP);
	r = sd_pid_notify_with_fds(0, 0, state, &session, 1);
	if (r <= 0)
		return fail("FDSTORE %s: %s", WARMUP, r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET");
	return 0;
}

static int warmup_restore(struct bench *b, int session)
{
	int memfd, iommufd, devfd = -1, r;
	long long claimed = -1;

	r = iommulu_luo_session_retrieve_fd(session, TOKEN_MEMFD, &memfd);
	if (r == 0)
		r = iommulu_luo_session_retrieve_fd(session, TOKEN_IOMMUFD, &iommufd);
	/* The device's takeover, as the VMs' below */
	if (r == 0 && b->warm_bdf) {
		r = iommulu_luo_session_retrieve_fd(session, TOKEN_DEVICE, &devfd);
		if (r == 0 && kernel_hwpt_takeover_ms(b->warm_bdf, &claimed) < 0)
			return fail("warm-up session: %s: no takeover of the kept page table",
				    b->warm_bdf);
	}
	if (r == 0)
		r = iommulu_luo_session_finish(session);
	if (r < 0)
		return fail("warm-up session: %s", strerror(-r));
	if (devfd >= 0)
		close(devfd);
	close(memfd);
	close(iommufd);
	if (sd_pid_notify(0, 0, "FDSTOREREMOVE=1\nFDNAME=" WARMUP) <= 0)
		return fail("FDSTOREREMOVE %s failed", WARMUP);
	return 0;
}

static void print_pairs(const struct bench *b, int restore, double boot_s)
{
	for (unsigned i = 0; i + 1 < b->n_vm; i += 2) {
		const struct vm *w = &b->vm[i], *o = &b->vm[i + 1];
		char tag[24];

		snprintf(tag, sizeof(tag), "%.*s", (int)(strlen(w->tag) - 5), w->tag);
		if (!restore) {
			metric("preserve_ms", w->tag, w->preserve_ms, "ms");
			metric("preserve_ms", o->tag, o->preserve_ms, "ms");
			metric("preserve_ratio", tag, w->preserve_ms / o->preserve_ms, "x");
			metric("preserve_iommufd_ms", w->tag, w->iommufd_ms, "ms");
			metric("preserve_iommufd_ms", o->tag, o->iommufd_ms, "ms");
			metric("iommu_table_pages", tag, (double)w->tables, "pages");
		} else {
			metric("restore_ms", w->tag, w->restore_ms, "ms");
			metric("restore_ms", o->tag, o->restore_ms, "ms");
			metric("restore_ratio", tag, w->restore_ms / o->restore_ms, "x");
			metric("restore_iommufd_ms", w->tag, w->restore_iommufd_ms, "ms");
			metric("restore_iommufd_ms", o->tag, o->restore_iommufd_ms, "ms");
			metric("boot_to_restored_ratio", tag,
			       (boot_s + w->restore_ms / 1e3) / (boot_s + o->restore_ms / 1e3), "x");
		}
	}
}

/*
 * Can a hugetlb memfd be preserved?  Linux 7.3's memfd LUO handler takes
 * only shmem files (memfd_luo_can_preserve(): shmem_file()), so a hugetlb
 * memfd finds no handler and LIVEUPDATE_SESSION_PRESERVE_FD fails with
 * ENOENT.  Reported, not a failure: the guest kernel may not even have
 * hugetlbfs (then memfd_create(MFD_HUGETLB) fails with ENOSYS).
 */
static void hugetlb_probe(void)
{
	int fd, luo, session = -1, r;

	fd = memfd_create("hb-hugetlb", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
	if (fd < 0) {
		say("hugetlb memfd: memfd_create(MFD_HUGETLB): %m (no hugetlbfs in this kernel)");
		metric("hugetlb_memfd_preservable", NULL, 0, "bool");
		return;
	}
	luo = iommulu_luo_open(5000);
	r = luo < 0 ? luo : iommulu_luo_session_create(luo, "hb-hugetlb-probe", &session);
	if (luo >= 0)
		close(luo);
	if (r == 0)
		r = iommulu_luo_session_preserve_fd(session, fd, 1);
	say("hugetlb memfd: LIVEUPDATE_SESSION_PRESERVE_FD: %s", r ? strerror(-r) : "preserved");
	metric("hugetlb_memfd_preservable", NULL, r == 0, "bool");
	if (session >= 0)
		close(session);
	close(fd);
}

static int cmd_preserve(struct bench *b)
{
	int devfd = -1, r;

	plan(b);
	hugetlb_probe();
	say("%u VMs: sizes x {4 KiB%s} x {hwpt, base}, %u preserve repetition(s) each", b->n_vm,
	    b->have_thp ? ", 2 MiB" : "", b->reps);
	for (unsigned i = 0; i < b->n_vm; i++)
		if (vm_ram(b, &b->vm[i]) < 0)
			goto err;
	if (b->have_thp && (r = write_file(THP_SYSFS, b->thp_orig)) < 0) {
		fail("restore %s to %s: %s", THP_SYSFS, b->thp_orig, strerror(-r));
		goto err;
	}
	/* The 64 MiB device VM last: bdfs[0] allocates every other HWPT first. */
	for (unsigned i = b->n_vm; i-- > 0;)
		if (vm_iommu(b, &b->vm[i], &devfd) < 0)
			goto err;

	/* Pre-kexec DMA through each device VM's HWPT, then the pattern back. */
	for (unsigned i = 0; i < b->n_vm; i++) {
		struct vm *v = &b->vm[i];
		struct edu e;

		if (!is_dev_vm(b, v))
			continue;
		if (edu_open_vfio(v->bdf, v->devfd, &e) < 0 ||
		    dma_check(&e, v, 0x2000, 0x3000, 0x5eed) < 0)
			goto err;
		pattern_fill(v->ram + 0x2000, 0x2000, v->seed, 0x2000);
		munmap((void *)e.bar0, e.len);
		say("%s: edu DMA through HWPT %u of %s: OK", v->bdf, v->hwpt_id, v->name);
	}

	if (preserve_all(b) < 0 || warmup_preserve(b) < 0)
		goto err;
	if (b->corrupt) {
		struct vm *v = &b->vm[b->n_vm > 4 ? 4 : 0];

		v->ram[v->size / 3] ^= 0xa5;
		say("--corrupt: flipped byte %" PRIu64 " of %s after preserving", v->size / 3, v->name);
	}
	print_pairs(b, 0, 0);
	metric("device_preserve_ms", NULL, b->vm[0].dev_ms, "ms");
	say("%u sessions and the warm-up session in the fd store", b->n_vm);
	return 0;
err:
	if (b->have_thp)
		(void)write_file(THP_SYSFS, b->thp_orig);
	return 1;
}

/* ------------------------------------------------------------- stage 2 */

static int ioas_unmap(int iommufd, uint32_t ioas, uint64_t iova, uint64_t len, uint64_t *done)
{
	struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova,
				      .length = len };

	if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &u) < 0)
		return -errno;
	*done = u.length;
	return 0;
}

static int vm_restore(struct bench *b, struct vm *v)
{
	uint64_t iova = IOVA;
	long thp0, thp1;
	double t0, t1;
	int r;

	thp0 = shmem_thp();
	t0 = now_ms();
	r = iommulu_luo_session_retrieve_fd(v->session, TOKEN_MEMFD, &v->memfd);
	if (r < 0)
		return fail("%s: retrieve memfd: %s", v->name, strerror(-r));
	t1 = now_ms();
	r = iommulu_luo_session_retrieve_fd(v->session, TOKEN_IOMMUFD, &v->iommufd);
	if (r < 0)
		return fail("%s: retrieve iommufd: %s", v->name, strerror(-r));
	if (v->hwpt) {
		/* The IOAS is back under the ID it had; the token names it. */
		r = iommulu_iommufd_hwpt_query(v->iommufd, HWPT_TOKEN, NULL, &v->ioas_id, NULL);
		if (r < 0)
			return fail("%s: IOMMU_HWPT_LIVEUPDATE_QUERY: %s", v->name, strerror(-r));
	} else {
		/* No HWPT came back: the VMM puts guest RAM into an IOAS itself. */
		r = iommulu_iommufd_ioas_alloc(v->iommufd, &v->ioas_id);
		if (r == 0)
			r = iommulu_iommufd_ioas_map_file(v->iommufd, v->ioas_id, v->memfd, 0, v->size,
							  IOMMULU_MAP_FIXED_IOVA |
								  IOMMULU_MAP_READABLE |
								  IOMMULU_MAP_WRITEABLE,
							  &iova);
		if (r < 0)
			return fail("%s: rebuild the IOAS: %s", v->name, strerror(-r));
	}
	v->restore_ms = now_ms() - t0;
	v->restore_iommufd_ms = now_ms() - t1;
	thp1 = shmem_thp();
	v->thp = thp0 < 0 ? 0 : thp1 - thp0;
	if (v->restore_ms > SANITY_MS)
		return fail("%s: restore took %.0f ms (sanity bound %.0f ms)", v->name, v->restore_ms,
			    SANITY_MS);
	return 0;
}

static int vm_check(struct bench *b, struct vm *v)
{
	uint64_t done = 0;
	struct stat st;
	int64_t bad;
	int r;

	if (fstat(v->memfd, &st) < 0 || (uint64_t)st.st_size != v->size)
		return fail("%s: retrieved memfd is %jd bytes, expected %" PRIu64, v->name,
			    (intmax_t)st.st_size, v->size);
	bad = check_pattern(v);
	if (bad < 0)
		return fail("%s: reading the retrieved memfd: %s", v->name, strerror((int)-bad));
	if ((uint64_t)bad != v->size)
		return fail("%s: guest RAM differs from the pre-kexec pattern at byte %" PRId64,
			    v->name, bad);
	v->ram = mmap(NULL, v->size, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	if (v->ram == MAP_FAILED)
		return fail("%s: mmap retrieved memfd: %m", v->name);
	/* Large folios must come back large (memfd_luo keeps the folio order). */
	if (v->huge && (uint64_t)v->thp != v->size / SZ_2M)
		return fail("%s: %ld of %" PRIu64 " 2 MiB folios came back", v->name, v->thp,
			    v->size / SZ_2M);
	if (!v->hwpt && v->ioas_id != 1)
		return fail("%s: the retrieved iommufd was not empty (new IOAS got ID %u)", v->name,
			    v->ioas_id);
	if (v->hwpt && v->ioas_id != IOAS_ID)
		return fail("%s: the IOAS came back as %u, it was %u", v->name, v->ioas_id,
			    IOAS_ID);
	say("%s: restored in %.1f ms, of which iommufd (+ IOAS rebuild) %.2f ms; all %" PRIu64 " MiB intact, %ld 2 MiB folios", v->name,
	    v->restore_ms, v->restore_iommufd_ms, v->size >> 20, v->thp);
	if (is_dev_vm(b, v)) {
		struct edu e;
		char drv[64];

		r = iommulu_pci_driver(v->bdf, drv, sizeof(drv));
		if (r < 0 || strcmp(drv, "vfio-pci") != 0)
			return fail("%s not bound to vfio-pci after the kexec", v->bdf);
		/* Device file not retrieved: the preserved translation carries it. */
		if (edu_open_sysfs(v->bdf, &e) < 0 || dma_check(&e, v, 0x4000, 0x8000, 0xf00d) < 0)
			return -1;
		say("%s: edu DMA after the kexec landed in %s through the preserved HWPT: OK", v->bdf,
		    v->name);
		/*
		 * The takeover (the session cannot be finished before):
		 * retrieving the device file binds it to the retrieved iommufd
		 * and attaches it to its HWPT, created under its old ID over
		 * the page table the device kept; then the first DMA through it.
		 */
		{
			long long claimed = -1;
			uint32_t hwpt_id;
			bool created;
			double t0 = now_ms();

			r = iommulu_luo_session_retrieve_fd(v->session, TOKEN_DEVICE, &v->devfd);
			v->dev_ms = v->attach_ms = now_ms() - t0;
			if (r < 0)
				return fail("%s: retrieve vfio cdev: %s", v->name, strerror(-r));
			if (dma_check(&e, v, 0x5000, 0x6000, 0xbeef) < 0)
				return -1;
			v->takeover_ms = now_ms() - t0;
			v->hwpt_ms = kernel_hwpt_takeover_ms(v->bdf, &claimed);
			if (v->hwpt_ms < 0)
				return fail("%s: the kernel did not give HWPT %u the page table the device kept (no \"took the kept page table over\" log line)",
					    v->bdf, HWPT_ID);
			/* Guest RAM is pinned already: its memfd carried the pins over */
			if (claimed != (long long)(v->size / PAGE))
				return fail("%s: HWPT %u took the pins of %lld pages over from the memfd, not all %" PRIu64,
					    v->bdf, HWPT_ID, claimed, v->size / PAGE);
			r = iommulu_iommufd_hwpt_query(v->iommufd, HWPT_TOKEN, &hwpt_id, NULL,
						       &created);
			if (r < 0 || !created || hwpt_id != HWPT_ID)
				return fail("%s: after retrieving the device, HWPT %u (was %u) %s",
					    v->bdf, hwpt_id, HWPT_ID,
					    r < 0 ? strerror(-r) : "was not created");
			say("%s: retrieved bound and attached to HWPT %u on the restored IOAS in %.1f "
			    "ms (the HWPT took the kept page table over in %.2f ms of it), first DMA "
			    "OK %.1f ms later",
			    v->bdf, hwpt_id, v->attach_ms, v->hwpt_ms, v->takeover_ms - v->attach_ms);
		}
		munmap((void *)e.bar0, e.len);
	}
	/* The IOAS holds exactly guest RAM at its IOVA (unmapping it says so). */
	r = ioas_unmap(v->iommufd, v->ioas_id, IOVA, v->size, &done);
	if (r < 0 || done != v->size)
		return fail("%s: IOAS %u does not map %" PRIu64 " MiB at IOVA %#llx (%s, %" PRIu64
			    " bytes)",
			    v->name, v->ioas_id, v->size >> 20, IOVA, r < 0 ? strerror(-r) : "ok",
			    done);
	munmap(v->ram, v->size);
	return 0;
}

static int cmd_restore(struct bench *b)
{
	char **names = NULL, state[96];
	int n, r, warmup = -1;
	double boot_s = 0;

	plan(b);
	n = sd_listen_fds_with_names(0, &names);
	if (n < 0)
		return fail("sd_listen_fds_with_names: %s", strerror(-n)), 1;
	for (int i = 0; i < n; i++) {
		unsigned k;

		if (strcmp(names[i], WARMUP) == 0) {
			warmup = SD_LISTEN_FDS_START + i;
			continue;
		}
		for (k = 0; k < b->n_vm; k++)
			if (strcmp(names[i], b->vm[k].name) == 0)
				break;
		if (k == b->n_vm)
			return fail("unexpected fd %s in the fd store", names[i]), 1;
		b->vm[k].session = SD_LISTEN_FDS_START + i;
	}
	for (unsigned k = 0; k < b->n_vm; k++)
		if (b->vm[k].session < 0)
			return fail("session %s did not come back through the fd store", b->vm[k].name),
			       1;

	if (warmup < 0)
		return fail("the warm-up session did not come back"), 1;
	boot_s = boottime_s();
	printf("IOMMULU-MARK: restored scenario=hwpt-bench stage=2 t=%.2f first-retrieve=%s\n",
	       boot_s, WARMUP);
	if (warmup_restore(b, warmup) < 0)
		return 1;
	for (unsigned k = 0; k < b->n_vm; k++)
		if (vm_restore(b, &b->vm[k]) < 0)
			return 1;
	for (unsigned k = 0; k < b->n_vm; k++)
		if (vm_check(b, &b->vm[k]) < 0)
			return 1;
	for (unsigned k = 0; k < b->n_vm; k++) {
		r = iommulu_luo_session_finish(b->vm[k].session);
		if (r < 0)
			return fail("%s: FINISH: %s", b->vm[k].name, strerror(-r)), 1;
		snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", b->vm[k].name);
		r = sd_pid_notify(0, 0, state);
		if (r <= 0)
			return fail("FDSTOREREMOVE %s: %s", b->vm[k].name,
				    r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET"),
			       1;
	}
	metric("boot_to_first_retrieve_s", NULL, boot_s, "s");
	print_pairs(b, 1, boot_s);
	metric("device_retrieve_ms", NULL, b->vm[0].dev_ms, "ms");
	for (unsigned k = 0; k < b->n_vm; k++) {
		const struct vm *v = &b->vm[k];
		double share = v->hwpt_ms / v->restore_ms;

		if (!is_dev_vm(b, v))
			continue;
		/* What the takeover (retrieving the device file, which binds it
		 * and attaches a HWPT over the kept page table, then the first DMA)
		 * costs beside retrieving the same VM's other files. */
		metric("takeover_ms", v->tag, v->takeover_ms, "ms");
		/* retrieving the device file (bind + HWPT over the kept page
		 * table, whose every page is checked and pinned, + attach),
		 * without edu's own DMA latency (two transfers of 100 ms of
		 * virtual time) */
		metric("takeover_attach_ms", v->tag, v->attach_ms, "ms");
		metric("takeover_attach_to_restore_ratio", v->tag, v->attach_ms / v->restore_ms, "x");
		metric("takeover_to_restore_ratio", v->tag, v->takeover_ms / v->restore_ms, "x");
		/* the HWPT's part of it: taking the kept page table over (kernel log) */
		metric("takeover_hwpt_ms", v->tag, v->hwpt_ms, "ms");
		metric("takeover_hwpt_to_restore_ratio", v->tag, share, "x");
		say("%s: the HWPT's share of the takeover beside the VM's restore: %.1f %% (%s 10 %%); "
		    "the whole device retrieve %.1f %%",
		    v->name, 100 * share, share <= 0.10 ? "within" : "ABOVE",
		    100 * v->attach_ms / v->restore_ms);
	}
	say("%u sessions restored, checked and finished", b->n_vm);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "sizes", required_argument, NULL, 's' },
		{ "reps", required_argument, NULL, 'r' },
		{ "corrupt", no_argument, NULL, 'c' },
		{}
	};
	struct bench *b;
	const char *sizes = "64M,256M,1G";
	char *list, *tok, *save = NULL;
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	b = calloc(1, sizeof(*b));
	if (!b)
		return 1;
	b->reps = 5;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (b->n_bdf == MAX_SIZES + 1 || !iommulu_bdf_is_valid(optarg))
				goto usage;
			b->bdfs[b->n_bdf++] = optarg;
			break;
		case 's': sizes = optarg; break;
		case 'r': b->reps = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'c': b->corrupt = 1; break;
		default: goto usage;
		}
	}
	if (optind + 1 != argc || !b->n_bdf || b->reps < 1 ||
	    b->reps > MAX_REPS)
		goto usage;
	list = strdup(sizes);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (b->n_sizes == MAX_SIZES || parse_size(tok, &b->sizes[b->n_sizes]) < 0)
			goto usage;
		b->n_sizes++;
	}
	free(list);
	if (!b->n_sizes)
		goto usage;
	if (b->n_bdf > b->n_sizes) {
		b->warm_bdf = b->bdfs[b->n_sizes];
		b->n_bdf = b->n_sizes;
	}
	b->have_thp = thp_current(b->thp_orig, sizeof(b->thp_orig)) == 0;
	say("shmem THP: %s", b->have_thp ? b->thp_orig : "not in this kernel (no " THP_SYSFS ")");
	if (strcmp(argv[optind], "preserve") == 0)
		return cmd_preserve(b);
	if (strcmp(argv[optind], "restore") == 0)
		return cmd_restore(b);
usage:
	fprintf(stderr, "usage: hwpt-bench preserve|restore --device BDF [--device BDF ...] [--sizes 64M,256M,1G] "
			"[--reps N] [--corrupt]\n"
			"  one device per size; one more is the warm-up session's\n");
	return 2;
}
