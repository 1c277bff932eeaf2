#!/usr/bin/env bash
# Run one virtual-host scenario.
#
#   tests/vm/run-scenario.sh NAME [--iommu legacy|scalable] [--smp N]
#                            [--kernel-dir DIR] [--rootfs FILE] [--results DIR]
#                            [--corrupt] [--append KERNEL-ARGS]
#
# Builds (or takes from the cache) the kernel and the root image unless they
# are given, boots QEMU (TCG, q35, intel-iommu, edu devices), follows the
# guest's serial console and enforces a timeout on every step: boot, each
# stage, each kexec.  A scenario passes only on the guest's
# "IOMMULU-RESULT: PASS NAME" line.  See docs/virtual-host.md.
#
# Exit status: 0 PASS or XFAIL, 77 SKIP, 1 FAIL or XPASS, 2 usage/harness.
# The last line printed is "RESULT: <PASS|FAIL|XFAIL|XPASS|SKIP> NAME MODE ...".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
name= mode= smp= kdir= rootimg= results= append=
while [ $# -gt 0 ]; do
	case $1 in
	--iommu) mode=$2; shift ;;
	--iommu=*) mode=${1#*=} ;;
	--smp) smp=$2; shift ;;
	--kernel-dir) kdir=$2; shift ;;
	--rootfs) rootimg=$2; shift ;;
	--results) results=$2; shift ;;
	--corrupt) append+=" iommulu.corrupt=1" ;;
	--append) append+=" $2"; shift ;;
	-h|--help) usage ;;
	-*) echo "run-scenario: unknown option $1" >&2; usage ;;
	*) [ -z "$name" ] || usage; name=$1 ;;
	esac
	shift
done
[ -n "$name" ] || usage
# NAME may list several scenarios, comma-separated: they share one boot and
# each kexec, each gets its own RESULT line (run-all.sh groups scenarios by
# GROUP= in their scenario.conf).
IFS=, read -r -a members <<< "$name"
for m in "${members[@]}"; do
	[ -f "$here/scenarios/$m/scenario.conf" ] ||
		{ echo "run-scenario: no scenario $m ($here/scenarios/$m/scenario.conf)" >&2; exit 2; }
done
sdir=$here/scenarios/${members[0]}

now() { date +%s.%N; }
fmt() { printf '%.1f' "$1"; }
sub() { echo "$1 - $2" | bc -l; }
T0=$(now)

# ------------------------------------------------------------ kernel, rootfs
t=$(now)
if [ -z "$kdir" ]; then
	kdir=$("$here/build-kernel.sh" | tail -n1) || { echo "run-scenario: kernel build failed" >&2; exit 2; }
fi
t_kernel=$(sub "$(now)" "$t")
kbuild=$(sed -n 's/^build_seconds=//p' "$kdir/info" 2>/dev/null)

