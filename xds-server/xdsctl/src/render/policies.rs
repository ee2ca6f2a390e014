//! `xdsctl policies`: the policies in force with their settings, the effective policy per service
//! port, and rejected policy files.

use xds_admin_api as pb;

use super::{table, table_body};
use crate::failure::one_line;

/// `500ms`, `2s`, `1.5s`.
fn millis_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// `fleetFailover` in one line: `enforce: error ratio ≥ 0.5 from ≥ 2 clients and ≥ 20 requests within
/// 10s; eject for 30s; at most 50% of endpoints`.
pub fn fleet_failover_text(f: &pb::FleetFailover) -> String {
    format!(
        "{}: error ratio ≥ {} from ≥ {} clients and ≥ {} requests within {}; eject for {}; at most \
         {}% of endpoints",
        f.mode,
        f.error_ratio,
        f.min_reporters,
        f.min_requests,
        millis_text(f.window_ms),
        millis_text(f.eject_for_ms),
        f.max_ejected_percent
    )
}

/// One policy's settings, one `  key  value` line each (optional settings only when set).
fn policy_settings_text(p: &pb::Policy) -> Vec<(&'static str, String)> {
    let mut lines = vec![("failoverPriority", p.failover_priority.join(", "))];
    if !p.failover.is_empty() {
        let rules: Vec<String> = p
            .failover
            .iter()
            .map(|r| format!("{} → {}", r.from, r.to))
            .collect();
        lines.push(("failover", rules.join(", ")));
    }
    if !p.backups.is_empty() {
        lines.push(("backups", p.backups.join(", ")));
    }
    for rule in &p.distribute {
        let to: Vec<String> = rule
            .to
            .iter()
            .map(|t| format!("{} {}%", t.locality, t.weight))
            .collect();
        lines.push(("distribute", format!("{} → {}", rule.from, to.join(", "))));
    }
    if let Some(hc) = &p.health_check {
        let what = match hc.protocol.as_str() {
            "http" if hc.host.is_empty() => format!("http GET {}", hc.path),
            "http" => format!("http GET {} (Host {})", hc.path, hc.host),
            "grpc" if !hc.grpc_service.is_empty() => format!("grpc {}", hc.grpc_service),
            other => other.to_string(),
        };
        lines.push((
            "healthCheck",
            format!(
                "{what} every {}, timeout {}, unhealthy after {}, healthy after {}",
                millis_text(hc.interval_ms),
                millis_text(hc.timeout_ms),
                hc.unhealthy_threshold,
                hc.healthy_threshold
            ),
        ));
    }
    let outlier = match (&p.outlier_detection, p.outlier_detection_enabled) {
        (Some(od), _) => format!(
            "{} × 5xx or {} × gateway failure, every {}, ejected {}, at most {}%",
            od.consecutive_5xx,
            od.consecutive_gateway_failure,
            millis_text(od.interval_ms),
            millis_text(od.base_ejection_time_ms),
            od.max_ejection_percent
        ),
        (None, _) => "off".to_string(),
    };
    lines.push(("outlierDetection", outlier));
    lines.push((
        "spillover",
        format!(
            "{}, overprovisioning factor {}, panic threshold {}%",
            if p.spillover.is_empty() {
                "gradual"
            } else {
                &p.spillover
            },
            p.overprovisioning_factor,
            p.panic_threshold
        ),
    ));
    if p.mtls == "STRICT" {
        lines.push(("mtls", p.mtls.clone()));
    }
    if let Some(fleet) = p.fleet_failover.as_ref().filter(|f| f.mode != "off") {
        lines.push(("fleetFailover", fleet_failover_text(fleet)));
    }
    lines
}

