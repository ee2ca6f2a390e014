//! The small conversions every answer shares: times, localities, sync states and protocols to their
//! proto form; hashes and policy origins to the text users see; resource type names from requests.

use std::time::SystemTime;

use super::pb;
use crate::registry as clients;
use xds_core::model::{ClientKind, Locality};
use xds_core::policy::PolicyOrigin;
use xds_core::snapshot::ResourceType;

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn locality_pb(l: &Locality) -> pb::Locality {
    pb::Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.subzone.clone(),
    }
}

pub fn sync_status_pb(s: clients::SyncStatus) -> pb::SyncStatus {
    match s {
        clients::SyncStatus::Synced => pb::SyncStatus::Synced,
        clients::SyncStatus::Stale => pb::SyncStatus::Stale,
        clients::SyncStatus::Nacked => pb::SyncStatus::Nacked,
        clients::SyncStatus::NotSent => pb::SyncStatus::NotSent,
    }
}

pub(super) fn protocol_pb(p: clients::Protocol) -> pb::Protocol {
    match p {
        clients::Protocol::Sotw => pb::Protocol::Sotw,
        clients::Protocol::Delta => pb::Protocol::Delta,
    }
}

pub(super) fn client_kind_pb(k: ClientKind) -> pb::ClientKind {
    match k {
        ClientKind::Envoy => pb::ClientKind::Envoy,
        ClientKind::Grpc => pb::ClientKind::Grpc,
    }
}

/// A content hash as shown to users.
pub fn hash_text(hash: u64) -> String {
    format!("{hash:016x}")
}

/// `file:PATH`, `kubernetes:NS/NAME`, `built-in`, or for a Service's traffic distribution
/// `Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default shop/defaults)`.
pub fn origin_text(origin: &PolicyOrigin) -> String {
    match origin {
        PolicyOrigin::BuiltIn => "built-in".to_string(),
        PolicyOrigin::Named {
            namespace,
            name,
            source,
        } if source == "kubernetes" => format!("kubernetes:{namespace}/{name}"),
        PolicyOrigin::Named { source, .. } => format!("file:{source}"),
        PolicyOrigin::TrafficDistribution { .. } => origin.describe(),
    }
}

/// `cds`, `eds`, `lds`, `rds` (any case, also `clusters`, `endpoints`, `listeners`, `routes`) or a type
/// URL.
pub fn parse_type(text: &str) -> Result<ResourceType, String> {
    if let Some(t) = ResourceType::from_type_url(text) {
        return Ok(t);
    }
    match text.to_ascii_lowercase().as_str() {
        "cds" | "cluster" | "clusters" => Ok(ResourceType::Cluster),
        "eds" | "endpoint" | "endpoints" => Ok(ResourceType::Endpoint),
        "lds" | "listener" | "listeners" => Ok(ResourceType::Listener),
        "rds" | "route" | "routes" => Ok(ResourceType::Route),
        "sds" | "secret" | "secrets" => Ok(ResourceType::Secret),
        _ => Err(format!(
            "unknown resource type `{text}`: use cds, eds, lds, rds, sds or a type URL"
        )),
    }
}

#[cfg(test)]
mod tests;
