#!/bin/bash
# Build the busybox initramfs for the part-2 kexec test.
#   tests/kernel-part2/mkinitrd.sh BZIMAGE KERNEL_HEADERS_DIR OUTDIR
# BZIMAGE is the kernel to kexec into (same as the one booted); the headers
# dir is a `make headers_install` of the patched kernel. Needs busybox-static.
set -euo pipefail
bz=$1 hdr=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
gcc -static -O2 -Wall -Wextra -Werror -I"$hdr/include" -o "$out/k2test" "$here/k2test.c"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev"
cp /bin/busybox "$root/bin/busybox"
install -m 755 "$here/init" "$root/init"
cp "$out/k2test" "$root/k2test"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out/initrd-post.cpio"
cp "$bz" "$root/bzImage"
cp "$out/initrd-post.cpio" "$root/initrd-post.cpio"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out/initrd-pre.cpio"
