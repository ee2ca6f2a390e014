//! The xDS gRPC server: a thin tonic wrapper that feeds each ADS stream's protocol machine
//! ([`AdsConnection`] for SotW, [`DeltaConnection`] for Delta, both in [`xds_core::protocol`]) with
//! requests and snapshots and sends what it answers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::metrics::{self, metrics};
use crate::registry::{lock, ClientRegistry, Inspect, Protocol, XdsEvent};
use xds_core::model::LocalityLookup;
use xds_core::protocol::delta::DeltaConnection;
use xds_core::protocol::node::NodeError;
use xds_core::protocol::sotw::{AdsConnection, RequestKind};
use xds_core::protocol::wire::{DeltaResponse, SotwResponse};
use xds_core::snapshot::{ResourceType, Snapshot};

/// Responses a stream's task hands to the transport ahead of the client. One: a slow client is sent the
/// newest state when it catches up, not a backlog of stale answers (see [`run_stream`]).
const STREAM_QUEUE: usize = 1;

/// The most responses one request or snapshot produces on a stream: one per resource type. With
/// [`STREAM_QUEUE`] this bounds what a stream's task ever holds for its client.
pub const MAX_RESPONSES_PER_EVENT: usize = ResourceType::PUSH_ORDER.len();

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

/// How often a stream re-checks the locality of a client whose pod is not known yet.
const POD_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The snapshot stream the server reads. `None` until the sources have a complete view: streams opened
/// before that wait (Envoy waits with them) rather than get an empty or partial configuration.
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

/// The gRPC transport the xDS port runs on; `main` and the tests serve through the same settings.
pub fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
}

/// Counters shared by all streams of one [`AdsService`].
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    live: AtomicUsize,
    snapshots_skipped: AtomicU64,
    max_held: AtomicUsize,
}

/// What the ADS streams of one service are doing, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Streams opened since start.
    pub opened: u64,
    /// Streams whose task is still running.
    pub live: usize,
    /// Snapshots a stream never computed an answer from because a newer one replaced it while the
    /// stream waited for its client (latest state wins).
    pub snapshots_skipped: u64,
    /// The most responses any stream's task has held at once (queued to its client or about to be).
    pub max_held_responses: usize,
}

/// Counts a stream as live for as long as its task runs, however the task ends.
struct LiveStream(Arc<Counters>);

impl LiveStream {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.opened.fetch_add(1, Ordering::Relaxed);
        counters.live.fetch_add(1, Ordering::Relaxed);
        Self(counters.clone())
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct AdsService {
    snapshots: Snapshots,
    next_stream_id: Arc<AtomicU64>,
    lookup: Option<Arc<dyn LocalityLookup>>,
    counters: Arc<Counters>,
    clients: Arc<ClientRegistry>,
}

impl AdsService {
    pub fn new(snapshots: Snapshots) -> Self {
        Self {
            snapshots,
            next_stream_id: Arc::new(AtomicU64::new(1)),
            lookup: None,
            counters: Arc::default(),
            clients: ClientRegistry::new(),
        }
    }

    /// Report streams to this registry (the admin API reads it) instead of a private one.
    pub fn with_clients(mut self, clients: Arc<ClientRegistry>) -> Self {
        self.clients = clients;
        self
    }

    pub fn clients(&self) -> &Arc<ClientRegistry> {
        &self.clients
    }

    /// Locate clients whose bootstrap has no `node.locality` through their pod.
    pub fn with_lookup(mut self, lookup: Option<Arc<dyn LocalityLookup>>) -> Self {
        self.lookup = lookup;
        self
    }

    /// The gRPC service, with the request size limit ([`MAX_REQUEST_BYTES`]).
    pub fn into_server(self) -> AdsServer {
        XdsServer(self, std::marker::PhantomData)
    }

    /// The standalone SDS service (for an Envoy whose `sds_config` names this server's gRPC service
    /// rather than ADS), on the same streams and state machines.
    pub fn into_sds_server(self) -> SdsServer {
        XdsServer(self, std::marker::PhantomData)
    }

