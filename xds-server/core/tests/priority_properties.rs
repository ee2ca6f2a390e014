//! Property tests of the priority assignment: random topologies, clients, clusters and failover rules,
//! checked against the rules the README promises (section "Priorities").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use xds_core::model::{
    labels, ClientInfo, Endpoint, Health, Locality, Service, ServiceId, ServicePort,
};
use xds_core::policy::{
    DistributeRule, FailoverPolicy, LocalityPattern, PriorityKey, RegionFailover,
};
use xds_core::translate::input::ClusterInput;
use xds_core::translate::resources::load_assignment;
use xds_core::translate::{priorities, LocalityClass, PriorityPlan};

const REGIONS: [&str; 3] = ["r1", "r2", "r3"];
const ZONES: [&str; 3] = ["a", "b", "c"];
const SUBZONES: [&str; 3] = ["", "s1", "s2"];
const CLUSTERS: [&str; 3] = ["", "east", "west"];
const NAMED_SUBZONES: [&str; 2] = ["s1", "s2"];

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    (0..options.len()).prop_map(move |i| options[i])
}

/// A locality where zones are scoped by region (`r1-a`), as real zone names are.
fn locality() -> impl Strategy<Value = Locality> {
    (pick(&REGIONS), pick(&ZONES), pick(&SUBZONES))
        .prop_map(|(r, z, s)| Locality::new(r, &format!("{r}-{z}"), s))
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (locality(), pick(&CLUSTERS), 1u8..=250, any::<bool>()).prop_map(|(loc, cluster, ip, up)| {
        let mut labels = BTreeMap::new();
        if !cluster.is_empty() {
            labels.insert(labels::CLUSTER.to_string(), cluster.to_string());
        }
        Endpoint {
            address: format!("10.0.0.{ip}").parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality: loc,
            labels,
            health: if up {
                Health::Healthy
            } else {
                Health::Unhealthy
            },
            identity: None,
        }
    })
}

/// A client that may not know every level of its locality.
fn client() -> impl Strategy<Value = ClientInfo> {
    (locality(), 0usize..4, pick(&CLUSTERS)).prop_map(|(mut loc, known, cluster)| {
        if known < 3 {
            loc.subzone.clear();
        }
        if known < 2 {
            loc.zone.clear();
        }
        if known < 1 {
            loc.region.clear();
        }
        let mut labels = BTreeMap::new();
        if !cluster.is_empty() {
            labels.insert(labels::CLUSTER.to_string(), cluster.to_string());
        }
        ClientInfo {
            node_id: "prop".into(),
            locality: loc,
            labels,
            ..ClientInfo::default()
        }
    })
}

/// Region failover rules as validation admits them: no self-rules, no duplicates.
fn failover_rules() -> impl Strategy<Value = Vec<RegionFailover>> {
    proptest::collection::vec((pick(&REGIONS), pick(&REGIONS)), 0..4).prop_map(|pairs| {
        let mut seen = BTreeSet::new();
        pairs
            .into_iter()
            .filter(|(from, to)| from != to && seen.insert((*from, *to)))
            .map(|(from, to)| RegionFailover {
                from: from.into(),
                to: to.into(),
            })
            .collect()
    })
}

/// How many of region, zone, subzone (in order) the endpoint shares with the client; a level the
/// client does not know matches nothing.
fn matched(client: &ClientInfo, ep: &Endpoint) -> usize {
    let c = &client.locality;
    let e = &ep.locality;
    [
        (&c.region, &e.region),
        (&c.zone, &e.zone),
        (&c.subzone, &e.subzone),
    ]
    .iter()
    .take_while(|(c, e)| !c.is_empty() && c == e)
    .count()
}

/// A `distribute` pattern over the test topology: `*`, `r1/*`, `r1/r1-a/*` or `r1/r1-a/s1`.
fn pattern() -> impl Strategy<Value = LocalityPattern> {
    (
        0usize..4,
        pick(&REGIONS),
        pick(&ZONES),
        pick(&NAMED_SUBZONES),
    )
        .prop_map(|(depth, r, z, s)| {
            let all = [r.to_string(), format!("{r}-{z}"), s.to_string()];
            LocalityPattern {
                segments: all[..depth].to_vec(),
                wildcard: depth < 3,
            }
        })
}

