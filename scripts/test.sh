#!/usr/bin/env bash
# Runs every Polyvisor test on a fresh Debian 12 machine: installs what the
# tests need (QEMU, qemu-utils, busybox-static, iproute2 for the second-host
# test, etcd-server for the external-etcd test), fetches the Go modules,
# builds the tiny test guest, and runs `go vet` and `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}" iproute2 etcd-server
ensure_go
go mod download

# The tiny guest (kernel, initrd, disk) every QEMU test boots, built once
# from Debian packages and cached between runs.
export POLYVISOR_GUEST_DIR="${POLYVISOR_GUEST_DIR:-$PWD/.cache/guest}"
scripts/build-guest.sh "$POLYVISOR_GUEST_DIR"

go vet ./...
go test -count=1 -timeout 25m "$@" ./...
