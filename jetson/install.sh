#!/usr/bin/env bash
# Installs (or updates) the ctxscope agent as a systemd service on a Jetson Orin board (JetPack 6: L4T
# r36, Ubuntu 22.04, Python 3.10) or a desktop/server GPU host; jetson/README.md has the platform matrix.
#
#   sudo bash jetson/install.sh [--bundle DIR] [--device-id ID] [--uninstall]
#
# torch comes from the board, never from this script's installs: install NVIDIA's JetPack build of
# torch >= 2.6 system-wide first (jetson/README.md says where from), or name its wheel with
# TORCH_WHEEL=/path/to/torch.whl. The agent's virtual environment sees system packages
# (--system-site-packages); every other package comes from the hash-checked lock requirements/agent.txt
# without dependency resolution, so pip cannot replace the board's CUDA torch. The script checks that
# torch is unchanged and sees CUDA afterwards, and stops with the reason otherwise.
#
# --bundle DIR   the device's enrollment bundle (`ctxscope collector enroll DEVICE --out DIR` on the
#                collector: agent.toml with the device's credentials, and the site's ca.crt); the
#                service starts only once a bundle or an edited config is in place
# --device-id ID the fleet id (a-z, 0-9, '-'; at most 32); default: jetson-/gpu- and 12 characters of
#                the module's serial number, else of /etc/machine-id, so two hosts never share one
# --uninstall    stops and removes the service, the virtual environment and the service user; keeps
#                the config and the spool (remove /etc/ctxscope and /var/lib/ctxscope by hand)
#
# Idempotent: running it again updates the environment and keeps an existing config.
# For tests and images, ROOT=DIR installs under DIR (it must not be / then, or leave it empty),
# PYTHON names the interpreter, PIP_OPTS adds pip options, SKIP_SYSTEMCTL=1 leaves systemd alone.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROOT=${ROOT:-}
PYTHON=${PYTHON:-python3}
read -r -a pip_opts <<<"${PIP_OPTS:-}"
prefix=$ROOT/opt/ctxscope
confdir=$ROOT/etc/ctxscope
config=$confdir/agent.toml
unitdir=$ROOT/etc/systemd/system
unit=$unitdir/ctxscope-agent.service
statedir=$ROOT/var/lib/ctxscope
lock=$repo/requirements/agent.txt

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
systemctl_() { [ "${SKIP_SYSTEMCTL:-0}" = 1 ] || systemctl "$@"; }

bundle="" device_id="" uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) bundle=${2:?--bundle needs a folder}; shift 2 ;;
    --device-id) device_id=${2:?--device-id needs an id}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) sed -n '2,24s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
bundle=${bundle:-${BUNDLE:-}}
valid_id() { [[ $1 =~ ^[a-z0-9-]{1,32}$ ]] || die "device id '$1' must be 1-32 characters of a-z, 0-9 and '-'"; }
[ -z "$device_id" ] || valid_id "$device_id"

[ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root: sudo bash $0"

if [ "$uninstall" = 1 ]; then
  systemctl_ disable --now ctxscope-agent.service 2>/dev/null || true
  rm -f "$unit"
  systemctl_ daemon-reload
  rm -rf "$prefix"
  if [ -z "$ROOT" ] && id ctxscope >/dev/null 2>&1; then userdel ctxscope; fi
  say "removed the service and $prefix; kept $confdir and $statedir"
  exit 0
fi

# --- the board --------------------------------------------------------------------------------
release=$ROOT/etc/nv_tegra_release
platform=gpu  # a desktop or server GPU host: the same service, torch from its CUDA build
if [ -e "$release" ]; then
  platform=jetson
  l4t=$(sed -n 's/^# R\([0-9]*\).*/\1/p' "$release")
  [ "${l4t:-0}" -ge 36 ] || die "L4T r${l4t:-?} found: JetPack 5 and older are not supported (jetson/README.md says why)"
fi

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  [ -z "$ROOT" ] || die "$PYTHON cannot create virtual environments"
  say "installing python3-venv"
  apt-get update -qq && apt-get install -y -qq python3-venv
fi

torch_state() {  # version, CUDA version and location of the torch that PYTHON_ARG sees
  "$1" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.__file__)' 2>/dev/null || true
}

# --- the environment ---------------------------------------------------------------------------
"$PYTHON" -m venv --system-site-packages "$prefix/venv"
py=$prefix/venv/bin/python
if [ -n "${TORCH_WHEEL:-}" ]; then
  "$py" -m pip install --quiet --no-deps "${pip_opts[@]}" "$TORCH_WHEEL"
