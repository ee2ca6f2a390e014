#!/usr/bin/env bash
# Vendors envoy-types into vendor/envoy-types/ with tonic made optional.
#
# Why: upstream envoy-types has hard dependencies on tonic (features codegen + transport) and
# tonic-prost, because each gRPC service's generated client and server modules live next to the
# message types. A crate that only needs the messages (the pure `xds-core`) would still pull in
# tonic, hyper, tokio and the rest. The patched copy puts every tonic-generated module, and the
# tonic-based `ext_authz` helpers, behind a `grpc` feature that is on by default, so crates that
# use the gRPC services (xds-server) keep working unchanged, and crates that set
# `default-features = false` get the messages (and `util::pack_any`) with prost alone.
# The root Cargo.toml points [patch.crates-io] at the copy.
#
# Usage: scripts/vendor-envoy-types.sh [--check] [VERSION]
#   VERSION  defaults to the envoy-types version in Cargo.lock. To move to a new upstream release,
#            pass it here, then bump the requirement in the manifests and run `cargo update -p envoy-types`.
#   --check  afterwards, check that without the `grpc` feature the copy depends on no tonic, hyper
#            or tokio, and compiles (cargo check, through a throwaway crate).
#
# The copy is rebuilt from scratch on every run (vendor/envoy-types/ is deleted first), so the
# script is the single source of truth for the patch; see vendor/envoy-types/PATCHED.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CHECK=0
VERSION=""
for arg in "$@"; do
    case "$arg" in
        --check) CHECK=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "unknown option: $arg" >&2; exit 2 ;;
        *) VERSION="$arg" ;;
    esac
done

die() { echo "vendor-envoy-types: $*" >&2; exit 1; }

