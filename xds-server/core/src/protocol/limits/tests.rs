use super::*;
use crate::model::Registry;
use crate::snapshot::{Snapshot, TranslateSettings, CLUSTER_TYPE, ENDPOINT_TYPE};
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
        Err(ProtocolError::NodeFieldTooLarge {
            field: "node.id",
            bytes: MAX_NODE_ID_BYTES + 1
        })
    );
    assert_eq!(
        check_node(true, Some(&node("n", &long))),
        Err(ProtocolError::NodeFieldTooLarge {
            field: "node.cluster",
            bytes: MAX_NODE_ID_BYTES + 1
        })
    );
    // Later requests' nodes are not read; a missing node is the node parser's to refuse.
    assert_eq!(check_node(false, Some(&node(&long, &long))), Ok(()));
    assert_eq!(check_node(true, None), Ok(()));
}

#[test]
fn sotw_counts_one_requests_names() {
    let snap = snapshot();
    let mut conn = AdsConnection::new();
    let mut req = DiscoveryRequest {
        node: Some(node("n", "c")),
        type_url: ENDPOINT_TYPE.into(),
        resource_names: names("a", MAX_NAMES_PER_TYPE),
        ..DiscoveryRequest::default()
    };
    assert_eq!(check_sotw(&conn, &req), Ok(()));
    conn.on_request(&req, &snap).unwrap();
    // The next request replaces the subscription: only its own names count.
    req.resource_names = names("b", MAX_NAMES_PER_TYPE);
    assert_eq!(check_sotw(&conn, &req), Ok(()));
    req.resource_names.push("one-too-many".into());
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
    let req = DiscoveryRequest {
        node: Some(node(&"x".repeat(MAX_NODE_ID_BYTES + 1), "c")),
        type_url: CLUSTER_TYPE.into(),
        ..DiscoveryRequest::default()
    };
    assert!(matches!(
        conn.on_request(&req, &snap),
        Err(ProtocolError::NodeFieldTooLarge { .. })
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
