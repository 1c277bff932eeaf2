/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A fake /dev/liveupdate for the integration tests, LD_PRELOADed into the
 * daemon by lud-env.c (never into a test executable).
 *
 * $IOMMULU_LIVEUPDATE_DEV names an ordinary file; ioctl() on an fd open on
 * it, or on a session fd this library handed out, is answered here:
 *   CREATE_SESSION   a new session (a memfd standing in for the session
 *                    file); EEXIST while a session of that name is open
 *   PRESERVE_FD      records the token (EEXIST twice, EBADF for an fd that
 *                    is not open or O_PATH)
 *   RETRIEVE_FD      EINVAL: every session here is outgoing
 *   FINISH           EINVAL (only incoming sessions can be finished)
 *   GET_NAME         the session's name
 * A session counts as open while its fd still refers to the same file
 * (closing it "unpreserves" everything, as in the kernel).  Its memfd is
 * named FAKE_LUO_SESSION_PREFIX "<name>", so that a daemon restarted with
 * it from the fd store finds it an outgoing session too (without the
 * tokens preserved before, which nothing asks for again).
 *
 * Incoming sessions, as after a kexec, are memfds named
 * FAKE_LUO_INCOMING_PREFIX "<session name>" holding a manifest, which a
 * test hands to the daemon through $LISTEN_FDS: RETRIEVE_FD(0) gives a
 * copy of the manifest, RETRIEVE_FD of a memfd token a sealed memfd of
 * the manifest's size, other tokens ENOENT; FINISH succeeds, or fails with
 * EBUSY while a file "$IOMMULU_LIVEUPDATE_DEV.finish-busy" exists (what the
 * kernel answers while a device still uses the preserved translation).
 * readlink()
 * of /proc/self/fd/N says "anon_inode:[luo_session] <name>" for every
 * fake session, as the kernel does for real ones.  Every other
 * ioctl() goes to the next definition (libc, or a sanitizer's interceptor).
 * Not thread-safe; the daemon is single-threaded.
 *
 * For the crash tests, while "$IOMMULU_LIVEUPDATE_DEV.kill-after" holds a
 * number N, each step of the daemon (a message to $NOTIFY_SOCKET, a
 * CREATE_SESSION or PRESERVE_FD) counts it down, and the step after the
 * Nth SIGKILLs the daemon instead of happening (the file is removed then,
 * so the restarted daemon lives).
 *
 * For the race tests it also delays the daemon's pidfd_open() (made with
 * syscall()) by $FAKE_LUO_PIDFD_DELAY_MS, which widens the window between
 * the daemon's credentials query and its pidfd_open() to something a test
 * can hit.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <signal.h>

#include <iommulu/manifest.h>
#include <iommulu/memfd.h>
#include <iommulu/uapi.h>

#include "fake-luo.h"

#define FAKE_SESSIONS_MAX 1024
#define FAKE_TOKENS_MAX 64
#define FAKE_SESSIONS_NAME_MAX (LIVEUPDATE_SESSION_NAME_LENGTH + 32)

typedef struct FakeSession {
	int fd;
	dev_t dev;
	ino_t ino;
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	uint64_t tokens[FAKE_TOKENS_MAX];
	size_t n_tokens;
} FakeSession;

static FakeSession sessions[FAKE_SESSIONS_MAX];

typedef int (*ioctl_fn)(int, unsigned long, ...);

static int real_ioctl(int fd, unsigned long req, void *arg)
{
	static ioctl_fn next;

	if (!next)
		next = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	return next(fd, req, arg);
}

static bool same_file(int fd, dev_t dev, ino_t ino)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static bool is_fake_dev(int fd)
{
	const char *dev = getenv("IOMMULU_LIVEUPDATE_DEV");
	struct stat a, b;

	if (!dev || stat(dev, &a) < 0 || fstat(fd, &b) < 0)
		return false;
	return S_ISREG(a.st_mode) && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static ssize_t real_readlink(const char *path, char *buf, size_t size);

/* What follows prefix in the name of the memfd fd is open on, or NULL. */
static const char *memfd_name_after(int fd, const char *prefix, char *buf, size_t size)
{
	char path[64], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = real_readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return NULL;
	link[n] = 0;
	if (strncmp(link, "/memfd:", 7) != 0 || strncmp(link + 7, prefix, strlen(prefix)) != 0)
		return NULL;
	snprintf(buf, size, "%.*s", (int)strcspn(link + 7 + strlen(prefix), " "), link + 7 + strlen(prefix));
	return buf;
}

/* An outgoing session another process created (the daemon before a
 * restart), handed to this one: adopted by its memfd's name. */
static FakeSession *adopt_session(int fd)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	struct stat st;

	if (!memfd_name_after(fd, FAKE_LUO_SESSION_PREFIX, name, sizeof(name)) || fstat(fd, &st) < 0)
		return NULL;
	for (size_t i = 0; i < FAKE_SESSIONS_MAX; i++) {
		FakeSession *s = &sessions[i];

		if (s->name[0])
			continue;
		*s = (FakeSession){ .fd = fd, .dev = st.st_dev, .ino = st.st_ino };
		snprintf(s->name, sizeof(s->name), "%s", name);
		return s;
	}
	return NULL;
}

