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

/* A live update carries MSI and MSI-X over enabled: the same one must be. */
static void test_irqs(void **state)
{
	iommulu_pci_irqs msi = { .type = IOMMULU_PCI_IRQ_MSI, .vectors = 1, .enabled_known = true };
	iommulu_pci_irqs msix = { .type = IOMMULU_PCI_IRQ_MSIX, .vectors = 5, .masked = true,
				  .enabled_known = true };
	iommulu_pci_irqs none = { .type = IOMMULU_PCI_IRQ_NONE, .enabled_known = true };
	iommulu_pci_irqs unseen = { .type = IOMMULU_PCI_IRQ_NONE };
	char d[256];

	(void)state;
	d[0] = 0;
	assert_true(verify_irqs(true, IOMMULU_PCI_IRQ_MSI, 1, 0, &msi, d, sizeof(d)));
	assert_non_null(strstr(d, "MSI kept enabled, 1 vector(s) set up before the kexec, 0 now"));
	assert_non_null(strstr(d, "re-arm them, each fires once"));

	/* a daemon without CAP_SYS_ADMIN sees no enable bit after the kexec */
	d[0] = 0;
	assert_true(verify_irqs(true, IOMMULU_PCI_IRQ_MSI, 1, 0, &unseen, d, sizeof(d)));
	assert_non_null(strstr(d, "MSI at preservation, 1 vector(s) set up: re-arm them"));

	d[0] = 0;
	assert_true(verify_irqs(true, IOMMULU_PCI_IRQ_MSIX, 5, 0, &msix, d, sizeof(d)));
	assert_non_null(strstr(d, "MSI-X kept enabled and masked"));

	/* lost, or another one */
	d[0] = 0;
	assert_false(verify_irqs(true, IOMMULU_PCI_IRQ_MSI, 1, 0, &none, d, sizeof(d)));
	assert_non_null(strstr(d, "MSI at preservation, none now"));
	d[0] = 0;
	assert_false(verify_irqs(true, IOMMULU_PCI_IRQ_MSI, 1, 0, &msix, d, sizeof(d)));

	/* unreadable */
	d[0] = 0;
	assert_false(verify_irqs(true, IOMMULU_PCI_IRQ_MSI, 1, -EACCES, &none, d, sizeof(d)));
	assert_non_null(strstr(d, "interrupt state unreadable"));

	/* no snapshot (a record of an older version): only what is seen now */
	d[0] = 0;
	assert_true(verify_irqs(false, IOMMULU_PCI_IRQ_NONE, 0, 0, &msi, d, sizeof(d)));
	assert_non_null(strstr(d, "MSI enabled, 0 vector(s) set up now"));
	d[0] = 0;
	assert_true(verify_irqs(true, IOMMULU_PCI_IRQ_NONE, 0, 0, &none, d, sizeof(d)));
	assert_string_equal(d, "no MSI/MSI-X enabled; ");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dma_ownership),
		cmocka_unit_test(test_appends),
		cmocka_unit_test(test_irqs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
