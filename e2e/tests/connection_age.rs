//! `--max-connection-age`: the server closes each client connection after its age (GOAWAY, the xDS
//! stream ended with UNAVAILABLE). A real Envoy must take that as "reconnect": a new connection, its
//! config kept meanwhile, no request lost, and changes still reaching it afterwards.

use std::time::{Duration, Instant};

use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, EAST_B, EAST_C, HOST, WEST_A};
use e2e::traffic;

e2e::both_protocols!(envoy_moves_to_a_new_connection_at_each_maximum_age_without_losing_a_request);

fn envoy_moves_to_a_new_connection_at_each_maximum_age_without_losing_a_request(
    protocol: XdsProtocol,
) {
    let args: Vec<String> = [
        "--max-connection-age",
        "2s",
        "--max-connection-age-grace",
        "5s",
    ]
    .map(String::from)
    .to_vec();
    let mut mesh = Mesh::start_with_server_args(1, None, &args).protocol(protocol);
    let node = "client-b-age";
    let envoy = mesh.envoy(node, EAST_B);
    let addr = envoy.listener_addr();

    // Requests across several ages (2 s ± 10% each).
    let t = traffic::send(addr, HOST, 160, Duration::from_millis(50));
    println!("across connection ages: {t}");
    assert_eq!(t.failures, 0, "{t}");
    assert!(t.all(EAST_B.zone), "{t}");
    let aged = mesh.server.log_lines_with("reached its maximum age").len();
    let connected = mesh
        .server
        .log_lines_with("Envoy connected")
        .iter()
        .filter(|l| l.contains(&format!("node={node}")))
        .count();
    println!("connections aged: {aged}; streams opened by {node}: {connected}");
    assert!(aged >= 2, "{aged} connection(s) reached their age in ~8 s");
    assert!(connected >= 3, "{node} opened {connected} stream(s)");

    // The stream on the newest connection still carries changes.
    let t0 = Instant::now();
    mesh.set_zone_ready(EAST_B, false);
    let sw = traffic::until_served_by(
        addr,
        HOST,
        EAST_C.zone,
        t0,
        Duration::from_millis(10),
        Duration::from_secs(20),
        30,
    );
    println!("drained after reconnects: {} ms, {}", sw.millis(), sw.tally);
    assert!(sw.switched(), "{}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert_eq!(sw.tally.count(WEST_A.zone), 0, "{}", sw.tally);
    // Connected (between two ages: each reconnect takes Envoy a moment).
    let connected = e2e::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        (envoy.stat_u64("control_plane.connected_state") == Some(1)).then_some(())
    });
    assert!(connected.is_some(), "Envoy stayed disconnected");
    envoy.verify_protocol();
}
