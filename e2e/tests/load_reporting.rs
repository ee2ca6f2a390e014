//! Load reporting (LRS) with real clients: Envoys (through `cluster_manager.load_stats_config` in the
//! shipped sample bootstrap) and proxyless gRPC clients (grpcio and grpc-js, through `lrs_server:
//! self` in their CDS cluster) report per-locality load to the server every second
//! (`--load-report-interval 1s`), and the admin API shows it:
//!
//! - `xdsctl top --once -o json`: `requests_total` summed per locality zone of the service is within
//!   10% of the successful requests the test sent there (every request is counted by the zone that
//!   answered it; failed ones are printed), and a zone nothing was sent to shows nothing;
//! - the client's zone dies, its traffic moves to its priority 1: `xdsctl events` shows a `failover`
//!   event of the client's class from priority 0 to 1 (and none before the zone died);
//! - `xdsctl top --once` (the table) lists the service.
//!
//! Traffic goes on until the failover event comes, because a client that sends nothing reports
//! nothing; then it stops, and the test waits until the figures settle before comparing.

use std::time::{Duration, Instant};

use e2e::envoy::Envoy;
use e2e::grpc_client::{GrpcClient, GrpcLibrary};
use e2e::load::{off_by_more_than_tolerance, wait_reported};
use e2e::modes::XdsProtocol;
use e2e::server::{EventTail, XdsServer};
use e2e::topology::{Mesh, Zone, EAST_B, EAST_C, HOST, SERVICE_PORT, WEST_A};
use e2e::traffic::{self, Tally};
use serde_json::Value as Json;

e2e::both_protocols!(envoys_report_the_load_they_carry_and_their_failover);

/// The service as `xdsctl top` names it (`NAME.NAMESPACE`).
const SERVICE: &str = "echo.demo";
/// Successful requests per client and locality.
const PER_LOCALITY: usize = 150;
/// Requests sent at a time while waiting for the failover event.
const BATCH: usize = 20;
/// One request every 10 ms through Envoy.
const EVERY: Duration = Duration::from_millis(10);
/// Generous: traffic switches, reports and events on a shared 2-core machine.
const WITHIN: Duration = Duration::from_secs(90);

fn server_args() -> Vec<String> {
    vec!["--load-report-interval".into(), "1s".into()]
}

/// Is `event` a `failover` event of the class of clients in `zone`?
fn failover_of(event: &Json, zone: Zone) -> bool {
    event["kind"] == "failover"
        && event["client_class"]
            .as_str()
            .is_some_and(|class| class.split('/').any(|part| part == zone.zone))
}

/// Fails if a failover of `zone`'s clients away from a priority they were served by was reported
/// before anything failed.
fn assert_no_failover_yet(events: &EventTail, zone: Zone) {
    let early: Vec<Json> = events
        .take_json()
        .into_iter()
        .filter(|e| failover_of(e, zone) && e["from_priority"].as_i64().unwrap_or(-1) >= 0)
        .collect();
    assert!(
        early.is_empty(),
        "a failover of {}'s clients was reported while their zone was up: {early:?}",
        zone.zone
    );
}

/// Runs `send` (a batch of traffic, tallied into `sent`) until a failover event of `zone`'s clients
/// from priority 0 comes, and returns the event. Panics after [`WITHIN`].
fn send_until_failover(
    events: &EventTail,
    zone: Zone,
    sent: &mut Tally,
    mut send: impl FnMut() -> Tally,
) -> Json {
    let t0 = Instant::now();
    loop {
        if let Some(event) = events
            .take_json()
            .into_iter()
            .find(|e| failover_of(e, zone) && e["from_priority"] == 0)
        {
            println!(
                "failover event after {} ms of traffic: {event}",
                t0.elapsed().as_millis()
            );
            return event;
        }
        assert!(
            t0.elapsed() < WITHIN,
            "no failover event of {}'s clients from priority 0 within {WITHIN:?}; sent {sent}",
            zone.zone
        );
        sent.add(&send());
    }
}

/// The failover event moved `zone`'s clients from priority 0 to 1 of the service's port.
fn check_failover_event(event: &Json, zone: Zone) {
    assert_eq!(
        event["service"],
        format!("{SERVICE}:{SERVICE_PORT}"),
        "{event}"
    );
    assert_eq!(event["from_priority"], 0, "{event}");
    assert_eq!(
        event["to_priority"], 1,
        "{}'s clients should fail over to priority 1 ({}): {event}",
        zone.zone, EAST_C.zone
    );
}

/// Waits until `xdsctl top` has caught up with `sent`, and checks it is within 10% per zone; then
/// that the table form lists the service.
fn check_reported(server: &XdsServer, what: &str, sent: &Tally) {
    println!("{what}: sent {sent}");
    match wait_reported(server, SERVICE, sent, WITHIN) {
        Ok(reported) => println!("{what}: xdsctl top reports {reported}"),
        Err(last) => panic!(
            "{what}: xdsctl top never settled within 10% of what was sent: sent {sent}; reported \
             {last}; off: {:?} (zone, sent, reported)\n{}",
            off_by_more_than_tolerance(sent, &last),
            server.xdsctl(&["top", "--once", "-o", "json"])
        ),
    }
    let table = server.xdsctl(&["top", "--once"]);
    println!("{what}: xdsctl top --once:\n{table}");
    assert!(
        table.contains(SERVICE),
        "{what}: the table does not list {SERVICE}:\n{table}"
    );
}

