//! The Kubernetes source's robustness (issue 15), driven in process through the real kube client
//! against the test API server ([`e2e::apiserver::ApiServer`]): no server binary, no Envoy. What the
//! source publishes (the registry) and what its locator answers is what everything else reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::apiserver::ApiServer;
use e2e::k8s::{endpoint, endpoint_slice, node, node_name, pod, service};
use e2e::topology::{EAST_B, NAMESPACE, SERVICE};
use serde_json::json;
use tokio::sync::watch;
use xds_core::model::{Locality, LocalityLookup, PodHint, Registry};
use xds_server::sources::kubernetes::{self, clusters, watch_idle, KubeSourceSettings};

/// How long a change in the API server may take to reach the published registry (debounce 50 ms,
/// capped at 500 ms; slack for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(5);

type Published = Option<Arc<Registry>>;

fn settings() -> KubeSourceSettings {
    KubeSourceSettings::default()
}

/// Waits until the published registry satisfies `want`; panics with `what` otherwise.
async fn published(
    rx: &mut watch::Receiver<Published>,
    what: &str,
    want: impl Fn(&Registry) -> bool,
) -> Arc<Registry> {
    let found = tokio::time::timeout(
        PROPAGATION,
        rx.wait_for(|r| r.as_deref().is_some_and(&want)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|r| r.clone().expect("checked"));
    found.unwrap_or_else(|| panic!("{what}: not published; have {:?}", rx.borrow()))
}

/// A Service whose port `http` targets the named container port `web`: the EndpointSlice
/// controller gives a pod without that port a slice without `http`. That pod is not in `http`'s
/// cluster (before issue 15 it was sent to port 8080, the service port, where it does not listen).
#[tokio::test]
async fn a_pod_without_the_named_target_port_is_left_out_of_that_ports_cluster() {
    let api = ApiServer::start();
    let node = node_name(EAST_B);
    let mut svc = service(None);
    svc["spec"]["ports"] = json!([
        {"name": "http", "port": 8080, "targetPort": "web", "protocol": "TCP"},
        {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"},
    ]);
    api.apply(svc);
    let at = |ip: &str| {
        let mut e = endpoint(&node, true);
        e["addresses"] = json!([ip]);
        e
    };
    let mut with_web = endpoint_slice("echo-web", 18080, vec![at("10.0.0.1")]);
    with_web["ports"] = json!([
        {"name": "http", "port": 18080, "protocol": "TCP"},
        {"name": "metrics", "port": 9100, "protocol": "TCP"},
    ]);
    let mut without_web = endpoint_slice("echo-no-web", 18080, vec![at("10.0.0.2")]);
    without_web["ports"] = json!([{"name": "metrics", "port": 9100, "protocol": "TCP"}]);
    api.apply(with_web);
    api.apply(without_web);

    let (tx, mut rx) = watch::channel(None);
    let _locator = kubernetes::start(crate::kube_client::client(&api).await, settings(), tx);
    let registry = published(&mut rx, "both slices", |r| {
        r.services.values().any(|s| s.endpoints.len() == 2)
    })
    .await;
    let echo = registry
        .services
        .values()
        .find(|s| s.id.name == SERVICE)
        .expect("echo");
    let port = |name: &str| echo.ports.iter().find(|p| p.name == name).unwrap().clone();
    let (http, metrics) = (port("http"), port("metrics"));
    let serving = |p: &xds_core::model::ServicePort| -> Vec<(String, u16)> {
        echo.endpoints
            .iter()
            .filter(|e| e.serves(p))
            .map(|e| (e.address.to_string(), e.target_port(p)))
            .collect()
    };
    assert_eq!(serving(&http), [("10.0.0.1".to_string(), 18080)]);
    assert_eq!(
        serving(&metrics),
        [
            ("10.0.0.1".to_string(), 9100),
            ("10.0.0.2".to_string(), 9100)
        ]
    );
}

/// The addresses of echo.demo's endpoints in a registry.
fn echo_addresses(registry: &Registry) -> Vec<String> {
    registry
        .services
        .values()
        .filter(|s| s.id.name == SERVICE)
        .flat_map(|s| &s.endpoints)
        .map(|e| e.address.to_string())
        .collect()
}

fn slice_with(addresses: &[&str]) -> serde_json::Value {
    let node = node_name(EAST_B);
    let endpoints = addresses
        .iter()
        .map(|ip| {
            let mut e = endpoint(&node, true);
            e["addresses"] = json!([ip]);
            e
        })
        .collect();
    endpoint_slice("echo-pods", 8080, endpoints)
}

/// The idle timeout of the watches in [`a_silent_watch_is_restarted_and_a_change_made_meanwhile_arrives`].
const IDLE: Duration = Duration::from_secs(1);

/// A watch whose connection goes silent without closing (the API server vanished in a partition:
/// here, [`ApiServer::freeze_watches`]) is restarted after the idle timeout, and a change made
/// meanwhile arrives; the last good registry stays published throughout, never an empty one.
/// Bookmarks keep a quiet but healthy watch alive: none is restarted while they flow. Before
/// issue 15 the change waited for kube's own timeout, about 5 minutes.
#[tokio::test]
async fn a_silent_watch_is_restarted_and_a_change_made_meanwhile_arrives() {
    let api = ApiServer::start();
    api.apply(node(&node_name(EAST_B), EAST_B.region, EAST_B.zone));
    api.apply(service(None));
    api.apply(slice_with(&["10.0.0.1"]));
    api.send_bookmarks_every(Some(IDLE / 5));
    let config = crate::kube_client::config(&api).await;
    let client = watch_idle::client(config, IDLE, "kubernetes").unwrap();
    let (tx, mut rx) = watch::channel(None);
    let _locator = kubernetes::start(client, settings(), tx);
    published(&mut rx, "the first view", |r| echo_addresses(r).len() == 1).await;

    // Quiet but healthy: bookmarks every IDLE/5, so no watch is restarted over several IDLEs.
    let watches = || {
        api.requests()
            .iter()
            .filter(|r| r.is_watch_of("endpointslices"))
            .count()
    };
    // The watches open once the lists are done (after the first publish).
    let listed = Instant::now();
    while api.open_watches() < 4 {
        assert!(
            listed.elapsed() < PROPAGATION,
            "{} watches open",
            api.open_watches()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = watches();
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(
        watches(),
        before,
        "a watch that gets bookmarks was restarted"
    );

    let frozen = api.freeze_watches();
    assert!(frozen >= 4, "every watch frozen: {frozen}");
    let changed = Instant::now();
    api.apply(slice_with(&["10.0.0.1", "10.0.0.2"]));
    // Every registry published meanwhile is the last good one or the new one.
    let deadline = IDLE + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_sub(changed.elapsed());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!(
                "the change made while the watch was silent did not arrive within {deadline:?}; \
                 have {:?}",
                rx.borrow().as_deref().map(echo_addresses)
            ),
        }
        let addresses = rx.borrow_and_update().as_deref().map(echo_addresses);
        let addresses = addresses.expect("never unset");
        assert!(!addresses.is_empty(), "published without endpoints");
        if addresses.len() == 2 {
            break;
        }
    }
    println!(
        "the change arrived {} ms after it was made (idle timeout {} ms)",
        changed.elapsed().as_millis(),
        IDLE.as_millis()
    );
    assert!(
        watches() > before,
        "the endpointslices watch was opened again"
    );
}

/// A client whose pod is not known yet is told when it appears (the locator's change signal, which
/// streams wait on instead of polling), then found by name and by IP; deleted, it is gone.
#[tokio::test]
async fn the_locator_signals_a_pod_appearing_and_finds_it_by_name_and_ip() {
    let api = ApiServer::start();
    api.apply(node(&node_name(EAST_B), EAST_B.region, EAST_B.zone));
    api.apply(service(None));
    let (tx, mut rx) = watch::channel(None);
    let locator = kubernetes::start(crate::kube_client::client(&api).await, settings(), tx);
    published(&mut rx, "the first view", |_| true).await;
    let by_name = PodHint {
        namespace: Some(NAMESPACE.to_string()),
        name: Some("late".to_string()),
        ..PodHint::default()
    };
    let by_ip = PodHint {
        ip: Some("10.244.1.8".to_string()),
        ..PodHint::default()
    };
    assert_eq!(locator.locality_of(&by_name), None);
    let mut changes = locator.changes();
    changes.mark_unchanged();

    let applied = Instant::now();
    api.apply(pod("late", &node_name(EAST_B), "10.244.1.8"));
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("told within 1 s of the Pod event")
        .unwrap();
    println!(
        "told {} ms after the Pod event",
        applied.elapsed().as_millis()
    );
    let east_b = Some(Locality::new(EAST_B.region, EAST_B.zone, ""));
    assert_eq!(locator.locality_of(&by_name), east_b);
    assert_eq!(locator.locality_of(&by_ip), east_b);
    assert_eq!(
        locator.labels_of(&by_ip).get("kubernetes.io/hostname"),
        Some(&node_name(EAST_B))
    );

    changes.mark_unchanged();
    api.delete("v1", "Pod", Some(NAMESPACE), "late");
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("told within 1 s of the deletion")
        .unwrap();
    assert_eq!(locator.locality_of(&by_name), None);
    assert_eq!(locator.locality_of(&by_ip), None);
}

/// A resolver whose first answers fail, then every one is `addresses`.
struct FailsThenResolves {
    failures: std::sync::Mutex<u32>,
    addresses: Vec<std::net::IpAddr>,
}

impl clusters::gateways::Resolver for FailsThenResolves {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<std::net::IpAddr>>> {
        let mut failures = self.failures.lock().unwrap();
        let answer = if *failures > 0 {
            *failures -= 1;
            Err(std::io::Error::other("no such host"))
        } else {
            Ok(self.addresses.clone())
        };
        Box::pin(async move { answer })
    }
}

/// Two clusters, `west` on network n2 behind a gateway host name that does not resolve at first:
/// the merged registry is published anyway (no startup failure), without n2's gateway; once the name
/// resolves, the gateway arrives with every address.
#[tokio::test]
async fn a_gateway_that_does_not_resolve_at_first_arrives_once_it_does() {
    use clusters::{gateways, Member};
    let node = node_name(EAST_B);
    let (east, west) = (ApiServer::start(), ApiServer::start());
    let mut members = Vec::new();
    for (spec, api, ip) in [
        ("east=,network=n1", &east, "10.1.0.1"),
        (
            "west=,network=n2,gateway=gw.west.example:15443",
            &west,
            "10.2.0.1",
        ),
    ] {
        api.apply(service(None));
        let mut e = endpoint(&node, true);
        e["addresses"] = json!([ip]);
        api.apply(endpoint_slice("echo-pods", 8080, vec![e]));
        members.push(Member {
            spec: spec.parse().unwrap(),
            client: crate::kube_client::client(api).await,
        });
    }
    let specs =
        gateways::specs(&members.iter().map(|m| m.spec.clone()).collect::<Vec<_>>()).unwrap();
    let resolver = Arc::new(FailsThenResolves {
        failures: std::sync::Mutex::new(2),
        addresses: vec!["192.0.2.8".parse().unwrap(), "192.0.2.9".parse().unwrap()],
    });
    let resolved = gateways::keep_resolved(specs, resolver, Duration::from_secs(30));
    let (tx, mut rx) = watch::channel(None);
    let _locator = clusters::start(members, settings(), resolved, None, tx);
    let first = published(&mut rx, "both clusters", |r| echo_addresses(r).len() == 2).await;
    assert!(
        first.gateways.is_empty(),
        "published before the gateway resolved, without it: {:?}",
        first.gateways
    );
    // Retried 1 s after the first failure, 2 s after the second.
    let resolved = tokio::time::timeout(
        PROPAGATION * 2,
        rx.wait_for(|r| r.as_deref().is_some_and(|r| r.gateways.contains_key("n2"))),
    )
    .await
    .expect("the gateway arrives once it resolves")
    .unwrap()
    .clone()
    .unwrap();
    let addresses: Vec<String> = resolved.gateways["n2"]
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addresses, ["192.0.2.8", "192.0.2.9"]);
    assert_eq!(echo_addresses(&resolved).len(), 2);
}

/// Several clusters: the locator's change signal fires for a Pod appearing in any of them, and the
/// client is then found in that cluster, with its labels.
#[tokio::test]
async fn the_cluster_locator_signals_a_pod_appearing_in_any_cluster() {
    use clusters::{gateways, Member};
    let (east, west) = (ApiServer::start(), ApiServer::start());
    let mut members = Vec::new();
    for (name, api) in [("east", &east), ("west", &west)] {
        api.apply(node(&node_name(EAST_B), EAST_B.region, EAST_B.zone));
        api.apply(service(None));
        members.push(Member {
            spec: format!("{name}=").parse().unwrap(),
            client: crate::kube_client::client(api).await,
        });
    }
    let (tx, mut rx) = watch::channel(None);
    let locator = clusters::start(
        members,
        settings(),
        gateways::fixed(Default::default()),
        None,
        tx,
    );
    published(&mut rx, "both clusters listed", |_| true).await;
    let mut changes = locator.changes();
    changes.mark_unchanged();
    let hint = PodHint {
        namespace: Some(NAMESPACE.to_string()),
        name: Some("late".to_string()),
        ..PodHint::default()
    };
    assert_eq!(locator.locality_of(&hint), None);
    west.apply(pod("late", &node_name(EAST_B), "10.244.1.9"));
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("told within 1 s of the Pod event in west")
        .unwrap();
    assert!(locator.locality_of(&hint).is_some());
    assert_eq!(
        locator
            .labels_of(&hint)
            .get("topology.istio.io/cluster")
            .map(String::as_str),
        Some("west")
    );
}
