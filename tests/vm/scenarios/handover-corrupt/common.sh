# handover-corrupt: one live update per corruption mode, chained.
#
# Stage N (N = 1..6) arms the fault injection knob of patch 0028 with
# MODES[N-1] (hotadd: nothing, see check_hotadd) and preserves, like dma-kexec, a memfd (guest RAM), a marked
# HWPT, the iommufd and the edu device's vfio cdev in one LUO session kept
# in the fd store of iommulu-vmm-test.service (shipped by dma-kexec).  The
# outgoing kernel then hands over IOMMU state broken in that way.
#
# Stage N (N = 2..7), after the kexec, checks what MODES[N-2] must produce
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
# Then stage N arms the next mode. The kernels after the compat mode's
# kexec run with iommu=pt: their default domains are identity domains, and
# the preserved device, whose translation was refused, must get the blocking
# domain instead; a DMA to the physical addresses of a fill-patterned buffer
# (iommulu-vmm stray-probe, with edu's DMA mask widened) must fault and
# leave every byte of it as it was.
#
# Stage 7 checks the last mode, then preserves once more, intact, and boots
# the next kernel in a VT-d setup that cannot keep any translation: scalable
# mode switched off (scalable run: the root table type changes) or the
# IOMMU disabled (legacy run: intel_iommu=off). Stage 8 checks that the
# preserved device was stopped (bus mastering cleared, logged) before
# translation went off, and the stray probe again.
. /usr/lib/iommulu-vm/lib.sh

# The modes a run covers, one per live update.  Another list (at most
# six, comma separated) can be given with run-scenario.sh --append
# iommulu.hc_modes=count,index,did,flb-range; after its end comes the
# live update into a kernel without translation (see above), and later
# stages pass through.
# Six per run: scalable mode checks the recorded PASID directory (pasid),
# legacy mode the recorded domain ID (did).  "hotadd" is no corruption: the
# handover is intact, and the next stage removes the preserved device and
# finds it again by a rescan, as a device hot-added at its address (see
# check_hotadd); it runs before compat, whose iommu=pt would give the new
# device an identity domain that the stray probe cannot tell apart.
HC_MODES=(magic hotadd compat page root did)
[ "$IOMMULU_MODE" = scalable ] && HC_MODES=(magic hotadd compat page root pasid)
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
	pasid)
		echo 'DMAR: liveupdate: dmar0: preserved device [0-9a-f:.]+ has its PASID directory at 0x[0-9a-f]+, the handover says 0x[0-9a-f]+'
		echo 'DMAR: liveupdate: dmar0: refusing the preserved translation \(-22\): preserved devices lose their DMA mappings' ;;
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

