//! The test API server (`e2e::apiserver`) driven by the real `kube` client: lists, watches, paging,
//! selectors, metadata-only watches, bookmarks, 410 relists, outages, status writes. Each test has
//! its own server and finishes in a few seconds.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use crate::kube_client::client;
use e2e::apiserver::{ApiServer, KindInfo};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{
    ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const WAIT: Duration = Duration::from_secs(5);

fn service(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    })
}

fn node(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"capacity": {"cpu": "4"}},
    })
}

/// Drives a stream on its own task; its items come out of the returned channel.
fn drive<S>(stream: S) -> UnboundedReceiver<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for the next item")
        .expect("stream ended")
}

/// Collects items until one satisfies `done` (included).
async fn until<T: Debug>(
    rx: &mut UnboundedReceiver<T>,
    mut done: impl FnMut(&T) -> bool,
) -> Vec<T> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let item = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; seen so far: {seen:#?}"))
            .expect("stream ended");
        let stop = done(&item);
        seen.push(item);
        if stop {
            return seen;
        }
    }
}

/// Waits (without blocking the runtime) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Ev<K> = Result<Event<K>, watcher::Error>;

fn is_init_done<K>(e: &Ev<K>) -> bool {
    matches!(e, Ok(Event::InitDone))
}

fn names(objs: impl IntoIterator<Item = impl ResourceExt>) -> BTreeSet<String> {
    objs.into_iter().map(|o| o.name_any()).collect()
}

fn summary<K: ResourceExt>(e: &Ev<K>) -> String {
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(o)) => format!("InitApply {}", o.name_any()),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(o)) => format!("Apply {}", o.name_any()),
        Ok(Event::Delete(o)) => format!("Delete {}", o.name_any()),
        Err(e) => format!("Err {e}"),
    }
}

#[tokio::test]
async fn list_and_watch_see_add_modify_delete() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({"app": "a"})));
    server.apply(service("other", "b", json!({"app": "b"})));
    let client = client(&server).await;

    let api: Api<Service> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(list.items.clone()),
        BTreeSet::from(["a".into(), "b".into()])
    );
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(server.resource_version().to_string().as_str())
    );
    let a = &list.items[0];
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.generation, Some(1));

    let ns_api: Api<Service> = Api::namespaced(client.clone(), "other");
    assert_eq!(
        names(ns_api.list(&ListParams::default()).await.unwrap()),
        BTreeSet::from(["b".into()])
    );
    assert_eq!(ns_api.get("b").await.unwrap().name_any(), "b");
    match ns_api.get("a").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("expected 404, got {other:?}"),
    }

    let mut events = drive(watcher(api, watcher::Config::default()));
    let init: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(init, ["Init", "InitApply a", "InitApply b", "InitDone"]);

    server.apply(service("default", "c", json!({})));
    assert_eq!(summary(&next(&mut events).await), "Apply c");
    let mut changed = service("default", "a", json!({"app": "a2"}));
    changed["spec"]["ports"][0]["port"] = json!(8080);
    let stored = server.apply(changed);
    assert_eq!(stored["metadata"]["generation"], 2);
    match next(&mut events).await {
        Ok(Event::Apply(s)) => {
            assert_eq!(s.labels().get("app").map(String::as_str), Some("a2"));
            assert_eq!(s.metadata.generation, Some(2));
        }
        other => panic!("expected Apply a, got {other:?}"),
    }
    // Applying the same object again is a no-op: no event, no new resourceVersion.
    let rv = server.resource_version();
    server.apply(service("default", "c", json!({})));
    assert_eq!(server.resource_version(), rv);
    server.delete("v1", "Service", Some("other"), "b");
    match next(&mut events).await {
        Ok(Event::Delete(s)) => {
            assert_eq!(s.name_any(), "b");
            assert_eq!(
                s.resource_version(),
                Some(server.resource_version().to_string())
            );
        }
        other => panic!("expected Delete b, got {other:?}"),
    }
    assert!(server.get("v1", "Service", Some("other"), "b").is_none());
}