/// Two Envoys, one per zone, each sending to its own zone; then the first one's zone dies and its
/// traffic moves to the second one's zone.
fn envoys_report_the_load_they_carry_and_their_failover(protocol: XdsProtocol) {
    let mut mesh = Mesh::start_with_server_args(1, None, &server_args()).protocol(protocol);
    let events = mesh.server.tail_events(&["-o", "json"]);
    // Not `Mesh::envoy`: it sends requests of its own until one is answered, which would go
    // uncounted. Requests sent before Envoy has its routes fail in Envoy and reach no backend.
    let client_b = Envoy::start(mesh.envoy_options("lrs-envoy-b", EAST_B));
    let client_c = Envoy::start(mesh.envoy_options("lrs-envoy-c", EAST_C));
    // Envoy counts a cluster's load from the first report period that starts after the cluster
    // appeared: traffic before that would never be reported.
    for client in [&client_b, &client_c] {
        assert!(
            client.wait_next_load_report(WITHIN),
            "{} sent no load report: {:?}",
            client.node_id(),
            client.stats("load_reporter")
        );
    }
    let mut sent = Tally::default();
    for (client, zone) in [(&client_b, EAST_B), (&client_c, EAST_C)] {
        let own = traffic::until_served_by(
            client.listener_addr(),
            HOST,
            zone.zone,
            Instant::now(),
            EVERY,
            WITHIN,
            PER_LOCALITY,
        );
        println!("{} in {}: {}", client.node_id(), zone.zone, own.tally);
        assert!(
            own.switched() && own.after.all(zone.zone),
            "{}: not served by its own zone: {}",
            client.node_id(),
            own.tally
        );
        sent.add(&own.tally);
    }
    assert_no_failover_yet(&events, EAST_B);

    let t0 = Instant::now();
    mesh.kill_zone(EAST_B);
    let moved = traffic::until_served_by(
        client_b.listener_addr(),
        HOST,
        EAST_C.zone,
        t0,
        EVERY,
        WITHIN,
        PER_LOCALITY,
    );
    println!(
        "{} after its zone died: {}",
        client_b.node_id(),
        moved.tally
    );
    assert!(
        moved.switched() && moved.tally.count(WEST_A.zone) == 0,
        "traffic did not move to {}: {}",
        EAST_C.zone,
        moved.tally
    );
    sent.add(&moved.tally);
    let event = send_until_failover(&events, EAST_B, &mut sent, || {
        traffic::send(client_b.listener_addr(), HOST, BATCH, EVERY)
    });
    check_failover_event(&event, EAST_B);

    check_reported(&mesh.server, &format!("Envoy ({protocol})"), &sent);
}

#[test]
fn grpcio_reports_the_load_it_carries_and_its_failover() {
    grpc_client_reports_the_load_it_carries_and_its_failover(GrpcLibrary::Grpcio);
}

#[test]
fn grpc_js_reports_the_load_it_carries_and_its_failover() {
    grpc_client_reports_the_load_it_carries_and_its_failover(GrpcLibrary::GrpcJs);
}

/// One proxyless client in us-east1-b: its own zone, then (that zone dead) us-east1-c. Every call it
/// makes is read (none skipped), from its first to the moment it stops calling; it stays connected
/// after that, so its last interval is reported too.
fn grpc_client_reports_the_load_it_carries_and_its_failover(library: GrpcLibrary) {
    let mut mesh = Mesh::start_grpc_with_server_args(1, None, &server_args());
    let events = mesh.server.tail_events(&["-o", "json"]);
    let node = format!("lrs-{library}-b");
    let client = GrpcClient::start(library, mesh.grpc_client_options(&node, EAST_B));
    let until_served = |zone: Zone, n: usize| {
        client
            .tally_until_served(zone.zone, n, WITHIN)
            .unwrap_or_else(|| panic!("{library}: {n} calls were not answered by {}", zone.zone))
    };
    let mut sent = until_served(EAST_B, PER_LOCALITY);
    println!("{library} in {}: {sent}", EAST_B.zone);
    assert_eq!(
        sent.count(EAST_C.zone) + sent.count(WEST_A.zone),
        0,
        "{sent}"
    );
    assert_no_failover_yet(&events, EAST_B);

    mesh.kill_zone(EAST_B);
    let moved = until_served(EAST_C, PER_LOCALITY);
    println!("{library} after its zone died: {moved}");
    assert_eq!(moved.count(WEST_A.zone), 0, "{moved}");
    sent.add(&moved);
    let event = send_until_failover(&events, EAST_B, &mut sent, || until_served(EAST_C, BATCH));
    check_failover_event(&event, EAST_B);
    sent.add(&client.stop_calls());

    check_reported(&mesh.server, library.name(), &sent);
}
