//! `xdsctl events` in table mode: one line per event, with a UTC timestamp.

use xds_admin_api as pb;

use super::protocol_text;
use crate::failure::one_line;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix milliseconds (UTC), without a date library.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `LDS` for the listener type URL; an unknown URL as it is.
fn short_type(url: &str) -> &str {
    match xds_core::snapshot::ResourceType::from_type_url(url) {
        Some(t) => t.short_name(),
        None => url,
    }
}

pub fn event_line(e: &pb::Event) -> String {
    let at = utc(e.at_unix_ms);
    match e.kind.as_str() {
        "connected" => format!(
            "{at}  connected     {}  {}  {}  stream {}",
            e.node_id,
            protocol_text(e.protocol),
            e.locality,
            e.stream_id
        ),
        "disconnected" => format!("{at}  disconnected  {}  stream {}", e.node_id, e.stream_id),
        "pushed" => format!(
            "{at}  pushed        {}  {}  version {}  {} resources, {} bytes",
            e.node_id,
            short_type(&e.type_url),
            e.version,
            e.resources,
            e.bytes
        ),
        "acked" => format!(
            "{at}  acked         {}  {}  version {}",
            e.node_id,
            short_type(&e.type_url),
            e.version
        ),
        "nacked" => format!(
            "{at}  NACKED        {}  {}  version {}: {}",
            e.node_id,
            short_type(&e.type_url),
            e.version,
            one_line(&e.error)
        ),
        "lagged" => format!("{at}  (fell behind: {} events not shown)", e.resources),
        "failover" => format!(
            "{at}  FAILOVER      {}  clients in {}  priority {} -> {}  (error ratio of {} before: {:.1}%)",
            e.service,
            e.client_class,
            e.from_priority,
            e.to_priority,
            e.from_priority,
            e.error_ratio * 100.0
        ),
        "fleet_ejected" | "fleet_restored" | "fleet_observed" => format!(
            "{at}  {:<13} {}  {}  error ratio {:.3}: {}",
            e.kind,
            e.service,
            e.locality,
            e.error_ratio,
            one_line(&e.reason)
        ),
        other => format!("{at}  {other}  {}", e.node_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_events_read_well() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
        let e = pb::Event {
            kind: "nacked".into(),
            at_unix_ms: 0,
            node_id: "envoy-1".into(),
            // restructure: switch to xds_core::snapshot (the listener type URL)
            type_url: xds_core::snapshot::LISTENER_TYPE.into(),
            version: "v2".into(),
            error: "bad\n  bind".into(),
            ..pb::Event::default()
        };
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:00.000Z  NACKED        envoy-1  LDS  version v2: bad bind"
        );
        let failover = pb::Event {
            kind: "failover".into(),
            at_unix_ms: 0,
            service: "web.shop:80".into(),
            client_class: "r/a/-".into(),
            from_priority: 0,
            to_priority: 1,
            error_ratio: 0.75,
            ..pb::Event::default()
        };
        assert_eq!(
            event_line(&failover),
            "1970-01-01T00:00:00.000Z  FAILOVER      web.shop:80  clients in r/a/-  priority 0 -> 1  \
             (error ratio of 0 before: 75.0%)"
        );
        let fleet = pb::Event {
            kind: "fleet_ejected".into(),
            at_unix_ms: 0,
            service: "web.shop:8080".into(),
            locality: "eu/eu-a/".into(),
            error_ratio: 0.75,
            reason: "error ratio 0.750 ≥ 0.5 from 3 clients".into(),
            ..pb::Event::default()
        };
        assert_eq!(
            event_line(&fleet),
            "1970-01-01T00:00:00.000Z  fleet_ejected web.shop:8080  eu/eu-a/  error ratio 0.750: \
             error ratio 0.750 ≥ 0.5 from 3 clients"
        );
    }
}
