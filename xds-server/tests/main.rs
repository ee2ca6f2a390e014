//! Every integration test of `xds-server`, in one test binary (one link of the library and its
//! dependencies instead of one per file). Each file below is a module; run one with a filter, e.g.
//! `cargo test -p xds-server --test main deploy_manifests::`.
//!
//! `autotests = false` in Cargo.toml: a new file in `tests/` is not a test binary of its own, so it
//! must be declared here (`every_test_file_is_a_module` fails otherwise).

mod abuse;
mod check_policies;
mod crd_manifest;
mod deploy_manifests;
mod health;
// Pure tests of the library (no process, no network): parser_robustness and priority_properties.
mod parser_robustness;
mod priority_properties;
mod sds;

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
