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
# The packages with concurrency run under the race detector, beside the
# others without it; the end-to-end tests run last, alone. The Go tests run through gotestsum, which ends the output with
# a summary: every skipped test with its reason, then every failure.
#
# Arguments are passed to `go test` (e.g. -run TestName).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${HOST_PACKAGES[@]}" iproute2 etcd-server chromium prometheus openssl util-linux dnsmasq-base nftables ethtool coinor-cbc \
	systemd-boot-efi binutils dosfstools mtools
ensure_go
go mod download
build_web
# go vet (which needs the built console: the web package embeds it) runs
# while the console's unit tests, the guest's build and libvirtd's start
# mostly wait; gotestsum, which reports at the end, is built meanwhile
# (go run keeps what it built in the build cache).
go vet ./... &
vet_pid=$!
go run gotest.tools/gotestsum@v1.13.0 --version >/dev/null 2>&1 &
gotestsum_pid=$!
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

wait "$vet_pid"
wait "$gotestsum_pid" || true

# A short run of every fuzz target: their seed corpora (testdata/fuzz) run
# in go test below; here the fuzzer looks a little further each time. Each
# package's fuzzing test binary is built once, here; its targets run after
# the race set, beside the other packages (see below).
FUZZTIME=${POLYVISOR_FUZZTIME:-10s}
FUZZ_TARGETS=(
	internal/server:FuzzDecodeVMCreate internal/server:FuzzDecodeImageCreate internal/server:FuzzDecodeUserCreate
	internal/server:FuzzDecodeTokenCreate internal/server:FuzzDecodePassword
	internal/images:FuzzDetect internal/images:FuzzInspect
)
OUT=.cache/test
rm -rf "$OUT/sets" "$OUT/fuzz"
mkdir -p "$OUT/sets" "$OUT/fuzz"
for d in $(printf '%s\n' "${FUZZ_TARGETS[@]%%:*}" | sort -u); do
	echo "==> building $d's fuzzing tests"
	go test -c -fuzz . -o "$OUT/fuzz/${d//\//_}.test" "./$d"
done
# Go's fuzzer can end a run with "context deadline exceeded" when its time
# is up while it is still minimizing a new, interesting input: nothing
# failed. Such a run is made again once; a run that found a failing input
# (it says "Failing input written") fails at once. The fuzzer runs one
# worker: the guests of the tests beside it need the other CPU.
fuzz() { # directory target
	local bin cache
	bin=$PWD/$OUT/fuzz/${1//\//_}.test
	cache=$(go env GOCACHE)/fuzz/$(go list "./$1")
	echo "==> fuzzing $2 ($FUZZTIME)"
	local out rc=0
	out=$(mktemp)
	fuzz_once "$1" "$2" "$bin" "$cache" 2>&1 | tee "$out" || rc=$?
	if [ "$rc" != 0 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
		echo "==> fuzzing $2 again: the last run ran out of time, and found nothing failing"
		rc=0
		fuzz_once "$1" "$2" "$bin" "$cache" 2>&1 || rc=$?
	fi
	rm -f "$out"
	return "$rc"
}
fuzz_once() { # directory target binary cache
	# (in the package's directory, as go test runs it: the seed corpus and
	# a failing input's file are in its testdata)
	(cd "$1" && "$3" -test.run '^$' -test.fuzz "^$2\$" -test.fuzztime "$FUZZTIME" -test.fuzzminimizetime 5s \
		-test.fuzzcachedir "$4" -test.parallel 1 -test.timeout 10m)
}
# fuzz_all runs every target, its output into $OUT/fuzz/log, and records
# its exit status in $OUT/fuzz/rc.
fuzz_all() {
	local rc=0 t
	for t in "${FUZZ_TARGETS[@]}"; do
		fuzz "${t%%:*}" "${t#*:}" >>"$OUT/fuzz/log" 2>&1 || rc=1
		echo "    fuzzed ${t#*:}"
	done
	echo "$rc" >"$OUT/fuzz/rc"
}

# The packages whose code runs goroutines against shared state: their
# tests run under the race detector (and only so: one run each). A
# directory that does not exist (yet) is left out.
RACE_DIRS=()
for d in client internal/store internal/server internal/agent internal/estate internal/audit internal/throttle internal/controller; do
	[ -d "$d" ] && RACE_DIRS+=("./$d/...")
done
mapfile -t RACE_PKGS < <(go list "${RACE_DIRS[@]}")
mapfile -t OTHER_PKGS < <(go list ./... | grep -vxF -f <(printf '%s\n' "${RACE_PKGS[@]}"))

# Three runs of go test, as test2json, each into its own file:
#  - the race set, under -race, its packages one at a time (the server's
#    tests run four at once within it: they wait on timers and the
#    network more than they compute);
#  - at the same time, the other packages but the end-to-end ones, one at
#    a time: the QEMU, libvirt and network tests share the host's
#    libvirtd, nftables and CPUs, and TCG guests boot on time only when
#    not starved;
#  - then, alone, the end-to-end tests, which boot the most guests.
# The race set ends first: the fuzz targets run after it, in its place.
# The race set shares nothing with the others (no libvirtd, no guests, no
# host network), so running it (and the fuzzer) beside them only shares
# the CPUs.
# (The lists travel as words: package paths hold no spaces.)
E2E_PKGS=() GUEST_PKGS=()
for p in "${OTHER_PKGS[@]}"; do
	case "$p" in */polyvisor/e2e) E2E_PKGS+=("$p") ;; *) GUEST_PKGS+=("$p") ;; esac
