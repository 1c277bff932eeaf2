# handover-corrupt: one live update per corruption mode, chained.
#
# Stage N (N = 1..4) arms the fault injection knob of patch 0028 with
# MODES[N-1] and preserves, like dma-kexec, a memfd (guest RAM), a marked
# HWPT, the iommufd and the edu device's vfio cdev in one LUO session kept
# in the fd store of iommulu-vmm-test.service (shipped by dma-kexec).  The
# outgoing kernel then hands over IOMMU state broken in that way.
#
# Stage N (N = 2..5), after the kexec, checks what MODES[N-2] must produce
# in the new kernel:
#  - the exact refusal line(s) of that mode in the kernel log;
#  - VT-d kept translation on: part 1's blocking path installed a fresh,
#    empty root table ("keeping translation enabled, DMA blocked"), the
#    preserved tables were not adopted, translation was not switched off;
#  - no Oops, BUG, WARNING, panic or Call Trace in the whole boot;
#  - the VMM stand-in's restore-check: the memfd is retrieved with its
#    pre-kexec content intact (memfd preservation does not depend on the
#    IOMMU state), the device is still bound to vfio-pci, and the edu DMA
#    to the preserved IOVA does NOT land in the memfd;
#  - the blocked DMA raised a DMAR fault for the device;
#  - the session can then be finished (fd store cleaned) without any
#    warning, which also frees the device for the next round.
# Then stage N arms the next mode, until stage 5 only checks.
. /usr/lib/iommulu-vm/lib.sh

# The four modes a run covers, one per live update.  Another list (at most
# four, comma separated) can be given with run-scenario.sh --append
# iommulu.hc_modes=count,index,did,flb-range; stages past its end only
# check the last mode once and then pass through.
HC_MODES=(magic compat page root)
for w in $(cat /proc/cmdline); do
	case $w in
	iommulu.hc_modes=*) IFS=, read -r -a HC_MODES <<< "${w#*=}" ;;
	esac
done
KNOB=/sys/kernel/debug/iommu_liveupdate/inject
UNIT=iommulu-vmm-test.service
DROPIN=/run/systemd/system/$UNIT.d

# Kernel log lines that must never appear.
BAD_RE='Oops|BUG:|WARNING:|Kernel panic|Call Trace|refcount_t:|general protection'

# Refusal lines each mode must produce (extended regexps, all must match).
expected_lines() {
	case $1 in
	magic)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: magic 0x[0-9a-f]+ version 1 size [0-9]+, want 0x31565245534c5549 1 [0-9]+' ;;
	version)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: magic 0x31565245534c5549 version 2 size [0-9]+, want 0x31565245534c5549 1 [0-9]+' ;;
	count)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: counts [0-9]+/65/[0-9]+/[0-9]+ exceed the ABI' ;;
	index)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: device 0 names unit 1 domain 0' ;;
	flb-unaligned)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: bad address 0x[0-9a-f]+' ;;
	flb-range)
		echo 'iommu: liveupdate: refusing preserved IOMMU state: 0x[0-9a-f]+ is not KHO memory' ;;
	did)
		echo 'DMAR: liveupdate: dmar0: preserved device [0-9a-f:.]+ has no valid context \(DID 0\)'
		echo 'DMAR: liveupdate: dmar0: refusing the preserved translation \(-22\): preserved devices lose their DMA mappings'
		echo 'DMAR: liveupdate: dmar0: freed [0-9]+ pages of the refused preserved translation' ;;
	compat)
		echo 'iommu: liveupdate: no IOMMU state in the iommu-core-v1 format was handed over: devices preserved by the previous kernel have no usable IOMMU state' ;;
	page)
		echo 'DMAR: liveupdate: context table at 0x[0-9a-f]+ was not preserved'
		echo 'DMAR: liveupdate: dmar0: refusing the preserved translation \(-22\): preserved devices lose their DMA mappings'
		echo 'DMAR: liveupdate: dmar0: freed 1 pages of the refused preserved translation' ;;
	root)
		echo 'DMAR: liveupdate: dmar0: root table is 0x[0-9a-f]+, preserved one is 0x[0-9a-f]+'
		echo 'DMAR: liveupdate: dmar0: refusing the preserved translation \(-22\): preserved devices lose their DMA mappings' ;;
	*) fail "unknown corruption mode $1" ;;
	esac
	# Every mode: translation stays on with a fresh, empty root table.
	echo 'DMAR: dmar0: live update: keeping translation enabled, DMA blocked until devices are attached'
}

check_no_bad_lines() {
	local bad
	bad=$(dmesg | grep -aE "$BAD_RE" | head -n 5)
	[ -z "$bad" ] || fail "kernel log has: $bad"
}

vmm_env() {
	mkdir -p /run/iommulu-vm
	echo "VMM_ARGS=$*" > /run/iommulu-vm/vmm.env
}

