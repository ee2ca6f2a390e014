use super::*;

fn key(locality: &str, priority: u32) -> RowKey {
    RowKey {
        cluster: "web.default:80".into(),
        locality: locality.into(),
        priority,
    }
}

fn load(successful: u64, errors: u64) -> LocalityLoad {
    LocalityLoad {
        successful,
        errors,
        in_flight: 1,
    }
}

#[test]
fn window_expires_but_totals_stay() {
    let start = Instant::now();
    let mut book = LoadBook::new(Duration::from_secs(10));
    book.record(1, key("r/a/", 0), &load(90, 10), start);
    let view = book.view(start + Duration::from_secs(5));
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].requests_per_second, 10.0);
    assert_eq!(view[0].errors_per_second, 1.0);
    assert!((view[0].error_ratio - 0.1).abs() < 1e-9);
    assert_eq!(view[0].requests_total, 100);
    let later = book.view(start + Duration::from_secs(11));
    assert_eq!(later[0].requests_per_second, 0.0);
    assert_eq!(later[0].requests_total, 100);
    assert_eq!(later[0].errors_total, 10);
}

#[test]
fn clients_are_summed_and_forgotten() {
    let now = Instant::now();
    let mut book = LoadBook::new(Duration::from_secs(10));
    book.record(1, key("r/a/", 0), &load(50, 0), now);
    book.record(2, key("r/a/", 0), &load(50, 0), now);
    let view = book.view(now);
    assert_eq!(view[0].requests_per_second, 10.0);
    assert_eq!(view[0].in_flight, 2);
    book.forget(1);
    let view = book.view(now);
    assert_eq!(view[0].requests_per_second, 5.0);
    assert_eq!(view[0].in_flight, 1);
    assert_eq!(view[0].requests_total, 100);
}

#[test]
fn rows_per_client_are_bounded() {
    let now = Instant::now();
    let mut book = LoadBook::new(Duration::from_secs(10));
    for i in 0..MAX_ROWS_PER_CLIENT + 5 {
        book.record(1, key(&format!("r/{i}/"), 0), &load(1, 0), now);
    }
    assert_eq!(book.dropped_rows(), 5);
    assert_eq!(book.view(now).len(), MAX_ROWS_PER_CLIENT);
}

#[test]
fn samples_per_row_are_bounded() {
    let now = Instant::now();
    let mut book = LoadBook::new(Duration::from_secs(3600));
    for _ in 0..MAX_SAMPLES_PER_ROW * 2 {
        book.record(1, key("r/a/", 1), &load(1, 0), now);
    }
    let view = book.view(now);
    assert_eq!(view[0].requests_total, (MAX_SAMPLES_PER_ROW * 2) as u64);
    assert_eq!(
        view[0].requests_per_second,
        MAX_SAMPLES_PER_ROW as f64 / 3600.0
    );
}
