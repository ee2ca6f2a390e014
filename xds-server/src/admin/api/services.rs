//! ListServices and ListPolicies: the services of the current snapshot with the policy each port is
//! served under, the policies in force with what each decides, and finding a service by what users
//! type. Both read what the snapshot serves rather than resolve again.

use std::sync::Arc;

use tonic::Status;

use super::convert::{locality_pb, origin_text};
use super::pb;
use xds_core::model::{Health, Registry, Service, ServiceId, ServicePort};
use xds_core::policy::{
    FailoverPolicy, FleetFailover, HealthCheckProtocol, MtlsMode, PolicyOrigin, PolicyScope,
    PolicyStatus, Spillover,
};
use xds_core::snapshot::{ClusterEntry, Snapshot};
use xds_core::translate::resources::cluster_name;

pub fn services_pb(snapshot: &Snapshot, source: &str) -> pb::ListServicesResponse {
    pb::ListServicesResponse {
        snapshot_generation: snapshot.generation,
        services: snapshot
            .registry
            .services
            .values()
            .map(|s| {
                let ports: Vec<pb::ServicePort> = s
                    .ports
                    .iter()
                    .map(|p| {
                        let (mtls, peer_identities) = served_peers(snapshot, &s.id, p);
                        pb::ServicePort {
                            name: p.name.clone(),
                            port: u32::from(p.port),
                            cluster: cluster_name(&s.id, p),
                            policy: served_policy_text(snapshot, &s.id, p),
                            mtls,
                            peer_identities,
                        }
                    })
                    .collect();
                pb::Service {
                    namespace: s.id.namespace.clone(),
                    name: s.id.name.clone(),
                    endpoints: s
                        .endpoints
                        .iter()
                        .map(|ep| pb::Endpoint {
                            address: ep.address.to_string(),
                            port_overrides: ep
                                .port_overrides
                                .iter()
                                .map(|(k, v)| (k.clone(), u32::from(*v)))
                                .collect(),
                            locality: Some(locality_pb(&ep.locality)),
                            health: health_text(ep.health).to_string(),
                            labels: ep.labels.clone(),
                            identity: ep
                                .identity
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                        })
                        .collect(),
                    source: source.to_string(),
                    policy: ports
                        .first()
                        .map_or_else(|| "built-in".to_string(), |p| p.policy.clone()),
                    traffic_distribution: s
                        .traffic_distribution
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    identities: s.identities().iter().map(ToString::to_string).collect(),
                    ports,
                }
            })
            .collect(),
    }
}

fn health_text(h: Health) -> &'static str {
    match h {
        Health::Healthy => "HEALTHY",
        Health::Unhealthy => "UNHEALTHY",
        Health::Draining => "DRAINING",
    }
}

