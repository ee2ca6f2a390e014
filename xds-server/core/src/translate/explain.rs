//! Why a client gets the priority levels it gets, and how Envoy will split its requests across them.
//!
//! Pure, like the rest of the translator: [`explain`] is built from the same [`priorities`] plan the
//! EDS answer is built from (same levels, same priority numbers as `LocalityLbEndpoints.priority` in
//! [`load_assignment`](super::resources::load_assignment), same endpoint order within a level), and
//! [`expected_load`] reproduces Envoy's priority-load computation so the split can be predicted from
//! the health the control plane sends (the simulation is [`super::load_split`]; this module is the
//! explanation around it).
//!
//! # Locality weights (policies with `distribute`)
//!
//! Such a cluster balances by locality (`locality_weighted_lb_config`): within a priority Envoy
//! picks a locality by effective weight = `load_balancing_weight` × min(1, factor/100 × healthy /
//! total) (`LocalityWrr::effectiveLocalityWeight`, host counts as sent), then a host in it.
//! [`LocalityShare`] reports that split. Note what it implies: when a locality of a `to` pattern
//! loses hosts, its lost weight is spread over every live locality of the level in proportion to
//! their weights, not kept within its pattern; the level's own health (and so spillover to the next
//! priority) is still computed from host counts as above.

use serde::Serialize;

use crate::model::{labels, ClientKind, Health, Locality};
use crate::policy::{FailoverPolicy, HealthCheckProtocol, MtlsMode};
use crate::translate::input::{ClusterInput, SentHost};
use crate::translate::priorities::{distribute_text, priorities, LevelReason, LocalityClass};
use crate::translate::resources::{cluster_name, locality_weights};

pub use super::load_split::{expected_load, LoadSplit};

/// What one client class gets for one service port, level by level, and Envoy's expected load split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The EDS cluster, `NAME.NAMESPACE:PORT`.
    pub cluster: String,
    /// `namespace/name`.
    pub service: String,
    pub port: u16,
    /// The client's locality class (the values of the policy's keys), e.g.
    /// `region=us-east1,zone=us-east1-b,subzone=-`.
    pub class: String,
    pub overprovisioning_factor: u32,
    pub panic_threshold: u32,
    /// Priority 0 first; `levels[i].priority == i`.
    pub levels: Vec<ExplainedLevel>,
    /// Expected percent of requests per priority, indexed like `levels`. Sums to 100, or is all zero
    /// when no request can be served (`no_healthy_upstream`).
    pub load: Vec<u32>,
    /// Total panic: every level is in panic and Envoy splits by host count, ignoring health.
    pub panic: bool,
    /// Envoy will answer 503 "no healthy upstream": no endpoints, or none healthy with panic disabled.
    pub no_healthy_upstream: bool,
    /// min(100, Σ health scores). Below 100 the load is scaled up to fill 100%.
    pub normalized_total_health: u32,
    /// The kind of client this is for: Envoy's load split, or gRPC's ([`explain_grpc`]).
    pub client_kind: ClientKind,
    /// What the levels leave out: backups that cannot be used and endpoints the client cannot reach
    /// (another network without a gateway), each with the reason; then how Envoy detects failures
    /// on its own (active health checks, outlier detection off), which this prediction cannot see.
    pub notes: Vec<String>,
}

/// One priority level: why it is there, what is in it, and what Envoy will make of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedLevel {
    /// Equals `LocalityLbEndpoints.priority` of these endpoints in the EDS answer.
    pub priority: u32,
    /// Human text, e.g. "same region and zone (topology.kubernetes.io/region=us-east1,
    /// topology.kubernetes.io/zone=us-east1-b)" or "failover target region us-west1 (policy failover
    /// from us-east1)".
    pub reason: String,
    /// The policy keys, in policy order, on which these endpoints match the client, with the value.
    pub matched_labels: Vec<MatchedLabel>,
    /// Set when the level exists because of a `failover: {from, to}` rule.
    pub failover: Option<FailoverRule>,
    /// `namespace/name` of the backup service this level belongs to.
    pub backup: Option<String>,
    /// Set when the level exists because of a `distribute` rule.
    pub distribute: Option<ExplainedDistribute>,
    /// The level's localities with their weight and expected share, in the EDS answer's order.
    /// Only for a policy with `distribute` rules (the cluster balances by locality weight); empty
    /// otherwise, where Envoy balances over the level's hosts regardless of locality.
    pub localities: Vec<LocalityShare>,
    /// In the EDS answer's order: by locality, then address and port.
    pub endpoints: Vec<ExplainedEndpoint>,
    pub healthy: usize,
    pub total: usize,
    /// 100 × healthy / total.
    pub health_percent: f64,
    /// Envoy's health score: min(100, overprovisioning factor × healthy / total).
    pub health_score: u32,
    /// Expected percent of requests to this level (`Explanation::load[priority]`).
    pub load_percent: u32,
    /// This level is in panic: Envoy balances over all its endpoints, healthy or not.
    pub panic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedLabel {
    pub key: String,
    pub value: String,
    /// A pinned `failoverPriority` key (`key=value`): the value is the policy's, not the client's.
    pub pinned: bool,
}

