#!/usr/bin/env bash
# The layering rule of docs/architecture.md, as far as crates can state it: each crate depends only on
# crates below it. Run by scripts/test.sh (and in CI); fails naming the crate and the forbidden edge.
#
#   xds-core        no tonic, hyper, kube, k8s-openapi, rustls or tokio (not even through a dependency)
#   xds-admin-api   no xds-core, xds-server
#   xdsctl          no xds-server
#   xds-server      no e2e, xds-load
#   test-apiserver  no workspace crate (e2e and xds-load both run it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail=0
# `cargo tree -p X -e normal,build`: what X's library and binaries are built with (dev-dependencies,
# which only its tests use, are left out); `--prefix none` prints one package per line.
deps() {
    cargo tree --quiet -p "$1" -e normal,build --prefix none --format '{p}' | awk '{print $1}' | sort -u
}
forbid() {
    local krate="$1"; shift
    local found
    found="$(deps "$krate")"
    for bad in "$@"; do
        if grep -qx -- "$bad" <<<"$found"; then
            echo "layering: $krate depends on $bad (through: $(cargo tree --quiet -p "$krate" -e normal,build -i "$bad" --prefix none --format '{p}' | awk '{print $1}' | sort -u | grep -v -x -- "$bad" | tr '\n' ' '))" >&2
            fail=1
        fi
    done
}

forbid xds-core tonic hyper kube k8s-openapi rustls tokio tokio-rustls tonic-prost xds-server xds-admin-api
forbid xds-admin-api xds-core xds-server
forbid xdsctl xds-server e2e
forbid xds-server e2e xds-load test-apiserver
forbid test-apiserver xds-core xds-admin-api xds-server xdsctl e2e xds-load

# Within a crate the compiler does not help: a module may name (`crate::X`) only modules listed before it.
# The order is docs/architecture.md's, bottom first.
check_modules() {
    local src="$1"; shift
    local order=("$@") i j mod ref
    for ((i = 0; i < ${#order[@]}; i++)); do
        mod="${order[$i]}"
        local files=()
        [[ -f "$src/$mod.rs" ]] && files+=("$src/$mod.rs")
        [[ -d "$src/$mod" ]] && while IFS= read -r f; do files+=("$f"); done < <(find "$src/$mod" -name '*.rs')
        [[ ${#files[@]} -eq 0 ]] && { echo "layering: $src has no module $mod (update scripts/check-layering.sh)" >&2; fail=1; continue; }
        for ref in $(grep -ohE 'crate::[a-z_]+' "${files[@]}" | sed 's/crate:://' | sort -u); do
            for ((j = i + 1; j < ${#order[@]}; j++)); do
                if [[ "${order[$j]}" == "$ref" ]]; then
                    echo "layering: $src/$mod uses crate::$ref, a stage above it: $(grep -lE "crate::$ref\b" "${files[@]}" | tr '\n' ' ')" >&2
                    fail=1
                fi
            done
        done
    done
}
# `testing` (feature test-support: builders for tests) is left out: tests of every stage may use it.
check_modules xds-server/core/src model config policy translate snapshot protocol observed
check_modules xds-server/src watch metrics auth tls sources registry grpc admin app

if [[ "$fail" != 0 ]]; then
    echo "layering: see docs/architecture.md, 'The layering rule'" >&2
    exit 1
fi
echo "layering: ok (xds-core has no tonic, hyper, kube, k8s-openapi, rustls or tokio; no module names a stage above it)"
