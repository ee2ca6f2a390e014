//! The translator side of multi-cluster failover with real Envoy, from the endpoints file:
//!
//! * backups: `checkout` backs up to `checkout-dr`; when every `checkout` backend is gone (killed, or
//!   marked not ready) traffic moves to `checkout-dr`, and comes back when `checkout` is back;
//! * split horizon: a client on network n1 gets n2's endpoints as ONE host at n2's gateway with
//!   weight 4 (its four endpoints, in two regions, behind one address), and when n1's endpoints die
//!   its traffic goes through the gateway; a client without a network gets the endpoints themselves.

use std::time::{Duration, Instant};

use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::modes::XdsProtocol;
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use e2e::traffic::{self, Switch};
use serde_json::Value as Json;

e2e::both_protocols!(
    backup_service_takes_over_when_the_primary_is_gone_and_hands_back,
    remote_network_is_one_weighted_gateway_host_and_takes_over,
);

const EVERY: Duration = Duration::from_millis(10);
const REGION: &str = "us-east1";
const ZONE: &str = "us-east1-b";
const OTHER_ZONE: &str = "us-east1-c";
/// Failed requests a switch may cost (the route's retries should make it 0).
const MAX_FAILED: usize = 2;

fn report(what: &str, sw: &Switch, to: &str) {
    println!(
        "{what}: moved to {to} in {} ms, {} failed requests; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(
        sw.switched(),
        "{what}: traffic never reached {to}: {}",
        sw.tally
    );
    assert!(
        sw.after.all(to),
        "{what}: traffic did not stay on {to}: {}",
        sw.after
    );
}

fn envoy(server: &XdsServer, node: &str, protocol: XdsProtocol, host: &str) -> Envoy {
    envoy_with(
        EnvoyOptions::new(node, REGION, ZONE, server.addr()),
        protocol,
        host,
    )
}

fn envoy_with(opts: EnvoyOptions, protocol: XdsProtocol, host: &str) -> Envoy {
    let envoy = Envoy::start(opts.namespace("shop").protocol(protocol));
    assert!(
        envoy.wait_serving(host, Duration::from_secs(20)),
        "Envoy did not serve {host}; last answer: {:?}",
        traffic::request(envoy.listener_addr(), host)
    );
    envoy
}

