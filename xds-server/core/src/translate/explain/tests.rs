use super::*;
use crate::model::{ClientInfo, Endpoint, Service};
use crate::testing::{envoy, mesh};
use crate::translate::resources::load_assignment;

fn ep(ip: &str, region: &str, zone: &str, health: Health) -> Endpoint {
    mesh::endpoint(ip, Locality::new(region, zone, ""), health)
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
    mesh::shop_service("checkout", 8080, endpoints)
}

fn plain(svc: &Service) -> ClusterInput {
    ClusterInput::plain(std::sync::Arc::new(svc.clone()), &svc.ports[0])
}

fn class_in(region: &str, zone: &str, policy: &FailoverPolicy) -> LocalityClass {
    LocalityClass::of(&mesh::client(Locality::new(region, zone, "")), policy)
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
        failover: vec![mesh::failover("r1", "r3"), mesh::failover("r1", "r2")],
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
                        let (address, port) = envoy::host(lb);
                        let zone = g.locality.as_ref().unwrap().zone.clone();
                        (g.priority, address, port as u16, zone)
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
    use crate::model::Registry;
    let on = |ip: &str, zone: &str, health: Health, net: &str| {
        mesh::on_network(ep(ip, "r1", zone, health), net)
    };
    let svc = |name: &str, endpoints: Vec<Endpoint>| mesh::shop_service(name, 8080, endpoints);
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
    mesh::add_gateways(&mut registry, &[("n2", "192.0.2.2")]);
    let policy = FailoverPolicy {
        backups: vec![
            mesh::backup("checkout-dr", None),
            mesh::backup("gone", None),
        ],
        ..FailoverPolicy::default()
    };
    let input = mesh::cluster_input(&registry, &primary, &policy);
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
        failover: vec![mesh::failover("r1", "r2")],
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

#[test]
fn notes_say_which_servers_an_mtls_client_accepts() {
    let strict = FailoverPolicy {
        mtls: crate::policy::MtlsMode::Strict,
        ..FailoverPolicy::default()
    };
    let naming_notes = |svc: &Service, policy: &FailoverPolicy| -> Vec<String> {
        explain(&class_in("r1", "r1-a", policy), &plain(svc), policy)
            .notes
            .into_iter()
            .filter(|n| n.starts_with("mTLS"))
            .collect()
    };
    let mut svc = nine_zones();
    assert!(naming_notes(&svc, &FailoverPolicy::default()).is_empty());
    assert_eq!(
        naming_notes(&svc, &strict),
        [
            "mTLS: any certificate of the trust bundle is accepted (no identity known for the \
          service or one of its backups)"
        ]
    );
    svc.endpoints[0] = mesh::with_identity(svc.endpoints[0].clone(), "spiffe://td/ns/shop/sa/a");
    svc.endpoints[1] = mesh::with_identity(svc.endpoints[1].clone(), "spiffe://td/ns/shop/sa/b");
    assert_eq!(
        naming_notes(&svc, &strict),
        ["mTLS: servers must present spiffe://td/ns/shop/sa/a or spiffe://td/ns/shop/sa/b"]
    );
}

#[test]
fn a_grpc_client_is_explained_with_a_whole_priority_failing_over_and_no_spillover() {
    let mut svc = nine_zones();
    let policy = failover_policy();
    let class = class_in("r1", "r1-a", &policy);
    // Half of the region's other zones draining: Envoy spills 30% onward, gRPC does not.
    for e in svc
        .endpoints
        .iter_mut()
        .filter(|e| e.locality.zone == "r1-b" || e.locality.zone == "r1-a")
    {
        e.health = if e.locality.zone == "r1-a" {
            Health::Unhealthy
        } else {
            Health::Draining
        };
    }
    let envoy = explain(&class, &plain(&svc), &policy);
    assert_eq!(envoy.load, vec![0, 70, 30, 0]);
    assert_eq!(envoy.client_kind, ClientKind::Envoy);
    let grpc = explain_grpc(&class, &plain(&svc), &policy);
    assert_eq!(grpc.client_kind, ClientKind::Grpc);
    assert_eq!(grpc.load, vec![0, 100, 0, 0]);
    assert_eq!(
        grpc.levels
            .iter()
            .map(|l| l.load_percent)
            .collect::<Vec<_>>(),
        grpc.load
    );
    // The same levels as Envoy's.
    let endpoints = |x: &Explanation| {
        x.levels
            .iter()
            .map(|l| (l.priority, l.endpoints.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(endpoints(&grpc), endpoints(&envoy));
    assert_eq!(grpc.notes[0], GRPC_FAILOVER_NOTE);
    assert!(
        grpc.notes.iter().any(|n| n.contains("failure percentage")),
        "{:?}",
        grpc.notes
    );
    assert!(!grpc.notes.iter().any(|n| n.contains("mtls")));
    let strict = FailoverPolicy {
        mtls: MtlsMode::Strict,
        ..policy.clone()
    };
    let grpc = explain_grpc(&class, &plain(&svc), &strict);
    assert!(
        grpc.notes
            .iter()
            .any(|n| n.starts_with("mtls: STRICT is Envoy's")),
        "{:?}",
        grpc.notes
    );
    // Nothing healthy: no panic mode, calls fail.
    let panicky = FailoverPolicy {
        panic_threshold: 50,
        ..policy
    };
    for e in svc.endpoints.iter_mut() {
        e.health = Health::Unhealthy;
    }
    let grpc = explain_grpc(&class, &plain(&svc), &panicky);
    assert_eq!(grpc.load, vec![0, 0, 0, 0]);
    assert!(grpc.no_healthy_upstream && !grpc.panic);
}

#[test]
fn a_fleet_ejected_zone_is_unhealthy_in_the_explanation_and_named_in_a_note() {
    let svc = nine_zones();
    let policy = failover_policy();
    let class = class_in("r1", "r1-a", &policy);
    let mut input = plain(&svc);
    let before = explain(&class, &input, &policy);
    assert_eq!(before.load[0], 100);
    input.ejected = [Locality::new("r1", "r1-a", "")].into();
    let after = explain(&class, &input, &policy);
    // The same levels; the client's own zone (P0) is sent UNHEALTHY, so P0 takes no load.
    assert_eq!(
        after.levels.iter().map(zones).collect::<Vec<_>>(),
        before.levels.iter().map(zones).collect::<Vec<_>>()
    );
    assert_eq!(after.levels[0].endpoints[0].health, "UNHEALTHY");
    assert_eq!(after.levels[0].healthy, 0);
    assert_eq!(after.levels[1].endpoints[0].health, "HEALTHY");
    assert_eq!(after.load[0], 0);
    assert_eq!(after.load[1], 100);
    assert!(
        after
            .notes
            .iter()
            .any(|n| n.starts_with("locality r1/r1-a/- is ejected by the fleet verdict")),
        "{:?}",
        after.notes
    );
    assert!(!before.notes.iter().any(|n| n.contains("fleet verdict")));
}
