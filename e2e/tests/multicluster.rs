//! Several Kubernetes clusters at once: one in-repo test API server per cluster, watched by a real
//! `xds-server --cluster east=… --cluster west=…`, driving a real Envoy that sends real traffic to real
//! backends on 127.0.0.1.
//!
//! The scene: the Service `echo.demo:8080` exists in every cluster. Cluster `east` runs its pods on a
//! Node in us-east1-b, cluster `west` on a Node in us-west1-a (and `eu`, when there is a third, in
//! eu-west1-a). Backends answer their cluster's name. The client Envoy sits in us-east1-b, so `east` is
//! its nearest cluster and `west` the next one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::apiserver::{ApiServer, KindInfo};
use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::k8s;
use e2e::modes::XdsProtocol;
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::topology::{CLUSTER, EAST_B, HOST, NAMESPACE, SERVICE};
use e2e::traffic;
use serde_json::{json, Value};

const PROPAGATION: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(10);
/// `--stale-after` in these tests: short, so an outage turns stale within the test.
const STALE_AFTER: &str = "2s";

e2e::both_protocols!(
    a_clusters_service_going_unready_moves_traffic_to_the_other_cluster,
    an_unreachable_api_server_keeps_its_endpoints_then_they_turn_stale,
);

#[test]
fn three_clusters_merge_and_one_that_never_answers_does_not_hold_back_the_others() {
    let mut east = Cluster::new("east", "us-east1", "us-east1-b");
    let mut west = Cluster::new("west", "us-west1", "us-west1-a");
    let mut eu = Cluster::new("eu", "eu-west1", "eu-west1-a");
    east.add_backend();
    west.add_backend();
    eu.add_backend();
    eu.api.stop(); // unreachable from the start
    let started = Instant::now();
    let server = start_server(&[&east, &west, &eu], &[]);
    let envoy = client(&server, XdsProtocol::Sotw);
    let published = started.elapsed();
    println!(
        "served without the unreachable cluster after {} ms",
        published.as_millis()
    );
    assert!(
        published >= Duration::from_secs(2),
        "published before --stale-after ({STALE_AFTER}) passed: the unreachable cluster was not waited for"
    );
    assert_eq!(
        hosts_by_cluster(&envoy),
        BTreeMap::from([(east.port(0), "east"), (west.port(0), "west")]),
        "east and west merged into one Envoy cluster"
    );
    assert!(
        server.wait_for_log(
            "publishing without clusters that have not listed yet",
            PROPAGATION
        ),
        "the server says which cluster it published without"
    );

    // The third cluster comes up: its endpoints join the same Envoy cluster.
    eu.api.restart();
    let t0 = Instant::now();
    let joined = e2e::poll(Duration::from_secs(30), Duration::from_millis(50), || {
        (hosts_by_cluster(&envoy).len() == 3).then(|| t0.elapsed())
    });
    let joined = joined
        .unwrap_or_else(|| panic!("eu's endpoints never arrived: {:?}", envoy.hosts(CLUSTER)));
    println!("eu joined after {} ms", joined.as_millis());
    assert_eq!(hosts_by_cluster(&envoy)[&eu.port(0)], "eu");
    // Traffic still prefers the client's own region (east) with all three merged.
    let steady = traffic::send(envoy.listener_addr(), HOST, 20, EVERY);
    assert!(steady.all("east"), "{steady}");
}

