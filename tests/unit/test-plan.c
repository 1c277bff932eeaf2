/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * plan.c: eligibility and ordering with real memfds (memfd-only VMs run on
 * this machine) and, for iommufd and devices, /dev/null, /dev/zero and
 * /dev/full behind a fake /sys and /dev tree (fake-sysfs.h).
 *
 * Execution runs against a fake LUO session: this executable interposes
 * ioctl() and plays the kernel for two requests, PRESERVE_FD on the fake
 * session fd and HWPT_LIVEUPDATE_MARK_PRESERVE on the fake iommufd, with
 * the kernel's relevant rules (a session token is used once: -EEXIST; an
 * HWPT token once per iommufd, surviving a session roll-back:
 * -EADDRINUSE).  Everything else goes to the real ioctl syscall.  The
 * manifest preserved under token 0 is kept and parsed back.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "fake-sysfs.h"
#include "iommulu/manifest.h"
#include "iommulu/memfd.h"
#include "iommulu/plan.h"
#include "iommulu/uapi.h"
#include "test-helpers.h"

/* ---- fake kernel ---- */

typedef struct fake_call {
	unsigned long req;
	int fd;			/* preserved fd, or the iommufd for a mark */
	uint64_t token;
	uint32_t hwpt_id;
} fake_call;

static struct {
	int session_fd;
	int iommufd;
	fake_call calls[64];
	size_t n_calls;
	uint64_t marked[64];	/* HWPT tokens marked in the iommufd */
	size_t n_marked;
	int fail_call;		/* index of the call to fail, -1: none */
	int fail_errno;
	int manifest_fd;	/* our reference to what was preserved at token 0 */
} fake = { .session_fd = -1, .iommufd = -1, .fail_call = -1, .manifest_fd = -1 };

static void fake_session_reset(void)
{
	if (fake.manifest_fd >= 0)
		close(fake.manifest_fd);
	fake.manifest_fd = -1;
	fake.n_calls = 0;
	fake.fail_call = -1;
	fake.fail_errno = 0;
}

static int fake_fail(int err)
{
	errno = err;
	return -1;
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (fd >= 0 && fd == fake.session_fd && req == LIVEUPDATE_SESSION_PRESERVE_FD) {
		struct liveupdate_session_preserve_fd *a = arg;

		if (a->size != sizeof(*a) || fake.n_calls >= 64)
			return fake_fail(EINVAL);
		if ((int)fake.n_calls == fake.fail_call)
			return fake_fail(fake.fail_errno);
		for (size_t i = 0; i < fake.n_calls; i++)
			if (fake.calls[i].req == req && fake.calls[i].token == a->token)
				return fake_fail(EEXIST);
		if (fcntl(a->fd, F_GETFD) < 0)
			return fake_fail(EBADF);
		if (a->token == 0) {
			fake.manifest_fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 3);
			if (fake.manifest_fd < 0)
				return -1;
		}
		fake.calls[fake.n_calls++] =
			(fake_call){ .req = req, .fd = a->fd, .token = a->token };
		return 0;
	}
	if (fd >= 0 && fd == fake.iommufd && req == IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE) {
		struct iommu_hwpt_liveupdate_mark_preserve *a = arg;

		if (a->size != sizeof(*a) || fake.n_calls >= 64 || fake.n_marked >= 64)
			return fake_fail(EINVAL);
		if ((int)fake.n_calls == fake.fail_call)
			return fake_fail(fake.fail_errno);
		for (size_t i = 0; i < fake.n_marked; i++)
			if (fake.marked[i] == a->hwpt_token)
				return fake_fail(EADDRINUSE);
		fake.marked[fake.n_marked++] = a->hwpt_token;
		fake.calls[fake.n_calls++] = (fake_call){
			.req = req, .fd = fd, .token = a->hwpt_token, .hwpt_id = a->hwpt_id
		};
		return 0;
	}
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

/* ---- fixtures ---- */

typedef struct fixture {
	char *root;
	int memfds[2];
	int iommufd;		/* /dev/null, the fake tree's <dev>/iommu */
	int devices[2];		/* /dev/zero = 0000:00:03.0, /dev/full = 0000:00:04.0 */
} fixture;

