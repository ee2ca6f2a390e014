use super::*;
use serde_json::json;

fn service(ns: &str, name: &str, ports: serde_json::Value) -> KubeService {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"ports": ports}
    }))
    .unwrap()
}

fn slice(
    ns: &str,
    svc: &str,
    name: &str,
    ports: serde_json::Value,
    eps: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": eps
    }))
    .unwrap()
}

fn nodes() -> HashMap<String, NodeLabels> {
    let node = |region: &str, zone: &str, subzone: Option<&str>| {
        let mut l = BTreeMap::from([
            (labels::REGION.to_string(), region.to_string()),
            (labels::ZONE.to_string(), zone.to_string()),
        ]);
        if let Some(s) = subzone {
            l.insert(labels::SUBZONE.to_string(), s.to_string());
        }
        NodeLabels(l)
    };
    HashMap::from([
        (
            "node-b".to_string(),
            node("us-east1", "us-east1-b", Some("rack-1")),
        ),
        ("node-c".to_string(), node("us-east1", "us-east1-c", None)),
    ])
}

#[test]
fn endpoints_get_locality_from_slice_and_node_and_health_from_conditions() {
    let svc = service(
        "shop",
        "checkout",
        json!([{"name": "http", "port": 80, "targetPort": "web"}]),
    );
    let sl = slice(
        "shop",
        "checkout",
        "checkout-abc",
        json!([{"name": "http", "port": 8080}]),
        json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "node-b"},
            // zone on the slice wins over the node's
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "nodeName": "node-b", "zone": "us-east1-x"},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "node-c"},
            {"addresses": ["10.0.0.4"], "nodeName": "unknown-node"},
        ]),
    );
    let (reg, skipped) = build_registry(
        [&svc],
        [&sl],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    let s = &reg.services[&ServiceId::new("shop", "checkout")];
    assert_eq!(
        s.ports,
        vec![ServicePort {
            name: "http".into(),
            port: 80
        }]
    );
    let eps: Vec<(String, u16, Locality, Health)> = s
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.target_port(&s.ports[0]),
                e.locality.clone(),
                e.health,
            )
        })
        .collect();
    assert_eq!(
        eps,
        vec![
            (
                "10.0.0.1".into(),
                8080,
                Locality::new("us-east1", "us-east1-b", "rack-1"),
                Health::Healthy
            ),
            (
                "10.0.0.2".into(),
                8080,
                Locality::new("us-east1", "us-east1-x", "rack-1"),
                Health::Unhealthy
            ),
            (
                "10.0.0.3".into(),
                8080,
                Locality::new("us-east1", "us-east1-c", ""),
                Health::Draining
            ),
            // nil conditions mean ready; unknown node means unknown region
            (
                "10.0.0.4".into(),
                8080,
                Locality::default(),
                Health::Healthy
            ),
        ]
    );
}

#[test]
fn named_ports_map_by_name_and_duplicates_keep_the_healthiest() {
    let svc = service(
        "shop",
        "cart",
        json!([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
    );
    let a = slice(
        "shop",
        "cart",
        "cart-a",
        json!([{"name": "grpc", "port": 19090}, {"name": "http", "port": 18080}]),
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
    );
    let b = slice(
        "shop",
        "cart",
        "cart-b",
        json!([{"name": "grpc", "port": 19090}, {"name": "http", "port": 18080}]),
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]),
    );
    let (reg, _) = build_registry(
        [&svc],
        [&b, &a],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    let s = &reg.services[&ServiceId::new("shop", "cart")];
    assert_eq!(s.ports.len(), 2, "UDP ports are not served");
    assert_eq!(s.endpoints.len(), 1);
    let ep = &s.endpoints[0];
    assert_eq!(ep.health, Health::Healthy);
    assert_eq!(ep.target_port(&s.ports[0]), 18080);
    assert_eq!(ep.target_port(&s.ports[1]), 19090);
}

#[test]
fn one_address_with_different_ports_in_two_slices_is_two_endpoints() {
    // hostNetwork pods on one node (or several test backends on 127.0.0.1) share an address.
    let svc = service("shop", "web", json!([{"name": "http", "port": 80}]));
    let a = slice(
        "shop",
        "web",
        "web-a",
        json!([{"name": "http", "port": 18080}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "node-b"}]),
    );
    let b = slice(
        "shop",
        "web",
        "web-b",
        json!([{"name": "http", "port": 18081}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "node-c", "conditions": {"ready": false}}]),
    );
    let (reg, skipped) = build_registry(
        [&svc],
        [&a, &b],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    let s = &reg.services[&ServiceId::new("shop", "web")];
    let eps: Vec<(u16, &str, Health)> = s
        .endpoints
        .iter()
        .map(|e| {
            (
                e.target_port(&s.ports[0]),
                e.locality.zone.as_str(),
                e.health,
            )
        })
        .collect();
    assert_eq!(
        eps,
        vec![
            (18080, "us-east1-b", Health::Healthy),
            (18081, "us-east1-c", Health::Unhealthy)
        ]
    );
}

