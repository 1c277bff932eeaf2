/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's registry and VM state machine (daemon/manager.c,
 * registration.c, record.c, preserve-all.c) without a bus: a Manager with
 * no bus connection and no fd store, real sealed memfds, and the fake
 * /dev/liveupdate of the integration tests (tests/integration/fake-luo.c,
 * preloaded by meson) standing in for the kernel's LUO.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/log.h"
#include "../../daemon/manager.h"
#include "../../daemon/util.h"
#include "fake-kimage.h"

static char dir[] = "/tmp/iommulu-registry-XXXXXX";
static char luo_dev[64];

static int setup_env(void **state)
{
	char statedir[64];
	FILE *f;

	if (!mkdtemp(dir))
		return -1;
	snprintf(luo_dev, sizeof(luo_dev), "%s/liveupdate", dir);
	snprintf(statedir, sizeof(statedir), "%s/state", dir);
	if (mkdir(statedir, 0700) < 0 || !(f = fopen(luo_dev, "we")))
		return -1;
	fclose(f);
	setenv("IOMMULU_LIVEUPDATE_DEV", luo_dev, 1);
	setenv("IOMMU_LUD_STATE_DIR", statedir, 1);
	unsetenv("NOTIFY_SOCKET");
	log_setup();
	return 0;
}

static int teardown_env(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static Manager *new_manager(void)
{
	Manager *m = NULL;

	assert_int_equal(manager_new(&m, "/nonexistent"), 0);
	assert_false(m->fdstore);
	m->config.max_vms = 16;
	m->config.max_fds_per_vm = 16;
	m->config.busy_timeout_ms = 100;
	return m;
}

/* Registers a memfd-only VM of n memfds of sizes[i] bytes, the ones in
 * state[] being state memfds, as RegisterVM does after its checks. */
static Vm *add_vm(Manager *m, const char *name, const uint64_t *sizes, size_t n, const uint32_t *state,
		  size_t n_state, int *ret_fds)
{
	iommulu_plan *plan = NULL;
	iommulu_error e = {};
	int fds[8];
	Vm *v = NULL;

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(iommulu_memfd_create(name, sizes[i], &fds[i]), 0);
	assert_int_equal(iommulu_plan_build(&(iommulu_vm_fds){ .name = name, .memfds = fds, .n_memfds = n,
							      .iommufd = -1 },
					    m->generation, &plan, NULL, &e), 0);
	assert_int_equal(vm_new(m, name, &v), 0);
	assert_int_equal(vm_add_files(v, &(VmFiles){ .memfds = fds, .n_memfds = n, .iommufd = -1,
						      .state_memfds = state, .n_state_memfds = n_state },
				      plan), 0);
	iommulu_plan_free(plan);
	v->state = VM_REGISTERED;
	assert_int_equal(manager_add_vm(m, v), 0);
	for (size_t i = 0; i < n; i++) {
		if (ret_fds)
			ret_fds[i] = fds[i];
		else
			close(fds[i]);
	}
	return v;
}

static void test_state_names(void **state)
{
	static const char *const names[] = { "registered", "preserved", "restored", "verified",
					     "retrieved", "finished", "failed", "registering" };

	for (VmState s = 0; s < _VM_STATE_MAX; s++)
		assert_string_equal(vm_state_to_string(s), names[s]);
	assert_null(vm_state_to_string(_VM_STATE_MAX));
}

/* GuestMemoryBytes leaves out state memfds; a retry is recognised by its
 * files, their order, the HWPTs and the state memfds. */
static void test_files_and_memory(void **state)
{
	static const uint64_t sizes[] = { 64 << 10, 128 << 10, 4 << 10 };
	static const uint32_t st2[] = { 2 }, st1[] = { 1 };
	Manager *m = new_manager();
	int fds[3], swapped[3];
	Vm *v = add_vm(m, "files", sizes, 3, st2, 1, fds);

	assert_int_equal(vm_files_count(v, VM_FILE_MEMFD), 3);
	assert_int_equal(vm_guest_memory_bytes(v), 192 << 10);
	assert_true(vm_memfd_is_state(v, 2));
	assert_false(vm_memfd_is_state(v, 0));

	assert_true(vm_has_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 3, .iommufd = -1,
						 .state_memfds = st2, .n_state_memfds = 1 }));
	assert_false(vm_has_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 3, .iommufd = -1 }));
	assert_false(vm_has_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 3, .iommufd = -1,
						  .state_memfds = st1, .n_state_memfds = 1 }));
	assert_false(vm_has_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 2, .iommufd = -1,
						  .state_memfds = st2, .n_state_memfds = 1 }));
	swapped[0] = fds[1];
	swapped[1] = fds[0];
	swapped[2] = fds[2];
	assert_false(vm_has_files(v, &(VmFiles){ .memfds = swapped, .n_memfds = 3, .iommufd = -1,
						  .state_memfds = st2, .n_state_memfds = 1 }));
	assert_false(vm_has_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 3, .iommufd = -1,
						  .hwpts = st1, .n_hwpts = 1, .state_memfds = st2,
						  .n_state_memfds = 1 }));
	/* Another open of nothing the VM holds. */
	{
		int other = -1;

		assert_int_equal(iommulu_memfd_create("other", 64 << 10, &other), 0);
		swapped[0] = other;
		swapped[1] = fds[1];
		assert_false(vm_has_files(v, &(VmFiles){ .memfds = swapped, .n_memfds = 3, .iommufd = -1,
							  .state_memfds = st2, .n_state_memfds = 1 }));
		close(other);
	}

	/* A part rolled back takes its state memfds with it. */
	vm_truncate_files(v, 2, 0);
	assert_int_equal(vm_n_state_memfds(v), 0);
	assert_int_equal(vm_guest_memory_bytes(v), 192 << 10);
	vm_truncate_files(v, 1, 0);
	assert_int_equal(vm_guest_memory_bytes(v), 64 << 10);

	for (size_t i = 0; i < 3; i++)
		close(fds[i]);
	manager_free(m);
}

