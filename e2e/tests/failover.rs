//! Locality failover with a real Envoy: traffic stays in the client's zone, moves to the same region's
//! other zone when that zone dies, then to the other region, and comes back.

use std::time::Duration;

use e2e::failover::{Failover, EVERY};
use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, EAST_B, EAST_C, WEST_A};
use e2e::traffic::Switch;

e2e::both_protocols!(
    traffic_stays_in_own_zone_then_fails_over_zone_then_region,
    traffic_returns_when_the_zone_is_ready_again_in_the_endpoints_file,
    traffic_returns_after_outlier_ejection_expires_when_backends_come_back,
);

/// Failed requests a zone loss may cost (the route's retries should make it 0).
const MAX_FAILED_PER_FAILOVER: usize = 2;

fn check_failover(what: &str, sw: &Switch, to: &str, forbidden: &[&str]) {
    println!(
        "{what}: moved to {to} in {} ms, {} failed requests; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(
        sw.switched(),
        "{what}: traffic never reached {to}: {}",
        sw.tally
    );
    assert!(
        sw.tally.failures <= MAX_FAILED_PER_FAILOVER,
        "{what}: {} failed requests (at most {MAX_FAILED_PER_FAILOVER} allowed): {}",
        sw.tally.failures,
        sw.tally
    );
    for zone in forbidden {
        assert_eq!(
            sw.tally.count(zone),
            0,
            "{what}: traffic leaked to {zone}: {}",
            sw.tally
        );
    }
    assert!(
        sw.after.all(to),
        "{what}: traffic did not stay in {to}: {}",
        sw.after
    );
}

fn traffic_stays_in_own_zone_then_fails_over_zone_then_region(protocol: XdsProtocol) {
    let mut scene = Failover::start(Mesh::start(2).protocol(protocol), "client-b");

    let steady = scene.send(100, Duration::from_millis(5));
    println!("steady state: {steady}");
    assert!(
        steady.all(EAST_B.zone),
        "traffic left the client's zone: {steady}"
    );
    // Both local backends share the load.
    for b in scene.mesh.backends_in(EAST_B) {
        assert!(b.requests() > 0, "{} got no traffic", b.name());
    }

    let sw = scene.kill_zone(EAST_B, EAST_C, Duration::from_secs(10), 100);
    check_failover("zone us-east1-b lost", &sw, EAST_C.zone, &[WEST_A.zone]);

    let sw = scene.kill_zone(EAST_C, WEST_A, Duration::from_secs(10), 100);
    check_failover("region us-east1 lost", &sw, WEST_A.zone, &[]);
}

fn traffic_returns_when_the_zone_is_ready_again_in_the_endpoints_file(protocol: XdsProtocol) {
    let mut scene = Failover::start(Mesh::start(2).protocol(protocol), "client-b-ready");
    assert!(scene.send(20, EVERY).all(EAST_B.zone));

    let sw = scene.set_zone_ready(EAST_B, false, EAST_C, Duration::from_secs(10), 50);
    check_failover(
        "us-east1-b marked not ready",
        &sw,
        EAST_C.zone,
        &[WEST_A.zone],
    );
    assert_eq!(
        sw.tally.failures, 0,
        "a planned drain must cost nothing: {}",
        sw.tally
    );
    assert!(
        sw.millis() < 3000,
        "the endpoints edit took {} ms to move traffic",
        sw.millis()
    );

    let sw = scene.set_zone_ready(EAST_B, true, EAST_B, Duration::from_secs(10), 50);
    check_failover("us-east1-b ready again", &sw, EAST_B.zone, &[WEST_A.zone]);
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert!(
        sw.millis() < 3000,
        "the endpoints edit took {} ms to move traffic",
        sw.millis()
    );
}

/// Short ejections so a revived zone is retried quickly.
const SHORT_EJECTION_POLICY: &str = "\
kind: FailoverPolicy
metadata: {name: fast-return, namespace: demo}
spec:
  outlierDetection: {consecutive5xx: 3, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}
";

fn traffic_returns_after_outlier_ejection_expires_when_backends_come_back(protocol: XdsProtocol) {
    let mesh = Mesh::start_with_policy(2, Some(SHORT_EJECTION_POLICY)).protocol(protocol);
    let mut scene = Failover::start(mesh, "client-b-return");
    assert!(scene.send(20, EVERY).all(EAST_B.zone));

    let sw = scene.kill_zone(EAST_B, EAST_C, Duration::from_secs(10), 20);
    check_failover("zone us-east1-b lost", &sw, EAST_C.zone, &[WEST_A.zone]);
    let ejected = scene
        .envoy
        .hosts(e2e::topology::CLUSTER)
        .iter()
        .filter(|h| h.zone == EAST_B.zone && h.failed_outlier_check)
        .count();
    println!("us-east1-b hosts ejected by outlier detection: {ejected}");

    // baseEjectionTime 2 s, evaluated every 1 s; a host ejected twice stays out 4 s.
    let sw = scene.restore_zones(&[EAST_B], EAST_B, Duration::from_secs(20), 50);
    println!(
        "us-east1-b back: traffic returned in {} ms, {} failed requests; {}",
        sw.millis(),
        sw.tally.failures,
        sw.tally
    );
    assert!(
        sw.switched(),
        "traffic never returned to us-east1-b: {}",
        sw.tally
    );
    assert!(sw.millis() < 10_000, "return took {} ms", sw.millis());
    assert_eq!(sw.tally.failures, 0, "{}", sw.tally);
    assert_eq!(sw.tally.count(WEST_A.zone), 0, "{}", sw.tally);
    assert!(
        sw.after.all(EAST_B.zone),
        "traffic did not stay back: {}",
        sw.after
    );
}
