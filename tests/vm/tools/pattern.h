/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * Deterministic byte patterns for the virtual-host checks: byte i of the
 * pattern with seed s depends on both, so a stale copy, a shifted copy or
 * a page of zeroes never matches by accident.
 */
void pattern_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset);

/* Index of the first byte of buf that differs from the pattern, or len
 * when all match. */
size_t pattern_mismatch(const uint8_t *buf, size_t len, uint64_t seed, uint64_t offset);

/* FNV-1a 64 over buf, for log lines. */
uint64_t pattern_hash(const uint8_t *buf, size_t len);