static int open_dev(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->root = fake_root_new();
	fake_iommu(f->root, "/dev/null");
	fake_pci_device(f->root, "/dev/zero", 0, "0000:00:03.0", "vfio-pci", -1, false, "vfio-dev");
	fake_pci_device(f->root, "/dev/full", 1, "0000:00:04.0", "vfio-pci", 0, false, "vfio-dev");
	assert_int_equal(iommulu_memfd_create("ram0", 8192, &f->memfds[0]), 0);
	assert_int_equal(iommulu_memfd_create("ram1", 4096, &f->memfds[1]), 0);
	f->iommufd = open_dev("/dev/null");
	f->devices[0] = open_dev("/dev/zero");
	f->devices[1] = open_dev("/dev/full");

	fake.session_fd = eventfd(0, EFD_CLOEXEC);
	assert_true(fake.session_fd >= 0);
	fake.iommufd = f->iommufd;
	fake.n_marked = 0;
	fake_session_reset();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;

	fake_session_reset();
	close(fake.session_fd);
	fake.session_fd = -1;
	fake.iommufd = -1;
	close(f->memfds[0]);
	close(f->memfds[1]);
	close(f->iommufd);
	close(f->devices[0]);
	close(f->devices[1]);
	fake_root_free(f->root);
	free(f);
	return 0;
}

static iommulu_vm_fds full_vm(fixture *f)
{
	static const uint32_t hwpts[] = { 5, 6 };

	return (iommulu_vm_fds){
		.name = "vm1",
		.memfds = f->memfds,
		.n_memfds = 2,
		.iommufd = f->iommufd,
		.hwpt_ids = hwpts,
		.n_hwpts = 2,
		.devices = f->devices,
		.n_devices = 2,
	};
}

/* Expect plan_build to refuse with r, reason and a message starting with
 * the given prefix (printf-formatted). */
static void __attribute__((format(printf, 4, 5)))
expect_refusal(const iommulu_vm_fds *vm, int r, iommulu_reason reason, const char *fmt, ...)
{
	iommulu_plan *p = (iommulu_plan *)0x1;
	iommulu_reason got = _IOMMULU_REASON_MAX;
	iommulu_error e = { "" };
	char want[IOMMULU_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);

	assert_int_equal(iommulu_plan_build(vm, 1, &p, &got, &e), r);
	assert_ptr_equal(p, (iommulu_plan *)0x1);	/* untouched */
	assert_int_equal(got, reason);
	if (strncmp(e.message, want, strlen(want)) != 0)
		fail_msg("message \"%s\" does not start with \"%s\"", e.message, want);
}

/* ---- building ---- */

static void test_memfd_only(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = { .name = "vm-a", .memfds = f->memfds, .n_memfds = 2, .iommufd = -1 };
	iommulu_reason reason = IOMMULU_REASON_DUPLICATE;
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };

	assert_int_equal(iommulu_plan_build(&vm, 42, &p, &reason, &e), 0);
	assert_int_equal(reason, IOMMULU_REASON_NONE);
	assert_int_equal(p->n_steps, 3);
	assert_int_equal(p->steps[0].kind, IOMMULU_STEP_MANIFEST);
	assert_int_equal(p->steps[0].fd, -1);
	assert_int_equal(p->steps[0].token, 0);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(p->steps[1 + i].kind, IOMMULU_STEP_MEMFD);
		assert_int_equal(p->steps[1 + i].fd, f->memfds[i]);
		assert_int_equal(p->steps[1 + i].token, IOMMULU_TOKEN_MEMFD_BASE + i);
		assert_int_equal(p->steps[1 + i].index, i);
		assert_false(p->steps[1 + i].skip);
	}

	assert_string_equal(p->manifest->name, "vm-a");
	assert_int_equal(p->manifest->generation, 42);
	assert_int_equal(p->manifest->n_memfds, 2);
	assert_int_equal(p->manifest->memfds[0].token, IOMMULU_TOKEN_MEMFD_BASE);
	assert_int_equal(p->manifest->memfds[0].size, 8192);
	assert_int_equal(p->manifest->memfds[1].size, 4096);
	assert_false(p->manifest->has_iommufd);
	assert_int_equal(p->manifest->n_devices, 0);
	iommulu_plan_free(p);
}

