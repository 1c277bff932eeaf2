/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "fdlimits.h"

int limits_probe(Limits *ret, bool fdstore)
{
	struct rlimit rl;
	const char *e;
	Limits l = { .bus_fds_per_message = LIMITS_BUS_FDS_PER_MESSAGE };

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		/* Like systemd's rlimit_nofile_bump(): we use neither
		 * select() nor anything else that needs fds < 1024. */
		struct rlimit raised = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };

		if (setrlimit(RLIMIT_NOFILE, &raised) >= 0)
			rl.rlim_cur = rl.rlim_max;
	}
	l.nofile = rl.rlim_cur == RLIM_INFINITY ? (unsigned long)-1 : (unsigned long)rl.rlim_cur;

	e = getenv("FDSTORE");
	if (e && *e) {
		char *end;
		unsigned long u;

		errno = 0;
		u = strtoul(e, &end, 10);
		if (errno == 0 && *end == 0 && u <= 0xffffffffu)
			l.fdstore_max = (unsigned)u;
	} else if (fdstore)
		l.fdstore_max = IOMMULU_FDSTORE_MAX;
	*ret = l;
	return 0;
}

bool limits_clamp(Config *c, const Limits *l, char *why, size_t why_size)
{
	unsigned vms = c->max_vms, fds = c->max_fds_per_vm;
	size_t n = 0;

	if (why_size)
		why[0] = 0;
#define WHY(...)                                                                        \
	do {                                                                            \
		if (n < why_size) {                                                     \
			int _k = snprintf(why + n, why_size - n, __VA_ARGS__);          \
			n += _k > 0 ? (size_t)_k : 0;                                   \
		}                                                                       \
	} while (0)

	/* No clamp for the bus's fds per message: a VM with more files
	 * than one message carries registers them in parts
	 * (RegisterVMPart) and retrieves them in parts (RetrieveVMPart). */
	if (l->fdstore_max) {
		/* Every registered VM keeps its files in the store, so the
		 * store must hold MaxVMs VMs of MaxFdsPerVM files each. */
		unsigned long per_vm = (unsigned long)fds + LIMITS_FDSTORE_PER_VM_OVERHEAD;
		unsigned for_vms = l->fdstore_max > LIMITS_FDSTORE_DAEMON_ENTRIES
					   ? l->fdstore_max - LIMITS_FDSTORE_DAEMON_ENTRIES : 1;

		if (for_vms < per_vm) {
			unsigned f = for_vms > LIMITS_FDSTORE_PER_VM_OVERHEAD + 1
					     ? for_vms - LIMITS_FDSTORE_PER_VM_OVERHEAD : 1;

			WHY("MaxFdsPerVM=%u lowered to %u: FileDescriptorStoreMax=%u holds a VM's files plus %u "
			    "entries of its own, and %u of the daemon's. ", fds, f, l->fdstore_max,
			    LIMITS_FDSTORE_PER_VM_OVERHEAD, LIMITS_FDSTORE_DAEMON_ENTRIES);
			fds = f;
			per_vm = (unsigned long)fds + LIMITS_FDSTORE_PER_VM_OVERHEAD;
		}
		if ((unsigned long)vms * per_vm > for_vms) {
			unsigned v = (unsigned)(for_vms / per_vm) ?: 1;

			WHY("MaxVMs=%u lowered to %u: FileDescriptorStoreMax=%u holds the daemon's %u entries "
			    "(the staged kernel) and %u VMs of MaxFdsPerVM=%u files plus %u entries each (owner, "
			    "registration, session, records). ", vms, v, l->fdstore_max,
			    LIMITS_FDSTORE_DAEMON_ENTRIES, v, fds, LIMITS_FDSTORE_PER_VM_OVERHEAD);
			vms = v;
		}
	}
	if (l->nofile != (unsigned long)-1) {
		unsigned long usable = l->nofile > LIMITS_FD_RESERVE ? l->nofile - LIMITS_FD_RESERVE : 0;
		unsigned long per_vm = fds + LIMITS_FDS_PER_VM_OVERHEAD;

		if (usable < per_vm) {
			/* Not even one VM of MaxFdsPerVM files fits: fewer files. */
			unsigned f = usable > LIMITS_FDS_PER_VM_OVERHEAD + 1
					     ? (unsigned)(usable - LIMITS_FDS_PER_VM_OVERHEAD) : 1;

			WHY("MaxFdsPerVM=%u lowered to %u: RLIMIT_NOFILE=%lu leaves %lu fds for VMs. ", fds, f,
			    l->nofile, usable);
			fds = f;
			per_vm = fds + LIMITS_FDS_PER_VM_OVERHEAD;
		}
		if ((unsigned long)vms * per_vm > usable) {
			unsigned v = (unsigned)(usable / per_vm) ?: 1;

			WHY("MaxVMs=%u lowered to %u: RLIMIT_NOFILE=%lu minus %u reserved fds holds %u VMs of "
			    "MaxFdsPerVM=%u files plus %u fds of the daemon's own each. ",
			    vms, v, l->nofile, LIMITS_FD_RESERVE, v, fds, LIMITS_FDS_PER_VM_OVERHEAD);
			vms = v;
		}
	}
#undef WHY
	if (n && n <= why_size && why[n - 1] == ' ')
		why[n - 1] = 0;
	if (vms == c->max_vms && fds == c->max_fds_per_vm)
		return false;
	c->max_vms = vms;
	c->max_fds_per_vm = fds;
	return true;
}

int limits_count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n > 0 ? n - 1 : n;	/* the directory's own fd */
}

bool limits_fds_available(const Limits *l, int open_fds, size_t n_new)
{
	if (l->nofile == (unsigned long)-1 || open_fds < 0)
		return true;
	return (unsigned long)open_fds + n_new + LIMITS_FD_HEADROOM <= l->nofile;
}
