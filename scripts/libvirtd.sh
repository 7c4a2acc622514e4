#!/usr/bin/env bash
# libvirtd.sh start|stop|status
#
# Runs a libvirt daemon (libvirtd + virtlogd) on a machine without systemd, for
# Polyvisor's libvirt provider tests and for trying the provider by hand. It
# must run as root. Both verbs are idempotent.
#
#   start   installs what is missing (libvirt-daemon, libvirt-clients,
#           libvirt-daemon-driver-qemu; never libvirt-daemon-system, which pulls
#           systemd-sysv), creates the libvirt-qemu user and group if missing,
#           writes a private configuration under $POLYVISOR_LIBVIRTD_DIR, starts
#           virtlogd and libvirtd, and waits until qemu:///system answers on
#           /var/run/libvirt/libvirt-sock (and, with POLYVISOR_LIBVIRTD_TCP=1,
#           on 127.0.0.1:16509). A libvirtd this script started without the
#           TCP listener that is now asked for is restarted with it.
#   stop    stops the virtlogd and libvirtd this script started. QEMU processes
#           of running domains are left alone: a libvirtd started again
#           re-attaches to them.
#   status  says whether the daemon answers.
#
# libvirtd's host UUID (the host's id in Polyvisor) is generated once and
# kept in $POLYVISOR_LIBVIRTD_DIR/host-uuid: without readable SMBIOS data
# libvirtd would make up a new one at every start.
#
# The configuration is private: libvirtd.conf and virtlogd.conf are passed
# with -f, and the daemons run in their own mount namespace in which
# $POLYVISOR_LIBVIRTD_DIR/etc is bind-mounted over /etc/libvirt, so the
# qemu.conf below (QEMU runs as root, no dynamic ownership, no security
# driver, no cgroups) never touches the host's /etc. Persistent definitions
# (domains, pools, networks) are kept in that private etc directory.
#
# Environment:
#   POLYVISOR_LIBVIRTD_DIR  the daemon's directory: configuration, private
#                           /etc/libvirt, pid files and logs
#                           (default /var/lib/polyvisor-libvirtd)
#   POLYVISOR_LIBVIRTD_TCP  when 1, libvirtd also listens on 127.0.0.1:16509
#                           without authentication (tests of qemu+tcp:// only:
#                           any local user then has root through libvirt)
set -euo pipefail

DIR=${POLYVISOR_LIBVIRTD_DIR:-/var/lib/polyvisor-libvirtd}
SOCK=/var/run/libvirt/libvirt-sock
PACKAGES=(libvirt-daemon libvirt-clients libvirt-daemon-driver-qemu)

log() { echo "libvirtd.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	echo "usage: $0 start|stop|status" >&2
	exit 2
}

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "installing ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	fi
}

ensure_qemu_user() {
	if ! getent group libvirt-qemu >/dev/null; then
		log "creating group libvirt-qemu"
		groupadd --system libvirt-qemu
	fi
	if ! getent passwd libvirt-qemu >/dev/null; then
		log "creating user libvirt-qemu"
		useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt \
			--no-create-home --shell /usr/sbin/nologin libvirt-qemu
	fi
}

