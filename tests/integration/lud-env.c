/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <iommulu/iommulu.h>

#include "fake-luo.h"
#include "lud-env.h"

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -errno;
}

int lud_env_connect(LudEnv *e, sd_bus **ret)
{
	sd_bus *bus = NULL;
	int r;

	r = sd_bus_new(&bus);
	if (r < 0)
		return r;
	r = sd_bus_set_address(bus, e->address);
	if (r >= 0)
		r = sd_bus_set_bus_client(bus, 1);
	if (r >= 0)
		r = sd_bus_start(bus);
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*ret = bus;
	return 0;
}

/* ---- the fake PID 1 --------------------------------------------------- *
 * Serves the daemon's $NOTIFY_SOCKET like systemd's service manager does
 * for an fd store: FDSTORE=1 keeps the passed fds under their FDNAME=,
 * FDSTOREREMOVE=1 closes those of a name, BARRIER=1 is answered by closing
 * the fd that came with it (or, with LUD_NOTIFY_NO_BARRIER or while
 * <dir>/no-barrier exists, never).  Like systemd it keeps one copy of an
 * open file (kcmp) and honours FileDescriptorStoreMax= ($FDSTORE of the
 * test's options, else PID1_STORE_MAX).  Each message is appended to
 * <dir>/notify.log; <dir>/fdstore lists the names of the fds held, one per
 * line, rewritten after every message.  The test's LUD_TEST_DUMP=1, with a
 * SOCK_SEQPACKET socket, gets every fd held sent back on it, one message
 * (the name) each, then "END": what systemd passes a restarted service. */

#define PID1_STORE_MAX 512
#define PID1_MSG_FDS 64

typedef struct Pid1Fd {
	int fd;
	char name[256];
} Pid1Fd;

static bool msg_has_line(const char *msg, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = msg; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == 0))
			return true;
	return false;
}

static void msg_value(const char *msg, const char *key, char *buf, size_t size)
{
	size_t n = strlen(key);

	buf[0] = 0;
	for (const char *p = msg; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, key, n) == 0) {
			size_t len = strcspn(p + n, "\n");

			snprintf(buf, size, "%.*s", (int)(len < size ? len : size - 1), p + n);
			return;
		}
}

static void pid1_write_store(const char *dir, const Pid1Fd *store, size_t n)
{
	char path[128], tmp[140];
	FILE *f;

	snprintf(path, sizeof(path), "%s/fdstore", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return;
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", store[i].name);
	if (fclose(f) == 0)
		(void)rename(tmp, path);
}

static void pid1_log(const char *dir, const char *msg, size_t n_fds)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/notify.log", dir);
	f = fopen(path, "ae");
	if (!f)
		return;
	for (const char *p = msg; *p; p++)
		fputc(*p == '\n' ? ' ' : *p, f);
	fprintf(f, " (%zu fds)\n", n_fds);
	fclose(f);
}

/* Whether a and b are the same open file description, as systemd's
 * same_fd() asks before it stores an fd. */
static bool same_open_file(int a, int b)
{
	pid_t self = getpid();

	return syscall(SYS_kcmp, self, self, KCMP_FILE, a, b) == 0;
}

static void pid1_dump(int reply, const Pid1Fd *store, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} control = {};
		struct iovec iov = { .iov_base = (void *)store[i].name, .iov_len = strlen(store[i].name) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
				     .msg_controllen = sizeof(control) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &store[i].fd, sizeof(int));
		if (sendmsg(reply, &mh, MSG_NOSIGNAL) < 0)
			break;
	}
	(void)send(reply, "END", 3, MSG_NOSIGNAL);
}

