#!/usr/bin/env bash
# Load benchmark: release build of the server and the load generator, then the issue's target scenario
# (5,000 simulated Envoys, 500 services × 12 endpoints over 3 regions × 3 zones, 20 single changes,
# churn of 50 changes/s for 60 s), in both ADS protocols, each against the shared server and the
# --no-shared-cache baseline. Takes about 10 minutes on 2 cores.
#
#   bash scripts/bench.sh                          # the target scenario
#   bash scripts/bench.sh --protocol sotw --json   # any xds-load flag is passed on (see --help)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"

echo "==> cargo build --release (xds-server, xds-load)" >&2
cargo build --release -p xds-server -p xds-load --bin xds-server --bin xds-load >&2

# 5,000 connections are 5,000 sockets here and 5,000 in the server; xds-load raises the soft limit to
# the hard one itself and says so if that is not enough.
echo "==> xds-load $*  (open files: soft $(ulimit -Sn), hard $(ulimit -Hn))" >&2
exec "$TARGET_DIR/release/xds-load" --server-bin "$TARGET_DIR/release/xds-server" "$@"
