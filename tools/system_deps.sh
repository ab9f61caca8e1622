#!/usr/bin/env bash
# System packages the project uses on Debian/Ubuntu: OpenBLAS (fast MLX on CPU), openssh-server (the
# deploy tests run Ansible over real SSH on loopback), chromium + chromium-driver (the review page's browser
# tests; Selenium drives them, nothing is downloaded at run time), systemd (its systemd-analyze checks the router
# service's unit, in the deploy role and in the stand-in systemctl; systemd need not run). Installs only what is
# missing; never fails setup
# on a machine where it cannot install (macOS, no root): it says what to install instead.
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
command -v dpkg-query >/dev/null 2>&1 || { echo "system-deps: not Debian-based; install OpenBLAS and openssh-server yourself"; exit 0; }

wanted=(libopenblas0-pthread openssh-server chromium chromium-driver systemd)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "system-deps: missing ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null || echo "system-deps: apt-get update failed"
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "system-deps: could not install ${missing[*]} (tests that need them will say so)"