#[test]
fn a_client_located_through_its_pod_prefers_its_own_cluster_within_its_zone() {
    // Both clusters run in the same zone, and both have a pod `client` with the same IP: pod names
    // and IPs repeat across clusters.
    let mut east = Cluster::new("east", "us-east1", "us-east1-b");
    let mut west = Cluster::new("west", "us-east1", "us-east1-b");
    east.add_backend();
    west.add_backend();
    east.add_client_pod();
    west.add_client_pod();
    let server = start_server(&[&east, &west], &[]);
    let located = |node_id: &str, options: EnvoyOptions| {
        let envoy = Envoy::start(options.namespace(NAMESPACE));
        assert!(
            envoy.wait_serving(HOST, Duration::from_secs(30)),
            "{node_id} not serving; hosts {:?}",
            envoy.hosts(CLUSTER)
        );
        envoy
    };
    // Says it runs in west: looked up there only, and then west's endpoints come first in the zone.
    let in_west = located(
        "in-west",
        EnvoyOptions::without_locality("in-west", server.addr())
            .metadata("pod_name", "client")
            .label("topology.istio.io/cluster", "west"),
    );
    // Says nothing: the first cluster that knows the pod (east, in --cluster order).
    let unnamed = located(
        "unnamed",
        EnvoyOptions::without_locality("unnamed", server.addr()).metadata("pod_ip", "10.244.0.5"),
    );
    let priorities = |envoy: &Envoy| -> BTreeMap<u16, u32> {
        envoy
            .hosts(CLUSTER)
            .into_iter()
            .map(|h| (h.port, h.priority))
            .collect()
    };
    let want_west = BTreeMap::from([(west.port(0), 0), (east.port(0), 1)]);
    let want_east = BTreeMap::from([(east.port(0), 0), (west.port(0), 1)]);
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(50), || {
        (priorities(&in_west) == want_west && priorities(&unnamed) == want_east).then_some(())
    });
    assert!(
        seen.is_some(),
        "own cluster first within the zone: in-west {:?} (want {want_west:?}), unnamed {:?} (want {want_east:?})",
        priorities(&in_west),
        priorities(&unnamed)
    );
    let t = traffic::send(in_west.listener_addr(), HOST, 20, EVERY);
    assert!(t.all("west"), "{t}");
    let t = traffic::send(unnamed.listener_addr(), HOST, 20, EVERY);
    assert!(t.all("east"), "{t}");
}

#[test]
fn a_client_reaches_another_networks_cluster_through_its_gateway() {
    // east on network n1, west on n2 behind a gateway; the client's pod runs in east, so it is on n1
    // and gets west's two endpoints as one endpoint at west's gateway, weighted 2.
    let mut east = Cluster::new("east", "us-east1", "us-east1-b");
    let mut west = Cluster::new("west", "us-west1", "us-west1-a");
    east.add_backend();
    west.add_backend();
    west.add_backend();
    let gateway = Backend::start("west-gateway", "west-gateway");
    east.add_client_pod();
    let mut args = ServerArgs::clusters([
        format!("{},network=n1", east.spec()),
        format!(
            "{},network=n2,gateway=127.0.0.1:{}",
            west.spec(),
            gateway.port()
        ),
    ]);
    args.extra = vec!["--stale-after".into(), STALE_AFTER.into()];
    let server = XdsServer::start(args);
    let envoy = Envoy::start(
        EnvoyOptions::without_locality("n1-client", server.addr())
            .namespace(NAMESPACE)
            .metadata("pod_name", "client"),
    );
    assert!(
        envoy.wait_serving(HOST, Duration::from_secs(30)),
        "not serving; hosts {:?}",
        envoy.hosts(CLUSTER)
    );
    let want = [east.port(0), gateway.port()];
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(50), || {
        let mut ports: Vec<u16> = envoy.hosts(CLUSTER).iter().map(|h| h.port).collect();
        ports.sort();
        let mut want = want.to_vec();
        want.sort();
        (ports == want).then_some(())
    });
    assert!(
        seen.is_some(),
        "east's endpoint and west's gateway, not west's endpoints: {:?}",
        envoy.hosts(CLUSTER)
    );
    let clusters = envoy.admin_get("/clusters").unwrap();
    let weight_line = format!("{CLUSTER}::127.0.0.1:{}::weight::2", gateway.port());
    assert!(
        clusters.contains(&weight_line),
        "the gateway stands for west's 2 endpoints ({weight_line}):\n{clusters}"
    );
    let steady = traffic::send(envoy.listener_addr(), HOST, 20, EVERY);
    assert!(steady.all("east"), "{steady}");

    // east's service goes unready: traffic crosses to n2 through the gateway.
    let t0 = Instant::now();
    east.set_ready(false);
    let sw = traffic::until_served_by(
        envoy.listener_addr(),
        HOST,
        "west-gateway",
        t0,
        EVERY,
        PROPAGATION,
        30,
    );
    println!(
        "east not ready: traffic through west's gateway after {} ms, {} failed",
        sw.millis(),
        sw.tally.failures
    );
    assert!(sw.switched(), "{}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert!(sw.after.all("west-gateway"), "{}", sw.after);
}

#[test]
fn bad_cluster_flags_stop_the_server_with_the_reason() {
    let (status, log) = XdsServer::run_expecting_exit(
        &["--cluster", "east=/nonexistent/kubeconfig,zone=a"],
        Duration::from_secs(20),
    );
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("unknown option \"zone\""), "{log}");
    let (status, log) = XdsServer::run_expecting_exit(
        &[
            "--cluster",
            "east=/k1,network=n1,gateway=10.0.0.1:15443",
            "--cluster",
            "west=/k2,network=n1,gateway=10.0.0.2:15443",
        ],
        Duration::from_secs(20),
    );
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("one gateway per network"), "{log}");
}

