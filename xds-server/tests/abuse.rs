//! Protocol robustness: slow and stuck clients, and abusive input, against an in-process ADS server
//! served exactly as `main` serves it (`grpc::transport()` + `AdsService::into_server()`).
//!
//! Every test ends by checking the server still answers a well-behaved client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use xds_core::model::Registry;
use xds_core::snapshot::{Snapshot, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use xds_core::testing::{envoy, mesh, xds};
use xds_server::grpc::{
    self, AdsService, MAX_IDENTITY_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES,
    MAX_LOCALITY_BYTES, MAX_METADATA_VALUE_BYTES, MAX_NAMES_PER_TYPE, MAX_NAME_BYTES_PER_TYPE,
    MAX_NODE_ID_BYTES, MAX_NODE_LABELS, MAX_REQUEST_BYTES, MAX_RESOURCE_NAME_BYTES,
    MAX_RESPONSES_PER_EVENT,
};

/// Generous: a loaded 2-core machine running debug builds. Never an assertion about speed.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------
// Fixture

/// `services` services `s0..`, each with `endpoints` endpoints whose addresses encode `generation`
/// (10.G_HI.G_LO.i), so every generation changes every EDS answer and nothing else.
fn registry(services: usize, endpoints: usize, generation: u64) -> Arc<Registry> {
    let ip = |i: usize| format!("10.{}.{}.{}", generation >> 8, generation & 255, i + 1);
    Arc::new(Registry::from_services((0..services).map(|s| {
        let endpoints = (0..endpoints).map(|i| mesh::healthy(&ip(i))).collect();
        mesh::shop_service(&format!("s{s}"), 8080, endpoints)
    })))
}

fn cluster(s: usize) -> String {
    format!("s{s}.shop:8080")
}

struct TestServer {
    addr: SocketAddr,
    service: AdsService,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    shape: (usize, usize),
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A server with `services` × `endpoints`; `published` = whether the first snapshot exists yet.
    async fn start(services: usize, endpoints: usize, published: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(None);
        let service = AdsService::new(rx);
        let task = tokio::spawn({
            let svc = service.clone().into_server();
            async move {
                grpc::transport()
                    .add_service(svc)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            }
        });
        let server = Self {
            addr,
            service,
            snapshots: tx,
            shape: (services, endpoints),
            task,
        };
        if published {
            server.publish();
        }
        server
    }

    /// Publishes the next generation; returns its number.
    fn publish(&self) -> u64 {
        let prev = self.snapshots.borrow().clone();
        let generation = prev.as_ref().map_or(1, |p| p.generation + 1);
        let next = xds::snapshot(
            prev.as_deref(),
            registry(self.shape.0, self.shape.1, generation),
        );
        assert_eq!(next.generation, generation);
        self.snapshots.send_replace(Some(Arc::new(next)));
        generation
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    async fn sotw(&self) -> Sotw {
        Sotw::open(self.channel().await).await
    }

    async fn delta(&self) -> Delta {
        Delta::open(self.channel().await).await
    }

    async fn wait_streams(&self, live: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.service.live_streams() != live {
            assert!(
                tokio::time::Instant::now() < deadline,
                "live streams stuck at {} (want {live}); stats {:?}",
                self.service.live_streams(),
                self.service.stream_stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A well-behaved client on a fresh connection gets CDS and EDS, and leaves no stream behind.
    async fn assert_healthy(&self) {
        let before = self.service.live_streams();
        let mut c = self.sotw().await;
        c.send(request(CLUSTER_TYPE, &[], "", "")).await;
        let cds = c.recv().await.expect("CDS answer");
        assert_eq!(cds.type_url, CLUSTER_TYPE);
        assert_eq!(cds.resources.len(), self.shape.0);
        c.send(ack(&cds, &[])).await;
        c.send(request(ENDPOINT_TYPE, &[&cluster(0)], "", "")).await;
        let eds = c.recv().await.expect("EDS answer");
        assert_eq!(eds.type_url, ENDPOINT_TYPE);
        assert_eq!(eds.resources.len(), 1);
        drop(c);
        self.wait_streams(before).await;
    }
}

fn node() -> Node {
    xds::node("envoy-1", "shop")
}

fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    xds::request(node(), type_url, names, version, nonce)
}

fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    xds::ack(node(), resp, names)
}

fn delta_request(type_url: &str, subscribe: Vec<String>, nonce: &str) -> DeltaDiscoveryRequest {
    let subscribe: Vec<&str> = subscribe.iter().map(String::as_str).collect();
    xds::delta_request(node(), type_url, &subscribe, &[], nonce)
}

/// The first endpoint address of every ClusterLoadAssignment in an EDS answer.
fn first_ips(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
            envoy::host(&cla.endpoints[0].lb_endpoints[0]).0
        })
        .collect()
}

fn ip_of(generation: u64) -> String {
    format!("10.{}.{}.1", generation >> 8, generation & 255)
}

/// One ADS stream: requests go in through a channel, answers come back as a tonic stream.
struct Stream<Req, Resp> {
    tx: mpsc::Sender<Req>,
    rx: Streaming<Resp>,
}

type Sotw = Stream<DiscoveryRequest, DiscoveryResponse>;
type Delta = Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

impl Sotw {
    async fn open(channel: Channel) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let rx = tokio::time::timeout(
            WAIT,
            client.stream_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream opened in time")
        .expect("stream opened")
        .into_inner();
        Self { tx, rx }
    }
}

impl Delta {
    async fn open(channel: Channel) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let rx = tokio::time::timeout(
            WAIT,
            client.delta_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream opened in time")
        .expect("stream opened")
        .into_inner();
        Self { tx, rx }
    }
}

impl<Req, Resp: Message + Default + 'static> Stream<Req, Resp> {
    async fn send(&self, req: Req) {
        assert!(self.tx.send(req).await.is_ok(), "request stream open");
    }

    /// The next answer, or the status the stream ended with (`Ok` end → an `OK` status).
    async fn recv(&mut self) -> Result<Resp, Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Err(_) => panic!("no answer within {WAIT:?}"),
            Ok(Ok(Some(resp))) => Ok(resp),
            Ok(Ok(None)) => Err(Status::ok("stream ended")),
            Ok(Err(status)) => Err(status),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Backpressure

/// A client that stops reading while many snapshots are published: a second client gets every update,
/// the stuck stream holds at most one input's answer, skips the snapshots it could not be sent, and
/// once it reads again it gets the newest state after a handful of stale messages, not a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_client_neither_delays_others_nor_queues_a_backlog() {
    const SERVICES: usize = 40;
    const ENDPOINTS: usize = 30; // one EDS answer ≈ 40 KB, several times the stuck client's window
    const PUBLISHES: u64 = 60;
    let server = TestServer::start(SERVICES, ENDPOINTS, true).await;
    let names: Vec<String> = (0..SERVICES).map(cluster).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    // The stuck client's connection has a tiny HTTP/2 window, so the transport cannot absorb a backlog
    // for it: what piles up, piles up in the server.
    let stuck_channel = server
        .endpoint()
        .initial_stream_window_size(Some(8 * 1024))
        .connect()
        .await
        .unwrap();
    let mut stuck = Sotw::open(stuck_channel).await;
    stuck.send(request(ENDPOINT_TYPE, &names, "", "")).await;
    let first = stuck.recv().await.unwrap();
    assert_eq!(first.resources.len(), SERVICES);
    stuck.send(ack(&first, &names)).await;

    let mut healthy = server.sotw().await;
    healthy.send(request(ENDPOINT_TYPE, &names, "", "")).await;
    let mut last = healthy.recv().await.unwrap();
    healthy.send(ack(&last, &names)).await;

    for _ in 0..PUBLISHES {
        let generation = server.publish();
        let eds = healthy.recv().await.unwrap();
        assert_eq!(eds.type_url, ENDPOINT_TYPE);
        assert_eq!(
            first_ips(&eds),
            vec![ip_of(generation); SERVICES],
            "the healthy client gets each generation in turn"
        );
        assert_ne!(eds.nonce, last.nonce);
        healthy.send(ack(&eds, &names)).await;
        last = eds;
    }
    let stats = server.service.stream_stats();
    assert_eq!(stats.live, 2);
    assert!(
        stats.max_held_responses <= MAX_RESPONSES_PER_EVENT,
        "a stream held {} responses at once (bound {MAX_RESPONSES_PER_EVENT})",
        stats.max_held_responses
    );

    // The stuck client reads again: a few stale answers that were already in flight, then the newest.
    let newest = ip_of(1 + PUBLISHES);
    let mut stale = 0;
    loop {
        let eds = stuck.recv().await.unwrap();
        if first_ips(&eds) == vec![newest.clone(); SERVICES] {
            break;
        }
        stale += 1;
        stuck.send(ack(&eds, &names)).await;
    }
    // In flight: what the transport holds (about one message each side of a full window, and the
    // chunk it took from the body last) and one input's answer in the stream's loop.
    let bound = 4 + MAX_RESPONSES_PER_EVENT;
    assert!(
        stale <= bound,
        "{stale} stale answers before the newest (bound {bound}): a backlog was queued"
    );
    let stats = server.service.stream_stats();
    assert!(
        stats.snapshots_skipped >= PUBLISHES / 2,
        "the stuck stream computed answers it could not send: {stats:?}"
    );
    assert!(
        stats.max_held_responses <= MAX_RESPONSES_PER_EVENT,
        "{stats:?}"
    );

    drop((stuck, healthy));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------------
// Abusive input

#[tokio::test]
async fn request_over_the_size_limit_is_refused_with_out_of_range() {
    let server = TestServer::start(3, 1, true).await;
    let mut c = server.sotw().await;
    let mut req = request(CLUSTER_TYPE, &[], "", "");
    req.resource_names = vec!["x".repeat(MAX_REQUEST_BYTES + 1024)];
    c.send(req).await;
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains(&MAX_REQUEST_BYTES.to_string()),
        "the error names the limit: {status:?}"
    );
    drop(c);
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

#[tokio::test]
async fn many_names_are_answered_up_to_the_limit_and_refused_past_it() {
    let server = TestServer::start(3, 1, true).await;

    // State of the world: 40,000 names, 3 real → exactly the 3 real ones.
    let mut names: Vec<String> = (0..40_000)
        .map(|i| format!("missing-{i}.shop:8080"))
        .collect();
    names.extend((0..3).map(cluster));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = server.sotw().await;
    c.send(request(ENDPOINT_TYPE, &refs, "", "")).await;
    let eds = c.recv().await.unwrap();
    assert_eq!(
        eds.resources.len(),
        3,
        "names that do not exist are left out"
    );
    // 100,000 names on the same stream: refused, naming the limit.
    let many: Vec<String> = (0..100_000).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    c.send(ack(&eds, &refs)).await;
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("MAX_NAMES_PER_TYPE"),
        "{status:?}"
    );
    assert!(status.message().contains("100000"), "{status:?}");

    // Delta subscriptions add up over requests: three batches that together pass the limit.
    let mut d = server.delta().await;
    let batch = MAX_NAMES_PER_TYPE / 2 - 10;
    let mut first = vec![cluster(0)];
    first.extend((0..batch).map(|i| format!("a{i}")));
    d.send(delta_request(ENDPOINT_TYPE, first, "")).await;
    let answer = d.recv().await.unwrap();
    assert_eq!(answer.resources.len(), 1);
    d.send(delta_request(
        ENDPOINT_TYPE,
        (0..batch).map(|i| format!("b{i}")).collect(),
        &answer.nonce,
    ))
    .await;
    // Re-subscribing names the stream already has does not count twice.
    d.send(delta_request(
        ENDPOINT_TYPE,
        (0..batch).map(|i| format!("b{i}")).collect(),
        "",
    ))
    .await;
    d.send(delta_request(
        ENDPOINT_TYPE,
        (0..batch).map(|i| format!("c{i}")).collect(),
        "",
    ))
    .await;
    let status = d.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("MAX_NAMES_PER_TYPE"),
        "{status:?}"
    );
    assert!(
        status.message().contains(&(3 * batch + 1).to_string()),
        "counts the held names plus the new ones: {status:?}"
    );

    drop((c, d));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// Requests for types we do not serve are ignored: no answer, no error, the stream goes on.
