//! When the control plane dies Envoy keeps routing on its last config; when it comes back Envoy
//! reconnects and converges on what changed meanwhile.

use std::time::{Duration, Instant};

use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, CLUSTER, EAST_B, EAST_C, HOST, WEST_A};
use e2e::traffic;

e2e::both_protocols!(envoy_keeps_routing_without_the_server_and_converges_after_restart);

fn envoy_keeps_routing_without_the_server_and_converges_after_restart(protocol: XdsProtocol) {
    let mut mesh = Mesh::start(1).protocol(protocol);
    let envoy = mesh.envoy("client-b-restart", EAST_B);
    let addr = envoy.listener_addr();
    assert!(traffic::send(addr, HOST, 20, Duration::from_millis(5)).all(EAST_B.zone));
    assert_eq!(envoy.stat_u64("control_plane.connected_state"), Some(1));

    mesh.server.kill();
    let disconnected = e2e::poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (envoy.stat_u64("control_plane.connected_state") == Some(0)).then_some(())
    });
    assert!(
        disconnected.is_some(),
        "Envoy did not notice the server died"
    );
    let t = traffic::send(addr, HOST, 100, Duration::from_millis(10));
    println!("while the server is down: {t}");
    assert!(
        t.all(EAST_B.zone),
        "Envoy stopped routing on its last config: {t}"
    );

    // Changed while the server is down: us-east1-b is drained.
    mesh.set_zone_ready(EAST_B, false);
    std::thread::sleep(Duration::from_millis(500));
    assert!(traffic::send(addr, HOST, 10, Duration::from_millis(5)).all(EAST_B.zone));

    let t0 = Instant::now();
    mesh.server.restart();
    let sw = traffic::until_served_by(
        addr,
        HOST,
        EAST_C.zone,
        t0,
        Duration::from_millis(10),
        Duration::from_secs(20),
        50,
    );
    println!(
        "after restart: traffic moved to us-east1-c {} ms after the server started; {}",
        sw.millis(),
        sw.tally
    );
    assert!(
        sw.switched(),
        "Envoy did not converge after the server restarted: {}",
        sw.tally
    );
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert_eq!(sw.tally.count(WEST_A.zone), 0, "{}", sw.tally);
    assert!(sw.after.all(EAST_C.zone), "{}", sw.after);
    assert_eq!(envoy.stat_u64("control_plane.connected_state"), Some(1));
    // Reconnected in the same flavour (checks every `Envoy connected` line of both server runs).
    let connections = mesh
        .server
        .log_lines_with("Envoy connected")
        .iter()
        .filter(|l| l.contains("node=client-b-restart"))
        .count();
    assert!(
        connections >= 2,
        "{connections} connection(s) logged over two server runs"
    );
    envoy.verify_protocol();
    assert!(envoy
        .hosts(CLUSTER)
        .iter()
        .filter(|h| h.zone == EAST_B.zone)
        .all(|h| h.eds_health_status == "UNHEALTHY"));
    // Nothing was rejected along the way.
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        &format!("cluster.{CLUSTER}.update_rejected"),
    ] {
        assert_eq!(envoy.stat_u64(stat), Some(0), "{stat}");
    }
}
