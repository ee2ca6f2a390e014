use super::*;
use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use std::collections::HashMap;

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}
fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn node(meta: Vec<(&str, Value)>) -> Node {
    Node {
        id: "sidecar-1".into(),
        cluster: "shop".into(),
        locality: Some(EnvoyLocality {
            region: "us-east1".into(),
            zone: "us-east1-b".into(),
            sub_zone: String::new(),
        }),
        metadata: Some(Struct {
            fields: meta
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
        }),
        ..Node::default()
    }
}

#[test]
fn reads_locality_labels_namespace_and_listener_override() {
    let labels = Value {
        kind: Some(Kind::StructValue(Struct {
            fields: HashMap::from([("topology.istio.io/cluster".to_string(), string("east"))]),
        })),
    };
    let info = client_info(Some(&node(vec![
        (META_LABELS, labels),
        (META_NAMESPACE, string("shop")),
        (META_LISTENER_ADDRESS, string("127.0.0.1")),
        (META_LISTENER_PORT, number(20001.0)),
    ])))
    .unwrap();
    assert_eq!(info.node_id, "sidecar-1");
    assert_eq!(info.locality, Locality::new("us-east1", "us-east1-b", ""));
    assert_eq!(info.label("topology.istio.io/cluster"), Some("east"));
    assert_eq!(info.namespace.as_deref(), Some("shop"));
    let l = info.listener.unwrap();
    assert_eq!(l.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(l.port, Some(20001));
    // the port may also come as a string (Envoy's --service-node style tooling often does that)
    let info = client_info(Some(&node(vec![(META_LISTENER_PORT, string("20002"))]))).unwrap();
    assert_eq!(info.listener.unwrap().port, Some(20002));
}

#[test]
fn reads_identity_and_inbound_ports() {
    let info = client_info(Some(&node(vec![
        (META_IDENTITY, string("checkout")),
        (META_INBOUND_PORT, number(15006.0)),
        (META_APP_PORT, string("8080")),
    ])))
    .unwrap();
    assert_eq!(info.claimed_identity.as_deref(), Some("checkout"));
    assert_eq!(
        info.inbound,
        Some(Inbound {
            port: 15006,
            app_port: 8080
        })
    );
    let plain = client_info(Some(&node(vec![]))).unwrap();
    assert_eq!((plain.claimed_identity, plain.inbound), (None, None));
    let err = client_info(Some(&node(vec![(META_INBOUND_PORT, number(15006.0))])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "node metadata `app_port`: required with `inbound_port`"
    );
    let err = client_info(Some(&node(vec![
        (META_INBOUND_PORT, number(15006.0)),
        (META_APP_PORT, number(0.0)),
    ])))
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("node metadata `app_port`: 0 is not a port"),
        "{err}"
    );
}

#[test]
fn bad_metadata_is_a_clear_error() {
    assert_eq!(client_info(None), Err(NodeError::Missing));
    let err = client_info(Some(&node(vec![(META_LISTENER_PORT, number(70000.0))])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "node metadata `listener_port`: 70000 is not a port (a whole number from 1 to 65535)"
    );
    let err = client_info(Some(&node(vec![(
        META_LISTENER_ADDRESS,
        string("localhost"),
    )])))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("listener_address") && err.contains("not an IP"),
        "{err}"
    );
    let err = client_info(Some(&node(vec![(META_LABELS, string("x"))])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`labels`"), "{err}");
}

#[test]
fn grpc_clients_are_recognised_by_user_agent_or_features_without_metadata() {
    let with = |agent: &str, features: &[&str]| {
        let n = Node {
            user_agent_name: agent.into(),
            client_features: features.iter().map(|f| f.to_string()).collect(),
            ..node(vec![])
        };
        client_info(Some(&n)).unwrap().kind
    };
    assert_eq!(with("envoy", &[]), ClientKind::Envoy);
    assert_eq!(
        with("envoy", &["envoy.lb.does_not_support_overprovisioning"]),
        ClientKind::Envoy
    );
    assert_eq!(with("", &[]), ClientKind::Envoy);
    assert_eq!(with("gRPC C-core linux/x86_64", &[]), ClientKind::Grpc);
    assert_eq!(with("gRPC Node Pure JS", &[]), ClientKind::Grpc);
    assert_eq!(with("grpc-go", &[]), ClientKind::Grpc);
    // A client that hides its user agent but announces a feature only gRPC has.
    assert_eq!(with("", &["xds.config.resource-in-sotw"]), ClientKind::Grpc);
    // A short or non-ASCII agent is compared safely.
    assert_eq!(with("gR", &[]), ClientKind::Envoy);
    assert_eq!(with("gRPé", &[]), ClientKind::Envoy);
}
