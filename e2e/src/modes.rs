//! Every Envoy test in both ADS flavours: state of the world (`api_type: GRPC`) and incremental
//! (`api_type: DELTA_GRPC`).
//!
//! Write the test as a plain function taking an [`XdsProtocol`], pass it to every Envoy it starts
//! ([`EnvoyOptions::protocol`](crate::envoy::EnvoyOptions::protocol),
//! [`Mesh::protocol`](crate::topology::Mesh::protocol)), and let [`both_protocols!`](crate::both_protocols)
//! make the tests:
//!
//! ```ignore
//! fn failover_works(protocol: XdsProtocol) {
//!     let mesh = Mesh::start(2).protocol(protocol);
//!     let envoy = mesh.envoy("client", EAST_B);
//!     // ...
//! }
//! e2e::both_protocols!(failover_works);
//! // → tests `failover_works::sotw` and `failover_works::delta`
//! ```
//!
//! Each generated test runs the body through [`run`], which fails unless the body started at least
//! one Envoy (on the test's own thread: the record is thread-local), every Envoy it started was
//! configured with the test's protocol, and the server's log confirmed for each that it connected with
//! that protocol. [`Envoy::start`](crate::envoy::Envoy::start) checks this itself; after
//! [`Envoy::spawn`](crate::envoy::Envoy::spawn) call
//! [`Envoy::verify_protocol`](crate::envoy::Envoy::verify_protocol) once Envoy is connected. So a
//! Delta test cannot silently run SotW.

use std::cell::RefCell;

pub use crate::envoy::XdsProtocol;

/// One Envoy started on this thread: node id, configured protocol, confirmed by the server's log.
#[derive(Debug, Clone)]
struct Started {
    node_id: String,
    protocol: XdsProtocol,
    verified: bool,
}

thread_local! {
    static STARTED: RefCell<Vec<Started>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record_spawned(node_id: &str, protocol: XdsProtocol) {
    STARTED.with(|s| {
        s.borrow_mut().push(Started {
            node_id: node_id.to_string(),
            protocol,
            verified: false,
        })
    });
}

pub(crate) fn record_verified(node_id: &str) {
    STARTED.with(|s| {
        for e in s.borrow_mut().iter_mut().filter(|e| e.node_id == node_id) {
            e.verified = true;
        }
    });
}

/// Runs `body` in `protocol` mode and checks that it really ran in it: at least one Envoy started,
/// each configured with `protocol` and confirmed connected with it by the server.
pub fn run(protocol: XdsProtocol, body: impl FnOnce(XdsProtocol)) {
    STARTED.with(|s| s.borrow_mut().clear());
    let t0 = std::time::Instant::now();
    body(protocol);
    let took = t0.elapsed();
    let started = STARTED.with(|s| std::mem::take(&mut *s.borrow_mut()));
    assert!(
        !started.is_empty(),
        "a {protocol} test started no Envoy: it proves nothing about {protocol}"
    );
    for e in &started {
        assert_eq!(
            e.protocol, protocol,
            "Envoy {} was started with {} in a {protocol} test (pass the protocol to its options)",
            e.node_id, e.protocol
        );
        assert!(
            e.verified,
            "Envoy {}: its protocol was never confirmed by the server's log (call \
             Envoy::verify_protocol after Envoy::spawn)",
            e.node_id
        );
    }
    println!(
        "{protocol}: passed in {:.1} s; {} Envoy(s) confirmed connected with {protocol}: {:?}",
        took.as_secs_f64(),
        started.len(),
        started
            .iter()
            .map(|e| e.node_id.as_str())
            .collect::<Vec<_>>()
    );
}

/// For each named test function `fn NAME(protocol: XdsProtocol)`, makes a module `NAME` with the tests
/// `sotw` and `delta`, each running the function through [`modes::run`](crate::modes::run).
#[macro_export]
macro_rules! both_protocols {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sotw() {
                    $crate::modes::run($crate::envoy::XdsProtocol::Sotw, super::$name);
                }

                #[test]
                fn delta() {
                    $crate::modes::run($crate::envoy::XdsProtocol::Delta, super::$name);
                }
            }
        )+
    };
}
