#!/usr/bin/env bash
# Run the whole virtual-host suite.
#
#   tests/vm/run-all.sh [SCENARIO...]
#
# Builds the kernel and the guest initramfs (both cached: a rerun with no
# change skips them), then runs every scenario under tests/vm/scenarios/
# (or only those named) in each VT-d mode its scenario.conf lists (MODES=).
# Scenarios run IOMMULU_VM_JOBS at a time (default: nproc); those whose
# scenario.conf sets EXCLUSIVE=1 (benchmarks) run alone at the end.
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

# Every (scenario, mode) pair is one job.  Jobs run IOMMULU_VM_JOBS at a
# time (default: the number of CPUs; each guest is a single-CPU TCG
# process), except those whose scenario.conf sets EXCLUSIVE=1 (the
# benchmarks): they run afterwards, one at a time, so that their figures are
# not skewed by a neighbour.  A job's full output goes to its log; the log
# is printed when the job ends, in full for a failure, abridged otherwise.
jobs_max=${IOMMULU_VM_JOBS:-$(nproc)}
[ "$jobs_max" -ge 1 ] 2>/dev/null || jobs_max=1
declare -a j_name=() j_mode=() j_excl=() j_row=()
for name in "${names[@]}"; do
	conf=$here/scenarios/$name/scenario.conf
	if [ ! -f "$conf" ]; then
		rows+=("$(printf '%-18s %-9s %-6s %7s  %s' "$name" "-" FAIL "-" "no such scenario")")
		failed=$((failed + 1))
		continue
	fi
	read -r run_all excl modes < <(RUN_ALL=1 EXCLUSIVE=0 MODES="legacy scalable" KERNEL_DIR=$kdir \
		bash -c '. "$1" >/dev/null 2>&1; echo "$RUN_ALL $EXCLUSIVE $MODES"' _ "$conf")
	if [ $# -eq 0 ] && [ "$run_all" = 0 ]; then
		continue	# e.g. the demo: only when named
	fi
	for mode in $modes; do
		j_name+=("$name"); j_mode+=("$mode"); j_excl+=("$excl")
	done
done

declare -A pid_job=() job_t0=()
running=0

job_start() {	# job_start INDEX
	local i=$1 log=$results_root/${j_name[$1]}-${j_mode[$1]}.log
	echo "== start ${j_name[$i]} (${j_mode[$i]})"
	job_t0[$i]=$(now)
	"$here/run-scenario.sh" "${j_name[$i]}" --iommu "${j_mode[$i]}" --kernel-dir "$kdir" --initrd "$initrd" > "$log" 2>&1 &
	pid_job[$!]=$i
	running=$((running + 1))
}

job_reap() {	# wait for one job, print its log, record its row
	local pid i log line outcome detail
	wait -n -p pid "${!pid_job[@]}"
	i=${pid_job[$pid]}; unset "pid_job[$pid]"
	running=$((running - 1))
	log=$results_root/${j_name[$i]}-${j_mode[$i]}.log
	line=$(grep -E '^RESULT: ' "$log" | tail -n1)
	outcome=$(awk '{print $2}' <<< "$line")
	detail=$(sed -n 's/^RESULT: [A-Z]* [^ ]* [^ ]* [^ ]*\( -- \)\{0,1\}//p' <<< "$line")
	case $outcome in
	PASS) passed=$((passed + 1)) ;;
	SKIP|XFAIL) skipped=$((skipped + 1)) ;;
	*) failed=$((failed + 1)); outcome=${outcome:-FAIL}; [ -n "$detail" ] || detail="no RESULT line" ;;
	esac
	echo
	echo "== end ${j_name[$i]} (${j_mode[$i]}): ${outcome} (log: $log)"
	case $outcome in
	PASS|SKIP|XFAIL) grep -vE '^   guest> ' "$log" | tail -n 60 ;;
	*) cat "$log" ;;
	esac
	j_row[$i]=$(printf '%-18s %-9s %-6s %6ss  %s' "${j_name[$i]}" "${j_mode[$i]}" "$outcome" \
		"$(fmt "$(echo "$(now) - ${job_t0[$i]}" | bc)")" "$detail")
}

echo
echo "== scenarios: ${#j_name[@]} run(s), up to $jobs_max at a time, EXCLUSIVE=1 ones alone"
for i in "${!j_name[@]}"; do
	[ "${j_excl[$i]}" = 1 ] && continue
	while [ "$running" -ge "$jobs_max" ]; do job_reap; done
	job_start "$i"
done
while [ "$running" -gt 0 ]; do job_reap; done
for i in "${!j_name[@]}"; do
	[ "${j_excl[$i]}" = 1 ] || continue
	job_start "$i"
	job_reap
done
for i in "${!j_name[@]}"; do
	rows+=("${j_row[$i]}")
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
