/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Who may call the mutating methods: root always, without asking polkit;
 * anyone else if polkit authorizes the method's action
 * (org.iommulu.LiveUpdate1.policy), so that a VMM running as its own user
 * can be allowed to manage its VMs.
 *
 * The usual pattern of systemd's daemons, without blocking the event
 * loop: the first time a call is seen, the daemon asks polkit's
 * CheckAuthorization asynchronously and answers nothing yet; when polkit
 * answers, the call is put back into the bus's read queue
 * (sd_bus_enqueue_for_read()) and dispatched again, and this time the
 * stored verdict decides.  Handlers therefore check access before they
 * read or do anything.  No polkit on the bus (or any error from it):
 * denied.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager.h"
#include "util.h"

#define POLKIT "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_IFACE "org.freedesktop.PolicyKit1.Authority"
/* CheckAuthorization flags */
#define POLKIT_ALLOW_USER_INTERACTION 1u

struct PolkitQuery {
	PolkitQuery *next;
	Manager *manager;
	sd_bus_message *request;
	char *action;
	sd_bus_slot *slot;
	bool done;
	bool allowed;
	char *error;		/* why polkit could not be asked, or NULL */
};

static PolkitQuery *query_free(PolkitQuery *q)
{
	if (!q)
		return NULL;
	sd_bus_slot_unref(q->slot);
	sd_bus_message_unref(q->request);
	free(q->action);
	free(q->error);
	free(q);
	return NULL;
}

static void query_unlink(Manager *m, PolkitQuery *q)
{
	for (PolkitQuery **p = &m->polkit_queries; *p; p = &(*p)->next)
		if (*p == q) {
			*p = q->next;
			return;
		}
}

void polkit_queries_free(Manager *m)
{
	while (m->polkit_queries) {
		PolkitQuery *q = m->polkit_queries;

		m->polkit_queries = q->next;
		query_free(q);
	}
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
	PolkitQuery *q = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(reply);
	int authorized = 0, challenge = 0, r;

	q->slot = sd_bus_slot_unref(q->slot);
	q->done = true;
	if (e) {
		if (asprintf(&q->error, "polkit: %s: %s", e->name, strempty(e->message)) < 0)
			q->error = NULL;
	} else {
		r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
		if (r >= 0)
			r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
		if (r < 0 && asprintf(&q->error, "polkit's answer is malformed: %s", strerror(-r)) < 0)
			q->error = NULL;
		q->allowed = r >= 0 && authorized;
	}
	/* Dispatch the call again: this time the verdict is known. */
	r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
	if (r < 0) {
		log_error_errno(r, "Failed to dispatch a call again after polkit's answer: %m");
		query_unlink(q->manager, q);
		query_free(q);
	}
	return 0;
}

static int ask_polkit(Manager *m, sd_bus_message *msg, const char *action, const char *vm, PolkitQuery **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
	PolkitQuery *q;
	int r;

	r = sd_bus_message_new_method_call(m->bus, &call, POLKIT, POLKIT_PATH, POLKIT_IFACE, "CheckAuthorization");
	if (r >= 0)
		r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s",
					  sd_bus_message_get_sender(msg), action);
	if (r >= 0)
		r = vm ? sd_bus_message_append(call, "a{ss}", 1, "vm", vm) : sd_bus_message_append(call, "a{ss}", 0);
	if (r >= 0)
		r = sd_bus_message_append(call, "us",
					  sd_bus_message_get_allow_interactive_authorization(msg) > 0 ?
					  POLKIT_ALLOW_USER_INTERACTION : 0u, "");
	if (r < 0)
		return r;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->manager = m;
	q->request = sd_bus_message_ref(msg);
	q->action = strdup(action);
	if (!q->action) {
		query_free(q);
		return -ENOMEM;
	}
	/* Interactive authentication may take a person a while. */
	r = sd_bus_call_async(m->bus, &q->slot, call, on_check_reply, q, 0);
	if (r < 0) {
		query_free(q);
		return r;
	}
	q->next = m->polkit_queries;
	m->polkit_queries = q;
	*ret = q;
	return 0;
}

int bus_verify_polkit_async(Manager *m, sd_bus_message *msg, const char *action, const char *vm, const char *what,
			    uid_t uid, sd_bus_error *error)
{
	PolkitQuery *q;
	int r;

	if (uid == 0)
		return 1;	/* root: polkit is not asked */
	for (q = m->polkit_queries; q; q = q->next)
		if (q->request == msg && streq_ptr(q->action, action))
			break;
	if (q && !q->done)
		return 0;	/* still waiting (a second dispatch of the same call) */
	if (q) {
		_cleanup_free_ char *why = TAKE_PTR(q->error);
		bool allowed = q->allowed;

		query_unlink(m, q);
		query_free(q);
		if (allowed)
			return 1;
		log_notice("Denied %s to uid %u: %s", what, (unsigned)uid,
			   why ?: "polkit does not authorize it");
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "Only root may call %s, or a caller polkit authorizes for %s (caller uid %u; %s)",
					 what, action, (unsigned)uid, why ?: "polkit said no");
	}
	r = ask_polkit(m, msg, action, vm, &q);
	if (r < 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "Only root may call %s, or a caller polkit authorizes for %s (caller uid %u; "
					 "cannot ask polkit: %s)", what, action, (unsigned)uid, strerror(-r));
	return 0;
}
