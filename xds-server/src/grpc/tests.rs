use super::*;
use xds_core::protocol::error::NameList;
use xds_core::protocol::limits;
use xds_core::protocol::node::NodeError;
use xds_core::snapshot::ResourceType;

#[test]
fn every_grpc_code_maps_to_the_same_number() {
    for code in GrpcCode::ALL {
        let err = match code {
            GrpcCode::InvalidArgument => ProtocolError::Node(NodeError::Missing),
            GrpcCode::Unimplemented => ProtocolError::UnknownMethod,
            GrpcCode::PermissionDenied => ProtocolError::IdentityMismatch {
                claimed: "beta".into(),
                proven: None,
            },
        };
        assert_eq!(err.code(), code);
        assert_eq!(status(&err).code() as i32, code.as_i32(), "{code:?}");
    }
}

#[test]
fn a_refusal_keeps_its_message_and_code() {
    let cases = [
        (
            ProtocolError::Node(NodeError::Missing),
            tonic::Code::InvalidArgument,
        ),
        (
            ProtocolError::OverLimit {
                field: "node.id".into(),
                amount: MAX_NODE_ID_BYTES + 1,
                limit: limits::NODE_ID,
            },
            tonic::Code::InvalidArgument,
        ),
        (
            ProtocolError::TooManyNames {
                kind: ResourceType::Endpoint,
                list: NameList::Subscription,
                count: MAX_NAMES_PER_TYPE + 1,
            },
            tonic::Code::InvalidArgument,
        ),
        (ProtocolError::UnknownMethod, tonic::Code::Unimplemented),
    ];
    for (err, code) in cases {
        let status = status(&err);
        assert_eq!(status.code(), code, "{err}");
        assert_eq!(status.message(), err.to_string());
    }
    let status = status(&ProtocolError::OverLimit {
        field: "node.id".into(),
        amount: 5000,
        limit: limits::NODE_ID,
    });
    assert_eq!(
        status.message(),
        "node.id: 5000 bytes, over the limit of 4096 (MAX_NODE_ID_BYTES)"
    );
}