/// The `distribute` rule a level comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedDistribute {
    /// The client locality pattern, e.g. `us-east1/*`.
    pub from: String,
    /// `(pattern, weight in percent)` in the order written.
    pub to: Vec<DistributeTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistributeTarget {
    pub pattern: String,
    pub weight: u32,
}

/// One locality of a level under locality-weighted balancing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalityShare {
    pub locality: ExplainedLocality,
    /// `LocalityLbEndpoints.load_balancing_weight` as sent.
    pub weight: u32,
    /// In a `distribute` level: the `to` pattern this locality falls under.
    pub pattern: Option<String>,
    /// Percent of the level's requests with every host healthy: weight / Σ weights of the level.
    pub share_of_level: f64,
    /// Expected percent of all requests, from the health sent: the level's load split over its
    /// localities by effective weight (weight × min(1, overprovisioning factor × healthy / total),
    /// Envoy's `effectiveLocalityWeight`); by host weight when the level has no healthy host.
    pub expected_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverRule {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedEndpoint {
    pub address: String,
    /// The target port for this service port.
    pub port: u16,
    pub locality: ExplainedLocality,
    /// As sent in EDS: `HEALTHY`, `UNHEALTHY` or `DRAINING`.
    pub health: String,
    /// Set when this is a network's gateway standing for that network's endpoints (split horizon).
    pub gateway_for: Option<String>,
    /// Load-balancing weight: the number of endpoints this host stands for (1 for an endpoint).
    pub weight: u32,
}

/// Envoy's `Locality` field names; empty means unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedLocality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// Explains what a client of `class` gets for `service`'s `port` under `policy`: exactly the levels the
/// translator sends, each with the rule that put it there, plus the load split Envoy will compute from
/// the health the control plane sends.
pub fn explain(
    class: &LocalityClass,
    input: &ClusterInput,
    policy: &FailoverPolicy,
) -> Explanation {
    let plan = priorities(class, input, policy);
    let client_network = class.value(labels::NETWORK);
    // What Envoy counts is hosts as sent: a gateway standing for three endpoints is one host.
    let hosts: Vec<Vec<(&Locality, SentHost)>> = plan
        .levels
        .iter()
        .map(|level| {
            input
                .hosts(level, client_network)
                .into_iter()
                .flat_map(|(locality, hosts)| hosts.into_iter().map(move |h| (locality, h)))
                .collect()
        })
        .collect();
    let counts: Vec<(usize, usize)> = hosts
        .iter()
        .map(|level| {
            let healthy = level
                .iter()
                .filter(|(_, h)| h.health == Health::Healthy)
                .count();
            (healthy, level.len())
        })
        .collect();
    let split = expected_load(
        &counts,
        policy.overprovisioning_factor,
        policy.panic_threshold,
    );
    let weighted = !policy.distribute.is_empty();
    let levels = plan
        .levels
        .iter()
        .zip(hosts)
        .enumerate()
        .map(|(i, (level, hosts))| {
            let (healthy, total) = counts[i];
            let localities = if weighted {
                locality_shares(
                    level,
                    &input.hosts(level, client_network),
                    split.load[i],
                    policy.overprovisioning_factor,
                )
            } else {
                Vec::new()
            };
            ExplainedLevel {
                priority: level.priority,
                reason: reason_text(&level.reason, class, policy),
                matched_labels: level
                    .reason
                    .matched_keys
                    .iter()
                    .map(|key| MatchedLabel {
                        key: key.label.clone(),
                        value: key
                            .wanted(class.value(&key.label))
                            .unwrap_or_default()
                            .to_string(),
                        pinned: key.pinned.is_some(),
                    })
                    .collect(),
                distribute: level
                    .reason
                    .distribute
                    .as_ref()
                    .map(|rule| ExplainedDistribute {
                        from: rule.from.to_string(),
                        to: rule
                            .to
                            .iter()
                            .map(|(p, w)| DistributeTarget {
                                pattern: p.to_string(),
                                weight: *w,
                            })
                            .collect(),
                    }),
                localities,
                failover: level
                    .reason
                    .failover_rule
                    .as_ref()
                    .map(|(from, to)| FailoverRule {
                        from: from.clone(),
                        to: to.clone(),
                    }),
                backup: level.reason.backup.as_ref().map(|(_, id)| id.to_string()),
                endpoints: hosts
                    .into_iter()
                    .map(|(locality, host)| ExplainedEndpoint {
                        address: host.address.to_string(),
                        port: host.port,
                        locality: ExplainedLocality {
                            region: locality.region.clone(),
                            zone: locality.zone.clone(),
                            sub_zone: locality.subzone.clone(),
                        },
                        health: health_name(host.health).to_string(),
                        gateway_for: host.gateway_for,
                        weight: host.behind,
                    })
                    .collect(),
                healthy,
                total,
                health_percent: if total == 0 {
                    0.0
                } else {
                    100.0 * healthy as f64 / total as f64
                },
                health_score: split.health[i],
                load_percent: split.load[i],
                panic: split.panic[i],
            }
        })
        .collect();
    let mut notes: Vec<String> = input
        .skipped
        .iter()
        .map(|s| {
            format!(
                "backup {}: {} is not used: {}",
                s.position, s.service, s.reason
            )
        })
        .collect();
    notes.extend(plan.unreachable.iter().map(|&i| {
        let ep = input.endpoint(i);
        format!(
            "{}:{} is left out: it is on network {}, which has no gateway, and the client is on \
             network {}",
            ep.address,
            ep.target_port(&input.port),
            ep.label(labels::NETWORK).unwrap_or_default(),
            client_network.unwrap_or_default()
        )
    }));
    notes.extend(input.ejected.iter().map(|locality| {
        format!(
            "locality {locality} is ejected by the fleet verdict (fleetFailover): the load reports \
             of the service's clients show it failing, so its endpoints are sent UNHEALTHY to every \
             client"
        )
    }));
    notes.extend(failure_detection_notes(policy));
    notes.extend(secure_naming_note(input, policy));
    Explanation {
        cluster: cluster_name(&input.service.id, &input.port),
        service: input.service.id.to_string(),
        port: input.port.port,
        class: class.to_string(),
        overprovisioning_factor: policy.overprovisioning_factor,
        panic_threshold: policy.panic_threshold,
        levels,
        load: split.load,
        panic: split.total_panic,
        no_healthy_upstream: split.no_healthy_upstream,
        normalized_total_health: split.normalized_total_health,
        client_kind: ClientKind::Envoy,
        notes,
    }
}

/// What gRPC does instead of Envoy's spillover, in `xdsctl explain` for a gRPC client.
pub const GRPC_FAILOVER_NOTE: &str = "gRPC client: every call goes to one priority, the first \
     with a healthy endpoint; gRPC fails over a whole priority at once, when it is in \
     TRANSIENT_FAILURE (every endpoint unhealthy, unreachable or ejected) or after 10 s CONNECTING, \
     and ignores the overprovisioning factor and the panic threshold (Envoy's percentages do not apply)";

/// [`explain`] for a proxyless gRPC client of `class`: the same levels (gRPC is sent the same
/// plan), but gRPC's load split: all of it on the first level with a healthy endpoint, none when
/// there is none (calls fail: gRPC has no panic mode). Failure detection notes are gRPC's.
pub fn explain_grpc(
    class: &LocalityClass,
    input: &ClusterInput,
    policy: &FailoverPolicy,
) -> Explanation {
    let mut e = explain(class, input, policy);
    let serving = e.levels.iter().position(|l| l.healthy > 0);
    for (i, level) in e.levels.iter_mut().enumerate() {
        level.panic = false;
        level.health_score = if level.healthy > 0 { 100 } else { 0 };
        level.load_percent = if Some(i) == serving { 100 } else { 0 };
        for share in &mut level.localities {
            share.expected_percent = if Some(i) == serving {
                share.share_of_level
            } else {
                0.0
            };
        }
    }
    e.load = e.levels.iter().map(|l| l.load_percent).collect();
    e.panic = false;
    e.no_healthy_upstream = serving.is_none();
    e.normalized_total_health = if serving.is_some() { 100 } else { 0 };
    e.client_kind = ClientKind::Grpc;
    let envoy_notes = failure_detection_notes(policy);
    e.notes.retain(|n| !envoy_notes.contains(n));
    e.notes.insert(0, GRPC_FAILOVER_NOTE.to_string());
    if policy.health_check.is_some() {
        e.notes.push(
            "active health checks are Envoy's: a gRPC client does not probe, only the health \
             sent in EDS and outlier detection move its calls"
                .to_string(),
        );
    }
    if policy.mtls == MtlsMode::Strict {
        e.notes.push(
            "mtls: STRICT is Envoy's: a gRPC client is sent the cluster without TLS (gRPC's xDS \
             credentials need certificate providers this server does not serve)"
                .to_string(),
        );
    }
    e.notes.push(match &policy.outlier_detection {
        Some(od) => format!(
            "outlier detection for gRPC is by failure percentage: a host serving at least {} \
             calls in an interval ({:?}) with more than {}% failed is ejected at the interval's end",
            super::grpc::outlier_detection(od)
                .failure_percentage_request_volume
                .map_or(1, |v| v.value),
            od.interval,
            super::grpc::FAILURE_PERCENTAGE_THRESHOLD
        ),
        None => "outlier detection is disabled: failing calls do not eject endpoints".to_string(),
    });
    e
}

/// Under `mtls: STRICT`, which servers the client accepts (secure naming), so an unpinned service
/// shows as such next to its priorities.
fn secure_naming_note(input: &ClusterInput, policy: &FailoverPolicy) -> Option<String> {
    if policy.mtls != MtlsMode::Strict {
        return None;
    }
    let peers = input.peer_identities();
    Some(if peers.is_empty() {
        "mTLS: any certificate of the trust bundle is accepted (no identity known for the service \
         or one of its backups)"
            .to_string()
    } else {
        let ids: Vec<&str> = peers.iter().map(|id| id.as_str()).collect();
        format!("mTLS: servers must present {}", ids.join(" or "))
    })
}

/// What Envoy does about failures by itself, beyond the health the control plane sends.
fn failure_detection_notes(policy: &FailoverPolicy) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(hc) = &policy.health_check {
        let what = match &hc.protocol {
            HealthCheckProtocol::Http { path, host } => match host {
                Some(host) => format!("HTTP GET {path} (Host {host})"),
                None => format!("HTTP GET {path}"),
            },
            HealthCheckProtocol::Tcp => "TCP connect".to_string(),
            HealthCheckProtocol::Grpc { service } => match service {
                Some(service) => format!("gRPC health check of {service}"),
                None => "gRPC health check".to_string(),
            },
        };
        notes.push(format!(
            "active health checks: {what} every {:?} (timeout {:?}); {} failures mark an endpoint \
             unhealthy, {} successes healthy again; Envoy applies them itself, so this prediction \
             (from the health sent in EDS) does not show them",
            hc.interval, hc.timeout, hc.unhealthy_threshold, hc.healthy_threshold
        ));
    }
    if policy.outlier_detection.is_none() {
        notes.push(
            "outlier detection is disabled: failing requests do not eject endpoints".to_string(),
        );
    }
    notes
}

