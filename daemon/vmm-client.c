/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * iommu-lud-vmm-client: a minimal VMM stand-in for tests and the virtual
 * host.  It speaks the same D-Bus API a real VMM would.
 *
 *   register NAME [--memfds=N] [--size=BYTES] [--seed=S] [--count=K] [--preserve] [--hold]
 *	create N sealed memfds of BYTES each, fill them with a pattern
 *	derived from NAME, the memfd index and S, and call RegisterVM
 *	(and PreserveVM); more than 16 memfds, the most one D-Bus message
 *	carries, go in several RegisterVMPart calls instead.  --hold keeps
 *	the process (the "VMM") alive until
 *	SIGTERM, as the daemon drops unpreserved VMs whose VMM exits.
 *	--count=K registers K VMs NAME-0 .. NAME-(K-1) (benchmarks).
 *   retrieve NAME [--seed=S] [--finish]
 *	after a kexec: VerifyVM (every check must pass), RetrieveVM (or,
 *	for more than 16 files, RetrieveVMPart until it has them all), check
 *	that every memfd has the pattern, then FinishVM if asked.
 * Exit status 0 on success, 1 on a failed check, 2 on usage errors.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include <iommulu/iommulu.h>

#define BUS_NAME "org.iommulu.LiveUpdate1"
#define MANAGER_PATH "/org/iommulu/LiveUpdate1"
#define MANAGER_IFACE "org.iommulu.LiveUpdate1.Manager"
#define PAGE 4096u
/* dbus-daemon's max_message_unix_fds on the system bus */
#define FDS_PER_MESSAGE 16u

static void msg_unrefp(sd_bus_message **m)
{
	sd_bus_message_unref(*m);
}
#define _cleanup_bus_msg __attribute__((cleanup(msg_unrefp)))

static uint64_t arg_memfds = 2, arg_size = 4u << 20, arg_seed = 1, arg_count = 0;
static bool arg_preserve, arg_hold, arg_finish;

static uint64_t mix(uint64_t x)
{
	/* splitmix64 finalizer */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static void fill_page(uint64_t *buf, const char *name, uint64_t idx, uint64_t page)
{
	uint64_t x = mix(name_hash(name) ^ mix(arg_seed) ^ (idx << 40) ^ page);

	for (size_t i = 0; i < PAGE / sizeof(uint64_t); i++)
		buf[i] = x = mix(x);
}

static int fill_memfd(int fd, const char *name, uint64_t idx, uint64_t size)
{
	uint64_t buf[PAGE / sizeof(uint64_t)];

	for (uint64_t p = 0; p < size / PAGE; p++) {
		fill_page(buf, name, idx, p);
		if (pwrite(fd, buf, PAGE, (off_t)(p * PAGE)) != PAGE)
			return -errno ?: -EIO;
	}
	return 0;
}

static int check_memfd(int fd, const char *name, uint64_t idx, uint64_t *ret_size)
{
	uint64_t want[PAGE / sizeof(uint64_t)], got[PAGE / sizeof(uint64_t)];
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*ret_size = (uint64_t)st.st_size;
	for (uint64_t p = 0; p < (uint64_t)st.st_size / PAGE; p++) {
		fill_page(want, name, idx, p);
		if (pread(fd, got, PAGE, (off_t)(p * PAGE)) != PAGE)
			return -EIO;
		if (memcmp(want, got, PAGE) != 0) {
			fprintf(stderr, "memfd:%" PRIu64 ": page %" PRIu64 " differs\n", idx, p);
			return -EBADMSG;
		}
	}
	return 0;
}

static int register_one(sd_bus *bus, const char *name, int *fds)
{
	_cleanup_bus_msg sd_bus_message *call = NULL, *reply = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	const char *path;
	int r;

	for (uint64_t i = 0; i < arg_memfds; i++) {
		char n[80];

		snprintf(n, sizeof(n), "guest-ram-%s-%" PRIu64, name, i);
		r = iommulu_memfd_create(n, arg_size, &fds[i]);
		if (r >= 0)
			r = fill_memfd(fds[i], name, i, arg_size);
		if (r < 0)
			return fprintf(stderr, "memfd %" PRIu64 ": %s\n", i, strerror(-r)), 1;
	}

	/* At most 16 fds per message: a bigger VM goes in parts. */
	for (uint64_t first = 0; first < arg_memfds; first += FDS_PER_MESSAGE) {
		uint64_t n = arg_memfds - first < FDS_PER_MESSAGE ? arg_memfds - first : FDS_PER_MESSAGE;
		bool parts = arg_memfds > FDS_PER_MESSAGE, last = first + n == arg_memfds;
		const char *method = parts ? "RegisterVMPart" : "RegisterVM";

		call = sd_bus_message_unref(call);
		reply = sd_bus_message_unref(reply);
		r = sd_bus_message_new_method_call(bus, &call, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, method);
		if (r >= 0)
			r = sd_bus_message_append(call, "s", name);
		if (r >= 0)
			r = sd_bus_message_open_container(call, 'a', "h");
		for (uint64_t i = first; r >= 0 && i < first + n; i++)
			r = sd_bus_message_append(call, "h", fds[i]);
		if (r >= 0)
			r = sd_bus_message_close_container(call);
		if (r >= 0)
			r = sd_bus_message_append(call, "ahahat", 0, 0, 0);
		if (r >= 0 && parts)
			r = sd_bus_message_append(call, "b", (int)last);
		if (r < 0)
			return fprintf(stderr, "building %s: %s\n", method, strerror(-r)), 1;
		r = sd_bus_call(bus, call, 0, &error, &reply);
		if (r < 0) {
			fprintf(stderr, "%s: %s: %s\n", method, error.name, error.message);
			sd_bus_error_free(&error);
			return 1;
		}
	}
	r = sd_bus_message_read(reply, "o", &path);
	if (r < 0)
		return 1;
	printf("registered %s at %s: %" PRIu64 " memfd(s) of %" PRIu64 " bytes\n", name, path,
	       arg_memfds, arg_size);

	if (arg_preserve) {
		r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "PreserveVM", &error,
				       NULL, "s", name);
		if (r < 0) {
			fprintf(stderr, "PreserveVM: %s: %s\n", error.name, error.message);
			sd_bus_error_free(&error);
			return 1;
		}
		printf("preserved %s\n", name);
	}
	return 0;
}

