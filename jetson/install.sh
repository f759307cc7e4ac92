#!/usr/bin/env bash
# Installs the ctxscope agent as a systemd service on a Jetson Orin board (JetPack 6: L4T r36, Ubuntu
# 22.04, Python 3.10) or on a Linux host with an NVIDIA GPU. Run as root from a checkout of ctxscope:
#
#   sudo bash jetson/install.sh [--device ID] [--broker HOST[:PORT]] [--bundle DIR] [--wheels DIR]
#   sudo bash jetson/install.sh --uninstall [--purge]
#
# torch is never installed here: the board's CUDA torch (NVIDIA's JetPack wheel, >= 2.6) is used through
# a virtual environment made with --system-site-packages, and everything else comes from the hashed lock
# (requirements/lock.txt) with --no-deps, so pip cannot replace torch. The script checks torch's
# version and CUDA before and after and stops if either changed or CUDA is unusable.
#
# Running it again is safe: it keeps an existing config and device id and reinstalls the same files.
# ROOT=/some/dir runs against a fake root (tests); PYTHON, LOCK and PREFIX can be overridden.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROOT=${ROOT:-}
PYTHON=${PYTHON:-python3}
LOCK=${LOCK:-$repo/requirements/lock.txt}
PREFIX=${PREFIX:-$ROOT/opt/ctxscope}
etc_dir=$ROOT/etc/ctxscope
config=$etc_dir/agent.toml
unit_dir=$ROOT/etc/systemd/system
unit=ctxscope-agent.service
dropin_dir=$unit_dir/$unit.d
state_dir=$ROOT/var/lib/ctxscope
min_torch=2.6

device=""
broker=""
bundle=""
wheels=""
action=install
purge=0

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=${2:?--device needs a value}; shift 2 ;;
    --broker) broker=${2:?--broker needs a value}; shift 2 ;;
    --bundle) bundle=${2:?--bundle needs a directory}; shift 2 ;;
    --wheels) wheels=${2:?--wheels needs a directory}; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root: sudo bash $0"
fi

uninstall() {
  systemctl disable --now "$unit" 2>/dev/null || true
  rm -rf "$dropin_dir"
  rm -f "$unit_dir/$unit"
  systemctl daemon-reload
  rm -rf "$PREFIX"
  if [ "$purge" -eq 1 ]; then
    rm -rf "$etc_dir" "$state_dir"
    echo "removed the agent, its config and its spool"
  else
    echo "removed the agent; kept $etc_dir and $state_dir (--purge removes them)"
  fi
}

# "<version> <cuda>" of the torch the venv sees, or "none".
torch_identity() {
  "$1" -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>/dev/null || echo none
}

ensure_venv_support() {
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    local minor
    minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    echo "installing python$minor-venv"
    apt-get install -y "python$minor-venv" || apt-get install -y python3-venv \
      || die "python3-venv is missing and could not be installed (apt-get install python3-venv)"
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "Python >= 3.10 is needed; $("$PYTHON" --version 2>&1) found"
}

check_board_torch() {
  local identity=$1
  [ "$identity" != none ] || die "torch is not importable by $PYTHON. Install a CUDA build of torch >= $min_torch
  system-wide first (see jetson/README.md: on JetPack 6, NVIDIA's wheel for r36 or the jetson-ai-lab
  index; on a desktop, pip install torch from download.pytorch.org). It is never installed by this script."
  "$PYTHON" - "$min_torch" <<'EOF' || exit 1
import sys

import torch

wanted = tuple(int(p) for p in sys.argv[1].split("."))
release = torch.__version__.split("+")[0]
parts = tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in release.split(".")[:2])
prerelease = any(tag in release for tag in ("a", "b", "rc", "dev"))
if parts < wanted or (parts == wanted and prerelease):
    sys.exit(
        f"install.sh: torch {torch.__version__} is too old: transformers 5 needs torch >= {sys.argv[1]} "
        "(a pre-release of it counts as older). Install a newer CUDA torch (see jetson/README.md)."
    )
if torch.version.cuda is None:
    sys.exit(f"install.sh: torch {torch.__version__} is a CPU-only build; install a CUDA build.")
EOF
}

check_cuda() {
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || die \
    "torch $(torch_identity "$1") cannot use the GPU (torch.cuda.is_available() is False). On a Jetson:
  is this torch NVIDIA's JetPack build, and does the user see /dev/nvhost-*, /dev/nvmap (video/render
  groups)? On a desktop: does nvidia-smi work, and does the torch CUDA version fit the driver?"
}

derive_device_id() {
  local source=""
  if [ -r "$ROOT/sys/firmware/devicetree/base/serial-number" ]; then
    source=$(tr -d '\0' <"$ROOT/sys/firmware/devicetree/base/serial-number")
  fi
  if [ -z "$source" ] && [ -s "$ROOT/etc/machine-id" ]; then
    source=$(cat "$ROOT/etc/machine-id")
  fi
  [ -n "$source" ] || die "no /etc/machine-id or module serial to derive a device id from: pass --device ID"
  local kind=gpu
  [ -e "$ROOT/etc/nv_tegra_release" ] && kind=jetson
  printf '%s-%s\n' "$kind" "$(printf '%s' "$source" | sha256sum | cut -c1-12)"
}

