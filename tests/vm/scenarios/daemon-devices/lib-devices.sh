# Shared by daemon-devices and the demo (sourced after lib.sh and lib-daemon.sh).
VMM=$IOMMULU_TOOLS/iommulu-vmm
LUD_VM_IFACE=org.iommulu.LiveUpdate1.VM

# lud_vm_prop VM PROP: a VM object's property, busctl's value part.
lud_vm_prop() {
	busctl --system get-property "$LUD_DEST" "$LUD_PATH/vm/$(lud_vm_escape "$1")" "$LUD_VM_IFACE" "$2" |
		cut -d' ' -f2-
}

# sd_bus_path_encode() for the names the scenarios use ([A-Za-z0-9] stay).
lud_vm_escape() {
	local s=$1 out= c i
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in [A-Za-z0-9]) out+=$c ;; *) out+=$(printf '_%02x' "'$c") ;; esac
	done
	echo "$out"
}

# lud_vmm_dev VM BDF SEED [extra args]: the VMM stand-in as a notify service
# holding VM with one device; returns once RegisterVM was answered.
lud_vmm_dev() {
	local vm=$1 bdf=$2 seed=$3
	shift 3
	systemd-run --unit="lud-vmm-$vm" --quiet -p After=$LUD_UNIT -p Type=notify \
		-p StandardOutput=journal+console -p StandardError=journal+console \
		"$VMM" register "$vm" --device "$bdf" --seed="$seed" "$@" ||
		{ journalctl -u "lud-vmm-$vm" --no-pager -o cat | tail -n 20; return 1; }
	[ "$(lud_state "$vm")" = registered ] || { lud_journal 20; return 1; }
}

# lud_expect_error NAME [PREFIX...] METHOD VM: call Manager.METHOD(s VM) with
# dbus-send (busctl prints only the message, not the error name) and
# require it to fail with error NAME.  PREFIX (e.g. setpriv ...) runs the
# call as another user.  Prints dbus-send's error line.
lud_expect_error() {
	local want=$1 out
	shift
	local n=$#
	local vm=${!n} method
	n=$((n - 1)); method=${!n}
	out=$("${@:1:$((n - 1))}" dbus-send --system --print-reply --dest="$LUD_DEST" "$LUD_PATH" \
		"$LUD_IFACE.$method" "string:$vm" 2>&1) && { echo "$method $vm succeeded: $out"; return 1; }
	echo "$out"
	grep -q "^Error $want:" <<< "$out"
}

# lud_follow_kexec PREFIX: copy iommu-lud's journal lines about the
# preservation at `systemctl kexec` to the serial console, each prefixed
# with PREFIX, so that the log shows what the daemon did after the stage
# ended (the journal is volatile and the next boot cannot read it).
# PREFIX must not contain '|', '&' or '\' (it goes into a sed replacement).
lud_follow_kexec() {
	systemd-run --unit=lud-follow-kexec --quiet -p StandardOutput=file:/dev/console \
		/bin/sh -c "journalctl -f -n0 -u $LUD_UNIT -o cat |
			grep --line-buffered -E 'Kexec announced|Preserved VM|Before kexec|could not be preserved|failed' |
			sed -u 's|^|$1|'"
}