/// The policies in force (from the snapshot) with the services each decides, and the rejected ones.
pub fn policies_pb(snapshot: &Snapshot, status: &PolicyStatus) -> pb::ListPoliciesResponse {
    // (`NS/NAME:PORT`, port name, its served cluster) for every service port, in service order.
    let resolved: Vec<(String, String, &ClusterEntry)> = snapshot
        .registry
        .services
        .values()
        .flat_map(|s| {
            s.ports.iter().filter_map(move |p| {
                let served = served(snapshot, &s.id, p).ok()?;
                Some((service_port_text(&s.id, p), p.name.clone(), &**served))
            })
        })
        .collect();
    let active = snapshot
        .policies
        .entries
        .iter()
        .map(|entry| {
            let (namespace, name) = match &entry.origin {
                PolicyOrigin::Named {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
                _ => (String::new(), entry.origin.describe()),
            };
            // Every service port this entry decides, and those where it supplies everything but
            // the failoverPriority (the Service's trafficDistribution replaces that).
            let services = resolved
                .iter()
                .filter_map(|(text, _, c)| match &c.policy.origin {
                    o if *o == entry.origin => Some(text.clone()),
                    PolicyOrigin::TrafficDistribution { value, over, .. }
                        if **over == entry.origin =>
                    {
                        Some(format!("{text} (trafficDistribution={value})"))
                    }
                    _ => None,
                })
                .collect();
            pb::Policy {
                namespace,
                name,
                scope: scope_text(&entry.scope),
                origin: origin_text(&entry.origin),
                services,
                port: match &entry.scope {
                    PolicyScope::ServicePort(_, port) => port.clone(),
                    _ => String::new(),
                },
                ..policy_settings_pb(&entry.policy)
            }
        })
        .collect();
    let effective = resolved
        .iter()
        .map(|(text, port_name, c)| pb::EffectivePolicy {
            service_port: text.clone(),
            port_name: port_name.clone(),
            policy: origin_text(&c.policy.origin),
            failover_priority: c
                .policy
                .policy
                .failover_priority
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    pb::ListPoliciesResponse {
        effective,
        active,
        rejected: status
            .rejected()
            .map(|r| pb::RejectedPolicy {
                source: r.source.clone(),
                error: r.error.clone(),
            })
            .collect(),
    }
}

/// The settings of a policy, as the admin API reports them (scope, origin and services left empty).
pub fn policy_settings_pb(p: &FailoverPolicy) -> pb::Policy {
    pb::Policy {
        failover_priority: p
            .failover_priority
            .iter()
            .map(ToString::to_string)
            .collect(),
        failover: p
            .failover
            .iter()
            .map(|r| pb::FailoverRule {
                from: r.from.clone(),
                to: r.to.clone(),
            })
            .collect(),
        overprovisioning_factor: p.overprovisioning_factor,
        panic_threshold: p.panic_threshold,
        outlier_detection: p.outlier_detection.as_ref().map(|od| pb::OutlierDetection {
            consecutive_5xx: od.consecutive_5xx,
            consecutive_gateway_failure: od.consecutive_gateway_failure,
            interval_ms: od.interval.as_millis() as u64,
            base_ejection_time_ms: od.base_ejection_time.as_millis() as u64,
            max_ejection_percent: od.max_ejection_percent,
        }),
        outlier_detection_enabled: p.outlier_detection.is_some(),
        distribute: p
            .distribute
            .iter()
            .map(|r| pb::DistributeRule {
                from: r.from.to_string(),
                to: r
                    .to
                    .iter()
                    .map(|(l, w)| pb::DistributeTarget {
                        locality: l.to_string(),
                        weight: *w,
                    })
                    .collect(),
            })
            .collect(),
        health_check: p.health_check.as_ref().map(|hc| {
            let mut out = pb::HealthCheck {
                interval_ms: hc.interval.as_millis() as u64,
                timeout_ms: hc.timeout.as_millis() as u64,
                unhealthy_threshold: hc.unhealthy_threshold,
                healthy_threshold: hc.healthy_threshold,
                ..pb::HealthCheck::default()
            };
            match &hc.protocol {
                HealthCheckProtocol::Http { path, host } => {
                    out.protocol = "http".into();
                    out.path = path.clone();
                    out.host = host.clone().unwrap_or_default();
                }
                HealthCheckProtocol::Tcp => out.protocol = "tcp".into(),
                HealthCheckProtocol::Grpc { service } => {
                    out.protocol = "grpc".into();
                    out.grpc_service = service.clone().unwrap_or_default();
                }
            }
            out
        }),
        spillover: spillover_text(p.spillover).to_string(),
        mtls: mtls_text(p.mtls).to_string(),
        backups: p
            .backups
            .iter()
            .map(|b| match &b.cluster {
                Some(c) => format!("{}@{c}", b.service),
                None => b.service.to_string(),
            })
            .collect(),
        fleet_failover: Some(fleet_failover_pb(&p.fleet_failover)),
        ..pb::Policy::default()
    }
}

pub fn fleet_failover_pb(f: &FleetFailover) -> pb::FleetFailover {
    pb::FleetFailover {
        mode: f.mode.to_string(),
        min_reporters: f.min_reporters,
        min_requests: f.min_requests,
        error_ratio: f.error_ratio.value(),
        window_ms: f.window.as_millis() as u64,
        eject_for_ms: f.eject_for.as_millis() as u64,
        max_ejected_percent: f.max_ejected_percent,
    }
}

fn mtls_text(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Disable => "DISABLE",
    }
}

/// The served cluster's `mtls` and, under `STRICT`, the identities its peers must carry (as the
/// CDS resource clients were sent has them); `("", [])` if the snapshot lacks the port.
fn served_peers(snapshot: &Snapshot, id: &ServiceId, port: &ServicePort) -> (String, Vec<String>) {
    let Ok(served) = served(snapshot, id, port) else {
        return (String::new(), Vec::new());
    };
    let mode = served.policy.policy.mtls;
    let peers = match mode {
        MtlsMode::Strict => served
            .input
            .peer_identities()
            .iter()
            .map(ToString::to_string)
            .collect(),
        MtlsMode::Disable => Vec::new(),
    };
    (mtls_text(mode).to_string(), peers)
}

fn scope_text(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Mesh => "mesh".to_string(),
        PolicyScope::Namespace(ns) => format!("namespace {ns}"),
        PolicyScope::Service(id) => format!("service {id}"),
        PolicyScope::ServicePort(id, port) => format!("service {id} port {port}"),
    }
}

/// `NS/NAME:PORT`.
fn service_port_text(id: &ServiceId, port: &ServicePort) -> String {
    format!("{id}:{}", port.port)
}

fn spillover_text(s: Spillover) -> &'static str {
    match s {
        Spillover::Gradual => "gradual",
        Spillover::AllOrNothing => "allOrNothing",
    }
}

