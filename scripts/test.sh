#!/usr/bin/env bash
# Every check, as CI runs it: formatting, lints, the layering rule, build, and all tests including the
# end-to-end tests with a real Envoy (fetched from PyPI into .venv if missing) and real proxyless gRPC
# clients (grpcio from PyPI into .venv, grpc-js from npm into e2e/grpc-clients, if missing).
#
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh --quick    # fmt, clippy, layering and the unit tests: no Envoy, no e2e
set -euo pipefail

QUICK=0
if [[ "${1:-}" == "--quick" ]]; then
    QUICK=1
    if [[ "${CI:-}" == "true" ]]; then
        echo "CI runs every test: --quick is for local use" >&2
        exit 2
    fi
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

# What both modes check first: formatting, lints, the layering rule (docs/architecture.md).
static_checks() {
    step "cargo fmt --all --check"
    cargo fmt --all --check
    step "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
    step "layering"
    bash scripts/check-layering.sh
}

if [[ "$QUICK" == 1 ]]; then
    static_checks
    step "cargo test --workspace --lib --bins (unit tests)"
    cargo test --workspace --lib --bins
    exit 0
fi

step "Envoy"
if ! bash scripts/ensure-envoy.sh; then
    if [[ "${CI:-}" == "true" ]]; then
        echo "CI: Envoy is required for the end-to-end tests and could not be installed" >&2
        exit 1
    fi
    echo "Envoy could not be installed; the end-to-end tests will fail" >&2
fi
export ENVOY_BIN="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"
if [[ "${CI:-}" == "true" && ! -x "$ENVOY_BIN" ]]; then
    echo "CI: no Envoy at $ENVOY_BIN" >&2
    exit 1
fi

step "gRPC clients"
if ! bash scripts/ensure-grpc-clients.sh; then
    if [[ "${CI:-}" == "true" ]]; then
        echo "CI: grpcio and grpc-js are required for the end-to-end tests and could not be installed" >&2
        exit 1
    fi
    echo "the gRPC clients could not be installed; the proxyless gRPC end-to-end tests will fail" >&2
fi
export GRPC_PYTHON="${GRPC_PYTHON:-$ROOT/.venv/bin/python}"
export GRPC_NODE_CLIENTS="${GRPC_NODE_CLIENTS:-$ROOT/e2e/grpc-clients}"

# A fresh clone gains nothing from incremental state, and it costs gigabytes of disk.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
fi
df -h "$ROOT" | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'

static_checks

step "cargo build --workspace"
cargo build --workspace

# The end-to-end tests run the server binary just built (otherwise each test process would ask cargo).
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
export XDS_SERVER_BIN="${XDS_SERVER_BIN:-$TARGET_DIR/debug/xds-server}"

step "cargo test --workspace"
cargo test --workspace

step "disk"
du -sh "$TARGET_DIR" 2>/dev/null || true
df -h "$ROOT" | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'
