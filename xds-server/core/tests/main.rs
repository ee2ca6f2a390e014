//! The integration tests of `xds-core`, in one test binary: properties of the priority assignment over
//! generated meshes, and the parsers fed hostile input. Pure, like the crate: no process, no network.
//! Run one with a filter, e.g. `cargo test -p xds-core --test main priority_properties::`.
//!
//! `autotests = false` in Cargo.toml: a new file in `tests/` must be declared here (the e2e test
//! `every_test_file_is_a_module_of_its_crates_test_binary` checks that for every crate).

mod parser_robustness;
mod priority_properties;
