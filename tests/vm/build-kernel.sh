#!/usr/bin/env bash
# Build the (patched) Linux 7.3 kernel for the iommu-lud virtual host.
#
#   tests/vm/build-kernel.sh [--force] [--quiet] [--pristine]
#
# Source:  Debian's linux-source-7.3 (/usr/src/linux-source-7.3.tar.xz),
#          unpacked once into $IOMMULU_CACHE/src/ as a git repo whose first
#          commit (tag "pristine") is the untouched tree.
# Patches: every file listed in kernel-patches/series, in order, applied with
#          `git am` on a fresh branch from "pristine".  No series file, or an
#          empty one, means the pristine kernel.  --pristine (or
#          IOMMULU_SERIES=/dev/null) builds the pristine kernel with the same
#          config whatever the series says (tests/vm/kernel-suites-baseline.sh).
# Config:  x86_64_defconfig + kvm_guest.config, then trimmed (the TRIM list
#          below), then kernel-patches/config.fragment, then olddefconfig.
#          Every option of the fragment is checked in the final .config.
# Output:  $IOMMULU_CACHE/kernel/<key>/{bzImage,config,System.map,headers/,
#          build.log,info}, key = hash(source package version, patches in
#          series order, config fragment, this script).  The output directory
#          is printed as the last line on stdout; everything else goes to
#          stderr.  A rerun with nothing changed returns the cached directory
#          in well under a second.
#
# Environment: IOMMULU_CACHE (default /var/cache/iommu-lud), KBUILD_JOBS
# (default 2; the team rule is never more than 2), CCACHE_DIR (default
# $IOMMULU_CACHE/ccache; ccache runs in depend mode, CCACHE_NODEPEND=1
# turns that off), IOMMULU_SERIES (default kernel-patches/series: the
# series file to apply; its entries name files in kernel-patches/).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${IOMMULU_CACHE:-/var/cache/iommu-lud}
JOBS=${KBUILD_JOBS:-2}
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
# ccache's depend mode: on a miss, ccache compiles and takes the headers
# from the compiler's own -MMD file instead of running the preprocessor
# first to hash its output.  That extra cpp pass made every cold compile
# about 35% more CPU (five large kernel files: 10.7 s against 7.9 s of
# CPU without ccache; 8.1 s in depend mode).  The price: no fallback to a
# preprocessor-output match, so a config change that alters a header's
# text misses where it could have hit; kbuild's own dependency tracking
# keeps such rebuilds incremental in the object directory anyway.
export CCACHE_DEPEND=1
SRC_TARBALL=/usr/src/linux-source-7.3.tar.xz
SRC_PKG=linux-source-7.3
PATCH_DIR=$repo/kernel-patches
FRAGMENT=$PATCH_DIR/config.fragment
SERIES=${IOMMULU_SERIES:-$PATCH_DIR/series}

force=0 quiet=0
for a in "$@"; do
	case $a in
	--force) force=1 ;;
	--quiet) quiet=1 ;;
	--pristine) SERIES=/dev/null ;;
	-h|--help) sed -n '2,28p' "$0"; exit 0 ;;
	*) echo "build-kernel: unknown argument $a" >&2; exit 2 ;;
	esac
done

log() { [ "$quiet" = 1 ] || echo "build-kernel: $*" >&2; }
die() { echo "build-kernel: ERROR: $*" >&2; exit 1; }

