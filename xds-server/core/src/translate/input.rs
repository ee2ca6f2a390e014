//! What one cluster's EDS answer is computed from, besides the client's class: the service port's own
//! endpoints, the endpoints of the backup services its policy names (resolved against the registry),
//! and the gateways of the networks those endpoints are on.
//!
//! Built once per snapshot and cluster (not per client), and compared as a whole to decide whether a
//! cluster's cached answers can be reused: a change in a backup service or in a relevant gateway
//! rebuilds the primary's answers like a change in its own endpoints does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::net::IpAddr;

use crate::model::{
    labels, Endpoint, Health, Locality, NetworkGateway, Registry, Service, ServiceId, ServicePort,
    SpiffeId,
};
use crate::policy::FailoverPolicy;
use crate::translate::priorities::PriorityLevel;

/// One host as a client is sent it: an endpoint itself, or the gateway of a remote network standing
/// for that network's endpoints of one locality in one level (split horizon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentHost {
    pub address: IpAddr,
    pub port: u16,
    /// A gateway is healthy if any endpoint behind it is, draining if all are, else unhealthy.
    pub health: Health,
    /// `Some(network)` for a gateway.
    pub gateway_for: Option<String>,
    /// How many endpoints this host stands for (its load-balancing weight; 1 for an endpoint).
    pub behind: u32,
}

/// Whether a client on `client_network` is sent `ep` directly (`Direct`), through its network's
/// gateway, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Direct,
    Gateway(&'a str, &'a NetworkGateway),
    /// On another network that has no gateway.
    Unreachable(&'a str),
}

/// A backup service's endpoints as this cluster uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEndpoints {
    /// 1-based place in the policy's `backups`.
    pub position: usize,
    pub service: ServiceId,
    /// The backup's port these endpoints serve (mapped from the primary's port).
    pub port: ServicePort,
    /// Only the endpoints of this cluster were taken.
    pub cluster: Option<String>,
    /// Their target port is stored under the primary's port name, so everything downstream reads
    /// every endpoint's port the same way.
    pub endpoints: Vec<Endpoint>,
}

/// A backup the policy names that this cluster cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBackup {
    pub position: usize,
    pub service: ServiceId,
    pub reason: String,
}

/// One consecutive run of [`ClusterInput::endpoint`] indices: the primary's or one backup's.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// `None` for the primary service.
    pub backup: Option<&'a BackupEndpoints>,
    /// Index of `endpoints[0]` in the cluster's flat numbering.
    pub start: usize,
    pub endpoints: &'a [Endpoint],
}

/// The localities the fleet verdict took out of service (`fleetFailover`, enforced), per cluster name:
/// their hosts are sent UNHEALTHY to every client of the cluster. A plain input of the snapshot, filled
/// by the server from the load reports; the translator does not know where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetEjections {
    by_cluster: BTreeMap<String, BTreeSet<Locality>>,
}

impl FleetEjections {
    pub fn new(by_cluster: BTreeMap<String, BTreeSet<Locality>>) -> Self {
        let by_cluster = by_cluster
            .into_iter()
            .filter(|(_, localities)| !localities.is_empty())
            .collect();
        Self { by_cluster }
    }

    /// The ejected localities of one cluster (empty for most).
    pub fn of(&self, cluster: &str) -> BTreeSet<Locality> {
        self.by_cluster.get(cluster).cloned().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cluster.is_empty()
    }

    /// (cluster, its ejected localities), by cluster name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeSet<Locality>)> {
        self.by_cluster.iter().map(|(c, l)| (c.as_str(), l))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInput {
    pub service: Arc<Service>,
    pub port: ServicePort,
    /// In the policy's order; backups that cannot be used are in `skipped` instead.
    pub backups: Vec<BackupEndpoints>,
    pub skipped: Vec<SkippedBackup>,
    /// The gateways of the networks these endpoints are on, and only those: a gateway elsewhere in
    /// the mesh changing does not touch this cluster.
    pub gateways: BTreeMap<String, NetworkGateway>,
    /// Localities the fleet verdict ejected ([`FleetEjections`]): every host sent in one of them is
    /// UNHEALTHY, whatever its readiness. Part of the input, so a verdict rebuilds only this cluster.
    pub ejected: BTreeSet<Locality>,
}

impl ClusterInput {
    /// A service port with no backups and no gateways.
    pub fn plain(service: Arc<Service>, port: &ServicePort) -> Self {
        Self {
            service,
            port: port.clone(),
            backups: Vec::new(),
            skipped: Vec::new(),
            gateways: BTreeMap::new(),
            ejected: BTreeSet::new(),
        }
    }

