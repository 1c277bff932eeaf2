/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Benchmarks (meson benchmark()):
 *  P3: a ListVMs round trip against org.freedesktop.DBus.GetId on the
 *      same private bus (goal: ratio <= 1.3), and, with 256 VMs, against
 *      org.freedesktop.DBus.Peer.Ping on the daemon itself: the same two
 *      hops through the bus, so the ratio is the daemon's own share;
 *  P4: the daemon's RSS with 256 registered memfd-only VMs (goal <= 4 MiB).
 * Figures are printed, not asserted.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include <iommulu/iommulu.h>

#include "lud-env.h"

#define DEST "org.iommulu.LiveUpdate1"
#define MPATH "/org/iommulu/LiveUpdate1"
#define MIFACE "org.iommulu.LiveUpdate1.Manager"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int reg(sd_bus *bus, const char *name, int fd)
{
	return sd_bus_call_method(bus, DEST, MPATH, MIFACE, "RegisterVM", NULL, NULL, "sahahahat", name, 1,
				  fd, 0, 0, 0);
}

typedef enum Call {
	CALL_LISTVMS,
	CALL_GETID,	/* answered by the bus itself */
	CALL_PING,	/* org.freedesktop.DBus.Peer.Ping, answered by the daemon (sd-bus) */
} Call;

static double time_calls(sd_bus *bus, Call call, unsigned n)
{
	double t0 = now();

	for (unsigned i = 0; i < n; i++) {
		sd_bus_message *reply = NULL;
		int r;

		if (call == CALL_LISTVMS)
			r = sd_bus_call_method(bus, DEST, MPATH, MIFACE, "ListVMs", NULL, &reply, NULL);
		else if (call == CALL_PING)
			r = sd_bus_call_method(bus, DEST, MPATH, "org.freedesktop.DBus.Peer", "Ping", NULL, &reply,
					       NULL);
		else
			r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
					       "org.freedesktop.DBus", "GetId", NULL, &reply, NULL);
		sd_bus_message_unref(reply);
		if (r < 0)
			return -1;
	}
	return (now() - t0) / n;
}

/* Warm up, then interleave short rounds of a and b so that load from
 * other processes hits both alike; the median round of each. */
static void time_pair(sd_bus *bus, Call a, Call b, unsigned n, double *ret_a, double *ret_b)
{
	enum { ROUNDS = 41 };
	double ta[ROUNDS], tb[ROUNDS];

	time_calls(bus, a, 500);
	time_calls(bus, b, 500);
	for (int i = 0; i < ROUNDS; i++) {
		ta[i] = time_calls(bus, a, n / ROUNDS);
		tb[i] = time_calls(bus, b, n / ROUNDS);
	}
	qsort(ta, ROUNDS, sizeof(double), cmp_double);
	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	*ret_a = ta[ROUNDS / 2];
	*ret_b = tb[ROUNDS / 2];
}

int main(void)
{
	const unsigned N = 4000;
	LudEnv env;
	sd_bus *bus = NULL;
	double list = 0, getid = 0;
	long rss0, rss1;
	int fd, r, ok = 0;

	r = lud_env_start(&env, &(LudEnvOptions){ .with_policy = true });
	if (r < 0) {
		fprintf(stderr, "cannot start the environment: %s\n", strerror(-r));
		lud_env_stop(&env);
		return 1;
	}
	lud_env_connect(&env, &bus);
	iommulu_memfd_create("bench", 1 << 16, &fd);
	reg(bus, "bench-0", fd);

	time_pair(bus, CALL_LISTVMS, CALL_GETID, N, &list, &getid);
	printf("P3 ListVMs round trip: %.1f us, GetId: %.1f us (medians of 41 rounds), ratio %.2f (goal <= 1.3)\n",
	       list * 1e6, getid * 1e6, list / getid);

	usleep(1000 * 1000);
	rss0 = rss_kib(env.daemon_pid);
	if (getenv("BENCH_SMAPS")) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "grep -E 'Rss|Private|Shared|Anon' /proc/%d/smaps_rollup", (int)env.daemon_pid);
		if (system(cmd) != 0)
			fprintf(stderr, "smaps_rollup unavailable\n");
	}
	for (int i = 1; i < 256; i++) {
		char n[16];
		int m;

		snprintf(n, sizeof(n), "bench-%d", i);
		if (iommulu_memfd_create(n, 1 << 16, &m) < 0)
			continue;
		ok += reg(bus, n, m) >= 0;
		close(m);
	}
	usleep(1000 * 1000);	/* steady state: the daemon trims its heap when idle */
	rss1 = rss_kib(env.daemon_pid);
	if (getenv("BENCH_SMAPS")) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "grep -E 'Rss|Anon' /proc/%d/smaps_rollup; awk '/^[0-9a-f]+-/{m=$0} /^Anonymous:/{if ($2 > 16) print $2, m}' /proc/%d/smaps", (int)env.daemon_pid, (int)env.daemon_pid);
		if (system(cmd) != 0)
			fprintf(stderr, "smaps_rollup unavailable\n");
	}
	printf("P4 daemon RSS: %ld KiB with 1 VM, %ld KiB with %d registered memfd-only VMs (goal <= 4096 KiB)\n",
	       rss0, rss1, ok + 1);
	{
		double ping = 0;

		time_pair(bus, CALL_LISTVMS, CALL_PING, N, &list, &ping);
		printf("P3 with %d VMs: ListVMs round trip %.1f us, Peer.Ping on the daemon %.1f us (medians of 41 "
		       "rounds), ratio %.2f (goal <= 1.3)\n", ok + 1, list * 1e6, ping * 1e6, list / ping);
	}
	printf("daemon fds with %d VMs: %d\n", ok + 1, count_fds(env.daemon_pid));

	sd_bus_flush_close_unref(bus);
	close(fd);
	lud_env_stop(&env);
	return ok == 255 ? 0 : 1;
}
