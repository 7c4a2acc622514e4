#!/usr/bin/env bash
# build-guest.sh OUTDIR
#
# Builds Polyvisor's tiny test/quickstart guest from Debian packages only:
#
#   OUTDIR/vmlinuz     the current linux-image-<abi>-cloud-amd64 kernel
#   OUTDIR/initrd.img  a busybox initramfs (gzip'd newc cpio) whose /init loads
#                      the virtio, ACPI button and iso9660 modules, runs acpid
#                      so the ACPI power button powers the guest off, powers
#                      off when "polyvisor-poweroff" is typed on ttyS0, prints
#                      POLYVISOR-GUEST-READY on ttyS0, reports its disks and
#                      NoCloud seed, then prints "polyvisor-tick N" every 0.2 s;
#                      with polyvisor.run=<base64 script> on the kernel command
#                      line it also brings its NICs up with DHCP, runs the
#                      script in the background and prints
#                      "polyvisor-guest: run exit=N"; a line
#                      "polyvisor-exec TAG <base64 script>" typed on ttyS0
#                      runs that script in the background, its output lines
#                      prefixed "polyvisor-exec TAG: ", then prints
#                      "polyvisor-exec TAG exit=N"
#   OUTDIR/disk.qcow2  a small blank qcow2 disk (64 MiB)
#   OUTDIR/features    what the guest can do beyond its markers ("run",
#                      "exec")
#   OUTDIR/boot.qcow2  the same guest on a bootable disk (64 MiB unless the
#                      kernel and initramfs need more): an MBR with SYSLINUX's
#                      boot code and one active FAT16 partition at 1 MiB that
#                      holds SYSLINUX, vmlinuz, initrd.img and a syslinux.cfg
#                      booting them at once (no prompt, no timeout) with
#                      "console=ttyS0 quiet no_timer_check" (no_timer_check: under TCG on a
#                      loaded machine the kernel's IO-APIC timer check can fail). For VMs booted by their firmware
#                      (SeaBIOS; not UEFI) from virtio-blk, virtio-scsi, SATA
#                      or IDE, e.g. libvirt domains; use it as a backing file.
#
# Boot it with:
#   qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -display none \
#     -serial stdio -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img \
#     -append "console=ttyS0 quiet"
# or through the firmware, from the disk (on an overlay or with -snapshot):
#   qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -display none \
#     -serial stdio -drive file=OUTDIR/boot.qcow2,if=virtio,format=qcow2,snapshot=on
#
# Host packages come from Debian, installed with --no-install-recommends when
# missing: qemu-system-x86, qemu-utils, busybox-static, xz-utils, and for
# boot.qcow2 syslinux, syslinux-common, mtools and dosfstools. Nothing is
# mounted: the FAT partition is made and filled inside the image file.
#
# The script is idempotent: the downloaded .deb and its extraction are cached
# ($XDG_CACHE_HOME/polyvisor-guest if XDG_CACHE_HOME is set, else
# OUTDIR/.cache), and nothing is rebuilt when OUTDIR already holds a guest
# built by this same script from the same kernel. When only boot.qcow2 is
# missing, it alone is made again from OUTDIR's kernel and initramfs.
#
# Environment:
#   POLYVISOR_GUEST_KERNEL_PKG  force a kernel package (default: the one
#                               linux-image-cloud-amd64 depends on)
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

OUTDIR=$1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
if [[ -n "${XDG_CACHE_HOME:-}" ]]; then
	CACHE=$XDG_CACHE_HOME/polyvisor-guest
else
	CACHE=$OUTDIR/.cache
fi
mkdir -p "$CACHE"

log() { echo "build-guest: $*" >&2; }

APT_UPDATED=0
apt_update_once() {
	if [[ $APT_UPDATED -eq 0 ]]; then
		log "running apt-get update"
		apt-get update -qq >&2
		APT_UPDATED=1
	fi
}

# apt_install PKG... installs packages, updating the lists once if needed.
apt_install() {
	log "installing $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; then
		apt_update_once
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
	fi
}

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

