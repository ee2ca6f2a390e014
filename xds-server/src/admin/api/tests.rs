use super::*;
use std::collections::BTreeMap;
use xds_core::model::{Endpoint, ServicePort};
use xds_core::policy::parse::parse_policies;
use xds_core::policy::{PolicySet, RejectedPolicy};
use xds_core::snapshot::{TranslateSettings, CLUSTER_TYPE};

fn ep(ip: &str, region: &str, zone: &str, health: Health) -> Endpoint {
    Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::new(region, zone, ""),
        labels: BTreeMap::new(),
        health,
    }
}

fn service(ns: &str, name: &str) -> Service {
    Service {
        traffic_distribution: None,
        id: ServiceId::new(ns, name),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints: vec![
            ep("10.0.0.1", "us-east1", "us-east1-b", Health::Healthy),
            ep("10.0.0.2", "us-east1", "us-east1-c", Health::Healthy),
            ep("10.0.1.1", "us-west1", "us-west1-a", Health::Unhealthy),
        ],
    }
}

fn snapshot(policies: PolicySet) -> Snapshot {
    Snapshot::build(
        None,
        Arc::new(Registry::from_services([
            service("shop", "checkout"),
            service("shop", "cart"),
            service("other", "cart"),
        ])),
        Arc::new(policies),
        TranslateSettings::default(),
    )
}

#[test]
fn services_are_found_by_every_spelling_and_ambiguity_is_explained() {
    let snap = snapshot(PolicySet::default());
    let reg = &snap.registry;
    let id = |q: &str| find_service(reg, q).map(|(s, p)| (s.id.to_string(), p));
    let checkout = Ok(("shop/checkout".to_string(), None));
    assert_eq!(id("shop/checkout"), checkout);
    assert_eq!(id("checkout.shop"), checkout);
    assert_eq!(id("checkout.shop.svc.cluster.local"), checkout);
    assert_eq!(id("checkout"), checkout);
    assert_eq!(
        id("checkout.shop:8080"),
        Ok(("shop/checkout".to_string(), Some(8080)))
    );
    let err = id("cart").unwrap_err();
    assert!(
        err.contains("ambiguous") && err.contains("other/cart"),
        "{err}"
    );
    assert!(id("nope").unwrap_err().contains("no service named"));
    assert!(id("shop/nope")
        .unwrap_err()
        .contains("no service shop/nope"));
    assert!(id("a.b:http").unwrap_err().contains("not a port number"));
}

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
fn policies_list_what_they_decide_and_the_rejected_ones() {
    let set = PolicySet {
        entries: parse_policies(
            "policies/shop.yaml",
            "kind: FailoverPolicy\nmetadata: {name: shop-default, namespace: shop}\nspec: {panicThreshold: 5}\n",
        )
        .unwrap(),
    };
    let snap = snapshot(set);
    let status = PolicyStatus {
        files: vec![RejectedPolicy {
            source: "file:policies/bad.yaml".into(),
            error: "policies/bad.yaml:3:1: document 1: invalid YAML".into(),
        }],
        custom_resources: vec![],
    };
    let r = policies_pb(&snap, &status);
    assert_eq!(r.active.len(), 1);
    let p = &r.active[0];
    assert_eq!(
        (p.scope.as_str(), p.origin.as_str(), p.name.as_str()),
        ("namespace shop", "file:policies/shop.yaml", "shop-default")
    );
    assert_eq!(p.services, vec!["shop/cart:8080", "shop/checkout:8080"]);
    assert_eq!(p.panic_threshold, 5);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].source, "file:policies/bad.yaml");

    let services = services_pb(&snap, "file:endpoints.yaml");
    let cart = services
        .services
        .iter()
        .find(|s| s.namespace == "other")
        .unwrap();
    assert_eq!(cart.policy, "built-in");
    assert_eq!(cart.source, "file:endpoints.yaml");
    assert_eq!(cart.ports[0].cluster, "cart.other:8080");
    assert_eq!(cart.endpoints[2].health, "UNHEALTHY");
    let shop_cart = services
        .services
        .iter()
        .find(|s| s.namespace == "shop" && s.name == "cart")
        .unwrap();
    assert_eq!(shop_cart.policy, "file:policies/shop.yaml");
}

