/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pci module against a fake sysfs tree ($IOMMULU_SYSFS_ROOT), laid out the
 * way the kernel does it: bus/pci/devices/BDF are symlinks into devices/,
 * and driver, iommu_group, physfn are relative symlinks.
 *
 *   0000:00:03.0  bound to vfio-pci, iommu group 12, 256 bytes of config
 *   0000:00:04.0  unbound, no iommu group
 *   0000:01:00.0  SR-IOV PF (sriov_totalvfs 7), bound to ixgbe
 *   0000:01:00.1  VF of 0000:01:00.0
 *   0000:02:00.0  SR-IOV capable but sriov_totalvfs 0
 *   0000:03:00.0  garbage in sriov_totalvfs and iommu_group link
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-sysfs.h"
#include "iommulu/pci.h"

static char *root;		/* fake_root_new(): <root>/sys is $IOMMULU_SYSFS_ROOT */
static char sysfs[PATH_MAX];

static void add_device(const char *bdf, const char *parent)
{
	char target[PATH_MAX];

	fake_mkdir(root, "sys/devices/pci0000:00/%s%s", parent, bdf);
	snprintf(target, sizeof(target), "../../../devices/pci0000:00/%s%s", parent, bdf);
	fake_symlink(root, target, "sys/bus/pci/devices/%s", bdf);
}

static void add_link(const char *bdf, const char *parent, const char *name, const char *target)
{
	fake_symlink(root, target, "sys/devices/pci0000:00/%s%s/%s", parent, bdf, name);
}

static void add_file(const char *bdf, const char *parent, const char *name, const char *content)
{
	fake_write(root, content, "sys/devices/pci0000:00/%s%s/%s", parent, bdf, name);
}

