use super::*;
use crate::admin::api::fixtures::snapshot;
use crate::registry as clients;
use std::sync::Arc;
use xds_core::policy::parse::parse_policies;
use xds_core::policy::PolicySet;
use xds_core::snapshot::{TranslateSettings, CLUSTER_TYPE};

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
    let (_, out) = clients::lock(&conn)
        .on_request(&(&req).into(), snap)
        .unwrap();
    req.version_info = out[0].version_info.clone();
    req.response_nonce = out[0].nonce.clone();
    clients::lock(&conn)
        .on_request(&(&req).into(), snap)
        .unwrap();
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
