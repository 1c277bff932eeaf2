#!/usr/bin/env bash
# The main job: boot a virtual host (patched Linux 7.3, Debian sid with
# systemd 262, an Intel vIOMMU and an edu DMA device under QEMU), register a
# VM with iommu-lud, live-update the host kernel with kexec, and show that
# the VM's guest RAM and device came through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh vm
exec bash tests/vm/demo.sh "$@"
