//! The Kubernetes source end to end, without a real cluster: the in-repo test API server
//! ([`e2e::apiserver::ApiServer`]) is watched by a real `xds-server --source kubernetes` through a
//! kubeconfig, which drives real Envoys sending real traffic to real HTTP backends on 127.0.0.1.
//!
//! The scene: one Service `echo.demo` (port 8080, named `http`); every backend is one "pod" with its
//! own EndpointSlice whose port `http` is the backend's port (all addresses are 127.0.0.1); one Node
//! per zone, labelled with region and zone; endpoints name their Node and carry no `zone`, so their
//! locality comes from the Node's labels. Each test has its own API server, server, Envoys and ports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::apiserver::{ApiServer, KindInfo};
use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions, HostStatus};
use e2e::k8s::{
    endpoint, endpoint_slice, failover_policy, node, node_name, pod, service, POLICY_API,
    REGION_LABEL,
};
use e2e::modes::XdsProtocol;
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::topology::{Zone, CLUSTER, EAST_B, EAST_C, HOST, NAMESPACE, SERVICE, WEST_A};
use e2e::traffic::{self, Tally};
use serde_json::{json, Value};

const EU_A: Zone = Zone {
    region: "eu-west1",
    zone: "eu-west1-a",
};
/// How long a change in the API server may take to reach Envoy. The server debounces for 50 ms
/// (at most 500 ms); allow slack for a loaded machine running other tests' builds.
const PROPAGATION: Duration = Duration::from_secs(5);
/// Watches reconnect with kube's backoff (0.8 s, doubling, jittered) after an outage or injected
/// failures, so convergence after those may take several seconds.
const RECOVERY: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(10);

// Every test in both ADS flavours: `NAME::sotw` and `NAME::delta`.
e2e::both_protocols!(
    nothing_is_served_until_every_watch_listed_then_the_full_config_at_once,
    added_removed_and_scaled_endpoints_reach_envoy,
    a_zone_going_not_ready_moves_traffic_to_the_same_regions_other_zone,
    a_node_label_change_moves_its_endpoints_between_localities,
    a_relist_after_410_gone_replaces_state_exactly_without_dropping_endpoints,
    api_server_outage_keeps_envoy_routing_and_changes_made_meanwhile_arrive,
    a_client_without_locality_is_located_through_its_pod_and_node,
    a_client_whose_pod_appears_after_it_connected_gets_its_locality,
    a_failover_policy_custom_resource_takes_effect_and_is_accepted,
    malformed_policies_and_endpoint_slices_are_rejected_alone,
);

/// A backend "pod": its process, where it runs, and its EndpointSlice.
struct Member {
    backend: Backend,
    node: String,
    ready: bool,
    slice: String,
}

/// The API server with the scene in it.
struct World {
    api: ApiServer,
    members: Vec<Member>,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl World {
    /// API server with the FailoverPolicy kind, one Node per zone (the three standard zones and
    /// `eu-west1-a`), the Service, and no endpoints yet.
    fn new() -> World {
        let api = ApiServer::start();
        api.register_kind(KindInfo::failover_policy());
        for zone in [EAST_B, EAST_C, WEST_A, EU_A] {
            api.apply(node(&node_name(zone), zone.region, zone.zone));
        }
        api.apply(service(None));
        let dir = TempDir::new("kube");
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        World {
            api,
            members: Vec::new(),
            kubeconfig,
            _dir: dir,
        }
    }

    /// Starts `xds-server --source kubernetes` against this API server.
    fn server(&self) -> XdsServer {
        XdsServer::start(ServerArgs::kubernetes(&self.kubeconfig))
    }

    /// Starts a backend answering its zone on the Node of `zone`, and applies its EndpointSlice.
    fn add(&mut self, zone: Zone) -> usize {
        self.add_on(&node_name(zone), zone.zone)
    }

    /// Starts a backend answering `body` on Node `node`, and applies its EndpointSlice.
    fn add_on(&mut self, node: &str, body: &str) -> usize {
        let i = self.members.len();
        let name = format!("{body}-{i}");
        self.members.push(Member {
            backend: Backend::start(&name, body),
            node: node.to_string(),
            ready: true,
            slice: format!("{SERVICE}-{name}"),
        });
        self.apply_slice(i);
        i
    }

    fn apply_slice(&self, i: usize) {
        let m = &self.members[i];
        self.api.apply(endpoint_slice(
            &m.slice,
            m.backend.port(),
            vec![endpoint(&m.node, m.ready)],
        ));
    }

    fn set_ready(&mut self, i: usize, ready: bool) {
        self.members[i].ready = ready;
        self.apply_slice(i);
    }

    /// Every backend on the Node of `zone` ready or not.
    fn set_zone_ready(&mut self, zone: Zone, ready: bool) {
        for i in self.on_node(&node_name(zone)) {
            self.set_ready(i, ready);
        }
    }

    fn delete_slice(&self, i: usize) {
        self.api.delete(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some(NAMESPACE),
            &self.members[i].slice,
        );
    }

    fn on_node(&self, node: &str) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].node == node)
            .collect()
    }

    fn port(&self, i: usize) -> u16 {
        self.members[i].backend.port()
    }

    fn ports(&self, members: &[usize]) -> BTreeSet<u16> {
        members.iter().map(|&i| self.port(i)).collect()
    }

    fn apply_policy(&self, name: &str, spec: Value) {
        self.api.apply(failover_policy(name, spec));
    }

    fn policy(&self, name: &str) -> Value {
        self.api
            .get(POLICY_API, "FailoverPolicy", Some(NAMESPACE), name)
            .unwrap_or_else(|| panic!("FailoverPolicy {name} is gone"))
    }

    /// Waits until the server wrote an `Accepted` condition with `status` for the current
    /// generation of the policy, and returns that condition.
    fn wait_accepted(&self, name: &str, status: &str) -> Value {
        let found = e2e::poll(PROPAGATION, Duration::from_millis(50), || {
            let obj = self.policy(name);
            let generation = &obj["metadata"]["generation"];
            let cond = accepted_condition(&obj)?;
            (cond["status"] == status && &obj["status"]["observedGeneration"] == generation)
                .then_some(cond)
        });
        found.unwrap_or_else(|| {
            panic!(
                "FailoverPolicy {name}: no Accepted={status} condition for its generation; object: {}",
                self.policy(name)
            )
        })
    }

    /// LIST requests the API server received for a resource (by plural).
    fn lists_of(&self, plural: &str) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.is_list_of(plural))
            .count()
    }
}