/// shop/web (ports http 8080, grpc 9090, trafficDistribution PreferSameZone) under a namespace
/// default ranking by cluster only, with a policy for its grpc port.
fn per_port_snapshot() -> Snapshot {
    let mut web = service("shop", "web");
    web.ports.push(ServicePort {
        name: "grpc".into(),
        port: 9090,
    });
    web.traffic_distribution = Some(xds_core::model::TrafficDistribution::PreferSameZone);
    let set = PolicySet {
        entries: parse_policies(
            "p.yaml",
            "kind: FailoverPolicy\nmetadata: {name: defaults, namespace: shop}\n\
                 spec: {failoverPriority: [topology.istio.io/cluster], panicThreshold: 5}\n---\n\
                 kind: FailoverPolicy\nmetadata: {name: web-grpc, namespace: shop}\n\
                 spec: {service: web, port: grpc, panicThreshold: 9}\n",
        )
        .unwrap(),
    };
    Snapshot::build(
        None,
        Arc::new(Registry::from_services([web, service("shop", "cart")])),
        Arc::new(set),
        TranslateSettings::default(),
    )
}

const WEB_HTTP_POLICY: &str = "Service shop/web spec.trafficDistribution=PreferSameZone \
                                   (over namespace default shop/defaults)";

#[test]
fn policies_and_services_report_the_policy_of_each_port() {
    let snap = per_port_snapshot();
    let r = policies_pb(&snap, &PolicyStatus::default());
    let defaults = &r.active[0];
    assert_eq!(
        defaults.services,
        [
            "shop/cart:8080",
            "shop/web:8080 (trafficDistribution=PreferSameZone)"
        ]
    );
    let grpc = &r.active[1];
    assert_eq!(
        (grpc.scope.as_str(), grpc.port.as_str()),
        ("service shop/web port grpc", "grpc")
    );
    assert_eq!(grpc.services, ["shop/web:9090"]);
    assert_eq!(grpc.spillover, "gradual");
    assert!(grpc.outlier_detection_enabled);
    let effective: Vec<(&str, &str, &str)> = r
        .effective
        .iter()
        .map(|e| {
            (
                e.service_port.as_str(),
                e.port_name.as_str(),
                e.policy.as_str(),
            )
        })
        .collect();
    assert_eq!(
        effective,
        [
            ("shop/cart:8080", "http", "file:p.yaml"),
            ("shop/web:8080", "http", WEB_HTTP_POLICY),
            ("shop/web:9090", "grpc", "file:p.yaml"),
        ]
    );
    assert_eq!(
        r.effective[1].failover_priority,
        [
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone"
        ]
    );
    assert_eq!(
        r.effective[2].failover_priority,
        [
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone",
            "topology.istio.io/subzone"
        ]
    );

    let services = services_pb(&snap, "kubernetes");
    let web = services.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.traffic_distribution, "PreferSameZone");
    assert_eq!(web.policy, WEB_HTTP_POLICY);
    let ports: Vec<&str> = web.ports.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(ports, [WEB_HTTP_POLICY, "file:p.yaml"]);
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
fn type_names_and_origins_read_as_users_write_them() {
    assert_eq!(parse_type("CDS"), Ok(ResourceType::Cluster));
    assert_eq!(parse_type("endpoints"), Ok(ResourceType::Endpoint));
    assert_eq!(parse_type(CLUSTER_TYPE), Ok(ResourceType::Cluster));
    assert_eq!(parse_type("SDS"), Ok(ResourceType::Secret));
    assert!(parse_type("xds")
        .unwrap_err()
        .contains("cds, eds, lds, rds, sds"));
    assert_eq!(
        origin_text(&PolicyOrigin::Named {
            namespace: "shop".into(),
            name: "p".into(),
            source: "kubernetes".into()
        }),
        "kubernetes:shop/p"
    );
}

