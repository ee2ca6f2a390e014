//! The admin API against a live server and real Envoys: the real `xdsctl` binary (status, config,
//! services, explain, policies, events, an unreachable server), Envoy's CSDS through the envoy-types
//! client, gRPC health and server reflection.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::envoy::Envoy;
use e2e::modes::XdsProtocol;
use e2e::server::XdsServer;
use e2e::topology::{Mesh, CLUSTER, EAST_B, EAST_C, HOST, WEST_A};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, NodeMatcher, StringMatcher,
};
use envoy_types::pb::envoy::service::status::v3::{
    client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
    ClientStatusRequest, ClientStatusResponse,
};
use prost::Message;
use serde_json::Value;
use xds_server::admin::proto::{admin_client::AdminClient, ListClientsRequest, SyncStatus};

e2e::both_protocols!(
    status_goes_from_not_sent_to_synced_and_is_stale_while_envoy_cannot_ack,
    a_nack_shows_as_nacked_with_envoys_error,
    explain_matches_the_priorities_and_load_envoy_uses,
    csds_reports_each_resource_of_each_node,
    events_show_the_connect_then_pushes_and_acks,
);

const WAIT: Duration = Duration::from_secs(15);
const EVERY: Duration = Duration::from_millis(50);
const TYPES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];

fn xdsctl_at(addr: &str, args: &[&str]) -> Output {
    Command::new(e2e::paths::xdsctl_bin())
        .args(["--admin-addr", addr])
        .args(args)
        .env_remove("XDS_ADMIN_ADDR")
        .stdin(Stdio::null())
        .output()
        .expect("run xdsctl")
}

/// The `xdsctl status -o json` entry of one node.
fn client_json(server: &XdsServer, node: &str) -> Option<Value> {
    server.xdsctl_json(&["status"])["clients"]
        .as_array()?
        .iter()
        .find(|c| c["node_id"] == node)
        .cloned()
}

/// Type short name → status, from a client's JSON; types never asked for are `NOT_SENT`.
fn statuses(client: &Value) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = TYPES
        .iter()
        .map(|t| (t.to_string(), "NOT_SENT".to_string()))
        .collect();
    for t in client["types"].as_array().into_iter().flatten() {
        out.insert(
            t["short_name"].as_str().unwrap().to_string(),
            t["status"].as_str().unwrap().to_string(),
        );
    }
    out
}

fn all_synced(s: &BTreeMap<String, String>) -> bool {
    s.values().all(|v| v == "SYNCED")
}

fn wait_statuses(
    server: &XdsServer,
    node: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let mut last = None;
    e2e::poll(WAIT, EVERY, || {
        let s = client_json(server, node).map(|c| statuses(&c));
        let hit = s.as_ref().is_some_and(&ok);
        last = s.clone();
        hit.then_some(())
    })
    .unwrap_or_else(|| panic!("{node}: never {what}; last statuses: {last:?}"));
    last.unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls ListClients over gRPC as fast as it answers, from before Envoy starts until the node is
/// synced (or [`WAIT`]), recording each type's distinct statuses in order.
fn record_statuses(
    admin: std::net::SocketAddr,
    node: String,
) -> std::thread::JoinHandle<BTreeMap<String, Vec<SyncStatus>>> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut client = AdminClient::connect(format!("http://{admin}"))
                .await
                .expect("connect to the admin API");
            let mut seen: BTreeMap<String, Vec<SyncStatus>> = BTreeMap::new();
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                let clients = client
                    .list_clients(ListClientsRequest {})
                    .await
                    .expect("ListClients")
                    .into_inner()
                    .clients;
                if let Some(c) = clients.iter().find(|c| c.node_id == node) {
                    for short in TYPES {
                        let status = c
                            .types
                            .iter()
                            .find(|t| t.short_name == short)
                            .map_or(SyncStatus::NotSent, |t| t.status());
                        let list = seen.entry(short.to_string()).or_default();
                        if list.last() != Some(&status) {
                            list.push(status);
                        }
                    }
                    if seen.values().all(|l| l.last() == Some(&SyncStatus::Synced)) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            seen
        })
    })
}

