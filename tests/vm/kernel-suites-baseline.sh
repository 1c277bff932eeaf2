#!/usr/bin/env bash
# Measure the upstream kselftest results on the PRISTINE kernel: the
# baseline the selftests scenario holds the patched kernel to, test by test.
#
#   tests/vm/kernel-suites-baseline.sh [--modes "legacy scalable"] [--out-dir DIR]
#
# 1. Builds the pristine Linux 7.3 with the harness config, fragment
#    included (build-kernel.sh --pristine: no patch applied, own cache key).
# 2. Runs the selftests scenario on it in each mode (default: the
#    scenario's MODES).  Its build hook then builds iommufd, liveupdate,
#    luo_kexec_simple and luo_multi_session from the untouched tools/ tree
#    (build-selftests.sh on a kernel with no patches) and the guest runs only
#    those: stage 1, kexec, stage 2, as in a normal run, recording every
#    result ("not ok" and SKIP included) without judging it.
# 3. Collects the guest's "IOMMULU-KSFT: PROGRAM STAGE RESULT TEST" lines
#    from the serial log, checks them against the ksft_PROGRAM_sSTAGE
#    metrics (same counts, both stages of every program present, no test
#    twice), and writes them, with a header saying what produced them, to
#    DIR/pristine-results.MODE (default DIR: tests/vm/scenarios/selftests,
#    where they are committed).  Nothing is written for a mode whose run
#    did not record every program and stage.
#
# Takes the pristine kernel build (cached; incremental after a patched
# build thanks to ccache) and one scenario run per mode (about 3 min each).
# Rerun it when kernel-patches/config.fragment, the source package or the
# upstream programs change (stage 1 of the scenario warns when the fragment
# differs from the baseline's).
#
# Environment: as for run-scenario.sh (IOMMULU_CACHE, ...).  On a shared
# machine wrap it in the machine lock, e.g.
#   flock /tmp/w/machine.lock tests/vm/kernel-suites-baseline.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
sdir=$here/scenarios/selftests
outdir=$sdir
modes=
while [ $# -gt 0 ]; do
	case $1 in
	--modes) modes=$2; shift ;;
	--out-dir) outdir=$2; shift ;;
	-h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "kernel-suites-baseline: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$modes" ]; then
	modes=$(KERNEL_DIR=/nonexistent bash -c '. "$1"; echo "$MODES"' _ "$sdir/scenario.conf")
fi
PROGRAMS=(iommufd:1 liveupdate:1 luo_kexec_simple:1 luo_multi_session:1 luo_kexec_simple:2 luo_multi_session:2)

log() { echo "kernel-suites-baseline: $*" >&2; }
die() { echo "kernel-suites-baseline: ERROR: $*" >&2; exit 1; }

t0=$(date +%s)
kdir=$("$here/build-kernel.sh" --pristine | tail -n1) || die "building the pristine kernel failed"
grep -qx 'patches=0' "$kdir/info" || die "$kdir is not a pristine kernel"
log "pristine kernel: $kdir"

info() { sed -n "s/^$1=//p" "$kdir/info"; }
cmd="tests/vm/kernel-suites-baseline.sh --modes \"$modes\""
for mode in $modes; do
	res=${IOMMULU_VM_RESULTS:-$repo/build/vm-results}/selftests-pristine-$mode
	log "running the selftests scenario on the pristine kernel, $mode mode (results: $res)"
	ts=$(date +%s)
	rc=0
	"$here/run-scenario.sh" selftests --iommu "$mode" --kernel-dir "$kdir" --results "$res" >&2 || rc=$?
	verdict=$(tail -n1 "$res/result" 2>/dev/null || true)
	[ "$rc" = 0 ] || die "$mode: the scenario run failed (${verdict:-rc=$rc}); see $res/serial.log"
	serial=$(tr -d '\r' < "$res/serial.log")
	results=$(sed -n 's/.*IOMMULU-KSFT: //p' <<< "$serial")
	for ps in "${PROGRAMS[@]}"; do
		p=${ps%:*} s=${ps#*:}
		m=$(sed -n "s/.*IOMMULU-METRIC: ksft_${p}_s${s}=\([0-9]*\/[0-9]*\) .*/\1/p" <<< "$serial" | tail -n1)
		[ -n "$m" ] || die "$mode: no ksft_${p}_s${s} metric in $res/serial.log (the run did not get that far)"
		mine=$(awk -v p="$p" -v s="$s" '$1 == p && $2 == s { n++; if ($3 != "not_ok") ok++ }
			END { print ok + 0 "/" n + 0 }' <<< "$results")
		[ "$mine" = "$m" ] || die "$mode: $p stage $s: the metric says $m, the result lines give $mine (garbled serial log?)"
		[ "${m#*/}" != 0 ] || die "$mode: $p stage $s: no test result at all"
		log "$mode: $p stage $s: $m ok (SKIP counted as ok)"
	done
	dup=$(awk '{ $3 = ""; print }' <<< "$results" | sort | uniq -d)
	[ -z "$dup" ] || die "$mode: a test reported twice: $dup"
	secs=$(sed -n 's/.*IOMMULU-METRIC: ksft_iommufd_seconds=\([0-9.]*\) .*/\1/p' <<< "$serial" | tail -n1)
	out=$outdir/pristine-results.$mode
	{
		echo "# Upstream kselftest results on the PRISTINE kernel, $mode mode: the baseline the"
		echo "# selftests scenario compares the patched kernel with, test by test (lib-selftests.sh)."
		echo "# Measured, never edited by hand; regenerate with the command below."
		echo "# command: $cmd"
		echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "# repository: $(git -C "$repo" log -1 --format='%h %s' 2>/dev/null | cut -c1-100)"
		echo "# kernel: linux-source-7.3 $(info source_version), no patches, $(info kernel_release), cache key $(info key)"
		echo "# config: build-kernel.sh (x86_64_defconfig + kvm_guest.config, trimmed) + kernel-patches/config.fragment"
		echo "#   fragment_sha256=$(info fragment_sha256)"
		echo "# programs: tools/testing/selftests/{iommu/iommufd,liveupdate/{liveupdate,luo_kexec_simple,luo_multi_session}}"
		echo "#   of the pristine tree, built by tests/vm/build-selftests.sh against its headers"
		echo "# run: selftests scenario, --iommu $mode, $verdict, $(( $(date +%s) - ts )) s wall${secs:+; iommufd took $secs s of guest time}"
		echo "# PROGRAM STAGE RESULT TEST (RESULT: ok, not_ok or skip; the kexec programs print no TAP: one test each)"
		printf '%s\n' "$results"
	} > "$out.tmp"
	mv "$out.tmp" "$out"
	log "wrote $out"
done
log "done in $(( $(date +%s) - t0 )) s"
