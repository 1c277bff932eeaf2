#!/usr/bin/env bash
# Build the guest root image of the iommu-lud virtual host.
#
#   tests/vm/build-rootfs.sh KERNEL_DIR
#   tests/vm/build-rootfs.sh --base-only     (only build/cache the base image)
#
# The guest's root file system is a read-only, uncompressed erofs image on a
# virtio-blk disk.  At boot, guest/overlay-init (the kernel's init=) puts a
# tmpfs overlay on it and execs systemd, so every boot, first or after a
# kexec, starts from the image as built, and several guests share one image.
# It replaced a 90 MB raw initramfs: the kernel had to write every file of it
# into the page cache at every boot, which took 1.3 s at the first boot but
# 25-30 s after a kexec under TCG (probably QEMU's self-modifying-code
# tracking: the new kernel writes into pages that held the old kernel's
# translated code).  From the disk, the guest reads only the files it opens,
# and QEMU's virtio-blk writes them into guest memory itself.  Figures:
# docs/virtual-host.md.
#   1. base:    Debian sid (minbase) with systemd 262, dbus, kexec-tools, ...
#               made by mmdebstrap, plus the guest configuration below.
#               Cached in $IOMMULU_CACHE/rootfs/base-<key>.cpio.zst, key =
#               hash(package list, the build_base recipe).  Mirror: taken from this
#               host's /etc/apt/sources.list.d/*.sources (never hard-coded).
#   2. overlay: this project's build (`meson install --destdir` of a
#               non-sanitized build dir), the harness's guest side
#               (tests/vm/guest/), every scenario (tests/vm/scenarios/), and
#               the kernel (KERNEL_DIR/bzImage as /boot/vmlinuz, which each
#               stage kexecs into, and its config as /boot/config-RELEASE).  Rebuilt on every call; cheap.
# The image is the base with the overlay copied over it, made with
# mkfs.erofs (about 3 s).  The disk survives every kexec unchanged, so the
# next kernel needs no initramfs: kexec loads /boot/vmlinuz from it.
#
# The resulting image is stored as $IOMMULU_CACHE/rootimg/<hash>.erofs (an
# identical rebuild reuses it) and its path is printed as the last line on
# stdout.  Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IOMMULU_CACHE:-/var/cache/iommu-lud}
kdir=${1:?usage: build-rootfs.sh KERNEL_DIR | --base-only}
base_only=0
if [ "$kdir" = --base-only ]; then
	base_only=1
elif [ ! -f "$kdir/bzImage" ]; then
	echo "build-rootfs: $kdir/bzImage missing" >&2; exit 1
fi