# ------------------------------------------------------------ scenario.conf
# Defaults; scenario.conf (bash) may override any of them.  KERNEL_DIR is
# set so that a scenario can decide XFAIL from the kernel's exported headers.
conf_defaults() {
	DESCRIPTION=
	MODES="legacy scalable"   # VT-d modes run-all.sh runs this scenario in
	HOST_ONLY=0               # 1: run ./host on the build host, no VM
	EDU=1                     # number of edu devices
	EDU_DMA_MASK=             # edu's dma_mask (QEMU default 2^28-1); also passed
	                          # to the guest as iommulu.edu_dma_mask=
	MEM=2048                  # guest RAM, MiB
	SMP=1                     # guest CPUs (see docs: -smp 2 is not reliable under TCG)
	# Timeouts only catch hangs.  They are generous because this 2-core
	# host often runs several TCG guests and kernel builds at once: a boot
	# that takes 40 s alone took over 100 s then.
	TIMEOUT_BOOT=300          # QEMU start -> stage 1 start, seconds
	TIMEOUT_STAGE=240         # per stage
	TIMEOUT_KEXEC=300         # kexec -> next stage start
	XFAIL=                    # non-empty: expected to fail, with this reason
	XFAIL_MATCH=              # with XFAIL: an ERE an IOMMULU-FAIL line of the boot must match, else FAIL
	BENCH_KEXEC_RATIO=0       # 1: print (kexec 2 -> "restored" mark) / (kexec 1 -> stage 2)
	QEMU_EXTRA=               # extra QEMU arguments (word-split)
	IOMMU_PROPS=              # extra intel-iommu properties (comma separated)
	RUN_ALL=1                 # 0: run-all.sh leaves it out (the demo)
	EXCLUSIVE=0               # 1: run-all.sh runs it alone, after the others (benchmarks)
	GROUP=                    # run-all.sh: scenarios with the same GROUP share a boot
	KERNEL_DIR=$kdir
	MODE=$mode                # the requested VT-d mode ("" = the first of MODES)
}
conf_defaults
# shellcheck disable=SC1091
. "$sdir/scenario.conf"
declare -A xfail=() xfail_match=() desc=()
xfail[${members[0]}]=$XFAIL xfail_match[${members[0]}]=$XFAIL_MATCH desc[${members[0]}]=$DESCRIPTION
max() { [ "$1" -gt "$2" ] && echo "$1" || echo "$2"; }
# A group boots once for all: the most devices and RAM any member asks for,
# the longest boot and kexec timeouts, and the sum of the stage timeouts
# (the members' stage N scripts run one after another).
for m in "${members[@]:1}"; do
	mapfile -t v < <(conf_defaults; . "$here/scenarios/$m/scenario.conf" >&2
		printf '%s\n' "$EDU" "$MEM" "$SMP" "$TIMEOUT_BOOT" "$TIMEOUT_STAGE" "$TIMEOUT_KEXEC" \
			"$HOST_ONLY" "$QEMU_EXTRA|$IOMMU_PROPS" "$BENCH_KEXEC_RATIO" "$XFAIL" "$DESCRIPTION" "$XFAIL_MATCH")
	[ "${#v[@]}" = 12 ] || { echo "run-scenario: cannot read scenarios/$m/scenario.conf" >&2; exit 2; }
	[ "${v[6]}" = 0 ] && [ "$HOST_ONLY" = 0 ] ||
		{ echo "run-scenario: a HOST_ONLY scenario cannot share a boot ($name)" >&2; exit 2; }
	[ "${v[7]}" = "$QEMU_EXTRA|$IOMMU_PROPS" ] ||
		{ echo "run-scenario: $m's QEMU_EXTRA or IOMMU_PROPS differ from ${members[0]}'s: they cannot share a boot" >&2; exit 2; }
	[ "${v[8]}" = 0 ] && [ "$BENCH_KEXEC_RATIO" = 0 ] ||
		{ echo "run-scenario: a benchmark (BENCH_KEXEC_RATIO=1) cannot share a boot ($name)" >&2; exit 2; }
	EDU=$(max "$EDU" "${v[0]}") MEM=$(max "$MEM" "${v[1]}") SMP=$(max "$SMP" "${v[2]}")
	TIMEOUT_BOOT=$(max "$TIMEOUT_BOOT" "${v[3]}") TIMEOUT_KEXEC=$(max "$TIMEOUT_KEXEC" "${v[5]}")
	TIMEOUT_STAGE=$((TIMEOUT_STAGE + v[4]))
	xfail[$m]=${v[9]} desc[$m]=${v[10]} xfail_match[$m]=${v[11]}
done
[ -n "$mode" ] || mode=${MODES%% *}
[ -n "$smp" ] || smp=$SMP
case $mode in legacy|scalable) ;; *) echo "run-scenario: --iommu must be legacy or scalable" >&2; exit 2 ;; esac