#[test]
fn services_without_slices_exist_and_bad_data_is_skipped_with_a_reason() {
    let svc = service("shop", "empty", json!([{"port": 80}]));
    let other = service("shop", "bad", json!([{"port": 80}]));
    let sl = slice(
        "shop",
        "bad",
        "bad-1",
        json!([{"port": 80}]),
        json!([{"addresses": ["not-an-ip"]}, {"addresses": ["10.0.0.9"]}]),
    );
    let orphan = slice(
        "shop",
        "nobody",
        "orphan",
        json!([]),
        json!([{"addresses": ["10.0.0.5"]}]),
    );
    let (reg, skipped) = build_registry(
        [&svc, &other],
        [&sl, &orphan],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    assert!(reg.services[&ServiceId::new("shop", "empty")]
        .endpoints
        .is_empty());
    assert_eq!(
        reg.services[&ServiceId::new("shop", "bad")].endpoints.len(),
        1
    );
    assert_eq!(
        reg.services.len(),
        2,
        "slices of unknown services are ignored"
    );
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].reason.contains("not-an-ip"), "{skipped:?}");
}

#[test]
fn traffic_distribution_is_read_and_unknown_values_are_skipped_by_name() {
    let with = |value: Option<&str>| -> KubeService {
        let mut spec = json!({"ports": [{"port": 80}]});
        if let Some(v) = value {
            spec["trafficDistribution"] = json!(v);
        }
        serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": spec
        }))
        .unwrap()
    };
    let read = |svc: KubeService| {
        let (reg, skipped) = build_registry(
            [&svc],
            [],
            &nodes(),
            &PodAccounts::default(),
            &ConvertSettings::default(),
        );
        (
            reg.services[&ServiceId::new("shop", "web")].traffic_distribution,
            skipped,
        )
    };
    for (value, want) in [
        ("PreferSameZone", TrafficDistribution::PreferSameZone),
        ("PreferClose", TrafficDistribution::PreferClose),
        ("PreferSameNode", TrafficDistribution::PreferSameNode),
    ] {
        let (got, skipped) = read(with(Some(value)));
        assert_eq!(got, Some(want));
        assert!(skipped.is_empty(), "{skipped:?}");
    }
    let (got, skipped) = read(with(None));
    assert_eq!(got, None);
    assert!(skipped.is_empty());
    let (got, skipped) = read(with(Some("PreferSameGalaxy")));
    assert_eq!(got, None, "an unknown value is ignored");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].object, "Service shop/web");
    assert!(
        skipped[0].reason.contains("\"PreferSameGalaxy\""),
        "{skipped:?}"
    );
}

