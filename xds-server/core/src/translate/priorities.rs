//! Priority assignment: which endpoints a client should use first, and which it fails over to.
//!
//! Pure: the answer depends only on the client's [`LocalityClass`], the endpoints and the policy, so every
//! client of one class can share one computed (and encoded) answer.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{labels, ClientInfo, Endpoint, ServiceId};
use crate::policy::{DistributeRule, FailoverPolicy, PriorityKey};
use crate::translate::input::{ClusterInput, Route};

/// The client's values for exactly the label keys a policy looks at. Two clients with the same class get
/// the same priorities for every service under that policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalityClass {
    /// `(key, value)` in the policy's key order; `None` when the client does not have the label.
    pub values: Vec<(String, Option<String>)>,
}

impl LocalityClass {
    pub fn of(client: &ClientInfo, policy: &FailoverPolicy) -> Self {
        let mut values: Vec<(String, Option<String>)> = policy
            .client_keys()
            .into_iter()
            .map(|key| (key.to_string(), client.label(key).map(str::to_string)))
            .collect();
        // Keys that only refine the answer for clients that carry them: a client without them keeps
        // the class (and the shared answer) it has in a single-cluster mesh.
        let refining = [
            (policy.splits_by_cluster(), labels::CLUSTER),
            // Split horizon: what a client is sent depends on its network.
            (true, labels::NETWORK),
        ];
        for (applies, key) in refining {
            if applies && !values.iter().any(|(k, _)| k == key) {
                if let Some(v) = client.label(key) {
                    values.push((key.to_string(), Some(v.to_string())));
                }
            }
        }
        Self { values }
    }

