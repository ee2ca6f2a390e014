#!/usr/bin/env bash
# Make sure the proxyless gRPC clients the end-to-end tests drive are installed:
#   - Python grpcio (gRPC C-core) in <repo>/.venv, the venv ensure-envoy.sh uses (git-ignored);
#   - Node @grpc/grpc-js and @grpc/grpc-js-xds in e2e/grpc-clients/node_modules (git-ignored), with
#     `npm ci` from the committed package-lock.json.
# The versions are pinned here and in e2e/grpc-clients/package.json; a different installed version is
# replaced. Prints the versions. Exits non-zero if either client cannot be installed.
set -euo pipefail

GRPCIO_VERSION=1.85.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
CLIENTS="$ROOT/e2e/grpc-clients"

grpcio_version() {
    "$VENV/bin/python" -c 'import grpc; print(grpc.__version__)' 2>/dev/null || true
}

if [[ "$(grpcio_version)" != "$GRPCIO_VERSION" ]]; then
    PYTHON="${PYTHON:-python3}"
    if [[ ! -x "$VENV/bin/pip" ]]; then
        if ! command -v "$PYTHON" >/dev/null 2>&1; then
            echo "ensure-grpc-clients: $PYTHON not found; install Python 3 (needed for grpcio)" >&2
            exit 1
        fi
        echo "ensure-grpc-clients: creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "ensure-grpc-clients: installing grpcio==$GRPCIO_VERSION from PyPI into $VENV" >&2
    # A wheel only: building C-core from source takes far longer than a test run.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        "grpcio==$GRPCIO_VERSION"
fi
if [[ "$(grpcio_version)" != "$GRPCIO_VERSION" ]]; then
    echo "ensure-grpc-clients: grpcio $GRPCIO_VERSION is still missing from $VENV" >&2
    exit 1
fi

# The lock file is the installed tree's record: reinstall when it changed since the last `npm ci`.
if ! cmp -s "$CLIENTS/package-lock.json" "$CLIENTS/node_modules/.package-lock.json.installed"; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "ensure-grpc-clients: npm not found; install Node.js (needed for grpc-js)" >&2
        exit 1
    fi
    echo "ensure-grpc-clients: npm ci in $CLIENTS" >&2
    (cd "$CLIENTS" && npm ci --loglevel=error --no-audit --no-fund)
    cp "$CLIENTS/package-lock.json" "$CLIENTS/node_modules/.package-lock.json.installed"
fi

node_version() {
    (cd "$CLIENTS" && node -p "require('$1/package.json').version")
}
echo "grpcio $(grpcio_version) ($VENV/bin/python)"
echo "@grpc/grpc-js $(node_version @grpc/grpc-js), @grpc/grpc-js-xds $(node_version @grpc/grpc-js-xds) (node $(node --version), $CLIENTS)"