    /// ADS streams whose task is running (clones of a service share the count).
    pub fn live_streams(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    pub fn stream_stats(&self) -> StreamStats {
        let c = &self.counters;
        StreamStats {
            opened: c.opened.load(Ordering::Relaxed),
            live: c.live.load(Ordering::Relaxed),
            snapshots_skipped: c.snapshots_skipped.load(Ordering::Relaxed),
            max_held_responses: c.max_held.load(Ordering::Relaxed),
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the stream loop needs of a protocol state machine (state of the world or Delta).
trait StreamMachine: Inspect + Send + 'static {
    type Req: Send + 'static;
    type Resp: prost::Message + Send + 'static;
    const PROTOCOL: Protocol;
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<Self::Resp>), NodeError>;
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn locality_pending(&self) -> bool;
    /// Refuses a request that would grow the stream's state past the limits (the message names the
    /// limit); checked before the request is handled.
    fn check_limits(&self, req: &Self::Req) -> Result<(), String>;
    fn request_type(req: &Self::Req) -> &str;
    fn request_nonce(req: &Self::Req) -> &str;
    /// (type, resources, nonce) for the push log.
    fn describe(resp: &Self::Resp) -> (&'static str, usize, &str);
    /// The version a response carries (SotW: the type version; Delta: the snapshot generation).
    fn response_version(resp: &Self::Resp) -> &str;
    fn response_type(resp: &Self::Resp) -> &str;
    /// The version the client last acknowledged for a type.
    fn version_acked(&self, kind: ResourceType) -> Option<String>;
}

fn short_type(url: &str) -> &'static str {
    ResourceType::from_type_url(url).map_or("?", |k| k.short_name())
}

/// The first request's node: its id and cluster are kept and logged, so their size is capped.
fn check_node(first: bool, node: Option<&Node>) -> Result<(), String> {
    let Some(node) = node.filter(|_| first) else {
        return Ok(()); // a missing node is node.rs's to refuse; later requests' nodes are not read
    };
    for (field, value) in [("node.id", &node.id), ("node.cluster", &node.cluster)] {
        if value.len() > MAX_NODE_ID_BYTES {
            return Err(format!(
                "{field} is {} bytes; the limit is {MAX_NODE_ID_BYTES} (MAX_NODE_ID_BYTES)",
                value.len()
            ));
        }
    }
    Ok(())
}

fn too_many_names(kind: ResourceType, what: &str, count: usize) -> String {
    format!(
        "{} {what}: {count} resource names; the limit is {MAX_NAMES_PER_TYPE} per type per stream \
         (MAX_NAMES_PER_TYPE)",
        kind.short_name()
    )
}

impl StreamMachine for AdsConnection {
    type Req = DiscoveryRequest;
    type Resp = SotwResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<SotwResponse>), NodeError> {
        AdsConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<SotwResponse> {
        AdsConnection::on_snapshot(self, snapshot)
    }
    fn locality_pending(&self) -> bool {
        AdsConnection::locality_pending(self)
    }
    fn check_limits(&self, req: &DiscoveryRequest) -> Result<(), String> {
        check_node(self.client().is_none(), req.node.as_ref())?;
        // A state-of-the-world request replaces the subscription: its own names are the whole set.
        match ResourceType::from_type_url(&req.type_url) {
            Some(kind) if req.resource_names.len() > MAX_NAMES_PER_TYPE => Err(too_many_names(
                kind,
                "subscription",
                req.resource_names.len(),
            )),
            _ => Ok(()),
        }
    }
    fn request_type(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }
    fn request_nonce(req: &DiscoveryRequest) -> &str {
        &req.response_nonce
    }
    fn describe(resp: &SotwResponse) -> (&'static str, usize, &str) {
        (
            short_type(&resp.type_url),
            resp.resources.len(),
            &resp.nonce,
        )
    }
    fn response_version(resp: &SotwResponse) -> &str {
        &resp.version_info
    }
    fn response_type(resp: &SotwResponse) -> &str {
        &resp.type_url
    }
    fn version_acked(&self, kind: ResourceType) -> Option<String> {
        self.type_state(kind).and_then(|s| s.acked_version.clone())
    }
}

impl StreamMachine for DeltaConnection {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;
    const PROTOCOL: Protocol = Protocol::Delta;
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<DeltaResponse>), NodeError> {
        DeltaConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaResponse> {
        DeltaConnection::on_snapshot(self, snapshot)
    }
    fn locality_pending(&self) -> bool {
        DeltaConnection::locality_pending(self)
    }
    fn check_limits(&self, req: &DeltaDiscoveryRequest) -> Result<(), String> {
        check_node(self.client().is_none(), req.node.as_ref())?;
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return Ok(()); // ignored, holds nothing
        };
        // Delta subscriptions accumulate over requests: count what the stream holds plus the new names.
        let st = self.type_state(kind);
        let held = st.map_or(0, |s| s.names.len());
        let added = req
            .resource_names_subscribe
            .iter()
            .filter(|n| *n != "*" && !st.is_some_and(|s| s.names.contains(*n)))
            .count();
        if held + added > MAX_NAMES_PER_TYPE {
            return Err(too_many_names(kind, "subscription", held + added));
        }
        if req.initial_resource_versions.len() > MAX_NAMES_PER_TYPE {
            return Err(too_many_names(
                kind,
                "initial_resource_versions",
                req.initial_resource_versions.len(),
            ));
        }
        Ok(())
    }
    fn request_type(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }
    fn request_nonce(req: &DeltaDiscoveryRequest) -> &str {
        &req.response_nonce
    }
    fn describe(resp: &DeltaResponse) -> (&'static str, usize, &str) {
        (
            short_type(&resp.type_url),
            resp.resources.len(),
            &resp.nonce,
        )
    }
    fn response_version(resp: &DeltaResponse) -> &str {
        &resp.system_version_info
    }
    fn response_type(resp: &DeltaResponse) -> &str {
        &resp.type_url
    }
    fn version_acked(&self, kind: ResourceType) -> Option<String> {
        self.type_state(kind).and_then(|s| s.version_acked.clone())
    }
}

/// What one turn of a stream's loop ends in.
enum Step<R> {
    /// Responses to send; with the build time of the snapshot that caused them, if one did.
    Send(Vec<R>, Option<Instant>),
    /// End the stream, telling the client why if there is a reason.
    Close(Option<Status>),
}

/// One ADS stream: feeds requests and snapshots to the protocol machine and sends what it answers.
///
/// Backpressure. The loop takes its next input (a request, a snapshot, a pod re-check) only once the
/// client has taken what was sent before: it first reserves a slot in the response channel, which has
/// [`STREAM_QUEUE`] (one) slot, and only then waits for input. A slow or stuck client therefore stalls
/// only its own task, and what the task holds for it is bounded: the one response in the channel plus
/// the rest of one input's answer (at most [`MAX_RESPONSES_PER_EVENT`]), beyond what the transport
/// buffers (the HTTP/2 window). Nothing is lost or queued without bound meanwhile:
/// * snapshots: the `watch` channel keeps only the newest, so a client that catches up is answered from
///   the current state, never a backlog of stale ones (skipped snapshots are counted);
/// * requests: stay unread in the transport, whose HTTP/2 flow control stops the client from sending
///   more, and are handled in order once there is room. Reading them meanwhile would not help: handling
///   a request can itself produce responses, which would then need an unbounded queue.
///
/// Other streams never wait on this one: each has its own task, and publishing a snapshot never blocks.
async fn run_stream<M: StreamMachine>(
    stream_id: u64,
    conn: M,
    mut inbound: Streaming<M::Req>,
    mut snapshots: Snapshots,
    tx: mpsc::Sender<Result<M::Resp, Status>>,
    counters: Arc<Counters>,
    clients: Arc<ClientRegistry>,
) where
    Streaming<M::Req>: Stream<Item = Result<M::Req, Status>> + Unpin,
{
    if snapshots.borrow().is_none() {
        debug!(stream_id, "waiting for the sources' first complete view");
        // A client may give up while we wait: don't outlive it.
        tokio::select! {
            ready = snapshots.wait_for(Option::is_some) => if ready.is_err() { return },
            _ = tx.closed() => return,
        }
    }
    // Snapshots published before the first request are covered by answering that request.
    snapshots.mark_unchanged();
    let current = |s: &Snapshots| s.borrow().clone().expect("present once the wait is over");
    // Shared with the admin API, which reads it between our turns; never held across an await.
    let conn = Arc::new(Mutex::new(conn));
    let _registration = clients.register(stream_id, M::PROTOCOL, conn.clone());
    let node = |conn: &Mutex<M>| {
        lock(conn)
            .client()
            .map(|c| c.node_id.clone())
            .unwrap_or_default()
    };
    let protocol = M::PROTOCOL.as_str();
    // The generation this stream last answered from: a jump means snapshots were skipped.
    let mut synced: Option<u64> = None;
    let mut sync = |snapshot: &Snapshot| {
        if let Some(last) = synced {
            if snapshot.generation > last + 1 {
                counters
                    .snapshots_skipped
                    .fetch_add(snapshot.generation - last - 1, Ordering::Relaxed);
            }
        }
        synced = Some(synced.map_or(snapshot.generation, |l| l.max(snapshot.generation)));
    };
    // A client located through its pod, whose pod the watch has not seen yet, is re-checked on this
    // tick: pod events do not publish snapshots (they would rebuild one on every pod churn).
    // Per type: the nonce of the newest push a snapshot caused and the build time of the oldest
    // snapshot not yet acknowledged; its ACK closes the convergence measurement.
    let mut unacked: BTreeMap<ResourceType, (String, Instant)> = BTreeMap::new();
    let mut connected = false;
    let mut pod_retry = tokio::time::interval(POD_RETRY);
    pod_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Room for the next response first, input second (see above).
        let Ok(permit) = tx.reserve().await else {
            break; // the client is gone
        };
        let step = tokio::select! {
            req = inbound.next() => match req {
                None => Step::Close(None),
                Some(Err(status)) => {
                    // A transport error, or a request over MAX_REQUEST_BYTES: say so (if the client
                    // is still there to hear it).
                    debug!(stream_id, node = %node(&conn), %status, "ADS stream error");
                    Step::Close(Some(status))
                }
                Some(Ok(req)) => {
                    let snapshot = current(&snapshots);
                    let mut machine = lock(&conn);
                    let first = machine.client().is_none();
                    let handled = machine.check_limits(&req).and_then(|()| {
                        machine.on_request(&req, &snapshot).map_err(|e| e.to_string())
                    });
                    let client = machine.client().cloned();
                    let acked = ResourceType::from_type_url(M::request_type(&req))
                        .filter(|_| clients.tailing())
                        .and_then(|kind| machine.version_acked(kind));
                    drop(machine);
                    let node_id = client.as_ref().map(|c| c.node_id.clone()).unwrap_or_default();
                    match handled {
                        Ok((what, responses)) => {
                            sync(&snapshot);
                            if first {
                                let c = client.as_ref().expect("set by the first request");
                                connected = true;
                                metrics()
                                    .connected_clients
                                    .get_or_create(&metrics::protocol_label(protocol))
                                    .inc();
                                info!(stream_id, protocol, node = %c.node_id, cluster = %c.cluster,
                                      locality = %c.locality, "Envoy connected");
                                clients.emit(XdsEvent::Connected {
                                    at: SystemTime::now(),
                                    stream_id,
                                    node: c.node_id.clone(),
                                    protocol: M::PROTOCOL,
                                    locality: c.locality.to_string(),
                                });
                            }
                            let type_url = M::request_type(&req);
                            match what {
                                RequestKind::Nack(nack) => {
                                    warn!(
                                    stream_id, node = %node_id, type_url = %type_url,
                                    rejected_version = %nack.version, error = %nack.message,
                                    "Envoy rejected config (NACK); not re-sending that version");
                                    if let Some(kind) = ResourceType::from_type_url(type_url) {
                                        clients.nacked(stream_id, kind);
                                        metrics().nacks.get_or_create(&metrics::type_label(kind)).inc();
                                        unacked.remove(&kind);
                                    }
                                    clients.emit(XdsEvent::Nacked {
                                        at: SystemTime::now(),
                                        stream_id,
                                        node: node_id.clone(),
                                        type_url: type_url.to_string(),
                                        version: nack.version,
                                        error: nack.message,
                                    });
                                }
                                RequestKind::Ack => {
                                    let kind = ResourceType::from_type_url(type_url);
                                    let nonce = M::request_nonce(&req);
                                    if let Some(kind) = kind.filter(|k| {
                                        unacked.get(k).is_some_and(|(n, _)| n == nonce)
                                    }) {
                                        let (_, built) = unacked.remove(&kind).expect("checked");
                                        metrics()
                                            .convergence
                                            .get_or_create(&metrics::type_label(kind))
                                            .observe(built.elapsed().as_secs_f64());
                                    }
                                    if clients.tailing() {
                                        clients.emit(XdsEvent::Acked {
                                            at: SystemTime::now(),
                                            stream_id,
                                            node: node_id.clone(),
                                            type_url: type_url.to_string(),
                                            version: acked.unwrap_or_default(),
                                        });
                                    }
                                }
                                RequestKind::UnknownType(_) => debug!(
                                    stream_id, node = %node_id, type = short_type(type_url),
                                    type_url_bytes = type_url.len(),
                                    "request for a type we do not serve; ignored"),
                                RequestKind::StaleNonce => debug!(
                                    stream_id, node = %node_id, type = short_type(type_url),
                                    "stale nonce; ignored"),
                                RequestKind::Initial => {}
                            }
                            Step::Send(responses, None)
                        }
                        Err(err) => {
                            warn!(stream_id, node = %node_id, error = %err, "refusing ADS stream");
                            Step::Close(Some(Status::invalid_argument(err)))
                        }
                    }
                }
            },
            _ = pod_retry.tick(), if lock(&conn).locality_pending() => {
                let snapshot = current(&snapshots);
                let mut machine = lock(&conn);
                let responses = machine.on_snapshot(&snapshot);
                sync(&snapshot);
                if !machine.locality_pending() {
                    if let Some(c) = machine.client() {
                        info!(stream_id, node = %c.node_id, locality = %c.locality,
                              "client located through its pod");
                    }
                }
                Step::Send(responses, Some(snapshot.built_at))
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    Step::Close(None)
                } else {
                    let snapshot = snapshots
                        .borrow_and_update()
                        .clone()
                        .expect("snapshots are never unset");
                    let responses = lock(&conn).on_snapshot(&snapshot);
                    sync(&snapshot);
                    Step::Send(responses, Some(snapshot.built_at))
                }
            }
            _ = tx.closed() => Step::Close(None),
        };
        let (responses, cause) = match step {
            Step::Send(responses, cause) => (responses, cause),
            Step::Close(status) => {
                if let Some(status) = status {
                    permit.send(Err(status));
                }
                break;
            }
        };
        // Held now: what is still in the channel (not counting our permit) plus this answer.
        let queued = tx.max_capacity() - tx.capacity() - 1;
        counters
            .max_held
            .fetch_max(queued + responses.len(), Ordering::Relaxed);
        let mut responses = responses.into_iter();
        let Some(first) = responses.next() else {
            continue;
        };
        let node_id = node(&conn);
        let mut log = |resp: &M::Resp| {
            let (kind, count, nonce) = M::describe(resp);
            debug!(stream_id, node = %node_id, kind, resources = count, nonce, "push");
            let bytes = prost::Message::encoded_len(resp);
            if let Some(kind) = ResourceType::from_type_url(M::response_type(resp)) {
                let m = metrics();
                let label = metrics::type_label(kind);
                m.pushes.get_or_create(&label).inc();
                m.push_resources.get_or_create(&label).inc_by(count as u64);
                m.push_bytes.get_or_create(&label).inc_by(bytes as u64);
                if let Some(built) = cause {
                    m.push_latency
                        .get_or_create(&label)
                        .observe(built.elapsed().as_secs_f64());
                    let entry = unacked.entry(kind).or_insert((String::new(), built));
                    entry.0 = nonce.to_string();
                }
            }
            if clients.tailing() {
                clients.emit(XdsEvent::Pushed {
                    at: SystemTime::now(),
                    stream_id,
                    node: node_id.clone(),
                    type_url: M::response_type(resp).to_string(),
                    version: M::response_version(resp).to_string(),
                    resources: count,
                    bytes,
                });
            }
        };
        log(&first);
        permit.send(Ok(first));
        // The rest of one input's answer (make-before-break order) goes out as the client takes it.
        for resp in responses {
            log(&resp);
            if tx.send(Ok(resp)).await.is_err() {
                break;
            }
        }
    }
    if connected {
        metrics()
            .connected_clients
            .get_or_create(&metrics::protocol_label(protocol))
            .dec();
    }
    let machine = lock(&conn);
    if let Some(c) = machine.client() {
        info!(stream_id, protocol, node = %c.node_id, "Envoy disconnected");
    }
}