# alive NAME PIDFILE succeeds when PIDFILE names a live (not zombie) process
# called NAME.
alive() {
	local pid stat
	[[ -s "$2" ]] || return 1
	pid=$(<"$2")
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

answers() { virsh -c qemu:///system version >/dev/null 2>&1; }

want_tcp() { [[ "${POLYVISOR_LIBVIRTD_TCP:-0}" == 1 ]]; }

# tcp_answers succeeds when something accepts connections on libvirtd's
# loopback TCP port.
tcp_answers() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/16509' 2>/dev/null; }

write_config() {
	mkdir -p "$DIR/etc" "$DIR/log"
	chmod 0700 "$DIR"
	# Seed the private /etc/libvirt with what the packages installed there
	# (client configuration), never overwriting what is already in it.
	if [[ -d /etc/libvirt ]] && ! mountpoint -q /etc/libvirt; then
		cp -an /etc/libvirt/. "$DIR/etc/" 2>/dev/null || true
	fi

	cat >"$DIR/etc/qemu.conf" <<-'EOF'
		# Written by Polyvisor's scripts/libvirtd.sh: QEMU runs as root with no
		# ownership changes, no security driver and no cgroups (containers).
		user = "root"
		group = "root"
		dynamic_ownership = 0
		remember_owner = 0
		security_driver = "none"
		cgroup_controllers = [ ]
		vnc_listen = "127.0.0.1"
	EOF

	# Without readable SMBIOS data (containers: no /dev/mem) libvirtd makes
	# up a new host UUID at every start; keep one for this directory.
	if [[ ! -s "$DIR/host-uuid" ]]; then
		cat /proc/sys/kernel/random/uuid >"$DIR/host-uuid"
	fi
	local tcp=0
	want_tcp && tcp=1
	cat >"$DIR/libvirtd.conf" <<-EOF
		# Written by Polyvisor's scripts/libvirtd.sh.
		host_uuid = "$(<"$DIR/host-uuid")"
		unix_sock_group = "root"
		unix_sock_ro_perms = "0777"
		unix_sock_rw_perms = "0770"
		auth_unix_ro = "none"
		auth_unix_rw = "none"
		listen_tls = 0
		listen_tcp = $tcp
		listen_addr = "127.0.0.1"
		auth_tcp = "none"
		log_outputs = "3:file:$DIR/log/libvirtd.log"
	EOF

	cat >"$DIR/virtlogd.conf" <<-EOF
		# Written by Polyvisor's scripts/libvirtd.sh.
		log_outputs = "3:file:$DIR/log/virtlogd.log"
	EOF
}

# launch starts the daemons that are not running. With a private mount
# namespace (unshare), the private etc is bind-mounted over /etc/libvirt for
# them; without one, the private qemu.conf is installed as /etc/libvirt/qemu.conf
# only when that file does not exist or was written by this script.
launch() {
	local listen=""
	want_tcp && listen="--listen"
	local cmds=""
	if ! alive virtlogd "$DIR/virtlogd.pid"; then
		cmds+="virtlogd -d -f '$DIR/virtlogd.conf' -p '$DIR/virtlogd.pid' && "
	fi
	cmds+="libvirtd -d $listen -f '$DIR/libvirtd.conf' -p '$DIR/libvirtd.pid'"

	mkdir -p /etc/libvirt
	if unshare --mount --propagation private true 2>/dev/null; then
		unshare --mount --propagation private \
			bash -c "mount --bind '$DIR/etc' /etc/libvirt && $cmds"
	else
		log "no private mount namespace here: using /etc/libvirt/qemu.conf"
		if [[ -e /etc/libvirt/qemu.conf ]] && ! grep -q "scripts/libvirtd.sh" /etc/libvirt/qemu.conf; then
			die "/etc/libvirt/qemu.conf exists and is not ours: not replacing it"
		fi
		cp "$DIR/etc/qemu.conf" /etc/libvirt/qemu.conf
		bash -c "$cmds"
	fi
}

start() {
	install_packages
	ensure_qemu_user
	if alive libvirtd "$DIR/libvirtd.pid" && answers; then
		if want_tcp && ! tcp_answers; then
			# Its domains keep running; the new daemon re-attaches to them.
			log "libvirtd (pid $(<"$DIR/libvirtd.pid")) has no TCP listener: restarting it with one"
			stop_one libvirtd "$DIR/libvirtd.pid"
		else
			log "libvirtd is already running (pid $(<"$DIR/libvirtd.pid"))"
			return 0
		fi
	fi
	if ! alive libvirtd "$DIR/libvirtd.pid" && answers; then
		log "a libvirtd this script did not start already answers on $SOCK"
		if want_tcp && ! tcp_answers; then
			log "it does not listen on 127.0.0.1:16509: the qemu+tcp:// tests will fail"
		fi
		return 0
	fi
	if alive libvirtd "$DIR/libvirtd.pid"; then
		# Ours, but not answering yet (just started): wait for it below.
		:
	else
		write_config
		launch
	fi
	local i
	for ((i = 0; i < 300; i++)); do
		if answers && { ! want_tcp || tcp_answers; }; then
			log "libvirtd is running (pid $(<"$DIR/libvirtd.pid")), socket $SOCK$(want_tcp && echo ", tcp 127.0.0.1:16509")"
			return 0
		fi
		if ((i > 10)) && ! alive libvirtd "$DIR/libvirtd.pid"; then
			break
		fi
		sleep 0.1
	done
	log "libvirtd did not answer on $SOCK$(want_tcp && echo " and 127.0.0.1:16509"); its log ends with:"
	tail -n 20 "$DIR/log/libvirtd.log" >&2 2>/dev/null || true
	exit 1
}

# stop_one NAME PIDFILE stops a daemon: SIGTERM, then SIGKILL after 10 s.
stop_one() {
	local name=$1 pidfile=$2 pid i
	if ! alive "$name" "$pidfile"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(<"$pidfile")
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$name" "$pidfile" || break
		sleep 0.1
	done
	if alive "$name" "$pidfile"; then
		log "$name did not stop: killing it"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$pidfile"
}

stop() {
	stop_one libvirtd "$DIR/libvirtd.pid"
	stop_one virtlogd "$DIR/virtlogd.pid"
}

status() {
	if answers; then
		virsh -c qemu:///system version
		alive libvirtd "$DIR/libvirtd.pid" && echo "started by libvirtd.sh (pid $(<"$DIR/libvirtd.pid"))"
		return 0
	fi
	echo "libvirtd does not answer on $SOCK"
	return 3
}

[[ $# -eq 1 ]] || usage
[[ "$(id -u)" == 0 ]] || die "must run as root"
case "$1" in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
