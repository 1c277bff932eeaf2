/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* daemon/kimage.c: what a kernel image staged for kexec can adopt, on
 * synthetic bzImages that differ only in what is checked. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/kimage.h"
#include "fake-kimage.h"

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
	static const char older[] = "pci-liveupdate-v1\0iommu-core-v1\0iommufd-v2\0vfio-pci-v2\0";
	static const char longer[] = "pci-liveupdate-v1\0iommu-core-v1\0iommufd-v20\0vfio-pci-v3\0";
	KernelVerdict kv;

	verdict_of(pristine, sizeof(pristine), false, good_config, NULL, GOOD_CMDLINE, &kv);
	assert_true(kv.luo);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "lacks the kernel-patches series"));
	assert_non_null(strstr(kv.devices_problem, "\"pci-liveupdate-v1\""));
	/* An older series, whose handlers would not take this one's handover */
	verdict_of(older, sizeof(older), false, good_config, NULL, GOOD_CMDLINE, &kv);
	assert_false(kv.devices);
	assert_non_null(strstr(kv.devices_problem, "\"vfio-pci-v3\""));
	/* A longer name is not the name */
	verdict_of(longer, sizeof(longer), false, good_config, NULL, GOOD_CMDLINE, &kv);
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
