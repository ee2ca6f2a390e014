use super::*;
use crate::model::{Health, Locality, Service, ServiceId};
use crate::policy::{FailoverPolicy, PolicyScope};
use crate::testing::xds::names;
use crate::testing::{mesh, xds};

fn registry(endpoint_ip: &str) -> Arc<Registry> {
    let svc = |name: &str, ip: &str| {
        let endpoint = mesh::endpoint(ip, Locality::new("r", "z1", ""), Health::Healthy);
        mesh::shop_service(name, 8080, vec![endpoint])
    };
    Arc::new(Registry::from_services([
        svc("a", endpoint_ip),
        svc("b", "10.0.0.9"),
    ]))
}

fn client(zone: &str, node: &str) -> ClientInfo {
    ClientInfo {
        node_id: node.into(),
        ..mesh::client(Locality::new("r", zone, ""))
    }
}

#[test]
fn eds_answers_are_shared_per_class_and_only_named_ones_are_returned() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    let want = names(&["a.shop:8080", "missing.shop:80"]);
    let one = snap.resources_for(ResourceType::Endpoint, &client("z1", "n1"), Some(&want));
    let two = snap.resources_for(ResourceType::Endpoint, &client("z1", "n2"), Some(&want));
    assert_eq!(one.len(), 1);
    assert!(
        Arc::ptr_eq(&one[0], &two[0]),
        "same class shares one encoding"
    );
    let other = snap.resources_for(ResourceType::Endpoint, &client("z2", "n3"), Some(&want));
    assert!(!Arc::ptr_eq(&one[0], &other[0]));
    assert_eq!(snap.stats().eds_answers, 2);
    assert!(snap
        .resources_for(ResourceType::Endpoint, &client("z1", "n1"), None)
        .is_empty());
    let cds = snap.resources_for(ResourceType::Cluster, &client("z1", "n1"), None);
    assert_eq!(
        cds.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["a.shop:8080", "b.shop:8080"]
    );
}

#[test]
fn next_snapshot_reuses_unchanged_clusters_only() {
    let first = xds::snapshot(None, registry("10.0.0.1"));
    let second = xds::snapshot(Some(&first), registry("10.0.0.2"));
    assert_eq!(second.generation, 2);
    assert!(!Arc::ptr_eq(
        first.cluster("a.shop:8080").unwrap(),
        second.cluster("a.shop:8080").unwrap()
    ));
    assert!(Arc::ptr_eq(
        first.cluster("b.shop:8080").unwrap(),
        second.cluster("b.shop:8080").unwrap()
    ));
    // An endpoint change leaves the CDS resource byte-identical, so Envoy keeps its outlier state.
    assert_eq!(
        first.cluster("a.shop:8080").unwrap().cluster.hash,
        second.cluster("a.shop:8080").unwrap().cluster.hash
    );
    // A policy change rebuilds the cluster it applies to.
    let policies = mesh::policies(
        PolicyScope::Service(ServiceId::new("shop", "b")),
        FailoverPolicy {
            panic_threshold: 10,
            ..FailoverPolicy::default()
        },
    );
    let third = xds::snapshot_with(Some(&second), registry("10.0.0.2"), policies);
    assert_ne!(
        second.cluster("b.shop:8080").unwrap().cluster.hash,
        third.cluster("b.shop:8080").unwrap().cluster.hash
    );
}

#[test]
fn a_backup_service_change_rebuilds_the_primary_and_names_it() {
    // a backs up to b: b's endpoints are in a's EDS answer.
    let policies = mesh::policies(
        PolicyScope::Service(ServiceId::new("shop", "a")),
        FailoverPolicy {
            backups: vec![mesh::backup("b", None)],
            ..FailoverPolicy::default()
        },
    );
    let with_b = |ip: &str| {
        let mut services: Vec<Service> = registry("10.0.0.1").services.values().cloned().collect();
        services[1].endpoints[0].address = ip.parse().unwrap();
        Arc::new(Registry::from_services(services))
    };
    let first = xds::snapshot_with(None, with_b("10.0.0.9"), policies.clone());
    let c = client("z1", "n1");
    let before = first.load_assignment("a.shop:8080", &c).unwrap();
    let second = xds::snapshot_with(Some(&first), with_b("10.0.0.10"), policies);
    assert_eq!(
        second.scope(ResourceType::Endpoint, Some(1)),
        Scope::Names(&names(&["a.shop:8080", "b.shop:8080"]))
    );
    let after = second.load_assignment("a.shop:8080", &c).unwrap();
    assert_ne!(before.hash, after.hash);
    let has = |r: &Resource, ip: &[u8]| r.any.value.windows(ip.len()).any(|w| w == ip);
    assert!(has(&before, b"10.0.0.9") && !has(&before, b"10.0.0.10"));
    assert!(has(&after, b"10.0.0.10"));
    // The primary's CDS resource is untouched: Envoy keeps its outlier state.
    assert_eq!(
        first.cluster("a.shop:8080").unwrap().cluster.hash,
        second.cluster("a.shop:8080").unwrap().cluster.hash
    );
}

