#!/bin/bash
# systemd-analyze verify the service unit.  Any message fails the test,
# except that systemd < 254 does not know FileDescriptorStorePreserve= and
# says so once (the unit needs systemd >= 262 for LUO anyway).
set -u
unit=$1
ver=$(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$unit" 2>&1)
rc=$?
filtered=$out
if [ "${ver:-0}" -lt 254 ]; then
	filtered=$(grep -v -E "Unknown key.*'FileDescriptorStorePreserve'" <<<"$out")
fi
# verify also complains about unrelated units on some hosts; keep ours.
filtered=$(grep -F "$(basename "$unit")" <<<"$filtered" || true)
echo "systemd $ver, systemd-analyze verify exit $rc"
[ -n "$out" ] && echo "$out"
if [ $rc -ne 0 ] || [ -n "$filtered" ]; then
	echo "FAIL: $unit is not clean"
	exit 1
fi
echo "OK: $unit is clean"