static __attribute__((noreturn)) void fake_pid1(const char *dir, int sock, LudNotify mode, size_t store_max)
{
	static Pid1Fd store[PID1_STORE_MAX];
	size_t n_store = 0;
	char no_barrier[128];

	snprintf(no_barrier, sizeof(no_barrier), "%s/no-barrier", dir);

	pid1_write_store(dir, store, 0);
	for (;;) {
		char buf[4096], name[256];
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int) * PID1_MSG_FDS) + CMSG_SPACE(sizeof(struct ucred))];
		} control;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = &control, .msg_controllen = sizeof(control),
		};
		int fds[PID1_MSG_FDS];
		size_t n_fds = 0;
		ssize_t k;

		k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		buf[k] = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				size_t m = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				for (size_t i = 0; i < m && n_fds < PID1_MSG_FDS; i++)
					memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			}
		msg_value(buf, "FDNAME=", name, sizeof(name));

		if (msg_has_line(buf, "LUD_TEST_DUMP=1")) {
			for (size_t i = 0; i < n_fds; i++) {
				if (i == 0)
					pid1_dump(fds[0], store, n_store);
				close(fds[i]);
			}
			continue;
		}
		if (msg_has_line(buf, "BARRIER=1")) {
			/* Answered by closing the fd; unanswered fds are kept
			 * open until this process ends. */
			if (mode != LUD_NOTIFY_NO_BARRIER && access(no_barrier, F_OK) < 0)
				for (size_t i = 0; i < n_fds; i++)
					close(fds[i]);
		} else if (msg_has_line(buf, "FDSTORE=1")) {
			for (size_t i = 0; i < n_fds; i++) {
				bool dup = false;

				for (size_t j = 0; j < n_store && !dup; j++)
					dup = same_open_file(store[j].fd, fds[i]);
				if (dup || n_store >= store_max) {
					close(fds[i]);	/* as systemd drops a duplicate, or what exceeds the store */
					continue;
				}
				store[n_store].fd = fds[i];
				snprintf(store[n_store].name, sizeof(store[n_store].name), "%s", name[0] ? name : "stored");
				n_store++;
			}
		} else {
			if (msg_has_line(buf, "FDSTOREREMOVE=1")) {
				for (size_t i = 0; i < n_store;) {
					if (strcmp(store[i].name, name) == 0) {
						close(store[i].fd);
						store[i] = store[--n_store];
					} else
						i++;
				}
			}
			for (size_t i = 0; i < n_fds; i++)
				close(fds[i]);
		}
		pid1_log(dir, buf, n_fds);
		pid1_write_store(dir, store, n_store);
	}
}

static int start_fake_pid1(LudEnv *e, LudNotify mode, const char *fdstore, char *ret_socket, size_t size)
{
	size_t store_max = fdstore ? strtoul(fdstore, NULL, 10) : PID1_STORE_MAX;

	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sock;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", e->dir);
	snprintf(ret_socket, size, "%s", sa.sun_path);
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	if (bind(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(sock);
		return r;
	}
	e->pid1_pid = fork();
	if (e->pid1_pid < 0) {
		e->pid1_pid = 0;
		close(sock);
		return -errno;
	}
	if (e->pid1_pid == 0)
		fake_pid1(e->dir, sock, mode, store_max < PID1_STORE_MAX ? store_max : PID1_STORE_MAX);
	close(sock);
	return 0;
}

int lud_env_fdstore(LudEnv *e, char **ret)
{
	char path[128], *text = NULL;
	size_t size = 0;
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/fdstore", e->dir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (getdelim(&text, &size, 0, f) < 0) {
		free(text);
		text = strdup("");
	}
	fclose(f);
	if (!text)
		return -ENOMEM;
	for (const char *p = text; *p; p++)
		n += *p == '\n';
	*ret = text;
	return n;
}

static int start_daemon(LudEnv *e, const LudEnvOptions *o, const int *listen_fds, const char *const *listen_names,
			size_t n_listen);

