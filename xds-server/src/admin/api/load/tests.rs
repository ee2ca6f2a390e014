use std::sync::Arc;
use std::time::Duration;

use super::super::fixtures::snapshot;
use super::*;
use xds_core::observed::ReportedLoad;
use xds_core::policy::PolicySet;

const CHECKOUT: &str = "checkout.shop:8080";

fn settings() -> LoadSettings {
    LoadSettings {
        interval: Duration::from_secs(5),
        window: Duration::from_secs(30),
    }
}

fn book() -> SharedLoadBook {
    let book = settings().new_book();
    let served = ServedClusters::of(&snapshot(PolicySet::default()));
    lock_book(&book).set_served(Arc::new(served));
    book
}

fn report(zone: &str, priority: u32, successful: u64, errors: u64) -> ReportedLoad {
    ReportedLoad {
        locality: Locality::new("us-east1", zone, ""),
        priority,
        successful,
        errors,
        in_flight: 2,
    }
}

#[test]
fn load_is_grouped_per_service_port_and_class_with_the_serving_priority() {
    let book = book();
    let start = Instant::now();
    let class_b = Locality::new("us-east1", "us-east1-b", "");
    {
        let mut b = lock_book(&book);
        // Long ago priority 0 carried (and failed); within the last two intervals only priority 1 did.
        b.record(
            1,
            &class_b,
            CHECKOUT,
            &report("us-east1-b", 0, 30, 30),
            start,
        )
        .unwrap();
        let now = start + Duration::from_secs(20);
        b.record(1, &class_b, CHECKOUT, &report("us-east1-c", 1, 150, 0), now)
            .unwrap();
        b.record(2, &class_b, CHECKOUT, &report("us-east1-c", 1, 30, 0), now)
            .unwrap();
    }
    let r = load_pb(&book, &settings(), "", start + Duration::from_secs(20)).unwrap();
    assert_eq!((r.window_seconds, r.reporting_clients), (30, 2));
    assert_eq!(r.services.len(), 1);
    let s = &r.services[0];
    assert_eq!(
        (
            s.service.as_str(),
            s.port,
            s.cluster.as_str(),
            s.client_class.as_str()
        ),
        ("checkout.shop", 8080, CHECKOUT, "us-east1/us-east1-b/-")
    );
    assert_eq!(s.serving_priority, 1);
    let rows: Vec<(String, u32, f64, f64, u64, u64, u32)> = s
        .localities
        .iter()
        .map(|l| {
            (
                l.locality.as_ref().unwrap().zone.clone(),
                l.priority,
                l.requests_per_second,
                l.error_ratio,
                l.in_flight,
                l.requests_total,
                l.reporters,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("us-east1-b".to_string(), 0, 2.0, 0.5, 2, 60, 1),
            ("us-east1-c".to_string(), 1, 6.0, 0.0, 4, 180, 2),
        ]
    );
    // JSON as xdsctl prints it: snake_case fields.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["services"][0]["serving_priority"], 1);
    assert_eq!(json["services"][0]["localities"][1]["requests_total"], 180);
}

#[test]
fn a_filter_names_a_service_or_one_port_and_an_unknown_one_is_not_found() {
    let book = book();
    let now = Instant::now();
    {
        let mut b = lock_book(&book);
        let class = Locality::new("us-east1", "us-east1-b", "");
        b.record(1, &class, CHECKOUT, &report("us-east1-b", 0, 5, 0), now)
            .unwrap();
        b.record(
            1,
            &class,
            "cart.shop:8080",
            &report("us-east1-b", 0, 5, 0),
            now,
        )
        .unwrap();
    }
    for filter in ["checkout.shop", CHECKOUT] {
        let r = load_pb(&book, &settings(), filter, now).unwrap();
        let names: Vec<&str> = r.services.iter().map(|s| s.cluster.as_str()).collect();
        assert_eq!(names, [CHECKOUT], "{filter}");
    }
    assert_eq!(
        load_pb(&book, &settings(), "", now).unwrap().services.len(),
        2
    );
    // A served service nobody reports on: an empty answer, not an error.
    let r = load_pb(&book, &settings(), "cart.other", now).unwrap();
    assert!(r.services.is_empty());
    let err = load_pb(&book, &settings(), "nope.shop", now).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("nope.shop"), "{}", err.message());
}

#[tokio::test(start_paused = true)]
async fn watch_load_answers_at_once_and_every_interval() {
    use futures::StreamExt;
    let book = book();
    let mut stream = load_stream(book.clone(), settings(), String::new());
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.services.is_empty());
    lock_book(&book)
        .record(
            1,
            &Locality::new("us-east1", "us-east1-b", ""),
            CHECKOUT,
            &report("us-east1-b", 0, 5, 0),
            Instant::now(),
        )
        .unwrap();
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!(second.services.len(), 1);
    let mut failing = load_stream(book, settings(), "nope.shop".into());
    assert_eq!(
        failing.next().await.unwrap().unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert!(failing.next().await.is_none());
}
