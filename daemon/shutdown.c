/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Automatic preservation before a kexec.
 *
 * Primary route, logind: a "delay" inhibitor on "shutdown" is held all the
 * time.  On PrepareForShutdownWithMetadata(true, {type: "kexec"}) the daemon
 * preserves every registered VM and then closes the delay fd, which lets
 * logind queue the kexec.  Old logind without the metadata signal: plain
 * PrepareForShutdown(true) and /sys/kernel/kexec_loaded = 1 are taken as a
 * kexec (preserving before an ordinary reboot is harmless: the sessions die
 * with the old kernel).  While a registered VM cannot be preserved and the
 * FailurePolicy is "refuse", a "block" inhibitor names it, so
 * `systemctl kexec` refuses up front.
 *
 * Fallback without logind (minimal systems): when systemd stops the daemon
 * (SIGTERM) or a VMM exits while a job for kexec.target is queued, the
 * daemon preserves before it lets go.  Both run before systemd-shutdown,
 * which is what carries the fd store through the kexec.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "manager.h"
#include "util.h"

#define LOGIND "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"
#define LOGIND_IFACE "org.freedesktop.login1.Manager"

static int take_inhibitor(Manager *m, const char *mode, const char *why, int *ret_fd)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	int fd, r;

	r = sd_bus_call_method(m->bus, LOGIND, LOGIND_PATH, LOGIND_IFACE, "Inhibit", &error, &reply,
			       "ssss", "shutdown", "iommu-lud", why, mode);
	if (r < 0)
		return log_warning_errno(r, "Failed to take a %s inhibitor from logind: %s", mode,
					 error.message ?: strerror(-r));
	r = sd_bus_message_read(reply, "h", &fd);
	if (r < 0)
		return r;
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

static bool kexec_loaded(void)
{
	char c = 0;
	int fd = open("/sys/kernel/kexec_loaded", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	if (read(fd, &c, 1) != 1)
		c = 0;
	close(fd);
	return c == '1';
}

bool shutdown_kexec_pending(Manager *m)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
	const char *unit, *type, *state, *jp, *up;
	uint32_t id;
	bool found = false;
	int r;

	if (!m->bus)
		return false;
	r = sd_bus_message_new_method_call(m->bus, &call, "org.freedesktop.systemd1",
					   "/org/freedesktop/systemd1",
					   "org.freedesktop.systemd1.Manager", "ListJobs");
	if (r < 0)
		return false;
	r = sd_bus_call(m->bus, call, 2 * 1000 * 1000, &error, &reply);
	if (r < 0)
		return false;
	r = sd_bus_message_enter_container(reply, 'a', "(usssoo)");
	while (r >= 0 && (r = sd_bus_message_read(reply, "(usssoo)", &id, &unit, &type, &state, &jp, &up)) > 0)
		if (streq_ptr(unit, "kexec.target") || streq_ptr(unit, "systemd-kexec.service"))
			found = true;
	return found;
}

static void preserved_for_kexec(Manager *m, PreserveAllJob *j, const PreserveResult *results, size_t n_results,
				int failed, void *userdata)
{
	/* Not the hook's job any more: the kexec was cancelled meanwhile. */
	bool cancelled = m->hook_job != j;

	if (!cancelled)
		m->hook_job = NULL;
	if (failed == -ECANCELED)
		return;	/* the daemon is exiting */
	for (size_t i = 0; i < m->n_vms; i++)
		if (m->vms[i]->state != VM_PRESERVED)
			m->vms[i]->preserved_by_hook = false;
	manager_log_preserve_results(results, n_results, failed, "Before kexec");
	if (failed > 0)
		log_error("FailurePolicy=%s.", failure_policy_to_string(m->config.failure_policy));
	shutdown_update_block(m);
	/* Let logind go on, unless the kexec was cancelled meanwhile: then
	 * the delay lock is the one for the next shutdown. */
	if (!cancelled)
		m->delay_fd = safe_close(m->delay_fd);
}

