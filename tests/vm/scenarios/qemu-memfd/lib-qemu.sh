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

# l2_went_on SEED COUNT: the L2 guest's console lines on stdin (after a
# resume) must all carry SEED (no reboot), counters going up by exactly one
# from COUNT, and an intact pattern.  Prints "OK LAST ROUNDS", or "FAIL why".
# One awk, not a fork per line: the virtual host has a single vCPU.
l2_went_on() {
	grep 'count=' | awk -v seed="$1" -v prev="$2" '
	{ s = c = ""
	  for (i = 1; i <= NF; i++) {
		if ($i ~ /^seed=/) s = substr($i, 6)
		if ($i ~ /^count=/) c = substr($i, 7)
	  }
	  if (s != seed) { print "FAIL L2 guest seed changed across the kexec (" seed " -> " s "): another guest"; bad = 1; exit }
	  if (c == "" || c + 0 != prev + 1) { print "FAIL L2 counter not continuous across the kexec: " prev ", then " c " (" $0 ")"; bad = 1; exit }
	  if ($0 !~ /pattern=ok/) { print "FAIL L2 guest RAM pattern damaged after the kexec: " $0; bad = 1; exit }
	  prev = c + 0; n++ }
	END { if (!bad && n) print "OK " prev " " n; else if (!bad) print "FAIL no counter line after the kexec" }'
}

# blackout: "BLACKOUT_MS SAVE_MS RESTORE_MS MESSAGE" of the VM's last resume
# in this boot ("" if none was logged).
blackout() {
	journalctl -b -u "$UNIT" VM="$VM" --no-pager -o json | jq -r 'select(.BLACKOUT_MS) |
		"\(.BLACKOUT_MS) \(.SAVE_MS) \(.RESTORE_MS) \(.MESSAGE)"' | tail -n1
}

# wait_active TIMEOUT: until the VM's unit is active (resumed after the
# kexec by iommu-lud-qemu-resume.service); fails the stage otherwise.
wait_active() {
	local deadline=$(( $(date +%s) + $1 )) as
	while :; do
		as=$(systemctl show -P ActiveState "$UNIT")
		[ "$as" = active ] && return 0
		if [ "$as" = failed ] || [ "$(date +%s)" -ge "$deadline" ]; then
			journalctl -b -u "$RESUME_UNIT" --no-pager -o cat | tail -n 10
			unit_journal
			fail "$UNIT is '$as' $([ "$as" = failed ] || echo "$1 s after iommu-lud started"): the VM was not resumed on its own"
		fi
		sleep 1
	done
}
