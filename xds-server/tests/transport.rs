//! The xDS port's connection limits (`grpc::transport`): the connection cap, streams per connection,
//! the first-request deadline, keepalive against vanished peers, each connection's maximum age, and
//! draining on shutdown — against an in-process server served as `main` serves it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

use xds_core::model::Registry;
use xds_core::snapshot::CLUSTER_TYPE;
use xds_core::testing::{mesh, xds};
use xds_server::grpc::transport::MaxConnectionAge;
use xds_server::grpc::{AdsService, Transport, TransportSettings};

/// Generous: a loaded 2-core machine running debug builds. Never an assertion about speed.
const WAIT: Duration = Duration::from_secs(30);

struct TestServer {
    addr: SocketAddr,
    service: AdsService,
    accepted: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _snapshots: watch::Sender<Option<Arc<xds_core::snapshot::Snapshot>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(settings: TransportSettings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Arc::new(Registry::from_services([mesh::shop_service(
            "s0",
            8080,
            vec![mesh::healthy("10.0.0.1")],
        )]));
        let (tx, rx) = watch::channel(Some(Arc::new(xds::snapshot(None, registry))));
        let service =
            AdsService::new(rx).with_first_request_timeout(settings.first_request_timeout);
        let accepted = Arc::new(AtomicUsize::new(0));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let svc = service.clone().into_server();
            let accepted = accepted.clone();
            async move {
                let incoming =
                    tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        conn
                    });
                Transport::new(settings)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = shutdown_rx.await;
                    })
                    .await
                    .unwrap();
            }
        });
        Self {
            addr,
            service,
            accepted,
            shutdown: Some(shutdown_tx),
            task,
            _snapshots: tx,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    async fn wait_streams(&self, live: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.service.live_streams() != live {
            assert!(
                tokio::time::Instant::now() < deadline,
                "live streams stuck at {} (want {live})",
                self.service.live_streams()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One ADS stream: requests go in through a channel, answers come back as a tonic stream.
struct Ads {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Ads {
    async fn open(channel: Channel) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(8);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    async fn ask_cds(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        let req = xds::request(xds::node("envoy-1", "shop"), CLUSTER_TYPE, &[], "", "");
        let _ = self.tx.send(req).await;
        self.next().await
    }

    async fn next(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        match tokio::time::timeout(WAIT, self.rx.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err(tonic::Status::ok("stream ended")),
            Err(_) => panic!("no answer and no end within {WAIT:?}"),
        }
    }
}

fn settings() -> TransportSettings {
    TransportSettings::default()
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_the_slot_is_reused_when_one_leaves() {
    let server = TestServer::start(TransportSettings {
        max_connections: 2,
        ..settings()
    })
    .await;
    let mut first = Ads::open(server.channel().await).await.unwrap();
    first.ask_cds().await.expect("first connection served");
    let mut second = Ads::open(server.channel().await).await.unwrap();
    second.ask_cds().await.expect("second connection served");

    // The third connection is accepted by the kernel and closed by the server at once.
    let third = async {
        let mut ads = Ads::open(server.channel().await).await?;
        ads.ask_cds().await
    };
    let refused = tokio::time::timeout(WAIT, third)
        .await
        .expect("refused, not hung");
    assert!(
        refused.is_err(),
        "a third connection was served: {refused:?}"
    );

    drop(first);
    server.wait_streams(1).await;
    // The slot frees when the connection's task ends (the client closes the idle connection).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt = async {
            let mut ads = Ads::open(server.channel().await).await?;
            ads.ask_cds().await
        };
        if tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
}

#[tokio::test]
async fn a_connection_holds_at_most_max_streams_at_once() {
    let server = TestServer::start(TransportSettings {
        max_streams_per_connection: 2,
        ..settings()
    })
    .await;
    let channel = server.channel().await;
    let mut a = Ads::open(channel.clone()).await.unwrap();
    a.ask_cds().await.unwrap();
    let mut b = Ads::open(channel.clone()).await.unwrap();
    b.ask_cds().await.unwrap();
    server.wait_streams(2).await;

    // The third stream on the same connection waits for a slot: HTTP/2 keeps it at the client.
    let third = tokio::spawn(async move {
        let mut c = Ads::open(channel).await?;
        c.ask_cds().await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.service.live_streams(),
        2,
        "a third stream was opened"
    );
    assert!(!third.is_finished());

    drop(a);
    let served = tokio::time::timeout(WAIT, third).await.unwrap().unwrap();
    assert!(
        served.is_ok(),
        "the waiting stream was not served: {served:?}"
    );
    drop(b);
}

#[tokio::test]
async fn a_stream_without_a_first_request_is_ended() {
    let server = TestServer::start(TransportSettings {
        first_request_timeout: Duration::from_millis(300),
        ..settings()
    })
    .await;
    let mut silent = Ads::open(server.channel().await).await.unwrap();
    let status = silent.next().await.expect_err("ended with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--first-request-timeout"),
        "{status:?}"
    );
    server.wait_streams(0).await;

    // A client that speaks at once is not affected, however long it stays.
    let mut talker = Ads::open(server.channel().await).await.unwrap();
    talker.ask_cds().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.service.live_streams(), 1);
}

#[tokio::test]
async fn a_connection_past_its_maximum_age_sends_its_streams_to_a_new_connection() {
    let server = TestServer::start(TransportSettings {
        max_connection_age: MaxConnectionAge(Some(Duration::from_secs(1))),
        max_connection_age_grace: Duration::from_secs(5),
        ..settings()
    })
    .await;
    let channel = server.channel().await;
    let mut ads = Ads::open(channel.clone()).await.unwrap();
    ads.ask_cds().await.unwrap();
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);

    let started = tokio::time::Instant::now();
    let status = ads.next().await.expect_err("ended at the maximum age");
    let lived = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("maximum age"), "{status:?}");
    assert!(
        lived >= Duration::from_millis(800),
        "ended after {lived:?}, before 90% of the age"
    );

    // The client reopens the stream; the old connection said GOAWAY, so it goes over a new one.
    let mut again = Ads::open(channel).await.unwrap();
    again.ask_cds().await.unwrap();
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

/// A TCP relay that can go silent: it keeps both connections open but stops passing bytes, like a
/// peer whose machine vanished.
async fn freezable_relay(to: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(to).await.unwrap();
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            for (mut from, mut to, frozen) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    frozen.clone(),
                ),
                (Box::new(ur) as _, Box::new(cw) as _, frozen.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if frozen.load(Ordering::SeqCst) {
                            // Hold everything, forever: the sockets stay open.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let server = TestServer::start(TransportSettings {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(500),
        ..settings()
    })
    .await;
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(server.addr, frozen.clone()).await;
    let channel = Endpoint::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ads = Ads::open(channel).await.unwrap();
    ads.ask_cds().await.unwrap();
    // Alive while the peer answers pings.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.service.live_streams(), 1);

    frozen.store(true, Ordering::SeqCst);
    // Without keepalive the server would hold this stream until TCP gave up (many minutes).
    server.wait_streams(0).await;
    drop(ads);
}

#[tokio::test]
async fn shutdown_tells_streams_to_reconnect_and_returns() {
    let mut server = TestServer::start(settings()).await;
    let mut ads = Ads::open(server.channel().await).await.unwrap();
    ads.ask_cds().await.unwrap();
    server.shutdown.take().unwrap().send(()).unwrap();
    let status = ads.next().await.expect_err("ended by the shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    tokio::time::timeout(WAIT, &mut server.task)
        .await
        .expect("the server returned once its connections drained")
        .unwrap();
}
