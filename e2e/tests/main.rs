//! Every end-to-end test, in one test binary (one link of the harness, the kube client and their
//! dependencies instead of one per file). Each file below is a module; run one with a filter, e.g.
//! `cargo test -p e2e --test main failover::`.
//!
//! The tests run in parallel threads of this one process (previously each file was a process of its
//! own, run one after another). The harness was already made for that: free ports never handed out
//! twice, temporary directories per test, the protocol record per thread. A test that must not share
//! the machine with other tests' servers and Envoys takes [`e2e::alone::alone`].
//!
//! `autotests = false` in Cargo.toml: a new file in `tests/` is not a test binary of its own, so it
//! must be declared here (`every_test_file_is_a_module` fails otherwise).

mod admin;
mod apiserver;
mod endpoints_edit;
mod examples;
mod explain;
mod failover;
mod harness;
mod kube_client;
mod kubernetes;
mod load_smoke;
mod metrics;
mod mtls;
mod multicluster;
mod multicluster_translate;
mod nack;
mod policy_language;
mod priorities;
mod secrets_kube;
mod server_restart;
mod tls;
mod traffic_distribution;

/// Every `tests/*.rs` file is declared above, so none is silently left out of the binary.
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = include_str!("main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/ is readable") {
        let path = entry.expect("tests/ entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_rs = path.extension().is_some_and(|e| e == "rs");
        if is_rs && stem != "main" && !main.contains(&format!("\nmod {stem};\n")) {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs: not declared in tests/main.rs (add `mod NAME;`), so never compiled or run",
        missing.join(",")
    );
}
