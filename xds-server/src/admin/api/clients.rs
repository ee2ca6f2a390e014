//! ListClients and GetClientConfig: the connected clients, where each one's conversation stands, and
//! what one client holds against what it would be sent now.

use tonic::Status;

use super::convert::{
    client_kind_pb, hash_text, locality_pb, parse_type, protocol_pb, sync_status_pb, unix_ms,
};
use super::{current, pb};
use crate::admin::render::render_any;
use crate::grpc::Snapshots;
use crate::registry::{ClientRegistry, ClientSummary};
use xds_core::model::ClientInfo;
use xds_core::snapshot::{ResourceType, Snapshot};

pub fn client_pb(c: &ClientSummary) -> pb::Client {
    pb::Client {
        node_id: c.node_id.clone(),
        cluster: c.cluster.clone(),
        locality: Some(locality_pb(&c.locality)),
        locality_class: c.class.clone(),
        protocol: protocol_pb(c.protocol) as i32,
        connected_at_unix_ms: unix_ms(c.connected_at),
        stream_id: c.stream_id,
        identity: c
            .peer
            .as_ref()
            .map_or_else(String::new, |p| p.id.to_string()),
        identity_proof: c.peer.as_ref().map_or("", |p| p.proof.as_str()).to_string(),
        kind: client_kind_pb(c.kind) as i32,
        types: c
            .types
            .iter()
            .map(|t| {
                let r = &t.report;
                pb::TypeStatus {
                    type_url: r.kind.type_url().to_string(),
                    short_name: r.kind.short_name().to_string(),
                    status: sync_status_pb(r.status) as i32,
                    subscribed: r.subscribed,
                    wildcard: r.wildcard,
                    names: r.names as u32,
                    version_sent: r.version_sent.clone().unwrap_or_default(),
                    version_acked: r.version_acked.clone().unwrap_or_default(),
                    last_nack: r.nack.as_ref().map(|(version, error)| pb::Nack {
                        version: version.clone(),
                        error: error.clone(),
                        at_unix_ms: t.nack_at.map_or(0, unix_ms),
                    }),
                    resources: r.held.len() as u32,
                }
            })
            .collect(),
    }
}

/// The newest stream of a node (an Envoy that is reconnecting has two for a moment).
pub fn newest(registry: &ClientRegistry, node_id: &str) -> Result<ClientSummary, Status> {
    registry
        .find(node_id)
        .into_iter()
        .max_by_key(|c| c.stream_id)
        .ok_or_else(|| Status::not_found(format!("no connected client with node id `{node_id}`")))
}

/// GetClientConfig: what the newest stream of a node holds (of one type and name, if the request names
/// them), against the current snapshot.
pub(super) fn client_config(
    registry: &ClientRegistry,
    snapshots: &Snapshots,
    req: pb::GetClientConfigRequest,
) -> Result<pb::GetClientConfigResponse, Status> {
    let kind = match req.r#type.trim() {
        "" => None,
        t => Some(parse_type(t).map_err(Status::invalid_argument)?),
    };
    let summary = newest(registry, &req.node_id)?;
    let client = registry
        .client_info(&req.node_id)
        .ok_or_else(|| Status::not_found(format!("client `{}` went away", req.node_id)))?;
    let snapshot = current(snapshots)?;
    let name = Some(req.name.as_str()).filter(|n| !n.is_empty());
    Ok(pb::GetClientConfigResponse {
        node_id: summary.node_id.clone(),
        stream_id: summary.stream_id,
        snapshot_generation: snapshot.generation,
        resources: client_resources(&summary, &client, &snapshot, kind, name),
    })
}

/// What one client holds, against what it would be sent now.
pub fn client_resources(
    summary: &ClientSummary,
    client: &ClientInfo,
    snapshot: &Snapshot,
    kind: Option<ResourceType>,
    name: Option<&str>,
) -> Vec<pb::ClientResource> {
    let mut out = Vec::new();
    for t in &summary.types {
        let r = &t.report;
        if kind.is_some_and(|k| k != r.kind) {
            continue;
        }
        for (held_name, held_hash) in &r.held {
            if name.is_some_and(|n| n != held_name) {
                continue;
            }
            let current = snapshot.resource(r.kind, client, held_name);
            let older = current.as_ref().is_none_or(|c| c.hash != *held_hash);
            let text = match &current {
                Some(_) if !r.kind.shows_contents() => {
                    "(secret: contents not shown, they hold private keys)".into()
                }
                Some(c) => render_any(&c.any),
                None => "(no longer served: the client holds a resource that was removed)".into(),
            };
            out.push(pb::ClientResource {
                type_url: r.kind.type_url().to_string(),
                short_name: r.kind.short_name().to_string(),
                name: held_name.clone(),
                status: sync_status_pb(r.status) as i32,
                held_version: hash_text(*held_hash),
                current_version: current
                    .as_ref()
                    .map_or(String::new(), |c| hash_text(c.hash)),
                client_holds_older_version: older,
                text,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
