//! What one stream may make the server hold, and the checks that refuse a request past it. The state
//! machines check a request before handling it ([`check_sotw`], [`check_delta`]), so a refused request
//! changes nothing; the request size is the gRPC decoder's to enforce (the server sets it from
//! [`MAX_REQUEST_BYTES`]).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use crate::protocol::delta::DeltaConnection;
use crate::protocol::error::{NameList, ProtocolError};
use crate::protocol::sotw::AdsConnection;
use crate::snapshot::ResourceType;

/// Largest request accepted, in bytes (gRPC's customary default, stated so it is a decision). Envoy's
/// biggest request is an EDS subscription naming every cluster it knows: about 100,000 names of 40
/// bytes fit. Bigger requests are refused by the decoder from their length prefix, before any buffer of
/// that size is allocated, with `OUT_OF_RANGE` ("decoded message length too large").
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Most resource names one stream may subscribe to per type. Envoy names every cluster it knows in its
/// EDS subscription, so this must exceed the largest mesh served; past it the stream is refused with
/// `INVALID_ARGUMENT` instead of holding (and answering) an unbounded set. Names that do not exist are
/// simply not answered.
pub const MAX_NAMES_PER_TYPE: usize = 50_000;

/// Longest `node.id` / `node.cluster` accepted, in bytes. Both are kept for the stream's life and
/// written to the logs on connect and disconnect; real ones are a few hundred bytes at most.
pub const MAX_NODE_ID_BYTES: usize = 4096;

/// The most responses one request or snapshot produces on a stream: one per resource type. With the
/// server's one-slot response queue this bounds what a stream's task ever holds for its client.
pub const MAX_RESPONSES_PER_EVENT: usize = ResourceType::PUSH_ORDER.len();

/// The first request's node: its id and cluster are kept and logged, so their size is capped.
pub fn check_node(first: bool, node: Option<&Node>) -> Result<(), ProtocolError> {
    let Some(node) = node.filter(|_| first) else {
        return Ok(()); // a missing node is node.rs's to refuse; later requests' nodes are not read
    };
    for (field, value) in [("node.id", &node.id), ("node.cluster", &node.cluster)] {
        if value.len() > MAX_NODE_ID_BYTES {
            return Err(ProtocolError::NodeFieldTooLarge {
                field,
                bytes: value.len(),
            });
        }
    }
    Ok(())
}

fn check_names(kind: ResourceType, list: NameList, count: usize) -> Result<(), ProtocolError> {
    if count > MAX_NAMES_PER_TYPE {
        return Err(ProtocolError::TooManyNames { kind, list, count });
    }
    Ok(())
}

/// Refuses a state-of-the-world request that would grow the stream's state past the limits.
pub fn check_sotw(conn: &AdsConnection, req: &DiscoveryRequest) -> Result<(), ProtocolError> {
    check_node(conn.client().is_none(), req.node.as_ref())?;
    // A state-of-the-world request replaces the subscription: its own names are the whole set.
    match ResourceType::from_type_url(&req.type_url) {
        Some(kind) => check_names(kind, NameList::Subscription, req.resource_names.len()),
        None => Ok(()), // ignored, holds nothing
    }
}

/// Refuses a Delta request that would grow the stream's state past the limits.
pub fn check_delta(
    conn: &DeltaConnection,
    req: &DeltaDiscoveryRequest,
) -> Result<(), ProtocolError> {
    check_node(conn.client().is_none(), req.node.as_ref())?;
    let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
        return Ok(()); // ignored, holds nothing
    };
    // Delta subscriptions accumulate over requests: count what the stream holds plus the new names.
    let st = conn.type_state(kind);
    let held = st.map_or(0, |s| s.names.len());
    let added = req
        .resource_names_subscribe
        .iter()
        .filter(|n| *n != "*" && !st.is_some_and(|s| s.names.contains(*n)))
        .count();
    check_names(kind, NameList::Subscription, held + added)?;
    check_names(
        kind,
        NameList::InitialResourceVersions,
        req.initial_resource_versions.len(),
    )
}

#[cfg(test)]
mod tests;
