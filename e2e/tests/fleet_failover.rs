//! Fleet failover (`fleetFailover` in the policy) with real Envoys: the server judges a locality from
//! the load reports (LRS) of every client of the service, and with `mode: enforce` sends its
//! endpoints UNHEALTHY to everyone, so a client that has not sent anything yet never touches it.
//!
//! Three Envoys in us-east1-b. Clients 1 and 3 send traffic from the start (`minReporters: 2`: one
//! client's reports never eject anything); client 2 stays idle. The zone's backend dies: every
//! request of clients 1 and 3 still succeeds (the route retries into the next priority), but each
//! first attempt fails in us-east1-b and their reports say so. The server's verdict is a
//! `fleet_ejected` event, `ejected` in `xdsctl explain` and us-east1-b UNHEALTHY in EDS; only then client 2 sends its first
//! requests: all served by us-east1-c, with no connection failure and no retry in its Envoy's stats,
//! and nothing sent to us-east1-b's host. The zone comes back: after `ejectFor` the verdict is lifted
//! (`fleet_restored`) and traffic returns. With `mode: observe` the verdict is only an event
//! (`fleet_observed`, `observed` in `xdsctl explain`): EDS does not change.
//!
//! The delay from the zone's death to the verdict is measured and printed.
//!
//! Envoy's own outlier detection is off in the policy: it would stop each client sending to the
//! dead zone after its own first failures, which is the per-client cost fleet failover saves; here
//! the clients keep trying it, so their reports carry the failures the fleet judges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::envoy::{Envoy, HostStatus};
use e2e::modes::XdsProtocol;
use e2e::server::EventTail;
use e2e::topology::{Mesh, Zone, CLUSTER, EAST_B, EAST_C, HOST, WEST_A};
use e2e::traffic::{self, Tally};
use serde_json::Value as Json;

e2e::both_protocols!(
    a_zone_the_fleet_saw_die_is_never_touched_by_a_client_that_starts_after_the_verdict,
    observe_mode_reports_the_verdict_and_changes_nothing_in_eds,
);

/// Generous: reports every second, a window of a few seconds, a shared 2-core machine.
const WITHIN: Duration = Duration::from_secs(90);
/// One request every 20 ms from each busy client.
const EVERY: Duration = Duration::from_millis(20);
/// Requests the idle client sends once the verdict is in.
const FIRST_REQUESTS: usize = 50;

/// The policy: fleet failover in `mode`, judged over 5 s of reports; an ejection lasts 20 s (long
/// enough for the checks made while it holds, on a loaded machine); outlier detection off (see the
/// module's comment).
fn fleet_policy(mode: &str) -> String {
    format!(
        "kind: FailoverPolicy\nmetadata: {{name: fleet, namespace: demo}}\nspec:\n  service: echo\n  \
         outlierDetection: {{enabled: false}}\n  fleetFailover: {{mode: {mode}, minReporters: 2, \
         minRequests: 20, errorRatio: 0.5, window: 5s, ejectFor: 20s, maxEjectedPercent: 50}}\n"
    )
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Is `event` a fleet event of `kind` about `zone`?
fn fleet_event(event: &Json, kind: &str, zone: Zone) -> bool {
    event["kind"] == kind
        && event["locality"]
            .as_str()
            .is_some_and(|l| l.split('/').any(|part| part == zone.zone))
}

/// The mesh (one backend per zone, reports every second), the event tail, and the three Envoys in
/// us-east1-b, none of which has sent anything.
struct Fleet {
    mesh: Mesh,
    events: EventTail,
    clients: [Envoy; 3],
}

impl Fleet {
    fn start(mode: &str, protocol: XdsProtocol) -> Fleet {
        let args = ["--load-report-interval".to_string(), "1s".to_string()];
        let mesh =
            Mesh::start_with_server_args(1, Some(&fleet_policy(mode)), &args).protocol(protocol);
        let events = mesh.server.tail_events(&["-o", "json"]);
        // `Envoy::start`, not `Mesh::envoy` (which sends requests until one is answered): client 2
        // must not have sent anything when the verdict comes.
        let clients = ["fleet-1", "fleet-2", "fleet-3"]
            .map(|node| Envoy::start(mesh.envoy_options(node, EAST_B)));
        Fleet {
            mesh,
            events,
            clients,
        }
    }

    /// Clients 1 and 3 send a request every [`EVERY`] until `stop` is set; each thread returns its
    /// tally.
    fn start_busy_clients<'scope>(
        &self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
    ) -> [std::thread::ScopedJoinHandle<'scope, Tally>; 2] {
        [0, 2].map(|i| {
            let addr = self.clients[i].listener_addr();
            scope.spawn(move || traffic::send_until_stopped(addr, HOST, EVERY, stop))
        })
    }

    /// Waits until `xdsctl top` shows both busy clients reporting requests to us-east1-b.
    fn wait_both_busy_clients_reported(&self) {
        let mut last = Json::Null;
        let seen = e2e::poll(WITHIN, Duration::from_millis(500), || {
            last = self.mesh.server.xdsctl_json(&["top", "--once"]);
            let reporters: u64 = last["services"]
                .as_array()?
                .iter()
                .flat_map(|s| s["localities"].as_array().into_iter().flatten())
                .filter(|l| l["locality"]["zone"] == EAST_B.zone)
                .map(|l| l["reporters"].as_u64().unwrap_or(0))
                .sum();
            (reporters >= 2).then_some(())
        });
        assert!(
            seen.is_some(),
            "xdsctl top never showed two clients reporting {}: {last}",
            EAST_B.zone
        );
    }

    /// Kills us-east1-b and waits for the fleet event of `kind` about it. Returns the event and the
    /// delay from the death to the verdict (the event's time).
    fn kill_zone_until(&mut self, kind: &str) -> (Json, Duration) {
        let died = SystemTime::now();
        self.mesh.kill_zone(EAST_B);
        let events = self
            .events
            .read_json_until(WITHIN, |e| fleet_event(e, kind, EAST_B));
        let event = events
            .last()
            .cloned()
            .expect("read_json_until returns the match");
        let at = event["at_unix_ms"]
            .as_i64()
            .unwrap_or_else(|| unix_ms(SystemTime::now()));
        let delay = Duration::from_millis((at - unix_ms(died)).max(0) as u64);
        println!(
            "{kind}: verdict {} ms after {} died: {event}",
            delay.as_millis(),
            EAST_B.zone
        );
        (event, delay)
    }
}

