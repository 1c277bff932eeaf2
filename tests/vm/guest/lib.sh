# Helpers for scenario stage scripts (bash).  The runner exports:
#   IOMMULU_SCENARIO  scenario name
#   IOMMULU_STAGE     stage number (1 = first boot, 2 = after the first kexec, ...)
#   IOMMULU_MODE      VT-d mode the host chose: legacy | scalable
#   IOMMULU_DIR       the scenario's directory in the guest
#   IOMMULU_TOOLS     where the project's test programs are installed
#   IOMMULU_CORRUPT   1: damage the preserved data on purpose (the scenario
#                     must then fail; run-scenario.sh --corrupt)
# Everything printed goes to the serial console.  Lines starting with
# "IOMMULU-" are the protocol the host parses; see docs/virtual-host.md.

IOMMULU_TOOLS=${IOMMULU_TOOLS:-/usr/libexec/iommu-lud/tests}

# Guest CLOCK_BOOTTIME in seconds (10 ms resolution).
lu_now() { local up _; read -r up _ < /proc/uptime; echo "$up"; }

# Informational line.
info() { echo "[$IOMMULU_SCENARIO/$IOMMULU_STAGE] $*"; }

# A failed check: the host prints these lines on failure.
fail() { echo "IOMMULU-FAIL: $*"; exit 1; }

# The scenario cannot run here (missing device, ...): reported as SKIP.
skip() { echo "IOMMULU-SKIP: $*"; exit 77; }

# A line of the demo's story, shown by the host as it happens.
story() { echo "IOMMULU-STORY: $*"; }

# A figure for the host's summary: metric NAME VALUE UNIT
metric() { echo "IOMMULU-METRIC: $1=$2 $3"; }

# check DESCRIPTION CMD...: run CMD; fail with DESCRIPTION if it fails.
check() {
	local what=$1
	shift
	if "$@"; then
		info "ok: $what"
	else
		fail "not ok: $what (command: $*; rc=$?)"
	fi
}

# PCI functions of QEMU's edu device (1234:11e8), one BDF per line.
edu_bdfs() {
	local d
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] &&
			basename "$d"
	done
	return 0
}

# edu's DMA mask, for iommulu-vmm --dma-mask: scenario.conf's EDU_DMA_MASK
# (run-scenario.sh passes it as iommulu.edu_dma_mask=), else QEMU's 2^28-1.
edu_dma_mask() {
	local w mask=0xfffffff
	for w in $(cat /proc/cmdline); do
		case $w in
		iommulu.edu_dma_mask=*) mask=${w#*=} ;;
		esac
	done
	echo "$mask"
}

# bind_vfio BDF: bind a PCI function to vfio-pci through driver_override;
# prints the vfio cdev path (/dev/vfio/devices/vfioN).
bind_vfio() {
	local bdf=$1 d=/sys/bus/pci/devices/$1 cur n
	echo vfio-pci > "$d/driver_override" || return 1
	if [ -e "$d/driver" ]; then
		cur=$(basename "$(readlink "$d/driver")")
		[ "$cur" = vfio-pci ] || echo "$bdf" > "$d/driver/unbind" || return 1
	fi
	[ -e "$d/driver" ] || echo "$bdf" > /sys/bus/pci/drivers/vfio-pci/bind || return 1
	for n in "$d"/vfio-dev/vfio*; do
		[ -e "$n" ] || continue
		echo "/dev/vfio/devices/$(basename "$n")"
		return 0
	done
	echo "bind_vfio: $bdf has no vfio-dev node" >&2
	return 1
}

# mode_check: the guest's VT-d unit must be in the mode the host asked for
# (ECAP.SMTS, bit 43, is set only with x-scalable-mode=on).
mode_check() {
	local ecap smts want
	ecap=$(cat /sys/class/iommu/dmar0/intel-iommu/ecap 2>/dev/null) ||
		fail "no VT-d unit (/sys/class/iommu/dmar0): intel_iommu not active"
	smts=$(( (0x$ecap >> 43) & 1 ))
	case $IOMMULU_MODE in
	scalable) want=1 ;;
	legacy) want=0 ;;
	*) fail "unknown VT-d mode '$IOMMULU_MODE'" ;;
	esac
	[ "$smts" = "$want" ] || fail "VT-d ecap $ecap: SMTS=$smts, but mode $IOMMULU_MODE was requested"
	info "VT-d unit dmar0 in $IOMMULU_MODE mode (ecap $ecap)"
}
