#!/usr/bin/env bash
# The monitor's own cost at rest: CPU and RSS of `insmon run` on the embedded default
# config over a window (default 60 s), side by side with node_exporter in the same run.
# Usage: make bench   (or bench/idle.sh [SECONDS] once .venv exists)
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
ticks=$(getconf CLK_TCK)
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cpu_seconds() { awk -v t="$ticks" '{ print ($14 + $15) / t }' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

pids=() names=()
.venv/bin/insmon --log-level warning run --listen "127.0.0.1:$port" &
pids+=($!) names+=("insmon")
if command -v prometheus-node-exporter >/dev/null; then
  prometheus-node-exporter --web.listen-address="127.0.0.1:$((port + 1))" >/dev/null 2>&1 &
  pids+=($!) names+=("node_exporter")
else
  echo "prometheus-node-exporter not installed: no side-by-side figure (make bench installs it)"
fi
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

sleep 5  # start-up and first runs are not idle
declare -a before
for i in "${!pids[@]}"; do before[i]=$(cpu_seconds "${pids[i]}"); done
sleep "$window"
echo "idle cost over ${window} s, no scrapes (insmon: the embedded default config):"
for i in "${!pids[@]}"; do
  awk -v n="${names[i]}" -v b="${before[i]}" -v a="$(cpu_seconds "${pids[i]}")" \
      -v w="$window" -v r="$(rss_mib "${pids[i]}")" \
      'BEGIN { printf "  %-14s CPU %.2f s = %.3f %% of one core, RSS %s MiB\n", n, a - b, 100 * (a - b) / w, r }'
done
