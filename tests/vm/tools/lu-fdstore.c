/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lu-fdstore: prove the systemd 262 path the daemon relies on -- a LUO
 * session a service created itself, parked in the service's fd store,
 * carried across `systemctl kexec` by PID 1 and handed back afterwards.
 *
 *   lu-fdstore preserve [options]   (stage 1, run as a service)
 *       create a sealed memfd filled with a known pattern, create LUO
 *       session NAME, preserve the memfd under TOKEN, push the session fd
 *       into the unit's fd store (FDSTORE=1, FDNAME=...).
 *   lu-fdstore check [options]      (stage 2, the same service)
 *       find the session among LISTEN_FDNAMES, check that it is a LUO
 *       session with the expected name, retrieve the memfd under TOKEN,
 *       compare size and every byte with the pattern, FINISH the session
 *       and FDSTOREREMOVE it.
 *
 * Options: --session NAME (lu-fdstore-test)  --fdname NAME (lu-session)
 *          --token N (1)  --size BYTES (1 MiB)  --seed N (0x10440100)
 *          --corrupt     (preserve: flip one byte after preserving, so that
 *                         the check must fail -- proves the check can fail)
 *          --mark-restored (check: print the virtual host's "restored" mark
 *                         with CLOCK_BOOTTIME once the memfd is retrieved)
 * Exit status 0 on success; every failure prints "IOMMULU-FAIL: ..." and
 * exits 1.  The unit that runs it needs NotifyAccess=, FileDescriptorStoreMax=
 * and FileDescriptorStorePreserve=yes.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <iommulu/luo.h>
#include <iommulu/memfd.h>

#include "pattern.h"

struct opts {
	const char *session;
	const char *fdname;
	uint64_t token;
	uint64_t size;
	uint64_t seed;
	int corrupt;
	int mark_restored;
};

