use super::*;
use crate::model::{Endpoint, Health, Locality};
use crate::testing::envoy;
use crate::testing::mesh::{self, endpoint, on_network};
use crate::translate::priorities::priorities;
use crate::translate::resources::ads_config_source;
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;

fn registry(services: Vec<Service>) -> Registry {
    Registry::from_services(services)
}

fn svc(ns: &str, name: &str, ports: &[u16], endpoints: Vec<Endpoint>) -> Service {
    let ports = ports.iter().enumerate().map(|(i, p)| (format!("p{i}"), *p));
    mesh::service(ns, name, ports, endpoints)
}

/// (namespace, name, port) an authority resolves to.
fn resolved(r: &Registry, authority: &str, ns: Option<&str>) -> Option<(String, String, u16)> {
    resolve_authority(r, &ServicesByName::new(r), authority, ns)
        .map(|(s, p)| (s.id.namespace.clone(), s.id.name.clone(), p.port))
}

fn at(ns: &str, name: &str, port: u16) -> Option<(String, String, u16)> {
    Some((ns.to_string(), name.to_string(), port))
}

#[test]
fn every_target_form_resolves_to_its_service_port() {
    let r = registry(vec![
        svc("bank", "ledger", &[9090, 9091], vec![]),
        svc("shop", "cart", &[8080], vec![]),
    ]);
    for form in [
        "ledger.bank:9091",
        "ledger.bank.svc:9091",
        "ledger.bank.svc.cluster.local:9091",
    ] {
        assert_eq!(
            resolved(&r, form, None),
            at("bank", "ledger", 9091),
            "{form}"
        );
    }
    // Without a port: the service's first port.
    for form in [
        "ledger.bank",
        "ledger.bank.svc",
        "ledger.bank.svc.cluster.local",
    ] {
        assert_eq!(
            resolved(&r, form, None),
            at("bank", "ledger", 9090),
            "{form}"
        );
    }
    // A bare name: the only service of that name, from any namespace.
    assert_eq!(
        resolved(&r, "ledger:9091", Some("shop")),
        at("bank", "ledger", 9091)
    );
    assert_eq!(resolved(&r, "cart", None), at("shop", "cart", 8080));
    // A port the service does not have, an unknown service or namespace: nothing.
    assert_eq!(resolved(&r, "ledger.bank:9999", None), None);
    assert_eq!(resolved(&r, "ledger.shop:9090", None), None);
    assert_eq!(resolved(&r, "nope:9090", None), None);
}

#[test]
fn a_bare_name_resolves_like_kubernetes_dns() {
    let r = registry(vec![
        svc("bank", "ledger", &[9090], vec![]),
        svc("audit", "ledger", &[7070], vec![]),
    ]);
    // The client's own namespace first.
    assert_eq!(
        resolved(&r, "ledger:9090", Some("bank")),
        at("bank", "ledger", 9090)
    );
    assert_eq!(
        resolved(&r, "ledger", Some("audit")),
        at("audit", "ledger", 7070)
    );
    // Elsewhere the name is ambiguous: nothing rather than a guess.
    assert_eq!(resolved(&r, "ledger:9090", Some("shop")), None);
    assert_eq!(resolved(&r, "ledger:9090", None), None);
    // In its own namespace a port of that namespace's service only.
    assert_eq!(resolved(&r, "ledger:7070", Some("bank")), None);
}

#[test]
fn malformed_authorities_resolve_to_nothing() {
    let r = registry(vec![svc("bank", "ledger", &[9090], vec![])]);
    let long = format!("{}.bank:9090", "l".repeat(1000));
    for bad in [
        "",
        ":9090",
        "ledger.:9090",
        ".bank:9090",
        "ledger.bank:",
        "ledger.bank:0",
        "ledger.bank:65536",
        "ledger.bank:+90",
        "ledger.bank:90a",
        "ledger.bank.other:9090",
        "ledger.bank.svc.cluster:9090",
        "10.0.0.1:9090",
        "[::1]:9090",
        "ledger.bank:9090:9090",
        long.as_str(),
        "*",
        "outbound_http",
    ] {
        assert_eq!(resolved(&r, bad, Some("bank")), None, "{bad:?}");
    }
}

