# Shared by the daemon scenarios (sourced after /usr/lib/iommulu-vm/lib.sh).
LUD_CLIENT=/usr/libexec/iommu-lud/iommu-lud-vmm-client
LUD_UNIT=iommu-lud.service
LUD_DEST=org.iommulu.LiveUpdate1
LUD_PATH=/org/iommulu/LiveUpdate1
LUD_IFACE=org.iommulu.LiveUpdate1.Manager

lud_start() {
	check "$LUD_UNIT started" systemctl start "$LUD_UNIT"
	[ "$(systemctl show -P ActiveState "$LUD_UNIT")" = active ] || fail "$LUD_UNIT is not active"
}

lud_call() { busctl --system call "$LUD_DEST" "$LUD_PATH" "$LUD_IFACE" "$@"; }
lud_prop() { busctl --system get-property "$LUD_DEST" "$LUD_PATH" "$LUD_IFACE" "$1" | cut -d' ' -f2-; }

# lud_state VM: the VM's State property ("" if unknown).
lud_state() {
	local p
	p=$(lud_call ListVMs | grep -o "\"$1\" \"[a-z]*\"" | awk '{print $2}' | tr -d '"')
	echo "$p"
}

# lud_vmm VM SEED: start the VMM stand-in as a service that holds the VM.
lud_vmm() {
	local vm=$1 seed=$2 i
	check "VMM stand-in for $vm started" systemd-run --unit="lud-vmm-$vm" --quiet \
		-p After=$LUD_UNIT --service-type=exec \
		"$LUD_CLIENT" register "$vm" --memfds=2 --size=$((8 << 20)) --seed="$seed" --hold
	for i in $(seq 1 100); do
		[ "$(lud_state "$vm")" = registered ] && break
		sleep 0.1
	done
	[ "$(lud_state "$vm")" = registered ] || fail "VM $vm not registered: $(lud_call ListVMs)"
	info "VM $vm registered by the VMM stand-in (seed $seed)"
}

lud_fdstore() { systemctl show -P NFileDescriptorStore "$LUD_UNIT"; }
# The FDNAMEs in the daemon's fd store (every entry of a VM ends in .VM:
# session.*, record.*, memfd.N., vm.SERIAL., owner.).
lud_fdstore_names() { systemd-analyze fdstore "$LUD_UNIT" 2>/dev/null | awk 'NR > 1 && NF { print $1 }'; }

# lud_vm_u VM PROP: an unsigned property of a VM whose name needs no escaping.
lud_vm_u() {
	busctl --system get-property "$LUD_DEST" "$LUD_PATH/vm/$1" org.iommulu.LiveUpdate1.VM "$2" | cut -d' ' -f2
}

# lud_kill_restart: SIGKILL the daemon and wait until systemd restarted it
# (Restart=on-failure) and it owns its name again.
lud_kill_restart() {
	local pid new i
	pid=$(systemctl show -P MainPID "$LUD_UNIT")
	check "SIGKILL iommu-lud (pid $pid)" kill -KILL "$pid"
	for i in $(seq 1 100); do
		new=$(systemctl show -P MainPID "$LUD_UNIT")
		[ "$(systemctl show -P ActiveState "$LUD_UNIT")" = active ] && [ "$new" != 0 ] && [ "$new" != "$pid" ] && break
		sleep 0.1
	done
	[ "$new" != "$pid" ] && [ "$new" != 0 ] || fail "systemd did not restart iommu-lud"
	info "systemd restarted iommu-lud: pid $pid -> $new"
}

lud_journal() { journalctl -b -u "$LUD_UNIT" --no-pager -o cat | tail -n "${1:-40}"; }

# After a kexec: the daemon must know it, verify the VM and hand it back.
lud_after_kexec() {
	local vm=$1 seed=$2 n lu names
	n=$(lud_fdstore)
	[ "$n" -ge 1 ] 2>/dev/null || fail "after kexec the fd store of $LUD_UNIT holds '$n' fds: systemd did not carry the session"
	info "fd store of $LUD_UNIT holds $n fd(s) after the kexec"
	lud_start
	lu=$(lud_prop LiveUpdated)
	[ "$lu" = true ] || { lud_journal; fail "LiveUpdated is '$lu', expected true"; }
	[ "$(lud_state "$vm")" = verified ] || { lud_journal; fail "VM $vm is '$(lud_state "$vm")', expected verified"; }
	info "VM $vm restored and verified by the daemon"
	journalctl -b -u "$LUD_UNIT" VM="$vm" --no-pager -o cat | grep -q "VM $vm verified" ||
		{ lud_journal; fail "no journal entry with VM=$vm saying it was verified"; }
	info "journal (VM=$vm): $(journalctl -b -u "$LUD_UNIT" VM="$vm" --no-pager -o cat | grep -m1 'Restored VM')"
	"$LUD_CLIENT" retrieve "$vm" --seed="$seed" --finish || { lud_journal; fail "VerifyVM/RetrieveVM/FinishVM of $vm failed"; }
	[ "$(lud_state "$vm")" = finished ] || fail "VM $vm is '$(lud_state "$vm")' after FinishVM"
	# Nothing of this VM stays in the store (VMs of other scenarios
	# sharing this boot, e.g. qemu-memfd's, come and go meanwhile: its
	# unit resumes it and registers it again).
	names=$(lud_fdstore_names)
	[ -n "$names" ] || [ "$(lud_fdstore)" = 0 ] || fail "systemd-analyze fdstore $LUD_UNIT lists no entries, NFileDescriptorStore=$(lud_fdstore)"
	n=$(grep -cE "\.$vm\$" <<< "$names" || true)
	[ "$n" = 0 ] || fail "fd store holds $n fd(s) of VM $vm after FinishVM ($(grep -E "\.$vm\$" <<< "$names" | tr '\n' ' ')): a retrieved session would be lost on the next kexec"
	info "VM $vm retrieved intact, session finished and removed from the fd store ($(lud_fdstore) fd(s) of other VMs in it)"
}
