/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the tests share with fake-luo.c: a memfd named with this prefix
 * and a session name, holding a manifest, is an incoming LUO session. */
#define FAKE_LUO_INCOMING_PREFIX "fake-luo-incoming:"
/* The memfd standing in for an outgoing session is named with this
 * prefix and the session's name. */
#define FAKE_LUO_SESSION_PREFIX "fake-luo-session:"