/// The state (`ok`, `observed`, `ejected`) `xdsctl explain` gives `zone` in the fleet verdict on the
/// service port, as `node` is served.
fn explained_fleet_state(fleet: &Fleet, node: &str, zone: Zone) -> String {
    let json = fleet
        .mesh
        .server
        .xdsctl_json(&["explain", "echo.demo", "--node", node]);
    json["explanations"][0]["fleet"]["localities"]
        .as_array()
        .and_then(|localities| {
            localities
                .iter()
                .find(|l| l["locality"]["zone"] == zone.zone)
        })
        .and_then(|l| l["state"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "xdsctl explain shows no fleet verdict on {}: {json}",
                zone.zone
            )
        })
}

/// us-east1-b's hosts in `envoy`'s cluster.
fn zone_hosts(envoy: &Envoy, zone: Zone) -> Vec<HostStatus> {
    envoy
        .hosts(CLUSTER)
        .into_iter()
        .filter(|h| h.zone == zone.zone)
        .collect()
}

/// Waits until every host of `zone` in `envoy`'s EDS has `health` (`HEALTHY`, `UNHEALTHY`).
fn wait_eds_health(envoy: &Envoy, zone: Zone, health: &str) {
    let mut last = Vec::new();
    let reached = e2e::poll(WITHIN, Duration::from_millis(100), || {
        last = zone_hosts(envoy, zone);
        (!last.is_empty() && last.iter().all(|h| h.eds_health_status == health)).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}: {}'s hosts never all {health} in EDS: {last:?}",
        envoy.node_id(),
        zone.zone
    );
}

/// The counter `cluster.<CLUSTER>.NAME` of `envoy` (every cluster counter exists from the start).
fn cluster_counter(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat_u64(&format!("cluster.{CLUSTER}.{name}"))
        .unwrap_or_else(|| panic!("{}: no stat cluster.{CLUSTER}.{name}", envoy.node_id()))
}

