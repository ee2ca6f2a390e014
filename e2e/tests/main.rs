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
//! must be declared here (`every_test_file_is_a_module_of_its_crates_test_binary` fails otherwise).

mod admin;
mod apiserver;
mod connection_age;
mod endpoints_edit;
mod examples;
mod explain;
mod failover;
mod fleet_failover;
mod grpc_proxyless;
mod harness;
mod kube_client;
mod kubernetes;
mod kubernetes_robustness;
mod load_reporting;
mod load_smoke;
mod metrics;
mod mtls;
mod multicluster;
mod multicluster_translate;
mod nack;
mod policy_language;
mod policy_status;
mod priorities;
mod secrets_kube;
mod secure_naming;
mod server_restart;
mod tls;
mod token_auth;
mod traffic_distribution;
mod workload_identity;

/// In every crate of the workspace whose integration tests are one binary (`tests/main.rs`), every
/// `tests/*.rs` file is declared in that `main.rs`: with `autotests = false` an undeclared file would
/// silently never be compiled or run. The crates are the workspace's `members`.
#[test]
fn every_test_file_is_a_module_of_its_crates_test_binary() {
    let root = e2e::paths::workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("workspace Cargo.toml");
    // `members = ["a", "b/c", ...]`: the quoted strings between the brackets.
    let members: Vec<&str> = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list.split('"').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let mut checked = Vec::new();
    let mut missing = Vec::new();
    for member in &members {
        let tests = root.join(member).join("tests");
        let Ok(main) = std::fs::read_to_string(tests.join("main.rs")) else {
            continue;
        };
        checked.push(*member);
        for entry in std::fs::read_dir(&tests)
            .expect("tests/ is readable")
            .flatten()
        {
            let path = entry.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let is_rs = path.extension().is_some_and(|e| e == "rs");
            if is_rs && stem != "main" && !main.contains(&format!("\nmod {stem};\n")) {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(
        checked.contains(&"e2e") && checked.len() >= 3,
        "expected tests/main.rs in e2e, xds-server and xds-server/core; found it in {checked:?} \
         of the members {members:?}"
    );
    assert!(
        missing.is_empty(),
        "not declared (`mod NAME;`) in their crate's tests/main.rs, so never compiled or run: {missing:?}"
    );
}