#[test]
fn subzone_label_is_configurable() {
    let svc = service("shop", "s", json!([{"port": 80}]));
    let sl = slice(
        "shop",
        "s",
        "s-1",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "n"}]),
    );
    let nodes = HashMap::from([(
        "n".to_string(),
        NodeLabels(BTreeMap::from([(
            "example.com/rack".to_string(),
            "r7".to_string(),
        )])),
    )]);
    let settings = ConvertSettings {
        subzone_label: "example.com/rack".into(),
        ..ConvertSettings::default()
    };
    let (reg, _) = build_registry([&svc], [&sl], &nodes, &PodAccounts::default(), &settings);
    assert_eq!(
        reg.services[&ServiceId::new("shop", "s")].endpoints[0]
            .locality
            .subzone,
        "r7"
    );
}

#[test]
fn endpoints_carry_their_cluster_and_network_as_labels() {
    let svc = service("shop", "s", json!([{"port": 80}]));
    let sl = slice(
        "shop",
        "s",
        "s-1",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"]}]),
    );
    let mut settings = ConvertSettings::default();
    let (reg, _) = build_registry(
        [&svc],
        [&sl],
        &HashMap::new(),
        &PodAccounts::default(),
        &settings,
    );
    let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
    assert_eq!(
        ep.label(labels::CLUSTER),
        None,
        "one unnamed cluster adds no label"
    );
    settings.origin = ClusterOrigin {
        cluster: "east".into(),
        network: "net-1".into(),
    };
    let (reg, _) = build_registry(
        [&svc],
        [&sl],
        &HashMap::new(),
        &PodAccounts::default(),
        &settings,
    );
    let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
    assert_eq!(ep.label(labels::CLUSTER), Some("east"));
    assert_eq!(ep.label(labels::NETWORK), Some("net-1"));
    assert_eq!(ep.label(labels::HOSTNAME), None, "no nodeName, no hostname");
}

#[test]
fn endpoints_carry_their_node_name_as_hostname() {
    let svc = service("shop", "s", json!([{"port": 80}]));
    let sl = slice(
        "shop",
        "s",
        "s-1",
        json!([{"port": 80}]),
        json!([{"addresses": ["10.0.0.1"], "nodeName": "node-b"}]),
    );
    let (reg, _) = build_registry(
        [&svc],
        [&sl],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    let ep = &reg.services[&ServiceId::new("shop", "s")].endpoints[0];
    assert_eq!(ep.label(labels::HOSTNAME), Some("node-b"));
}

fn pod(ns: &str, name: &str, account: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "app"}]});
    if let Some(account) = account {
        spec["serviceAccountName"] = json!(account);
    }
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

#[test]
fn endpoints_are_their_pods_service_accounts_in_the_trust_domain() {
    let svc = service("bank", "ledger", json!([{"port": 80}]));
    let target = |name: &str| json!({"kind": "Pod", "namespace": "bank", "name": name});
    let sl = slice(
        "bank",
        "ledger",
        "ledger-1",
        json!([{"port": 80}]),
        json!([
            {"addresses": ["10.0.0.1"], "targetRef": target("ledger-a")},
            // No service account in the spec: the namespace's `default`.
            {"addresses": ["10.0.0.2"], "targetRef": target("ledger-b")},
            // The Pod is not known yet.
            {"addresses": ["10.0.0.3"], "targetRef": target("ledger-c")},
            // Not a Pod, or no target at all: no identity.
            {"addresses": ["10.0.0.4"], "targetRef": {"kind": "Node", "name": "ledger-a"}},
            {"addresses": ["10.0.0.5"]},
        ]),
    );
    let pods = [
        pod("bank", "ledger-a", Some("ledger")),
        pod("bank", "ledger-b", None),
        // Same name in another namespace: not this endpoint's Pod.
        pod("other", "ledger-c", Some("intruder")),
    ];
    let settings = ConvertSettings {
        trust_domain: "prod.example".into(),
        ..ConvertSettings::default()
    };
    let (reg, skipped) = build_registry(
        [&svc],
        [&sl],
        &HashMap::new(),
        &PodAccounts::of(&pods),
        &settings,
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    let s = &reg.services[&ServiceId::new("bank", "ledger")];
    let identities: Vec<(String, Option<&str>)> = s
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.identity.as_ref().map(SpiffeId::as_str),
            )
        })
        .collect();
    assert_eq!(
        identities,
        [
            (
                "10.0.0.1".into(),
                Some("spiffe://prod.example/ns/bank/sa/ledger")
            ),
            (
                "10.0.0.2".into(),
                Some("spiffe://prod.example/ns/bank/sa/default")
            ),
            ("10.0.0.3".into(), None),
            ("10.0.0.4".into(), None),
            ("10.0.0.5".into(), None),
        ]
    );
    // The Pod arriving gives its endpoint an identity.
    let pods = [
        pods[0].clone(),
        pods[1].clone(),
        pod("bank", "ledger-c", Some("ledger")),
    ];
    let (reg, _) = build_registry(
        [&svc],
        [&sl],
        &HashMap::new(),
        &PodAccounts::of(&pods),
        &settings,
    );
    let s = &reg.services[&ServiceId::new("bank", "ledger")];
    assert_eq!(
        s.endpoints[2].identity.as_ref().map(SpiffeId::as_str),
        Some("spiffe://prod.example/ns/bank/sa/ledger")
    );
}