#[tokio::test]
async fn paging_with_the_watchers_default_page_size_and_a_small_limit() {
    let server = ApiServer::start();
    for i in 0..1100 {
        server.apply(service("default", &format!("svc-{i:04}"), json!({})));
    }
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");

    // Explicit small pages.
    let first = api.list(&ListParams::default().limit(400)).await.unwrap();
    assert_eq!(first.items.len(), 400);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(700));
    server.apply(service("default", "svc-zzzz", json!({})));
    let second = api
        .list(&ListParams::default().limit(1000).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 701);
    assert_eq!(second.items[0].name_any(), "svc-0400");
    assert!(second.metadata.continue_.is_none());
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );

    // The watcher lists in pages of 500: 1101 objects take three LISTs.
    server.clear_requests();
    let (reader, writer) = reflector::store();
    let mut events = drive(reflector(writer, watcher(api, watcher::Config::default())));
    until(&mut events, is_init_done).await;
    assert_eq!(reader.len(), 1101);
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_list_of("services"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert_eq!(lists[0].param("limit").as_deref(), Some("500"));
    assert!(lists[0].param("continue").is_none());
    assert!(lists[1].param("continue").is_some() && lists[2].param("continue").is_some());
}

#[tokio::test]
async fn label_and_field_selectors_on_lists_and_watches() {
    let server = ApiServer::start();
    server.apply(service(
        "default",
        "web",
        json!({"app": "web", "tier": "fe"}),
    ));
    server.apply(service("default", "db", json!({"app": "db", "tier": "be"})));
    server.apply(service("default", "plain", json!({})));
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let list = |sel: &'static str| {
        let api = api.clone();
        async move { names(api.list(&ListParams::default().labels(sel)).await.unwrap()) }
    };
    assert_eq!(list("app=web").await, BTreeSet::from(["web".into()]));
    assert_eq!(list("app,tier!=fe").await, BTreeSet::from(["db".into()]));
    assert_eq!(list("!app").await, BTreeSet::from(["plain".into()]));
    assert_eq!(list("app in (web,db)").await.len(), 2);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=db"))
        .await
        .unwrap();
    assert_eq!(names(by_name), BTreeSet::from(["db".into()]));
    match api.list(&ListParams::default().labels("a in b")).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
        other => panic!("expected 400, got {other:?}"),
    }

    let mut events = drive(watcher(api, watcher::Config::default().labels("app=web")));
    let init: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(init, ["Init", "InitApply web", "InitDone"]);
    // Not matching: not seen. Starting to match: ADDED. Stopping to match: DELETED.
    server.apply(service("default", "db", json!({"app": "db", "x": "1"})));
    server.apply(service("default", "plain", json!({"app": "web"})));
    assert_eq!(summary(&next(&mut events).await), "Apply plain");
    server.apply(service("default", "web", json!({"app": "api"})));
    assert_eq!(summary(&next(&mut events).await), "Delete web");
}

