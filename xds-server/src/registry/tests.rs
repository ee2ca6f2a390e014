use super::*;
use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;
use xds_core::model::{Endpoint, Health, Registry, Service, ServiceId, ServicePort};
use xds_core::protocol::sotw::AdsConnection;
use xds_core::snapshot::{Snapshot, TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE};

fn snapshot() -> Snapshot {
    let svc = Service {
        traffic_distribution: None,
        id: ServiceId::new("shop", "a"),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
        }],
        endpoints: vec![Endpoint {
            address: "10.0.0.1".parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality: Locality::new("r", "z", ""),
            labels: BTreeMap::new(),
            health: Health::Healthy,
        }],
    };
    Snapshot::build(
        None,
        Arc::new(Registry::from_services([svc])),
        Arc::default(),
        TranslateSettings::default(),
    )
}

fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "envoy-1".into(),
            cluster: "web".into(),
            locality: Some(EnvoyLocality {
                region: "r".into(),
                zone: "z".into(),
                sub_zone: String::new(),
            }),
            ..Node::default()
        }),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    }
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
        .on_request(&req(CLUSTER_TYPE, &[], "", ""), &snap)
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
            &req(CLUSTER_TYPE, &[], &out[0].version_info, &out[0].nonce),
            &snap,
        )
        .unwrap();
    assert_eq!(status(&registry, ResourceType::Cluster), SyncStatus::Synced);

    let (_, eds) = lock(&conn)
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:80"], "", ""), &snap)
        .unwrap();
    let mut nack = req(ENDPOINT_TYPE, &["a.shop:80"], "", &eds[0].nonce);
    nack.error_detail = Some(Status {
        code: 13,
        message: "dump\n\nbad endpoint".into(),
        details: vec![],
    });
    lock(&conn).on_request(&nack, &snap).unwrap();
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