/// Per-locality weights and shares of one level (locality-weighted balancing), `load` being the
/// level's percent of all requests. Envoy picks a locality by effective weight = weight ×
/// min(1, factor/100 × healthy / total) (`LocalityWrr::effectiveLocalityWeight`), then a host in it.
fn locality_shares(
    level: &crate::translate::priorities::PriorityLevel,
    groups: &[(&Locality, Vec<SentHost>)],
    load: u32,
    overprovisioning_factor: u32,
) -> Vec<LocalityShare> {
    let weights = locality_weights(level, groups);
    let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let effective: Vec<f64> = groups
        .iter()
        .zip(&weights)
        .map(|((_, hosts), &w)| {
            let healthy = hosts.iter().filter(|h| h.health == Health::Healthy).count();
            let availability =
                f64::from(overprovisioning_factor) / 100.0 * healthy as f64 / hosts.len() as f64;
            f64::from(w) * availability.min(1.0)
        })
        .collect();
    let effective_sum: f64 = effective.iter().sum();
    // No healthy host in the level: Envoy balances over all its hosts by host weight.
    let host_weight: Vec<f64> = groups
        .iter()
        .map(|(_, hosts)| hosts.iter().map(|h| f64::from(h.behind)).sum())
        .collect();
    let host_weight_sum: f64 = host_weight.iter().sum();
    groups
        .iter()
        .enumerate()
        .map(|(i, (locality, _))| {
            let fraction = if effective_sum > 0.0 {
                effective[i] / effective_sum
            } else {
                host_weight[i] / host_weight_sum
            };
            let pattern = level.reason.distribute.as_ref().and_then(|rule| {
                rule.to
                    .iter()
                    .find(|(p, _)| p.matches(locality.parts()))
                    .map(|(p, _)| p.to_string())
            });
            LocalityShare {
                locality: ExplainedLocality {
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.subzone.clone(),
                },
                weight: weights[i],
                pattern,
                share_of_level: 100.0 * f64::from(weights[i]) / sum,
                expected_percent: f64::from(load) * fraction,
            }
        })
        .collect()
}