int lud_env_start(LudEnv *e, const LudEnvOptions *o)
{
	const char *daemon = getenv("IOMMU_LUD_BINARY"), *policy = getenv("IOMMU_LUD_POLICY");
	char path[512], conf[4096], sock[128], notify[128];
	int r;

	memset(e, 0, sizeof(*e));
	if (!daemon || (o->with_policy && !policy)) {
		fprintf(stderr, "# IOMMU_LUD_BINARY / IOMMU_LUD_POLICY not set\n");
		return -EINVAL;
	}
	snprintf(e->dir, sizeof(e->dir), "/tmp/iommu-lud-test.XXXXXX");
	if (!mkdtemp(e->dir))
		return -errno;
	chmod(e->dir, 0755);	/* the non-root caller connects too */
	snprintf(sock, sizeof(sock), "%s/bus", e->dir);
	snprintf(e->address, sizeof(e->address), "unix:path=%s", sock);

	/* Like Debian's system.conf: deny by default, then the service's
	 * own policy file. */
	snprintf(conf, sizeof(conf),
		 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
		 " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		 "<busconfig>\n"
		 " <type>system</type>\n"
		 " <listen>unix:path=%s</listen>\n"
		 " <auth>EXTERNAL</auth>\n"
		 " <policy context=\"default\">\n"
		 "  <allow user=\"*\"/>\n"
		 "  %s\n"
		 "  <allow send_type=\"signal\"/>\n"
		 "  <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
		 "  <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
		 "  <allow receive_type=\"method_call\"/>\n"
		 "  <allow receive_type=\"method_return\"/>\n"
		 "  <allow receive_type=\"error\"/>\n"
		 "  <allow receive_type=\"signal\"/>\n"
		 "  <allow send_destination=\"org.freedesktop.DBus\"/>\n"
		 " </policy>\n"
		 " %s%s%s\n"
		 "</busconfig>\n",
		 sock,
		 o->with_policy ? "<deny own=\"*\"/><deny send_type=\"method_call\"/>"
				: "<allow own=\"*\"/><allow send_type=\"method_call\"/>",
		 o->with_policy ? "<include>" : "", o->with_policy ? policy : "",
		 o->with_policy ? "</include>" : "");
	snprintf(path, sizeof(path), "%s/bus.conf", e->dir);
	if ((r = write_file(path, conf)) < 0)
		return r;

	e->bus_pid = fork();
	if (e->bus_pid < 0)
		return -errno;
	if (e->bus_pid == 0) {
		execlp("dbus-daemon", "dbus-daemon", "--nofork", "--nopidfile", "--config-file", path,
		       (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && access(sock, F_OK) < 0; i++)
		msleep(10);
	if (access(sock, F_OK) < 0)
		return -ETIMEDOUT;

	snprintf(path, sizeof(path), "%s/state", e->dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/iommu-lud.conf", e->dir);
	if ((r = write_file(path, o->config ?: "")) < 0)
		return r;
	if (o->fake_luo) {
		snprintf(path, sizeof(path), "%s/fake-liveupdate", e->dir);
		if ((r = write_file(path, "")) < 0)
			return r;
		if (!getenv("IOMMU_LUD_FAKE_LUO")) {
			fprintf(stderr, "# IOMMU_LUD_FAKE_LUO not set\n");
			return -EINVAL;
		}
	}
	notify[0] = 0;
	if (o->notify != LUD_NOTIFY_NONE && (r = start_fake_pid1(e, o->notify, o->fdstore, notify, sizeof(notify))) < 0)
		return r;

	return start_daemon(e, o, o->listen_fds, o->listen_names, o->n_listen);
}

/* Starts the daemon with o's options, the fds in listen_fds handed over as
 * systemd passes its fd store back; waits until it owns its name. */
static int start_daemon(LudEnv *e, const LudEnvOptions *o, const int *listen_fds, const char *const *listen_names,
			size_t n_listen)
{
	const char *daemon = getenv("IOMMU_LUD_BINARY");
	char notify[128] = "";
	int r = 0;

	if (!daemon)
		return -EINVAL;
	if (e->pid1_pid > 0)
		snprintf(notify, sizeof(notify), "%s/notify", e->dir);
	e->daemon_pid = fork();
	if (e->daemon_pid < 0)
		return -errno;
	if (e->daemon_pid == 0) {
		char cfg[300], state[160], nodev[160];

		snprintf(cfg, sizeof(cfg), "--config=%s/iommu-lud.conf", e->dir);
		snprintf(state, sizeof(state), "%s/state", e->dir);
		snprintf(nodev, sizeof(nodev), "%s/%s", e->dir, o->fake_luo ? "fake-liveupdate" : "no-liveupdate");
		setenv("DBUS_SYSTEM_BUS_ADDRESS", e->address, 1);
		setenv("IOMMU_LUD_STATE_DIR", state, 1);
		/* A host without LUO, deterministically, or the fake one. */
		setenv("IOMMULU_LIVEUPDATE_DEV", nodev, 1);
		if (notify[0])
			setenv("NOTIFY_SOCKET", notify, 1);
		else
			unsetenv("NOTIFY_SOCKET");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDNAMES");
		if (n_listen > 0 && n_listen <= LUD_LISTEN_MAX) {
			static char names[LUD_LISTEN_MAX * 64];
			static int high[LUD_LISTEN_MAX];
			char num[32];

			/* Out of the way first, then to 3, 4, ... */
			names[0] = 0;
			for (size_t i = 0; i < n_listen; i++)
				if ((high[i] = fcntl(listen_fds[i], F_DUPFD_CLOEXEC, 3 + LUD_LISTEN_MAX + 16)) < 0)
					_exit(125);
			for (size_t i = 0; i < n_listen; i++) {
				if (dup2(high[i], 3 + (int)i) < 0)
					_exit(125);
				snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ":" : "",
					 listen_names[i]);
			}
			snprintf(num, sizeof(num), "%zu", n_listen);
			setenv("LISTEN_FDS", num, 1);
			snprintf(num, sizeof(num), "%d", (int)getpid());
			setenv("LISTEN_PID", num, 1);
			setenv("LISTEN_FDNAMES", names, 1);
		}
		unsetenv("JOURNAL_STREAM");
		unsetenv("LD_PRELOAD");
		if (o->fake_luo) {
			char asan[512];

			setenv("LD_PRELOAD", getenv("IOMMU_LUD_FAKE_LUO"), 1);
			if (o->pidfd_delay_ms) {
				char ms[16];

				snprintf(ms, sizeof(ms), "%u", o->pidfd_delay_ms);
				setenv("FAKE_LUO_PIDFD_DELAY_MS", ms, 1);
			}
			/* In the sanitizer build the preloaded fake precedes
			 * the ASan runtime; it intercepts nothing ASan needs. */
			snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", getenv("ASAN_OPTIONS") ?: "",
				 getenv("ASAN_OPTIONS") ? ":" : "");
			setenv("ASAN_OPTIONS", asan, 1);
		}
		if (o->fdstore)
			setenv("FDSTORE", o->fdstore, 1);
		else
			unsetenv("FDSTORE");
		unsetenv("WATCHDOG_PID");
		if (o->watchdog_usec) {
			char usec[32];

			snprintf(usec, sizeof(usec), "%llu", (unsigned long long)o->watchdog_usec);
			setenv("WATCHDOG_USEC", usec, 1);
		} else
			unsetenv("WATCHDOG_USEC");
		if (o->nofile) {
			struct rlimit rl = { .rlim_cur = o->nofile, .rlim_max = o->nofile };

			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				_exit(126);
		}
		if (!getenv("IOMMU_LUD_LOG_LEVEL"))
			setenv("IOMMU_LUD_LOG_LEVEL", "notice", 1);
		execl(daemon, daemon, cfg, (char *)NULL);
		_exit(127);
	}

	/* Ready when the name is owned. */
	{
		sd_bus *bus = NULL;

		/* dbus-daemon's socket file exists from bind() on, a moment
		 * before it listens: retry a refused connection. */
		for (int i = 0; i < 500; i++) {
			r = lud_env_connect(e, &bus);
			if (r != -ECONNREFUSED)
				break;
			msleep(10);
		}
		if (r < 0)
			return r;
		for (int i = 0; i < 1000; i++) {
			r = sd_bus_get_name_creds(bus, "org.iommulu.LiveUpdate1", 0, NULL);
			if (r >= 0)
				break;
			if (waitpid(e->daemon_pid, NULL, WNOHANG) == e->daemon_pid) {
				e->daemon_pid = 0;
				r = -ECHILD;
				break;
			}
			msleep(10);
		}
		sd_bus_flush_close_unref(bus);
	}
	return r < 0 ? r : 0;
}

static int signal_daemon(LudEnv *e, int sig)
{
	int status = 0;

	if (e->daemon_pid <= 0)
		return -ECHILD;
	kill(e->daemon_pid, sig);
	if (waitpid(e->daemon_pid, &status, 0) < 0)
		return -errno;
	e->daemon_pid = 0;
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int lud_env_stop_daemon(LudEnv *e)
{
	return signal_daemon(e, SIGTERM);
}

int lud_env_kill_daemon(LudEnv *e)
{
	return signal_daemon(e, SIGKILL);
}

int lud_env_reap_daemon(LudEnv *e, unsigned ms)
{
	int status = 0;

	for (unsigned waited = 0; e->daemon_pid > 0; waited += 10) {
		pid_t p = waitpid(e->daemon_pid, &status, WNOHANG);

		if (p == e->daemon_pid) {
			e->daemon_pid = 0;
			return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
		}
		if (p < 0 || waited >= ms)
			break;
		msleep(10);
	}
	return -EAGAIN;
}

/* The fake PID 1's fd store, as it would pass it to a restarted service. */
static int pid1_take_store(LudEnv *e, int *fds, char **names, size_t max, size_t *ret_n)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} control = {};
	struct iovec iov = { .iov_base = (char *)"LUD_TEST_DUMP=1", .iov_len = strlen("LUD_TEST_DUMP=1") };
	struct msghdr mh = { .msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = &control, .msg_controllen = sizeof(control) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	int pair[2], sock, r = 0;
	size_t n = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", e->dir);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -errno;
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &pair[1], sizeof(int));
	if (sock < 0 || sendmsg(sock, &mh, 0) < 0)
		r = -errno;
	if (sock >= 0)
		close(sock);
	close(pair[1]);
	while (r >= 0) {
		char buf[300];
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(int))];
		} rc = {};
		struct iovec riov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
		struct msghdr rm = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = &rc, .msg_controllen = sizeof(rc) };
		ssize_t k = recvmsg(pair[0], &rm, MSG_CMSG_CLOEXEC);
		int fd = -1;

		if (k <= 0) {
			r = k < 0 ? -errno : -EPIPE;
			break;
		}
		buf[k] = 0;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&rm); h; h = CMSG_NXTHDR(&rm, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
				memcpy(&fd, CMSG_DATA(h), sizeof(int));
		if (fd < 0 && strcmp(buf, "END") == 0)
			break;
		if (fd < 0 || n >= max) {
			if (fd >= 0)
				close(fd);
			r = -E2BIG;
			break;
		}
		fds[n] = fd;
		names[n++] = strdup(buf);
	}
	close(pair[0]);
	*ret_n = n;
	return r;
}

