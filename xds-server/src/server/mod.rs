//! The xDS gRPC server: a thin tonic wrapper that feeds each ADS stream's [`connection::AdsConnection`]
//! with requests and snapshots and sends what it answers.

pub mod connection;
pub mod delta;
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
use delta::DeltaConnection;

/// Responses queued per stream before the stream's task waits for the client; a slow client only ever
/// slows its own stream, and picks up the newest snapshot when it catches up.
const STREAM_QUEUE: usize = 16;

/// How often a stream re-checks the locality of a client whose pod is not known yet.
const POD_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

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

/// What the stream loop needs of a protocol state machine (state of the world or Delta).
trait StreamMachine: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const PROTOCOL: &'static str;
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<Self::Resp>), node::NodeError>;
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn client(&self) -> Option<&crate::model::ClientInfo>;
    fn locality_pending(&self) -> bool;
    fn request_type(req: &Self::Req) -> &str;
    /// (type, resources, nonce) for the push log.
    fn describe(resp: &Self::Resp) -> (&'static str, usize, &str);
}

fn short_type(url: &str) -> &'static str {
    ResourceType::from_type_url(url).map_or("?", |k| k.short_name())
}

impl StreamMachine for AdsConnection {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const PROTOCOL: &'static str = "sotw";
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DiscoveryResponse>), node::NodeError> {
        AdsConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        AdsConnection::on_snapshot(self, snapshot)
    }
    fn client(&self) -> Option<&crate::model::ClientInfo> {
        AdsConnection::client(self)
    }
    fn locality_pending(&self) -> bool {
        AdsConnection::locality_pending(self)
    }
    fn request_type(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }
    fn describe(resp: &DiscoveryResponse) -> (&'static str, usize, &str) {
        (
            short_type(&resp.type_url),
            resp.resources.len(),
            &resp.nonce,
        )
    }
}

impl StreamMachine for DeltaConnection {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const PROTOCOL: &'static str = "delta";
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DeltaDiscoveryResponse>), node::NodeError> {
        DeltaConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        DeltaConnection::on_snapshot(self, snapshot)
    }
    fn client(&self) -> Option<&crate::model::ClientInfo> {
        DeltaConnection::client(self)
    }
    fn locality_pending(&self) -> bool {
        DeltaConnection::locality_pending(self)
    }
    fn request_type(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }
    fn describe(resp: &DeltaDiscoveryResponse) -> (&'static str, usize, &str) {
        (
            short_type(&resp.type_url),
            resp.resources.len(),
            &resp.nonce,
        )
    }
}

async fn run_stream<M: StreamMachine>(
    stream_id: u64,
    mut conn: M,
    mut inbound: Streaming<M::Req>,
    mut snapshots: Snapshots,
    tx: mpsc::Sender<Result<M::Resp, Status>>,
) where
    Streaming<M::Req>: Stream<Item = Result<M::Req, Status>> + Unpin,
{
    if snapshots.borrow().is_none() {
        debug!(stream_id, "waiting for the sources' first complete view");
        if snapshots.wait_for(Option::is_some).await.is_err() {
            return;
        }
    }
    // Snapshots published before the first request are covered by answering that request.
    snapshots.mark_unchanged();
    let current = |s: &Snapshots| s.borrow().clone().expect("present once the wait is over");
    let node = |conn: &M| conn.client().map(|c| c.node_id.clone()).unwrap_or_default();
    let protocol = M::PROTOCOL;
    // A client located through its pod, whose pod the watch has not seen yet, is re-checked on this
    // tick: pod events do not publish snapshots (they would rebuild one on every pod churn).
    let mut pod_retry = tokio::time::interval(POD_RETRY);
    pod_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                            info!(stream_id, protocol, node = %c.node_id, cluster = %c.cluster,
                                  locality = %c.locality, "Envoy connected");
                        }
                        let type_url = M::request_type(&req);
                        match what {
                            RequestKind::Nack(nack) => warn!(
                                stream_id, node = %node(&conn), type_url = %type_url,
                                rejected_version = %nack.version, error = %nack.message,
                                "Envoy rejected config (NACK); not re-sending that version"),
                            RequestKind::UnknownType(url) => debug!(
                                stream_id, node = %node(&conn), type_url = %url,
                                "request for a type we do not serve; ignored"),
                            RequestKind::StaleNonce => debug!(
                                stream_id, node = %node(&conn), type_url = %type_url,
                                "stale nonce; ignored"),
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
            _ = pod_retry.tick(), if conn.locality_pending() => {
                let responses = conn.on_snapshot(&current(&snapshots));
                if !conn.locality_pending() {
                    if let Some(c) = conn.client() {
                        info!(stream_id, node = %c.node_id, locality = %c.locality,
                              "client located through its pod");
                    }
                }
                responses
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
            let (kind, count, nonce) = M::describe(&resp);
            debug!(stream_id, node = %node(&conn), kind, resources = count, nonce, "push");
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
    if let Some(c) = conn.client() {
        info!(stream_id, protocol, node = %c.node_id, "Envoy disconnected");
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
            AdsConnection::with_lookup(self.lookup.clone()),
            request.into_inner(),
            self.snapshots.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(run_stream(
            stream_id,
            DeltaConnection::with_lookup(self.lookup.clone()),
            request.into_inner(),
            self.snapshots.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
