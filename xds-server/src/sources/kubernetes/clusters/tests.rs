use super::*;
use xds_core::model::{labels, Endpoint, Locality, ServicePort};

fn spec(text: &str) -> Result<ClusterSpec, ClusterSpecError> {
    text.parse()
}

#[test]
fn cluster_flag_parses_every_option() {
    let s = spec("east=/k/east.yaml,context=prod,network=net-1,gateway=10.0.0.9:15443").unwrap();
    assert_eq!(s.name, "east");
    assert_eq!(s.kubeconfig, Some(PathBuf::from("/k/east.yaml")));
    assert_eq!(s.context.as_deref(), Some("prod"));
    assert_eq!(s.network, "net-1");
    assert_eq!(s.gateway.as_deref(), Some("10.0.0.9:15443"));
    let s = spec("west=").unwrap();
    assert_eq!(
        s.kubeconfig, None,
        "empty path: in-cluster or default kubeconfig"
    );
}

#[test]
fn cluster_flag_errors_name_the_problem() {
    let err = |t: &str| spec(t).unwrap_err().to_string();
    assert!(
        err("east").contains("missing `=KUBECONFIG`"),
        "{}",
        err("east")
    );
    assert!(err("east=k,zone=a").contains("unknown option \"zone\""));
    assert!(err("east=k,network").contains("is not KEY=VALUE"));
    assert!(err("=k").contains("name"));
    assert!(err("ea st=k").contains("name"));
    assert!(err("east=k,gateway=1.2.3.4:15443").contains("set network=NET"));
    assert!(err("east=k,network=n,gateway=1.2.3.4").contains("HOST:PORT"));
    assert!(err("east=k,network=n,gateway=1.2.3.4:0").contains("not a port"));
}

#[test]
fn config_file_holds_the_same_settings_and_names_bad_fields() {
    let config = ServerConfig::parse(
        "xds.yaml",
        "clusters:\n- {name: east, kubeconfig: /k/e.yaml, network: n1, gateway: '10.0.0.9:15443'}\n- {name: west}\nstaleAfter: 30s\n",
    )
    .unwrap();
    assert_eq!(config.clusters.len(), 2);
    assert_eq!(
        config.clusters[0],
        spec("east=/k/e.yaml,network=n1,gateway=10.0.0.9:15443").unwrap()
    );
    assert_eq!(config.clusters[1].kubeconfig, None);
    assert_eq!(
        config.stale_after,
        Some(StaleAfter(Some(Duration::from_secs(30))))
    );
    let err = ServerConfig::parse("xds.yaml", "clusters:\n- {name: east, netwrok: n1}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("xds.yaml: ") && err.contains("netwrok") && err.contains("line 2"),
        "{err}"
    );
    let err = ServerConfig::parse(
        "xds.yaml",
        "clusters:\n- {name: east, gateway: '1.2.3.4:1'}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("clusters[0]") && err.contains("set network=NET"),
        "{err}"
    );
    let err = ServerConfig::parse("xds.yaml", "staleAfter: soon\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`never`"), "{err}");
    assert_eq!(parse_stale_after("never"), Ok(StaleAfter(None)));
}

#[test]
fn the_shipped_sample_config_is_valid() {
    let text = include_str!("../../../../../deploy/multicluster/xds-config.yaml");
    let config = ServerConfig::parse("deploy/multicluster/xds-config.yaml", text).unwrap();
    validate_set(&config.clusters).unwrap();
    assert_eq!(config.clusters.len(), 2);
}

#[test]
fn a_set_needs_unique_names_and_one_gateway_per_network() {
    let a = spec("a=k,network=n,gateway=1.1.1.1:1").unwrap();
    let b = spec("b=k,network=n,gateway=2.2.2.2:1").unwrap();
    let a2 = spec("a=k2").unwrap();
    let b_same = spec("b=k,network=n,gateway=1.1.1.1:1").unwrap();
    assert!(validate_set(&[a.clone(), a2])
        .unwrap_err()
        .to_string()
        .contains("two clusters"));
    assert!(validate_set(&[a.clone(), b])
        .unwrap_err()
        .to_string()
        .contains("one gateway per network"));
    validate_set(&[a, b_same]).unwrap();
}

fn endpoint(ip: &str, cluster: &str, health: Health) -> Endpoint {
    Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::new("r", "z", ""),
        labels: BTreeMap::from([(labels::CLUSTER.to_string(), cluster.to_string())]),
        health,
        identity: None,
    }
}

fn registry(cluster: &str, port: u16, eps: &[(&str, Health)]) -> Arc<Registry> {
    Arc::new(Registry::from_services([Service {
        traffic_distribution: None,
        identity: None,
        id: ServiceId::new("shop", "checkout"),
        ports: vec![ServicePort {
            name: "http".into(),
            port,
        }],
        endpoints: eps
            .iter()
            .map(|(ip, h)| endpoint(ip, cluster, *h))
            .collect(),
    }]))
}

fn view(name: &str, registry: Option<Arc<Registry>>, down: Option<Instant>) -> MemberView {
    MemberView {
        name: name.into(),
        registry,
        down_since: down,
    }
}

const STALE: Option<Duration> = Some(Duration::from_secs(10));

