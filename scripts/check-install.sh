#!/usr/bin/env bash
# Install a build into a scratch root, then check what a consumer sees:
# pkg-config works, a program builds and runs against the installed
# library, libiommulu.so.0 exports only versioned public symbols, and the
# manual pages are installed with their paths filled in, and iommu-luctl
# with its bash completion.
#   check-install.sh BUILDDIR
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/.." && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

meson install -C "$build" --destdir "$root" >/dev/null
pcdir=$(dirname "$(find "$root" -name libiommulu.pc | head -n1)")
[ -n "$pcdir" ] || { echo "check-install: libiommulu.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$root
flags=$(pkg-config --cflags --libs libiommulu)
echo "pkg-config --cflags --libs libiommulu: $flags"

libdir=$(dirname "$(find "$root" -name 'libiommulu.so.0' | head -n1)")
cc -std=gnu11 -Wall -Wextra -Werror -o "$root/consumer" "$src/tests/install/consumer.c" $flags
LD_LIBRARY_PATH=$libdir "$root/consumer"

syms=$(nm -D --defined-only "$libdir/libiommulu.so.0" | awk '{print $3}')
bad=$(printf '%s\n' "$syms" | grep -v '@@LIBIOMMULU_' | grep -v '^LIBIOMMULU_' || true)
if [ -n "$bad" ]; then
	echo "check-install: unversioned or private exports:" >&2
	printf '  %s\n' $bad >&2
	exit 1
fi
n=$(printf '%s\n' "$syms" | grep -c '@@LIBIOMMULU_' || true)
nonapi=$(printf '%s\n' "$syms" | grep '@@LIBIOMMULU_' | grep -v '^iommulu_' || true)
if [ -n "$nonapi" ]; then
	echo "check-install: exports outside the iommulu_ namespace: $nonapi" >&2
	exit 1
fi
echo "check-install: $n versioned public symbols, no others"

# The manual pages: installed, and every @PLACEHOLDER@ filled in.
for page in man8/iommu-lud.8 man5/iommu-lud.conf.5 man1/iommu-luctl.1; do
	f=$(find "$root" -path "*/share/man/$page" | head -n1)
	[ -n "$f" ] || { echo "check-install: $page was not installed" >&2; exit 1; }
	if grep -n '@[A-Z_]*@' "$f" >&2; then
		echo "check-install: $page has unfilled placeholders" >&2
		exit 1
	fi
done
echo "check-install: manual pages iommu-lud(8), iommu-lud.conf(5), iommu-luctl(1) installed"

# The polkit actions, where polkit looks for them.
[ -n "$(find "$root" -path '*/share/polkit-1/actions/org.iommulu.LiveUpdate1.policy' | head -n1)" ] ||
	{ echo "check-install: org.iommulu.LiveUpdate1.policy was not installed" >&2; exit 1; }
echo "check-install: polkit actions org.iommulu.LiveUpdate1.policy installed"

# iommu-luctl: in bindir, runs against the installed library, and its bash
# completion is where bash-completion looks (completionsdir, or
# $datadir/bash-completion/completions) and defines the completion.
luctl=$(find "$root" -path '*/bin/iommu-luctl' -type f | head -n1)
[ -n "$luctl" ] && [ -x "$luctl" ] || { echo "check-install: iommu-luctl was not installed in bindir" >&2; exit 1; }
out=$(LD_LIBRARY_PATH=$libdir "$luctl" --version)
[ "$out" = "iommu-luctl $(meson introspect --projectinfo "$build" | jq -r .version)" ] ||
	{ echo "check-install: installed iommu-luctl --version says '$out'" >&2; exit 1; }
comp=$(find "$root" -path '*/bash-completion/completions/iommu-luctl' -type f | head -n1)
[ -n "$comp" ] || { echo "check-install: the bash completion of iommu-luctl was not installed" >&2; exit 1; }
bash --norc --noprofile -c 'source "$1" && complete -p iommu-luctl | grep -q -- "-F _iommu_luctl"' _ "$comp" ||
	{ echo "check-install: $comp does not define the completion of iommu-luctl" >&2; exit 1; }
echo "check-install: iommu-luctl ($out) and its bash completion ${comp#"$root"} installed"
