//! Simulated Envoy ADS clients and what they observed.
//!
//! A client subscribes like Envoy: CDS wildcard; on the clusters, EDS for every cluster (then it ACKs
//! CDS); on the first endpoints, LDS wildcard; on the listener, RDS `outbound`. Every response is ACKed
//! at once (SotW: version and nonce, with the full subscription as Envoy sends it; Delta: nonce).
//! A client has its *full config* once it holds every cluster, the endpoints of every cluster, a
//! listener and the route configuration.
//!
//! Changes: the driver registers each endpoint change in the [`Tracker`] (cluster, endpoint slot,
//! marker address) before writing the file. A client that receives a load assignment of that cluster
//! containing the marker records it once; when the last client has, the change has converged. Several
//! changes of one cluster may be in flight if they use different endpoint slots: a later state then
//! still holds every earlier marker, so a client that skips states records them all at once.
//!
//! A client whose stream fails reconnects (after 250 ms, doubling to 5 s), as Envoy does, and
//! subscribes again; failures are counted and reported. What a client holds is counted per stream (a new
//! stream must deliver the whole config again), and every response is checked for what a control plane
//! must never send, however it restarts: a CDS answer with fewer clusters than the scenario has, a load
//! assignment without endpoints, a listener or route answer without them ([`Tracker::violations`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::wire::{self, Outgoing, RawCodec};
use super::Protocol;

/// One endpoint change, from the file write to the last client that received it.
#[derive(Debug)]
pub struct Change {
    /// Global, increasing in the order changes are written; never 0.
    pub id: u32,
    pub cluster: u32,
    /// Which endpoint of the cluster it rewrote.
    pub slot: usize,
    pub marker: String,
    needle: Vec<u8>,
    /// Nanoseconds since [`Tracker::base`] of the rename that published it (`u64::MAX` until written).
    pub applied_ns: AtomicU64,
    pub applied_wall: OnceLock<SystemTime>,
    /// Clients that have yet to receive it.
    pub remaining: AtomicUsize,
    /// When the latest client received it (nanoseconds since base).
    pub last_ns: AtomicU64,
}

impl Change {
    pub fn new(id: u32, cluster: u32, slot: usize, marker: String, clients: usize) -> Self {
        assert!(id > 0, "change ids start at 1");
        Change {
            id,
            cluster,
            slot,
            needle: wire::address_needle(&marker),
            marker,
            applied_ns: AtomicU64::new(u64::MAX),
            applied_wall: OnceLock::new(),
            remaining: AtomicUsize::new(clients),
            last_ns: AtomicU64::new(0),
        }
    }