#[test]
fn the_api_listener_fetches_routes_of_its_own_name_with_the_router_last() {
    let l = api_listener("ledger.bank:9090");
    assert_eq!(l.name, "ledger.bank:9090");
    assert!(l.address.is_none() && l.filter_chains.is_empty());
    let any = l.api_listener.unwrap().api_listener.unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("RDS expected")
    };
    assert_eq!(rds.route_config_name, "ledger.bank:9090");
    assert_eq!(rds.config_source, Some(ads_config_source()));
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
}

#[test]
fn the_route_matches_exactly_the_authority_port_included() {
    let rc = route_configuration("ledger:9090", "ledger.bank:9090");
    assert_eq!(rc.name, "ledger:9090");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, ["ledger:9090"]);
    let route = &rc.virtual_hosts[0].routes[0];
    let Some(Action::Route(action)) = &route.action else {
        panic!("a route action expected (grpc-js NACKs any other)")
    };
    assert_eq!(
        action.cluster_specifier,
        Some(ClusterSpecifier::Cluster("ledger.bank:9090".into()))
    );
}

#[test]
fn the_cluster_is_round_robin_eds_with_failure_percentage_detection_fully_set() {
    let policy = FailoverPolicy::default();
    let c = cluster("ledger.bank:9090", &policy);
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let eds = c.eds_cluster_config.unwrap();
    assert_eq!(eds.service_name, "ledger.bank:9090");
    assert_eq!(eds.eds_config, Some(ads_config_source()));
    // Load is reported to this server, in the one form gRPC accepts (`self`).
    let lrs = c.lrs_server.expect("gRPC clients report load");
    assert!(
        matches!(
            lrs.config_source_specifier,
            Some(ConfigSourceSpecifier::Self_(_))
        ),
        "{lrs:?}"
    );
    // Nothing gRPC refuses or cannot do.
    assert!(c.transport_socket.is_none() && c.health_checks.is_empty());
    assert!(c.typed_extension_protocol_options.is_empty());
    let od = c
        .outlier_detection
        .expect("the default policy detects failures");
    let set = |v: &Option<UInt32Value>| v.as_ref().map(|v| v.value);
    // gRPC ignores these: not sent, so nobody reads them as in force.
    assert!(od.consecutive_5xx.is_none() && od.consecutive_gateway_failure.is_none());
    let defaults = OutlierDetection::default();
    assert_eq!(set(&od.enforcing_failure_percentage), Some(100));
    assert_eq!(
        set(&od.failure_percentage_request_volume),
        Some(
            defaults
                .consecutive_5xx
                .min(defaults.consecutive_gateway_failure)
        )
    );
    assert_eq!(set(&od.failure_percentage_minimum_hosts), Some(1));
    assert_eq!(
        set(&od.failure_percentage_threshold),
        Some(FAILURE_PERCENTAGE_THRESHOLD)
    );
    for field in [
        &od.enforcing_success_rate,
        &od.success_rate_minimum_hosts,
        &od.success_rate_request_volume,
        &od.success_rate_stdev_factor,
        &od.max_ejection_percent,
    ] {
        assert!(field.is_some(), "every field set: {od:?}");
    }
    assert_eq!(set(&od.enforcing_success_rate), Some(0));
    assert!(od.interval.is_some() && od.base_ejection_time.is_some());
    assert!(od.max_ejection_time.is_some());
}

