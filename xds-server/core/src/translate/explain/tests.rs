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
        x.notes[1]
            .starts_with("10.0.3.1:8080 is left out: it is on network n3, which has no gateway"),
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
            "outlier detection is disabled: failing requests do not eject endpoints".to_string(),
        ]
    );
    let x = explain(
        &class_in("r1", "r1-a", &policy),
        &plain(&svc),
        &FailoverPolicy::default(),
    );
    assert!(x.notes.is_empty());
}
