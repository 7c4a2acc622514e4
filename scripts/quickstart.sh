#!/usr/bin/env bash
# Polyvisor's quickstart on a fresh Debian 12 machine (KVM not needed):
# installs what is missing, builds Polyvisor, starts the server with its
# embedded store and built-in agent, builds a tiny guest from Debian
# packages, imports it, boots a VM, shows its first console lines, and
# says how to go on with the CLI. The server keeps running afterwards.
#
# Environment: POLYVISOR_DATA_DIR (default /var/lib/polyvisor as root,
# else ~/.local/share/polyvisor), POLYVISOR_LISTEN (default :7443).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}"
ensure_go

build_web
echo "==> building polyvisor"
mkdir -p bin
go build -o bin/polyvisor ./cmd/polyvisor
PV=$PWD/bin/polyvisor

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
	for _ in $(seq 1 100); do
		"$PV" host list 2>/dev/null | grep -q ' ready ' && break
		sleep 0.2
	done
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
		--kernel tiny-kernel --initrd tiny-initrd --cmdline "console=ttyS0 quiet" \
		--meta-data "$DATA/demo-meta-data" --label app=demo
else
	"$PV" vm start "$VM"
fi
"$PV" vm list

echo "==> first console lines of $VM"
for _ in $(seq 1 100); do
	"$PV" vm console-log "$VM" 2>/dev/null | grep -q POLYVISOR-GUEST-READY && break
	sleep 0.2
done
"$PV" vm console-log "$VM" | head -n 8

cat <<EOT

Polyvisor is running: a server with its embedded store, and VM "$VM" booted.
Go on with the CLI (as root, through the local socket):
  export POLYVISOR_SERVER=$POLYVISOR_SERVER
  $PV vm list
  $PV vm console $VM          # attach to the serial console (Ctrl-] detaches)
  $PV vm pause $VM; $PV vm resume $VM
  $PV vm stop $VM; $PV vm delete $VM
  $PV op list                 # every action is an operation
  $PV host join-token         # add another host: run the printed 'polyvisor agent' there
The web console is at https://<this host>$LISTEN/ (its certificate is signed
by the CA in $DATA/pki/ca.crt): sign in with the admin token in
$DATA/admin.token, or create users with '$PV user create'.
From another machine, use the TLS API on $LISTEN with that CA and a token.
Server log: $DATA/server.log
EOT