# check_hotadd: after an intact handover, the preserved device, which kept
# its translation, is removed before anything retrieved it and found again
# by a PCI rescan: from the kernel's point of view a device hot-added at the
# address of a preserved one.  It must not inherit the reservation nor the
# translation: the removal stops it (bus mastering cleared) and tears its
# copied context down, the rescanned device gets its default domain, a DMA
# to the preserved IOVA faults instead of landing in the preserved memfd,
# and a stray DMA to physical addresses leaves a fill buffer intact.  Then
# the session is finished, with the removed device's claim still recorded.
check_hotadd() {
	local bdf d type n
	info "checking a device hot-added at the address of a preserved one"
	dmesg | grep -aq 'adopted the preserved root table' ||
		fail "hotadd: the intact handover was not adopted"
	for bdf in $(edu_bdfs); do
		d=/sys/bus/pci/devices/$bdf
		dmesg | grep -aqE "$bdf: live update: kept its preserved DMA translation" ||
			fail "hotadd: $bdf did not keep its translation"
		check "hotadd: remove $bdf" sh -c "echo 1 > $d/remove"
		[ -e "$d" ] && fail "hotadd: $bdf is still there after its removal"
		dmesg | grep -aqE "$bdf: liveupdate: removed before its live update session finished, bus mastering cleared" ||
			fail "hotadd: no log line saying the removal stopped $bdf"
		dmesg | grep -aqE "$bdf: (DMAR: )?live update: removed: the copied context that translated through the previous kernel's tables is torn down" ||
			fail "hotadd: the removal of $bdf did not tear its copied context down"
		info "hotadd: $(dmesg | grep -aoE "$bdf: (DMAR: )?live update: removed: .*" | head -n 1)"
	done
	check "hotadd: PCI rescan" sh -c 'echo 1 > /sys/bus/pci/rescan'
	for bdf in $(edu_bdfs); do
		d=/sys/bus/pci/devices/$bdf
		n=$(dmesg | grep -acE "$bdf: liveupdate: preserved by the previous kernel, reserved for vfio-pci")
		[ "$n" = 1 ] || fail "hotadd: $bdf was reserved for vfio-pci again after the rescan ($n reservations)"
		n=$(dmesg | grep -acE "$bdf: live update: kept its preserved DMA translation")
		[ "$n" = 1 ] || fail "hotadd: the rescanned $bdf kept the preserved translation again"
		[ "$(cat "$d/driver_override")" = "(null)" ] ||
			fail "hotadd: the rescanned $bdf has driver_override '$(cat "$d/driver_override")'"
		type=$(cat "$d/iommu_group/type")
		case $type in
		DMA|DMA-FQ) ;;
		*) fail "hotadd: the rescanned $bdf has a '$type' domain, expected its DMA default domain" ;;
		esac
		info "hotadd: the rescanned $bdf is not reserved and has its default domain ($type)"
		# Bound to vfio-pci by hand, bus mastering on, as a new owner would:
		# its DMA now reaches the IOMMU
		bind_vfio "$bdf" > /dev/null || fail "hotadd: cannot bind the rescanned $bdf to vfio-pci"
		check "hotadd: enable bus mastering of the rescanned $bdf" \
			setpci -s "$bdf" COMMAND=0x0006:0x0006
	done
	stray_probe $(edu_bdfs)
	stray_faulted hotadd

	restore_dma_blocked hotadd "the rescanned device DMAed through the preserved translation" \
		'0x10[0-9a-f]{5}'
	check_no_bad_lines
	finish_session hotadd
	info "hotadd: not reserved, not translating through the preserved tables, guest RAM intact, session finished"
}

# Extra options of the kernel booted after MODE's kexec.
next_kernel_args() {
	case $1 in
	compat) echo iommu=pt ;;
	esac
}

# What the kernel of the last stage boots with: no translation can be kept.
stop_kernel_args() {
	case $IOMMULU_MODE in
	scalable) echo intel_iommu=sm_off ;;
	*) echo intel_iommu=off ;;
	esac
}

# stray_probe BDF...: DMA from each device to physical addresses of a fill
# buffer must not change a byte of it (iommulu-vmm stray-probe); sets
# STRAY_PAS to the physical addresses it used, one per device.
stray_probe() {
	local out bdf rc args=()
	for bdf in "$@"; do args+=(--device "$bdf"); done
	out=$("$IOMMULU_TOOLS/iommulu-vmm" stray-probe "${args[@]}" --dma-mask "$(edu_dma_mask)" 2>&1)
	rc=$?
	echo "$out" | sed 's/^IOMMULU-FAIL: /(probe failed) /; s/^/[probe] /'
	[ $rc = 0 ] || fail "stray probe: device DMA reached memory this kernel owns (see above)"
	STRAY_PAS=$(echo "$out" | sed -n 's/.* edu DMA to physical \(0x[0-9a-f]*\) .*/\1/p')
}

check_no_bad_lines() {
	local bad
	bad=$(dmesg | grep -aE "$BAD_RE" | head -n 5)
	[ -z "$bad" ] || fail "kernel log has: $bad"
}

# stray_faulted WHAT: each DMA of the last stray probe raised a DMAR fault
# at its address.
stray_faulted() {
	local pa
	for pa in $STRAY_PAS; do
		dmesg | grep -aqE "DMAR: \[DMA Write[^]]*\] Request device \[[0-9a-f:.]+\] fault addr $pa " ||
			fail "$1: no DMAR fault for the stray probe's DMA to $pa"
		info "$1: stray DMA to physical $pa faulted, fill buffer intact"
	done
}

# finish_session WHAT: systemd closes the fd store, LUO finishes the
# session, and nothing in the kernel log complains.
finish_session() {
	local n
	check "$1: clean the fd store (LUO finishes the session)" \
		systemctl clean --what=fdstore "$UNIT"
	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 0 ] || fail "$1: fd store still holds '$n' fds"
	sleep 1
	check_no_bad_lines
}

