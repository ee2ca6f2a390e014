use super::*;
use crate::model::{ClientInfo, Endpoint, Locality};
use crate::testing::envoy;
use crate::testing::mesh::{self, endpoint};
use crate::translate::priorities::priorities;
use prost::Message;
use std::sync::Arc;

/// A cluster whose service has no known identity (secure naming has its own tests, in `mtls`).
fn cluster(name: &str, policy: &FailoverPolicy) -> Cluster {
    super::cluster(name, policy, &BTreeSet::new())
}

/// Service `ns/name` with `ports` named `p0`, `p1`, ...
fn service(ns: &str, name: &str, ports: &[u16], endpoints: Vec<Endpoint>) -> Service {
    let ports = ports.iter().enumerate().map(|(i, p)| (format!("p{i}"), *p));
    mesh::service(ns, name, ports, endpoints)
}

#[test]
fn load_assignment_groups_by_priority_and_locality_with_health() {
    let east_b = Locality::new("us-east1", "us-east1-b", "");
    let east_c = Locality::new("us-east1", "us-east1-c", "");
    let west = Locality::new("us-west1", "us-west1-a", "");
    let mut svc = service(
        "shop",
        "checkout",
        &[8080],
        vec![
            endpoint("10.0.0.3", west.clone(), Health::Healthy),
            endpoint("10.0.0.2", east_c.clone(), Health::Unhealthy),
            endpoint("10.0.0.1", east_b.clone(), Health::Draining),
            endpoint("10.0.0.4", east_b.clone(), Health::Healthy),
        ],
    );
    svc.endpoints[1]
        .port_overrides
        .insert("p0".to_string(), 9002);
    let policy = FailoverPolicy::default();
    let client = mesh::client(east_b.clone());
    let class = LocalityClass::of(&client, &policy);
    let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
    let plan = priorities(&class, &input, &policy);
    let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
    type Host = (String, u32, i32);
    let summary: Vec<(u32, String, Vec<Host>)> = cla
        .endpoints
        .iter()
        .map(|g| {
            (
                g.priority,
                g.locality.as_ref().unwrap().zone.clone(),
                g.lb_endpoints
                    .iter()
                    .map(|lb| {
                        let (address, port) = envoy::host(lb);
                        (address, port, lb.health_status)
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                0,
                "us-east1-b".to_string(),
                vec![
                    ("10.0.0.1".to_string(), 8080, HealthStatus::Draining as i32),
                    ("10.0.0.4".to_string(), 8080, HealthStatus::Healthy as i32),
                ]
            ),
            (
                1,
                "us-east1-c".to_string(),
                vec![("10.0.0.2".to_string(), 9002, HealthStatus::Unhealthy as i32)]
            ),
            (
                2,
                "us-west1-a".to_string(),
                vec![("10.0.0.3".to_string(), 8080, HealthStatus::Healthy as i32)]
            ),
        ]
    );
    assert_eq!(
        cla.policy.unwrap().overprovisioning_factor.unwrap().value,
        140
    );
}

/// A gateway whose host name resolved to several addresses is one host per address, the endpoints
/// it stands for shared among them (rounded, at least 1 each).
#[test]
fn a_gateway_with_several_addresses_is_one_host_per_address_sharing_its_weight() {
    use crate::model::{labels, NetworkGateway, Registry};
    let b = Locality::new("r", "b", "");
    let remote = |ip: &str| mesh::on_network(endpoint(ip, b.clone(), Health::Healthy), "n2");
    let svc = service(
        "shop",
        "checkout",
        &[8080],
        vec![
            remote("10.2.0.1"),
            remote("10.2.0.2"),
            remote("10.2.0.3"),
            remote("10.2.0.4"),
        ],
    );
    let mut registry = Registry::from_services([svc.clone()]);
    let addresses = ["192.0.2.7", "192.0.2.5"].map(|a| a.parse().unwrap());
    registry.gateways.insert(
        "n2".into(),
        NetworkGateway::at(addresses, 15443).expect("addresses"),
    );
    let policy = FailoverPolicy::default();
    let input = mesh::cluster_input(&registry, &svc, &policy);
    let mut client = mesh::client(b.clone());
    client.labels.insert(labels::NETWORK.into(), "n1".into());
    let class = LocalityClass::of(&client, &policy);
    let plan = priorities(&class, &input, &policy);
    let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
    let h = HealthStatus::Healthy as i32;
    assert_eq!(
        envoy::locality_groups(&cla),
        vec![(
            0,
            "b".to_string(),
            vec![
                ("192.0.2.5".to_string(), 15443, h, Some(2)),
                ("192.0.2.7".to_string(), 15443, h, Some(2)),
            ]
        )]
    );
    assert_eq!(
        NetworkGateway::at([], 15443),
        None,
        "no address, no gateway"
    );
}

#[test]
fn split_horizon_sends_each_remote_network_as_its_gateway_weighted_by_endpoints() {
    use crate::model::{labels, Registry};
    let b = Locality::new("r", "b", "");
    let c = Locality::new("r", "c", "");
    let on = |ip: &str, loc: &Locality, health: Health, net: &str| {
        mesh::on_network(endpoint(ip, loc.clone(), health), net)
    };
    let svc = service(
        "shop",
        "checkout",
        &[8080],
        vec![
            on("10.1.0.1", &b, Health::Healthy, "n1"),
            on("10.2.0.1", &b, Health::Unhealthy, "n2"),
            on("10.2.0.2", &b, Health::Healthy, "n2"),
            on("10.2.0.3", &b, Health::Unhealthy, "n2"),
            on("10.2.0.4", &c, Health::Unhealthy, "n2"),
            on("10.4.0.1", &c, Health::Unhealthy, "n4"),
            on("10.4.0.2", &c, Health::Draining, "n4"),
            on("10.3.0.1", &c, Health::Draining, "n3"),
            on("10.3.0.2", &c, Health::Draining, "n3"),
            endpoint("10.9.0.1", c.clone(), Health::Healthy),
        ],
    );
    let mut registry = Registry::from_services([svc.clone()]);
    mesh::add_gateways(
        &mut registry,
        &[
            ("n1", "192.0.2.1"),
            ("n2", "192.0.2.2"),
            ("n3", "192.0.2.3"),
            ("n4", "192.0.2.4"),
        ],
    );
    let policy = FailoverPolicy::default();
    let input = mesh::cluster_input(&registry, &svc, &policy);
    let cla_for = |network: Option<&str>| {
        let mut client = mesh::client(b.clone());
        if let Some(n) = network {
            client.labels.insert(labels::NETWORK.into(), n.into());
        }
        let class = LocalityClass::of(&client, &policy);
        let plan = priorities(&class, &input, &policy);
        load_assignment("checkout.shop:8080", &input, &class, &plan, &policy)
    };
    let (h, u, d) = (
        HealthStatus::Healthy as i32,
        HealthStatus::Unhealthy as i32,
        HealthStatus::Draining as i32,
    );
    let s = |a: &str| a.to_string();
    assert_eq!(
        envoy::locality_groups(&cla_for(Some("n1"))),
        vec![
            // n2: 3 endpoints in zone b (one healthy) and one in zone c → one healthy gateway
            // host of weight 4 where the best of them ranks (Envoy keeps one host per address)
            (
                0,
                s("b"),
                vec![
                    (s("10.1.0.1"), 8080, h, None),
                    (s("192.0.2.2"), 15443, h, Some(4)),
                ]
            ),
            // n3 is all draining → draining; n4 has none healthy (unhealthy + draining →
            // unhealthy); the endpoint without a network is sent as is
            (
                1,
                s("c"),
                vec![
                    (s("10.9.0.1"), 8080, h, None),
                    (s("192.0.2.3"), 15443, d, Some(2)),
                    (s("192.0.2.4"), 15443, u, Some(2)),
                ]
            ),
        ]
    );
    // On n2, n2's own endpoints are direct and n1 goes through its gateway.
    let on_n2 = envoy::locality_groups(&cla_for(Some("n2")));
    assert_eq!(
        on_n2[0].2,
        vec![
            (s("10.2.0.1"), 8080, u, None),
            (s("10.2.0.2"), 8080, h, None),
            (s("10.2.0.3"), 8080, u, None),
            (s("192.0.2.1"), 15443, h, Some(1)),
        ]
    );
    // A client without a network label gets every endpoint directly, no weights.
    let flat = envoy::locality_groups(&cla_for(None));
    let hosts: usize = flat.iter().map(|g| g.2.len()).sum();
    assert_eq!(hosts, 10);
    assert!(flat.iter().flat_map(|g| &g.2).all(|h| h.3.is_none()));
}

#[test]
fn one_gateway_host_per_cluster_even_across_levels_and_backups() {
    use crate::model::{labels, Registry};
    let east = Locality::new("us-east1", "us-east1-b", "");
    let west = Locality::new("us-west1", "us-west1-a", "");
    let remote = |ip: &str, loc: &Locality| {
        mesh::on_network(endpoint(ip, loc.clone(), Health::Healthy), "n2")
    };
    let primary = service(
        "shop",
        "checkout",
        &[8080],
        vec![
            endpoint("10.1.0.1", east.clone(), Health::Healthy),
            remote("10.2.0.1", &west),
            endpoint("10.1.0.2", west.clone(), Health::Healthy),
        ],
    );
    let mut registry = Registry::from_services([
        primary.clone(),
        service("shop", "dr", &[8080], vec![remote("10.2.1.1", &east)]),
    ]);
    mesh::add_gateways(&mut registry, &[("n2", "192.0.2.2")]);
    let policy = FailoverPolicy {
        backups: vec![mesh::backup("dr", None)],
        ..FailoverPolicy::default()
    };
    let input = mesh::cluster_input(&registry, &primary, &policy);
    let mut client = mesh::client(east.clone());
    client.labels.insert(labels::NETWORK.into(), "n1".into());
    let class = LocalityClass::of(&client, &policy);
    let plan = priorities(&class, &input, &policy);
    let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
    let h = HealthStatus::Healthy as i32;
    let s = |a: &str| a.to_string();
    // The backup's n2 endpoint joins the primary's gateway host at P1 (filed under the first of
    // its endpoints' localities, by name), and the backup's level, left empty, is gone: levels
    // stay gap-free.
    assert_eq!(
        envoy::locality_groups(&cla),
        vec![
            (0, s("us-east1-b"), vec![(s("10.1.0.1"), 8080, h, None)]),
            (
                1,
                s("us-east1-b"),
                vec![(s("192.0.2.2"), 15443, h, Some(2))]
            ),
            (1, s("us-west1-a"), vec![(s("10.1.0.2"), 8080, h, None)]),
        ]
    );
}

#[test]
fn encoding_is_deterministic_whatever_the_source_order() {
    let a = Locality::new("r", "a", "");
    let b = Locality::new("r", "b", "");
    let eps = vec![
        endpoint("10.0.0.1", a.clone(), Health::Healthy),
        endpoint("10.0.0.2", b.clone(), Health::Healthy),
        endpoint("10.0.0.3", a.clone(), Health::Healthy),
    ];
    let mut reversed = eps.clone();
    reversed.reverse();
    let policy = FailoverPolicy::default();
    let class = LocalityClass::of(&ClientInfo::default(), &policy);
    let encode = |eps: Vec<Endpoint>| {
        let svc = service("ns", "s", &[80], eps);
        let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
        let plan = priorities(&class, &input, &policy);
        load_assignment("s.ns:80", &input, &class, &plan, &policy).encode_to_vec()
    };
    assert_eq!(encode(eps), encode(reversed));
    assert_eq!(
        cluster("x", &policy).encode_to_vec(),
        cluster("x", &policy).encode_to_vec()
    );
}

#[test]
fn cluster_enforces_gateway_failures_and_disables_merge_window() {
    let c = cluster("checkout.shop:8080", &FailoverPolicy::default());
    let od = c.outlier_detection.unwrap();
    assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 100);
    assert_eq!(od.max_ejection_percent.unwrap().value, 100);
    let lb = c.common_lb_config.unwrap();
    assert_eq!(
        lb.update_merge_window.unwrap(),
        duration(std::time::Duration::ZERO)
    );
    assert_eq!(lb.healthy_panic_threshold.unwrap().value, 0.0);
    assert_eq!(
        c.eds_cluster_config.unwrap().service_name,
        "checkout.shop:8080"
    );
}

/// (priority, zone/subzone, locality weight, hosts) of each locality group.
fn weights(cla: &ClusterLoadAssignment) -> Vec<(u32, String, Option<u32>, usize)> {
    cla.endpoints
        .iter()
        .map(|g| {
            let l = g.locality.as_ref().unwrap();
            (
                g.priority,
                format!("{}/{}", l.zone, l.sub_zone),
                g.load_balancing_weight.as_ref().map(|w| w.value),
                g.lb_endpoints.len(),
            )
        })
        .collect()
}

fn cla_for(eps: Vec<Endpoint>, client: Locality, policy: &FailoverPolicy) -> ClusterLoadAssignment {
    let svc = service("shop", "checkout", &[8080], eps);
    let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
    let client = mesh::client(client);
    let class = LocalityClass::of(&client, policy);
    let plan = priorities(&class, &input, policy);
    load_assignment("checkout.shop:8080", &input, &class, &plan, policy)
}

/// `n` endpoints in `locality`, addresses from `10.0.<base>.1`.
fn hosts_in(base: u8, n: u8, locality: &Locality) -> Vec<Endpoint> {
    (1..=n)
        .map(|i| {
            endpoint(
                &format!("10.0.{base}.{i}"),
                locality.clone(),
                Health::Healthy,
            )
        })
        .collect()
}

#[test]
fn distribute_weights_give_each_pattern_exactly_its_share_split_by_hosts() {
    use crate::translate::priorities::tests::rule;
    let mut eps = Vec::new();
    eps.extend(hosts_in(1, 1, &Locality::new("r", "a", "x")));
    eps.extend(hosts_in(2, 1, &Locality::new("r", "a", "y")));
    eps.extend(hosts_in(3, 1, &Locality::new("r", "b", "x")));
    eps.extend(hosts_in(4, 2, &Locality::new("r", "b", "y")));
    eps.extend(hosts_in(5, 1, &Locality::new("r", "c", "")));
    eps.extend(hosts_in(6, 2, &Locality::new("s", "q", "")));
    let policy = FailoverPolicy {
        distribute: vec![rule("r/c/*", &[("r/a/*", 80), ("r/b/*", 20)])],
        ..FailoverPolicy::default()
    };
    let cla = cla_for(eps.clone(), Locality::new("r", "c", ""), &policy);
    let s = |t: &str| t.to_string();
    // P0: r/a (2 hosts) takes 80, r/b (3 hosts) 20: lcm 6 → 240, 240 | 40, 80 → ÷40 → 6, 6 |
    // 1, 2: r/a 12/15 = 80%, r/b 3/15 = 20%, each pattern split by hosts. Other levels: weight
    // = hosts.
    assert_eq!(
        weights(&cla),
        vec![
            (0, s("a/x"), Some(6), 1),
            (0, s("a/y"), Some(6), 1),
            (0, s("b/x"), Some(1), 1),
            (0, s("b/y"), Some(2), 2),
            (1, s("c/"), Some(1), 1),
            (2, s("q/"), Some(2), 2),
        ]
    );
    let c = cluster("checkout.shop:8080", &policy);
    assert!(matches!(
        c.common_lb_config.unwrap().locality_config_specifier,
        Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));
    // A client no rule applies to still gets a weight on every locality (the cluster is
    // locality-weighted for everyone): by host count.
    let cla = cla_for(eps.clone(), Locality::new("s", "q", ""), &policy);
    assert!(weights(&cla)
        .iter()
        .all(|(_, _, w, n)| *w == Some(*n as u32)));
    // Without distribute: no weights, no locality weighting, as before.
    let plain = FailoverPolicy::default();
    let cla = cla_for(eps, Locality::new("r", "c", ""), &plain);
    assert!(weights(&cla).iter().all(|(_, _, w, _)| w.is_none()));
    let lb = cluster("checkout.shop:8080", &plain)
        .common_lb_config
        .unwrap();
    assert_eq!(lb.locality_config_specifier, None);
}

#[test]
fn a_pattern_without_endpoints_drops_out_and_the_others_renormalise() {
    use crate::translate::priorities::tests::rule;
    let mut eps = Vec::new();
    eps.extend(hosts_in(1, 3, &Locality::new("r", "a", "")));
    eps.extend(hosts_in(2, 1, &Locality::new("r", "b", "")));
    let policy = FailoverPolicy {
        distribute: vec![rule("*", &[("r/a/*", 50), ("r/b/*", 30), ("r/z/*", 20)])],
        ..FailoverPolicy::default()
    };
    let cla = cla_for(eps, Locality::new("x", "y", ""), &policy);
    // 50 : 30 over 80: 5/8 and 3/8.
    let s = |t: &str| t.to_string();
    assert_eq!(
        weights(&cla),
        vec![(0, s("a/"), Some(5), 3), (0, s("b/"), Some(3), 1)]
    );
}

#[test]
fn weights_too_large_for_exact_shares_are_rounded_at_a_thousandth() {
    use crate::translate::input::SentHost;
    use crate::translate::priorities::{tests::rule, LevelReason, PriorityLevel};
    // Gateways standing for many endpoints: host counts whose lcm overflows Envoy's limit.
    let host = |behind: u32| SentHost {
        address: "192.0.2.1".parse().unwrap(),
        port: 15443,
        health: Health::Healthy,
        gateway_for: Some("n2".into()),
        behind,
    };
    let (a1, a2, b) = (
        Locality::new("r", "a", "1"),
        Locality::new("r", "a", "2"),
        Locality::new("r", "b", ""),
    );
    let groups = vec![
        (&a1, vec![host(65_521)]),
        (&a2, vec![host(65_519)]),
        (&b, vec![host(65_497)]),
    ];
    let level = PriorityLevel {
        priority: 0,
        reason: LevelReason {
            distribute: Some(rule("*", &[("r/a/*", 70), ("r/b/*", 30)])),
            ..crate::translate::priorities::tests::plain_reason()
        },
        endpoints: vec![],
    };
    let w = locality_weights(&level, &groups);
    // 70 000 × 65 521 / 131 040 → 35 000 (rounded), 34 999.5 → 35 000; r/b alone: 30 000;
    // then ÷ their gcd.
    let total: u32 = w.iter().sum();
    let a = f64::from(w[0] + w[1]) / f64::from(total);
    assert!((a - 0.7).abs() < 1e-4, "{w:?}");
    assert!(w.iter().all(|&x| x >= 1));
}

#[test]
fn health_checks_encode_each_protocol() {
    use crate::policy::{HealthCheck, HealthCheckProtocol};
    let with = |protocol: HealthCheckProtocol| FailoverPolicy {
        health_check: Some(HealthCheck {
            interval: std::time::Duration::from_millis(2500),
            ..HealthCheck::new(protocol)
        }),
        ..FailoverPolicy::default()
    };
    let http = cluster(
        "c",
        &with(HealthCheckProtocol::Http {
            path: "/healthz".into(),
            host: Some("checkout.internal".into()),
        }),
    );
    assert_eq!(http.health_checks.len(), 1);
    let hc = &http.health_checks[0];
    assert_eq!(
        hc.interval,
        Some(PbDuration {
            seconds: 2,
            nanos: 500_000_000
        })
    );
    assert_eq!(
        hc.timeout,
        Some(PbDuration {
            seconds: 1,
            nanos: 0
        })
    );
    assert_eq!(hc.unhealthy_threshold.unwrap().value, 3);
    assert_eq!(hc.healthy_threshold.unwrap().value, 2);
    // Not Envoy's 60 s: a fresh Envoy would otherwise probe once and then wait a minute.
    assert_eq!(hc.no_traffic_interval, hc.interval);
    assert_eq!(hc.no_traffic_healthy_interval, hc.interval);
    let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
        panic!("http health check expected: {hc:?}")
    };
    assert_eq!(
        (h.path.as_str(), h.host.as_str()),
        ("/healthz", "checkout.internal")
    );
    assert_eq!(
        h.retriable_statuses,
        [Int64Range {
            start: 100,
            end: 600
        }],
        "a bad status must count towards unhealthyThreshold, not fail the host at once"
    );
    assert!(http.typed_extension_protocol_options.is_empty());

    let tcp = cluster("c", &with(HealthCheckProtocol::Tcp));
    let Some(health_check::HealthChecker::TcpHealthCheck(t)) = &tcp.health_checks[0].health_checker
    else {
        panic!("tcp health check expected")
    };
    // Connect only: nothing sent, nothing expected.
    assert!(t.send.is_none() && t.receive.is_empty());
    assert!(tcp.typed_extension_protocol_options.is_empty());

    let grpc = cluster(
        "c",
        &with(HealthCheckProtocol::Grpc {
            service: Some("checkout.v1.Checkout".into()),
        }),
    );
    let Some(health_check::HealthChecker::GrpcHealthCheck(g)) =
        &grpc.health_checks[0].health_checker
    else {
        panic!("grpc health check expected")
    };
    assert_eq!(g.service_name, "checkout.v1.Checkout");
    // gRPC health checks need an HTTP/2 cluster.
    let options = &grpc.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
    assert_eq!(
        options.type_url,
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    let decoded = HttpProtocolOptions::decode(options.value.as_slice()).unwrap();
    assert!(matches!(
        decoded.upstream_protocol_options,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_))
            }
        ))
    ));
    assert_eq!(grpc.encode_to_vec(), grpc.clone().encode_to_vec());

    // No health check: none sent, and the default cluster is unchanged.
    let plain = cluster("c", &FailoverPolicy::default());
    assert!(plain.health_checks.is_empty());
    assert!(plain.typed_extension_protocol_options.is_empty());
}

