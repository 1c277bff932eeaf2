# Helpers of the selftests scenario (sourced by its stage scripts).

# run_ksft NAME CMD...: run one kselftest program and show its TAP output.
# Passes (returns 0) only if the program exited 0, printed a plan "1..N"
# with N > 0, N "ok" results, no "not ok" and no SKIP; otherwise prints
# IOMMULU-FAIL lines and returns 1.  Reports "NAME=passed/planned" as a
# metric either way.
run_ksft() {
	local name=$1 out rc plan n_ok bad=0
	shift
	info "running $name: $*"
	out=$("$@" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed "s|^|  $name: |"
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

# run_ksft_holder NAME VAR=VALUE PROG ARGS...: stage 1 of a two-stage LUO
# selftest, with VAR=VALUE in its environment.  Its forked child keeps the
# LUO sessions open until the kexec (../liveupdate/do_kexec.sh kexecs with
# no shutdown at all).  Here systemctl kexec shuts the system down first,
# so the program runs in its own scope that the shutdown transaction leaves
# alone (DefaultDependencies=no) and whose processes survive
# systemd-shutdown's final kill (SurviveFinalKillSignal=yes, which alone was
# seen to suffice; argv[0] starts with '@' as a second exemption).
run_ksft_holder() {
	local name=$1 envvar=$2 prog=$3
	shift 3
	run_ksft "$name" systemd-run --scope --quiet --unit="ksft-$name" \
		-p DefaultDependencies=no -p SurviveFinalKillSignal=yes \
		"$PWD/exec-at" "$envvar" "$prog" "$@" ||
		return 1
	systemctl -q is-active "ksft-$name.scope" ||
		{ echo "IOMMULU-FAIL: $name: no process holds its sessions (ksft-$name.scope inactive)"; return 1; }
	info "ok: ksft-$name.scope holds the sessions: pid(s) $(systemctl show -P ControlGroup "ksft-$name.scope" |
		sed 's|^|/sys/fs/cgroup|;s|$|/cgroup.procs|' | xargs cat | xargs)"
}

# The programs were built on the host (build hook); say which, or why not.
selftests_check_build() {
	if [ -e build-failed ]; then
		sed 's/^/  build: /' build-failed
		fail "the selftests were not built on the host (see the build log above)"
	fi
	info "selftests: $(cat origin 2>/dev/null)"
	local p
	for p in luo_kexec_vfio iommufd_liveupdate iommufd_liveupdate_kexec; do
		[ -x "bin/$p" ] || fail "bin/$p missing in the guest"
	done
}
