//! `xdsctl top` in table mode: each service port's observed traffic per client class, locality and
//! priority, the serving priority marked.

use xds_admin_api as pb;

use super::{locality_text, table};

pub fn top_table(r: &pb::GetLoadResponse) -> String {
    let mut out = format!(
        "{} reporting clients, rates over the last {} s; * = the priority serving now\n",
        r.reporting_clients, r.window_seconds
    );
    if r.services.is_empty() {
        out.push_str("no load reported (clients report over LRS: docs/observability.md)\n");
        return out;
    }
    let mut rows = Vec::new();
    for s in &r.services {
        for l in &s.localities {
            let serving = s.serving_priority >= 0 && l.priority as i32 == s.serving_priority;
            rows.push(vec![
                s.service.clone(),
                s.port.to_string(),
                s.client_class.clone(),
                locality_text(l.locality.as_ref()),
                format!("{}{}", l.priority, if serving { "*" } else { "" }),
                format!("{:.1}", l.requests_per_second),
                format!("{:.1}", l.errors_per_second),
                format!("{:.1}", l.error_ratio * 100.0),
                l.in_flight.to_string(),
                l.reporters.to_string(),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "SERVICE",
            "PORT",
            "CLASS",
            "LOCALITY",
            "PRIO",
            "RPS",
            "ERR/S",
            "ERR%",
            "INFLIGHT",
            "REPORTERS",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_rates_ratios_and_the_serving_priority() {
        let locality = |zone: &str| pb::Locality {
            region: "r".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        };
        let r = pb::GetLoadResponse {
            window_seconds: 30,
            reporting_clients: 2,
            services: vec![pb::ServiceLoad {
                service: "web.shop".into(),
                port: 80,
                cluster: "web.shop:80".into(),
                client_class: "r/a/-".into(),
                serving_priority: 1,
                localities: vec![
                    pb::LocalityLoad {
                        locality: Some(locality("a")),
                        priority: 0,
                        requests_per_second: 2.0,
                        errors_per_second: 2.0,
                        error_ratio: 1.0,
                        reporters: 2,
                        ..Default::default()
                    },
                    pb::LocalityLoad {
                        locality: Some(locality("b")),
                        priority: 1,
                        requests_per_second: 8.26,
                        in_flight: 3,
                        reporters: 1,
                        ..Default::default()
                    },
                ],
            }],
            ..Default::default()
        };
        let text = top_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("2 reporting clients, rates over the last 30 s"));
        assert!(lines[1].starts_with("SERVICE"), "{text}");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[2]),
            ["web.shop", "80", "r/a/-", "r/a/-", "0", "2.0", "2.0", "100.0", "0", "2"]
        );
        assert_eq!(
            cells(lines[3]),
            ["web.shop", "80", "r/a/-", "r/b/-", "1*", "8.3", "0.0", "0.0", "3", "1"]
        );
        let empty = top_table(&pb::GetLoadResponse::default());
        assert!(empty.contains("no load reported"), "{empty}");
    }
}
