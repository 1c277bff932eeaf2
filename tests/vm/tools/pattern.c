/* SPDX-License-Identifier: LGPL-2.1-or-later */

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

void pattern_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern_byte(seed, offset + i);
}

size_t pattern_mismatch(const uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
	for (size_t i = 0; i < len; i++)
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
