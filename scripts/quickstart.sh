#!/usr/bin/env bash
# Polyvisor's quickstart on a fresh Debian 12 machine (KVM not needed):
# installs what is missing, builds Polyvisor, starts the server with its
# embedded store and built-in agent, builds a tiny guest from Debian
# packages, imports it, boots a VM, shows its first console lines, and
# says how to go on with the CLI. The server keeps running afterwards.
#
# Environment: POLYVISOR_DATA_DIR (default /var/lib/polyvisor as root,
# else ~/.local/share/polyvisor), POLYVISOR_LISTEN (default :7443),
# POLYVISOR_BIN_DIR (where the CLI is installed: /usr/local/bin as root,
# else ~/.local/bin), POLYVISOR_BOOT_TIMEOUT (seconds to wait for the VM's
# console to show that it booted, default 60). It exits non-zero, with the
# VM's state and the last lines of its qemu.log, when the VM does not boot.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}"
ensure_go

build_web
echo "==> building polyvisor"
mkdir -p bin
go build -ldflags "-X github.com/polyvisor/polyvisor/internal/version.Commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" -o bin/polyvisor ./cmd/polyvisor
PV=$PWD/bin/polyvisor
# Put the CLI on PATH: /usr/local/bin as root, else ~/.local/bin.
if [ "$(id -u)" = 0 ]; then
	BIN_DIR=${POLYVISOR_BIN_DIR:-/usr/local/bin}
else
	BIN_DIR=${POLYVISOR_BIN_DIR:-$HOME/.local/bin}
fi
mkdir -p "$BIN_DIR"
install -m 0755 "$PV" "$BIN_DIR/polyvisor.new" && mv -f "$BIN_DIR/polyvisor.new" "$BIN_DIR/polyvisor"
case ":$PATH:" in
*":$BIN_DIR:"*) ON_PATH="(polyvisor is installed in $BIN_DIR, on your PATH)" ;;
*) ON_PATH="(polyvisor is installed in $BIN_DIR, which is not on your PATH: export PATH=\"$BIN_DIR:\$PATH\")" ;;
esac

if [ "$(id -u)" = 0 ]; then
	DATA=${POLYVISOR_DATA_DIR:-/var/lib/polyvisor}
else
	DATA=${POLYVISOR_DATA_DIR:-$HOME/.local/share/polyvisor}
fi
LISTEN=${POLYVISOR_LISTEN:-:7443}
SOCK=$DATA/polyvisor.sock
export POLYVISOR_SERVER=unix://$SOCK
mkdir -p "$DATA"

if ! "$PV" host list >/dev/null 2>&1; then
	echo "==> starting polyvisor server (data in $DATA, log in $DATA/server.log)"
	nohup "$PV" server --data-dir "$DATA" --listen "$LISTEN" >>"$DATA/server.log" 2>&1 &
	ready=""
	for _ in $(seq 1 150); do
		if "$PV" host list 2>/dev/null | grep -q ' ready '; then
			ready=yes
			break
		fi
		sleep 0.2
	done
	if [ -z "$ready" ]; then
		echo "ERROR: the server did not become ready within 30 s; last lines of $DATA/server.log:" >&2
		tail -n 30 "$DATA/server.log" >&2
		exit 1
	fi
fi
"$PV" host list

echo "==> building the tiny guest from Debian packages"
GUEST=$PWD/.cache/guest
scripts/build-guest.sh "$GUEST" >/dev/null

import() { # name kind file
	if ! "$PV" image show "$1" >/dev/null 2>&1; then
		"$PV" image import "$3" --name "$1" --kind "$2"
	fi
}
import tiny-kernel kernel "$GUEST/vmlinuz"
import tiny-initrd initrd "$GUEST/initrd.img"
import tiny-disk disk "$GUEST/disk.qcow2"
"$PV" image list

VM=demo
if ! "$PV" vm show "$VM" >/dev/null 2>&1; then
	echo "==> creating VM $VM"
	printf 'instance-id: %s\nlocal-hostname: %s\n' "$VM" "$VM" >"$DATA/demo-meta-data"
	"$PV" vm create "$VM" --vcpus 1 --memory 256M --image tiny-disk \
		--kernel tiny-kernel --initrd tiny-initrd --cmdline "console=ttyS0 quiet no_timer_check" \
		--meta-data "$DATA/demo-meta-data" --label app=demo
else
	"$PV" vm start "$VM"
fi
"$PV" vm list

echo "==> waiting for $VM to boot (its console must show POLYVISOR-GUEST-READY)"
BOOT_TIMEOUT=${POLYVISOR_BOOT_TIMEOUT:-60}
booted=""
for _ in $(seq 1 $((BOOT_TIMEOUT * 5))); do
	if "$PV" vm console-log "$VM" 2>/dev/null | grep -q POLYVISOR-GUEST-READY; then
		booted=yes
		break
	fi
	sleep 0.2
done
if [ -z "$booted" ]; then
	# Say loudly what went wrong, with what QEMU and the host said.
	{
		echo
		echo "ERROR: VM $VM did not boot: its console showed no POLYVISOR-GUEST-READY within $BOOT_TIMEOUT s."
		"$PV" vm show "$VM" || true
		"$PV" host list || true
		uid=$("$PV" vm show "$VM" -o json 2>/dev/null | grep -m1 -o '"uid": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
		if [ -n "$uid" ] && [ -f "$DATA/agent/vms/$uid/qemu.log" ]; then
			echo "--- last lines of $DATA/agent/vms/$uid/qemu.log"
			tail -n 20 "$DATA/agent/vms/$uid/qemu.log"
		fi
		echo "--- last lines of its console"
		"$PV" vm console-log "$VM" 2>/dev/null | tail -n 10 || true
		echo "--- last lines of $DATA/server.log"
		tail -n 20 "$DATA/server.log"
	} >&2
	exit 1
fi
echo "==> first console lines of $VM"
"$PV" vm console-log "$VM" | head -n 8

# The URL of the web console: the --listen host, or this machine's name
# when the server listens on every address.
PORT=${LISTEN##*:}
HOST=${LISTEN%:*}
HOST=${HOST#[}
HOST=${HOST%]}
case "$HOST" in
"" | 0.0.0.0 | "::") HOST=$(hostname) ;;
esac
case "$HOST" in
*:*) URL="https://[$HOST]:$PORT/" ;;
*) URL="https://$HOST:$PORT/" ;;
esac

cat <<EOT

Polyvisor is running: a server with its embedded store, and VM "$VM" booted.
Go on with the CLI (as root, through the local socket):
  export POLYVISOR_SERVER=$POLYVISOR_SERVER
  polyvisor vm list
  polyvisor vm console $VM          # attach to the serial console (Ctrl-] detaches)
  polyvisor vm pause $VM; polyvisor vm resume $VM
  polyvisor vm stop $VM; polyvisor vm delete $VM
  polyvisor op list                 # every action is an operation
  polyvisor host join-token         # add another host: run the printed 'polyvisor agent' there
$ON_PATH
The web console is at $URL (its certificate is signed by the CA in
$DATA/pki/ca.crt): sign in with the admin token in $DATA/admin.token,
or create users with 'polyvisor user create'.
From another machine, use the TLS API on $URL with that CA and a token.
Server log: $DATA/server.log
EOT
