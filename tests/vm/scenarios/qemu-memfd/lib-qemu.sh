# Shared by the qemu-memfd stages (sourced after /usr/lib/iommulu-vm/lib.sh).
VM=qvm1
UNIT=iommu-lud-qemu@$VM.service
LUD_DEST=org.iommulu.LiveUpdate1
LUD_PATH=/org/iommulu/LiveUpdate1
LUD_IFACE=org.iommulu.LiveUpdate1.Manager
RESUME_UNIT=iommu-lud-qemu-resume.service

lud_start() {
	check "iommu-lud.service started" systemctl start iommu-lud.service
}

# The VM's state in the daemon ("" if unknown).
lud_state() {
	busctl --system --json=short call "$LUD_DEST" "$LUD_PATH" "$LUD_IFACE" ListVMs |
		jq -r --arg vm "$1" '.data[0][] | select(.[0] == $vm) | .[1]'
}

# The L2 guest's console lines in the journal of the unit's current run;
# $1: 1 (live) or replay.
console() {
	journalctl -b -u "$UNIT" _SYSTEMD_INVOCATION_ID="$(systemctl show -P InvocationID "$UNIT")" \
		IOMMULU_QEMU_CONSOLE="$1" --no-pager -o cat 2>/dev/null
}

# The journal of the unit, for failure reports.
unit_journal() { journalctl -b -u "$UNIT" --no-pager -o cat | grep -v '^l2guest: seed=' | tail -n "${1:-30}"; }

# wait_console KIND N TIMEOUT: until N "count=" lines of KIND arrived.
wait_console() {
	local kind=$1 want=$2 deadline=$(( $(date +%s) + $3 )) n
	while :; do
		n=$(console "$kind" | grep -c 'count=' || true)
		[ "$n" -ge "$want" ] && return 0
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		systemctl -q is-active "$UNIT" || return 1
		sleep 1
	done
}

# field LINE KEY: the value of KEY= in a console line.
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<< "$1"; }

# luctl_check_vm: `iommu-luctl check` must say the VM survives a kexec now,
# through its unit, and that the unit resumes it after the kexec.
luctl_check_vm() {
	local j why
	j=$(iommu-luctl check --json=short | jq -c --arg vm "$VM" '.vms[] | select(.name == $vm)')
	[ -n "$j" ] || fail "iommu-luctl check does not list VM $VM"
	why=$(jq -r .why <<< "$j")
	[ "$(jq -r .survives <<< "$j")" = true ] || fail "iommu-luctl check: VM $VM would not survive a kexec: $why"
	[ "$(jq -r .vmm_unit <<< "$j")" = "$UNIT" ] || fail "iommu-luctl check: VM $VM's VMM unit is '$(jq -r .vmm_unit <<< "$j")', expected $UNIT"
	[[ $why == *"$UNIT saves QEMU in the kexec and is resumed after it"* ]] ||
		fail "iommu-luctl check: VM $VM survives, but not through $UNIT's save and resume: $why"
	info "iommu-luctl check: $VM $(jq -r .state <<< "$j"), survives: $why"
}
