#!/usr/bin/env bash
# Build the kernel selftests the virtual host runs (selftests scenario).
#
#   tests/vm/build-selftests.sh KERNEL_DIR
#
# Builds, statically linked (the guest is Debian sid, this host Debian 12),
# the kernel series' own selftests
#   liveupdate/luo_kexec_vfio            (patch 0007)
#   iommu/iommufd_liveupdate             (patch 0026)
#   iommu/iommufd_liveupdate_kexec       (patch 0026)
# and the kernel's upstream suites that the series must not regress
#   iommu/iommufd                        (needs CONFIG_IOMMUFD_TEST; libcap)
#   liveupdate/liveupdate
#   liveupdate/luo_kexec_simple, liveupdate/luo_multi_session (kexec)
# from the tools/ tree of the pristine kernel source (the git repository
# build-kernel.sh keeps in $IOMMULU_CACHE/src/, tag "pristine") with the
# tools/ part of every patch in kernel-patches/series applied, against the
# uAPI headers of KERNEL_DIR (make headers_install).  KERNEL_DIR must have
# been built from the same series: the patch hash in KERNEL_DIR/info is
# compared with the series of this checkout (IOMMULU_SERIES overrides the
# series file, as for build-kernel.sh).
#
# A pristine KERNEL_DIR (build-kernel.sh --pristine: no patches) gets the
# upstream suites only, from the untouched tools/ tree: the baseline of
# tests/vm/kernel-suites-baseline.sh.  bin/kind then says "pristine"
# (otherwise "series").
#
# Output: $IOMMULU_CACHE/selftests/<key>/bin/<program>, key = hash(kernel
# key, this script).  A kernel series change gives a new kernel key and
# thus a rebuild; nothing else does.  The directory is printed as the last
# line on stdout; progress goes to stderr.  This is separate from
# build-kernel.sh on purpose: that script's hash is part of the kernel cache
# key, and the selftests do not need a kernel rebuild.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IOMMULU_CACHE:-/var/cache/iommu-lud}
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
PATCH_DIR=$repo/kernel-patches
kdir=${1:?usage: build-selftests.sh KERNEL_DIR}
SERIES=${IOMMULU_SERIES:-$PATCH_DIR/series}
SERIES_PROGS=(liveupdate/luo_kexec_vfio iommu/iommufd_liveupdate iommu/iommufd_liveupdate_kexec)
UPSTREAM_PROGS=(iommu/iommufd liveupdate/liveupdate liveupdate/luo_kexec_simple liveupdate/luo_multi_session)

log() { echo "build-selftests: $*" >&2; }
die() { echo "build-selftests: ERROR: $*" >&2; exit 1; }

[ -f "$kdir/info" ] && [ -f "$kdir/ok" ] || die "$kdir is not a kernel built by build-kernel.sh"
[ -f "$kdir/headers/include/linux/liveupdate.h" ] || die "$kdir/headers lacks linux/liveupdate.h"
kkey=$(sed -n 's/^key=//p' "$kdir/info")
ksrc=$(sed -n 's/^source_version=//p' "$kdir/info")
kpatch=$(sed -n 's/^patch_sha256=//p' "$kdir/info")
knpatches=$(sed -n 's/^patches=//p' "$kdir/info")

# A pristine kernel gets the upstream suites from the untouched tree; any
# other must come from the series of this checkout, hashed as
# build-kernel.sh does.
kind=series
PROGS=("${SERIES_PROGS[@]}" "${UPSTREAM_PROGS[@]}")
if [ "$knpatches" = 0 ]; then
	kind=pristine
	PROGS=("${UPSTREAM_PROGS[@]}")
	SERIES=/dev/null