#[test]
fn listener_honours_client_override_and_versions_follow_content() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    let mut c = client("z1", "n1");
    let default = snap.resources_for(ResourceType::Listener, &c, None);
    let again = snap.resources_for(ResourceType::Listener, &c, None);
    c.listener = Some(crate::model::ListenerOverride {
        address: Some("127.0.0.1".into()),
        port: Some(20001),
    });
    let custom = snap.resources_for(ResourceType::Listener, &c, None);
    assert_ne!(default[0].hash, custom[0].hash);
    assert_eq!(default[0].hash, again[0].hash);
    let routes = snap.resources_for(ResourceType::Route, &c, Some(&names(&["outbound"])));
    assert_eq!(routes.len(), 1);
    assert!(snap
        .resources_for(ResourceType::Route, &c, Some(&names(&["other"])))
        .is_empty());
}

#[test]
fn changes_name_rebuilt_clusters_and_whether_cds_or_routes_moved() {
    let first = xds::snapshot(None, registry("10.0.0.1"));
    assert_eq!(first.scope(ResourceType::Endpoint, None), Scope::Everything);
    let second = xds::snapshot(Some(&first), registry("10.0.0.2"));
    let changed = names(&["a.shop:8080"]);
    assert_eq!(
        second.scope(ResourceType::Endpoint, Some(1)),
        Scope::Names(&changed)
    );
    assert_eq!(second.scope(ResourceType::Cluster, Some(1)), Scope::Nothing);
    assert_eq!(second.scope(ResourceType::Route, Some(1)), Scope::Nothing);
    // A client that did not see generation 1 checks everything.
    assert_eq!(second.scope(ResourceType::Cluster, None), Scope::Everything);
    assert_eq!(
        second.scope(ResourceType::Endpoint, Some(0)),
        Scope::Everything
    );
    // A new service: its cluster is new (CDS moves) and so are the routes.
    let mut services: Vec<Service> = second.registry.services.values().cloned().collect();
    let mut c = services[0].clone();
    c.id = ServiceId::new("shop", "c");
    services.push(c);
    let third = xds::snapshot(Some(&second), Arc::new(Registry::from_services(services)));
    assert_eq!(
        third.scope(ResourceType::Endpoint, Some(2)),
        Scope::Names(&names(&["c.shop:8080"]))
    );
    assert_eq!(
        third.scope(ResourceType::Cluster, Some(2)),
        Scope::Everything
    );
    assert_eq!(
        third.scope(ResourceType::Listener, Some(2)),
        Scope::Everything
    );
    // Unchanged input: nothing to check.
    let fourth = xds::snapshot(Some(&third), third.registry.clone());
    assert_eq!(
        fourth.scope(ResourceType::Endpoint, Some(3)),
        Scope::Nothing
    );
}

#[test]
fn stats_count_classes_and_bytes_and_baseline_mode_shares_nothing() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    let want = names(&["a.shop:8080", "b.shop:8080"]);
    for (zone, node) in [("z1", "n1"), ("z1", "n2"), ("z2", "n3")] {
        snap.resources_for(ResourceType::Endpoint, &client(zone, node), Some(&want));
    }
    let stats = snap.stats();
    assert_eq!(stats.clusters, 2);
    assert_eq!(stats.classes, 2);
    assert_eq!(stats.eds_answers, 4);
    assert!(stats.bytes > 0);

    let baseline = Snapshot::build(
        None,
        registry("10.0.0.1"),
        Arc::default(),
        TranslateSettings {
            shared_cache: false,
            ..TranslateSettings::default()
        },
    );
    let one = baseline.resources_for(ResourceType::Endpoint, &client("z1", "n1"), Some(&want));
    let two = baseline.resources_for(ResourceType::Endpoint, &client("z1", "n2"), Some(&want));
    assert!(
        !Arc::ptr_eq(&one[0], &two[0]),
        "each client encodes its own"
    );
    assert_eq!(one[0].hash, two[0].hash, "with the same content");
    let cds1 = baseline.resources_for(ResourceType::Cluster, &client("z1", "n1"), None);
    let cds2 = baseline.resources_for(ResourceType::Cluster, &client("z1", "n1"), None);
    assert!(!Arc::ptr_eq(&cds1[0], &cds2[0]));
    assert_eq!(baseline.stats().eds_answers, 0);
}

