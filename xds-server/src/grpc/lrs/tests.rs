use super::*;
use xds_core::model::{Health, Registry};
use xds_core::testing::{mesh, xds};

fn zone(z: &str) -> Locality {
    Locality::new("r", z, "")
}

fn served(zones: &[&str]) -> Arc<ServedClusters> {
    let endpoints = zones
        .iter()
        .enumerate()
        .map(|(i, z)| mesh::endpoint(&format!("10.0.0.{}", i + 1), zone(z), Health::Healthy))
        .collect();
    let registry = Arc::new(Registry::from_services([mesh::shop_service(
        "lrsmetrics",
        80,
        endpoints,
    )]));
    Arc::new(ServedClusters::of(&xds::snapshot(None, registry)))
}

fn load(z: &str, priority: u32, successful: u64, errors: u64) -> ReportedLoad {
    ReportedLoad {
        locality: zone(z),
        priority,
        successful,
        errors,
        in_flight: 0,
    }
}

/// The lines of the rendered metrics about this test's service.
fn lines() -> Vec<String> {
    metrics()
        .render(None)
        .lines()
        .filter(|l| l.contains("lrsmetrics.shop"))
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_follow_the_book_with_known_labels_only_and_drop_rows_that_go() {
    const CLUSTER: &str = "lrsmetrics.shop:80";
    let now = Instant::now();
    let mut book = LoadBook::new(Duration::from_secs(30));
    let two_zones = served(&["a", "b"]);
    book.set_served(two_zones.clone());
    book.record(1, &zone("a"), CLUSTER, &load("a", 0, 6, 2), now)
        .unwrap();
    book.record(1, &zone("a"), CLUSTER, &load("b", 1, 4, 0), now)
        .unwrap();
    // A client somewhere the service has no endpoints: its class is not a label of its own.
    book.record(2, &zone("elsewhere"), CLUSTER, &load("b", 1, 1, 0), now)
        .unwrap();
    let mut published = HashSet::new();
    let (window, recent) = (book.view(now), book.view(now));
    publish_metrics(&two_zones, &window, &recent, &mut published);
    let text = lines().join("\n");
    let labels = |z: &str, p: u32| {
        format!("service=\"lrsmetrics.shop\",port=\"80\",locality=\"r/{z}/-\",priority=\"{p}\"")
    };
    for expected in [
        format!("xds_observed_requests_total{{{}}} 8", labels("a", 0)),
        format!("xds_observed_errors_total{{{}}} 2", labels("a", 0)),
        format!("xds_observed_requests_total{{{}}} 5", labels("b", 1)),
        format!("xds_observed_error_ratio{{{}}} 0.25", labels("a", 0)),
        "xds_observed_serving_priority{service=\"lrsmetrics.shop\",port=\"80\",class=\"r/a/-\"} 0"
            .to_string(),
        "xds_observed_serving_priority{service=\"lrsmetrics.shop\",port=\"80\",class=\"other\"} 1"
            .to_string(),
    ] {
        assert!(text.contains(&expected), "{expected} not in\n{text}");
    }
    // Counters go on from where they were.
    book.record(1, &zone("a"), CLUSTER, &load("a", 0, 2, 0), now)
        .unwrap();
    let (window, recent) = (book.view(now), book.view(now));
    publish_metrics(&two_zones, &window, &recent, &mut published);
    let text = lines().join("\n");
    assert!(
        text.contains(&format!(
            "xds_observed_requests_total{{{}}} 10",
            labels("a", 0)
        )),
        "{text}"
    );
    // Zone b loses its endpoints: its series go.
    let one_zone = served(&["a"]);
    book.set_served(one_zone.clone());
    let (window, recent) = (book.view(now), book.view(now));
    publish_metrics(&one_zone, &window, &recent, &mut published);
    let text = lines().join("\n");
    assert!(!text.contains("r/b/-"), "{text}");
    assert!(text.contains("r/a/-"), "{text}");
}