/* The live session an fd refers to; forgets sessions whose fd was closed. */
static FakeSession *session_of(int fd)
{
	for (size_t i = 0; i < FAKE_SESSIONS_MAX; i++) {
		FakeSession *s = &sessions[i];

		if (!s->name[0])
			continue;
		if (!same_file(s->fd, s->dev, s->ino)) {
			memset(s, 0, sizeof(*s));
			continue;
		}
		if (s->fd == fd)
			return s;
	}
	return fd > 2 ? adopt_session(fd) : NULL;
}

/* See the top: SIGKILL instead of this step once the count is down. */
static void crash_point(void)
{
	const char *dev = getenv("IOMMULU_LIVEUPDATE_DEV");
	char path[512], buf[32] = "";
	FILE *f;
	long n;

	if (!dev)
		return;
	snprintf(path, sizeof(path), "%s.kill-after", dev);
	f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	n = strtol(buf, NULL, 10);
	if (n <= 0) {
		(void)unlink(path);
		raise(SIGKILL);
	}
	f = fopen(path, "we");
	if (f) {
		fprintf(f, "%ld\n", n - 1);
		fclose(f);
	}
}

static int fail(int err)
{
	errno = err;
	return -1;
}

static int create_session(struct liveupdate_ioctl_create_session *a)
{
	FakeSession *free_slot = NULL;
	struct stat st;
	int fd;

	(void)session_of(-1);	/* drop closed sessions */
	if (a->size < sizeof(*a) || !a->name[0])
		return fail(EINVAL);
	for (size_t i = 0; i < FAKE_SESSIONS_MAX; i++) {
		if (!sessions[i].name[0]) {
			if (!free_slot)
				free_slot = &sessions[i];
			continue;
		}
		if (strncmp(sessions[i].name, (const char *)a->name, sizeof(sessions[i].name)) == 0)
			return fail(EEXIST);
	}
	if (!free_slot)
		return fail(ENOSPC);
	{
		char mname[FAKE_SESSIONS_NAME_MAX];

		snprintf(mname, sizeof(mname), "%s%s", FAKE_LUO_SESSION_PREFIX, (const char *)a->name);
		fd = memfd_create(mname, MFD_CLOEXEC);
	}
	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	*free_slot = (FakeSession){ .fd = fd, .dev = st.st_dev, .ino = st.st_ino };
	memcpy(free_slot->name, a->name, sizeof(free_slot->name) - 1);
	a->fd = fd;
	return 0;
}

static int preserve_fd(FakeSession *s, struct liveupdate_session_preserve_fd *a)
{
	int fl;

	if (a->size < sizeof(*a))
		return fail(EINVAL);
	fl = fcntl(a->fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH))
		return fail(EBADF);
	for (size_t i = 0; i < s->n_tokens; i++)
		if (s->tokens[i] == a->token)
			return fail(EEXIST);
	if (s->n_tokens >= FAKE_TOKENS_MAX)
		return fail(ENOSPC);
	s->tokens[s->n_tokens++] = a->token;
	return 0;
}

typedef ssize_t (*readlink_fn)(const char *, char *, size_t);

static ssize_t real_readlink(const char *path, char *buf, size_t size)
{
	static readlink_fn next;

	if (!next)
		next = (readlink_fn)dlsym(RTLD_NEXT, "readlink");
	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	return next(path, buf, size);
}

/* The session name of an incoming fake session fd, or NULL. */
static const char *incoming_name(int fd, char *buf, size_t size)
{
	return memfd_name_after(fd, FAKE_LUO_INCOMING_PREFIX, buf, size);
}