/* PreserveAll without blocking the event loop (preserve-all.c); logind
 * waits for the delay lock, which goes when the job is done. */
static void preserve_for_kexec(Manager *m, const char *why)
{
	PreserveAllJob *j = NULL;
	int r;

	log_notice("%s: preserving all registered VMs.", why);
	/* What boots is the kernel StageKernel checked, whatever was loaded
	 * since; what it cannot adopt is not preserved (stage.c). */
	(void)manager_reload_staged_kernel(m);
	manager_unpreserve_unadoptable(m);
	/* What this hook preserves, a cancelled kexec unpreserves again */
	for (size_t i = 0; i < m->n_vms; i++)
		m->vms[i]->preserved_by_hook = m->vms[i]->state != VM_PRESERVED;
	r = manager_preserve_all_async(m, preserved_for_kexec, NULL, &j);
	if (r < 0) {
		log_error_errno(r, "Failed to start preserving the VMs: %m");
		m->delay_fd = safe_close(m->delay_fd);
		return;
	}
	m->hook_job = j;
}

/*
 * The kexec was cancelled: give the running VMs back what this hook took.
 * Their sessions close, which unpreserves everything in them (the kernel
 * makes their IOAS mutable again), so their VMMs can map and unmap as
 * before.  VMs preserved by an explicit PreserveVM stay preserved.
 */
static void unpreserve_after_cancel(Manager *m)
{
	size_t i = 0;

	while (i < m->n_vms) {
		Vm *v = m->vms[i];

		if (!v->preserved_by_hook || v->state != VM_PRESERVED) {
			v->preserved_by_hook = false;
			i++;
			continue;
		}
		log_vm(LOG_NOTICE, LOG_VM(v->name), "Kexec cancelled: unpreserving VM %s", v->name);
		if (vm_unpreserve(v) == 0)
			i++;	/* else removed: m->vms[i] is the next VM now */
	}
	shutdown_update_block(m);
}

static void on_prepare(Manager *m, bool start, const char *type)
{
	if (!start) {
		if (m->hook_job) {
			/* Still preserving: stop; its end keeps the delay lock. */
			preserve_all_job_cancel(m->hook_job);
			m->hook_job = NULL;
		}
		unpreserve_after_cancel(m);
		/* Shutdown cancelled: arm again. */
		if (m->have_logind && m->delay_fd < 0)
			(void)take_inhibitor(m, "delay", "Preserve VMs for a live update before kexec",
					     &m->delay_fd);
		return;
	}
	if (type ? streq_ptr(type, "kexec") : kexec_loaded()) {
		if (!m->hook_job)
			preserve_for_kexec(m, "Kexec announced by logind");	/* lets logind go on when done */
		return;
	}
	log_info("Shutdown (%s) announced; not a kexec, nothing to preserve.", type ?: "unknown");
	m->delay_fd = safe_close(m->delay_fd);	/* let logind go on */
}

static int on_prepare_for_shutdown(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	int start, r;

	r = sd_bus_message_read(msg, "b", &start);
	if (r < 0)
		return 0;
	/* logind >= 255 sends ...WithMetadata right after this one; only
	 * act here when the delay lock is still held and WithMetadata is
	 * not known to come. */
	if (m->have_logind_metadata)
		return 0;
	on_prepare(m, start, NULL);
	return 0;
}

static int on_prepare_for_shutdown_md(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	Manager *m = userdata;
	const char *type = NULL;
	int start, r;

	r = sd_bus_message_read(msg, "b", &start);
	if (r < 0)
		return 0;
	r = sd_bus_message_enter_container(msg, 'a', "{sv}");
	while (r > 0) {
		const char *key;

		r = sd_bus_message_enter_container(msg, 'e', "sv");
		if (r <= 0)
			break;
		r = sd_bus_message_read(msg, "s", &key);
		if (r >= 0 && streq_ptr(key, "type"))
			r = sd_bus_message_read(msg, "v", "s", &type);
		else if (r >= 0)
			r = sd_bus_message_skip(msg, "v");
		if (r >= 0)
			r = sd_bus_message_exit_container(msg);
	}
	on_prepare(m, start, type ?: "unknown");
	return 0;
}

