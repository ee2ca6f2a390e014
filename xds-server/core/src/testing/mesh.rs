//! Model and policy builders: endpoints, services, registries, clients, policies; the translator's
//! input.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{
    labels, ClientInfo, Endpoint, Health, Locality, NetworkGateway, Registry, Service, ServiceId,
    ServicePort,
};
use crate::policy::{
    BackupService, FailoverPolicy, PolicyEntry, PolicyOrigin, PolicyScope, PolicySet,
    RegionFailover,
};
use crate::translate::input::ClusterInput;

/// Region `r`, zone `z`, no subzone: where most tests put their endpoints and clients.
pub fn locality() -> Locality {
    Locality::new("r", "z", "")
}

/// An endpoint at `ip` (no port overrides, no labels).
pub fn endpoint(ip: &str, locality: Locality, health: Health) -> Endpoint {
    Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality,
        labels: BTreeMap::new(),
        health,
        identity: None,
    }
}

/// A healthy endpoint at `ip` in [`locality`].
pub fn healthy(ip: &str) -> Endpoint {
    endpoint(ip, locality(), Health::Healthy)
}

/// `e` labelled as in `cluster` (`topology.istio.io/cluster`).
pub fn in_cluster(mut e: Endpoint, cluster: &str) -> Endpoint {
    e.labels.insert(labels::CLUSTER.into(), cluster.into());
    e
}

/// `e` with the workload identity `spiffe_id` (a valid SPIFFE ID).
pub fn with_identity(mut e: Endpoint, spiffe_id: &str) -> Endpoint {
    e.identity = Some(crate::model::SpiffeId::parse(spiffe_id).expect("a valid SPIFFE ID"));
    e
}

/// `e` labelled as on `network` (`topology.istio.io/network`).
pub fn on_network(mut e: Endpoint, network: &str) -> Endpoint {
    e.labels.insert(labels::NETWORK.into(), network.into());
    e
}

/// Service `namespace/name` with `ports` (name, number), without a traffic distribution.
pub fn service<N: Into<String>>(
    namespace: &str,
    name: &str,
    ports: impl IntoIterator<Item = (N, u16)>,
    endpoints: Vec<Endpoint>,
) -> Service {
    Service {
        traffic_distribution: None,
        id: ServiceId::new(namespace, name),
        ports: ports
            .into_iter()
            .map(|(name, port)| ServicePort {
                name: name.into(),
                port,
            })
            .collect(),
        endpoints,
        identity: None,
    }
}

/// Service `shop/name` with one port, `http` = `port`.
pub fn shop_service(name: &str, port: u16, endpoints: Vec<Endpoint>) -> Service {
    service("shop", name, [("http", port)], endpoints)
}

/// Services `shop/name`, each with one port `http` = `port` and a [`healthy`] endpoint at each of its
/// addresses.
pub fn registry(port: u16, services: &[(&str, &[&str])]) -> Arc<Registry> {
    Arc::new(Registry::from_services(services.iter().map(
        |(name, ips)| shop_service(name, port, ips.iter().map(|ip| healthy(ip)).collect()),
    )))
}

/// Adds a gateway on port 15443 for each (network, address).
pub fn add_gateways(registry: &mut Registry, gateways: &[(&str, &str)]) {
    for (network, address) in gateways {
        registry.gateways.insert(
            network.to_string(),
            NetworkGateway::new(address.parse().unwrap(), 15443),
        );
    }
}

/// A client in `locality`, nothing else known about it.
pub fn client(locality: Locality) -> ClientInfo {
    ClientInfo {
        locality,
        ..ClientInfo::default()
    }
}

/// Backup service `shop/name`, only its endpoints in `cluster` if one is given.
pub fn backup(name: &str, cluster: Option<&str>) -> BackupService {
    BackupService {
        service: ServiceId::new("shop", name),
        cluster: cluster.map(str::to_string),
    }
}

/// Region failover rule `from` → `to`.
pub fn failover(from: &str, to: &str) -> RegionFailover {
    RegionFailover {
        from: from.into(),
        to: to.into(),
    }
}

/// A policy set of one built-in `policy` in force for `scope`.
pub fn policies(scope: PolicyScope, policy: FailoverPolicy) -> Arc<PolicySet> {
    Arc::new(PolicySet {
        entries: vec![PolicyEntry {
            scope,
            origin: PolicyOrigin::BuiltIn,
            policy: Arc::new(policy),
        }],
    })
}

/// A policy set of one built-in `policy` for the whole mesh.
pub fn mesh_wide(policy: FailoverPolicy) -> Arc<PolicySet> {
    policies(PolicyScope::Mesh, policy)
}

/// The translator's input for the first port of `primary`, its backups and gateways taken from
/// `registry`.
pub fn cluster_input(
    registry: &Registry,
    primary: &Service,
    policy: &FailoverPolicy,
) -> ClusterInput {
    ClusterInput::new(
        registry,
        Arc::new(primary.clone()),
        &primary.ports[0],
        policy,
    )
}
