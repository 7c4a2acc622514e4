#!/usr/bin/env bash
# build-guest.sh OUTDIR
#
# Builds Polyvisor's tiny test/quickstart guest from Debian packages only:
#
#   OUTDIR/vmlinuz     the current linux-image-<abi>-cloud-amd64 kernel
#   OUTDIR/initrd.img  a busybox initramfs (gzip'd newc cpio) whose /init loads
#                      the virtio, ACPI button and iso9660 modules, runs acpid
#                      so the ACPI power button powers the guest off, prints
#                      POLYVISOR-GUEST-READY on ttyS0, reports its disks and
#                      NoCloud seed, then prints "polyvisor-tick N" every 0.2 s
#   OUTDIR/disk.qcow2  a small blank qcow2 disk (64 MiB)
#
# Boot it with:
#   qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -display none \
#     -serial stdio -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img \
#     -append "console=ttyS0 quiet"
#
# The script is idempotent: the downloaded .deb and its extraction are cached
# ($XDG_CACHE_HOME/polyvisor-guest if XDG_CACHE_HOME is set, else
# OUTDIR/.cache), and nothing is rebuilt when OUTDIR already holds a guest
# built by this same script from the same kernel.
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

ensure_host_tools
KPKG=$(pick_kernel)
SELF_SUM=$(sha256sum "${BASH_SOURCE[0]}" | awk '{print $1}')
STAMP="$KPKG $SELF_SUM"
if [[ -f "$OUTDIR/vmlinuz" && -f "$OUTDIR/initrd.img" && -f "$OUTDIR/disk.qcow2" &&
	"$(cat "$OUTDIR/.stamp" 2>/dev/null)" == "$STAMP" ]]; then
	log "up to date in $OUTDIR ($KPKG)"
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
echo "POLYVISOR-GUEST-READY"
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
for f in vmlinuz initrd.img disk.qcow2; do
	mv -f "$WORK/$f" "$OUTDIR/$f"
done
echo "$STAMP" >"$OUTDIR/.stamp"
log "guest ready in $OUTDIR ($KPKG)"
