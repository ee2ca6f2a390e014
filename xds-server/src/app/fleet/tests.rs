//! One evaluation at a time, on a real LoadBook and snapshot: what reaches the publisher, the admin
//! report and the event stream.

use super::*;
use xds_core::model::{Health, Locality, Registry};
use xds_core::observed::{ReportedLoad, ServedClusters};
use xds_core::policy::{FailoverPolicy, FleetFailover, FleetMode};
use xds_core::testing::{mesh, xds};

const CLUSTER: &str = "web.shop:8080";

fn zone(z: &str) -> Locality {
    Locality::new("r", z, "")
}

/// shop/web with two endpoints in each of z1 and z2, every service under `mode`.
fn snapshot(mode: FleetMode) -> Snapshot {
    let endpoints = ["10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"]
        .iter()
        .enumerate()
        .map(|(i, ip)| mesh::endpoint(ip, zone(if i < 2 { "z1" } else { "z2" }), Health::Healthy))
        .collect();
    let registry = Arc::new(Registry::from_services([mesh::shop_service(
        "web", 8080, endpoints,
    )]));
    let policies = mesh::mesh_wide(FailoverPolicy {
        fleet_failover: FleetFailover {
            mode,
            ..FleetFailover::default()
        },
        ..FailoverPolicy::default()
    });
    xds::snapshot_with(None, registry, policies)
}

/// `client` reports `requests` to `zone` of `cluster` at `at`, `errors` of them failed. The book
/// records only what the snapshot serves, as the LRS service's book does.
fn report(
    book: &Mutex<LoadBook>,
    client: u64,
    cluster: &str,
    zone_name: &str,
    errors: u64,
    at: Instant,
) {
    let served = Arc::new(ServedClusters::of(&snapshot(FleetMode::Enforce)));
    let load = ReportedLoad {
        locality: zone(zone_name),
        priority: 0,
        successful: 20 - errors,
        errors,
        in_flight: 0,
    };
    let mut book = lock(book);
    book.set_served(served);
    let _ = book.record(client, &zone(zone_name), cluster, &load, at);
}

struct Rig {
    book: Mutex<LoadBook>,
    outputs: FleetOutputs,
    ejections: watch::Receiver<Arc<FleetEjections>>,
    report: watch::Receiver<FleetReport>,
    events: tokio::sync::broadcast::Receiver<XdsEvent>,
    verdicts: FleetVerdicts,
}

impl Rig {
    fn new() -> Self {
        let (ejections_tx, ejections) = watch::channel(Arc::default());
        let (report_tx, report) = watch::channel(FleetReport::default());
        let registry = ClientRegistry::new();
        let events = registry.subscribe();
        Self {
            book: Mutex::new(LoadBook::new(Duration::from_secs(30))),
            outputs: FleetOutputs {
                ejections: ejections_tx,
                report: report_tx,
                events: registry,
            },
            ejections,
            report,
            events,
            verdicts: FleetVerdicts::new(),
        }
    }

    fn evaluate(&mut self, snapshot: &Snapshot, now: Instant) {
        evaluate_once(&mut self.verdicts, &self.book, snapshot, &self.outputs, now);
    }

    /// The zones ejected from web, if the ejections changed since the last call.
    fn new_ejections(&mut self) -> Option<Vec<String>> {
        if !self.ejections.has_changed().unwrap() {
            return None;
        }
        let e = self.ejections.borrow_and_update().of(CLUSTER);
        Some(e.iter().map(|l| l.zone.clone()).collect())
    }

    fn fleet_events(&mut self) -> Vec<(String, String, String)> {
        self.fleet_events_with_reasons()
            .into_iter()
            .map(|(kind, service, locality, _)| (kind, service, locality))
            .collect()
    }

    fn fleet_events_with_reasons(&mut self) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            if let XdsEvent::Fleet {
                kind,
                service,
                locality,
                reason,
                ..
            } = e
            {
                out.push((kind.to_string(), service, locality, reason));
            }
        }
        out
    }
}

#[test]
fn two_failing_clients_eject_a_zone_and_turning_it_off_restores_it() {
    let mut rig = Rig::new();
    let enforce = snapshot(FleetMode::Enforce);
    let t0 = Instant::now();
    // One client's reports, however bad, do nothing.
    report(&rig.book, 1, CLUSTER, "z1", 20, t0);
    report(&rig.book, 2, CLUSTER, "z2", 0, t0);
    rig.evaluate(&enforce, t0);
    assert_eq!(rig.new_ejections(), None);
    assert!(rig.fleet_events().is_empty());
    // A second client sees z1 fail too: z1 is ejected, once.
    report(&rig.book, 2, CLUSTER, "z1", 15, t0);
    rig.evaluate(&enforce, t0 + Duration::from_secs(1));
    assert_eq!(rig.new_ejections(), Some(vec!["z1".to_string()]));
    assert_eq!(
        rig.fleet_events(),
        [(
            "fleet_ejected".to_string(),
            CLUSTER.to_string(),
            "r/z1/".to_string()
        )]
    );
    let report = rig.report.borrow_and_update().clone();
    assert_eq!(report.len(), 1);
    let z1 = &report[0].localities[0];
    assert_eq!(
        (
            z1.state,
            z1.evidence.reporters,
            z1.evidence.requests,
            z1.evidence.errors
        ),
        (LocalityState::Ejected, 2, 40, 35)
    );
    rig.evaluate(&enforce, t0 + Duration::from_secs(2));
    assert_eq!(
        rig.new_ejections(),
        None,
        "an unchanged verdict republishes nothing"
    );

    // The policy switched off: restored at once.
    let off = snapshot(FleetMode::Off);
    rig.evaluate(&off, t0 + Duration::from_secs(3));
    assert_eq!(rig.new_ejections(), Some(vec![]));
    let events = rig.fleet_events_with_reasons();
    assert_eq!(events.len(), 1, "{events:?}");
    let (kind, service, locality, reason) = &events[0];
    assert_eq!(
        (kind.as_str(), service.as_str(), locality.as_str()),
        ("fleet_restored", CLUSTER, "r/z1/")
    );
    assert!(reason.contains("fleetFailover is off"), "{reason}");
    assert!(rig.report.borrow().is_empty());
    // Forgotten: the next evaluation of an off policy looks at nothing.
    assert!(fleet_clusters(&off, &rig.verdicts).is_empty());
}

#[test]
fn observe_mode_emits_but_never_ejects_and_reports_on_unknown_clusters_are_ignored() {
    let mut rig = Rig::new();
    let observe = snapshot(FleetMode::Observe);
    let t0 = Instant::now();
    for client in 1..=3 {
        report(&rig.book, client, CLUSTER, "z1", 20, t0);
        report(&rig.book, client, "nobody.shop:1", "z1", 20, t0);
        report(&rig.book, client, CLUSTER, "made-up", 20, t0);
    }
    rig.evaluate(&observe, t0);
    assert_eq!(rig.new_ejections(), None);
    assert_eq!(
        rig.fleet_events(),
        [(
            "fleet_observed".to_string(),
            CLUSTER.to_string(),
            "r/z1/".to_string()
        )]
    );
    let report = rig.report.borrow().clone();
    let zones: Vec<(&str, LocalityState)> = report[0]
        .localities
        .iter()
        .map(|l| (l.locality.zone.as_str(), l.state))
        .collect();
    assert_eq!(
        zones,
        [("z1", LocalityState::Observed), ("z2", LocalityState::Ok)]
    );
}