# Subsystems switched off after defconfig + kvm_guest.config.  The guest
# boots a read-only erofs root on virtio-blk on a serial console, has no
# other disk, no network, no
# display, no sound and no USB; all it needs is PCI, VT-d, iommufd/VFIO and
# what systemd wants.  This list is part of the cache key (via this
# script's hash).  Order matters only in that the fragment comes after it.
#
# The second half of the list (from INET on) is what a cold build spent
# its time on without the guest using it: IPv4/6, packet sockets and the
# ethtool netlink (AF_UNIX and network namespaces stay: systemd, D-Bus and
# QEMU's QMP use only Unix sockets), io_uring, keyrings, LSMs and audit,
# 32-bit compat, the VT and input layer (serial console only), Intel ME,
# LEDs, DMA engines, the 8250 extras beyond the legacy ports, ACPI's
# laptop drivers (battery, fan, buttons, video, thermal), cpufreq, MCE,
# uncore/RAPL perf, the block cgroup controllers, compressed initramfs and
# erofs formats the harness does not use, task accounting, uprobe/eprobe/
# BPF trace events.  Trace events themselves stay (dma-kexec enables
# intel_iommu/entry_replace_in_place): ENABLE_DEFAULT_TRACERS keeps
# TRACING on without any tracer.  The crypto API goes too (KEXEC_FILE's
# purgatory digest is the SHA-256 library, not the API; KRB5, RSA and
# XZ_DEC were on with nothing using them), and SCHED_MC_PRIO, which
# selected CPU_FREQ and with it the ACPI processor driver (the TCG CPU
# has no P- or C-states to drive).  CPU_MITIGATIONS is off: retpolines,
# return thunks and call-depth padding cost every object a little and
# the TCG guest runs untrusted code of nobody.
# TRIM_ENABLE: EXPERT only makes the options above that hide behind it
# (IO_URING, INPUT, SERIO, VGA_CONSOLE, FW_LOADER, ...) settable, and
# changes no default.  The kernel stays at -O2: a cold -Os build was no
# faster as a whole (694 s against 680 s at -O2, same host, same day).
TRIM=(
	MODULES
	DRM AGP FB FRAMEBUFFER_CONSOLE VGA_CONSOLE SOUND SND
	USB_SUPPORT USB HID_SUPPORT HID INPUT_JOYSTICK INPUT_TABLET
	INPUT_TOUCHSCREEN INPUT_MISC INPUT_MOUSE INPUT_KEYBOARD
	WIRELESS WLAN CFG80211 MAC80211 RFKILL BT
	NETDEVICES NETFILTER NET_SCHED IPV6 IP_PNP IP_MULTICAST
	IP_ADVANCED_ROUTER XFRM_USER NETLABEL NET_9P 9P_FS NFS_FS ROOT_NFS
	NETWORK_FILESYSTEMS
	PCCARD ATA SCSI MD BLK_DEV_DM BLK_DEV_SR BLK_DEV_SD CHR_DEV_SG
	EXT4_FS ISO9660_FS MSDOS_FS VFAT_FS QUOTA HUGETLBFS
	SECURITY_SELINUX HIBERNATION SUSPEND AMD_IOMMU
	EFI EFI_STUB EFI_MIXED
	CPU_FREQ X86_ACPI_CPUFREQ MACINTOSH_DRIVERS X86_PLATFORM_DEVICES
	EEEPC_LAPTOP I2C WATCHDOG HWMON THERMAL_HWMON
	PROVIDE_OHCI1394_DMA_INIT KPROBES PROFILING NUMA
	VIRTIO_INPUT DRM_VIRTIO_GPU VIRTIO_NET SCSI_VIRTIO
	VIRTIO_CONSOLE MEDIA_SUPPORT SOUNDWIRE
	XEN HYPERV KVM
	DEBUG_WX DEBUG_STACK_USAGE BLK_DEV_IO_TRACE CGROUP_DEBUG
	DEBUG_DEVRES DEBUG_BOOT_PARAMS EARLY_PRINTK_DBGP
	INET PACKET DNS_RESOLVER ETHTOOL_NETLINK CGROUP_NET_PRIO
	CGROUP_NET_CLASSID NET_RX_BUSY_POLL PTP_1588_CLOCK PPS
	IO_URING KEYS SECURITY AUDIT INTEGRITY ASYMMETRIC_KEY_TYPE
	SYSTEM_TRUSTED_KEYRING IA32_EMULATION
	VT INPUT SERIO SERIO_I8042 INPUT_EVDEV INPUT_LEDS DUMMY_CONSOLE
	INTEL_MEI NEW_LEDS POWER_SUPPLY DMADEVICES HW_RANDOM CONNECTOR
	EEPROM_93CX6 NVRAM HPET EDAC BACKLIGHT_CLASS_DEVICE VGA_ARB
	SURFACE_PLATFORMS THERMAL X86_PKG_TEMP_THERMAL INTEL_TCC
	SERIAL_8250_DMA SERIAL_8250_PCI SERIAL_8250_EXAR SERIAL_8250_MOXA_PCIE
	SERIAL_8250_EXTENDED SERIAL_8250_LPSS SERIAL_8250_MID
	SERIAL_8250_PERICOM SERIAL_NONSTANDARD
	ACPI_AC ACPI_BATTERY ACPI_BUTTON ACPI_VIDEO ACPI_FAN ACPI_DOCK
	ACPI_THERMAL ACPI_PLATFORM_PROFILE ACPI_TABLE_UPGRADE ACPI_DEBUG
	ACPI_CONTAINER ACPI_WMI ACPI_PROCESSOR CPU_FREQ X86_MCE
	PERF_EVENTS_INTEL_UNCORE PERF_EVENTS_INTEL_RAPL
	PERF_EVENTS_INTEL_CSTATE PERF_EVENTS_AMD_UNCORE
	BLK_CGROUP_IOLATENCY BLK_CGROUP_IOCOST BLK_CGROUP_IOPRIO BLK_DEBUG_FS
	MQ_IOSCHED_KYBER PARTITION_ADVANCED
	RD_BZIP2 RD_LZMA RD_XZ RD_LZO RD_LZ4 EROFS_FS_ZIP NLS FW_LOADER
	TASKSTATS BSD_PROCESS_ACCT UPROBE_EVENTS EPROBE_EVENTS BPF_EVENTS
	KALLSYMS_ALL SCHEDSTATS PM_DEBUG X86_CHECK_BIOS_CORRUPTION
	CPU_MITIGATIONS SCHED_MC_PRIO CRYPTO CRYPTO_KRB5 CRYPTO_RSA XZ_DEC
)
TRIM_ENABLE=(DEBUG_INFO_NONE EXPERT ENABLE_DEFAULT_TRACERS)