results=${results:-${IOMMULU_VM_RESULTS:-$repo/build/vm-results}/${name//,/+}-$mode}
rm -rf "$results"
mkdir -p "$results"
printf '%s\n' "$kdir" > "$results/kernel-dir"

# finish_all EXIT-IF-PASS: one RESULT line per member, from res[] and det[];
# exits 1 if any member failed (or passed unexpectedly), 77 if all skipped.
declare -A res=() det=()
finish_all() {
	local m outcome detail rc=0 all_skip=1 elapsed
	elapsed=$(fmt "$(sub "$(now)" "$T0")")
	: > "$results/result"
	for m in "${members[@]}"; do
		outcome=${res[$m]:-FAIL} detail=${det[$m]:-}
		if [ -n "${xfail[$m]}" ]; then
			case $outcome in
			PASS) outcome=XPASS
				detail="unexpected pass: remove XFAIL from scenarios/$m/scenario.conf (${xfail[$m]})" ;;
			FAIL)
				# Only the failure expected: any other is a FAIL.
				if [ -n "${xfail_match[$m]}" ] &&
				   ! grep -a 'IOMMULU-FAIL: ' "$results/serial.log" 2>/dev/null | grep -Eq -- "${xfail_match[$m]}"; then
					detail="failed, but not as expected (no IOMMULU-FAIL line matches '${xfail_match[$m]}')${detail:+ [$detail]}"
				else
					outcome=XFAIL; detail="expected failure: ${xfail[$m]}${detail:+ [$detail]}"
				fi ;;
			esac
		fi
		case $outcome in
		FAIL|XPASS) rc=1; all_skip=0 ;;
		SKIP) ;;
		*) all_skip=0 ;;
		esac
		echo "$m $outcome" >> "$results/result"
		echo "RESULT: $outcome $m $mode ${elapsed}s${detail:+ -- $detail}"
	done
	[ "$rc" = 0 ] && [ "$all_skip" = 1 ] && rc=77
	exit "$rc"
}
# finish OUTCOME DETAIL: the same verdict for every member without one.
finish() {
	local m
	for m in "${members[@]}"; do
		[ -n "${res[$m]:-}" ] || { res[$m]=$1; det[$m]=$2; }
	done
	finish_all
}

for m in "${members[@]}"; do
	echo "== $m ($mode VT-d)${desc[$m]:+: ${desc[$m]}}"
	[ -n "${xfail[$m]}" ] && echo "   expected to fail: ${xfail[$m]}"
done
[ "${#members[@]}" -gt 1 ] && echo "   these ${#members[@]} scenarios share one boot and every kexec"
echo "   results: $results"

# ------------------------------------------------------------ host-only
if [ "$HOST_ONLY" = 1 ]; then
	[ -x "$sdir/host" ] || { echo "run-scenario: $sdir/host missing" >&2; exit 2; }
	KERNEL_DIR=$kdir REPO=$repo RESULTS=$results IOMMULU_MODE=$mode "$sdir/host" 2>&1 | tee "$results/host.log"
	rc=${PIPESTATUS[0]}
	hdetail=$(grep -m1 '^IOMMULU-DETAIL: ' "$results/host.log" | sed 's/^IOMMULU-DETAIL: //')
	case $rc in
	0) finish PASS "$hdetail" ;;
	77) finish SKIP "$(grep -m1 'IOMMULU-SKIP' "$results/host.log" | sed 's/^IOMMULU-SKIP: //')" ;;
	*) grep -E 'IOMMULU-FAIL' "$results/host.log" | sed 's/^/   guest> /' | head -n 40
		finish FAIL "host check exited with $rc" ;;
	esac
fi

t=$(now)
if [ -z "$rootimg" ]; then
	rootimg=$("$here/build-rootfs.sh" "$kdir" | tail -n1) || { echo "run-scenario: rootfs build failed" >&2; exit 2; }
fi
t_rootfs=$(sub "$(now)" "$t")

# ------------------------------------------------------------ QEMU
# TCG, not KVM: with KVM the guest stalls while decompressing the kernel on
# this host (issue 3).  intremap=on: iommufd refuses to bind a device without
# isolated MSI (interrupt remapping) unless allow_unsafe_interrupts is set;
# under TCG it needs no split irqchip.  intel-iommu must come before the
# PCI devices it translates for.
# no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss
# its ticks, and with interrupt remapping the kernel then panics ("timer
# doesn't work through Interrupt-remapped IO-APIC"; seen once in scalable
# mode).  KVM guests skip this check for the same reason.
iommu=intel-iommu,intremap=on
[ "$mode" = scalable ] && iommu+=,x-scalable-mode=on
[ -n "$IOMMU_PROPS" ] && iommu+=",$IOMMU_PROPS"
# kho_scratch: fixed KHO scratch sizes (low, global, per node).  By default
# KHO reserves 200% of the boot-time reservations; with the 90 MB initramfs
# the harness once booted, that failed in a 2 GiB guest ("Failed to reserve
# nid 0 scratch buffer": no /dev/liveupdate).  A kexec'd kernel is loaded,
# and allocates early, only inside scratch: 256 MB holds the kernel and the
# memmap of a 6 GiB guest.  Fixed sizes keep every scenario's layout alike.
# The root file system is a read-only erofs image on virtio-blk, shared by
# concurrent runs (readonly=on); guest/overlay-init puts a tmpfs overlay on
# it and execs systemd.  virtio-blk does not negotiate ACCESS_PLATFORM, so
# its DMA bypasses the vIOMMU and no IOMMU check sees it; it sits at a fixed
# slot (00:10.0) so the edu devices keep 00:01.0, 00:02.0.
# max_loop=0: no loop devices up front; creating the default eight took
# 3.3 s of a kexec'd kernel's boot (initcall_debug; 10 ms at a first boot).
cmdline="console=ttyS0 root=/dev/vda rootfstype=erofs ro init=/usr/lib/iommulu-vm/overlay-init"
cmdline+=" liveupdate=on kho=on kho_scratch=64M,256M,256M intel_iommu=on panic=-1 no_timer_check max_loop=0"
cmdline+=" iommulu.scenario=$name iommulu.mode=$mode systemd.show_status=error$append"
qemu=(qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp "$smp" -m "$MEM"
	-nodefaults -display none -no-reboot -monitor none
	-serial "file:$results/serial.log"
	-device "$iommu")