static void test_full_order(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	static const iommulu_step_kind want[] = {
		IOMMULU_STEP_MANIFEST,	IOMMULU_STEP_MEMFD,   IOMMULU_STEP_MEMFD,
		IOMMULU_STEP_MARK_HWPT, IOMMULU_STEP_MARK_HWPT, IOMMULU_STEP_IOMMUFD,
		IOMMULU_STEP_DEVICE,	IOMMULU_STEP_DEVICE,
	};
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };

	assert_int_equal(iommulu_plan_build(&vm, 1, &p, NULL, &e), 0);
	assert_int_equal(p->n_steps, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < p->n_steps; i++)
		assert_int_equal(p->steps[i].kind, want[i]);

	assert_int_equal(p->steps[3].fd, f->iommufd);
	assert_int_equal(p->steps[3].hwpt_id, 5);
	assert_int_equal(p->steps[3].token, IOMMULU_TOKEN_HWPT_BASE);
	assert_int_equal(p->steps[4].hwpt_id, 6);
	assert_int_equal(p->steps[4].token, IOMMULU_TOKEN_HWPT_BASE + 1);
	assert_int_equal(p->steps[5].fd, f->iommufd);
	assert_int_equal(p->steps[5].token, IOMMULU_TOKEN_IOMMUFD);
	assert_int_equal(p->steps[6].fd, f->devices[0]);
	assert_int_equal(p->steps[6].token, IOMMULU_TOKEN_DEVICE_BASE);
	assert_string_equal(p->steps[6].bdf, "0000:00:03.0");
	assert_int_equal(p->steps[7].token, IOMMULU_TOKEN_DEVICE_BASE + 1);
	assert_string_equal(p->steps[7].bdf, "0000:00:04.0");
	assert_int_equal(p->steps[7].index, 1);

	assert_true(p->manifest->has_iommufd);
	assert_int_equal(p->manifest->iommufd_token, IOMMULU_TOKEN_IOMMUFD);
	assert_int_equal(p->manifest->n_hwpts, 2);
	assert_int_equal(p->manifest->hwpts[1].id, 6);
	assert_int_equal(p->manifest->hwpts[1].token, IOMMULU_TOKEN_HWPT_BASE + 1);
	assert_int_equal(p->manifest->n_devices, 2);
	assert_string_equal(p->manifest->devices[1].bdf, "0000:00:04.0");
	assert_int_equal(p->manifest->devices[1].token, IOMMULU_TOKEN_DEVICE_BASE + 1);
	iommulu_plan_free(p);
}

/* An iommufd but no devices or HWPTs is allowed (devices may come later). */
static void test_iommufd_without_devices(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = { .name = "v", .memfds = f->memfds, .n_memfds = 1, .iommufd = f->iommufd };
	iommulu_plan *p = NULL;

	assert_int_equal(iommulu_plan_build(&vm, 1, &p, NULL, NULL), 0);
	assert_int_equal(p->n_steps, 3);
	assert_int_equal(p->steps[2].kind, IOMMULU_STEP_IOMMUFD);
	iommulu_plan_free(p);
}

static void test_reject_input(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	int many[IOMMULU_PLAN_MAX_MEMFDS + 1];
	iommulu_plan *p = NULL;

	assert_int_equal(iommulu_plan_build(NULL, 1, &p, NULL, NULL), -EINVAL);
	assert_int_equal(iommulu_plan_build(&vm, 1, NULL, NULL, NULL), -EINVAL);

	vm.name = "vm 1";
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NONE, "VM name \"vm 1\" is invalid");
	vm.name = NULL;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NONE, "VM name \"n/a\" is invalid");
	vm.name = "vm1";

	for (size_t i = 0; i < IOMMULU_PLAN_MAX_MEMFDS + 1; i++)
		many[i] = f->memfds[0];
	vm.memfds = many;
	vm.n_memfds = IOMMULU_PLAN_MAX_MEMFDS + 1;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_TOO_MANY, "too-many: 65 memfds, at most 64");
	vm = full_vm(f);
	vm.n_devices = IOMMULU_PLAN_MAX_DEVICES + 1;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_TOO_MANY, "too-many: 33 devices, at most 32");
	vm = full_vm(f);
	vm.n_hwpts = IOMMULU_PLAN_MAX_HWPTS + 1;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_TOO_MANY, "too-many: 33 HWPTs, at most 32");

	vm = full_vm(f);
	vm.iommufd = -1;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NO_IOMMUFD,
		       "devices-without-iommufd: 2 devices and 2 HWPTs but no iommufd");
	vm.n_devices = 0;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NO_IOMMUFD,
		       "devices-without-iommufd: 0 devices and 2 HWPTs");

	vm = full_vm(f);
	vm.devices = NULL;
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NONE, "a non-empty fd array is NULL");
}

