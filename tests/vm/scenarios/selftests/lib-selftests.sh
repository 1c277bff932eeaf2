# Helpers of the selftests scenario (sourced by its stage scripts).

# ksft_exec NAME CMD...: run one kselftest program, show its output (each
# line prefixed with NAME), and leave the output in KSFT_OUT and the exit
# status in KSFT_RC.
ksft_exec() {
	local name=$1
	shift
	info "running $name: $*"
	KSFT_OUT=$("$@" 2>&1)
	KSFT_RC=$?
	printf '%s\n' "$KSFT_OUT" | sed "s|^|  $name: |"
}

# run_ksft NAME CMD...: the strict rule of the kernel series' own
# selftests.  Passes (returns 0) only if the program exited 0, printed a
# plan "1..N" with N > 0, N "ok" results, no "not ok" and no SKIP; otherwise
# prints IOMMULU-FAIL lines and returns 1.  Reports "NAME=passed/planned"
# as a metric either way.
run_ksft() {
	local name=$1 out rc plan n_ok bad=0
	ksft_exec "$@"
	out=$KSFT_OUT rc=$KSFT_RC
	plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\).*/\1/p' <<< "$out" | head -n1)
	n_ok=$(grep -cE '^ok [0-9]+' <<< "$out")
	metric "ksft_${name}_s$IOMMULU_STAGE" "$n_ok/${plan:-?}" "ok rc=$rc"
	if grep -qE '^not ok' <<< "$out"; then
		grep -E '^not ok' <<< "$out" | sed "s|^|IOMMULU-FAIL: $name: |"
		bad=1
	fi
	if grep -qiE '^ok [0-9]+.*# *SKIP|^1\.\.0|^Bail out' <<< "$out"; then
		grep -iE '# *SKIP|^1\.\.0|^Bail out' <<< "$out" | sed "s|^|IOMMULU-FAIL: $name: |"
		bad=1
	fi
	if [ "$rc" != 0 ]; then
		echo "IOMMULU-FAIL: $name exited with $rc"
		bad=1
	fi
	if [ -z "$plan" ] || [ "$plan" = 0 ] || [ "$n_ok" != "$plan" ]; then
		echo "IOMMULU-FAIL: $name: $n_ok ok result(s) for a plan of '${plan:-none}'"
		bad=1
	fi
	[ "$bad" = 0 ] && info "ok: $name: $n_ok/$plan ok"
	return "$bad"
}

# holder_scope NAME VAR=VALUE... PROG ARGS...: run stage 1 of a two-stage LUO
# selftest, with each VAR=VALUE in its environment, so that its forked child can
# keep the LUO sessions open until the kexec (../liveupdate/do_kexec.sh
# kexecs with no shutdown at all).  Here systemctl kexec shuts the system
# down first, so the program runs in its own scope that the shutdown
# transaction leaves alone (DefaultDependencies=no) and whose processes
# survive systemd-shutdown's final kill (SurviveFinalKillSignal=yes, which
# alone was seen to suffice; argv[0] starts with '@' as a second exemption).
holder_scope() {
	local name=$1
	shift
	systemd-run --scope --quiet --unit="ksft-$name" \
		-p DefaultDependencies=no -p SurviveFinalKillSignal=yes \
		"$PWD/exec-at" "$@"
}

# holder_check NAME: a process of holder_scope NAME is still alive.
holder_check() {
	systemctl -q is-active "ksft-$1.scope" ||
		{ echo "IOMMULU-FAIL: $1: no process holds its sessions (ksft-$1.scope inactive)"; return 1; }
	info "ok: ksft-$1.scope holds the sessions: pid(s) $(systemctl show -P ControlGroup "ksft-$1.scope" |
		sed 's|^|/sys/fs/cgroup|;s|$|/cgroup.procs|' | xargs cat | xargs)"
}

# run_ksft_holder NAME VAR=VALUE... PROG ARGS...: run_ksft on holder_scope.
run_ksft_holder() {
	run_ksft "$1" holder_scope "$@" && holder_check "$1"
}

# The upstream suites (iommufd, liveupdate, luo_kexec_simple,
# luo_multi_session) are held to no regression against the pristine 7.3
# with the same config, test by test: pristine-results.MODE (this
# directory) holds each test's result there, one line
# "PROGRAM STAGE RESULT TEST" (RESULT: ok, not_ok or skip), as
# tests/vm/kernel-suites-baseline.sh measured it; never edited by hand.

# The kernel under test: "pristine" (baseline run: upstream suites only) or
# "series" (from bin/kind, written by the build hook).
selftests_kind() { cat bin/kind 2>/dev/null || echo series; }

# tap_results: "RESULT TEST" for each TAP result line on stdin; RESULT is
# ok, not_ok or skip (an "ok" with a SKIP directive).
tap_results() {
	awk 'match($0, /^(not )?ok [0-9]+/) {
		res = /^not / ? "not_ok" : "ok"
		t = substr($0, RLENGTH + 1)
		dir = ""
		if ((i = index(t, "#")) > 0) { dir = substr(t, i + 1); t = substr(t, 1, i - 1) }
		gsub(/^[ \t]+|[ \t]+$/, "", t)
		if (res == "ok" && dir ~ /^[ \t]*[Ss][Kk][Ii][Pp]/) res = "skip"
		print res, (t == "" ? "(unnamed)" : t)
	}'
}