/* A plan of the memfd-only VM of fds, as RegisterVM builds it. */
static iommulu_plan *memfd_plan(const char *name, const int *fds, size_t n)
{
	iommulu_plan *plan = NULL;
	iommulu_error e = {};

	assert_int_equal(iommulu_plan_build(&(iommulu_vm_fds){ .name = name, .memfds = fds, .n_memfds = n,
							      .iommufd = -1 },
					    0, &plan, NULL, &e), 0);
	return plan;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/*
 * Files added in parts land in one array, numbered by kind across the
 * parts, each an fd of the daemon's own; StateMemfds keeps the order it
 * was named in; a part rolled back is cut off again, closed, with its
 * state memfds and HWPTs, and GuestMemoryBytes follows.
 */
static void test_files_in_parts(void **state)
{
	static const uint64_t sizes[] = { 64 << 10, 4 << 10, 8 << 10, 128 << 10 };
	static const uint32_t st1[] = { 1 }, st32[] = { 3, 2 }, hw1[] = { 7 }, hw2[] = { 8, 9 };
	Manager *m = new_manager();
	iommulu_plan *plan;
	uint32_t *numbers = NULL;
	size_t n;
	int fds[4], mine[4];
	Vm *v = NULL;

	for (size_t i = 0; i < 4; i++)
		assert_int_equal(iommulu_memfd_create("parts", sizes[i], &fds[i]), 0);
	assert_int_equal(vm_new(m, "parts", &v), 0);

	plan = memfd_plan("parts", fds, 2);
	assert_int_equal(vm_add_files(v, &(VmFiles){ .memfds = fds, .n_memfds = 2, .iommufd = -1, .hwpts = hw1,
						      .n_hwpts = 1, .state_memfds = st1, .n_state_memfds = 1 },
				      plan), 0);
	iommulu_plan_free(plan);
	assert_true(v->has_fds);
	assert_int_equal(v->n_files, 2);
	assert_int_equal(vm_guest_memory_bytes(v), 64 << 10);

	plan = memfd_plan("parts", fds, 4);
	assert_int_equal(vm_add_files(v, &(VmFiles){ .memfds = fds + 2, .n_memfds = 2, .iommufd = -1,
						      .hwpts = hw2, .n_hwpts = 2, .state_memfds = st32,
						      .n_state_memfds = 2 },
				      plan), 0);
	iommulu_plan_free(plan);
	assert_int_equal(vm_files_count(v, VM_FILE_MEMFD), 4);
	assert_int_equal(vm_files_count(v, VM_FILE_DEVICE), 0);
	assert_true(vm_iommufd(v) < 0);
	for (size_t i = 0; i < 4; i++) {
		const VmFile *f = vm_file(v, VM_FILE_MEMFD, i);
		char role[VM_FILE_ROLE_MAX], want[16];

		assert_non_null(f);
		assert_int_equal(f->kind, VM_FILE_MEMFD);
		assert_int_equal(f->memfd.size, sizes[i]);
		assert_false(f->stored);
		assert_true(f->fd >= 0 && f->fd != fds[i]);	/* a copy of the caller's */
		assert_int_equal(vm_file_number(v, f), i);
		snprintf(want, sizeof(want), "memfd:%zu", i);
		assert_string_equal(vm_file_role(v, f, role), want);
		mine[i] = f->fd;
	}
	assert_null(vm_file(v, VM_FILE_MEMFD, 4));
	assert_int_equal(v->n_hwpts, 3);
	assert_int_equal(v->hwpts[2], 9);
	assert_int_equal(vm_guest_memory_bytes(v), 64 << 10);	/* memfd 0 is the only guest RAM */
	assert_int_equal(vm_n_state_memfds(v), 3);
	assert_int_equal(vm_state_memfds(v, &numbers, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(numbers[0], 1);
	assert_int_equal(numbers[1], 3);
	assert_int_equal(numbers[2], 2);
	free(numbers);
	{
		char *content = NULL;

		assert_int_equal(registration_content(v, "boot", &content), 0);
		assert_non_null(strstr(content, "\"hwpts\":[7,8,9],\"state_memfds\":[1,3,2],"
					    "\"memfds\":[65536,4096,8192,131072],\"iommufd\":false,\"devices\":[]}"));
		free(content);
	}

	/* A second iommufd is refused, and nothing changes. */
	{
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		assert_int_equal(vm_files_append(v, VM_FILE_IOMMUFD, null, NULL), 0);
		plan = memfd_plan("parts", fds, 4);
		assert_int_equal(vm_add_files(v, &(VmFiles){ .iommufd = fds[0] }, plan), -EEXIST);
		iommulu_plan_free(plan);
		assert_int_equal(v->n_files, 5);
		assert_string_equal(vm_file_role(v, &v->files[4], (char[VM_FILE_ROLE_MAX]){}), "iommufd");
		vm_truncate_files(v, 4, v->n_hwpts);
		assert_false(fd_open(null));
		assert_true(vm_iommufd(v) < 0);
	}

	/* The second part rolled back. */
	vm_truncate_files(v, 2, 1);
	assert_int_equal(vm_files_count(v, VM_FILE_MEMFD), 2);
	assert_true(fd_open(mine[0]) && fd_open(mine[1]));
	assert_false(fd_open(mine[2]) || fd_open(mine[3]));
	assert_int_equal(v->n_hwpts, 1);
	assert_int_equal(vm_state_memfds(v, &numbers, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(numbers[0], 1);
	free(numbers);
	assert_int_equal(vm_guest_memory_bytes(v), 64 << 10);
	/* ... and added again, named the other way round this time */
	plan = memfd_plan("parts", fds, 4);
	assert_int_equal(vm_add_files(v, &(VmFiles){ .memfds = fds + 2, .n_memfds = 2, .iommufd = -1,
						      .state_memfds = (const uint32_t[]){ 2 }, .n_state_memfds = 1 },
				      plan), 0);
	iommulu_plan_free(plan);
	assert_int_equal(vm_guest_memory_bytes(v), (64 << 10) + (128 << 10));
	assert_int_equal(vm_state_memfds(v, &numbers, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(numbers[1], 2);
	free(numbers);

	vm_close_files(v);
	assert_false(v->has_fds);
	assert_int_equal(v->n_files, 0);
	assert_int_equal(vm_guest_memory_bytes(v), 0);
	vm_free(v);
	for (size_t i = 0; i < 4; i++)
		close(fds[i]);
	manager_free(m);
}

/* A VM of manifest mf's files, none restored. */
static Vm *manifest_vm(Manager *m, iommulu_manifest *mf)
{
	Vm *v = NULL;

	assert_int_equal(vm_new(m, mf->name, &v), 0);
	assert_int_equal(vm_files_from_manifest(v, mf), 0);
	v->manifest = mf;
	return v;
}

static iommulu_manifest *device_manifest(const char *name)
{
	iommulu_manifest *mf = NULL;

	assert_int_equal(iommulu_manifest_new(name, &mf), 0);
	assert_int_equal(iommulu_manifest_add_memfd(mf, 0x100, 64 << 10), 0);
	assert_int_equal(iommulu_manifest_add_memfd(mf, 0x101, 4 << 10), 0);
	assert_int_equal(iommulu_manifest_set_iommufd(mf, 0x1000), 0);
	assert_int_equal(iommulu_manifest_add_hwpt(mf, 5, 0x2000), 0);
	assert_int_equal(iommulu_manifest_add_device(mf, "0000:00:01.0", 0x3000), 0);
	assert_int_equal(iommulu_manifest_add_device(mf, "0000:00:02.0", 0x3001), 0);
	return mf;
}

/*
 * The files of a manifest, as a restore lays them out; a device's snapshot
 * goes by its BDF, through the record too, which also carries the state
 * memfds.
 */
static void test_device_snapshots(void **state)
{
	Manager *m = new_manager();
	Vm *v = manifest_vm(m, device_manifest("snap")), *other;
	Vm rec = { .session_fd = -EBADF };
	VmFile *f;
	int fd = -1;

	assert_int_equal(v->n_files, 5);
	assert_int_equal(vm_files_count(v, VM_FILE_MEMFD), 2);
	assert_int_equal(vm_files_count(v, VM_FILE_IOMMUFD), 1);
	assert_int_equal(vm_files_count(v, VM_FILE_DEVICE), 2);
	for (size_t i = 0; i < v->n_files; i++)
		assert_true(v->files[i].fd < 0);
	assert_true(vm_iommufd(v) < 0);
	assert_int_equal(v->n_hwpts, 1);
	assert_int_equal(v->hwpts[0], 5);
	assert_int_equal(vm_guest_memory_bytes(v), (64 << 10) + (4 << 10));
	f = vm_file(v, VM_FILE_DEVICE, 1);
	assert_string_equal(f->device.bdf, "0000:00:02.0");
	assert_string_equal(vm_file_role(v, f, (char[VM_FILE_ROLE_MAX]){}), "device:0000:00:02.0");

	/* Snapshots, one not valid (config space was unreadable). */
	f->device.snapshot = (DeviceSnapshot){ .valid = true, .command = 0x6, .bars = { 0xfe000000 },
					       .irq_known = true, .irq_type = IOMMULU_PCI_IRQ_MSIX,
					       .irq_vectors = 3 };
	assert_null(vm_device_snapshot(v, "0000:00:01.0"));
	assert_int_equal(vm_device_snapshot(v, "0000:00:02.0")->command, 0x6);
	assert_null(vm_device_snapshot(v, "0000:00:03.0"));

	/* Another VM with the same devices in the other order takes them
	 * by BDF. */
	{
		iommulu_manifest *mf = NULL;

		assert_int_equal(iommulu_manifest_new("snap2", &mf), 0);
		assert_int_equal(iommulu_manifest_add_memfd(mf, 0x100, 64 << 10), 0);
		assert_int_equal(iommulu_manifest_set_iommufd(mf, 0x1000), 0);
		assert_int_equal(iommulu_manifest_add_device(mf, "0000:00:02.0", 0x3000), 0);
		assert_int_equal(iommulu_manifest_add_device(mf, "0000:00:01.0", 0x3001), 0);
		other = manifest_vm(m, mf);
	}
	vm_file(other, VM_FILE_DEVICE, 1)->device.snapshot.valid = true;	/* replaced: 01.0 has none */
	vm_take_snapshots(other, v);
	assert_true(vm_file(other, VM_FILE_DEVICE, 0)->device.snapshot.valid);
	assert_int_equal(vm_file(other, VM_FILE_DEVICE, 0)->device.snapshot.bars[0], 0xfe000000);
	assert_false(vm_file(other, VM_FILE_DEVICE, 1)->device.snapshot.valid);

	/* Through the record, with state memfd 1. */
	vm_memfd_mark_state(v, 1);
	assert_int_equal(vm_guest_memory_bytes(v), 64 << 10);
	snprintf(v->session_name, sizeof(v->session_name), "iommulu.1.snap");
	assert_int_equal(record_to_memfd(v, &fd), 0);
	assert_int_equal(record_parse_fd(fd, &rec), 0);
	close(fd);
	assert_string_equal(rec.name, "snap");
	assert_int_equal(rec.n_files, 5);
	assert_true(vm_memfd_is_state(&rec, 1));
	assert_false(vm_memfd_is_state(&rec, 0));
	assert_null(vm_device_snapshot(&rec, "0000:00:01.0"));
	{
		const DeviceSnapshot *s = vm_device_snapshot(&rec, "0000:00:02.0");

		assert_non_null(s);
		assert_int_equal(s->command, 0x6);
		assert_int_equal(s->bars[0], 0xfe000000);
		assert_true(s->irq_known);
		assert_int_equal(s->irq_type, IOMMULU_PCI_IRQ_MSIX);
		assert_int_equal(s->irq_vectors, 3);
	}
	/* ... onto the files of a session's manifest (devices reordered) */
	vm_files_take_record(other, &rec);
	assert_false(vm_memfd_is_state(other, 1));	/* other has one memfd only */
	assert_false(vm_memfd_is_state(other, 0));
	assert_true(vm_file(other, VM_FILE_DEVICE, 0)->device.snapshot.valid);
	record_done(&rec);
	assert_int_equal(rec.n_files, 0);
	assert_null(rec.manifest);

	vm_free(v);
	vm_free(other);
	manager_free(m);
}

/*
 * The one iommulu_vm_fds of a VM's files: memfds and devices in their
 * numbering, whatever order the parts came in, the VM's iommufd or else
 * the call's, and a call's files after the VM's.
 */
static void test_vm_fds(void **state)
{
	static const int call_memfds[] = { 40, 41 }, call_devices[] = { 50 };
	static const uint32_t call_hwpts[] = { 9 };
	Manager *m = new_manager();
	VmFds fds = {};
	Vm *v = NULL;

	assert_int_equal(vm_new(m, "fds", &v), 0);
	/* By hand, parts interleaved: the fds are only numbers here. */
	assert_int_equal(vm_files_append(v, VM_FILE_MEMFD, -EBADF, NULL), 0);
	assert_int_equal(vm_files_append(v, VM_FILE_DEVICE, -EBADF, NULL), 0);
	assert_int_equal(vm_files_append(v, VM_FILE_MEMFD, -EBADF, NULL), 0);
	for (size_t i = 0; i < v->n_files; i++)
		v->files[i].fd = 30 + (int)i;
	v->hwpts = calloc(1, sizeof(uint32_t));
	assert_non_null(v->hwpts);
	v->hwpts[0] = 5;
	v->n_hwpts = 1;

	assert_int_equal(vm_fds_build(v, "fds", NULL, &fds), 0);
	assert_string_equal(fds.fds.name, "fds");
	assert_int_equal(fds.fds.n_memfds, 2);
	assert_int_equal(fds.fds.memfds[0], 30);
	assert_int_equal(fds.fds.memfds[1], 32);
	assert_int_equal(fds.fds.n_devices, 1);
	assert_int_equal(fds.fds.devices[0], 31);
	assert_int_equal(fds.fds.iommufd, -1);
	assert_int_equal(fds.fds.n_hwpts, 1);
	assert_int_equal(fds.fds.hwpt_ids[0], 5);
	vm_fds_done(&fds);
	assert_null(fds.memfds);

	/* With a call's files: after the VM's; the call's iommufd. */
	{
		VmFiles add = { .memfds = call_memfds, .n_memfds = 2, .iommufd = 60, .devices = call_devices,
				.n_devices = 1, .hwpts = call_hwpts, .n_hwpts = 1 };

		assert_int_equal(vm_fds_build(v, "fds", &add, &fds), 0);
		assert_int_equal(fds.fds.n_memfds, 4);
		assert_int_equal(fds.fds.memfds[2], 40);
		assert_int_equal(fds.fds.memfds[3], 41);
		assert_int_equal(fds.fds.n_devices, 2);
		assert_int_equal(fds.fds.devices[1], 50);
		assert_int_equal(fds.fds.iommufd, 60);
		assert_int_equal(fds.fds.n_hwpts, 2);
		assert_int_equal(fds.fds.hwpt_ids[1], 9);
		vm_fds_done(&fds);

		/* A new VM: the call's files alone. */
		assert_int_equal(vm_fds_build(NULL, "new", &add, &fds), 0);
		assert_string_equal(fds.fds.name, "new");
		assert_int_equal(fds.fds.n_memfds, 2);
		assert_int_equal(fds.fds.memfds[0], 40);
		assert_int_equal(fds.fds.n_hwpts, 1);
		vm_fds_done(&fds);

		/* The VM's iommufd before the call's. */
		assert_int_equal(vm_files_append(v, VM_FILE_IOMMUFD, -EBADF, NULL), 0);
		v->files[3].fd = 33;
		assert_int_equal(vm_fds_build(v, "fds", &add, &fds), 0);
		assert_int_equal(fds.fds.iommufd, 33);
		vm_fds_done(&fds);
	}
	/* The numbers were never ours to close. */
	for (size_t i = 0; i < v->n_files; i++)
		v->files[i].fd = -EBADF;
	vm_free(v);
	manager_free(m);
}

static void test_preserve_cycle(void **state)
{
	static const uint64_t sizes[] = { 64 << 10 };
	VmError e = {};
	Manager *m = new_manager();
	Vm *v = add_vm(m, "cyc", sizes, 1, NULL, 0, NULL);

	assert_int_equal(vm_preserve(v, &e), 0);
	assert_int_equal(v->state, VM_PRESERVED);
	assert_string_equal(v->session_name, "iommulu.1.cyc");
	assert_true(v->session_fd >= 0);
	assert_non_null(v->manifest);

	/* Idempotent: asking again changes nothing. */
	assert_int_equal(vm_preserve(v, &e), 0);
	assert_string_equal(v->session_name, "iommulu.1.cyc");

	assert_int_equal(vm_unpreserve(v), 0);
	assert_int_equal(v->state, VM_REGISTERED);
	assert_string_equal(v->session_name, "");
	assert_true(v->session_fd < 0);
	assert_true(v->has_fds);

	/* No /dev/liveupdate: KernelUnsupported, and the VM stays registered. */
	assert_int_equal(unlink(luo_dev), 0);
	assert_true(vm_preserve(v, &e) < 0);
	assert_int_equal(e.outcome, VM_OUTCOME_KERNEL_UNSUPPORTED);
	assert_non_null(strstr(e.message, "/dev/liveupdate"));
	assert_int_equal(v->state, VM_REGISTERED);
	{
		FILE *f = fopen(luo_dev, "we");

		assert_non_null(f);
		fclose(f);
	}

	/* Only a registered (or failed) VM is preserved. */
	v->state = VM_REGISTERING;
	assert_true(vm_preserve(v, &e) < 0);
	assert_int_equal(e.outcome, VM_OUTCOME_INVALID_STATE);
	assert_non_null(strstr(e.message, "registering"));
	v->state = VM_REGISTERED;

	/* The failed state keeps its error, and a failed VM can be retried. */
	vm_set_state(v, VM_FAILED, "boom");
	assert_string_equal(v->last_error, "boom");
	assert_int_equal(vm_preserve(v, &e), 0);
	assert_int_equal(v->state, VM_PRESERVED);
	assert_null(v->last_error);
	manager_free(m);
}

/* The records carry what a restart and a kexec need, StateMemfds too. */
static void test_records(void **state)
{
	static const uint64_t sizes[] = { 64 << 10, 8 << 10 };
	static const uint32_t st1[] = { 1 };
	VmError e = {};
	Manager *m = new_manager();
	Vm *v = add_vm(m, "rec", sizes, 2, st1, 1, NULL);
	Registration g = {};
	char *content = NULL;
	int fd = -1;

	v->owner_pid = 4242;
	assert_int_equal(registration_content(v, "boot", &content), 0);
	assert_int_equal(registration_to_memfd(content, &fd), 0);
	assert_int_equal(registration_parse_fd(fd, &g), 0);
	assert_string_equal(g.name, "rec");
	assert_string_equal(g.boot_id, "boot");
	assert_int_equal(g.state, VM_REGISTERED);
	assert_int_equal(g.owner_pid, 4242);
	assert_int_equal(g.n_memfds, 2);
	assert_int_equal(g.memfd_sizes[1], 8 << 10);
	assert_int_equal(g.n_state_memfds, 1);
	assert_int_equal(g.state_memfds[0], 1);
	registration_done(&g);
	close(fd);
	free(content);

	assert_int_equal(vm_preserve(v, &e), 0);
	assert_int_equal(record_to_memfd(v, &fd), 0);
	{
		Vm tmp = { .session_fd = -EBADF };

		assert_int_equal(record_parse_fd(fd, &tmp), 0);
		assert_string_equal(tmp.name, "rec");
		assert_string_equal(tmp.session_name, "iommulu.1.rec");
		assert_int_equal(vm_guest_memory_bytes(&tmp), 64 << 10);
		assert_int_equal(vm_n_state_memfds(&tmp), 1);
		assert_true(vm_memfd_is_state(&tmp, 1));
		record_done(&tmp);
	}
	close(fd);
	manager_free(m);
}

static void test_preserve_all(void **state)
{
	static const uint64_t sizes[] = { 64 << 10 };
	Manager *m = new_manager();
	Vm *fin;

	add_vm(m, "a1", sizes, 1, NULL, 0, NULL);
	add_vm(m, "a2", sizes, 1, NULL, 0, NULL);
	fin = add_vm(m, "a3", sizes, 1, NULL, 0, NULL);
	fin->state = VM_FINISHED;

	assert_int_equal(manager_preserve_all(m, "test"), 0);
	assert_int_equal(manager_find_vm(m, "a1")->state, VM_PRESERVED);
	assert_int_equal(manager_find_vm(m, "a2")->state, VM_PRESERVED);
	assert_int_equal(fin->state, VM_FINISHED);

	/* Again: everything is preserved already. */
	assert_int_equal(manager_preserve_all(m, "test"), 0);

	/* One that cannot be: counted, the others unharmed. */
	add_vm(m, "a4", sizes, 1, NULL, 0, NULL)->state = VM_REGISTERING;
	assert_int_equal(manager_preserve_all(m, "test"), 1);
	assert_int_equal(manager_find_vm(m, "a1")->state, VM_PRESERVED);
	manager_free(m);
}

typedef struct Done {
	bool called;
	int failed;
	size_t n_results;
	char first[IOMMULU_ERROR_MAX + 512];
} Done;

static void on_done(Manager *m, PreserveAllJob *j, const PreserveResult *results, size_t n, int failed,
		    void *userdata)
{
	Done *d = userdata;

	d->called = true;
	d->failed = failed;
	d->n_results = n;
	if (n)
		snprintf(d->first, sizeof(d->first), "%s=%s", results[0].name,
			 results[0].ok ? "ok" : results[0].error.message);
}

/* The asynchronous job: one VM per event-loop iteration, done only from
 * the loop, and a VM removed while it runs is skipped. */
static void test_preserve_all_async(void **state)
{
	static const uint64_t sizes[] = { 64 << 10 };
	Manager *m = new_manager();
	Done d = {};

	assert_int_equal(sd_event_new(&m->event), 0);
	add_vm(m, "b1", sizes, 1, NULL, 0, NULL);
	add_vm(m, "b2", sizes, 1, NULL, 0, NULL);
	assert_int_equal(manager_preserve_all_async(m, on_done, &d, NULL), 0);
	assert_false(d.called);
	assert_int_equal(manager_find_vm(m, "b1")->state, VM_REGISTERED);	/* nothing done before the loop runs */

	assert_true(sd_event_run(m->event, 1000 * 1000) > 0);	/* first step: b1 */
	assert_false(d.called);
	assert_int_equal(manager_find_vm(m, "b1")->state, VM_PRESERVED);
	assert_int_equal(manager_find_vm(m, "b2")->state, VM_REGISTERED);
	manager_remove_vm(m, manager_find_vm(m, "b2"));	/* gone while the job runs */

	for (int i = 0; i < 10 && !d.called; i++)
		assert_true(sd_event_run(m->event, 1000 * 1000) >= 0);
	assert_true(d.called);
	assert_int_equal(d.failed, 0);
	assert_int_equal(d.n_results, 1);
	assert_string_equal(d.first, "b1=ok");
	assert_null(m->preserve_jobs);
	manager_free(m);
}

/* A job left running when the daemon exits ends with the manager: its
 * caller is told (-ECANCELED), the queued one too. */
static void test_preserve_all_async_freed(void **state)
{
	static const uint64_t sizes[] = { 64 << 10 };
	Manager *m = new_manager();
	Done d1 = {}, d2 = {};

	assert_int_equal(sd_event_new(&m->event), 0);
	add_vm(m, "c1", sizes, 1, NULL, 0, NULL);
	assert_int_equal(manager_preserve_all_async(m, on_done, &d1, NULL), 0);
	assert_int_equal(manager_preserve_all_async(m, on_done, &d2, NULL), 0);	/* queued */
	assert_non_null(m->preserve_jobs);
	manager_free(m);
	assert_true(d1.called);
	assert_int_equal(d1.failed, -ECANCELED);
	assert_true(d2.called);
	assert_int_equal(d2.failed, -ECANCELED);
}

static bool log_has(const char *path, const char *line, int n)
{
	char buf[4096] = "";
	FILE *f = fopen(path, "re");
	int found = 0;

	if (!f)
		return n == 0;
	while (fgets(buf, sizeof(buf), f))
		found += strncmp(buf, line, strlen(line)) == 0;
	fclose(f);
	return found == n;
}

/*
 * The kernel staged for kexec: a VM with an iommufd (here a stand-in file:
 * the gate comes before any look at it) is preserved for a kexec only into
 * a kernel StageKernel checked and found to carry the series; a memfd-only
 * VM needs no staged kernel.  A refused kernel is not loaded and leaves the
 * previous one staged; the kexec hook's helpers load it again and
 * unpreserve what it cannot adopt.
 */
static void test_staged_kernel(void **state)
{
	static const uint64_t sizes[] = { 64 << 10 };
	static const char pristine[] = "memfd-v1\0";
	char kexec_log[96], img_series[96], img_pristine[96], cfg[96];
	Manager *m = new_manager();
	VmError e = {};
	Vm *dev, *pdev;
	int series_fd, pristine_fd, cfg_fd;
	FILE *f;

	snprintf(kexec_log, sizeof(kexec_log), "%s/kexec.log", dir);
	snprintf(img_series, sizeof(img_series), "%s/vmlinuz-series", dir);
	snprintf(img_pristine, sizeof(img_pristine), "%s/vmlinuz-pristine", dir);
	snprintf(cfg, sizeof(cfg), "%s/config", dir);
	setenv("IOMMULU_KEXEC_FAKE", kexec_log, 1);
	assert_true(write_bzimage(img_series, SERIES, sizeof(SERIES)));
	assert_true(write_bzimage(img_pristine, pristine, sizeof(pristine)));
	assert_non_null(f = fopen(cfg, "we"));
	fputs(good_config, f);
	fclose(f);
	series_fd = open(img_series, O_RDONLY | O_CLOEXEC);
	pristine_fd = open(img_pristine, O_RDONLY | O_CLOEXEC);
	cfg_fd = open(cfg, O_RDONLY | O_CLOEXEC);
	assert_true(series_fd >= 0 && pristine_fd >= 0 && cfg_fd >= 0);

	add_vm(m, "mem", sizes, 1, NULL, 0, NULL);
	dev = add_vm(m, "dev", sizes, 1, NULL, 0, NULL);
	assert_int_equal(vm_files_append(dev, VM_FILE_IOMMUFD, open("/dev/null", O_RDONLY | O_CLOEXEC), NULL), 0);

	/* Nothing staged: the memfd-only VM goes, the other does not. */
	assert_true(manager_kernel_adopts(m, manager_find_vm(m, "mem"), &e));
	assert_false(manager_kernel_adopts(m, dev, &e));
	assert_int_equal(e.outcome, VM_OUTCOME_KERNEL_NOT_CHECKED);
	assert_non_null(strstr(e.message, "iommu-luctl stage"));
	assert_int_equal(manager_preserve_all(m, "test"), 1);
	assert_int_equal(manager_find_vm(m, "mem")->state, VM_PRESERVED);
	assert_int_equal(dev->state, VM_REGISTERED);

	/* A kernel without the series: refused, not loaded. */
	assert_int_equal(manager_stage_kernel(m, img_pristine, pristine_fd, -1, cfg_fd, GOOD_CMDLINE, &e), -EPERM);
	assert_int_equal(e.outcome, VM_OUTCOME_KERNEL_INCOMPATIBLE);
	assert_non_null(strstr(e.message, "VM dev"));
	assert_non_null(strstr(e.message, "lacks the kernel-patches series"));
	assert_null(m->staged);
	assert_true(log_has(kexec_log, "load", 0));
	/* ... nor one without liveupdate=on on its command line */
	assert_int_equal(manager_stage_kernel(m, img_series, series_fd, -1, cfg_fd, "kho=on intel_iommu=on", &e),
			 -EPERM);
	assert_non_null(strstr(e.message, "liveupdate=on"));
	assert_null(m->staged);

	/* With the series: loaded, and the VM goes along. */
	assert_int_equal(manager_stage_kernel(m, img_series, series_fd, -1, cfg_fd, GOOD_CMDLINE, &e), 0);
	assert_non_null(m->staged);
	assert_true(m->staged->verdict.devices);
	assert_string_equal(m->staged->verdict.release, "7.3.4-test");
	assert_true(log_has(kexec_log, "load kernel=", 1));
	assert_true(manager_kernel_adopts(m, dev, &e));
	/* A refused one later leaves it staged */
	assert_int_equal(manager_stage_kernel(m, img_pristine, pristine_fd, -1, cfg_fd, GOOD_CMDLINE, &e), -EPERM);
	assert_non_null(m->staged);
	assert_string_equal(m->staged->name, img_series);
	assert_true(log_has(kexec_log, "load kernel=", 1));
	/* The kexec hook loads it again */
	assert_int_equal(manager_reload_staged_kernel(m), 0);
	assert_true(log_has(kexec_log, "load kernel=", 2));

	/* A preserved VM the staged kernel cannot adopt is unpreserved
	 * before the kexec (pdev gets its stand-in iommufd once preserved). */
	pdev = add_vm(m, "pdev", sizes, 1, NULL, 0, NULL);
	assert_int_equal(vm_preserve(pdev, &e), 0);
	assert_int_equal(vm_files_append(pdev, VM_FILE_IOMMUFD, open("/dev/null", O_RDONLY | O_CLOEXEC), NULL), 0);
	m->staged->verdict.devices = false;
	manager_unpreserve_unadoptable(m);
	assert_int_equal(manager_find_vm(m, "pdev")->state, VM_REGISTERED);
	assert_int_equal(manager_find_vm(m, "mem")->state, VM_PRESERVED);

	assert_int_equal(manager_unstage_kernel(m), 0);
	assert_null(m->staged);
	assert_true(log_has(kexec_log, "unload", 1));
	unsetenv("IOMMULU_KEXEC_FAKE");
	close(series_fd);
	close(pristine_fd);
	close(cfg_fd);
	manager_free(m);
}

/* The bus layer's one table: each outcome of the core to its D-Bus error. */
static void test_error_table(void **state)
{
	static const struct {
		VmOutcome outcome;
		int errnum;
		const char *name;
	} cases[] = {
		{ VM_OUTCOME_INVALID_STATE, 0, ERROR_INVALID_STATE },
		{ VM_OUTCOME_NOT_ELIGIBLE, 0, ERROR_NOT_ELIGIBLE },
		{ VM_OUTCOME_KERNEL_UNSUPPORTED, 0, ERROR_KERNEL_UNSUPPORTED },
		{ VM_OUTCOME_BUSY, 0, ERROR_BUSY },
		{ VM_OUTCOME_UNCONFIRMED, 0, SD_BUS_ERROR_TIMEOUT },
		{ VM_OUTCOME_KERNEL_NOT_CHECKED, 0, ERROR_KERNEL_NOT_CHECKED },
		{ VM_OUTCOME_KERNEL_INCOMPATIBLE, 0, ERROR_KERNEL_INCOMPATIBLE },
		{ VM_OUTCOME_ERRNO, ENOTTY, ERROR_KERNEL_UNSUPPORTED },
		{ VM_OUTCOME_ERRNO, EOPNOTSUPP, ERROR_KERNEL_UNSUPPORTED },
		{ VM_OUTCOME_ERRNO, EBUSY, ERROR_BUSY },
		{ VM_OUTCOME_ERRNO, ETIMEDOUT, SD_BUS_ERROR_TIMEOUT },
		{ VM_OUTCOME_ERRNO, ENOMEM, SD_BUS_ERROR_NO_MEMORY },
		{ VM_OUTCOME_ERRNO, EINVAL, SD_BUS_ERROR_INVALID_ARGS },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		_cleanup_(sd_bus_error_free) sd_bus_error b = SD_BUS_ERROR_NULL;
		VmError e = { .outcome = cases[i].outcome, .errnum = cases[i].errnum };

		snprintf(e.message, sizeof(e.message), "VM x: what happened");
		assert_true(bus_error_set_vm(&b, &e) < 0);
		assert_string_equal(b.name, cases[i].name);
		assert_non_null(strstr(b.message, "VM x: what happened"));
		if (cases[i].errnum)
			assert_non_null(strstr(b.message, strerror(cases[i].errnum)));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_error_table),
		cmocka_unit_test(test_files_and_memory),
		cmocka_unit_test(test_files_in_parts),
		cmocka_unit_test(test_device_snapshots),
		cmocka_unit_test(test_vm_fds),
		cmocka_unit_test(test_preserve_cycle),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_preserve_all),
		cmocka_unit_test(test_preserve_all_async),
		cmocka_unit_test(test_preserve_all_async_freed),
		cmocka_unit_test(test_staged_kernel),
	};

	return cmocka_run_group_tests(tests, setup_env, teardown_env);
}
