#!/usr/bin/env bash
# Install everything iommu-lud needs on a Debian 12 host, as root.
#   install-deps.sh build   - userspace build and unit/integration tests
#   install-deps.sh vm      - additionally: kernel build and virtual host
# The Debian mirror is taken from this machine's own apt configuration.
set -euo pipefail

what=${1:-build}
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
export DEBIAN_FRONTEND=noninteractive

mirror_uri() {
	local uri
	uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
	if [ -z "$uri" ]; then
		uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
	fi
	[ -n "$uri" ] || { echo "install-deps: no Debian mirror in apt configuration" >&2; exit 1; }
	echo "${uri%/}"
}

BUILD_PKGS=(build-essential pkg-config meson ninja-build libsystemd-dev libjson-c-dev zlib1g-dev liblzma-dev
	libcmocka-dev clang llvm dbus dbus-bin systemd jq python3 file
	python3-ply python3-git)  # the kernel's checkpatch.pl (spdxcheck.py)
VM_PKGS=(qemu-system-x86 qemu-utils mmdebstrap ccache bc bison flex libelf-dev libssl-dev
	cpio xz-utils zstd erofs-utils kmod rsync dwarves perl git busybox-static
	libcap-dev)  # static libcap.a for the iommufd selftest (build-selftests.sh)

stamp=/var/lib/iommu-lud-deps.$what
if [ -e "$stamp" ] && [ "$(cat "$stamp")" = "$(sha256sum "$0" | cut -d' ' -f1)" ]; then
	exit 0
fi

if [ "$what" = vm ]; then
	m=$(mirror_uri)
	cat > /etc/apt/sources.list.d/iommu-lud-trixie-backports.sources <<EOT
Types: deb
URIs: $m
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
	# Never let trixie packages replace bookworm ones implicitly.
	cat > /etc/apt/preferences.d/iommu-lud-trixie-backports <<EOT
Package: *
Pin: release n=trixie-backports
Pin-Priority: 100
EOT
fi

apt-get "${APT_OPTS[@]}" update -q
apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${BUILD_PKGS[@]}"
if [ "$what" = vm ]; then
	apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${VM_PKGS[@]}"
	# Only this one package comes from trixie-backports; its dependencies stay
	# on bookworm (with -t, apt would also upgrade linux-libc-dev to 7.3).
	apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends linux-source-7.3/trixie-backports
fi
sha256sum "$0" | cut -d' ' -f1 > "$stamp"
