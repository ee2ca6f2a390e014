//! `xdsctl explain`: the priority levels a client gets, the rule behind each, the locality weights of
//! `distribute` levels, and the expected load split.

use xds_admin_api as pb;

use super::policies::fleet_failover_text;
use super::{locality_text, table};

pub fn explain_text(r: &pb::ExplainPrioritiesResponse) -> String {
    let mut out = String::new();
    for (n, e) in r.explanations.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let grpc = e.client_kind == pb::ClientKind::Grpc as i32;
        let spillover = if grpc {
            "gRPC client: no spillover (one priority at a time), no panic mode".to_string()
        } else {
            format!(
                "overprovisioning factor {}, panic threshold {}%",
                e.overprovisioning_factor, e.panic_threshold
            )
        };
        out.push_str(&format!(
            "service {}  port {}  cluster {}\nclient  {}  class {}\npolicy  {}  {spillover}\n\n",
            e.service,
            e.port,
            e.cluster,
            r.client,
            e.locality_class,
            if e.policy.is_empty() {
                &r.policy
            } else {
                &e.policy
            },
        ));
        let mut rows = Vec::new();
        for l in &e.levels {
            for (i, ep) in l.endpoints.iter().enumerate() {
                let level = if i == 0 {
                    vec![
                        format!("P{}", l.priority),
                        format!("{}%", l.load_percent),
                        format!(
                            "{}/{}{}",
                            l.healthy,
                            l.total,
                            if l.panic { " (panic)" } else { "" }
                        ),
                    ]
                } else {
                    vec![String::new(), String::new(), String::new()]
                };
                rows.push(
                    [
                        level,
                        vec![
                            if ep.gateway_for.is_empty() {
                                format!("{}:{}", ep.address, ep.port)
                            } else {
                                format!(
                                    "{}:{} (gateway of {}, weight {})",
                                    ep.address, ep.port, ep.gateway_for, ep.weight
                                )
                            },
                            locality_text(ep.locality.as_ref()),
                            ep.health.clone(),
                            if i == 0 {
                                l.reason.clone()
                            } else {
                                String::new()
                            },
                        ],
                    ]
                    .concat(),
                );
            }
        }
        if rows.is_empty() {
            out.push_str("no endpoints\n");
        } else {
            out.push_str(&table(
                &[
                    "PRIORITY", "LOAD", "HEALTHY", "ENDPOINT", "LOCALITY", "HEALTH", "REASON",
                ],
                &rows,
            ));
        }
        out.push_str(&locality_weights_text(&e.levels));
        let split: Vec<String> = e
            .load
            .iter()
            .enumerate()
            .map(|(i, l)| format!("P{i} {l}%"))
            .collect();
        out.push_str(&format!(
            "\n{}: {}",
            if grpc {
                "expected load (gRPC)"
            } else {
                "expected load"
            },
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(", ")
            }
        ));
        if e.no_healthy_upstream && grpc {
            out.push_str("  (no healthy endpoint: calls fail with UNAVAILABLE)");
        } else if e.no_healthy_upstream {
            out.push_str("  (no healthy upstream: requests fail with 503)");
        } else if e.panic {
            out.push_str("  (every level in panic: split by host count)");
        }
        out.push('\n');
        for note in &e.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        if let Some(fleet) = &e.fleet {
            out.push_str(&fleet_text(fleet));
        }
    }
    out
}

/// The fleet verdict (`fleetFailover`): its settings, then each locality's state and evidence.
fn fleet_text(f: &pb::FleetVerdict) -> String {
    let settings = f
        .settings
        .as_ref()
        .map(fleet_failover_text)
        .unwrap_or_default();
    let mut out = format!("\nfleet verdict: {settings}\n");
    let remaining = |at_ms: i64| {
        if at_ms == 0 {
            "-".to_string()
        } else {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            format!("{}s", (at_ms - now_ms).max(0).div_euclid(1000))
        }
    };
    let rows: Vec<Vec<String>> = f
        .localities
        .iter()
        .map(|l| {
            vec![
                locality_text(l.locality.as_ref()),
                l.state.clone(),
                l.reporters.to_string(),
                l.requests.to_string(),
                l.errors.to_string(),
                format!("{:.3}", l.error_ratio),
                remaining(l.until_unix_ms),
                remaining(l.probation_until_unix_ms),
                l.ejections.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "LOCALITY",
            "STATE",
            "CLIENTS",
            "REQUESTS",
            "ERRORS",
            "RATIO",
            "BACK IN",
            "PROBATION",
            "EJECTIONS",
        ],
        &rows,
    ));
    out
}

