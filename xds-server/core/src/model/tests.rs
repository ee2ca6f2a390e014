use super::*;

fn svc(name: &str, port: u16) -> Service {
    Service {
        id: ServiceId::new("shop", name),
        ports: vec![ServicePort {
            name: "http".into(),
            port,
        }],
        endpoints: vec![],
        traffic_distribution: None,
        identity: None,
    }
}

#[test]
fn changed_services_reports_added_changed_and_removed() {
    let old = Registry::from_services([svc("a", 1), svc("b", 1), svc("c", 1)]);
    let new = Registry::from_services([svc("a", 1), svc("b", 2), svc("d", 1)]);
    let mut changed: Vec<String> = old
        .changed_services(&new)
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    changed.sort();
    assert_eq!(changed, vec!["shop/b", "shop/c", "shop/d"]);
}

#[test]
fn labels_expose_locality_under_topology_keys() {
    let mut ep = Endpoint {
        address: "10.0.0.1".parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::new("r1", "z1", ""),
        labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
        health: Health::Healthy,
        identity: None,
    };
    assert_eq!(ep.label(labels::REGION), Some("r1"));
    assert_eq!(ep.label(labels::ZONE), Some("z1"));
    assert_eq!(ep.label(labels::SUBZONE), None);
    assert_eq!(ep.label("team"), Some("a"));
    ep.labels.insert(labels::REGION.into(), "ignored".into());
    assert_eq!(ep.label(labels::REGION), Some("r1"));
}

#[test]
fn a_services_identities_are_its_declared_one_and_its_endpoints() {
    let id = |text: &str| SpiffeId::parse(text).unwrap();
    let ep = |ip: &str, identity: Option<&str>| Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::default(),
        labels: BTreeMap::new(),
        health: Health::Healthy,
        identity: identity.map(id),
    };
    let mut s = svc("ledger", 80);
    assert!(s.identities().is_empty(), "nothing known: no identity");
    s.endpoints = vec![
        ep("10.0.0.1", Some("spiffe://td/ns/bank/sa/ledger")),
        ep("10.0.0.2", None),
        ep("10.0.0.3", Some("spiffe://td/ns/bank/sa/ledger")),
        ep("10.0.0.4", Some("spiffe://td/ns/bank/sa/ledger-v2")),
    ];
    s.identity = Some(id("spiffe://td/ns/bank/sa/ledger-admin"));
    let names: Vec<&str> = s.identities().into_iter().map(SpiffeId::as_str).collect();
    assert_eq!(
        names,
        [
            "spiffe://td/ns/bank/sa/ledger",
            "spiffe://td/ns/bank/sa/ledger-admin",
            "spiffe://td/ns/bank/sa/ledger-v2"
        ]
    );
}
