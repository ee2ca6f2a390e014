use super::*;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;

fn matcher(p: MatchPattern, ignore_case: bool) -> NodeMatcher {
    NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        }),
        node_metadatas: vec![],
    }
}

#[test]
fn statuses_map_to_csds_terms() {
    use ClientResourceStatus as C;
    use ConfigStatus as S;
    let cases = [
        (SyncStatus::Synced, true, S::Synced, C::Acked, true),
        (SyncStatus::Synced, false, S::Stale, C::Acked, false),
        (SyncStatus::Stale, true, S::Stale, C::Requested, true),
        (SyncStatus::Stale, false, S::Stale, C::Requested, false),
        (SyncStatus::Nacked, true, S::Error, C::Nacked, false),
        (SyncStatus::NotSent, false, S::NotSent, C::Requested, false),
    ];
    for (status, current, config, client, with) in cases {
        assert_eq!(
            resource_status(status, current),
            ResourceStatus {
                config,
                client,
                with_config: with
            },
            "{status:?} current={current}"
        );
    }
}

#[test]
fn answers_one_config_per_node_with_each_held_resource() {
    use std::sync::Mutex;
    use xds_core::protocol::sotw::AdsConnection;
    use xds_core::snapshot::CLUSTER_TYPE;
    use xds_core::testing::{mesh, xds};

    let snap = Arc::new(xds::snapshot(None, mesh::registry(80, &[("a", &[])])));
    let (_tx, rx) = tokio::sync::watch::channel(Some(snap.clone()));
    let registry = ClientRegistry::new();
    let mut registrations = Vec::new();
    for (stream, node, ack) in [(1, "envoy-1", true), (2, "envoy-2", false)] {
        let conn = Arc::new(Mutex::new(AdsConnection::new()));
        registrations.push(registry.register(
            stream,
            crate::registry::Protocol::Sotw,
            conn.clone(),
        ));
        let node = Node {
            id: node.into(),
            ..Node::default()
        };
        let mut req = xds::request(node, CLUSTER_TYPE, &[], "", "");
        let (_, out) = crate::registry::lock(&conn)
            .on_request(&(&req).into(), &snap)
            .unwrap();
        if ack {
            req.version_info = out[0].version_info.clone();
            req.response_nonce = out[0].nonce.clone();
            crate::registry::lock(&conn)
                .on_request(&(&req).into(), &snap)
                .unwrap();
        }
    }
    let csds = CsdsService::new(rx, registry);
    let all = csds.answer(&ClientStatusRequest::default()).unwrap();
    let ids: Vec<&str> = all
        .config
        .iter()
        .map(|c| c.node.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["envoy-1", "envoy-2"]);
    let acked = &all.config[0].generic_xds_configs[0];
    assert_eq!(
        (
            acked.name.as_str(),
            acked.config_status(),
            acked.client_status()
        ),
        (
            "a.shop:80",
            ConfigStatus::Synced,
            ClientResourceStatus::Acked
        )
    );
    assert_eq!(acked.xds_config.as_ref().unwrap().type_url, CLUSTER_TYPE);
    assert!(!acked.version_info.is_empty());
    let pending = &all.config[1].generic_xds_configs[0];
    assert_eq!(
        (pending.config_status(), pending.client_status()),
        (ConfigStatus::Stale, ClientResourceStatus::Requested)
    );

    let only = csds
        .answer(&ClientStatusRequest {
            node_matchers: vec![matcher(MatchPattern::Exact("envoy-2".into()), false)],
            exclude_resource_contents: true,
            ..ClientStatusRequest::default()
        })
        .unwrap();
    assert_eq!(only.config.len(), 1);
    assert!(only.config[0].generic_xds_configs[0].xds_config.is_none());
}

#[test]
fn secrets_are_listed_by_name_and_version_without_their_contents() {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use std::sync::Mutex;
    use xds_core::model::Registry;
    use xds_core::protocol::sotw::AdsConnection;
    use xds_core::snapshot::{Snapshot, TranslateSettings};
    let snap = Arc::new(
        Snapshot::build(
            None,
            Arc::new(Registry::default()),
            Arc::default(),
            TranslateSettings::default(),
        )
        .with_secrets(xds_core::model::secrets::SecretSet::placeholder(
            "ca",
            &[("default", "cert")],
        )),
    );
    let (_tx, rx) = tokio::sync::watch::channel(Some(snap.clone()));
    let registry = ClientRegistry::new();
    let conn = Arc::new(Mutex::new(
        AdsConnection::new().with_peer(Some(xds_core::testing::xds::peer("default"))),
    ));
    let _registration = registry.register(1, crate::registry::Protocol::Sotw, conn.clone());
    let mut req = DiscoveryRequest {
        node: Some(Node {
            id: "envoy-1".into(),
            ..Node::default()
        }),
        type_url: xds_core::snapshot::SECRET_TYPE.into(),
        resource_names: vec!["ROOTCA".into(), "default".into()],
        ..DiscoveryRequest::default()
    };
    let (_, out) = crate::registry::lock(&conn)
        .on_request(&(&req).into(), &snap)
        .unwrap();
    req.version_info = out[0].version_info.clone();
    req.response_nonce = out[0].nonce.clone();
    crate::registry::lock(&conn)
        .on_request(&(&req).into(), &snap)
        .unwrap();
    let all = CsdsService::new(rx, registry)
        .answer(&ClientStatusRequest::default())
        .unwrap();
    let listed: Vec<(&str, ClientResourceStatus, bool, bool)> = all.config[0]
        .generic_xds_configs
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.client_status(),
                g.version_info.is_empty(),
                g.xds_config.is_some(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("ROOTCA", ClientResourceStatus::Acked, false, false),
            ("default", ClientResourceStatus::Acked, false, false)
        ]
    );
}

#[test]
fn node_matchers_select_by_id() {
    assert!(matches(&[], "any").unwrap());
    let exact = [matcher(MatchPattern::Exact("envoy-1".into()), false)];
    assert!(matches(&exact, "envoy-1").unwrap());
    assert!(!matches(&exact, "envoy-10").unwrap());
    let prefix = [matcher(MatchPattern::Prefix("ENVOY".into()), true)];
    assert!(matches(&prefix, "envoy-10").unwrap());
    let two = [
        matcher(MatchPattern::Suffix("-a".into()), false),
        matcher(MatchPattern::Contains("gw".into()), false),
    ];
    assert!(matches(&two, "x-gw-1").unwrap());
    assert!(!matches(&two, "x-b").unwrap());
    let regex = [matcher(MatchPattern::SafeRegex(Default::default()), false)];
    assert_eq!(
        matches(&regex, "x").unwrap_err().code(),
        tonic::Code::Unimplemented
    );
}