pub fn policies_text(r: &pb::ListPoliciesResponse) -> String {
    let mut out = String::new();
    if r.active.is_empty() {
        out.push_str("no policies: every service uses the built-in default\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .active
            .iter()
            .map(|p| {
                vec![
                    format!("{}/{}", p.namespace, p.name),
                    p.scope.clone(),
                    p.origin.clone(),
                    if p.services.is_empty() {
                        "-".to_string()
                    } else {
                        p.services.join(", ")
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &["POLICY", "SCOPE", "ORIGIN", "SERVICE PORTS"],
            &rows,
        ));
        for p in &r.active {
            out.push_str(&format!("\n{}/{}  ({})\n", p.namespace, p.name, p.scope));
            let rows: Vec<Vec<String>> = policy_settings_text(p)
                .into_iter()
                .map(|(k, v)| vec![format!("  {k}"), v])
                .collect();
            out.push_str(&table_body(&rows));
        }
    }
    if !r.effective.is_empty() {
        out.push_str("\nEFFECTIVE POLICY PER SERVICE PORT\n");
        let rows: Vec<Vec<String>> = r
            .effective
            .iter()
            .map(|e| {
                vec![
                    if e.port_name.is_empty() {
                        e.service_port.clone()
                    } else {
                        format!("{} ({})", e.service_port, e.port_name)
                    },
                    e.policy.clone(),
                    e.failover_priority.join(", "),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SERVICE PORT", "POLICY", "FAILOVER PRIORITY"],
            &rows,
        ));
    }
    if !r.rejected.is_empty() {
        out.push_str("\nREJECTED\n");
        let rows: Vec<Vec<String>> = r
            .rejected
            .iter()
            .map(|p| vec![p.source.clone(), one_line(&p.error)])
            .collect();
        out.push_str(&table(&["SOURCE", "ERROR"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_show_scope_settings_and_the_effective_policy_per_port() {
        let base = pb::Policy {
            failover_priority: vec![
                "topology.kubernetes.io/region".into(),
                "topology.kubernetes.io/zone".into(),
            ],
            overprovisioning_factor: 140,
            outlier_detection: Some(pb::OutlierDetection {
                consecutive_5xx: 5,
                consecutive_gateway_failure: 2,
                interval_ms: 1000,
                base_ejection_time_ms: 30_000,
                max_ejection_percent: 100,
            }),
            outlier_detection_enabled: true,
            spillover: "gradual".into(),
            mtls: "DISABLE".into(),
            ..pb::Policy::default()
        };
        let r = pb::ListPoliciesResponse {
            active: vec![
                pb::Policy {
                    namespace: "shop".into(),
                    name: "defaults".into(),
                    scope: "namespace shop".into(),
                    origin: "file:p/shop.yaml".into(),
                    services: vec![
                        "shop/cart:80".into(),
                        "shop/web:9090 (trafficDistribution=PreferSameZone)".into(),
                    ],
                    failover_priority: vec!["topology.istio.io/cluster".into()],
                    ..base.clone()
                },
                pb::Policy {
                    namespace: "shop".into(),
                    name: "web-http".into(),
                    scope: "service shop/web port http".into(),
                    origin: "file:p/web.yaml".into(),
                    port: "http".into(),
                    services: vec!["shop/web:8080".into()],
                    failover_priority: vec![
                        "topology.istio.io/network=n1".into(),
                        "topology.kubernetes.io/region".into(),
                    ],
                    distribute: vec![pb::DistributeRule {
                        from: "us-east1/*".into(),
                        to: vec![
                            pb::DistributeTarget {
                                locality: "us-east1/us-east1-b/*".into(),
                                weight: 80,
                            },
                            pb::DistributeTarget {
                                locality: "us-east1/us-east1-c/*".into(),
                                weight: 20,
                            },
                        ],
                    }],
                    health_check: Some(pb::HealthCheck {
                        protocol: "http".into(),
                        path: "/healthz".into(),
                        interval_ms: 5000,
                        timeout_ms: 500,
                        unhealthy_threshold: 3,
                        healthy_threshold: 2,
                        ..pb::HealthCheck::default()
                    }),
                    outlier_detection: None,
                    outlier_detection_enabled: false,
                    spillover: "allOrNothing".into(),
                    overprovisioning_factor: 100_000,
                    fleet_failover: Some(pb::FleetFailover {
                        mode: "observe".into(),
                        min_reporters: 3,
                        min_requests: 20,
                        error_ratio: 0.25,
                        window_ms: 10_000,
                        eject_for_ms: 1_500,
                        max_ejected_percent: 50,
                    }),
                    ..base.clone()
                },
            ],
            effective: vec![
                pb::EffectivePolicy {
                    service_port: "shop/cart:80".into(),
                    port_name: String::new(),
                    policy: "file:p/shop.yaml".into(),
                    failover_priority: vec!["topology.istio.io/cluster".into()],
                },
                pb::EffectivePolicy {
                    service_port: "shop/web:8080".into(),
                    port_name: "http".into(),
                    policy: "file:p/web.yaml".into(),
                    failover_priority: vec![
                        "topology.istio.io/network=n1".into(),
                        "topology.kubernetes.io/region".into(),
                    ],
                },
                pb::EffectivePolicy {
                    service_port: "shop/web:9090".into(),
                    port_name: "grpc".into(),
                    policy: "Service shop/web spec.trafficDistribution=PreferSameZone (over \
                             namespace default shop/defaults)"
                        .into(),
                    failover_priority: base.failover_priority.clone(),
                },
            ],
            rejected: vec![],
        };
        let text = policies_text(&r);
        println!("{text}");
        let expected = "\
POLICY          SCOPE                        ORIGIN             SERVICE PORTS
shop/defaults   namespace shop               file:p/shop.yaml   shop/cart:80, shop/web:9090 (trafficDistribution=PreferSameZone)
shop/web-http   service shop/web port http   file:p/web.yaml    shop/web:8080

shop/defaults  (namespace shop)
  failoverPriority   topology.istio.io/cluster
  outlierDetection   5 × 5xx or 2 × gateway failure, every 1s, ejected 30s, at most 100%
  spillover          gradual, overprovisioning factor 140, panic threshold 0%

shop/web-http  (service shop/web port http)
  failoverPriority   topology.istio.io/network=n1, topology.kubernetes.io/region
  distribute         us-east1/* → us-east1/us-east1-b/* 80%, us-east1/us-east1-c/* 20%
  healthCheck        http GET /healthz every 5s, timeout 500ms, unhealthy after 3, healthy after 2
  outlierDetection   off
  spillover          allOrNothing, overprovisioning factor 100000, panic threshold 0%
  fleetFailover      observe: error ratio ≥ 0.25 from ≥ 3 clients and ≥ 20 requests within 10s; eject for 1.5s; at most 50% of endpoints

EFFECTIVE POLICY PER SERVICE PORT
SERVICE PORT           POLICY                                                                                            FAILOVER PRIORITY
shop/cart:80           file:p/shop.yaml                                                                                  topology.istio.io/cluster
shop/web:8080 (http)   file:p/web.yaml                                                                                   topology.istio.io/network=n1, topology.kubernetes.io/region
shop/web:9090 (grpc)   Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default shop/defaults)   topology.kubernetes.io/region, topology.kubernetes.io/zone
";
        assert_eq!(text, expected);
    }
}
