use super::*;
use crate::model::Registry;
use crate::protocol::error::GrpcCode;
use crate::snapshot::{Snapshot, TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE};
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::google::protobuf::{Struct, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn node(id: &str, cluster: &str) -> Node {
    Node {
        id: id.into(),
        cluster: cluster.into(),
        ..Node::default()
    }
}

fn snapshot() -> Snapshot {
    Snapshot::build(
        None,
        Arc::new(Registry::default()),
        Arc::default(),
        TranslateSettings::default(),
    )
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn over_limit(field: &str, amount: usize, limit: Limit) -> ProtocolError {
    ProtocolError::OverLimit {
        field: field.into(),
        amount,
        limit,
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// A node with `metadata` (string values) and `labels`.
fn node_with(metadata: &[(&str, String)], labels: Vec<(String, String)>) -> Node {
    let mut fields: BTreeMap<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    if !labels.is_empty() {
        let labels = Struct {
            fields: labels.iter().map(|(k, v)| (k.clone(), string(v))).collect(),
        };
        fields.insert(
            "labels".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
    }
    Node {
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        ..node("n", "c")
    }
}

fn one_eds_name_too_many() -> ProtocolError {
    ProtocolError::TooManyNames {
        kind: ResourceType::Endpoint,
        list: NameList::Subscription,
        count: MAX_NAMES_PER_TYPE + 1,
    }
}

#[test]
fn node_id_and_cluster_are_capped_on_the_first_request_only() {
    let long = "x".repeat(MAX_NODE_ID_BYTES + 1);
    let fits = "x".repeat(MAX_NODE_ID_BYTES);
    assert_eq!(check_node(true, Some(&node(&fits, &fits))), Ok(()));
    assert_eq!(
        check_node(true, Some(&node(&long, "c"))),
        Err(over_limit("node.id", MAX_NODE_ID_BYTES + 1, NODE_ID))
    );
    assert_eq!(
        check_node(true, Some(&node("n", &long))),
        Err(over_limit("node.cluster", MAX_NODE_ID_BYTES + 1, NODE_ID))
    );
    // Later requests' nodes are not read; a missing node is the node parser's to refuse.
    assert_eq!(check_node(false, Some(&node(&long, &long))), Ok(()));
    assert_eq!(check_node(true, None), Ok(()));
}

#[test]
fn sotw_counts_one_requests_names() {
    let snap = snapshot();
    let mut conn = AdsConnection::new();
    let mut req = SotwRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names: names("a", MAX_NAMES_PER_TYPE).into_iter().collect(),
        ..SotwRequest::default()
    };
    assert_eq!(check_sotw(&conn, &req), Ok(()));
    conn.on_request(&req, &snap).unwrap();
    // The next request replaces the subscription: only its own names count.
    let mut next = names("b", MAX_NAMES_PER_TYPE);
    req.resource_names = next.iter().collect();
    assert_eq!(check_sotw(&conn, &req), Ok(()));
    next.push("one-too-many".into());
    req.resource_names = next.iter().collect();
    assert_eq!(
        conn.on_request(&req, &snap).unwrap_err(),
        one_eds_name_too_many()
    );
    // Unknown types hold nothing and are not counted.
    req.type_url = "type.googleapis.com/envoy.Unknown".into();
    assert_eq!(check_sotw(&conn, &req), Ok(()));
}

#[test]
fn sotw_refuses_a_long_node_id_before_reading_the_node() {
    let snap = snapshot();
    let mut conn = AdsConnection::new();
    let req = SotwRequest {
        node: Some(node(&"x".repeat(MAX_NODE_ID_BYTES + 1), "c")),
        type_url: CLUSTER_TYPE.into(),
        ..SotwRequest::default()
    };
    assert!(matches!(
        conn.on_request(&req, &snap),
        Err(ProtocolError::OverLimit { .. })
    ));
    assert!(conn.client().is_none(), "a refused request changes nothing");
}

#[test]
fn delta_counts_the_accumulated_subscription() {
    let snap = snapshot();
    let mut conn = DeltaConnection::new();
    let half = MAX_NAMES_PER_TYPE / 2;
    let mut req = DeltaDiscoveryRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: names("a", half),
        ..DeltaDiscoveryRequest::default()
    };
    conn.on_request(&req, &snap).unwrap();
    // Names already held and `*` do not count twice.
    req.resource_names_subscribe = names("a", half);
    req.resource_names_subscribe.push("*".into());
    assert_eq!(check_delta(&conn, &req), Ok(()));
    req.resource_names_subscribe = names("b", MAX_NAMES_PER_TYPE - half);
    assert_eq!(check_delta(&conn, &req), Ok(()));
    req.resource_names_subscribe.push("one-too-many".into());
    assert_eq!(
        conn.on_request(&req, &snap).unwrap_err(),
        one_eds_name_too_many()
    );
    assert_eq!(
        conn.type_state(ResourceType::Endpoint).unwrap().names.len(),
        half,
        "a refused request changes nothing"
    );
}

#[test]
fn delta_caps_initial_resource_versions() {
    let conn = DeltaConnection::new();
    let req = DeltaDiscoveryRequest {
        node: Some(node("n", "c")),
        type_url: CLUSTER_TYPE.into(),
        initial_resource_versions: names("c", MAX_NAMES_PER_TYPE + 1)
            .into_iter()
            .map(|n| (n, "0123456789abcdef".to_string()))
            .collect(),
        ..DeltaDiscoveryRequest::default()
    };
    assert_eq!(
        check_delta(&conn, &req),
        Err(ProtocolError::TooManyNames {
            kind: ResourceType::Cluster,
            list: NameList::InitialResourceVersions,
            count: MAX_NAMES_PER_TYPE + 1
        })
    );
}

#[test]
fn every_locality_field_is_capped() {
    let at = "r".repeat(MAX_LOCALITY_BYTES);
    let past = "r".repeat(MAX_LOCALITY_BYTES + 1);
    let with = |region: &str, zone: &str, sub_zone: &str| Node {
        locality: Some(Locality {
            region: region.into(),
            zone: zone.into(),
            sub_zone: sub_zone.into(),
        }),
        ..node("n", "c")
    };
    assert_eq!(check_node(true, Some(&with(&at, &at, &at))), Ok(()));
    for (field, n) in [
        ("node.locality.region", with(&past, "z", "")),
        ("node.locality.zone", with("r", &past, "")),
        ("node.locality.sub_zone", with("r", "z", &past)),
    ] {
        assert_eq!(
            check_node(true, Some(&n)),
            Err(over_limit(field, MAX_LOCALITY_BYTES + 1, LOCALITY)),
        );
    }
}

#[test]
fn every_metadata_string_read_is_capped_and_others_are_not_read() {
    for (key, limit) in [
        ("namespace", METADATA_VALUE),
        ("pod_name", METADATA_VALUE),
        ("pod_ip", METADATA_VALUE),
        ("listener_address", METADATA_VALUE),
        ("identity", IDENTITY),
    ] {
        let at = node_with(&[(key, "v".repeat(limit.max))], vec![]);
        assert_eq!(check_node(true, Some(&at)), Ok(()), "{key}");
        let past = node_with(&[(key, "v".repeat(limit.max + 1))], vec![]);
        let err = check_node(true, Some(&past)).unwrap_err();
        assert_eq!(
            err,
            over_limit(&format!("node.metadata.{key}"), limit.max + 1, limit)
        );
        assert_eq!(err.code(), GrpcCode::InvalidArgument);
        assert!(err.to_string().contains(limit.name), "{err}");
    }
    // A key the server never reads is never kept: its size is the request limit's business.
    let unread = node_with(&[("blob", "b".repeat(1 << 20))], vec![]);
    assert_eq!(check_node(true, Some(&unread)), Ok(()));
}

#[test]
fn labels_are_capped_in_number_key_and_value() {
    let label = |i: usize| (format!("key-{i}"), format!("value-{i}"));
    let most = node_with(&[], (0..MAX_NODE_LABELS).map(label).collect());
    assert_eq!(check_node(true, Some(&most)), Ok(()));
    let too_many = node_with(&[], (0..=MAX_NODE_LABELS).map(label).collect());
    assert_eq!(
        check_node(true, Some(&too_many)),
        Err(over_limit(
            "node.metadata.labels",
            MAX_NODE_LABELS + 1,
            NODE_LABELS
        ))
    );

    let longest = node_with(
        &[],
        vec![(
            "k".repeat(MAX_LABEL_KEY_BYTES),
            "v".repeat(MAX_LABEL_VALUE_BYTES),
        )],
    );
    assert_eq!(check_node(true, Some(&longest)), Ok(()));
    let long_value = node_with(
        &[],
        vec![("app".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1))],
    );
    assert_eq!(
        check_node(true, Some(&long_value)),
        Err(over_limit(
            r#"node.metadata.labels["app"]"#,
            MAX_LABEL_VALUE_BYTES + 1,
            LABEL_VALUE
        ))
    );
    // A long key is named by its first bytes only.
    let long_key = node_with(&[], vec![("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".into())]);
    let err = check_node(true, Some(&long_key)).unwrap_err();
    let shown_key = format!("{}…", "k".repeat(64));
    assert_eq!(
        err,
        over_limit(
            &format!("node.metadata.labels[{shown_key:?}] key"),
            MAX_LABEL_KEY_BYTES + 1,
            LABEL_KEY
        )
    );
    assert!(err.to_string().len() < 300, "{err}");
}

#[test]
fn a_resource_name_is_capped_in_both_protocols() {
    let long = "n".repeat(MAX_RESOURCE_NAME_BYTES + 1);
    let sotw = SotwRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names: ["a", long.as_str()].into_iter().collect(),
        ..SotwRequest::default()
    };
    let err = check_sotw(&AdsConnection::new(), &sotw).unwrap_err();
    assert!(
        matches!(&err, ProtocolError::OverLimit { amount, limit, .. }
            if *amount == MAX_RESOURCE_NAME_BYTES + 1 && *limit == RESOURCE_NAME),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("EDS subscription name \"nnn"),
        "{err}"
    );
    let delta = DeltaDiscoveryRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: vec![long.clone()],
        ..DeltaDiscoveryRequest::default()
    };
    assert!(check_delta(&DeltaConnection::new(), &delta).is_err());
    let delta = DeltaDiscoveryRequest {
        resource_names_subscribe: vec![],
        initial_resource_versions: [(long, "0123456789abcdef".to_string())].into(),
        ..delta
    };
    assert!(check_delta(&DeltaConnection::new(), &delta).is_err());
}

