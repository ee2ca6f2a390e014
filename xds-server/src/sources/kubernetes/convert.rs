//! Kubernetes objects → the service model. Pure: the same objects always give the same [`Registry`].
//!
//! Mirrors what kube-proxy and Istio do: a Service's endpoints come from the EndpointSlices labelled
//! `kubernetes.io/service-name`; an endpoint's zone comes from the slice (else its Node), its region and
//! subzone from its Node's labels; endpoint conditions map to Envoy health; an endpoint's identity is
//! its Pod's service account (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`, as Istio names it).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use xds_core::model::identity::DEFAULT_TRUST_DOMAIN;
use xds_core::model::{
    labels, Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort, SpiffeId,
    TrafficDistribution,
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const DEFAULT_SUBZONE_LABEL: &str = labels::SUBZONE;

/// Node labels relevant to locality, by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(pub BTreeMap<String, String>);

impl NodeLabels {
    pub fn of(node: &Node) -> Self {
        Self(node.metadata.labels.clone().unwrap_or_default())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The service account each Pod runs as, by `(namespace, name)`: all the identity of an endpoint
/// needs from its Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAccounts(pub HashMap<(String, String), String>);

/// A Pod without `spec.serviceAccountName` runs as this one (the API server's default).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

impl PodAccounts {
    /// `((namespace, name), service account)` of a Pod; `None` for one without a name.
    pub fn entry(pod: &Pod) -> Option<((String, String), String)> {
        let name = pod.metadata.name.clone()?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
        Some(((namespace, name), account))
    }

    pub fn of<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        Self(pods.into_iter().filter_map(Self::entry).collect())
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&str> {
        self.0
            .get(&(namespace.to_string(), name.to_string()))
            .map(String::as_str)
    }
}

/// Something in a Kubernetes object we could not use; logged and counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ConvertSettings {
    /// Node label holding the subzone (default `topology.istio.io/subzone`).
    pub subzone_label: String,
    /// Which cluster and network these objects come from, when several clusters are watched: every
    /// endpoint carries them as `topology.istio.io/cluster` / `topology.istio.io/network` labels, so
    /// policies can rank by them and the translator can route across networks through gateways.
    pub origin: ClusterOrigin,
    /// The trust domain of endpoint identities (`--trust-domain`), the same for every cluster.
    pub trust_domain: String,
}

/// The `--cluster` identity stamped on every endpoint of one cluster. Empty fields add no label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOrigin {
    pub cluster: String,
    pub network: String,
}

impl ClusterOrigin {
    /// The labels this origin adds, as endpoints and located clients carry them.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            (labels::CLUSTER, &self.cluster),
            (labels::NETWORK, &self.network),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

impl Default for ConvertSettings {
    fn default() -> Self {
        Self {
            subzone_label: DEFAULT_SUBZONE_LABEL.to_string(),
            origin: ClusterOrigin::default(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }
}

/// Health from endpoint conditions. A nil `ready` means ready (the API's documented meaning); a
/// terminating endpoint that still serves drains; anything else not ready is kept as UNHEALTHY so Envoy's
/// health percentages (and so its spillover) stay right.
pub fn health(ep: &SliceEndpoint) -> Health {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if terminating && serving {
        Health::Draining
    } else if ready && !terminating {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// Locality from a Node's labels; a zone given by the EndpointSlice wins over the Node's.
pub fn node_locality(node: &NodeLabels, slice_zone: Option<&str>, subzone_label: &str) -> Locality {
    Locality {
        region: node.get(labels::REGION).unwrap_or_default().to_string(),
        zone: slice_zone
            .filter(|z| !z.is_empty())
            .or_else(|| node.get(labels::ZONE))
            .unwrap_or_default()
            .to_string(),
        subzone: node.get(subzone_label).unwrap_or_default().to_string(),
    }
}

/// Healthy, then still serving while draining, then unhealthy.
fn health_rank(h: Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Draining => 1,
        Health::Unhealthy => 2,
    }
}

fn service_ports(svc: &KubeService) -> Vec<(ServicePort, Option<IntOrString>)> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    spec.ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            Some((
                ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port,
                },
                p.target_port.clone(),
            ))
        })
        .collect()
}

/// `spec.trafficDistribution`, if set to a value we know. Kubernetes may add values: an unknown one is
/// ignored (the Service then inherits its namespace's policy) and reported in `skipped`.
fn traffic_distribution(
    svc: &KubeService,
    id: &ServiceId,
    skipped: &mut Vec<Skipped>,
) -> Option<TrafficDistribution> {
    let value = svc.spec.as_ref()?.traffic_distribution.as_deref()?;
    let known = TrafficDistribution::parse(value);
    if known.is_none() {
        skipped.push(Skipped {
            object: format!("Service {id}"),
            reason: format!(
                "unknown spec.trafficDistribution {value:?} ignored (known: {})",
                TrafficDistribution::ALL.map(|d| d.as_str()).join(", ")
            ),
        });
    }
    known
}

/// The identity of a slice endpoint: its `targetRef` Pod's service account. `None` for an endpoint
/// that names no Pod, or whose Pod is not (yet) known: the Pod's arrival fills it in.
fn endpoint_identity(
    ep: &SliceEndpoint,
    slice_namespace: &str,
    pods: &PodAccounts,
    settings: &ConvertSettings,
    slice_name: &str,
    skipped: &mut Vec<Skipped>,
) -> Option<SpiffeId> {
    let target = ep.target_ref.as_ref()?;
    if target.kind.as_deref() != Some("Pod") {
        return None;
    }
    let name = target.name.as_deref()?;
    let namespace = target.namespace.as_deref().unwrap_or(slice_namespace);
    let account = pods.get(namespace, name)?;
    match SpiffeId::for_service_account(&settings.trust_domain, namespace, account) {
        Ok(id) => Some(id),
        Err(e) => {
            skipped.push(Skipped {
                object: slice_name.to_string(),
                reason: format!("Pod {namespace}/{name} has no usable identity: {e}"),
            });
            None
        }
    }
}

/// Which port a slice's endpoints serve a service port on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SliceTarget {
    Port(u16),
    /// The Service's `targetPort` is a name and the slice has no port of that name: the
    /// EndpointSlice controller leaves a port out of a pod's slice when the pod has no container
    /// port of that name, so these pods do not serve it. Sending their traffic to the service port
    /// number instead would reach a port nothing (or something else) listens on.
    NotServed,
    /// A number no port can have (0 or above 65535).
    Invalid(i32),
}