#[tokio::test]
async fn metadata_watcher_on_nodes() {
    let server = ApiServer::start();
    server.apply(node("n1", "z1"));
    server.apply(node("n2", "z2"));
    let client = client(&server).await;
    let api: Api<Node> = Api::all(client.clone());
    let meta_api: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let mut events = drive(reflector(
        writer,
        watcher(meta_api, watcher::Config::default()),
    ));
    until(&mut events, is_init_done).await;
    let zones: BTreeSet<(String, String)> = reader
        .state()
        .iter()
        .map(|n| {
            (
                n.name_any(),
                n.labels()["topology.kubernetes.io/zone"].clone(),
            )
        })
        .collect();
    assert_eq!(
        zones,
        BTreeSet::from([("n1".into(), "z1".into()), ("n2".into(), "z2".into())])
    );

    server.apply(node("n1", "z9"));
    match next(&mut events).await {
        Ok(Event::Apply(n)) => {
            assert_eq!(n.name_any(), "n1");
            assert_eq!(n.labels()["topology.kubernetes.io/zone"], "z9");
            let types = n.types.expect("PartialObjectMetadata carries its type");
            assert_eq!(
                (types.api_version.as_str(), types.kind.as_str()),
                ("meta.k8s.io/v1", "PartialObjectMetadata")
            );
        }
        other => panic!("expected Apply n1, got {other:?}"),
    }
    let requests = server.requests();
    let list = requests
        .iter()
        .find(|r| r.is_list_of("nodes"))
        .expect("a LIST of nodes");
    assert!(
        list.accept.contains("as=PartialObjectMetadataList"),
        "{list:?}"
    );
    let watch = requests
        .iter()
        .find(|r| r.is_watch_of("nodes"))
        .expect("a WATCH of nodes");
    assert!(
        watch.accept.contains("as=PartialObjectMetadata"),
        "{watch:?}"
    );

    // A full (non-metadata) read still has the spec.
    assert_eq!(
        api.get("n1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .pod_cidr
            .as_deref(),
        Some("10.0.0.0/24")
    );
    let meta = api.get_metadata("n2").await.unwrap();
    assert_eq!(meta.labels()["topology.kubernetes.io/zone"], "z2");

    // The older (deprecated) entry point sends the same requests.
    #[allow(deprecated)]
    let old = kube::runtime::metadata_watcher(api, watcher::Config::default());
    let mut old = drive(old);
    let init: Vec<String> = until(&mut old, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(init, ["Init", "InitApply n1", "InitApply n2", "InitDone"]);
}

#[tokio::test]
async fn bookmarks_reach_watches_that_asked_for_them() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let with = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let without = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap();
    let mut with = drive(with);
    let mut without = drive(without);
    eventually("two open watches", || server.open_watches() == 2).await;
    server.apply(service("default", "b", json!({})));
    assert!(matches!(next(&mut with).await, Ok(WatchEvent::Added(s)) if s.name_any() == "b"));
    assert!(matches!(next(&mut without).await, Ok(WatchEvent::Added(s)) if s.name_any() == "b"));

    assert_eq!(server.send_bookmarks(), 1);
    match next(&mut with).await {
        Ok(WatchEvent::Bookmark(b)) => {
            assert_eq!(
                b.metadata.resource_version,
                server.resource_version().to_string()
            );
            assert_eq!(
                (b.types.api_version.as_str(), b.types.kind.as_str()),
                ("v1", "Service")
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    server.delete("v1", "Service", Some("default"), "a");
    assert!(matches!(next(&mut without).await, Ok(WatchEvent::Deleted(s)) if s.name_any() == "a"));

    // The watcher asks for bookmarks by default (allowWatchBookmarks=true).
    let mut events = drive(watcher(api, watcher::Config::default()));
    until(&mut events, is_init_done).await;
    eventually("the watcher's watch", || {
        server.requests().iter().any(|r| {
            r.is_watch_of("services")
                && r.param("allowWatchBookmarks").as_deref() == Some("true")
                && r.param("resourceVersion").is_some()
        })
    })
    .await;
}

#[tokio::test]
async fn expired_history_makes_the_watcher_relist() {
    let server = ApiServer::start();
    for name in ["a", "b", "c"] {
        server.apply(service("default", name, json!({})));
    }
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let mut events = drive(reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    ));
    until(&mut events, is_init_done).await;
    eventually("the watch", || server.open_watches() == 1).await;
    server.apply(service("default", "d", json!({})));
    assert_eq!(summary(&next(&mut events).await), "Apply d");

    server.expire_history();
    let relist: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert!(
        relist[0].starts_with("Err") && relist[0].contains("Expired"),
        "{relist:?}"
    );
    assert_eq!(
        relist[1..],
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitApply d",
            "InitDone"
        ]
    );
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.is_list_of("services"))
        .count();
    assert_eq!(lists, 2);
    assert_eq!(names(reader.state().iter().map(|s| (**s).clone())).len(), 4);
    // And the new watch (from the relist's resourceVersion) is live.
    eventually("the new watch", || server.open_watches() == 1).await;
    server.delete("v1", "Service", Some("default"), "a");
    assert_eq!(summary(&next(&mut events).await), "Delete a");
}

#[tokio::test]
async fn outage_then_restart_recovers_and_sees_what_changed_meanwhile() {
    let server = ApiServer::start();
    for name in ["a", "b", "c"] {
        server.apply(service("default", name, json!({})));
    }
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let mut events = drive(reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    ));
    until(&mut events, is_init_done).await;
    eventually("the watch", || server.open_watches() == 1).await;
    let port = server.addr().port();

    server.stop();
    assert!(!server.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "connection refused while stopped"
    );
    assert!(api.list(&ListParams::default()).await.is_err());
    // The watch ended; re-watching fails until the server is back.
    let errs = until(&mut events, |e| e.is_err()).await;
    assert!(
        errs.iter().all(|e| e.is_err()),
        "{:?}",
        errs.iter().map(summary).collect::<Vec<_>>()
    );

    // Changes while down.
    server.delete("v1", "Service", Some("default"), "b");
    server.apply(service("default", "d", json!({"new": "yes"})));
    server.restart();
    assert_eq!(server.addr().port(), port);
    // The watcher resumes from its resourceVersion: the missed events are replayed, no relist.
    let seen: Vec<String> = until(
        &mut events,
        |e| matches!(e, Ok(Event::Apply(s)) if s.name_any() == "d"),
    )
    .await
    .iter()
    .map(summary)
    .filter(|s| !s.starts_with("Err"))
    .collect();
    assert_eq!(seen, ["Delete b", "Apply d"]);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.is_list_of("services"))
            .count(),
        1
    );
    assert_eq!(
        names(reader.state().iter().map(|s| (**s).clone())),
        BTreeSet::from(["a".into(), "c".into(), "d".into()])
    );
}

