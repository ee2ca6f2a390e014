//! Priority assignment: which endpoints a client should use first, and which it fails over to.
//!
//! Pure: the answer depends only on the client's [`LocalityClass`], the endpoints and the policy, so every
//! client of one class can share one computed (and encoded) answer.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

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
    let mut first_level: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
    let mut moved: Vec<(usize, usize)> = Vec::new();
    for (at, level) in levels.iter_mut().enumerate() {
        level.endpoints.retain(|&i| {
            let Route::Gateway(_, gw) = input.route(client_network, input.endpoint(i)) else {
                return true;
            };
            let home = *first_level.entry((gw.address, gw.port)).or_insert(at);
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
pub(crate) mod tests {
    use super::*;
    use crate::model::{Health, Locality, Service, ServicePort};
    use crate::policy::RegionFailover;
    use std::collections::BTreeMap;

    fn ep(region: &str, zone: &str, subzone: &str) -> Endpoint {
        Endpoint {
            address: "10.0.0.1".parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality: Locality::new(region, zone, subzone),
            labels: BTreeMap::new(),
            health: Health::Healthy,
        }
    }

    fn client(region: &str, zone: &str, subzone: &str) -> ClientInfo {
        ClientInfo {
            locality: Locality::new(region, zone, subzone),
            ..ClientInfo::default()
        }
    }

    /// A one-port service of `eps` without backups or gateways.
    fn input_of(eps: &[Endpoint]) -> ClusterInput {
        let svc = Service {
            traffic_distribution: None,
            id: ServiceId::new("shop", "checkout"),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
            }],
            endpoints: eps.to_vec(),
        };
        let port = svc.ports[0].clone();
        ClusterInput::plain(std::sync::Arc::new(svc), &port)
    }

    fn plan_for(client: &ClientInfo, eps: &[Endpoint], policy: &FailoverPolicy) -> Vec<u32> {
        let class = LocalityClass::of(client, policy);
        let plan = priorities(&class, &input_of(eps), policy);
        assert_gap_free(&plan, eps.len());
        plan.priority_of_each(eps.len())
    }

    /// (region, zone, subzone) of a client in the tables.
    type ClientLocality = (&'static str, &'static str, &'static str);

    fn assert_gap_free(plan: &PriorityPlan, n: usize) {
        for (i, level) in plan.levels.iter().enumerate() {
            assert_eq!(level.priority as usize, i, "levels must be numbered 0..N");
            assert!(!level.endpoints.is_empty(), "no empty level");
        }
        let total: usize = plan.levels.iter().map(|l| l.endpoints.len()).sum();
        assert_eq!(
            total + plan.unreachable.len(),
            n,
            "every endpoint in exactly one level, or unreachable"
        );
    }

    /// The topology used by the tables: two zones with subzones in us-east1, one zone in us-west1,
    /// one in eu-west4.
    fn topology() -> Vec<Endpoint> {
        vec![
            ep("us-east1", "us-east1-b", "rack-1"), // 0
            ep("us-east1", "us-east1-b", "rack-2"), // 1
            ep("us-east1", "us-east1-c", "rack-1"), // 2
            ep("us-west1", "us-west1-a", ""),       // 3
            ep("eu-west4", "eu-west4-a", ""),       // 4
        ]
    }

    #[test]
    fn default_policy_table() {
        let eps = topology();
        let policy = FailoverPolicy::default();
        // client locality → expected priority of each endpoint of `topology()`
        let table: &[(ClientLocality, [u32; 5])] = &[
            // same subzone first, then same zone, then same region, then the rest
            (("us-east1", "us-east1-b", "rack-1"), [0, 1, 2, 3, 3]),
            (("us-east1", "us-east1-b", "rack-2"), [1, 0, 2, 3, 3]),
            // subzone "rack-1" in another zone is not "same subzone": zone comes first
            (("us-east1", "us-east1-c", "rack-1"), [1, 1, 0, 2, 2]),
            // client without subzone: its zone is its best level
            (("us-east1", "us-east1-b", ""), [0, 0, 1, 2, 2]),
            (("us-west1", "us-west1-a", ""), [1, 1, 1, 0, 1]),
            (("eu-west4", "eu-west4-a", "x"), [1, 1, 1, 1, 0]),
            // a region with no endpoints: everything is equally far
            (("ap-south1", "ap-south1-a", ""), [0, 0, 0, 0, 0]),
            // client that does not know where it is
            (("", "", ""), [0, 0, 0, 0, 0]),
            // zone known but region unknown: zone alone cannot match (keys match in order)
            (("", "us-east1-b", "rack-1"), [0, 0, 0, 0, 0]),
        ];
        for ((r, z, s), expected) in table {
            let got = plan_for(&client(r, z, s), &eps, &policy);
            assert_eq!(&got[..], &expected[..], "client {r}/{z}/{s}");
        }
    }

    #[test]
    fn failover_rules_put_target_region_right_after_own_region() {
        let eps = topology();
        let policy = FailoverPolicy {
            failover: vec![
                RegionFailover {
                    from: "us-east1".into(),
                    to: "eu-west4".into(),
                },
                RegionFailover {
                    from: "us-east1".into(),
                    to: "us-west1".into(),
                },
            ],
            ..FailoverPolicy::default()
        };
        let table: &[(ClientLocality, [u32; 5])] = &[
            // eu-west4 is the first target, us-west1 the second
            (("us-east1", "us-east1-b", "rack-1"), [0, 1, 2, 4, 3]),
            (("us-east1", "us-east1-c", ""), [1, 1, 0, 3, 2]),
            // rules only apply to clients in `from`
            (("us-west1", "us-west1-a", ""), [1, 1, 1, 0, 1]),
        ];
        for ((r, z, s), expected) in table {
            let got = plan_for(&client(r, z, s), &eps, &policy);
            assert_eq!(&got[..], &expected[..], "client {r}/{z}/{s}");
        }
        let class = LocalityClass::of(&client("us-east1", "us-east1-b", "rack-1"), &policy);
        let plan = priorities(&class, &input_of(&eps), &policy);
        assert_eq!(
            plan.levels[3].reason.to_string(),
            "failover region eu-west4 (rule us-east1 -> eu-west4)"
        );
        assert_eq!(
            plan.levels[4].reason.to_string(),
            "failover region us-west1 (rule us-east1 -> us-west1)"
        );
        let west = LocalityClass::of(&client("us-west1", "us-west1-a", ""), &policy);
        let plan = priorities(&west, &input_of(&eps), &policy);
        assert_eq!(
            plan.levels[1].reason.to_string(),
            "no locality match (last resort)"
        );
    }

    #[test]
    fn failover_priority_labels_rank_by_leading_matches() {
        let mut eps = topology();
        let cluster = |e: &mut Endpoint, c: &str| {
            e.labels.insert(labels::CLUSTER.into(), c.into());
        };
        cluster(&mut eps[0], "east");
        cluster(&mut eps[1], "west");
        cluster(&mut eps[2], "east");
        cluster(&mut eps[3], "east");
        // eps[4] has no cluster label
        let policy = FailoverPolicy {
            failover_priority: vec![labels::CLUSTER.into(), labels::REGION.into()],
            ..FailoverPolicy::default()
        };
        let mut c = client("us-east1", "us-east1-b", "rack-1");
        c.labels.insert(labels::CLUSTER.into(), "east".into());
        // cluster+region → 0; cluster only → 1; nothing → 2 (region alone does not count: order matters)
        assert_eq!(plan_for(&c, &eps, &policy), vec![0, 2, 0, 1, 2]);

        // client without the first label: nothing matches, one level
        let c = client("us-east1", "us-east1-b", "rack-1");
        assert_eq!(plan_for(&c, &eps, &policy), vec![0, 0, 0, 0, 0]);
    }

    #[test]
    fn level_zero_is_own_locality_and_reasons_name_matched_keys() {
        let eps = topology();
        let policy = FailoverPolicy::default();
        let class = LocalityClass::of(&client("us-east1", "us-east1-b", "rack-2"), &policy);
        let plan = priorities(&class, &input_of(&eps), &policy);
        assert_eq!(plan.levels.len(), 4);
        assert_eq!(plan.levels[0].endpoints, vec![1]);
        assert_eq!(
            plan.levels[0].reason.to_string(),
            "same region+zone+subzone as the client"
        );
        assert_eq!(plan.levels[1].endpoints, vec![0]);
        assert_eq!(
            plan.levels[1].reason.to_string(),
            "same region+zone as the client"
        );
        assert_eq!(plan.levels[2].endpoints, vec![2]);
        assert_eq!(plan.levels[3].endpoints, vec![3, 4]);
    }

    fn in_cluster(mut e: Endpoint, cluster: &str) -> Endpoint {
        e.labels.insert(labels::CLUSTER.into(), cluster.into());
        e
    }

    /// Two clusters over the same zones, plus one endpoint without a cluster label.
    fn two_clusters() -> Vec<Endpoint> {
        vec![
            in_cluster(ep("us-east1", "us-east1-b", ""), "east"), // 0
            in_cluster(ep("us-east1", "us-east1-b", ""), "west"), // 1
            in_cluster(ep("us-east1", "us-east1-c", ""), "east"), // 2
            in_cluster(ep("us-east1", "us-east1-c", ""), "west"), // 3
            in_cluster(ep("us-west1", "us-west1-a", ""), "west"), // 4
            ep("us-west1", "us-west1-a", ""),                     // 5
        ]
    }

    #[test]
    fn own_cluster_first_within_each_locality_rank() {
        let eps = two_clusters();
        let default = FailoverPolicy::default();
        let explicit = FailoverPolicy {
            failover_priority: crate::policy::default_failover_priority(),
            prefer_own_cluster: false,
            ..FailoverPolicy::default()
        };
        let client_in = |cluster: &str| {
            let mut c = client("us-east1", "us-east1-b", "");
            if !cluster.is_empty() {
                c.labels.insert(labels::CLUSTER.into(), cluster.into());
            }
            c
        };
        // (client's cluster, policy, expected priority of each endpoint of `two_clusters()`)
        let table: &[(&str, &FailoverPolicy, [u32; 6])] = &[
            // each rank splits: own zone east, own zone west, own region east, ... ; the unlabeled
            // endpoint ranks with the client's own cluster
            ("east", &default, [0, 1, 2, 3, 5, 4]),
            ("west", &default, [1, 0, 3, 2, 4, 4]),
            // a cluster with no endpoints here: every labeled endpoint is "other"
            ("north", &default, [0, 0, 1, 1, 3, 2]),
            // client without the label: today's plan
            ("", &default, [0, 0, 1, 1, 2, 2]),
            // the user set failoverPriority: their keys decide alone
            ("east", &explicit, [0, 0, 1, 1, 2, 2]),
        ];
        for (cluster, policy, expected) in table {
            let got = plan_for(&client_in(cluster), &eps, policy);
            assert_eq!(&got[..], &expected[..], "client in cluster {cluster:?}");
        }
        // Endpoints without cluster labels: a labeled client gets exactly the single-cluster plan.
        let plain = topology();
        let mut labeled = client("us-east1", "us-east1-b", "rack-1");
        labeled.labels.insert(labels::CLUSTER.into(), "east".into());
        assert_eq!(
            plan_for(&labeled, &plain, &default),
            plan_for(
                &client("us-east1", "us-east1-b", "rack-1"),
                &plain,
                &default
            )
        );

        let class = LocalityClass::of(&client_in("east"), &default);
        let plan = priorities(&class, &input_of(&eps), &default);
        let reasons: Vec<String> = plan.levels.iter().map(|l| l.reason.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "same region+zone as the client, same cluster",
                "same region+zone as the client, other cluster",
                "same region as the client, same cluster",
                "same region as the client, other cluster",
                "no locality match (last resort)",
                "no locality match (last resort), other cluster",
            ]
        );
    }

    #[test]
    fn own_cluster_splits_failover_target_levels_too() {
        let eps = two_clusters();
        let policy = FailoverPolicy {
            failover: vec![RegionFailover {
                from: "us-east1".into(),
                to: "us-west1".into(),
            }],
            ..FailoverPolicy::default()
        };
        let mut c = client("us-east1", "us-east1-b", "");
        c.labels.insert(labels::CLUSTER.into(), "east".into());
        assert_eq!(plan_for(&c, &eps, &policy), vec![0, 1, 2, 3, 5, 4]);
    }

    #[test]
    fn class_holds_the_cluster_only_for_labeled_clients_under_the_default_order() {
        let default = FailoverPolicy::default();
        let mut east = client("us-east1", "us-east1-b", "");
        east.labels.insert(labels::CLUSTER.into(), "east".into());
        let mut west = east.clone();
        west.labels.insert(labels::CLUSTER.into(), "west".into());
        assert_eq!(
            LocalityClass::of(&east, &default).to_string(),
            "region=us-east1,zone=us-east1-b,subzone=-,cluster=east"
        );
        assert_ne!(
            LocalityClass::of(&east, &default),
            LocalityClass::of(&west, &default)
        );
        let explicit = FailoverPolicy {
            failover_priority: vec![labels::REGION.into()],
            prefer_own_cluster: false,
            ..FailoverPolicy::default()
        };
        assert_eq!(
            LocalityClass::of(&east, &explicit),
            LocalityClass::of(&west, &explicit)
        );
        assert_eq!(
            LocalityClass::of(&client("us-east1", "us-east1-b", ""), &default).to_string(),
            "region=us-east1,zone=us-east1-b,subzone=-"
        );
    }

    fn registry_of(services: Vec<(&str, Vec<Endpoint>)>) -> crate::model::Registry {
        crate::model::Registry::from_services(services.into_iter().map(|(name, endpoints)| {
            Service {
                traffic_distribution: None,
                id: ServiceId::new("shop", name),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 8080,
                }],
                endpoints,
            }
        }))
    }

    fn input_in(registry: &crate::model::Registry, policy: &FailoverPolicy) -> ClusterInput {
        let svc = registry.services[&ServiceId::new("shop", "checkout")].clone();
        let port = svc.ports[0].clone();
        ClusterInput::new(registry, std::sync::Arc::new(svc), &port, policy)
    }

    fn backup(name: &str) -> crate::policy::BackupService {
        crate::policy::BackupService {
            service: ServiceId::new("shop", name),
            cluster: None,
        }
    }

    #[test]
    fn backups_come_after_every_primary_level_each_ranked_by_locality() {
        let registry = registry_of(vec![
            (
                "checkout",
                vec![
                    ep("us-east1", "us-east1-b", ""), // 0
                    ep("us-west1", "us-west1-a", ""), // 1
                ],
            ),
            (
                "checkout-dr",
                vec![
                    ep("us-west1", "us-west1-a", ""), // 2
                    ep("us-east1", "us-east1-c", ""), // 3
                    ep("us-east1", "us-east1-b", ""), // 4
                ],
            ),
            ("checkout-far", vec![ep("eu-west4", "eu-west4-a", "")]), // 5
        ]);
        let policy = FailoverPolicy {
            backups: vec![backup("checkout-dr"), backup("checkout-far")],
            ..FailoverPolicy::default()
        };
        let input = input_in(&registry, &policy);
        let class = LocalityClass::of(&client("us-east1", "us-east1-b", ""), &policy);
        let plan = priorities(&class, &input, &policy);
        assert_gap_free(&plan, input.len());
        // primary: own zone, then the rest; backup 1 in its own locality order; then backup 2
        assert_eq!(plan.priority_of_each(input.len()), vec![0, 1, 4, 3, 2, 5]);
        let reasons: Vec<String> = plan.levels.iter().map(|l| l.reason.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "same region+zone as the client",
                "no locality match (last resort)",
                "backup 1: shop/checkout-dr, same region+zone as the client",
                "backup 1: shop/checkout-dr, same region as the client",
                "backup 1: shop/checkout-dr, no locality match (last resort)",
                "backup 2: shop/checkout-far, no locality match (last resort)",
            ]
        );
        // A primary without endpoints: the backup's levels start at 0.
        let registry = registry_of(vec![
            ("checkout", vec![]),
            ("checkout-dr", vec![ep("us-east1", "us-east1-b", "")]),
        ]);
        let input = input_in(&registry, &policy);
        let plan = priorities(&class, &input, &policy);
        assert_eq!(plan.levels.len(), 1);
        assert_eq!(plan.levels[0].priority, 0);
        assert_eq!(
            plan.levels[0].reason.backup,
            Some((1, ServiceId::new("shop", "checkout-dr")))
        );
    }

    fn on_network(mut e: Endpoint, network: &str) -> Endpoint {
        e.labels.insert(labels::NETWORK.into(), network.into());
        e
    }

    #[test]
    fn split_horizon_leaves_out_networks_without_a_gateway_and_keys_the_class() {
        let mut registry = registry_of(vec![(
            "checkout",
            vec![
                on_network(ep("us-east1", "us-east1-b", ""), "n1"), // 0
                on_network(ep("us-east1", "us-east1-b", ""), "n2"), // 1
                on_network(ep("us-east1", "us-east1-c", ""), "n3"), // 2: n3 has no gateway
                ep("us-east1", "us-east1-c", ""),                   // 3: no network
            ],
        )]);
        registry.gateways.insert(
            "n2".into(),
            crate::model::NetworkGateway {
                address: "192.0.2.2".parse().unwrap(),
                port: 15443,
            },
        );
        let policy = FailoverPolicy::default();
        let input = input_in(&registry, &policy);
        let on = |network: &str| {
            let mut c = client("us-east1", "us-east1-b", "");
            if !network.is_empty() {
                c.labels.insert(labels::NETWORK.into(), network.into());
            }
            c
        };
        const X: u32 = u32::MAX;
        // (client network, priority of each endpoint; X = left out)
        let table: &[(&str, [u32; 4], &[usize])] = &[
            // n2 through its gateway, n3 unreachable
            ("n1", [0, 0, X, 1], &[2]),
            // on n2: n1 has no gateway
            ("n2", [X, 0, X, 1], &[0, 2]),
            // on n3 itself: n3 direct, n1 has no gateway either
            ("n3", [X, 0, 1, 1], &[0]),
            // a client without a network reaches everything directly, as today
            ("", [0, 0, 1, 1], &[]),
        ];
        for (network, expected, unreachable) in table {
            let class = LocalityClass::of(&on(network), &policy);
            let plan = priorities(&class, &input, &policy);
            assert_gap_free(&plan, input.len());
            assert_eq!(
                plan.priority_of_each(input.len()),
                expected.to_vec(),
                "client on {network:?}"
            );
            assert_eq!(
                &plan.unreachable[..],
                &unreachable[..],
                "client on {network:?}"
            );
        }
        assert_eq!(
            LocalityClass::of(&on("n1"), &policy).to_string(),
            "region=us-east1,zone=us-east1-b,subzone=-,network=n1"
        );
        assert_ne!(
            LocalityClass::of(&on("n1"), &policy),
            LocalityClass::of(&on("n2"), &policy)
        );
    }

    #[test]
    fn no_endpoints_no_levels() {
        let policy = FailoverPolicy::default();
        let class = LocalityClass::of(&client("a", "b", "c"), &policy);
        assert!(priorities(&class, &input_of(&[]), &policy)
            .levels
            .is_empty());
    }

    #[test]
    fn class_only_holds_keys_the_policy_reads() {
        let policy = FailoverPolicy::default();
        let mut a = client("us-east1", "us-east1-b", "");
        a.node_id = "a".into();
        a.labels.insert("app".into(), "x".into());
        let mut b = client("us-east1", "us-east1-b", "");
        b.node_id = "b".into();
        assert_eq!(
            LocalityClass::of(&a, &policy),
            LocalityClass::of(&b, &policy)
        );
        let c = client("us-east1", "us-east1-c", "");
        assert_ne!(
            LocalityClass::of(&a, &policy),
            LocalityClass::of(&c, &policy)
        );
        assert_eq!(
            LocalityClass::of(&a, &policy).to_string(),
            "region=us-east1,zone=us-east1-b,subzone=-"
        );
    }

    pub(crate) fn plain_reason() -> LevelReason {
        LevelReason::plain()
    }

    /// `us-east1/*` → the pattern (no validation: tests write valid ones).
    pub(crate) fn pattern(text: &str) -> crate::policy::LocalityPattern {
        let mut segments: Vec<String> = text.split('/').map(str::to_string).collect();
        let wildcard = segments.last().is_some_and(|s| s == "*");
        if wildcard {
            segments.pop();
        }
        crate::policy::LocalityPattern { segments, wildcard }
    }

    pub(crate) fn rule(from: &str, to: &[(&str, u32)]) -> DistributeRule {
        DistributeRule {
            from: pattern(from),
            to: to.iter().map(|(p, w)| (pattern(p), *w)).collect(),
        }
    }

    #[test]
    fn distribute_puts_the_to_localities_together_at_p0_and_keeps_failover_below() {
        let eps = topology();
        let policy = FailoverPolicy {
            distribute: vec![
                rule(
                    "us-east1/us-east1-b/*",
                    &[("us-east1/us-east1-c/*", 70), ("eu-west4/*", 30)],
                ),
                // Never reached for us-east1-b clients: the first matching rule wins.
                rule("us-east1/*", &[("us-west1/*", 100)]),
            ],
            ..FailoverPolicy::default()
        };
        // (client, expected priority of each endpoint of `topology()`)
        let table: &[(ClientLocality, [u32; 5])] = &[
            // us-east1-c and eu-west4 together at P0; the rest ranked as usual below
            (("us-east1", "us-east1-b", "rack-1"), [1, 2, 0, 3, 0]),
            // the second rule for the region's other clients
            (("us-east1", "us-east1-c", ""), [2, 2, 1, 0, 3]),
            // no rule for this client: the usual plan
            (("us-west1", "us-west1-a", ""), [1, 1, 1, 0, 1]),
            (("", "", ""), [0, 0, 0, 0, 0]),
        ];
        for ((r, z, sz), expected) in table {
            let got = plan_for(&client(r, z, sz), &eps, &policy);
            assert_eq!(&got[..], &expected[..], "client {r}/{z}/{sz}");
        }
        let class = LocalityClass::of(&client("us-east1", "us-east1-b", "rack-1"), &policy);
        let plan = priorities(&class, &input_of(&eps), &policy);
        assert_eq!(
            plan.levels[0].reason.distribute,
            Some(policy.distribute[0].clone())
        );
        assert_eq!(
            plan.levels[0].reason.to_string(),
            "distribute from us-east1/us-east1-b/*: us-east1/us-east1-c/* 70%, eu-west4/* 30%"
        );
        assert_eq!(
            plan.levels[1].reason.to_string(),
            "same region+zone+subzone as the client"
        );
        assert!(plan.levels[1..]
            .iter()
            .all(|l| l.reason.distribute.is_none()));
    }

    #[test]
    fn distribute_without_endpoints_in_its_localities_changes_nothing() {
        let eps = topology();
        let policy = FailoverPolicy {
            distribute: vec![rule("us-east1/*", &[("ap-south1/*", 100)])],
            ..FailoverPolicy::default()
        };
        let c = client("us-east1", "us-east1-b", "rack-1");
        assert_eq!(plan_for(&c, &eps, &policy), vec![0, 1, 2, 3, 3]);
        let class = LocalityClass::of(&c, &policy);
        let plan = priorities(&class, &input_of(&eps), &policy);
        assert!(plan.levels.iter().all(|l| l.reason.distribute.is_none()));
    }

    #[test]
    fn distribute_applies_to_the_primary_only_and_backups_follow_it() {
        let registry = registry_of(vec![
            (
                "checkout",
                vec![
                    ep("us-east1", "us-east1-b", ""), // 0
                    ep("us-west1", "us-west1-a", ""), // 1
                    ep("us-east1", "us-east1-c", ""), // 2
                ],
            ),
            (
                "checkout-dr",
                vec![
                    ep("us-west1", "us-west1-a", ""), // 3: matches `to`, but is a backup
                    ep("us-east1", "us-east1-b", ""), // 4
                ],
            ),
        ]);
        let policy = FailoverPolicy {
            backups: vec![backup("checkout-dr")],
            distribute: vec![rule(
                "us-east1/*",
                &[("us-west1/us-west1-a/*", 50), ("us-east1/us-east1-b/*", 50)],
            )],
            ..FailoverPolicy::default()
        };
        let input = input_in(&registry, &policy);
        let class = LocalityClass::of(&client("us-east1", "us-east1-c", ""), &policy);
        let plan = priorities(&class, &input, &policy);
        assert_gap_free(&plan, input.len());
        // P0: the distribute localities; P1: own zone; then the backup's levels in its own order
        assert_eq!(plan.priority_of_each(input.len()), vec![0, 0, 1, 3, 2]);
        assert_eq!(plan.levels[2].reason.backup.as_ref().map(|b| b.0), Some(1));
        assert!(plan.levels[2].reason.distribute.is_none());
    }

    #[test]
    fn distribute_keys_the_class_by_full_locality() {
        let policy = FailoverPolicy {
            failover_priority: vec![labels::REGION.into()],
            distribute: vec![rule("us-east1/us-east1-b/*", &[("us-west1/*", 100)])],
            ..FailoverPolicy::default()
        };
        // Same region, different zone: different classes (one gets the distribute level).
        let b = LocalityClass::of(&client("us-east1", "us-east1-b", ""), &policy);
        let c = LocalityClass::of(&client("us-east1", "us-east1-c", ""), &policy);
        assert_ne!(b, c);
        let eps = topology();
        assert_eq!(
            plan_for(&client("us-east1", "us-east1-b", ""), &eps, &policy),
            vec![1, 1, 1, 0, 2]
        );
        assert_eq!(
            plan_for(&client("us-east1", "us-east1-c", ""), &eps, &policy),
            vec![0, 0, 0, 1, 1]
        );
    }

    fn on_net(mut e: Endpoint, network: &str) -> Endpoint {
        e.labels.insert(labels::NETWORK.into(), network.into());
        e
    }

    #[test]
    fn pinned_keys_compare_with_their_value_whoever_the_client_is() {
        let eps = vec![
            on_net(ep("us-east1", "us-east1-b", ""), "n1"), // 0
            on_net(ep("us-east1", "us-east1-b", ""), "n2"), // 1
            on_net(ep("us-west1", "us-west1-a", ""), "n1"), // 2
            on_net(ep("us-west1", "us-west1-a", ""), "n2"), // 3
            ep("us-east1", "us-east1-b", ""),               // 4: no network label
        ];
        let policy = FailoverPolicy {
            failover_priority: vec![
                crate::policy::PriorityKey::pinned(labels::NETWORK, "n1"),
                labels::REGION.into(),
            ],
            ..FailoverPolicy::default()
        };
        // The client's own network does not matter (and is not a key of its class beyond the
        // split-horizon refinement, which needs no gateway here: no network on the clients).
        for (r, z) in [("us-east1", "us-east1-b"), ("us-west1", "us-west1-a")] {
            let got = plan_for(&client(r, z, ""), &eps, &policy);
            let (near, far) = if r == "us-east1" { (0, 2) } else { (2, 0) };
            let mut expected = vec![2; 5];
            expected[near] = 0;
            expected[far] = 1;
            assert_eq!(got, expected, "client in {r}");
        }
        let class = LocalityClass::of(&client("us-east1", "us-east1-b", ""), &policy);
        assert_eq!(class.to_string(), "region=us-east1");
        let plan = priorities(&class, &input_of(&eps), &policy);
        let reasons: Vec<String> = plan.levels.iter().map(|l| l.reason.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "network=n1 (pinned), same region as the client",
                "network=n1 (pinned)",
                "no locality match (last resort)",
            ]
        );
        // A pin after a compared key.
        let policy = FailoverPolicy {
            failover_priority: vec![
                labels::REGION.into(),
                crate::policy::PriorityKey::pinned(labels::NETWORK, "n2"),
            ],
            ..FailoverPolicy::default()
        };
        let c = client("us-west1", "us-west1-a", "");
        assert_eq!(plan_for(&c, &eps, &policy), vec![2, 2, 1, 0, 2]);
        let class = LocalityClass::of(&c, &policy);
        let plan = priorities(&class, &input_of(&eps), &policy);
        assert_eq!(
            plan.levels[0].reason.to_string(),
            "same region as the client, network=n2 (pinned)"
        );
    }
}
