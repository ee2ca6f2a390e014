//! Fleet failover through the real server binary: load reports from two LRS clients that show a
//! zone failing make the server send that zone UNHEALTHY to an ADS client that never reported
//! anything (`enforce`), and restore it after `ejectFor`; under `observe` the verdict is an event and
//! shows in ExplainPriorities while EDS stays as it was. Every wait is for a condition, with a
//! generous deadline.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, ClusterStats, UpstreamLocalityStats,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::envoy::service::load_stats::v3::load_reporting_service_client::LoadReportingServiceClient;
use envoy_types::pb::envoy::service::load_stats::v3::LoadStatsRequest;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use xds_admin_api as pb;
use xds_core::snapshot::ENDPOINT_TYPE;
use xds_core::testing::xds;

use crate::health::free_port;

const CLUSTER: &str = "web.shop:8080";
/// Far above what any step takes, even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

struct Server(Child, PathBuf);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// shop/web with two endpoints in zone z1 and two in z2, under a fleetFailover `mode`; returns the
/// server and its xDS, admin and metrics ports.
fn start(mode: &str) -> (Server, u16, u16, u16) {
    let dir = std::env::temp_dir().join(format!("xds-fleet-{mode}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let endpoint = |ip: &str, zone: &str| {
        format!("  - address: {ip}\n    locality: {{region: r, zone: {zone}}}\n")
    };
    let endpoints = [
        endpoint("10.0.1.1", "z1"),
        endpoint("10.0.1.2", "z1"),
        endpoint("10.0.2.1", "z2"),
        endpoint("10.0.2.2", "z2"),
    ]
    .concat();
    std::fs::write(
        dir.join("endpoints.yaml"),
        format!(
            "services:\n- name: web\n  namespace: shop\n  ports: [{{name: http, port: 8080}}]\n  \
             endpoints:\n{endpoints}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/web.yaml"),
        format!(
            "kind: FailoverPolicy\nmetadata: {{name: web, namespace: shop}}\nspec:\n  service: web\n  \
             fleetFailover: {{mode: {mode}, minReporters: 2, minRequests: 10, errorRatio: 0.5, \
             window: 2s, ejectFor: 5s, maxEjectedPercent: 50}}\n"
        ),
    )
    .unwrap();
    let (xds_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(["--endpoints", dir.join("endpoints.yaml").to_str().unwrap()])
        .args(["--policies", dir.join("policies").to_str().unwrap()])
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xds-server");
    (Server(child, dir), xds_port, admin_port, metrics_port)
}

/// The metrics page.
async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .expect("the metrics page in time")
        .unwrap();
    out
}

async fn channel(port: u16) -> tonic::transport::Channel {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {port} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(id: &str, zone: &str) -> Node {
    Node {
        locality: Some(EnvoyLocality {
            region: "r".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        }),
        ..xds::node(id, "shop")
    }
}

/// A load report of `errors` failed and `ok` successful requests to zone `zone` of web.
fn report(client: &str, zone: &str, ok: u64, errors: u64) -> LoadStatsRequest {
    LoadStatsRequest {
        node: Some(node(client, "z1")),
        cluster_stats: vec![ClusterStats {
            cluster_name: CLUSTER.into(),
            upstream_locality_stats: vec![UpstreamLocalityStats {
                locality: Some(EnvoyLocality {
                    region: "r".into(),
                    zone: zone.into(),
                    sub_zone: String::new(),
                }),
                total_successful_requests: ok,
                total_error_requests: errors,
                total_issued_requests: ok + errors,
                ..UpstreamLocalityStats::default()
            }],
            ..ClusterStats::default()
        }],
    }
}

/// Two clients reporting over LRS: each call to `send` is one report from each.
struct Reporters(Vec<mpsc::Sender<LoadStatsRequest>>);

impl Reporters {
    async fn open(port: u16) -> Self {
        let mut senders = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = mpsc::channel(16);
            let mut client = LoadReportingServiceClient::new(channel(port).await);
            tokio::spawn(async move {
                if let Ok(answers) = client.stream_load_stats(ReceiverStream::new(rx)).await {
                    let mut answers = answers.into_inner();
                    while let Some(Ok(_)) = answers.next().await {}
                }
            });
            senders.push(tx);
        }
        Self(senders)
    }

    async fn send(&self, zone: &str, ok: u64, errors: u64) {
        for (i, tx) in self.0.iter().enumerate() {
            tx.send(report(&format!("reporter-{i}"), zone, ok, errors))
                .await
                .unwrap();
        }
    }
}

/// Health of each host of web's EDS answer, by zone: (zone, [health]).
fn health_by_zone(cla: &ClusterLoadAssignment) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = cla
        .endpoints
        .iter()
        .map(|g| {
            (
                g.locality.clone().unwrap().zone,
                g.lb_endpoints.iter().map(|e| e.health_status).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The next EDS answer on `answers`, with its hosts' health by zone.
async fn next(
    answers: &mut tonic::Streaming<DiscoveryResponse>,
) -> (DiscoveryResponse, Vec<(String, Vec<i32>)>) {
    let resp = tokio::time::timeout(DEADLINE, answers.next())
        .await
        .expect("an EDS answer in time")
        .unwrap()
        .unwrap();
    let cla = ClusterLoadAssignment::decode(resp.resources[0].value.as_slice()).unwrap();
    let health = health_by_zone(&cla);
    (resp, health)
}

fn all(zone: &str, health: HealthStatus) -> (String, Vec<i32>) {
    (zone.to_string(), vec![health as i32; 2])
}

#[tokio::test]
async fn a_zone_failing_for_two_reporters_is_sent_unhealthy_to_a_quiet_client_and_restored() {
    let (_server, xds_port, _, metrics_port) = start("enforce");
    // The quiet client: in z1, subscribed to web's endpoints, never reporting anything.
    let (tx, rx) = mpsc::channel(8);
    let mut answers = AggregatedDiscoveryServiceClient::new(channel(xds_port).await)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let quiet = node("quiet", "z1");
    tx.send(xds::request(
        quiet.clone(),
        ENDPOINT_TYPE,
        &[CLUSTER],
        "",
        "",
    ))
    .await
    .unwrap();
    let (first, health) = next(&mut answers).await;
    assert_eq!(
        health,
        [
            all("z1", HealthStatus::Healthy),
            all("z2", HealthStatus::Healthy)
        ]
    );
    tx.send(xds::ack(quiet.clone(), &first, &[CLUSTER]))
        .await
        .unwrap();

    // Two clients report z1 failing until the quiet client is told.
    let reporters = Reporters::open(xds_port).await;
    let (reports_tx, mut reports_rx) = tokio::sync::watch::channel(true);
    let failing = tokio::spawn(async move {
        while *reports_rx.borrow_and_update() {
            reporters.send("z1", 2, 8).await;
            tokio::select! {
                _ = reports_rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
        reporters
    });
    let (ejected, health) = next(&mut answers).await;
    assert_eq!(
        health,
        [
            all("z1", HealthStatus::Unhealthy),
            all("z2", HealthStatus::Healthy)
        ],
        "z1 is sent UNHEALTHY, z2 untouched"
    );
    // The gauge and the counter were set before the ejection was published.
    let page = metrics(metrics_port).await;
    for line in [
        "xds_fleet_ejected_localities{service=\"shop/web\",port=\"8080\"} 1",
        "xds_fleet_verdicts_total{mode=\"enforce\",kind=\"fleet_ejected\"} 1",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} not in:\n{page}");
    }
    tx.send(xds::ack(quiet.clone(), &ejected, &[CLUSTER]))
        .await
        .unwrap();

    // The reports stop showing errors (z1 gets no traffic while ejected): after ejectFor it is back.
    reports_tx.send_replace(false);
    let _reporters = failing.await.unwrap();
    let (_, health) = next(&mut answers).await;
    assert_eq!(
        health,
        [
            all("z1", HealthStatus::Healthy),
            all("z2", HealthStatus::Healthy)
        ],
        "restored after ejectFor"
    );
}

#[tokio::test]
async fn observe_mode_reports_the_verdict_and_leaves_eds_alone() {
    let (_server, xds_port, admin_port, _) = start("observe");
    let mut admin = pb::admin_client::AdminClient::new(channel(admin_port).await);
    let mut events = admin
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let reporters = Reporters::open(xds_port).await;
    let observed = async {
        loop {
            reporters.send("z1", 0, 10).await;
            let wait = tokio::time::timeout(Duration::from_millis(300), events.next());
            if let Ok(Some(Ok(e))) = wait.await {
                if e.kind == "fleet_observed" {
                    return e;
                }
            }
        }
    };
    let event = tokio::time::timeout(DEADLINE, observed)
        .await
        .expect("a fleet_observed event in time");
    assert_eq!(
        (
            event.service.as_str(),
            event.locality.as_str(),
            event.error_ratio
        ),
        (CLUSTER, "r/z1/", 1.0)
    );
    assert!(event.reason.contains("observe mode"), "{}", event.reason);

    // The verdict is in force (the event came after it); EDS still sends z1 healthy.
    let explained = admin
        .explain_priorities(pb::ExplainPrioritiesRequest {
            service: CLUSTER.into(),
            client: Some(pb::explain_priorities_request::Client::Manual(
                pb::ManualClient {
                    locality: Some(pb::Locality {
                        region: "r".into(),
                        zone: "z1".into(),
                        sub_zone: String::new(),
                    }),
                    ..pb::ManualClient::default()
                },
            )),
            ..pb::ExplainPrioritiesRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = &explained.explanations[0];
    let fleet = e.fleet.as_ref().expect("the fleet verdict");
    assert_eq!(fleet.settings.as_ref().unwrap().mode, "observe");
    let z1 = fleet
        .localities
        .iter()
        .find(|l| l.locality.as_ref().unwrap().zone == "z1")
        .unwrap();
    assert_eq!((z1.state.as_str(), z1.reporters), ("observed", 2));
    assert!(z1.errors >= 10 && z1.errors == z1.requests, "{z1:?}");
    let health: Vec<&str> = e.levels[0]
        .endpoints
        .iter()
        .map(|ep| ep.health.as_str())
        .collect();
    assert_eq!(
        health,
        ["HEALTHY", "HEALTHY"],
        "EDS unchanged in observe mode"
    );
    assert_eq!(e.load[0], 100);
}
