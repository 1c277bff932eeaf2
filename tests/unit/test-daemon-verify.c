/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* daemon/verify.c: verdicts of VerifyVM's device checks. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "../../daemon/verify.h"

static void test_dma_ownership(void **state)
{
	char d[256];

	/* The preserved binding refuses a second bind: ownership held. */
	d[0] = 0;
	assert_true(verify_dma_ownership(0, -EBUSY, false, d, sizeof(d)));
	assert_non_null(strstr(d, "DMA ownership held"));

	/* A second bind succeeds: nobody holds the device. */
	d[0] = 0;
	assert_false(verify_dma_ownership(0, 0, false, d, sizeof(d)));
	assert_non_null(strstr(d, "NOT held"));

	/* The probe could not even open the cdev or /dev/iommu: that says
	 * nothing about ownership and must not pass as "held". */
	d[0] = 0;
	assert_false(verify_dma_ownership(-EACCES, 0, false, d, sizeof(d)));
	assert_non_null(strstr(d, "not checked"));
	assert_null(strstr(d, "ownership held"));
	d[0] = 0;
	assert_false(verify_dma_ownership(-ENOENT, -EBUSY, false, d, sizeof(d)));

	/* A bind refused for another reason proves nothing either. */
	d[0] = 0;
	assert_false(verify_dma_ownership(0, -EINVAL, false, d, sizeof(d)));
	assert_non_null(strstr(d, "expected"));

	/* The restored file came back bound: the device is open through it
	 * and vfio refuses a second cdev bind with EINVAL. */
	d[0] = 0;
	assert_true(verify_dma_ownership(0, -EINVAL, true, d, sizeof(d)));
	assert_non_null(strstr(d, "held by the restored file"));
	/* ... and EBUSY, or a successful bind, then prove nothing. */
	d[0] = 0;
	assert_false(verify_dma_ownership(0, -EBUSY, true, d, sizeof(d)));
	d[0] = 0;
	assert_false(verify_dma_ownership(0, 0, true, d, sizeof(d)));
	assert_non_null(strstr(d, "NOT held"));
}

static void test_appends(void **state)
{
	char d[64] = "vfio-pci; ";

	assert_true(verify_dma_ownership(0, -EBUSY, false, d, sizeof(d)));
	assert_int_equal(strncmp(d, "vfio-pci; DMA ownership held", 28), 0);

	/* A full buffer stays terminated. */
	memset(d, 'x', sizeof(d));
	d[sizeof(d) - 1] = 0;
	(void)verify_dma_ownership(0, -EBUSY, false, d, sizeof(d));
	assert_int_equal(strlen(d), sizeof(d) - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dma_ownership),
		cmocka_unit_test(test_appends),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