#[tokio::test]
async fn outage_with_compaction_relists_to_exactly_the_current_objects() {
    let server = ApiServer::start();
    for name in ["a", "b", "c"] {
        server.apply(service("default", name, json!({"v": "1"})));
    }
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let mut events = drive(reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    ));
    until(&mut events, is_init_done).await;
    eventually("the watch", || server.open_watches() == 1).await;

    server.stop();
    server.delete("v1", "Service", Some("default"), "b");
    server.apply(service("default", "a", json!({"v": "2"})));
    server.apply(service("default", "d", json!({"v": "1"})));
    server.expire_history();
    server.restart();
    // Watching from the old resourceVersion gets 410, so the watcher relists.
    let after: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .filter(|s| !s.starts_with("Err"))
        .collect();
    assert_eq!(
        after,
        [
            "Init",
            "InitApply a",
            "InitApply c",
            "InitApply d",
            "InitDone"
        ]
    );
    let state: BTreeSet<(String, String)> = reader
        .state()
        .iter()
        .map(|s| (s.name_any(), s.labels()["v"].clone()))
        .collect();
    assert_eq!(
        state,
        BTreeSet::from([
            ("a".into(), "2".into()),
            ("c".into(), "1".into()),
            ("d".into(), "1".into())
        ])
    );
}

fn policy_kind() -> (KindInfo, ApiResource) {
    let info = KindInfo::new(
        "failover.example.io",
        "v1alpha1",
        "FailoverPolicy",
        "failoverpolicies",
        true,
    );
    let ar = ApiResource {
        group: info.group.clone(),
        version: info.version.clone(),
        api_version: info.api_version(),
        kind: info.kind.clone(),
        plural: info.plural.clone(),
    };
    (info, ar)
}