edu=edu
if [ -n "$EDU_DMA_MASK" ]; then
	edu+=",dma_mask=$EDU_DMA_MASK"
	cmdline+=" iommulu.edu_dma_mask=$EDU_DMA_MASK"
fi
for _ in $(seq 1 "$EDU"); do qemu+=(-device "$edu"); done
qemu+=(-drive "if=none,id=root,file=$rootimg,format=raw,readonly=on"
	-device virtio-blk-pci,drive=root,addr=0x10
	-kernel "$kdir/bzImage" -append "$cmdline")
# shellcheck disable=SC2206
[ -n "$QEMU_EXTRA" ] && qemu+=($QEMU_EXTRA)
printf '%q ' "${qemu[@]}" > "$results/qemu.cmd"; echo >> "$results/qemu.cmd"

: > "$results/serial.log"
t_qemu=$(now)
setsid "${qemu[@]}" > "$results/qemu.out" 2>&1 < /dev/null &
qpid=$!
cleanup() {
	if kill -0 "$qpid" 2>/dev/null; then
		kill "$qpid" 2>/dev/null
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$qpid" 2>/dev/null
	fi
	wait "$qpid" 2>/dev/null
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# ------------------------------------------------------------ follow the guest
# Host times (seconds since QEMU start) of each protocol line, when first seen.
declare -a mk_line=() mk_host=()
seen=0 state=boot deadline=$(echo "$t_qemu + $TIMEOUT_BOOT" | bc) outcome= detail=
while :; do
	# Complete lines only: QEMU may be half-way through writing the last
	# one, and a line is taken once (a cut story line was seen in the demo).
	mapfile -t lines < <(perl -ne 'print if /IOMMULU-/ && /\n\z/' "$results/serial.log" 2>/dev/null | tr -d '\r')
	ht=$(sub "$(now)" "$t_qemu")
	while [ "$seen" -lt "${#lines[@]}" ]; do
		l=${lines[$seen]}
		l=${l#*IOMMULU-}; l=IOMMULU-$l
		mk_line+=("$l"); mk_host+=("$ht")
		seen=$((seen + 1))
		case $l in
		"IOMMULU-MARK: stage-start"*)
			st=$(sed -n 's/.* stage=\([0-9]*\).*/\1/p' <<< "$l")
			echo "   [$(fmt "$ht")s] stage $st started"
			state=stage; deadline=$(echo "$(now) + $TIMEOUT_STAGE" | bc) ;;
		"IOMMULU-MARK: kexec"*)
			echo "   [$(fmt "$ht")s] kexec"
			state=kexec; deadline=$(echo "$(now) + $TIMEOUT_KEXEC" | bc) ;;
		"IOMMULU-RESULT: "*)
			read -r _ verdict who rest <<< "$l"
			if [ -n "${xfail[$who]+set}" ]; then
				[ "$verdict" = PASS ] || [ "$verdict" = SKIP ] || verdict=FAIL
				res[$who]=$verdict det[$who]=$rest
				echo "   [$(fmt "$ht")s] $who: $verdict${rest:+ $rest}"
			else
				# Not one of ours: the guest is confused; fail the rest.
				for m in "${members[@]}"; do
					[ -n "${res[$m]:-}" ] || { res[$m]=FAIL; det[$m]="unexpected result line: $l"; }
				done
			fi ;;
		"IOMMULU-METRIC: "*) echo "   metric: ${l#IOMMULU-METRIC: }" ;;
		"IOMMULU-STORY: "*) echo "${l#IOMMULU-STORY: }" ;;
		esac
	done
	outcome=done
	for m in "${members[@]}"; do [ -n "${res[$m]:-}" ] || outcome=; done
	[ -n "$outcome" ] && break
	if ! kill -0 "$qpid" 2>/dev/null; then
		outcome=FAIL; detail="QEMU exited during $state (guest panic or reset?)"; break
	fi
	if grep -aqE 'Kernel panic - not syncing|end Kernel panic' "$results/serial.log"; then
		sleep 1; outcome=FAIL; detail="guest kernel panic during $state"; break
	fi
	if [ "$(echo "$(now) > $deadline" | bc)" = 1 ]; then
		outcome=FAIL; detail="timeout during $state"; break
	fi
	sleep 0.2
