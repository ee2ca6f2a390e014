//! `xdsctl services`: one row per endpoint, with the service's ports, source and policy.

use xds_admin_api as pb;

use super::{locality_text, table};

fn endpoint_text(ep: &pb::Endpoint, ports: &[pb::ServicePort]) -> String {
    match ports {
        [one] => {
            let port = ep
                .port_overrides
                .get(&one.name)
                .copied()
                .unwrap_or(one.port);
            format!("{}:{port}", ep.address)
        }
        _ if ep.port_overrides.is_empty() => ep.address.clone(),
        _ => {
            let o: Vec<String> = ep
                .port_overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{} ({})", ep.address, o.join(","))
        }
    }
}

pub fn services_table(r: &pb::ListServicesResponse) -> String {
    if r.services.is_empty() {
        return "no services\n".to_string();
    }
    let mut rows = Vec::new();
    for s in &r.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}:{}", p.name, p.port))
            .collect();
        let first = vec![format!("{}/{}", s.namespace, s.name), ports.join(",")];
        let tail = vec![s.source.clone(), ports_policy_text(s)];
        if s.endpoints.is_empty() {
            rows.push([first, vec!["-".into(), "-".into(), "-".into()], tail].concat());
            continue;
        }
        for (i, ep) in s.endpoints.iter().enumerate() {
            let lead = if i == 0 {
                first.clone()
            } else {
                vec![String::new(), String::new()]
            };
            let rest = if i == 0 {
                tail.clone()
            } else {
                vec![String::new(), String::new()]
            };
            rows.push(
                [
                    lead,
                    vec![
                        endpoint_text(ep, &s.ports),
                        locality_text(ep.locality.as_ref()),
                        ep.health.clone(),
                    ],
                    rest,
                ]
                .concat(),
            );
        }
    }
    table(
        &[
            "SERVICE", "PORTS", "ENDPOINT", "LOCALITY", "HEALTH", "SOURCE", "POLICY",
        ],
        &rows,
    )
}

/// The service's policy when all its ports share one, else `PORT=POLICY` per port.
fn ports_policy_text(s: &pb::Service) -> String {
    let policy = |p: &pb::ServicePort| {
        if p.policy.is_empty() {
            s.policy.clone() // a server that reports one policy per service
        } else {
            p.policy.clone()
        }
    };
    match s.ports.first() {
        Some(first) if s.ports.iter().any(|p| policy(p) != policy(first)) => s
            .ports
            .iter()
            .map(|p| format!("{}={}", p.port, policy(p)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(first) => policy(first),
        None => s.policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn services_show_one_row_per_endpoint() {
        let r = pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![pb::Service {
                namespace: "demo".into(),
                name: "echo".into(),
                ports: vec![pb::ServicePort {
                    name: "http".into(),
                    port: 8080,
                    cluster: "echo.demo:8080".into(),
                    policy: "built-in".into(),
                }],
                endpoints: vec![
                    pb::Endpoint {
                        address: "127.0.0.1".into(),
                        port_overrides: BTreeMap::from([("http".to_string(), 9001)]),
                        locality: None,
                        health: "HEALTHY".into(),
                        labels: BTreeMap::new(),
                    },
                    pb::Endpoint {
                        address: "127.0.0.2".into(),
                        health: "UNHEALTHY".into(),
                        ..pb::Endpoint::default()
                    },
                ],
                source: "file:e.yaml".into(),
                policy: "built-in".into(),
                traffic_distribution: String::new(),
            }],
        };
        let text = services_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("demo/echo   http:8080   127.0.0.1:9001"),
            "{text}"
        );
        assert!(lines[1].ends_with("file:e.yaml   built-in"), "{text}");
        assert!(
            lines[2].contains("127.0.0.2:8080") && lines[2].ends_with("UNHEALTHY"),
            "{text}"
        );
    }

    #[test]
    fn services_show_the_policy_per_port_when_ports_differ() {
        let port = |name: &str, number: u32, policy: &str| pb::ServicePort {
            name: name.into(),
            port: number,
            cluster: format!("web.shop:{number}"),
            policy: policy.into(),
        };
        let mut s = pb::Service {
            namespace: "shop".into(),
            name: "web".into(),
            ports: vec![
                port("http", 8080, "file:p/web-http.yaml"),
                port("grpc", 9090, "file:p/web.yaml"),
            ],
            source: "kubernetes".into(),
            policy: "file:p/web-http.yaml".into(),
            ..pb::Service::default()
        };
        let r = pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![s.clone()],
        };
        let text = services_table(&r);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("kubernetes   8080=file:p/web-http.yaml, 9090=file:p/web.yaml"),
            "{text}"
        );
        s.ports[0].policy = "file:p/web.yaml".into();
        let text = services_table(&pb::ListServicesResponse {
            snapshot_generation: 1,
            services: vec![s],
        });
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("kubernetes   file:p/web.yaml"),
            "{text}"
        );
    }
}
