/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * PreserveAll, without blocking the event loop.
 *
 * A job preserves the VMs registered when it starts, one VM per event-loop
 * iteration (a deferred event source), so that bus calls, VMM exits and
 * the watchdog (sd_event_set_watchdog(): WATCHDOG=1 from the loop) are
 * served between two VMs.  Then it asks systemd once whether its fd store
 * holds every session it pushed (BARRIER=1), again without blocking
 * (manager_barrier_async()).  An unanswered barrier rolls back every VM the
 * job preserved, as PreserveVM does for one.  Jobs run one after the other.
 *
 * The VMs are looked up by name at every step: one may be unregistered, or
 * its VMM may exit, while the job runs.
 *
 * What still blocks, per VM and bounded: opening /dev/liveupdate while it
 * is busy, and creating a session whose name an unpreserved one still
 * holds (BusyTimeoutMSec each).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "manager.h"
#include "util.h"

struct PreserveAllJob {
	Manager *manager;
	char **names;		/* the VMs to go through, as registered at the start */
	size_t n_names, next;
	PreserveResult *results;
	char **sessions;	/* per result: the session this job created, or NULL */
	size_t n_results;
	int failed;
	bool cancelled;
	sd_event_source *defer;
	Barrier *barrier;
	preserve_all_done_t done;
	void *userdata;
	PreserveAllJob *queued;	/* the next job, started when this one ends */
};

static void strv_free_n(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
}

static PreserveAllJob *job_free(PreserveAllJob *j)
{
	if (!j)
		return NULL;
	j->defer = sd_event_source_disable_unref(j->defer);
	barrier_cancel(j->barrier);
	for (size_t i = 0; j->results && i < j->n_results; i++)
		free(j->results[i].name);
	free(j->results);
	strv_free_n(j->sessions, j->n_names);
	strv_free_n(j->names, j->n_names);
	free(j);
	return NULL;
}

static int job_new(Manager *m, PreserveAllJob **ret)
{
	PreserveAllJob *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->manager = m;
	j->names = calloc(m->n_vms + 1, sizeof(char *));
	j->results = calloc(m->n_vms + 1, sizeof(PreserveResult));
	j->sessions = calloc(m->n_vms + 1, sizeof(char *));
	if (!j->names || !j->results || !j->sessions) {
		job_free(j);
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->n_vms; i++) {
		j->names[i] = strdup(m->vms[i]->name);
		if (!j->names[i]) {
			job_free(j);
			return -ENOMEM;
		}
		j->n_names++;
	}
	*ret = j;
	return 0;
}

/* The result of VM name: ok (error NULL) or error; session: the one this
 * job created for it. */
static int job_add_result(PreserveAllJob *j, const char *name, const VmError *error, const char *session)
{
	PreserveResult *res = &j->results[j->n_results];

	res->name = strdup(name);
	res->ok = !error;
	if (error)
		res->error = *error;
	j->sessions[j->n_results] = session ? strdup(session) : NULL;
	j->n_results++;
	if (!res->name || (session && !j->sessions[j->n_results - 1]))
		return -ENOMEM;
	return 0;
}

/* Preserve the next VM that needs it: 1 when one was tried, 0 when none is
 * left, -ENOMEM. */
static int job_step(PreserveAllJob *j)
{
	Manager *m = j->manager;

	while (!j->cancelled && j->next < j->n_names) {
		VmError error = {};
		const char *name = j->names[j->next++];
		Vm *v = manager_find_vm(m, name);
		int r;

		if (!v || v->state == VM_FINISHED)
			continue;	/* gone meanwhile, or nothing to preserve */
		/* Never for a kexec into a kernel that cannot adopt it (stage.c);
		 * a VM preserved already stays so (the kexec hook unpreserves it
		 * first, the block inhibitor names it). */
		if ((v->state == VM_PRESERVED || vm_can_preserve(v)) && !manager_kernel_adopts(m, v, &error)) {
			j->failed++;
			if (job_add_result(j, name, &error, NULL) < 0)
				return -ENOMEM;
			if (v->state == VM_PRESERVED)
				continue;
			return 1;
		}
		if (v->state == VM_PRESERVED) {
			r = job_add_result(j, name, NULL, NULL);
			if (r < 0)
				return r;
			continue;
		}
		/* vm_preserve() does not wait for the fd store: the job
		 * sends one BARRIER=1, after the last VM. */
		r = vm_preserve(v, &error);
		if (r >= 0)
			return job_add_result(j, name, NULL, v->session_name) < 0 ? -ENOMEM : 1;
		j->failed++;
		return job_add_result(j, name, &error, NULL) < 0 ? -ENOMEM : 1;
	}
	return 0;
}