int lud_env_restart_daemon(LudEnv *e, const LudEnvOptions *o)
{
	static int fds[LUD_LISTEN_MAX];
	static char *names[LUD_LISTEN_MAX];
	size_t n = 0;
	int r;

	if (e->daemon_pid > 0)
		return -EBUSY;
	r = pid1_take_store(e, fds, names, LUD_LISTEN_MAX, &n);
	if (r >= 0)
		r = start_daemon(e, o, fds, (const char *const *)names, n);
	for (size_t i = 0; i < n; i++) {
		close(fds[i]);
		free(names[i]);
	}
	return r;
}

void lud_env_answer_barriers(LudEnv *e, bool answer)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/no-barrier", e->dir);
	if (answer)
		(void)unlink(path);
	else
		(void)write_file(path, "");
}

int lud_env_notify_count(LudEnv *e, const char *line)
{
	char path[128], *buf = NULL;
	size_t size = 0;
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/notify.log", e->dir);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (getline(&buf, &size, f) >= 0)
		n += strncmp(buf, line, strlen(line)) == 0;
	free(buf);
	fclose(f);
	return n;
}

void lud_env_kill_after(LudEnv *e, int steps)
{
	char path[128], n[32];

	snprintf(path, sizeof(path), "%s/fake-liveupdate.kill-after", e->dir);
	if (steps < 0) {
		(void)unlink(path);
		return;
	}
	snprintf(n, sizeof(n), "%d", steps);
	(void)write_file(path, n);
}

