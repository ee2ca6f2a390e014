//! Load reporting (LRS) against an in-process server served as `main` serves it: the LRS service on
//! the xDS transport next to ADS, the task that keeps the load book on the current snapshot, and the
//! admin API reading the same book. A tonic LRS client plays Envoy or a proxyless gRPC client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterStats, UpstreamLocalityStats};
use envoy_types::pb::envoy::service::load_stats::v3::load_reporting_service_client::LoadReportingServiceClient;
use envoy_types::pb::envoy::service::load_stats::v3::{LoadStatsRequest, LoadStatsResponse};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use xds_core::model::{Health, Locality, LocalityLookup, PodHint, Registry, SpiffeId};
use xds_core::protocol::limits::{MAX_LRS_LOCALITIES_PER_CLUSTER, MAX_RESOURCE_NAME_BYTES};
use xds_core::testing::{mesh, xds};
use xds_server::admin::api::AdminService;
use xds_server::admin::proto::{self as pb, admin_client::AdminClient};
use xds_server::app::Args;
use xds_server::auth::workload::{TokenRejected, TokenVerifier};
use xds_server::grpc::lrs::{lock_book, watch_load, LoadSettings, LrsService, SharedLoadBook};
use xds_server::grpc::{self, AdsService};
use xds_server::registry::ClientRegistry;

/// Generous: a loaded 2-core machine running debug builds. Never an assertion about speed.
const WAIT: Duration = Duration::from_secs(60);
const WEB: &str = "web.shop:80";

fn zone(z: &str) -> Locality {
    Locality::new("r", z, "")
}

/// `shop/web` port 80 with an endpoint in each of zones a and b.
fn registry() -> Arc<Registry> {
    Arc::new(Registry::from_services([mesh::shop_service(
        "web",
        80,
        vec![
            mesh::endpoint("10.0.0.1", zone("a"), Health::Healthy),
            mesh::endpoint("10.0.0.2", zone("b"), Health::Healthy),
        ],
    )]))
}

/// Accepts the token `good` as `spiffe://cluster.local/ns/shop/sa/web`.
struct Tokens;

impl TokenVerifier for Tokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenRejected>> {
        Box::pin(async move {
            if token == "good" {
                Ok(SpiffeId::for_service_account("cluster.local", "shop", "web").unwrap())
            } else {
                Err(TokenRejected::Invalid(
                    "not a token this test issued".into(),
                ))
            }
        })
    }
}

