#!/usr/bin/env bash
# The benchmark suite as one command: release build of the server and the load generator, then every
# scenario with the issue's targets —
#   * load: 5,000 simulated Envoys, 500 services × 12 endpoints over 3 regions × 3 zones, full config,
#     20 single changes, churn of 50 changes/s for 60 s, both ADS protocols, each against the shared
#     server and the --no-shared-cache baseline (with the ratios);
#   * reconnect storm: the server SIGKILLed under 5,000 clients and a fresh one started on its address;
#   * scale-out: two replicas with --max-connection-age 60s, one killed and restarted;
# and ONE table (metric, target, measured, met/missed) on stdout, the JSON report in
# <target>/bench/suite-<unix time>.json (--json-out PATH to choose). About 20 minutes on 2 cores.
#
#   bash scripts/bench.sh                           # the whole suite at the issue's scale
#   bash scripts/bench.sh --quick                   # everything at 500 clients, under two minutes
#   bash scripts/bench.sh --protocol sotw --no-storm --json-out /tmp/b.json   # any xds-load flag (--help)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"

echo "==> cargo build --release (xds-server, xds-load)" >&2
cargo build --release -p xds-server -p xds-load --bin xds-server --bin xds-load >&2

# 5,000 connections are 5,000 sockets here and 5,000 in the server (twice that across the two
# scale-out replicas); xds-load raises the soft limit to the hard one itself and says so if that is not
# enough.
echo "==> xds-load --suite $*  (open files: soft $(ulimit -Sn), hard $(ulimit -Hn); $(uptime))" >&2
exec "$TARGET_DIR/release/xds-load" --server-bin "$TARGET_DIR/release/xds-server" --suite "$@"