void lud_env_stop(LudEnv *e)
{
	char cmd[128];

	if (e->daemon_pid > 0)
		(void)lud_env_stop_daemon(e);
	if (e->pid1_pid > 0) {
		kill(e->pid1_pid, SIGTERM);
		waitpid(e->pid1_pid, NULL, 0);
		e->pid1_pid = 0;
	}
	if (e->bus_pid > 0) {
		kill(e->bus_pid, SIGTERM);
		waitpid(e->bus_pid, NULL, 0);
		e->bus_pid = 0;
	}
	if (e->dir[0] && strncmp(e->dir, "/tmp/iommu-lud-test.", 20) == 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", e->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "# could not remove %s\n", e->dir);
	}
}

int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int lud_incoming_session(const char *vm, size_t n_memfds, const char *bdf)
{
	iommulu_manifest *mf = NULL;
	iommulu_error e = {};
	char name[128], *json = NULL;
	int fd, r;

	r = iommulu_manifest_new(vm, &mf);
	if (r < 0)
		return r;
	mf->generation = 1;
	for (size_t i = 0; r >= 0 && i < n_memfds; i++)
		r = iommulu_manifest_add_memfd(mf, IOMMULU_TOKEN_MEMFD_BASE + i, 1 << 16);
	if (r >= 0 && bdf) {
		r = iommulu_manifest_set_iommufd(mf, IOMMULU_TOKEN_IOMMUFD);
		if (r >= 0)
			r = iommulu_manifest_add_device(mf, bdf, IOMMULU_TOKEN_DEVICE_BASE);
	}
	if (r >= 0)
		r = iommulu_manifest_to_json(mf, &json, &e);
	iommulu_manifest_free(mf);
	if (r < 0) {
		fprintf(stderr, "# manifest of %s: %s\n", vm, e.message);
		return r;
	}
	snprintf(name, sizeof(name), "%siommulu.1.%s", FAKE_LUO_INCOMING_PREFIX, vm);
	fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || write(fd, json, strlen(json)) != (ssize_t)strlen(json))
		r = -EIO;
	free(json);
	if (r < 0 && fd >= 0)
		close(fd);
	return r < 0 ? r : fd;
}

int lud_count_lines(const char *path, const char *prefix)
{
	char buf[1024];
	FILE *f = fopen(path, "re");
	int n = 0;

	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f))
		n += strncmp(buf, prefix, strlen(prefix)) == 0;
	fclose(f);
	return n;
}
