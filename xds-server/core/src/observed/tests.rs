use super::*;
use crate::model::{ClientInfo, ClientKind, Health};
use crate::testing::{mesh, xds};

const CLUSTER: &str = "web.shop:80";

fn zone(z: &str) -> Locality {
    Locality::new("r", z, "")
}

/// `web.shop:80` with endpoints in zones a, b and c.
fn served() -> Arc<ServedClusters> {
    let service = mesh::shop_service(
        "web",
        80,
        vec![
            mesh::endpoint("10.0.0.1", zone("a"), Health::Healthy),
            mesh::endpoint("10.0.0.2", zone("b"), Health::Healthy),
            mesh::endpoint("10.0.0.3", zone("c"), Health::Healthy),
        ],
    );
    let snapshot = xds::snapshot(
        None,
        Arc::new(crate::model::Registry::from_services([service])),
    );
    Arc::new(ServedClusters::of(&snapshot))
}

fn book(window: Duration) -> LoadBook {
    let mut book = LoadBook::new(window);
    book.set_served(served());
    book
}

fn load(locality: Locality, priority: u32, successful: u64, errors: u64) -> ReportedLoad {
    ReportedLoad {
        locality,
        priority,
        successful,
        errors,
        in_flight: 1,
    }
}

#[test]
fn served_clusters_name_service_port_and_localities() {
    let served = served();
    let web = served.get(CLUSTER).unwrap();
    assert_eq!((web.service.as_str(), web.port), ("web.shop", 80));
    assert_eq!(
        web.localities
            .iter()
            .map(|l| Locality::clone(l))
            .collect::<Vec<_>>(),
        [zone("a"), zone("b"), zone("c")]
    );
    assert!(served.knows(CLUSTER, &zone("b")));
    assert!(!served.knows(CLUSTER, &zone("x")));
    assert!(!served.knows("other.shop:80", &zone("a")));
}

#[test]
fn window_expires_but_totals_stay() {
    let start = Instant::now();
    let mut book = book(Duration::from_secs(10));
    book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 0, 90, 10), start)
        .unwrap();
    let view = book.view(start + Duration::from_secs(5));
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].requests_per_second, 10.0);
    assert_eq!(view[0].errors_per_second, 1.0);
    assert!((view[0].error_ratio - 0.1).abs() < 1e-9);
    assert_eq!((view[0].requests_total, view[0].reporters), (100, 1));
    assert_eq!(book.reporting_clients(start + Duration::from_secs(5)), 1);
    let later = start + Duration::from_secs(11);
    let view = book.view(later);
    assert_eq!(view[0].requests_per_second, 0.0);
    assert_eq!((view[0].in_flight, view[0].reporters), (0, 0));
    assert_eq!((view[0].requests_total, view[0].errors_total), (100, 10));
    assert_eq!(book.reporting_clients(later), 0);
}

#[test]
fn clients_are_summed_and_forgotten_but_their_totals_stay() {
    let now = Instant::now();
    let mut book = book(Duration::from_secs(10));
    for client in [1, 2] {
        book.record(client, &zone("a"), CLUSTER, &load(zone("a"), 0, 50, 0), now)
            .unwrap();
    }
    let view = book.view(now);
    assert_eq!(view[0].requests_per_second, 10.0);
    assert_eq!((view[0].in_flight, view[0].reporters), (2, 2));
    book.forget(1);
    let view = book.view(now);
    assert_eq!(view[0].requests_per_second, 5.0);
    assert_eq!((view[0].in_flight, view[0].reporters), (1, 1));
    assert_eq!(view[0].requests_total, 100);
}

#[test]
fn clusters_localities_and_priorities_not_served_are_dropped_and_hold_nothing() {
    let now = Instant::now();
    let mut book = book(Duration::from_secs(10));
    for i in 0..10_000u64 {
        let made_up = Locality::new("r", &format!("zone-{i}"), "");
        let cluster = format!("made-up-{i}.shop:80");
        assert_eq!(
            book.record(i, &made_up, &cluster, &load(zone("a"), 0, 1, 0), now),
            Err(Dropped::UnknownCluster)
        );
        assert_eq!(
            book.record(i, &zone("a"), CLUSTER, &load(made_up, 0, 1, 0), now),
            Err(Dropped::UnknownLocality)
        );
    }
    assert_eq!(
        book.record(
            1,
            &zone("a"),
            CLUSTER,
            &load(zone("a"), MAX_PRIORITY + 1, 1, 0),
            now
        ),
        Err(Dropped::Priority)
    );
    assert_eq!(book.total_rows(), 0);
    assert!(book.view(now).is_empty());
    assert_eq!(book.reporting_clients(now), 0);
    assert_eq!(
        book.clients.len(),
        0,
        "no client entry for reports that were all dropped"
    );
    assert_eq!(book.dropped(Dropped::UnknownCluster), 10_000);
    assert_eq!(book.dropped(Dropped::UnknownLocality), 10_000);
    assert_eq!(book.dropped(Dropped::Priority), 1);
}