#[test]
fn detection_switched_off_in_the_policy_is_off_for_grpc() {
    let od = outlier_detection(&OutlierDetection {
        consecutive_5xx: 0,
        consecutive_gateway_failure: 0,
        ..OutlierDetection::default()
    });
    assert_eq!(
        od.enforcing_failure_percentage,
        Some(UInt32Value { value: 0 })
    );
    assert_eq!(
        od.failure_percentage_request_volume,
        Some(UInt32Value { value: 1 })
    );
    // One count off: the other decides.
    let od = outlier_detection(&OutlierDetection {
        consecutive_5xx: 0,
        consecutive_gateway_failure: 3,
        ..OutlierDetection::default()
    });
    assert_eq!(
        od.failure_percentage_request_volume,
        Some(UInt32Value { value: 3 })
    );
}

/// Every rule gRPC enforces on a load assignment (it NACKs or drops what breaks one).
fn assert_grpc_accepts(cla: &ClusterLoadAssignment) {
    let mut addresses = BTreeSet::new();
    let mut priorities = BTreeSet::new();
    let mut localities = BTreeSet::new();
    for g in &cla.endpoints {
        let weight = g.load_balancing_weight.as_ref().map(|w| w.value);
        assert!(weight.is_some_and(|w| w > 0), "locality weight: {g:?}");
        assert!(!g.lb_endpoints.is_empty(), "empty locality: {g:?}");
        let l = g.locality.clone().unwrap();
        assert!(
            localities.insert((g.priority, l.region, l.zone, l.sub_zone)),
            "a locality twice in priority {}",
            g.priority
        );
        priorities.insert(g.priority);
        for lb in &g.lb_endpoints {
            let w = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            assert!(w > 0, "endpoint weight 0: {lb:?}");
            let (address, port) = envoy::host(lb);
            assert!(address.parse::<IpAddr>().is_ok(), "not an IP: {address}");
            assert!(addresses.insert((address, port)), "duplicate address");
        }
    }
    let expected: BTreeSet<u32> = (0..priorities.len() as u32).collect();
    assert_eq!(priorities, expected, "priority gap");
    assert!(cla.policy.is_none(), "no overprovisioning factor");
}

/// Under the default policy, the input, class and plan of `service`'s first port for a client at
/// `locality`.
fn default_plan(
    service: &Service,
    locality: &Locality,
) -> (FailoverPolicy, ClusterInput, LocalityClass, PriorityPlan) {
    let policy = FailoverPolicy::default();
    let class = LocalityClass::of(&mesh::client(locality.clone()), &policy);
    let input = ClusterInput::plain(Arc::new(service.clone()), &service.ports[0]);
    let plan = priorities(&class, &input, &policy);
    (policy, input, class, plan)
}

type Summary = Vec<(u32, String, u32, Vec<(String, i32)>)>;

