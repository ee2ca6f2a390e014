//! ExplainPriorities: why a client (a connected node, or a locality and labels given by hand) gets
//! each priority level of a service's ports, and the load Envoy would send to each, converted from
//! xds-core's `explain`.

use std::time::{Instant, SystemTime};

use tonic::Status;

use super::convert::{client_kind_pb, locality_pb, origin_text, unix_ms};
use super::services::{find_service, fleet_failover_pb, served};
use super::{current, pb};
use crate::grpc::Snapshots;
use crate::registry::ClientRegistry;
use xds_core::model::{ClientInfo, ClientKind, Locality};
use xds_core::observed::fleet::ClusterVerdict;
use xds_core::snapshot::Snapshot;
use xds_core::translate::explain::{explain, explain_grpc, ExplainedLocality, Explanation};
use xds_core::translate::LocalityClass;

/// ExplainPrioritiesRequest → its answer: the port and the client it names, then the explanation
/// from the current snapshot.
pub(super) fn explain_request(
    registry: &ClientRegistry,
    snapshots: &Snapshots,
    fleet: &[ClusterVerdict],
    req: pb::ExplainPrioritiesRequest,
) -> Result<pb::ExplainPrioritiesResponse, Status> {
    let port = match req.port {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| Status::invalid_argument(format!("port {p} is out of range")))?,
        ),
    };
    let (client, text) = requested_client(registry, req.client)?;
    let snapshot = current(snapshots)?;
    let mut answer = explain_for(&snapshot, &req.service, port, &client, text)?;
    with_fleet_verdicts(&mut answer, fleet, Instant::now(), SystemTime::now());
    Ok(answer)
}

/// Adds to each explanation the fleet verdict on its cluster, if fleet failover is on for it; the
/// verdict's instants are shown as wall-clock times, `now` and `wall_now` being the same moment.
pub fn with_fleet_verdicts(
    answer: &mut pb::ExplainPrioritiesResponse,
    fleet: &[ClusterVerdict],
    now: Instant,
    wall_now: SystemTime,
) {
    let wall = |at: Option<Instant>| {
        at.map_or(0, |at| {
            let wall_at = if at >= now {
                wall_now + (at - now)
            } else {
                wall_now - (now - at)
            };
            unix_ms(wall_at)
        })
    };
    for e in &mut answer.explanations {
        let Some(v) = fleet.iter().find(|v| v.cluster == e.cluster) else {
            continue;
        };
        e.fleet = Some(pb::FleetVerdict {
            settings: Some(fleet_failover_pb(&v.settings)),
            localities: v
                .localities
                .iter()
                .map(|l| pb::FleetLocality {
                    locality: Some(locality_pb(&l.locality)),
                    state: l.state.as_str().to_string(),
                    reporters: l.evidence.reporters,
                    requests: l.evidence.requests,
                    errors: l.evidence.errors,
                    error_ratio: l.evidence.error_ratio(),
                    since_unix_ms: wall(l.since),
                    until_unix_ms: wall(l.until),
                    probation_until_unix_ms: wall(l.probation_until),
                    ejections: l.ejections,
                })
                .collect(),
        });
    }
}

/// The client a request names, and how the answer describes it: a connected node by its id, or a
/// locality (and labels) given by hand.
fn requested_client(
    registry: &ClientRegistry,
    client: Option<pb::explain_priorities_request::Client>,
) -> Result<(ClientInfo, String), Status> {
    match client {
        Some(pb::explain_priorities_request::Client::NodeId(node)) => {
            let client = registry.client_info(&node).ok_or_else(|| {
                Status::not_found(format!("no connected client with node id `{node}`"))
            })?;
            let text = match client.kind {
                ClientKind::Grpc => format!("node {node} ({}, gRPC client)", client.locality),
                ClientKind::Envoy => format!("node {node} ({})", client.locality),
            };
            Ok((client, text))
        }
        Some(pb::explain_priorities_request::Client::Manual(m)) => {
            let l = m.locality.unwrap_or_default();
            let locality = Locality::new(&l.region, &l.zone, &l.sub_zone);
            let mut text = format!("locality {locality}");
            if !m.labels.is_empty() {
                let labels: Vec<String> =
                    m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                text.push_str(&format!(" labels {}", labels.join(",")));
            }
            let kind = match pb::ClientKind::try_from(m.kind) {
                Ok(pb::ClientKind::Grpc) => {
                    text.push_str(" (gRPC client)");
                    ClientKind::Grpc
                }
                _ => ClientKind::Envoy,
            };
            let client = ClientInfo {
                locality,
                labels: m.labels,
                kind,
                ..ClientInfo::default()
            };
            Ok((client, text))
        }
        None => Err(Status::invalid_argument(
            "name a client: a node id, or a locality (and labels)",
        )),
    }
}