    pub fn value(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for LocalityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{}={}", short_key(k), v.as_deref().unwrap_or("-")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `topology.kubernetes.io/zone` → `zone`, for compact explanations.
fn short_key(key: &str) -> &str {
    match key {
        labels::REGION => "region",
        labels::ZONE => "zone",
        labels::SUBZONE => "subzone",
        labels::CLUSTER => "cluster",
        labels::NETWORK => "network",
        _ => key,
    }
}

/// Why a level sits where it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LevelReason {
    /// The leading policy keys on which these endpoints match the client (a pinned key: on which
    /// they have the pinned value).
    pub matched_keys: Vec<PriorityKey>,
    /// Set when the level exists because of a `failover: {from, to}` rule.
    pub failover_rule: Option<(String, String)>,
    /// Set when the client's cluster splits its locality ranks: `true` for the level of endpoints in
    /// the client's cluster, `false` for the one of endpoints in another cluster.
    pub own_cluster: Option<bool>,
    /// Set for the levels of a backup service: its 1-based place in the policy's `backups`.
    pub backup: Option<(usize, ServiceId)>,
    /// Set for the level a `distribute` rule makes: the client's locality matches the rule's `from`
    /// and these are the endpoints in its `to` localities, weighted by pattern (see
    /// [`locality_weights`](super::resources::locality_weights)).
    pub distribute: Option<DistributeRule>,
}

impl LevelReason {
    fn plain() -> Self {
        Self {
            matched_keys: Vec::new(),
            failover_rule: None,
            own_cluster: None,
            backup: None,
            distribute: None,
        }
    }
}

/// `same region+zone as the client`, with pinned keys named with their value: `network=n1
/// (pinned), same region as the client`.
fn matched_keys_text(keys: &[PriorityKey], short: fn(&str) -> &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut same: Vec<&str> = Vec::new();
    let flush = |same: &mut Vec<&str>, parts: &mut Vec<String>| {
        if !same.is_empty() {
            parts.push(format!("same {} as the client", same.join("+")));
            same.clear();
        }
    };
    for key in keys {
        match &key.pinned {
            Some(value) => {
                flush(&mut same, &mut parts);
                parts.push(format!("{}={value} (pinned)", short(&key.label)));
            }
            None => same.push(short(&key.label)),
        }
    }
    flush(&mut same, &mut parts);
    parts.join(", ")
}

/// `from us-east1/*: us-east1/us-east1-b/* 80%, us-west1/* 20%`.
pub fn distribute_text(rule: &DistributeRule) -> String {
    let to: Vec<String> = rule.to.iter().map(|(p, w)| format!("{p} {w}%")).collect();
    format!("from {}: {}", rule.from, to.join(", "))
}

impl fmt::Display for LevelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((position, service)) = &self.backup {
            write!(f, "backup {position}: {service}, ")?;
        }
        if let Some(rule) = &self.distribute {
            return write!(f, "distribute {}", distribute_text(rule));
        }
        if !self.matched_keys.is_empty() {
            f.write_str(&matched_keys_text(&self.matched_keys, short_key))?;
        } else if let Some((from, to)) = &self.failover_rule {
            write!(f, "failover region {to} (rule {from} -> {to})")?;
        } else {
            f.write_str("no locality match (last resort)")?;
        }
        match self.own_cluster {
            Some(true) => f.write_str(", same cluster"),
            Some(false) => f.write_str(", other cluster"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PriorityLevel {
    pub priority: u32,
    pub reason: LevelReason,
    /// Indices into the endpoint slice the plan was computed from, in input order.
    pub endpoints: Vec<usize>,
}

/// Gap-free priority levels 0..N for one client class and one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PriorityPlan {
    pub levels: Vec<PriorityLevel>,
    /// Endpoints on another network than the client's that has no gateway: in no level.
    pub unreachable: Vec<usize>,
}

impl PriorityPlan {
    /// The priority of each endpoint, in [`ClusterInput::endpoint`] numbering; `u32::MAX` for an
    /// unreachable one.
    pub fn priority_of_each(&self, endpoint_count: usize) -> Vec<u32> {
        let mut out = vec![u32::MAX; endpoint_count];
        for level in &self.levels {
            for &i in &level.endpoints {
                out[i] = level.priority;
            }
        }
        out
    }
}

/// How well an endpoint fits a client; smaller is better. Ordering is lexicographic: first the number of
/// leading keys that do *not* match, then the position of the endpoint's region among the client
/// region's failover targets (targets before everything else), then whether it is in another cluster
/// than the client's (so every locality rank splits into own cluster, then the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Rank {
    unmatched: usize,
    failover: usize,
    other_cluster: bool,
}

/// Gap-free levels for one client class: the primary's endpoints ranked by locality, then each
/// backup's endpoints, ranked the same way within their own block (backup 1's levels before backup
/// 2's), so a backup is only used once every locality of the primary is gone.
pub fn priorities(
    class: &LocalityClass,
    input: &ClusterInput,
    policy: &FailoverPolicy,
) -> PriorityPlan {
    let client_network = class.value(labels::NETWORK);
    let mut levels: Vec<PriorityLevel> = Vec::new();
    let mut unreachable = Vec::new();
    for block in input.blocks() {
        let mut reachable: Vec<bool> = block
            .endpoints
            .iter()
            .map(|ep| !matches!(input.route(client_network, ep), Route::Unreachable(_)))
            .collect();
        unreachable.extend(
            reachable
                .iter()
                .enumerate()
                .filter(|(_, ok)| !**ok)
                .map(|(i, _)| block.start + i),
        );
        let backup = block.backup.map(|b| (b.position, b.service.clone()));
        if block.backup.is_none() {
            if let Some((reason, members)) = distributed(class, block.endpoints, &reachable, policy)
            {
                for &i in &members {
                    reachable[i] = false;
                }
                levels.push(PriorityLevel {
                    priority: levels.len() as u32,
                    reason,
                    endpoints: members.into_iter().map(|i| block.start + i).collect(),
                });
            }
        }
        for (reason, members) in rank(class, block.endpoints, &reachable, policy) {
            levels.push(PriorityLevel {
                priority: levels.len() as u32,
                reason: LevelReason {
                    backup: backup.clone(),
                    ..reason
                },
                endpoints: members.into_iter().map(|i| block.start + i).collect(),
            });
        }
    }
    PriorityPlan {
        levels: one_level_per_gateway(levels, input, client_network),
        unreachable,
    }
}

/// Envoy keys a cluster's hosts by address: the same gateway address in two levels is kept in one
/// only (measured: the lower copy disappears). So every endpoint reached through one gateway joins the
/// level of the best-ranked of them; the gateway can reach all of them, and which one serves is the
/// remote network's choice anyway. Levels left empty are dropped and the rest renumbered.
fn one_level_per_gateway(
    mut levels: Vec<PriorityLevel>,
    input: &ClusterInput,
    client_network: Option<&str>,
) -> Vec<PriorityLevel> {
    let mut first_level: BTreeMap<&crate::model::NetworkGateway, usize> = BTreeMap::new();
    let mut moved: Vec<(usize, usize)> = Vec::new();
    for (at, level) in levels.iter_mut().enumerate() {
        level.endpoints.retain(|&i| {
            let Route::Gateway(_, gw) = input.route(client_network, input.endpoint(i)) else {
                return true;
            };
            let home = *first_level.entry(gw).or_insert(at);
            if home != at {
                moved.push((home, i));
            }
            home == at
        });
    }
    if moved.is_empty() {
        return levels;
    }
    for (home, i) in moved {
        levels[home].endpoints.push(i);
    }
    levels.retain(|l| !l.endpoints.is_empty());
    for (priority, level) in levels.iter_mut().enumerate() {
        level.priority = priority as u32;
        level.endpoints.sort_unstable();
    }
    levels
}

/// The client's locality as `distribute` patterns see it: region, zone, subzone, empty when unknown.
pub fn client_locality(class: &LocalityClass) -> [&str; 3] {
    [labels::REGION, labels::ZONE, labels::SUBZONE].map(|key| class.value(key).unwrap_or(""))
}

/// The `distribute` level of the primary block: when the client's locality matches a rule's `from`
/// (the first such rule), the reachable endpoints in any of the rule's `to` localities, together.
/// `None` when no rule applies or none of those localities has a reachable endpoint (the usual
/// ranking then applies unchanged).
fn distributed(
    class: &LocalityClass,
    endpoints: &[Endpoint],
    reachable: &[bool],
    policy: &FailoverPolicy,
) -> Option<(LevelReason, Vec<usize>)> {
    let rule = policy.distribution_for(client_locality(class))?;
    let members: Vec<usize> = endpoints
        .iter()
        .zip(reachable)
        .enumerate()
        .filter(|(_, (ep, &ok))| ok && rule.to.iter().any(|(p, _)| p.matches(ep.locality.parts())))
        .map(|(i, _)| i)
        .collect();
    if members.is_empty() {
        return None;
    }
    Some((
        LevelReason {
            distribute: Some(rule.clone()),
            ..LevelReason::plain()
        },
        members,
    ))
}

/// One block's levels, best first, with indices into `endpoints`; endpoints not `reachable` are in
/// none (a level of only those would be a level Envoy can never use).
fn rank(
    class: &LocalityClass,
    endpoints: &[Endpoint],
    reachable: &[bool],
    policy: &FailoverPolicy,
) -> Vec<(LevelReason, Vec<usize>)> {
    let keys = &policy.failover_priority;
    let client_region = class.value(labels::REGION).unwrap_or("");
    let targets: Vec<&str> = if client_region.is_empty() {
        Vec::new()
    } else {
        policy.failover_targets(client_region).collect()
    };

    // An endpoint without the label is not "another cluster": it ranks with the client's own, so a
    // mesh whose endpoints carry no cluster label gets exactly the plain locality ranking.
    let client_cluster = policy
        .splits_by_cluster()
        .then(|| class.value(labels::CLUSTER))
        .flatten();
    let other_cluster = |ep: &Endpoint| match (client_cluster, ep.label(labels::CLUSTER)) {
        (Some(c), Some(e)) => c != e,
        _ => false,
    };

    let ranks: Vec<Option<Rank>> = endpoints
        .iter()
        .zip(reachable)
        .map(|(ep, &ok)| {
            if !ok {
                return None;
            }
            // A label the client lacks matches nothing: a client that does not know its zone cannot be
            // "in the same zone" as anyone.
            let matched = keys
                .iter()
                .take_while(|key| {
                    match (key.wanted(class.value(&key.label)), ep.label(&key.label)) {
                        (Some(c), Some(e)) => c == e,
                        _ => false,
                    }
                })
                .count();
            let failover = ep
                .label(labels::REGION)
                .and_then(|region| targets.iter().position(|t| *t == region))
                .unwrap_or(targets.len());
            Some(Rank {
                unmatched: keys.len() - matched,
                failover,
                other_cluster: other_cluster(ep),
            })
        })
        .collect();

    let mut distinct: Vec<Rank> = ranks.iter().flatten().copied().collect();
    distinct.sort();
    distinct.dedup();

    distinct
        .iter()
        .map(|rank| {
            let matched = keys.len() - rank.unmatched;
            let failover_rule = (rank.failover < targets.len()).then(|| {
                (
                    client_region.to_string(),
                    targets[rank.failover].to_string(),
                )
            });
            let members: Vec<usize> = ranks
                .iter()
                .enumerate()
                .filter(|(_, r)| r.as_ref() == Some(rank))
                .map(|(i, _)| i)
                .collect();
            let own_cluster = if rank.other_cluster {
                Some(false)
            } else {
                // Only worth saying when some endpoint here really is in the client's cluster.
                client_cluster
                    .filter(|c| {
                        members
                            .iter()
                            .any(|&i| endpoints[i].label(labels::CLUSTER) == Some(*c))
                    })
                    .map(|_| true)
            };
            let reason = LevelReason {
                matched_keys: keys[..matched].to_vec(),
                failover_rule,
                own_cluster,
                ..LevelReason::plain()
            };
            (reason, members)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
