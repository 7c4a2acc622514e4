#!/usr/bin/env bash
# bench-quiet.sh COMMAND [ARG...]
#
# Waits until this machine is quiet, then runs COMMAND: the gate the runs
# in docs/BENCHMARKS.md were started behind. Quiet is fewer than
# $QUIET_CPUS CPUs (default 0.15) busy, as /proc/stat counts them (all but
# idle and iowait), over one window of $QUIET_SECONDS seconds (default 5).
# Each window's figure goes to stderr. After $QUIET_TIMEOUT seconds
# (default 1800) without a quiet window it gives up with status 1.
#
#   scripts/bench-quiet.sh polyvisor bench lifecycle
set -euo pipefail

QUIET_CPUS=${QUIET_CPUS:-0.15}
QUIET_SECONDS=${QUIET_SECONDS:-5}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-1800}

[[ $# -ge 1 ]] || {
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 2
}

# sample prints "busy total" jiffies of all CPUs from /proc/stat.
sample() {
	local _cpu user nice system idle iowait irq softirq steal _rest
	read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
	echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

cpus=$(nproc)
deadline=$((SECONDS + QUIET_TIMEOUT))
read -r busy0 total0 < <(sample)
while :; do
	sleep "$QUIET_SECONDS"
	read -r busy1 total1 < <(sample)
	busy=$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) -v n="$cpus" 'BEGIN { printf "%.2f", (t > 0 ? n * b / t : n) }')
	echo "bench-quiet.sh: $busy of $cpus CPUs busy over the last ${QUIET_SECONDS}s" >&2
	if awk -v b="$busy" -v q="$QUIET_CPUS" 'BEGIN { exit !(b < q) }'; then
		echo "bench-quiet.sh: quiet (< $QUIET_CPUS CPUs): running $*" >&2
		exec "$@"
	fi
	if ((SECONDS >= deadline)); then
		echo "bench-quiet.sh: the machine was never quiet in ${QUIET_TIMEOUT}s" >&2
		exit 1
	fi
	busy0=$busy1 total0=$total1
done