struct TestServer {
    xds: SocketAddr,
    admin: SocketAddr,
    book: SharedLoadBook,
    clients: Arc<ClientRegistry>,
    settings: LoadSettings,
    _snapshots: watch::Sender<Option<Arc<xds_core::snapshot::Snapshot>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestServer {
    /// The server with `flags` (as on the command line), token authentication on.
    async fn start(flags: &[&str]) -> Self {
        Self::start_with(flags, None).await
    }

    /// As [`TestServer::start`], locating clients without a node locality through `lookup`.
    async fn start_with(flags: &[&str], lookup: Option<Arc<dyn LocalityLookup>>) -> Self {
        let args =
            Args::try_parse_from(["xds-server"].into_iter().chain(flags.iter().copied())).unwrap();
        let settings = args.load_settings();
        let (tx, rx) = watch::channel(Some(Arc::new(xds::snapshot(None, registry()))));
        let clients = ClientRegistry::new();
        let book = settings.new_book();
        let ads = AdsService::new(rx.clone())
            .with_clients(clients.clone())
            .with_token_verifier(Some(Arc::new(Tokens)))
            .with_lookup(lookup);
        let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (xds, admin) = (
            xds_listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let lrs = LrsService::new(ads.clone(), book.clone(), settings.interval).into_server();
        let (_, policy_status) = watch::channel(Default::default());
        let admin_service = AdminService::new(rx.clone(), clients.clone(), policy_status, "test")
            .with_load(book.clone(), settings);
        let tasks = vec![
            tokio::spawn(async move {
                grpc::transport()
                    .add_service(lrs)
                    .add_service(ads.into_server())
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                        xds_listener,
                    ))
                    .await
                    .unwrap();
            }),
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(admin_service.into_server())
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                        admin_listener,
                    ))
                    .await
                    .unwrap();
            }),
            tokio::spawn({
                let (book, clients) = (book.clone(), clients.clone());
                async move {
                    watch_load(book, rx, clients, settings).await.unwrap();
                }
            }),
        ];
        Self {
            xds,
            admin,
            book,
            clients,
            settings,
            _snapshots: tx,
            tasks,
        }
    }

    async fn channel(&self, addr: SocketAddr) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn reporter(&self, token: Option<&str>) -> Result<Reporter, Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut client = LoadReportingServiceClient::new(self.channel(self.xds).await);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        // The server answers the first report only: send it before waiting for the headers.
        let call = client.stream_load_stats(request);
        let rx = tokio::time::timeout(WAIT, call)
            .await
            .expect("stream opened in time")?
            .into_inner();
        Ok(Reporter { tx, rx })
    }

    async fn load(&self, service: &str) -> Result<pb::GetLoadResponse, Status> {
        let mut admin = AdminClient::new(self.channel(self.admin).await);
        admin
            .get_load(pb::GetLoadRequest {
                service: service.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Polls GetLoad until `done` holds of the answer.
    async fn load_until(
        &self,
        what: &str,
        done: impl Fn(&pb::GetLoadResponse) -> bool,
    ) -> pb::GetLoadResponse {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let load = self.load("").await.unwrap();
            if done(&load) {
                return load;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last answer {load:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Reporter {
    tx: mpsc::Sender<LoadStatsRequest>,
    rx: Streaming<LoadStatsResponse>,
}

impl Reporter {
    async fn send(&self, report: LoadStatsRequest) {
        assert!(self.tx.send(report).await.is_ok(), "request stream open");
    }

    async fn recv(&mut self) -> Result<LoadStatsResponse, Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Err(_) => panic!("no answer within {WAIT:?}"),
            Ok(Ok(Some(resp))) => Ok(resp),
            Ok(Ok(None)) => Err(Status::ok("stream ended")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// Sends the first report (node only, as Envoy does) and returns the server's answer.
    async fn open(&mut self, node: Node) -> LoadStatsResponse {
        self.send(LoadStatsRequest {
            node: Some(node),
            cluster_stats: Vec::new(),
        })
        .await;
        self.recv()
            .await
            .expect("the server answers the first report")
    }
}

/// A node in zone `z` of region r; a gRPC client's if `grpc`.
fn node(id: &str, z: &str, grpc: bool) -> Node {
    let mut node = xds::node(id, "");
    node.locality = Some(EnvoyLocality {
        region: "r".into(),
        zone: z.into(),
        sub_zone: String::new(),
    });
    if grpc {
        node.user_agent_name = "grpc-python".into();
    }
    node
}

/// One cluster's report: (zone, priority, successful, errors, in flight) per locality.
fn report(cluster: &str, rows: &[(&str, u32, u64, u64, u64)]) -> LoadStatsRequest {
    LoadStatsRequest {
        node: None,
        cluster_stats: vec![ClusterStats {
            cluster_name: cluster.into(),
            upstream_locality_stats: rows
                .iter()
                .map(
                    |&(z, priority, ok, errors, in_flight)| UpstreamLocalityStats {
                        locality: Some(EnvoyLocality {
                            region: "r".into(),
                            zone: z.into(),
                            sub_zone: String::new(),
                        }),
                        priority,
                        total_successful_requests: ok,
                        total_error_requests: errors,
                        total_requests_in_progress: in_flight,
                        total_issued_requests: ok + errors,
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        }],
    }
}

fn rows(load: &pb::GetLoadResponse) -> Vec<(String, String, String, u32, u64, u64, u32)> {
    load.services
        .iter()
        .flat_map(|s| {
            s.localities.iter().map(|l| {
                (
                    s.cluster.clone(),
                    s.client_class.clone(),
                    l.locality.as_ref().unwrap().zone.clone(),
                    l.priority,
                    l.requests_total,
                    l.errors_total,
                    l.reporters,
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_show_in_get_load_unknown_clusters_are_ignored_and_leavers_keep_their_totals() {
    let server = TestServer::start(&["--load-report-interval", "2s", "--load-window", "20s"]).await;
    let mut envoy = server.reporter(None).await.unwrap();
    let first = envoy.open(node("envoy-1", "a", false)).await;
    assert!(first.send_all_clusters, "{first:?}");
    assert!(first.clusters.is_empty());
    let interval = first
        .load_reporting_interval
        .expect("the interval is always set");
    assert_eq!((interval.seconds, interval.nanos), (2, 0));

    envoy.send(report(WEB, &[("a", 0, 90, 10, 3)])).await;
    envoy
        .send(report("made-up.shop:80", &[("a", 0, 1000, 0, 0)]))
        .await;
    envoy.send(report(WEB, &[("nowhere", 0, 1000, 0, 0)])).await;
    let load = server
        .load_until("the report is in GetLoad", |l| !l.services.is_empty())
        .await;
    assert_eq!((load.window_seconds, load.reporting_clients), (20, 1));
    assert_eq!(
        rows(&load),
        [(WEB.into(), "r/a/-".into(), "a".into(), 0, 100, 10, 1)]
    );
    let web = &load.services[0];
    assert_eq!(
        (web.service.as_str(), web.port, web.serving_priority),
        ("web.shop", 80, 0)
    );
    let a = &web.localities[0];
    assert_eq!(a.in_flight, 3);
    assert!((a.requests_per_second - 5.0).abs() < 1e-9, "{a:?}");
    assert!((a.error_ratio - 0.1).abs() < 1e-9, "{a:?}");
    // Neither the unknown cluster nor the unknown locality holds anything.
    assert_eq!(lock_book(&server.book).total_rows(), 1);

    drop(envoy);
    let left = server
        .load_until("the client that left is forgotten", |l| {
            l.reporting_clients == 0 && l.services[0].localities[0].reporters == 0
        })
        .await;
    let a = &left.services[0].localities[0];
    assert_eq!((a.requests_per_second, a.in_flight), (0.0, 0));
    assert_eq!((a.requests_total, a.errors_total), (100, 10), "totals stay");
    assert_eq!(server.settings.serving_window(), Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_priorities_come_from_the_answer_they_were_sent() {
    let server = TestServer::start(&["--load-report-interval", "1s"]).await;
    let mut grpc_client = server.reporter(None).await.unwrap();
    let first = grpc_client.open(node("grpc-1", "a", true)).await;
    assert!(first.send_all_clusters);
    // gRPC reports every locality at priority 0; zone b is priority 1 for a client in zone a.
    grpc_client
        .send(report(WEB, &[("a", 0, 10, 0, 0), ("b", 0, 4, 4, 0)]))
        .await;
    let load = server
        .load_until("the gRPC report is in", |l| rows(l).len() == 2)
        .await;
    assert_eq!(
        rows(&load),
        [
            (WEB.into(), "r/a/-".into(), "a".into(), 0, 10, 0, 1),
            (WEB.into(), "r/a/-".into(), "b".into(), 1, 8, 4, 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_of_the_serving_priority_is_a_failover_event() {
    let server = TestServer::start(&["--load-report-interval", "1s"]).await;
    let mut events = server.clients.subscribe();
    let mut envoy = server.reporter(None).await.unwrap();
    envoy.open(node("envoy-1", "a", false)).await;
    envoy.send(report(WEB, &[("a", 0, 5, 15, 0)])).await;
    server
        .load_until("priority 0 serves", |l| {
            l.services.first().is_some_and(|s| s.serving_priority == 0)
        })
        .await;
    // Let the tracker see priority 0 serving before the traffic moves.
    tokio::time::sleep(server.settings.interval * 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let event = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failover event within {WAIT:?}"
        );
        envoy.send(report(WEB, &[("b", 1, 10, 0, 0)])).await;
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(Ok(event @ xds_server::registry::XdsEvent::Failover { .. })) => break event,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("event stream: {e}"),
        }
    };
    let pb_event = xds_server::admin::api::event_pb(&event);
    assert_eq!(pb_event.kind, "failover");
    assert_eq!(
        (pb_event.service.as_str(), pb_event.client_class.as_str()),
        (WEB, "r/a/-")
    );
    assert_eq!((pb_event.from_priority, pb_event.to_priority), (0, 1));
    assert!((pb_event.error_ratio - 0.75).abs() < 1e-9, "{pb_event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_past_a_limit_are_refused_naming_field_and_limit() {
    let server = TestServer::start(&[]).await;
    let long_name = "c".repeat(MAX_RESOURCE_NAME_BYTES + 1);
    let too_many: Vec<(&str, u32, u64, u64, u64)> =
        vec![("a", 0, 1, 0, 0); MAX_LRS_LOCALITIES_PER_CLUSTER + 1];
    let cases = [
        (
            report(&long_name, &[("a", 0, 1, 0, 0)]),
            "cluster_stats.cluster_name",
            "MAX_RESOURCE_NAME_BYTES",
        ),
        (
            report(WEB, &too_many),
            "upstream_locality_stats",
            "MAX_LRS_LOCALITIES_PER_CLUSTER",
        ),
        (
            report(WEB, &[(&"z".repeat(300), 0, 1, 0, 0)]),
            "locality.zone",
            "MAX_LOCALITY_BYTES",
        ),
    ];
    for (bad, field, limit) in cases {
        let mut envoy = server.reporter(None).await.unwrap();
        envoy.open(node("envoy-1", "a", false)).await;
        envoy.send(bad).await;
        let status = envoy.recv().await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field) && status.message().contains(limit),
            "{field} / {limit}: {}",
            status.message()
        );
    }
    // Reporting much faster than the interval.
    let mut envoy = server.reporter(None).await.unwrap();
    envoy.open(node("envoy-1", "a", false)).await;
    let status = loop {
        envoy.send(report(WEB, &[("a", 0, 1, 0, 0)])).await;
        if let Ok(Err(status)) =
            tokio::time::timeout(Duration::from_millis(10), envoy.rx.message()).await
        {
            break status;
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("MAX_LRS_REPORTS_PER_INTERVAL"),
        "{}",
        status.message()
    );
    // The node is held to ADS's limits.
    let mut envoy = server.reporter(None).await.unwrap();
    envoy
        .send(LoadStatsRequest {
            node: Some(node(&"n".repeat(5000), "a", false)),
            cluster_stats: Vec::new(),
        })
        .await;
    let status = envoy.recv().await.unwrap_err();
    assert!(status.message().contains("node.id"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_does_not_verify_is_refused_like_ads() {
    let server = TestServer::start(&[]).await;
    let mut envoy = server.reporter(Some("forged")).await.map(|_| ()).err();
    if envoy.is_none() {
        // tonic may hand back the stream before the status: the status comes with the first read.
        let mut r = server.reporter(Some("forged")).await.unwrap();
        r.send(LoadStatsRequest {
            node: Some(node("envoy-1", "a", false)),
            cluster_stats: Vec::new(),
        })
        .await;
        envoy = r.recv().await.err();
    }
    let status = envoy.expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut good = server.reporter(Some("good")).await.unwrap();
    let first = good.open(node("envoy-1", "a", false)).await;
    assert!(first.send_all_clusters);
}

/// A lookup that knows the pod once the test says where it runs.
#[derive(Default)]
struct Pods(std::sync::Mutex<Option<Locality>>);

impl LocalityLookup for Pods {
    fn locality_of(&self, _pod: &PodHint) -> Option<Locality> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_located_by_its_pod_reports_under_the_pods_locality_once_known() {
    let pods = Arc::new(Pods::default());
    let server = TestServer::start_with(
        &["--load-report-interval", "1s"],
        Some(pods.clone() as Arc<dyn LocalityLookup>),
    )
    .await;
    let mut envoy = server.reporter(None).await.unwrap();
    let mut no_locality = xds::node("envoy-pod", "");
    no_locality.locality = None;
    no_locality.metadata = Some(xds::metadata(&[
        ("pod_name", "web-1"),
        ("namespace", "shop"),
    ]));
    envoy.open(no_locality).await;
    // Unknown pod: the report counts nowhere (no class of "no locality").
    envoy.send(report(WEB, &[("a", 0, 7, 0, 0)])).await;
    tokio::time::sleep(server.settings.interval).await;
    assert!(server.load("").await.unwrap().services.is_empty());
    assert_eq!(lock_book(&server.book).total_rows(), 0);
    // The pod shows up in zone b: the next report counts under its class.
    *pods.0.lock().unwrap() = Some(zone("b"));
    envoy.send(report(WEB, &[("b", 0, 3, 0, 0)])).await;
    let load = server
        .load_until("the report under the pod's class", |l| {
            !l.services.is_empty()
        })
        .await;
    assert_eq!(
        rows(&load),
        [(WEB.into(), "r/b/-".into(), "b".into(), 0, 3, 0, 1)]
    );
}

/// Many clients naming clusters and localities the server does not serve, each unique, with claimed
/// localities of their own: nothing is kept, and the one real row they report is all the book holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_clusters_and_localities_from_many_clients_hold_nothing() {
    let server = TestServer::start(&["--load-report-interval", "1s"]).await;
    let mut reporters = Vec::new();
    for i in 0..100 {
        let mut envoy = server.reporter(None).await.unwrap();
        envoy.open(node(&format!("envoy-{i}"), "a", false)).await;
        let mut made_up = report(WEB, &[("a", 0, 1, 0, 0)]);
        for j in 0..200 {
            let zone = format!("zone-{i}-{j}");
            made_up.cluster_stats.extend(
                report(&format!("made-up-{i}-{j}.shop:80"), &[("a", 0, 1, 0, 0)]).cluster_stats,
            );
            made_up.cluster_stats[0].upstream_locality_stats.extend(
                report(WEB, &[(&zone, 0, 1, 0, 0)]).cluster_stats[0]
                    .upstream_locality_stats
                    .clone(),
            );
        }
        envoy.send(made_up).await;
        reporters.push(envoy);
    }
    let load = server
        .load_until("every client's one real row", |l| {
            l.services.first().is_some_and(|s| {
                s.localities
                    .first()
                    .is_some_and(|r| r.requests_total == 100)
            })
        })
        .await;
    assert_eq!(
        rows(&load),
        [(WEB.into(), "r/a/-".into(), "a".into(), 0, 100, 0, 100)]
    );
    assert_eq!(lock_book(&server.book).total_rows(), 1);
    drop(reporters);
    server
        .load_until("all 100 forgotten", |l| l.reporting_clients == 0)
        .await;
    assert_eq!(lock_book(&server.book).total_rows(), 1);
}
