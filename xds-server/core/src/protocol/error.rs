//! Every reason the protocol layer refuses a stream ([`ProtocolError`]), and the gRPC status code each
//! one is refused with ([`GrpcCode`]). The server turns them into statuses in one function
//! (`xds_server::grpc::status`); the messages are what the client reads, so each names the field and
//! the limit it broke.

use crate::model::PeerIdentity;
use crate::protocol::limits::{Limit, MAX_NAMES_PER_TYPE};
use crate::protocol::node::NodeError;
use crate::snapshot::ResourceType;

/// The gRPC status codes the protocol layer refuses with (numbers as in `google.rpc.Code`). A small
/// copy so this crate needs no gRPC library; the server maps each to its transport's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// The client sent something we will not hold or cannot read.
    InvalidArgument,
    /// A gRPC method this server does not serve.
    Unimplemented,
    /// The client claims an identity its connection did not prove.
    PermissionDenied,
}

impl GrpcCode {
    /// Every code, for tests that check a mapping is complete.
    pub const ALL: [GrpcCode; 3] = [
        GrpcCode::InvalidArgument,
        GrpcCode::Unimplemented,
        GrpcCode::PermissionDenied,
    ];

    /// The code's number on the wire (`grpc-status`).
    pub fn as_i32(self) -> i32 {
        match self {
            GrpcCode::InvalidArgument => 3,
            GrpcCode::Unimplemented => 12,
            GrpcCode::PermissionDenied => 7,
        }
    }
}

/// Which list of resource names went past [`MAX_NAMES_PER_TYPE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameList {
    /// The names a stream subscribes to (SotW: one request's list; Delta: the accumulated set).
    Subscription,
    /// Delta's `initial_resource_versions` (what a reconnecting client says it holds).
    InitialResourceVersions,
}

impl std::fmt::Display for NameList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameList::Subscription => "subscription",
            NameList::InitialResourceVersions => "initial_resource_versions",
        })
    }
}

/// Why the protocol layer refuses a stream. The stream is closed with [`ProtocolError::code`] and the
/// error's text as the status message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The first request's `node` is missing or its metadata cannot be read.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Something the client sent past one of the [`limits`](crate::protocol::limits): a node field the
    /// server keeps, logs or uses as a cache key, a resource name, the names a stream holds.
    #[error(
        "{field}: {amount} {unit}, over the limit of {max} ({name})",
        unit = .limit.unit,
        max = .limit.max,
        name = .limit.name
    )]
    OverLimit {
        /// What is too large, as the client knows it: `node.locality.region`,
        /// `node.metadata.labels["app"]`, `EDS subscription`, ...
        field: String,
        amount: usize,
        limit: Limit,
    },
    /// More than [`MAX_NAMES_PER_TYPE`] names of one type on one stream.
    #[error(
        "{} {list}: {count} resource names; the limit is {limit} per type per stream \
         (MAX_NAMES_PER_TYPE)",
        .kind.short_name(),
        limit = MAX_NAMES_PER_TYPE
    )]
    TooManyNames {
        kind: ResourceType,
        list: NameList,
        count: usize,
    },
    /// A gRPC method path that is not one of the xDS methods served.
    #[error("no such xDS method")]
    UnknownMethod,
    /// Node metadata `identity` names someone the connection did not prove.
    #[error(
        "node metadata `identity` claims {claimed:?}, but the connection proved {}: identity comes \
         from the client certificate or ServiceAccount token, not from node metadata (remove \
         `identity` or make it the proven SPIFFE ID)",
        match .proven {
            Some(p) => format!("{} (by {})", p.id, p.proof.as_str()),
            None => "no identity (no client certificate with a SPIFFE ID, no token)".to_string(),
        }
    )]
    IdentityMismatch {
        claimed: String,
        proven: Option<PeerIdentity>,
    },
}

impl ProtocolError {
    /// The gRPC status code the stream is refused with.
    pub fn code(&self) -> GrpcCode {
        match self {
            ProtocolError::Node(_)
            | ProtocolError::OverLimit { .. }
            | ProtocolError::TooManyNames { .. } => GrpcCode::InvalidArgument,
            ProtocolError::UnknownMethod => GrpcCode::Unimplemented,
            ProtocolError::IdentityMismatch { .. } => GrpcCode::PermissionDenied,
        }
    }
}

#[cfg(test)]
mod tests;
