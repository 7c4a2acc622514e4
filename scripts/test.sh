#!/usr/bin/env bash
# Runs every Polyvisor test on a fresh Debian 12 machine: installs what the
# tests need (QEMU, qemu-utils, busybox-static, iproute2 for the second-host
# and network tests, dnsmasq-base, nftables and ethtool for the network
# tests, etcd-server for the external-etcd test, libvirtd as a real libvirt
# peer, Chromium for the browser tests, Prometheus for the scrape test,
# COIN-OR CBC for the planner's exactness test),
# fetches the Go modules and npm packages, builds the web console and the
# tiny test guest, and runs the web console's unit tests, `go vet`, a short
# run of every fuzz target and `go test` (whose browser test drives the
# console in Chromium against a real server and VM).
#
# Every peer a test needs is installed and started here, so a test whose
# peer is missing fails instead of skipping (POLYVISOR_REQUIRE_PEERS=1,
# package internal/testutil/peer). Run as another user than root, the tests
# that need root (namespaces, mounts, libvirtd, confining QEMU) skip instead,
# as they do with POLYVISOR_REQUIRE_PEERS=0 set by hand.
#
# The packages with concurrency run under the race detector; the others
# without it. The Go tests run through gotestsum, which ends the output with
# a summary: every skipped test with its reason, then every failure.
#
# Arguments are passed to `go test` (e.g. -run TestName).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}" iproute2 etcd-server chromium prometheus openssl util-linux dnsmasq-base nftables ethtool coinor-cbc
ensure_go
go mod download
build_web
(cd web && npm test --silent)

if [ -z "${POLYVISOR_REQUIRE_PEERS:-}" ]; then
	if [ "$(id -u)" = 0 ]; then
		POLYVISOR_REQUIRE_PEERS=1
	else
		echo "==> not root: the tests that need root skip (they are listed at the end)"
		POLYVISOR_REQUIRE_PEERS=0
	fi
fi
export POLYVISOR_REQUIRE_PEERS

# The tiny guest (kernel, initrd, disk) every QEMU test boots, built once
# from Debian packages and cached between runs.
export POLYVISOR_GUEST_DIR="${POLYVISOR_GUEST_DIR:-$PWD/.cache/guest}"
scripts/build-guest.sh "$POLYVISOR_GUEST_DIR"

# A real libvirtd for the libvirt provider's tests (as root), listening on
# 127.0.0.1:16509 too, without authentication, for the qemu+tcp:// tests;
# exported, so that the tests that restart it keep the listener.
export POLYVISOR_LIBVIRTD_TCP=1
if [ "$(id -u)" = 0 ]; then
	bash scripts/libvirtd.sh start
	trap 'bash scripts/libvirtd.sh stop >/dev/null 2>&1 || true' EXIT
fi

go vet ./...

# A short run of every fuzz target: their seed corpora (testdata/fuzz) run
# in go test below; here the fuzzer looks a little further each time.
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

# The packages whose code runs goroutines against shared state: their
# tests run under the race detector (and only so: one run each). A
# directory that does not exist (yet) is left out.
RACE_DIRS=()
for d in client internal/store internal/server internal/agent internal/estate internal/audit internal/throttle internal/controller; do
	[ -d "$d" ] && RACE_DIRS+=("./$d/...")
done
mapfile -t RACE_PKGS < <(go list "${RACE_DIRS[@]}")
mapfile -t OTHER_PKGS < <(go list ./... | grep -vxF -f <(printf '%s\n' "${RACE_PKGS[@]}"))

# go_tests runs both sets, one package at a time (the QEMU, libvirt and e2e
# tests share the host's libvirtd and CPUs, and TCG guests boot on time only
# when not starved), as test2json for gotestsum.
# (The lists travel as words: package paths hold no spaces.)
go_tests() {
	local rc=0
	# shellcheck disable=SC2086
	go test -json -race -p 1 -count=1 -timeout 25m "$@" $RACE_PKGS_LIST || rc=$?
	# shellcheck disable=SC2086
	go test -json -p 1 -count=1 -timeout 25m "$@" $OTHER_PKGS_LIST || rc=$?
	return "$rc"
}
export -f go_tests
export RACE_PKGS_LIST="${RACE_PKGS[*]}" OTHER_PKGS_LIST="${OTHER_PKGS[*]}"

# gotestsum (pinned, run with go run) prints go test's usual output, then
# the skipped tests with their reasons and the failures, and the counts.
mkdir -p .cache/test
echo "==> go test: under -race: ${RACE_PKGS[*]##*/polyvisor/}"
go run gotest.tools/gotestsum@v1.13.0 --format standard-quiet --format-icons text \
	--jsonfile .cache/test/go-test.json --raw-command -- \
	bash -c 'go_tests "$@"' go_tests "$@"
