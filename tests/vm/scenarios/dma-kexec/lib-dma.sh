#!/bin/bash
# Shared by the dma-kexec stages after a kexec (sourced after lib.sh).

unit=iommulu-vmm-test.service
devs=()
for b in $(edu_bdfs); do devs+=(--device "$b"); done

# What the kernel holds of the IOMMU handover (debugfs iommu_liveupdate/held):
# "table_pages N", "domain_ids N", "hw_pages N", "flb_pages N".
held() { awk -v k="$1" '$1 == k { print $2 }' /sys/kernel/debug/iommu_liveupdate/held; }
held_line() { tr '\n' ' ' < /sys/kernel/debug/iommu_liveupdate/held; }

# After the kexec: the preserved tables, domain ID and FLB are held.
check_held_after_kexec() {
	mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
	[ -r /sys/kernel/debug/iommu_liveupdate/held ] || fail "no debugfs iommu_liveupdate/held"
	info "held after the kexec: $(held_line)"
	[ "$(held table_pages)" -gt 0 ] || fail "the preserved page tables are not accounted"
	[ "$(held domain_ids)" -gt 0 ] || fail "the preserved domain IDs are not accounted"
	[ "$(held flb_pages)" -gt 0 ] || fail "the FLB object is not accounted"
}

# After the takeover and FINISH nothing of the handover may be left (the
# tables are freed by a work item), so nothing can pile up across chained
# live updates either.
check_held_zero() {
	for _ in $(seq 50); do
		[ "$(held table_pages)$(held domain_ids)$(held hw_pages)$(held flb_pages)" = 0000 ] && break
		sleep 0.1
	done
	info "held after the takeover and FINISH: $(held_line)"
	[ "$(held table_pages)$(held domain_ids)$(held hw_pages)$(held flb_pages)" = 0000 ] ||
		fail "the kernel still holds part of the handover after the takeover and FINISH"
}

