use super::*;
use crate::model::{ClientInfo, Endpoint, Health, Locality, Registry, Service, ServiceId};
use crate::snapshot::{ResourceType, Snapshot, TranslateSettings};
use envoy_types::pb::envoy::service::discovery::v3::Resource as ProtoResource;
use std::collections::BTreeMap;

fn resources() -> Vec<Arc<Resource>> {
    let svc = |name: &str| Service {
        traffic_distribution: None,
        id: ServiceId::new("shop", name),
        ports: vec![crate::model::ServicePort {
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
    let snap = Snapshot::build(
        None,
        Arc::new(Registry::from_services([svc("a"), svc("b")])),
        Arc::default(),
        TranslateSettings::default(),
    );
    snap.resources_for(ResourceType::Cluster, &ClientInfo::default(), None)
}

/// What the server writes must be byte-for-byte what envoy-types would write for the same content.
#[test]
fn sotw_encoding_equals_envoy_types() {
    let rs = resources();
    let ours = SotwResponse {
        version_info: "v1".into(),
        resources: rs.clone(),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        nonce: "7".into(),
    };
    let theirs = DiscoveryResponse {
        version_info: "v1".into(),
        resources: rs.iter().map(|r| r.any.clone()).collect(),
        type_url: ours.type_url.clone(),
        nonce: "7".into(),
        ..DiscoveryResponse::default()
    };
    assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
    assert_eq!(ours.encoded_len(), theirs.encoded_len());
    assert_eq!(ours.to_proto(), theirs);
    let empty = SotwResponse::default();
    assert_eq!(
        empty.encode_to_vec(),
        DiscoveryResponse::default().encode_to_vec()
    );
}

#[test]
fn delta_encoding_equals_envoy_types() {
    let rs = resources();
    let ours = DeltaResponse {
        system_version_info: "3".into(),
        resources: rs
            .iter()
            .map(|r| DeltaEntry {
                name: r.name.clone(),
                version: format!("{:016x}", r.hash),
                resource: r.clone(),
            })
            .collect(),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        removed_resources: vec!["gone".into(), String::new()],
        nonce: "9".into(),
    };
    let theirs = DeltaDiscoveryResponse {
        system_version_info: "3".into(),
        resources: rs
            .iter()
            .map(|r| ProtoResource {
                name: r.name.clone(),
                version: format!("{:016x}", r.hash),
                resource: Some(r.any.clone()),
                ..ProtoResource::default()
            })
            .collect(),
        type_url: ours.type_url.clone(),
        removed_resources: vec!["gone".into(), String::new()],
        nonce: "9".into(),
        ..DeltaDiscoveryResponse::default()
    };
    assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
    assert_eq!(ours.encoded_len(), theirs.encoded_len());
    assert_eq!(ours.to_proto(), theirs);
}