# sbin_tool NAME finds a tool that lives in /usr/sbin, which a non-root PATH
# may lack.
sbin_tool() {
	command -v "$1" 2>/dev/null ||
		{ [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } ||
		{ [[ -x /sbin/$1 ]] && echo "/sbin/$1"; }
}

ensure_host_tools() {
	local missing=()
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	command -v qemu-img >/dev/null || missing+=(qemu-utils)
	# The initramfs needs a statically linked busybox.
	installed busybox-static || missing+=(busybox-static)
	command -v xz >/dev/null || missing+=(xz-utils)
	if [[ ${#missing[@]} -gt 0 ]]; then
		apt_install "${missing[@]}"
	fi
}

# pick_kernel prints the kernel package to use: the ABI that Debian's
# linux-image-cloud-amd64 meta-package currently points at (the distro's
# default series: 6.1 on bookworm boots ~1 s faster under TCG than the newer
# 6.12 series), else the newest linux-image-<abi>-cloud-amd64 apt can fetch.
pick_kernel() {
	if [[ -n "${POLYVISOR_GUEST_KERNEL_PKG:-}" ]]; then
		echo "$POLYVISOR_GUEST_KERNEL_PKG"
		return
	fi
	local re='^linux-image-[0-9][^ ]*-cloud-amd64$' p pkgs
	p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
	if [[ -z "$p" ]]; then
		apt_update_once
		p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ {print $2; exit}')
	fi
	if [[ -n "$p" ]]; then
		echo "$p"
		return
	fi
	pkgs=$(apt-cache search --names-only "$re" | awk '{print $1}')
	# Newest first; keep the first that apt can actually fetch.
	for p in $(sort -rV <<<"$pkgs"); do
		if [[ -n "$(apt-cache policy "$p" | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ]]; then
			echo "$p"
			return
		fi
	done
	echo "build-guest: no linux-image-*-cloud-amd64 package found" >&2
	return 1
}

# The boot disk: an MBR, then one partition from BOOT_START (in 512-byte
# sectors: 1 MiB, as partitioning tools align it) to the end of the disk.
BOOT_START=2048
BOOT_MIN_MIB=64
# SYSLINUX's MBR boot code (Debian's syslinux-common): it loads the active
# partition's boot sector, through the BIOS's EDD (LBA) calls when present.
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin

ensure_boot_tools() {
	local missing=()
	installed syslinux || missing+=(syslinux)
	installed syslinux-common || missing+=(syslinux-common)
	installed mtools || missing+=(mtools)
	installed dosfstools || missing+=(dosfstools)
	if [[ ${#missing[@]} -gt 0 ]]; then
		apt_install "${missing[@]}"
	fi
	MKFS_FAT=$(sbin_tool mkfs.fat) || { log "mkfs.fat not found after installing dosfstools"; return 1; }
	[[ -f "$MBR_BIN" ]] || { log "$MBR_BIN not found after installing syslinux-common"; return 1; }
}

# chs LBA prints the CHS address of a sector (255 heads, 63 sectors per
# track, capped at cylinder 1023) as the 3 bytes of an MBR partition entry,
# in printf's \x notation. SeaBIOS and SYSLINUX's MBR use the LBA fields;
# the CHS ones are filled in for older tools.
chs() {
	local lba=$1 c h s
	c=$((lba / (255 * 63)))
	h=$((lba / 63 % 255))
	s=$((lba % 63 + 1))
	if ((c > 1023)); then
		c=1023 h=254 s=63
	fi
	printf '\\x%02x\\x%02x\\x%02x' "$h" $(((c >> 8) << 6 | s)) $((c & 255))
}

# le32 N prints N as 4 little-endian bytes in printf's \x notation.
le32() {
	printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255))
}

# write_mbr IMG START SECTORS writes SYSLINUX's boot code, the disk
# signature "PVGS" and one active FAT16 (LBA, type 0x0e) partition entry
# into IMG's first sector.
write_mbr() {
	local img=$1 start=$2 n=$3 entry
	dd if="$MBR_BIN" of="$img" bs=440 count=1 conv=notrunc status=none
	entry="\\x80$(chs "$start")\\x0e$(chs $((start + n - 1)))$(le32 "$start")$(le32 "$n")"
	# shellcheck disable=SC2059 # the format is the bytes
	printf "PVGS\\x00\\x00${entry}" | dd of="$img" bs=1 seek=440 conv=notrunc status=none
	printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
}

# build_boot KERNEL INITRD OUT writes the bootable disk image OUT (qcow2).
# It works on a sparse raw image in $WORK and mounts nothing: mkfs.fat,
# mtools and SYSLINUX's mtools-based installer all take the partition's
# byte offset in the image file.
build_boot() {
	local kernel=$1 initrd=$2 out=$3 raw=$WORK/boot.raw cfg=$WORK/syslinux.cfg
	local mib sectors off
	ensure_boot_tools
	# Room for the files plus 16 MiB and the 1 MiB before the partition.
	mib=$((($(stat -c %s "$kernel") + $(stat -c %s "$initrd")) / 1048576 + 17))
	if ((mib < BOOT_MIN_MIB)); then
		mib=$BOOT_MIN_MIB
	fi
	sectors=$((mib * 2048 - BOOT_START))
	off=$((BOOT_START * 512))
	rm -f "$raw"
	truncate -s "${mib}M" "$raw"
	# -h: the partition's start, which the boot sector uses to find itself.
	"$MKFS_FAT" -F 16 -n POLYVISOR -i 50564753 --offset "$BOOT_START" -h "$BOOT_START" \
		"$raw" $((sectors / 2)) >/dev/null
	cat >"$cfg" <<'EOF'
DEFAULT polyvisor
PROMPT 0
TIMEOUT 0
LABEL polyvisor
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0 quiet no_timer_check
EOF
	# MTOOLS_SKIP_CHECK: the image's geometry is not the point.
	local f
	for f in "$kernel:vmlinuz" "$initrd:initrd.img" "$cfg:syslinux.cfg"; do
		MTOOLS_SKIP_CHECK=1 mcopy -o -i "$raw@@$off" "${f%:*}" "::/${f##*:}"
	done
	MTOOLS_SKIP_CHECK=1 syslinux --offset "$off" --install "$raw"
	write_mbr "$raw" "$BOOT_START" "$sectors"
	qemu-img convert -q -f raw -O qcow2 "$raw" "$out"
	rm -f "$raw" "$cfg"
}

ensure_host_tools
KPKG=$(pick_kernel)
SELF_SUM=$(sha256sum "${BASH_SOURCE[0]}" | awk '{print $1}')
STAMP="$KPKG $SELF_SUM"
if [[ -f "$OUTDIR/vmlinuz" && -f "$OUTDIR/initrd.img" && -f "$OUTDIR/disk.qcow2" &&
	"$(cat "$OUTDIR/.stamp" 2>/dev/null)" == "$STAMP" ]]; then
	if [[ -f "$OUTDIR/boot.qcow2" ]]; then
		log "up to date in $OUTDIR ($KPKG)"
		exit 0
	fi
	# The kernel and initramfs are this script's: only the disk is missing.
	log "making boot.qcow2 from $OUTDIR/vmlinuz and $OUTDIR/initrd.img"
	WORK=$(mktemp -d "$CACHE/build.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	build_boot "$OUTDIR/vmlinuz" "$OUTDIR/initrd.img" "$WORK/boot.qcow2"
	mv -f "$WORK/boot.qcow2" "$OUTDIR/boot.qcow2"
	log "boot disk ready in $OUTDIR ($KPKG)"
	exit 0
fi

# Download and extract the kernel package (cached); drop other kernels.
for old in "$CACHE"/linux-image-*; do
	[[ -e "$old" ]] || continue
	case "$(basename "$old")" in
	"$KPKG" | "${KPKG}_"*.deb) ;;
	*) log "pruning $(basename "$old") from the cache"; rm -rf "$old" ;;
	esac
done
deb=$(ls "$CACHE/${KPKG}_"*.deb 2>/dev/null | head -n1 || true)
if [[ -z "$deb" ]]; then
	log "downloading $KPKG"
	dl=$(mktemp -d "$CACHE/dl.XXXXXX")
	chmod 0755 "$dl" # let apt's _apt user write into it
	if ! (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG" >&2); then
		apt_update_once
		(cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG" >&2)
	fi
	mv "$dl"/*.deb "$CACHE/"
	rmdir "$dl"
	deb=$(ls "$CACHE/${KPKG}_"*.deb | head -n1)
fi
KROOT=$CACHE/$KPKG
if [[ ! -f "$KROOT/.extracted" ]]; then
	log "extracting $(basename "$deb")"
	rm -rf "$KROOT"
	mkdir -p "$KROOT"
	dpkg-deb -x "$deb" "$KROOT"
	touch "$KROOT/.extracted"
fi
KVER=$(ls "$KROOT/lib/modules" | head -n1)
MODDIR=$KROOT/lib/modules/$KVER
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
[[ -f "$VMLINUZ" ]] || { log "no kernel image in $deb"; exit 1; }

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,dev,proc,sys,seed,tmp,etc/acpi/PWRF,lib/modules}

# Modules the guest needs: virtio transport, disks and NICs, the ACPI power
# button and its input events for acpid, and iso9660 for the NoCloud seed.
# Modules built into the kernel are skipped; dependencies are pulled in
# (read from each module's .modinfo "depends=") and ordered before their users.
WANT=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio_blk failover net_failover virtio_net evdev button isofs)
declare -A MODPATH=() LOADED=()
while IFS= read -r f; do
	n=${f##*/}
	n=${n%%.ko*}
	MODPATH[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*')
ORDER=()

# unpack_module NAME decompresses a module into the initramfs.
unpack_module() {
	local src=${MODPATH[$1]} dst=$ROOT/lib/modules/$1.ko
	case "$src" in
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst)
		command -v zstd >/dev/null || apt_install zstd
		zstd -qdc "$src" >"$dst"
		;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*.ko) cp "$src" "$dst" ;;
	*) log "unknown module format: $src"; return 1 ;;
	esac
}

add_module() {
	local m=${1//-/_} deps d
	[[ -n "${LOADED[$m]:-}" ]] && return 0
	LOADED[$m]=1
	if [[ -z "${MODPATH[$m]:-}" ]]; then
		if grep -q "/${m}\.ko" "$MODDIR/modules.builtin" 2>/dev/null ||
			grep -q "/${m//_/-}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
			return 0
		fi
		log "module $m is neither a module nor built into $KVER"
		return 1
	fi
	unpack_module "$m"
	deps=$(busybox strings -a "$ROOT/lib/modules/$m.ko" | sed -n 's/^depends=//p' | head -n1)
	for d in ${deps//,/ }; do
		add_module "$d"
	done
	ORDER+=("$m")
}
for m in "${WANT[@]}"; do
	add_module "$m"
done
printf '%s\n' "${ORDER[@]}" >"$ROOT/etc/modules"
log "kernel $KVER, modules: ${ORDER[*]}"

cp /bin/busybox "$ROOT/bin/busybox"
# One symlink per applet; perl (Essential in Debian) makes them in one
# process instead of ~400 forks of ln.
if command -v perl >/dev/null; then
	/bin/busybox --list | grep -vx busybox |
		(cd "$ROOT/bin" && perl -ne 'chomp; symlink("busybox", $_) or die "symlink $_: $!\n"')
else
	for a in $(/bin/busybox --list); do
		[[ "$a" == busybox ]] || ln -s busybox "$ROOT/bin/$a"
	done
fi
ln -s bin "$ROOT/sbin"

cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "polyvisor-guest: acpi power button, powering off" >/dev/console
sync
poweroff -f
EOF
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"

# busybox udhcpc calls this with the lease in its environment.
cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
case "$1" in
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
bound | renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	gw=${router%% *}
	[ -n "$gw" ] && route add default gw "$gw" dev "$interface"
	: >/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	echo "polyvisor-guest: dhcp $interface $ip gateway ${gw:-none}" >/dev/console
	;;
esac
exit 0
EOF
chmod 0755 "$ROOT/etc/udhcpc.script"

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do
	insmod "/lib/modules/$m.ko" || echo "polyvisor-guest: insmod $m failed"
done
acpid -c /etc/acpi -l /dev/null -p /tmp/acpid.pid || echo "polyvisor-guest: acpid failed"
# The line polyvisor-poweroff typed on the serial console powers the guest
# off from inside, as its own user would (tests of a guest's own poweroff).
(while read -r line; do
	case "$line" in
	*polyvisor-poweroff*)
		echo "polyvisor-guest: powering off on request"
		sync
		poweroff -f
		;;
	*polyvisor-exec\ *)
		# polyvisor-exec TAG BASE64: run a script while the guest runs.
		set -- ${line#*polyvisor-exec }
		tag=$1
		(
			if echo "$2" | base64 -d >"/tmp/exec-$tag.sh" 2>/dev/null; then
				{
					sh "/tmp/exec-$tag.sh" 2>&1
					echo $? >"/tmp/exec-$tag.rc"
				} | while IFS= read -r out; do echo "polyvisor-exec $tag: $out"; done
				echo "polyvisor-exec $tag exit=$(cat "/tmp/exec-$tag.rc")"
			else
				echo "polyvisor-exec $tag exit=bad-base64"
			fi
		) </dev/null &
		;;
	esac
done </dev/ttyS0) &
echo "POLYVISOR-GUEST-READY"
echo "polyvisor-guest: commands polyvisor-poweroff polyvisor-exec"
disks=0
for b in /sys/block/vd*; do
	[ -e "$b" ] || continue
	d=${b##*/}
	disks=$((disks + 1))
	echo "polyvisor-guest: disk $d $(cat "$b/size")"
	# An ISO9660 primary volume descriptor is at 32 KiB; its volume id at +40.
	vid=$(dd if="/dev/$d" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=6 2>/dev/null)
	if [ "$vid" = cidata ] && mount -t iso9660 -o ro "/dev/$d" /seed; then
		iid=$(sed -n 's/^[[:space:]]*"\{0,1\}instance-id"\{0,1\}:[[:space:]]*//p' /seed/meta-data | head -n1 | tr -d "\"',\r")
		echo "polyvisor-guest: seed instance-id=$iid"
	fi
done
[ "$disks" -gt 0 ] || echo "polyvisor-guest: no disk"
for n in /sys/class/net/eth*; do
	[ -e "$n" ] && echo "polyvisor-guest: nic ${n##*/} $(cat "$n/address")"
done
# polyvisor.run=<base64 of a shell script> on the kernel command line: bring
# the NICs up with DHCP and run the script in the background, its output on
# the console, then print its exit status. The ticks go on meanwhile.
run=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^polyvisor\.run=//p' | head -n1)
if [ -n "$run" ]; then
	(
		ip link set lo up
		for n in /sys/class/net/eth*; do
			[ -e "$n" ] || continue
			ip link set "${n##*/}" up
			udhcpc -i "${n##*/}" -f -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1 ||
				echo "polyvisor-guest: dhcp failed on ${n##*/}"
		done
		if echo "$run" | base64 -d >/tmp/run.sh 2>/dev/null; then
			echo "polyvisor-guest: run begin"
			sh /tmp/run.sh
			echo "polyvisor-guest: run exit=$?"
		else
			echo "polyvisor-guest: run exit=bad-base64"
		fi
	) </dev/null &
fi
n=0
while :; do
	n=$((n + 1))
	echo "polyvisor-tick $n"
	sleep 0.2
done
EOF
chmod 0755 "$ROOT/init"

(cd "$ROOT" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -9 >"$WORK/initrd.img"
qemu-img create -q -f qcow2 "$WORK/disk.qcow2" 64M
cp "$VMLINUZ" "$WORK/vmlinuz"
build_boot "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/boot.qcow2"
# What this guest can do beyond printing its markers, one word a line.
printf 'run\nexec\n' >"$WORK/features"
for f in vmlinuz initrd.img disk.qcow2 boot.qcow2 features; do
	mv -f "$WORK/$f" "$OUTDIR/$f"
done
echo "$STAMP" >"$OUTDIR/.stamp"
log "guest ready in $OUTDIR ($KPKG)"
