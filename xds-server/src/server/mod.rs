//! The xDS gRPC server: a thin tonic wrapper that feeds each ADS stream's [`connection::AdsConnection`]
//! with requests and snapshots and sends what it answers.

pub mod connection;
pub mod node;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::cache::{ResourceType, Snapshot};
use connection::{AdsConnection, RequestKind};

/// Responses queued per stream before the stream's task waits for the client; a slow client only ever
/// slows its own stream, and picks up the newest snapshot when it catches up.
const STREAM_QUEUE: usize = 16;

/// The snapshot stream the server reads. `None` until the sources have a complete view: streams opened
/// before that wait (Envoy waits with them) rather than get an empty or partial configuration.
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Clone)]
pub struct AdsService {
    snapshots: Snapshots,
    next_stream_id: Arc<AtomicU64>,
    lookup: Option<Arc<dyn node::LocalityLookup>>,
}

impl AdsService {
    pub fn new(snapshots: Snapshots) -> Self {
        Self {
            snapshots,
            next_stream_id: Arc::new(AtomicU64::new(1)),
            lookup: None,
        }
    }

    /// Locate clients whose bootstrap has no `node.locality` through their pod.
    pub fn with_lookup(mut self, lookup: Option<Arc<dyn node::LocalityLookup>>) -> Self {
        self.lookup = lookup;
        self
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn summarize(resp: &DiscoveryResponse) -> (&'static str, usize) {
    let kind = ResourceType::from_type_url(&resp.type_url).map_or("?", |k| k.short_name());
    (kind, resp.resources.len())
}

async fn run_stream(
    stream_id: u64,
    mut inbound: Streaming<DiscoveryRequest>,
    mut snapshots: Snapshots,
    lookup: Option<Arc<dyn node::LocalityLookup>>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut conn = AdsConnection::with_lookup(lookup);
    if snapshots.borrow().is_none() {
        debug!(stream_id, "waiting for the sources' first complete view");
        if snapshots.wait_for(Option::is_some).await.is_err() {
            return;
        }
    }
    // Snapshots published before the first request are covered by answering that request.
    snapshots.mark_unchanged();
    let current = |s: &Snapshots| s.borrow().clone().expect("present once the wait is over");
    let node = |conn: &AdsConnection| conn.client().map(|c| c.node_id.clone()).unwrap_or_default();
    loop {
        let responses = tokio::select! {
            req = inbound.next() => {
                let req = match req {
                    Some(Ok(req)) => req,
                    Some(Err(status)) => {
                        debug!(stream_id, node = %node(&conn), %status, "ADS stream error");
                        break;
                    }
                    None => break,
                };
                let snapshot = current(&snapshots);
                let first = conn.client().is_none();
                match conn.on_request(&req, &snapshot) {
                    Ok((what, responses)) => {
                        if first {
                            let c = conn.client().expect("set by the first request");
                            info!(stream_id, node = %c.node_id, cluster = %c.cluster,
                                  locality = %c.locality, "Envoy connected");
                        }
                        match what {
                            RequestKind::Nack(nack) => warn!(
                                stream_id, node = %node(&conn), type_url = %req.type_url,
                                rejected_version = %nack.version, error = %nack.message,
                                "Envoy rejected config (NACK); not re-sending that version"),
                            RequestKind::UnknownType(url) => debug!(
                                stream_id, node = %node(&conn), type_url = %url,
                                "request for a type we do not serve; ignored"),
                            RequestKind::StaleNonce => debug!(
                                stream_id, node = %node(&conn), type_url = %req.type_url,
                                nonce = %req.response_nonce, "stale nonce; ignored"),
                            RequestKind::Initial | RequestKind::Ack => {}
                        }
                        responses
                    }
                    Err(err) => {
                        warn!(stream_id, error = %err, "refusing ADS stream");
                        let _ = tx.send(Err(Status::invalid_argument(err.to_string()))).await;
                        break;
                    }
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                conn.on_snapshot(&snapshot.expect("snapshots are never unset"))
            }
        };
        for resp in responses {
            let (kind, count) = summarize(&resp);
            debug!(stream_id, node = %node(&conn), kind, resources = count,
                   version = %resp.version_info, nonce = %resp.nonce, "push");
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
    if let Some(c) = conn.client() {
        info!(stream_id, node = %c.node_id, "Envoy disconnected");
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(run_stream(
            stream_id,
            request.into_inner(),
            self.snapshots.clone(),
            self.lookup.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental (delta) xDS is not served yet; configure Envoy with api_type: GRPC",
        ))
    }
}
