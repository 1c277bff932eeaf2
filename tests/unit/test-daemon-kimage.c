/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* daemon/kimage.c: what a kernel image staged for kexec can adopt, on
 * synthetic bzImages that differ only in what is checked. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../../daemon/kimage.h"

#define GOOD_CMDLINE "console=ttyS0 liveupdate=on kho=on intel_iommu=on"
#define SERIES "pci-liveupdate-v1\0iommu-core-v1\0iommufd-v2\0vfio-pci-v2\0"

static const char good_config[] =
	"CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\nCONFIG_LIVEUPDATE_MEMFD=y\nCONFIG_PCI=y\n"
	"CONFIG_IOMMUFD=y\nCONFIG_GENERIC_PT=y\nCONFIG_INTEL_IOMMU=y\nCONFIG_VFIO_DEVICE_CDEV=y\n"
	"CONFIG_VFIO=y\nCONFIG_VFIO_PCI=m\n";

static size_t gzip_buf(const void *in, size_t len, uint8_t *out, size_t cap)
{
	z_stream z = {};

	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	deflateEnd(&z);
	return cap - z.avail_out;
}

static size_t xz_buf(const void *in, size_t len, uint8_t *out, size_t cap)
{
	size_t pos = 0;

	assert_int_equal(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, NULL, in, len, out, &pos, cap), LZMA_OK);
	return pos;
}

/* A vmlinux stand-in: filler, the given strings, an optional IKCONFIG. */
static uint8_t *make_vmlinux(const char *strings, size_t slen, const char *ikconfig, size_t *ret_len)
{
	size_t cap = (1u << 20) + slen + 65536, len = 0;
	uint8_t *v = calloc(1, cap);

	assert_non_null(v);
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
static uint8_t *make_bzimage(const uint8_t *vmlinux, size_t vlen, bool xz, size_t *ret_len)
{
	size_t cap = 1024 + vlen + 65536, plen;
	uint8_t *img = calloc(1, cap);
	const char *version = "7.3.4-test (builder@host) #1 SMP";

	assert_non_null(img);
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

static void verdict_of(const char *strings, size_t slen, bool xz, const char *config, const char *ikconfig,
		       const char *cmdline, KernelVerdict *kv)
{
	size_t vlen, ilen, dlen = 0;
	uint8_t *v = make_vmlinux(strings, slen, ikconfig, &vlen), *img = make_bzimage(v, vlen, xz, &ilen), *d = NULL;
	char rel[KIMAGE_RELEASE_MAX], err[256] = "", *ik = NULL;

	assert_int_equal(kimage_release(img, ilen, rel), 0);
	assert_string_equal(rel, "7.3.4-test");
	assert_int_equal(kimage_decompress(img, ilen, &d, &dlen, err, sizeof(err)), 0);
	assert_int_equal(dlen, vlen);
	assert_memory_equal(d, v, vlen);
	if (!config && ikconfig) {
		assert_int_equal(kimage_ikconfig(d, dlen, &ik), 0);
		assert_string_equal(ik, ikconfig);
		config = ik;
	} else if (!ikconfig)
		assert_int_equal(kimage_ikconfig(d, dlen, &ik), -ENOENT);
	kimage_verdict(config, "test", d, dlen, NULL, cmdline, kv);
	free(ik);
	free(d);
	free(img);
	free(v);
}

static void test_with_series(void **state)
{
	KernelVerdict kv;

	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, GOOD_CMDLINE, &kv);
	assert_true(kv.luo);
	assert_true(kv.devices);
	assert_string_equal(kv.luo_problem, "");
	assert_string_equal(kv.devices_problem, "");
	/* xz, and the config embedded (IKCONFIG) */
	verdict_of(SERIES, sizeof(SERIES), true, NULL, good_config, GOOD_CMDLINE, &kv);
	assert_true(kv.luo);
	assert_true(kv.devices);
}

/* The same config and command line, an image without the series (as a
 * pristine kernel): LUO sessions with memfds yes, devices never. */
static void test_without_series(void **state)
{
	static const char pristine[] = "memfd-v1\0luo-session\0";
	static const char older[] = "pci-liveupdate-v1\0iommu-core-v1\0iommufd-v1\0vfio-pci-v1\0";
	KernelVerdict kv;

	verdict_of(pristine, sizeof(pristine), false, good_config, NULL, GOOD_CMDLINE, &kv);
	assert_true(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "lacks the kernel-patches series"));
	assert_non_null(strstr(kv.devices_problem, "\"pci-liveupdate-v1\""));
	/* An older series, whose handlers would not take this one's handover */
	verdict_of(older, sizeof(older), false, good_config, NULL, GOOD_CMDLINE, &kv);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "\"iommufd-v2\""));
	/* A longer name is not the name */
	verdict_of("pci-liveupdate-v1\0iommu-core-v1\0iommufd-v20\0vfio-pci-v2\0", 60, false, good_config, NULL,
		   GOOD_CMDLINE, &kv);
	assert_false(kv.devices);
}

