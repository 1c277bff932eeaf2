/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Built against the *installed* libiommulu through pkg-config: proves the
 * headers, the .pc file and the versioned exports work for a consumer. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <iommulu/iommulu.h>

int main(void)
{
	int fd = -1, r;
	uint64_t size = 0;
	iommulu_fd_kind kind;

	r = iommulu_memfd_create("consumer", 4096, &fd);
	if (r < 0) {
		fprintf(stderr, "iommulu_memfd_create: %d\n", r);
		return 1;
	}
	r = iommulu_memfd_check(fd, &size, NULL, NULL);
	if (r < 0 || size != 4096) {
		fprintf(stderr, "iommulu_memfd_check: %d size %llu\n", r, (unsigned long long)size);
		return 1;
	}
	r = iommulu_fd_classify(fd, &kind);
	if (r < 0 || kind != IOMMULU_FD_MEMFD) {
		fprintf(stderr, "iommulu_fd_classify: %d kind %s\n", r, iommulu_fd_kind_to_string(kind));
		return 1;
	}
	close(fd);
	printf("consumer: libiommulu %s OK\n", iommulu_version());
	return 0;
}