#[test]
fn nothing_is_recorded_before_the_served_clusters_are_known() {
    let mut book = LoadBook::new(Duration::from_secs(10));
    assert_eq!(
        book.record(
            1,
            &zone("a"),
            CLUSTER,
            &load(zone("a"), 0, 1, 0),
            Instant::now()
        ),
        Err(Dropped::UnknownCluster)
    );
}

#[test]
fn rows_of_services_and_localities_that_go_are_dropped_totals_included() {
    let now = Instant::now();
    let mut book = book(Duration::from_secs(10));
    for z in ["a", "b"] {
        book.record(1, &zone("a"), CLUSTER, &load(zone(z), 0, 5, 0), now)
            .unwrap();
    }
    // Zone b loses its endpoints.
    let service = mesh::shop_service(
        "web",
        80,
        vec![mesh::endpoint("10.0.0.1", zone("a"), Health::Healthy)],
    );
    let registry = Arc::new(crate::model::Registry::from_services([service]));
    book.set_served(Arc::new(ServedClusters::of(&xds::snapshot(None, registry))));
    let view = book.view(now);
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].key.locality, zone("a"));
    // The service goes.
    let empty = Arc::new(crate::model::Registry::default());
    book.set_served(Arc::new(ServedClusters::of(&xds::snapshot(None, empty))));
    assert!(book.view(now).is_empty());
    assert_eq!(book.total_rows(), 0);
}

#[test]
fn rows_per_client_and_totals_are_bounded() {
    let now = Instant::now();
    // More clusters than a client may hold rows.
    let clusters = MAX_ROWS_PER_CLIENT + 5;
    let registry = crate::model::Registry::from_services((0..clusters).map(|i| {
        mesh::shop_service(
            &format!("s{i}"),
            80,
            vec![mesh::endpoint("10.0.0.1", zone("a"), Health::Healthy)],
        )
    }));
    let mut book = LoadBook::new(Duration::from_secs(10));
    book.set_served(Arc::new(ServedClusters::of(&xds::snapshot(
        None,
        Arc::new(registry),
    ))));
    let cluster = |i: usize| format!("s{i}.shop:80");
    for i in 0..clusters {
        let _ = book.record(1, &zone("a"), &cluster(i), &load(zone("a"), 0, 1, 0), now);
    }
    assert_eq!(book.dropped(Dropped::ClientRows), 5);
    assert_eq!(book.total_rows(), MAX_ROWS_PER_CLIENT);
    // Every client in a class of its own (classes are where clients say they are): only the totals'
    // cap bounds what they leave behind.
    let clients = MAX_TOTAL_ROWS / MAX_ROWS_PER_CLIENT + 3;
    for client in 2..=clients as u64 {
        let class = Locality::new("r", &format!("claimed-{client}"), "");
        for i in 0..MAX_ROWS_PER_CLIENT {
            book.record(client, &class, &cluster(i), &load(zone("a"), 0, 1, 0), now)
                .unwrap();
        }
    }
    assert_eq!(book.total_rows(), MAX_TOTAL_ROWS);
    // Past the totals' cap a row still counts in the window while its client is connected.
    assert_eq!(book.view(now).len(), clients * MAX_ROWS_PER_CLIENT);
    for client in 1..=clients as u64 {
        book.forget(client);
    }
    assert_eq!(book.view(now).len(), MAX_TOTAL_ROWS);
}

#[test]
fn a_client_whose_class_changes_starts_its_window_again() {
    let now = Instant::now();
    let mut book = book(Duration::from_secs(10));
    book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 0, 5, 0), now)
        .unwrap();
    book.record(1, &zone("b"), CLUSTER, &load(zone("b"), 0, 7, 0), now)
        .unwrap();
    let live: Vec<(Locality, u32)> = book
        .view(now)
        .into_iter()
        .filter(|r| r.reporters > 0)
        .map(|r| (r.key.class, r.reporters))
        .collect();
    assert_eq!(live, [(zone("b"), 1)]);
}

#[test]
fn samples_per_row_are_bounded() {
    let now = Instant::now();
    let mut book = book(Duration::from_secs(3600));
    for _ in 0..MAX_SAMPLES_PER_ROW * 2 {
        book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 1, 1, 0), now)
            .unwrap();
    }
    let view = book.view(now);
    assert_eq!(view[0].requests_total, (MAX_SAMPLES_PER_ROW * 2) as u64);
    assert_eq!(view[0].requests, MAX_SAMPLES_PER_ROW as u64);
}