fi
before=$(torch_state "$py")
[ -n "$before" ] || die "torch is not importable: install NVIDIA's JetPack torch >= 2.6 system-wide, or set TORCH_WHEEL (jetson/README.md)"
"$py" - <<'PY' || die "the board's torch is older than 2.6 (transformers 5 refuses it): install a JetPack 6 build >= 2.6 (jetson/README.md)"
import re, sys, torch
major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
sys.exit(0 if (major, minor) >= (2, 6) else 1)
PY
cuda_check() { "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; }
cuda_check || die "torch ($before) does not see CUDA: install NVIDIA's JetPack build of torch, not a PyPI one"
bash "$repo/scripts/install-lock.sh" "$py" "$lock" --quiet "${pip_opts[@]}"
"$py" -m pip install --quiet --no-deps --no-build-isolation "${pip_opts[@]}" "$repo"
after=$(torch_state "$py")
[ "$before" = "$after" ] || die "torch changed during the install ($before -> $after): the lock must not touch it"
cuda_check || die "torch ($after) no longer sees CUDA after the install"
say "environment ready: torch $after"

# --- identity and config -----------------------------------------------------------------------
derive_id() {
  local serial machine
  serial=$(tr -d '\0' 2>/dev/null <"$ROOT/proc/device-tree/serial-number" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9' || true)
  if [ -n "$serial" ]; then echo "$platform-${serial: -12}"; return; fi
  machine=$(tr -cd 'a-f0-9' 2>/dev/null <"$ROOT/etc/machine-id" || true)
  [ -n "$machine" ] || die "no module serial and no /etc/machine-id: give --device-id"
  echo "$platform-${machine:0:12}"
}
install -d -m 0755 "$confdir"
configured=0
if [ -n "$bundle" ]; then
  [ -f "$bundle/agent.toml" ] || die "$bundle has no agent.toml (an enrollment bundle from \`ctxscope collector enroll\`)"
  install -m 0600 "$bundle/agent.toml" "$config"
  # A bundle names no spool: without one the service's spool would sit under its user's home, where
  # `agent status --config` (run as another user) would not look. The state folder, as in the example.
  grep -q '^spool_path *=' "$config" || echo 'spool_path = "/var/lib/ctxscope/spool.sqlite"' >>"$config"
  [ ! -f "$bundle/ca.crt" ] || install -m 0644 "$bundle/ca.crt" "$confdir/ca.crt"
  configured=1
  say "installed the enrollment bundle from $bundle"
elif [ -e "$config" ]; then
  say "kept the existing $config"
  # the example's placeholder password still there: not configured yet, so not started
  grep -q '^password = "change-me"' "$config" || configured=1
else
  device_id=${device_id:-$(derive_id)}
  valid_id "$device_id"
  sed -e "s/^device = .*/device = \"$device_id\"/" -e "s/^username = .*/username = \"$device_id\"/" \
    "$here/agent.example.toml" >"$config"
  chmod 0600 "$config"
  say "wrote $config for device '$device_id': set the broker and credentials (or rerun with --bundle)"
fi

# --- user, unit, service -----------------------------------------------------------------------
if [ -z "$ROOT" ]; then
  id ctxscope >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/ctxscope --shell /usr/sbin/nologin ctxscope
  for group in jtop video render; do  # only groups this board has
    if getent group "$group" >/dev/null; then usermod -aG "$group" ctxscope; fi
  done
  chown root:ctxscope "$config" && chmod 0640 "$config"
  [ ! -d "$statedir" ] || chown -R ctxscope:ctxscope "$statedir"
fi
install -d -m 0755 "$unitdir"
sed "s#/opt/ctxscope#$prefix#g; s#/etc/ctxscope#$confdir#g" "$here/ctxscope-agent.service" >"$unit"
chmod 0644 "$unit"
systemd_version=$(systemctl --version 2>/dev/null | sed -n 's/^systemd \([0-9]*\).*/\1/p' || true)
if [ "${systemd_version:-0}" -ge 254 ]; then  # restart backoff: 5 s growing to 10 min
  install -d -m 0755 "$unit.d"
  printf '[Service]\nRestartSteps=10\nRestartMaxDelaySec=10min\n' >"$unit.d/backoff.conf"
fi
systemctl_ daemon-reload
if [ "$configured" = 1 ]; then
  systemctl_ enable ctxscope-agent.service
  systemctl_ restart ctxscope-agent.service
  say "service running: journalctl -u ctxscope-agent -f; ctxscope agent status --config $config"
else
  # not enabled either: started at the next boot with the example config, it could only fail
  say "service installed, not enabled: edit $config (or install a bundle), then systemctl enable --now ctxscope-agent"
fi
