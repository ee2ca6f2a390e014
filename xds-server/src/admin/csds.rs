//! Envoy's Client Status Discovery Service (`envoy.service.status.v3`), from the client registry: one
//! `ClientConfig` per connected node with a `GenericXdsConfig` per resource it holds.
//!
//! Per resource, from the type's conversation and the resource's content hash:
//!
//! | type status | holds the current content | config_status | client_status | xds_config |
//! |---|---|---|---|---|
//! | NACKED      | any | ERROR    | NACKED    | –, `error_state` has Envoy's error |
//! | SYNCED      | yes | SYNCED   | ACKED     | the resource |
//! | SYNCED      | no  | STALE    | ACKED     | – (the server has a newer one) |
//! | STALE       | yes | STALE    | REQUESTED | the resource (sent, not ACKed yet) |
//! | STALE       | no  | STALE    | REQUESTED | – |
//! | NOT_SENT    | –   | NOT_SENT | REQUESTED | – (one entry without a name) |

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, NodeMatcher};
use envoy_types::pb::envoy::service::status::v3::{
    client_config::GenericXdsConfig,
    client_status_discovery_service_server::{
        ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
    },
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::Timestamp;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::Snapshots;
use crate::registry::{ClientRegistry, ClientSummary, SyncStatus};

#[derive(Clone)]
pub struct CsdsService {
    snapshots: Snapshots,
    clients: Arc<ClientRegistry>,
}

/// How one resource stands with a client, in CSDS terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceStatus {
    pub config: ConfigStatus,
    pub client: ClientResourceStatus,
    /// Include the resource itself (the client holds what the server has now).
    pub with_config: bool,
}

/// The table in the module documentation.
pub fn resource_status(type_status: SyncStatus, holds_current: bool) -> ResourceStatus {
    let (config, client, with_config) = match type_status {
        SyncStatus::Nacked => (ConfigStatus::Error, ClientResourceStatus::Nacked, false),
        SyncStatus::Synced if holds_current => {
            (ConfigStatus::Synced, ClientResourceStatus::Acked, true)
        }
        SyncStatus::Synced => (ConfigStatus::Stale, ClientResourceStatus::Acked, false),
        SyncStatus::Stale => (
            ConfigStatus::Stale,
            ClientResourceStatus::Requested,
            holds_current,
        ),
        SyncStatus::NotSent => (
            ConfigStatus::NotSent,
            ClientResourceStatus::Requested,
            false,
        ),
    };
    ResourceStatus {
        config,
        client,
        with_config,
    }
}

/// Does a node id pass the request's matchers (none = every node)? Exact, prefix, suffix and contains
/// (with `ignore_case`) are supported; regular expressions and metadata matchers are refused.
pub fn matches(matchers: &[NodeMatcher], node_id: &str) -> Result<bool, Status> {
    if matchers.is_empty() {
        return Ok(true);
    }
    for m in matchers {
        if !m.node_metadatas.is_empty() {
            return Err(Status::unimplemented(
                "node metadata matchers are not supported; match on the node id",
            ));
        }
        let Some(sm) = &m.node_id else {
            return Ok(true);
        };
        let fold = |s: &str| {
            if sm.ignore_case {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let id = fold(node_id);
        let hit = match &sm.match_pattern {
            None => true,
            Some(MatchPattern::Exact(s)) => id == fold(s),
            Some(MatchPattern::Prefix(s)) => id.starts_with(&fold(s)),
            Some(MatchPattern::Suffix(s)) => id.ends_with(&fold(s)),
            Some(MatchPattern::Contains(s)) => id.contains(&fold(s)),
            Some(_) => {
                return Err(Status::unimplemented(
                    "only exact, prefix, suffix and contains node id matchers are supported",
                ))
            }
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl CsdsService {
    pub fn new(snapshots: Snapshots, clients: Arc<ClientRegistry>) -> Self {
        Self { snapshots, clients }
    }

    pub fn into_server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// One answer to a CSDS request.
    pub fn answer(&self, req: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let snapshot = self.snapshots.borrow().clone();
        // One config per node: its newest stream (`list` is ordered by node, then stream).
        let mut newest: Vec<ClientSummary> = Vec::new();
        for c in self.clients.list() {
            if !matches(&req.node_matchers, &c.node_id)? {
                continue;
            }
            match newest.last_mut() {
                Some(last) if last.node_id == c.node_id => *last = c,
                _ => newest.push(c),
            }
        }
        let mut config = Vec::new();
        for c in &newest {
            let info = self.clients.client_info(&c.node_id);
            let mut generic = Vec::new();
            for t in &c.types {
                let r = &t.report;
                let type_url = r.kind.type_url().to_string();
                let error_state = r.nack.as_ref().map(|(version, error)| UpdateFailureState {
                    failed_configuration: None,
                    last_update_attempt: t.nack_at.map(timestamp),
                    details: error.clone(),
                    version_info: version.clone(),
                });
                if r.held.is_empty() {
                    let st = resource_status(r.status, false);
                    generic.push(GenericXdsConfig {
                        type_url,
                        config_status: st.config as i32,
                        client_status: st.client as i32,
                        error_state,
                        ..GenericXdsConfig::default()
                    });
                    continue;
                }
                for (name, hash) in &r.held {
                    let current = match (&snapshot, &info) {
                        (Some(s), Some(i)) => s.resource(r.kind, i, name),
                        _ => None,
                    };
                    let holds_current = current.as_ref().is_some_and(|cur| cur.hash == *hash);
                    let st = resource_status(r.status, holds_current);
                    let version = match st.client {
                        ClientResourceStatus::Acked | ClientResourceStatus::Nacked => {
                            r.version_acked.clone()
                        }
                        _ => r.version_sent.clone(),
                    };
                    generic.push(GenericXdsConfig {
                        type_url: type_url.clone(),
                        name: name.clone(),
                        version_info: version.unwrap_or_default(),
                        // Secrets are listed by name and version only: they hold private keys.
                        xds_config: current
                            .filter(|_| {
                                st.with_config
                                    && !req.exclude_resource_contents
                                    && r.kind.shows_contents()
                            })
                            .map(|cur| cur.any.clone()),
                        config_status: st.config as i32,
                        client_status: st.client as i32,
                        error_state: error_state.clone(),
                        ..GenericXdsConfig::default()
                    });
                }
            }
            config.push(ClientConfig {
                node: Some(Node {
                    id: c.node_id.clone(),
                    cluster: c.cluster.clone(),
                    locality: Some(EnvoyLocality {
                        region: c.locality.region.clone(),
                        zone: c.locality.zone.clone(),
                        sub_zone: c.locality.subzone.clone(),
                    }),
                    ..Node::default()
                }),
                generic_xds_configs: generic,
                ..ClientConfig::default()
            });
        }
        Ok(ClientStatusResponse { config })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let this = self.clone();
        let answers = request
            .into_inner()
            .map(move |req| req.and_then(|req| this.answer(&req)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.answer(request.get_ref()).map(Response::new)
    }
}

#[cfg(test)]
mod tests;
