//! `xdsctl services`: one row per endpoint, with its identity, and the service's ports, source,
//! policy and which peers its clients accept over mTLS.

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
        let tail = vec![s.source.clone(), ports_policy_text(s), ports_mtls_text(s)];
        if s.endpoints.is_empty() {
            rows.push([first, vec!["-".into(); 4], tail].concat());
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
                vec![String::new(); tail.len()]
            };
            rows.push(
                [
                    lead,
                    vec![
                        endpoint_text(ep, &s.ports),
                        locality_text(ep.locality.as_ref()),
                        ep.health.clone(),
                        dash_if_empty(&ep.identity),
                    ],
                    rest,
                ]
                .concat(),
            );
        }
    }
    table(
        &[
            "SERVICE", "PORTS", "ENDPOINT", "LOCALITY", "HEALTH", "IDENTITY", "SOURCE", "POLICY",
            "MTLS",
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

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// Which servers a client of this port accepts: `off` (plain text), the identities it requires,
/// or, under mTLS with no identity known, `any (trust bundle)` — spelled out, so an operator sees
/// which services are not pinned. `-` from a server that does not report it.
fn mtls_text(p: &pb::ServicePort) -> String {
    match p.mtls.as_str() {
        "" => "-".to_string(),
        "DISABLE" => "off".to_string(),
        _ if p.peer_identities.is_empty() => "any (trust bundle)".to_string(),
        _ => p.peer_identities.join(","),
    }
}

/// Like [`ports_policy_text`]: one value when every port has the same, else `PORT=VALUE` per port.
fn ports_mtls_text(s: &pb::Service) -> String {
    match s.ports.first() {
        Some(first) if s.ports.iter().any(|p| mtls_text(p) != mtls_text(first)) => s
            .ports
            .iter()
            .map(|p| format!("{}={}", p.port, mtls_text(p)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(first) => mtls_text(first),
        None => "-".to_string(),
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
                    mtls: "DISABLE".into(),
                    peer_identities: vec![],
                }],
                endpoints: vec![
                    pb::Endpoint {
                        address: "127.0.0.1".into(),
                        port_overrides: BTreeMap::from([("http".to_string(), 9001)]),
                        locality: None,
                        health: "HEALTHY".into(),
                        labels: BTreeMap::new(),
                        identity: "spiffe://cluster.local/ns/demo/sa/echo".into(),
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
                identities: vec!["spiffe://cluster.local/ns/demo/sa/echo".into()],
            }],
        };
        let text = services_table(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("demo/echo   http:8080   127.0.0.1:9001"),
            "{text}"
        );
        assert!(
            lines[1]
                .ends_with("spiffe://cluster.local/ns/demo/sa/echo   file:e.yaml   built-in   off"),
            "{text}"
        );
        assert!(
            lines[2].contains("127.0.0.2:8080") && lines[2].trim_end().ends_with("UNHEALTHY   -"),
            "an endpoint without a known identity: {text}"
        );
    }

    #[test]
    fn services_show_the_policy_per_port_when_ports_differ() {
        let port = |name: &str, number: u32, policy: &str| pb::ServicePort {
            name: name.into(),
            port: number,
            cluster: format!("web.shop:{number}"),
            policy: policy.into(),
            ..pb::ServicePort::default()
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
                .ends_with("kubernetes   8080=file:p/web-http.yaml, 9090=file:p/web.yaml   -"),
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
                .ends_with("kubernetes   file:p/web.yaml   -"),
            "{text}"
        );
    }

    #[test]
    fn the_mtls_column_names_the_pinned_identities_or_says_any_certificate_is_accepted() {
        const LEDGER: &str = "spiffe://cluster.local/ns/bank/sa/ledger";
        let port = |number: u32, mtls: &str, peers: &[&str]| pb::ServicePort {
            name: format!("p{number}"),
            port: number,
            mtls: mtls.into(),
            peer_identities: peers.iter().map(|p| p.to_string()).collect(),
            ..pb::ServicePort::default()
        };
        let mtls_of = |ports: Vec<pb::ServicePort>| {
            let text = services_table(&pb::ListServicesResponse {
                snapshot_generation: 1,
                services: vec![pb::Service {
                    namespace: "bank".into(),
                    name: "ledger".into(),
                    ports,
                    ..pb::Service::default()
                }],
            });
            let header = text.lines().next().unwrap();
            let row = text.lines().nth(1).unwrap();
            row[header.find("MTLS").unwrap()..].trim_end().to_string()
        };
        assert_eq!(mtls_of(vec![port(80, "STRICT", &[LEDGER])]), LEDGER);
        assert_eq!(mtls_of(vec![port(80, "STRICT", &[])]), "any (trust bundle)");
        assert_eq!(mtls_of(vec![port(80, "DISABLE", &[])]), "off");
        assert_eq!(
            mtls_of(vec![port(80, "STRICT", &[LEDGER]), port(81, "STRICT", &[])]),
            format!("80={LEDGER}, 81=any (trust bundle)")
        );
    }
}