/// The EDS health name Envoy shows for an endpoint.
fn health_name(health: Health) -> &'static str {
    match health {
        Health::Healthy => "HEALTHY",
        Health::Unhealthy => "UNHEALTHY",
        Health::Draining => "DRAINING",
    }
}

/// `topology.kubernetes.io/zone` → `zone`; other keys stay as they are.
fn short_key(key: &str) -> &str {
    match key {
        labels::REGION => "region",
        labels::ZONE => "zone",
        labels::SUBZONE => "subzone",
        _ => key,
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The human reason for a level, from the plan's [`LevelReason`] and the client's values.
fn reason_text(reason: &LevelReason, class: &LocalityClass, policy: &FailoverPolicy) -> String {
    let text = locality_reason_text(reason, class, policy);
    match &reason.backup {
        Some((position, service)) => format!("backup {position}: {service}; {text}"),
        None => text,
    }
}

/// Why endpoints sit where they do within their block (the primary's, or one backup's).
fn locality_reason_text(
    reason: &LevelReason,
    class: &LocalityClass,
    policy: &FailoverPolicy,
) -> String {
    let client_region = class.value(labels::REGION).unwrap_or("");
    let targets: Vec<&str> = if client_region.is_empty() {
        Vec::new()
    } else {
        policy.failover_targets(client_region).collect()
    };
    let cluster_note = reason.own_cluster.map(|own| {
        let client = format!(
            "{}={}",
            labels::CLUSTER,
            class.value(labels::CLUSTER).unwrap_or_default()
        );
        if own {
            format!("same cluster ({client})")
        } else {
            format!("another cluster than the client's ({client})")
        }
    });
    if let Some(rule) = &reason.distribute {
        return format!(
            "distribute rule {} (the client's locality matches {}; localities weighted by \
             pattern, every other endpoint fails over below)",
            distribute_text(rule),
            rule.from
        );
    }
    let mut parts = Vec::new();
    let compared: Vec<&str> = reason
        .matched_keys
        .iter()
        .filter(|k| k.pinned.is_none())
        .map(|k| k.label.as_str())
        .collect();
    if !compared.is_empty() {
        let names: Vec<&str> = compared.iter().map(|k| short_key(k)).collect();
        let values: Vec<String> = compared
            .iter()
            .map(|k| format!("{k}={}", class.value(k).unwrap_or_default()))
            .collect();
        parts.push(format!("same {} ({})", join_and(&names), values.join(", ")));
    }
    for key in reason.matched_keys.iter().filter(|k| k.pinned.is_some()) {
        parts.push(format!("{key} (pinned)"));
    }
    if let Some((from, to)) = &reason.failover_rule {
        let mut text = format!("failover target region {to} (policy failover from {from}");
        if targets.len() > 1 {
            let rank = targets.iter().position(|t| t == to).map_or(0, |p| p + 1);
            text.push_str(&format!(", {} of {} targets", ordinal(rank), targets.len()));
        }
        text.push(')');
        parts.push(text);
    }
    if parts.is_empty() {
        let first = policy.failover_priority.first();
        let first_label = first.map(|k| k.label.as_str()).unwrap_or(labels::REGION);
        let mut why = match first.and_then(|k| k.pinned.as_ref()) {
            Some(value) => vec![format!("not {first_label}={value} (pinned)")],
            None if class.value(first_label).is_none() => vec![format!(
                "the client has no {first_label} label, so no locality can match"
            )],
            None => vec![format!(
                "not the same {} as the client",
                short_key(first_label)
            )],
        };
        if !targets.is_empty() {
            why.push(format!("not a failover target region of {client_region}"));
        }
        let mut text = format!("remaining endpoints ({})", why.join(", "));
        if let Some(note) = cluster_note {
            text.push_str(&format!("; {note}"));
        }
        return text;
    }
    let matched_region = reason
        .matched_keys
        .iter()
        .any(|k| k.label == labels::REGION && k.pinned.is_none());
    if reason.failover_rule.is_none() && !targets.is_empty() && !matched_region {
        parts.push(format!(
            "not in a failover target region of {client_region}"
        ));
    }
    parts.extend(cluster_note);
    parts.join("; ")
}

#[cfg(test)]
mod tests;