/// Rules as validation admits them: `to` patterns that do not overlap, weights 1..=100 summing to
/// 100 (cut points of 0..100).
fn distribute_rules() -> impl Strategy<Value = Vec<DistributeRule>> {
    let rule = (
        pattern(),
        proptest::collection::vec(pattern(), 1..5),
        proptest::sample::subsequence((1u32..100).collect::<Vec<_>>(), 0..4),
    )
        .prop_map(|(from, candidates, cuts)| {
            let mut to: Vec<LocalityPattern> = Vec::new();
            for p in candidates {
                if !to.iter().any(|q| q.overlaps(&p)) {
                    to.push(p);
                }
            }
            // As many weights as patterns: cut points (sorted) of 0..100, as many as needed.
            let mut bounds = vec![0u32];
            bounds.extend(cuts.into_iter().take(to.len() - 1));
            while bounds.len() < to.len() {
                // Too few cut points: split the widest gap (always ≥ 2 wide here).
                let (at, _) = bounds
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .chain(std::iter::once(100 - bounds[bounds.len() - 1]))
                    .enumerate()
                    .max_by_key(|(_, gap)| *gap)
                    .unwrap();
                let hi = bounds.get(at + 1).copied().unwrap_or(100);
                bounds.insert(at + 1, (bounds[at] + hi) / 2);
            }
            bounds.push(100);
            let weights: Vec<u32> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
            DistributeRule {
                from,
                to: to.into_iter().zip(weights).collect(),
            }
        });
    proptest::collection::vec(rule, 0..3)
}

fn input_of(endpoints: &[Endpoint]) -> ClusterInput {
    let service = Arc::new(Service {
        id: ServiceId::new("shop", "checkout"),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints: endpoints.to_vec(),
        traffic_distribution: None,
        identity: None,
    });
    ClusterInput::plain(service.clone(), &service.ports[0])
}