#[test]
fn inbound_clients_get_their_listener_and_app_cluster_and_secrets_are_reused() {
    let set = crate::model::secrets::SecretSet::placeholder;
    let snap = xds::snapshot(None, registry("10.0.0.1"))
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-1")]));
    let plain = client("z1", "n1");
    let mut sidecar = client("z1", "n2");
    sidecar.inbound = Some(Inbound {
        port: 15006,
        app_port: 8080,
    });
    let listed = |rs: Vec<Arc<Resource>>| rs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        listed(snap.resources_for(ResourceType::Listener, &plain, None)),
        vec![resources::LISTENER_NAME]
    );
    assert_eq!(
        listed(snap.resources_for(ResourceType::Listener, &sidecar, None)),
        vec![resources::LISTENER_NAME, mtls::INBOUND_LISTENER]
    );
    assert_eq!(
        listed(snap.resources_for(ResourceType::Cluster, &sidecar, None)),
        vec!["a.shop:8080", "b.shop:8080", mtls::APP_CLUSTER]
    );
    assert!(snap
        .resource(ResourceType::Cluster, &plain, mtls::APP_CLUSTER)
        .is_none());
    assert!(snap
        .resource(ResourceType::Listener, &sidecar, mtls::INBOUND_LISTENER)
        .is_some());
    // Secrets: `default` by the proven identity (none without one, or for one with no certificate),
    // shared between clients; what a client claims plays no part.
    let mut web = plain.clone();
    web.peer = Some(crate::testing::xds::peer("web"));
    let mut claims_web = sidecar.clone();
    claims_web.claimed_identity = Some("web".into());
    assert_eq!(
        snap.resources_for(
            ResourceType::Secret,
            &claims_web,
            Some(&names(&["default"]))
        )
        .len(),
        0,
        "a claim without proof gets no key"
    );
    let sds = names(&["default", "ROOTCA"]);
    let a = snap.resources_for(ResourceType::Secret, &web, Some(&sds));
    let b = snap.resources_for(ResourceType::Secret, &web, Some(&sds));
    assert_eq!(a.len(), 2);
    assert!(a.iter().zip(&b).all(|(x, y)| Arc::ptr_eq(x, y)));
    assert_eq!(
        snap.resources_for(ResourceType::Secret, &sidecar, Some(&sds))
            .len(),
        1,
        "no proven identity: ROOTCA only"
    );
    assert!(snap
        .resources_for(ResourceType::Secret, &web, None)
        .is_empty());
    // The same secrets again: nothing changed, encodings reused; one identity changed: only it.
    let same = xds::snapshot(Some(&snap), snap.registry.clone())
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-1")]));
    assert_eq!(same.scope(ResourceType::Secret, Some(1)), Scope::Nothing);
    let again = same.resources_for(ResourceType::Secret, &web, Some(&sds));
    assert!(Arc::ptr_eq(&a[0], &again[0]));
    let rotated = xds::snapshot(Some(&same), snap.registry.clone())
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-2")]));
    let changed = names(&["default"]);
    assert_eq!(
        rotated.scope(ResourceType::Secret, Some(2)),
        Scope::Names(&changed)
    );
    assert_eq!(
        rotated.scope(ResourceType::Cluster, Some(2)),
        Scope::Nothing
    );
    let web_after = rotated.resources_for(ResourceType::Secret, &web, Some(&sds));
    assert!(web_after.iter().zip(&a).all(|(x, y)| Arc::ptr_eq(x, y)));
}

/// envoy-types map fields are HashMaps with a random seed per map, so a map with two or more entries
/// would encode in a different order from one build to the next and look like a change. Building
/// every resource kind many times from scratch must give identical bytes.
#[test]
fn encoding_is_deterministic_across_independent_builds() {
    let policies = mesh::mesh_wide(FailoverPolicy {
        failover_priority: vec!["topology.kubernetes.io/region".into(), "tier".into()],
        ..FailoverPolicy::default()
    });
    let want = names(&["a.shop:8080", "b.shop:8080"]);
    let mut c = client("z1", "n1");
    c.labels.insert("tier".into(), "gold".into());
    c.namespace = Some("shop".into());
    let encode = || {
        let snap = xds::snapshot_with(None, registry("10.0.0.1"), policies.clone());
        let mut all = Vec::new();
        let route = names(&[resources::ROUTE_CONFIG_NAME]);
        for kind in ResourceType::PUSH_ORDER {
            let names = match kind {
                ResourceType::Endpoint => Some(&want),
                ResourceType::Route => Some(&route),
                _ => None,
            };
            for r in snap.resources_for(kind, &c, names) {
                all.push((r.name.clone(), r.any.value.clone()));
            }
        }
        all
    };
    let reference = encode();
    assert_eq!(reference.len(), 6);
    for _ in 0..32 {
        assert_eq!(encode(), reference);
    }
}