static bool logind_has_metadata(Manager *m)
{
	_cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	const char *xml;

	if (sd_bus_call_method(m->bus, LOGIND, LOGIND_PATH, "org.freedesktop.DBus.Introspectable",
			       "Introspect", &error, &reply, NULL) < 0)
		return false;
	if (sd_bus_message_read(reply, "s", &xml) < 0)
		return false;
	return strstr(xml, "PrepareForShutdownWithMetadata") != NULL;
}

static int on_recheck(sd_event_source *s, uint64_t usec, void *userdata)
{
	Manager *m = userdata;

	shutdown_recheck_all(m);
	if (m->config.recheck_sec > 0)
		(void)sd_event_source_set_time_relative(s, (uint64_t)m->config.recheck_sec * 1000000);
	return 0;
}

int shutdown_watch_setup(Manager *m)
{
	int r;

	if (m->config.recheck_sec > 0) {
		r = sd_event_add_time_relative(m->event, &m->recheck_source, CLOCK_MONOTONIC,
					       (uint64_t)m->config.recheck_sec * 1000000, 1000000,
					       on_recheck, m);
		if (r < 0)
			return r;
		(void)sd_event_source_set_enabled(m->recheck_source, SD_EVENT_ON);
	}

	r = sd_bus_match_signal(m->bus, NULL, LOGIND, LOGIND_PATH, LOGIND_IFACE, "PrepareForShutdown",
				on_prepare_for_shutdown, m);
	if (r >= 0)
		r = sd_bus_match_signal(m->bus, NULL, LOGIND, LOGIND_PATH, LOGIND_IFACE,
					"PrepareForShutdownWithMetadata", on_prepare_for_shutdown_md, m);
	if (r < 0)
		return log_warning_errno(r, "Failed to subscribe to logind: %m");

	r = take_inhibitor(m, "delay", "Preserve VMs for a live update before kexec", &m->delay_fd);
	if (r < 0) {
		log_notice("logind is not available; VMs are preserved when systemd stops iommu-lud "
			   "for a kexec (see docs/daemon.md).");
		m->have_logind = false;
		return 0;
	}
	m->have_logind = true;
	m->have_logind_metadata = logind_has_metadata(m);
	log_info("Holding a logind delay inhibitor for shutdown%s.",
		 m->have_logind_metadata ? " (PrepareForShutdownWithMetadata)" : "");
	shutdown_update_block(m);
	return 0;
}

void shutdown_watch_done(Manager *m)
{
	m->recheck_source = sd_event_source_disable_unref(m->recheck_source);
	m->delay_fd = safe_close(m->delay_fd);
	m->block_fd = safe_close(m->block_fd);
	free(m->block_why);
	m->block_why = NULL;
}

static bool liveupdate_present(void)
{
	const char *p = getenv("IOMMULU_LIVEUPDATE_DEV") ?: "/dev/liveupdate";

	return access(p, F_OK) == 0;
}

/* Why the kernel staged for kexec cannot adopt v, or nothing. */
static void kernel_reason(Manager *m, const Vm *v, char *reason, size_t n)
{
	VmError e = {};
	const char *msg;
	size_t l;

	if (manager_kernel_adopts(m, v, &e))
		return;
	/* e.message starts "VM <name>: "; the caller names the VM. */
	msg = e.message;
	l = strlen("VM ") + strlen(v->name);
	if (startswith(msg, "VM ") && strncmp(msg + 3, v->name, strlen(v->name)) == 0 && msg[l] == ':')
		msg += l + 2;
	l = MIN(strlen(msg), n - 1);
	memcpy(reason, msg, l);
	reason[l] = 0;
}

