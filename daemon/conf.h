/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

typedef enum FailurePolicy {
	FAILURE_POLICY_REFUSE,		/* block shutdown while a VM cannot be preserved */
	FAILURE_POLICY_CONTINUE,	/* log it and let the kexec go on */
	_FAILURE_POLICY_MAX,
} FailurePolicy;

typedef struct Config {
	unsigned max_vms;
	unsigned max_fds_per_vm;
	FailurePolicy failure_policy;
	unsigned busy_timeout_ms;	/* bounded EBUSY retry on /dev/liveupdate */
	unsigned recheck_sec;		/* eligibility re-check period, 0 = off */
} Config;

void config_init(Config *c);

/* Load an INI file with a [Daemon] section.  A missing file is fine
 * (defaults stay); a malformed value is -EINVAL and logged. */
int config_load(Config *c, const char *path);

const char *failure_policy_to_string(FailurePolicy p);