#[test]
fn delta_caps_the_accumulated_bytes_of_names() {
    let snap = snapshot();
    let mut conn = DeltaConnection::new();
    // Names as long as allowed, few enough that their number is fine: only their bytes add up.
    let per_request = MAX_NAME_BYTES_PER_TYPE / MAX_RESOURCE_NAME_BYTES / 2;
    let batch = |prefix: &str| -> Vec<String> {
        (0..per_request)
            .map(|i| {
                let head = format!("{prefix}{i}-");
                format!("{head}{}", "x".repeat(MAX_RESOURCE_NAME_BYTES - head.len()))
            })
            .collect()
    };
    let mut req = DeltaDiscoveryRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: batch("a"),
        ..DeltaDiscoveryRequest::default()
    };
    conn.on_request(&req, &snap).unwrap();
    req.resource_names_subscribe = batch("b");
    conn.on_request(&req, &snap).unwrap();
    // Held names again, and an ACK, add nothing.
    assert_eq!(check_delta(&conn, &req), Ok(()));
    req.resource_names_subscribe = vec![];
    assert_eq!(check_delta(&conn, &req), Ok(()));
    req.resource_names_subscribe = vec!["one-more".into()];
    let held = 2 * per_request * MAX_RESOURCE_NAME_BYTES;
    assert!(held <= MAX_NAME_BYTES_PER_TYPE);
    assert!(
        held + 8 > MAX_NAME_BYTES_PER_TYPE,
        "the test must reach the limit"
    );
    assert_eq!(
        conn.on_request(&req, &snap).unwrap_err(),
        over_limit("EDS subscription", held + 8, NAME_BYTES_PER_TYPE)
    );
    assert_eq!(
        conn.type_state(ResourceType::Endpoint).unwrap().names.len(),
        2 * per_request,
        "a refused request changes nothing"
    );
}

