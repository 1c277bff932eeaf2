#!/bin/bash
# Boot the part-2 kexec test in QEMU TCG with one edu device.
#   tests/kernel-part2/run.sh legacy|scalable BZIMAGE INITRD [TIMEOUT]
# Prints the guest console; the verdict is the last "K2TEST RESULT" line
# (one before and one after the kexec).
mode=${1:-scalable} bz=$2 initrd=$3 to=${4:-300}
iommu="intel-iommu,intremap=on"
[ "$mode" = scalable ] && iommu="intel-iommu,intremap=on,x-scalable-mode=on"
exec timeout "$to" qemu-system-x86_64 -machine q35,kernel-irqchip=split -accel tcg -cpu max -smp 1 -m 1G \
	-device "$iommu" -device edu -nographic -no-reboot \
	-kernel "$bz" -initrd "$initrd" \
	-append "liveupdate=on kho=on intel_iommu=on console=ttyS0 panic=-1 loglevel=6"
