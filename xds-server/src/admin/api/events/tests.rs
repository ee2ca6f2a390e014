use super::*;
use crate::registry::ClientRegistry;

#[tokio::test]
async fn events_are_filtered_by_node_and_lag_is_reported() {
    let registry = ClientRegistry::new();
    let mut stream = event_stream(registry.subscribe(), "b".into());
    let at = SystemTime::now();
    for node in ["a", "b"] {
        registry.emit(XdsEvent::Disconnected {
            at,
            stream_id: 1,
            node: node.into(),
        });
    }
    use futures::StreamExt;
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!((e.kind.as_str(), e.node_id.as_str()), ("disconnected", "b"));

    let mut lagging = event_stream(registry.subscribe(), String::new());
    for _ in 0..5000 {
        registry.emit(XdsEvent::Disconnected {
            at,
            stream_id: 1,
            node: "x".into(),
        });
    }
    let e = lagging.next().await.unwrap().unwrap();
    assert_eq!(e.kind, "lagged");
    assert!(e.resources > 0);
}

#[test]
fn fleet_events_carry_the_service_port_locality_ratio_and_reason() {
    let e = event_pb(&XdsEvent::Fleet {
        at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
        kind: "fleet_ejected",
        service: "web.shop:8080".into(),
        locality: "eu/eu-a/".into(),
        reporters: 3,
        requests: 40,
        errors: 30,
        reason: "error ratio 0.750".into(),
    });
    assert_eq!(
        (
            e.kind.as_str(),
            e.at_unix_ms,
            e.service.as_str(),
            e.locality.as_str(),
            e.error_ratio,
            e.reason.as_str()
        ),
        (
            "fleet_ejected",
            1500,
            "web.shop:8080",
            "eu/eu-a/",
            0.75,
            "error ratio 0.750"
        )
    );
}