fn status_goes_from_not_sent_to_synced_and_is_stale_while_envoy_cannot_ack(protocol: XdsProtocol) {
    let mut mesh = Mesh::start(1).protocol(protocol);
    let server = &mesh.server;
    assert_eq!(server.xdsctl(&["status"]), "no Envoy connected\n");

    let node = "status-client";
    let recorder = record_statuses(server.admin_addr(), node.to_string());
    let envoy = Envoy::start(mesh.envoy_options(node, EAST_B));
    let synced = wait_statuses(server, node, "all SYNCED", all_synced);
    let seen = recorder.join().expect("recorder thread");
    println!("statuses seen while {node} started: {seen:?}");
    // Each type moves forward only: NOT_SENT → (STALE: sent, not ACKed yet) → SYNCED.
    let rank = |s: &SyncStatus| match s {
        SyncStatus::NotSent | SyncStatus::Unspecified => 0,
        SyncStatus::Stale => 1,
        SyncStatus::Synced => 2,
        SyncStatus::Nacked => 9,
    };
    for (kind, list) in &seen {
        assert!(
            list.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
            "{kind} went {list:?}"
        );
        assert_eq!(list.last(), Some(&SyncStatus::Synced), "{kind}: {list:?}");
    }
    // How many of the early states the poller sees depends on how fast Envoy runs through its first
    // requests (on a loaded machine the first look can already have every type sent), so only the
    // order is asserted (NOT_SENT for a type not asked for yet is a unit test in registry/tests.rs).
    println!("then: {synced:?}");

    // The table, like istioctl proxy-status.
    let table = server.xdsctl(&["status"]);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NODE", "CLUSTER", "LOCALITY", "PROTOCOL", "CDS", "EDS", "LDS", "RDS"]
    );
    let protocol_name = match protocol {
        XdsProtocol::Sotw => "SotW",
        XdsProtocol::Delta => "Delta",
    };
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            node,
            "demo",
            "us-east1/us-east1-b/-",
            protocol_name,
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED"
        ],
        "{table}"
    );

    // What it was sent, readable.
    let config = server.xdsctl(&["config", node]);
    for header in [
        format!("--- CDS {CLUSTER} (SYNCED"),
        format!("--- EDS {CLUSTER} (SYNCED"),
        "--- LDS outbound_http (SYNCED".to_string(),
        "--- RDS outbound (SYNCED".to_string(),
    ] {
        assert!(config.contains(&header), "no `{header}` in:\n{config}");
    }
    assert!(config.contains("Cluster {"), "{config}");
    assert!(
        config.contains("value: HttpConnectionManager {"),
        "{config}"
    );
    assert!(!config.contains("older version"), "{config}");
    let eds = server.xdsctl_json(&["config", node, "--type", "eds"]);
    let resources = eds["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1, "{eds}");
    assert_eq!(resources[0]["name"], CLUSTER);
    let text = resources[0]["text"].as_str().unwrap();
    assert!(text.starts_with("ClusterLoadAssignment {"), "{text}");
    let port = mesh.backends_in(EAST_B).next().unwrap().port();
    assert!(text.contains(&format!("{port},")), "{text}");
    let named = server.xdsctl_json(&["config", node, "--name", "outbound"]);
    assert_eq!(named["resources"].as_array().unwrap().len(), 1, "{named}");

    // Envoy frozen: a new EDS answer goes out and stays unacknowledged (STALE) until it runs again.
    envoy.pause();
    mesh.set_zone_ready(EAST_C, false);
    let stale = wait_statuses(&mesh.server, node, "EDS STALE", |s| s["EDS"] == "STALE");
    println!("while {node} is frozen and endpoints changed: {stale:?}");
    assert_eq!(stale["CDS"], "SYNCED");
    envoy.resume();
    wait_statuses(&mesh.server, node, "SYNCED again", all_synced);
}

