use super::*;
use serde_json::json;

fn pod(name: &str, ip: &str, node: &str, phase: &str) -> WatchedPod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "demo", "resourceVersion": "7",
            "labels": {"app": "x"}, "annotations": {"big": "x".repeat(1000)},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {
            "nodeName": node, "serviceAccountName": "api",
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "b"}]}],
        },
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "conditions": []},
    }))
    .unwrap()
}

fn key(name: &str) -> PodKey {
    ("demo".to_string(), name.to_string())
}

#[test]
fn a_watched_pod_keeps_only_what_is_used() {
    let p = pod("a", "10.0.0.1", "node-1", "Running");
    assert_eq!(p.metadata.labels, None, "labels are skipped");
    assert_eq!(p.metadata.annotations, None);
    assert_eq!(p.metadata.managed_fields, None);
    assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(
        PodRecord::of(&p),
        Some(PodRecord {
            namespace: "demo".into(),
            name: "a".into(),
            ip: Some("10.0.0.1".into()),
            node: Some("node-1".into()),
            phase: Some("Running".into()),
            service_account: "api".into(),
        })
    );
    let bare: WatchedPod =
        serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "demo"}})).unwrap();
    let record = PodRecord::of(&bare).unwrap();
    assert_eq!((record.ip, record.node), (None, None));
    assert_eq!(record.service_account, DEFAULT_SERVICE_ACCOUNT);
}

#[test]
fn the_index_finds_pods_by_name_and_running_ones_by_ip_and_forgets_deleted_ones() {
    let mut index = PodIndex::default();
    index.on_event(&watcher::Event::Init);
    index.on_event(&watcher::Event::InitApply(pod(
        "a", "10.0.0.1", "node-1", "Running",
    )));
    assert!(
        index.by_name("demo", "a").is_none(),
        "not before the list is complete"
    );
    assert_eq!(index.on_event(&watcher::Event::InitDone), PodChange::BOTH);
    assert_eq!(
        index.by_name("demo", "a").unwrap().node.as_deref(),
        Some("node-1")
    );
    assert_eq!(index.by_ip("10.0.0.1").unwrap().name, "a");
    assert!(index.by_ip("10.0.0.2").is_none());

    // A finished Pod keeps its IP while a new one gets it: the running one answers.
    let done = index.on_event(&watcher::Event::Apply(pod(
        "a",
        "10.0.0.1",
        "node-1",
        "Succeeded",
    )));
    assert!(done.placement && !done.accounts);
    assert!(
        index.by_ip("10.0.0.1").is_none(),
        "only running Pods are found by IP"
    );
    index.on_event(&watcher::Event::Apply(pod(
        "b", "10.0.0.1", "node-2", "Running",
    )));
    assert_eq!(index.by_ip("10.0.0.1").unwrap().name, "b");
    assert_eq!(index.len(), 2);

    // Deleted: gone by name and by IP.
    let gone = index.on_event(&watcher::Event::Delete(pod(
        "b", "10.0.0.1", "node-2", "Running",
    )));
    assert_eq!(gone, PodChange::BOTH);
    assert!(index.by_name("demo", "b").is_none());
    assert!(index.by_ip("10.0.0.1").is_none());
    index.remove(&key("a"));
    assert!(index.is_empty());
    assert!(index.by_ip.is_empty(), "no IP entry outlives its Pods");
}

#[test]
fn an_update_that_changes_nothing_kept_is_no_change() {
    let mut index = PodIndex::default();
    let first = index.on_event(&watcher::Event::Apply(pod("a", "10.0.0.1", "n", "Running")));
    assert_eq!(first, PodChange::BOTH);
    // A status update of a field not kept (conditions, say): the same record.
    let mut again = pod("a", "10.0.0.1", "n", "Running");
    again.metadata.resource_version = Some("8".into());
    assert_eq!(
        index.on_event(&watcher::Event::Apply(again)),
        PodChange::default()
    );
    let moved = index.on_event(&watcher::Event::Apply(pod("a", "10.0.0.9", "n", "Running")));
    assert_eq!(
        moved,
        PodChange {
            accounts: false,
            placement: true
        }
    );
    assert!(
        index.by_ip("10.0.0.1").is_none(),
        "the old IP no longer finds it"
    );
    assert_eq!(index.by_ip("10.0.0.9").unwrap().name, "a");
}

#[test]
fn a_relist_replaces_the_index_in_one_step() {
    let mut index = PodIndex::default();
    index.on_event(&watcher::Event::Apply(pod(
        "old", "10.0.0.1", "n", "Running",
    )));
    index.on_event(&watcher::Event::Init);
    index.on_event(&watcher::Event::InitApply(pod(
        "new", "10.0.0.2", "n", "Running",
    )));
    assert!(
        index.by_name("demo", "old").is_some(),
        "the last complete view meanwhile"
    );
    index.on_event(&watcher::Event::InitDone);
    assert!(index.by_name("demo", "old").is_none());
    assert!(index.by_ip("10.0.0.1").is_none());
    assert_eq!(index.by_ip("10.0.0.2").unwrap().name, "new");
    assert_eq!(
        index.accounts().0,
        HashMap::from([(key("new"), "api".to_string())])
    );
}
