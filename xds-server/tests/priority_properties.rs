//! Property tests of the priority assignment: random topologies, clients, clusters and failover rules,
//! checked against the rules the README promises (section "Priorities").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use xds_server::model::{
    labels, ClientInfo, Endpoint, Health, Locality, Service, ServiceId, ServicePort,
};
use xds_server::policy::{FailoverPolicy, RegionFailover};
use xds_server::translate::input::ClusterInput;
use xds_server::translate::{priorities, LocalityClass, PriorityPlan};

const REGIONS: [&str; 3] = ["r1", "r2", "r3"];
const ZONES: [&str; 3] = ["a", "b", "c"];
const SUBZONES: [&str; 3] = ["", "s1", "s2"];
const CLUSTERS: [&str; 3] = ["", "east", "west"];

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

fn plan_for(client: &ClientInfo, endpoints: &[Endpoint], policy: &FailoverPolicy) -> PriorityPlan {
    let service = Arc::new(Service {
        traffic_distribution: None,
        id: ServiceId::new("shop", "checkout"),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints: endpoints.to_vec(),
    });
    let input = ClusterInput::plain(service.clone(), &service.ports[0]);
    priorities(&LocalityClass::of(client, policy), &input, policy)
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