fn load_report(cluster: &str, localities: Vec<Locality>) -> LoadStatsRequest {
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterStats, UpstreamLocalityStats};
    LoadStatsRequest {
        node: None,
        cluster_stats: vec![ClusterStats {
            cluster_name: cluster.into(),
            upstream_locality_stats: localities
                .into_iter()
                .map(|l| UpstreamLocalityStats {
                    locality: Some(l),
                    ..UpstreamLocalityStats::default()
                })
                .collect(),
            ..ClusterStats::default()
        }],
    }
}

fn envoy_locality(zone: &str) -> Locality {
    Locality {
        region: "r".into(),
        zone: zone.into(),
        sub_zone: String::new(),
    }
}

#[test]
fn load_reports_are_held_to_name_locality_and_count_limits() {
    let ok = load_report("web.shop:80", vec![envoy_locality("a")]);
    assert_eq!(check_load_report(true, &ok), Ok(()));
    // The node is checked on the first report only, as for ADS.
    let with_node = LoadStatsRequest {
        node: Some(node(&"n".repeat(MAX_NODE_ID_BYTES + 1), "c")),
        ..ok.clone()
    };
    assert_eq!(
        check_load_report(true, &with_node),
        Err(over_limit("node.id", MAX_NODE_ID_BYTES + 1, NODE_ID))
    );
    assert_eq!(check_load_report(false, &with_node), Ok(()));

    let long = "c".repeat(MAX_RESOURCE_NAME_BYTES + 1);
    assert_eq!(
        check_load_report(false, &load_report(&long, vec![])),
        Err(over_limit(
            "cluster_stats.cluster_name",
            MAX_RESOURCE_NAME_BYTES + 1,
            RESOURCE_NAME
        ))
    );
    let many = vec![envoy_locality("a"); MAX_LRS_LOCALITIES_PER_CLUSTER + 1];
    assert_eq!(
        check_load_report(false, &load_report("web.shop:80", many)),
        Err(over_limit(
            "cluster_stats[\"web.shop:80\"].upstream_locality_stats",
            MAX_LRS_LOCALITIES_PER_CLUSTER + 1,
            LRS_LOCALITIES
        ))
    );
    let zone = "z".repeat(MAX_LOCALITY_BYTES + 1);
    let err = check_load_report(
        false,
        &load_report("web.shop:80", vec![envoy_locality(&zone)]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        over_limit(
            "cluster_stats[\"web.shop:80\"].upstream_locality_stats.locality.zone",
            MAX_LOCALITY_BYTES + 1,
            LOCALITY
        )
    );
    assert_eq!(err.code(), GrpcCode::InvalidArgument);
    assert!(err.to_string().contains("MAX_LOCALITY_BYTES"), "{err}");

    let mut too_many = ok.clone();
    too_many.cluster_stats = vec![ok.cluster_stats[0].clone(); MAX_LRS_CLUSTERS_PER_REPORT + 1];
    assert_eq!(
        check_load_report(false, &too_many),
        Err(over_limit(
            "cluster_stats",
            MAX_LRS_CLUSTERS_PER_REPORT + 1,
            LRS_CLUSTERS
        ))
    );
}

#[test]
fn reports_faster_than_the_interval_allows_are_refused() {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let interval = Duration::from_secs(5);
    let mut rate = ReportRate::new(interval);
    for i in 0..MAX_LRS_REPORTS_PER_INTERVAL as u64 {
        assert_eq!(rate.admit(start + Duration::from_millis(i)), Ok(()));
    }
    assert_eq!(
        rate.admit(start + Duration::from_secs(1)),
        Err(over_limit(
            "LoadStatsRequest rate",
            MAX_LRS_REPORTS_PER_INTERVAL + 1,
            LRS_REPORTS
        ))
    );
    // A client reporting once per interval, for a long time, is never refused.
    let mut rate = ReportRate::new(interval);
    for i in 0..1000 {
        assert_eq!(rate.admit(start + interval * i), Ok(()));
    }
}
