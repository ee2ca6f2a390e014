use super::*;
use crate::protocol::limits::{self, MAX_NODE_ID_BYTES};

#[test]
fn codes_are_the_grpc_numbers() {
    // google.rpc.Code: INVALID_ARGUMENT = 3, UNIMPLEMENTED = 12.
    assert_eq!(GrpcCode::InvalidArgument.as_i32(), 3);
    assert_eq!(GrpcCode::Unimplemented.as_i32(), 12);
    let mut numbers: Vec<i32> = GrpcCode::ALL.iter().map(|c| c.as_i32()).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), GrpcCode::ALL.len());
}

#[test]
fn every_refusal_has_its_code() {
    let cases = [
        (
            ProtocolError::Node(NodeError::Missing),
            GrpcCode::InvalidArgument,
        ),
        (
            ProtocolError::Node(NodeError::BadMetadata {
                field: "listener_port".into(),
                reason: "must be a number".into(),
            }),
            GrpcCode::InvalidArgument,
        ),
        (
            ProtocolError::OverLimit {
                field: "node.id".into(),
                amount: MAX_NODE_ID_BYTES + 1,
                limit: limits::NODE_ID,
            },
            GrpcCode::InvalidArgument,
        ),
        (
            ProtocolError::TooManyNames {
                kind: ResourceType::Endpoint,
                list: NameList::Subscription,
                count: MAX_NAMES_PER_TYPE + 1,
            },
            GrpcCode::InvalidArgument,
        ),
        (ProtocolError::UnknownMethod, GrpcCode::Unimplemented),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}

#[test]
fn messages_name_the_field_and_the_limit() {
    assert_eq!(
        ProtocolError::from(NodeError::Missing).to_string(),
        "the first request on a stream must carry `node` (Envoy always sends it)"
    );
    assert_eq!(
        ProtocolError::from(NodeError::BadMetadata {
            field: "app_port".into(),
            reason: "required with `inbound_port`".into(),
        })
        .to_string(),
        "node metadata `app_port`: required with `inbound_port`"
    );
    assert_eq!(
        ProtocolError::OverLimit {
            field: "node.cluster".into(),
            amount: 5000,
            limit: limits::NODE_ID,
        }
        .to_string(),
        "node.cluster: 5000 bytes, over the limit of 4096 (MAX_NODE_ID_BYTES)"
    );
    assert_eq!(
        ProtocolError::OverLimit {
            field: "node.metadata.labels".into(),
            amount: 200,
            limit: limits::NODE_LABELS,
        }
        .to_string(),
        "node.metadata.labels: 200 labels, over the limit of 128 (MAX_NODE_LABELS)"
    );
    assert_eq!(
        ProtocolError::OverLimit {
            field: "EDS subscription".into(),
            amount: 5_000_000,
            limit: limits::NAME_BYTES_PER_TYPE,
        }
        .to_string(),
        "EDS subscription: 5000000 bytes of resource names, over the limit of 4194304 \
         (MAX_NAME_BYTES_PER_TYPE)"
    );
    assert_eq!(
        ProtocolError::TooManyNames {
            kind: ResourceType::Endpoint,
            list: NameList::Subscription,
            count: 50_001,
        }
        .to_string(),
        "EDS subscription: 50001 resource names; the limit is 50000 per type per stream \
         (MAX_NAMES_PER_TYPE)"
    );
    assert_eq!(
        ProtocolError::TooManyNames {
            kind: ResourceType::Cluster,
            list: NameList::InitialResourceVersions,
            count: 60_000,
        }
        .to_string(),
        "CDS initial_resource_versions: 60000 resource names; the limit is 50000 per type per \
         stream (MAX_NAMES_PER_TYPE)"
    );
    assert_eq!(
        ProtocolError::UnknownMethod.to_string(),
        "no such xDS method"
    );
}
