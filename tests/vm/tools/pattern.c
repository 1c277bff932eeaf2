/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>

#include "pattern.h"

/* splitmix64 of (seed, 8-byte block index): cheap and well mixed. */
static uint64_t block(uint64_t seed, uint64_t index)
{
	uint64_t z = seed + 0x9e3779b97f4a7c15ull * (index + 1);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint8_t pattern_byte(uint64_t seed, uint64_t pos)
{
	return (uint8_t)(block(seed, pos / 8) >> (8 * (pos % 8)));
}

/* Byte k of a block is v >> 8k (pattern_byte()): its little-endian
 * encoding. */
static void block_bytes(uint64_t v, uint8_t out[8])
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(out, &v, 8);
#else
	for (int k = 0; k < 8; k++)
		out[k] = (uint8_t)(v >> (8 * k));
#endif
}

/*
 * The fill and the check work a whole 8-byte block at a time where the
 * pattern position is block aligned (the same bytes as pattern_byte(), one
 * block() per 8 bytes instead of per byte: gigabytes of guest RAM are
 * checked under TCG), and byte by byte at the unaligned ends.
 */
void pattern_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
	size_t i = 0;
	uint8_t b[8];

	for (; i < len && (offset + i) % 8; i++)
		buf[i] = pattern_byte(seed, offset + i);
	for (; len - i >= 8; i += 8) {
		block_bytes(block(seed, (offset + i) / 8), b);
		memcpy(buf + i, b, 8);
	}
	for (; i < len; i++)
		buf[i] = pattern_byte(seed, offset + i);
}

size_t pattern_mismatch(const uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
	size_t i = 0;
	uint8_t b[8];

	for (; i < len && (offset + i) % 8; i++)
		if (buf[i] != pattern_byte(seed, offset + i))
			return i;
	for (; len - i >= 8; i += 8) {
		block_bytes(block(seed, (offset + i) / 8), b);
		if (memcmp(buf + i, b, 8) != 0)
			break;
	}
	for (; i < len; i++)
		if (buf[i] != pattern_byte(seed, offset + i))
			return i;
	return len;
}

uint64_t pattern_hash(const uint8_t *buf, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= buf[i];
		h *= 0x100000001b3ull;
	}
	return h;
}