static int do_register(sd_bus *bus, const char *name)
{
	uint64_t n = arg_count ?: 1;
	int *fds, r = 0;

	if (arg_memfds == 0 || arg_memfds > 64 || arg_size == 0 || arg_size % PAGE || n > 1024)
		return fprintf(stderr, "bad --memfds/--size/--count\n"), 2;
	fds = calloc(n * arg_memfds, sizeof(int));
	if (!fds)
		return 1;
	for (uint64_t k = 0; k < n && r == 0; k++) {
		char vm[IOMMULU_VM_NAME_MAX + 1];

		if (arg_count)
			snprintf(vm, sizeof(vm), "%.40s-%" PRIu64, name, k);
		else
			snprintf(vm, sizeof(vm), "%s", name);
		r = register_one(bus, vm, fds + k * arg_memfds);
	}
	fflush(stdout);

	if (r == 0 && arg_hold) {
		sigset_t ss;
		int sig;

		sigemptyset(&ss);
		sigaddset(&ss, SIGTERM);
		sigaddset(&ss, SIGINT);
		sigprocmask(SIG_BLOCK, &ss, NULL);
		(void)sigwait(&ss, &sig);
	}
	for (uint64_t i = 0; i < n * arg_memfds; i++)
		if (fds[i] > 2)
			close(fds[i]);
	free(fds);
	return r;
}

/* Reads a(sh) of RetrieveVM(Part), checks each memfd's pattern (a bad
 * one sets *ret to 1); the number of files, or -errno. */
static int check_files(sd_bus_message *reply, const char *name, unsigned *n_memfds, int *ret)
{
	const char *role;
	int fd, r, n = 0;

	r = sd_bus_message_enter_container(reply, 'a', "(sh)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sh)", &role, &fd)) > 0) {
		uint64_t idx, size = 0;

		n++;
		if (sscanf(role, "memfd:%" SCNu64, &idx) == 1) {
			int k = check_memfd(fd, name, idx, &size);

			(*n_memfds)++;
			printf("retrieve %s: %" PRIu64 " bytes, content %s\n", role, size,
			       k >= 0 ? "intact" : "CORRUPT");
			if (k < 0)
				*ret = 1;
		} else
			printf("retrieve %s: fd received\n", role);
	}
	if (r >= 0)
		r = sd_bus_message_exit_container(reply);
	return r < 0 ? r : n;
}