static void test_reject_memfds(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = { .name = "vm1", .n_memfds = 2, .iommufd = -1 };
	int fds[2] = { f->memfds[0], -1 }, p[2];

	vm.memfds = fds;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fds[1] = p[0];
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "memfd #1 (fd %d): wrong-fd-kind: is other, not a memfd", p[0]);
	close(p[0]);
	close(p[1]);
	expect_refusal(&vm, -EBADF, IOMMULU_REASON_NONE, "memfd #1 (fd %d): not open", p[0]);

	fds[1] = f->iommufd;	/* a char device that is an iommufd */
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "memfd #1 (fd %d): wrong-fd-kind: is iommufd, not a memfd", f->iommufd);

	fds[1] = test_regular_file();
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "memfd #1 (fd %d): wrong-fd-kind: is other", fds[1]);
	close(fds[1]);

	fds[1] = test_memfd(4096, F_SEAL_SEAL | F_SEAL_SHRINK, true);
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_MEMFD_UNSEALED,
		       "memfd #1 (fd %d): unsealed-memfd: lacks F_SEAL_GROW", fds[1]);
	close(fds[1]);

	fds[1] = test_memfd(4096, 0, true);
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_MEMFD_UNSEALED,
		       "memfd #1 (fd %d): unsealed-memfd: lacks F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_GROW",
		       fds[1]);
	close(fds[1]);

	fds[1] = test_memfd(0, IOMMULU_MEMFD_REQUIRED_SEALS, true);
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NONE,
		       "memfd #1 (fd %d): size 0 is not a non-zero multiple of 4096", fds[1]);
	close(fds[1]);

	fds[1] = test_memfd(4096 + 512, IOMMULU_MEMFD_REQUIRED_SEALS, true);
	expect_refusal(&vm, -EINVAL, IOMMULU_REASON_NONE,
		       "memfd #1 (fd %d): size 4608 is not", fds[1]);
	close(fds[1]);

	/* The same memfd twice, even through another fd. */
	fds[1] = dup(f->memfds[0]);
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DUPLICATE,
		       "memfd #1 (fd %d): duplicate: same memfd as memfd #0", fds[1]);
	close(fds[1]);
}

/* O_PATH descriptors classify like the file they name (fstat works on
 * them) but cannot be preserved or used: refused, naming the fd. */
static int opath_of(int fd)
{
	char path[64];
	int p;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	p = open(path, O_PATH | O_CLOEXEC);
	assert_true(p >= 0);
	return p;
}

static void test_reject_opath(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	int memfds[2] = { f->memfds[0], opath_of(f->memfds[1]) };
	int devices[2] = { f->devices[0], opath_of(f->devices[1]) };
	int iommufd = opath_of(f->iommufd);

	vm.memfds = memfds;
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "memfd #1 (fd %d): wrong-fd-kind: an O_PATH descriptor, not an open file", memfds[1]);
	vm.memfds = f->memfds;
	vm.iommufd = iommufd;
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "iommufd (fd %d): wrong-fd-kind: an O_PATH descriptor, not an open file", iommufd);
	vm.iommufd = f->iommufd;
	vm.devices = devices;
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "device #1 (fd %d): wrong-fd-kind: an O_PATH descriptor, not an open file", devices[1]);
	close(memfds[1]);
	close(devices[1]);
	close(iommufd);
}

static void test_reject_hugetlb(void **state)
{
	fixture *f = *state;
	int fds[2] = { f->memfds[0], test_hugetlb_memfd_or_skip() };
	iommulu_vm_fds vm = { .name = "vm1", .memfds = fds, .n_memfds = 2, .iommufd = -1 };

	expect_refusal(&vm, -EPERM, IOMMULU_REASON_MEMFD_HUGETLB,
		       "memfd #1 (fd %d): hugetlb-memfd", fds[1]);
	close(fds[1]);
}

