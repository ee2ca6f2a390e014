//! The pure core of the control plane: everything between "what the sources found" and "the bytes an
//! xDS client is sent", with no I/O and no async runtime, so every case is a plain unit test.
//!
//! Stages, each importing only the ones above it in this list (docs/architecture.md):
//! - [`model`]: services, endpoints, clients, localities, secret sets; the locality lookup seam.
//! - [`config`]: what every file we read shares (YAML field paths, errors with file/line/field),
//!   and the endpoints file format.
//! - [`policy`]: failover policies: types, parsing and validation, cross-file rules, resolution per
//!   service port.
//! - [`translate`]: model + policy + a client's locality class → Envoy resources; explain.
//! - [`snapshot`]: resource types and type URLs, the published snapshot and its per-class memo.
//! - [`protocol`]: the SotW and Delta state machines (request in, responses out) on one core for the
//!   client's identity and locality, node parsing, response encoding, the per-stream limits and the one
//!   `ProtocolError` (with its gRPC code) a stream is refused with, and what the admin API may inspect.
//! - [`observed`]: the load clients report over LRS, bounded to what the snapshot serves; the serving
//!   priority and failover detection.
//!
//! And, for tests only (here and, with feature `test-support`, other crates'), `testing`: the builders
//! of test data.

pub mod config;
pub mod model;
pub mod observed;
pub mod policy;
pub mod protocol;
pub mod snapshot;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod translate;
