//! What a connecting Envoy tells us about itself (its `node`), turned into a [`ClientInfo`].

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::translate::mtls::INBOUND_LISTENER;
use crate::translate::resources::LISTENER_NAME;

use crate::model::{
    shown, ClientInfo, ClientKind, Inbound, ListenerOverride, Locality, LocalityLookup,
    PeerIdentity, PodHint, SpiffeId,
};

/// Node metadata keys we read. Documented in the README.
pub const META_LABELS: &str = "labels";
pub const META_NAMESPACE: &str = "namespace";
pub const META_LISTENER_ADDRESS: &str = "listener_address";
pub const META_LISTENER_PORT: &str = "listener_port";
pub const META_POD_NAME: &str = "pod_name";
pub const META_POD_IP: &str = "pod_ip";
pub const META_IDENTITY: &str = "identity";
pub const META_INBOUND_PORT: &str = "inbound_port";
pub const META_APP_PORT: &str = "app_port";

/// Who is on the other end of a stream: set from the first request's `node`; for a client without
/// `node.locality`, its locality comes from its pod, retried until the pod watch knows it (it may lag
/// behind a freshly started pod).
#[derive(Default)]
pub struct ClientIdentity {
    client: Option<ClientInfo>,
    lookup: Option<std::sync::Arc<dyn LocalityLookup>>,
    pending_pod: Option<PodHint>,
    /// What the connection proved, set before the first request.
    peer: Option<PeerIdentity>,
}

impl ClientIdentity {
    pub fn new(lookup: Option<std::sync::Arc<dyn LocalityLookup>>) -> Self {
        Self {
            lookup,
            ..Self::default()
        }
    }

    /// The identity the stream's connection proved (before any request is read).
    pub fn set_peer(&mut self, peer: Option<PeerIdentity>) {
        self.peer = peer;
    }

    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    pub fn get(&self) -> Option<&ClientInfo> {
        self.client.as_ref()
    }

    /// True until the first request's `node` has been read.
    pub fn is_unknown(&self) -> bool {
        self.client.is_none()
    }

    /// Reads `node` on the first request; on every call, retries a pending pod lookup. True if the
    /// client's locality just became known (see [`ClientIdentity::refresh`]).
    pub fn observe(&mut self, node: Option<&Node>) -> Result<bool, NodeError> {
        if self.client.is_none() {
            let mut client = client_info(node)?;
            client.peer = self.peer.clone();
            if client.locality == Locality::default() && self.lookup.is_some() {
                self.pending_pod = pod_hint(node).map(|hint| PodHint {
                    cluster: client
                        .label(crate::model::labels::CLUSTER)
                        .map(str::to_string),
                    ..hint
                });
            }
            self.client = Some(client);
        }
        Ok(self.refresh())
    }

    /// A client whose node did not say it is a gRPC client ([`client_kind`]) but whose first LDS
    /// request names listeners that are not Envoy's: only an xDS client that dials targets (a gRPC
    /// library) asks for listeners by name, Envoy asks for all of them. Called before anything was
    /// sent to the client, so it never holds resources of the other kind.
    pub fn recognise_listener_names(&mut self, names: &[String]) {
        let Some(client) = &mut self.client else {
            return;
        };
        let envoys = [LISTENER_NAME, INBOUND_LISTENER];
        let named = !names.is_empty() && names.iter().all(|n| n != "*");
        if client.kind == ClientKind::Envoy
            && named
            && !names.iter().any(|n| envoys.contains(&n.as_str()))
        {
            client.kind = ClientKind::Grpc;
        }
    }

    /// True while the locality should come from a pod the lookup does not know yet.
    pub fn is_pending(&self) -> bool {
        self.pending_pod.is_some()
    }

    /// Looks the pending pod up again; true if the client's locality just became known.
    pub fn refresh(&mut self) -> bool {
        let (Some(hint), Some(lookup), Some(client)) =
            (&self.pending_pod, &self.lookup, &mut self.client)
        else {
            return false;
        };
        match lookup.locality_of(hint) {
            Some(locality) => {
                client.locality = locality;
                for (key, value) in lookup.labels_of(hint) {
                    client.labels.entry(key).or_insert(value);
                }
                self.pending_pod = None;
                true
            }
            None => false,
        }
    }
}

/// The pod a client says it runs in, if it says.
pub fn pod_hint(node: Option<&Node>) -> Option<PodHint> {
    let meta = node?.metadata.as_ref()?;
    let get = |key: &str| match meta.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let hint = PodHint {
        namespace: get(META_NAMESPACE),
        name: get(META_POD_NAME),
        ip: get(META_POD_IP),
        cluster: None,
    };
    (hint.name.is_some() || hint.ip.is_some()).then_some(hint)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("the first request on a stream must carry `node` (Envoy always sends it)")]
    Missing,
    #[error("node metadata `{field}`: {reason}")]
    BadMetadata { field: String, reason: String },
}

