//! The harness itself, and the sample bootstrap, checked without a control plane.

use std::time::Duration;

use e2e::backend::Backend;
use e2e::envoy::{Envoy, EnvoyOptions, XdsProtocol};
use e2e::traffic;

#[test]
fn backend_answers_then_refuses_when_stopped_then_answers_again() {
    let mut b = Backend::start("b0", "us-east1-b");
    let addr = b.addr();
    assert_eq!(traffic::request(addr, "x").as_deref(), Ok("us-east1-b"));
    let resp = e2e::http::get(addr, "x", "/", Duration::from_secs(2)).unwrap();
    assert_eq!(resp.header("x-backend"), Some("b0"));

    b.stop();
    let err = traffic::request(addr, "x").expect_err("a stopped backend must not answer");
    // Normally "ConnectionRefused"; print it so an odd failure mode is visible.
    println!("request to the stopped backend: {err}");

    b.restart();
    assert_eq!(b.port(), addr.port());
    assert_eq!(traffic::request(addr, "x").as_deref(), Ok("us-east1-b"));
    assert_eq!(b.requests(), 3);
}

#[test]
fn backend_health_endpoint_fails_on_demand_while_other_paths_serve() {
    let b = Backend::start("h0", "us-east1-b");
    let get = |path: &str| e2e::http::get(b.addr(), "x", path, Duration::from_secs(2)).unwrap();
    assert_eq!(get("/healthz").status, 200);
    b.set_healthy(false);
    let sick = get("/healthz");
    assert_eq!(sick.status, 503);
    assert_eq!(sick.header("x-backend"), Some("h0"));
    // Only the health endpoint fails; the app answers as before.
    assert_eq!(traffic::request(b.addr(), "x").as_deref(), Ok("us-east1-b"));
    assert_eq!(get("/healthz?probe=1").status, 503);
    b.set_healthy(true);
    assert_eq!(get("/healthz").status, 200);
    assert_eq!(b.health_checks(), 4);
    assert_eq!(b.requests(), 1, "health checks are not counted as requests");
}

#[test]
fn free_ports_are_distinct() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| e2e::ports::free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn sample_bootstrap_is_valid_as_shipped_and_as_patched() {
    let envoy = e2e::paths::envoy_bin();
    let validate = |path: &std::path::Path| {
        let out = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(path)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            out.status.success(),
            "envoy rejects {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    validate(&e2e::paths::sample_bootstrap());

    let opts = EnvoyOptions::new(
        "patched",
        "us-west1",
        "us-west1-a",
        "127.0.0.1:1".parse().unwrap(),
    )
    .subzone("rack-9")
    .namespace("demo")
    .label("app", "web");
    let doc = e2e::envoy::bootstrap(&opts, 12345, 23456);
    assert_eq!(doc["node"]["id"].as_str(), Some("patched"));
    assert_eq!(doc["node"]["locality"]["sub_zone"].as_str(), Some("rack-9"));
    assert_eq!(
        doc["node"]["metadata"]["listener_port"].as_u64(),
        Some(23456)
    );
    assert_eq!(
        doc["node"]["metadata"]["labels"]["app"].as_str(),
        Some("web")
    );
    assert_eq!(
        doc["admin"]["address"]["socket_address"]["port_value"].as_u64(),
        Some(12345)
    );
    let dir = e2e::tmp::TempDir::new("bootstrap");
    let path = dir.join("patched.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    validate(&path);

    // The ADS flavour: only `api_type` differs between the two modes; SotW is what the sample ships.
    let shipped: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(e2e::paths::sample_bootstrap()).unwrap())
            .unwrap();
    let api_type = |doc: &serde_yaml_ng::Value| {
        doc["dynamic_resources"]["ads_config"]["api_type"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(api_type(&shipped).as_deref(), Some("GRPC"));
    assert_eq!(api_type(&doc).as_deref(), Some("GRPC"));
    let delta = e2e::envoy::bootstrap(&opts.clone().protocol(XdsProtocol::Delta), 12345, 23456);
    assert_eq!(api_type(&delta).as_deref(), Some("DELTA_GRPC"));
    let mut back = delta.clone();
    back["dynamic_resources"]["ads_config"]["api_type"] = "GRPC".into();
    assert_eq!(
        back, doc,
        "the Delta bootstrap differs in more than api_type"
    );
    let path = dir.join("patched-delta.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&delta).unwrap()).unwrap();
    validate(&path);
}

#[test]
fn envoy_starts_from_the_sample_and_waits_for_a_missing_control_plane() {
    // Nothing listens on the xDS port: Envoy must still come up, answer on admin, and keep trying.
    let xds_port = e2e::ports::free_port();
    let envoy = Envoy::spawn(EnvoyOptions::new(
        "lonely",
        "us-east1",
        "us-east1-b",
        ([127, 0, 0, 1], xds_port).into(),
    ));
    let info = envoy.admin_get("/server_info").unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["node"]["id"].as_str(), Some("lonely"));
    assert_eq!(
        info["node"]["locality"]["zone"].as_str(),
        Some("us-east1-b")
    );
    assert!(envoy.cluster_names().contains(&"xds_cluster".to_string()));
    // No listener without a control plane.
    assert!(!envoy.wait_listener(Duration::from_millis(300)));
    let failures = e2e::poll(Duration::from_secs(10), Duration::from_millis(100), || {
        envoy
            .stat_u64("cluster.xds_cluster.upstream_cx_connect_fail")
            .filter(|n| *n > 0)
    });
    assert!(
        failures.is_some(),
        "Envoy never tried to reach the xDS server"
    );
}