static void test_reject_iommufd(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);

	vm.iommufd = f->memfds[1];
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "iommufd (fd %d): wrong-fd-kind: is memfd, not iommufd", f->memfds[1]);
	vm.iommufd = f->devices[0];
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "iommufd (fd %d): wrong-fd-kind: is vfio-cdev, not iommufd", f->devices[0]);
}

static void test_reject_hwpts(void **state)
{
	fixture *f = *state;
	static const uint32_t dup_ids[] = { 7, 8, 7 };
	iommulu_vm_fds vm = full_vm(f);

	vm.hwpt_ids = dup_ids;
	vm.n_hwpts = 3;
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DUPLICATE,
		       "HWPT #2: duplicate: id 7 is also HWPT #0");
}

static void test_reject_devices(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	int devs[2] = { f->devices[0], -1 };

	vm.devices = devs;

	devs[1] = f->memfds[0];
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "device #1 (fd %d): wrong-fd-kind: is memfd, not vfio-cdev", devs[1]);
	devs[1] = f->iommufd;
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_WRONG_KIND,
		       "device #1 (fd %d): wrong-fd-kind: is iommufd, not vfio-cdev", devs[1]);

	/* Another fd of the same cdev. */
	devs[1] = open_dev("/dev/zero");
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DUPLICATE,
		       "device 0000:00:03.0 (fd %d): duplicate: same device as device #0", devs[1]);
	close(devs[1]);

	devs[1] = f->devices[1];	/* 0000:00:04.0 */
	fake_write(f->root, "8\n", "sys/devices/pci0000:00/0000:00:04.0/sriov_totalvfs");
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DEVICE_SRIOV_PF,
		       "device 0000:00:04.0 (fd %d): sriov-pf", devs[1]);
	fake_write(f->root, "0\n", "sys/devices/pci0000:00/0000:00:04.0/sriov_totalvfs");

	fake_symlink(f->root, "../0000:00:01.0", "sys/devices/pci0000:00/0000:00:04.0/physfn");
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DEVICE_SRIOV_VF,
		       "device 0000:00:04.0 (fd %d): sriov-vf", devs[1]);
}

static void test_reject_driver(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	char path[PATH_MAX];

	fake_mkdir(f->root, "sys/bus/pci/drivers/ixgbe");
	fake_symlink(f->root, "../../../bus/pci/drivers/ixgbe",
		     "sys/devices/pci0000:00/0000:00:04.0/driver");
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DEVICE_NOT_VFIO_PCI,
		       "device 0000:00:04.0 (fd %d): not-bound-to-vfio-pci: driver is ixgbe",
		       f->devices[1]);

	snprintf(path, sizeof(path), "%s/sys/devices/pci0000:00/0000:00:04.0/driver", f->root);
	assert_int_equal(unlink(path), 0);
	expect_refusal(&vm, -EPERM, IOMMULU_REASON_DEVICE_NOT_VFIO_PCI,
		       "device 0000:00:04.0 (fd %d): not-bound-to-vfio-pci: driver is (none)",
		       f->devices[1]);
}

/* ---- executing ---- */

static void assert_manifest_preserved(const iommulu_plan *p)
{
	iommulu_manifest *m = NULL;
	iommulu_error e = { "" };

	assert_true(fake.manifest_fd >= 0);
	assert_int_equal(fcntl(fake.manifest_fd, F_GET_SEALS) & IOMMULU_MEMFD_REQUIRED_SEALS,
			 IOMMULU_MEMFD_REQUIRED_SEALS);
	assert_int_equal(iommulu_manifest_from_fd(fake.manifest_fd, &m, &e), 0);
	assert_string_equal(m->name, p->manifest->name);
	assert_int_equal(m->generation, p->manifest->generation);
	assert_int_equal(m->n_memfds, p->manifest->n_memfds);
	assert_int_equal(m->n_hwpts, p->manifest->n_hwpts);
	assert_int_equal(m->n_devices, p->manifest->n_devices);
	for (size_t i = 0; i < m->n_devices; i++)
		assert_string_equal(m->devices[i].bdf, p->manifest->devices[i].bdf);
	iommulu_manifest_free(m);
}