/// The explain answer for a resolved client (pure apart from reading the snapshot).
pub fn explain_for(
    snapshot: &Snapshot,
    service_query: &str,
    port: Option<u16>,
    client: &ClientInfo,
    client_text: String,
) -> Result<pb::ExplainPrioritiesResponse, Status> {
    let (service, named_port) =
        find_service(&snapshot.registry, service_query).map_err(Status::not_found)?;
    let wanted = port.or(named_port);
    let ports: Vec<_> = service
        .ports
        .iter()
        .filter(|p| wanted.is_none_or(|w| w == p.port))
        .collect();
    if ports.is_empty() {
        let have: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
        return Err(Status::not_found(format!(
            "service {} has no port {}; its ports: {}",
            service.id,
            wanted.unwrap_or_default(),
            have.join(", ")
        )));
    }
    let explanations = ports
        .into_iter()
        .map(|p| {
            // Each port under its own policy (a policy may name one port).
            let served = served(snapshot, &service.id, p)?;
            let policy = &served.policy.policy;
            let class = LocalityClass::of(client, policy);
            let explanation = match client.kind {
                ClientKind::Envoy => explain(&class, &served.input, policy),
                ClientKind::Grpc => explain_grpc(&class, &served.input, policy),
            };
            Ok(pb::Explanation {
                policy: origin_text(&served.policy.origin),
                ..explanation_pb(explanation)
            })
        })
        .collect::<Result<Vec<pb::Explanation>, Status>>()?;
    Ok(pb::ExplainPrioritiesResponse {
        client: client_text,
        // The first port's; each explanation names its own.
        policy: explanations
            .first()
            .map(|e| e.policy.clone())
            .unwrap_or_default(),
        explanations,
    })
}

fn explanation_pb(e: Explanation) -> pb::Explanation {
    pb::Explanation {
        cluster: e.cluster,
        service: e.service,
        port: u32::from(e.port),
        locality_class: e.class,
        overprovisioning_factor: e.overprovisioning_factor,
        panic_threshold: e.panic_threshold,
        client_kind: client_kind_pb(e.client_kind) as i32,
        levels: e
            .levels
            .into_iter()
            .map(|l| pb::Level {
                priority: l.priority,
                reason: l.reason,
                matched_labels: l
                    .matched_labels
                    .into_iter()
                    .map(|m| pb::MatchedLabel {
                        key: m.key,
                        value: m.value,
                        pinned: m.pinned,
                    })
                    .collect(),
                failover: l.failover.map(|f| pb::FailoverRule {
                    from: f.from,
                    to: f.to,
                }),
                backup: l.backup.unwrap_or_default(),
                distribute: l.distribute.map(|d| pb::DistributeRule {
                    from: d.from,
                    to: d
                        .to
                        .into_iter()
                        .map(|t| pb::DistributeTarget {
                            locality: t.pattern,
                            weight: t.weight,
                        })
                        .collect(),
                }),
                localities: l
                    .localities
                    .into_iter()
                    .map(|s| pb::LocalityShare {
                        locality: Some(explained_locality_pb(s.locality)),
                        weight: s.weight,
                        pattern: s.pattern.unwrap_or_default(),
                        share_of_level: s.share_of_level,
                        expected_percent: s.expected_percent,
                    })
                    .collect(),
                endpoints: l
                    .endpoints
                    .into_iter()
                    .map(|ep| pb::LevelEndpoint {
                        address: ep.address,
                        port: u32::from(ep.port),
                        locality: Some(explained_locality_pb(ep.locality)),
                        health: ep.health,
                        gateway_for: ep.gateway_for.unwrap_or_default(),
                        weight: ep.weight,
                    })
                    .collect(),
                healthy: l.healthy as u32,
                total: l.total as u32,
                health_percent: l.health_percent,
                health_score: l.health_score,
                load_percent: l.load_percent,
                panic: l.panic,
            })
            .collect(),
        load: e.load,
        panic: e.panic,
        no_healthy_upstream: e.no_healthy_upstream,
        normalized_total_health: e.normalized_total_health,
        notes: e.notes,
        policy: String::new(),
        fleet: None,
    }
}

fn explained_locality_pb(l: ExplainedLocality) -> pb::Locality {
    pb::Locality {
        region: l.region,
        zone: l.zone,
        sub_zone: l.sub_zone,
    }
}

#[cfg(test)]
mod tests;
