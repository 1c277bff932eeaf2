/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * A private system bus (dbus-daemon --config-file=...) with the real
 * iommu-lud binary on it, for the integration tests and benchmarks.
 * The daemon's path comes from meson in $IOMMU_LUD_BINARY, the D-Bus
 * policy in $IOMMU_LUD_POLICY.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <systemd/sd-bus.h>

typedef struct LudEnv {
	char dir[64];
	char address[160];
	pid_t bus_pid;
	pid_t daemon_pid;
	pid_t pid1_pid;		/* the fake PID 1 on $NOTIFY_SOCKET, or 0 */
} LudEnv;

/* What the fake PID 1 on the daemon's $NOTIFY_SOCKET does. */
typedef enum LudNotify {
	LUD_NOTIFY_NONE,	/* no $NOTIFY_SOCKET: the daemon runs without an fd store */
	LUD_NOTIFY_ACK,		/* keeps FDSTORE= fds by name, answers BARRIER=1 at once */
	LUD_NOTIFY_NO_BARRIER,	/* like ACK, but never answers BARRIER=1 */
} LudNotify;

typedef struct LudEnvOptions {
	bool with_policy;	/* include conf/org.iommulu.LiveUpdate1.conf */
	const char *config;	/* iommu-lud.conf text, NULL = none */
	unsigned long nofile;	/* RLIMIT_NOFILE (soft and hard) of the daemon, 0 = inherit */
	const char *fdstore;	/* $FDSTORE (FileDescriptorStoreMax=) for the daemon, NULL = unset */
	bool fake_luo;		/* a fake /dev/liveupdate (fake-luo.c, $IOMMU_LUD_FAKE_LUO) */
	unsigned pidfd_delay_ms;	/* with fake_luo: delay the daemon's pidfd_open() */
	/* fds handed to the daemon as $LISTEN_FDS with $LISTEN_FDNAMES, as
	 * systemd passes its fd store back (at most LUD_LISTEN_MAX) */
	const int *listen_fds;
	const char *const *listen_names;
	size_t n_listen;
	LudNotify notify;
	unsigned long long watchdog_usec;	/* $WATCHDOG_USEC of the daemon, 0 = none */
} LudEnvOptions;

#define LUD_LISTEN_MAX 512

int lud_env_start(LudEnv *e, const LudEnvOptions *o);
/* SIGKILL the daemon and reap it; returns 128+9 (or its exit status). */
int lud_env_kill_daemon(LudEnv *e);
/* Reap the daemon if it exits within ms; its status, or -EAGAIN. */
int lud_env_reap_daemon(LudEnv *e, unsigned ms);
/* Start the daemon again (after it died) with o's options and, as systemd
 * does, what the fake PID 1's fd store holds as $LISTEN_FDS/$LISTEN_FDNAMES. */
int lud_env_restart_daemon(LudEnv *e, const LudEnvOptions *o);
/* How many messages to the fake PID 1 so far begin with line (e.g.
 * "WATCHDOG=1"), or -errno. */
int lud_env_notify_count(LudEnv *e, const char *line);
/* Whether the fake PID 1 answers BARRIER=1 from now on. */
void lud_env_answer_barriers(LudEnv *e, bool answer);
/* With fake_luo: the daemon SIGKILLs itself instead of doing its step
 * number steps + 1 (counting from now; steps are messages to $NOTIFY_SOCKET
 * and LUO session ioctls); steps < 0 disarms. */
void lud_env_kill_after(LudEnv *e, int steps);
/* SIGTERM the daemon and reap it; returns its exit status (or 128+sig). */
int lud_env_stop_daemon(LudEnv *e);
void lud_env_stop(LudEnv *e);

/* A new connection to the private bus as the current user. */
int lud_env_connect(LudEnv *e, sd_bus **ret);

/* The fake PID 1's fd store: the FDNAME= of each fd it holds, one per
 * line, in *ret (free() it); the number of fds, or -errno. */
int lud_env_fdstore(LudEnv *e, char **ret);

/* An incoming fake LUO session of VM vm (generation 1), as systemd hands
 * it back after a kexec: n_memfds memfds of 64 KiB and, with bdf, an
 * iommufd and that device, which the fake does not restore.  The session
 * fd, or -errno. */
int lud_incoming_session(const char *vm, size_t n_memfds, const char *bdf);

/* Number of open fds of a process. */
int count_fds(pid_t pid);
/* VmRSS of a process in KiB. */
long rss_kib(pid_t pid);

/* How many lines of the file at path begin with prefix ("" counts all);
 * 0 if it does not exist. */
int lud_count_lines(const char *path, const char *prefix);
