/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Waiting for systemd's fd store without blocking the event loop.
 *
 * A call that changes what the fd store must hold (a registration, a
 * preservation's session, their removal) is answered only once PID 1 has
 * processed every message sent before it: BARRIER=1 with the write end of
 * a pipe, which PID 1 closes when it gets there.  The read end is watched
 * by the event loop, with a timer for the bounded wait
 * (FDSTORE_BARRIER_TIMEOUT_USEC), so that the daemon answers every other
 * call meanwhile, and keeps feeding the watchdog.
 *
 * While a barrier is pending, calls that change state (manager_hold_call())
 * are held and dispatched again, in the order they came, once the last
 * barrier is done: each one then sees the outcome of the ones before it,
 * exactly as when the wait blocked.  Calls that only read are answered at
 * once.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"
#include "util.h"

struct Barrier {
	Barrier *next;
	Manager *manager;
	sd_event_source *io, *timer, *defer;
	barrier_done_t done;
	void *userdata;
};

static void barrier_unlink(Barrier *b)
{
	Manager *m = b->manager;

	for (Barrier **p = &m->barriers; *p; p = &(*p)->next)
		if (*p == b) {
			*p = b->next;
			return;
		}
}

static void barrier_free(Barrier *b)
{
	b->io = sd_event_source_disable_unref(b->io);
	b->timer = sd_event_source_disable_unref(b->timer);
	b->defer = sd_event_source_disable_unref(b->defer);
	free(b);
}

/* Dispatch the held calls again once no barrier is pending; a call that
 * starts a barrier holds the ones after it again, in order. */
static void release_held_calls(Manager *m)
{
	sd_bus_message **held = m->held_calls;
	size_t n = m->n_held_calls;
	int r;

	if (m->barriers || n == 0)
		return;
	m->held_calls = NULL;
	m->n_held_calls = 0;
	for (size_t i = 0; i < n; i++) {
		r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(held[i]), held[i]);
		if (r < 0) {
			log_error_errno(r, "Failed to dispatch a held %s call again: %m",
					strempty(sd_bus_message_get_member(held[i])));
			(void)sd_bus_reply_method_errnof(held[i], r, "iommu-lud could not process the call: %m");
		}
		sd_bus_message_unref(held[i]);
	}
	free(held);
}

static void barrier_complete(Barrier *b, int r)
{
	Manager *m = b->manager;
	barrier_done_t done = b->done;
	void *userdata = b->userdata;

	barrier_unlink(b);
	barrier_free(b);
	done(m, r, userdata);
	release_held_calls(m);
}

static int on_barrier(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	/* PID 1 closed its end: it processed every message sent before. */
	barrier_complete(userdata, 0);
	return 0;
}

static int on_barrier_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	barrier_complete(userdata, -ETIMEDOUT);
	return 0;
}

static int on_no_barrier(sd_event_source *s, void *userdata)
{
	/* No fd store: nothing to wait for. */
	barrier_complete(userdata, 0);
	return 0;
}

static int barrier_start(Barrier *b)
{
	Manager *m = b->manager;
	_cleanup_close_ int rfd = -EBADF, wfd = -EBADF;
	int p[2], r;

	if (!m->fdstore) {
		r = sd_event_add_defer(m->event, &b->defer, on_no_barrier, b);
		return r < 0 ? r : sd_event_source_set_enabled(b->defer, SD_EVENT_ONESHOT);
	}
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	rfd = p[0];
	wfd = p[1];
	r = sd_pid_notify_with_fds(0, false, "BARRIER=1", &wfd, 1);
	if (r <= 0)
		return r < 0 ? r : -ENOTCONN;
	wfd = safe_close(wfd);
	r = sd_event_add_io(m->event, &b->io, rfd, EPOLLIN, on_barrier, b);
	if (r < 0)
		return r;
	r = sd_event_source_set_io_fd_own(b->io, true);
	if (r < 0)
		return r;
	TAKE_FD(rfd);
	return sd_event_add_time_relative(m->event, &b->timer, CLOCK_MONOTONIC, FDSTORE_BARRIER_TIMEOUT_USEC, 0,
					  on_barrier_timeout, b);
}

int manager_barrier_async(Manager *m, barrier_done_t done, void *userdata, Barrier **ret)
{
	Barrier *b, **tail;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->manager = m;
	b->done = done;
	b->userdata = userdata;
	r = barrier_start(b);
	if (r < 0) {
		barrier_free(b);
		return r;
	}
	for (tail = &m->barriers; *tail; tail = &(*tail)->next)
		;
	*tail = b;
	if (ret)
		*ret = b;
	return 0;
}

void barrier_cancel(Barrier *b)
{
	Manager *m;

	if (!b)
		return;
	m = b->manager;
	barrier_unlink(b);
	barrier_free(b);
	release_held_calls(m);
}

bool manager_hold_call(Manager *m, sd_bus_message *msg, sd_bus_error *error, int *ret)
{
	sd_bus_message **n;

	if (!m->barriers)
		return false;
	if (m->n_held_calls >= HELD_CALLS_MAX) {
		log_warning("Refusing a %s call: %zu calls are waiting for systemd's fd store already.",
			    strempty(sd_bus_message_get_member(msg)), m->n_held_calls);
		*ret = sd_bus_error_setf(error, ERROR_BUSY,
					 "iommu-lud is waiting for systemd to confirm its fd store and holds %zu "
					 "calls already; try again", m->n_held_calls);
		return true;
	}
	n = realloc(m->held_calls, (m->n_held_calls + 1) * sizeof(*n));
	if (!n) {
		*ret = -ENOMEM;
		return true;
	}
	m->held_calls = n;
	m->held_calls[m->n_held_calls++] = sd_bus_message_ref(msg);
	*ret = 1;	/* answered when dispatched again */
	return true;
}

void manager_cancel_barriers(Manager *m)
{
	while (m->barriers) {
		Barrier *b = m->barriers;
		barrier_done_t done = b->done;
		void *userdata = b->userdata;

		barrier_unlink(b);
		barrier_free(b);
		done(m, -ECANCELED, userdata);
	}
	for (size_t i = 0; i < m->n_held_calls; i++)
		sd_bus_message_unref(m->held_calls[i]);
	free(m->held_calls);
	m->held_calls = NULL;
	m->n_held_calls = 0;
}
