#!/usr/bin/env bash
# Runs every Polyvisor test on a fresh Debian 12 machine: installs what the
# tests need (QEMU, qemu-utils, busybox-static, iproute2 for the second-host
# test, etcd-server for the external-etcd test, libvirtd as a real libvirt
# peer, Chromium for the browser tests), fetches the Go modules and npm
# packages, builds the web console and the tiny test guest, and runs the
# web console's unit tests, `go vet` and `go test` (whose browser test
# drives the console in Chromium against a real server and VM).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}" iproute2 etcd-server chromium
ensure_go
go mod download
build_web
(cd web && npm test --silent)
# The browser test must run here, not skip.
export POLYVISOR_BROWSER_TESTS=1

# The tiny guest (kernel, initrd, disk) every QEMU test boots, built once
# from Debian packages and cached between runs.
export POLYVISOR_GUEST_DIR="${POLYVISOR_GUEST_DIR:-$PWD/.cache/guest}"
scripts/build-guest.sh "$POLYVISOR_GUEST_DIR"

# A real libvirtd for the libvirt provider's tests (as root; without root
# those tests say why they skip).
if [ "$(id -u)" = 0 ]; then
	bash scripts/libvirtd.sh start
	trap 'bash scripts/libvirtd.sh stop >/dev/null 2>&1 || true' EXIT
fi

go vet ./...
# One package at a time: the QEMU, libvirt and e2e tests share the host's
# libvirtd and CPUs, and TCG guests boot on time only when not starved.
go test -p 1 -count=1 -timeout 25m "$@" ./...

# A short run of every fuzz target: their seed corpora (testdata/fuzz) run
# in go test above; here the fuzzer looks a little further each time.
FUZZTIME=${POLYVISOR_FUZZTIME:-10s}
fuzz() { # package target
	echo "==> fuzzing $2 ($FUZZTIME)"
	go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "$1"
}
for t in FuzzDecodeVMCreate FuzzDecodeImageCreate FuzzDecodeUserCreate FuzzDecodeTokenCreate FuzzDecodePassword; do
	fuzz ./internal/server/ "$t"
done
for t in FuzzDetect FuzzInspect; do
	fuzz ./internal/images/ "$t"
done