done
t_end=$(now)
cleanup
trap - EXIT
cat "$results/qemu.out" >> "$results/serial.log.qemu" 2>/dev/null
printf '%s\n' "${mk_line[@]}" > "$results/markers"

# ------------------------------------------------------------ phase times
# Guest times come from the runner's CLOCK_BOOTTIME stamps (t=) and, across
# a kexec, from the old kernel's printk stamp of "Starting new kernel".
# Host times are when the line appeared on the serial console.
gt() { sed -n 's/.* t=\([0-9.]*\).*/\1/p' <<< "$1"; }
{
	printf 'phase times (guest clock; host wall clock in brackets)\n'
	if [ -n "$kbuild" ] && [ "$(echo "$t_kernel > 5" | bc)" = 1 ]; then
		printf '  %-22s %7ss (built)\n' "kernel build" "$(fmt "$t_kernel")"
	else
		printf '  %-22s %7ss (cached; its build took %ss)\n' "kernel build" "$(fmt "$t_kernel")" "${kbuild:-?}"
	fi
	printf '  %-22s %7ss\n' "root image" "$(fmt "$t_rootfs")"
	prev_t= prev_h=0 kexec_t= kexec_h= cur=1 end_t=0 end_h=0
	declare -A kx_old=() kx_total=()
	# Host-clock sums per phase, for run-all.sh's table (the file "phases").
	ph_boot=0 ph_stages=0 ph_load=0 ph_down=0 ph_reboot=0 ph_kexecs=0 ph_kernel=0 init=0
	for i in "${!mk_line[@]}"; do
		l=${mk_line[$i]} h=${mk_host[$i]}
		st=$(sed -n 's/.* stage=\([0-9]*\).*/\1/p' <<< "$l")
		case $l in
		"IOMMULU-MARK: runner-start"*)
			# Guest clock when systemd started: the kernel's share of the boot.
			init=$(sed -n 's/.* init=\([0-9.]*\).*/\1/p' <<< "$l")
			ph_kernel=$(echo "$ph_kernel + ${init:-0}" | bc -l) ;;
		"IOMMULU-MARK: stage-start"*)
			g=$(gt "$l")
			if [ "$st" = 1 ]; then
				printf '  %-22s %7ss  [%ss from QEMU start]  (kernel to systemd %ss)\n' "boot -> stage 1" \
					"$(fmt "$g")" "$(fmt "$h")" "$(fmt "${init:-0}")"
				ph_boot=$h
			elif [ -n "$kexec_t" ]; then
				# Old kernel: marker -> "Starting new kernel"; new kernel: 0 -> stage start.
				ks=$(awk -v n="$((st - 1))" '
					/IOMMULU-MARK: kexec/ { k++ }
					k == n && /Starting new kernel/ { sub(/^[^[]*\[ */, ""); sub(/\].*/, ""); print; exit }' \
					"$results/serial.log")
				ph_kexecs=$((ph_kexecs + 1))
				# Shutdown of the old kernel (guest clock), the rest of the
				# host time is the new kernel's boot to the stage.
				down=0
				[ -n "$ks" ] && down=$(sub "$ks" "$kexec_t")
				ph_down=$(echo "$ph_down + $down" | bc -l)
				ph_reboot=$(echo "$ph_reboot + $h - $kexec_h - $down" | bc -l)
				if [ -n "$ks" ]; then
					gk=$(echo "($ks - $kexec_t) + $g" | bc -l)
					kx_old[$st]=$(sub "$ks" "$kexec_t") kx_total[$st]=$gk
					printf '  %-22s %7ss  [%ss]  (old kernel %ss, new kernel to stage %ss, of which to systemd %ss)\n' \
						"kexec -> stage $st" "$(fmt "$gk")" "$(fmt "$(sub "$h" "$kexec_h")")" \
						"$(fmt "$(sub "$ks" "$kexec_t")")" "$(fmt "$g")" "$(fmt "${init:-0}")"
				else
					printf '  %-22s %7s   [%ss]\n' "kexec -> stage $st" "?" "$(fmt "$(sub "$h" "$kexec_h")")"
				fi
			fi
			prev_t=$(gt "$l") prev_h=$h cur=$st ;;
		"IOMMULU-MARK: restored"*)
			if [ -n "${kx_old[$cur]:-}" ]; then
				restored=$(echo "${kx_old[$cur]} + $(gt "$l")" | bc -l)
				printf '  %-22s %7ss  (kexec %d -> restored)\n' "kexec -> restored" "$(fmt "$restored")" "$((cur - 1))"
				if [ "$BENCH_KEXEC_RATIO" = 1 ] && [ -n "${kx_total[2]:-}" ]; then
					ratio=$(printf '%.2f' "$(echo "$restored / ${kx_total[2]}" | bc -l)")
					printf '  %-22s %7s   (kexec-to-restored with 1 VM %ss / plain kexec %ss)\n' \
						"kexec overhead ratio" "$ratio" "$(fmt "$restored")" "$(fmt "${kx_total[2]}")"
					echo "kexec_overhead_ratio=$ratio plain_kexec_s=$(fmt "${kx_total[2]}") vm_kexec_restored_s=$(fmt "$restored")" > "$results/metrics"
				fi
			fi ;;
		"IOMMULU-MARK: stage-end"*)
			printf '  %-22s %7ss  [%ss]\n' "stage $st" "$(fmt "$(sub "$(gt "$l")" "$prev_t")")" \
				"$(fmt "$(sub "$h" "$prev_h")")"
			ph_stages=$(echo "$ph_stages + $h - $prev_h" | bc -l)
			end_t=$(gt "$l") end_h=$h ;;
		"IOMMULU-MARK: kexec"*)
			kexec_t=$(gt "$l") kexec_h=$h
			ph_load=$(echo "$ph_load + $h - $end_h" | bc -l)
			printf '  %-22s %7ss  [%ss]  (kexec -s -l of the kernel)\n' "kexec load" \
				"$(fmt "$(sub "$kexec_t" "$end_t")")" "$(fmt "$(sub "$h" "$end_h")")" ;;
		esac
	done
	printf '  %-22s %7ss\n' "total (host)" "$(fmt "$(sub "$t_end" "$T0")")"
	printf 'boot=%s stages=%s kexec_load=%s shutdown=%s reboot=%s kexecs=%s kernel=%s total=%s\n' \
		"$(fmt "$ph_boot")" "$(fmt "$ph_stages")" "$(fmt "$ph_load")" "$(fmt "$ph_down")" \
		"$(fmt "$ph_reboot")" "$ph_kexecs" "$(fmt "$ph_kernel")" "$(fmt "$(sub "$t_end" "$t_qemu")")" > "$results/phases"
} | tee "$results/times"

