//! One ADS stream: the loop that feeds requests and snapshots to a protocol machine
//! ([`StreamMachine`], implemented by both) and sends what it answers, with backpressure, metrics, the
//! client registry and the logs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::body::RequestStream;
use super::sweep::CacheSweep;
use super::transport::ConnectionDrain;
use super::{status, AdsService, Counters, ResponseStream, Snapshots};
use crate::auth::workload::LogLimiter;
use crate::metrics::{self, metrics};
use crate::registry::{lock, Inspect, Protocol, Registration, XdsEvent};
use xds_core::model::shown;
use xds_core::protocol::delta::DeltaConnection;
use xds_core::protocol::error::ProtocolError;
use xds_core::protocol::sotw::{AdsConnection, RequestKind, SotwRequest};
use xds_core::protocol::wire::{DeltaResponse, SotwResponse};
use xds_core::snapshot::{ResourceType, Snapshot};

static REFUSAL_LOG: LogLimiter = LogLimiter::new();

/// Node fields (id, cluster, locality) in log lines: at most this much of each. The limits allow a
/// 4 KiB node id; a log line needs enough to recognise the client.
const LOG_FIELD_BYTES: usize = 128;

/// A client-sent text as a log line shows it.
fn logged(text: &str) -> String {
    shown(text, LOG_FIELD_BYTES)
}

/// Counts a stream as live for as long as its loop exists, however it ends.
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

/// What the stream loop needs of a protocol state machine (state of the world or Delta).
pub(super) trait StreamMachine: Inspect + Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: prost::Message + Send + 'static;
    const PROTOCOL: Protocol;
    fn on_request(
        &mut self,
        req: &Self::Req,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<Self::Resp>), ProtocolError>;
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;
    fn locality_pending(&self) -> bool;
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

