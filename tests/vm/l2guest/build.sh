#!/usr/bin/env bash
# Build the L2 guest payload on the build host: build.sh OUTPUT.elf
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build.sh OUTPUT.elf}
${CC:-gcc} -m32 -std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -fno-pic -fno-pie \
	-fno-stack-protector -fno-asynchronous-unwind-tables -mno-sse -mno-mmx -nostdlib -static -no-pie \
	-Wl,-T,"$here/l2guest.ld" -Wl,--build-id=none -Wl,--no-warn-rwx-segments -Wl,-m,elf_i386 \
	-o "$out" "$here/l2guest.c" ||
	{ echo "l2guest: building $out failed" >&2; exit 1; }
