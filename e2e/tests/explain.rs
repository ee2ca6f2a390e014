//! `translate::explain` predicts what a real Envoy does: the priority of every host Envoy reports, and
//! (with `expected_load`, Envoy's priority-load algorithm) where its requests go as health changes.
//!
//! The explanation is computed by the library from the very files the server reads (the mesh's
//! endpoints file and policy directory), for the Envoy's locality, and compared with Envoy's admin
//! `/clusters?format=json` and with the traffic Envoy actually sends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::envoy::{Envoy, HostStatus};
use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, Zone, EAST_B, EAST_C, HOST, NAMESPACE, SERVICE, WEST_A};
use e2e::traffic::{self, Tally};
use xds_core::config::endpoints::parse_endpoints;
use xds_core::model::{labels, ClientInfo, Locality, ServiceId};
use xds_core::translate::explain::{expected_load, explain, Explanation};
use xds_core::translate::input::ClusterInput;
use xds_core::translate::LocalityClass;
use xds_server::sources::policy::files::load_policies;

e2e::both_protocols!(explained_priorities_and_load_match_envoy);

/// us-east1 clients fail over to us-west1 after their own region: the last level exists because of a
/// rule, so its reason names the rule.
const POLICY: &str = "\
kind: FailoverPolicy
metadata: {name: explain, namespace: demo}
spec:
  failover:
  - {from: us-east1, to: us-west1}
";

const SETTLE: Duration = Duration::from_secs(15);

/// The explanation for a client in `zone`, from the endpoints file and policies the server reads now.
fn explanation(mesh: &Mesh, zone: Zone) -> Explanation {
    let path = mesh.endpoints_path();
    let text = std::fs::read_to_string(path).expect("read endpoints file");
    let registry = parse_endpoints(&path.display().to_string(), &text).expect("endpoints file");
    let id = ServiceId::new(NAMESPACE, SERVICE);
    let service = &registry.services[&id];
    let policies = load_policies(&mesh.dir().join("policies")).expect("policies");
    let policy = policies.resolve(service, &service.ports[0]).policy;
    let client = ClientInfo {
        locality: Locality::new(zone.region, zone.zone, ""),
        ..ClientInfo::default()
    };
    let class = LocalityClass::of(&client, &policy);
    let input = ClusterInput::new(
        &registry,
        std::sync::Arc::new(service.clone()),
        &service.ports[0],
        &policy,
    );
    explain(&class, &input, &policy)
}

/// (priority, address, port, zone, EDS health) of every host, sorted.
type HostRow = (u32, String, u16, String, String);