fn a_zone_the_fleet_saw_die_is_never_touched_by_a_client_that_starts_after_the_verdict(
    protocol: XdsProtocol,
) {
    let mut fleet = Fleet::start("enforce", protocol);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let busy = fleet.start_busy_clients(s, &stop);
        fleet.wait_both_busy_clients_reported();
        let two_before = fleet.clients[1].eds_version(CLUSTER);

        let (_, delay) = fleet.kill_zone_until("fleet_ejected");
        println!(
            "fleet verdict ({protocol}): {} ms from the death of {} to fleet_ejected",
            delay.as_millis(),
            EAST_B.zone
        );
        let two = &fleet.clients[1];
        wait_eds_health(two, EAST_B, "UNHEALTHY");
        assert_ne!(
            two.eds_version(CLUSTER),
            two_before,
            "the verdict reached client 2 as a new EDS answer"
        );

        assert_eq!(explained_fleet_state(&fleet, "fleet-2", EAST_B), "ejected");

        // Client 2's first requests, after the verdict.
        let first = traffic::send(two.listener_addr(), HOST, FIRST_REQUESTS, EVERY);
        println!("client 2's first requests after the verdict: {first}");
        assert!(
            first.all(EAST_C.zone),
            "client 2 must be served by {} alone: {first}",
            EAST_C.zone
        );
        let connect_failures = cluster_counter(two, "upstream_cx_connect_fail");
        let retries = cluster_counter(two, "upstream_rq_retry");
        let to_dead_zone: u64 = zone_hosts(two, EAST_B)
            .iter()
            .map(|h| h.stat("rq_total") + h.stat("cx_connect_fail"))
            .sum();
        println!(
            "client 2: upstream_cx_connect_fail={connect_failures} upstream_rq_retry={retries} \
             requests and connection attempts to {}: {to_dead_zone}",
            EAST_B.zone
        );
        assert_eq!(
            connect_failures, 0,
            "client 2 tried to connect to a dead host"
        );
        assert_eq!(retries, 0, "client 2 had to retry");
        assert_eq!(to_dead_zone, 0, "client 2 sent to {}", EAST_B.zone);

        // The zone comes back; once the ejection is over, traffic returns to it.
        fleet.mesh.restore_zone(EAST_B);
        let restored = fleet
            .events
            .read_json_until(WITHIN, |e| fleet_event(e, "fleet_restored", EAST_B));
        println!("restored: {}", restored.last().expect("the match"));
        let back = traffic::until_served_by(
            two.listener_addr(),
            HOST,
            EAST_B.zone,
            Instant::now(),
            EVERY,
            WITHIN,
            FIRST_REQUESTS,
        );
        println!("client 2 once {} is back: {}", EAST_B.zone, back.tally);
        assert!(
            back.switched() && back.after.all(EAST_B.zone),
            "traffic did not return to {}: {}",
            EAST_B.zone,
            back.tally
        );
        assert_eq!(back.tally.count(WEST_A.zone), 0, "{}", back.tally);

        stop.store(true, Ordering::SeqCst);
        for (i, client) in busy.into_iter().enumerate() {
            let tally: Tally = client.join().expect("traffic thread");
            println!("busy client {}: {tally}", [1, 3][i]);
            // Retried into the next priority, the zone's death costs the busy clients (almost)
            // nothing either; as in the failover tests, a request caught mid-flight may fail.
            assert!(tally.failures <= 2, "{tally}");
        }
    });
}

fn observe_mode_reports_the_verdict_and_changes_nothing_in_eds(protocol: XdsProtocol) {
    let mut fleet = Fleet::start("observe", protocol);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let busy = fleet.start_busy_clients(s, &stop);
        fleet.wait_both_busy_clients_reported();
        let versions_before: Vec<Option<String>> = fleet
            .clients
            .iter()
            .map(|c| c.eds_version(CLUSTER))
            .collect();

        let (_, delay) = fleet.kill_zone_until("fleet_observed");
        println!(
            "fleet verdict, observed ({protocol}): {} ms from the death of {} to fleet_observed",
            delay.as_millis(),
            EAST_B.zone
        );
        assert_eq!(explained_fleet_state(&fleet, "fleet-2", EAST_B), "observed");
        let versions_after: Vec<Option<String>> = fleet
            .clients
            .iter()
            .map(|c| c.eds_version(CLUSTER))
            .collect();
        assert_eq!(
            versions_after, versions_before,
            "observe must not change what EDS sends"
        );
        for client in &fleet.clients {
            let hosts = zone_hosts(client, EAST_B);
            assert!(
                !hosts.is_empty() && hosts.iter().all(|h| h.eds_health_status == "HEALTHY"),
                "{}: {} must stay HEALTHY in EDS under observe: {hosts:?}",
                client.node_id(),
                EAST_B.zone
            );
        }
        stop.store(true, Ordering::SeqCst);
        for client in busy {
            client.join().expect("traffic thread");
        }
    });
}
