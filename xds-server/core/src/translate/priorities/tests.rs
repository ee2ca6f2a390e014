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
    crate::model::Registry::from_services(services.into_iter().map(|(name, endpoints)| Service {
        traffic_distribution: None,
        id: ServiceId::new("shop", name),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints,
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