fn accepted_condition(obj: &Value) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
}

fn options(server: &XdsServer, protocol: XdsProtocol, node_id: &str, zone: Zone) -> EnvoyOptions {
    EnvoyOptions::new(node_id, zone.region, zone.zone, server.addr())
        .namespace(NAMESPACE)
        .protocol(protocol)
}

/// Starts an Envoy in `zone` and waits until it answers for [`HOST`].
fn envoy(server: &XdsServer, protocol: XdsProtocol, node_id: &str, zone: Zone) -> Envoy {
    serving(Envoy::start(options(server, protocol, node_id, zone)))
}

fn serving(envoy: Envoy) -> Envoy {
    assert!(
        envoy.wait_serving(HOST, Duration::from_secs(20)),
        "Envoy {} did not serve {HOST}; last answer: {:?}; hosts: {:?}",
        envoy.node_id(),
        traffic::request(envoy.listener_addr(), HOST),
        envoy.hosts(CLUSTER)
    );
    envoy
}

/// What a test expects of one host: (port, priority, zone, EDS health).
type Expected = (u16, u32, String, String);

fn summary(hosts: &[HostStatus]) -> Vec<Expected> {
    let mut v: Vec<Expected> = hosts
        .iter()
        .map(|h| {
            (
                h.port,
                h.priority,
                h.zone.clone(),
                h.eds_health_status.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expect(entries: &[(u16, u32, Zone, &str)]) -> Vec<Expected> {
    let mut v: Vec<Expected> = entries
        .iter()
        .map(|(port, p, zone, health)| (*port, *p, zone.zone.to_string(), health.to_string()))
        .collect();
    v.sort();
    v
}

/// Polls Envoy until its hosts of [`CLUSTER`] are exactly `want`; returns how long it took. Panics
/// with what Envoy has (and the server log) otherwise.
fn wait_hosts(envoy: &Envoy, want: &[Expected], timeout: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    let seen = e2e::poll(timeout, Duration::from_millis(20), || {
        (summary(&envoy.hosts(CLUSTER)) == want).then(|| t0.elapsed())
    });
    match seen {
        Some(d) => {
            println!("{what}: in Envoy after {} ms", d.as_millis());
            d
        }
        None => panic!(
            "{what}: Envoy's hosts did not become\n  {want:?}\nwithin {timeout:?}; they are\n  {:?}",
            summary(&envoy.hosts(CLUSTER))
        ),
    }
}

fn wait_ports(envoy: &Envoy, want: &BTreeSet<u16>, what: &str) -> Duration {
    let t0 = Instant::now();
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        let ports: BTreeSet<u16> = envoy.hosts(CLUSTER).iter().map(|h| h.port).collect();
        (&ports == want).then(|| t0.elapsed())
    });
    match seen {
        Some(d) => {
            println!("{what}: in Envoy after {} ms", d.as_millis());
            d
        }
        None => panic!(
            "{what}: Envoy's host ports did not become {want:?} within {PROPAGATION:?}; hosts: {:?}",
            envoy.hosts(CLUSTER)
        ),
    }
}

/// The cluster as Envoy has it (`/config_dump`, dynamic active clusters).
fn cluster_config(envoy: &Envoy) -> Value {
    let dump = envoy.config_dump_section("ClustersConfigDump");
    dump["dynamic_active_clusters"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["cluster"]["name"] == CLUSTER))
        .map(|c| c["cluster"].clone())
        .unwrap_or(Value::Null)
}

fn panic_threshold(cluster: &Value) -> f64 {
    cluster["common_lb_config"]["healthy_panic_threshold"]["value"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Sends a request every 20 ms through `envoy` and polls its hosts until `stop` is set. Returns the
/// tally and the number of host polls in which one of `must_stay` (ports) was missing.
fn traffic_and_watch_hosts(
    envoy: &Envoy,
    must_stay: &BTreeSet<u16>,
    stop: &AtomicBool,
    missing: &Mutex<Vec<String>>,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        tally.record(&traffic::request(envoy.listener_addr(), HOST));
        let hosts = envoy.hosts(CLUSTER);
        let ports: BTreeSet<u16> = hosts.iter().map(|h| h.port).collect();
        if !must_stay.is_subset(&ports) {
            missing
                .lock()
                .unwrap()
                .push(format!("{:?}", summary(&hosts)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tally
}

// 1 ---------------------------------------------------------------------------------------------

fn nothing_is_served_until_every_watch_listed_then_the_full_config_at_once(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let b1 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    world.api.fail_requests("endpointslices", 500);

    let server = world.server();
    let envoy = Envoy::spawn(options(&server, protocol, "client-sync", EAST_B));
    assert!(
        server.wait_for_log("Kubernetes watch error", Duration::from_secs(10)),
        "no watch error logged while EndpointSlices fail"
    );
    // Envoy is connected and asking, and gets nothing: no cluster, no listener.
    let connected = e2e::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (envoy.stat_u64("control_plane.connected_state") == Some(1)).then_some(())
    });
    assert!(connected.is_some(), "Envoy never connected to the server");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(envoy.cluster_names(), ["xds_cluster"], "a cluster leaked");
    assert!(
        !e2e::ports::is_listening(envoy.listener_addr().port()),
        "Envoy got a listener before the initial sync"
    );
    for stat in [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
    ] {
        assert_eq!(envoy.stat_u64(stat), Some(0), "{stat}");
    }
    let failed_lists = world.lists_of("endpointslices");
    let errors = server.log_lines_with("Kubernetes watch error").len();
    println!("while EndpointSlices fail: {failed_lists} failed LISTs, {errors} watch errors logged, Envoy connected and waiting");
    assert!(failed_lists >= 1);
    assert!(server.log_lines_with("Kubernetes source synced").is_empty());

    let t0 = Instant::now();
    world.api.clear_failures();
    assert!(
        envoy.wait_listener(RECOVERY),
        "Envoy got no listener after the failures were cleared"
    );
    envoy.verify_protocol();
    let first_hosts = envoy.hosts(CLUSTER);
    println!(
        "failures cleared: Envoy listening after {} ms",
        t0.elapsed().as_millis()
    );
    // The listener comes after CDS initialisation, which waits for the cluster's first EDS answer: so
    // the first EDS answer already had every endpoint.
    assert_eq!(
        summary(&first_hosts),
        expect(&[
            (world.port(b0), 0, EAST_B, "HEALTHY"),
            (world.port(b1), 0, EAST_B, "HEALTHY"),
            (world.port(c0), 1, EAST_C, "HEALTHY"),
        ])
    );
    std::thread::sleep(Duration::from_millis(500));
    let name = CLUSTER.replace(':', "_");
    let stats = envoy.stats("^(cluster_manager\\.cds|listener_manager\\.lds|cluster\\.echo)");
    for (k, v) in &stats {
        if k.ends_with("update_success")
            || k.ends_with("update_attempt")
            || k.ends_with("update_rejected")
            || k.ends_with("update_empty")
        {
            println!("  {k}: {v}");
        }
    }
    let stat = |k: &str| {
        stats
            .get(k)
            .unwrap_or_else(|| panic!("no stat {k}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        stat("cluster_manager.cds.update_success"),
        1,
        "more than one CDS answer: the first was partial"
    );
    assert_eq!(stat("listener_manager.lds.update_success"), 1);
    assert_eq!(
        stat(&format!("cluster.{name}.update_success")),
        1,
        "more than one EDS answer: the first was partial"
    );
    assert_eq!(stat("cluster_manager.cds.update_rejected"), 0);
    let t = traffic::send(envoy.listener_addr(), HOST, 20, EVERY);
    assert!(t.all(EAST_B.zone), "{t}");

    // The server published once, after every initial list.
    let log = server.log();
    let synced = log.find("Kubernetes source synced").expect("synced line");
    let first_publish = log.find("publishing new snapshot").expect("publish line");
    assert!(
        synced < first_publish,
        "a snapshot was published before the source synced"
    );
}

// 2 ---------------------------------------------------------------------------------------------

fn added_removed_and_scaled_endpoints_reach_envoy(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-scale", EAST_B);
    wait_ports(&envoy, &world.ports(&[b0]), "initial endpoint");

    // Scale up 1 → 3: two more pods, two more slices.
    let b1 = world.add(EAST_B);
    let b2 = world.add(EAST_B);
    let mut times = vec![wait_ports(
        &envoy,
        &world.ports(&[b0, b1, b2]),
        "scaled up to 3",
    )];
    let t = traffic::send(envoy.listener_addr(), HOST, 30, Duration::from_millis(5));
    assert!(t.all(EAST_B.zone), "{t}");
    for i in [b0, b1, b2] {
        assert!(
            world.members[i].backend.requests() > 0,
            "{} got no traffic",
            world.members[i].backend.name()
        );
    }

    // One slice loses its endpoint (the controller empties it), another is deleted.
    world.api.apply(endpoint_slice(
        &world.members[b1].slice,
        world.port(b1),
        Vec::new(),
    ));
    times.push(wait_ports(
        &envoy,
        &world.ports(&[b0, b2]),
        "endpoint removed",
    ));
    world.delete_slice(b2);
    times.push(wait_ports(&envoy, &world.ports(&[b0]), "slice deleted"));
    let before = world.members[b1].backend.requests() + world.members[b2].backend.requests();
    let t = traffic::send(envoy.listener_addr(), HOST, 20, Duration::from_millis(5));
    assert!(t.all(EAST_B.zone), "{t}");
    assert_eq!(
        world.members[b1].backend.requests() + world.members[b2].backend.requests(),
        before,
        "removed endpoints still got traffic"
    );

    // A slice holding several endpoints: one per "pod" on other loopback addresses. Nothing listens
    // there, so mark them not ready: they are listed (UNHEALTHY) but get no traffic.
    let port = world.port(b0);
    let many: Vec<Value> = (2..=4)
        .map(|n| {
            let mut e = endpoint(&node_name(EAST_C), false);
            e["addresses"] = json!([format!("127.0.0.{n}")]);
            e
        })
        .collect();
    world.api.apply(endpoint_slice("echo-many", port, many));
    let t0 = Instant::now();
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        let hosts = envoy.hosts(CLUSTER);
        (hosts.len() == 4).then_some(hosts)
    })
    .unwrap_or_else(|| panic!("3 more hosts never showed: {:?}", envoy.hosts(CLUSTER)));
    times.push(t0.elapsed());
    let unhealthy: BTreeSet<String> = seen
        .iter()
        .filter(|h| h.eds_health_status == "UNHEALTHY")
        .map(|h| h.address.clone())
        .collect();
    assert_eq!(
        unhealthy,
        BTreeSet::from(["127.0.0.2".into(), "127.0.0.3".into(), "127.0.0.4".into()])
    );
    // Scale that slice down to nothing, then the last pod goes too: Envoy keeps the cluster, empty.
    world
        .api
        .apply(endpoint_slice("echo-many", port, Vec::new()));
    times.push(wait_ports(&envoy, &world.ports(&[b0]), "scaled down"));
    world.delete_slice(b0);
    times.push(wait_ports(&envoy, &BTreeSet::new(), "last endpoint gone"));
    let answer = traffic::request(envoy.listener_addr(), HOST);
    println!("with no endpoints: {answer:?}");
    assert!(
        answer.as_ref().is_err_and(|e| e.contains("503")),
        "{answer:?}"
    );
    // And back.
    world.apply_slice(b0);
    times.push(wait_ports(&envoy, &world.ports(&[b0]), "endpoint back"));
    assert!(envoy.wait_serving(HOST, PROPAGATION));
    let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
    println!("propagation times (ms): {ms:?}");
}

// 3 ---------------------------------------------------------------------------------------------

fn a_zone_going_not_ready_moves_traffic_to_the_same_regions_other_zone(protocol: XdsProtocol) {
    const MAX_FAILED: usize = 2;
    let mut world = World::new();
    for zone in [EAST_B, EAST_B, EAST_C, EAST_C, WEST_A] {
        world.add(zone);
    }
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-notready", EAST_B);
    let addr = envoy.listener_addr();
    let steady = traffic::send(addr, HOST, 50, EVERY);
    println!("steady: {steady}");
    assert!(steady.all(EAST_B.zone), "{steady}");

    let t0 = Instant::now();
    world.set_zone_ready(EAST_B, false);
    let sw = traffic::until_served_by(addr, HOST, EAST_C.zone, t0, EVERY, PROPAGATION, 100);
    println!(
        "us-east1-b not ready: traffic in us-east1-c after {} ms, {} failed requests; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(sw.switched(), "traffic never moved: {}", sw.tally);
    assert!(
        sw.tally.failures <= MAX_FAILED,
        "{} failed requests (at most {MAX_FAILED}): {}",
        sw.tally.failures,
        sw.tally
    );
    assert_eq!(sw.tally.count(WEST_A.zone), 0, "leaked to the other region");
    assert!(sw.after.all(EAST_C.zone), "{}", sw.after);
    let hosts = envoy.hosts(CLUSTER);
    assert!(
        hosts
            .iter()
            .filter(|h| h.zone == EAST_B.zone)
            .all(|h| h.priority == 0 && h.eds_health_status == "UNHEALTHY"),
        "not-ready endpoints must stay listed as UNHEALTHY: {hosts:?}"
    );

    let t0 = Instant::now();
    world.set_zone_ready(EAST_B, true);
    let sw = traffic::until_served_by(addr, HOST, EAST_B.zone, t0, EVERY, PROPAGATION, 50);
    println!(
        "us-east1-b ready again: traffic back after {} ms, {} failed; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(sw.switched(), "{}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert!(sw.after.all(EAST_B.zone), "{}", sw.after);

    // The rougher way: the zone's pods die first (connections refused), and only later does the
    // kubelet mark them not ready. Outlier detection bridges the gap.
    let t0 = Instant::now();
    for i in world.on_node(&node_name(EAST_B)) {
        world.members[i].backend.stop();
    }
    let sw = traffic::until_served_by(addr, HOST, EAST_C.zone, t0, EVERY, PROPAGATION, 20);
    world.set_zone_ready(EAST_B, false);
    let settle = traffic::send(addr, HOST, 50, EVERY);
    println!(
        "us-east1-b pods died, then not ready: traffic in us-east1-c after {} ms, {} failed requests; {}; after the not-ready update: {settle}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(sw.switched(), "{}", sw.tally);
    assert!(
        sw.tally.failures <= MAX_FAILED,
        "{} failed requests (at most {MAX_FAILED}): {}",
        sw.tally.failures,
        sw.tally
    );
    assert!(sw.after.all(EAST_C.zone), "{}", sw.after);
    assert!(settle.all(EAST_C.zone), "{settle}");
}

// 4 ---------------------------------------------------------------------------------------------

fn a_node_label_change_moves_its_endpoints_between_localities(protocol: XdsProtocol) {
    let mut world = World::new();
    // Two nodes of their own, so relabelling one moves exactly one backend.
    world.api.apply(node("node-x", EAST_B.region, EAST_B.zone));
    world.api.apply(node("node-y", EAST_C.region, EAST_C.zone));
    let x = world.add_on("node-x", "x");
    let y = world.add_on("node-y", "y");
    let (px, py) = (world.port(x), world.port(y));
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-relabel", EAST_B);
    let addr = envoy.listener_addr();
    wait_hosts(
        &envoy,
        &expect(&[(px, 0, EAST_B, "HEALTHY"), (py, 1, EAST_C, "HEALTHY")]),
        PROPAGATION,
        "initial",
    );
    assert!(traffic::send(addr, HOST, 20, EVERY).all("x"));

    // node-y moves to the client's zone: y joins priority 0.
    world.api.apply(node("node-y", EAST_B.region, EAST_B.zone));
    wait_hosts(
        &envoy,
        &expect(&[(px, 0, EAST_B, "HEALTHY"), (py, 0, EAST_B, "HEALTHY")]),
        PROPAGATION,
        "node-y relabelled to us-east1-b",
    );
    let t = traffic::send(addr, HOST, 40, Duration::from_millis(5));
    println!("both in us-east1-b: {t}");
    assert!(
        t.count("x") > 0 && t.count("y") > 0 && t.failures == 0,
        "{t}"
    );

    // node-x moves to the other region: x drops to the last priority, traffic stays on y.
    world.api.apply(node("node-x", WEST_A.region, WEST_A.zone));
    wait_hosts(
        &envoy,
        &expect(&[(px, 1, WEST_A, "HEALTHY"), (py, 0, EAST_B, "HEALTHY")]),
        PROPAGATION,
        "node-x relabelled to us-west1-a",
    );
    let t = traffic::send(addr, HOST, 20, EVERY);
    assert!(t.all("y"), "{t}");
    let hosts = envoy.hosts(CLUSTER);
    let hx = hosts.iter().find(|h| h.port == px).unwrap();
    assert_eq!(hx.region, WEST_A.region);
}

// 5 ---------------------------------------------------------------------------------------------

fn a_relist_after_410_gone_replaces_state_exactly_without_dropping_endpoints(
    protocol: XdsProtocol,
) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let b1 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-relist", EAST_B);
    let initial = expect(&[
        (world.port(b0), 0, EAST_B, "HEALTHY"),
        (world.port(b1), 0, EAST_B, "HEALTHY"),
        (world.port(c0), 1, EAST_C, "HEALTHY"),
    ]);
    wait_hosts(&envoy, &initial, PROPAGATION, "initial");
    let watches = world.api.open_watches();
    assert!(watches >= 5, "expected 5 open watches, got {watches}");

    // A. Compaction while everything runs: every watch gets 410 and relists the same state. That
    //    must not change (or re-push) anything.
    let eds_version = envoy.eds_version(CLUSTER);
    let eds_updates = envoy.stat_u64(&format!("cluster.{CLUSTER}.update_success"));
    world.api.clear_requests();
    world.api.expire_history();
    let relisted = e2e::poll(RECOVERY, Duration::from_millis(50), || {
        (world.lists_of("endpointslices") >= 1
            && world.lists_of("services") >= 1
            && world.lists_of("nodes") >= 1)
            .then_some(())
    });
    assert!(
        relisted.is_some(),
        "no relist after 410: {:?}",
        world.api.requests()
    );
    assert!(server.wait_for_log("relisted", RECOVERY));
    std::thread::sleep(Duration::from_millis(700)); // debounce cap + push
    assert_eq!(summary(&envoy.hosts(CLUSTER)), initial);
    assert_eq!(
        envoy.eds_version(CLUSTER),
        eds_version,
        "a relist of unchanged objects re-pushed EDS"
    );
    assert_eq!(
        envoy.stat_u64(&format!("cluster.{CLUSTER}.update_success")),
        eds_updates
    );
    println!(
        "410 while running: relisted (LISTs: endpointslices {}, services {}, nodes {}, pods {}), nothing re-pushed",
        world.lists_of("endpointslices"),
        world.lists_of("services"),
        world.lists_of("nodes"),
        world.lists_of("pods")
    );

    // B. Changes the watches never see as events: made while the API server is down, then history
    //    is compacted, so the reconnecting watches get 410 and must relist. b0 is untouched and must
    //    never leave Envoy; traffic must not fail.
    let must_stay = world.ports(&[b0]);
    let stop = AtomicBool::new(false);
    let missing = Mutex::new(Vec::new());
    let tally = std::thread::scope(|s| {
        let watcher = s.spawn(|| traffic_and_watch_hosts(&envoy, &must_stay, &stop, &missing));
        std::thread::sleep(Duration::from_millis(300));
        world.api.stop();
        world.api.clear_requests();
        world.delete_slice(b1);
        let b2 = world.add(EAST_B);
        world.set_ready(c0, false);
        world.api.expire_history();
        world.api.restart();
        let want = expect(&[
            (world.port(b0), 0, EAST_B, "HEALTHY"),
            (world.port(b2), 0, EAST_B, "HEALTHY"),
            (world.port(c0), 1, EAST_C, "UNHEALTHY"),
        ]);
        wait_hosts(&envoy, &want, RECOVERY, "state after outage + 410 relist");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let tally = watcher.join().unwrap();
        assert_eq!(summary(&envoy.hosts(CLUSTER)), want, "state drifted");
        tally
    });
    let requests = world.api.requests();
    let gone_watches = requests
        .iter()
        .filter(|r| r.is_watch_of("endpointslices"))
        .count();
    println!(
        "outage + compaction: {} endpointslices LISTs and {gone_watches} watches after restart; traffic during it: {tally}",
        world.lists_of("endpointslices")
    );
    assert!(
        world.lists_of("endpointslices") >= 1,
        "EndpointSlices were not relisted: {requests:?}"
    );
    let missing = missing.into_inner().unwrap();
    assert!(
        missing.is_empty(),
        "b0 left Envoy during the relist {} times, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(tally.failures, 0, "{tally}");
    assert!(tally.total() > 10, "{tally}");
}

// 6 ---------------------------------------------------------------------------------------------

fn api_server_outage_keeps_envoy_routing_and_changes_made_meanwhile_arrive(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let b1 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-outage", EAST_B);
    let before = expect(&[
        (world.port(b0), 0, EAST_B, "HEALTHY"),
        (world.port(b1), 0, EAST_B, "HEALTHY"),
        (world.port(c0), 1, EAST_C, "HEALTHY"),
    ]);
    wait_hosts(&envoy, &before, PROPAGATION, "initial");
    let errors_before = server.log_lines_with("watch error").len();

    let must_stay = world.ports(&[b0, b1, c0]);
    let stop = AtomicBool::new(false);
    let missing = Mutex::new(Vec::new());
    let (during, b2) = std::thread::scope(|s| {
        let watcher = s.spawn(|| traffic_and_watch_hosts(&envoy, &must_stay, &stop, &missing));
        std::thread::sleep(Duration::from_millis(300));
        world.api.clear_requests();
        world.api.stop();
        let down = Instant::now();
        // Changes Envoy cannot hear about yet.
        world.delete_slice(b1);
        let b2 = world.add(EAST_B);
        world.set_ready(c0, false);
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            summary(&envoy.hosts(CLUSTER)),
            before,
            "Envoy's endpoints changed while the API server was down"
        );
        stop.store(true, Ordering::SeqCst);
        let tally = watcher.join().unwrap();
        println!(
            "API server down {} ms; traffic meanwhile: {tally}",
            down.elapsed().as_millis()
        );
        (tally, b2)
    });
    let errors = server.log_lines_with("watch error");
    println!(
        "watch errors logged during the outage: {}; e.g. {}",
        errors.len() - errors_before,
        errors.last().map(String::as_str).unwrap_or("")
    );
    assert!(
        errors.len() > errors_before,
        "no watch error logged during the outage"
    );
    assert_eq!(during.failures, 0, "{during}");
    assert!(during.all(EAST_B.zone), "{during}");
    assert!(missing.into_inner().unwrap().is_empty());

    let t0 = Instant::now();
    world.api.restart();
    let after = expect(&[
        (world.port(b0), 0, EAST_B, "HEALTHY"),
        (world.port(b2), 0, EAST_B, "HEALTHY"),
        (world.port(c0), 1, EAST_C, "UNHEALTHY"),
    ]);
    wait_hosts(&envoy, &after, RECOVERY, "changes made during the outage");
    println!(
        "after restart: changes in Envoy after {} ms; endpointslices LISTs since the outage: {} (0 = watches resumed)",
        t0.elapsed().as_millis(),
        world.lists_of("endpointslices")
    );
    let t = traffic::send(envoy.listener_addr(), HOST, 30, Duration::from_millis(5));
    assert!(t.all(EAST_B.zone), "{t}");
    assert!(
        world.members[b2].backend.requests() > 0,
        "b2 got no traffic"
    );
    // Still live after the outage: a new change arrives promptly.
    world.set_ready(c0, true);
    wait_hosts(
        &envoy,
        &expect(&[
            (world.port(b0), 0, EAST_B, "HEALTHY"),
            (world.port(b2), 0, EAST_B, "HEALTHY"),
            (world.port(c0), 1, EAST_C, "HEALTHY"),
        ]),
        PROPAGATION,
        "a change after the outage",
    );
}

// 7 ---------------------------------------------------------------------------------------------

fn a_client_without_locality_is_located_through_its_pod_and_node(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    let w0 = world.add(WEST_A);
    let (pb, pc, pw) = (world.port(b0), world.port(c0), world.port(w0));
    world
        .api
        .apply(pod("client-0", &node_name(EAST_C), "10.244.1.7"));
    world
        .api
        .apply(pod("client-1", &node_name(WEST_A), "10.244.2.9"));
    let server = world.server();

    // By pod name + namespace: the Pod runs on the us-east1-c Node.
    let by_name = serving(Envoy::start(
        EnvoyOptions::without_locality("client-by-name", server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol)
            .metadata("pod_name", "client-0"),
    ));
    wait_hosts(
        &by_name,
        &expect(&[
            (pc, 0, EAST_C, "HEALTHY"),
            (pb, 1, EAST_B, "HEALTHY"),
            (pw, 2, WEST_A, "HEALTHY"),
        ]),
        PROPAGATION,
        "client-0 located in us-east1-c",
    );
    let t = traffic::send(by_name.listener_addr(), HOST, 20, EVERY);
    assert!(t.all(EAST_C.zone), "{t}");
    let connected = server.log_lines_with("node=client-by-name");
    println!("{}", connected.first().map(String::as_str).unwrap_or(""));
    assert!(
        connected.iter().any(|l| l.contains("us-east1-c")),
        "{connected:?}"
    );

    // By pod IP: the Pod runs on the us-west1-a Node.
    let by_ip = serving(Envoy::start(
        EnvoyOptions::without_locality("client-by-ip", server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol)
            .metadata("pod_ip", "10.244.2.9"),
    ));
    wait_hosts(
        &by_ip,
        &expect(&[
            (pw, 0, WEST_A, "HEALTHY"),
            (pb, 1, EAST_B, "HEALTHY"),
            (pc, 1, EAST_C, "HEALTHY"),
        ]),
        PROPAGATION,
        "client-1 located in us-west1-a by its IP",
    );
    let t = traffic::send(by_ip.listener_addr(), HOST, 20, EVERY);
    assert!(t.all(WEST_A.zone), "{t}");

    // A locality in the bootstrap wins over the pod.
    let explicit = serving(Envoy::start(
        options(&server, protocol, "client-explicit", EAST_B).metadata("pod_name", "client-0"),
    ));
    let p0: BTreeSet<u16> = explicit
        .hosts(CLUSTER)
        .iter()
        .filter(|h| h.priority == 0)
        .map(|h| h.port)
        .collect();
    assert_eq!(p0, BTreeSet::from([pb]));
}

/// An Envoy that connects before the server's Pod watch has seen its Pod (the watch lags behind a
/// freshly started pod) must get its own zone first once the Pod shows up.
/// Pod changes publish no snapshot, so the stream re-checks a pending lookup on its own (every 250 ms).
fn a_client_whose_pod_appears_after_it_connected_gets_its_locality(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    let (pb, pc) = (world.port(b0), world.port(c0));
    let server = world.server();
    let envoy = serving(Envoy::start(
        EnvoyOptions::without_locality("client-late-pod", server.addr())
            .namespace(NAMESPACE)
            .protocol(protocol)
            .metadata("pod_name", "client-late"),
    ));
    // Not located yet: no locality matches, every endpoint shares priority 0.
    wait_hosts(
        &envoy,
        &expect(&[(pb, 0, EAST_B, "HEALTHY"), (pc, 0, EAST_C, "HEALTHY")]),
        PROPAGATION,
        "before the Pod is known",
    );
    world
        .api
        .apply(pod("client-late", &node_name(EAST_C), "10.244.1.8"));
    wait_hosts(
        &envoy,
        &expect(&[(pc, 0, EAST_C, "HEALTHY"), (pb, 1, EAST_B, "HEALTHY")]),
        PROPAGATION,
        "after the Pod appeared",
    );
}

// 8 ---------------------------------------------------------------------------------------------

fn a_failover_policy_custom_resource_takes_effect_and_is_accepted(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let w0 = world.add(WEST_A);
    let e0 = world.add(EU_A);
    let (pb, pw, pe) = (world.port(b0), world.port(w0), world.port(e0));
    let server = world.server();
    let envoy = envoy(&server, protocol, "client-policy", EAST_B);
    // Default policy: own zone first, every other region together last.
    wait_hosts(
        &envoy,
        &expect(&[
            (pb, 0, EAST_B, "HEALTHY"),
            (pw, 1, WEST_A, "HEALTHY"),
            (pe, 1, EU_A, "HEALTHY"),
        ]),
        PROPAGATION,
        "default policy",
    );
    let cluster = cluster_config(&envoy);
    assert_eq!(panic_threshold(&cluster), 0.0, "{cluster}");
    let default_5xx = cluster["outlier_detection"]["consecutive_5xx"].clone();

    let t0 = Instant::now();
    world.apply_policy(
        "echo",
        json!({
            "service": SERVICE,
            "failover": [{"from": "us-east1", "to": "eu-west1"}],
            "panicThreshold": 25,
            "outlierDetection": {"consecutive5xx": 7, "interval": "2s"},
        }),
    );
    wait_hosts(
        &envoy,
        &expect(&[
            (pb, 0, EAST_B, "HEALTHY"),
            (pe, 1, EU_A, "HEALTHY"),
            (pw, 2, WEST_A, "HEALTHY"),
        ]),
        PROPAGATION,
        "failover rule us-east1 -> eu-west1",
    );
    let cluster = e2e::poll(PROPAGATION, Duration::from_millis(50), || {
        let c = cluster_config(&envoy);
        (panic_threshold(&c) == 25.0).then_some(c)
    })
    .unwrap_or_else(|| panic!("panic threshold not 25: {}", cluster_config(&envoy)));
    println!(
        "policy in Envoy after {} ms: outlier_detection {} common_lb_config {}",
        t0.elapsed().as_millis(),
        cluster["outlier_detection"],
        cluster["common_lb_config"]
    );
    assert_eq!(cluster["outlier_detection"]["consecutive_5xx"], 7);
    assert_eq!(cluster["outlier_detection"]["interval"], "2s");
    assert_ne!(default_5xx, json!(7));
    let cond = world.wait_accepted("echo", "True");
    println!("status condition: {cond}");
    assert_eq!(cond["reason"], "Accepted");

    // The rule moves real traffic: with us-east1 gone, all of it goes to eu-west1, none to us-west1.
    world.set_ready(b0, false);
    let sw = traffic::until_served_by(
        envoy.listener_addr(),
        HOST,
        EU_A.zone,
        Instant::now(),
        EVERY,
        PROPAGATION,
        40,
    );
    println!("us-east1 not ready: {}", sw.tally);
    assert!(sw.after.all(EU_A.zone), "{}", sw.after);
    assert_eq!(sw.tally.count(WEST_A.zone), 0, "{}", sw.tally);

    // Editing the object takes effect and is accepted again for the new generation.
    world.apply_policy(
        "echo",
        json!({"service": SERVICE, "failover": [{"from": "us-east1", "to": "us-west1"}], "panicThreshold": 10}),
    );
    wait_hosts(
        &envoy,
        &expect(&[
            (pb, 0, EAST_B, "UNHEALTHY"),
            (pw, 1, WEST_A, "HEALTHY"),
            (pe, 2, EU_A, "HEALTHY"),
        ]),
        PROPAGATION,
        "failover rule edited to us-east1 -> us-west1",
    );
    world.wait_accepted("echo", "True");
    assert!(
        e2e::poll(PROPAGATION, Duration::from_millis(50), || {
            (panic_threshold(&cluster_config(&envoy)) == 10.0).then_some(())
        })
        .is_some(),
        "{}",
        cluster_config(&envoy)
    );

    // Deleting it restores the defaults.
    world
        .api
        .delete(POLICY_API, "FailoverPolicy", Some(NAMESPACE), "echo");
    wait_hosts(
        &envoy,
        &expect(&[
            (pb, 0, EAST_B, "UNHEALTHY"),
            (pw, 1, WEST_A, "HEALTHY"),
            (pe, 1, EU_A, "HEALTHY"),
        ]),
        PROPAGATION,
        "policy deleted",
    );
    assert!(
        e2e::poll(PROPAGATION, Duration::from_millis(50), || {
            (panic_threshold(&cluster_config(&envoy)) == 0.0).then_some(())
        })
        .is_some(),
        "{}",
        cluster_config(&envoy)
    );
}

// 9 ---------------------------------------------------------------------------------------------

fn malformed_policies_and_endpoint_slices_are_rejected_alone(protocol: XdsProtocol) {
    let mut world = World::new();
    let b0 = world.add(EAST_B);
    let b1 = world.add(EAST_B);
    let c0 = world.add(EAST_C);
    // A slice with one bad address next to a good endpoint, and a slice with only a bad address.
    let mut bad = endpoint(&node_name(EAST_B), true);
    bad["addresses"] = json!(["not-an-ip"]);
    world.api.apply(endpoint_slice(
        &world.members[b1].slice,
        world.port(b1),
        vec![bad, endpoint(&node_name(EAST_B), true)],
    ));
    let mut worse = endpoint(&node_name(EAST_C), true);
    worse["addresses"] = json!(["300.1.2.3"]);
    world
        .api
        .apply(endpoint_slice("echo-garbage", 9, vec![worse]));
    // A valid namespace-wide policy, and two broken ones for the service.
    world.apply_policy("namespace-wide", json!({"panicThreshold": 30}));
    world.apply_policy(
        "typo",
        json!({"service": SERVICE, "failoverPriorty": [REGION_LABEL]}),
    );
    world.apply_policy(
        "out-of-range",
        json!({"service": "other", "panicThreshold": 150}),
    );
    world.apply_policy(
        "wrong-type",
        json!({"service": "third", "panicThreshold": "high"}),
    );

    let server = world.server();
    let envoy = envoy(&server, protocol, "client-malformed", EAST_B);
    wait_hosts(
        &envoy,
        &expect(&[
            (world.port(b0), 0, EAST_B, "HEALTHY"),
            (world.port(b1), 0, EAST_B, "HEALTHY"),
            (world.port(c0), 1, EAST_C, "HEALTHY"),
        ]),
        PROPAGATION,
        "the good endpoints",
    );
    let skipped = server.log_lines_with("skipped part of a Kubernetes object");
    println!("{}", skipped.join("\n"));
    assert!(
        skipped.iter().any(|l| l.contains("not-an-ip")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|l| l.contains("300.1.2.3")),
        "{skipped:?}"
    );
    let t = traffic::send(envoy.listener_addr(), HOST, 20, EVERY);
    assert!(t.all(EAST_B.zone), "{t}");

    let typo = world.wait_accepted("typo", "False");
    let range = world.wait_accepted("out-of-range", "False");
    println!("typo: {typo}\nout-of-range: {range}");
    assert_eq!(typo["reason"], "Invalid");
    assert!(
        typo["message"]
            .as_str()
            .is_some_and(|m| m.contains("failoverPriorty")),
        "{typo}"
    );
    let wrong = world.wait_accepted("wrong-type", "False");
    println!("wrong-type: {wrong}");
    assert_eq!(wrong["reason"], "Invalid");
    assert_eq!(range["reason"], "Invalid");
    assert!(
        range["message"]
            .as_str()
            .is_some_and(|m| m.contains("panicThreshold")),
        "{range}"
    );
    // The valid one applies (the broken service policy does not shadow it).
    world.wait_accepted("namespace-wide", "True");
    assert_eq!(panic_threshold(&cluster_config(&envoy)), 30.0);
    assert!(!server.log_lines_with("FailoverPolicy rejected").is_empty());

    // Fixing the broken one: accepted, and as the more specific policy it now wins.
    world.apply_policy(
        "typo",
        json!({"service": SERVICE, "failoverPriority": [REGION_LABEL], "panicThreshold": 40}),
    );
    world.wait_accepted("typo", "True");
    assert!(
        e2e::poll(PROPAGATION, Duration::from_millis(50), || {
            (panic_threshold(&cluster_config(&envoy)) == 40.0).then_some(())
        })
        .is_some(),
        "{}",
        cluster_config(&envoy)
    );
    // failoverPriority [region]: both us-east1 zones share priority 0 now.
    wait_hosts(
        &envoy,
        &expect(&[
            (world.port(b0), 0, EAST_B, "HEALTHY"),
            (world.port(b1), 0, EAST_B, "HEALTHY"),
            (world.port(c0), 0, EAST_C, "HEALTHY"),
        ]),
        PROPAGATION,
        "fixed policy: region-only priorities",
    );

    // A later bad address in an existing slice: that address is skipped, the rest stays.
    let mut bad = endpoint(&node_name(EAST_C), true);
    bad["addresses"] = json!(["127.0.0.1.5"]);
    world.api.apply(endpoint_slice(
        &world.members[c0].slice,
        world.port(c0),
        vec![endpoint(&node_name(EAST_C), true), bad],
    ));
    assert!(server.wait_for_log("127.0.0.1.5", PROPAGATION));
    let t = traffic::send(envoy.listener_addr(), HOST, 20, EVERY);
    assert_eq!(t.failures, 0, "{t}");
    assert_eq!(envoy.hosts(CLUSTER).len(), 3);
}

type Published = Option<std::sync::Arc<xds_core::model::Registry>>;

/// `(address, identity or "-")` of echo.demo's endpoints in a published registry.
fn echo_identities(published: &Published) -> Vec<(String, String)> {
    let Some(registry) = published else {
        return Vec::new();
    };
    registry
        .services
        .values()
        .filter(|s| s.id.name == SERVICE)
        .flat_map(|s| &s.endpoints)
        .map(|e| {
            let id = e.identity.as_ref().map_or("-", |i| i.as_str());
            (e.address.to_string(), id.to_string())
        })
        .collect()
}

/// [`echo_identities`] once the published registry satisfies `want`; panics with `what` otherwise.
async fn identities(
    rx: &mut tokio::sync::watch::Receiver<Published>,
    what: &str,
    want: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let found = tokio::time::timeout(PROPAGATION, rx.wait_for(|r| want(&echo_identities(r))))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|r| echo_identities(&r));
    found.unwrap_or_else(|| {
        panic!(
            "{what}: not published; have {:?}",
            echo_identities(&rx.borrow())
        )
    })
}

/// Endpoint identities from the real kube client: an EndpointSlice endpoint's `targetRef` Pod's
/// service account in the configured trust domain; an endpoint whose Pod is not known yet has none
/// until the Pod arrives; a Pod deleted and re-created under another account changes it. Drives the
/// source itself (no server binary, no Envoy): the registry it publishes is what everything reads.
#[tokio::test]
async fn endpoint_identities_are_their_pods_service_accounts_and_follow_pod_changes() {
    use xds_server::sources::kubernetes::{self, convert::ConvertSettings, KubeSourceSettings};

    let api = ApiServer::start();
    let client = crate::kube_client::client(&api).await;
    let node = node_name(EAST_B);
    api.apply(service(None));
    let with_account = |name: &str, ip: &str, account: Option<&str>| {
        let mut p = pod(name, &node, ip);
        if let Some(account) = account {
            p["spec"]["serviceAccountName"] = json!(account);
        }
        p
    };
    api.apply(with_account("echo-a", "10.0.0.1", Some("echo")));
    let targeted = |ip: &str, pod_name: &str| {
        let mut e = endpoint(&node, true);
        e["addresses"] = json!([ip]);
        e["targetRef"] = json!({"kind": "Pod", "namespace": NAMESPACE, "name": pod_name});
        e
    };
    // echo-b's Pod does not exist yet.
    api.apply(endpoint_slice(
        "echo-pods",
        8080,
        vec![
            targeted("10.0.0.1", "echo-a"),
            targeted("10.0.0.2", "echo-b"),
        ],
    ));

    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let settings = KubeSourceSettings {
        convert: ConvertSettings {
            trust_domain: "bank.test".into(),
            ..ConvertSettings::default()
        },
    };
    let _locator = kubernetes::start(client, settings, tx);
    let pair = |ip: &str, id: &str| (ip.to_string(), id.to_string());

    let first = identities(&mut rx, "echo-a named, echo-b unknown", |e| e.len() == 2).await;
    assert_eq!(
        first,
        [
            pair("10.0.0.1", "spiffe://bank.test/ns/demo/sa/echo"),
            pair("10.0.0.2", "-"),
        ]
    );

    api.apply(with_account("echo-b", "10.0.0.2", Some("echo-canary")));
    identities(&mut rx, "echo-b's Pod arrives", |e| {
        e.get(1)
            .is_some_and(|(_, id)| id == "spiffe://bank.test/ns/demo/sa/echo-canary")
    })
    .await;

    api.delete("v1", "Pod", Some(NAMESPACE), "echo-b");
    identities(&mut rx, "echo-b's Pod is gone", |e| {
        e.get(1).is_some_and(|(_, id)| id == "-")
    })
    .await;

    // Re-created without a service account: the namespace's `default`.
    api.apply(with_account("echo-b", "10.0.0.2", None));
    let last = identities(&mut rx, "echo-b back as default", |e| {
        e.get(1)
            .is_some_and(|(_, id)| id == "spiffe://bank.test/ns/demo/sa/default")
    })
    .await;
    assert_eq!(
        last[0],
        pair("10.0.0.1", "spiffe://bank.test/ns/demo/sa/echo")
    );
}

/// Several clusters: each cluster's endpoints get their Pods' service accounts, all in the one
/// trust domain (a service account is the same workload whichever cluster runs it).
#[tokio::test]
async fn every_clusters_endpoints_are_named_in_the_one_trust_domain() {
    use xds_server::sources::kubernetes::clusters::{self, Member};
    use xds_server::sources::kubernetes::{convert::ConvertSettings, KubeSourceSettings};

    let node = node_name(EAST_B);
    let (east, west) = (ApiServer::start(), ApiServer::start());
    let mut members = Vec::new();
    for (name, api, ip, account) in [
        ("east", &east, "10.1.0.1", "echo"),
        ("west", &west, "10.2.0.1", "echo-west"),
    ] {
        api.apply(service(None));
        let mut p = pod("echo-0", &node, ip);
        p["spec"]["serviceAccountName"] = json!(account);
        api.apply(p);
        let mut e = endpoint(&node, true);
        e["addresses"] = json!([ip]);
        e["targetRef"] = json!({"kind": "Pod", "namespace": NAMESPACE, "name": "echo-0"});
        api.apply(endpoint_slice("echo-pods", 8080, vec![e]));
        members.push(Member {
            spec: format!("{name}=").parse().unwrap(),
            client: crate::kube_client::client(api).await,
        });
    }
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let settings = KubeSourceSettings {
        convert: ConvertSettings {
            trust_domain: "bank.test".into(),
            ..ConvertSettings::default()
        },
    };
    let gateways = clusters::gateways::fixed(Default::default());
    let _locator = clusters::start(members, settings, gateways, None, tx);
    let both = identities(&mut rx, "both clusters' endpoints", |e| e.len() == 2).await;
    assert_eq!(
        both,
        [
            (
                "10.1.0.1".to_string(),
                "spiffe://bank.test/ns/demo/sa/echo".to_string()
            ),
            (
                "10.2.0.1".to_string(),
                "spiffe://bank.test/ns/demo/sa/echo-west".to_string()
            ),
        ]
    );
}