/// The cluster the snapshot serves for a service port, with the policy and input its answers were
/// built from. The admin API reads these instead of resolving again, so it cannot disagree with what
/// clients were sent.
pub(super) fn served<'a>(
    snapshot: &'a Snapshot,
    id: &ServiceId,
    port: &ServicePort,
) -> Result<&'a Arc<ClusterEntry>, Status> {
    let name = cluster_name(id, port);
    snapshot.cluster(&name).ok_or_else(|| {
        Status::internal(format!(
            "snapshot {} has no cluster {name} for service {id}",
            snapshot.generation
        ))
    })
}

/// The name of the policy a service port is served under ("" if the snapshot lacks the port, which a
/// snapshot built from its own registry never does).
fn served_policy_text(snapshot: &Snapshot, id: &ServiceId, port: &ServicePort) -> String {
    served(snapshot, id, port)
        .map(|c| origin_text(&c.policy.origin))
        .unwrap_or_default()
}

/// Finds a service by `NS/NAME`, `NAME.NS`, a cluster name `NAME.NS:PORT` or a unique bare `NAME`;
/// returns it and the port the query named, if any.
pub fn find_service<'a>(
    registry: &'a Registry,
    query: &str,
) -> Result<(&'a Service, Option<u16>), String> {
    let query = query.trim();
    let (base, port) = match query.rsplit_once(':') {
        Some((base, port)) => (
            base,
            Some(
                port.parse::<u16>()
                    .map_err(|_| format!("`{query}`: `{port}` is not a port number"))?,
            ),
        ),
        None => (query, None),
    };
    let id = if let Some((ns, name)) = base.split_once('/') {
        Some(ServiceId::new(ns, name))
    } else if let Some((name, rest)) = base.split_once('.') {
        // NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local
        let ns = rest.split('.').next().unwrap_or(rest);
        Some(ServiceId::new(ns, name))
    } else {
        None
    };
    let service = match id {
        Some(id) => registry
            .services
            .get(&id)
            .ok_or_else(|| format!("no service {id}"))?,
        None => {
            let matches: Vec<&Service> = registry
                .services
                .values()
                .filter(|s| s.id.name == base)
                .collect();
            match matches.as_slice() {
                [one] => *one,
                [] => return Err(format!("no service named `{base}` in any namespace")),
                many => {
                    let names: Vec<String> = many.iter().map(|s| s.id.to_string()).collect();
                    return Err(format!(
                        "`{base}` is ambiguous: {}; name one as NAMESPACE/NAME",
                        names.join(", ")
                    ));
                }
            }
        }
    };
    Ok((service, port))
}

#[cfg(test)]
mod tests;