static int do_retrieve(sd_bus *bus, const char *name)
{
	_cleanup_bus_msg sd_bus_message *reply = NULL, *reply2 = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	unsigned n_checks = 0, n_failed = 0, n_memfds = 0;
	const char *what, *detail;
	int ok, r, ret = 0;

	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "VerifyVM", &error, &reply,
			       "s", name);
	if (r < 0) {
		fprintf(stderr, "VerifyVM: %s: %s\n", error.name, error.message);
		sd_bus_error_free(&error);
		return 1;
	}
	r = sd_bus_message_enter_container(reply, 'a', "(sbs)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(sbs)", &what, &ok, &detail)) > 0) {
		printf("verify %s: %s: %s\n", what, ok ? "ok" : "FAILED", detail);
		n_checks++;
		n_failed += !ok;
	}
	if (r < 0 || n_checks == 0 || n_failed)
		return fprintf(stderr, "VerifyVM: %u of %u checks failed\n", n_failed, n_checks), 1;

	r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RetrieveVM", &error, &reply2,
			       "s", name);
	if (r >= 0)
		r = check_files(reply2, name, &n_memfds, &ret);
	else if (sd_bus_error_has_name(&error, SD_BUS_ERROR_LIMITS_EXCEEDED)) {
		/* More files than one message carries: in parts. */
		uint32_t first = 0, total = 0;

		sd_bus_error_free(&error);
		do {
			_cleanup_bus_msg sd_bus_message *part = NULL;
			int files;

			r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "RetrieveVMPart", &error,
					       &part, "suu", name, first, FDS_PER_MESSAGE);
			if (r < 0)
				break;
			files = check_files(part, name, &n_memfds, &ret);
			if (files <= 0 || sd_bus_message_read(part, "u", &total) < 0) {
				r = files < 0 ? files : -EBADMSG;
				break;
			}
			first += (uint32_t)files;
		} while (first < total);
	}
	if (r < 0 && sd_bus_error_is_set(&error)) {
		fprintf(stderr, "RetrieveVM: %s: %s\n", error.name, error.message);
		sd_bus_error_free(&error);
		return 1;
	}
	if (r < 0 || n_memfds == 0)
		return fprintf(stderr, "RetrieveVM returned no memfd\n"), 1;

	if (arg_finish && ret == 0) {
		r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "FinishVM", &error, NULL,
				       "s", name);
		if (r < 0) {
			fprintf(stderr, "FinishVM: %s: %s\n", error.name, error.message);
			sd_bus_error_free(&error);
			return 1;
		}
		printf("finished %s\n", name);
	}
	return ret;
}

int main(int argc, char *argv[])
{
	static const struct option options[] = {
		{ "memfds", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "seed", required_argument, NULL, 'S' },
		{ "preserve", no_argument, NULL, 'p' },
		{ "hold", no_argument, NULL, 'H' },
		{ "finish", no_argument, NULL, 'f' },
		{ "count", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	sd_bus *bus = NULL;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (c) {
		case 'n':
			arg_memfds = strtoull(optarg, NULL, 0);
			break;
		case 's':
			arg_size = strtoull(optarg, NULL, 0);
			break;
		case 'S':
			arg_seed = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			arg_preserve = true;
			break;
		case 'H':
			arg_hold = true;
			break;
		case 'f':
			arg_finish = true;
			break;
		case 'c':
			arg_count = strtoull(optarg, NULL, 0);
			break;
		case 'h':
			printf("%s register NAME [--memfds=N] [--size=BYTES] [--seed=S] [--count=K] [--preserve] [--hold]\n"
			       "%s retrieve NAME [--seed=S] [--finish]\n", argv[0], argv[0]);
			return 0;
		default:
			return 2;
		}
	}
	if (argc - optind != 2 || !iommulu_vm_name_is_valid(argv[optind + 1])) {
		fprintf(stderr, "usage: %s register|retrieve NAME [options] (see --help)\n", argv[0]);
		return 2;
	}
	r = sd_bus_open_system(&bus);
	if (r < 0) {
		fprintf(stderr, "system bus: %s\n", strerror(-r));
		return 1;
	}
	if (strcmp(argv[optind], "register") == 0)
		r = do_register(bus, argv[optind + 1]);
	else if (strcmp(argv[optind], "retrieve") == 0)
		r = do_retrieve(bus, argv[optind + 1]);
	else
		r = 2;
	sd_bus_flush_close_unref(bus);
	return r;
}