/// The gRPC service names and method paths one xDS service is served under.
pub trait XdsMethods: Clone + Send + 'static {
    const NAME: &'static str;
    const SOTW_PATH: &'static str;
    const DELTA_PATH: &'static str;
}

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`.
#[derive(Clone)]
pub struct Ads;

impl XdsMethods for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
    const SOTW_PATH: &'static str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    const DELTA_PATH: &'static str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
}

/// `envoy.service.secret.v3.SecretDiscoveryService`: StreamSecrets and DeltaSecrets carry the same
/// messages as ADS, so they run on the same stream loop and state machines (a stream answers whatever
/// types it is asked for, like an ADS stream).
#[derive(Clone)]
pub struct Sds;

impl XdsMethods for Sds {
    const NAME: &'static str = "envoy.service.secret.v3.SecretDiscoveryService";
    const SOTW_PATH: &'static str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
    const DELTA_PATH: &'static str = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";
}

/// One xDS gRPC service (`M` names it and its two methods). Written out instead of using envoy-types'
/// generated servers, whose response types are fixed to `DiscoveryResponse`: ours write the cache's
/// shared encoded resources ([`wire`]). Same service names and methods, same bytes on the wire.
#[derive(Clone)]
pub struct XdsServer<M: XdsMethods>(AdsService, std::marker::PhantomData<M>);

pub type AdsServer = XdsServer<Ads>;
pub type SdsServer = XdsServer<Sds>;

impl<M: XdsMethods> tonic::server::NamedService for XdsServer<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: XdsMethods, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for XdsServer<M>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        dispatch(self.0.clone(), req, M::SOTW_PATH, M::DELTA_PATH)
    }
}

impl AdsService {
    fn open<M: StreamMachine>(
        &self,
        conn: M,
        request: Request<Streaming<M::Req>>,
    ) -> Response<ResponseStream<M::Resp>>
    where
        Streaming<M::Req>: Stream<Item = Result<M::Req, Status>> + Unpin,
    {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let live = LiveStream::new(&self.counters);
        let stream = run_stream(
            stream_id,
            conn,
            request.into_inner(),
            self.snapshots.clone(),
            tx,
            self.counters.clone(),
            self.clients.clone(),
        );
        tokio::spawn(async move {
            let _live = live;
            stream.await
        });
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

struct SotwMethod(AdsService);

impl tonic::server::StreamingService<DiscoveryRequest> for SotwMethod {
    type Response = SotwResponse;
    type ResponseStream = ResponseStream<SotwResponse>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let conn = AdsConnection::with_lookup(service.lookup.clone());
            Ok(service.open(conn, request))
        })
    }
}

struct DeltaMethod(AdsService);

impl tonic::server::StreamingService<DeltaDiscoveryRequest> for DeltaMethod {
    type Response = DeltaResponse;
    type ResponseStream = ResponseStream<DeltaResponse>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let conn = DeltaConnection::with_lookup(service.lookup.clone());
            Ok(service.open(conn, request))
        })
    }
}

/// Serves a state-of-the-world method at `sotw` and an incremental one at `delta`.
fn dispatch<B>(
    service: AdsService,
    req: tonic::codegen::http::Request<B>,
    sotw: &str,
    delta: &str,
) -> tonic::codegen::BoxFuture<
    tonic::codegen::http::Response<tonic::body::Body>,
    std::convert::Infallible,
>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    let path = req.uri().path();
    if path == sotw {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<SotwResponse, DiscoveryRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.streaming(SotwMethod(service), req).await)
        })
    } else if path == delta {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<DeltaResponse, DeltaDiscoveryRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.streaming(DeltaMethod(service), req).await)
        })
    } else {
        Box::pin(async move { Ok(Status::unimplemented("no such xDS method").into_http()) })
    }
}
