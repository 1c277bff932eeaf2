#!/usr/bin/env bash
# Run the whole virtual-host suite.
#
#   tests/vm/run-all.sh [SCENARIO...]
#
# Builds the kernel and the guest initramfs (both cached: a rerun with no
# change skips them), then runs every scenario under tests/vm/scenarios/
# (or only those named) in each VT-d mode its scenario.conf lists (MODES=).
# Prints a summary table and, as the last line,
#   "N passed, M failed" or "N passed, M failed, K skipped"
# where K counts SKIP and XFAIL (expected failure) results; an XPASS
# (unexpected pass of an XFAIL scenario) counts as failed.
# Exit status: 0 when nothing failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
results_root=${IOMMULU_VM_RESULTS:-$repo/build/vm-results}
mkdir -p "$results_root"

now() { date +%s.%N; }
fmt() { printf '%.1f' "$1"; }
T0=$(now)

passed=0 failed=0 skipped=0
declare -a rows=()

t=$(now)
echo "== kernel"
if ! kdir=$("$here/build-kernel.sh" | tail -n1) || [ ! -f "$kdir/bzImage" ]; then
	echo "run-all: kernel build FAILED"
	echo "0 passed, 1 failed"
	exit 1
fi
t_kernel=$(echo "$(now) - $t" | bc)
echo "   $kdir ($(sed -n 's/^patches=//p' "$kdir/info") patch(es), took $(sed -n "s/^build_seconds=//p" "$kdir/info") s to build; this step $(fmt "$t_kernel") s)"

t=$(now)
echo "== guest initramfs"
if ! initrd=$("$here/build-rootfs.sh" "$kdir" | tail -n1) || [ ! -s "$initrd" ]; then
	echo "run-all: initramfs build FAILED"
	echo "0 passed, 1 failed"
	exit 1
fi
t_rootfs=$(echo "$(now) - $t" | bc)
echo "   $initrd ($(du -h "$initrd" | cut -f1); this step $(fmt "$t_rootfs") s)"

if [ $# -gt 0 ]; then
	names=("$@")
else
	names=()
	for d in "$here"/scenarios/*/; do
		[ -f "$d/scenario.conf" ] && names+=("$(basename "$d")")
	done
fi

for name in "${names[@]}"; do
	conf=$here/scenarios/$name/scenario.conf
	if [ ! -f "$conf" ]; then
		rows+=("$(printf '%-18s %-9s %-6s %7s  %s' "$name" "-" FAIL "-" "no such scenario")")
		failed=$((failed + 1))
		continue
	fi
	if [ $# -eq 0 ] && [ "$(RUN_ALL=1 KERNEL_DIR=$kdir bash -c '. "$1" >/dev/null 2>&1; echo $RUN_ALL' _ "$conf")" = 0 ]; then
		continue	# e.g. the demo: only when named
	fi
	modes=$(MODES="legacy scalable" KERNEL_DIR=$kdir bash -c '. "$1" >/dev/null 2>&1; echo $MODES' _ "$conf")
	for mode in $modes; do
		echo
		t=$(now)
		log=$results_root/$name-$mode.log
		mkdir -p "$results_root"
		"$here/run-scenario.sh" "$name" --iommu "$mode" --kernel-dir "$kdir" --initrd "$initrd" 2>&1 | tee "$log"
		line=$(grep -E '^RESULT: ' "$log" | tail -n1)
		outcome=$(awk '{print $2}' <<< "$line")
		detail=$(sed -n 's/^RESULT: [A-Z]* [^ ]* [^ ]* [^ ]*\( -- \)\{0,1\}//p' <<< "$line")
		case $outcome in
		PASS) passed=$((passed + 1)) ;;
		SKIP|XFAIL) skipped=$((skipped + 1)) ;;
		*) failed=$((failed + 1)); outcome=${outcome:-FAIL}; [ -n "$detail" ] || detail="no RESULT line" ;;
		esac
		rows+=("$(printf '%-18s %-9s %-6s %6ss  %s' "$name" "$mode" "$outcome" "$(fmt "$(echo "$(now) - $t" | bc)")" "$detail")")
	done
done

echo
echo "== virtual host summary (kernel $(fmt "$t_kernel") s, initramfs $(fmt "$t_rootfs") s, total $(fmt "$(echo "$(now) - $T0" | bc)") s)"
printf '%-18s %-9s %-6s %7s  %s\n' scenario "VT-d" result time detail
printf '%s\n' "${rows[@]}"
echo
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
