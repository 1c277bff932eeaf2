#!/usr/bin/env bash
# Run every test suite of iommu-lud on a Debian 12 host, as root:
#   1. install dependencies (apt; mirror taken from this host's apt config)
#   2. build with -Werror and run the unit and integration suites
#   3. the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   4. a short libFuzzer pass over the manifest parser (clang)
#   5. install into a scratch root: pkg-config, a consumer, exported symbols
#   6. the virtual host: patched kernel + Debian sid guest under QEMU, kexec
#      scenarios (skip with IOMMULU_SKIP_VM=1 for a quick local run)
# Ends with one line "N passed, M failed[, K skipped]"; exits non-zero on
# any failure.
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
out=${IOMMULU_TEST_OUT:-$src/build-test}
mkdir -p "$out"

passed=0 failed=0 skipped=0
declare -a summary=()
t_all=$(date +%s)

note() { printf '\n==== %s\n' "$*"; }

# count_meson BUILDDIR LABEL: add the results of the last `meson test`.
count_meson() {
	local log=$1/meson-logs/testlog.json p f s
	[ -s "$log" ] || { failed=$((failed + 1)); summary+=("$2: no test log"); return; }
	p=$(jq -s '[.[] | select(.result == "OK" or .result == "EXPECTEDFAIL")] | length' "$log")
	f=$(jq -s '[.[] | select(.result == "FAIL" or .result == "TIMEOUT" or .result == "UNEXPECTEDPASS" or .result == "ERROR")] | length' "$log")
	s=$(jq -s '[.[] | select(.result == "SKIP")] | length' "$log")
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	summary+=("$2: $p passed, $f failed, $s skipped")
}

# stage NAME CMD...: run a step that is itself one check.
stage() {
	local name=$1 t0 rc
	shift
	note "$name"
	t0=$(date +%s)
	"$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1)); summary+=("$name: ok ($(( $(date +%s) - t0 )) s)")
	else
		failed=$((failed + 1)); summary+=("$name: FAILED rc=$rc ($(( $(date +%s) - t0 )) s)")
	fi
	return $rc
}

meson_suite() {	# BUILDDIR LABEL SETUP-ARGS...
	local dir=$1 label=$2 t0
	shift 2
	note "$label: build"
	t0=$(date +%s)
	if ! { meson setup --wipe "$dir" "$@" >"$dir.setup.log" 2>&1 || meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; }; then
		cat "$dir.setup.log"; failed=$((failed + 1)); summary+=("$label: meson setup FAILED"); return 1
	fi
	if ! ninja -C "$dir"; then
		failed=$((failed + 1)); summary+=("$label: build FAILED"); return 1
	fi
	note "$label: test"
	meson test -C "$dir" --print-errorlogs --num-processes 2 --no-suite fuzz --no-suite vm
	count_meson "$dir" "$label"
	summary[-1]+=" ($(( $(date +%s) - t0 )) s)"
}

stage "dependencies" bash scripts/install-deps.sh vm || {
	echo "cannot install dependencies"; echo "$passed passed, $failed failed"; exit 1; }

# The virtual host's two slow builds, the kernel and the guest's base image
# (mmdebstrap, mostly waiting on apt), start now in the background: they
# overlap the userspace suites, whose integration tests leave the CPUs idle
# much of the time.  run-all.sh later finds them cached, or waits for the
# build still holding the lock.  Their output goes to a log; a failure shows
# again, with its message, when run-all.sh retries the build.
prebuild_pids=()
if [ "${IOMMULU_SKIP_VM:-0}" != 1 ]; then
	note "virtual host: kernel and base image build in the background (logs: $out/prebuild-*.log)"
	bash tests/vm/build-kernel.sh --quiet > "$out/prebuild-kernel.log" 2>&1 &
	prebuild_pids+=($!)
	bash tests/vm/build-rootfs.sh --base-only > "$out/prebuild-base.log" 2>&1 &
	prebuild_pids+=($!)
fi

meson_suite "$out/gcc" "unit+integration (gcc, -Werror)"
meson_suite "$out/asan" "unit+integration (ASan+UBSan)" \
	-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

if [ -d "$out/gcc" ]; then
	stage "install check" bash scripts/check-install.sh "$out/gcc"
fi

note "fuzz: manifest parser (clang libFuzzer)"
if CC=clang meson setup --wipe "$out/fuzz" -Dfuzz=enabled -Dtests=true >"$out/fuzz.setup.log" 2>&1 ||
   CC=clang meson setup "$out/fuzz" -Dfuzz=enabled -Dtests=true >"$out/fuzz.setup.log" 2>&1; then
	if ninja -C "$out/fuzz" >"$out/fuzz.build.log" 2>&1; then
		meson test -C "$out/fuzz" --suite fuzz --print-errorlogs
		count_meson "$out/fuzz" "fuzz"
	else
		grep -E -A3 'error|FAILED' "$out/fuzz.build.log" | head -n 40
		failed=$((failed + 1)); summary+=("fuzz: clang build FAILED (log: $out/fuzz.build.log)")
	fi
else
	cat "$out/fuzz.setup.log"; failed=$((failed + 1)); summary+=("fuzz: meson setup FAILED")
fi

if [ "${IOMMULU_SKIP_VM:-0}" = 1 ]; then
	summary+=("virtual host: skipped (IOMMULU_SKIP_VM=1)")
else
	note "virtual host (tests/vm/run-all.sh)"
	t0=$(date +%s)
	for pid in "${prebuild_pids[@]}"; do
		wait "$pid" && continue
		echo "a background build failed (run-all.sh retries it):"
		tail -n 30 "$out"/prebuild-*.log
	done
	bash tests/vm/run-all.sh 2>&1 | tee "$out/vm.log"
	rc=${PIPESTATUS[0]}
	line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$out/vm.log" | tail -n1)
	if [ -n "$line" ]; then
		vp=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
		vf=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
		vs=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
		passed=$((passed + vp)); failed=$((failed + vf)); skipped=$((skipped + ${vs:-0}))
	fi
	if [ "$rc" -ne 0 ] && { [ -z "$line" ] || [ "${vf:-0}" -eq 0 ]; }; then
		failed=$((failed + 1))
	fi
	summary+=("virtual host: ${line:-no summary} rc=$rc ($(( $(date +%s) - t0 )) s)")
fi

note "summary ($(( $(date +%s) - t_all )) s)"
printf '  %s\n' "${summary[@]}"
echo
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
