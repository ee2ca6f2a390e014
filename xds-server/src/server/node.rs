//! What a connecting Envoy tells us about itself (its `node`), turned into a [`ClientInfo`].

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::model::{ClientInfo, Inbound, ListenerOverride, Locality};

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

/// Which pod a client runs in, when its bootstrap does not set `node.locality`: node metadata `pod_name`
/// (with `namespace`) or `pod_ip`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodHint {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub ip: Option<String>,
    /// The cluster the client says it runs in (its `topology.istio.io/cluster` label): with several
    /// clusters, only that one is searched, since pod names and IPs repeat across clusters.
    pub cluster: Option<String>,
}

/// Finds a client's locality from where its pod runs (the Kubernetes source implements it: Pod →
/// Node → topology labels).
pub trait LocalityLookup: Send + Sync {
    fn locality_of(&self, pod: &PodHint) -> Option<Locality>;

    /// Labels the pod's placement implies, such as the cluster and network it was found in when
    /// several clusters are watched. Node metadata labels the client sets itself take precedence.
    fn labels_of(&self, _pod: &PodHint) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// Who is on the other end of a stream: set from the first request's `node`; for a client without
/// `node.locality`, its locality comes from its pod, retried until the pod watch knows it (it may lag
/// behind a freshly started pod).
#[derive(Default)]
pub struct ClientIdentity {
    client: Option<ClientInfo>,
    lookup: Option<std::sync::Arc<dyn LocalityLookup>>,
    pending_pod: Option<PodHint>,
}

impl ClientIdentity {
    pub fn new(lookup: Option<std::sync::Arc<dyn LocalityLookup>>) -> Self {
        Self {
            lookup,
            ..Self::default()
        }
    }

    pub fn get(&self) -> Option<&ClientInfo> {
        self.client.as_ref()
    }

    /// Reads `node` on the first request; on every call, retries a pending pod lookup.
    pub fn observe(&mut self, node: Option<&Node>) -> Result<&ClientInfo, NodeError> {
        if self.client.is_none() {
            let client = client_info(node)?;
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
        self.refresh();
        Ok(self.client.as_ref().expect("set above"))
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
            .map_err(|_| bad(field, format!("{s:?} is not a number")))?,
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
        info.identity = Some(as_string(META_IDENTITY, v)?).filter(|s| !s.is_empty());
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
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
    use std::collections::HashMap;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }
    fn number(n: f64) -> Value {
        Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    fn node(meta: Vec<(&str, Value)>) -> Node {
        Node {
            id: "sidecar-1".into(),
            cluster: "shop".into(),
            locality: Some(EnvoyLocality {
                region: "us-east1".into(),
                zone: "us-east1-b".into(),
                sub_zone: String::new(),
            }),
            metadata: Some(Struct {
                fields: meta
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<HashMap<_, _>>(),
            }),
            ..Node::default()
        }
    }

    #[test]
    fn reads_locality_labels_namespace_and_listener_override() {
        let labels = Value {
            kind: Some(Kind::StructValue(Struct {
                fields: HashMap::from([("topology.istio.io/cluster".to_string(), string("east"))]),
            })),
        };
        let info = client_info(Some(&node(vec![
            (META_LABELS, labels),
            (META_NAMESPACE, string("shop")),
            (META_LISTENER_ADDRESS, string("127.0.0.1")),
            (META_LISTENER_PORT, number(20001.0)),
        ])))
        .unwrap();
        assert_eq!(info.node_id, "sidecar-1");
        assert_eq!(info.locality, Locality::new("us-east1", "us-east1-b", ""));
        assert_eq!(info.label("topology.istio.io/cluster"), Some("east"));
        assert_eq!(info.namespace.as_deref(), Some("shop"));
        let l = info.listener.unwrap();
        assert_eq!(l.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(l.port, Some(20001));
        // the port may also come as a string (Envoy's --service-node style tooling often does that)
        let info = client_info(Some(&node(vec![(META_LISTENER_PORT, string("20002"))]))).unwrap();
        assert_eq!(info.listener.unwrap().port, Some(20002));
    }

    #[test]
    fn reads_identity_and_inbound_ports() {
        let info = client_info(Some(&node(vec![
            (META_IDENTITY, string("checkout")),
            (META_INBOUND_PORT, number(15006.0)),
            (META_APP_PORT, string("8080")),
        ])))
        .unwrap();
        assert_eq!(info.identity.as_deref(), Some("checkout"));
        assert_eq!(
            info.inbound,
            Some(Inbound {
                port: 15006,
                app_port: 8080
            })
        );
        let plain = client_info(Some(&node(vec![]))).unwrap();
        assert_eq!((plain.identity, plain.inbound), (None, None));
        let err = client_info(Some(&node(vec![(META_INBOUND_PORT, number(15006.0))])))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "node metadata `app_port`: required with `inbound_port`"
        );
        let err = client_info(Some(&node(vec![
            (META_INBOUND_PORT, number(15006.0)),
            (META_APP_PORT, number(0.0)),
        ])))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("node metadata `app_port`: 0 is not a port"),
            "{err}"
        );
    }

    #[test]
    fn bad_metadata_is_a_clear_error() {
        assert_eq!(client_info(None), Err(NodeError::Missing));
        let err = client_info(Some(&node(vec![(META_LISTENER_PORT, number(70000.0))])))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "node metadata `listener_port`: 70000 is not a port (a whole number from 1 to 65535)"
        );
        let err = client_info(Some(&node(vec![(
            META_LISTENER_ADDRESS,
            string("localhost"),
        )])))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listener_address") && err.contains("not an IP"),
            "{err}"
        );
        let err = client_info(Some(&node(vec![(META_LABELS, string("x"))])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`labels`"), "{err}");
    }
}