#[tokio::test]
async fn unknown_type_urls_are_ignored() {
    let server = TestServer::start(3, 1, true).await;
    let huge = format!("type.googleapis.com/{}", "x".repeat(1 << 20));
    let mut c = server.sotw().await;
    c.send(request(&huge, &["a"], "", "")).await;
    for i in 0..1_000 {
        c.send(request(
            &format!("type.googleapis.com/bogus.T{i}"),
            &[],
            "1",
            "2",
        ))
        .await;
    }
    c.send(request("", &[], "", "")).await;
    c.send(request(LISTENER_TYPE, &[], "", "")).await;
    // Requests are handled in order: had any of the above been answered, it would come first.
    let lds = c.recv().await.unwrap();
    assert_eq!(lds.type_url, LISTENER_TYPE);

    let mut d = server.delta().await;
    d.send(delta_request(&huge, vec!["a".into()], "")).await;
    d.send(delta_request("bogus", vec!["*".into()], "7")).await;
    d.send(delta_request(CLUSTER_TYPE, vec![], "")).await;
    let cds = d.recv().await.unwrap();
    assert_eq!(cds.type_url, CLUSTER_TYPE);
    assert_eq!(cds.resources.len(), 3);

    assert_eq!(server.service.live_streams(), 2);
    drop((c, d));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// Nonces we never sent (random, empty-looking, megabytes long), with or without an error (a NACK),
/// are stale: ignored, no answer, no state change; the stream still gets the next push.
#[tokio::test]
async fn garbage_nonces_are_ignored_as_stale() {
    let server = TestServer::start(3, 1, true).await;
    let garbage = [
        "garbage".to_string(),
        "\u{0}\u{1}\u{fffd}".to_string(),
        "999999999999999999999999".to_string(),
        "n".repeat(1 << 20),
    ];

    let mut c = server.sotw().await;
    let names = [cluster(0)];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    c.send(request(ENDPOINT_TYPE, &names, "", "")).await;
    let eds = c.recv().await.unwrap();
    c.send(ack(&eds, &names)).await;
    for nonce in &garbage {
        // A stale request with a subscription change would be answered if it were not ignored.
        let all = [cluster(0), cluster(1), cluster(2)];
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        c.send(request(ENDPOINT_TYPE, &all, &eds.version_info, nonce))
            .await;
        let mut nack = request(ENDPOINT_TYPE, &names, "v", nonce);
        nack.error_detail = Some(xds::error_detail("bogus"));
        c.send(nack).await;
    }

    let mut d = server.delta().await;
    d.send(delta_request(ENDPOINT_TYPE, vec![cluster(0)], ""))
        .await;
    let first = d.recv().await.unwrap();
    d.send(delta_request(ENDPOINT_TYPE, vec![], &first.nonce))
        .await;
    for nonce in &garbage {
        d.send(delta_request(ENDPOINT_TYPE, vec![], nonce)).await;
        let mut nack = delta_request(ENDPOINT_TYPE, vec![], nonce);
        nack.error_detail = Some(xds::error_detail("bogus"));
        d.send(nack).await;
    }

    // The next thing either stream gets is the push of a new generation, for the original subscription.
    let generation = server.publish();
    let pushed = c.recv().await.unwrap();
    assert_eq!(first_ips(&pushed), vec![ip_of(generation)]);
    let pushed = d.recv().await.unwrap();
    assert_eq!(pushed.resources.len(), 1);
    assert_eq!(pushed.resources[0].name, cluster(0));

    drop((c, d));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// Streams opened and dropped in a loop, in every state (waiting for the first snapshot, before the
/// first request, after it, mid-answer, on fresh connections), leave no stream task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_dropped_in_a_loop_leave_nothing_behind() {
    let server = TestServer::start(3, 1, false).await;
    let channel = server.channel().await;

    // No snapshot yet: every stream waits for the sources; a client that gives up ends its task.
    for _ in 0..200 {
        let c = Sotw::open(channel.clone()).await;
        c.send(request(CLUSTER_TYPE, &[], "", "")).await;
        drop(c);
    }
    server.wait_streams(0).await;

    server.publish();
    const CYCLES: usize = 2_000;
    for i in 0..CYCLES {
        let ch = if i % 100 == 0 {
            server.channel().await
        } else {
            channel.clone()
        };
        if i % 2 == 0 {
            let mut c = Delta::open(ch).await;
            if i % 4 == 0 {
                c.send(delta_request(CLUSTER_TYPE, vec![], "")).await;
                c.recv().await.unwrap();
            }
        } else {
            let mut c = Sotw::open(ch).await;
            match i % 3 {
                0 => {} // dropped before its first request
                1 => c.send(request(CLUSTER_TYPE, &[], "", "")).await,
                _ => {
                    c.send(request(CLUSTER_TYPE, &[], "", "")).await;
                    c.recv().await.unwrap();
                }
            }
        }
    }
    server.wait_streams(0).await;
    assert!(server.service.stream_stats().opened >= (200 + CYCLES) as u64);
    server.assert_healthy().await;
}

#[tokio::test]
async fn first_request_without_node_is_refused() {
    let server = TestServer::start(3, 1, true).await;
    let mut c = server.sotw().await;
    let mut req = request(CLUSTER_TYPE, &[], "", "");
    req.node = None;
    c.send(req).await;
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("node"), "{status:?}");

    let mut d = server.delta().await;
    let mut req = delta_request(CLUSTER_TYPE, vec![], "");
    req.node = None;
    d.send(req).await;
    assert_eq!(d.recv().await.unwrap_err().code(), Code::InvalidArgument);

    drop((c, d));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// A node id past MAX_NODE_ID_BYTES is refused (it would be kept and logged); metadata the server does
/// not read (a 2 MB string) is not kept, so it is served normally within the request limit, as are the
/// most labels allowed.
#[tokio::test]
async fn absurd_node_id_is_refused_and_unread_metadata_is_served() {
    let server = TestServer::start(3, 1, true).await;
    let mut c = server.sotw().await;
    let mut req = request(CLUSTER_TYPE, &[], "", "");
    req.node.as_mut().unwrap().id = "i".repeat(100_000);
    c.send(req).await;
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("MAX_NODE_ID_BYTES"), "{status:?}");
    assert!(status.message().contains(&MAX_NODE_ID_BYTES.to_string()));

    let mut d = server.delta().await;
    let mut req = delta_request(CLUSTER_TYPE, vec![], "");
    req.node.as_mut().unwrap().cluster = "c".repeat(MAX_NODE_ID_BYTES + 1);
    d.send(req).await;
    let status = d.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // ~2 MB of metadata: the most labels allowed and a 2 MB string under a key nobody reads.
    let labels = Struct {
        fields: (0..MAX_NODE_LABELS)
            .map(|i| (format!("label-{i}"), string(format!("value-{i}"))))
            .collect(),
    };
    let mut req = request(CLUSTER_TYPE, &[], "", "");
    req.node.as_mut().unwrap().metadata = Some(Struct {
        fields: [
            (
                "labels".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
            ("blob".to_string(), string("b".repeat(2 << 20))),
        ]
        .into_iter()
        .collect(),
    });
    assert!(req.encoded_len() < MAX_REQUEST_BYTES);
    let mut big = server.sotw().await;
    big.send(req).await;
    let cds = big.recv().await.unwrap();
    assert_eq!(cds.resources.len(), 3);
    big.send(request(ENDPOINT_TYPE, &[&cluster(1)], "", ""))
        .await;
    assert_eq!(big.recv().await.unwrap().resources.len(), 1);

    drop((c, d, big));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

fn string(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// `node` with metadata `key` set to `value`.
fn with_metadata(mut node: Node, key: &str, value: Value) -> Node {
    node.metadata
        .get_or_insert_with(Struct::default)
        .fields
        .insert(key.to_string(), value);
    node
}

fn with_labels(node: Node, labels: impl IntoIterator<Item = (String, String)>) -> Node {
    let labels = Struct {
        fields: labels.into_iter().map(|(k, v)| (k, string(v))).collect(),
    };
    with_metadata(
        node,
        "labels",
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    )
}

/// Every node field the server keeps, logs or keys a cache by, one byte (or label) past its limit,
/// is refused with INVALID_ARGUMENT naming the field and the limit, over either protocol; at the limit
/// it is served. Refused clients leave nothing in the cache.
#[tokio::test]
async fn node_fields_past_their_limits_are_refused_naming_field_and_limit() {
    use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
    let server = TestServer::start(3, 1, true).await;
    let cache_before = server.snapshots.borrow().as_ref().unwrap().stats();
    let locality = |region: usize, zone: usize, sub_zone: usize| {
        let mut n = node();
        n.locality = Some(EnvoyLocality {
            region: "r".repeat(region),
            zone: "z".repeat(zone),
            sub_zone: "s".repeat(sub_zone),
        });
        n
    };
    let meta = |key: &str, len: usize| with_metadata(node(), key, string("1".repeat(len)));
    let label = |i: usize| (format!("l{i}"), "v".to_string());
    let (l, m) = (MAX_LOCALITY_BYTES, MAX_METADATA_VALUE_BYTES);
    // (node at the limit, node past it, the field and the limit a refusal names)
    let cases = [
        (
            locality(l, 1, 0),
            locality(l + 1, 1, 0),
            "node.locality.region",
            "MAX_LOCALITY_BYTES",
            l,
        ),
        (
            locality(1, l, 0),
            locality(1, l + 1, 0),
            "node.locality.zone",
            "MAX_LOCALITY_BYTES",
            l,
        ),
        (
            locality(1, 1, l),
            locality(1, 1, l + 1),
            "node.locality.sub_zone",
            "MAX_LOCALITY_BYTES",
            l,
        ),
        (
            meta("namespace", m),
            meta("namespace", m + 1),
            "node.metadata.namespace",
            "MAX_METADATA_VALUE_BYTES",
            m,
        ),
        (
            meta("pod_name", m),
            meta("pod_name", m + 1),
            "node.metadata.pod_name",
            "MAX_METADATA_VALUE_BYTES",
            m,
        ),
        (
            meta("pod_ip", m),
            meta("pod_ip", m + 1),
            "node.metadata.pod_ip",
            "MAX_METADATA_VALUE_BYTES",
            m,
        ),
        (
            node(),
            meta("listener_address", m + 1),
            "node.metadata.listener_address",
            "MAX_METADATA_VALUE_BYTES",
            m,
        ),
        (
            node(),
            meta("identity", MAX_IDENTITY_BYTES + 1),
            "node.metadata.identity",
            "MAX_IDENTITY_BYTES",
            MAX_IDENTITY_BYTES,
        ),
        (
            with_labels(node(), (0..MAX_NODE_LABELS).map(label)),
            with_labels(node(), (0..=MAX_NODE_LABELS).map(label)),
            "node.metadata.labels",
            "MAX_NODE_LABELS",
            MAX_NODE_LABELS,
        ),
        (
            with_labels(node(), [("app".into(), "v".repeat(MAX_LABEL_VALUE_BYTES))]),
            with_labels(
                node(),
                [("app".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1))],
            ),
            r#"node.metadata.labels["app"]"#,
            "MAX_LABEL_VALUE_BYTES",
            MAX_LABEL_VALUE_BYTES,
        ),
        (
            with_labels(node(), [("k".repeat(MAX_LABEL_KEY_BYTES), "v".into())]),
            with_labels(node(), [("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into())]),
            "node.metadata.labels[",
            "MAX_LABEL_KEY_BYTES",
            MAX_LABEL_KEY_BYTES,
        ),
    ];
    for (i, (fits, past, field, limit, max)) in cases.into_iter().enumerate() {
        let status = if i % 2 == 0 {
            let mut c = server.sotw().await;
            c.send(xds::request(past, CLUSTER_TYPE, &[], "", "")).await;
            c.recv().await.unwrap_err()
        } else {
            let mut d = server.delta().await;
            d.send(xds::delta_request(past, CLUSTER_TYPE, &[], &[], ""))
                .await;
            d.recv().await.unwrap_err()
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let message = status.message();
        assert!(
            message.starts_with(field)
                && message.contains(limit)
                && message.contains(&max.to_string()),
            "the refusal names {field} and {limit} ({max}): {message}"
        );
        assert!(message.len() < 300, "a refusal echoes little: {message}");

        let mut c = server.sotw().await;
        c.send(xds::request(fits, CLUSTER_TYPE, &[], "", "")).await;
        let cds = c
            .recv()
            .await
            .unwrap_or_else(|s| panic!("{field} at its limit: {s:?}"));
        assert_eq!(cds.resources.len(), 3);
    }
    server.wait_streams(0).await;
    let cache_after = server.snapshots.borrow().as_ref().unwrap().stats();
    assert_eq!(cache_after.eds_answers, cache_before.eds_answers);
    server.assert_healthy().await;
}

/// A resource name past MAX_RESOURCE_NAME_BYTES is refused; Delta subscriptions that add up past
/// MAX_NAME_BYTES_PER_TYPE (each request well within the request limit) are refused, naming it.
#[tokio::test]
async fn long_names_and_accumulated_name_bytes_are_refused() {
    let server = TestServer::start(3, 1, true).await;
    let long = "n".repeat(MAX_RESOURCE_NAME_BYTES + 1);
    let mut c = server.sotw().await;
    c.send(request(ENDPOINT_TYPE, &[&cluster(0), &long], "", ""))
        .await;
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("EDS subscription name")
            && status.message().contains("MAX_RESOURCE_NAME_BYTES"),
        "{status:?}"
    );

    let mut d = server.delta().await;
    // Names as long as allowed, a quarter of the limit per request: the fifth request passes it.
    let per_request = MAX_NAME_BYTES_PER_TYPE / MAX_RESOURCE_NAME_BYTES / 4;
    let batch = |b: usize| -> Vec<String> {
        (0..per_request)
            .map(|i| {
                let head = format!("b{b}-{i}-");
                format!("{head}{}", "x".repeat(MAX_RESOURCE_NAME_BYTES - head.len()))
            })
            .collect()
    };
    let mut first = batch(0);
    first[0] = cluster(0);
    d.send(delta_request(ENDPOINT_TYPE, first, "")).await;
    let answer = d.recv().await.unwrap();
    assert_eq!(answer.resources.len(), 1);
    for b in 1..=4 {
        d.send(delta_request(ENDPOINT_TYPE, batch(b), "")).await;
    }
    let status = d.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("EDS subscription:")
            && status.message().contains("MAX_NAME_BYTES_PER_TYPE"),
        "{status:?}"
    );

    drop((c, d));
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// A gRPC client names its listeners, and the names are whatever it sends: thousands of made-up
/// targets (bare and qualified, many ports) are answered with only the one that names a service
/// port, twice over with new names, and leave no cache entry behind.
#[tokio::test]
async fn made_up_grpc_targets_are_answered_with_nothing_and_cache_nothing() {
    let server = TestServer::start(3, 1, true).await;
    let grpc_node = Node {
        user_agent_name: "gRPC C-core".into(),
        ..node()
    };
    let real = cluster(0);
    let made_up = |round: usize| -> Vec<String> {
        let mut names: Vec<String> = (0..5_000)
            .flat_map(|i| {
                [
                    format!("x{round}-{i}.shop:8080"),
                    format!("s{}:{}", i % 3, 1 + (i + round * 5_000) % 65_535),
                ]
            })
            .filter(|n| *n != real && !n.ends_with(":8080") || n.starts_with('x'))
            .collect();
        names.push(real.clone());
        names
    };
    let mut c = server.sotw().await;
    let names = made_up(0);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.send(xds::request(
        grpc_node.clone(),
        LISTENER_TYPE,
        &refs,
        "",
        "",
    ))
    .await;
    let lds = c.recv().await.expect("LDS answer");
    assert_eq!(lds.resources.len(), 1, "only the real target");
    let stats = || server.snapshots.borrow().as_ref().unwrap().stats();
    let cached = stats();
    assert_eq!(cached.listeners, 1, "{cached:?}");
    let names = made_up(1);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut next = xds::request(
        grpc_node,
        LISTENER_TYPE,
        &refs,
        &lds.version_info,
        &lds.nonce,
    );
    next.node = None;
    c.send(next).await;
    let lds = c.recv().await.expect("LDS answer");
    assert_eq!(lds.resources.len(), 1);
    assert_eq!(stats(), cached, "new names, nothing new cached");
    drop(c);
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

/// A client that repeats a NACK with the same nonce is logged and counted once (`xds_nacks_total`), not
/// at every repeat; the stream goes on.
#[tokio::test]
async fn a_repeated_nack_is_counted_once() {
    let nacks = || {
        let text = xds_server::metrics::metrics().render(None);
        text.lines()
            .find_map(|l| l.strip_prefix("xds_nacks_total{type=\"EDS\"} "))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let server = TestServer::start(3, 1, true).await;
    let names = [cluster(0)];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = server.sotw().await;
    c.send(request(ENDPOINT_TYPE, &names, "", "")).await;
    let eds = c.recv().await.unwrap();
    let before = nacks();
    for _ in 0..5 {
        let mut nack = request(ENDPOINT_TYPE, &names, "", &eds.nonce);
        nack.error_detail = Some(xds::error_detail("bad endpoints"));
        c.send(nack).await;
    }
    // Requests are handled in order: once the CDS answer arrives, all five NACKs were handled.
    c.send(request(CLUSTER_TYPE, &[], "", "")).await;
    assert_eq!(c.recv().await.unwrap().type_url, CLUSTER_TYPE);
    assert_eq!(nacks() - before, 1, "five NACKs of one response count once");

    drop(c);
    server.wait_streams(0).await;
    server.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------------------
// Memory: what clients leave behind

/// Set in the child process the memory test runs itself in (see [`in_own_process`]).
const MEMORY_CHILD: &str = "XDS_ABUSE_MEMORY_CHILD";

/// Runs the calling test again, alone, in a child process (the same test binary with a filter), and
/// fails if it fails there: RSS is the process's, and the other tests of this binary run in parallel
/// threads. Returns `true` in the child, where the test's body should run.
fn in_own_process(test: &str) -> bool {
    if std::env::var_os(MEMORY_CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(MEMORY_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{test} failed in its own process:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in the child:\n{stdout}"
    );
    false
}

/// This process's resident set, in bytes, after giving glibc's free memory back to the system (what is
/// left is what the process holds, not what the allocator keeps for later).
fn rss_bytes() -> usize {
    // SAFETY: malloc_trim only returns free memory of glibc's heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Client `i`'s node: everything a client chooses as large as the limits allow and unique to it —
/// locality, namespace, listener address, inbound ports — plus the most labels, each as long as
/// allowed.
fn large_node(i: usize) -> Node {
    use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
    let unique = |prefix: &str, len: usize| {
        let head = format!("{prefix}-{i}-");
        format!("{head}{}", "x".repeat(len - head.len()))
    };
    let labels = Struct {
        fields: (0..MAX_NODE_LABELS)
            .map(|l| {
                (
                    unique(&format!("example.com/key-{l}"), MAX_LABEL_KEY_BYTES),
                    string(unique(&format!("v{l}"), MAX_LABEL_VALUE_BYTES)),
                )
            })
            .collect(),
    };
    let mut node = xds::node(&unique("node", 200), "shop");
    node.locality = Some(EnvoyLocality {
        region: unique("region", MAX_LOCALITY_BYTES),
        zone: unique("zone", MAX_LOCALITY_BYTES),
        sub_zone: unique("subzone", MAX_LOCALITY_BYTES),
    });
    let mut fields = xds::metadata(&[
        ("namespace", &unique("ns", MAX_METADATA_VALUE_BYTES)),
        (
            "listener_address",
            &format!("127.1.{}.{}", i / 250, i % 250 + 1),
        ),
    ])
    .fields;
    fields.insert(
        "labels".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    fields.insert("inbound_port".into(), string((20_000 + i).to_string()));
    fields.insert("app_port".into(), string((30_000 + i).to_string()));
    node.metadata = Some(Struct { fields });
    node
}

/// Hundreds of clients, each with its own locality class, namespace, listener address and inbound
/// ports (as large as allowed) and the most labels, subscribe to CDS, EDS, LDS and RDS, then leave:
/// the shared cache falls back to what it held before, and so does the process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_take_their_cache_entries_with_them() {
    if !in_own_process("abuse::clients_that_leave_take_their_cache_entries_with_them") {
        return;
    }
    const CLIENTS: usize = 300;
    const SERVICES: usize = 20;
    const ENDPOINTS: usize = 100;
    const CONNECTIONS: usize = 10;
    /// What the process may hold after the clients left beyond what it held before they came.
    const RSS_BOUND: usize = 16 << 20;
    let server = TestServer::start(SERVICES, ENDPOINTS, true).await;
    let stats = || server.snapshots.borrow().as_ref().unwrap().stats();
    // Warm up: one ordinary client, so buffers and tasks that stay are in the baseline.
    server.assert_healthy().await;
    let cache_before = stats();
    let rss_before = rss_bytes();
    let started = std::time::Instant::now();

    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(server.channel().await);
    }
    let names: Vec<String> = (0..SERVICES).map(cluster).collect();
    // One task per connection, each opening its share of the streams in turn: the streams' round
    // trips overlap, the server's work is the same.
    let tasks: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(conn, channel)| {
            let (channel, names) = (channel.clone(), names.clone());
            tokio::spawn(async move {
                let mut clients = Vec::new();
                for i in (conn..CLIENTS).step_by(CONNECTIONS) {
                    let node = large_node(i);
                    let mut c = Sotw::open(channel.clone()).await;
                    for (type_url, names) in [
                        (CLUSTER_TYPE, vec![]),
                        (ENDPOINT_TYPE, names.clone()),
                        (LISTENER_TYPE, vec![]),
                        (ROUTE_TYPE, vec!["outbound".to_string()]),
                    ] {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        c.send(xds::request(node.clone(), type_url, &names, "", ""))
                            .await;
                        let resp = c.recv().await.unwrap();
                        assert_eq!(resp.type_url, type_url);
                        assert!(!resp.resources.is_empty(), "{type_url}");
                    }
                    clients.push(c);
                }
                clients
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.extend(task.await.unwrap());
    }
    let cache_during = stats();
    let rss_during = rss_bytes();
    assert!(
        cache_during.eds_answers >= CLIENTS * SERVICES,
        "every client has its own class: {cache_during:?}"
    );
    let joined = started.elapsed();

    drop(clients);
    drop(channels);
    server.wait_streams(0).await;
    // Whatever the server does about it, it has a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut cache_after = stats();
    while (cache_after.bytes > cache_before.bytes
        || cache_after.eds_answers > cache_before.eds_answers)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache_after = stats();
    }
    let rss_after = rss_bytes();
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    eprintln!(
        "memory test: {CLIENTS} clients joined in {joined:?}; cache before {cache_before:?}, \
         with the clients {cache_during:?}, after they left {cache_after:?}; RSS before {:.1} MiB, \
         with the clients {:.1} MiB, after {:.1} MiB",
        mib(rss_before),
        mib(rss_during),
        mib(rss_after)
    );
    assert!(
        cache_after.bytes <= cache_before.bytes
            && cache_after.eds_answers <= cache_before.eds_answers,
        "the cache kept what departed clients needed: before {cache_before:?}, after {cache_after:?}"
    );
    assert!(
        rss_after <= rss_before + RSS_BOUND,
        "RSS {:.1} MiB after the clients left, {:.1} MiB before (bound: +{:.0} MiB)",
        mib(rss_after),
        mib(rss_before),
        mib(RSS_BOUND)
    );
    server.assert_healthy().await;
}
