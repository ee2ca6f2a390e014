//! Snapshots, Envoy nodes and discovery requests.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status;

use super::mesh;
use crate::model::Registry;
use crate::policy::PolicySet;
use crate::snapshot::{Snapshot, TranslateSettings};

/// The snapshot after `prev` of `registry`, without policies, with default settings.
pub fn snapshot(prev: Option<&Snapshot>, registry: Arc<Registry>) -> Snapshot {
    snapshot_with(prev, registry, Arc::default())
}

/// The snapshot after `prev` of `registry` under `policies`, with default settings.
pub fn snapshot_with(
    prev: Option<&Snapshot>,
    registry: Arc<Registry>,
    policies: Arc<PolicySet>,
) -> Snapshot {
    Snapshot::build(prev, registry, policies, TranslateSettings::default())
}

/// Node `id` of Envoy cluster `cluster` (may be empty), in [`mesh::locality`].
pub fn node(id: &str, cluster: &str) -> Node {
    let locality = mesh::locality();
    Node {
        id: id.into(),
        cluster: cluster.into(),
        locality: Some(EnvoyLocality {
            region: locality.region,
            zone: locality.zone,
            sub_zone: locality.subzone,
        }),
        ..Node::default()
    }
}

/// Node metadata of string values.
pub fn metadata(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(key, value)| {
                let value = Value {
                    kind: Some(Kind::StringValue(value.to_string())),
                };
                (key.to_string(), value)
            })
            .collect(),
    }
}

/// The identity a connection proves for the test identity `name` (the SPIFFE ID
/// [`SecretSet::placeholder`](crate::model::secrets::SecretSet::placeholder) gives `name`'s certificate).
pub fn peer(name: &str) -> crate::model::PeerIdentity {
    crate::model::PeerIdentity {
        id: crate::model::SpiffeId::for_service_account("cluster.local", "default", name)
            .expect("a valid test identity name"),
        proof: crate::model::Proof::Certificate,
    }
}

/// `node` as the sidecar of `identity`: id `sidecar-{identity}`, metadata `identity` (and no other).
pub fn sidecar(node: Node, identity: &str) -> Node {
    Node {
        id: format!("sidecar-{identity}"),
        metadata: Some(metadata(&[("identity", identity)])),
        ..node
    }
}

/// A state-of-the-world request from `node`.
pub fn request(
    node: Node,
    type_url: &str,
    names: &[&str],
    version: &str,
    nonce: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    }
}

/// The request from `node` that ACKs `resp` and subscribes to `names`.
pub fn ack(node: Node, resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    request(node, &resp.type_url, names, &resp.version_info, &resp.nonce)
}

/// A Delta request from `node`.
pub fn delta_request(
    node: Node,
    type_url: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..DeltaDiscoveryRequest::default()
    }
}

/// The `error_detail` of a NACK: code 13 (INTERNAL), `message`.
pub fn error_detail(message: &str) -> Status {
    Status {
        code: 13,
        message: message.into(),
        details: vec![],
    }
}

/// A set of resource names.
pub fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}
