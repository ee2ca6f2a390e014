use super::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use xds_core::protocol::sotw::AdsConnection;
use xds_core::snapshot::{Snapshot, CLUSTER_TYPE, ENDPOINT_TYPE};
use xds_core::testing::{mesh, xds};

fn snapshot() -> Snapshot {
    xds::snapshot(None, mesh::registry(80, &[("a", &["10.0.0.1"])]))
}

fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    xds::request(xds::node("envoy-1", "web"), type_url, names, version, nonce)
}

fn status(r: &ClientRegistry, kind: ResourceType) -> SyncStatus {
    let c = &r.list()[0];
    c.types
        .iter()
        .find(|t| t.report.kind == kind)
        .map_or(SyncStatus::NotSent, |t| t.report.status)
}

#[test]
fn statuses_follow_the_conversation_and_the_entry_goes_with_the_stream() {
    let registry = ClientRegistry::new();
    let mut events = registry.subscribe();
    let snap = snapshot();
    let conn = Arc::new(Mutex::new(AdsConnection::new()));
    let registration = registry.register(7, Protocol::Sotw, conn.clone());
    assert!(
        registry.list().is_empty(),
        "not identified before a request"
    );

    let (_, out) = lock(&conn)
        .on_request(&req(CLUSTER_TYPE, &[], "", "").into(), &snap)
        .unwrap();
    let c = &registry.list()[0];
    assert_eq!(
        (c.node_id.as_str(), c.cluster.as_str(), c.protocol),
        ("envoy-1", "web", Protocol::Sotw)
    );
    assert_eq!(c.class, "region=r,zone=z,subzone=-");
    assert_eq!(status(&registry, ResourceType::Cluster), SyncStatus::Stale);
    assert_eq!(
        status(&registry, ResourceType::Endpoint),
        SyncStatus::NotSent
    );

    lock(&conn)
        .on_request(
            &req(CLUSTER_TYPE, &[], &out[0].version_info, &out[0].nonce).into(),
            &snap,
        )
        .unwrap();
    assert_eq!(status(&registry, ResourceType::Cluster), SyncStatus::Synced);

    let (_, eds) = lock(&conn)
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:80"], "", "").into(), &snap)
        .unwrap();
    let mut nack = req(ENDPOINT_TYPE, &["a.shop:80"], "", &eds[0].nonce);
    nack.error_detail = Some(xds::error_detail("dump\n\nbad endpoint"));
    lock(&conn).on_request(&(&nack).into(), &snap).unwrap();
    registry.nacked(7, ResourceType::Endpoint);
    let c = &registry.list()[0];
    let eds_row = c
        .types
        .iter()
        .find(|t| t.report.kind == ResourceType::Endpoint)
        .unwrap();
    assert_eq!(eds_row.report.status, SyncStatus::Nacked);
    assert_eq!(
        eds_row.report.nack.as_ref().map(|n| n.1.as_str()),
        Some("bad endpoint")
    );
    assert!(eds_row.nack_at.is_some());
    assert_eq!(registry.client_info("envoy-1").unwrap().cluster, "web");

    drop(registration);
    assert!(registry.is_empty());
    match events.try_recv() {
        Ok(XdsEvent::Disconnected {
            stream_id: 7, node, ..
        }) => assert_eq!(node, "envoy-1"),
        other => panic!("expected a disconnect event, got {other:?}"),
    }
}