vmm_env() {
	mkdir -p /run/iommulu-vm
	echo "VMM_ARGS=$*" > /run/iommulu-vm/vmm.env
}

# restore_check_fails WHAT WHY: the VMM stand-in's restore-check must fail
# (WHY says what its success would mean) after retrieving the preserved
# memfd intact; its output goes to the console and into VMM_OUT.
restore_check_fails() {
	local bdf since args=(restore-check)
	for bdf in $(edu_bdfs); do args+=(--device "$bdf"); done
	vmm_env "${args[@]}"
	# Keep its expected IOMMULU-FAIL line off the console, the host would
	# show it as ours.
	mkdir -p "$DROPIN"
	printf '[Service]\nStandardOutput=journal\nStandardError=journal\n' > "$DROPIN/quiet.conf"
	systemctl daemon-reload
	since=$(date +%s)
	systemctl start "$UNIT" && fail "$1: restore-check passed: $2"
	rm -f "$DROPIN/quiet.conf"
	systemctl daemon-reload
	systemctl reset-failed "$UNIT" 2>/dev/null
	VMM_OUT=$(journalctl -b -o cat -u "$UNIT" --since "@$since" 2>/dev/null)
	echo "$VMM_OUT" | sed "s/^IOMMULU-FAIL: /(expected) /; s/^/[vmm] /"
	echo "$VMM_OUT" | grep -q 'pre-kexec guest RAM content intact' ||
		fail "$1: the preserved memfd was not retrieved intact"
}

# restore_dma_blocked WHAT WHY [ADDR_RE]: restore-check retrieves the
# preserved memfd intact and ends at the edu DMA to the preserved IOVA,
# which does not land (WHY says what its success would mean); a DMAR fault
# names each device (at an address matching ADDR_RE, if given).
restore_dma_blocked() {
	local bdf short at=
	[ -n "${3:-}" ] && at=" fault addr $3 "
	restore_check_fails "$1" "$2"
	for bdf in $(edu_bdfs); do
		echo "$VMM_OUT" | grep -qF "$bdf: DMA after kexec did not land in the preserved memfd" ||
			fail "$1: $bdf: restore-check did not end at the blocked DMA"
		short=${bdf#0000:}
		# 7.3 names the device with its segment ([0000:00:01.0])
		dmesg | grep -aqE "DMAR: \[DMA (Read|Write)[^]]*\] Request device \[($bdf|$short)\]$at" ||
			fail "$1: no DMAR fault logged for $bdf${3:+ at the preserved IOVA}"
		info "$1: $bdf: blocked: $(dmesg | grep -aE "Request device \[($bdf|$short)\]" | tail -n 1)"
	done
}

# check_refused MODE: the checks after the kexec (see the top).
check_refused() {
	local mode=$1 re bdf n
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

	# Refused translation: a DMA to physical addresses must not land (the
	# device got the blocking domain, not its default one, which is an
	# identity domain under iommu=pt).
	local type
	stray_probe $(edu_bdfs)
	for bdf in $(edu_bdfs); do
		dmesg | grep -aqE "$bdf: live update: blocked instead of its default domain" ||
			fail "$mode: $bdf was not blocked instead of getting its default domain"
		type=$(cat "/sys/bus/pci/devices/$bdf/iommu_group/type")
		if grep -qw iommu=pt /proc/cmdline; then
			[ "$type" = identity ] ||
				fail "$mode: iommu=pt, but the default domain of $bdf is '$type'"
		fi
		info "$mode: $bdf: blocked instead of its default domain ($type)"
	done
	stray_faulted "$mode"

	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 1 ] || fail "$mode: after kexec the fd store of $UNIT holds '$n' fds, expected 1"
	restore_dma_blocked "$mode" "device DMA reached the preserved memory through refused state"
	for bdf in $(edu_bdfs); do
		[ "$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")" = vfio-pci ] ||
			fail "$mode: $bdf is not bound to vfio-pci"
	done
	check_no_bad_lines

	finish_session "$mode"
	info "$mode: refused, translation kept on, device blocked, memfd intact, session finished"
}

