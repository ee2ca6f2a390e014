//! The one service/endpoint model every discovery source produces and every later stage reads.
//!
//! Plain data only: no I/O, no Envoy types. Sources (the endpoints file today, Kubernetes later) build a
//! complete [`Registry`] and publish it whole, so downstream stages never see a half-synced view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

pub mod identity;
mod lookup;
pub mod secrets;

pub use identity::{PeerIdentity, Proof, SpiffeId};
pub use lookup::{LocalityLookup, PodHint};

/// At most `max_bytes` of a client-sent text (cut at a character boundary, marked `…`), for errors and
/// logs that echo it: what a client sends is bounded by the request limits, not by what a log line
/// should carry.
pub fn shown(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Well-known label keys. Endpoint and client localities are also exposed under these keys so that
/// `failoverPriority` can name them like any other label.
pub mod labels {
    pub const REGION: &str = "topology.kubernetes.io/region";
    pub const ZONE: &str = "topology.kubernetes.io/zone";
    pub const SUBZONE: &str = "topology.istio.io/subzone";
    pub const CLUSTER: &str = "topology.istio.io/cluster";
    pub const NETWORK: &str = "topology.istio.io/network";
    /// The node an endpoint (and a client located through its pod) runs on: its Kubernetes node name.
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
}

/// `namespace/name` of a service. Ordered so that registries iterate deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: String,
    pub name: String,
}

impl ServiceId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
}

/// Where something runs. Empty strings mean "unknown"; an unknown level never matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// Region, zone, subzone: the segments a `distribute` pattern matches.
    pub fn parts(&self) -> [&str; 3] {
        [
            self.region.as_str(),
            self.zone.as_str(),
            self.subzone.as_str(),
        ]
    }

    pub fn new(region: &str, zone: &str, subzone: &str) -> Self {
        Self {
            region: region.to_string(),
            zone: zone.to_string(),
            subzone: subzone.to_string(),
        }
    }

    /// The label view of a locality (only the levels that are known).
    pub fn as_labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (labels::REGION, self.region.as_str()),
            (labels::ZONE, self.zone.as_str()),
            (labels::SUBZONE, self.subzone.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        write!(
            f,
            "{}/{}/{}",
            part(&self.region),
            part(&self.zone),
            part(&self.subzone)
        )
    }
}

/// Health as the source reports it. Not-ready endpoints are kept (as `Unhealthy`) rather than dropped so
/// Envoy's per-priority health percentages, and therefore its spillover, stay correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Healthy,
    Unhealthy,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Per-service-port target port, keyed by service port name; a missing entry means "the service
    /// port", and [`Endpoint::NOT_SERVED`] means "this endpoint does not serve that port" (a Kubernetes
    /// endpoint whose pod has no port of the Service's named `targetPort`).
    pub port_overrides: BTreeMap<String, u16>,
    pub locality: Locality,
    /// Source labels (for example `topology.istio.io/cluster`); locality labels are added by [`Endpoint::label`].
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    /// The workload identity this endpoint's certificate carries (a Pod's service account, or the
    /// endpoints file's `identity`); `None` while unknown. Secure naming checks the peer against it.
    pub identity: Option<SpiffeId>,
}

impl Endpoint {
    /// The override that leaves an endpoint out of a service port's cluster. Port 0 is never a port
    /// anything listens on, so it cannot be mistaken for a real target.
    pub const NOT_SERVED: u16 = 0;

    /// Whether this endpoint serves the given service port (see [`Endpoint::NOT_SERVED`]).
    pub fn serves(&self, port: &ServicePort) -> bool {
        self.port_overrides.get(&port.name) != Some(&Self::NOT_SERVED)
    }

    /// The port this endpoint listens on for the given service port ([`Endpoint::NOT_SERVED`] if it
    /// does not serve it: see [`Endpoint::serves`]).
    pub fn target_port(&self, port: &ServicePort) -> u16 {
        self.port_overrides
            .get(&port.name)
            .copied()
            .unwrap_or(port.port)
    }

    /// A label value, with the locality visible under the well-known topology keys.
    pub fn label(&self, key: &str) -> Option<&str> {
        locality_label(&self.locality, key)
            .filter(|v| !v.is_empty())
            .or_else(|| self.labels.get(key).map(String::as_str))
            .filter(|v| !v.is_empty())
    }
}

fn locality_label<'a>(locality: &'a Locality, key: &str) -> Option<&'a str> {
    match key {
        labels::REGION => Some(locality.region.as_str()),
        labels::ZONE => Some(locality.zone.as_str()),
        labels::SUBZONE => Some(locality.subzone.as_str()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: ServiceId,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    /// The Service's `spec.trafficDistribution`, when it has a value we know: the default for its
    /// ports when no policy names the service (see `policy::PolicySet::resolve_port`).
    pub traffic_distribution: Option<TrafficDistribution>,
    /// An identity declared for the whole service (the endpoints file's service-level `identity`),
    /// accepted even while the service has no endpoint carrying it.
    pub identity: Option<SpiffeId>,
}

impl Service {
    /// A service without a traffic distribution preference or a declared identity.
    pub fn new(id: ServiceId, ports: Vec<ServicePort>, endpoints: Vec<Endpoint>) -> Self {
        Self {
            id,
            ports,
            endpoints,
            traffic_distribution: None,
            identity: None,
        }
    }

    /// The identities a client may accept from this service's peers: the declared one and every
    /// endpoint's. Empty when none is known (then any certificate of the trust bundle is accepted).
    pub fn identities(&self) -> BTreeSet<&SpiffeId> {
        self.identity
            .iter()
            .chain(self.endpoints.iter().filter_map(|e| e.identity.as_ref()))
            .collect()
    }

    /// This service as one port's cluster sees it: without the endpoints that do not serve `port`.
    /// `None` when every endpoint serves it (the common case: the service is shared as it is).
    pub fn serving(&self, port: &ServicePort) -> Option<Service> {
        if self.endpoints.iter().all(|e| e.serves(port)) {
            return None;
        }
        Some(Service {
            endpoints: self
                .endpoints
                .iter()
                .filter(|e| e.serves(port))
                .cloned()
                .collect(),
            ..self.clone()
        })
    }
}

/// Kubernetes `Service.spec.trafficDistribution`: the Service owner's wish that traffic stay close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficDistribution {
    /// Same zone first (Kubernetes 1.33+; `PreferClose` is its older name).
    PreferSameZone,
    /// The original name of `PreferSameZone`; the same behaviour, kept apart only to report it as
    /// written.
    PreferClose,
    /// Same node first (Kubernetes 1.34), by the `kubernetes.io/hostname` label (the node name) of
    /// endpoints and clients; then like `PreferSameZone`.
    PreferSameNode,
}