/// The target port of `port` for a slice whose port of the same name says `slice_port` (`None`: the
/// slice has no port of that name). A slice without the port falls back to a numeric `targetPort`
/// (or the port itself), as with slices written by hand, but never for a named one.
fn slice_target_port(
    port: &ServicePort,
    target: Option<&IntOrString>,
    slice_port: Option<i32>,
) -> SliceTarget {
    let number = match (slice_port, target) {
        (Some(n), _) => n,
        (None, Some(IntOrString::Int(n))) => *n,
        (None, None) => i32::from(port.port),
        (None, Some(IntOrString::String(_))) => return SliceTarget::NotServed,
    };
    match u16::try_from(number) {
        Ok(n) if n != 0 => SliceTarget::Port(n),
        _ => SliceTarget::Invalid(number),
    }
}

/// Converts what the watches hold into one registry. Services without any endpoint slice still appear
/// (with no endpoints): Envoy then answers 503 rather than 404, which is what a user expects of a Service
/// whose pods are all gone.
pub fn build_registry<'a>(
    services: impl IntoIterator<Item = &'a KubeService>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: &HashMap<String, NodeLabels>,
    pods: &PodAccounts,
    settings: &ConvertSettings,
) -> (Registry, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut by_service: HashMap<ServiceId, Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        by_service
            .entry(ServiceId::new(ns, name.clone()))
            .or_default()
            .push(slice);
    }

    let origin_labels = settings.origin.labels();
    let mut out = Vec::new();
    for svc in services {
        let id = ServiceId::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let is_headless_external = svc
            .spec
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_some_and(|t| t == "ExternalName");
        if is_headless_external {
            continue;
        }
        let ports = service_ports(svc);
        if ports.is_empty() {
            skipped.push(Skipped {
                object: format!("Service {id}"),
                reason: "no TCP ports".into(),
            });
            continue;
        }
        // Keyed by address *and* ports: pods sharing an IP (hostNetwork pods on one node) with
        // different ports are different endpoints, as they are to kube-proxy.
        let mut endpoints: BTreeMap<(IpAddr, BTreeMap<String, u16>), Endpoint> = BTreeMap::new();
        let mut slices = by_service.remove(&id).unwrap_or_default();
        // Deterministic whatever order the watch delivered the slices in.
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for slice in slices {
            let slice_name = format!(
                "EndpointSlice {}/{}",
                id.namespace,
                slice.metadata.name.as_deref().unwrap_or("")
            );
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            // Service port name → target port number, as Kubernetes matches them: by name.
            let mut overrides = BTreeMap::new();
            for (port, target) in &ports {
                let by_name = slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or("") == port.name
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                });
                match slice_target_port(port, target.as_ref(), by_name.and_then(|p| p.port)) {
                    SliceTarget::Port(n) if n != port.port => {
                        overrides.insert(port.name.clone(), n);
                    }
                    SliceTarget::Port(_) => {}
                    SliceTarget::NotServed => {
                        overrides.insert(port.name.clone(), Endpoint::NOT_SERVED);
                    }
                    SliceTarget::Invalid(number) => {
                        overrides.insert(port.name.clone(), Endpoint::NOT_SERVED);
                        skipped.push(Skipped {
                            object: slice_name.clone(),
                            reason: format!(
                                "port {number} for service port {:?} ({}) is not a port \
                                 (1-65535); its endpoints are left out of that port",
                                port.name, port.port
                            ),
                        });
                    }
                }
            }
            for ep in &slice.endpoints {
                let node = ep.node_name.as_ref().and_then(|n| nodes.get(n));
                let locality = match node {
                    Some(n) => node_locality(n, ep.zone.as_deref(), &settings.subzone_label),
                    None => Locality {
                        zone: ep.zone.clone().unwrap_or_default(),
                        ..Locality::default()
                    },
                };
                let health = health(ep);
                // The node name, for `trafficDistribution: PreferSameNode`.
                let mut ep_labels = origin_labels.clone();
                if let Some(node) = ep.node_name.as_ref().filter(|n| !n.is_empty()) {
                    ep_labels.insert(labels::HOSTNAME.to_string(), node.clone());
                }
                let identity =
                    endpoint_identity(ep, &id.namespace, pods, settings, &slice_name, &mut skipped);
                for addr in &ep.addresses {
                    let Ok(address) = addr.parse::<IpAddr>() else {
                        skipped.push(Skipped {
                            object: slice_name.clone(),
                            reason: format!("address {addr:?} is not an IP address"),
                        });
                        continue;
                    };
                    let candidate = Endpoint {
                        address,
                        port_overrides: overrides.clone(),
                        locality: locality.clone(),
                        labels: ep_labels.clone(),
                        health,
                        identity: identity.clone(),
                    };
                    // The same endpoint (address and ports) can sit in two slices while the
                    // controller moves it; keep the healthiest view of it.
                    let key = (address, overrides.clone());
                    match endpoints.get(&key) {
                        Some(existing)
                            if health_rank(existing.health) <= health_rank(candidate.health) => {}
                        _ => {
                            endpoints.insert(key, candidate);
                        }
                    }
                }
            }
        }
        out.push(Service {
            traffic_distribution: traffic_distribution(svc, &id, &mut skipped),
            id,
            ports: ports.into_iter().map(|(p, _)| p).collect(),
            endpoints: endpoints.into_values().collect(),
            identity: None,
        });
    }
    (Registry::from_services(out), skipped)
}

#[cfg(test)]
mod tests;