fn a_clusters_service_going_unready_moves_traffic_to_the_other_cluster(protocol: XdsProtocol) {
    const MAX_FAILED: usize = 2;
    let mut east = Cluster::new("east", "us-east1", "us-east1-b");
    let mut west = Cluster::new("west", "us-west1", "us-west1-a");
    east.add_backend();
    east.add_backend();
    west.add_backend();
    west.add_backend();
    let server = start_server(&[&east, &west], &[]);
    let envoy = client(&server, protocol);
    let addr = envoy.listener_addr();
    assert_eq!(
        hosts_by_cluster(&envoy).len(),
        4,
        "{:?}",
        envoy.hosts(CLUSTER)
    );
    let steady = traffic::send(addr, HOST, 30, EVERY);
    assert!(steady.all("east"), "the nearest cluster serves: {steady}");

    let t0 = Instant::now();
    east.set_ready(false);
    let sw = traffic::until_served_by(addr, HOST, "west", t0, EVERY, PROPAGATION, 50);
    println!(
        "east's service not ready: traffic in west after {} ms, {} failed; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(sw.switched(), "traffic never moved to west: {}", sw.tally);
    assert!(sw.tally.failures <= MAX_FAILED, "{}", sw.tally);
    assert!(sw.after.all("west"), "{}", sw.after);

    let t0 = Instant::now();
    east.set_ready(true);
    let sw = traffic::until_served_by(addr, HOST, "east", t0, EVERY, PROPAGATION, 30);
    println!(
        "east ready again: traffic back after {} ms, {} failed",
        sw.millis(),
        sw.tally.failures
    );
    assert!(sw.switched(), "{}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert!(sw.after.all("east"), "{}", sw.after);
}

fn an_unreachable_api_server_keeps_its_endpoints_then_they_turn_stale(protocol: XdsProtocol) {
    let mut east = Cluster::new("east", "us-east1", "us-east1-b");
    let mut west = Cluster::new("west", "us-west1", "us-west1-a");
    east.add_backend();
    west.add_backend();
    let server = start_server(&[&east, &west], &[]);
    let envoy = client(&server, protocol);
    let addr = envoy.listener_addr();
    let stale_metric = "xds_cluster_stale{source=\"kubernetes:east\"}";

    // east's control plane goes away; its pods keep running. At first nothing changes for Envoy.
    let t0 = Instant::now();
    east.api.stop();
    let kept = traffic::send(addr, HOST, 20, EVERY);
    assert!(
        t0.elapsed() < Duration::from_secs(2) && kept.all("east"),
        "right after the outage east's endpoints must still serve: {kept}"
    );
    // After --stale-after its endpoints are sent UNHEALTHY (not removed) and west takes the traffic,
    // without a failed request: east's backends are still alive.
    let sw = traffic::until_served_by(addr, HOST, "west", t0, EVERY, Duration::from_secs(15), 30);
    println!(
        "east's API server down: traffic in west after {} ms (stale after {STALE_AFTER}), {} failed",
        sw.millis(),
        sw.tally.failures
    );
    assert!(
        sw.switched(),
        "stale endpoints never gave way: {}",
        sw.tally
    );
    assert!(
        sw.elapsed.unwrap() >= Duration::from_secs(2),
        "moved before --stale-after"
    );
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert!(sw.after.all("west"), "{}", sw.after);
    let east_hosts: Vec<String> = envoy
        .hosts(CLUSTER)
        .into_iter()
        .filter(|h| h.port == east.port(0))
        .map(|h| h.eds_health_status)
        .collect();
    assert_eq!(
        east_hosts,
        ["UNHEALTHY"],
        "stale endpoints stay listed, as UNHEALTHY"
    );
    assert_eq!(metric(server.metrics_addr(), stale_metric), 1.0);
    // `xdsctl services` says why: east's endpoint is labelled stale, west's is not.
    let services = server.xdsctl_json(&["services"]);
    let endpoints = services["services"][0]["endpoints"].as_array().unwrap();
    let label_of = |cluster: &str| {
        endpoints
            .iter()
            .find(|e| e["labels"]["topology.istio.io/cluster"] == cluster)
            .map(|e| {
                (
                    e["health"].clone(),
                    e["labels"]["failover.xds.dev/stale"].clone(),
                )
            })
            .unwrap_or_else(|| panic!("no {cluster} endpoint in {services}"))
    };
    assert_eq!(label_of("east"), (json!("UNHEALTHY"), json!("true")));
    assert_eq!(label_of("west"), (json!("HEALTHY"), Value::Null));
    assert_eq!(
        metric(
            server.metrics_addr(),
            "xds_cluster_up{source=\"kubernetes:east\"}"
        ),
        0.0
    );

    // The API server is back: east is fresh again and the traffic returns.
    let t0 = Instant::now();
    east.api.restart();
    let sw = traffic::until_served_by(addr, HOST, "east", t0, EVERY, Duration::from_secs(30), 30);
    println!(
        "east's API server back: traffic in east after {} ms, {} failed",
        sw.millis(),
        sw.tally.failures
    );
    assert!(sw.switched(), "{}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert_eq!(metric(server.metrics_addr(), stale_metric), 0.0);
}

/// One Kubernetes cluster: its API server, one Node, the Service, and backends (one pod and
/// EndpointSlice each) that answer the cluster's name.
struct Cluster {
    name: &'static str,
    node: String,
    api: ApiServer,
    backends: Vec<Backend>,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl Cluster {
    fn new(name: &'static str, region: &str, zone: &str) -> Cluster {
        let api = ApiServer::start();
        // The first cluster holds the FailoverPolicy custom resources; serve the kind everywhere.
        api.register_kind(KindInfo::failover_policy());
        let node = format!("node-{zone}");
        api.apply(k8s::node(&node, region, zone));
        api.apply(k8s::service(None));
        let dir = TempDir::new(&format!("cluster-{name}"));
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        Cluster {
            name,
            node,
            api,
            backends: Vec::new(),
            kubeconfig,
            _dir: dir,
        }
    }

    fn spec(&self) -> String {
        format!("{}={}", self.name, self.kubeconfig.display())
    }

    fn add_backend(&mut self) {
        let i = self.backends.len();
        self.backends
            .push(Backend::start(&format!("{}-{i}", self.name), self.name));
        self.apply_slice(i, true);
    }

    /// The client Envoy's pod `client` (IP 10.244.0.5) on this cluster's Node.
    fn add_client_pod(&self) {
        self.api.apply(k8s::pod("client", &self.node, "10.244.0.5"));
    }

    fn port(&self, i: usize) -> u16 {
        self.backends[i].port()
    }

    fn apply_slice(&self, i: usize, ready: bool) {
        self.api.apply(k8s::endpoint_slice(
            &format!("{SERVICE}-{}-{i}", self.name),
            self.port(i),
            vec![k8s::endpoint(&self.node, ready)],
        ));
    }

    fn set_ready(&self, ready: bool) {
        for i in 0..self.backends.len() {
            self.apply_slice(i, ready);
        }
    }
}

fn start_server(clusters: &[&Cluster], extra: &[&str]) -> XdsServer {
    let mut args = ServerArgs::clusters(clusters.iter().map(|c| c.spec()));
    args.extra = ["--stale-after", STALE_AFTER]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    XdsServer::start(args)
}

/// An Envoy in us-east1-b that serves [`HOST`].
fn client(server: &XdsServer, protocol: XdsProtocol) -> Envoy {
    let envoy = Envoy::start(
        EnvoyOptions::new("mc-client", EAST_B.region, EAST_B.zone, server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol),
    );
    assert!(
        envoy.wait_serving(HOST, Duration::from_secs(30)),
        "Envoy did not serve {HOST}; hosts: {:?}\nserver log:\n{}",
        envoy.hosts(CLUSTER),
        server.log()
    );
    envoy
}

/// Backend port → which cluster's backend it is, for every host Envoy has.
fn hosts_by_cluster(envoy: &Envoy) -> BTreeMap<u16, &'static str> {
    envoy
        .hosts(CLUSTER)
        .into_iter()
        .map(|h| {
            let cluster = match h.zone.as_str() {
                "us-east1-b" => "east",
                "us-west1-a" => "west",
                "eu-west1-a" => "eu",
                other => panic!("unexpected zone {other}"),
            };
            (h.port, cluster)
        })
        .collect()
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let body = e2e::http::get(addr, "metrics", "/metrics", Duration::from_secs(5))
        .map(|r| r.text())
        .unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
