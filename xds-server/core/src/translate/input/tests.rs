use super::*;
use crate::model::{Health, Locality};
use crate::policy::BackupService;

fn ep(ip: &str, cluster: &str, network: &str) -> Endpoint {
    let mut labels = BTreeMap::new();
    if !cluster.is_empty() {
        labels.insert(labels::CLUSTER.to_string(), cluster.to_string());
    }
    if !network.is_empty() {
        labels.insert(labels::NETWORK.to_string(), network.to_string());
    }
    Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::new("r", "z", ""),
        labels,
        health: Health::Healthy,
    }
}

fn svc(name: &str, ports: &[(&str, u16)], endpoints: Vec<Endpoint>) -> Service {
    Service {
        traffic_distribution: None,
        id: ServiceId::new("shop", name),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort {
                name: n.to_string(),
                port: *p,
            })
            .collect(),
        endpoints,
    }
}

fn backup(name: &str, cluster: Option<&str>) -> BackupService {
    BackupService {
        service: ServiceId::new("shop", name),
        cluster: cluster.map(str::to_string),
    }
}

#[test]
fn backups_resolve_ports_clusters_and_report_what_cannot_be_used() {
    let primary = svc("checkout", &[("http", 8080)], vec![ep("10.0.0.1", "", "")]);
    let mut by_name = svc(
        "by-name",
        &[("grpc", 9090), ("http", 8081)],
        vec![ep("10.0.1.1", "east", ""), ep("10.0.1.2", "west", "")],
    );
    by_name.endpoints[1]
        .port_overrides
        .insert("http".into(), 18081);
    let only_port = svc("only-port", &[("web", 7070)], vec![ep("10.0.2.1", "", "")]);
    let ambiguous = svc("ambiguous", &[("a", 1), ("b", 2)], vec![]);
    let registry = Registry::from_services([primary.clone(), by_name, only_port, ambiguous]);
    let policy = FailoverPolicy {
        backups: vec![
            backup("by-name", Some("west")),
            backup("missing", None),
            backup("only-port", None),
            backup("ambiguous", None),
            backup("checkout", None),
        ],
        ..FailoverPolicy::default()
    };
    let input = ClusterInput::new(
        &registry,
        Arc::new(primary.clone()),
        &primary.ports[0],
        &policy,
    );
    // (position, service, backup port, [(address, target port)])
    type Taken<'a> = (usize, &'a str, u16, Vec<(String, u16)>);
    let taken: Vec<Taken> = input
        .backups
        .iter()
        .map(|b| {
            (
                b.position,
                b.service.name.as_str(),
                b.port.port,
                b.endpoints
                    .iter()
                    .map(|e| (e.address.to_string(), e.target_port(&primary.ports[0])))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        taken,
        vec![
            // same port name; only the west endpoint; its own port override carried over
            (1, "by-name", 8081, vec![("10.0.1.2".to_string(), 18081)]),
            // the only port, whatever its name
            (3, "only-port", 7070, vec![("10.0.2.1".to_string(), 7070)]),
        ]
    );
    let skipped: Vec<(usize, &str)> = input
        .skipped
        .iter()
        .map(|s| (s.position, s.service.name.as_str()))
        .collect();
    assert_eq!(
        skipped,
        vec![(2, "missing"), (4, "ambiguous"), (5, "checkout")]
    );
    assert!(input.skipped[1].reason.contains("no port named `http`"));
    // Flat numbering: primary first, then the backups in order.
    assert_eq!(input.len(), 3);
    assert_eq!(input.endpoint(0).address.to_string(), "10.0.0.1");
    assert_eq!(input.endpoint(1).address.to_string(), "10.0.1.2");
    assert_eq!(input.endpoint(2).address.to_string(), "10.0.2.1");
    let starts: Vec<usize> = input.blocks().map(|b| b.start).collect();
    assert_eq!(starts, vec![0, 1, 2]);
}

#[test]
fn only_the_gateways_of_networks_in_use_are_kept() {
    let primary = svc(
        "checkout",
        &[("http", 8080)],
        vec![ep("10.0.0.1", "", "n1"), ep("10.0.0.2", "", "n2")],
    );
    let mut registry = Registry::from_services([primary.clone()]);
    for (net, ip) in [
        ("n1", "192.0.2.1"),
        ("n2", "192.0.2.2"),
        ("n3", "192.0.2.3"),
    ] {
        registry.gateways.insert(
            net.to_string(),
            NetworkGateway {
                address: ip.parse().unwrap(),
                port: 15443,
            },
        );
    }
    let input = ClusterInput::new(
        &registry,
        Arc::new(primary.clone()),
        &primary.ports[0],
        &FailoverPolicy::default(),
    );
    assert_eq!(input.gateways.keys().collect::<Vec<_>>(), vec!["n1", "n2"]);
}
