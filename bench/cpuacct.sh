#!/usr/bin/env bash
# CPU seconds used by each process of the bench (broker, Redis, Sluice, the
# load generator) while a command runs:
#   bench/cpuacct.sh ./e2e -sluice ./sluice -phases batch -batch-n 60000
set -euo pipefail
ticks=$(getconf CLK_TCK)
during=$(mktemp)
trap 'rm -f "$during"' EXIT
snap() {
  for p in $(pgrep -f "java|redis-server|sluice|e2e" || true); do
    awk -v p="$p" '{print p, $2, $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || true
  done
}
snap >"$during.before"
"$@" &
pid=$!
# Processes that start and end within the command are caught by sampling.
while kill -0 "$pid" 2>/dev/null; do snap >>"$during"; sleep 0.5; done
wait "$pid" || true
awk -v t="$ticks" 'FNR==NR{b[$1]=$3; next} {last[$1]=$3; name[$1]=$2}
  END{for (p in last){s[name[p]]+=last[p]-(p in b?b[p]:0)} for (n in s) printf "%-20s %.1fs\n", n, s[n]/t}' \
  "$during.before" "$during"
rm -f "$during.before"
