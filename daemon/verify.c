/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

bool verify_dma_ownership(int open_r, int bind_r, bool restored_bound, char *detail,
			  size_t size)
{
	int expected = restored_bound ? -EINVAL : -EBUSY;
	size_t n = strnlen(detail, size);
	bool ok;

	if (n >= size)
		return false;
	if (open_r < 0) {
		ok = false;
		snprintf(detail + n, size - n, "DMA ownership not checked (probe open refused: %s); ",
			 strerror(abs(open_r)));
	} else if (bind_r >= 0) {
		ok = false;
		snprintf(detail + n, size - n, "DMA ownership NOT held (a new iommufd bind succeeded); ");
	} else if (bind_r == expected) {
		ok = true;
		snprintf(detail + n, size - n, "DMA ownership held%s (new bind: %s); ",
			 restored_bound ? " by the restored file, bound" : "", strerror(-expected));
	} else {
		ok = false;
		snprintf(detail + n, size - n,
			 "DMA ownership not shown (new bind failed with %s, expected %s); ",
			 strerror(-bind_r), strerror(-expected));
	}
	return ok;
}