fn a_nack_shows_as_nacked_with_envoys_error(protocol: XdsProtocol) {
    let mesh = Mesh::start(1).protocol(protocol);
    let port = e2e::ports::free_port();
    let _taken = TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    let node = "nacking-client";
    let envoy = Envoy::spawn(mesh.envoy_options(node, EAST_B).listener_port(port));
    let s = wait_statuses(&mesh.server, node, "LDS NACKED", |s| {
        s["LDS"] == "NACKED" && s["CDS"] == "SYNCED" && s["EDS"] == "SYNCED"
    });
    envoy.verify_protocol();
    println!("statuses: {s:?}");
    // Envoy never got a listener. Whether it asked for the listener's routes before the bind failed
    // (and dropped them unacknowledged) is a race inside Envoy: RDS is NOT_SENT or STALE, never SYNCED.
    assert!(s["RDS"] == "NOT_SENT" || s["RDS"] == "STALE", "{s:?}");

    let c = client_json(&mesh.server, node).unwrap();
    let lds = c["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["short_name"] == "LDS")
        .unwrap()
        .clone();
    let error = lds["last_nack"]["error"].as_str().unwrap().to_string();
    println!("LDS NACK: {}", lds["last_nack"]);
    assert!(
        error.contains(&port.to_string()) || error.to_lowercase().contains("bind"),
        "the NACK should carry Envoy's reason: {error}"
    );
    assert!(!lds["last_nack"]["version"].as_str().unwrap().is_empty());
    assert!(lds["last_nack"]["at_unix_ms"].as_i64().unwrap() > 0);

    let table = mesh.server.xdsctl(&["status"]);
    println!("{table}");
    let row = table.lines().find(|l| l.starts_with(node)).unwrap();
    let cells: Vec<&str> = row
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells[4..7], ["SYNCED", "SYNCED", "NACKED"], "{table}");
    assert!(
        table.contains(&format!("{node} LDS NACKED version ")) && table.contains(&error),
        "{table}"
    );

    // CSDS says the same.
    let csds = fetch_csds(&mesh.server, Some(node));
    let config = &csds.config[0];
    let lds = config
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url.ends_with("Listener"))
        .expect("an LDS entry");
    assert_eq!(lds.config_status().as_str_name(), "ERROR");
    assert_eq!(lds.client_status().as_str_name(), "NACKED");
    assert_eq!(lds.error_state.as_ref().unwrap().details, error);
    assert!(lds.xds_config.is_none());
}

