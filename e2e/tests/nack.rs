//! A config Envoy rejects (NACK) is logged once and not re-sent in a loop, and the rest of the config
//! keeps working.
//!
//! The rejected config: a client asks (node metadata `listener_port`) for a listener port that is
//! already taken on its machine. The server cannot know; Envoy fails to bind and NACKs the listener.

use std::net::TcpListener;
use std::time::Duration;

use e2e::envoy::Envoy;
use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, CLUSTER, EAST_B};

e2e::both_protocols!(a_nacked_listener_is_not_resent_in_a_loop);

fn a_nacked_listener_is_not_resent_in_a_loop(protocol: XdsProtocol) {
    let mesh = Mesh::start(1).protocol(protocol);
    let port = e2e::ports::free_port();
    let _taken = TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    let envoy = Envoy::spawn(
        mesh.envoy_options("rejecting-client", EAST_B)
            .listener_port(port),
    );

    let rejected = e2e::poll(Duration::from_secs(15), Duration::from_millis(50), || {
        envoy
            .stat_u64("listener_manager.lds.update_rejected")
            .filter(|n| *n > 0)
    });
    assert!(
        rejected.is_some(),
        "Envoy never rejected the listener; stats: {:?}",
        envoy.stats("listener_manager.lds")
    );
    // The clusters, pushed before the listener, were accepted and stay.
    assert!(envoy.cluster_names().contains(&CLUSTER.to_string()));
    envoy.verify_protocol();

    // Give a looping server plenty of time to show itself.
    std::thread::sleep(Duration::from_secs(4));
    let lds = envoy.stats("listener_manager\\.lds\\.");
    let cds = envoy.stats("cluster_manager\\.cds\\.");
    println!("LDS stats: {lds:?}");
    println!("CDS stats: {cds:?}");
    let stat = |m: &std::collections::BTreeMap<String, String>, k: &str| -> u64 {
        m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(
        stat(&lds, "listener_manager.lds.update_rejected") <= 2,
        "the rejected listener was re-sent in a loop: {lds:?}"
    );
    assert!(
        stat(&lds, "listener_manager.lds.update_attempt") <= 4,
        "LDS keeps being pushed: {lds:?}"
    );
    assert_eq!(
        stat(&cds, "cluster_manager.cds.update_rejected"),
        0,
        "{cds:?}"
    );
    assert!(
        stat(&cds, "cluster_manager.cds.update_attempt") <= 4,
        "CDS keeps being pushed: {cds:?}"
    );

    let nacks: Vec<String> = mesh
        .server
        .log_lines_with("nack")
        .into_iter()
        .filter(|l| l.contains("rejecting-client"))
        .collect();
    println!("server NACK log lines: {nacks:#?}");
    assert_eq!(
        nacks.len(),
        1,
        "the server should log the NACK once: {nacks:#?}"
    );
    assert!(
        nacks[0].contains(&port.to_string()) || nacks[0].to_lowercase().contains("bind"),
        "the NACK line should carry Envoy's reason: {}",
        nacks[0]
    );
}