static void test_execute_memfd_only(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = { .name = "vm-a", .memfds = f->memfds, .n_memfds = 2, .iommufd = -1 };
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };
	size_t done = 99;

	assert_int_equal(iommulu_plan_build(&vm, 3, &p, NULL, &e), 0);
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), 0);
	assert_int_equal(done, 3);
	assert_int_equal(fake.n_calls, 3);
	assert_int_equal(fake.calls[0].token, 0);
	assert_int_equal(fake.calls[1].fd, f->memfds[0]);
	assert_int_equal(fake.calls[1].token, 0x100);
	assert_int_equal(fake.calls[2].fd, f->memfds[1]);
	assert_int_equal(fake.calls[2].token, 0x101);
	assert_manifest_preserved(p);
	iommulu_plan_free(p);
}

static void test_execute_full(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };
	size_t done = 0;

	assert_int_equal(iommulu_plan_build(&vm, 9, &p, NULL, &e), 0);
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), 0);
	assert_int_equal(done, p->n_steps);
	assert_int_equal(fake.n_calls, p->n_steps);
	for (size_t i = 0; i < p->n_steps; i++) {
		const iommulu_plan_step *s = &p->steps[i];

		assert_int_equal(fake.calls[i].req, s->kind == IOMMULU_STEP_MARK_HWPT
							    ? IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE
							    : LIVEUPDATE_SESSION_PRESERVE_FD);
		assert_int_equal(fake.calls[i].token, s->token);
		if (s->kind != IOMMULU_STEP_MANIFEST)
			assert_int_equal(fake.calls[i].fd, s->fd);
		if (s->kind == IOMMULU_STEP_MARK_HWPT)
			assert_int_equal(fake.calls[i].hwpt_id, s->hwpt_id);
	}
	assert_manifest_preserved(p);
	iommulu_plan_free(p);
}

/* A failing step stops execution and is named; a retry must skip the HWPT
 * marks that already succeeded, since they outlive the session. */
static void test_execute_failure_and_retry(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = full_vm(f);
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };
	size_t done = 0;

	assert_int_equal(iommulu_plan_build(&vm, 9, &p, NULL, &e), 0);
	fake.fail_call = 7;	/* the second device */
	fake.fail_errno = EOPNOTSUPP;
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), -EOPNOTSUPP);
	assert_int_equal(done, 7);
	assert_string_equal(e.message,
			    "preserving device 0000:00:04.0 (token 0x2001): Operation not supported");

	/* Roll back: a new session; the marks stay in the iommufd. */
	fake_session_reset();
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), -EADDRINUSE);
	assert_int_equal(done, 3);
	assert_string_equal(e.message, "marking HWPT 5 for preservation (hwpt token 0x1): "
				       "Address already in use");

	fake_session_reset();
	for (size_t i = 0; i < p->n_steps; i++)
		if (p->steps[i].kind == IOMMULU_STEP_MARK_HWPT)
			p->steps[i].skip = true;
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), 0);
	assert_int_equal(done, p->n_steps);
	assert_int_equal(fake.n_calls, p->n_steps - 2);
	assert_int_equal(fake.calls[3].token, IOMMULU_TOKEN_IOMMUFD);
	iommulu_plan_free(p);
}

static void test_execute_other_failures(void **state)
{
	fixture *f = *state;
	iommulu_vm_fds vm = { .name = "vm-a", .memfds = f->memfds, .n_memfds = 2, .iommufd = -1 };
	iommulu_plan *p = NULL;
	iommulu_error e = { "" };
	size_t done = 0;

	assert_int_equal(iommulu_plan_build(&vm, 3, &p, NULL, &e), 0);

	fake.fail_call = 0;
	fake.fail_errno = ENOSPC;
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), -ENOSPC);
	assert_int_equal(done, 0);
	assert_string_equal(e.message, "preserving manifest (token 0x0): No space left on device");

	fake_session_reset();
	fake.fail_call = 2;
	fake.fail_errno = EEXIST;
	assert_int_equal(iommulu_plan_execute(p, fake.session_fd, &done, &e), -EEXIST);
	assert_int_equal(done, 2);
	assert_string_equal(e.message, "preserving memfd #1 (token 0x101): File exists");

	/* Not a session at all: the real kernel answers. */
	fake_session_reset();
	assert_int_equal(iommulu_plan_execute(p, f->memfds[0], &done, &e), -ENOTTY);
	assert_int_equal(done, 0);

	assert_int_equal(iommulu_plan_execute(p, -1, &done, &e), -EBADF);
	assert_int_equal(iommulu_plan_execute(NULL, fake.session_fd, &done, &e), -EINVAL);
	iommulu_plan_free(p);
}

