use super::*;
use crate::admin::api::fixtures::{per_port_snapshot, snapshot, WEB_HTTP_POLICY};
use xds_core::policy::parse::parse_policies;
use xds_core::policy::{PolicySet, RejectedPolicy};

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
fn services_report_identities_and_what_each_mtls_port_accepts() {
    const LEDGER: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
    let mut checkout = crate::admin::api::fixtures::service("shop", "checkout");
    checkout.endpoints[0].identity = Some(xds_core::model::SpiffeId::parse(LEDGER).unwrap());
    let cart = crate::admin::api::fixtures::service("shop", "cart");
    let plain = crate::admin::api::fixtures::service("other", "cart");
    let set = PolicySet {
        entries: parse_policies(
            "p.yaml",
            "kind: FailoverPolicy\nmetadata: {name: mtls, namespace: shop}\nspec: {mtls: STRICT}\n",
        )
        .unwrap(),
    };
    let snap = Snapshot::build(
        None,
        Arc::new(Registry::from_services([checkout, cart, plain])),
        Arc::new(set),
        xds_core::snapshot::TranslateSettings::default(),
    );
    let r = services_pb(&snap, "kubernetes");
    let find = |ns: &str, name: &str| {
        r.services
            .iter()
            .find(|s| s.namespace == ns && s.name == name)
            .unwrap()
    };
    let checkout = find("shop", "checkout");
    assert_eq!(checkout.identities, [LEDGER]);
    assert_eq!(checkout.endpoints[0].identity, LEDGER);
    assert_eq!(checkout.endpoints[1].identity, "", "not known");
    assert_eq!(
        (
            checkout.ports[0].mtls.as_str(),
            checkout.ports[0].peer_identities.clone()
        ),
        ("STRICT", vec![LEDGER.to_string()])
    );
    // mTLS without a known identity: nothing pinned, and the listing says STRICT with no peers.
    let cart = find("shop", "cart");
    assert!(cart.identities.is_empty());
    assert_eq!(cart.ports[0].mtls, "STRICT");
    assert!(cart.ports[0].peer_identities.is_empty());
    assert_eq!(find("other", "cart").ports[0].mtls, "DISABLE");
}