/// Secure naming puts a service's identities into its CDS resource: a change of identities must
/// reach Envoy, and an endpoint change that keeps them must leave the resource byte-identical (a
/// re-created cluster loses its outlier-detection state).
#[test]
fn identities_change_cds_and_endpoint_changes_that_keep_them_do_not() {
    const LEDGER: &str = "spiffe://td/ns/shop/sa/ledger";
    let strict = mesh::mesh_wide(FailoverPolicy {
        mtls: crate::policy::MtlsMode::Strict,
        ..FailoverPolicy::default()
    });
    let ledger = |endpoints: &[(&str, Option<&str>)]| {
        let endpoints = endpoints
            .iter()
            .map(|(ip, id)| {
                let e = mesh::endpoint(ip, Locality::new("r", "z1", ""), Health::Healthy);
                match id {
                    Some(id) => mesh::with_identity(e, id),
                    None => e,
                }
            })
            .collect();
        Arc::new(Registry::from_services([mesh::shop_service(
            "ledger", 8080, endpoints,
        )]))
    };
    let cds_hash = |s: &Snapshot| s.cluster("ledger.shop:8080").unwrap().cluster.hash;

    let unpinned = xds::snapshot_with(None, ledger(&[("10.0.0.1", None)]), strict.clone());
    let pinned = xds::snapshot_with(
        Some(&unpinned),
        ledger(&[("10.0.0.1", Some(LEDGER))]),
        strict.clone(),
    );
    assert_ne!(cds_hash(&unpinned), cds_hash(&pinned));
    assert_eq!(
        pinned.scope(ResourceType::Cluster, Some(1)),
        Scope::Everything
    );

    // Another endpoint, with the same identity: EDS only.
    let scaled = xds::snapshot_with(
        Some(&pinned),
        ledger(&[("10.0.0.1", Some(LEDGER)), ("10.0.0.2", Some(LEDGER))]),
        strict.clone(),
    );
    assert_eq!(cds_hash(&pinned), cds_hash(&scaled));
    assert_eq!(scaled.scope(ResourceType::Cluster, Some(2)), Scope::Nothing);
    assert_eq!(
        scaled.scope(ResourceType::Endpoint, Some(2)),
        Scope::Names(&names(&["ledger.shop:8080"]))
    );

    // An endpoint whose pod is not known yet adds no identity: CDS unchanged too.
    let joining = xds::snapshot_with(
        Some(&scaled),
        ledger(&[
            ("10.0.0.1", Some(LEDGER)),
            ("10.0.0.2", Some(LEDGER)),
            ("10.0.0.3", None),
        ]),
        strict,
    );
    assert_eq!(
        joining.scope(ResourceType::Cluster, Some(3)),
        Scope::Nothing
    );
}

/// A client of every memo: its own zone (class), namespace, bind address and inbound ports.
fn distinct_client(i: usize) -> ClientInfo {
    ClientInfo {
        namespace: Some(format!("ns-{i}")),
        listener: Some(crate::model::ListenerOverride {
            address: Some(format!("127.0.{}.{}", i / 250, i % 250 + 1)),
            port: None,
        }),
        inbound: Some(Inbound {
            port: 20_000 + i as u16,
            app_port: 30_000 + i as u16,
        }),
        ..client(&format!("z{i}"), &format!("n{i}"))
    }
}

/// Asks for everything `client` can be answered (CDS, EDS, LDS, RDS), filling every memo.
fn ask_everything(snap: &Snapshot, client: &ClientInfo) -> Vec<Arc<Resource>> {
    let eds = names(&["a.shop:8080", "b.shop:8080"]);
    let rds = names(&[resources::ROUTE_CONFIG_NAME]);
    let mut out = snap.resources_for(ResourceType::Cluster, client, None);
    out.extend(snap.resources_for(ResourceType::Endpoint, client, Some(&eds)));
    out.extend(snap.resources_for(ResourceType::Listener, client, None));
    out.extend(snap.resources_for(ResourceType::Route, client, Some(&rds)));
    out
}