static void test_config(void **state)
{
	KernelVerdict kv;

	/* No LUO memfd preservation: nothing */
	verdict_of(SERIES, sizeof(SERIES), false, "CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n"
		   "CONFIG_IOMMUFD=y\n", NULL, GOOD_CMDLINE, &kv);
	assert_false(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.luo_problem, "lacks CONFIG_LIVEUPDATE_MEMFD"));
	assert_non_null(strstr(kv.devices_problem, "cannot adopt LUO sessions"));

	/* iommufd as a module: no live update handler */
	{
		char *c = strdup(good_config);

		*strstr(c, "CONFIG_IOMMUFD=y") = 0;
		verdict_of(SERIES, sizeof(SERIES), false, c, NULL, GOOD_CMDLINE, &kv);
		assert_true(kv.luo);
		assert_false(kv.devices);
		assert_non_null(strstr(kv.devices_problem, "CONFIG_IOMMUFD"));
		free(c);
	}
	{
		char c[1024];

		snprintf(c, sizeof(c), "%s", good_config);
		memcpy(strstr(c, "CONFIG_IOMMUFD=y"), "CONFIG_IOMMUFD=m", 16);
		verdict_of(SERIES, sizeof(SERIES), false, c, NULL, GOOD_CMDLINE, &kv);
		assert_false(kv.devices);
		assert_non_null(strstr(kv.devices_problem, "CONFIG_IOMMUFD=m (must be =y)"));
	}
	/* "# CONFIG_X is not set" and a prefix of another option are not it */
	verdict_of(SERIES, sizeof(SERIES), false, "# CONFIG_LIVEUPDATE is not set\nCONFIG_LIVEUPDATE_MEMFD=y\n"
		   "CONFIG_KEXEC_HANDOVER=y\n", NULL, GOOD_CMDLINE, &kv);
	assert_false(kv.luo);
	assert_non_null(strstr(kv.luo_problem, "lacks CONFIG_LIVEUPDATE"));
	assert_null(strstr(kv.luo_problem, "CONFIG_LIVEUPDATE_MEMFD"));
	/* No config anywhere: refused, fail-closed */
	verdict_of(SERIES, sizeof(SERIES), false, NULL, NULL, GOOD_CMDLINE, &kv);
	assert_false(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.luo_problem, "no config to check"));
}

static void test_cmdline(void **state)
{
	KernelVerdict kv;
	char v[64];

	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "console=ttyS0 kho=on intel_iommu=on", &kv);
	assert_false(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.luo_problem, "lacks liveupdate=on"));
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "liveupdate=on kho=off intel_iommu=on", &kv);
	assert_false(kv.luo);
	assert_non_null(strstr(kv.luo_problem, "kho=off"));
	/* The last occurrence wins, as in the kernel */
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "liveupdate=on liveupdate=0 kho=1 intel_iommu=on",
		   &kv);
	assert_false(kv.luo);
	/* KHO on by default in the config */
	{
		char c[1024];

		snprintf(c, sizeof(c), "%sCONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y\n", good_config);
		verdict_of(SERIES, sizeof(SERIES), false, c, NULL, "liveupdate=y intel_iommu=on", &kv);
		assert_true(kv.luo);
		assert_true(kv.devices);
	}
	/* The IOMMU off (or not on) under the devices */
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "liveupdate=on kho=on intel_iommu=off", &kv);
	assert_true(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "intel_iommu=off"));
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "liveupdate=on kho=on", &kv);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "lacks intel_iommu=on"));
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "liveupdate=on kho=on intel_iommu=sm_on,on", &kv);
	assert_true(kv.devices);
	/* After "--" the words are init's */
	verdict_of(SERIES, sizeof(SERIES), false, good_config, NULL, "kho=on intel_iommu=on -- liveupdate=on", &kv);
	assert_false(kv.luo);

	assert_true(kimage_cmdline_param("a=\"x y\" b", "a", v, sizeof(v)));
	assert_string_equal(v, "x y");
	assert_true(kimage_cmdline_param("a=1 kho b", "kho", v, sizeof(v)));
	assert_string_equal(v, "");
	assert_false(kimage_cmdline_param("khox=1", "kho", v, sizeof(v)));
}

static void test_not_a_kernel(void **state)
{
	uint8_t junk[4096] = { 0 };
	char rel[KIMAGE_RELEASE_MAX], err[256] = "";
	uint8_t *d = NULL, *v, *img;
	size_t dlen, vlen, ilen;
	KernelVerdict kv;

	assert_int_equal(kimage_release(junk, sizeof(junk), rel), -EINVAL);
	assert_int_equal(kimage_decompress(junk, sizeof(junk), &d, &dlen, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not an x86 bzImage"));
	/* zstd: not readable here, so the series is unknown: no devices */
	v = make_vmlinux(SERIES, sizeof(SERIES), NULL, &vlen);
	img = make_bzimage(v, vlen, false, &ilen);
	memcpy(img + 1024, "\x28\xb5\x2f\xfd", 4);
	assert_int_equal(kimage_decompress(img, ilen, &d, &dlen, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "zstd"));
	kimage_verdict(good_config, "test", NULL, 0, err, GOOD_CMDLINE, &kv);
	assert_true(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "cannot be read"));
	free(img);
	/* a payload that runs past the end of the file */
	img = make_bzimage(v, vlen, false, &ilen);
	assert_int_equal(kimage_decompress(img, ilen - 100, &d, &dlen, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "outside"));
	free(img);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_with_series),
		cmocka_unit_test(test_without_series),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_not_a_kernel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
