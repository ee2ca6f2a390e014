use super::*;
use crate::testing::mesh;

fn ep(ip: &str, cluster: &str, network: &str) -> Endpoint {
    let mut e = mesh::healthy(ip);
    if !cluster.is_empty() {
        e = mesh::in_cluster(e, cluster);
    }
    if !network.is_empty() {
        e = mesh::on_network(e, network);
    }
    e
}

#[test]
fn backups_resolve_ports_clusters_and_report_what_cannot_be_used() {
    let primary = mesh::shop_service("checkout", 8080, vec![ep("10.0.0.1", "", "")]);
    let mut by_name = mesh::service(
        "shop",
        "by-name",
        [("grpc", 9090), ("http", 8081)],
        vec![ep("10.0.1.1", "east", ""), ep("10.0.1.2", "west", "")],
    );
    by_name.endpoints[1]
        .port_overrides
        .insert("http".into(), 18081);
    let only_port = mesh::service(
        "shop",
        "only-port",
        [("web", 7070)],
        vec![ep("10.0.2.1", "", "")],
    );
    let ambiguous = mesh::service("shop", "ambiguous", [("a", 1), ("b", 2)], vec![]);
    let registry = Registry::from_services([primary.clone(), by_name, only_port, ambiguous]);
    let policy = FailoverPolicy {
        backups: vec![
            mesh::backup("by-name", Some("west")),
            mesh::backup("missing", None),
            mesh::backup("only-port", None),
            mesh::backup("ambiguous", None),
            mesh::backup("checkout", None),
        ],
        ..FailoverPolicy::default()
    };
    let input = mesh::cluster_input(&registry, &primary, &policy);
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
    let primary = mesh::shop_service(
        "checkout",
        8080,
        vec![ep("10.0.0.1", "", "n1"), ep("10.0.0.2", "", "n2")],
    );
    let mut registry = Registry::from_services([primary.clone()]);
    mesh::add_gateways(
        &mut registry,
        &[
            ("n1", "192.0.2.1"),
            ("n2", "192.0.2.2"),
            ("n3", "192.0.2.3"),
        ],
    );
    let input = mesh::cluster_input(&registry, &primary, &FailoverPolicy::default());
    assert_eq!(input.gateways.keys().collect::<Vec<_>>(), vec!["n1", "n2"]);
}

#[test]
fn peer_identities_cover_the_service_and_its_used_backups_or_nothing() {
    const LEDGER: &str = "spiffe://td/ns/shop/sa/ledger";
    const VAULT: &str = "spiffe://td/ns/shop/sa/vault";
    let pinned = |ip: &str, id: &str| mesh::with_identity(mesh::healthy(ip), id);
    let names = |input: &ClusterInput| -> Vec<String> {
        input
            .peer_identities()
            .iter()
            .map(|id| id.as_str().to_string())
            .collect()
    };
    let primary = mesh::shop_service(
        "ledger",
        8080,
        vec![pinned("10.0.0.1", LEDGER), mesh::healthy("10.0.0.2")],
    );
    let registry = |backup: Service| Registry::from_services([primary.clone(), backup]);
    let with_backup = FailoverPolicy {
        backups: vec![mesh::backup("vault", None)],
        ..FailoverPolicy::default()
    };

    // The primary alone: its known identities (an endpoint without one adds none).
    let none = FailoverPolicy::default();
    let alone = mesh::cluster_input(&Registry::default(), &primary, &none);
    assert_eq!(names(&alone), [LEDGER]);

    // A backup with known identities adds them: failing over to it must pass the check.
    let vault = mesh::shop_service("vault", 8080, vec![pinned("10.0.1.1", VAULT)]);
    let input = mesh::cluster_input(&registry(vault), &primary, &with_backup);
    assert_eq!(names(&input), [LEDGER, VAULT]);

    // A backup whose endpoints have no identity unpins the whole cluster rather than refusing it.
    let unknown = mesh::shop_service("vault", 8080, vec![mesh::healthy("10.0.1.1")]);
    let input = mesh::cluster_input(&registry(unknown), &primary, &with_backup);
    assert!(names(&input).is_empty());

    // A backup without endpoints is never connected to: it changes nothing.
    let empty = mesh::shop_service("vault", 8080, vec![]);
    let input = mesh::cluster_input(&registry(empty), &primary, &with_backup);
    assert_eq!(names(&input), [LEDGER]);

    // No identity for the service itself: nothing pinned, whatever the backups have.
    let anonymous = mesh::shop_service("ledger", 8080, vec![mesh::healthy("10.0.0.1")]);
    let vault = mesh::shop_service("vault", 8080, vec![pinned("10.0.1.1", VAULT)]);
    let input = mesh::cluster_input(
        &Registry::from_services([anonymous.clone(), vault]),
        &anonymous,
        &with_backup,
    );
    assert!(names(&input).is_empty());
}