#[test]
fn retain_for_drops_what_only_departed_clients_needed_and_keeps_shared_answers() {
    let first = xds::snapshot(None, registry("10.0.0.1"));
    let staying = distinct_client(0);
    let kept = ask_everything(&first, &staying);
    let empty = first.stats();
    for i in 1..50 {
        ask_everything(&first, &distinct_client(i));
    }
    // The next snapshot carries the memos forward (same services: listeners and routes too).
    let second = xds::snapshot(Some(&first), registry("10.0.0.1"));
    let full = second.stats();
    assert_eq!(full.classes, 50);
    assert_eq!(full.route_configs, 50);
    assert_eq!(
        full.listeners, 100,
        "an outbound and an inbound listener each"
    );

    let mut needed = second.cache_keys();
    needed.add(&staying);
    let dropped = second.retain_for(&needed);
    let after = second.stats();
    assert_eq!(
        (
            after.classes,
            after.eds_answers,
            after.route_configs,
            after.listeners
        ),
        (1, 2, 1, 2),
        "only the staying client's answers: {after:?}"
    );
    assert_eq!(dropped.classes, 49);
    assert_eq!(dropped.bytes, full.bytes - after.bytes);
    assert!(after.bytes < full.bytes / 10, "{after:?} vs {full:?}");
    assert!(empty.bytes <= after.bytes);
    // The staying client is still answered from the very same shared encodings.
    let again = ask_everything(&second, &staying);
    assert_eq!(kept.len(), again.len());
    assert!(kept.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)));
    assert_eq!(second.stats(), after, "nothing rebuilt");
    // What the previous snapshot shares with this one was evicted there too.
    assert_eq!(first.stats().classes, 1);

    // With nobody connected, the memos empty; a departed client that comes back is answered the same.
    second.retain_for(&second.cache_keys());
    assert_eq!(second.stats().eds_answers, 0);
    let back = ask_everything(&second, &distinct_client(7));
    assert_eq!(back, ask_everything(&first, &distinct_client(7)));
}

#[test]
fn memos_stop_growing_at_their_cap_and_answers_past_it_are_still_right() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    for i in 0..MAX_MEMO_KEYS + 20 {
        ask_everything(&snap, &distinct_client(i));
    }
    let stats = snap.stats();
    assert_eq!(stats.classes, MAX_MEMO_KEYS);
    assert_eq!(stats.eds_answers, 2 * MAX_MEMO_KEYS);
    assert_eq!(stats.route_configs, MAX_MEMO_KEYS);
    assert_eq!(stats.listeners, 2 * MAX_MEMO_KEYS);
    // A client past the cap gets what it would get from an empty cache.
    let late = distinct_client(MAX_MEMO_KEYS + 5);
    let fresh = xds::snapshot(None, registry("10.0.0.1"));
    assert_eq!(ask_everything(&snap, &late), ask_everything(&fresh, &late));
    assert_eq!(snap.stats(), stats);
}

/// An endpoint that does not serve a port (a Kubernetes pod without the Service's named target
/// port) is in the other port's EDS answer and not in this one's, rather than sent to the service
/// port number.
#[test]
fn an_endpoint_that_does_not_serve_a_port_is_left_out_of_that_ports_cluster() {
    let zone = Locality::new("r", "z1", "");
    let both = mesh::endpoint("10.0.0.1", zone.clone(), Health::Healthy);
    let mut metrics_only = mesh::endpoint("10.0.0.2", zone, Health::Healthy);
    metrics_only
        .port_overrides
        .insert("http".into(), crate::model::Endpoint::NOT_SERVED);
    let service = Service::new(
        ServiceId::new("shop", "web"),
        vec![
            crate::model::ServicePort {
                name: "http".into(),
                port: 80,
            },
            crate::model::ServicePort {
                name: "metrics".into(),
                port: 9100,
            },
        ],
        vec![both, metrics_only],
    );
    let snap = xds::snapshot(None, Arc::new(Registry::from_services([service])));
    let c = client("z1", "n1");
    let has = |r: &Resource, ip: &[u8]| r.any.value.windows(ip.len()).any(|w| w == ip);
    let http = snap.load_assignment("web.shop:80", &c).unwrap();
    let metrics = snap.load_assignment("web.shop:9100", &c).unwrap();
    assert!(has(&http, b"10.0.0.1"));
    assert!(!has(&http, b"10.0.0.2"), "not served: left out");
    assert!(has(&metrics, b"10.0.0.1") && has(&metrics, b"10.0.0.2"));
}

