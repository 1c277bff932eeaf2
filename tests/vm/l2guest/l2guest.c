/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * l2guest: the tiny L2 guest of the qemu-* scenarios, a freestanding
 * multiboot ELF (32-bit protected mode, no paging) that QEMU loads with
 * -kernel.
 *
 * At boot it takes a seed from the TSC, fills PATTERN_BYTES of guest RAM
 * at PATTERN_BASE with a pattern derived from the seed and prints
 *	l2guest: boot seed=SSSSSSSS pattern=0xBASE+0xBYTES
 * Then, forever, one round checks every word of the pattern, increments
 * a counter kept in guest RAM and prints
 *	l2guest: seed=SSSSSSSS count=N pattern=ok
 * or "pattern=BAD at 0xADDR" (and "bad=K", the rounds that failed so far).
 * The counter goes up by exactly one per line, so a guest that is
 * stopped and resumed (its RAM and CPU state kept) goes on with N+1; a
 * guest that rebooted prints a boot line with another seed and starts
 * again at 1.
 *
 * With QEMU's edu device (1234:11e8) on PCI bus 0, found through
 * configuration mechanism #1 (ports 0xcf8/0xcfc), e.g. an edu of the
 * virtual host passed through with -device vfio-pci, it also prints
 *	l2guest: edu 00:DD.0 bar0=0xADDR
 * and each round does one DMA round trip of a pattern fresh to the round:
 * RAM (DMA_SRC) -> edu's buffer, then edu's buffer -> RAM (DMA_DST), and
 * checks DMA_DST word by word.  Guest-physical addresses are the DMA
 * addresses the device is given (no paging, no vIOMMU in the L2 guest).
 * The round's line then ends in "dma=N dmabad=K": round trips done and
 * how many of them failed (a timeout or a word that differs; the first
 * failure of the round is named by "dmaerr=").  Without edu the output is
 * as above, with no dma fields.
 */

#include <stdint.h>

#define COM1 0x3f8
#define PATTERN_BASE 0x200000u
#define PATTERN_BYTES 0x400000u
#define MB_MAGIC 0x1BADB002u

/*
 * edu (QEMU hw/misc/edu.c): BAR0 registers, and its DMA buffer, which the
 * device sees at EDU_BUF.  cmd bit 0 starts a transfer (cleared when it is
 * done, about 100 ms of virtual time later), bit 1 is the direction: 0 is
 * RAM -> edu (src a DMA address, dst in the buffer), 1 is edu -> RAM.
 * EDU_XFER stays short of the buffer's end: the edu of QEMU 7.2 (the
 * virtual host's) aborts the whole VM on a transfer that ends at its last
 * byte.
 */
#define EDU_VENDOR_DEVICE 0x11e81234u
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_CMD_RUN 0x1u
#define EDU_CMD_TO_RAM 0x2u
#define EDU_BUF 0x40000u
#define EDU_XFER 0xf00u
/* Guest RAM for the DMA, above the pattern (the guest has 16 MiB). */
#define DMA_SRC 0x700000u
#define DMA_DST 0x701000u
/* Where BAR0 goes if the firmware left it unassigned: in the PCI hole. */
#define EDU_BAR_FALLBACK 0xe0000000u
/* A transfer that has not ended after this many TSC ticks failed. */
#define EDU_TIMEOUT_TICKS (1ull << 36)

struct mb_header {
	uint32_t magic, flags, checksum;
};

__attribute__((section(".multiboot"), used, aligned(4)))
static const struct mb_header mb_header = { MB_MAGIC, 0, -MB_MAGIC };

/* Entry from the multiboot loader: flat 32-bit segments, no stack. */
__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	mov $l2_stack + 16384, %esp\n"
	"	call l2_main\n"
	"1:	hlt\n"
	"	jmp 1b\n");

__attribute__((used, aligned(16))) uint8_t l2_stack[16384];

/* In guest RAM on purpose: they must survive a stop and resume. */
static volatile uint32_t seed, count, bad;

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static void puts_(const char *s)
{
	for (; *s; s++)
		outb(COM1, (uint8_t)*s);
}

