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
 */

#include <stdint.h>

#define COM1 0x3f8
#define PATTERN_BASE 0x200000u
#define PATTERN_BYTES 0x400000u
#define MB_MAGIC 0x1BADB002u

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

	for (;;) {
		uint32_t s = seed, first_bad = 0;
		int ok = 1;

		for (uint32_t i = 0; i < PATTERN_BYTES / 4; i++) {
			if (p[i] != pattern(s, i) && ok) {
				ok = 0;
				first_bad = PATTERN_BASE + i * 4;
			}
		}
		count = count + 1;
		if (!ok)
			bad = bad + 1;
		puts_("l2guest: seed=");
		put_hex(s);
		puts_(" count=");
		put_dec(count);
		if (ok) {
			puts_(" pattern=ok\n");
		} else {
			puts_(" pattern=BAD at 0x");
			put_hex(first_bad);
			puts_(" bad=");
			put_dec(bad);
			puts_("\n");
		}
	}
}
