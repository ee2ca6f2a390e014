use super::*;
use crate::model::ClientInfo;
use crate::snapshot::ResourceType;
use crate::testing::{mesh, xds};
use envoy_types::pb::envoy::service::discovery::v3::Resource as ProtoResource;

fn resources() -> Vec<Arc<Resource>> {
    let registry = mesh::registry(80, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.1"])]);
    let snap = xds::snapshot(None, registry);
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

/// A resource whose encoding is about `value_len` bytes long.
fn sized_resource(name: &str, value_len: usize) -> Arc<Resource> {
    let any = envoy_types::pb::google::protobuf::Any {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        value: vec![7; value_len],
    };
    Arc::new(Resource {
        name: name.into(),
        encoded: bytes::Bytes::from(any.encode_to_vec()),
        any,
        hash: value_len as u64,
    })
}

/// Small, large, small, large, large: both the copied and the shared path, and a run of each.
fn mixed_resources() -> Vec<Arc<Resource>> {
    [10, 5000, 0, 300, 40_000, 20, 30]
        .iter()
        .enumerate()
        .map(|(i, len)| sized_resource(&format!("r{i}"), *len))
        .collect()
}

fn grpc_framed(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// Every large resource must go out as the cache's own bytes, not a copy.
fn assert_shares_large(chunks: &[bytes::Bytes], resources: &[Arc<Resource>]) {
    for r in resources
        .iter()
        .filter(|r| r.encoded.len() >= SHARED_MIN_BYTES)
    {
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == r.encoded.as_ptr() && c.len() == r.encoded.len()),
            "resource {} ({} bytes) was copied",
            r.name,
            r.encoded.len()
        );
    }
    // Copied chunks stay small (the shared ones are whatever size the resource is).
    for c in chunks {
        let shared = resources.iter().any(|r| r.encoded.as_ptr() == c.as_ptr());
        assert!(shared || c.len() < CHUNK_BYTES + SHARED_MIN_BYTES + 64);
    }
}

#[test]
fn sotw_chunks_concatenate_to_the_grpc_message() {
    for resources in [vec![], resources(), mixed_resources()] {
        let response = SotwResponse {
            version_info: "v1".into(),
            resources: resources.clone(),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            nonce: "7".into(),
        };
        let chunks: Vec<_> = GrpcChunks::new(response.clone()).collect();
        assert!(chunks.iter().all(|c| !c.is_empty()));
        assert_eq!(chunks.concat(), grpc_framed(&response));
        assert_shares_large(&chunks, &resources);
    }
    // An empty message is still a (5-byte) gRPC message.
    let empty: Vec<_> = GrpcChunks::new(SotwResponse::default()).collect();
    assert_eq!(empty.concat(), vec![0, 0, 0, 0, 0]);
}

#[test]
fn delta_chunks_concatenate_to_the_grpc_message() {
    for (resources, removed) in [
        (vec![], vec!["gone".to_string(), String::new()]),
        (resources(), vec![]),
        (mixed_resources(), vec!["x".to_string()]),
    ] {
        let response = DeltaResponse {
            system_version_info: "3".into(),
            resources: resources
                .iter()
                .map(|r| DeltaEntry {
                    resource: r.clone(),
                })
                .collect(),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            removed_resources: removed,
            nonce: "9".into(),
        };
        let chunks: Vec<_> = GrpcChunks::new(response.clone()).collect();
        assert_eq!(chunks.concat(), grpc_framed(&response));
        assert_shares_large(&chunks, &resources);
    }
}

/// Many tiny resources are gathered into few chunks, not one write each.
#[test]
fn small_resources_are_gathered() {
    let resources: Vec<_> = (0..2000)
        .map(|i| sized_resource(&format!("r{i}"), 20))
        .collect();
    let response = SotwResponse {
        resources,
        ..SotwResponse::default()
    };
    let chunks: Vec<_> = GrpcChunks::new(response.clone()).collect();
    assert_eq!(chunks.concat(), grpc_framed(&response));
    let total = chunks.iter().map(|c| c.len()).sum::<usize>();
    assert!(
        chunks.len() <= total / CHUNK_BYTES + 1,
        "{} chunks",
        chunks.len()
    );
}
