#!/usr/bin/env bash
# Run the whole virtual-host suite.
#
#   tests/vm/run-all.sh [SCENARIO...]
#
# Builds the kernel and the guest root image (both cached: a rerun with no
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
echo "== guest root image"
if ! rootimg=$("$here/build-rootfs.sh" "$kdir" | tail -n1) || [ ! -s "$rootimg" ]; then
	echo "run-all: root image build FAILED"
	echo "0 passed, 1 failed"
	exit 1
fi
t_rootfs=$(echo "$(now) - $t" | bc)
echo "   $rootimg ($(du -h "$rootimg" | cut -f1); this step $(fmt "$t_rootfs") s)"

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
declare -A group_job=()
for name in "${names[@]}"; do
	conf=$here/scenarios/$name/scenario.conf
	if [ ! -f "$conf" ]; then
		rows+=("$(printf '%-18s %-9s %-6s %7s  %s' "$name" "-" FAIL "-" "no such scenario")")
		failed=$((failed + 1))
		continue
	fi
	read -r run_all excl group modes < <(RUN_ALL=1 EXCLUSIVE=0 GROUP=- MODES="legacy scalable" KERNEL_DIR=$kdir \
		bash -c '. "$1" >/dev/null 2>&1; echo "$RUN_ALL $EXCLUSIVE ${GROUP:--} $MODES"' _ "$conf")
	if [ $# -eq 0 ] && [ "$run_all" = 0 ]; then
		continue	# e.g. the demo: only when named
	fi
	for mode in $modes; do
		# Scenarios of the same GROUP share one boot per mode: the first
		# one's job takes the others along (run-scenario.sh A,B,...).
		if [ "$group" != - ] && [ -n "${group_job[$group/$mode]:-}" ]; then
			j_name[${group_job[$group/$mode]}]+=",$name"
			continue
		fi
		[ "$group" != - ] && group_job[$group/$mode]=${#j_name[@]}
		j_name+=("$name"); j_mode+=("$mode"); j_excl+=("$excl")
	done
done

declare -A pid_job=() job_t0=()
running=0

job_start() {	# job_start INDEX
	local i=$1 log=$results_root/${j_name[$1]//,/+}-${j_mode[$1]}.log
	echo "== start ${j_name[$i]} (${j_mode[$i]})"
	job_t0[$i]=$(now)
	"$here/run-scenario.sh" "${j_name[$i]}" --iommu "${j_mode[$i]}" --kernel-dir "$kdir" --rootfs "$rootimg" > "$log" 2>&1 &
	pid_job[$!]=$i
	running=$((running + 1))
}

job_reap() {	# wait for one job, print its log, record a row per scenario
	local pid i log line outcome detail who ok=1 elapsed
	wait -n -p pid "${!pid_job[@]}"
	i=${pid_job[$pid]}; unset "pid_job[$pid]"
	running=$((running - 1))
	log=$results_root/${j_name[$i]//,/+}-${j_mode[$i]}.log
	elapsed=$(fmt "$(echo "$(now) - ${job_t0[$i]}" | bc)")
	j_row[$i]=
	# One "RESULT: OUTCOME NAME MODE TIME[ -- DETAIL]" line per scenario of
	# the job; a scenario without one failed.
	for who in ${j_name[$i]//,/ }; do
		line=$(grep -E "^RESULT: [A-Z]+ $who " "$log" | tail -n1)
		outcome=$(awk '{print $2}' <<< "$line")
		detail=$(sed -n 's/^RESULT: [A-Z]* [^ ]* [^ ]* [^ ]*\( -- \)\{0,1\}//p' <<< "$line")
		case $outcome in
		PASS) passed=$((passed + 1)) ;;
		SKIP|XFAIL) skipped=$((skipped + 1)) ;;
		*) failed=$((failed + 1)); ok=0; outcome=${outcome:-FAIL}; [ -n "$detail" ] || detail="no RESULT line" ;;
		esac
		j_row[$i]+=$(printf '%-18s %-9s %-6s %6ss  %s' "$who" "${j_mode[$i]}" "$outcome" "$elapsed" "$detail")$'\n'
	done
	echo
	echo "== end ${j_name[$i]} (${j_mode[$i]}): $([ "$ok" = 1 ] && echo ok || echo FAILED) (log: $log)"
	if [ "$ok" = 1 ]; then
		grep -vE '^   guest> ' "$log" | tail -n 60
	else
		cat "$log"
	fi
	j_row[$i]=${j_row[$i]%$'\n'}
}

echo
echo "== scenarios: ${#j_name[@]} run(s), up to $jobs_max at a time, EXCLUSIVE=1 ones alone"
T_SCEN=$(now)
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
echo "== virtual host summary (kernel $(fmt "$t_kernel") s, root image $(fmt "$t_rootfs") s, total $(fmt "$(echo "$(now) - $T0" | bc)") s)"
printf '%-18s %-9s %-6s %7s  %s\n' scenario "VT-d" result time detail
printf '%s\n' "${rows[@]}"

# Where the time went: each run's "phases" file (run-scenario.sh).
echo
echo "== where the time goes (seconds; sums over every kexec of a run)"
printf '%-24s %-9s %7s %7s %7s %8s %7s %6s %7s %7s\n' scenario "VT-d" boot stages "kx load" shutdown reboot kexecs kernel total
declare -A sum=()
for i in "${!j_name[@]}"; do
	f=$results_root/${j_name[$i]//,/+}-${j_mode[$i]}/phases
	[ -s "$f" ] || continue
	unset boot stages kexec_load shutdown reboot kexecs kernel total
	read -r boot stages kexec_load shutdown reboot kexecs kernel total < <(sed 's/[a-z_]*=//g' "$f")
	printf '%-24s %-9s %7s %7s %7s %8s %7s %6s %7s %7s\n' "${j_name[$i]//,/+}" "${j_mode[$i]}" \
		"$boot" "$stages" "$kexec_load" "$shutdown" "$reboot" "$kexecs" "$kernel" "$total"
	for k in boot stages kexec_load shutdown reboot kexecs kernel total; do
		sum[$k]=$(echo "${sum[$k]:-0} + ${!k}" | bc -l)
	done
done
printf '%-24s %-9s %7s %7s %7s %8s %7s %6s %7s %7s\n' "all runs" "" "$(fmt "${sum[boot]:-0}")" \
	"$(fmt "${sum[stages]:-0}")" "$(fmt "${sum[kexec_load]:-0}")" "$(fmt "${sum[shutdown]:-0}")" \
	"$(fmt "${sum[reboot]:-0}")" "${sum[kexecs]:-0}" "$(fmt "${sum[kernel]:-0}")" "$(fmt "${sum[total]:-0}")"
echo "   boot: QEMU start -> stage 1; kx load: stage end -> kexec mark; shutdown: kexec mark -> \"Starting new"
echo "   kernel\" (guest clock); reboot: the rest, to the next stage; kernel: of boot + reboot, the kernels' time"
echo "   to systemd (guest clock)"
echo "   wall clock: kernel $(fmt "$t_kernel") s, root image $(fmt "$t_rootfs") s, scenarios" \
	"$(fmt "$(echo "$(now) - $T_SCEN" | bc)") s ($jobs_max at a time), total $(fmt "$(echo "$(now) - $T0" | bc)") s"

echo
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
