#!/usr/bin/env bash
# make docker-engine: a Docker engine the tests and CI can use, on Debian/Ubuntu as root (or with sudo -n).
#   1. an engine that already answers `docker info` (Docker Desktop, docker-ce, a running docker.io) is used as is;
#      otherwise Debian's docker.io is installed when missing and started: through systemd where it runs, else
#      `dockerd --bridge=none --iptables=false` (leaves the host's network and firewall alone; builds and test
#      containers use host networking or compose's own network, containers get no NAT to the outside);
#   2. the base image debian:bookworm-slim: pulled where a registry answers, else made locally with mmdebstrap
#      from Debian's archive and `docker import`, trimmed like the official slim image (no docs, man pages,
#      locales or apt caches: measured 122 MB here against 164 MB untrimmed).
# --optional (used by `make setup`): where this cannot work (macOS, not root, not Debian), say so and exit 0.
set -euo pipefail

OPTIONAL=0
[ "${1:-}" = "--optional" ] && OPTIONAL=1
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${SUITE:-bookworm}"
LOG="${DOCKERD_LOG:-/var/log/droidhead-dockerd.log}"

say() { echo "docker-engine: $*"; }
give_up() {
  say "$*"
  if [ "$OPTIONAL" = 1 ]; then say "skipped (the docker tests will say why they skip)"; exit 0; fi
  exit 1
}

engine_up() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

[ "$(uname -s)" = "Linux" ] || give_up "not Linux: install Docker Desktop and start it"
command -v dpkg-query >/dev/null 2>&1 || give_up "not Debian-based: install Docker Engine yourself"
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  engine_up && [ -n "$(docker image ls -q "$BASE_IMAGE" 2>/dev/null)" ] && exit 0
  give_up "needs root (or sudo without a password) to install and start Docker"
fi

missing() {  # the Debian packages of "$@" that are not installed
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

apt_install() {
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

start_engine() {
  if [ -d /run/systemd/system ]; then
    $sudo systemctl start docker
  else
    say "starting dockerd (log: $LOG)"
    # setsid: the daemon outlives this make; no bridge and no iptables rules: the host's network stays as it was.
    $sudo setsid dockerd --bridge=none --iptables=false >>"$LOG" 2>&1 < /dev/null &
  fi
  for _ in $(seq 60); do engine_up && return 0; sleep 1; done
  give_up "dockerd did not answer within 60 s; see $LOG"
}

make_base_image() {
  # Trimmed as debuerreotype trims the official slim image, so image sizes measured here match a user's.
  local clean_hook
  # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's hook shell, not here
  clean_hook='cat > "$1/etc/apt/apt.conf.d/docker-clean" <<"CONF"
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
CONF'
  say "no registry: making $BASE_IMAGE with mmdebstrap from Debian's archive (about 2 minutes)"
  # shellcheck disable=SC2016
  $sudo mmdebstrap --variant=minbase --quiet \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --customize-hook="$clean_hook" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
      "$SUITE" - | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
}

if ! engine_up; then
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  start_engine
fi
say "engine $(docker info --format '{{.ServerVersion}}') up"

if [ -z "$(docker image ls -q "$BASE_IMAGE")" ]; then
  if ! timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    mapfile -t need < <(missing mmdebstrap)
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    make_base_image
  fi
fi
say "$BASE_IMAGE: $(docker image ls --format '{{.Size}}' "$BASE_IMAGE" | head -n1)"