log() { echo "build-rootfs: $*" >&2; }
die() { echo "build-rootfs: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# Packages of the guest.  libsystemd0 comes with systemd; libjson-c5 is
# libiommulu's JSON dependency; jq lets stage scripts read busctl --json;
# qemu-system-x86 (no recommends) is the unmodified VMM that vmm/qemu/
# drives, for the qemu-* scenarios (an L2 guest, TCG inside TCG).
PKGS=(systemd systemd-sysv dbus kexec-tools pciutils libjson-c5 procps jq qemu-system-x86)
SUITE=sid

mirror_uri() {
	local uri
	uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
	if [ -z "$uri" ]; then
		uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
	fi
	[ -n "$uri" ] || die "no Debian mirror in this host's apt configuration"
	echo "${uri%/}"
}

mkdir -p "$CACHE/rootfs" "$CACHE/rootimg"

# ---------------------------------------------------------------- 1. base
build_base() {
	local t0 dir mirror
	t0=$(now)
	mirror=$(mirror_uri)
	dir=$CACHE/rootfs/base-$base_key.dir
	rm -rf "$dir"
	log "mmdebstrap --variant=minbase $SUITE (${PKGS[*]}) from the host's mirror"
	mmdebstrap --variant=minbase --format=directory --quiet \
		--include="$(IFS=,; echo "${PKGS[*]}")" \
		--aptopt='Acquire::Check-Valid-Until "false"' \
		--aptopt='Acquire::Languages "none"' \
		--aptopt='APT::Install-Recommends "false"' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		"$SUITE" "$dir" "$mirror" >&2 || die "mmdebstrap failed"

	# Guest configuration.  The kernel runs guest/overlay-init, which
	# mounts its tmpfs on /overlay; systemd must not think it is in an
	# initrd (no /etc/initrd-release) nor a first boot (empty
	# /etc/machine-id).
	mkdir -p "$dir/overlay"
	: > "$dir/etc/machine-id"
	echo iommulu-vm > "$dir/etc/hostname"
	: > "$dir/etc/fstab"
	# No login prompts, no periodic jobs, no first-boot wizard: the guest
	# only runs the scenario runner.
	local u
	for u in getty@.service serial-getty@.service console-getty.service \
		systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
		dpkg-db-backup.timer fstrim.timer e2scrub_all.timer \
		systemd-tmpfiles-clean.timer systemd-hwdb-update.service \
		ldconfig.service systemd-update-utmp.service \
		systemd-update-utmp-runlevel.service; do
		ln -sfn /dev/null "$dir/etc/systemd/system/$u"
	done
	# Boot time: the guest has one vCPU under TCG, so every unit that
	# starts competes with the ones the scenario needs (journald, dbus,
	# logind).  None of these has work to do in it: no modules, no
	# binfmt, no hugetlbfs, fuse, configfs or mqueue users, a root that is
	# new at every boot (so "needs update" units would run every time),
	# users already created by the packages, nobody logging in.  The
	# journal stays in /run: nothing reads a previous boot's journal.
	# Measured with systemd-analyze: see docs/virtual-host.md.
	for u in modprobe@.service kmod-static-nodes.service \
		dev-hugepages.mount dev-mqueue.mount tmp.mount \
		proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
		systemd-binfmt.service sys-fs-fuse-connections.mount \
		sys-kernel-config.mount sys-kernel-tracing.mount \
		systemd-journal-catalog-update.service systemd-update-done.service \
		systemd-journal-flush.service systemd-machine-id-commit.service \
		systemd-random-seed.service systemd-sysusers.service \
		systemd-sysctl.service systemd-remount-fs.service \
		systemd-tmpfiles-setup-dev-early.service systemd-tmpfiles-setup-dev.service \
		systemd-hibernate-clear.service systemd-pstore.service \
		systemd-ask-password-console.path systemd-ask-password-wall.path \
		systemd-user-sessions.service; do
		ln -sfn /dev/null "$dir/etc/systemd/system/$u"
	done
	mkdir -p "$dir/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\n' > "$dir/etc/systemd/journald.conf.d/volatile.conf"
	rm -rf "$dir/var/cache/apt"/*.bin "$dir/var/lib/apt/lists"/* "$dir/var/log"/*
	# Shrink the image: the guest never runs apt, dpkg scripts, perl or
	# iconv.  About a third of it.
	rm -rf "$dir"/usr/lib/x86_64-linux-gnu/gconv "$dir"/usr/lib/x86_64-linux-gnu/perl-base \
		"$dir"/usr/share/perl5 "$dir"/usr/bin/perl* "$dir"/usr/lib/x86_64-linux-gnu/libapt-* \
		"$dir"/usr/lib/apt "$dir"/usr/bin/apt* "$dir"/usr/bin/sqv "$dir"/var/cache/apt \
		"$dir"/var/cache/debconf "$dir"/usr/share/bash-completion "$dir"/usr/share/lintian \
		"$dir"/usr/share/common-licenses "$dir"/usr/share/doc "$dir"/usr/share/info \
		"$dir"/usr/lib/locale "$dir"/usr/share/i18n
	find "$dir/usr/share/zoneinfo" -mindepth 1 -maxdepth 1 ! -name UTC ! -name Etc -exec rm -rf {} +
	# QEMU: the qemu-* scenarios run x86_64 pc guests with -nodefaults and
	# no display: the i386 and microvm binaries (39 MB), other
	# architectures' firmware, NIC boot ROMs and keymaps are dead weight.
	rm -f "$dir"/usr/bin/qemu-system-i386 "$dir"/usr/bin/qemu-system-x86_64-microvm
	(cd "$dir/usr/share/qemu" && rm -rf skiboot.lid openbios-* slof.bin u-boot* palcode-* hppa-firmware* \
		s390-* efi-*.rom pxe-*.rom keymaps trace-events-all) || die "pruning QEMU's data failed"
	# Record what we got, for the docs and for debugging.
	dpkg-query --admindir="$dir/var/lib/dpkg" -W -f='${Package} ${Version}\n' > "$CACHE/rootfs/base-$base_key.packages"
	(cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 |
		nice -n 10 zstd -q -T2 -19 -o "$base.tmp" -f) || die "packing the base cpio failed"
	mv "$base.tmp" "$base"
	rm -rf "$dir"
	# Bases of other package lists or script versions are obsolete once
	# nobody used them for 12 hours (several branches share this cache).
	find "$CACHE/rootfs" -maxdepth 1 -name 'base-*' ! -name "base-$base_key.*" -mmin +720 -exec rm -rf {} +
	log "base image $(du -h "$base" | cut -f1) built in $(since "$t0") s ($(grep -E '^systemd ' "$CACHE/rootfs/base-$base_key.packages"))"
}

# The base is keyed by its recipe only (suite, packages, the build_base
# function), so that editing the overlay part of this script does not
# rebuild it.
base_key=$( { echo "$SUITE ${PKGS[*]}"; declare -f build_base mirror_uri; } | sha256sum | cut -c1-16)
base=$CACHE/rootfs/base-$base_key.cpio.zst

exec 8> "$CACHE/rootfs/.lock"
flock 8
if [ ! -s "$base" ]; then
	build_base
else
	touch "$base"
	log "base cached: $base"
fi
flock -u 8
if [ "$base_only" = 1 ]; then
	echo "$base"
	exit 0
fi

# ------------------------------------------------------- 2. project build
# A non-sanitized build of this checkout, installed with --prefix=/usr.
# Libraries go to /usr/lib (--libdir=lib): the loader searches it without an
# ld.so.cache entry, and the base image's cache knows nothing of our files.
t0=$(now)
bdir=$CACHE/build-vm/$(echo "$repo" | sha256sum | cut -c1-12)
stage=$(mktemp -d "$CACHE/rootimg/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$CACHE/build-vm"
exec 7> "$bdir.lock"
flock 7
if [ -f "$repo/meson.build" ]; then
	setup_args=(--prefix=/usr --libdir=lib --sysconfdir=/etc --localstatedir=/var
		--buildtype=debugoptimized -Db_sanitize=none -Dtests=true
		-Dsystemdsystemunitdir=/usr/lib/systemd/system
		-Ddbuspolicydir=/usr/share/dbus-1/system.d)
	# -Dfuzz exists in meson_options.txt; guard so an older tree still works.
	grep -q "'fuzz'" "$repo/meson_options.txt" 2>/dev/null && setup_args+=(-Dfuzz=disabled)
	if [ -f "$bdir/build.ninja" ]; then
		meson setup --reconfigure "$bdir" "$repo" "${setup_args[@]}" > "$bdir.setup.log" 2>&1 ||
			{ cat "$bdir.setup.log" >&2; die "meson setup --reconfigure failed"; }
	else
		rm -rf "$bdir"
		meson setup "$bdir" "$repo" "${setup_args[@]}" > "$bdir.setup.log" 2>&1 ||
			{ cat "$bdir.setup.log" >&2; die "meson setup failed"; }
	fi
	nice -n 10 ninja -C "$bdir" > "$bdir.ninja.log" 2>&1 ||
		{ tail -n 40 "$bdir.ninja.log" >&2; die "building the project failed (log: $bdir.ninja.log)"; }
	meson install -C "$bdir" --no-rebuild --quiet --destdir "$stage/root" > "$bdir.install.log" 2>&1 ||
		{ cat "$bdir.install.log" >&2; die "meson install failed"; }
else
	log "no meson.build in $repo: the guest gets the harness only"
fi
flock -u 7
mkdir -p "$stage/root"
log "project built and installed in $(since "$t0") s"

# Fold a non-merged-/usr layout into /usr: in sid /bin, /sbin and /lib are
# symlinks into /usr, and a cpio directory entry must not shadow them.
r=$stage/root
for d in bin sbin lib lib64; do
	if [ -d "$r/$d" ] && [ ! -L "$r/$d" ]; then
		mkdir -p "$r/usr/$d"
		cp -a "$r/$d/." "$r/usr/$d/"
		rm -rf "${r:?}/$d"
	fi
done

# ------------------------------------------------------- 3. harness files
g=$here/guest
install -D -m 0755 "$g/iommulu-vm-runner" "$r/usr/lib/iommulu-vm/runner"
install -D -m 0644 "$g/lib.sh" "$r/usr/lib/iommulu-vm/lib.sh"
install -D -m 0755 "$g/overlay-init" "$r/usr/lib/iommulu-vm/overlay-init"
install -D -m 0644 "$g/iommulu-vm-runner.service" "$r/etc/systemd/system/iommulu-vm-runner.service"
mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
ln -sfn ../iommulu-vm-runner.service "$r/etc/systemd/system/multi-user.target.wants/iommulu-vm-runner.service"
for s in "$here"/scenarios/*/; do
	[ -f "$s/scenario.conf" ] || continue
	n=$(basename "$s")
	mkdir -p "$r/usr/lib/iommulu-vm/scenarios/$n"
	cp -a "$s/." "$r/usr/lib/iommulu-vm/scenarios/$n/"
	# Units a scenario ships are installed, not enabled: stage scripts start them.
	if [ -d "$s/units" ]; then
		cp -a "$s/units/." "$r/etc/systemd/system/"
	fi
	# Config a scenario ships (e.g. /etc/iommu-lud/qemu/NAME.conf) goes
	# to /etc as on a host: it is there at every boot, before and after
	# each kexec, for every scenario (names must be unique).
	if [ -d "$s/etc" ]; then
		cp -a "$s/etc/." "$r/etc/"
	fi
	# An executable "build" hook puts host-built files into the scenario's
	# guest directory: `build KERNEL_DIR GUEST_DIR` (e.g. the kernel's
	# selftests).  A failing hook must not break the image of the other
	# scenarios: its log goes to GUEST_DIR/build-failed, which the
	# scenario's stage 1 reports.
	if [ -x "$s/build" ]; then
		if ! "$s/build" "$kdir" "$r/usr/lib/iommulu-vm/scenarios/$n" > "$stage/build-$n.log" 2>&1; then
			log "WARNING: build hook of scenario $n failed; the scenario will fail"
			tail -n 20 "$stage/build-$n.log" >&2
			cp "$stage/build-$n.log" "$r/usr/lib/iommulu-vm/scenarios/$n/build-failed"
		fi
	fi
done
# The kernel the guest kexecs into: the one it booted.  (QEMU's fw_cfg was
# tried instead: the guest reads it by port I/O, byte by byte, which took
# over two minutes for 8 MB under TCG; a copy here costs about a second.)
install -D -m 0644 "$kdir/bzImage" "$r/boot/vmlinuz"
# Its config under the name `iommu-luctl stage` looks for (config-RELEASE
# next to the image), so that the daemon can check what the kernel adopts.
krel=$(sed -n 's/^kernel_release=//p' "$kdir/info" 2>/dev/null)
[ -n "$krel" ] || krel=$(strings -n 8 "$kdir/bzImage" 2>/dev/null | sed -n 's/^\([0-9][^ ]*\) (.*#.*/\1/p' | head -n1)
[ -n "$krel" ] && [ -f "$kdir/config" ] && install -m 0644 "$kdir/config" "$r/boot/config-$krel"
: > "$r/usr/lib/iommulu-vm/build-info"
(cd "$repo" && git log -1 --format='commit=%H' 2>/dev/null || true) >> "$r/usr/lib/iommulu-vm/build-info"

overlay=$stage/overlay.cpio.zst
(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 |
	zstd -q -T2 -3 -o "$overlay" -f) || die "packing the overlay failed"

key=$( { echo "$base_key"; echo erofs-root; sha256sum < "$overlay"; } | sha256sum | cut -c1-16)
img=$CACHE/rootimg/$key.erofs
if [ ! -s "$img" ]; then
	tree=$stage/tree
	mkdir -p "$tree"
	zstd -q -d -c "$base" | (cd "$tree" && cpio --quiet -idmu --no-absolute-filenames) ||
		die "unpacking the base image failed"
	cp -a "$r/." "$tree/" || die "copying the overlay over the base failed"
	mkfs.erofs --quiet "$img.tmp.$$" "$tree" > "$stage/mkfs.log" 2>&1 ||
		{ cat "$stage/mkfs.log" >&2; die "mkfs.erofs failed"; }
	mv "$img.tmp.$$" "$img"
fi
# Keep the cache bounded, but never pull an image from under a run that is
# still using it (several runs share this cache): drop images unused for
# 12 hours.
find "$CACHE/rootimg" -maxdepth 1 -name '*.erofs' -mmin +720 -delete 2>/dev/null || true
touch "$img"
log "root image $(du -h "$img" | cut -f1) ($(du -h "$overlay" | cut -f1) overlay) ready in $(since "$t0") s"
echo "$img"