/// A change of the service set rebuilds the routes of every namespace a client was answered in as
/// part of the snapshot build (the publisher's blocking thread), not on the first stream to ask; and
/// they are what a client asking afresh would be built.
#[test]
fn a_new_service_set_comes_with_the_routes_of_the_namespaces_in_use() {
    let first = xds::snapshot(None, registry("10.0.0.1"));
    let rds = names(&[resources::ROUTE_CONFIG_NAME]);
    let in_shop = ClientInfo {
        namespace: Some("shop".into()),
        ..client("z1", "n1")
    };
    let elsewhere = ClientInfo {
        namespace: Some("other".into()),
        ..client("z1", "n2")
    };
    for c in [&in_shop, &elsewhere] {
        first.resources_for(ResourceType::Route, c, Some(&rds));
    }
    assert_eq!(first.stats().route_configs, 2);

    let mut services: Vec<Service> = first.registry.services.values().cloned().collect();
    let mut added = services[0].clone();
    added.id = ServiceId::new("shop", "c");
    services.push(added);
    let second = xds::snapshot(Some(&first), Arc::new(Registry::from_services(services)));
    assert_eq!(second.stats().route_configs, 2, "built with the snapshot");
    let fresh = xds::snapshot(None, second.registry.clone());
    for c in [&in_shop, &elsewhere] {
        let prepared = second.resources_for(ResourceType::Route, c, Some(&rds));
        assert_eq!(
            prepared,
            fresh.resources_for(ResourceType::Route, c, Some(&rds))
        );
    }
    assert_ne!(
        first.resources_for(ResourceType::Route, &in_shop, Some(&rds)),
        second.resources_for(ResourceType::Route, &in_shop, Some(&rds)),
        "the new service is routed"
    );
    assert_eq!(second.stats().route_configs, 2, "nothing built on demand");
}

fn grpc_client(zone: &str, node: &str) -> ClientInfo {
    ClientInfo {
        kind: ClientKind::Grpc,
        namespace: Some("shop".into()),
        ..client(zone, node)
    }
}

/// What a gRPC client dialing `xds:///AUTHORITY` fetches, in its order: LDS, RDS, CDS, EDS.
fn grpc_fetch(snap: &Snapshot, client: &ClientInfo, authority: &str) -> Vec<Arc<Resource>> {
    let target = names(&[authority]);
    let lds = snap.resources_for(ResourceType::Listener, client, Some(&target));
    let rds = snap.resources_for(ResourceType::Route, client, Some(&target));
    let cluster = names(&["a.shop:8080"]);
    let cds = snap.resources_for(ResourceType::Cluster, client, Some(&cluster));
    let eds = snap.resources_for(ResourceType::Endpoint, client, Some(&cluster));
    [lds, rds, cds, eds].concat()
}

#[test]
fn a_grpc_client_gets_an_api_listener_per_target_and_never_envoys_listener() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    let c = grpc_client("z1", "g1");
    for authority in [
        "a.shop:8080",
        "a:8080",
        "a.shop.svc.cluster.local:8080",
        "a",
    ] {
        let got = grpc_fetch(&snap, &c, authority);
        let kinds: Vec<&str> = got.iter().map(|r| r.any.type_url.as_str()).collect();
        assert_eq!(
            kinds,
            [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE],
            "{authority}"
        );
        assert_eq!(got[0].name, authority);
        assert_eq!(got[1].name, authority);
        assert_eq!(
            got[0].any,
            pack_any(grpc::api_listener(authority)),
            "{authority}"
        );
    }
    // Envoy's listener, by name or by wildcard, is not a gRPC client's.
    let outbound = names(&[resources::LISTENER_NAME]);
    assert!(snap
        .resources_for(ResourceType::Listener, &c, Some(&outbound))
        .is_empty());
    assert!(snap
        .resources_for(ResourceType::Listener, &c, None)
        .is_empty());
    // Subscribed names that resolve to nothing are simply absent: a response without them tells
    // the client they do not exist.
    let mixed = names(&["a.shop:8080", "nope.shop:8080", "a.shop:9999"]);
    let lds = snap.resources_for(ResourceType::Listener, &c, Some(&mixed));
    assert_eq!(
        lds.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a.shop:8080"]
    );
}