fn explained_hosts(x: &Explanation) -> Vec<HostRow> {
    let mut rows: Vec<HostRow> = x
        .levels
        .iter()
        .flat_map(|l| {
            l.endpoints.iter().map(move |e| {
                (
                    l.priority,
                    e.address.clone(),
                    e.port,
                    e.locality.zone.clone(),
                    e.health.clone(),
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

fn envoy_hosts(hosts: &[HostStatus]) -> Vec<HostRow> {
    let mut rows: Vec<HostRow> = hosts
        .iter()
        .map(|h| {
            (
                h.priority,
                h.address.clone(),
                h.port,
                h.zone.clone(),
                h.eds_health_status.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Waits until Envoy's hosts are exactly the explained ones (priority, address, port, zone, health),
/// i.e. Envoy has the EDS answer the explanation describes.
fn wait_envoy_agrees(envoy: &Envoy, x: &Explanation) {
    let want = explained_hosts(x);
    let mut last = Vec::new();
    let agreed = e2e::poll(SETTLE, Duration::from_millis(50), || {
        last = envoy_hosts(&envoy.hosts(&x.cluster));
        (last == want).then_some(())
    });
    assert!(
        agreed.is_some(),
        "Envoy's hosts never matched the explanation\nexplained: {want:#?}\nEnvoy: {last:#?}"
    );
}

/// (healthy, total) per priority as Envoy sees its hosts: healthy = EDS HEALTHY and not ejected.
fn envoy_levels(hosts: &[HostStatus]) -> Vec<(usize, usize)> {
    let mut levels: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for h in hosts {
        let l = levels.entry(h.priority).or_default();
        l.1 += 1;
        if h.eds_health_status == "HEALTHY" && !h.failed_outlier_check {
            l.0 += 1;
        }
    }
    assert!(
        levels.keys().copied().eq(0..levels.len() as u32),
        "Envoy's priorities have gaps: {levels:?}"
    );
    levels.into_values().collect()
}

/// Sends `n` requests and returns the tally; every request must succeed.
fn send(envoy: &Envoy, n: usize) -> Tally {
    let t = traffic::send(envoy.listener_addr(), HOST, n, Duration::from_millis(1));
    assert_eq!(t.failures, 0, "{t}");
    t
}

/// Percent of `t` answered by each zone, in priority order of `zones`.
fn shares(t: &Tally, zones: &[Zone]) -> Vec<f64> {
    zones
        .iter()
        .map(|z| 100.0 * t.count(z.zone) as f64 / t.total() as f64)
        .collect()
}

fn explained_priorities_and_load_match_envoy(protocol: XdsProtocol) {
    let start = Instant::now();
    let mut mesh = Mesh::start_with_policy(2, Some(POLICY)).protocol(protocol);
    let envoy = mesh.envoy("client-explain", EAST_B);
    let log = |what: String| println!("[{:5.1} s] {what}", start.elapsed().as_secs_f64());
    log("Envoy serving".into());
    let order = [EAST_B, EAST_C, WEST_A];

    // 1. All healthy: three levels, each with its rule, and every host at the explained priority.
    let x = explanation(&mesh, EAST_B);
    let summary: Vec<(u32, &str, usize)> = x
        .levels
        .iter()
        .map(|l| {
            let zone = l.endpoints[0].locality.zone.as_str();
            assert!(l.endpoints.iter().all(|e| e.locality.zone == zone));
            (l.priority, zone, l.endpoints.len())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, EAST_B.zone, 2),
            (1, EAST_C.zone, 2),
            (2, WEST_A.zone, 2)
        ]
    );
    assert_eq!(
        x.levels[0].reason,
        format!(
            "same region and zone ({}=us-east1, {}=us-east1-b)",
            labels::REGION,
            labels::ZONE
        )
    );
    assert_eq!(
        x.levels[1].reason,
        format!("same region ({}=us-east1)", labels::REGION)
    );
    assert_eq!(
        x.levels[2].reason,
        "failover target region us-west1 (policy failover from us-east1)"
    );
    wait_envoy_agrees(&envoy, &x);
    log(format!(
        "Envoy agrees with the explanation: load {:?}",
        x.load
    ));
    assert_eq!(x.load, vec![100, 0, 0]);
    let t = send(&envoy, 40);
    assert!(t.all(EAST_B.zone), "{t}");
    log(format!(
        "all healthy: explained load {:?}, traffic {t}",
        x.load
    ));

    // 2. One of the two us-east1-b endpoints not ready: P0 health 140 × 1/2 = 70 → 70/30.
    let first_b = mesh.members.iter().position(|m| m.zone == EAST_B).unwrap();
    mesh.members[first_b].ready = false;
    mesh.write_endpoints();
    let x = explanation(&mesh, EAST_B);
    assert_eq!(x.load, vec![70, 30, 0]);
    assert_eq!(x.levels[0].health_score, 70);
    wait_envoy_agrees(&envoy, &x);
    log(format!(
        "Envoy agrees with the explanation: load {:?}",
        x.load
    ));
    let seen = envoy.hosts(&x.cluster);
    assert_eq!(
        expected_load(
            &envoy_levels(&seen),
            x.overprovisioning_factor,
            x.panic_threshold
        )
        .load,
        x.load,
        "Envoy's own host view gives another split"
    );
    let t = send(&envoy, 400);
    let s = shares(&t, &order);
    log(format!(
        "one P0 host not ready: explained load {:?}, traffic {t} → {s:.1?} %",
        x.load
    ));
    // 400 requests: σ ≈ 2.3 points; allow 12 (5σ).
    assert!((s[0] - 70.0).abs() <= 12.0, "P0 share {s:?}, {t}");
    assert!((s[1] - 30.0).abs() <= 12.0, "P1 share {s:?}, {t}");
    assert_eq!(t.count(WEST_A.zone), 0, "{t}");

    // 3. The whole own zone not ready: everything to the rest of the region.
    mesh.set_zone_ready(EAST_B, false);
    let x = explanation(&mesh, EAST_B);
    assert_eq!(x.load, vec![0, 100, 0]);
    wait_envoy_agrees(&envoy, &x);
    log(format!(
        "Envoy agrees with the explanation: load {:?}",
        x.load
    ));
    let t = send(&envoy, 40);
    assert!(t.all(EAST_C.zone), "{t}");
    log(format!(
        "own zone not ready: explained load {:?}, traffic {t}",
        x.load
    ));

    // 4. us-east1-c killed, still "ready" in the file: the control plane cannot see it, so its
    //    explanation still says 0/100/0; Envoy ejects the dead hosts (outlier detection) and, fed
    //    Envoy's own view of host health, the same algorithm predicts 0/0/100, which is where traffic
    //    goes.
    let t0 = Instant::now();
    mesh.kill_zone(EAST_C);
    let sw = traffic::until_served_by(
        envoy.listener_addr(),
        HOST,
        WEST_A.zone,
        t0,
        Duration::from_millis(10),
        SETTLE,
        0,
    );
    assert!(
        sw.switched(),
        "never served by {}: {}",
        WEST_A.zone,
        sw.tally
    );
    let ejected = e2e::poll(SETTLE, Duration::from_millis(20), || {
        // Keep traffic flowing so every us-east1-c host meets its consecutive failures.
        let _ = traffic::request(envoy.listener_addr(), HOST);
        let hosts = envoy.hosts(&x.cluster);
        hosts
            .iter()
            .filter(|h| h.zone == EAST_C.zone)
            .all(|h| h.failed_outlier_check)
            .then_some(hosts)
    })
    .expect("us-east1-c hosts never all ejected");
    log(format!(
        "traffic on {} after {} ms; us-east1-c ejected",
        WEST_A.zone,
        sw.millis()
    ));
    let x = explanation(&mesh, EAST_B);
    assert_eq!(
        x.load,
        vec![0, 100, 0],
        "the file still lists us-east1-c ready"
    );
    let envoy_view = expected_load(
        &envoy_levels(&ejected),
        x.overprovisioning_factor,
        x.panic_threshold,
    );
    assert_eq!(envoy_view.load, vec![0, 0, 100]);
    let t = send(&envoy, 40);
    assert!(t.all(WEST_A.zone), "{t}");
    log(format!(
        "us-east1-c dead (ejected by Envoy): explained from the file {:?}, from Envoy's host view \
         {:?}, traffic {t}",
        x.load, envoy_view.load
    ));

    // 5. Marked not ready in the file too: the explanation catches up with Envoy.
    mesh.set_zone_ready(EAST_C, false);
    let x = explanation(&mesh, EAST_B);
    assert_eq!(x.load, vec![0, 0, 100]);
    wait_envoy_agrees(&envoy, &x);
    log(format!(
        "Envoy agrees with the explanation: load {:?}",
        x.load
    ));
    let t = send(&envoy, 40);
    assert!(t.all(WEST_A.zone), "{t}");
    log(format!(
        "us-east1-c not ready: explained load {:?}, traffic {t}",
        x.load
    ));
}
