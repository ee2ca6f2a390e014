//! The shipped examples work: `deploy/local/endpoints.yaml` with `policies/`, and the
//! server refuses an invalid endpoints file at startup.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::modes::XdsProtocol;
use e2e::server::{ServerArgs, XdsServer};

e2e::both_protocols!(deploy_local_examples_load_and_policies_apply);

fn deploy_local_examples_load_and_policies_apply(protocol: XdsProtocol) {
    let root = e2e::paths::workspace_root();
    let server = XdsServer::start(
        ServerArgs::new(root.join("deploy/local/endpoints.yaml")).policies(root.join("policies")),
    );
    let envoy = Envoy::start(
        EnvoyOptions::new("client-examples", "us-east1", "us-east1-b", server.addr())
            .namespace("shop")
            .protocol(protocol),
    );
    let clusters = e2e::poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let names = envoy.cluster_names();
        (names.contains(&"echo.demo:8080".to_string())
            && names.contains(&"checkout.shop:8080".to_string()))
        .then_some(names)
    });
    assert!(clusters.is_some(), "clusters: {:?}", envoy.cluster_names());

    // checkout's policy: rank by region then zone, and us-east1 fails over to us-west1 first.
    let by_zone: BTreeMap<String, u32> = envoy
        .hosts("checkout.shop:8080")
        .into_iter()
        .map(|h| (h.zone, h.priority))
        .collect();
    let expected: BTreeMap<String, u32> = [
        ("us-east1-b", 0),
        ("us-east1-c", 1),
        ("us-west1-a", 2),
        ("europe-west1-b", 3),
    ]
    .into_iter()
    .map(|(z, p)| (z.to_string(), p))
    .collect();
    assert_eq!(by_zone, expected);

    // echo: the not-ready endpoint (port 9104) is sent as UNHEALTHY.
    let echo = envoy.hosts("echo.demo:8080");
    assert_eq!(echo.len(), 6, "{echo:?}");
    let not_ready = echo
        .iter()
        .find(|h| h.port == 9104)
        .expect("port 9104 listed");
    assert_eq!(not_ready.eds_health_status, "UNHEALTHY");
}

#[test]
fn server_refuses_an_invalid_endpoints_file_at_startup() {
    let dir = e2e::tmp::TempDir::new("invalid");
    let path = dir.join("endpoints.yaml");
    std::fs::write(
        &path,
        "services:\n- name: echo\n  namespace: demo\n  ports: [{name: http, port: 8080}]\n  \
         endpoints:\n  - port: 9001\n    locality: {region: r, zone: z}\n",
    )
    .unwrap();
    let (status, log) = XdsServer::run_expecting_exit(
        &["--endpoints", path.to_str().unwrap()],
        Duration::from_secs(20),
    );
    println!("server log:\n{log}");
    let status = status.expect("the server kept running with an invalid endpoints file");
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains("endpoints.yaml"),
        "the error should name the file"
    );
    assert!(
        log.contains("address"),
        "the error should name the missing field"
    );
}