void shutdown_recheck_all(Manager *m)
{
	for (size_t i = 0; i < m->n_vms; i++)
		m->vms[i]->eligibility_stale = true;
	shutdown_update_block(m);
}

/* Re-evaluate which VMs could not be preserved now, publish it per VM and
 * hold or drop the block inhibitor accordingly. */
void shutdown_update_block(Manager *m)
{
	_cleanup_free_ char *why = NULL;
	bool luo = liveupdate_present();
	size_t len = 0;

	for (size_t i = 0; i < m->n_vms; i++) {
		Vm *v = m->vms[i];
		char reason[IOMMULU_ERROR_MAX + 64] = "";

		if (!v->eligibility_stale)
			goto compose;
		v->eligibility_stale = false;

		switch (v->state) {
		case VM_REGISTERED:
		case VM_FAILED:
			if (v->session_incoming) {
				snprintf(reason, sizeof(reason), "restored from the last live update and %s; "
					 "FinishVM it and register it again", vm_state_to_string(v->state));
				break;
			}
			if (!luo) {
				snprintf(reason, sizeof(reason), "the running kernel has no /dev/liveupdate");
				break;
			}
			if (v->state == VM_FAILED && (v->kernel_refused || v->files_lost)) {
				snprintf(reason, sizeof(reason), "%s", strempty(v->last_error));
				break;
			}
			{
				_cleanup_(vm_fds_done) VmFds fds = {};
				iommulu_plan *plan = NULL;
				iommulu_error e = {};

				if (vm_fds_build(v, v->name, NULL, &fds) < 0)
					snprintf(reason, sizeof(reason), "%s", strerror(ENOMEM));
				else if (iommulu_plan_build(&fds.fds, m->generation, &plan, NULL, &e) < 0)
					snprintf(reason, sizeof(reason), "%s", e.message);
				iommulu_plan_free(plan);
			}
			if (!reason[0])
				kernel_reason(m, v, reason, sizeof(reason));
			break;
		case VM_PRESERVED:
			if (!v->session_incoming)
				kernel_reason(m, v, reason, sizeof(reason));
			break;
		case VM_REGISTERING:
			snprintf(reason, sizeof(reason), "registration not complete (%zu file(s) so far; "
				 "the last RegisterVMPart call is missing)",
				 v->n_files);
			break;
		case VM_RESTORED:
		case VM_VERIFIED:
		case VM_RETRIEVED:
			snprintf(reason, sizeof(reason), "restored from the last live update and %s; "
				 "FinishVM it and register it again", vm_state_to_string(v->state));
			break;
		default:
			break;
		}

		if (!streq_ptr(reason[0] ? reason : NULL, v->ineligible)) {
			free(v->ineligible);
			v->ineligible = reason[0] ? strdup(reason) : NULL;
			vm_changed(v, VM_PROP_INELIGIBLE_REASON);
		}
compose:
		if (v->ineligible) {
			char *n;

			if (asprintf(&n, "%s%sVM %s cannot be preserved: %s", strempty(why),
				     why ? "; " : "", v->name, v->ineligible) >= 0) {
				free(why);
				why = n;
				len = strlen(why);
			}
		}
	}
	(void)len;

	if (m->config.failure_policy != FAILURE_POLICY_REFUSE || !m->have_logind) {
		free(why);
		why = NULL;
	}
	if (streq_ptr(why, m->block_why))
		return;

	m->block_fd = safe_close(m->block_fd);
	free(m->block_why);
	m->block_why = NULL;
	if (why) {
		if (strlen(why) > 500)
			strcpy(why + 496, "...");
		if (take_inhibitor(m, "block", why, &m->block_fd) >= 0) {
			log_warning("Blocking shutdown and kexec: %s", why);
			m->block_why = TAKE_PTR(why);
		}
	} else
		log_info("No VM blocks a kexec any more.");
	manager_emit_changed(m, "ShutdownBlockedBy");
}
