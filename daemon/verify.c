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

bool verify_irqs(bool known, iommulu_pci_irq_type before, unsigned before_set_up, int read_r,
		 const iommulu_pci_irqs *now, char *detail, size_t size)
{
	size_t n = strlen(detail);
	const char *was = iommulu_pci_irq_type_to_string(before);
	const char *is;

	if (read_r < 0) {
		snprintf(detail + n, size - n, "interrupt state unreadable (%s); ", strerror(-read_r));
		return false;
	}
	is = iommulu_pci_irq_type_to_string(now->type);
	if (!now->enabled_known && now->set_up == 0) {
		/* Unprivileged: config space beyond 64 bytes is not visible */
		if (known && before != IOMMULU_PCI_IRQ_NONE)
			snprintf(detail + n, size - n,
				 "%s at preservation, %u vector(s) set up: re-arm them, each fires "
				 "once (whether it is still enabled is not visible without "
				 "CAP_SYS_ADMIN); ", was, before_set_up);
		else
			snprintf(detail + n, size - n, "no MSI/MSI-X vector set up; ");
		return true;
	}
	if (known && before != now->type) {
		snprintf(detail + n, size - n,
			 "interrupts: %s at preservation, %s now: not carried over as they were; ",
			 was, is);
		return false;
	}
	if (now->type == IOMMULU_PCI_IRQ_NONE) {
		snprintf(detail + n, size - n, "no MSI/MSI-X enabled; ");
		return true;
	}
	if (known)
		snprintf(detail + n, size - n,
			 "%s kept enabled%s, %u vector(s) set up before the kexec, %u now: "
			 "re-arm them, each fires once; ",
			 is, now->masked ? " and masked" : "", before_set_up, now->set_up);
	else
		snprintf(detail + n, size - n, "%s enabled%s, %u vector(s) set up now; ", is,
			 now->masked ? " and masked" : "", now->set_up);
	return true;
}