# ------------------------------------------------------------ verdict
bad=0
[ "$outcome" = done ] || bad=1
for m in "${members[@]}"; do
	case ${res[$m]:-} in PASS|SKIP) ;; *) bad=1 ;; esac
done
if [ "$bad" = 1 ]; then
	echo "   --- guest failure lines (full log: $results/serial.log)"
	grep -aE 'IOMMULU-(FAIL|RESULT)|Kernel panic|BUG:|Oops|WARNING:|Call Trace|segfault|Failed to start|FAILED|error' \
		"$results/serial.log" | tr -d '\r' | head -n 60 | sed 's/^/   guest> /'
	echo "   --- last serial lines"
	tail -n 25 "$results/serial.log" | tr -d '\r' | sed 's/^/   guest> /'
fi
[ "$outcome" = done ] || finish FAIL "$detail"
if [ "${#members[@]}" = 1 ]; then
	# A lone scenario's detail: its benchmark figures, or why it skipped.
	case ${res[$name]} in
	PASS) det[$name]=$(cat "$results/metrics" 2>/dev/null) ;;
	SKIP) det[$name]=$(grep -a -m1 'IOMMULU-SKIP' "$results/serial.log" | sed 's/.*IOMMULU-SKIP: //' | tr -d '\r') ;;
	esac
fi
finish_all