fn explained_levels(server: &XdsServer, args: &[&str]) -> (Value, BTreeMap<u16, (u32, String)>) {
    let mut all = vec!["explain"];
    all.extend(args);
    let json = server.xdsctl_json(&all);
    let e = json["explanations"][0].clone();
    let mut by_port = BTreeMap::new();
    for level in e["levels"].as_array().unwrap() {
        for ep in level["endpoints"].as_array().unwrap() {
            by_port.insert(
                ep["port"].as_u64().unwrap() as u16,
                (
                    level["priority"].as_u64().unwrap() as u32,
                    ep["health"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    (e, by_port)
}

fn envoys_levels(envoy: &Envoy) -> BTreeMap<u16, (u32, String)> {
    envoy
        .hosts(CLUSTER)
        .into_iter()
        .map(|h| (h.port, (h.priority, h.eds_health_status)))
        .collect()
}

fn explain_matches_the_priorities_and_load_envoy_uses(protocol: XdsProtocol) {
    let mut mesh = Mesh::start(2).protocol(protocol);
    let node = "explained-client";
    let envoy = mesh.envoy(node, EAST_B);

    let (e, explained) = explained_levels(&mesh.server, &["echo.demo", "--node", node]);
    let seen = envoys_levels(&envoy);
    println!("explain: {explained:?}\nEnvoy:   {seen:?}");
    assert_eq!(explained, seen);
    assert_eq!(e["load"], serde_json::json!([100, 0, 0]));
    assert_eq!(e["cluster"], CLUSTER);
    let reasons: Vec<&str> = e["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    println!("reasons: {reasons:#?}");
    assert!(reasons[0].contains("zone=us-east1-b"), "{reasons:?}");
    assert!(reasons[1].contains("region=us-east1"), "{reasons:?}");
    // The same client described by hand gets the same answer.
    let (_, by_hand) = explained_levels(
        &mesh.server,
        &["demo/echo", "--locality", "us-east1/us-east1-b"],
    );
    assert_eq!(by_hand, explained);
    // From another region the levels differ.
    let (_, west) = explained_levels(&mesh.server, &["echo", "--locality", "us-west1/us-west1-a"]);
    assert_ne!(west, explained);

    // One of the two us-east1-b endpoints not ready: P0 health 140 × 1/2 = 70 → 70% P0, 30% P1.
    let i = mesh.members.iter().position(|m| m.zone == EAST_B).unwrap();
    mesh.members[i].ready = false;
    let unready = mesh.members[i].backend.port();
    mesh.write_endpoints();
    let updated = e2e::poll(WAIT, EVERY, || {
        let seen = envoys_levels(&envoy);
        (seen.get(&unready).map(|(_, h)| h.as_str()) == Some("UNHEALTHY")).then_some(seen)
    })
    .expect("Envoy never saw the endpoint unhealthy");
    let (e, explained) = explained_levels(&mesh.server, &["echo.demo:8080", "--node", node]);
    assert_eq!(explained, updated);
    assert_eq!(e["load"], serde_json::json!([70, 30, 0]), "{e}");
    let table = mesh
        .server
        .xdsctl(&["explain", "echo.demo", "--node", node]);
    println!("{table}");
    assert!(
        table.contains("expected load: P0 70%, P1 30%, P2 0%"),
        "{table}"
    );
    assert!(table.contains("P0         70%    1/2"), "{table}");

    // And Envoy splits traffic that way.
    let t = e2e::traffic::send(envoy.listener_addr(), HOST, 300, Duration::from_millis(2));
    println!("{t}");
    assert_eq!(t.failures, 0, "{t}");
    let share = t.count(EAST_B.zone) as f64 / t.total() as f64;
    assert!(
        (0.58..=0.82).contains(&share),
        "expected ~70% in {}: {t}",
        EAST_B.zone
    );
    assert_eq!(t.count(WEST_A.zone), 0, "{t}");
}

fn fetch_csds(server: &XdsServer, node: Option<&str>) -> ClientStatusResponse {
    let addr = server.admin_addr();
    runtime().block_on(async move {
        let mut client = ClientStatusDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to CSDS");
        client
            .fetch_client_status(ClientStatusRequest {
                node_matchers: node
                    .map(|n| NodeMatcher {
                        node_id: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(n.to_string())),
                            ignore_case: false,
                        }),
                        node_metadatas: vec![],
                    })
                    .into_iter()
                    .collect(),
                ..ClientStatusRequest::default()
            })
            .await
            .expect("FetchClientStatus")
            .into_inner()
    })
}

fn csds_reports_each_resource_of_each_node(protocol: XdsProtocol) {
    let mesh = Mesh::start(1).protocol(protocol);
    let a = mesh.envoy("csds-a", EAST_B);
    let _b = mesh.envoy("csds-b", WEST_A);
    for node in [a.node_id(), "csds-b"] {
        wait_statuses(&mesh.server, node, "all SYNCED", all_synced);
    }

    let all = fetch_csds(&mesh.server, None);
    let nodes: Vec<String> = all
        .config
        .iter()
        .map(|c| c.node.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(nodes, ["csds-a", "csds-b"]);

    let one = fetch_csds(&mesh.server, Some("csds-a"));
    assert_eq!(one.config.len(), 1);
    let config = &one.config[0];
    let node = config.node.as_ref().unwrap();
    assert_eq!(node.locality.as_ref().unwrap().zone, EAST_B.zone);
    let entries: Vec<(String, String, &str, &str)> = config
        .generic_xds_configs
        .iter()
        .map(|g| {
            (
                g.type_url.rsplit('.').next().unwrap().to_string(),
                g.name.clone(),
                g.config_status().as_str_name(),
                g.client_status().as_str_name(),
            )
        })
        .collect();
    println!("CSDS for csds-a: {entries:#?}");
    let expect = |t: &str, n: &str| (t.to_string(), n.to_string(), "SYNCED", "ACKED");
    assert_eq!(
        entries,
        [
            expect("Cluster", CLUSTER),
            expect("ClusterLoadAssignment", CLUSTER),
            expect("Listener", "outbound_http"),
            expect("RouteConfiguration", "outbound"),
        ]
    );
    for g in &config.generic_xds_configs {
        assert!(!g.version_info.is_empty(), "{g:?}");
        assert!(g.error_state.is_none(), "{g:?}");
    }
    let cluster_any = config.generic_xds_configs[0].xds_config.as_ref().unwrap();
    let cluster = Cluster::decode(cluster_any.value.as_slice()).unwrap();
    assert_eq!(cluster.name, CLUSTER);

    assert!(fetch_csds(&mesh.server, Some("nobody")).config.is_empty());

    // The streaming form answers each request.
    let addr = mesh.server.admin_addr();
    let answers = runtime().block_on(async move {
        let mut client = ClientStatusDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let requests = futures::stream::iter(vec![ClientStatusRequest::default(); 2]);
        let mut stream = client
            .stream_client_status(requests)
            .await
            .unwrap()
            .into_inner();
        let mut n = Vec::new();
        while let Some(r) = futures::StreamExt::next(&mut stream).await {
            n.push(r.unwrap().config.len());
        }
        n
    });
    assert_eq!(answers, [2, 2]);
}

fn events_show_the_connect_then_pushes_and_acks(protocol: XdsProtocol) {
    let mesh = Mesh::start(1).protocol(protocol);
    let node = "tailed-client";
    let tail = mesh.server.tail_events(&["-o", "json", "--node", node]);
    // The stream is open once the server counts a reader; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut envoy = mesh.envoy(node, EAST_B);
    let lines = tail.read_until(WAIT, |l| {
        l.contains("\"acked\"") && l.contains("RouteConfiguration")
    });
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let t = e["type_url"].as_str().unwrap_or_default();
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                t.rsplit('.').next().unwrap()
            )
        })
        .collect();
    println!("events: {kinds:#?}");
    assert_eq!(events[0]["kind"], "connected", "{kinds:?}");
    assert_eq!(events[0]["node_id"], node);
    assert_eq!(events[0]["locality"], "us-east1/us-east1-b/-");
    let protocol_name = match protocol {
        XdsProtocol::Sotw => "SOTW",
        XdsProtocol::Delta => "DELTA",
    };
    assert_eq!(events[0]["protocol"], protocol_name);
    for t in [
        "Cluster",
        "ClusterLoadAssignment",
        "Listener",
        "RouteConfiguration",
    ] {
        let pushed = kinds.iter().position(|k| *k == format!("pushed {t}"));
        let acked = kinds.iter().position(|k| *k == format!("acked {t}"));
        assert!(
            matches!((pushed, acked), (Some(p), Some(a)) if p < a),
            "{t}: pushed then acked expected in {kinds:?}"
        );
    }

    // The table form, ended by the disconnect.
    let tail = mesh.server.tail_events(&["--node", node, "--count", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    envoy.kill();
    let lines = tail.read_until(WAIT, |l| l.contains("disconnected"));
    println!("{lines:?}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains(&format!("disconnected  {node}  stream ")),
        "{lines:?}"
    );
}

#[test]
fn an_unreachable_server_is_one_clear_line_and_a_failure() {
    let port = e2e::ports::free_port();
    let addr = format!("127.0.0.1:{port}");
    for args in [vec!["status"], vec!["services", "-o", "json"]] {
        let out = xdsctl_at(&addr, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("xdsctl {args:?}: {} / {stderr}", out.status);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "xdsctl: cannot reach the xds-server admin API at {addr}"
            )),
            "{stderr}"
        );
    }
    // The address can come from the environment.
    let out = Command::new(e2e::paths::xdsctl_bin())
        .arg("policies")
        .env("XDS_ADMIN_ADDR", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn services_policies_health_and_reflection_on_the_admin_port() {
    let policy = "kind: FailoverPolicy\nmetadata: {name: demo-default, namespace: demo}\nspec: {panicThreshold: 10}\n";
    let mesh = Mesh::start_with_policy(1, Some(policy));
    let server = &mesh.server;

    let services = server.xdsctl(&["services"]);
    println!("{services}");
    let source = format!("file:{}", mesh.endpoints_path().display());
    assert!(services
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("demo/echo   http:8080   127.0.0.1:"));
    assert!(services.contains(&source), "{services}");
    assert_eq!(
        services.lines().count(),
        4,
        "one row per endpoint: {services}"
    );
    let json = server.xdsctl_json(&["services"]);
    let echo = &json["services"][0];
    assert_eq!(echo["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(echo["endpoints"][0]["health"], "HEALTHY");
    assert_eq!(echo["ports"][0]["cluster"], CLUSTER);
    assert_eq!(echo["source"], source.as_str());

    let policies = server.xdsctl_json(&["policies"]);
    assert_eq!(policies["active"][0]["scope"], "namespace demo");
    assert_eq!(
        policies["active"][0]["services"],
        serde_json::json!(["demo/echo:8080"])
    );
    assert_eq!(policies["active"][0]["panic_threshold"], 10);
    assert!(policies["rejected"].as_array().unwrap().is_empty());

    // A bad file next to it is rejected, named, and explained; the good one stays in force.
    let bad = mesh.dir().join("policies/bad.yaml");
    std::fs::write(
        &bad,
        "kind: FailoverPolicy\nmetadata: {name: x, namespace: y}\nspec: {panicThreshold: 200}\n",
    )
    .unwrap();
    let rejected = e2e::poll(WAIT, EVERY, || {
        let p = server.xdsctl_json(&["policies"]);
        let r = p["rejected"].as_array().cloned().unwrap_or_default();
        (!r.is_empty()).then_some(r)
    })
    .expect("the bad policy file never showed as rejected");
    assert_eq!(rejected[0]["source"], format!("file:{}", bad.display()));
    assert!(
        rejected[0]["error"]
            .as_str()
            .unwrap()
            .contains("panicThreshold"),
        "{rejected:?}"
    );
    let table = server.xdsctl(&["policies"]);
    println!("{table}");
    assert!(
        table.contains("REJECTED") && table.contains("bad.yaml"),
        "{table}"
    );
    std::fs::remove_file(&bad).unwrap();
    e2e::poll(WAIT, EVERY, || {
        server.xdsctl_json(&["policies"])["rejected"]
            .as_array()
            .is_some_and(|r| r.is_empty())
            .then_some(())
    })
    .expect("a removed bad file should no longer be listed");

    // Errors from the server are one line too, and a failure.
    let out = xdsctl_at(&server.admin_addr().to_string(), &["config", "nobody"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "xdsctl: NotFound: no connected client with node id `nobody`\n"
    );
    let out = xdsctl_at(
        &server.admin_addr().to_string(),
        &["explain", "nope", "--locality", "a"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named `nope`"));

    // Health and reflection, as grpcurl uses them.
    let addr = server.admin_addr();
    let (health, services, descriptor) = runtime().block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "xds.admin.v1.Admin".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let requests = futures::stream::iter(
            [
                MessageRequest::ListServices(String::new()),
                MessageRequest::FileContainingSymbol("xds.admin.v1.Admin".into()),
            ]
            .map(|m| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            }),
        );
        let mut answers = reflection
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();
        let mut services = Vec::new();
        let mut descriptor = Vec::new();
        while let Some(a) = futures::StreamExt::next(&mut answers).await {
            match a.unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(l)) => {
                    services = l.service.into_iter().map(|s| s.name).collect()
                }
                Some(MessageResponse::FileDescriptorResponse(f)) => {
                    descriptor = f.file_descriptor_proto.concat()
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        (serving, services, descriptor)
    });
    assert_eq!(
        health,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    println!("reflection lists {services:?}");
    for s in ["xds.admin.v1.Admin", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|n| n == s), "{s} not in {services:?}");
    }
    let text = String::from_utf8_lossy(&descriptor);
    for rpc in [
        "ListClients",
        "GetClientConfig",
        "ExplainPriorities",
        "WatchEvents",
    ] {
        assert!(text.contains(rpc), "{rpc} not in the descriptor");
    }
}