static int incoming_retrieve(int session, struct liveupdate_session_retrieve_fd *a)
{
	iommulu_manifest *mf = NULL;
	iommulu_error e = {};
	int r, fd = -1;

	if (a->size < sizeof(*a))
		return fail(EINVAL);
	if (a->token == IOMMULU_MANIFEST_TOKEN) {
		/* A copy, so that the reader's offset is its own. */
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", session);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		a->fd = fd;
		return 0;
	}
	r = iommulu_manifest_from_fd(session, &mf, &e);
	if (r < 0)
		return fail(EIO);
	for (size_t i = 0; i < mf->n_memfds; i++)
		if (mf->memfds[i].token == a->token) {
			r = iommulu_memfd_create("fake-luo-restored", mf->memfds[i].size, &fd);
			break;
		}
	iommulu_manifest_free(mf);
	if (fd < 0)
		return fail(r < 0 ? -r : ENOENT);
	a->fd = fd;
	return 0;
}

ssize_t readlink(const char *path, char *buf, size_t size)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH], link[128];
	const char *sname = NULL;
	FakeSession *s;
	int fd;

	if (sscanf(path, "/proc/self/fd/%d", &fd) == 1 && fd > 2) {
		if ((s = session_of(fd)))
			sname = s->name;
		else
			sname = incoming_name(fd, name, sizeof(name));
	}
	if (!sname)
		return real_readlink(path, buf, size);
	snprintf(link, sizeof(link), "anon_inode:[luo_session] %s", sname);
	if (strlen(link) < size)
		size = strlen(link);
	memcpy(buf, link, size);
	return (ssize_t)size;
}

/* The test asks FINISH of incoming sessions to be refused, see above. */
static bool finish_busy(void)
{
	const char *dev = getenv("IOMMULU_LIVEUPDATE_DEV");
	char path[512];

	if (!dev)
		return false;
	snprintf(path, sizeof(path), "%s.finish-busy", dev);
	return access(path, F_OK) == 0;
}

int ioctl(int fd, unsigned long req, ...)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	FakeSession *s;
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (fd > 2 && req == LIVEUPDATE_IOCTL_CREATE_SESSION && is_fake_dev(fd)) {
		crash_point();
		return create_session(arg);
	}
	if (fd > 2 && req == LIVEUPDATE_IOCTL_RETRIEVE_SESSION && is_fake_dev(fd))
		return fail(ENOENT);
	if (fd > 2 && _IOC_TYPE(req) == LIVEUPDATE_IOCTL_TYPE && incoming_name(fd, name, sizeof(name))) {
		switch (req) {
		case LIVEUPDATE_SESSION_RETRIEVE_FD:
			return incoming_retrieve(fd, arg);
		case LIVEUPDATE_SESSION_FINISH:
			return finish_busy() ? fail(EBUSY) : 0;
		case LIVEUPDATE_SESSION_GET_NAME: {
			struct liveupdate_session_get_name *a = arg;

			memset(a->name, 0, sizeof(a->name));
			memcpy(a->name, name, strnlen(name, sizeof(a->name) - 1));
			return 0;
		}
		default:
			return fail(EINVAL);	/* an incoming session takes no new files */
		}
	}
	if (fd <= 2 || !(s = session_of(fd)))
		return real_ioctl(fd, req, arg);

	switch (req) {
	case LIVEUPDATE_SESSION_PRESERVE_FD:
		crash_point();
		return preserve_fd(s, arg);
	case LIVEUPDATE_SESSION_RETRIEVE_FD:
	case LIVEUPDATE_SESSION_FINISH:
		return fail(EINVAL);
	case LIVEUPDATE_SESSION_GET_NAME: {
		struct liveupdate_session_get_name *a = arg;

		memset(a->name, 0, sizeof(a->name));
		memcpy(a->name, s->name, sizeof(a->name) - 1);
		return 0;
	}
	default:
		return fail(ENOTTY);
	}
}

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

/* Messages to $NOTIFY_SOCKET (sd_notify() and friends) are steps. */
ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	static sendmsg_fn next;
	const char *notify = getenv("NOTIFY_SOCKET");

	if (notify && msg && msg->msg_name && msg->msg_namelen > offsetof(struct sockaddr_un, sun_path)) {
		const struct sockaddr_un *sa = msg->msg_name;

		if (sa->sun_family == AF_UNIX && strncmp(sa->sun_path, notify, sizeof(sa->sun_path)) == 0)
			crash_point();
	}
	if (!next)
		next = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	return next(fd, msg, flags);
}

typedef long (*syscall_fn)(long, ...);

long syscall(long number, ...)
{
	static syscall_fn next;
	long a[6];
	va_list ap;

	va_start(ap, number);
	for (size_t i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);

	if (number == SYS_pidfd_open) {
		const char *d = getenv("FAKE_LUO_PIDFD_DELAY_MS");
		long ms = d ? strtol(d, NULL, 10) : 0;

		if (ms > 0) {
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
	}
	if (!next)
		next = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	return next(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
