#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# check-exports.sh LIBRARY HEADER...
# The shared library must export exactly the functions declared in the
# public headers, each versioned LIBIOMMULU_0.1, and nothing else: this
# catches a function added to a header but not to libiommulu.map (or not
# marked _public_), and an internal helper leaking out.
set -eu
lib=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

grep -ho 'iommulu_[a-z0-9_]*(' "$@" | tr -d '(' | sort -u >"$tmp/declared"
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sort >"$tmp/exported"

status=0
if grep -v '@@LIBIOMMULU_0\.1$' "$tmp/exported"; then
	echo "^ exported without the LIBIOMMULU_0.1 version" >&2
	status=1
fi
sed 's/@@.*//' "$tmp/exported" >"$tmp/names"
if ! diff -u "$tmp/declared" "$tmp/names"; then
	echo "exports differ from the public headers (- declared only, + exported only)" >&2
	status=1
fi
[ $status -eq 0 ] && echo "check-exports: $(wc -l <"$tmp/names") versioned symbols, matching the headers"
exit $status