write_config() {
  install -d -m 0750 "$etc_dir"
  if [ -n "$bundle" ]; then
    [ -d "$bundle" ] || die "--bundle $bundle is not a directory"
    [ -f "$bundle/agent.toml" ] || die "--bundle $bundle has no agent.toml"
    local file
    for file in "$bundle"/*; do
      [ -f "$file" ] || continue
      install -m 0600 "$file" "$etc_dir/$(basename "$file")"
      chown ctxscope:ctxscope "$etc_dir/$(basename "$file")"
    done
    # The service and `agent status` (run as root) must agree on the spool, hence on the state file.
    if ! grep -q '^spool_path' "$config" && ! grep -q '^\[' "$config"; then
      echo 'spool_path = "/var/lib/ctxscope/spool.sqlite"' >>"$config"
    fi
    echo "copied the enrollment bundle into $etc_dir"
  elif [ ! -e "$config" ]; then
    [ -n "$device" ] || device=$(derive_device_id)
    local host=collector.local port=1883
    if [ -n "$broker" ]; then
      host=${broker%%:*}
      [ "$broker" = "$host" ] || port=${broker##*:}
    fi
    sed -e "s/^device = .*/device = \"$device\"/" \
      -e "s/^broker_host = .*/broker_host = \"$host\"/" \
      -e "s/^broker_port = .*/broker_port = $port/" \
      -e "s|^spool_path = .*|spool_path = \"/var/lib/ctxscope/spool.sqlite\"|" \
      "$here/agent.example.toml" >"$config.new"
    install -m 0640 "$config.new" "$config"
    rm -f "$config.new"
    chown root:ctxscope "$config"
    echo "wrote $config for device $device"
  else
    echo "kept $config"
  fi
  chown root:ctxscope "$etc_dir"
}

ensure_user() {
  grep -q '^ctxscope:' "$ROOT/etc/passwd" 2>/dev/null \
    || useradd --system --user-group --home-dir /var/lib/ctxscope --shell /usr/sbin/nologin ctxscope
  install -d -m 0750 "$state_dir"
  chown ctxscope:ctxscope "$state_dir"
}

# Drop-ins for what only some hosts have: groups that exist, jtop's unit, restart backoff (systemd >= 254).
write_dropins() {
  local groups="" group
  for group in jtop video render; do
    grep -q "^$group:" "$ROOT/etc/group" 2>/dev/null && groups="$groups $group"
  done
  install -d -m 0755 "$dropin_dir"
  {
    echo "# Written by jetson/install.sh for this host."
    echo "[Service]"
    [ -z "$groups" ] || echo "SupplementaryGroups=${groups# }"
    if [ -n "$(systemctl list-unit-files --no-legend jtop.service 2>/dev/null)" ]; then
      echo "[Unit]"
      echo "# jtop's service owns the power and thermal sensors the agent samples."
      echo "Wants=jtop.service"
      echo "After=jtop.service"
    fi
  } >"$dropin_dir/host.conf"
  local version
  version=$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 }')
  if [ "${version:-0}" -ge 254 ] 2>/dev/null; then
    printf '[Service]\nRestartSteps=10\nRestartMaxDelaySec=300\n' >"$dropin_dir/backoff.conf"
  else
    rm -f "$dropin_dir/backoff.conf"
  fi
}

install_agent() {
  [ -f "$LOCK" ] || die "the lock $LOCK is missing: run from a full checkout of ctxscope"
  [ -e "$ROOT/etc/nv_tegra_release" ] \
    && echo "Jetson: $(head -n 1 "$ROOT/etc/nv_tegra_release")"
  command -v nvidia-smi >/dev/null || [ -e "$ROOT/etc/nv_tegra_release" ] \
    || echo "warning: neither nvidia-smi nor /etc/nv_tegra_release found: is there an NVIDIA GPU?" >&2
  if ! systemctl is-active --quiet jtop.service 2>/dev/null && [ -e "$ROOT/etc/nv_tegra_release" ]; then
    echo "note: jtop.service is not running; the agent reads power and thermals from tegrastats" >&2
  fi

  ensure_venv_support
  local before
  before=$(torch_identity "$PYTHON")
  check_board_torch "$before"

  ensure_user
  [ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$PREFIX/venv"
  local venv_python=$PREFIX/venv/bin/python
  local pip_args=(--quiet --disable-pip-version-check)
  [ -z "$wheels" ] || pip_args+=(--find-links "$wheels")
  "$venv_python" -m pip install "${pip_args[@]}" --require-hashes --no-deps -r "$LOCK"
  "$venv_python" -m pip install "${pip_args[@]}" --no-deps "$repo"

  local after
  after=$(torch_identity "$venv_python")
  [ "$after" = "$before" ] || die "torch changed during the install: before '$before', after '$after'"
  check_cuda "$venv_python"
  "$venv_python" -m pip check >/dev/null || echo "warning: pip check reports conflicts:" \
    "$("$venv_python" -m pip check 2>&1 | head -n 5)" >&2

  write_config
  install -d -m 0755 "$unit_dir"
  install -m 0644 "$here/$unit" "$unit_dir/$unit"
  write_dropins
  systemctl daemon-reload
  systemctl enable "$unit"
  if [ -n "$bundle" ] || [ -n "$broker" ]; then
    systemctl restart "$unit"
    echo "started $unit; follow it with: journalctl -u ctxscope-agent -f; state: ctxscope agent status"
  else
    echo "installed and enabled. Set broker_host in $config (or rerun with --broker/--bundle), then:"
    echo "  systemctl restart $unit"
  fi
}

case "$action" in
  install) install_agent ;;
  uninstall) uninstall ;;
esac
