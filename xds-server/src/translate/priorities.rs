//! Priority assignment: which endpoints a client should use first, and which it fails over to.
//!
//! Pure: the answer depends only on the client's [`LocalityClass`], the endpoints and the policy, so every
//! client of one class can share one computed (and encoded) answer.

use std::fmt;

use crate::model::{labels, ClientInfo, Endpoint};
use crate::policy::FailoverPolicy;

/// The client's values for exactly the label keys a policy looks at. Two clients with the same class get
/// the same priorities for every service under that policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalityClass {
    /// `(key, value)` in the policy's key order; `None` when the client does not have the label.
    pub values: Vec<(String, Option<String>)>,
}

impl LocalityClass {
    pub fn of(client: &ClientInfo, policy: &FailoverPolicy) -> Self {
        Self {
            values: policy
                .client_keys()
                .into_iter()
                .map(|key| (key.to_string(), client.label(key).map(str::to_string)))
                .collect(),
        }
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
        _ => key,
    }
}

/// Why a level sits where it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LevelReason {
    /// The leading policy keys on which these endpoints match the client.
    pub matched_keys: Vec<String>,
    /// Set when the level exists because of a `failover: {from, to}` rule.
    pub failover_rule: Option<(String, String)>,
}

impl fmt::Display for LevelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.matched_keys.is_empty() {
            let keys: Vec<&str> = self.matched_keys.iter().map(|k| short_key(k)).collect();
            write!(f, "same {} as the client", keys.join("+"))
        } else if let Some((from, to)) = &self.failover_rule {
            write!(f, "failover region {to} (rule {from} -> {to})")
        } else {
            f.write_str("no locality match (last resort)")
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
}

impl PriorityPlan {
    /// The priority of each endpoint, indexed like the input slice.
    pub fn priority_of_each(&self, endpoint_count: usize) -> Vec<u32> {
        let mut out = vec![0; endpoint_count];
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
/// region's failover targets (targets before everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Rank {
    unmatched: usize,
    failover: usize,
}

pub fn priorities(
    class: &LocalityClass,
    endpoints: &[Endpoint],
    policy: &FailoverPolicy,
) -> PriorityPlan {
    let keys = &policy.failover_priority;
    let client_region = class.value(labels::REGION).unwrap_or("");
    let targets: Vec<&str> = if client_region.is_empty() {
        Vec::new()
    } else {
        policy.failover_targets(client_region).collect()
    };

    let ranks: Vec<Rank> = endpoints
        .iter()
        .map(|ep| {
            // A label the client lacks matches nothing: a client that does not know its zone cannot be
            // "in the same zone" as anyone.
            let matched = keys
                .iter()
                .take_while(|key| match (class.value(key), ep.label(key)) {
                    (Some(c), Some(e)) => c == e,
                    _ => false,
                })
                .count();
            let failover = ep
                .label(labels::REGION)
                .and_then(|region| targets.iter().position(|t| *t == region))
                .unwrap_or(targets.len());
            Rank {
                unmatched: keys.len() - matched,
                failover,
            }
        })
        .collect();

    let mut distinct: Vec<Rank> = ranks.clone();
    distinct.sort();
    distinct.dedup();

    let levels = distinct
        .iter()
        .enumerate()
        .map(|(priority, rank)| {
            let matched = keys.len() - rank.unmatched;
            let failover_rule = (rank.failover < targets.len()).then(|| {
                (
                    client_region.to_string(),
                    targets[rank.failover].to_string(),
                )
            });
            PriorityLevel {
                priority: priority as u32,
                reason: LevelReason {
                    matched_keys: keys[..matched].to_vec(),
                    failover_rule,
                },
                endpoints: ranks
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| *r == rank)
                    .map(|(i, _)| i)
                    .collect(),
            }
        })
        .collect();
    PriorityPlan { levels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Health, Locality};
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

    fn plan_for(client: &ClientInfo, eps: &[Endpoint], policy: &FailoverPolicy) -> Vec<u32> {
        let class = LocalityClass::of(client, policy);
        let plan = priorities(&class, eps, policy);
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
        assert_eq!(total, n, "every endpoint in exactly one level");
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
        let plan = priorities(&class, &eps, &policy);
        assert_eq!(
            plan.levels[3].reason.to_string(),
            "failover region eu-west4 (rule us-east1 -> eu-west4)"
        );
        assert_eq!(
            plan.levels[4].reason.to_string(),
            "failover region us-west1 (rule us-east1 -> us-west1)"
        );
        let west = LocalityClass::of(&client("us-west1", "us-west1-a", ""), &policy);
        let plan = priorities(&west, &eps, &policy);
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
        let plan = priorities(&class, &eps, &policy);
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

    #[test]
    fn no_endpoints_no_levels() {
        let policy = FailoverPolicy::default();
        let class = LocalityClass::of(&client("a", "b", "c"), &policy);
        assert!(priorities(&class, &[], &policy).levels.is_empty());
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
}
