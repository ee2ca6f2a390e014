//! Proxyless gRPC clients (grpcio on C-core, grpc-js with grpc-js-xds) get the same locality failover
//! as Envoy straight from the server: real client libraries dialing `xds:///echo.demo:8080`, real
//! gRPC backends in three zones of two regions.
//!
//! One scenario per library, as a sequence on one mesh (each setup costs seconds on a loaded
//! machine): own zone first; the zone killed → the next zone, then the region → the other region
//! (failed calls counted and printed, not asserted: a gRPC client notices a dead zone only through its
//! connections); the zones back → traffic returns; the zone marked not ready → drained with no
//! failed call, and back; a client in the other region keeps its own order; the server killed →
//! calls go on on the last config, and a change made meanwhile arrives after the restart; a policy
//! change (the failover target region) reaches a client.

use std::time::Duration;

use e2e::backend::Backend;
use e2e::grpc_client::{GrpcClient, GrpcClientOptions, GrpcLibrary};
use e2e::topology::{Mesh, Zone, EAST_B, EAST_C, NAMESPACE, WEST_A};
use e2e::traffic::Switch;

/// A region with no backends: its clients go wherever the failover rule for it points.
const EU: Zone = Zone {
    region: "eu-west1",
    zone: "eu-west1-a",
};

/// The mesh's policy: where eu-west1's clients fail over to, and short ejections (as in the Envoy
/// failover tests) so that outlier detection, should it eject a killed zone's backends, lets them back
/// within seconds of their return.
fn policy(eu_failover_to: &str) -> String {
    format!(
        "kind: FailoverPolicy\nmetadata: {{name: echo, namespace: demo}}\nspec:\n  service: echo\n  \
         failover: [{{from: {}, to: {eu_failover_to}}}]\n  outlierDetection: {{consecutive5xx: 3, \
         interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}}\n",
        EU.region
    )
}

/// Generous: a gRPC client reconnects with exponential backoff (1 s, ×1.6, jittered), and the
/// machine is shared.
const WITHIN: Duration = Duration::from_secs(60);
/// Calls after a switch that must all land on the new place.
const SETTLE: usize = 50;

/// The backends answer real gRPC clients, dialed directly (no xDS): what the scenarios count as an
/// answer is a proper gRPC response, from the backend that was called.
#[test]
fn grpc_backends_answer_both_libraries_directly() {
    let backend = Backend::start_grpc("direct-0", "direct");
    for library in [GrpcLibrary::Grpcio, GrpcLibrary::GrpcJs] {
        let opts = GrpcClientOptions::new("direct", EAST_B, backend.addr(), "unused:1")
            .direct(backend.addr());
        let client = GrpcClient::start(library, opts);
        let first = client.wait_served_by("direct", WITHIN, 0);
        assert!(first.switched(), "{library}: {}", first.tally);
        let calls = client.tally(10);
        assert!(calls.all("direct"), "{library}: {calls}");
        let call = client.next_call(Duration::from_secs(15)).expect("a call");
        assert_eq!(call.backend.as_deref(), Some("direct-0"), "{library}");
    }
    assert!(
        backend.requests() >= 22,
        "{} calls counted",
        backend.requests()
    );
}

#[test]
fn grpcio_fails_over_drains_and_reconverges() {
    failover_scenario(GrpcLibrary::Grpcio);
}

#[test]
fn grpc_js_fails_over_drains_and_reconverges() {
    failover_scenario(GrpcLibrary::GrpcJs);
}

/// Prints a step's figures and checks that traffic reached `to`, stayed there, and never went to
/// `forbidden`.
fn check_switch(library: GrpcLibrary, what: &str, sw: &Switch, to: Zone, forbidden: &[Zone]) {
    println!(
        "{library}: {what}: traffic on {} after {} ms, {} failed calls; {}",
        to.zone,
        sw.millis(),
        sw.failures_before,
        sw.tally
    );
    assert!(
        sw.switched(),
        "{library}: {what}: traffic never reached {}: {}",
        to.zone,
        sw.tally
    );
    for zone in forbidden {
        assert_eq!(
            sw.tally.count(zone.zone),
            0,
            "{library}: {what}: traffic went to {}: {}",
            zone.zone,
            sw.tally
        );
    }
    assert!(
        sw.after.all(to.zone),
        "{library}: {what}: traffic did not stay on {}: {}",
        to.zone,
        sw.after
    );
}

