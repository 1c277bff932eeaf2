/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* memfd recognition shared by memfd.c and fdclass.c (see memfd.c). */

#include <sys/stat.h>

typedef enum memfd_kind {
	MEMFD_KIND_NONE = 0,	/* not a memfd */
	MEMFD_KIND_SHMEM,
	MEMFD_KIND_HUGETLB,
} memfd_kind;

/* 0 and the kind (and the fstat result if ret_st), or -EBADF etc. */
int memfd_classify(int fd, memfd_kind *ret_kind, struct stat *ret_st);
