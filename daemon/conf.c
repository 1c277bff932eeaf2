/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "util.h"

void config_init(Config *c)
{
	*c = (Config){
		.max_vms = 256,
		.max_fds_per_vm = 64,
		.failure_policy = FAILURE_POLICY_REFUSE,
		.busy_timeout_ms = 2000,
		.recheck_sec = 10,
	};
}

const char *failure_policy_to_string(FailurePolicy p)
{
	switch (p) {
	case FAILURE_POLICY_REFUSE:
		return "refuse";
	case FAILURE_POLICY_CONTINUE:
		return "continue";
	default:
		return NULL;
	}
}

static char *strip(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

static int parse_unsigned(const char *v, unsigned min, unsigned max, unsigned *ret)
{
	unsigned long u;
	char *end;

	if (!isdigit((unsigned char)*v))
		return -EINVAL;
	errno = 0;
	u = strtoul(v, &end, 10);
	if (errno || *end || u < min || u > max)
		return -EINVAL;
	*ret = (unsigned)u;
	return 0;
}

int config_load(Config *c, const char *path)
{
	_cleanup_free_ char *line = NULL;
	bool in_daemon = false;
	size_t sz = 0;
	unsigned lineno = 0;
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		return log_error_errno(errno, "Failed to open %s: %m", path);
	}

	while (getline(&line, &sz, f) >= 0) {
		char *l = strip(line), *eq, *key, *val;

		lineno++;
		if (!*l || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			in_daemon = streq_ptr(l, "[Daemon]");
			if (!in_daemon)
				log_warning("%s:%u: unknown section %s, ignoring.", path, lineno, l);
			continue;
		}
		if (!in_daemon)
			continue;
		eq = strchr(l, '=');
		if (!eq) {
			r = log_error_errno(EINVAL, "%s:%u: expected KEY=VALUE.", path, lineno);
			break;
		}
		*eq = 0;
		key = strip(l);
		val = strip(eq + 1);

		if (streq_ptr(key, "MaxVMs"))
			r = parse_unsigned(val, 1, 4096, &c->max_vms);
		else if (streq_ptr(key, "MaxFdsPerVM"))
			r = parse_unsigned(val, 1, 1024, &c->max_fds_per_vm);
		else if (streq_ptr(key, "BusyTimeoutMSec"))
			r = parse_unsigned(val, 0, 60000, &c->busy_timeout_ms);
		else if (streq_ptr(key, "RecheckSec"))
			r = parse_unsigned(val, 0, 86400, &c->recheck_sec);
		else if (streq_ptr(key, "FailurePolicy")) {
			if (streq_ptr(val, "refuse"))
				c->failure_policy = FAILURE_POLICY_REFUSE;
			else if (streq_ptr(val, "continue"))
				c->failure_policy = FAILURE_POLICY_CONTINUE;
			else
				r = -EINVAL;
		} else
			log_warning("%s:%u: unknown key %s, ignoring.", path, lineno, key);

		if (r < 0) {
			log_error_errno(r, "%s:%u: invalid value for %s: %s", path, lineno, key, val);
			break;
		}
	}

	fclose(f);
	return r;
}