/// `(address, port, priority, weight, eds health)` of every host of `cluster`, sorted.
fn hosts(envoy: &Envoy, cluster: &str) -> Vec<(String, u16, u32, u64, String)> {
    let json: Json = envoy.clusters_json();
    let mut out: Vec<_> = json["cluster_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str() == Some(cluster))
        .flat_map(|c| c["host_statuses"].as_array().cloned().unwrap_or_default())
        .map(|h| {
            let sa = &h["address"]["socket_address"];
            (
                sa["address"].as_str().unwrap_or_default().to_string(),
                sa["port_value"].as_u64().unwrap_or(0) as u16,
                h["priority"].as_u64().unwrap_or(0) as u32,
                h["weight"].as_u64().unwrap_or(0),
                h["health_status"]["eds_health_status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Polls until `check` holds for the hosts Envoy has for `cluster` (EDS pushes are asynchronous).
fn wait_hosts(
    envoy: &Envoy,
    cluster: &str,
    check: impl Fn(&[(String, u16, u32, u64, String)]) -> bool,
) -> Vec<(String, u16, u32, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = hosts(envoy, cluster);
        if check(&h) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- backups ----

struct BackupScene {
    primary: Vec<Backend>,
    backup: Vec<Backend>,
    primary_ready: bool,
    dir: TempDir,
}

impl BackupScene {
    fn yaml(&self) -> String {
        let endpoints = |backends: &[Backend], zone: &str, ready: bool| -> String {
            backends
                .iter()
                .map(|b| {
                    format!(
                        "  - {{address: 127.0.0.1, port: {}, locality: {{region: {REGION}, zone: {zone}}}, \
                         ready: {ready}}}\n",
                        b.port()
                    )
                })
                .collect()
        };
        format!(
            "services:\n\
             - name: checkout\n  namespace: shop\n  ports: [{{name: http, port: 8080}}]\n  endpoints:\n{}\
             - name: checkout-dr\n  namespace: shop\n  ports: [{{name: http, port: 9080}}]\n  endpoints:\n{}",
            endpoints(&self.primary, ZONE, self.primary_ready),
            // The backup runs in the client's zone: it still ranks after every level of the primary.
            endpoints(&self.backup, ZONE, true),
        )
    }

    fn write(&self) {
        let tmp = self.dir.join(".endpoints.yaml.tmp");
        std::fs::write(&tmp, self.yaml()).unwrap();
        std::fs::rename(&tmp, self.dir.join("endpoints.yaml")).unwrap();
    }
}

const BACKUP_POLICY: &str = "\
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec:
  service: checkout
  backups: [{service: checkout-dr}]
  # short ejections, so revived primary backends are tried again within a second
  outlierDetection: {consecutive5xx: 1, consecutiveGatewayFailure: 1, interval: 100ms, baseEjectionTime: 1s}
";

fn backup_service_takes_over_when_the_primary_is_gone_and_hands_back(protocol: XdsProtocol) {
    let dir = TempDir::new("backups");
    let scene = BackupScene {
        primary: (0..2)
            .map(|i| Backend::start(&format!("primary-{i}"), "primary"))
            .collect(),
        backup: (0..2)
            .map(|i| Backend::start(&format!("backup-{i}"), "backup"))
            .collect(),
        primary_ready: true,
        dir,
    };
    let mut scene = scene;
    scene.write();
    let policies = scene.dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("checkout.yaml"), BACKUP_POLICY).unwrap();
    let server =
        XdsServer::start(ServerArgs::new(scene.dir.join("endpoints.yaml")).policies(&policies));
    let envoy = envoy(&server, "backup-client", protocol, "checkout.shop");
    let addr = envoy.listener_addr();

    // The backup's endpoints are the lowest priority, on their own port.
    let got = wait_hosts(&envoy, "checkout.shop:8080", |h| h.len() == 4);
    let priority_of = |port: u16| got.iter().find(|h| h.1 == port).map(|h| h.2);
    for b in &scene.primary {
        assert_eq!(priority_of(b.port()), Some(0), "{got:?}");
    }
    for b in &scene.backup {
        assert_eq!(priority_of(b.port()), Some(1), "{got:?}");
    }
    let steady = traffic::send(addr, "checkout.shop", 40, EVERY);
    assert!(
        steady.all("primary"),
        "the backup took traffic early: {steady}"
    );

    // Every primary backend dies (the file still lists them ready): outlier detection + retries.
    let t0 = Instant::now();
    for b in scene.primary.iter_mut() {
        b.stop();
    }
    let sw = traffic::until_served_by(
        addr,
        "checkout.shop",
        "backup",
        t0,
        EVERY,
        Duration::from_secs(10),
        100,
    );
    report("primary killed", &sw, "backup");
    assert!(
        sw.tally.failures <= MAX_FAILED,
        "{} failed requests: {}",
        sw.tally.failures,
        sw.tally
    );

    // Back: once the ejection expires, traffic returns to the primary.
    let t0 = Instant::now();
    for b in scene.primary.iter_mut() {
        b.restart();
    }
    let sw = traffic::until_served_by(
        addr,
        "checkout.shop",
        "primary",
        t0,
        EVERY,
        Duration::from_secs(15),
        100,
    );
    println!(
        "primary restarted: first answer from it after {} ms, {} failed requests; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(
        sw.switched(),
        "traffic never came back to the primary: {}",
        sw.tally
    );
    assert!(sw.tally.failures <= MAX_FAILED, "{}", sw.tally);
    // Each backend's ejection ends on its own: until both are back, Envoy spills part of the
    // traffic (P0 half healthy → 70/30). Once none is ejected, everything is on the primary again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoy
        .hosts("checkout.shop:8080")
        .iter()
        .any(|h| h.failed_outlier_check)
    {
        assert!(Instant::now() < deadline, "primary backends stay ejected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = traffic::send(addr, "checkout.shop", 50, EVERY);
    assert!(back.all("primary"), "{back}");

    // A planned drain: the primary marked not ready in the endpoints file.
    let t0 = Instant::now();
    scene.primary_ready = false;
    scene.write();
    let sw = traffic::until_served_by(
        addr,
        "checkout.shop",
        "backup",
        t0,
        EVERY,
        Duration::from_secs(10),
        50,
    );
    report("primary marked not ready", &sw, "backup");
    assert_eq!(
        sw.tally.failures, 0,
        "a planned drain must cost nothing: {}",
        sw.tally
    );

    let t0 = Instant::now();
    scene.primary_ready = true;
    scene.write();
    let sw = traffic::until_served_by(
        addr,
        "checkout.shop",
        "primary",
        t0,
        EVERY,
        Duration::from_secs(10),
        50,
    );
    report("primary ready again", &sw, "primary");
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
}

// ---- split horizon ----

/// n2's endpoints in the client's region: never contacted directly by an n1 client, so they need
/// not exist.
const N2_ENDPOINTS: [&str; 3] = ["10.255.0.1", "10.255.0.2", "10.255.0.3"];
/// One more n2 endpoint, in another region: a second level behind the same gateway address.
const N2_FAR: &str = "10.255.1.1";

fn remote_network_is_one_weighted_gateway_host_and_takes_over(protocol: XdsProtocol) {
    let dir = TempDir::new("split-horizon");
    let mut local: Vec<Backend> = (0..2)
        .map(|i| Backend::start(&format!("n1-{i}"), "n1"))
        .collect();
    // The east-west gateway of n2: a backend that answers as "gateway".
    let gateway = Backend::start("n2-gateway", "gateway");
    let mut yaml = String::from(
        "services:\n- name: echo\n  namespace: shop\n  ports: [{name: http, port: 8080}]\n  endpoints:\n",
    );
    for b in &local {
        yaml.push_str(&format!(
            "  - {{address: 127.0.0.1, port: {}, locality: {{region: {REGION}, zone: {ZONE}}}, \
             labels: {{topology.istio.io/network: n1}}}}\n",
            b.port()
        ));
    }
    for ip in N2_ENDPOINTS {
        yaml.push_str(&format!(
            "  - {{address: {ip}, locality: {{region: {REGION}, zone: {OTHER_ZONE}}}, \
             labels: {{topology.istio.io/network: n2}}}}\n"
        ));
    }
    yaml.push_str(&format!(
        "  - {{address: {N2_FAR}, locality: {{region: us-west1, zone: us-west1-a}}, \
         labels: {{topology.istio.io/network: n2}}}}\n"
    ));
    yaml.push_str(&format!(
        "gateways:\n- {{network: n2, address: 127.0.0.1, port: {}}}\n",
        gateway.port()
    ));
    let path = dir.join("endpoints.yaml");
    std::fs::write(&path, yaml).unwrap();
    let server = XdsServer::start(ServerArgs::new(&path));

    let on_n1 = envoy_with(
        EnvoyOptions::new("n1-client", REGION, ZONE, server.addr())
            .label("topology.istio.io/network", "n1"),
        protocol,
        "echo.shop",
    );
    let flat = envoy(&server, "flat-client", protocol, "echo.shop");

    // n1's client: its own endpoints directly at P0, all four of n2's as ONE gateway host of weight
    // 4 at P1, where the best of them ranks (the far one too: Envoy keeps one host per address, so a
    // second copy at P2 would be dropped).
    let got = wait_hosts(&on_n1, "echo.shop:8080", |h| h.len() == 3 && h[2].3 == 4);
    let mut want: Vec<(String, u16, u32, u64, String)> = local
        .iter()
        .map(|b| {
            (
                "127.0.0.1".to_string(),
                b.port(),
                0,
                1,
                "HEALTHY".to_string(),
            )
        })
        .collect();
    want.push((
        "127.0.0.1".to_string(),
        gateway.port(),
        1,
        4,
        "HEALTHY".to_string(),
    ));
    want.sort();
    assert_eq!(got, want, "the n1 client's hosts");
    // A client without a network: the six endpoints themselves.
    let got = wait_hosts(&flat, "echo.shop:8080", |h| h.len() == 6);
    let addresses: Vec<&str> = got.iter().map(|h| h.0.as_str()).collect();
    for ip in N2_ENDPOINTS.iter().chain([&N2_FAR]) {
        assert!(addresses.contains(ip), "{got:?}");
    }
    assert!(
        got.iter().all(|h| h.3 == 1),
        "no weights without a network: {got:?}"
    );

    let addr = on_n1.listener_addr();
    let steady = traffic::send(addr, "echo.shop", 30, EVERY);
    assert!(steady.all("n1"), "{steady}");

    // n1's endpoints die: the n1 client's traffic goes through n2's gateway.
    let t0 = Instant::now();
    for b in local.iter_mut() {
        b.stop();
    }
    let sw = traffic::until_served_by(
        addr,
        "echo.shop",
        "gateway",
        t0,
        EVERY,
        Duration::from_secs(10),
        50,
    );
    report("network n1's endpoints killed", &sw, "gateway");
    assert!(sw.tally.failures <= MAX_FAILED, "{}", sw.tally);
    assert!(gateway.requests() > 0);
}