/* Binary file under <root>/sys (fake_write stops at a NUL). */
static void write_sys_bytes(const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	FILE *f;

	assert_true(snprintf(path, sizeof(path), "%s/%s", sysfs, rel) < (int)sizeof(path));
	f = fopen(path, "we");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Contents of <root>/sys/rel. */
static void assert_file(const char *rel, const char *want)
{
	char path[PATH_MAX], buf[256];
	size_t n;
	FILE *f;

	assert_true(snprintf(path, sizeof(path), "%s/%s", sysfs, rel) < (int)sizeof(path));
	f = fopen(path, "re");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

/*
 * A device whose config space has a vendor capability at 0x40 and the
 * capability @id at 0x50 with control word @ctrl, and @set_up entries in
 * msi_irqs/.
 */
static void irq_device(const char *bdf, uint8_t id, uint16_t ctrl, unsigned set_up)
{
	uint8_t config[256] = { 0 };
	char rel[128], name[8];

	add_device(bdf, "");
	config[0x06] = 0x10;		/* capability list */
	config[0x34] = 0x40;
	config[0x40] = 0x09;		/* vendor specific, next 0x50 */
	config[0x41] = 0x50;
	config[0x50] = id;
	config[0x52] = ctrl & 0xff;
	config[0x53] = ctrl >> 8;
	snprintf(rel, sizeof(rel), "devices/pci0000:00/%s/config", bdf);
	write_sys_bytes(rel, config, sizeof(config));
	if (set_up)
		fake_mkdir(root, "sys/devices/pci0000:00/%s/msi_irqs", bdf);
	for (unsigned i = 0; i < set_up; i++) {
		snprintf(name, sizeof(name), "%u", 30 + i);
		fake_write(root, "msi\n", "sys/devices/pci0000:00/%s/msi_irqs/%s", bdf, name);
	}
}

static int setup(void **state)
{
	uint8_t config[256];

	root = fake_root_new();
	assert_true(snprintf(sysfs, sizeof(sysfs), "%s/sys", root) < (int)sizeof(sysfs));

	fake_mkdir(root, "sys/kernel/iommu_groups/12");
	fake_mkdir(root, "sys/bus/pci/drivers/ixgbe");
	fake_write(root, "", "sys/bus/pci/drivers/vfio-pci/bind");
	fake_write(root, "", "sys/bus/pci/drivers/vfio-pci/unbind");
	fake_write(root, "", "sys/bus/pci/drivers/ixgbe/bind");
	fake_write(root, "", "sys/bus/pci/drivers/ixgbe/unbind");
	/* A driver whose bind attribute refuses every write (ENOSPC), to
	 * show the kernel's answer to a write is passed through. */
	fake_mkdir(root, "sys/bus/pci/drivers/full");
	fake_symlink(root, "/dev/full", "sys/bus/pci/drivers/full/bind");

	add_device("0000:00:03.0", "");
	add_link("0000:00:03.0", "", "driver", "../../../bus/pci/drivers/vfio-pci");
	add_link("0000:00:03.0", "", "iommu_group", "../../../kernel/iommu_groups/12");
	for (size_t i = 0; i < sizeof(config); i++)
		config[i] = (uint8_t)(i ^ 0x5a);
	write_sys_bytes("devices/pci0000:00/0000:00:03.0/config", config, sizeof(config));
	add_file("0000:00:03.0", "", "driver_override", "(null)\n");

	add_device("0000:00:04.0", "");
	add_file("0000:00:04.0", "", "driver_override", "(null)\n");

	add_device("0000:01:00.0", "0000:00:1c.0/");
	add_link("0000:01:00.0", "0000:00:1c.0/", "driver", "../../../../bus/pci/drivers/ixgbe");
	add_file("0000:01:00.0", "0000:00:1c.0/", "sriov_totalvfs", "7\n");

	add_device("0000:01:00.1", "0000:00:1c.0/");
	add_link("0000:01:00.1", "0000:00:1c.0/", "physfn", "../0000:01:00.0");

	add_device("0000:02:00.0", "");
	add_file("0000:02:00.0", "", "sriov_totalvfs", "0\n");

	add_device("0000:03:00.0", "");
	add_file("0000:03:00.0", "", "sriov_totalvfs", "lots\n");
	add_link("0000:03:00.0", "", "iommu_group", "../../../kernel/iommu_groups/abc");

	/* Interrupts: MSI enabled with 4 vectors (2 set up), MSI-X enabled
	 * and masked with 5, none, and a capability list that loops. */
	irq_device("0000:05:00.0", 0x05, 0x0021, 2);
	irq_device("0000:06:00.0", 0x11, 0xc004, 0);
	irq_device("0000:07:00.0", 0x05, 0x0000, 0);
	irq_device("0000:08:00.0", 0x05, 0x0001, 0);
	memset(config, 0, sizeof(config));
	config[0x06] = 0x10;
	config[0x34] = 0x40;
	config[0x40] = 0x09;
	config[0x41] = 0x40;	/* points at itself */
	write_sys_bytes("devices/pci0000:00/0000:08:00.0/config", config, sizeof(config));
	/* What an unprivileged reader sees: 64 bytes, two MSI-X vectors set up */
	add_device("0000:09:00.0", "");
	write_sys_bytes("devices/pci0000:00/0000:09:00.0/config", config, 64);
	fake_mkdir(root, "sys/devices/pci0000:00/0000:09:00.0/msi_irqs");
	fake_write(root, "msix\n", "sys/devices/pci0000:00/0000:09:00.0/msi_irqs/40");
	fake_write(root, "msix\n", "sys/devices/pci0000:00/0000:09:00.0/msi_irqs/41");

	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	fake_root_free(root);
	root = NULL;
	return 0;
}

static const char *const invalid_bdfs[] = {
	"",
	"0000:00:03",		/* no function */
	"0000:00:03.8",		/* function > 7 */
	"0000:00:20.0",		/* device > 0x1f */
	"0000:00:0A.0",		/* upper case: sysfs names are lower case */
	"00:03.0",		/* no domain */
	"000:00:03.0",
	"0000:00:03.0 ",
	"../../../etc",
	"0000:00:03.0/../../..",
};

static void test_driver_bound(void **state)
{
	char buf[IOMMULU_DRIVER_NAME_MAX];

	assert_int_equal(iommulu_pci_driver("0000:00:03.0", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "vfio-pci");
	assert_int_equal(iommulu_pci_driver("0000:01:00.0", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "ixgbe");
}

static void test_driver_unbound(void **state)
{
	char buf[IOMMULU_DRIVER_NAME_MAX] = "junk";

	assert_int_equal(iommulu_pci_driver("0000:00:04.0", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
}

static void test_driver_small_buffer(void **state)
{
	char buf[8];

	assert_int_equal(iommulu_pci_driver("0000:00:03.0", buf, sizeof(buf)), -ENAMETOOLONG);
	assert_int_equal(iommulu_pci_driver("0000:00:03.0", buf, 0), -EINVAL);
}

static void test_nonexistent_device(void **state)
{
	char buf[IOMMULU_DRIVER_NAME_MAX];
	bool pf, vf;
	uint8_t cfg[4];
	int group;

	assert_int_equal(iommulu_pci_driver("0000:00:05.0", buf, sizeof(buf)), -ENODEV);
	assert_int_equal(iommulu_pci_iommu_group("0000:00:05.0", &group), -ENODEV);
	assert_int_equal(iommulu_pci_sriov("0000:00:05.0", &pf, &vf), -ENODEV);
	assert_int_equal(iommulu_pci_config_read("0000:00:05.0", 0, cfg, sizeof(cfg)), -ENODEV);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:05.0", "vfio-pci"), -ENODEV);
	assert_int_equal(iommulu_pci_bind("0000:00:05.0", "vfio-pci"), -ENODEV);
	assert_int_equal(iommulu_pci_unbind("0000:00:05.0"), -ENODEV);
	/* a 5-digit domain is valid syntax, and absent */
	assert_int_equal(iommulu_pci_driver("10000:00:03.0", buf, sizeof(buf)), -ENODEV);
}

static void test_invalid_bdf(void **state)
{
	char buf[IOMMULU_DRIVER_NAME_MAX];
	bool pf, vf;
	uint8_t cfg[4];
	int group;

	for (size_t i = 0; i < sizeof(invalid_bdfs) / sizeof(invalid_bdfs[0]); i++) {
		const char *bdf = invalid_bdfs[i];

		assert_int_equal(iommulu_pci_driver(bdf, buf, sizeof(buf)), -EINVAL);
		assert_int_equal(iommulu_pci_iommu_group(bdf, &group), -EINVAL);
		assert_int_equal(iommulu_pci_sriov(bdf, &pf, &vf), -EINVAL);
		assert_int_equal(iommulu_pci_config_read(bdf, 0, cfg, sizeof(cfg)), -EINVAL);
		assert_int_equal(iommulu_pci_set_driver_override(bdf, "vfio-pci"), -EINVAL);
		assert_int_equal(iommulu_pci_bind(bdf, "vfio-pci"), -EINVAL);
		assert_int_equal(iommulu_pci_unbind(bdf), -EINVAL);
	}
	assert_int_equal(iommulu_pci_driver(NULL, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(iommulu_pci_unbind(NULL), -EINVAL);
}

static void test_iommu_group(void **state)
{
	int group = -1;

	assert_int_equal(iommulu_pci_iommu_group("0000:00:03.0", &group), 0);
	assert_int_equal(group, 12);

	group = -1;
	assert_int_equal(iommulu_pci_iommu_group("0000:00:04.0", &group), -ENOENT);
	assert_int_equal(group, -1);	/* untouched on failure */

	assert_int_equal(iommulu_pci_iommu_group("0000:03:00.0", &group), -EBADMSG);
	assert_int_equal(group, -1);
	assert_int_equal(iommulu_pci_iommu_group("0000:00:03.0", NULL), -EINVAL);
}

static void test_sriov(void **state)
{
	bool pf, vf;

	assert_int_equal(iommulu_pci_sriov("0000:01:00.0", &pf, &vf), 0);
	assert_true(pf);
	assert_false(vf);

	assert_int_equal(iommulu_pci_sriov("0000:01:00.1", &pf, &vf), 0);
	assert_false(pf);
	assert_true(vf);

	assert_int_equal(iommulu_pci_sriov("0000:00:03.0", &pf, &vf), 0);
	assert_false(pf);
	assert_false(vf);

	/* SR-IOV capability with no VFs is not a PF for our purposes */
	pf = vf = true;
	assert_int_equal(iommulu_pci_sriov("0000:02:00.0", &pf, &vf), 0);
	assert_false(pf);
	assert_false(vf);

	/* either output may be NULL, not both */
	pf = false;
	assert_int_equal(iommulu_pci_sriov("0000:01:00.0", &pf, NULL), 0);
	assert_true(pf);
	vf = false;
	assert_int_equal(iommulu_pci_sriov("0000:01:00.1", NULL, &vf), 0);
	assert_true(vf);
	assert_int_equal(iommulu_pci_sriov("0000:01:00.1", NULL, NULL), -EINVAL);

	pf = vf = true;
	assert_int_equal(iommulu_pci_sriov("0000:03:00.0", &pf, &vf), -EBADMSG);
	assert_true(pf && vf);	/* untouched on failure */
}

static void test_irqs_read(void **state)
{
	iommulu_pci_irqs irqs;

	assert_int_equal(iommulu_pci_irqs_read("0000:05:00.0", &irqs), 0);
	assert_int_equal(irqs.type, IOMMULU_PCI_IRQ_MSI);
	assert_int_equal(irqs.vectors, 4);
	assert_int_equal(irqs.set_up, 2);
	assert_false(irqs.masked);

	assert_int_equal(iommulu_pci_irqs_read("0000:06:00.0", &irqs), 0);
	assert_int_equal(irqs.type, IOMMULU_PCI_IRQ_MSIX);
	assert_int_equal(irqs.vectors, 5);
	assert_int_equal(irqs.set_up, 0);
	assert_true(irqs.masked);

	/* MSI present but disabled */
	assert_int_equal(iommulu_pci_irqs_read("0000:07:00.0", &irqs), 0);
	assert_int_equal(irqs.type, IOMMULU_PCI_IRQ_NONE);
	assert_int_equal(irqs.vectors, 0);

	assert_int_equal(iommulu_pci_irqs_read("0000:08:00.0", &irqs), -EBADMSG);

	/* 64 bytes of config space: the type from what is set up */
	assert_int_equal(iommulu_pci_irqs_read("0000:09:00.0", &irqs), 0);
	assert_false(irqs.enabled_known);
	assert_int_equal(irqs.type, IOMMULU_PCI_IRQ_MSIX);
	assert_int_equal(irqs.set_up, 2);
	assert_int_equal(irqs.vectors, 0);
	assert_int_equal(iommulu_pci_irqs_read("0000:05:00.0", &irqs), 0);
	assert_true(irqs.enabled_known);
	assert_int_equal(iommulu_pci_irqs_read("0000:05:00.0", NULL), -EINVAL);
	assert_int_equal(iommulu_pci_irqs_read("0000:0a:00.0", &irqs), -ENODEV);

	assert_string_equal(iommulu_pci_irq_type_to_string(IOMMULU_PCI_IRQ_NONE), "none");
	assert_string_equal(iommulu_pci_irq_type_to_string(IOMMULU_PCI_IRQ_MSIX), "MSI-X");
	assert_null(iommulu_pci_irq_type_to_string((iommulu_pci_irq_type)7));
}

static void test_config_read(void **state)
{
	uint8_t buf[16];

	assert_int_equal(iommulu_pci_config_read("0000:00:03.0", 0, buf, 4), 0);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(buf[i], (uint8_t)(i ^ 0x5a));
	assert_int_equal(iommulu_pci_config_read("0000:00:03.0", 0x40, buf, 16), 0);
	for (size_t i = 0; i < 16; i++)
		assert_int_equal(buf[i], (uint8_t)((0x40 + i) ^ 0x5a));
	/* the last byte, then one past the end of what sysfs exposes */
	assert_int_equal(iommulu_pci_config_read("0000:00:03.0", 255, buf, 1), 0);
	assert_int_equal(buf[0], 255 ^ 0x5a);
	assert_int_equal(iommulu_pci_config_read("0000:00:03.0", 250, buf, 8), -ERANGE);
	assert_int_equal(iommulu_pci_config_read("0000:00:03.0", 4096, buf, 1), -ERANGE);
	/* no config attribute at all */
	assert_int_equal(iommulu_pci_config_read("0000:00:04.0", 0, buf, 1), -ENOENT);
}

#define OVERRIDE_03 "devices/pci0000:00/0000:00:03.0/driver_override"

static void test_driver_override(void **state)
{
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "vfio-pci"), 0);
	assert_file(OVERRIDE_03, "vfio-pci");

	/* NULL and "" clear it: the kernel strips the newline, leaving "" */
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", NULL), 0);
	assert_file(OVERRIDE_03, "\n");
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "ixgbe"), 0);
	assert_file(OVERRIDE_03, "ixgbe");
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", ""), 0);
	assert_file(OVERRIDE_03, "\n");
}

static void test_driver_override_invalid_name(void **state)
{
	char long_name[IOMMULU_DRIVER_NAME_MAX + 1];

	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';

	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "vfio-pci"), 0);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "vfio pci"), -EINVAL);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "vfio-pci\n"), -EINVAL);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", "../vfio-pci"), -EINVAL);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", ".."), -EINVAL);
	assert_int_equal(iommulu_pci_set_driver_override("0000:00:03.0", long_name), -EINVAL);
	/* nothing was written by the refused calls */
	assert_file(OVERRIDE_03, "vfio-pci");
}