    pub fn converged(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Rename → last client, if converged.
    pub fn convergence_ns(&self) -> Option<u64> {
        let applied = self.applied_ns.load(Ordering::Acquire);
        (self.converged() && applied != u64::MAX)
            .then(|| self.last_ns.load(Ordering::Acquire).saturating_sub(applied))
    }
}

/// Everything the clients of one run share: the expected config, the changes in flight, counters.
pub struct Tracker {
    pub base: Instant,
    pub clients: usize,
    /// Cluster name → index.
    clusters: HashMap<String, u32>,
    /// The expected cluster names, sorted, and their encoding as `DiscoveryRequest.resource_names`.
    sorted_names: Vec<String>,
    names_field: Bytes,
    /// Per cluster: the changes in flight, oldest first.
    outstanding: Vec<Mutex<Vec<Arc<Change>>>>,
    /// Clients with full config.
    pub complete: AtomicUsize,
    /// Nanoseconds since base at which each client got its full config (index = client).
    completed_at: Vec<AtomicU64>,
    /// Clients whose stream is open.
    pub live: AtomicUsize,
    pub bytes: AtomicU64,
    pub responses: AtomicU64,
    /// Streams that failed or were ended by the server (each client then reconnects).
    pub failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// Responses that were empty or partial (see the module doc); must stay 0.
    pub violations: AtomicU64,
    first_violation: Mutex<Option<String>>,
    /// Per client: when its current stream delivered the full config (nanoseconds since base;
    /// `u64::MAX` while the stream has not, or no stream is open).
    stream_synced_at: Vec<AtomicU64>,
    stopping: AtomicBool,
}

impl Tracker {
    pub fn new(clients: usize, cluster_names: &[String]) -> Arc<Self> {
        let mut sorted_names = cluster_names.to_vec();
        sorted_names.sort();
        let names_field = DiscoveryRequest {
            resource_names: sorted_names.clone(),
            ..Default::default()
        }
        .encode_to_vec()
        .into();
        Arc::new(Tracker {
            base: Instant::now(),
            clients,
            clusters: cluster_names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            sorted_names,
            names_field,
            outstanding: cluster_names
                .iter()
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            complete: AtomicUsize::new(0),
            completed_at: (0..clients).map(|_| AtomicU64::new(u64::MAX)).collect(),
            live: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            violations: AtomicU64::new(0),
            first_violation: Mutex::new(None),
            stream_synced_at: (0..clients).map(|_| AtomicU64::new(u64::MAX)).collect(),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn ns_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    pub fn clusters(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether endpoint `slot` of `cluster` may be changed: no change in flight uses it (its marker
    /// must stay in the file until every client has seen it).
    pub fn slot_free(&self, cluster: u32, slot: usize) -> bool {
        !lock(&self.outstanding[cluster as usize])
            .iter()
            .any(|c| c.slot == slot)
    }

    /// Changes in flight.
    pub fn in_flight(&self) -> usize {
        self.outstanding.iter().map(|o| lock(o).len()).sum()
    }

    /// Registers a change before it is written; clients look for it from now on.
    pub fn register(&self, change: Arc<Change>) {
        let cluster = change.cluster as usize;
        lock(&self.outstanding[cluster]).push(change);
    }

    /// Stops looking for a change (the run gave up on it).
    pub fn retire(&self, change: &Arc<Change>) {
        lock(&self.outstanding[change.cluster as usize]).retain(|c| !Arc::ptr_eq(c, change));
    }

    /// Per-client time to full config in nanoseconds since base (`None`: never).
    pub fn completion_times(&self) -> Vec<Option<u64>> {
        self.completed_at
            .iter()
            .map(|t| Some(t.load(Ordering::Acquire)).filter(|&t| t != u64::MAX))
            .collect()
    }

    pub fn first_failure(&self) -> Option<String> {
        lock(&self.first_failure).clone()
    }

    pub fn first_violation(&self) -> Option<String> {
        lock(&self.first_violation).clone()
    }

    /// When `client`'s current stream delivered its full config (nanoseconds since base), if it has.
    pub fn stream_synced_at(&self, client: usize) -> Option<u64> {
        Some(self.stream_synced_at[client].load(Ordering::Acquire)).filter(|&t| t != u64::MAX)
    }

    /// Clients whose current stream delivered the full config at or after `since_ns`.
    pub fn synced_since(&self, since_ns: u64) -> usize {
        self.stream_synced_at
            .iter()
            .filter(|t| {
                let t = t.load(Ordering::Acquire);
                t != u64::MAX && t >= since_ns
            })
            .count()
    }

    /// An empty or partial response reached a client.
    fn violation(&self, client: usize, what: String) {
        self.violations.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_violation).get_or_insert_with(|| format!("client {client}: {what}"));
    }

    /// Client streams ending from now on are the run ending, not failures.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn fail(&self, client: usize, error: String) {
        if self.stopping() {
            return;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_failure).get_or_insert_with(|| format!("client {client}: {error}"));
    }

    /// A load assignment for cluster `idx` reached a client.
    fn on_assignment(&self, st: &mut ClientState, idx: u32, cla: &[u8]) {
        let i = idx as usize;
        if st.eds[i / 64] & (1 << (i % 64)) == 0 {
            st.eds[i / 64] |= 1 << (i % 64);
            st.eds_count += 1;
        }
        let mut in_flight = lock(&self.outstanding[i]);
        if in_flight.is_empty() {
            return;
        }
        // Changes up to `seen` were recorded by this client already. A state holding a change's
        // marker holds every earlier marker of the cluster (their slots are not rewritten while they
        // are in flight), so recording by id order never misses one.
        let seen = st.seen_change[i];
        let mut newest = seen;
        let now = self.now_ns();
        in_flight.retain(|change| {
            if change.id <= seen || !wire::contains(cla, &change.needle) {
                return true;
            }
            newest = newest.max(change.id);
            change.last_ns.fetch_max(now, Ordering::AcqRel);
            // The last client retires it.
            change.remaining.fetch_sub(1, Ordering::AcqRel) != 1
        });
        st.seen_change[i] = newest;
    }

    fn check_complete(&self, client: usize, st: &mut ClientState) {
        if st.stream_complete {
            return;
        }
        let n = self.clusters();
        if st.cds_count == n && st.eds_count == n && st.listener && st.route {
            st.stream_complete = true;
            let now = self.now_ns();
            self.stream_synced_at[client].store(now, Ordering::Release);
            if !st.complete {
                st.complete = true;
                self.completed_at[client].store(now, Ordering::Release);
                self.complete.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one client holds on its current stream (and which changes it has seen over all of them).
pub struct ClientState {
    cds_count: usize,
    /// Bitset: clusters whose endpoints were received.
    eds: Vec<u64>,
    eds_count: usize,
    listener: bool,
    route: bool,
    /// Full config at least once (for the time to first full config).
    complete: bool,
    /// Full config on the current stream.
    stream_complete: bool,
    /// Per cluster: the newest change this client recorded (0: none).
    seen_change: Vec<u32>,
}

impl ClientState {
    pub fn new(clusters: usize) -> Self {
        ClientState {
            cds_count: 0,
            eds: vec![0; clusters.div_ceil(64)],
            eds_count: 0,
            listener: false,
            route: false,
            complete: false,
            stream_complete: false,
            seen_change: vec![0; clusters],
        }
    }

    /// Whether the current (or last) stream delivered the full config.
    pub fn synced(&self) -> bool {
        self.stream_complete
    }

    /// A new stream holds nothing until the server sends it again (changes seen stay seen).
    fn new_stream(&mut self) {
        self.cds_count = 0;
        self.eds.iter_mut().for_each(|w| *w = 0);
        self.eds_count = 0;
        self.listener = false;
        self.route = false;
        self.stream_complete = false;
    }
}

/// `ClusterLoadAssignment.endpoints` (repeated `LocalityLbEndpoints`): absent in an encoded assignment
/// that has no endpoints.
const CLA_ENDPOINTS: u32 = 2;

/// Who a client is: node id `load-N`, cluster `load`, a locality from the scenario.
#[derive(Debug, Clone)]
pub struct Identity {
    pub index: usize,
    pub region: String,
    pub zone: String,
}

impl Identity {
    fn node(&self) -> Node {
        Node {
            id: format!("load-{}", self.index),
            cluster: "load".into(),
            locality: Some(Locality {
                region: self.region.clone(),
                zone: self.zone.clone(),
                sub_zone: String::new(),
            }),
            user_agent_name: "xds-load".into(),
            ..Default::default()
        }
    }
}

/// Runs one client until the task is aborted: a failed stream is counted and opened again (the
/// channel reconnects), after 250 ms doubling to 5 s, reset once a stream lived 30 s.
pub async fn run_client(
    tracker: Arc<Tracker>,
    channel: Channel,
    protocol: Protocol,
    id: Identity,
    opened: tokio::sync::oneshot::Sender<()>,
) {
    let mut st = ClientState::new(tracker.clusters());
    let mut opened = Some(opened);
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let result = run_stream(
            &tracker,
            channel.clone(),
            protocol,
            &id,
            &mut st,
            &mut opened,
        )
        .await;
        if tracker.stopping() {
            return;
        }
        match result {
            Ok(()) => tracker.fail(id.index, "the server ended the stream".into()),
            Err(e) => tracker.fail(id.index, format!("{e:#}")),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(250);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One ADS stream on `channel`, from the first request until it ends (`Ok`: the server ended it).
pub async fn run_stream(
    tracker: &Arc<Tracker>,
    channel: Channel,
    protocol: Protocol,
    id: &Identity,
    st: &mut ClientState,
    opened: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    st.new_stream();
    let result = match protocol {
        Protocol::Sotw => sotw(tracker, channel, id, st, opened).await,
        Protocol::Delta => delta(tracker, channel, id, st, opened).await,
    };
    tracker.stream_synced_at[id.index].store(u64::MAX, Ordering::Release);
    result
}

/// Tells the connecting task (once) that this client's stream is open.
fn signal_open(opened: &mut Option<tokio::sync::oneshot::Sender<()>>) {
    if let Some(tx) = opened.take() {
        let _ = tx.send(());
    }
}

/// Opens the ADS stream with `first` already queued; the sender feeds the rest (unbounded: an ACK must
/// never wait behind the server, which stops reading while its answer to us is unread).
async fn open(
    channel: Channel,
    path: &'static str,
    first: Outgoing,
) -> anyhow::Result<(mpsc::UnboundedSender<Outgoing>, tonic::Streaming<Bytes>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(first).expect("receiver alive");
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(1 << 30);
    grpc.ready().await?;
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
    Ok((tx, response.into_inner()))
}

fn send(tx: &mpsc::UnboundedSender<Outgoing>, msg: Outgoing) -> anyhow::Result<()> {
    tx.send(msg)
        .map_err(|_| anyhow::anyhow!("request stream closed"))
}

/// Counts a client as live while its stream is open (however its task ends, aborts included).
struct Live(Arc<Tracker>);

impl Live {
    fn new(tracker: &Arc<Tracker>) -> Self {
        tracker.live.fetch_add(1, Ordering::AcqRel);
        Live(tracker.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

fn sotw_request(type_url: &str, version: &str, nonce: &str, node: Option<Node>) -> Outgoing {
    Outgoing::new(
        DiscoveryRequest {
            version_info: version.into(),
            node,
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

async fn sotw(
    tracker: &Arc<Tracker>,
    channel: Channel,
    id: &Identity,
    st: &mut ClientState,
    opened: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let first = sotw_request(wire::CLUSTER_TYPE, "", "", Some(id.node()));
    let (tx, mut inbound) = open(channel, wire::SOTW_PATH, first).await?;
    let _live = Live::new(tracker);
    signal_open(opened);
    // The EDS subscription (encoded names) and the last EDS version and nonce.
    let mut eds_names: Option<Bytes> = None;
    let mut eds_ack = (String::new(), String::new());
    let route_names = DiscoveryRequest {
        resource_names: vec!["outbound".into()],
        ..Default::default()
    }
    .encode_to_vec();
    let route_names = Bytes::from(route_names);
    let (mut lds_requested, mut rds_requested) = (false, false);
    while let Some(raw) = inbound.message().await? {
        tracker.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        tracker.responses.fetch_add(1, Ordering::Relaxed);
        let resp = wire::SotwResponse::decode(raw)?;
        let ack = |names: &Bytes| Outgoing {
            head: sotw_request(&resp.type_url, &resp.version_info, &resp.nonce, None).head,
            tail: names.clone(),
        };
        match resp.type_url.as_str() {
            wire::CLUSTER_TYPE => {
                let mut names: Vec<&str> = resp
                    .resources
                    .iter()
                    .filter_map(|r| wire::string_field(&r.value, 1))
                    .filter_map(|n| std::str::from_utf8(n).ok())
                    .collect();
                names.sort_unstable();
                st.cds_count = names
                    .iter()
                    .filter(|n| tracker.clusters.contains_key(**n))
                    .count();
                if st.cds_count < tracker.clusters() {
                    tracker.violation(
                        id.index,
                        format!(
                            "SotW CDS with {} of {} clusters",
                            st.cds_count,
                            tracker.clusters()
                        ),
                    );
                }
                // Envoy subscribes to the endpoints of every EDS cluster it got.
                let field: Bytes = if names
                    .iter()
                    .copied()
                    .eq(tracker.sorted_names.iter().map(String::as_str))
                {
                    tracker.names_field.clone()
                } else {
                    DiscoveryRequest {
                        resource_names: names.iter().map(|n| n.to_string()).collect(),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                };
                if eds_names.as_ref() != Some(&field) {
                    let mut req = sotw_request(wire::ENDPOINT_TYPE, &eds_ack.0, &eds_ack.1, None);
                    req.tail = field.clone();
                    send(&tx, req)?;
                    eds_names = Some(field);
                }
                send(&tx, ack(&Bytes::new()))?;
            }
            wire::ENDPOINT_TYPE => {
                if resp.resources.is_empty() {
                    tracker.violation(id.index, "SotW EDS answer with no load assignment".into());
                }
                for r in &resp.resources {
                    let Some(name) = wire::string_field(&r.value, 1) else {
                        continue;
                    };
                    if wire::string_field(&r.value, CLA_ENDPOINTS).is_none() {
                        tracker.violation(
                            id.index,
                            format!(
                                "SotW load assignment {} without endpoints",
                                String::from_utf8_lossy(name)
                            ),
                        );
                    }
                    let idx = std::str::from_utf8(name)
                        .ok()
                        .and_then(|n| tracker.clusters.get(n));
                    if let Some(&idx) = idx {
                        tracker.on_assignment(st, idx, &r.value);
                    }
                }
                eds_ack = (resp.version_info.clone(), resp.nonce.clone());
                send(&tx, ack(eds_names.as_ref().unwrap_or(&Bytes::new())))?;
                if !lds_requested {
                    send(&tx, sotw_request(wire::LISTENER_TYPE, "", "", None))?;
                    lds_requested = true;
                }
            }
            wire::LISTENER_TYPE => {
                if resp.resources.is_empty() {
                    tracker.violation(id.index, "SotW LDS answer without listeners".into());
                }
                st.listener |= !resp.resources.is_empty();
                send(&tx, ack(&Bytes::new()))?;
                if !rds_requested {
                    let mut req = sotw_request(wire::ROUTE_TYPE, "", "", None);
                    req.tail = route_names.clone();
                    send(&tx, req)?;
                    rds_requested = true;
                }
            }
            wire::ROUTE_TYPE => {
                let outbound = resp
                    .resources
                    .iter()
                    .any(|r| wire::string_field(&r.value, 1) == Some(b"outbound"));
                if !outbound {
                    tracker.violation(id.index, "SotW RDS answer without `outbound`".into());
                }
                st.route |= outbound;
                send(&tx, ack(&route_names))?;
            }
            other => anyhow::bail!("response of unexpected type {other}"),
        }
        tracker.check_complete(id.index, st);
    }
    Ok(())
}

fn delta_request(
    type_url: &str,
    nonce: &str,
    subscribe: Vec<String>,
    node: Option<Node>,
) -> Outgoing {
    Outgoing::new(
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.into(),
            resource_names_subscribe: subscribe,
            response_nonce: nonce.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

async fn delta(
    tracker: &Arc<Tracker>,
    channel: Channel,
    id: &Identity,
    st: &mut ClientState,
    opened: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let first = delta_request(wire::CLUSTER_TYPE, "", Vec::new(), Some(id.node()));
    let (tx, mut inbound) = open(channel, wire::DELTA_PATH, first).await?;
    let _live = Live::new(tracker);
    signal_open(opened);
    let n = tracker.clusters();
    // Clusters held on this stream (bitset) and those whose endpoints are subscribed.
    let mut cds = vec![0u64; n.div_ceil(64)];
    let mut cds_count = 0;
    let mut eds_subscribed = vec![false; n];
    let (mut lds_requested, mut rds_requested) = (false, false);
    let mut cds_answered = false;
    while let Some(raw) = inbound.message().await? {
        tracker.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        tracker.responses.fetch_add(1, Ordering::Relaxed);
        let resp = wire::DeltaResponse::decode(raw)?;
        let ack = delta_request(&resp.type_url, &resp.nonce, Vec::new(), None);
        match resp.type_url.as_str() {
            wire::CLUSTER_TYPE => {
                let mut subscribe = Vec::new();
                for r in &resp.resources {
                    if let Some(&idx) = tracker.clusters.get(&r.name) {
                        let i = idx as usize;
                        if cds[i / 64] & (1 << (i % 64)) == 0 {
                            cds[i / 64] |= 1 << (i % 64);
                            cds_count += 1;
                        }
                        if !eds_subscribed[i] {
                            eds_subscribed[i] = true;
                            subscribe.push(r.name.clone());
                        }
                    }
                }
                for name in &resp.removed_resources {
                    if let Some(&idx) = tracker.clusters.get(name) {
                        tracker.violation(id.index, format!("Delta CDS removed {name}"));
                        let i = idx as usize;
                        if cds[i / 64] & (1 << (i % 64)) != 0 {
                            cds[i / 64] &= !(1 << (i % 64));
                            cds_count -= 1;
                        }
                    }
                }
                st.cds_count = cds_count;
                // The first answer on a stream is the whole set; later ones carry changes only.
                if !cds_answered && cds_count < n {
                    tracker.violation(
                        id.index,
                        format!("Delta CDS first answer with {cds_count} of {n} clusters"),
                    );
                }
                cds_answered = true;
                if !subscribe.is_empty() {
                    send(&tx, delta_request(wire::ENDPOINT_TYPE, "", subscribe, None))?;
                }
                send(&tx, ack)?;
            }
            wire::ENDPOINT_TYPE => {
                for name in &resp.removed_resources {
                    tracker.violation(id.index, format!("Delta EDS removed {name}"));
                }
                for r in &resp.resources {
                    let Some(&idx) = tracker.clusters.get(&r.name) else {
                        continue;
                    };
                    let Some(any) = r
                        .resource
                        .as_ref()
                        .filter(|a| wire::string_field(&a.value, CLA_ENDPOINTS).is_some())
                    else {
                        tracker.violation(
                            id.index,
                            format!("Delta load assignment {} without endpoints", r.name),
                        );
                        continue;
                    };
                    tracker.on_assignment(st, idx, &any.value);
                }
                send(&tx, ack)?;
                if !lds_requested {
                    send(
                        &tx,
                        delta_request(wire::LISTENER_TYPE, "", Vec::new(), None),
                    )?;
                    lds_requested = true;
                }
            }
            wire::LISTENER_TYPE => {
                if !resp.removed_resources.is_empty() || (!st.listener && resp.resources.is_empty())
                {
                    tracker.violation(id.index, "Delta LDS answer without listeners".into());
                }
                st.listener |= !resp.resources.is_empty();
                send(&tx, ack)?;
                if !rds_requested {
                    send(
                        &tx,
                        delta_request(wire::ROUTE_TYPE, "", vec!["outbound".into()], None),
                    )?;
                    rds_requested = true;
                }
            }
            wire::ROUTE_TYPE => {
                let outbound = resp.resources.iter().any(|r| r.name == "outbound");
                if resp.removed_resources.iter().any(|r| r == "outbound")
                    || (!st.route && !outbound)
                {
                    tracker.violation(id.index, "Delta RDS answer without `outbound`".into());
                }
                st.route |= outbound;
                send(&tx, ack)?;
            }
            other => anyhow::bail!("response of unexpected type {other}"),
        }
        tracker.check_complete(id.index, st);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: u32, slot: usize, clients: usize) -> Arc<Change> {
        Arc::new(Change::new(id, 0, slot, format!("11.0.0.{id}"), clients))
    }

    #[test]
    fn changes_in_flight_on_one_cluster_are_each_recorded_once_per_client() {
        let tracker = Tracker::new(2, &["c".to_string()]);
        let (a, b) = (change(1, 0, 2), change(2, 1, 2));
        tracker.register(a.clone());
        assert!(!tracker.slot_free(0, 0) && tracker.slot_free(0, 1));
        tracker.register(b.clone());
        assert_eq!(tracker.in_flight(), 2);
        let (mut one, mut two) = (ClientState::new(1), ClientState::new(1));
        let only_a = a.needle.clone();
        let both = [a.needle.clone(), b.needle.clone()].concat();

        tracker.on_assignment(&mut one, 0, &only_a);
        tracker.on_assignment(&mut one, 0, &only_a); // again: not counted twice
        assert_eq!(a.remaining.load(Ordering::Acquire), 1);
        assert_eq!(b.remaining.load(Ordering::Acquire), 2);
        // A client that skipped A's state records both from the later one.
        tracker.on_assignment(&mut two, 0, &both);
        assert!(a.converged() && !b.converged());
        tracker.on_assignment(&mut one, 0, &both);
        assert!(b.converged());
        assert_eq!(tracker.in_flight(), 0, "converged changes are retired");
        assert_eq!(one.eds_count, 1);
    }
}