#[test]
fn grpc_answers_are_memoised_per_kind_and_class_and_unknown_names_cache_nothing() {
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    let one = grpc_fetch(&snap, &grpc_client("z1", "g1"), "a.shop:8080");
    let two = grpc_fetch(&snap, &grpc_client("z1", "g2"), "a.shop:8080");
    assert!(one.iter().zip(&two).all(|(a, b)| Arc::ptr_eq(a, b)));
    let other_zone = grpc_fetch(&snap, &grpc_client("z2", "g3"), "a.shop:8080");
    assert!(
        Arc::ptr_eq(&one[2], &other_zone[2]),
        "CDS is the same for all"
    );
    assert!(!Arc::ptr_eq(&one[3], &other_zone[3]), "EDS is per class");
    let envoy = client("z1", "e1");
    let envoy_eds = snap.load_assignment("a.shop:8080", &envoy).unwrap();
    assert_ne!(envoy_eds.encoded, one[3].encoded, "gRPC's own form");
    let stats = snap.stats();
    assert_eq!(stats.eds_answers, 3);
    // Arbitrary names a client makes up resolve to nothing and leave the cache as it was.
    let c = grpc_client("z1", "g4");
    for i in 0..2000 {
        let made_up = names(&[&format!("svc-{i}.shop:8080"), &format!("a.shop:{}", 1 + i)]);
        let made_up: BTreeSet<String> =
            made_up.into_iter().filter(|n| n != "a.shop:8080").collect();
        assert!(snap
            .resources_for(ResourceType::Listener, &c, Some(&made_up))
            .is_empty());
        assert!(snap
            .resources_for(ResourceType::Route, &c, Some(&made_up))
            .is_empty());
    }
    assert_eq!(snap.stats(), stats);
    // Once no gRPC client is connected, their answers go; Envoys' stay.
    let mut needed = snap.cache_keys();
    needed.add(&envoy);
    snap.retain_for(&needed);
    assert_eq!(snap.stats().eds_answers, 1);
    assert_eq!(snap.stats().route_configs, 0);
    assert_eq!(snap.stats().listeners, 0);
}

#[test]
fn envoys_answers_are_byte_identical_whatever_grpc_clients_ask() {
    let encode_all = |snap: &Snapshot| {
        ask_everything(snap, &client("z1", "e1"))
            .iter()
            .map(|r| (r.name.clone(), r.encoded.clone()))
            .collect::<Vec<_>>()
    };
    let before = {
        let fresh = xds::snapshot(None, registry("10.0.0.1"));
        encode_all(&fresh)
    };
    let snap = xds::snapshot(None, registry("10.0.0.1"));
    grpc_fetch(&snap, &grpc_client("z1", "g1"), "a.shop:8080");
    assert_eq!(encode_all(&snap), before);
    // And Envoy's CDS and EDS are still exactly the Envoy translator's.
    let policy = FailoverPolicy::default();
    let cds = snap.resources_for(ResourceType::Cluster, &client("z1", "e1"), None);
    let a = snap.cluster("a.shop:8080").unwrap();
    assert_eq!(
        cds[0].any,
        pack_any(resources::cluster(
            "a.shop:8080",
            &policy,
            &a.input.peer_identities()
        ))
    );
}

/// (zone, priority, [(address, health)]): one locality group of a load assignment.
type Group = (String, u32, Vec<(String, i32)>);

/// Each locality group of an encoded load assignment.
fn groups(r: &Resource) -> Vec<Group> {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    let cla = ClusterLoadAssignment::decode(&*r.any.value).unwrap();
    crate::testing::envoy::locality_groups(&cla)
        .into_iter()
        .map(|(priority, zone, hosts)| {
            let hosts = hosts.into_iter().map(|(a, _, h, _)| (a, h)).collect();
            (zone, priority, hosts)
        })
        .collect()
}