impl StreamMachine for AdsConnection {
    type Req = SotwRequest;
    type Resp = SotwResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;
    fn on_request(
        &mut self,
        req: &SotwRequest,
        snapshot: &Snapshot,
    ) -> Result<(RequestKind, Vec<SotwResponse>), ProtocolError> {
        AdsConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<SotwResponse> {
        AdsConnection::on_snapshot(self, snapshot)
    }
    fn locality_pending(&self) -> bool {
        AdsConnection::locality_pending(self)
    }
    fn request_type(req: &SotwRequest) -> &str {
        &req.type_url
    }
    fn request_nonce(req: &SotwRequest) -> &str {
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
    ) -> Result<(RequestKind, Vec<DeltaResponse>), ProtocolError> {
        DeltaConnection::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaResponse> {
        DeltaConnection::on_snapshot(self, snapshot)
    }
    fn locality_pending(&self) -> bool {
        DeltaConnection::locality_pending(self)
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

/// One ADS stream: feeds requests and snapshots to the protocol machine and yields what it answers.
///
/// The loop is the response body itself: the transport's task for this stream (hyper's, which sends
/// the body) runs it whenever it polls for the next response, and every input it waits on wakes that
/// one task. There is no second task per stream and no queue between the loop and the transport.
///
/// Backpressure. The transport takes a response from the loop, hands it to h2, and takes the next one
/// only after h2 has room for it (HTTP/2 flow control, with `SEND_BUFFER_BYTES` queued per stream):
/// while it waits for room the loop is not polled, so it takes no input (a request, a snapshot, a
/// pod change) and is at most one response ahead of what the client has made room for. A slow or stuck
/// client therefore stalls only its own stream, and what the loop holds for it is bounded: the rest of
/// one input's answer (at most [`MAX_RESPONSES_PER_EVENT`](super::MAX_RESPONSES_PER_EVENT)), beyond
/// what the transport buffers. Nothing is lost or queued without bound meanwhile:
/// * snapshots: the `watch` channel keeps only the newest, so a client that catches up is answered from
///   the current state, never a backlog of stale ones (skipped snapshots are counted);
/// * requests: stay unread in the transport, whose HTTP/2 flow control stops the client from sending
///   more, and are handled in order once there is room. Reading them meanwhile would not help: handling
///   a request can itself produce responses, which would then need an unbounded queue.
///
/// Other streams never wait on this one: each is polled by its own transport task, and publishing a
/// snapshot never blocks. However the stream ends (the loop returns, or the transport drops it because
/// the client went away), [`StreamEnd`] does the bookkeeping.
fn run_stream<M: StreamMachine>(
    stream_id: u64,
    conn: M,
    mut inbound: RequestStream<M::Req>,
    service: AdsService,
    // The stream's connection's: set when the connection must go (maximum age, shutdown).
    drain: Option<ConnectionDrain>,
    live: LiveStream,
) -> impl futures::Stream<Item = Result<M::Resp, Status>> + Send + 'static {
    async_stream::stream! {
        let _live = live;
        let AdsService {
            mut snapshots,
            mut lookup_changes,
            counters,
            clients,
            sweep,
            first_request_timeout,
            ..
        } = service;
        if snapshots.borrow().is_none() {
            debug!(stream_id, "waiting for the sources' first complete view");
            // A client that gives up meanwhile drops the stream, and this wait with it.
            if snapshots.wait_for(Option::is_some).await.is_err() {
                return;
            }
        }
        // Snapshots published before the first request are covered by answering that request.
        snapshots.mark_unchanged();
        // A stream that never speaks holds its transport's task and a registry entry: it gets a deadline
        // (counted from now, when it could have been answered).
        let first_request_deadline = tokio::time::sleep(first_request_timeout);
        tokio::pin!(first_request_deadline);
        let drained = ConnectionDrain::wait(drain.as_ref());
        tokio::pin!(drained);
        // Likewise pod changes before the first request: that request looks the pod up.
        if let Some(changes) = &mut lookup_changes {
            changes.mark_unchanged();
        }
        let current = |s: &Snapshots| s.borrow().clone().expect("present once the wait is over");
        // Shared with the admin API, which reads it between our turns; never held across an await.
        let conn = Arc::new(Mutex::new(conn));
        let mut end = StreamEnd {
            stream_id,
            conn: conn.clone(),
            registration: Some(clients.register(stream_id, M::PROTOCOL, conn.clone())),
            sweep,
            connected: false,
        };
        // For logs: cut to LOG_FIELD_BYTES.
        let node = |conn: &Mutex<M>| {
            lock(conn)
                .client()
                .map(|c| logged(&c.node_id))
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
        // Per type: the nonce of the newest push a snapshot caused and the build time of the oldest
        // snapshot not yet acknowledged; its ACK closes the convergence measurement.
        let mut unacked: BTreeMap<ResourceType, (String, Instant)> = BTreeMap::new();
        // Per type, the nonce of the last NACK logged: a client repeating a NACK is logged once.
        let mut nacked: BTreeMap<ResourceType, String> = BTreeMap::new();
        // A client located through its pod, whose pod the watch has not seen yet, is looked up again
        // when the pods change (`lookup_changes`), not on a timer: pod events do not publish snapshots
        // (they would rebuild one on every pod churn).
        let pending = |conn: &Mutex<M>| lock(conn).locality_pending();
        loop {
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
                        // The machine checks the limits first: a refused request changes nothing.
                        let handled = machine.on_request(&req, &snapshot);
                        let client = machine.client().cloned();
                        let acked = ResourceType::from_type_url(M::request_type(&req))
                            .filter(|_| clients.tailing())
                            .and_then(|kind| machine.version_acked(kind));
                        drop(machine);
                        let node_id = client.as_ref().map(|c| c.node_id.clone()).unwrap_or_default();
                        let node_log = logged(&node_id);
                        match handled {
                            Ok((what, responses)) => {
                                sync(&snapshot);
                                if first {
                                    let c = client.as_ref().expect("set by the first request");
                                    end.connected = true;
                                    metrics()
                                        .connected_clients
                                        .get_or_create(&metrics::protocol_label(protocol))
                                        .inc();
                                    // The message stays `Envoy connected` for every kind of client
                                    // (tests and dashboards match it); `kind` tells gRPC clients apart.
                                    info!(stream_id, protocol, node = %node_log, kind = %c.kind,
                                          cluster = %logged(&c.cluster),
                                          locality = %logged(&c.locality.to_string()), "Envoy connected");
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
                                    RequestKind::Nack(_)
                                        if ResourceType::from_type_url(type_url).is_some_and(|k| {
                                            nacked.get(&k).map(String::as_str)
                                                == Some(M::request_nonce(&req))
                                        }) =>
                                    {
                                        debug!(stream_id, node = %node_log, type = short_type(type_url),
                                               "NACK repeated (already logged)");
                                    }
                                    RequestKind::Nack(nack) => {
                                        warn!(
                                        stream_id, node = %node_log, type_url = %type_url,
                                        rejected_version = %nack.version, error = %nack.message,
                                        "Envoy rejected config (NACK); not re-sending that version");
                                        if let Some(kind) = ResourceType::from_type_url(type_url) {
                                            nacked.insert(kind, M::request_nonce(&req).to_string());
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
                                        stream_id, node = %node_log, type = short_type(type_url),
                                        type_url_bytes = type_url.len(),
                                        "request for a type we do not serve; ignored"),
                                    RequestKind::StaleNonce => debug!(
                                        stream_id, node = %node_log, type = short_type(type_url),
                                        "stale nonce; ignored"),
                                    RequestKind::Initial => {}
                                }
                                Step::Send(responses, None)
                            }
                            Err(err) => {
                                // A client can be refused as often as it reconnects: a line per second.
                                if let Some(left_out) = REFUSAL_LOG.allow() {
                                    warn!(stream_id, node = %node_log, error = %err, left_out,
                                          "refusing ADS stream");
                                }
                                Step::Close(Some(status(&err)))
                            }
                        }
                    }
                },
                changed = async { lookup_changes.as_mut().expect("checked").changed().await },
                    if lookup_changes.is_some() && pending(&conn) => {
                    if changed.is_err() {
                        // The source is gone: nothing will locate this client any more.
                        lookup_changes = None;
                        continue;
                    }
                    let snapshot = current(&snapshots);
                    let mut machine = lock(&conn);
                    let responses = machine.on_snapshot(&snapshot);
                    sync(&snapshot);
                    if !machine.locality_pending() {
                        if let Some(c) = machine.client() {
                            info!(stream_id, node = %logged(&c.node_id),
                                  locality = %logged(&c.locality.to_string()),
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
                reason = &mut drained => {
                    debug!(stream_id, node = %node(&conn), ?reason, "connection draining; ending the stream");
                    Step::Close(Some(reason.status()))
                }
                // `connected` is set by the first request (a refused one ends the stream).
                _ = &mut first_request_deadline, if !end.connected => {
                    debug!(stream_id, "no first request in time; ending the stream");
                    Step::Close(Some(Status::deadline_exceeded(format!(
                        "no request on this stream within {:?} (--first-request-timeout)",
                        first_request_timeout
                    ))))
                }
            };
            let (responses, cause) = match step {
                Step::Send(responses, cause) => (responses, cause),
                Step::Close(status) => {
                    if let Some(status) = status {
                        yield Err(status);
                    }
                    break;
                }
            };
            counters
                .max_held
                .fetch_max(responses.len(), Ordering::Relaxed);
            if responses.is_empty() {
                continue;
            }
            // Only the event tail and debug logs name the client: a push to thousands of clients skips
            // copying each one's node id otherwise.
            let named = clients.tailing() || tracing::enabled!(tracing::Level::DEBUG);
            let node_id = named
                .then(|| lock(&conn).client().map(|c| c.node_id.clone()))
                .flatten()
                .unwrap_or_default();
            let node_log = if named {
                logged(&node_id)
            } else {
                String::new()
            };
            let mut log = |resp: &M::Resp| {
                let (kind, count, nonce) = M::describe(resp);
                debug!(stream_id, node = %node_log, kind, resources = count, nonce, "push");
                let bytes = prost::Message::encoded_len(resp);
                if let Some(kind) = ResourceType::from_type_url(M::response_type(resp)) {
                    let m = metrics::push_metrics(kind);
                    m.pushes.inc();
                    m.resources.inc_by(count as u64);
                    m.bytes.inc_by(bytes as u64);
                    if let Some(built) = cause {
                        m.latency.observe(built.elapsed().as_secs_f64());
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
            // One input's answer (make-before-break order) goes out as the client takes it.
            for resp in responses {
                log(&resp);
                yield Ok(resp);
            }
        }
    }
}

/// What ends with a stream, however it ends: the loop returning, or the transport dropping the stream
/// mid-wait because the client went away.
struct StreamEnd<M: StreamMachine> {
    stream_id: u64,
    conn: Arc<Mutex<M>>,
    registration: Option<Registration>,
    sweep: Arc<CacheSweep>,
    /// Set by the first request that was answered.
    connected: bool,
}

impl<M: StreamMachine> Drop for StreamEnd<M> {
    fn drop(&mut self) {
        let protocol = M::PROTOCOL.as_str();
        if self.connected {
            metrics()
                .connected_clients
                .get_or_create(&metrics::protocol_label(protocol))
                .dec();
        }
        if let Some(c) = lock(&self.conn).client() {
            info!(stream_id = self.stream_id, protocol, node = %logged(&c.node_id), kind = %c.kind,
                  "Envoy disconnected");
        }
        // Deregistered first, so the sweep no longer counts this client.
        drop(self.registration.take());
        if self.connected {
            self.sweep.client_left();
        }
    }
}

impl AdsService {
    /// A new stream: its loop is the response stream the transport sends (see [`run_stream`]).
    pub(super) fn open<M: StreamMachine>(
        &self,
        conn: M,
        request: Request<RequestStream<M::Req>>,
    ) -> Response<ResponseStream<M::Resp>> {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let drain = request.extensions().get::<ConnectionDrain>().cloned();
        let live = LiveStream::new(&self.counters);
        Response::new(Box::pin(run_stream::<M>(
            stream_id,
            conn,
            request.into_inner(),
            self.clone(),
            drain,
            live,
        )))
    }
}