# run_upstream [--holder VAR=VALUE] [--no-tap MARKER] NAME CMD...: run an
# upstream suite program (with --holder: stage 1 of a kexec test, in
# holder_scope) and print each test's result as
# "IOMMULU-KSFT: NAME STAGE RESULT TEST" (what kernel-suites-baseline.sh
# collects).  --no-tap MARKER: the program prints no TAP results (upstream's
# luo_kexec_simple and luo_multi_session, which upstream's own runner judges
# by exit status and a "TEST PASSED" line), so it is one test, named NAME:
# ok if it exited 0, printed a line containing MARKER and no "Bail out!" or
# SKIP (and, with --holder, its scope still holds the sessions).
# On the patched kernel each test's result must be the pristine kernel's
# (pristine-results.MODE): a test that differs either way, is missing or is
# new fails the run.  The metric shows both counts:
# "ksft_NAME_sN=OK/TESTS pristine=OK/TESTS".  On the pristine kernel
# nothing fails: the results are only recorded.
run_upstream() {
	local holder= envvar= marker= name res results here want diffs base
	if [ "$1" = --holder ]; then holder=1 envvar=$2; shift 2; fi
	if [ "$1" = --no-tap ]; then marker=$2; shift 2; fi
	name=$1
	shift
	if [ -n "$holder" ]; then
		ksft_exec "$name" holder_scope "$name" "$envvar" "$@"
	else
		ksft_exec "$name" "$@"
	fi
	if [ -n "$marker" ]; then
		res=not_ok
		if [ "$KSFT_RC" = 0 ] && grep -qF -- "$marker" <<< "$KSFT_OUT" &&
			! grep -qiE '^Bail out|# *SKIP' <<< "$KSFT_OUT"; then
			res=ok
		fi
		[ -z "$holder" ] || [ "$res" != ok ] || holder_check "$name" || res=not_ok
		results="$res $name"
	else
		results=$(tap_results <<< "$KSFT_OUT")
	fi
	[ -n "$results" ] || info "$name: no test result at all (exit status $KSFT_RC)"
	[ -z "$results" ] || sed "s|^|IOMMULU-KSFT: $name $IOMMULU_STAGE |" <<< "$results"
	# Counts as TAP's: a SKIP is an "ok" (its number is shown too).
	here="$(grep -cE '^(ok|skip) ' <<< "$results")/$(grep -c . <<< "$results")"
	if [ "$(selftests_kind)" = pristine ]; then
		metric "ksft_${name}_s$IOMMULU_STAGE" "$here" "skip=$(grep -c '^skip ' <<< "$results") (pristine kernel: recorded, not judged)"
		return 0
	fi
	base=pristine-results.$IOMMULU_MODE
	want=$(awk -v p="$name" -v s="$IOMMULU_STAGE" '/^#/ { next }
		$1 == p && $2 == s { n++; if ($3 != "not_ok") ok++; if ($3 == "skip") sk++ }
		END { if (n) print ok + 0 "/" n, "skip=" sk + 0 }' "$base" 2>/dev/null)
	metric "ksft_${name}_s$IOMMULU_STAGE" "$here" "pristine=${want%% *} skip=$(grep -c '^skip ' <<< "$results") pristine_${want#* }"
	if [ -z "$want" ]; then
		echo "IOMMULU-FAIL: $name: no pristine results for stage $IOMMULU_STAGE in $base (run tests/vm/kernel-suites-baseline.sh)"
		return 1
	fi
	# Each test whose result differs: "TEST: pristine RESULT, here RESULT".
	diffs=$(awk -v p="$name" -v s="$IOMMULU_STAGE" '
		FNR == NR {
			if (/^#/ || $1 != p || $2 != s) next
			t = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", t); was[t] = $3; next
		}
		{ t = $0; sub(/^[^ ]+ /, "", t); now[t] = $1 }
		END {
			for (t in was) {
				r = "absent"
				if (t in now) r = now[t]
				if (r != was[t]) print t ": pristine " was[t] ", here " r
			}
			for (t in now) if (!(t in was)) print t ": pristine absent, here " now[t]
		}' "$base" - <<< "$results" | sort)
	if [ -n "$diffs" ]; then
		sed "s|^|IOMMULU-FAIL: $name: differs from pristine 7.3: |" <<< "$diffs"
		echo "IOMMULU-FAIL: $name: $(grep -c . <<< "$diffs") test(s) differ from pristine 7.3 (a regression, or a fix: then regenerate the baseline with tests/vm/kernel-suites-baseline.sh)"
		return 1
	fi
	info "ok: $name: every test as on pristine 7.3 ($here here, ${want%% *} there)"
}

# The programs were built on the host (build hook); say which, or why not.
selftests_check_build() {
	if [ -e build-failed ]; then
		sed 's/^/  build: /' build-failed
		fail "the selftests were not built on the host (see the build log above)"
	fi
	info "selftests: $(cat origin 2>/dev/null) ($(selftests_kind))"
	local p progs=(iommufd liveupdate luo_kexec_simple luo_multi_session)
	[ "$(selftests_kind)" = pristine ] ||
		progs+=(luo_kexec_vfio iommufd_liveupdate iommufd_liveupdate_kexec)
	for p in "${progs[@]}"; do
		[ -x "bin/$p" ] || fail "bin/$p missing in the guest"
	done
}