impl TrafficDistribution {
    pub const ALL: [Self; 3] = [
        Self::PreferSameZone,
        Self::PreferClose,
        Self::PreferSameNode,
    ];

    /// The value as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreferSameZone => "PreferSameZone",
            Self::PreferClose => "PreferClose",
            Self::PreferSameNode => "PreferSameNode",
        }
    }

    /// A known value (exact spelling, as the API server compares them); `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == value)
    }
}

impl fmt::Display for TrafficDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where clients on other networks reach a network's endpoints (an east-west gateway). Endpoints on a
/// network other than the client's are replaced by their network's gateway (split horizon).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkGateway {
    /// Every address of the gateway, sorted and without duplicates (a host name may resolve to
    /// several: each is a host in EDS). Never empty: a gateway without an address is no gateway.
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

impl NetworkGateway {
    /// A gateway at one address.
    pub fn new(address: IpAddr, port: u16) -> Self {
        Self {
            addresses: vec![address],
            port,
        }
    }

    /// A gateway at these addresses (sorted, duplicates dropped); `None` if there are none.
    pub fn at(addresses: impl IntoIterator<Item = IpAddr>, port: u16) -> Option<Self> {
        let mut addresses: Vec<IpAddr> = addresses.into_iter().collect();
        addresses.sort();
        addresses.dedup();
        (!addresses.is_empty()).then_some(Self { addresses, port })
    }
}

/// Everything one source knows, published whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub services: BTreeMap<ServiceId, Service>,
    /// Gateway of each network (the value of an endpoint's `topology.istio.io/network` label).
    pub gateways: BTreeMap<String, NetworkGateway>,
}

impl Registry {
    pub fn from_services(services: impl IntoIterator<Item = Service>) -> Self {
        Self {
            services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
            gateways: BTreeMap::new(),
        }
    }

    /// Services whose definition differs between `self` and `newer` (added, removed or changed).
    pub fn changed_services<'a>(&'a self, newer: &'a Registry) -> Vec<&'a ServiceId> {
        let mut changed: Vec<&ServiceId> = newer
            .services
            .iter()
            .filter(|(id, svc)| self.services.get(*id) != Some(*svc))
            .map(|(id, _)| id)
            .collect();
        changed.extend(
            self.services
                .keys()
                .filter(|id| !newer.services.contains_key(*id)),
        );
        changed
    }
}

/// What we know about a connected Envoy that matters for what it is sent: its locality, its labels
/// (node metadata `labels`), its namespace and where it wants its outbound listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    pub node_id: String,
    pub cluster: String,
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
    pub namespace: Option<String>,
    pub listener: Option<ListenerOverride>,
    /// The identity the client claims in node metadata `identity`: never trusted, only checked
    /// against [`ClientInfo::peer`] (a disagreement refuses the stream).
    pub claimed_identity: Option<String>,
    /// The identity the connection proved (client certificate or ServiceAccount token); `None`: the
    /// client is not authenticated and gets no private key, only the trust bundle.
    pub peer: Option<PeerIdentity>,
    /// Where this sidecar terminates inbound mTLS and where its app listens (node metadata
    /// `inbound_port`, `app_port`); `None`: no inbound listener.
    pub inbound: Option<Inbound>,
    /// Envoy, or a gRPC library's own xDS client: they are sent different resources.
    pub kind: ClientKind,
}

/// What speaks xDS on the other end of a stream. A proxyless gRPC client (grpcio, grpc-go, grpc-java,
/// grpc-js-xds) load-balances by itself from an API listener per target; it is sent resources it can
/// parse (`translate::grpc`), never Envoy's listener, which it would refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    #[default]
    Envoy,
    Grpc,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envoy => "envoy",
            Self::Grpc => "grpc",
        }
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sidecar's inbound mTLS port and its app's port on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inbound {
    pub port: u16,
    pub app_port: u16,
}

/// Per-client override of the generated outbound listener's bind address (node metadata
/// `listener_address` / `listener_port`), so several Envoys can share one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListenerOverride {
    pub address: Option<String>,
    pub port: Option<u16>,
}

impl ClientInfo {
    /// A client label value; the locality answers the topology keys, node metadata labels the rest.
    pub fn label(&self, key: &str) -> Option<&str> {
        locality_label(&self.locality, key)
            .filter(|v| !v.is_empty())
            .or_else(|| self.labels.get(key).map(String::as_str))
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests;
