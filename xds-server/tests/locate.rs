//! Clients located through their pod: a client whose pod the source does not know yet is looked up
//! again when the source says its pods changed (`AdsService::with_lookup_changes`), at once, and
//! never on a timer. Against an in-process ADS server, with a lookup the test controls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use xds_core::model::{Health, Locality, LocalityLookup, PodHint, Registry};
use xds_core::snapshot::{Snapshot, ENDPOINT_TYPE};
use xds_core::testing::{envoy, mesh, xds};
use xds_server::grpc::{self, AdsService};

const WAIT: Duration = Duration::from_secs(30);
/// Far longer than the 250 ms the stream loop used to poll at.
const QUIET: Duration = Duration::from_secs(1);

/// A lookup that knows the pod once the test says where it runs.
#[derive(Default)]
struct Pods(Mutex<Option<Locality>>);

impl LocalityLookup for Pods {
    fn locality_of(&self, _pod: &PodHint) -> Option<Locality> {
        self.0.lock().unwrap().clone()
    }
}

fn zone(z: &str) -> Locality {
    Locality::new("r", z, "")
}

/// `a.shop:8080` with one endpoint in z1 and one in z2.
fn snapshot() -> Arc<Snapshot> {
    let registry = Registry::from_services([mesh::shop_service(
        "a",
        8080,
        vec![
            mesh::endpoint("10.0.1.1", zone("z1"), Health::Healthy),
            mesh::endpoint("10.0.2.1", zone("z2"), Health::Healthy),
        ],
    )]);
    Arc::new(xds::snapshot(None, Arc::new(registry)))
}

/// Priority of each endpoint address in an EDS answer.
fn priorities(resp: &DiscoveryResponse) -> Vec<(String, u32)> {
    let cla = ClusterLoadAssignment::decode(resp.resources[0].value.as_slice()).unwrap();
    let mut out: Vec<(String, u32)> = cla
        .endpoints
        .iter()
        .flat_map(|l| {
            l.lb_endpoints
                .iter()
                .map(move |e| (envoy::host(e).0, l.priority))
        })
        .collect();
    out.sort();
    out
}

async fn serve(service: AdsService) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        grpc::transport()
            .add_service(service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, task)
}

/// A client without `node.locality` that names its pod.
fn unlocated() -> Node {
    Node {
        locality: None,
        metadata: Some(xds::metadata(&[
            ("pod_name", "late"),
            ("namespace", "shop"),
        ])),
        ..xds::node("late-envoy", "shop")
    }
}

#[tokio::test]
async fn a_client_waiting_for_its_pod_is_located_on_the_pod_change_and_never_by_polling() {
    let pods = Arc::new(Pods::default());
    let (changes_tx, changes_rx) = watch::channel(0u64);
    let (_snapshots_tx, snapshots_rx) = watch::channel(Some(snapshot()));
    let service = AdsService::new(snapshots_rx)
        .with_lookup(Some(pods.clone() as Arc<dyn LocalityLookup>))
        .with_lookup_changes(Some(changes_rx));
    let (addr, task) = serve(service).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut answers = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let request = |version: &str, nonce: &str| -> DiscoveryRequest {
        xds::request(unlocated(), ENDPOINT_TYPE, &["a.shop:8080"], version, nonce)
    };
    tx.send(request("", "")).await.unwrap();
    let first = tokio::time::timeout(WAIT, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Not located: no locality matches, both zones share priority 0.
    assert_eq!(
        priorities(&first),
        [("10.0.1.1".to_string(), 0), ("10.0.2.1".to_string(), 0)]
    );
    tx.send(request(&first.version_info, &first.nonce))
        .await
        .unwrap();
    // Every request looks a pending pod up too: let the ACK be handled before the pod is known.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The pod is known now, but nothing said so: no timer looks it up again.
    *pods.0.lock().unwrap() = Some(zone("z1"));
    let polled = tokio::time::timeout(QUIET, answers.message()).await;
    assert!(
        polled.is_err(),
        "an answer without a pod change: the stream polls ({polled:?})"
    );

    // The source says its pods changed: located at once.
    let told = Instant::now();
    changes_tx.send_modify(|g| *g += 1);
    let located = tokio::time::timeout(QUIET, answers.message())
        .await
        .expect("located within 1 s of the pod change")
        .unwrap()
        .unwrap();
    println!(
        "located {} ms after the pod change",
        told.elapsed().as_millis()
    );
    assert_eq!(
        priorities(&located),
        [("10.0.1.1".to_string(), 0), ("10.0.2.1".to_string(), 1)]
    );
    task.abort();
}