    /// Resolves `policy`'s backups and the relevant gateways in `registry`.
    pub fn new(
        registry: &Registry,
        service: Arc<Service>,
        port: &ServicePort,
        policy: &FailoverPolicy,
    ) -> Self {
        let mut input = Self::plain(service, port);
        for (i, backup) in policy.backups.iter().enumerate() {
            let position = i + 1;
            let skip = |reason: String| SkippedBackup {
                position,
                service: backup.service.clone(),
                reason,
            };
            if backup.service == input.service.id {
                // Validation refuses this for a policy of the service itself; never loop back.
                input.skipped.push(skip("it is this service".to_string()));
                continue;
            }
            let Some(target) = registry.services.get(&backup.service) else {
                input
                    .skipped
                    .push(skip("no such service in the registry".to_string()));
                continue;
            };
            let Some(target_port) = backup_port(&target.ports, port) else {
                let names: Vec<&str> = target.ports.iter().map(|p| p.name.as_str()).collect();
                input.skipped.push(skip(format!(
                    "it has no port named `{}` and more than one port ({}), so which one to use is \
                     not clear",
                    port.name,
                    names.join(", ")
                )));
                continue;
            };
            let endpoints = target
                .endpoints
                .iter()
                .filter(|ep| {
                    backup
                        .cluster
                        .as_deref()
                        .is_none_or(|c| ep.label(labels::CLUSTER) == Some(c))
                        && ep.serves(target_port)
                })
                .map(|ep| Endpoint {
                    port_overrides: BTreeMap::from([(
                        port.name.clone(),
                        ep.target_port(target_port),
                    )]),
                    ..ep.clone()
                })
                .collect();
            input.backups.push(BackupEndpoints {
                position,
                service: backup.service.clone(),
                port: target_port.clone(),
                cluster: backup.cluster.clone(),
                endpoints,
            });
        }
        input.gateways = input
            .blocks()
            .flat_map(|b| b.endpoints)
            .filter_map(|ep| ep.label(labels::NETWORK))
            .filter_map(|net| Some((net.to_string(), registry.gateways.get(net)?.clone())))
            .collect();
        input
    }

    /// The identities this cluster's peers may present (secure naming): the service's, and those of
    /// every backup whose endpoints the cluster uses. Empty — any certificate of the trust bundle —
    /// when the service, or a backup with endpoints here, has no known identity: one validation
    /// context covers the whole cluster, and pinning the others would refuse every connection to
    /// that backup, a failover that fails.
    pub fn peer_identities(&self) -> BTreeSet<SpiffeId> {
        let mut accepted: BTreeSet<SpiffeId> =
            self.service.identities().into_iter().cloned().collect();
        if accepted.is_empty() {
            return accepted;
        }
        for backup in self.backups.iter().filter(|b| !b.endpoints.is_empty()) {
            let known: Vec<&SpiffeId> = backup
                .endpoints
                .iter()
                .filter_map(|e| e.identity.as_ref())
                .collect();
            if known.is_empty() {
                return BTreeSet::new();
            }
            accepted.extend(known.into_iter().cloned());
        }
        accepted
    }

    /// The primary's endpoints, then each backup's, numbered consecutively from 0.
    pub fn blocks(&self) -> impl Iterator<Item = Block<'_>> {
        let primary = Block {
            backup: None,
            start: 0,
            endpoints: &self.service.endpoints,
        };
        let mut start = self.service.endpoints.len();
        std::iter::once(primary).chain(self.backups.iter().map(move |b| {
            let block = Block {
                backup: Some(b),
                start,
                endpoints: &b.endpoints,
            };
            start += b.endpoints.len();
            block
        }))
    }

    /// The endpoint with flat index `i` (see [`Self::blocks`]).
    pub fn endpoint(&self, i: usize) -> &Endpoint {
        let own = &self.service.endpoints;
        if i < own.len() {
            return &own[i];
        }
        let mut i = i - own.len();
        for b in &self.backups {
            if i < b.endpoints.len() {
                return &b.endpoints[i];
            }
            i -= b.endpoints.len();
        }
        panic!("endpoint index out of range");
    }

    /// How many endpoints of all blocks are in each locality.
    pub fn endpoints_per_locality(&self) -> BTreeMap<&Locality, usize> {
        let mut counts: BTreeMap<&Locality, usize> = BTreeMap::new();
        for ep in self.blocks().flat_map(|b| b.endpoints) {
            *counts.entry(&ep.locality).or_default() += 1;
        }
        counts
    }