static void test_bind(void **state)
{
	fake_write(root, "", "sys/bus/pci/drivers/vfio-pci/bind");
	assert_int_equal(iommulu_pci_bind("0000:00:04.0", "vfio-pci"), 0);
	assert_file("bus/pci/drivers/vfio-pci/bind", "0000:00:04.0");

	assert_int_equal(iommulu_pci_bind("0000:00:04.0", "no-such-driver"), -ENOENT);
	assert_int_equal(iommulu_pci_bind("0000:00:04.0", "../vfio-pci"), -EINVAL);
	assert_int_equal(iommulu_pci_bind("0000:00:04.0", ""), -EINVAL);
	assert_int_equal(iommulu_pci_bind("0000:00:04.0", NULL), -EINVAL);
	/* the write's own error is passed through */
	assert_int_equal(iommulu_pci_bind("0000:00:04.0", "full"), -ENOSPC);
}

static void test_unbind(void **state)
{
	fake_write(root, "", "sys/bus/pci/drivers/vfio-pci/unbind");
	fake_write(root, "", "sys/bus/pci/drivers/ixgbe/unbind");

	/* goes to the driver the device is bound to */
	assert_int_equal(iommulu_pci_unbind("0000:01:00.0"), 0);
	assert_file("bus/pci/drivers/ixgbe/unbind", "0000:01:00.0");
	assert_file("bus/pci/drivers/vfio-pci/unbind", "");

	assert_int_equal(iommulu_pci_unbind("0000:00:03.0"), 0);
	assert_file("bus/pci/drivers/vfio-pci/unbind", "0000:00:03.0");

	/* an unbound device: nothing to do, nothing written */
	fake_write(root, "", "sys/bus/pci/drivers/vfio-pci/unbind");
	assert_int_equal(iommulu_pci_unbind("0000:00:04.0"), 0);
	assert_file("bus/pci/drivers/vfio-pci/unbind", "");
}

