//! Builders of test data, for this crate's unit tests and other crates' tests (feature
//! `test-support`): one copy of each, instead of one per test file.
//!
//! - [`mesh`]: what the sources find and the policies say: endpoints, services, registries,
//!   gateways, clients, backups, policy sets, and the translator's input for one service port (on
//!   `model`, `policy` and `translate` only, so the translator's tests may use it).
//! - [`xds`]: what the protocol side needs: snapshots with default settings, Envoy `Node`s,
//!   discovery requests, NACK details, sets of resource names.
//! - [`envoy`]: reading Envoy resources back (a load assignment's hosts, secrets); on envoy-types
//!   alone.
//!
//! Most tests share one topology: services in namespace `shop`, endpoints and clients in region `r`,
//! zone `z` ([`mesh::locality`]).

pub mod envoy;
pub mod mesh;
pub mod xds;
