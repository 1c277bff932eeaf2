#!/usr/bin/env bash
# The README's main job: boot the virtual host and tell the live-update
# story as it happens.
#
#   tests/vm/demo.sh [--iommu legacy|scalable]
#
# Builds (or reuses) the patched kernel and the guest root image, boots QEMU
# with an Intel vIOMMU and an edu DMA device, and runs scenarios/demo: the
# guest prints "IOMMULU-STORY:" lines, shown here as plain lines.  Every
# line is backed by a check in the guest; the demo fails loudly otherwise.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=scalable
[ "${1:-}" = --iommu ] && mode=${2:?}

say() { printf '%s\n' "$*"; }
say "iommu-lud demo: a VM with a passed-through PCI device (guest RAM, IOMMU page table, device) across a host kernel live update"
say "Building the host kernel (Linux 7.3 + kernel-patches/series) and the Debian sid guest image (cached after the first run)..."
t0=$(date +%s)
kdir=$("$here/build-kernel.sh" --quiet | tail -n1) || { say "kernel build FAILED"; exit 1; }
say "Kernel ready: $(sed -n 's/^kernel_release=//p' "$kdir/info"), $(sed -n 's/^patches=//p' "$kdir/info") patch(es) applied"
rootimg=$("$here/build-rootfs.sh" "$kdir" 2>/dev/null | tail -n1) || { say "guest image build FAILED"; exit 1; }
say "Booting the virtual host under QEMU (TCG, q35, intel-iommu $mode mode, edu DMA device); the kexec boot takes a few minutes under TCG..."
out=$(mktemp)
"$here/run-scenario.sh" demo --iommu "$mode" --kernel-dir "$kdir" --rootfs "$rootimg" > "$out" 2>&1 &
pid=$!
# Relay the story lines as they appear, without the harness's bookkeeping.
shown=0
while kill -0 "$pid" 2>/dev/null; do
	n=$(wc -l < "$out")
	if [ "$n" -gt "$shown" ]; then
		sed -n "$((shown + 1)),${n}p" "$out" | grep -vE '^(==|   )|^phase times|^  [a-z]' | grep -v '^RESULT:' || true
		shown=$n
	fi
	sleep 0.3
done
wait "$pid"
rc=$?
n=$(wc -l < "$out")
[ "$n" -gt "$shown" ] && sed -n "$((shown + 1)),${n}p" "$out" | grep -vE '^(==|   )|^phase times|^  [a-z]' | grep -v '^RESULT:' || true
say ""
if [ "$rc" = 0 ]; then
	say "Demo result: OK ($(( $(date +%s) - t0 )) s). Phase times:"
	grep -E '^  ' "$out" | grep -vE '^   '
else
	say "Demo result: FAILED. What the guest reported:"
	grep -E 'guest>|RESULT:' "$out" | head -n 60
fi
rm -f "$out"
exit "$rc"