[ -r "$SRC_TARBALL" ] || die "$SRC_TARBALL missing (scripts/install-deps.sh vm installs $SRC_PKG)"
[ -r "$FRAGMENT" ] || die "$FRAGMENT missing"
src_ver=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) ||
	die "package $SRC_PKG is not installed"

# Patches in series order; comments and blank lines ignored.  The key
# depends on the patches only, so an empty series (the pristine kernel) has
# its own cache entry.
patches=()
if [ -e "$SERIES" ]; then
	while read -r line; do
		line=${line%%#*}
		line=$(echo "$line" | xargs)
		[ -n "$line" ] || continue
		[ -f "$PATCH_DIR/$line" ] || die "series lists $line, but kernel-patches/$line does not exist"
		patches+=("$PATCH_DIR/$line")
	done < "$SERIES"
fi

patch_hash=$( { for p in "${patches[@]}"; do basename "$p"; sha256sum < "$p"; done; } | sha256sum | cut -c1-64)
frag_hash=$(sha256sum < "$FRAGMENT" | cut -c1-64)
script_hash=$(sha256sum < "$0" | cut -c1-64)
key=$(printf '%s\n' "$src_ver" "$patch_hash" "$frag_hash" "$script_hash" | sha256sum | cut -c1-16)
out=$CACHE/kernel/$key

if [ "$force" = 0 ] && [ -f "$out/ok" ]; then
	log "cached: $out (${#patches[@]} patches, source $src_ver)"
	echo "$out"
	exit 0
fi

mkdir -p "$CACHE/kernel" "$CACHE/src" "$CCACHE_DIR"
# One build at a time: the source tree and object directory are shared.
exec 9> "$CACHE/kernel/.lock"
if ! flock -n 9; then
	log "another kernel build is running; waiting for it"
	flock 9
fi
if [ "$force" = 0 ] && [ -f "$out/ok" ]; then
	log "cached (built meanwhile): $out"
	echo "$out"
	exit 0
fi

t0=$(date +%s.%N)
src=$CACHE/src/$SRC_PKG-$src_ver
obj=$CACHE/obj/$SRC_PKG-$src_ver
export GIT_AUTHOR_NAME="iommu-lud harness" GIT_AUTHOR_EMAIL="harness@iommu-lud.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
g() { git -C "$src" -c core.autocrlf=false -c gc.auto=0 "$@"; }

if ! g rev-parse -q --verify refs/tags/pristine > /dev/null 2>&1; then
	log "unpacking $SRC_TARBALL ($src_ver) into $src"
	rm -rf "$src.tmp"
	mkdir -p "$src.tmp"
	tar -xJf "$SRC_TARBALL" -C "$src.tmp" --strip-components=1
	git -C "$src.tmp" init -q -b upstream
	git -C "$src.tmp" add -A -f
	git -C "$src.tmp" -c gc.auto=0 commit -q -m "linux-source-7.3 $src_ver (pristine)"
	git -C "$src.tmp" tag pristine
	rm -rf "$src"
	mv "$src.tmp" "$src"
	log "unpacked in $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
fi

# The series is applied in a second worktree ($src.am), never in the tree
# we build: the build tree is then moved to the result with one checkout,
# which rewrites only the files that really differ from what was built last
# time.  Re-applying an unchanged patch therefore touches no file, and make
# rebuilds only what a changed patch changed.
am=$src.am
ga() { git -C "$am" -c core.autocrlf=false -c gc.auto=0 "$@"; }
if [ ! -e "$am/.git" ]; then
	rm -rf "$am"
	g worktree prune
	g worktree add -q --detach "$am" refs/tags/pristine
fi
ga am --abort > /dev/null 2>&1 || true
ga checkout -q -f --detach refs/tags/pristine
ga clean -q -f -d -x
for p in "${patches[@]}"; do
	if ! ga am -q --keep-cr "$p" >&2; then
		ga am --abort > /dev/null 2>&1 || true
		die "git am failed for kernel-patches/$(basename "$p")"
	fi
done
result=$(ga rev-parse HEAD)
g checkout -q -f -B build "$result"
g clean -q -f -d -x
log "applied ${#patches[@]} patch(es) on $src_ver"

# Config.
mkdir -p "$obj"
mk() { nice -n 10 make -C "$src" O="$obj" CC="ccache gcc" HOSTCC="ccache gcc" \
	KBUILD_BUILD_TIMESTAMP="iommu-lud" KBUILD_BUILD_USER=iommu-lud \
	KBUILD_BUILD_HOST=vm "$@"; }
mk -s x86_64_defconfig > /dev/null
mk -s kvm_guest.config > /dev/null
trim_args=()
for o in "${TRIM[@]}"; do trim_args+=(-d "$o"); done
for o in "${TRIM_ENABLE[@]}"; do trim_args+=(-e "$o"); done
"$src/scripts/config" --file "$obj/.config" "${trim_args[@]}"
cat "$FRAGMENT" >> "$obj/.config"
# Appending the fragment makes kconfig warn "override: reassigning to
# symbol X" for every option the base already set; that is the intent.
# Any other kconfig warning is shown.
mk -s olddefconfig > /dev/null 2> "$obj/olddefconfig.log" || { cat "$obj/olddefconfig.log" >&2; die "olddefconfig failed"; }
grep -v 'warning: override: reassigning to symbol' "$obj/olddefconfig.log" >&2 || true

# Every fragment line must have survived olddefconfig.  The pristine kernel
# (no patches) lacks the options the series adds (e.g. its fault
# injection); those are not in any Kconfig of the tree and are skipped.
missing=0
while read -r line; do
	case $line in
	CONFIG_*=*)
		opt=${line%%=*}
		if [ "${#patches[@]}" = 0 ] &&
			! g grep -q -E "^[[:space:]]*(menu)?config ${opt#CONFIG_}\$" -- '*Kconfig*'; then
			log "pristine tree has no $opt (an option of the series): skipped"
			continue
		fi
		if ! grep -qxF "$line" "$obj/.config"; then
			got=$(grep -E "^($opt=|# $opt is not set)" "$obj/.config" || echo "absent")
			echo "build-kernel: config fragment wants '$line', .config has '$got'" >&2
			missing=1
		fi ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		if grep -qE "^$opt=" "$obj/.config"; then
			echo "build-kernel: config fragment wants $opt off, .config has '$(grep -E "^$opt=" "$obj/.config")'" >&2
			missing=1
		fi ;;
	esac