#[tokio::test]
async fn status_patches_on_a_custom_kind_are_stored_and_watched() {
    let server = ApiServer::start();
    let (info, ar) = policy_kind();
    server.register_kind(info);
    server.apply(json!({
        "apiVersion": "failover.example.io/v1alpha1",
        "kind": "FailoverPolicy",
        "metadata": {"name": "p", "namespace": "apps"},
        "spec": {"service": "web"},
    }));
    let client = client(&server).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "apps", &ar);
    let mut events = drive(watcher(api.clone(), watcher::Config::default()));
    until(&mut events, is_init_done).await;
    eventually("the watch", || server.open_watches() == 1).await;
    let rv = server.resource_version();

    // JSON merge patch of the status subresource.
    let status = json!({"status": {"conditions": [{"type": "Accepted", "status": "False", "reason": "Invalid"}]}});
    let patched = api
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.data["status"], status["status"]);
    let stored = server
        .get(
            "failover.example.io/v1alpha1",
            "FailoverPolicy",
            Some("apps"),
            "p",
        )
        .unwrap();
    assert_eq!(stored["status"], status["status"]);
    assert_eq!(stored["spec"]["service"], "web");
    assert_eq!(
        stored["metadata"]["generation"], 1,
        "a status write does not bump generation"
    );
    assert_eq!(stored["metadata"]["resourceVersion"], (rv + 1).to_string());
    match next(&mut events).await {
        Ok(Event::Apply(o)) => assert_eq!(o.data["status"], status["status"]),
        other => panic!("expected Apply p, got {other:?}"),
    }

    // Server-side apply of the status.
    let applied = json!({
        "apiVersion": "failover.example.io/v1alpha1", "kind": "FailoverPolicy",
        "metadata": {"name": "p"},
        "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Valid"}]},
        "spec": {"service": "ignored on the status subresource"},
    });
    api.patch_status(
        "p",
        &PatchParams::apply("xds-server").force(),
        &Patch::Apply(&applied),
    )
    .await
    .unwrap();
    match next(&mut events).await {
        Ok(Event::Apply(o)) => {
            assert_eq!(o.data["status"]["conditions"][0]["status"], "True");
            assert_eq!(o.data["spec"]["service"], "web");
        }
        other => panic!("expected Apply p, got {other:?}"),
    }
    // The same status again changes nothing: no event, no new resourceVersion.
    let rv = server.resource_version();
    api.patch_status(
        "p",
        &PatchParams::apply("xds-server").force(),
        &Patch::Apply(&applied),
    )
    .await
    .unwrap();
    assert_eq!(server.resource_version(), rv);
    let got = api.get_status("p").await.unwrap();
    assert_eq!(got.data["status"]["conditions"][0]["reason"], "Valid");

    // Writes through the client: create, replace with a stale resourceVersion (409), delete.
    let mut obj = DynamicObject::new("q", &ar).within("apps");
    obj.data = json!({"spec": {"service": "db"}});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(summary(&next(&mut events).await), "Apply q");
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    match api.replace("q", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
    api.delete("q", &Default::default()).await.unwrap();
    assert_eq!(summary(&next(&mut events).await), "Delete q");
}

