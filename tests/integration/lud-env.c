/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

int lud_env_start(LudEnv *e, const LudEnvOptions *o)
{
	const char *daemon = getenv("IOMMU_LUD_BINARY"), *policy = getenv("IOMMU_LUD_POLICY");
	char path[512], conf[4096], sock[128];
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

	e->daemon_pid = fork();
	if (e->daemon_pid < 0)
		return -errno;
	if (e->daemon_pid == 0) {
		char cfg[300], state[160], nodev[160];

		snprintf(cfg, sizeof(cfg), "--config=%s/iommu-lud.conf", e->dir);
		snprintf(state, sizeof(state), "%s/state", e->dir);
		snprintf(nodev, sizeof(nodev), "%s/no-liveupdate", e->dir);
		setenv("DBUS_SYSTEM_BUS_ADDRESS", e->address, 1);
		setenv("IOMMU_LUD_STATE_DIR", state, 1);
		/* A host without LUO, deterministically. */
		setenv("IOMMULU_LIVEUPDATE_DEV", nodev, 1);
		unsetenv("NOTIFY_SOCKET");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_PID");
		unsetenv("JOURNAL_STREAM");
		unsetenv("LD_PRELOAD");
		if (o->fdstore)
			setenv("FDSTORE", o->fdstore, 1);
		else
			unsetenv("FDSTORE");
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

		r = lud_env_connect(e, &bus);
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

int lud_env_stop_daemon(LudEnv *e)
{
	int status = 0;

	if (e->daemon_pid <= 0)
		return -ECHILD;
	kill(e->daemon_pid, SIGTERM);
	if (waitpid(e->daemon_pid, &status, 0) < 0)
		return -errno;
	e->daemon_pid = 0;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void lud_env_stop(LudEnv *e)
{
	char cmd[128];

	if (e->daemon_pid > 0)
		(void)lud_env_stop_daemon(e);
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