#[test]
fn the_same_service_in_two_clusters_is_one_service_with_both_endpoint_sets() {
    let now = Instant::now();
    let views = [
        view(
            "east",
            Some(registry("east", 80, &[("10.0.0.1", Health::Healthy)])),
            None,
        ),
        view(
            "west",
            Some(registry("west", 8080, &[("10.1.0.1", Health::Healthy)])),
            None,
        ),
    ];
    let merged = merge(&views, &BTreeMap::new(), now, STALE);
    let svc = &merged.registry.services[&ServiceId::new("shop", "checkout")];
    assert_eq!(svc.ports.len(), 1, "ports merge by name");
    assert_eq!(svc.ports[0].port, 80, "the first cluster's number wins");
    let by_cluster: BTreeMap<&str, u16> = svc
        .endpoints
        .iter()
        .map(|e| {
            (
                e.label(labels::CLUSTER).unwrap(),
                e.target_port(&svc.ports[0]),
            )
        })
        .collect();
    assert_eq!(
        by_cluster,
        BTreeMap::from([("east", 80), ("west", 8080)]),
        "west's endpoints keep the port west's Service gives them"
    );
    assert!(merged.stale.is_empty());
}

#[test]
fn a_stale_cluster_is_unhealthy_only_where_a_fresh_cluster_has_healthy_endpoints() {
    let now = Instant::now();
    let long_ago = now - Duration::from_secs(60);
    let east = registry("east", 80, &[("10.0.0.1", Health::Healthy)]);
    let west = registry("west", 80, &[("10.1.0.1", Health::Healthy)]);
    let health_of = |merged: &Merged, cluster: &str| {
        merged.registry.services[&ServiceId::new("shop", "checkout")]
            .endpoints
            .iter()
            .find(|e| e.label(labels::CLUSTER) == Some(cluster))
            .unwrap()
            .health
    };
    // Down, but not for long: kept as they were.
    let recent = now - Duration::from_secs(1);
    let merged = merge(
        &[
            view("east", Some(east.clone()), Some(recent)),
            view("west", Some(west.clone()), None),
        ],
        &BTreeMap::new(),
        now,
        STALE,
    );
    assert_eq!(health_of(&merged, "east"), Health::Healthy);
    assert!(merged.stale.is_empty());
    // Stale: unhealthy, because west serves.
    let merged = merge(
        &[
            view("east", Some(east.clone()), Some(long_ago)),
            view("west", Some(west), None),
        ],
        &BTreeMap::new(),
        now,
        STALE,
    );
    assert_eq!(health_of(&merged, "east"), Health::Unhealthy);
    assert_eq!(health_of(&merged, "west"), Health::Healthy);
    let stale_label = |cluster: &str| {
        merged.registry.services[&ServiceId::new("shop", "checkout")]
            .endpoints
            .iter()
            .find(|e| e.label(labels::CLUSTER) == Some(cluster))
            .and_then(|e| e.label(STALE_LABEL))
            .map(str::to_string)
    };
    assert_eq!(
        stale_label("east").as_deref(),
        Some("true"),
        "the reason is visible"
    );
    assert_eq!(stale_label("west"), None);
    assert_eq!(merged.stale, vec!["east".to_string()]);
    // Stale, but west has nothing healthy: east's last known state stays, no blackhole.
    let west_down = registry("west", 80, &[("10.1.0.1", Health::Unhealthy)]);
    let merged = merge(
        &[
            view("east", Some(east.clone()), Some(long_ago)),
            view("west", Some(west_down), None),
        ],
        &BTreeMap::new(),
        now,
        STALE,
    );
    assert_eq!(health_of(&merged, "east"), Health::Healthy);
    // Staleness off: never marked.
    let merged = merge(
        &[view("east", Some(east), Some(long_ago))],
        &BTreeMap::new(),
        now,
        None,
    );
    assert!(merged.stale.is_empty());
}

#[test]
fn merge_is_deterministic_and_carries_the_gateways() {
    let now = Instant::now();
    let a = view(
        "a",
        Some(registry(
            "a",
            80,
            &[("10.0.0.2", Health::Healthy), ("10.0.0.1", Health::Healthy)],
        )),
        None,
    );
    let b = view(
        "b",
        Some(registry("b", 80, &[("10.1.0.1", Health::Healthy)])),
        None,
    );
    let gateways = BTreeMap::from([(
        "n2".to_string(),
        NetworkGateway::new("192.0.2.1".parse().unwrap(), 15443),
    )]);
    let ab = merge(&[a.clone(), b.clone()], &gateways, now, STALE);
    let ba = merge(&[b, a], &gateways, now, STALE);
    assert_eq!(ab.registry.services, ba.registry.services);
    assert_eq!(ab.registry.gateways, gateways);
}

#[test]
fn publishing_waits_for_every_cluster_but_not_forever() {
    let started = Instant::now();
    let listed = view("a", Some(registry("a", 80, &[])), None);
    let unlisted = view("b", None, Some(started));
    let soon = started + Duration::from_secs(1);
    let later = started + Duration::from_secs(11);
    assert!(!ready_to_publish(
        &[listed.clone(), unlisted.clone()],
        started,
        soon,
        STALE
    ));
    assert!(ready_to_publish(
        &[listed.clone(), unlisted.clone()],
        started,
        later,
        STALE
    ));
    assert!(
        !ready_to_publish(&[listed.clone(), unlisted.clone()], started, later, None),
        "with staleness off, every cluster must list first"
    );
    assert!(
        !ready_to_publish(&[unlisted], started, later, STALE),
        "never with nothing listed"
    );
    assert!(ready_to_publish(&[listed], started, soon, STALE));
}
