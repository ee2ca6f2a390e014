//! Why a client gets the priority levels it gets, and how Envoy will split its requests across them.
//!
//! Pure, like the rest of the translator: [`explain`] is built from the same [`priorities`] plan the
//! EDS answer is built from (same levels, same priority numbers as `LocalityLbEndpoints.priority` in
//! [`load_assignment`](super::resources::load_assignment), same endpoint order within a level), and
//! [`expected_load`] reproduces Envoy's priority-load computation so the split can be predicted from
//! the health the control plane sends.
//!
//! # Envoy's algorithm, as implemented by [`expected_load`]
//!
//! Source: `LoadBalancerBase::recalculatePerPriorityState`, `distributeLoad`,
//! `recalculatePerPriorityPanic`, `isHostSetInPanic` and `recalculateLoadInTotalPanic` in Envoy's
//! `source/extensions/load_balancing_policies/common/load_balancer_impl.cc` (formerly
//! `source/common/upstream/load_balancer_impl.cc`); documented in the architecture overview, "Priority
//! levels" and "Panic threshold". Everything is integer percent:
//!
//! 1. health(P) = min(100, overprovisioning_factor × healthy(P) / total(P)) (integer division; factor in
//!    percent, 140 = 1.4; a level without hosts has health 0).
//! 2. normalized total health = min(100, Σ health(P)).
//! 3. If it is > 0: walking the levels in order with 100 to give, load(P) = min(left, health(P) × 100 /
//!    normalized total health); what is left after the last level (rounding) goes to the first level
//!    with health > 0.
//! 4. Panic (threshold = min(100, healthy_panic_threshold)):
//!    * threshold 0 and normalized total health 0: Envoy sets load(P0) = 100 as a placeholder; nothing
//!      is in panic, so requests find no healthy host in P0 and fail with "no healthy upstream" (unless
//!      P0 still has a healthy host whose health score rounded down to 0).
//!    * otherwise a level is in panic iff normalized total health < 100 and 100 × healthy / total <
//!      threshold (P0 with no hosts counts as 0% healthy). A level in panic balances over all its hosts,
//!      healthy or not.
//!    * if every level is in panic ("total panic"), the load is split by host count instead: load(P) =
//!      100 × total(P) / Σ total, remainder to the first non-empty level.
//!
//! Notes. The documentation's tables round differently in two rows (docs: 25%/25%/20% healthy →
//! 36/36/28 and, panic table, 5%/65% → 7/93); Envoy's code, and this module, give 37/35/28 and 8/92
//! because the rounding remainder goes to the first level with health. DEGRADED hosts are left out
//! (Envoy gives them load only after all healthy capacity; this server never sends DEGRADED).
//! UNHEALTHY and DRAINING hosts count as not healthy, as in Envoy. Outlier ejections and active health
//! checks happen inside Envoy: the control plane's prediction assumes none; feed Envoy's own view of
//! host health into [`expected_load`] to account for them. `weighted_priority_health` and excluded
//! hosts are not used by this server's clusters.
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

use crate::model::{labels, Health, Locality};
use crate::policy::{FailoverPolicy, HealthCheckProtocol};
use crate::translate::input::{ClusterInput, SentHost};
use crate::translate::priorities::{distribute_text, priorities, LevelReason, LocalityClass};
use crate::translate::resources::{cluster_name, locality_weights};

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

/// Envoy's priority load for a set of levels. See the module documentation for the algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadSplit {
    /// Health score per level: min(100, overprovisioning factor × healthy / total).
    pub health: Vec<u32>,
    /// min(100, Σ health).
    pub normalized_total_health: u32,
    /// Expected percent of requests per level. Sums to 100, or is all zero with `no_healthy_upstream`.
    pub load: Vec<u32>,
    /// Per level: in panic (balances over all its hosts, healthy or not).
    pub panic: Vec<bool>,
    /// Every level in panic: load split by host count.
    pub total_panic: bool,
    /// Requests fail with 503 "no healthy upstream": no hosts at all, or nothing healthy where Envoy
    /// looks with panic mode disabled.
    pub no_healthy_upstream: bool,
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
    notes.extend(failure_detection_notes(policy));
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
        notes,
    }
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