/// A policy with `distribute` rules: each distribute level's rule, then one line per locality with
/// its weight, share of its level and expected share of all requests. Empty otherwise.
fn locality_weights_text(levels: &[pb::Level]) -> String {
    let mut out = String::new();
    for l in levels {
        if let Some(d) = &l.distribute {
            let to: Vec<String> =
                d.to.iter()
                    .map(|t| format!("{} {}%", t.locality, t.weight))
                    .collect();
            out.push_str(&format!(
                "P{} distribute from {}: {}\n",
                l.priority,
                d.from,
                to.join(", ")
            ));
        }
    }
    let rows: Vec<Vec<String>> = levels
        .iter()
        .flat_map(|l| {
            l.localities.iter().enumerate().map(move |(i, s)| {
                vec![
                    if i == 0 {
                        format!("P{}", l.priority)
                    } else {
                        String::new()
                    },
                    locality_text(s.locality.as_ref()),
                    s.weight.to_string(),
                    if s.pattern.is_empty() {
                        "-".to_string()
                    } else {
                        s.pattern.clone()
                    },
                    format!("{:.1}%", s.share_of_level),
                    format!("{:.1}%", s.expected_percent),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return out;
    }
    format!(
        "\nlocality weights:\n{out}{}",
        table(
            &[
                "PRIORITY",
                "LOCALITY",
                "WEIGHT",
                "PATTERN",
                "SHARE OF LEVEL",
                "EXPECTED",
            ],
            &rows,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_verdict_shows_settings_state_and_evidence() {
        let locality = |zone: &str| {
            Some(pb::Locality {
                region: "r".into(),
                zone: zone.into(),
                sub_zone: String::new(),
            })
        };
        let text = fleet_text(&pb::FleetVerdict {
            settings: Some(pb::FleetFailover {
                mode: "enforce".into(),
                min_reporters: 2,
                min_requests: 20,
                error_ratio: 0.5,
                window_ms: 10_000,
                eject_for_ms: 30_000,
                max_ejected_percent: 50,
            }),
            localities: vec![
                pb::FleetLocality {
                    locality: locality("z1"),
                    state: "ejected".into(),
                    reporters: 3,
                    requests: 60,
                    errors: 45,
                    error_ratio: 0.75,
                    since_unix_ms: 1,
                    until_unix_ms: 2,
                    probation_until_unix_ms: 0,
                    ejections: 1,
                },
                pb::FleetLocality {
                    locality: locality("z2"),
                    state: "ok".into(),
                    reporters: 3,
                    requests: 80,
                    ..pb::FleetLocality::default()
                },
            ],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "fleet verdict: enforce: error ratio ≥ 0.5 from ≥ 2 clients and ≥ 20 requests within \
             10s; eject for 30s; at most 50% of endpoints"
        );
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[3]),
            ["r/z1/-", "ejected", "3", "60", "45", "0.750", "0s", "-", "1"]
        );
        assert_eq!(
            cells(lines[4]),
            ["r/z2/-", "ok", "3", "80", "0", "0.000", "-", "-", "0"]
        );
    }

    #[test]
    fn explain_lists_levels_with_reasons_and_the_load_split() {
        let ep = |addr: &str, zone: &str| pb::LevelEndpoint {
            address: addr.into(),
            port: 8080,
            locality: Some(pb::Locality {
                region: "r".into(),
                zone: zone.into(),
                sub_zone: String::new(),
            }),
            health: "HEALTHY".into(),
            ..pb::LevelEndpoint::default()
        };
        let r = pb::ExplainPrioritiesResponse {
            client: "locality r/a/-".into(),
            policy: "built-in".into(),
            explanations: vec![pb::Explanation {
                cluster: "echo.demo:8080".into(),
                service: "demo/echo".into(),
                port: 8080,
                locality_class: "region=r,zone=a,subzone=-".into(),
                overprovisioning_factor: 140,
                levels: vec![
                    pb::Level {
                        priority: 0,
                        reason: "same zone".into(),
                        endpoints: vec![ep("10.0.0.1", "a"), ep("10.0.0.2", "a")],
                        healthy: 2,
                        total: 2,
                        load_percent: 100,
                        ..pb::Level::default()
                    },
                    pb::Level {
                        priority: 1,
                        reason: "same region".into(),
                        endpoints: vec![ep("10.0.1.1", "b")],
                        healthy: 1,
                        total: 1,
                        ..pb::Level::default()
                    },
                ],
                load: vec![100, 0],
                ..pb::Explanation::default()
            }],
        };
        let text = explain_text(&r);
        println!("{text}");
        assert!(
            text.contains("PRIORITY   LOAD   HEALTHY   ENDPOINT"),
            "{text}"
        );
        assert!(
            text.contains(
                "P0         100%   2/2       10.0.0.1:8080   r/a/-      HEALTHY   same zone"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n                            10.0.0.2:8080   r/a/-      HEALTHY\n"),
            "{text}"
        );
        assert!(text.contains("expected load: P0 100%, P1 0%"), "{text}");

        // A gateway host names its network and weight; notes follow the load line.
        let mut r = r;
        let e = &mut r.explanations[0];
        e.levels[1].endpoints[0].gateway_for = "n2".into();
        e.levels[1].endpoints[0].weight = 3;
        e.notes = vec!["backup 1: shop/dr is not used: no such service in the registry".into()];
        let text = explain_text(&r);
        assert!(
            text.contains("10.0.1.1:8080 (gateway of n2, weight 3)"),
            "{text}"
        );
        assert!(
            text.contains(
                "expected load: P0 100%, P1 0%\nnote: backup 1: shop/dr is not used: no such \
                 service in the registry\n"
            ),
            "{text}"
        );
        assert!(!text.contains("locality weights"), "{text}");

        // For a gRPC client: no Envoy spillover figures, gRPC's split, and why.
        r.explanations[0].client_kind = pb::ClientKind::Grpc as i32;
        r.explanations[0].notes = vec!["gRPC client: every call goes to one priority".into()];
        let text = explain_text(&r);
        assert!(
            text.contains("gRPC client: no spillover (one priority at a time), no panic mode"),
            "{text}"
        );
        assert!(!text.contains("overprovisioning factor 140"), "{text}");
        assert!(
            text.contains("expected load (gRPC): P0 100%, P1 0%\nnote: gRPC client:"),
            "{text}"
        );
        r.explanations[0].no_healthy_upstream = true;
        assert!(
            explain_text(&r).contains("(no healthy endpoint: calls fail with UNAVAILABLE)"),
            "{text}"
        );

        // A distribute level: its rule, then each locality's weight and shares.
        let share = |zone: &str, weight, pattern: &str, of_level, expected| pb::LocalityShare {
            locality: ep("", zone).locality,
            weight,
            pattern: pattern.into(),
            share_of_level: of_level,
            expected_percent: expected,
        };
        let e = &mut r.explanations[0];
        e.levels[0].distribute = Some(pb::DistributeRule {
            from: "r/*".into(),
            to: vec![
                pb::DistributeTarget {
                    locality: "r/a/*".into(),
                    weight: 80,
                },
                pb::DistributeTarget {
                    locality: "r/c/*".into(),
                    weight: 20,
                },
            ],
        });
        e.levels[0].localities = vec![
            share("a", 80, "r/a/*", 80.0, 80.0),
            share("c", 20, "r/c/*", 20.0, 20.0),
        ];
        e.levels[1].localities = vec![share("b", 1, "", 100.0, 0.0)];
        let text = explain_text(&r);
        println!("{text}");
        assert!(
            text.contains(
                "\nlocality weights:\n\
                 P0 distribute from r/*: r/a/* 80%, r/c/* 20%\n\
                 PRIORITY   LOCALITY   WEIGHT   PATTERN   SHARE OF LEVEL   EXPECTED\n\
                 P0         r/a/-      80       r/a/*     80.0%            80.0%\n\
                 \x20          r/c/-      20       r/c/*     20.0%            20.0%\n\
                 P1         r/b/-      1        -         100.0%           0.0%\n"
            ),
            "{text}"
        );
    }
}