# check_refused MODE: the checks after the kexec (see the top).
check_refused() {
	local mode=$1 re out bdf short n
	info "checking the refusal of the corrupt handover ($mode)"
	while read -r re; do
		dmesg | grep -aqE "$re" || fail "$mode: no kernel log line matching '$re'"
		info "$mode: log: $(dmesg | grep -aoE "$re" | head -n 1)"
	done < <(expected_lines "$mode")
	dmesg | grep -aq 'adopted the preserved root table' &&
		fail "$mode: the corrupt IOMMU state was adopted"
	dmesg | grep -aqE 'Translation was enabled for .* but we are not in kdump mode' &&
		fail "$mode: translation was switched off"
	check_no_bad_lines

	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 1 ] || fail "$mode: after kexec the fd store of $UNIT holds '$n' fds, expected 1"
	local args=(restore-check)
	for bdf in $(edu_bdfs); do args+=(--device "$bdf"); done
	vmm_env "${args[@]}"
	# restore-check is expected to fail (the DMA must not land): keep its
	# IOMMULU-FAIL line off the console, the host would show it as ours.
	mkdir -p "$DROPIN"
	printf '[Service]\nStandardOutput=journal\nStandardError=journal\n' > "$DROPIN/quiet.conf"
	systemctl daemon-reload
	local since
	since=$(date +%s)
	if systemctl start "$UNIT"; then
		fail "$mode: restore-check passed: device DMA reached the preserved memory through refused state"
	fi
	rm -f "$DROPIN/quiet.conf"
	systemctl daemon-reload
	systemctl reset-failed "$UNIT" 2>/dev/null
	out=$(journalctl -b -o cat -u "$UNIT" --since "@$since" 2>/dev/null)
	echo "$out" | sed "s/^IOMMULU-FAIL: /(expected) /; s/^/[vmm] /"
	echo "$out" | grep -q 'pre-kexec guest RAM content intact' ||
		fail "$mode: the preserved memfd was not retrieved intact"
	for bdf in $(edu_bdfs); do
		echo "$out" | grep -qF "$bdf: DMA after kexec did not land in the preserved memfd" ||
			fail "$mode: $bdf: restore-check did not end at the blocked DMA"
		short=${bdf#0000:}
		# 7.3 names the device with its segment ([0000:00:01.0])
		dmesg | grep -aqE "DMAR: \[DMA (Read|Write)[^]]*\] Request device \[($bdf|$short)\]" ||
			fail "$mode: no DMAR fault logged for $bdf"
		info "$mode: $bdf: blocked: $(dmesg | grep -aE "Request device \[($bdf|$short)\]" | tail -n 1)"
		[ "$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")" = vfio-pci ] ||
			fail "$mode: $bdf is not bound to vfio-pci"
	done
	check_no_bad_lines

	# Finish the session: systemd closes the fd store, LUO finishes it.
	check "$mode: clean the fd store (LUO finishes the session)" \
		systemctl clean --what=fdstore "$UNIT"
	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 0 ] || fail "$mode: fd store still holds '$n' fds"
	sleep 1
	check_no_bad_lines
	info "$mode: refused, translation kept on, device blocked, memfd intact, session finished"
}

# arm_and_preserve MODE: set the knob, then preserve as dma-kexec does.
arm_and_preserve() {
	local mode=$1 b cdev n args=(preserve)
	mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
	[ -w "$KNOB" ] || fail "no fault injection knob $KNOB (CONFIG_IOMMU_LIVEUPDATE_FAULT_INJECT)"
	echo "$mode" > "$KNOB" || fail "cannot arm fault injection mode $mode"
	info "fault injection armed: $(cat "$KNOB")"
	for b in $(edu_bdfs); do
		cdev=$(bind_vfio "$b") || fail "binding $b to vfio-pci failed"
		info "$b bound to vfio-pci: $cdev"
		args+=(--device "$b")
	done
	[ ${#args[@]} -gt 1 ] || fail "no edu device in the guest"
	vmm_env "${args[@]}"
	systemctl reset-failed "$UNIT" 2>/dev/null
	check "VMM stand-in: preserve (next handover: $mode)" systemctl start "$UNIT"
	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 1 ] || fail "fd store of $UNIT holds '$n' fds, expected 1"
}

hc_stage() {
	local s=$1
	mode_check
	if [ "$s" -gt 1 ] && [ "$s" -le $(( ${#HC_MODES[@]} + 1 )) ]; then
		check_refused "${HC_MODES[s - 2]}"
		metric "handover_corrupt_${HC_MODES[s - 2]}_refused" 1 ok
	fi
	if [ "$s" -le ${#HC_MODES[@]} ]; then
		arm_and_preserve "${HC_MODES[s - 1]}"
	fi
	exit 0
}