done
# progress prints a line as each package ends (the whole output follows).
progress() {
	grep --line-buffered -E '^\{[^{]*"Action":"(pass|fail)","Package":"[^"]*","Elapsed":[0-9.]+\}$' |
		sed -u -E 's/.*"Action":"([a-z]+)","Package":"[^"]*\/polyvisor\/polyvisor\/?([^"]*)","Elapsed":([0-9.]+).*/    \1 \2 (\3 s)/' || true
}
run_set() { # name, go test arguments...
	local name=$1
	shift
	{
		rc=0
		go test -json -count=1 -timeout 25m "$@" || rc=$?
		echo "$rc" > "$OUT/sets/$name.rc"
	} | tee "$OUT/sets/$name.json" | progress
}
echo "==> go test: under -race: ${RACE_PKGS[*]##*/polyvisor/}, then the fuzz targets; beside them the others; then e2e"
# shellcheck disable=SC2086
{
	run_set race -race -p 1 -parallel 4 "$@" "${RACE_PKGS[@]}"
	fuzz_all
} &
race_pid=$!
# shellcheck disable=SC2086
run_set other -p 1 "$@" "${GUEST_PKGS[@]}"
wait "$race_pid"
if [ ${#E2E_PKGS[@]} -gt 0 ]; then
	run_set e2e -p 1 "$@" "${E2E_PKGS[@]}"
fi

# gotestsum (pinned, run with go run) prints go test's usual output of all
# three, then the skipped tests with their reasons and the failures, and
# the counts; it exits as the worst of the three. A failed fuzz run's
# output follows, and fails the script too.
rc=0
# shellcheck disable=SC2016
go run gotest.tools/gotestsum@v1.13.0 --format standard-quiet --format-icons text \
	--jsonfile "$OUT/go-test.json" --raw-command -- \
	bash -c 'cat "$1"/*.json; rc=0; for f in "$1"/*.rc; do [ "$(cat "$f")" = 0 ] || rc=1; done; exit $rc' sh "$OUT/sets" || rc=$?
if [ "$(cat "$OUT/fuzz/rc" 2>/dev/null)" != 0 ]; then
	echo "==> a fuzz run failed (its whole output is in $OUT/fuzz/log):"
	cat "$OUT/fuzz/log" 2>/dev/null || true
	rc=1
fi
exit "$rc"