static void put_hex(uint32_t v)
{
	for (int i = 7; i >= 0; i--)
		outb(COM1, (uint8_t)"0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

static void put_dec(uint32_t v)
{
	char buf[12];
	int i = 0;

	do {
		buf[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		outb(COM1, (uint8_t)buf[--i]);
}

static inline uint32_t pattern(uint32_t s, uint32_t i)
{
	uint32_t x = i * 0x9e3779b1u + s;

	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	return x;
}

/* PCI configuration mechanism #1, bus 0, function 0. */
static uint32_t pci_read(uint32_t dev, uint32_t reg)
{
	outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
	return inl(0xcfc);
}

static void pci_write(uint32_t dev, uint32_t reg, uint32_t v)
{
	outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
	outl(0xcfc, v);
}

/* edu's BAR0 (0: no edu), and its DMA tallies, kept in guest RAM. */
static volatile uint32_t edu_bar, dma_rounds, dma_bad;

static void edu_find(void)
{
	for (uint32_t dev = 0; dev < 32; dev++) {
		uint32_t bar;

		if (pci_read(dev, 0x00) != EDU_VENDOR_DEVICE)
			continue;
		bar = pci_read(dev, 0x10) & ~0xfu;
		if (!bar) {
			pci_write(dev, 0x10, EDU_BAR_FALLBACK);
			bar = pci_read(dev, 0x10) & ~0xfu;
		}
		/* Command register: memory space and bus master on. */
		pci_write(dev, 0x04, (pci_read(dev, 0x04) & 0xffffu) | 0x6u);
		edu_bar = bar;
		puts_("l2guest: edu 00:");
		outb(COM1, (uint8_t)"0123456789abcdef"[dev >> 4]);
		outb(COM1, (uint8_t)"0123456789abcdef"[dev & 0xf]);
		puts_(".0 bar0=0x");
		put_hex(bar);
		puts_("\n");
		return;
	}
}

static inline void edu_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(edu_bar + reg) = v;
}

static inline uint32_t edu_read(uint32_t reg)
{
	return *(volatile uint32_t *)(edu_bar + reg);
}

/* One transfer; 0 when it ended, -1 on a timeout. */
static int edu_dma(uint32_t src, uint32_t dst, uint32_t cmd)
{
	uint64_t t0 = rdtsc();

	edu_write(EDU_DMA_SRC, src);
	edu_write(EDU_DMA_DST, dst);
	edu_write(EDU_DMA_CNT, EDU_XFER);
	edu_write(EDU_DMA_CMD, cmd | EDU_CMD_RUN);
	while (edu_read(EDU_DMA_CMD) & EDU_CMD_RUN)
		if (rdtsc() - t0 > EDU_TIMEOUT_TICKS)
			return -1;
	return 0;
}

/*
 * One DMA round trip of a pattern from round_seed; 0 if DMA_DST came back
 * as written to DMA_SRC, else the first guest-physical address that
 * differs, or 1 for a timeout.
 */
static uint32_t edu_round_trip(uint32_t round_seed)
{
	volatile uint32_t *src = (volatile uint32_t *)DMA_SRC;
	volatile uint32_t *dst = (volatile uint32_t *)DMA_DST;

	for (uint32_t i = 0; i < EDU_XFER / 4; i++) {
		src[i] = pattern(round_seed, i);
		dst[i] = ~pattern(round_seed, i);
	}
	if (edu_dma(DMA_SRC, EDU_BUF, 0) || edu_dma(EDU_BUF, DMA_DST, EDU_CMD_TO_RAM))
		return 1;
	for (uint32_t i = 0; i < EDU_XFER / 4; i++)
		if (dst[i] != pattern(round_seed, i))
			return DMA_DST + i * 4;
	return 0;
}

void l2_main(void);

void l2_main(void)
{
	volatile uint32_t *p = (volatile uint32_t *)PATTERN_BASE;
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	seed = lo ^ hi ^ 0x5eed5eedu;
	count = 0;
	bad = 0;
	for (uint32_t i = 0; i < PATTERN_BYTES / 4; i++)
		p[i] = pattern(seed, i);
	puts_("l2guest: boot seed=");
	put_hex(seed);
	puts_(" pattern=0x");
	put_hex(PATTERN_BASE);
	puts_("+0x");
	put_hex(PATTERN_BYTES);
	puts_("\n");
	edu_bar = 0;
	dma_rounds = 0;
	dma_bad = 0;
	edu_find();

	for (;;) {
		uint32_t s = seed, first_bad = 0, dma_err = 0;
		int ok = 1;

		for (uint32_t i = 0; i < PATTERN_BYTES / 4; i++) {
			if (p[i] != pattern(s, i) && ok) {
				ok = 0;
				first_bad = PATTERN_BASE + i * 4;
			}
		}
		if (edu_bar) {
			dma_err = edu_round_trip(s ^ (count * 0x01000193u));
			dma_rounds = dma_rounds + 1;
			if (dma_err)
				dma_bad = dma_bad + 1;
		}
		count = count + 1;
		if (!ok)
			bad = bad + 1;
		puts_("l2guest: seed=");
		put_hex(s);
		puts_(" count=");
		put_dec(count);
		if (ok) {
			puts_(" pattern=ok");
		} else {
			puts_(" pattern=BAD at 0x");
			put_hex(first_bad);
			puts_(" bad=");
			put_dec(bad);
		}
		if (edu_bar) {
			puts_(" dma=");
			put_dec(dma_rounds);
			puts_(" dmabad=");
			put_dec(dma_bad);
			if (dma_err == 1) {
				puts_(" dmaerr=timeout");
			} else if (dma_err) {
				puts_(" dmaerr=0x");
				put_hex(dma_err);
			}
		}
		puts_("\n");
	}
}
