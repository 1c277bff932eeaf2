/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The limits the daemon cannot exceed without the kernel or the bus
 * failing under it: RLIMIT_NOFILE and the unit's FileDescriptorStoreMax=
 * (MaxVMs and MaxFdsPerVM are clamped to them at startup and on every
 * reload, so that a VM the daemon accepts can always be kept and
 * preserved), and the bus's unix fds per message (no message the daemon
 * sends carries more; more files go in several calls).
 */

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

/* dbus-daemon's max_message_unix_fds on the system bus. */
#define LIMITS_BUS_FDS_PER_MESSAGE 16u
/* fds a VM holds beyond its own files: the VMM's pidfd, the LUO session
 * and the record copy kept for the fd store. */
#define LIMITS_FDS_PER_VM_OVERHEAD 3u
/* fds not given to VMs: stdio, the bus, the event loop and its sources,
 * /dev/liveupdate, plan temporaries, one incoming message with its fds
 * and their duplicates. */
#define LIMITS_FD_RESERVE 64u
/* Free fds that must remain after accepting a call's files. */
#define LIMITS_FD_HEADROOM 32u
/* fd store entries of a VM beyond its own files (each of which is one
 * entry while it is registered): the VMM's pidfd, the registration record
 * and, while a changed one replaces it, its successor; and once preserved
 * the LUO session and the daemon's record of it.  A VM of MaxFdsPerVM
 * files thus takes MaxFdsPerVM + 5 entries at most. */
#define LIMITS_FDSTORE_PER_VM_OVERHEAD 5u
/* fd store entries of the daemon's own, beside its VMs': the kernel staged
 * for kexec (image, initrd and record). */
#define LIMITS_FDSTORE_DAEMON_ENTRIES 3u

typedef struct Limits {
	unsigned long nofile;	/* soft RLIMIT_NOFILE */
	unsigned fdstore_max;	/* FileDescriptorStoreMax=, 0: no fd store */
	unsigned bus_fds_per_message;
} Limits;

/* Raise the soft RLIMIT_NOFILE to the hard one, then read it and the fd
 * store size ($FDSTORE from systemd >= 254, else the unit's compiled-in
 * FileDescriptorStoreMax= when running with an fd store). */
int limits_probe(Limits *ret, bool fdstore);

/* Clamp c to l.  Returns true if anything was lowered, with why a
 * sentence saying what and why (for the journal). */
bool limits_clamp(Config *c, const Limits *l, char *why, size_t why_size);

/* Open fds of this process, or a negative errno. */
int limits_count_open_fds(void);

/* Whether n_new more fds can be taken with open_fds open now, keeping
 * LIMITS_FD_HEADROOM free. */
bool limits_fds_available(const Limits *l, int open_fds, size_t n_new);
