#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Short libFuzzer pass: run-fuzz.sh FUZZER WORKDIR SEEDS DICT [SECONDS]
# New inputs go to WORKDIR (in the build tree); SEEDS is only read.
# SECONDS defaults to $IOMMULU_FUZZ_SECONDS or 30.
set -eu
fuzzer=$1 work=$2 seeds=$3 dict=$4
secs=${5:-${IOMMULU_FUZZ_SECONDS:-30}}
mkdir -p "$work"
exec "$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
	-dict="$dict" -print_final_stats=1 "$work" "$seeds"