# The takeover gave the HWPT the page table the device kept: the kernel
# took the preserved domain over, table by table through KHO, and the IOAS
# checked every page in it, instead of mapping guest RAM a second time.  In
# legacy mode the device's context then names the domain ID it had.
check_restored() {
	local line did
	line=$(dmesg | grep -m1 -E "preserved domain [0-9]+ restored over its [0-9]+ page-table pages") ||
		fail "the kernel did not restore the preserved domain at the takeover: $(dmesg | grep -m1 'gets a new page table' | sed 's/^.*] //')"
	info "takeover: ${line#*] }"
	did=${line##*domain ID }
	if dmesg | grep -q "copied context switched in place to domain ID"; then
		dmesg | grep -q "copied context switched in place to domain ID $did$" ||
			fail "the device's context was switched to another domain ID than the restored domain's $did"
	fi
	! dmesg | grep -q "kept page table maps" ||
		fail "the kernel found the kept page table differ from the IOAS: $(dmesg | grep -m1 'kept page table maps')"
}

# The takeover could not keep the page table the device kept (a hole was
# punched into guest RAM after its retrieve): the kernel said why and gave
# the HWPT a new page table over the file's pages (-ESTALE).
check_new_table() {
	local line
	line=$(dmesg | grep -m1 "kept page table does not map IOVA") ||
		fail "the kernel did not find the punched page missing from the kept page table"
	info "takeover: ${line#*] }"
	line=$(dmesg | grep -m1 -E "gets a new page table \(-116\)") ||
		fail "the HWPT did not get a new page table (-ESTALE): $(dmesg | grep -m1 -E 'took the kept page table over|gets a new page table' | sed 's/^.*] //')"
	info "takeover: ${line#*] }"
}

# The takeover switched the device from the copied context to the new HWPT
# in place: no window in which the context was not present, and (scalable
# mode) the domain was in the new PASID table before the switch, so no
# window in which the device met an empty table either.
check_switched_in_place() {
	local line
	line=$(dmesg | grep -m1 "copied context switched in place") ||
		fail "the kernel did not switch the device's copied context in place"
	info "takeover: ${line#*] }"
	grep -qE "to domain ID [0-9]+$|its domain already set up$" <<< "$line" ||
		fail "the device's copied context was switched before its domain was set up"
}

# After FINISH the stand-in replaces its HWPT by a second one: VT-d must
# switch each device's entry in place (trace event
# intel_iommu/entry_replace_in_place), never blocking the device in between.
trace_replace_on() {
	local ev=/sys/kernel/tracing/events/intel_iommu/entry_replace_in_place
	mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
	[ -e "$ev/enable" ] || fail "the kernel has no trace event intel_iommu/entry_replace_in_place"
	echo 1 > "$ev/enable"
}
check_replaced_in_place() {
	local b line
	for b in $(edu_bdfs); do
		line=$(grep -m1 -E "entry_replace_in_place: .* ${b#0000:} pasid [0-9]+ did [0-9]+ -> [0-9]+" \
			/sys/kernel/tracing/trace) ||
			fail "$b: replacing the HWPT did not switch its entry in place (no entry_replace_in_place event)"
		info "HWPT replaced in place: ${line##*entry_replace_in_place: }"
	done
}

# The session the previous stage preserved is in the fd store.
check_fdstore() {
	local n
	n=$(systemctl show -P NFileDescriptorStore "$unit")
	[ "$n" = "$1" ] || fail "the fd store of $unit holds '$n' fds, expected $1"
}

vmm_run() {
	local what=$1
	shift
	mkdir -p /run/iommulu-vm	# /run is empty again after the kexec
	echo "VMM_ARGS=$* --dma-loop --irq ${devs[*]}" > /run/iommulu-vm/vmm.env
	check "VMM stand-in: $what" systemctl start "$unit"
}

# No DMAR fault in this boot, except for the IOVAs listed (the stand-in's
# deliberate DMA to unmapped guest RAM after FINISH): a fault for a mapped
# IOVA would be DMA lost across the takeover.
check_no_dmar_fault() {
	local allowed=${1:-} faults
	faults=$(dmesg | grep -a "DMAR: \[DMA" || true)
	[ -n "$allowed" ] && faults=$(grep -v -E "fault addr ($allowed) " <<< "$faults" || true)
	[ -z "$faults" ] || fail "DMAR fault(s) in this boot: $(head -n 3 <<< "$faults")"
	info "no DMAR fault${allowed:+ besides the expected one(s) at $allowed}"
}

# --irq: edu #1 kept MSI enabled across the kexec.  The kernel kept its
# interrupt remapping entries parked (the MSI of the DMA completion the
# stand-in raised before the re-arm was dropped there: no remapping fault,
# no interrupt on a vector of this kernel), released them when the VMM
# armed the vector again, and replayed the vector once; the fresh interrupt
# after that came through the new entry.  --open: the device is still open
# (preserved again), so its vector is in /proc/interrupts.
check_irqs() {
	local b=${devs[1]} line n
	dmesg | grep -q "$b: live update: MSI left enabled as handed over" ||
		fail "$b: the kernel did not leave MSI enabled as handed over"
	line=$(dmesg | grep -m1 -E "live update: [0-9]+ interrupt remapping entries of preserved devices kept parked") ||
		fail "the kernel did not keep the preserved device's interrupt remapping entries parked: $(dmesg | grep -m1 -E 'live update: interrupt remapping kept enabled|IRQ remapping was enabled' | sed 's/^.*] //')"
	info "${line#*] }"
	line=$(dmesg | grep -m1 -E "live update: [0-9]+ parked interrupt remapping entries of ${b#0000:} released") ||
		fail "$b: the parked interrupt remapping entries were not released at the re-arm"
	info "${line#*] }"
	dmesg | grep -q "$b: live update: 1 MSI vector(s) re-armed, each signalled once" ||
		fail "$b: the kernel did not replay the re-armed MSI vector"
	! dmesg | grep -aE "INTR-REMAP|No irq handler for vector|spurious APIC interrupt" ||
		fail "an interrupt went astray in this boot (see above)"
	if [ "${1:-}" != --open ]; then
		info "$b: MSI replayed at the re-arm; no remapping fault, no stray vector"
		return
	fi
	n=$(awk -v name="vfio-msi[0]($b)" 'index($0, name) { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts)
	[ "${n:-0}" -ge 1 ] || fail "$b: no interrupt counted on vfio-msi[0] in /proc/interrupts"
	info "$b: MSI replayed at the re-arm, $n interrupt(s) delivered through the new remapping entry; no remapping fault, no stray vector"
}