fn plan_for(client: &ClientInfo, endpoints: &[Endpoint], policy: &FailoverPolicy) -> PriorityPlan {
    priorities(
        &LocalityClass::of(client, policy),
        &input_of(endpoints),
        policy,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn priority_assignment_keeps_its_promises(
        endpoints in proptest::collection::vec(endpoint(), 0..24),
        client in client(),
        failover in failover_rules(),
    ) {
        let policy = FailoverPolicy { failover, ..FailoverPolicy::default() };
        let plan = plan_for(&client, &endpoints, &policy);
        let prio = plan.priority_of_each(endpoints.len());

        // Gap-free levels 0..N, none empty, every endpoint in exactly one.
        let mut seen = vec![0usize; endpoints.len()];
        for (i, level) in plan.levels.iter().enumerate() {
            prop_assert_eq!(level.priority as usize, i, "levels are numbered without gaps");
            prop_assert!(!level.endpoints.is_empty(), "no empty level");
            for &e in &level.endpoints {
                seen[e] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "every endpoint in exactly one level: {:?}", seen);

        // The client's own locality (fully known) is level 0 when it has endpoints there.
        let own: Vec<usize> = (0..endpoints.len()).filter(|&i| matched(&client, &endpoints[i]) == 3).collect();
        if !own.is_empty() {
            let own_cluster = client.label(labels::CLUSTER);
            let best_own = own.iter().filter(|&&i| {
                own_cluster.is_none_or(|c| endpoints[i].label(labels::CLUSTER).is_none_or(|e| e == c))
            });
            for &i in best_own {
                prop_assert_eq!(prio[i], 0, "own locality (and own cluster) is P0: {:?}", &endpoints[i]);
            }
        }

        // Never below an endpoint that matches the client on fewer leading keys.
        for a in 0..endpoints.len() {
            for b in 0..endpoints.len() {
                if matched(&client, &endpoints[a]) > matched(&client, &endpoints[b]) {
                    prop_assert!(prio[a] < prio[b],
                        "{:?} matches more keys than {:?} but has priority {} >= {}",
                        endpoints[a].locality, endpoints[b].locality, prio[a], prio[b]);
                }
            }
        }

        // Failover targets rank right after the client's own region: after every endpoint of that
        // region, before every other region, in the order the rules list them.
        if !client.locality.region.is_empty() {
            let targets: Vec<&str> = policy.failover_targets(&client.locality.region).collect();
            let place = |ep: &Endpoint| -> usize {
                if ep.locality.region == client.locality.region {
                    0
                } else {
                    targets.iter().position(|t| *t == ep.locality.region).map_or(targets.len() + 1, |p| p + 1)
                }
            };
            for a in 0..endpoints.len() {
                for b in 0..endpoints.len() {
                    if place(&endpoints[a]) < place(&endpoints[b]) {
                        prop_assert!(prio[a] < prio[b],
                            "region {} (place {}) must rank before region {} (place {}); targets {:?}",
                            endpoints[a].locality.region, place(&endpoints[a]),
                            endpoints[b].locality.region, place(&endpoints[b]), targets);
                    }
                }
            }
        }
    }

    /// `distribute`: for a client whose locality matches a rule's `from` (the first such rule), P0
    /// is exactly the endpoints in the rule's `to` localities (when there are any), the other
    /// endpoints keep the plan they would have without the rule, one level lower; no rule or no
    /// endpoint there: the plan without distribute.
    ///
    /// Weights within a level sum as configured: in P0 every `to` pattern that has endpoints there
    /// gets exactly weight(p) / Σ weight(q over the patterns with endpoints) of the level's
    /// locality weight (a pattern with no endpoints gets nothing and the others are renormalised:
    /// with 50/30/20 and the 20 pattern empty, 5/8 and 3/8); every locality weight is ≥ 1; in
    /// every other level a locality's weight is its host count.
    #[test]
    fn distribute_makes_p0_and_weights_sum_as_configured(
        endpoints in proptest::collection::vec(endpoint(), 0..24),
        client in client(),
        distribute in distribute_rules(),
    ) {
        let policy = FailoverPolicy { distribute, ..FailoverPolicy::default() };
        let plain = FailoverPolicy::default();
        let plan = plan_for(&client, &endpoints, &policy);
        let prio = plan.priority_of_each(endpoints.len());
        let rule = policy.distribution_for(client.locality.parts());
        let in_to = |ep: &Endpoint| {
            rule.is_some_and(|r| r.to.iter().any(|(p, _)| p.matches(ep.locality.parts())))
        };
        let chosen: Vec<usize> = (0..endpoints.len()).filter(|&i| in_to(&endpoints[i])).collect();
        if chosen.is_empty() {
            prop_assert_eq!(prio, plan_for(&client, &endpoints, &plain).priority_of_each(endpoints.len()));
            prop_assert!(plan.levels.iter().all(|l| l.reason.distribute.is_none()));
        } else {
            prop_assert_eq!(&plan.levels[0].endpoints, &chosen);
            prop_assert_eq!(plan.levels[0].reason.distribute.as_ref(), rule);
            prop_assert!(plan.levels[1..].iter().all(|l| l.reason.distribute.is_none()));
            let rest: Vec<usize> = (0..endpoints.len()).filter(|i| !chosen.contains(i)).collect();
            let others: Vec<Endpoint> = rest.iter().map(|&i| endpoints[i].clone()).collect();
            let usual = plan_for(&client, &others, &plain).priority_of_each(others.len());
            for (j, &i) in rest.iter().enumerate() {
                prop_assert_eq!(prio[i], usual[j] + 1, "{:?} keeps its usual place below P0", &endpoints[i]);
            }
        }

        let class = LocalityClass::of(&client, &policy);
        let input = input_of(&endpoints);
        let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
        let mut level_total: BTreeMap<u32, u64> = BTreeMap::new();
        // Without rules the policy sends no weights (checked below).
        for g in cla.endpoints.iter().filter(|_| !policy.distribute.is_empty()) {
            let w = g.load_balancing_weight.as_ref().map(|w| w.value);
            prop_assert!(w.is_some_and(|w| w >= 1), "every locality carries a weight ≥ 1");
            *level_total.entry(g.priority).or_default() += u64::from(w.unwrap());
            if g.priority > 0 || chosen.is_empty() {
                prop_assert_eq!(w, Some(g.lb_endpoints.len() as u32), "by host count outside distribute");
            }
        }
        if let (Some(rule), false) = (rule, chosen.is_empty()) {
            let total = level_total[&0];
            let mut per_pattern = vec![0u64; rule.to.len()];
            for g in cla.endpoints.iter().filter(|g| g.priority == 0) {
                let l = g.locality.as_ref().unwrap();
                let at = rule.to.iter().position(|(p, _)| p.matches([&l.region, &l.zone, &l.sub_zone]));
                prop_assert!(at.is_some(), "a P0 locality outside every `to` pattern: {:?}", l);
                per_pattern[at.unwrap()] += u64::from(g.load_balancing_weight.unwrap().value);
            }
            let present: u64 = rule.to.iter().zip(&per_pattern)
                .filter(|(_, &w)| w > 0)
                .map(|((_, weight), _)| u64::from(*weight))
                .sum();
            for ((p, weight), got) in rule.to.iter().zip(&per_pattern) {
                let has_endpoints = chosen.iter().any(|&i| p.matches(endpoints[i].locality.parts()));
                prop_assert_eq!(*got > 0, has_endpoints, "pattern {} has weight iff it has endpoints", p);
                if has_endpoints {
                    // got / total == weight / present, exactly.
                    prop_assert_eq!(got * present, u64::from(*weight) * total,
                        "pattern {} ({}%) gets {}/{} of P0; present weights {}", p, weight, got, total, present);
                }
            }
        }
        // A policy without distribute sends no weights at all.
        let plain_plan = plan_for(&client, &endpoints, &plain);
        let plain_class = LocalityClass::of(&client, &plain);
        let cla = load_assignment("checkout.shop:8080", &input, &plain_class, &plain_plan, &plain);
        prop_assert!(cla.endpoints.iter().all(|g| g.load_balancing_weight.is_none()));
    }

    /// Never below an endpoint that matches fewer leading keys, for any `failoverPriority` mixing
    /// compared keys and pinned ones (`key=value`, matched against the fixed value whoever the
    /// client is).
    #[test]
    fn leading_key_monotonicity_holds_with_pinned_keys(
        endpoints in proptest::collection::vec(endpoint(), 0..20),
        client in client(),
        keys in proptest::collection::vec(0usize..7, 1..4),
        failover in failover_rules(),
    ) {
        let choices = [
            PriorityKey::label(labels::REGION),
            PriorityKey::label(labels::ZONE),
            PriorityKey::label(labels::CLUSTER),
            PriorityKey::pinned(labels::CLUSTER, "east"),
            PriorityKey::pinned(labels::CLUSTER, "west"),
            PriorityKey::pinned(labels::REGION, "r2"),
            PriorityKey::pinned(labels::SUBZONE, "s1"),
        ];
        let mut failover_priority: Vec<PriorityKey> = Vec::new();
        for k in keys {
            if !failover_priority.contains(&choices[k]) {
                failover_priority.push(choices[k].clone());
            }
        }
        let policy = FailoverPolicy { failover_priority: failover_priority.clone(), failover, ..FailoverPolicy::default() };
        let plan = plan_for(&client, &endpoints, &policy);
        let prio = plan.priority_of_each(endpoints.len());
        let leading = |ep: &Endpoint| -> usize {
            failover_priority
                .iter()
                .take_while(|k| match (k.wanted(client.label(&k.label)), ep.label(&k.label)) {
                    (Some(want), Some(have)) => want == have,
                    _ => false,
                })
                .count()
        };
        for a in 0..endpoints.len() {
            for b in 0..endpoints.len() {
                if leading(&endpoints[a]) > leading(&endpoints[b]) {
                    prop_assert!(prio[a] < prio[b],
                        "keys {:?}: {:?} matches {} leading keys, {:?} {}, but priorities {} >= {}",
                        failover_priority, &endpoints[a], leading(&endpoints[a]),
                        &endpoints[b], leading(&endpoints[b]), prio[a], prio[b]);
                }
            }
        }
        // The level reason names exactly the leading keys its endpoints match.
        for level in &plan.levels {
            for &i in &level.endpoints {
                prop_assert_eq!(level.reason.matched_keys.len(), leading(&endpoints[i]));
            }
        }
    }

    #[test]
    fn the_same_class_gets_the_same_plan_whatever_else_the_client_says(
        endpoints in proptest::collection::vec(endpoint(), 0..16),
        client in client(),
        namespace in "[a-z]{1,8}",
    ) {
        // Clients share one encoded answer per class: anything outside the class must not matter.
        let policy = FailoverPolicy::default();
        let mut other = client.clone();
        other.node_id = "someone-else".into();
        other.namespace = Some(namespace);
        other.labels.insert("team".into(), "x".into());
        prop_assert_eq!(LocalityClass::of(&client, &policy), LocalityClass::of(&other, &policy));
        prop_assert_eq!(plan_for(&client, &endpoints, &policy), plan_for(&other, &endpoints, &policy));
    }
}