fn summary(cla: &ClusterLoadAssignment) -> Summary {
    cla.endpoints
        .iter()
        .map(|g| {
            (
                g.priority,
                g.locality.as_ref().unwrap().zone.clone(),
                g.load_balancing_weight.as_ref().unwrap().value,
                g.lb_endpoints
                    .iter()
                    .map(|lb| (envoy::host(lb).0, lb.health_status))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn load_assignment_keeps_envoys_levels_weights_every_locality_and_sends_unready_as_unhealthy() {
    let b = Locality::new("us-east1", "us-east1-b", "");
    let c = Locality::new("us-east1", "us-east1-c", "");
    let west = Locality::new("us-west1", "us-west1-a", "");
    let service = svc(
        "bank",
        "ledger",
        &[9090],
        vec![
            endpoint("10.0.0.1", b.clone(), Health::Healthy),
            endpoint("10.0.0.2", b.clone(), Health::Unhealthy),
            endpoint("10.0.0.3", c.clone(), Health::Healthy),
            endpoint("10.0.0.4", west.clone(), Health::Draining),
        ],
    );
    let (policy, input, class, plan) = default_plan(&service, &b);
    let cla = load_assignment("ledger.bank:9090", &input, &class, &plan);
    assert_grpc_accepts(&cla);
    let healthy = HealthStatus::Healthy as i32;
    assert_eq!(
        summary(&cla),
        vec![
            (
                0,
                "us-east1-b".into(),
                2,
                vec![
                    ("10.0.0.1".into(), healthy),
                    ("10.0.0.2".into(), HealthStatus::Unhealthy as i32)
                ]
            ),
            (
                1,
                "us-east1-c".into(),
                1,
                vec![("10.0.0.3".into(), healthy)]
            ),
            (
                2,
                "us-west1-a".into(),
                1,
                vec![("10.0.0.4".into(), HealthStatus::Draining as i32)]
            ),
        ]
    );
    // The same levels as Envoy's answer, from the same plan.
    let envoy_cla =
        crate::translate::resources::load_assignment("x", &input, &class, &plan, &policy);
    let levels = |cla: &ClusterLoadAssignment| {
        cla.endpoints
            .iter()
            .map(|g| (g.priority, g.lb_endpoints.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(levels(&cla), levels(&envoy_cla));
}

#[test]
fn an_address_is_sent_once_and_priorities_stay_gap_free() {
    let b = Locality::new("r1", "b", "");
    let c = Locality::new("r1", "c", "");
    let d = Locality::new("r2", "d", "");
    // The same address in two localities (one listed twice by a source), and a zone whose only
    // endpoint is that duplicate: its level would be empty.
    let service = svc(
        "bank",
        "ledger",
        &[9090],
        vec![
            endpoint("10.0.0.1", b.clone(), Health::Healthy),
            endpoint("10.0.0.1", c.clone(), Health::Healthy),
            endpoint("10.0.0.9", d.clone(), Health::Healthy),
        ],
    );
    let (_, input, class, plan) = default_plan(&service, &b);
    assert_eq!(
        plan.levels.len(),
        3,
        "b, c and d are three levels for Envoy"
    );
    let cla = load_assignment("ledger.bank:9090", &input, &class, &plan);
    assert_grpc_accepts(&cla);
    let zones: Vec<(u32, String)> = cla
        .endpoints
        .iter()
        .map(|g| (g.priority, g.locality.clone().unwrap().zone))
        .collect();
    assert_eq!(zones, [(0, "b".to_string()), (1, "d".to_string())]);
}

#[test]
fn a_gateway_is_sent_once_weighted_by_the_endpoints_it_stands_for() {
    let b = Locality::new("r1", "b", "");
    let c = Locality::new("r1", "c", "");
    let remote_b = Locality::new("r1", "b", "");
    let remote_d = Locality::new("r2", "d", "");
    let service = svc(
        "bank",
        "ledger",
        &[9090],
        vec![
            on_network(endpoint("10.0.0.1", c.clone(), Health::Healthy), "n1"),
            on_network(
                endpoint("10.1.0.1", remote_b.clone(), Health::Healthy),
                "n2",
            ),
            on_network(
                endpoint("10.1.0.2", remote_b.clone(), Health::Healthy),
                "n2",
            ),
            on_network(
                endpoint("10.1.0.3", remote_d.clone(), Health::Healthy),
                "n2",
            ),
        ],
    );
    let mut r = registry(vec![service.clone()]);
    mesh::add_gateways(&mut r, &[("n2", "192.0.2.2")]);
    let policy = FailoverPolicy::default();
    let mut client = mesh::client(b.clone());
    client.labels = BTreeMap::from([(labels::NETWORK.to_string(), "n1".to_string())]);
    let class = LocalityClass::of(&client, &policy);
    let input = mesh::cluster_input(&r, &service, &policy);
    let plan = priorities(&class, &input, &policy);
    let cla = load_assignment("ledger.bank:9090", &input, &class, &plan);
    assert_grpc_accepts(&cla);
    let gateway: Vec<(u32, u32)> = cla
        .endpoints
        .iter()
        .flat_map(|g| {
            g.lb_endpoints
                .iter()
                .filter(|lb| envoy::host(lb).0 == "192.0.2.2")
                .map(|lb| (g.priority, lb.load_balancing_weight.unwrap().value))
        })
        .collect();
    assert_eq!(gateway, [(0, 3)], "{cla:?}");
}