    /// How many endpoints there are in all blocks.
    pub fn len(&self) -> usize {
        self.service.endpoints.len()
            + self
                .backups
                .iter()
                .map(|b| b.endpoints.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How a client on `client_network` reaches `ep`. Without a network on either side, directly:
    /// a mesh that does not label networks is one flat network.
    pub fn route<'a>(&'a self, client_network: Option<&str>, ep: &'a Endpoint) -> Route<'a> {
        match (client_network, ep.label(labels::NETWORK)) {
            (Some(client), Some(net)) if client != net => match self.gateways.get(net) {
                Some(gw) => Route::Gateway(net, gw),
                None => Route::Unreachable(net),
            },
            _ => Route::Direct,
        }
    }

    /// A level's hosts as EDS sends them: grouped by locality (sorted), within a locality sorted by
    /// address and port; the endpoints behind each gateway replaced by one host at the gateway, in
    /// the first of their localities (Envoy keeps one host per address) — in a `distribute` level,
    /// the first of those the rule's `to` patterns match, so the host counts towards a pattern.
    /// Unreachable endpoints are not in a level to begin with (see `priorities`). Hosts in an
    /// [ejected](Self::ejected) locality are UNHEALTHY.
    pub fn hosts(
        &self,
        level: &PriorityLevel,
        client_network: Option<&str>,
    ) -> Vec<(&Locality, Vec<SentHost>)> {
        let unmatched = |ep: &Endpoint| match &level.reason.distribute {
            Some(rule) => !rule.to.iter().any(|(p, _)| p.matches(ep.locality.parts())),
            None => false,
        };
        let mut gateway_home: BTreeMap<&NetworkGateway, (bool, &Locality)> = BTreeMap::new();
        for &i in &level.endpoints {
            let ep = self.endpoint(i);
            if let Route::Gateway(_, gw) = self.route(client_network, ep) {
                let candidate = (unmatched(ep), &ep.locality);
                let home = gateway_home.entry(gw).or_insert(candidate);
                *home = (*home).min(candidate);
            }
        }
        let mut by_locality: BTreeMap<&Locality, Vec<SentHost>> = BTreeMap::new();
        // Gateway → index of its host in `by_locality[its home]`.
        let mut gateway_at: BTreeMap<&NetworkGateway, usize> = BTreeMap::new();
        for &i in &level.endpoints {
            let ep = self.endpoint(i);
            let route = self.route(client_network, ep);
            let locality = match route {
                Route::Gateway(_, gw) => gateway_home[gw].1,
                _ => &ep.locality,
            };
            let hosts = by_locality.entry(locality).or_default();
            match route {
                Route::Direct | Route::Unreachable(_) => hosts.push(SentHost {
                    address: ep.address,
                    port: ep.target_port(&self.port),
                    health: ep.health,
                    gateway_for: None,
                    behind: 1,
                }),
                Route::Gateway(net, gw) => match gateway_at.get(gw) {
                    Some(&at) => {
                        let host = &mut hosts[at];
                        host.behind += 1;
                        host.health = combined(host.health, ep.health);
                    }
                    None => {
                        gateway_at.insert(gw, hosts.len());
                        hosts.push(SentHost {
                            address: gw.addresses[0],
                            port: gw.port,
                            health: ep.health,
                            gateway_for: Some(net.to_string()),
                            behind: 1,
                        });
                    }
                },
            }
        }
        by_locality
            .into_iter()
            .map(|(locality, hosts)| {
                let mut hosts: Vec<SentHost> =
                    hosts.into_iter().flat_map(|h| self.spread(h)).collect();
                if self.ejected.contains(locality) {
                    for host in &mut hosts {
                        host.health = Health::Unhealthy;
                    }
                }
                hosts.sort_by(|a, b| {
                    (a.address, a.port, &a.gateway_for).cmp(&(b.address, b.port, &b.gateway_for))
                });
                (locality, hosts)
            })
            .collect()
    }
}

impl ClusterInput {
    /// A gateway's host as one host per address of the gateway, the endpoints it stands for
    /// (`behind`, its weight) shared among them so that the gateway as a whole still weighs about as
    /// much as those endpoints (each address at least 1: Envoy refuses a zero weight). Any other
    /// host as it is.
    fn spread(&self, host: SentHost) -> Vec<SentHost> {
        let gateway = host
            .gateway_for
            .as_ref()
            .and_then(|net| self.gateways.get(net));
        let Some(gateway) = gateway.filter(|g| g.addresses.len() > 1) else {
            return vec![host];
        };
        let n = u32::try_from(gateway.addresses.len()).unwrap_or(u32::MAX);
        let share = ((host.behind + n / 2) / n).max(1);
        gateway
            .addresses
            .iter()
            .map(|&address| SentHost {
                address,
                behind: share,
                gateway_for: host.gateway_for.clone(),
                ..host
            })
            .collect()
    }
}

/// The health of a gateway standing for endpoints of health `a` and `b`: healthy if any is, draining
/// only if all are.
fn combined(a: Health, b: Health) -> Health {
    match (a, b) {
        (Health::Healthy, _) | (_, Health::Healthy) => Health::Healthy,
        (Health::Draining, Health::Draining) => Health::Draining,
        _ => Health::Unhealthy,
    }
}

/// The backup's port with the primary port's name, else its only port.
fn backup_port<'a>(ports: &'a [ServicePort], primary: &ServicePort) -> Option<&'a ServicePort> {
    ports
        .iter()
        .find(|p| p.name == primary.name)
        .or_else(|| (ports.len() == 1).then(|| &ports[0]))
}

#[cfg(test)]
mod tests;
