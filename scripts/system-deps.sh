#!/usr/bin/env bash
# Installs the system programs the test suite drives for real: the Mosquitto broker and headless
# Chromium, and shellcheck and systemd-analyze for scripts/check-deploy.sh (Debian packages). Does nothing for what is already there; needs root (or sudo) to install.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "missing ${need[*]}: install them (Debian/Ubuntu: apt-get install ${need[*]})" >&2; exit 1; }
  as_root=(sudo)
fi
echo "installing ${need[*]} (Debian packages)"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