#[test]
fn disabled_outlier_detection_is_left_out() {
    let policy = FailoverPolicy {
        outlier_detection: None,
        ..FailoverPolicy::default()
    };
    assert_eq!(cluster("c", &policy).outlier_detection, None);
    assert!(cluster("c", &FailoverPolicy::default())
        .outlier_detection
        .is_some());
}

#[test]
fn routes_cover_every_host_form_and_bare_names_resolve_like_dns() {
    let checkout = service("shop", "checkout", &[8080, 9090], vec![]);
    let cart_shop = service("shop", "cart", &[80], vec![]);
    let cart_other = service("other", "cart", &[80], vec![]);
    let all = [checkout, cart_shop, cart_other];
    let rc = route_configuration(&all, None);
    let vh = |name: &str| {
        rc.virtual_hosts
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no virtual host {name}"))
            .domains
            .clone()
    };
    let domains = vh("checkout.shop:8080");
    for host in [
        "checkout",
        "checkout:8080",
        "checkout.shop",
        "checkout.shop:8080",
        "checkout.shop.svc",
        "checkout.shop.svc:8080",
        "checkout.shop.svc.cluster.local",
        "checkout.shop.svc.cluster.local:8080",
    ] {
        assert!(domains.contains(&host.to_string()), "missing {host}");
    }
    let second_port = vh("checkout.shop:9090");
    assert!(second_port.contains(&"checkout.shop:9090".to_string()));
    assert!(
        !second_port.contains(&"checkout.shop".to_string()),
        "a port-less host belongs to the first port only"
    );
    // ambiguous bare name without a client namespace: left out
    assert!(!vh("cart.shop:80").contains(&"cart".to_string()));
    assert!(!vh("cart.other:80").contains(&"cart".to_string()));
    // with a client namespace: resolves there
    let rc = route_configuration(&all, Some("other"));
    let other = rc.virtual_hosts.iter().find(|v| v.name == "cart.other:80");
    assert!(other.unwrap().domains.contains(&"cart".to_string()));
    // no domain appears twice (Envoy would reject the whole route configuration)
    let mut seen = BTreeSet::new();
    for v in &rc.virtual_hosts {
        for d in &v.domains {
            assert!(seen.insert(d.clone()), "duplicate domain {d}");
        }
    }
}
