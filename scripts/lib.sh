# Shared helpers of Polyvisor's scripts (sourced, not run).

# need_root_or_sudo runs a command as root.
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install installs the Debian packages that are missing.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "==> installing ${missing[*]}"
	as_root apt-get update -qq
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_go puts Go on PATH (the toolchain lives in /usr/local/go).
ensure_go() {
	if ! command -v go >/dev/null 2>&1; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	if ! command -v go >/dev/null 2>&1; then
		echo "Go is not installed: install Go 1.26 or later into /usr/local/go (https://go.dev/dl/)" >&2
		exit 1
	fi
	export PATH="$(go env GOPATH)/bin:$PATH"
}

# The packages Polyvisor's QEMU hosts need.
HOST_PACKAGES=(qemu-system-x86 qemu-utils busybox-static ca-certificates passt ovmf)

# build_web builds the browser console (web/dist), which `go build` embeds
# into the binary. It needs Node.js 20 or later with npm; the packages
# come from web/package-lock.json.
build_web() {
	if ! command -v npm >/dev/null 2>&1; then
		apt_install nodejs npm
	fi
	# Nothing to do when the built app is newer than everything it is built from.
	if [ -f web/dist/index.html ] && [ -d web/node_modules ] &&
		[ -z "$(find web/src web/public web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json \
			-newer web/dist/index.html -print -quit 2>/dev/null)" ]; then
		echo "==> the web console is up to date"
		return 0
	fi
	echo "==> building the web console"
	(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
}
