#!/usr/bin/env bash
# bench-qemu.sh vga|qemu-img|virsh [ROUNDS]
#
# The measurements of docs/BENCHMARKS.md that are about QEMU and libvirt
# themselves, not Polyvisor (`polyvisor bench` measures Polyvisor). Each
# boots the tiny test guest ($POLYVISOR_GUEST_DIR, default .cache/guest,
# built by scripts/build-guest.sh) under TCG, times it from starting the
# command to POLYVISOR-GUEST-READY in its serial output file (polled every
# 2 ms), and prints every sample and the median per variant, in ms.
#
#   vga       bare QEMU as `polyvisor bench lifecycle` starts it, alternately
#             without and with `-device VGA`, and with VGA, `-vnc unix:…` and
#             `-msg timestamp=on` (Polyvisor's additions), ROUNDS each (7)
#   qemu-img  `qemu-img create -f qcow2 -b disk.qcow2 -F qcow2` of an overlay
#             and `qemu-img info --output=json` of it, as the QEMU driver runs
#             them per VM, ROUNDS each (6)
#   virsh     alternately `virsh -c qemu:///system create` of a transient TCG
#             domain booting the same guest, and bare QEMU, ROUNDS each (7),
#             and the ratio of the medians; needs a libvirtd
#             (scripts/libvirtd.sh start)
#
# Run it behind scripts/bench-quiet.sh for figures from a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-}
GUEST=${POLYVISOR_GUEST_DIR:-$PWD/.cache/guest}
MARKER=POLYVISOR-GUEST-READY
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

die() {
	echo "bench-qemu.sh: $*" >&2
	exit 1
}
[[ -s "$GUEST/vmlinuz" && -s "$GUEST/initrd.img" && -s "$GUEST/disk.qcow2" ]] ||
	die "no test guest in $GUEST: build it with scripts/build-guest.sh $GUEST"

us() { echo "${EPOCHREALTIME/./}"; } # microseconds, without a fork

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

overlay() { # path
	qemu-img create -q -f qcow2 -b "$GUEST/disk.qcow2" -F qcow2 "$1"
}

# wait_marker FILE PID START_US prints the ms from START_US to the marker in
# FILE; it fails if PID (when not empty) ends first or after 120 s.
wait_marker() {
	local file=$1 pid=$2 start=$3
	while ! grep -qs "$MARKER" "$file"; do
		if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
			die "the guest's process ended before $MARKER"
		fi
		(($(us) - start < 120000000)) || die "no $MARKER in $file within 120 s"
		sleep 0.002
	done
	echo $((($(us) - start) / 1000))
}

# bare [QEMU ARG...] boots the guest with bare QEMU and prints the ms.
bare() {
	local d
	d=$(mktemp -d "$TMP/bare.XXXX")
	overlay "$d/disk.qcow2"
	local start pid ms
	start=$(us)
	qemu-system-x86_64 -accel tcg -machine q35 -m 256 -smp 1 -nodefaults -no-user-config -display none \
		-kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" -append "console=ttyS0 quiet no_timer_check" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$d/disk.qcow2" \
		-device virtio-blk-pci,drive=disk0 -serial "file:$d/serial.log" "$@" >"$d/qemu.log" 2>&1 &
	pid=$!
	ms=$(wait_marker "$d/serial.log" "$pid" "$start")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	rm -rf "$d"
	echo "$ms"
}

# virsh_boot boots the guest as a transient libvirt domain and prints the ms.
virsh_boot() {
	local d name start ms
	d=$(mktemp -d "$TMP/virsh.XXXX")
	overlay "$d/disk.qcow2"
	name=pvbench-$$-${d##*.}
	cat >"$d/domain.xml" <<-EOF
		<domain type='qemu'>
		  <name>$name</name>
		  <memory unit='MiB'>256</memory>
		  <vcpu>1</vcpu>
		  <os>
		    <type arch='x86_64' machine='q35'>hvm</type>
		    <kernel>$GUEST/vmlinuz</kernel>
		    <initrd>$GUEST/initrd.img</initrd>
		    <cmdline>console=ttyS0 quiet</cmdline>
		  </os>
		  <features><acpi/></features>
		  <devices>
		    <disk type='file' device='disk'>
		      <driver name='qemu' type='qcow2'/>
		      <source file='$d/disk.qcow2'/>
		      <target dev='vda' bus='virtio'/>
		    </disk>
		    <serial type='file'><source path='$d/serial.log'/></serial>
		  </devices>
		</domain>
	EOF
	start=$(us)
	virsh -q -c qemu:///system create "$d/domain.xml" >/dev/null || die "virsh create failed"
	ms=$(wait_marker "$d/serial.log" "" "$start")
	virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1 || true
	rm -rf "$d"
	echo "$ms"
}

# report NAME FILE prints a variant's samples and median.
report() {
	printf '%-28s median %6s ms   (%s)\n' "$1" "$(median <"$2")" "$(paste -sd' ' "$2")"
}

case "$MODE" in
vga)
	rounds=${2:-7}
	: >"$TMP/none" && : >"$TMP/vga" && : >"$TMP/all"
	bare >/dev/null # warm-up, not counted
	for ((i = 1; i <= rounds; i++)); do
		bare >>"$TMP/none"
		bare -device VGA,id=video0 >>"$TMP/vga"
		bare -device VGA,id=video0 -vnc "unix:$TMP/vnc-$i.sock" -msg timestamp=on >>"$TMP/all"
		echo "round $i/$rounds done" >&2
	done
	report "without VGA" "$TMP/none"
	report "with -device VGA" "$TMP/vga"
	report "with VGA, -vnc and -msg" "$TMP/all"
	;;
qemu-img)
	rounds=${2:-6}
	: >"$TMP/create" && : >"$TMP/info"
	for ((i = 1; i <= rounds; i++)); do
		start=$(us)
		overlay "$TMP/o$i.qcow2"
		echo $((($(us) - start) / 1000)) >>"$TMP/create"
		start=$(us)
		qemu-img info --output=json "$TMP/o$i.qcow2" >/dev/null
		echo $((($(us) - start) / 1000)) >>"$TMP/info"
	done
	report "qemu-img create (overlay)" "$TMP/create"
	report "qemu-img info --output=json" "$TMP/info"
	;;
virsh)
	rounds=${2:-7}
	virsh -q -c qemu:///system version >/dev/null 2>&1 || die "no libvirtd answers on qemu:///system: start one with scripts/libvirtd.sh start"
	: >"$TMP/virsh" && : >"$TMP/bare"
	virsh_boot >/dev/null # warm-up, not counted
	for ((i = 1; i <= rounds; i++)); do
		if ((i % 2)); then
			virsh_boot >>"$TMP/virsh"
			bare >>"$TMP/bare"
		else
			bare >>"$TMP/bare"
			virsh_boot >>"$TMP/virsh"
		fi
		echo "round $i/$rounds done" >&2
	done
	report "virsh create" "$TMP/virsh"
	report "bare QEMU" "$TMP/bare"
	awk -v v="$(median <"$TMP/virsh")" -v b="$(median <"$TMP/bare")" 'BEGIN { printf "ratio virsh/bare: %.3f\n", v / b }'
	;;
*)
	echo "usage: $0 vga|qemu-img|virsh [ROUNDS]" >&2
	exit 2
	;;
esac