done < "$FRAGMENT"
[ "$missing" = 0 ] || die "kconfig dropped options of kernel-patches/config.fragment (unmet dependencies?)"

# Build.
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
log "building bzImage (-j$JOBS, ccache in $CCACHE_DIR); log: $out.tmp/build.log"
tb=$(date +%s.%N)
# CPU seconds (user + system) of this script's waited-for children, from
# the `times` builtin (run in this shell, not in a $(...) subshell): the
# build's own cost, which the wall clock on a shared host is not.
cpu_of() { tail -n1 "$1" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%.1f", t }'; }
times > "$out.tmp/.cpu-start"
if ! mk -j"$JOBS" bzImage > "$out.tmp/build.log" 2>&1; then
	grep -E 'error|Error' "$out.tmp/build.log" | head -n 40 >&2 || true
	tail -n 20 "$out.tmp/build.log" >&2
	die "kernel build failed; full log: $out.tmp/build.log"
fi
mk -s headers_install INSTALL_HDR_PATH="$out.tmp/headers" >> "$out.tmp/build.log" 2>&1 ||
	die "make headers_install failed; see $out.tmp/build.log"
te=$(date +%s.%N)
times > "$out.tmp/.cpu-end"
build_cpu_s=$(printf '%.1f' "$(echo "$(cpu_of "$out.tmp/.cpu-end") - $(cpu_of "$out.tmp/.cpu-start")" | bc)")
rm -f "$out.tmp/.cpu-start" "$out.tmp/.cpu-end"

cp "$obj/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$obj/.config" "$out.tmp/config"
cp "$obj/System.map" "$out.tmp/System.map"
g log --format="%h %s" refs/tags/pristine..build > "$out.tmp/patches.txt"
warnings=$(grep -ciE 'warning:' "$out.tmp/build.log" || true)
grep -iE 'warning:' "$out.tmp/build.log" > "$out.tmp/warnings.txt" || true
build_s=$(printf '%.1f' "$(echo "$te - $tb" | bc)")
total_s=$(printf '%.1f' "$(echo "$te - $t0" | bc)")
cat > "$out.tmp/info" <<EOF
key=$key
source_version=$src_ver
patches=${#patches[@]}
patch_sha256=$patch_hash
fragment_sha256=$frag_hash
script_sha256=$script_hash
build_seconds=$build_s
build_cpu_seconds=$build_cpu_s
total_seconds=$total_s
warnings=$warnings
kernel_release=$(cat "$obj/include/config/kernel.release")
ccache=$(ccache -s 2>/dev/null | grep -iE 'hits|misses' | tr -s ' ' | paste -sd ';' || true)
EOF
touch "$out.tmp/ok"
rm -rf "$out"
mv "$out.tmp" "$out"
log "kernel $(cat "$obj/include/config/kernel.release") built in ${build_s} s (${build_cpu_s} s of CPU; total ${total_s} s, ${#patches[@]} patches)"
if [ "$warnings" != 0 ]; then
	log "WARNING: the build log has $warnings warning line(s):"
	head -n 20 "$out/warnings.txt" >&2
else
	log "no warnings in the build log"
fi
echo "$out"