static void test_step_refusal(void **state)
{
	iommulu_plan_step s = { .kind = IOMMULU_STEP_IOMMUFD };

	/* What a marked HWPT maps: the VM's fault. */
	assert_int_equal(iommulu_plan_step_refusal(&s, -EOPNOTSUPP), IOMMULU_REASON_HWPT_MAPPING);
	assert_int_equal(iommulu_plan_step_refusal(&s, -EPERM), IOMMULU_REASON_HWPT_MAPPING);
	assert_int_equal(iommulu_plan_step_refusal(&s, -ENOLINK), IOMMULU_REASON_HWPT_MAPPING);
	assert_int_equal(iommulu_plan_step_refusal(&s, -ESTALE), IOMMULU_REASON_HWPT_MAPPING);
	/* No handler, busy, or anything else: not the VM's fault. */
	assert_int_equal(iommulu_plan_step_refusal(&s, -ENOENT), IOMMULU_REASON_NONE);
	assert_int_equal(iommulu_plan_step_refusal(&s, -EBUSY), IOMMULU_REASON_NONE);
	assert_int_equal(iommulu_plan_step_refusal(&s, -ENOTTY), IOMMULU_REASON_NONE);
	assert_int_equal(iommulu_plan_step_refusal(&s, 0), IOMMULU_REASON_NONE);
	/* The same errnos from other steps mean something else. */
	for (int k = 0; k < _IOMMULU_STEP_KIND_MAX; k++) {
		s.kind = (iommulu_step_kind)k;
		if (k == IOMMULU_STEP_IOMMUFD)
			continue;
		assert_int_equal(iommulu_plan_step_refusal(&s, -EOPNOTSUPP), IOMMULU_REASON_NONE);
		assert_int_equal(iommulu_plan_step_refusal(&s, -EPERM), IOMMULU_REASON_NONE);
	}
	assert_int_equal(iommulu_plan_step_refusal(NULL, -EOPNOTSUPP), IOMMULU_REASON_NONE);
}

static void test_strings(void **state)
{
	static const char *const reasons[] = {
		"none",		  "wrong-fd-kind",	    "unsealed-memfd",
		"hugetlb-memfd",  "sriov-pf",		    "sriov-vf",
		"not-bound-to-vfio-pci", "duplicate",	    "devices-without-iommufd",
		"too-many",	  "hwpt-maps-foreign-memory",
	};
	static const char *const steps[] = { "manifest", "memfd", "mark-hwpt", "iommufd", "device" };

	assert_int_equal(sizeof(reasons) / sizeof(reasons[0]), _IOMMULU_REASON_MAX);
	for (int i = 0; i < _IOMMULU_REASON_MAX; i++)
		assert_string_equal(iommulu_reason_to_string((iommulu_reason)i), reasons[i]);
	assert_null(iommulu_reason_to_string(_IOMMULU_REASON_MAX));
	assert_null(iommulu_reason_to_string((iommulu_reason)-1));

	assert_int_equal(sizeof(steps) / sizeof(steps[0]), _IOMMULU_STEP_KIND_MAX);
	for (int i = 0; i < _IOMMULU_STEP_KIND_MAX; i++)
		assert_string_equal(iommulu_step_kind_to_string((iommulu_step_kind)i), steps[i]);
	assert_null(iommulu_step_kind_to_string(_IOMMULU_STEP_KIND_MAX));
	assert_null(iommulu_plan_free(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_memfd_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_iommufd_without_devices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_memfds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_hugetlb, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_opath, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_iommufd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_hwpts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_devices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_driver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_execute_memfd_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_execute_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_execute_failure_and_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_execute_other_failures, setup, teardown),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_step_refusal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