# --- which version ------------------------------------------------------------------------------------
# Cargo.lock has one [[package]] entry per version; with the patch in place the entry has no
# `source` line but still carries the version, so this keeps working after the first run.
if [[ -z "$VERSION" ]]; then
    mapfile -t versions < <(awk '
        /^name = "envoy-types"$/ { getline; if (match($0, /^version = "[^"]+"$/)) { v = $0; sub(/^version = "/, "", v); sub(/"$/, "", v); print v } }
    ' Cargo.lock)
    [[ ${#versions[@]} -eq 1 ]] || die "expected exactly one envoy-types version in Cargo.lock, found: ${versions[*]:-none}"
    VERSION="${versions[0]}"
fi
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a plain version: $VERSION"

# --- find the upstream source ------------------------------------------------------------------------
# The crate as published, unpacked by cargo in its registry cache. If it is not there, let cargo
# download it through a throwaway project outside this workspace (inside, the [patch] would
# redirect the dependency to the very copy we are about to replace).
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
find_src() { compgen -G "$CARGO_HOME/registry/src/*/envoy-types-$VERSION" | head -n 1 || true; }
SRC="$(find_src)"
if [[ -z "$SRC" ]]; then
    echo "envoy-types $VERSION is not in $CARGO_HOME/registry/src; fetching it with cargo"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/src"
    printf '[package]\nname = "fetch-envoy-types"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nenvoy-types = "=%s"\n' \
        "$VERSION" > "$tmp/Cargo.toml"
    touch "$tmp/src/lib.rs"
    (cd "$tmp" && cargo fetch --quiet)
    SRC="$(find_src)"
    [[ -n "$SRC" ]] || die "cargo fetch did not unpack envoy-types $VERSION into $CARGO_HOME/registry/src"
fi
echo "upstream: $SRC"

# --- copy --------------------------------------------------------------------------------------------
# Everything as published (sources, the .proto files they were generated from, README, LICENSE),
# minus what does not apply to a path dependency: its own Cargo.lock, cargo's pre-normalisation
# manifest (it refers to upstream's workspace), and tests/ (a check that needs upstream's
# workspace and protoc).
DEST="vendor/envoy-types"
rm -rf "$DEST"
mkdir -p "$DEST"
cp -R "$SRC/." "$DEST/"
rm -rf "$DEST/Cargo.lock" "$DEST/Cargo.toml.orig" "$DEST/.cargo-ok" "$DEST/tests"
[[ -f "$DEST/LICENSE" ]] || die "upstream has no LICENSE file any more; check its licensing"

# --- Cargo.toml --------------------------------------------------------------------------------------
# The published manifest is cargo-normalised: one [dependencies.NAME] table per dependency. The
# gRPC dependencies get `optional = true`, a `grpc` feature (default) turns them back on, the
# [[test]] target (tests/ was not copied) and any dev-dependencies go, and the description says
# this is not the upstream crate. `publish = false` keeps the copy off crates.io.
# prost gains its `std` feature: upstream asks for prost with default features off (derive only)
# and gets `std` implicitly, because tonic-prost turns prost's default features on; the generated
# code needs it (protobuf map fields are `::std::collections::HashMap`s, and prost's derive encodes
# them with `prost::encoding::hash_map`, which exists only with `std`), so without `grpc` nothing
# would turn it on and the crate would not compile.
MANIFEST="$DEST/Cargo.toml"
grep -q '^\[features\]' "$MANIFEST" && die "upstream now has a [features] table; merge the grpc feature by hand and update this script"
for dep in tonic tonic-prost; do
    grep -qx "\[dependencies\.$dep\]" "$MANIFEST" || die "no [dependencies.$dep] in upstream's Cargo.toml; the patch needs review"
done
# futures-core: upstream lists it, but no code outside the gRPC modules names it (checked below).
# It is made optional with the rest, so that without `grpc` nothing gRPC-related is left, and with
# `grpc` the dependency set is exactly upstream's.
HAS_FUTURES=0
grep -qx '\[dependencies\.futures-core\]' "$MANIFEST" && HAS_FUTURES=1
awk '
    function is_header(l) { return l ~ /^\[/ }
    # Drop whole tables that only make sense for upstream (targets and dev-dependencies).
    is_header($0) { skip = ($0 ~ /^\[\[(test|bench|example)\]\]$/ || $0 ~ /^\[dev-dependencies/ || $0 ~ /^\[target\..*dev-dependencies/) }
    is_header($0) { in_prost = ($0 == "[dependencies.prost]") }
    skip { next }
    /^\[package\]$/ { in_pkg = 1; print; next }
    is_header($0) { in_pkg = 0 }
    in_pkg && /^version = / && !did_publish { print; print "publish = false"; did_publish = 1; next }
    in_pkg && /^description = """$/ {
        print
        print "Vendored and patched copy (tonic and tonic-prost optional, behind the default `grpc`"
        print "feature; see PATCHED.md) of:"
        next
    }
    /^\[dependencies\.(tonic|tonic-prost|futures-core)\]$/ { print; print "optional = true"; next }
    in_prost && /^features = \["derive"\]$/ { print "features = [\"derive\", \"std\"]"; next }
    { print }
' "$SRC/Cargo.toml" > "$MANIFEST"
grep -q '^publish = false$' "$MANIFEST" || die "could not add publish = false"
grep -q '^Vendored and patched copy' "$MANIFEST" || die "could not patch the description"
grep -qx 'features = \["derive", "std"\]' "$MANIFEST" || die "could not add prost's std feature (upstream's prost dependency changed?)"
[[ "$(grep -c '^optional = true$' "$MANIFEST")" -eq $((2 + HAS_FUTURES)) ]] || die "could not make the gRPC dependencies optional"
if [[ $HAS_FUTURES -eq 1 ]]; then
    GRPC_DEPS='"dep:tonic", "dep:tonic-prost", "dep:futures-core"'
else
    GRPC_DEPS='"dep:tonic", "dep:tonic-prost"'
fi
cat >> "$MANIFEST" <<EOF

# Added by scripts/vendor-envoy-types.sh (see PATCHED.md): the tonic-generated gRPC clients and
# servers and the ext_authz helpers. On by default, as in upstream; turn it off with
# default-features = false to get the protobuf messages with prost only.
[features]
default = ["grpc"]
grpc = [$GRPC_DEPS]
EOF

# --- generated gRPC modules --------------------------------------------------------------------------
# tonic-build emits, at the top level of the package's file, exactly
#     /// Generated client implementations.
#     pub mod <service>_client {
# (and the same for servers), closed by a `}` in column 0. Only modules with that doc comment are
# gated: a protobuf *package* may also be called e.g. `file_server`, and must stay.
GATE='#[cfg(feature = "grpc")]'
total_gated=0
for f in "$DEST"/src/generated/*.rs; do
    n_marked="$(grep -cE '^/// Generated (client|server) implementations\.$' "$f" || true)"
    [[ "$n_marked" -eq 0 ]] && continue
    awk -v gate="$GATE" '
        /^pub mod [a-z0-9_]+_(client|server) \{$/ && prev ~ /^\/\/\/ Generated (client|server) implementations\.$/ { print gate; n++ }
        { print; prev = $0 }
        END { print n > "/dev/stderr" }
    ' "$f" > "$f.tmp" 2> "$f.count"
    n_gated="$(cat "$f.count")"
    rm -f "$f.count"
    mv "$f.tmp" "$f"
    [[ "$n_gated" -eq "$n_marked" ]] || die "$f: $n_marked generated modules but $n_gated gated; tonic-build's output changed?"
    total_gated=$((total_gated + n_gated))
done
[[ $total_gated -gt 0 ]] || die "no tonic-generated modules found; upstream layout changed?"

# --- lib.rs ------------------------------------------------------------------------------------------
# ext_authz is built on tonic::Status and re-exports AuthorizationServer, so it goes behind the
# feature, and `sealed` (only ext_authz's traits use it) with it, or it warns as unused.
LIB="$DEST/src/lib.rs"
awk -v gate="$GATE" '
    /^pub mod ext_authz;$/ || /^mod sealed \{$/ { print gate; n++ }
    { print }
    END { print n > "/dev/stderr" }
' "$LIB" > "$LIB.tmp" 2> "$LIB.count"
n_lib="$(cat "$LIB.count")"
rm -f "$LIB.count"
mv "$LIB.tmp" "$LIB"
[[ "$n_lib" -eq 2 ]] || die "src/lib.rs: expected to gate 'pub mod ext_authz;' and 'mod sealed {', gated $n_lib items"

# --- verify ------------------------------------------------------------------------------------------
# No mention of tonic, tonic_prost or futures_core may remain outside gated code: in the generated
# files, outside the gated modules (a gated module runs from the cfg line to the next `}` in
# column 0); elsewhere, outside src/ext_authz/ (gated as a whole in lib.rs).
# Whole words only: "Monotonically" appears in doc comments.
WORD='(^|[^A-Za-z0-9_])(tonic|tonic_prost|futures_core)([^A-Za-z0-9_]|$)'
leaks="$(awk -v gate="$GATE" -v word="$WORD" '
    FNR == 1 { gated = 0; armed = 0 }
    $0 == gate { armed = 1; next }
    armed && /^pub mod / { gated = 1; armed = 0; next }
    gated && /^\}$/ { gated = 0; next }
    !gated && $0 ~ word { print FILENAME ":" FNR ": " $0 }
' "$DEST"/src/generated/*.rs)"
other="$(grep -rnE "$WORD" "$DEST/src" --include='*.rs' | grep -v "^$DEST/src/generated/" | grep -v "^$DEST/src/ext_authz/" || true)"
if [[ -n "$leaks$other" ]]; then
    printf '%s\n' "$leaks" "$other" | sed '/^$/d' >&2
    die "tonic is still referenced outside the grpc-gated code (above)"
fi

# --- PATCHED.md --------------------------------------------------------------------------------------
cat > "$DEST/PATCHED.md" <<EOF
# envoy-types $VERSION, patched

This is **not** the upstream crate: it is [envoy-types $VERSION](https://crates.io/crates/envoy-types/$VERSION)
(Apache-2.0, see LICENSE; upstream commit in .cargo_vcs_info.json) as published on crates.io,
with gRPC made optional. The root Cargo.toml points \`[patch.crates-io]\` here.

**Why.** Upstream depends unconditionally on tonic (codegen + transport) and tonic-prost, so any
crate that only needs the Envoy protobuf messages (xds-core) pulled in tonic, hyper and tokio.

**What changed** (everything else is byte-for-byte upstream):

- Cargo.toml: \`tonic\`, \`tonic-prost\` and \`futures-core\` (no code outside the gRPC
  modules uses it) are \`optional = true\`; new features \`default = ["grpc"]\`, \`grpc = [$GRPC_DEPS]\`;
  \`publish = false\`; the description says it is patched; the \`[[test]]\` target is removed;
  prost's \`std\` feature is requested explicitly (upstream gets it only through tonic-prost, and
  the generated map fields need it).
- src/generated/*.rs: each of the $total_gated tonic-generated \`<service>_client\` / \`<service>_server\`
  modules carries \`#[cfg(feature = "grpc")]\`.
- src/lib.rs: \`pub mod ext_authz;\` (built on \`tonic::Status\`) and \`mod sealed\` (used only by it)
  carry \`#[cfg(feature = "grpc")]\`.
- Removed: Cargo.lock, Cargo.toml.orig, .cargo-ok, tests/ (upstream's codegen check needs its
  workspace and protoc).

With default features the crate is equivalent to upstream. With \`default-features = false\` it has
every message type, \`pb::*\` and \`util::pack_any\`, and depends on prost only.

**Regenerate / upgrade.** Do not edit these files by hand; run

    scripts/vendor-envoy-types.sh --check            # the version in Cargo.lock
    scripts/vendor-envoy-types.sh --check 0.7.8      # another upstream release

The script copies the crate from cargo's registry cache (fetching it if needed), applies the
changes above, fails if upstream's layout no longer matches, and checks that no tonic reference is
left outside the gated code. Drop the directory and the \`[patch]\` once upstream makes tonic optional.
EOF

# --- optional compile check --------------------------------------------------------------------------
# `cargo check -p envoy-types --no-default-features` is refused in this workspace (features can only
# be chosen for workspace members, and the copy deliberately is not one, or fmt, clippy and test
# would cover it), so the check goes through a throwaway crate that depends on the copy with
# default-features = false, pinned to the workspace's Cargo.lock, sharing its target directory.
if [[ $CHECK -eq 1 ]]; then
    probe="$(mktemp -d)"
    trap 'rm -rf "$probe" "${tmp:-}"' EXIT
    mkdir -p "$probe/src"
    cat > "$probe/Cargo.toml" <<TOML
[package]
name = "envoy-types-no-grpc-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
envoy-types = { path = "$ROOT/$DEST", default-features = false }

# As in the workspace, so that the target directory's artifacts are shared.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 1
debug = false
TOML
    echo 'pub use envoy_types::{pb::envoy::config::cluster::v3::Cluster, util::pack_any};' > "$probe/src/lib.rs"
    cp Cargo.lock "$probe/Cargo.lock"
    echo "checking envoy-types without the grpc feature"
    deps="$(cargo tree --manifest-path "$probe/Cargo.toml" -e normal,build --prefix none)"
    if grep -E '^(tonic|tonic-prost|hyper|tokio|tower|h2|futures-core) ' <<< "$deps"; then
        die "envoy-types without the grpc feature still depends on the crates above"
    fi
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" \
        cargo check --manifest-path "$probe/Cargo.toml" -j "${CARGO_BUILD_JOBS:-1}"
fi

echo "vendored envoy-types $VERSION into $DEST: $total_gated gRPC modules gated"