#[test]
fn a_fleet_ejection_sends_its_locality_unhealthy_to_every_client_and_rebuilds_only_its_cluster() {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    let endpoints = vec![
        mesh::endpoint("10.0.1.1", Locality::new("r", "z1", ""), Health::Healthy),
        mesh::endpoint("10.0.1.2", Locality::new("r", "z1", ""), Health::Healthy),
        mesh::endpoint("10.0.2.1", Locality::new("r", "z2", ""), Health::Healthy),
        mesh::endpoint("10.0.2.2", Locality::new("r", "z2", ""), Health::Unhealthy),
    ];
    let registry = Arc::new(Registry::from_services([
        mesh::shop_service("a", 8080, endpoints),
        mesh::shop_service("b", 8080, vec![mesh::healthy("10.0.0.9")]),
    ]));
    let policies: Arc<PolicySet> = Arc::default();
    let settings = TranslateSettings::default;
    let first = Snapshot::build(None, registry.clone(), policies.clone(), settings());
    let ejections = Arc::new(FleetEjections::new(BTreeMap::from([(
        "a.shop:8080".to_string(),
        BTreeSet::from([Locality::new("r", "z1", "")]),
    )])));
    let second = Snapshot::build_with_ejections(
        Some(&first),
        registry.clone(),
        policies.clone(),
        ejections,
        settings(),
    );
    // Only a's EDS is re-checked; no CDS resource changed (Envoy keeps its outlier state).
    assert_eq!(
        second.scope(ResourceType::Endpoint, Some(first.generation)),
        Scope::Names(&names(&["a.shop:8080"]))
    );
    assert_eq!(
        second.scope(ResourceType::Cluster, Some(first.generation)),
        Scope::Nothing
    );
    assert!(Arc::ptr_eq(
        first.cluster("b.shop:8080").unwrap(),
        second.cluster("b.shop:8080").unwrap()
    ));

    let (healthy, unhealthy) = (HealthStatus::Healthy as i32, HealthStatus::Unhealthy as i32);
    let host = |ip: &str, health| (ip.to_string(), health);
    for zone in ["z1", "z2"] {
        let c = client(zone, "n1");
        let before = groups(&first.load_assignment("a.shop:8080", &c).unwrap());
        let after = groups(&second.load_assignment("a.shop:8080", &c).unwrap());
        // The same levels and hosts (the plan is unchanged), only z1's health differs.
        let z1_first = if zone == "z1" { 0 } else { 1 };
        let z2_first = 1 - z1_first;
        let mut wanted = vec![
            (
                "z1".to_string(),
                z1_first,
                vec![host("10.0.1.1", healthy), host("10.0.1.2", healthy)],
            ),
            (
                "z2".to_string(),
                z2_first,
                vec![host("10.0.2.1", healthy), host("10.0.2.2", unhealthy)],
            ),
        ];
        wanted.sort_by_key(|(_, priority, _)| *priority);
        assert_eq!(before, wanted);
        let mut expected = before.clone();
        for (z, _, hosts) in &mut expected {
            if z == "z1" {
                for (_, health) in hosts {
                    *health = unhealthy;
                }
            }
        }
        assert_eq!(after, expected, "client in {zone}");
        // A gRPC client of the class gets the ejection too.
        let g = grpc_client(zone, "g1");
        let grpc = groups(
            &second.resources_for(ResourceType::Endpoint, &g, Some(&names(&["a.shop:8080"])))[0],
        );
        let z1 = grpc.iter().find(|(z, _, _)| z == "z1").unwrap();
        assert!(z1.2.iter().all(|(_, h)| *h == unhealthy), "{grpc:?}");
        let z2 = grpc.iter().find(|(z, _, _)| z == "z2").unwrap();
        assert_eq!(z2.2[0], host("10.0.2.1", healthy));
    }
    // Lifting the ejection is a change of a's EDS again, back to what it was.
    let third = Snapshot::build(Some(&second), registry, policies, settings());
    assert_eq!(
        third.scope(ResourceType::Endpoint, Some(second.generation)),
        Scope::Names(&names(&["a.shop:8080"]))
    );
    let c = client("z1", "n1");
    assert_eq!(
        third.load_assignment("a.shop:8080", &c).unwrap().hash,
        first.load_assignment("a.shop:8080", &c).unwrap().hash
    );
}

/// A lookup of many names works out the client's class once per policy: with clusters under two
/// policies whose classes differ, every answer is still the one `resource` gives (the same shared
/// encoding), for Envoy and gRPC clients, and names of no cluster find nothing.
#[test]
fn a_lookup_of_many_names_answers_as_resource_does_under_each_policy() {
    use crate::policy::PriorityKey;
    let policies = mesh::policies(
        PolicyScope::Service(ServiceId::new("shop", "b")),
        FailoverPolicy {
            failover_priority: vec![PriorityKey::label(crate::model::labels::ZONE)],
            ..FailoverPolicy::default()
        },
    );
    let snap = xds::snapshot_with(None, registry("10.0.0.1"), policies);
    let (a, b) = (
        snap.cluster("a.shop:8080").unwrap(),
        snap.cluster("b.shop:8080").unwrap(),
    );
    let names = [
        "a.shop:8080",
        "b.shop:8080",
        "missing.shop:80",
        "a.shop:8080",
    ];
    for c in [
        client("z1", "n1"),
        client("z2", "n2"),
        grpc_client("z1", "g1"),
    ] {
        assert_ne!(
            a.class_of(&c),
            b.class_of(&c),
            "the two policies see different classes"
        );
        let mut lookup = snap.lookup(ResourceType::Endpoint, &c);
        for name in names {
            let direct = snap.resource(ResourceType::Endpoint, &c, name);
            match (lookup.get(name), direct) {
                (Some(got), Some(want)) => assert!(Arc::ptr_eq(&got, &want), "{name}"),
                (None, None) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        let mut cds = snap.lookup(ResourceType::Cluster, &c);
        assert_eq!(
            cds.get("a.shop:8080").map(|r| r.hash),
            snap.resource(ResourceType::Cluster, &c, "a.shop:8080")
                .map(|r| r.hash)
        );
    }
}