fn bad(field: &str, reason: impl Into<String>) -> NodeError {
    NodeError::BadMetadata {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn as_string(field: &str, value: &Value) -> Result<String, NodeError> {
    match &value.kind {
        Some(Kind::StringValue(s)) => Ok(s.clone()),
        _ => Err(bad(field, "must be a string")),
    }
}

fn as_port(field: &str, value: &Value) -> Result<u16, NodeError> {
    let n = match &value.kind {
        Some(Kind::NumberValue(n)) => *n,
        Some(Kind::StringValue(s)) => s
            .trim()
            .parse::<f64>()
            // Port fields are not capped like the stored ones (they are parsed, not kept): echo a
            // bounded part of the text.
            .map_err(|_| bad(field, format!("{:?} is not a number", shown(s, 64))))?,
        _ => return Err(bad(field, "must be a number")),
    };
    if n.fract() != 0.0 || !(1.0..=65535.0).contains(&n) {
        return Err(bad(
            field,
            format!("{n} is not a port (a whole number from 1 to 65535)"),
        ));
    }
    Ok(n as u16)
}

fn labels(value: &Value) -> Result<BTreeMap<String, String>, NodeError> {
    let Some(Kind::StructValue(Struct { fields })) = &value.kind else {
        return Err(bad(META_LABELS, "must be a map of label → string value"));
    };
    fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), as_string(&format!("{META_LABELS}.{k}"), v)?)))
        .collect()
}

/// A client's claim (node metadata `identity`) against what its connection proved: the claim agrees
/// if it is the proven SPIFFE ID itself or the name of the identity (directory or Secret) whose
/// certificate carries it (`name_of_proven`). No claim agrees with anything.
pub fn claim_agrees(
    claimed: Option<&str>,
    proven: Option<&SpiffeId>,
    name_of_proven: Option<&str>,
) -> bool {
    match (claimed, proven) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(claim), Some(id)) => claim == id.as_str() || Some(claim) == name_of_proven,
    }
}

/// What gRPC libraries put first in `node.user_agent_name` ("gRPC C-core …", "gRPC Node Pure JS",
/// "gRPC Go", "gRPC Java"); Envoy says "envoy".
const GRPC_USER_AGENT_PREFIX: &str = "grpc";

/// Client features only gRPC's xDS clients announce (Envoy does not): a client that hides its user
/// agent is still recognised.
const GRPC_ONLY_FEATURES: [&str; 1] = ["xds.config.resource-in-sotw"];

/// Envoy or a proxyless gRPC client, from what its node says about its software. No special metadata
/// is needed (Istio asks gRPC clients for `GENERATOR=grpc`); an unknown client is taken for an Envoy,
/// which is what every client was before gRPC clients were served.
pub fn client_kind(node: &Node) -> ClientKind {
    let agent = node.user_agent_name.as_bytes();
    let grpc_agent = agent.len() >= GRPC_USER_AGENT_PREFIX.len()
        && agent[..GRPC_USER_AGENT_PREFIX.len()]
            .eq_ignore_ascii_case(GRPC_USER_AGENT_PREFIX.as_bytes());
    let grpc_feature = node
        .client_features
        .iter()
        .any(|f| GRPC_ONLY_FEATURES.contains(&f.as_str()));
    if grpc_agent || grpc_feature {
        ClientKind::Grpc
    } else {
        ClientKind::Envoy
    }
}

pub fn client_info(node: Option<&Node>) -> Result<ClientInfo, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    let locality = node
        .locality
        .as_ref()
        .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
        .unwrap_or_default();
    let mut info = ClientInfo {
        node_id: node.id.clone(),
        cluster: node.cluster.clone(),
        locality,
        kind: client_kind(node),
        ..ClientInfo::default()
    };
    let Some(meta) = &node.metadata else {
        return Ok(info);
    };
    if let Some(v) = meta.fields.get(META_LABELS) {
        info.labels = labels(v)?;
    }
    if let Some(v) = meta.fields.get(META_NAMESPACE) {
        info.namespace = Some(as_string(META_NAMESPACE, v)?).filter(|s| !s.is_empty());
    }
    let address = meta
        .fields
        .get(META_LISTENER_ADDRESS)
        .map(|v| {
            let s = as_string(META_LISTENER_ADDRESS, v)?;
            s.parse::<std::net::IpAddr>()
                .map_err(|_| bad(META_LISTENER_ADDRESS, format!("{s:?} is not an IP address")))?;
            Ok(s)
        })
        .transpose()?;
    let port = meta
        .fields
        .get(META_LISTENER_PORT)
        .map(|v| as_port(META_LISTENER_PORT, v))
        .transpose()?;
    if address.is_some() || port.is_some() {
        info.listener = Some(ListenerOverride { address, port });
    }
    if let Some(v) = meta.fields.get(META_IDENTITY) {
        info.claimed_identity = Some(as_string(META_IDENTITY, v)?).filter(|s| !s.is_empty());
    }
    let port_of = |field| {
        meta.fields
            .get(field)
            .map(|v| as_port(field, v))
            .transpose()
    };
    info.inbound = match (port_of(META_INBOUND_PORT)?, port_of(META_APP_PORT)?) {
        (Some(port), Some(app_port)) => Some(Inbound { port, app_port }),
        (None, None) => None,
        (Some(_), None) => return Err(bad(META_APP_PORT, "required with `inbound_port`")),
        (None, Some(_)) => return Err(bad(META_INBOUND_PORT, "required with `app_port`")),
    };
    Ok(info)
}

#[cfg(test)]
mod tests;