# check_stopped: after the kexec into stop_kernel_args (see the top).
check_stopped() {
	local bdf cmd out
	info "checking that the preserved device was stopped before translation went off ($(stop_kernel_args))"
	if [ "$IOMMULU_MODE" = scalable ]; then
		dmesg | grep -aqE 'DMAR: dmar0: live update: root table type changes \(scalable to legacy\), stopping preserved devices' ||
			fail "no log line about the root table type change"
	fi
	for bdf in $(edu_bdfs); do
		dmesg | grep -aqE "$bdf: liveupdate: bus mastering cleared: dmar0 switches DMA translation off" ||
			fail "$bdf: no log line saying its bus mastering was cleared"
		cmd=$(od -An -tx2 -j4 -N2 "/sys/bus/pci/devices/$bdf/config" | tr -d ' ')
		(( 0x$cmd & 0x4 )) && fail "$bdf: bus mastering is still on (command 0x$cmd)"
		info "$(dmesg | grep -aoE "$bdf: liveupdate: bus mastering cleared: .*" | head -n 1) (command 0x$cmd)"
	done
	stray_probe $(edu_bdfs)
	info "stray DMA did not land: the fill buffer is intact"

	# The VMM finds guest RAM intact but its device stopped.
	restore_check_fails "translation off" "the device was stopped"
	out=$VMM_OUT
	echo "$out" | grep -qE 'bus mastering is off after the kexec|not bound to vfio-pci after kexec' ||
		fail "restore-check did not stop at the stopped device"
	check_no_bad_lines
	info "translation off: the preserved device was stopped first, guest RAM intact, no stray byte"
}

# arm_and_preserve [MODE]: set the knob (if MODE is given), then preserve as
# dma-kexec does.
arm_and_preserve() {
	local mode=${1:-} b cdev n args=(preserve)
	[ "$mode" = hotadd ] && mode=
	if [ -n "$mode" ]; then
		mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
		[ -w "$KNOB" ] || fail "no fault injection knob $KNOB (CONFIG_IOMMU_LIVEUPDATE_FAULT_INJECT)"
		echo "$mode" > "$KNOB" || fail "cannot arm fault injection mode $mode"
		info "fault injection armed: $(cat "$KNOB")"
	fi
	for b in $(edu_bdfs); do
		cdev=$(bind_vfio "$b") || fail "binding $b to vfio-pci failed"
		info "$b bound to vfio-pci: $cdev"
		args+=(--device "$b")
	done
	[ ${#args[@]} -gt 1 ] || fail "no edu device in the guest"
	vmm_env "${args[@]}"
	systemctl reset-failed "$UNIT" 2>/dev/null
	check "VMM stand-in: preserve (next handover: ${mode:-intact})" systemctl start "$UNIT"
	n=$(systemctl show -P NFileDescriptorStore "$UNIT")
	[ "$n" = 1 ] || fail "fd store of $UNIT holds '$n' fds, expected 1"
}

# next_append ARGS: the next kernel boots with ARGS too (iommulu-vm-runner).
next_append() {
	[ -n "$1" ] || return 0
	mkdir -p /run/iommulu-vm
	echo "$1" > /run/iommulu-vm/next-append
	info "the next kernel boots with: $1"
}

hc_stage() {
	local s=$1 n=${#HC_MODES[@]}
	if [ "$s" = $((n + 2)) ]; then
		check_stopped
		metric handover_corrupt_translation_off_stopped 1 ok
		exit 0
	fi
	[ "$s" -gt $((n + 2)) ] && exit 0
	mode_check
	if [ "$s" -gt 1 ] && [ "${HC_MODES[s - 2]}" = hotadd ]; then
		check_hotadd
		metric handover_corrupt_hotadd_not_inherited 1 ok
	elif [ "$s" -gt 1 ]; then
		check_refused "${HC_MODES[s - 2]}"
		metric "handover_corrupt_${HC_MODES[s - 2]}_refused" 1 ok
	fi
	if [ "$s" -le "$n" ]; then
		info "next live update: ${HC_MODES[s - 1]}"
		arm_and_preserve "${HC_MODES[s - 1]}"
		next_append "$(next_kernel_args "${HC_MODES[s - 1]}")"
	else
		arm_and_preserve
		next_append "$(stop_kernel_args)"
	fi
	exit 0
}