/// Waits (up to [`WITHIN`]) until `xdsctl status` lists every client of `clients`, each marked
/// `grpc` in the KIND column, and returns the table.
fn wait_listed_as_grpc(mesh: &Mesh, library: GrpcLibrary, clients: &[&GrpcClient]) -> String {
    let marked = |status: &str, client: &GrpcClient| {
        status.lines().any(|l| {
            let mut columns = l.split_whitespace();
            columns.next() == Some(client.node_id()) && columns.next() == Some("grpc")
        })
    };
    let mut last = String::new();
    let listed = e2e::poll(WITHIN, Duration::from_millis(100), || {
        last = mesh.server.xdsctl(&["status"]);
        let header = last.lines().next().unwrap_or_default();
        (header.split_whitespace().nth(1) == Some("KIND")
            && clients.iter().all(|c| marked(&last, c)))
        .then(|| last.clone())
    });
    listed.unwrap_or_else(|| {
        panic!("{library}: not every client is listed as a gRPC client by xdsctl status:\n{last}")
    })
}

fn failover_scenario(library: GrpcLibrary) {
    let name = library.name();
    let mut mesh = Mesh::start_grpc_with_policy(2, Some(&policy(WEST_A.region)));
    let east = mesh.grpc_client(library, &format!("{name}-east-b"), EAST_B, EAST_B);
    let west = mesh.grpc_client(library, &format!("{name}-west-a"), WEST_A, WEST_A);
    // No backend in its region: the policy sends it to us-west1.
    let eu = mesh.grpc_client(library, &format!("{name}-eu"), EU, WEST_A);

    // The admin API knows them for what they are.
    let status = wait_listed_as_grpc(&mesh, library, &[&east, &west, &eu]);
    println!("{library}: xdsctl status:\n{status}");
    // And scripts reading `-o json` get the kind by name.
    let json: serde_json::Value =
        serde_json::from_str(&mesh.server.xdsctl(&["status", "-o", "json"])).expect("JSON");
    let kinds: Vec<&str> = json["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["kind"].as_str().unwrap_or("(not a name)"))
        .collect();
    assert_eq!(kinds, ["GRPC"; 3], "{json}");

    // The other spellings of the target Kubernetes DNS accepts reach the same service: a bare name
    // from the client's namespace, and the fully qualified one.
    let spellings: Vec<GrpcClient> = ["echo:8080", "echo.demo.svc.cluster.local:8080"]
        .iter()
        .enumerate()
        .map(|(i, authority)| {
            let opts = GrpcClientOptions::new(
                &format!("{name}-spelling-{i}"),
                EAST_B,
                mesh.server.addr(),
                authority,
            )
            .namespace(NAMESPACE);
            GrpcClient::start(library, opts)
        })
        .collect();
    for client in &spellings {
        let first = client.wait_served_by(EAST_B.zone, WITHIN, 10);
        println!("{library}: {} served: {}", client.target(), first.tally);
        assert!(
            first.switched() && first.after.all(EAST_B.zone),
            "{library}: {}: {}",
            client.target(),
            first.tally
        );
    }
    drop(spellings);

    // Own zone first, for each client its own order.
    let steady = east.tally(100);
    println!("{library}: steady state in us-east1-b: {steady}");
    assert!(steady.all(EAST_B.zone), "{library}: {steady}");
    for b in mesh.backends_in(EAST_B) {
        assert!(b.requests() > 0, "{library}: {} got no call", b.name());
    }
    let other_region = west.tally(50);
    println!("{library}: client in us-west1-a: {other_region}");
    assert!(other_region.all(WEST_A.zone), "{library}: {other_region}");

    // The zone dies: the client's connections to it close, and the next priority takes over.
    let sw = east.switch(EAST_C.zone, WITHIN, SETTLE, || mesh.kill_zone(EAST_B));
    check_switch(library, "us-east1-b killed", &sw, EAST_C, &[WEST_A]);
    // The other region's client never noticed.
    let unaffected = west.tally(20);
    assert!(unaffected.all(WEST_A.zone), "{library}: {unaffected}");

    // The whole region dies: on to the other region.
    let sw = east.switch(WEST_A.zone, WITHIN, SETTLE, || mesh.kill_zone(EAST_C));
    check_switch(library, "us-east1-c killed too", &sw, WEST_A, &[]);
    // The region's zones come back one by one: the client reconnects to each (on its backoff) and
    // climbs back up its order, losing nothing.
    let sw = east.switch(EAST_C.zone, WITHIN, SETTLE, || mesh.restore_zone(EAST_C));
    check_switch(library, "us-east1-c back", &sw, EAST_C, &[]);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);
    let sw = east.switch(EAST_B.zone, WITHIN, SETTLE, || mesh.restore_zone(EAST_B));
    check_switch(library, "us-east1-b back", &sw, EAST_B, &[WEST_A]);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);

    // A planned drain through the endpoints file costs no call, nor does its end.
    let sw = east.switch(EAST_C.zone, WITHIN, SETTLE, || {
        mesh.set_zone_ready(EAST_B, false)
    });
    check_switch(library, "us-east1-b not ready", &sw, EAST_C, &[WEST_A]);
    assert_eq!(
        sw.tally.failures, 0,
        "{library}: a drain must cost nothing: {}",
        sw.tally
    );
    let sw = east.switch(EAST_B.zone, WITHIN, SETTLE, || {
        mesh.set_zone_ready(EAST_B, true)
    });
    check_switch(library, "us-east1-b ready again", &sw, EAST_B, &[WEST_A]);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);

    // The other region's client has its own order: with its zone drained it goes to us-east1 (both
    // zones, one priority for it), while the us-east1-b client stays where it is.
    let sw = west.switch(EAST_B.zone, WITHIN, SETTLE, || {
        mesh.set_zone_ready(WEST_A, false)
    });
    println!(
        "{library}: us-west1-a not ready: the us-west1-a client on us-east1 after {} ms; {}",
        sw.millis(),
        sw.tally
    );
    assert!(sw.switched(), "{library}: {}", sw.tally);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);
    assert_eq!(sw.after.count(WEST_A.zone), 0, "{library}: {}", sw.after);
    assert!(east.tally(20).all(EAST_B.zone));
    let sw = west.switch(WEST_A.zone, WITHIN, SETTLE, || {
        mesh.set_zone_ready(WEST_A, true)
    });
    check_switch(library, "us-west1-a ready again", &sw, WEST_A, &[]);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);

    // The server dies: the clients go on with their last config.
    mesh.server.kill();
    let down = east.tally(100);
    println!("{library}: while the server is down: {down}");
    assert!(down.all(EAST_B.zone), "{library}: {down}");
    // Changed while the server is down: us-east1-b is drained. Nobody can tell the clients yet.
    mesh.set_zone_ready(EAST_B, false);
    assert!(east.tally(25).all(EAST_B.zone));
    let sw = east.switch(EAST_C.zone, WITHIN, SETTLE, || mesh.server.restart());
    check_switch(library, "server restarted", &sw, EAST_C, &[WEST_A]);
    assert_eq!(sw.tally.failures, 0, "{library}: {}", sw.tally);
    mesh.set_zone_ready(EAST_B, true);
    // Every client is back on the server (each reconnects on its own backoff), so the next step
    // times the policy's way to the client, not a reconnection.
    wait_listed_as_grpc(&mesh, library, &[&east, &west, &eu]);

    // The policy's failover target for eu-west1 moves from us-west1 to us-east1.
    let eu_before = eu.tally(20);
    assert!(
        eu_before.all(WEST_A.zone),
        "{library}: eu client: {eu_before}"
    );
    let sw = eu.switch(EAST_B.zone, WITHIN, 0, || {
        mesh.set_policy(&policy(EAST_B.region))
    });
    println!(
        "{library}: failover target of eu-west1 changed to us-east1: first us-east1-b answer after \
         {} ms; {}",
        sw.millis(),
        sw.tally
    );
    assert!(
        sw.switched(),
        "{library}: the policy change never reached the client: {}",
        sw.tally
    );
    let after = eu.tally(SETTLE);
    println!("{library}: eu client after the policy change: {after}");
    assert_eq!(after.count(WEST_A.zone), 0, "{library}: {after}");
    assert_eq!(after.failures, 0, "{library}: {after}");
}