/// A SotW client in us-east1-b that asked for and ACKed every cluster of `snap`.
fn synced_cds_client(snap: &Snapshot) -> (Arc<ClientRegistry>, clients::Registration) {
    use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use std::sync::Mutex;
    use xds_core::protocol::sotw::AdsConnection;
    let registry = ClientRegistry::new();
    let conn = Arc::new(Mutex::new(AdsConnection::new()));
    let registration = registry.register(1, clients::Protocol::Sotw, conn.clone());
    let mut req = DiscoveryRequest {
        node: Some(Node {
            id: "envoy-1".into(),
            locality: Some(EnvoyLocality {
                region: "us-east1".into(),
                zone: "us-east1-b".into(),
                sub_zone: String::new(),
            }),
            ..Node::default()
        }),
        type_url: CLUSTER_TYPE.into(),
        ..DiscoveryRequest::default()
    };
    let (_, out) = clients::lock(&conn).on_request(&req, snap).unwrap();
    req.version_info = out[0].version_info.clone();
    req.response_nonce = out[0].nonce.clone();
    clients::lock(&conn).on_request(&req, snap).unwrap();
    (registry, registration)
}

#[test]
fn config_shows_what_the_client_holds_and_marks_older_versions() {
    let snap = snapshot(PolicySet::default());
    let (registry, _registration) = synced_cds_client(&snap);
    let summary = newest(&registry, "envoy-1").unwrap();
    let client = registry.client_info("envoy-1").unwrap();
    let now = client_resources(&summary, &client, &snap, None, None);
    let names: Vec<&str> = now.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["cart.other:8080", "cart.shop:8080", "checkout.shop:8080"]
    );
    assert!(now.iter().all(|r| !r.client_holds_older_version
        && r.status == pb::SyncStatus::Synced as i32
        && r.held_version == r.current_version
        && r.text.starts_with("Cluster {")));
    let one = client_resources(
        &summary,
        &client,
        &snap,
        Some(ResourceType::Cluster),
        Some("cart.shop:8080"),
    );
    assert_eq!(one.len(), 1);
    assert!(
        one[0].text.contains("name: \"cart.shop:8080\""),
        "{}",
        one[0].text
    );
    assert!(client_resources(&summary, &client, &snap, Some(ResourceType::Route), None).is_empty());

    // The shop policy changes; the client has not been sent the new clusters yet.
    let policies = PolicySet {
        entries: parse_policies(
            "p.yaml",
            "kind: FailoverPolicy\nmetadata: {name: p, namespace: shop}\nspec: {panicThreshold: 7}\n",
        )
        .unwrap(),
    };
    let next = Snapshot::build(
        Some(&snap),
        snap.registry.clone(),
        Arc::new(policies),
        TranslateSettings::default(),
    );
    let later = client_resources(&summary, &client, &next, None, None);
    let older: Vec<&str> = later
        .iter()
        .filter(|r| r.client_holds_older_version)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(older, ["cart.shop:8080", "checkout.shop:8080"]);
    let checkout = &later[2];
    assert_ne!(checkout.held_version, checkout.current_version);
}

#[tokio::test]
async fn events_are_filtered_by_node_and_lag_is_reported() {
    let registry = ClientRegistry::new();
    let mut stream = event_stream(registry.subscribe(), "b".into());
    let at = SystemTime::now();
    for node in ["a", "b"] {
        registry.emit(XdsEvent::Disconnected {
            at,
            stream_id: 1,
            node: node.into(),
        });
    }
    use futures::StreamExt;
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!((e.kind.as_str(), e.node_id.as_str()), ("disconnected", "b"));

    let mut lagging = event_stream(registry.subscribe(), String::new());
    for _ in 0..5000 {
        registry.emit(XdsEvent::Disconnected {
            at,
            stream_id: 1,
            node: "x".into(),
        });
    }
    let e = lagging.next().await.unwrap().unwrap();
    assert_eq!(e.kind, "lagged");
    assert!(e.resources > 0);
}