/// Envoy's expected per-priority load for levels given as `(healthy, total)` host counts, priority 0
/// first, with the cluster's overprovisioning factor (percent, 140 = 1.4) and healthy panic threshold
/// (percent; 0 disables panic). See the module documentation for the algorithm and its source.
pub fn expected_load(
    levels: &[(usize, usize)],
    overprovisioning_factor: u32,
    panic_threshold: u32,
) -> LoadSplit {
    let n = levels.len();
    let factor = u64::from(overprovisioning_factor);
    let health: Vec<u32> = levels
        .iter()
        .map(|&(healthy, total)| {
            if total == 0 {
                0
            } else {
                (factor * healthy as u64 / total as u64).min(100) as u32
            }
        })
        .collect();
    let normalized = health.iter().map(|&h| u64::from(h)).sum::<u64>().min(100) as u32;
    let mut split = LoadSplit {
        health,
        normalized_total_health: normalized,
        load: vec![0; n],
        panic: vec![false; n],
        total_panic: false,
        no_healthy_upstream: false,
    };
    if n == 0 {
        split.no_healthy_upstream = true;
        return split;
    }

    // recalculatePerPriorityState / distributeLoad; nothing to distribute when normalized is 0.
    let mut left = 100u32;
    for (load, &h) in split.load.iter_mut().zip(&split.health) {
        *load = left.min((h * 100).checked_div(normalized).unwrap_or(0));
        left -= *load;
    }
    // Rounding: to the first level with health (none when normalized is 0; panic handles that).
    if let Some(first) = split.health.iter().position(|&h| h > 0) {
        split.load[first] += left;
    }

    // recalculatePerPriorityPanic.
    let threshold = panic_threshold.min(100);
    if threshold == 0 && normalized == 0 {
        // Envoy puts 100 on P0 so the loads sum to 100, and no level is in panic: requests go to P0 and
        // are served only if P0 has a healthy host (one whose health score rounded down to 0).
        if levels[0].0 > 0 {
            split.load[0] = 100;
        } else {
            split.no_healthy_upstream = true;
        }
        return split;
    }
    for (panic, &(healthy, total)) in split.panic.iter_mut().zip(levels) {
        // isHostSetInPanic: 100 × healthy / total < threshold, exactly (no overprovisioning here).
        *panic = normalized != 100 && (healthy as u64) * 100 < u64::from(threshold) * total as u64;
    }
    if split.panic.iter().all(|&p| p) {
        // recalculateLoadInTotalPanic: by host count, health ignored.
        split.total_panic = true;
        let hosts: usize = levels.iter().map(|&(_, total)| total).sum();
        if hosts == 0 {
            split.load = vec![0; n];
            split.no_healthy_upstream = true;
            return split;
        }
        let mut left = 100u32;
        for (load, &(_, total)) in split.load.iter_mut().zip(levels) {
            *load = (100 * total / hosts) as u32;
            left -= *load;
        }
        if let Some(first) = levels.iter().position(|&(_, total)| total > 0) {
            split.load[first] += left;
        }
    }
    split
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
mod tests {
    use super::*;
    use crate::model::{ClientInfo, Endpoint, Service, ServiceId, ServicePort};
    use crate::policy::RegionFailover;
    use crate::translate::resources::load_assignment;
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    use std::collections::BTreeMap;

    // ---- expected_load ----

    /// (what, levels as (healthy, total), expected load, expected per-level panic).
    type Case = (
        &'static str,
        &'static [(usize, usize)],
        &'static [u32],
        &'static [bool],
    );

    fn check(factor: u32, threshold: u32, cases: &[Case]) {
        for (what, levels, load, panic) in cases {
            let got = expected_load(levels, factor, threshold);
            assert_eq!(&got.load[..], &load[..], "{what}: load of {levels:?}");
            assert_eq!(&got.panic[..], &panic[..], "{what}: panic of {levels:?}");
            let sum: u32 = got.load.iter().sum();
            let want = if got.no_healthy_upstream { 0 } else { 100 };
            assert_eq!(sum, want, "{what}: loads sum");
        }
    }

    const F2: &[bool] = &[false, false];
    const T2: &[bool] = &[true, true];
    const F3: &[bool] = &[false, false, false];
    const T3: &[bool] = &[true, true, true];

    /// "Priority levels" in Envoy's architecture overview; hosts chosen so the healthy percentage is the
    /// table's (panic threshold 0, as this server's default policy sets it).
    #[test]
    #[rustfmt::skip]
    fn docs_priority_levels_tables() {
        check(140, 0, &[
            ("P0 100%", &[(100, 100), (10, 10)], &[100, 0], F2),
            ("P0 72%", &[(72, 100), (10, 10)], &[100, 0], F2),
            ("P0 71%", &[(71, 100), (10, 10)], &[99, 1], F2),
            ("P0 50%", &[(5, 10), (10, 10)], &[70, 30], F2),
            ("P0 25%", &[(1, 4), (10, 10)], &[35, 65], F2),
            ("P0 0%", &[(0, 4), (10, 10)], &[0, 100], F2),
            // Both levels partly healthy.
            ("71/71", &[(71, 100), (71, 100)], &[99, 1], F2),
            ("50/50", &[(1, 2), (1, 2)], &[70, 30], F2),
            ("25/100", &[(1, 4), (2, 2)], &[35, 65], F2),
            // Normalisation: health 35 + 35 = 70 < 100 is scaled up to 100.
            ("25/25", &[(1, 4), (1, 4)], &[50, 50], F2),
            // Three levels.
            ("100/100/100", &[(1, 1), (1, 1), (1, 1)], &[100, 0, 0], F3),
            ("50/50/100", &[(1, 2), (1, 2), (1, 1)], &[70, 30, 0], F3),
            ("25/25/100", &[(1, 4), (1, 4), (1, 1)], &[35, 35, 30], F3),
            ("0/20/100", &[(0, 5), (1, 5), (1, 1)], &[0, 28, 72], F3),
            // The docs' table says 36/36/28; Envoy's integer code gives the rounding remainder (2)
            // to the first level with health: 35×100/98 = 35, 35, 28 → 98, +2 to P0.
            ("25/25/20", &[(1, 4), (1, 4), (1, 5)], &[37, 35, 28], F3),
        ]);
    }

    /// Envoy's own unit tests (`LoadBalancerBaseTest` GentleFailover, GentleFailoverWithExtraLevels,
    /// PrioritySelection, OverProvisioningFactor in
    /// test/extensions/load_balancing_policies/common/load_balancer_impl_base_test.cc), which run with
    /// the default panic threshold 50.
    #[test]
    #[rustfmt::skip]
    fn envoy_unit_test_vectors_with_panic_threshold_50() {
        check(140, 50, &[
            ("healthy", &[(1, 1), (1, 1)], &[100, 0], F2),
            ("half", &[(1, 2), (1, 2)], &[70, 30], F2),
            // P0 below the threshold, but total health is 100: no panic.
            ("P0 25%", &[(1, 4), (2, 2)], &[35, 65], F2),
            // Total health 70 < 100, both below 50%: total panic, split by host count.
            ("25/25", &[(1, 4), (1, 4)], &[50, 50], T2),
            ("3 × 25%", &[(1, 4), (1, 4), (1, 4)], &[35, 35, 30], F3),
            ("3 × 20%", &[(1, 5), (1, 5), (1, 5)], &[34, 33, 33], T3),
            ("P2 only, 100%", &[(0, 5), (0, 5), (5, 5)], &[0, 0, 100], F3),
            ("P2 only, 80%", &[(0, 5), (0, 5), (4, 5)], &[0, 0, 100], F3),
            ("P2 only, 40%", &[(0, 5), (0, 5), (2, 5)], &[34, 33, 33], T3),
            ("all down 5/3/2", &[(0, 5), (0, 3), (0, 2)], &[50, 30, 20], T3),
            ("total panic rounding", &[(0, 5), (2, 6), (1, 3)], &[37, 42, 21], T3),
            ("1 vs 1 down", &[(0, 1), (0, 1)], &[50, 50], T2),
            ("1 vs 2 down", &[(0, 1), (0, 2)], &[34, 66], T2),
            ("P2 healthy", &[(0, 1), (0, 2), (1, 1)], &[0, 0, 100], F3),
        ]);
        check(100, 50, &[("factor 100", &[(2, 4), (2, 4)], &[50, 50], F2)]);
    }

    /// "Panic threshold" in the architecture overview: a level is in panic only while the normalized
    /// total health is below 100, and the split stays health-based unless every level is in panic.
    #[test]
    #[rustfmt::skip]
    fn docs_panic_threshold_table() {
        check(140, 50, &[
            ("P1 healthy, P0 25%", &[(1, 4), (1, 1)], &[35, 65], F2),
            ("P1 healthy, P0 0%", &[(0, 4), (1, 1)], &[0, 100], F2),
            // Docs: 7/93. Health 7 + 91 = 98 → 7, 92, remainder 1 to P0 → 8/92. Only P0 in panic.
            ("5%/65%", &[(5, 100), (65, 100)], &[8, 92], &[true, false]),
        ]);
    }

    #[test]
    fn nothing_healthy() {
        // Panic disabled (this server's default): nothing can be served.
        let s = expected_load(&[(0, 3), (0, 3), (0, 2)], 140, 0);
        assert_eq!(s.load, vec![0, 0, 0]);
        assert!(s.no_healthy_upstream && !s.total_panic);
        assert_eq!(s.panic, vec![false; 3]);
        assert_eq!(s.normalized_total_health, 0);
        // Panic enabled: total panic, by host count.
        let s = expected_load(&[(0, 3), (0, 3), (0, 2)], 140, 50);
        assert_eq!(s.load, vec![38, 37, 25]);
        assert!(s.total_panic && !s.no_healthy_upstream);
        // No levels at all.
        let s = expected_load(&[], 140, 0);
        assert!(s.load.is_empty() && s.no_healthy_upstream);
        // A healthy P0 host whose health score rounds down to 0 still gets P0's placeholder 100%.
        let s = expected_load(&[(1, 200), (0, 1)], 140, 0);
        assert_eq!(s.health, vec![0, 0]);
        assert_eq!(s.load, vec![100, 0]);
        assert!(!s.no_healthy_upstream);
    }

    #[test]
    fn health_scores_and_caps() {
        let s = expected_load(&[(4, 5), (3, 5), (1, 1)], 140, 0);
        assert_eq!(s.health, vec![100, 84, 100]);
        assert_eq!(s.normalized_total_health, 100);
        assert_eq!(s.load, vec![100, 0, 0]);
        // A factor of 200: half healthy is still fully healthy.
        assert_eq!(expected_load(&[(1, 2), (1, 1)], 200, 0).load, vec![100, 0]);
        // Panic threshold above 100 is capped at 100.
        let s = expected_load(&[(1, 2), (0, 2)], 140, 250);
        assert_eq!(s.panic, vec![true, true]);
        assert_eq!(s.load, vec![50, 50]);
    }

    // ---- explain ----

    fn ep(ip: &str, region: &str, zone: &str, health: Health) -> Endpoint {
        Endpoint {
            address: ip.parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality: Locality::new(region, zone, ""),
            labels: BTreeMap::new(),
            health,
        }
    }

    /// Three regions × three zones, one endpoint each, listed in no particular order.
    fn nine_zones() -> Service {
        let mut endpoints = Vec::new();
        for (r, region) in ["r3", "r1", "r2"].iter().enumerate() {
            for (z, zone) in ["c", "a", "b"].iter().enumerate() {
                endpoints.push(ep(
                    &format!("10.0.{r}.{z}"),
                    region,
                    &format!("{region}-{zone}"),
                    Health::Healthy,
                ));
            }
        }
        Service {
            traffic_distribution: None,
            id: ServiceId::new("shop", "checkout"),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
            }],
            endpoints,
        }
    }

    fn plain(svc: &Service) -> ClusterInput {
        ClusterInput::plain(std::sync::Arc::new(svc.clone()), &svc.ports[0])
    }

    fn class_in(region: &str, zone: &str, policy: &FailoverPolicy) -> LocalityClass {
        LocalityClass::of(
            &ClientInfo {
                locality: Locality::new(region, zone, ""),
                ..ClientInfo::default()
            },
            policy,
        )
    }

    fn zones(level: &ExplainedLevel) -> Vec<&str> {
        let mut z: Vec<&str> = level
            .endpoints
            .iter()
            .map(|e| e.locality.zone.as_str())
            .collect();
        z.dedup();
        z
    }

    fn failover_policy() -> FailoverPolicy {
        FailoverPolicy {
            failover: vec![
                RegionFailover {
                    from: "r1".into(),
                    to: "r3".into(),
                },
                RegionFailover {
                    from: "r1".into(),
                    to: "r2".into(),
                },
            ],
            ..FailoverPolicy::default()
        }
    }

    #[test]
    fn explains_levels_with_reasons_and_failover_order() {
        let svc = nine_zones();
        let policy = failover_policy();
        let x = explain(&class_in("r1", "r1-a", &policy), &plain(&svc), &policy);
        assert_eq!(x.cluster, "checkout.shop:8080");
        assert_eq!(x.service, "shop/checkout");
        assert_eq!(x.class, "region=r1,zone=r1-a,subzone=-");
        let got: Vec<(u32, Vec<&str>, &str)> = x
            .levels
            .iter()
            .map(|l| (l.priority, zones(l), l.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    0,
                    vec!["r1-a"],
                    "same region and zone (topology.kubernetes.io/region=r1, \
                     topology.kubernetes.io/zone=r1-a)"
                ),
                (
                    1,
                    vec!["r1-b", "r1-c"],
                    "same region (topology.kubernetes.io/region=r1)"
                ),
                (
                    2,
                    vec!["r3-a", "r3-b", "r3-c"],
                    "failover target region r3 (policy failover from r1, 1st of 2 targets)"
                ),
                (
                    3,
                    vec!["r2-a", "r2-b", "r2-c"],
                    "failover target region r2 (policy failover from r1, 2nd of 2 targets)"
                ),
            ]
        );
        assert_eq!(
            x.levels[0].matched_labels,
            vec![
                MatchedLabel {
                    key: labels::REGION.into(),
                    value: "r1".into(),
                    pinned: false,
                },
                MatchedLabel {
                    key: labels::ZONE.into(),
                    value: "r1-a".into(),
                    pinned: false,
                },
            ]
        );
        assert_eq!(
            x.levels[2].failover,
            Some(FailoverRule {
                from: "r1".into(),
                to: "r3".into()
            })
        );
        assert_eq!(x.levels[1].failover, None);
        // All healthy: everything to P0.
        assert_eq!(x.load, vec![100, 0, 0, 0]);
        assert!(!x.panic && !x.no_healthy_upstream);
        assert_eq!(
            (
                x.levels[1].healthy,
                x.levels[1].total,
                x.levels[1].health_score
            ),
            (2, 2, 100)
        );
        let json = serde_json::to_value(&x).unwrap();
        assert_eq!(json["levels"][0]["endpoints"][0]["health"], "HEALTHY");
        assert_eq!(json["levels"][2]["failover"]["to"], "r3");
    }

    #[test]
    fn without_failover_rules_other_regions_are_one_remaining_level() {
        let svc = nine_zones();
        let policy = FailoverPolicy::default();
        let x = explain(&class_in("r2", "r2-c", &policy), &plain(&svc), &policy);
        assert_eq!(x.levels.len(), 3);
        assert_eq!(zones(&x.levels[0]), vec!["r2-c"]);
        assert_eq!(
            zones(&x.levels[2]),
            vec!["r1-a", "r1-b", "r1-c", "r3-a", "r3-b", "r3-c"]
        );
        assert_eq!(
            x.levels[2].reason,
            "remaining endpoints (not the same region as the client)"
        );
        // With a rule for r1 → r3, r2 is what remains for an r1 client, and the text says so.
        let one_rule = FailoverPolicy {
            failover: vec![failover_policy().failover[0].clone()],
            ..FailoverPolicy::default()
        };
        let x = explain(&class_in("r1", "r1-a", &one_rule), &plain(&svc), &one_rule);
        assert_eq!(zones(&x.levels[3]), vec!["r2-a", "r2-b", "r2-c"]);
        assert_eq!(
            x.levels[3].reason,
            "remaining endpoints (not the same region as the client, not a failover target \
             region of r1)"
        );
        // A client that does not know its region.
        let policy = failover_policy();
        let x = explain(&class_in("", "", &policy), &plain(&svc), &policy);
        assert_eq!(x.levels.len(), 1);
        assert_eq!(
            x.levels[0].reason,
            "remaining endpoints (the client has no topology.kubernetes.io/region label, so no \
             locality can match)"
        );
    }

    #[test]
    fn load_follows_health_level_by_level() {
        let mut svc = nine_zones();
        let policy = failover_policy();
        let class = class_in("r1", "r1-a", &policy);
        // Own zone not ready → its level gets nothing, the rest of the region takes it all.
        for e in svc
            .endpoints
            .iter_mut()
            .filter(|e| e.locality.zone == "r1-a")
        {
            e.health = Health::Unhealthy;
        }
        let x = explain(&class, &plain(&svc), &policy);
        assert_eq!(x.load, vec![0, 100, 0, 0]);
        assert_eq!(x.levels[0].endpoints[0].health, "UNHEALTHY");
        assert_eq!(x.levels[0].health_percent, 0.0);
        // Half of the region's other zones draining: 1 of 2 healthy → 70, the first failover region
        // takes the rest.
        for e in svc
            .endpoints
            .iter_mut()
            .filter(|e| e.locality.zone == "r1-b")
        {
            e.health = Health::Draining;
        }
        let x = explain(&class, &plain(&svc), &policy);
        assert_eq!(x.load, vec![0, 70, 30, 0]);
        assert_eq!(x.levels[1].health_percent, 50.0);
        assert_eq!(x.levels[1].health_score, 70);
        assert_eq!(
            x.levels.iter().map(|l| l.load_percent).collect::<Vec<_>>(),
            x.load
        );
        // Everything unhealthy, panic disabled: no healthy upstream.
        for e in svc.endpoints.iter_mut() {
            e.health = Health::Unhealthy;
        }
        let x = explain(&class, &plain(&svc), &policy);
        assert_eq!(x.load, vec![0, 0, 0, 0]);
        assert!(x.no_healthy_upstream && !x.panic);
        // The same with a panic threshold: total panic, by host count (1, 2, 3, 3 of 9).
        let panicky = FailoverPolicy {
            panic_threshold: 50,
            ..policy
        };
        let x = explain(&class, &plain(&svc), &panicky);
        assert_eq!(x.load, vec![12, 22, 33, 33]);
        assert!(x.panic && x.levels.iter().all(|l| l.panic));
    }

    /// The explanation is what the translator sends: same priority for every endpoint, same order.
    #[test]
    fn priorities_and_order_equal_the_eds_answer() {
        let mut svc = nine_zones();
        svc.endpoints[4].port_overrides.insert("http".into(), 9090);
        svc.endpoints[2].health = Health::Draining;
        for policy in [
            FailoverPolicy::default(),
            failover_policy(),
            distribute_policy(),
        ] {
            for (region, zone) in [("r1", "r1-a"), ("r2", "r2-b"), ("r3", "r3-c"), ("r4", "")] {
                let class = class_in(region, zone, &policy);
                let x = explain(&class, &plain(&svc), &policy);
                let input = plain(&svc);
                let plan = priorities(&class, &input, &policy);
                let cla = load_assignment(&x.cluster, &input, &class, &plan, &policy);
                let sent: Vec<(u32, String, u16, String)> = cla
                    .endpoints
                    .iter()
                    .flat_map(|g| {
                        g.lb_endpoints.iter().map(move |lb| {
                            let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                                panic!("endpoint expected")
                            };
                            let Some(address::Address::SocketAddress(sa)) =
                                &e.address.as_ref().unwrap().address
                            else {
                                panic!("socket address expected")
                            };
                            let Some(PortSpecifier::PortValue(p)) = sa.port_specifier else {
                                panic!("port expected")
                            };
                            (
                                g.priority,
                                sa.address.clone(),
                                p as u16,
                                g.locality.as_ref().unwrap().zone.clone(),
                            )
                        })
                    })
                    .collect();
                let explained: Vec<(u32, String, u16, String)> = x
                    .levels
                    .iter()
                    .flat_map(|l| {
                        l.endpoints.iter().map(move |e| {
                            (
                                l.priority,
                                e.address.clone(),
                                e.port,
                                e.locality.zone.clone(),
                            )
                        })
                    })
                    .collect();
                assert_eq!(explained, sent, "client {region}/{zone}");
                for (i, l) in x.levels.iter().enumerate() {
                    assert_eq!(l.priority as usize, i);
                }
            }
        }
    }

    #[test]
    fn backups_gateways_and_what_is_left_out() {
        use crate::model::{NetworkGateway, Registry};
        use crate::policy::BackupService;
        let on = |ip: &str, zone: &str, health: Health, net: &str| {
            let mut e = ep(ip, "r1", zone, health);
            e.labels.insert(labels::NETWORK.into(), net.into());
            e
        };
        let svc = |name: &str, endpoints: Vec<Endpoint>| Service {
            traffic_distribution: None,
            id: ServiceId::new("shop", name),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
            }],
            endpoints,
        };
        let primary = svc(
            "checkout",
            vec![
                on("10.0.0.1", "r1-a", Health::Unhealthy, "n1"),
                on("10.0.1.1", "r1-a", Health::Healthy, "n2"),
                on("10.0.1.2", "r1-a", Health::Unhealthy, "n2"),
                on("10.0.3.1", "r1-a", Health::Healthy, "n3"),
            ],
        );
        let mut registry = Registry::from_services([
            primary.clone(),
            svc(
                "checkout-dr",
                vec![ep("10.1.0.1", "r1", "r1-b", Health::Healthy)],
            ),
        ]);
        registry.gateways.insert(
            "n2".into(),
            NetworkGateway {
                address: "192.0.2.2".parse().unwrap(),
                port: 15443,
            },
        );
        let policy = FailoverPolicy {
            backups: vec![
                BackupService {
                    service: ServiceId::new("shop", "checkout-dr"),
                    cluster: None,
                },
                BackupService {
                    service: ServiceId::new("shop", "gone"),
                    cluster: None,
                },
            ],
            ..FailoverPolicy::default()
        };
        let input = ClusterInput::new(
            &registry,
            std::sync::Arc::new(primary.clone()),
            &primary.ports[0],
            &policy,
        );
        let client = ClientInfo {
            locality: Locality::new("r1", "r1-a", ""),
            labels: [(labels::NETWORK.to_string(), "n1".to_string())].into(),
            ..ClientInfo::default()
        };
        let x = explain(&LocalityClass::of(&client, &policy), &input, &policy);
        assert_eq!(x.levels.len(), 2);
        let p0 = &x.levels[0];
        // One unhealthy local endpoint and one gateway for n2 (one of two healthy → healthy):
        // Envoy sees 2 hosts, 1 healthy → health 70, and the rest spills to the backup.
        let hosts: Vec<(&str, Option<&str>, u32, &str)> = p0
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.address.as_str(),
                    e.gateway_for.as_deref(),
                    e.weight,
                    e.health.as_str(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("10.0.0.1", None, 1, "UNHEALTHY"),
                ("192.0.2.2", Some("n2"), 2, "HEALTHY"),
            ]
        );
        assert_eq!((p0.healthy, p0.total), (1, 2));
        assert_eq!(x.load, vec![70, 30]);
        assert_eq!(x.levels[1].backup.as_deref(), Some("shop/checkout-dr"));
        assert_eq!(
            x.levels[1].reason,
            "backup 1: shop/checkout-dr; same region (topology.kubernetes.io/region=r1)"
        );
        assert_eq!(x.notes.len(), 2, "{:?}", x.notes);
        assert!(
            x.notes[0].starts_with("backup 2: shop/gone is not used: no such service"),
            "{:?}",
            x.notes
        );
        assert!(
            x.notes[1].starts_with(
                "10.0.3.1:8080 is left out: it is on network n3, which has no gateway"
            ),
            "{:?}",
            x.notes
        );
    }

    #[test]
    fn no_endpoints() {
        let mut svc = nine_zones();
        svc.endpoints.clear();
        let policy = FailoverPolicy::default();
        let x = explain(&class_in("r1", "r1-a", &policy), &plain(&svc), &policy);
        assert!(x.levels.is_empty() && x.load.is_empty());
        assert!(x.no_healthy_upstream);
    }

    #[test]
    fn label_keys_and_failover_combine_in_the_reason() {
        let mut svc = nine_zones();
        for e in svc.endpoints.iter_mut() {
            let cluster = if e.locality.region == "r2" || e.locality.zone == "r1-a" {
                "blue"
            } else {
                "green"
            };
            e.labels.insert(labels::CLUSTER.into(), cluster.into());
        }
        let policy = FailoverPolicy {
            failover_priority: vec![labels::CLUSTER.into()],
            failover: vec![RegionFailover {
                from: "r1".into(),
                to: "r2".into(),
            }],
            ..FailoverPolicy::default()
        };
        let client = ClientInfo {
            locality: Locality::new("r1", "r1-a", ""),
            labels: [(labels::CLUSTER.to_string(), "blue".to_string())].into(),
            ..ClientInfo::default()
        };
        let class = LocalityClass::of(&client, &policy);
        let x = explain(&class, &plain(&svc), &policy);
        let reasons: Vec<&str> = x.levels.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "same topology.istio.io/cluster (topology.istio.io/cluster=blue); failover target \
                 region r2 (policy failover from r1)",
                "same topology.istio.io/cluster (topology.istio.io/cluster=blue); not in a \
                 failover target region of r1",
                "remaining endpoints (not the same topology.istio.io/cluster as the client, not a \
                 failover target region of r1)",
            ]
        );
        assert_eq!(zones(&x.levels[1]), vec!["r1-a"]);
    }

    fn distribute_policy() -> FailoverPolicy {
        use crate::translate::priorities::tests::rule;
        FailoverPolicy {
            distribute: vec![rule("r1/r1-a/*", &[("r2/*", 75), ("r3/r3-a/*", 25)])],
            ..FailoverPolicy::default()
        }
    }

    #[test]
    fn distribute_level_shows_its_rule_and_each_locality_share() {
        let mut svc = nine_zones();
        let policy = distribute_policy();
        let class = class_in("r1", "r1-a", &policy);
        let x = explain(&class, &plain(&svc), &policy);
        let p0 = &x.levels[0];
        assert_eq!(zones(p0), vec!["r2-a", "r2-b", "r2-c", "r3-a"]);
        assert_eq!(
            p0.reason,
            "distribute rule from r1/r1-a/*: r2/* 75%, r3/r3-a/* 25% (the client's locality \
             matches r1/r1-a/*; localities weighted by pattern, every other endpoint fails over \
             below)"
        );
        assert_eq!(
            p0.distribute,
            Some(ExplainedDistribute {
                from: "r1/r1-a/*".into(),
                to: vec![
                    DistributeTarget {
                        pattern: "r2/*".into(),
                        weight: 75
                    },
                    DistributeTarget {
                        pattern: "r3/r3-a/*".into(),
                        weight: 25
                    },
                ],
            })
        );
        // r2's 75% over its three zones, r3-a alone 25%: weights 1, 1, 1, 1 (75, 75, 75 | 75 ÷ 75).
        let shares = |l: &ExplainedLevel| -> Vec<(String, u32, Option<String>, f64, f64)> {
            l.localities
                .iter()
                .map(|s| {
                    (
                        s.locality.zone.clone(),
                        s.weight,
                        s.pattern.clone(),
                        (s.share_of_level * 100.0).round() / 100.0,
                        (s.expected_percent * 100.0).round() / 100.0,
                    )
                })
                .collect()
        };
        let r2 = Some("r2/*".to_string());
        let r3 = Some("r3/r3-a/*".to_string());
        assert_eq!(
            shares(p0),
            vec![
                ("r2-a".into(), 1, r2.clone(), 25.0, 25.0),
                ("r2-b".into(), 1, r2.clone(), 25.0, 25.0),
                ("r2-c".into(), 1, r2.clone(), 25.0, 25.0),
                ("r3-a".into(), 1, r3.clone(), 25.0, 25.0),
            ]
        );
        // The usual levels follow, weighted by host count: own zone, then the rest of the region.
        assert_eq!(zones(&x.levels[1]), vec!["r1-a"]);
        assert_eq!(
            shares(&x.levels[1]),
            vec![("r1-a".into(), 1, None, 100.0, 0.0)]
        );
        assert_eq!(x.load[0], 100);
        // A dead locality inside a pattern: its weight is lost and the level's live localities share
        // the load by weight (Envoy's effective locality weight), r3-a included; the level itself
        // is still healthy enough (3 of 4 × 1.4 ≥ 100%) to keep everything.
        for e in svc
            .endpoints
            .iter_mut()
            .filter(|e| e.locality.zone == "r2-a")
        {
            e.health = Health::Unhealthy;
        }
        let x = explain(&class, &plain(&svc), &policy);
        assert_eq!(x.load[0], 100);
        let got = shares(&x.levels[0]);
        assert_eq!(got[0].4, 0.0);
        assert!(got[1..].iter().all(|s| s.4 == 33.33), "{got:?}");
        // A policy without distribute reports no per-locality weights.
        let x = explain(&class, &plain(&svc), &FailoverPolicy::default());
        assert!(x
            .levels
            .iter()
            .all(|l| l.localities.is_empty() && l.distribute.is_none()));
    }

    #[test]
    fn pinned_keys_are_named_with_their_value() {
        use crate::policy::PriorityKey;
        let mut svc = nine_zones();
        for e in svc.endpoints.iter_mut() {
            let net = if e.locality.region == "r2" {
                "n2"
            } else {
                "n1"
            };
            e.labels.insert(labels::NETWORK.into(), net.into());
        }
        let policy = FailoverPolicy {
            failover_priority: vec![
                PriorityKey::pinned(labels::NETWORK, "n2"),
                labels::REGION.into(),
            ],
            ..FailoverPolicy::default()
        };
        let class = class_in("r1", "r1-a", &policy);
        let x = explain(&class, &plain(&svc), &policy);
        let reasons: Vec<&str> = x.levels.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "topology.istio.io/network=n2 (pinned)",
                "remaining endpoints (not topology.istio.io/network=n2 (pinned))",
            ]
        );
        assert_eq!(
            x.levels[0].matched_labels,
            vec![MatchedLabel {
                key: labels::NETWORK.into(),
                value: "n2".into(),
                pinned: true,
            }]
        );
    }

    #[test]
    fn notes_say_how_envoy_detects_failures_by_itself() {
        use crate::policy::{HealthCheck, HealthCheckProtocol};
        let svc = nine_zones();
        let policy = FailoverPolicy {
            health_check: Some(HealthCheck::new(HealthCheckProtocol::Http {
                path: "/healthz".into(),
                host: None,
            })),
            outlier_detection: None,
            ..FailoverPolicy::default()
        };
        let x = explain(&class_in("r1", "r1-a", &policy), &plain(&svc), &policy);
        assert_eq!(
            x.notes,
            vec![
                "active health checks: HTTP GET /healthz every 5s (timeout 1s); 3 failures mark \
                 an endpoint unhealthy, 2 successes healthy again; Envoy applies them itself, so \
                 this prediction (from the health sent in EDS) does not show them"
                    .to_string(),
                "outlier detection is disabled: failing requests do not eject endpoints"
                    .to_string(),
            ]
        );
        let x = explain(
            &class_in("r1", "r1-a", &policy),
            &plain(&svc),
            &FailoverPolicy::default(),
        );
        assert!(x.notes.is_empty());
    }
}
