/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Live Update Orchestrator (/dev/liveupdate) sessions.
 *
 * /dev/liveupdate may be held open by one process at a time, and PID 1
 * takes it briefly at boot, when starting LUOSession= units and in
 * systemd-shutdown.  Open it only for as long as a call needs it.
 */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Session names: 1..63 bytes, NUL-terminated in 64. */
#define IOMMULU_LUO_SESSION_NAME_MAX 63

/*
 * Open /dev/liveupdate (O_RDWR|O_CLOEXEC), retrying on EBUSY for up to
 * timeout_ms milliseconds with a short backoff.  Returns the fd, or
 * -ENOENT when the kernel has no LUO (or liveupdate=off), -EBUSY when it
 * stayed busy, or another negative errno.
 * The device path can be overridden with $IOMMULU_LIVEUPDATE_DEV (tests).
 */
int iommulu_luo_open(unsigned timeout_ms);

/* Create a new outgoing session.  -EEXIST if the name is taken. */
int iommulu_luo_session_create(int luo_fd, const char *name, int *ret_session_fd);

/* After a kexec: take an incoming session by name.  -ENOENT if none. */
int iommulu_luo_session_retrieve(int luo_fd, const char *name, int *ret_session_fd);

/* Preserve fd under token.  The kernel's errno is passed through:
 * -EEXIST token in use, -EOPNOTSUPP no handler for this file type,
 * -EINVAL session is an incoming one, ... */
int iommulu_luo_session_preserve_fd(int session_fd, int fd, uint64_t token);

/* Incoming session: get the file preserved under token (O_CLOEXEC). */
int iommulu_luo_session_retrieve_fd(int session_fd, uint64_t token, int *ret_fd);

/* Incoming session: tell the kernel userspace is done with it. */
int iommulu_luo_session_finish(int session_fd);

/* Name of a session; buf must hold IOMMULU_LUO_SESSION_NAME_MAX + 1
 * (-ERANGE if the name does not fit in len). */
int iommulu_luo_session_get_name(int session_fd, char *buf, size_t len);

/* 1 if fd is a LUO session fd, 0 if not, negative errno on error. */
int iommulu_luo_is_session(int fd);

#ifdef __cplusplus
}
#endif
