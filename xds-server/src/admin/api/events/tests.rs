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
