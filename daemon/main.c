/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * iommu-lud: keeps VMs' guest RAM, iommufd and vfio devices across a
 * Linux Live Update (LUO/KHO kexec).  Shaped after systemd's timedated:
 * one sd-event loop, signal sources, watchdog, the bus attached to the
 * loop, READY=1 once the state is loaded and the name is owned.
 */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "util.h"

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	Manager *m = userdata;

	(void)sd_notify(false, "STOPPING=1\nSTATUS=Shutting down.");
	/* Without logind (or with `systemctl start kexec.target`, which
	 * bypasses it) this is the last moment before a kexec.  Preserved
	 * VMs are skipped, so after logind's route this is a no-op. */
	if (shutdown_kexec_pending(m)) {
		log_notice("Stopped for a kexec: preserving all registered VMs.");
		(void)manager_reload_staged_kernel(m);
		manager_unpreserve_unadoptable(m);
		(void)manager_preserve_all(m, "Before kexec");
		/* Registrations are for this boot: systemd would otherwise try
		 * to carry the VMs' files through the kexec in its own session
		 * (guest RAM of VMs that were not preserved, too). */
		for (size_t i = 0; i < m->n_vms; i++)
			vm_forget_registration(m->vms[i]);
		/* Nor the staged kernel: it is what boots. */
		manager_forget_staged_kernel(m);
		(void)fdstore_barrier(m);
	}
	m->exiting = true;
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* Clamp c to the limits, log what was lowered, make it current and
 * announce the properties that changed. */
static void apply_config(Manager *m, Config *c)
{
	char why[768];
	char *changed[4];
	size_t n = 0;

	if (limits_clamp(c, &m->limits, why, sizeof(why)))
		log_notice("%s", why);
	if (c->failure_policy != m->config.failure_policy)
		changed[n++] = (char *)"FailurePolicy";
	if (c->max_vms != m->config.max_vms)
		changed[n++] = (char *)"MaxVMs";
	if (c->max_fds_per_vm != m->config.max_fds_per_vm)
		changed[n++] = (char *)"MaxFdsPerVM";
	changed[n] = NULL;
	m->config = *c;
	if (m->bus)
		manager_emit_changed_strv(m, changed);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	Manager *m = userdata;
	Config c;

	(void)sd_notify(false, "RELOADING=1");
	config_init(&c);
	if (config_load(&c, m->config_path) >= 0) {
		apply_config(m, &c);
		log_info("Reloaded %s.", m->config_path);
		shutdown_recheck_all(m);
	} else
		log_error("Keeping the previous configuration.");
	(void)sd_notify(false, "READY=1");
	return 0;
}

static void help(void)
{
	printf("iommu-lud [--config=PATH]\n\n"
	       "Keeps VMs' guest memory, iommufd and vfio devices across a live update (kexec).\n"
	       "D-Bus service %s on the system bus.\n\n"
	       "  -h --help          Show this help\n"
	       "     --version       Show the version\n"
	       "  -c --config=PATH   Configuration file (default %s/iommu-lud.conf)\n",
	       BUS_NAME, IOMMULU_CONF_DIR);
}

int main(int argc, char *argv[])
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "config", required_argument, NULL, 'c' },
		{}
	};
	const char *config_path = IOMMULU_CONF_DIR "/iommu-lud.conf";
	Manager *m = NULL;
	sigset_t ss;
	int c, r;

	while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		case 'V':
			printf("iommu-lud %s (libiommulu %s)\n", PACKAGE_VERSION, iommulu_version());
			return 0;
		case 'c':
			config_path = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "iommu-lud takes no arguments.\n");
		return 2;
	}

	log_setup();

	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0) {
		r = log_error_errno(errno, "Failed to block signals: %m");
		goto finish;
	}
	/* A VMM that goes away while we reply must not kill us. */
	signal(SIGPIPE, SIG_IGN);

	r = manager_new(&m, config_path);
	if (r < 0) {
		log_oom();
		goto finish;
	}
	{
		Config cfg;

		config_init(&cfg);
		r = config_load(&cfg, config_path);
		if (r < 0)
			goto finish;
		r = limits_probe(&m->limits, m->fdstore);
		if (r < 0) {
			log_error_errno(r, "Failed to read RLIMIT_NOFILE: %m");
			goto finish;
		}
		apply_config(m, &cfg);
	}

	r = sd_event_default(&m->event);
	if (r < 0) {
		log_error_errno(r, "Failed to allocate the event loop: %m");
		goto finish;
	}
	if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_sigterm, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGINT, on_sigterm, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m)) < 0) {
		log_error_errno(r, "Failed to add signal sources: %m");
		goto finish;
	}
	r = sd_event_set_watchdog(m->event, true);
	if (r < 0) {
		log_error_errno(r, "Failed to enable the watchdog: %m");
		goto finish;
	}

	r = manager_connect_bus(m);
	if (r < 0)
		goto finish;
	r = manager_load_state(m);
	if (r < 0) {
		log_error_errno(r, "Failed to load state: %m");
		goto finish;
	}
	r = manager_request_name(m);
	if (r < 0)
		goto finish;
	(void)shutdown_watch_setup(m);

	(void)sd_notifyf(false, "READY=1\nSTATUS=%zu VM(s), generation %llu%s", m->n_vms,
			 (unsigned long long)m->generation, m->live_updated ? ", live-updated" : "");
	log_info("iommu-lud %s ready on %s.", PACKAGE_VERSION, BUS_NAME);

	r = sd_event_loop(m->event);
	if (r < 0)
		log_error_errno(r, "Event loop failed: %m");
	else if (r > 0) {
		/* sd-bus's exit-on-disconnect */
		log_error("Lost the connection to the system bus; exiting so that the service is restarted.");
		r = -ENOTCONN;
	}

finish:
	(void)sd_notify(false, "STOPPING=1");
	manager_free(m);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
