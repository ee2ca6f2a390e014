use super::*;
use crate::admin::api::fixtures::{ep, per_port_snapshot, service, snapshot, WEB_HTTP_POLICY};
use std::sync::Arc;
use xds_core::model::{Health, Locality, Registry};
use xds_core::policy::parse::parse_policies;
use xds_core::policy::PolicySet;
use xds_core::snapshot::TranslateSettings;

#[test]
fn explain_gives_levels_reasons_and_load_for_a_manual_client() {
    let snap = snapshot(PolicySet::default());
    let client = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    let r = explain_for(&snap, "checkout", None, &client, "by hand".into()).unwrap();
    assert_eq!(r.policy, "built-in");
    assert_eq!(r.explanations.len(), 1);
    let e = &r.explanations[0];
    assert_eq!(e.cluster, "checkout.shop:8080");
    let zones: Vec<Vec<String>> = e
        .levels
        .iter()
        .map(|l| {
            l.endpoints
                .iter()
                .map(|ep| ep.locality.clone().unwrap().zone)
                .collect()
        })
        .collect();
    assert_eq!(
        zones,
        vec![vec!["us-east1-b"], vec!["us-east1-c"], vec!["us-west1-a"]]
    );
    assert_eq!(e.load, vec![100, 0, 0]);
    assert!(
        e.levels[0].reason.contains("zone"),
        "{}",
        e.levels[0].reason
    );
    let err = explain_for(&snap, "checkout", Some(9), &client, String::new()).unwrap_err();
    assert!(err.message().contains("its ports: 8080"), "{err}");
    assert!(e.levels.iter().all(|l| l.localities.is_empty()));
}

