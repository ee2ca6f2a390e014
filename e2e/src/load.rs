//! The load clients report (LRS) as the server shows it: `xdsctl top --once -o json`, summed per
//! locality zone of one service, and a wait until the reports have caught up with the traffic a test
//! sent ([`wait_reported`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde_json::Value as Json;

use crate::server::XdsServer;
use crate::traffic::Tally;

/// The figures of one locality zone, summed over every port, client class and priority of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneLoad {
    /// `requests_total`: every request clients reported for the zone, failed ones included.
    pub requests: u64,
    /// `errors_total`.
    pub errors: u64,
}

/// Locality zone → its figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedLoad(pub BTreeMap<String, ZoneLoad>);

impl ReportedLoad {
    pub fn requests(&self, zone: &str) -> u64 {
        self.0.get(zone).map_or(0, |z| z.requests)
    }
}

impl fmt::Display for ReportedLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing reported");
        }
        let zones: Vec<String> = self
            .0
            .iter()
            .map(|(zone, l)| format!("{zone}={} ({} errors)", l.requests, l.errors))
            .collect();
        f.write_str(&zones.join(" "))
    }
}

/// The `requests_total` and `errors_total` per locality zone of `service` (`NAME.NAMESPACE`) in
/// `xdsctl top --once -o json`'s answer, summed over its entries (one per port × client class).
pub fn reported_by_zone(top: &Json, service: &str) -> ReportedLoad {
    let mut by_zone: BTreeMap<String, ZoneLoad> = BTreeMap::new();
    let entries = top["services"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for entry in entries.iter().filter(|s| s["service"] == service) {
        for locality in entry["localities"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let zone = locality["locality"]["zone"].as_str().unwrap_or_default();
            let sum = by_zone.entry(zone.to_string()).or_default();
            sum.requests += locality["requests_total"].as_u64().unwrap_or(0);
            sum.errors += locality["errors_total"].as_u64().unwrap_or(0);
        }
    }
    ReportedLoad(by_zone)
}

/// How far a zone's reported count may be from what was sent, as a fraction of what was sent.
pub const TOLERANCE: f64 = 0.10;

/// Zones whose reported `requests_total` is not within [`TOLERANCE`] of the successful requests
/// `sent` counted for them (each backend answers with its zone): (zone, sent, reported). A zone
/// reported but never answered counts as sent 0, so it must have been reported 0.
pub fn off_by_more_than_tolerance(
    sent: &Tally,
    reported: &ReportedLoad,
) -> Vec<(String, u64, u64)> {
    let zones: BTreeSet<&String> = sent.by_body.keys().chain(reported.0.keys()).collect();
    zones
        .into_iter()
        .filter_map(|zone| {
            let expected = sent.count(zone) as u64;
            let got = reported.requests(zone);
            let slack = (expected as f64 * TOLERANCE).floor() as u64;
            (got.abs_diff(expected) > slack).then(|| (zone.clone(), expected, got))
        })
        .collect()
}

/// Polls `xdsctl top --once -o json` (every second, up to `timeout`) until every zone of `service`
/// is within [`TOLERANCE`] of `sent` and the figures stayed the same for three polls in a row (so
/// the last reports of every client have come in: a report a little late would still change them).
/// Returns the settled figures, or the last seen as the error.
pub fn wait_reported(
    server: &XdsServer,
    service: &str,
    sent: &Tally,
    timeout: Duration,
) -> Result<ReportedLoad, ReportedLoad> {
    let mut last = ReportedLoad::default();
    let mut unchanged = 0;
    let settled = crate::poll(timeout, Duration::from_secs(1), || {
        let now = reported_by_zone(&server.xdsctl_json(&["top", "--once"]), service);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        (unchanged >= 2 && off_by_more_than_tolerance(sent, &last).is_empty()).then(|| last.clone())
    });
    settled.ok_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zones_are_summed_over_client_classes_and_priorities_of_one_service_only() {
        let top = json!({"services": [
            {"service": "echo.demo", "client_class": "r/b/", "localities": [
                {"locality": {"zone": "b"}, "priority": 0, "requests_total": 100, "errors_total": 2},
                {"locality": {"zone": "c"}, "priority": 1, "requests_total": 40, "errors_total": 0},
            ]},
            {"service": "echo.demo", "client_class": "r/c/", "localities": [
                {"locality": {"zone": "c"}, "priority": 0, "requests_total": 60, "errors_total": 1},
            ]},
            {"service": "other.demo", "localities": [
                {"locality": {"zone": "b"}, "requests_total": 999, "errors_total": 0},
            ]},
        ]});
        let load = reported_by_zone(&top, "echo.demo");
        assert_eq!(
            load.0,
            BTreeMap::from([
                (
                    "b".to_string(),
                    ZoneLoad {
                        requests: 100,
                        errors: 2
                    }
                ),
                (
                    "c".to_string(),
                    ZoneLoad {
                        requests: 100,
                        errors: 1
                    }
                ),
            ])
        );
        assert_eq!(reported_by_zone(&json!({}), "echo.demo").0.len(), 0);
    }

    #[test]
    fn a_zone_is_off_past_ten_percent_and_an_unsent_zone_must_be_empty() {
        let mut sent = Tally::default();
        for _ in 0..100 {
            sent.record(&Ok("b".to_string()));
        }
        sent.record(&Err("refused".to_string()));
        let reported = |b: u64, c: u64| {
            let mut zones = BTreeMap::from([(
                "b".to_string(),
                ZoneLoad {
                    requests: b,
                    errors: 0,
                },
            )]);
            if c > 0 {
                zones.insert(
                    "c".to_string(),
                    ZoneLoad {
                        requests: c,
                        errors: 0,
                    },
                );
            }
            ReportedLoad(zones)
        };
        assert!(off_by_more_than_tolerance(&sent, &reported(90, 0)).is_empty());
        assert!(off_by_more_than_tolerance(&sent, &reported(110, 0)).is_empty());
        assert_eq!(
            off_by_more_than_tolerance(&sent, &reported(89, 0)),
            [("b".to_string(), 100, 89)]
        );
        assert_eq!(
            off_by_more_than_tolerance(&sent, &reported(111, 0)),
            [("b".to_string(), 100, 111)]
        );
        assert_eq!(
            off_by_more_than_tolerance(&sent, &reported(100, 1)),
            [("c".to_string(), 0, 1)]
        );
    }
}
