//! Every integration test of `xds-server`, in one test binary (one link of the library and its
//! dependencies instead of one per file). Each file below is a module; run one with a filter, e.g.
//! `cargo test -p xds-server --test main deploy_manifests::`.
//!
//! `autotests = false` in Cargo.toml: a new file in `tests/` is not a test binary of its own, so it
//! must be declared here (the e2e test `every_test_file_is_a_module_of_its_crates_test_binary` checks
//! that for every crate of the workspace).

mod abuse;
mod check_policies;
mod crd_manifest;
mod deploy_manifests;
mod fleet;
mod health;
mod locate;
mod lrs;
mod sds;
mod transport;