/// Plain `#[test]`, raw HTTP: the exact wire format of a few answers.
#[test]
fn raw_protocol_without_an_async_runtime() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ApiServer>();
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    let get = |path: &str| e2e::http::get(server.addr(), "127.0.0.1", path, WAIT).expect("GET");

    let list = get("/api/v1/namespaces/default/services");
    assert_eq!(list.status, 200);
    let v: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("ServiceList"), Some("v1"))
    );
    assert_eq!(v["items"][0]["metadata"]["name"], "a");

    let missing = get("/apis/nope.example.io/v1/things");
    assert_eq!(missing.status, 404);
    let v: Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["code"].as_u64()),
        (Some("Status"), Some(404))
    );

    // A watch from the start streams the current objects, then ends at timeoutSeconds.
    let w = get("/api/v1/services?watch=true&timeoutSeconds=1");
    assert_eq!(w.status, 200);
    assert_eq!(w.header("transfer-encoding"), Some("chunked"));
    let lines: Vec<Value> = w
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ADDED");

    server.apply(service("default", "b", json!({})));
    server.expire_history();
    let w = get("/api/v1/services?watch=true&resourceVersion=1&timeoutSeconds=1");
    assert_eq!(w.status, 200);
    let line: Value = serde_json::from_str(w.text().trim()).unwrap();
    let rv = server.resource_version();
    assert_eq!(
        line,
        json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: 1 ({rv})"), "reason": "Expired", "code": 410,
        }})
    );
    // A watch from the current resourceVersion is fine.
    let w = get(&format!(
        "/api/v1/services?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    ));
    assert_eq!(w.text(), "");

    // sendInitialEvents: the current objects, then the initial-events-end bookmark.
    let w = get("/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1");
    let lines: Vec<Value> = w
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        lines[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    assert_eq!(get("/version").status, 200);
    let r = server.requests();
    assert!(r
        .iter()
        .any(|r| r.is_watch_of("services") && r.param("resourceVersion").as_deref() == Some("1")));
}

#[tokio::test]
async fn endpoint_slices_by_service_label_and_discovery() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let server = ApiServer::start();
    let slice = |name: &str, service: &str, zone: &str, ready: bool| {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.0.1"], "zone": zone, "nodeName": "n1",
                           "conditions": {"ready": ready, "serving": ready, "terminating": false}}],
        })
    };
    server.apply(slice("web-abc", "web", "z1", true));
    server.apply(slice("db-abc", "db", "z1", true));
    let client = client(&server).await;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "apps");
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let mut events = drive(watcher(api, config));
    let init: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(init, ["Init", "InitApply web-abc", "InitDone"]);
    server.apply(slice("web-abc", "web", "z1", false));
    match next(&mut events).await {
        Ok(Event::Apply(s)) => {
            let conditions = s.endpoints[0].conditions.clone().unwrap();
            assert_eq!(conditions.ready, Some(false));
            assert_eq!(s.endpoints[0].zone.as_deref(), Some("z1"));
        }
        other => panic!("expected Apply web-abc, got {other:?}"),
    }

    // Version and discovery, for clients that check them.
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let (info, _) = policy_kind();
    server.register_kind(info);
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let kinds: BTreeSet<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| format!("{}/{}", ar.api_version, ar.kind))
        .collect();
    for want in [
        "v1/Service",
        "v1/Node",
        "discovery.k8s.io/v1/EndpointSlice",
        "failover.example.io/v1alpha1/FailoverPolicy",
    ] {
        assert!(kinds.contains(want), "{want} not in {kinds:?}");
    }
}

#[tokio::test]
async fn injected_failures_block_one_resource_until_cleared() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    server.apply(node("n1", "z1"));
    // 500, not 503: kube's client itself retries 429/503/504 (up to 15 times, backing off).
    server.fail_requests("services", 500);
    let client = client(&server).await;
    let services: Api<Service> = Api::all(client.clone());
    match services.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"))
        }
        other => panic!("expected 500, got {other:?}"),
    }
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let mut events = drive(watcher(services, watcher::Config::default()).default_backoff());
    until(&mut events, |e| e.is_err()).await;
    server.clear_failures();
    let init: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .filter(|s| !s.starts_with("Err"))
        .collect();
    assert_eq!(init, ["Init", "InitApply a", "InitDone"]);
}

#[tokio::test]
async fn streaming_list_watcher_config_works_too() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    server.apply(service("default", "b", json!({})));
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let config = watcher::Config::default().streaming_lists();
    let mut events = drive(watcher(api, config));
    let init: Vec<String> = until(&mut events, is_init_done)
        .await
        .iter()
        .map(summary)
        .collect();
    assert_eq!(init, ["Init", "InitApply a", "InitApply b", "InitDone"]);
    server.apply(service("default", "c", json!({})));
    assert_eq!(summary(&next(&mut events).await), "Apply c");
    let requests = server.requests();
    assert!(!requests.iter().any(|r| r.is_list_of("services")));
    assert!(requests
        .iter()
        .any(|r| r.is_watch_of("services")
            && r.param("sendInitialEvents").as_deref() == Some("true")));
}