/// A Service with a named `targetPort` and two pods: one has the named port (its slice carries it),
/// the other does not (the EndpointSlice controller puts it in a slice without that port). The
/// second serves the other port only: it must be left out of `http`'s cluster, never sent to port
/// 80, the service port, where nothing of it listens.
#[test]
fn an_endpoint_whose_slice_lacks_the_named_target_port_does_not_serve_that_port() {
    let svc = service(
        "shop",
        "web",
        json!([
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9100, "targetPort": 9100},
        ]),
    );
    let with_web = slice(
        "shop",
        "web",
        "web-a",
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]),
        json!([{"addresses": ["10.0.0.1"]}]),
    );
    let without_web = slice(
        "shop",
        "web",
        "web-b",
        json!([{"name": "metrics", "port": 9100}]),
        json!([{"addresses": ["10.0.0.2"]}]),
    );
    let (reg, skipped) = build_registry(
        [&svc],
        [&with_web, &without_web],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    assert!(
        skipped.is_empty(),
        "an expected situation, not an error: {skipped:?}"
    );
    let s = &reg.services[&ServiceId::new("shop", "web")];
    let (http, metrics) = (&s.ports[0], &s.ports[1]);
    let serving = |port: &ServicePort| -> Vec<(String, u16)> {
        s.endpoints
            .iter()
            .filter(|e| e.serves(port))
            .map(|e| (e.address.to_string(), e.target_port(port)))
            .collect()
    };
    assert_eq!(serving(http), vec![("10.0.0.1".to_string(), 8080)]);
    assert_eq!(
        serving(metrics),
        vec![
            ("10.0.0.1".to_string(), 9100),
            ("10.0.0.2".to_string(), 9100)
        ]
    );
    // The cluster of `http` as the translator sees it: the second pod is not in it.
    let http_view = s.serving(http).expect("one endpoint does not serve http");
    assert_eq!(http_view.endpoints.len(), 1);
    assert!(
        s.serving(metrics).is_none(),
        "every endpoint serves metrics"
    );
}

/// A slice without a port of a numeric `targetPort`'s name (a slice written by hand) still falls back
/// to that number: only a *named* target port says which pods have it.
#[test]
fn a_numeric_target_port_missing_from_the_slice_still_falls_back_to_its_number() {
    let svc = service(
        "shop",
        "api",
        json!([{"name": "http", "port": 80, "targetPort": 8081}]),
    );
    let sl = slice(
        "shop",
        "api",
        "api-a",
        json!([]),
        json!([{"addresses": ["10.0.0.1"]}]),
    );
    let (reg, _) = build_registry(
        [&svc],
        [&sl],
        &nodes(),
        &PodAccounts::default(),
        &ConvertSettings::default(),
    );
    let s = &reg.services[&ServiceId::new("shop", "api")];
    assert!(s.endpoints[0].serves(&s.ports[0]));
    assert_eq!(s.endpoints[0].target_port(&s.ports[0]), 8081);
}