/* The barrier after the last VM came back with r: an unconfirmed store
 * rolls back every VM this job preserved (that is still in the session the
 * job created). */
static void job_finish(PreserveAllJob *j, int r)
{
	Manager *m = j->manager;

	if (r >= 0)
		return;
	for (size_t i = 0; i < j->n_results; i++) {
		Vm *v;

		if (!j->sessions[i] || !(v = manager_find_vm(m, j->results[i].name)) || v->state != VM_PRESERVED ||
		    !streq_ptr(v->session_name, j->sessions[i]))
			continue;
		vm_rollback_unconfirmed(v, r, &j->results[i].error);
		j->results[i].ok = false;
		j->failed++;
	}
}

static void job_start(PreserveAllJob *j);

/* Hand the results to the job's owner, then start the next job. */
static void job_complete(PreserveAllJob *j, int r)
{
	Manager *m = j->manager;
	PreserveAllJob *next = j->queued;

	m->preserve_jobs = next;
	j->done(m, j, j->results, r < 0 ? 0 : j->n_results, r < 0 ? r : j->failed, j->userdata);
	job_free(j);
	if (next)
		job_start(next);
}

static void on_job_barrier(Manager *m, int r, void *userdata)
{
	PreserveAllJob *j = userdata;

	j->barrier = NULL;	/* done with it */
	if (r == -ECANCELED)
		return;		/* never: job_free() cancels it first */
	job_finish(j, r);
	job_complete(j, 0);
}

static int on_step(sd_event_source *s, void *userdata)
{
	PreserveAllJob *j = userdata;
	int r;

	r = job_step(j);
	if (r < 0) {
		job_complete(j, r);
		return 0;
	}
	if (r > 0)
		return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);	/* the next VM, next iteration */

	/* Every VM done: the barrier. */
	j->defer = sd_event_source_disable_unref(j->defer);
	if (!j->manager->fdstore || j->n_results == 0) {
		job_complete(j, 0);
		return 0;
	}
	r = manager_barrier_async(j->manager, on_job_barrier, j, &j->barrier);
	if (r < 0) {
		job_finish(j, r);
		job_complete(j, 0);
	}
	return 0;
}

static void job_start(PreserveAllJob *j)
{
	int r;

	r = sd_event_add_defer(j->manager->event, &j->defer, on_step, j);
	if (r >= 0)
		r = sd_event_source_set_enabled(j->defer, SD_EVENT_ONESHOT);
	if (r < 0)
		job_complete(j, r);
}

int manager_preserve_all_async(Manager *m, preserve_all_done_t done, void *userdata, PreserveAllJob **ret)
{
	PreserveAllJob *j, **tail;
	int r;

	r = job_new(m, &j);
	if (r < 0)
		return r;
	j->done = done;
	j->userdata = userdata;
	for (tail = &m->preserve_jobs; *tail; tail = &(*tail)->queued)
		;
	*tail = j;
	if (ret)
		*ret = j;
	if (m->preserve_jobs == j)
		job_start(j);
	return 0;
}

void preserve_all_job_cancel(PreserveAllJob *j)
{
	j->cancelled = true;
}

int manager_preserve_all(Manager *m, const char *context)
{
	PreserveAllJob *j;
	int r;

	r = job_new(m, &j);
	if (r < 0)
		return r;
	while ((r = job_step(j)) > 0)
		;
	if (r >= 0 && j->n_results > 0)
		job_finish(j, fdstore_barrier(m));
	if (r >= 0)
		r = j->failed;
	manager_log_preserve_results(j->results, j->n_results, r, context);
	job_free(j);
	return r;
}

void manager_cancel_preserve_jobs(Manager *m)
{
	while (m->preserve_jobs) {
		PreserveAllJob *j = m->preserve_jobs;

		m->preserve_jobs = j->queued;
		j->done(m, j, NULL, 0, -ECANCELED, j->userdata);
		job_free(j);
	}
}

void manager_log_preserve_results(const PreserveResult *results, size_t n, int failed, const char *context)
{
	if (failed < 0)
		log_error_errno(failed, "%s: PreserveAll failed: %m", context);
	for (size_t i = 0; i < n; i++) {
		const PreserveResult *p = &results[i];

		if (p->ok)
			log_vm(LOG_INFO, LOG_VM(p->name), "%s, VM %s: ok", context, p->name);
		else
			log_vm(LOG_ERR, LOG_VM(p->name), "%s, VM %s: %s%s%s", context, p->name, p->error.message,
			       p->error.errnum ? ": " : "", p->error.errnum ? strerror(p->error.errnum) : "");
	}
	if (failed > 0)
		log_error("%s: %d VM(s) could not be preserved.", context, failed);
}
