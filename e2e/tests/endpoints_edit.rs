//! Edits of the watched endpoints file reach Envoy within a couple of seconds; a broken edit changes
//! nothing.

use std::time::{Duration, Instant};

use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, CLUSTER, EAST_B, HOST};
use e2e::traffic;

e2e::both_protocols!(endpoints_file_edits_reach_envoy);

/// The issue promises "within a second"; allow some slack for a loaded CI machine.
const PROPAGATION: Duration = Duration::from_secs(2);

fn endpoints_file_edits_reach_envoy(protocol: XdsProtocol) {
    let mut mesh = Mesh::start(2).protocol(protocol);
    let envoy = mesh.envoy("client-b-edit", EAST_B);
    let addr = envoy.listener_addr();
    let p0_ports = |envoy: &e2e::envoy::Envoy| -> Vec<u16> {
        envoy
            .hosts(CLUSTER)
            .into_iter()
            .filter(|h| h.priority == 0)
            .map(|h| h.port)
            .collect()
    };
    assert_eq!(p0_ports(&envoy).len(), 2);
    let version_before = envoy.eds_version(CLUSTER);

    // 1. Add a backend in the client's zone, rewriting the file in place.
    let t0 = Instant::now();
    let i = {
        // add_backend writes atomically; rewrite in place too, as `cat > file` would.
        let i = mesh.add_backend(EAST_B);
        mesh.write_endpoints_in_place();
        i
    };
    let new_port = mesh.members[i].backend.port();
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        p0_ports(&envoy).contains(&new_port).then(|| t0.elapsed())
    });
    println!("added backend visible in Envoy after {seen:?}");
    assert!(
        seen.is_some(),
        "new endpoint not in Envoy after {PROPAGATION:?}: {:?}",
        envoy.hosts(CLUSTER)
    );
    assert_ne!(
        envoy.eds_version(CLUSTER),
        version_before,
        "EDS version did not change"
    );
    let t = traffic::send(addr, HOST, 20, Duration::from_millis(5));
    assert!(t.all(EAST_B.zone), "{t}");
    assert!(
        mesh.members[i].backend.requests() > 0,
        "the new backend got no traffic"
    );

    // 2. Mark it not ready (atomic rewrite): it stays listed, as UNHEALTHY, and gets no traffic. (With
    //    2 of 3 local hosts healthy Envoy may spill a little traffic to the next zone: that is correct.)
    let t0 = Instant::now();
    mesh.members[i].ready = false;
    mesh.write_endpoints();
    let seen = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        envoy
            .hosts(CLUSTER)
            .iter()
            .any(|h| h.port == new_port && h.eds_health_status == "UNHEALTHY")
            .then(|| t0.elapsed())
    });
    println!("ready: false visible in Envoy after {seen:?}");
    assert!(
        seen.is_some(),
        "not-ready endpoint not UNHEALTHY in Envoy: {:?}",
        envoy.hosts(CLUSTER)
    );
    let before = mesh.members[i].backend.requests();
    let t = traffic::send(addr, HOST, 20, Duration::from_millis(5));
    assert_eq!(t.failures, 0, "{t}");
    assert!(t.count(EAST_B.zone) > 0, "{t}");
    assert_eq!(
        mesh.members[i].backend.requests(),
        before,
        "a not-ready endpoint got traffic"
    );

    // 3. A broken, half-written file changes nothing: no empty set, traffic goes on.
    let hosts_before = envoy.hosts(CLUSTER);
    let version_before = envoy.eds_version(CLUSTER);
    std::fs::write(
        mesh.endpoints_path(),
        "services:\n- name: echo\n  namespace: demo\n  ports: [{name: http, port: 80",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        envoy.hosts(CLUSTER),
        hosts_before,
        "a broken file changed Envoy's endpoints"
    );
    assert_eq!(envoy.eds_version(CLUSTER), version_before);
    let t = traffic::send(addr, HOST, 20, Duration::from_millis(5));
    assert_eq!(t.failures, 0, "{t}");
    // On a loaded machine the watcher may also catch the file between its truncation and the write
    // ("file is empty", rejected too); the rejection of what was written names its line.
    let rejected = e2e::poll(Duration::from_secs(3), Duration::from_millis(50), || {
        let lines = mesh.server.log_lines_with("endpoints.yaml");
        lines
            .into_iter()
            .find(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("line"))
    });
    println!("server on the broken file: {rejected:?}");
    assert!(
        rejected.is_some_and(|l| l.contains("line")),
        "the server did not log the bad file with its line"
    );

    // 4. The next good edit applies again.
    mesh.members[i].ready = true;
    mesh.write_endpoints();
    let healthy_again = e2e::poll(PROPAGATION, Duration::from_millis(20), || {
        envoy
            .hosts(CLUSTER)
            .iter()
            .any(|h| h.port == new_port && h.eds_health_status == "HEALTHY")
            .then_some(())
    });
    assert!(
        healthy_again.is_some(),
        "a good edit after a bad one was not applied"
    );
}