fi
patches=()
while read -r line; do
	line=${line%%#*}
	line=$(echo "$line" | xargs)
	[ -n "$line" ] || continue
	[ -f "$PATCH_DIR/$line" ] || die "series lists $line, but kernel-patches/$line does not exist"
	patches+=("$PATCH_DIR/$line")
done < <(cat "$SERIES" 2>/dev/null)
phash=$( { for p in "${patches[@]}"; do basename "$p"; sha256sum < "$p"; done; } | sha256sum | cut -c1-64)
[ "$phash" = "$kpatch" ] ||
	die "$kdir was built from another series than $SERIES of $repo (rebuild the kernel first)"

key=$(printf '%s\n' "$kkey" "$(sha256sum < "$0")" | sha256sum | cut -c1-16)
out=$CACHE/selftests/$key
if [ -f "$out/ok" ]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

src=$CACHE/src/linux-source-7.3-$ksrc
git -C "$src" rev-parse -q --verify refs/tags/pristine > /dev/null ||
	die "no pristine kernel tree in $src (run build-kernel.sh first)"

mkdir -p "$CACHE/selftests"
exec 9> "$CACHE/selftests/.lock"
flock 9
[ -f "$out/ok" ] && { log "cached (built meanwhile): $out"; echo "$out"; exit 0; }

t0=$(date +%s.%N)
rm -rf "$out.tmp"
mkdir -p "$out.tmp/tree" "$out.tmp/bin" "$out.tmp/obj"
# Only tools/ is needed, plus the make fragment and the one header outside
# it that the selftests include (iommufd.c includes the mock IOMMU's
# drivers/iommu/iommufd/iommufd_test.h); git archive reads the object store
# and does not touch the work trees build-kernel.sh uses.
outside=(scripts/subarch.include drivers/iommu/iommufd/iommufd_test.h)
git -C "$src" archive refs/tags/pristine tools "${outside[@]}" | tar -x -C "$out.tmp/tree"
for p in "${patches[@]}"; do
	# git apply outside a repository applies relative to the current
	# directory; paths outside tools/ and those headers (kernel code,
	# MAINTAINERS) are skipped.
	inc=(--include='tools/*')
	for f in "${outside[@]}"; do inc+=(--include="$f"); done
	(cd "$out.tmp/tree" && git apply "${inc[@]}" "$p") ||
		die "applying the tools/ part of $(basename "$p") failed"
done

st=$out.tmp/tree/tools/testing/selftests
mkargs=(CC="ccache gcc" KHDR_INCLUDES="-isystem $kdir/headers/include" LDFLAGS=-static V=1)
for prog in "${PROGS[@]}"; do
	dir=${prog%/*} name=${prog##*/}
	# Without libcap (LDLIBS=) except for iommufd, which drops CAP_IPC_LOCK
	# with it (libcap-dev's static libcap.a).
	libs=
	[ "$prog" = iommu/iommufd ] && libs=-lcap
	mkdir -p "$out.tmp/obj/$dir"
	nice -n 10 make -C "$st/$dir" -j2 OUTPUT="$out.tmp/obj/$dir" "${mkargs[@]}" LDLIBS="$libs" \
		"$out.tmp/obj/$dir/$name" >> "$out.tmp/build.log" 2>&1 ||
		{ tail -n 30 "$out.tmp/build.log" >&2; die "building $prog failed (log: $out.tmp/build.log)"; }
	install -m 0755 "$out.tmp/obj/$dir/$name" "$out.tmp/bin/$name"
done
echo "$kind" > "$out.tmp/bin/kind"
warnings=$(grep -c 'warning:' "$out.tmp/build.log" || true)
[ "$warnings" = 0 ] || { grep 'warning:' "$out.tmp/build.log" >&2; log "WARNING: $warnings compiler warning(s)"; }
rm -rf "$out.tmp/tree" "$out.tmp/obj"
cat > "$out.tmp/info" <<EOF
kernel_key=$kkey
kernel_dir=$kdir
kind=$kind
programs=${PROGS[*]}
warnings=$warnings
build_seconds=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
EOF
touch "$out.tmp/ok"
rm -rf "$out"
mv "$out.tmp" "$out"
log "built ${#PROGS[@]} selftests in $(sed -n 's/^build_seconds=//p' "$out/info") s: $out/bin"
echo "$out"