#[test]
fn locality_windows_sum_classes_and_priorities_and_count_clients_once() {
    let start = Instant::now();
    let mut book = book(Duration::from_secs(30));
    book.record(1, &zone("a"), CLUSTER, &load(zone("b"), 1, 8, 2), start)
        .unwrap();
    book.record(1, &zone("a"), CLUSTER, &load(zone("b"), 0, 10, 0), start)
        .unwrap();
    book.record(2, &zone("c"), CLUSTER, &load(zone("b"), 0, 5, 5), start)
        .unwrap();
    // Older than the window asked for: left out.
    let now = start + Duration::from_secs(20);
    book.record(3, &zone("c"), CLUSTER, &load(zone("a"), 0, 7, 0), now)
        .unwrap();
    assert_eq!(
        book.locality_windows(now, Duration::from_secs(10)),
        [LocalityWindow {
            cluster: CLUSTER.into(),
            locality: zone("a"),
            reporters: 1,
            requests: 7,
            errors: 0,
        }]
    );
    assert_eq!(
        book.locality_windows(now, Duration::from_secs(30)),
        [
            LocalityWindow {
                cluster: CLUSTER.into(),
                locality: zone("a"),
                reporters: 1,
                requests: 7,
                errors: 0,
            },
            LocalityWindow {
                cluster: CLUSTER.into(),
                locality: zone("b"),
                reporters: 2,
                requests: 30,
                errors: 7,
            }
        ]
    );
}

#[test]
fn grpc_priorities_are_the_levels_of_the_clients_answer() {
    let service = mesh::shop_service(
        "web",
        80,
        vec![
            mesh::endpoint("10.0.0.1", zone("a"), Health::Healthy),
            mesh::endpoint("10.0.0.2", zone("b"), Health::Healthy),
            mesh::endpoint("10.0.0.3", Locality::new("other", "x", ""), Health::Healthy),
        ],
    );
    let snapshot = xds::snapshot(
        None,
        Arc::new(crate::model::Registry::from_services([service])),
    );
    let entry = snapshot.cluster(CLUSTER).unwrap();
    let client_in = |z: &str| ClientInfo {
        kind: ClientKind::Grpc,
        ..mesh::client(zone(z))
    };
    let from_b = grpc_priorities(entry, &client_in("b"));
    assert_eq!(from_b[&zone("b")], 0);
    assert_eq!(from_b[&zone("a")], 1);
    assert_eq!(from_b[&Locality::new("other", "x", "")], 2);
    let from_a = grpc_priorities(entry, &client_in("a"));
    assert_eq!((from_a[&zone("a")], from_a[&zone("b")]), (0, 1));
}

fn views(book: &mut LoadBook, now: Instant) -> (Vec<RowView>, Vec<RowView>) {
    (
        book.view_within(now, Duration::from_secs(10)),
        book.view(now),
    )
}

#[test]
fn serving_priority_changes_are_failovers_with_the_error_ratio_before() {
    let start = Instant::now();
    let mut book = book(Duration::from_secs(60));
    let mut tracker = ServingTracker::default();
    let at = |s: u64| start + Duration::from_secs(s);
    book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 0, 100, 0), at(0))
        .unwrap();
    let (recent, window) = views(&mut book, at(0));
    assert_eq!(
        serving_priorities(&recent)[&(CLUSTER.to_string(), zone("a"))],
        Some(0)
    );
    assert!(
        tracker.update(&recent, &window).is_empty(),
        "a first sighting is no failover"
    );
    // Priority 0 starts failing, then traffic moves to priority 1.
    book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 0, 20, 80), at(5))
        .unwrap();
    let (recent, window) = views(&mut book, at(5));
    assert!(tracker.update(&recent, &window).is_empty());
    book.record(1, &zone("a"), CLUSTER, &load(zone("b"), 1, 100, 0), at(20))
        .unwrap();
    let (recent, window) = views(&mut book, at(20));
    assert_eq!(
        tracker.update(&recent, &window),
        [Failover {
            cluster: CLUSTER.into(),
            class: zone("a"),
            from: 0,
            to: 1,
            error_ratio: 80.0 / 200.0,
        }]
    );
    assert_eq!(tracker.last(CLUSTER, &zone("a")), Some(1));
    // No traffic for a while is not a failover; traffic back on priority 1 neither.
    let (recent, window) = views(&mut book, at(40));
    assert_eq!(
        serving_priorities(&recent)[&(CLUSTER.to_string(), zone("a"))],
        None
    );
    assert!(tracker.update(&recent, &window).is_empty());
    book.record(1, &zone("a"), CLUSTER, &load(zone("b"), 1, 10, 0), at(45))
        .unwrap();
    let (recent, window) = views(&mut book, at(45));
    assert!(tracker.update(&recent, &window).is_empty());
    // Back to priority 0: a failover back, for this class only.
    book.record(2, &zone("c"), CLUSTER, &load(zone("c"), 0, 10, 0), at(50))
        .unwrap();
    book.record(1, &zone("a"), CLUSTER, &load(zone("a"), 0, 10, 0), at(50))
        .unwrap();
    let (recent, window) = views(&mut book, at(50));
    let failovers = tracker.update(&recent, &window);
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_eq!((failovers[0].from, failovers[0].to), (1, 0));
    assert_eq!(failovers[0].class, zone("a"));
    assert_eq!(failovers[0].error_ratio, 0.0);
}
