#!/usr/bin/env bash
# Installs the ctxscope agent on a Jetson Orin board (JetPack 6, Ubuntu 22.04, Python 3.10) as a
# systemd service. Run as root from a checkout of ctxscope:   sudo bash jetson/install.sh
#
# PyTorch for Jetson comes from NVIDIA (JetPack wheels), not from PyPI: install it system-wide first
# (the agent's virtual environment sees system packages), or set TORCH_WHEEL=/path/to/torch.whl.
# BUNDLE=/path/to/bundle installs the device's enrollment bundle (`ctxscope collector enroll DEVICE
# --out bundle/` on the collector: agent.toml with the device's credentials, and the site's CA).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
prefix=/opt/ctxscope
config=/etc/ctxscope/agent.toml

[ "$(id -u)" -eq 0 ] || { echo "run as root: sudo bash $0" >&2; exit 1; }
[ -e /etc/nv_tegra_release ] || echo "warning: /etc/nv_tegra_release not found: this does not look like a Jetson" >&2

if ! systemctl is-active --quiet jtop.service; then
  echo "jtop.service is not running: install jetson-stats (pip3 install -U jetson-stats) and reboot," >&2
  echo "otherwise the agent falls back to tegrastats for power and thermals." >&2
fi

id ctxscope >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ctxscope --shell /usr/sbin/nologin ctxscope
for group in jtop video render; do
  getent group "$group" >/dev/null && usermod -aG "$group" ctxscope
done

python3 -m venv --system-site-packages "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
if [ -n "${TORCH_WHEEL:-}" ]; then
  "$prefix/venv/bin/python" -m pip install --quiet "$TORCH_WHEEL"
fi
"$prefix/venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "torch with CUDA is not importable: install NVIDIA's JetPack torch wheel, or set TORCH_WHEEL" >&2
  exit 1
}
"$prefix/venv/bin/python" -m pip install --quiet "$repo[agent,jetson]"

install -d -m 0755 /etc/ctxscope
if [ -n "${BUNDLE:-}" ]; then
  install -m 0640 -g ctxscope "$BUNDLE/agent.toml" "$config"
  install -m 0644 "$BUNDLE/ca.crt" /etc/ctxscope/ca.crt
fi
[ -e "$config" ] || install -m 0640 -g ctxscope "$here/agent.example.toml" "$config"
install -m 0644 "$here/ctxscope-agent.service" /etc/systemd/system/ctxscope-agent.service
systemctl daemon-reload
systemctl enable --now ctxscope-agent.service
echo "installed. Edit $config (device id, broker), then: systemctl restart ctxscope-agent"
echo "logs: journalctl -u ctxscope-agent -f"
