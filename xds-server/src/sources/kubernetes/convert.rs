//! Kubernetes objects → the service model. Pure: the same objects always give the same [`Registry`].
//!
//! Mirrors what kube-proxy and Istio do: a Service's endpoints come from the EndpointSlices labelled
//! `kubernetes.io/service-name`; an endpoint's zone comes from the slice (else its Node), its region and
//! subzone from its Node's labels; endpoint conditions map to Envoy health.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service as KubeService};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    labels, Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort,
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

/// Converts what the watches hold into one registry. Services without any endpoint slice still appear
/// (with no endpoints): Envoy then answers 503 rather than 404, which is what a user expects of a Service
/// whose pods are all gone.
pub fn build_registry<'a>(
    services: impl IntoIterator<Item = &'a KubeService>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: &HashMap<String, NodeLabels>,
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
                let number = match (by_name.and_then(|p| p.port), target) {
                    (Some(n), _) => u16::try_from(n).ok(),
                    (None, Some(IntOrString::Int(n))) => u16::try_from(*n).ok(),
                    (None, None) => Some(port.port),
                    (None, Some(IntOrString::String(_))) => None,
                };
                match number.filter(|n| *n != 0) {
                    Some(n) if n != port.port => {
                        overrides.insert(port.name.clone(), n);
                    }
                    Some(_) => {}
                    None => skipped.push(Skipped {
                        object: slice_name.clone(),
                        reason: format!(
                            "no port named {:?} for service port {}",
                            port.name, port.port
                        ),
                    }),
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
        });
    }
    (Registry::from_services(out), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, ports: serde_json::Value) -> KubeService {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"ports": ports}
        }))
        .unwrap()
    }

    fn slice(
        ns: &str,
        svc: &str,
        name: &str,
        ports: serde_json::Value,
        eps: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": eps
        }))
        .unwrap()
    }

    fn nodes() -> HashMap<String, NodeLabels> {
        let node = |region: &str, zone: &str, subzone: Option<&str>| {
            let mut l = BTreeMap::from([
                (labels::REGION.to_string(), region.to_string()),
                (labels::ZONE.to_string(), zone.to_string()),
            ]);
            if let Some(s) = subzone {
                l.insert(labels::SUBZONE.to_string(), s.to_string());
            }
            NodeLabels(l)
        };
        HashMap::from([
            (
                "node-b".to_string(),
                node("us-east1", "us-east1-b", Some("rack-1")),
            ),
            ("node-c".to_string(), node("us-east1", "us-east1-c", None)),
        ])
    }

    #[test]
    fn endpoints_get_locality_from_slice_and_node_and_health_from_conditions() {
        let svc = service(
            "shop",
            "checkout",
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
        );
        let sl = slice(
            "shop",
            "checkout",
            "checkout-abc",
            json!([{"name": "http", "port": 8080}]),
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "node-b"},
                // zone on the slice wins over the node's
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "nodeName": "node-b", "zone": "us-east1-x"},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "node-c"},
                {"addresses": ["10.0.0.4"], "nodeName": "unknown-node"},
            ]),
        );
        let (reg, skipped) = build_registry([&svc], [&sl], &nodes(), &ConvertSettings::default());
        assert!(skipped.is_empty(), "{skipped:?}");
        let s = &reg.services[&ServiceId::new("shop", "checkout")];
        assert_eq!(
            s.ports,
            vec![ServicePort {
                name: "http".into(),
                port: 80
            }]
        );
        let eps: Vec<(String, u16, Locality, Health)> = s
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.address.to_string(),
                    e.target_port(&s.ports[0]),
                    e.locality.clone(),
                    e.health,
                )
            })
            .collect();
        assert_eq!(
            eps,
            vec![
                (
                    "10.0.0.1".into(),
                    8080,
                    Locality::new("us-east1", "us-east1-b", "rack-1"),
                    Health::Healthy
                ),
                (
                    "10.0.0.2".into(),
                    8080,
                    Locality::new("us-east1", "us-east1-x", "rack-1"),
                    Health::Unhealthy
                ),
                (
                    "10.0.0.3".into(),
                    8080,
                    Locality::new("us-east1", "us-east1-c", ""),
                    Health::Draining
                ),
                // nil conditions mean ready; unknown node means unknown region
                (
                    "10.0.0.4".into(),
                    8080,
                    Locality::default(),
                    Health::Healthy
                ),
            ]
        );
    }

    #[test]
    fn named_ports_map_by_name_and_duplicates_keep_the_healthiest() {
        let svc = service(
            "shop",
            "cart",
            json!([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        );
        let a = slice(
            "shop",
            "cart",
            "cart-a",
            json!([{"name": "grpc", "port": 19090}, {"name": "http", "port": 18080}]),
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
        );
        let b = slice(
            "shop",
            "cart",
            "cart-b",
            json!([{"name": "grpc", "port": 19090}, {"name": "http", "port": 18080}]),
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]),
        );
        let (reg, _) = build_registry([&svc], [&b, &a], &nodes(), &ConvertSettings::default());
        let s = &reg.services[&ServiceId::new("shop", "cart")];
        assert_eq!(s.ports.len(), 2, "UDP ports are not served");
        assert_eq!(s.endpoints.len(), 1);
        let ep = &s.endpoints[0];
        assert_eq!(ep.health, Health::Healthy);
        assert_eq!(ep.target_port(&s.ports[0]), 18080);
        assert_eq!(ep.target_port(&s.ports[1]), 19090);
    }

    #[test]
    fn one_address_with_different_ports_in_two_slices_is_two_endpoints() {
        // hostNetwork pods on one node (or several test backends on 127.0.0.1) share an address.
        let svc = service("shop", "web", json!([{"name": "http", "port": 80}]));
        let a = slice(
            "shop",
            "web",
            "web-a",
            json!([{"name": "http", "port": 18080}]),
            json!([{"addresses": ["10.0.0.1"], "nodeName": "node-b"}]),
        );
        let b = slice(
            "shop",
            "web",
            "web-b",
            json!([{"name": "http", "port": 18081}]),
            json!([{"addresses": ["10.0.0.1"], "nodeName": "node-c", "conditions": {"ready": false}}]),
        );
        let (reg, skipped) =
            build_registry([&svc], [&a, &b], &nodes(), &ConvertSettings::default());
        assert!(skipped.is_empty(), "{skipped:?}");
        let s = &reg.services[&ServiceId::new("shop", "web")];
        let eps: Vec<(u16, &str, Health)> = s
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.target_port(&s.ports[0]),
                    e.locality.zone.as_str(),
                    e.health,
                )
            })
            .collect();
        assert_eq!(
            eps,
            vec![
                (18080, "us-east1-b", Health::Healthy),
                (18081, "us-east1-c", Health::Unhealthy)
            ]
        );
    }

    #[test]
    fn services_without_slices_exist_and_bad_data_is_skipped_with_a_reason() {
        let svc = service("shop", "empty", json!([{"port": 80}]));
        let other = service("shop", "bad", json!([{"port": 80}]));
        let sl = slice(
            "shop",
            "bad",
            "bad-1",
            json!([{"port": 80}]),
            json!([{"addresses": ["not-an-ip"]}, {"addresses": ["10.0.0.9"]}]),
        );
        let orphan = slice(
            "shop",
            "nobody",
            "orphan",
            json!([]),
            json!([{"addresses": ["10.0.0.5"]}]),
        );
        let (reg, skipped) = build_registry(
            [&svc, &other],
            [&sl, &orphan],
            &nodes(),
            &ConvertSettings::default(),
        );
        assert!(reg.services[&ServiceId::new("shop", "empty")]
            .endpoints
            .is_empty());
        assert_eq!(
            reg.services[&ServiceId::new("shop", "bad")].endpoints.len(),
            1
        );
        assert_eq!(
            reg.services.len(),
            2,
            "slices of unknown services are ignored"
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("not-an-ip"), "{skipped:?}");
    }

    #[test]
    fn traffic_distribution_is_read_and_unknown_values_are_skipped_by_name() {
        let with = |value: Option<&str>| -> KubeService {
            let mut spec = json!({"ports": [{"port": 80}]});
            if let Some(v) = value {
                spec["trafficDistribution"] = json!(v);
            }
            serde_json::from_value(json!({
                "metadata": {"namespace": "shop", "name": "web"},
                "spec": spec
            }))
            .unwrap()
        };
        let read = |svc: KubeService| {
            let (reg, skipped) = build_registry([&svc], [], &nodes(), &ConvertSettings::default());
            (
                reg.services[&ServiceId::new("shop", "web")].traffic_distribution,
                skipped,
            )
        };
        for (value, want) in [
            ("PreferSameZone", TrafficDistribution::PreferSameZone),
            ("PreferClose", TrafficDistribution::PreferClose),
            ("PreferSameNode", TrafficDistribution::PreferSameNode),
        ] {
            let (got, skipped) = read(with(Some(value)));
            assert_eq!(got, Some(want));
            assert!(skipped.is_empty(), "{skipped:?}");
        }
        let (got, skipped) = read(with(None));
        assert_eq!(got, None);
        assert!(skipped.is_empty());
        let (got, skipped) = read(with(Some("PreferSameGalaxy")));
        assert_eq!(got, None, "an unknown value is ignored");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].object, "Service shop/web");
        assert!(
            skipped[0].reason.contains("\"PreferSameGalaxy\""),
            "{skipped:?}"
        );
    }

    #[test]
    fn subzone_label_is_configurable() {
        let svc = service("shop", "s", json!([{"port": 80}]));
        let sl = slice(
            "shop",
            "s",
            "s-1",
            json!([{"port": 80}]),
            json!([{"addresses": ["10.0.0.1"], "nodeName": "n"}]),
        );
        let nodes = HashMap::from([(
            "n".to_string(),
            NodeLabels(BTreeMap::from([(
                "example.com/rack".to_string(),
                "r7".to_string(),
            )])),
        )]);
        let settings = ConvertSettings {
            subzone_label: "example.com/rack".into(),
            ..ConvertSettings::default()
        };
        let (reg, _) = build_registry([&svc], [&sl], &nodes, &settings);
        assert_eq!(
            reg.services[&ServiceId::new("shop", "s")].endpoints[0]
                .locality
                .subzone,
            "r7"
        );
    }

    #[test]
    fn endpoints_carry_their_cluster_and_network_as_labels() {
        let svc = service("shop", "s", json!([{"port": 80}]));
        let sl = slice(
            "shop",
            "s",
            "s-1",
            json!([{"port": 80}]),
            json!([{"addresses": ["10.0.0.1"]}]),
        );
        let mut settings = ConvertSettings::default();
        let (reg, _) = build_registry([&svc], [&sl], &HashMap::new(), &settings);
        let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
        assert_eq!(
            ep.label(labels::CLUSTER),
            None,
            "one unnamed cluster adds no label"
        );
        settings.origin = ClusterOrigin {
            cluster: "east".into(),
            network: "net-1".into(),
        };
        let (reg, _) = build_registry([&svc], [&sl], &HashMap::new(), &settings);
        let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
        assert_eq!(ep.label(labels::CLUSTER), Some("east"));
        assert_eq!(ep.label(labels::NETWORK), Some("net-1"));
        assert_eq!(ep.label(labels::HOSTNAME), None, "no nodeName, no hostname");
    }

    #[test]
    fn endpoints_carry_their_node_name_as_hostname() {
        let svc = service("shop", "s", json!([{"port": 80}]));
        let sl = slice(
            "shop",
            "s",
            "s-1",
            json!([{"port": 80}]),
            json!([{"addresses": ["10.0.0.1"], "nodeName": "node-b"}]),
        );
        let (reg, _) = build_registry([&svc], [&sl], &nodes(), &ConvertSettings::default());
        let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
        assert_eq!(ep.label(labels::HOSTNAME), Some("node-b"));
    }
}
