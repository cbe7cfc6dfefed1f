#!/usr/bin/env bash
# Runs the end-to-end benchmark against the test bed's real Kafka and Redis,
# with River and Asynq (../shared/bench-peers) in the same run, so the
# figures can be compared as ratios on this machine.
#
#   bench/run.sh                 everything
#   PEERS=0 bench/run.sh         Sluice only
#   E2E_FLAGS="-batch-n 20000"   extra flags for bench/e2e
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-../shared/bench-peers}
./deploy/testbed.sh start >&2
# shellcheck disable=SC1091
source "${SLUICE_TESTBED_DIR:-.testbed}/env"
redis-cli -u "$SLUICE_TEST_REDIS_URL" flushdb >/dev/null

out=$(mktemp -d)
go build -o "$out/sluice" ./cmd/sluice
go build -o "$out/e2e" ./bench/e2e

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(go version | cut -d' ' -f3), Kafka $(ls "${SLUICE_TESTBED_DIR:-.testbed}"/kafka/libs | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p')"
if [ "${PEERS:-1}" = 1 ] && [ -d "$PEERS_DIR" ]; then
  echo "## peers (River, Asynq: no-op jobs)"
  (cd "$PEERS_DIR" && ./run.sh river asynq) 2>"$out/peers.log" | sed -n '/^system/,$p'
fi
echo "## sluice"
# shellcheck disable=SC2086
"$out/e2e" -sluice "$out/sluice" ${E2E_FLAGS:-} 2>"$out/e2e.log"
echo "(logs in $out)"