#define FAIL(...)                                       \
	do {                                            \
		printf("IOMMULU-FAIL: lu-fdstore: " __VA_ARGS__); \
		putchar('\n');                          \
		fflush(stdout);                         \
		return 1;                               \
	} while (0)

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("lu-fdstore: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int do_preserve(const struct opts *o)
{
	int memfd = -1, luo = -1, session = -1, r;
	uint8_t *map;
	char state[128];

	r = iommulu_memfd_create("lu-fdstore", o->size, &memfd);
	if (r < 0)
		FAIL("memfd of %" PRIu64 " bytes: %s", o->size, strerror(-r));
	map = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (map == MAP_FAILED)
		FAIL("mmap memfd: %m");
	pattern_fill(map, o->size, o->seed, 0);
	say("memfd %" PRIu64 " bytes, pattern seed %#" PRIx64 ", fnv %#" PRIx64, o->size, o->seed,
	    pattern_hash(map, o->size));

	luo = iommulu_luo_open(5000);
	if (luo < 0)
		FAIL("open /dev/liveupdate: %s", strerror(-luo));
	r = iommulu_luo_session_create(luo, o->session, &session);
	/* /dev/liveupdate is exclusive and PID 1 needs it at shutdown. */
	close(luo);
	if (r < 0)
		FAIL("create LUO session %s: %s", o->session, strerror(-r));
	r = iommulu_luo_session_preserve_fd(session, memfd, o->token);
	if (r < 0)
		FAIL("preserve memfd under token %" PRIu64 ": %s", o->token, strerror(-r));
	say("session %s: memfd preserved under token %" PRIu64, o->session, o->token);

	if (o->corrupt) {
		/* Still the live page the kernel will carry across the kexec. */
		map[o->size / 2] ^= 0x5a;
		say("corrupted byte %" PRIu64 " after preserving (--corrupt)", o->size / 2);
	}
	munmap(map, o->size);

	snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", o->fdname);
	r = sd_pid_notify_with_fds(0, 0, state, &session, 1);
	if (r < 0)
		FAIL("FDSTORE=1 of the session: %s", strerror(-r));
	if (r == 0)
		FAIL("FDSTORE=1: not running under systemd (no $NOTIFY_SOCKET)");
	/* The message must be processed before we exit and our fds close. */
	r = sd_notify_barrier(0, 5 * 1000000ull);
	if (r < 0)
		FAIL("sd_notify_barrier: %s", strerror(-r));
	say("session fd pushed into the fd store as %s", o->fdname);
	close(session);
	close(memfd);
	return 0;
}

static int do_check(const struct opts *o)
{
	char **names = NULL, name[IOMMULU_LUO_SESSION_NAME_MAX + 1], state[128];
	int n, session = -1, memfd = -1, r;
	struct stat st;
	uint8_t *map;
	size_t bad;

	n = sd_listen_fds_with_names(0, &names);
	if (n < 0)
		FAIL("sd_listen_fds_with_names: %s", strerror(-n));
	for (int i = 0; i < n; i++) {
		say("received fd %d named %s", SD_LISTEN_FDS_START + i, names[i]);
		if (strcmp(names[i], o->fdname) == 0)
			session = SD_LISTEN_FDS_START + i;
	}
	if (session < 0)
		FAIL("systemd handed back %d fd(s), none named %s", n, o->fdname);

	r = iommulu_luo_is_session(session);
	if (r <= 0)
		FAIL("fd %s is not a LUO session (%s)", o->fdname, r < 0 ? strerror(-r) : "wrong kind");
	r = iommulu_luo_session_get_name(session, name, sizeof(name));
	if (r < 0)
		FAIL("GET_NAME: %s", strerror(-r));
	if (strcmp(name, o->session) != 0)
		FAIL("session is named %s, expected %s", name, o->session);

	r = iommulu_luo_session_retrieve_fd(session, o->token, &memfd);
	if (r < 0)
		FAIL("RETRIEVE_FD token %" PRIu64 " from session %s: %s", o->token, name, strerror(-r));
	if (fstat(memfd, &st) < 0)
		FAIL("fstat retrieved memfd: %m");
	if ((uint64_t)st.st_size != o->size)
		FAIL("retrieved memfd is %jd bytes, expected %" PRIu64, (intmax_t)st.st_size, o->size);
	if (o->mark_restored) {
		/* The virtual host's benchmark point: guest RAM is back. */
		struct timespec ts;

		clock_gettime(CLOCK_BOOTTIME, &ts);
		printf("IOMMULU-MARK: restored session=%s t=%.3f\n", name,
		       (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
		fflush(stdout);
	}
	map = mmap(NULL, o->size, PROT_READ, MAP_SHARED, memfd, 0);
	if (map == MAP_FAILED)
		FAIL("mmap retrieved memfd: %m");
	bad = pattern_mismatch(map, o->size, o->seed, 0);
	say("retrieved memfd %" PRIu64 " bytes, fnv %#" PRIx64, o->size, pattern_hash(map, o->size));
	if (bad != o->size)
		FAIL("memfd content differs from the preserved pattern at byte %zu (got %#x)", bad,
		     map[bad]);
	munmap(map, o->size);
	say("memfd content intact (%" PRIu64 " bytes)", o->size);

	r = iommulu_luo_session_finish(session);
	if (r < 0)
		FAIL("FINISH session %s: %s", name, strerror(-r));
	snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", o->fdname);
	r = sd_pid_notify(0, 0, state);
	if (r <= 0)
		FAIL("FDSTOREREMOVE=1: %s", r < 0 ? strerror(-r) : "no $NOTIFY_SOCKET");
	r = sd_notify_barrier(0, 5 * 1000000ull);
	if (r < 0)
		FAIL("sd_notify_barrier: %s", strerror(-r));
	say("session %s finished and removed from the fd store", name);
	close(memfd);
	close(session);
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return 0;
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'K': v <<= 10; end++; break;
	case 'M': v <<= 20; end++; break;
	case 'G': v <<= 30; end++; break;
	}
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "session", required_argument, NULL, 's' },
		{ "fdname", required_argument, NULL, 'f' },
		{ "token", required_argument, NULL, 't' },
		{ "size", required_argument, NULL, 'z' },
		{ "seed", required_argument, NULL, 'e' },
		{ "corrupt", no_argument, NULL, 'c' },
		{ "mark-restored", no_argument, NULL, 'r' },
		{}
	};
	struct opts o = {
		.session = "lu-fdstore-test",
		.fdname = "lu-session",
		.token = 1,
		.size = 1u << 20,
		.seed = 0x10440100,
	};
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': o.session = optarg; break;
		case 'f': o.fdname = optarg; break;
		case 't': if (parse_u64(optarg, &o.token) < 0) goto usage; break;
		case 'z': if (parse_u64(optarg, &o.size) < 0) goto usage; break;
		case 'e': if (parse_u64(optarg, &o.seed) < 0) goto usage; break;
		case 'c': o.corrupt = 1; break;
		case 'r': o.mark_restored = 1; break;
		default: goto usage;
		}
	}
	if (optind + 1 != argc)
		goto usage;
	if (strcmp(argv[optind], "preserve") == 0)
		return do_preserve(&o);
	if (strcmp(argv[optind], "check") == 0)
		return do_check(&o);
usage:
	fprintf(stderr, "usage: lu-fdstore preserve|check [--session NAME] [--fdname NAME] "
			"[--token N] [--size BYTES[K|M|G]] [--seed N] [--corrupt] [--mark-restored]\n");
	return 2;
}
