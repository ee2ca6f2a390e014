//! Writes to `status` subresources (`PUT`/`PATCH .../{name}/status`): who made each one, and
//! faults that delay or swallow them, for the tests of FailoverPolicy status writing and of the
//! replica elected with a `coordination.k8s.io/v1` Lease ([`lease_kind`]).
//!
//! Who wrote is the bearer token of the request (`Authorization: Bearer TOKEN`): give each client
//! its own kubeconfig from [`crate::ApiServer::write_kubeconfig_with_token`] and its writes are told
//! apart. The server accepts any token (and none), as for every other request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::KindInfo;

/// `coordination.k8s.io/v1` Lease (namespaced): leader election. Served like every kind, so a
/// `PUT` with a stale `metadata.resourceVersion` gets 409 Conflict and a `POST` of an existing name
/// 409 AlreadyExists, which is all an election needs.
pub fn lease_kind() -> KindInfo {
    KindInfo::new("coordination.k8s.io", "v1", "Lease", "leases", true)
}

/// What happens to status writes ([`crate::ApiServer::set_status_write_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWriteFault {
    /// Each write is answered (and applied) only after this long.
    Delay(Duration),
    /// Each write is read and never answered nor applied, like an API server stuck behind a dead
    /// etcd: only a client-side timeout gets the writer out.
    Hang,
}

/// One status write the server received (answered or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    /// The bearer token of the request, `""` without one.
    pub token: String,
    /// `PUT` or `PATCH`.
    pub method: String,
    /// The resource's plural, e.g. `failoverpolicies`.
    pub plural: String,
    /// `""` for a cluster-scoped object.
    pub namespace: String,
    pub name: String,
    pub received: Instant,
}

#[derive(Debug, Default)]
pub struct StatusWrites {
    pub fault: Option<StatusWriteFault>,
    pub received: Vec<StatusWrite>,
}

/// The status write a request is, if it is one: `.../{plural}/{name}/status` by `PUT` or `PATCH`.
pub(super) fn status_write(method: &str, path: &str, token: &str) -> Option<StatusWrite> {
    if method != "PUT" && method != "PATCH" {
        return None;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let [.., plural, name, "status"] = segs.as_slice() else {
        return None;
    };
    let namespace = segs
        .windows(2)
        .find(|w| w[0] == "namespaces")
        .map(|w| w[1])
        .filter(|ns| ns != plural)
        .unwrap_or("");
    Some(StatusWrite {
        token: token.to_string(),
        method: method.to_string(),
        plural: plural.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        received: Instant::now(),
    })
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub(super) fn bearer(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer ")
        .map(str::trim)
        .unwrap_or("")
}

/// Records a status write and holds it as the fault says; returns when it may be applied.
pub(super) async fn arrive<S>(
    store: &Mutex<S>,
    writes: impl Fn(&mut S) -> &mut StatusWrites,
    write: StatusWrite,
) {
    let fault = {
        let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
        let w = writes(&mut st);
        w.received.push(write);
        w.fault
    };
    match fault {
        None => {}
        Some(StatusWriteFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(StatusWriteFault::Hang) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_writes_are_recognised_with_their_object() {
        let w = status_write(
            "PATCH",
            "/apis/failover.xds.dev/v1alpha1/namespaces/demo/failoverpolicies/echo/status",
            "replica-a",
        )
        .unwrap();
        assert_eq!(
            (
                w.plural.as_str(),
                w.namespace.as_str(),
                w.name.as_str(),
                w.token.as_str()
            ),
            ("failoverpolicies", "demo", "echo", "replica-a")
        );
        let node = status_write("PUT", "/api/v1/nodes/n1/status", "").unwrap();
        assert_eq!(
            (node.plural.as_str(), node.namespace.as_str()),
            ("nodes", "")
        );
        assert!(status_write("GET", "/api/v1/nodes/n1/status", "").is_none());
        assert!(status_write(
            "PATCH",
            "/apis/failover.xds.dev/v1alpha1/namespaces/demo/failoverpolicies/echo",
            ""
        )
        .is_none());
        assert_eq!(bearer("Bearer abc"), "abc");
        assert_eq!(bearer(""), "");
    }
}
