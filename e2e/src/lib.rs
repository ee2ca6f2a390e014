//! End-to-end harness: real Envoy processes driven by a real `xds-server`, real HTTP backends on
//! 127.0.0.1, real traffic.
//!
//! Pieces, each usable alone:
//! - [`paths`]: where the workspace, Envoy and the `xds-server` binary are (builds the server once).
//! - [`ports`]: free TCP ports that parallel tests don't fight over.
//! - [`pki`]: test certificates made at test time (CAs, server and client certificates, as PEM files).
//! - [`http`]: a tiny blocking HTTP/1.1 client (no dependencies).
//! - [`backend::Backend`]: an HTTP server answering 200 with its name; can be stopped (connections are
//!   then refused) and restarted on the same port; [`backend::Backend::start_grpc`] makes one that
//!   speaks HTTP/2, the gRPC health protocol and the unary `/e2e.Echo/Who` that proxyless gRPC
//!   clients call ([`grpc_backend`]).
//! - [`grpc_client::GrpcClient`]: a proxyless gRPC client (grpcio or grpc-js, installed by
//!   `scripts/ensure-grpc-clients.sh`) calling a service through xDS, its calls tallied like traffic.
//! - [`server::XdsServer`]: the control plane as a child process, its log captured to a file.
//! - [`envoy::Envoy`]: an Envoy started from `deploy/envoy/sidecar-bootstrap.yaml` (the shipped sample,
//!   patched only for node id, locality, metadata, admin port, xDS address and ADS flavour), plus admin
//!   helpers.
//! - [`load`]: the load clients report (LRS) as `xdsctl top` shows it, per locality zone, and a wait
//!   until it caught up with what a test sent.
//! - [`modes`]: run a test in both ADS flavours, SotW and Delta ([`both_protocols!`]), proving each
//!   really ran in its flavour.
//! - [`traffic`]: send requests through Envoy, tally answers by body, measure failovers.
//! - [`topology::Mesh`]: the standard scene: one service, backends in three zones, the endpoints file,
//!   the server.
//! - [`failover::Failover`]: the failover scenario on that scene (zones die, come back, are drained),
//!   step by step; the demo narrates it and `tests/failover.rs` asserts it.
//! - [`k8s`]: the Kubernetes objects of that scene (Nodes, the Service, EndpointSlices, Pods,
//!   FailoverPolicies) for the test API server ([`apiserver`]).
//! - [`alone`]: all tests are one binary and run in parallel; a test that measures the machine runs
//!   with no other test's servers or Envoys beside it.
//!
//! Every process is killed when its handle is dropped. When a test panics, the handles print the tail of
//! their logs so the failure explains itself. Set `E2E_KEEP=1` to keep the temporary directories.

pub mod alone;
pub mod backend;
pub mod envoy;
pub mod failover;
pub mod grpc_backend;
pub mod grpc_client;
pub mod http;
pub mod k8s;
pub mod load;
pub mod modes;
pub mod paths;
pub mod pki;
pub mod server;
pub mod topology;
pub mod traffic;

// Free ports, temporary directories and `tail` live in the load generator's crate, which needs them
// too and is below this one; they are part of the harness all the same.
pub use xds_load::{ports, tail, tmp};

// The test Kubernetes API server is its own crate (the load generator, below this one, runs it too);
// the tests keep naming it `e2e::apiserver`.
pub use test_apiserver as apiserver;

use std::time::{Duration, Instant};

/// Polls `f` every `every` until it returns `Some`, or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