#[test]
fn explain_sends_a_distribute_rule_and_each_localitys_share() {
    let set = PolicySet {
        entries: parse_policies(
            "p.yaml",
            "kind: FailoverPolicy\nmetadata: {name: split, namespace: shop}\n\
                 spec:\n  distribute:\n  - from: us-east1/*\n    to:\n      \
                 us-east1/us-east1-b/*: 80\n      us-east1/us-east1-c/*: 20\n",
        )
        .unwrap(),
    };
    let client = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    let r = explain_for(&snapshot(set), "checkout", None, &client, String::new()).unwrap();
    let p0 = &r.explanations[0].levels[0];
    let rule = p0.distribute.as_ref().unwrap();
    assert_eq!(rule.from, "us-east1/*");
    let to: Vec<(&str, u32)> = rule
        .to
        .iter()
        .map(|t| (t.locality.as_str(), t.weight))
        .collect();
    assert_eq!(
        to,
        [("us-east1/us-east1-b/*", 80), ("us-east1/us-east1-c/*", 20)]
    );
    let shares: Vec<(String, &str, f64, f64)> = p0
        .localities
        .iter()
        .map(|s| {
            (
                s.locality.clone().unwrap().zone,
                s.pattern.as_str(),
                s.share_of_level.round(),
                s.expected_percent.round(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("us-east1-b".into(), "us-east1/us-east1-b/*", 80.0, 80.0),
            ("us-east1-c".into(), "us-east1/us-east1-c/*", 20.0, 20.0),
        ]
    );
    assert_eq!(p0.localities[0].weight * 20, p0.localities[1].weight * 80);
}

#[test]
fn explain_uses_each_ports_own_policy() {
    let snap = per_port_snapshot();
    let client = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    let r = explain_for(&snap, "shop/web", None, &client, "by hand".into()).unwrap();
    assert_eq!(r.policy, WEB_HTTP_POLICY, "the first port's");
    let policies: Vec<(u32, &str, u32)> = r
        .explanations
        .iter()
        .map(|e| (e.port, e.policy.as_str(), e.panic_threshold))
        .collect();
    assert_eq!(
        policies,
        [(8080, WEB_HTTP_POLICY, 5), (9090, "file:p.yaml", 9)]
    );
    // Zone first under the trafficDistribution (the namespace default would rank by cluster
    // only, putting everything in one level).
    let zones: Vec<Vec<String>> = r.explanations[0]
        .levels
        .iter()
        .map(|l| {
            l.endpoints
                .iter()
                .map(|ep| ep.locality.clone().unwrap().zone)
                .collect()
        })
        .collect();
    assert_eq!(
        zones,
        vec![vec!["us-east1-b"], vec!["us-east1-c"], vec!["us-west1-a"]]
    );
}

#[test]
fn prefer_same_node_ranks_the_clients_node_first_when_it_knows_its_node() {
    let on = |ip: &str, zone: &str, node: Option<&str>| {
        let mut e = ep(ip, "us-east1", zone, Health::Healthy);
        if let Some(n) = node {
            e.labels
                .insert(xds_core::model::labels::HOSTNAME.into(), n.into());
        }
        e
    };
    let mut web = service("shop", "web");
    web.endpoints = vec![
        on("10.0.0.1", "us-east1-b", Some("n1")),
        on("10.0.0.2", "us-east1-b", Some("n2")),
        on("10.0.0.3", "us-east1-c", Some("n3")),
    ];
    web.traffic_distribution = Some(xds_core::model::TrafficDistribution::PreferSameNode);
    let snap = Snapshot::build(
        None,
        Arc::new(Registry::from_services([web])),
        Arc::new(PolicySet::default()),
        TranslateSettings::default(),
    );
    let levels = |client: &ClientInfo| -> Vec<Vec<String>> {
        let r = explain_for(&snap, "shop/web", None, client, String::new()).unwrap();
        assert_eq!(
            r.policy,
            "Service shop/web spec.trafficDistribution=PreferSameNode (over built-in default)"
        );
        r.explanations[0]
            .levels
            .iter()
            .map(|l| l.endpoints.iter().map(|e| e.address.clone()).collect())
            .collect()
    };
    let mut client = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    assert_eq!(
        levels(&client),
        [vec!["10.0.0.1", "10.0.0.2"], vec!["10.0.0.3"]],
        "a client that does not know its node gets the zone order"
    );
    client
        .labels
        .insert(xds_core::model::labels::HOSTNAME.into(), "n2".into());
    assert_eq!(
        levels(&client),
        [vec!["10.0.0.2"], vec!["10.0.0.1"], vec!["10.0.0.3"]]
    );
}

#[test]
fn explain_for_a_grpc_client_gives_the_same_levels_and_grpcs_load_split() {
    let snap = snapshot(PolicySet::default());
    let envoy = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    let grpc = ClientInfo {
        kind: ClientKind::Grpc,
        ..envoy.clone()
    };
    let e = explain_for(&snap, "checkout", None, &envoy, String::new()).unwrap();
    let g = explain_for(&snap, "checkout", None, &grpc, String::new()).unwrap();
    let (e, g) = (&e.explanations[0], &g.explanations[0]);
    assert_eq!(e.client_kind, pb::ClientKind::Envoy as i32);
    assert_eq!(g.client_kind, pb::ClientKind::Grpc as i32);
    let endpoints = |x: &pb::Explanation| {
        x.levels
            .iter()
            .map(|l| (l.priority, l.endpoints.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(endpoints(g), endpoints(e));
    assert_eq!(g.load, vec![100, 0, 0]);
    assert!(
        g.notes[0].contains("fails over a whole priority at once")
            && g.notes[0].contains("TRANSIENT_FAILURE")
            && g.notes[0].contains("10 s CONNECTING")
            && g.notes[0].contains("ignores the overprovisioning factor"),
        "{:?}",
        g.notes
    );
}

#[test]
fn explain_shows_the_fleet_verdict_and_its_evidence_for_the_cluster_it_judged() {
    use std::time::{Duration, Instant, SystemTime};
    use xds_core::observed::fleet::{FleetVerdicts, LocalityWindow};
    use xds_core::policy::{FleetFailover, FleetMode};
    let snap = snapshot(PolicySet::default());
    let client = ClientInfo {
        locality: Locality::new("us-east1", "us-east1-b", ""),
        ..ClientInfo::default()
    };
    let mut cluster = xds_core::observed::fleet::fleet_clusters(&snap, &FleetVerdicts::new());
    assert!(cluster.is_empty(), "fleet failover is off by default");
    let entry = snap.cluster("checkout.shop:8080").unwrap();
    let settings = FleetFailover {
        mode: FleetMode::Enforce,
        max_ejected_percent: 50,
        ..FleetFailover::default()
    };
    cluster.push(xds_core::observed::fleet::FleetCluster {
        cluster: entry.name().to_string(),
        service: entry.input.service.id.clone(),
        port: 8080,
        settings,
        endpoints: entry
            .input
            .endpoints_per_locality()
            .into_iter()
            .map(|(l, n)| (l.clone(), n))
            .collect(),
        windows: vec![LocalityWindow {
            cluster: entry.name().to_string(),
            locality: Locality::new("us-east1", "us-east1-b", ""),
            reporters: 3,
            requests: 40,
            errors: 30,
        }],
    });
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    verdicts.evaluate(now, &cluster);
    let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut r = explain_for(&snap, "checkout", None, &client, String::new()).unwrap();
    with_fleet_verdicts(&mut r, &verdicts.verdicts(), now, wall_now);
    let f = r.explanations[0].fleet.as_ref().expect("a verdict");
    let settings = f.settings.as_ref().unwrap();
    assert_eq!(
        (
            settings.mode.as_str(),
            settings.min_reporters,
            settings.window_ms,
            settings.max_ejected_percent
        ),
        ("enforce", 2, 10_000, 50)
    );
    let b = f
        .localities
        .iter()
        .find(|l| l.locality.as_ref().unwrap().zone == "us-east1-b")
        .unwrap();
    assert_eq!(
        (
            b.state.as_str(),
            b.reporters,
            b.requests,
            b.errors,
            b.error_ratio,
            b.since_unix_ms,
            b.until_unix_ms,
            b.ejections
        ),
        ("ejected", 3, 40, 30, 0.75, 1_000_000, 1_030_000, 1)
    );
    assert!(f
        .localities
        .iter()
        .filter(|l| l.locality.as_ref().unwrap().zone != "us-east1-b")
        .all(|l| l.state == "ok" && l.until_unix_ms == 0));
    // A cluster the verdict does not judge gets none.
    let mut plain = explain_for(&snap, "checkout", None, &client, String::new()).unwrap();
    with_fleet_verdicts(&mut plain, &[], now, wall_now);
    assert_eq!(plain.explanations[0].fleet, None);
}
