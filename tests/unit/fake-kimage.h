/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Synthetic x86 bzImages for the tests of the kernel check (kimage.c,
 * StageKernel): a setup header with "HdrS", boot protocol 2.15, a version
 * string, and a gzip or xz payload holding whatever strings the test wants
 * the "kernel" to contain (the series' compatible strings, or not) and
 * optionally an IKCONFIG.  Header only; needs zlib and liblzma.
 */

#include <lzma.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define FK_CHECK(x)                     \
	do {                            \
		if (!(x))               \
			abort();        \
	} while (0)

#define GOOD_CMDLINE "console=ttyS0 liveupdate=on kho=on intel_iommu=on"
#define SERIES "pci-liveupdate-v1\0iommu-core-v1\0iommufd-v2\0vfio-pci-v3\0"

static const char good_config[] __attribute__((unused)) =
	"CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\nCONFIG_LIVEUPDATE_MEMFD=y\nCONFIG_PCI=y\n"
	"CONFIG_IOMMUFD=y\nCONFIG_GENERIC_PT=y\nCONFIG_INTEL_IOMMU=y\nCONFIG_VFIO_DEVICE_CDEV=y\n"
	"CONFIG_VFIO=y\nCONFIG_VFIO_PCI=m\n";

static inline size_t gzip_buf(const void *in, size_t len, uint8_t *out, size_t cap)
{
	z_stream z = {};

	FK_CHECK(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	FK_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
	deflateEnd(&z);
	return cap - z.avail_out;
}

static inline size_t xz_buf(const void *in, size_t len, uint8_t *out, size_t cap)
{
	size_t pos = 0;

	FK_CHECK(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, in, len, out, &pos, cap) == LZMA_OK);
	return pos;
}

/* A vmlinux stand-in: filler, the given strings, an optional IKCONFIG. */
static inline uint8_t *make_vmlinux(const char *strings, size_t slen, const char *ikconfig, size_t *ret_len)
{
	size_t cap = (1u << 20) + slen + 65536, len = 0;
	uint8_t *v = calloc(1, cap);

	FK_CHECK(v);
	for (size_t i = 0; i < (1u << 20); i++)
		v[len++] = (uint8_t)(i * 7);
	memcpy(v + len, strings, slen);
	len += slen;
	if (ikconfig) {
		memcpy(v + len, "IKCFG_ST", 8);
		len += 8;
		len += gzip_buf(ikconfig, strlen(ikconfig), v + len, cap - len - 8);
		memcpy(v + len, "IKCFG_ED", 8);
		len += 8;
	}
	*ret_len = len;
	return v;
}

/* An x86 bzImage: one setup sector after the boot sector, "HdrS", boot
 * protocol 2.15, the version string, the compressed payload. */
static inline uint8_t *make_bzimage(const uint8_t *vmlinux, size_t vlen, bool xz, size_t *ret_len)
{
	size_t cap = 1024 + vlen + 65536, plen;
	uint8_t *img = calloc(1, cap);
	const char *version = "7.3.4-test (builder@host) #1 SMP";

	FK_CHECK(img);
	img[0x1f1] = 1;
	memcpy(img + 0x202, "HdrS", 4);
	img[0x206] = 0x0f;
	img[0x207] = 0x02;
	img[0x20e] = 0x00;	/* version string at 0x200 + 0x100 */
	img[0x20f] = 0x01;
	memcpy(img + 0x300, version, strlen(version));
	plen = xz ? xz_buf(vmlinux, vlen, img + 1024, cap - 1024) : gzip_buf(vmlinux, vlen, img + 1024, cap - 1024);
	img[0x24c] = (uint8_t)plen;
	img[0x24d] = (uint8_t)(plen >> 8);
	img[0x24e] = (uint8_t)(plen >> 16);
	img[0x24f] = (uint8_t)(plen >> 24);
	*ret_len = 1024 + plen;
	return img;
}

/* Write a bzImage of strings (gzip) to path; true on success. */
static inline bool write_bzimage(const char *path, const char *strings, size_t slen)
{
	size_t vlen, ilen;
	uint8_t *v = make_vmlinux(strings, slen, NULL, &vlen), *img = make_bzimage(v, vlen, false, &ilen);
	FILE *f = fopen(path, "we");
	bool ok = f && fwrite(img, 1, ilen, f) == ilen;

	if (f && fclose(f) != 0)
		ok = false;
	free(img);
	free(v);
	return ok;
}
