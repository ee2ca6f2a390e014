//! Policy documents for tests, here and in other crates' tests (feature `test-support`).

use super::parse::parse_policies;
use super::PolicySet;
use crate::config::FileError;
use crate::model::{ServiceId, ServicePort};

/// A `FailoverPolicy` document for `namespace` (`*`: the mesh default) with `spec` (indented lines).
pub fn doc(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "kind: FailoverPolicy\nmetadata:\n  name: {name}\n  namespace: \"{namespace}\"\nspec:\n{spec}"
    )
}

/// (document, line, field, reason, display) of the `Invalid` error parsing `text` must give.
pub fn invalid(text: &str) -> (usize, Option<usize>, String, String, String) {
    match parse_policies("p.yaml", text) {
        Err(err @ FileError::Invalid { .. }) => (
            err.document().unwrap(),
            err.line(),
            err.field().to_string(),
            err.reason(),
            err.to_string(),
        ),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

/// A policy for service `name` in namespace `shop` whose backup is service `to` there.
pub fn backing_up(name: &str, to: &str) -> String {
    doc(
        "shop",
        name,
        &format!("  service: {name}\n  backups: [{{service: {to}}}]\n"),
    )
}

/// A namespace-wide policy setting only `overprovisioningFactor`, which [`factor_of`] reads back.
pub fn with_factor(namespace: &str, name: &str, factor: u32) -> String {
    doc(
        namespace,
        name,
        &format!("  overprovisioningFactor: {factor}\n"),
    )
}

/// The overprovisioning factor `set` resolves for port `http` of service `svc` in `namespace`.
pub fn factor_of(set: &PolicySet, namespace: &str) -> u32 {
    let port = ServicePort {
        name: "http".into(),
        port: 80,
    };
    set.resolve_port(&ServiceId::new(namespace, "svc"), &port, None)
        .policy
        .overprovisioning_factor
}