static void test_sysfs_root_default(void **state)
{
	char buf[IOMMULU_DRIVER_NAME_MAX];

	/* With the override gone the real /sys is used, where this fake
	 * address cannot exist (bus 0xff, device 0x1f, function 7 in a
	 * domain no machine here has). */
	unsetenv("IOMMULU_SYSFS_ROOT");
	assert_int_equal(iommulu_pci_driver("ffff:ff:1f.7", buf, sizeof(buf)), -ENODEV);
	setenv("IOMMULU_SYSFS_ROOT", "", 1);
	assert_int_equal(iommulu_pci_driver("ffff:ff:1f.7", buf, sizeof(buf)), -ENODEV);
	setenv("IOMMULU_SYSFS_ROOT", sysfs, 1);
	assert_int_equal(iommulu_pci_driver("0000:00:03.0", buf, sizeof(buf)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_driver_bound),
		cmocka_unit_test(test_driver_unbound),
		cmocka_unit_test(test_driver_small_buffer),
		cmocka_unit_test(test_nonexistent_device),
		cmocka_unit_test(test_invalid_bdf),
		cmocka_unit_test(test_iommu_group),
		cmocka_unit_test(test_sriov),
		cmocka_unit_test(test_config_read),
		cmocka_unit_test(test_driver_override),
		cmocka_unit_test(test_driver_override_invalid_name),
		cmocka_unit_test(test_bind),
		cmocka_unit_test(test_irqs_read),
		cmocka_unit_test(test_unbind),
		cmocka_unit_test(test_sysfs_root_default),
	};

	return cmocka_run_group_tests_name("pci", tests, setup, teardown);
}
