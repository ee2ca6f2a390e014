//! The publisher driven through its watch channels, on the single-threaded runtime of `#[tokio::test]`:
//! [`settle`] lets it act on what was sent, so "nothing was published" is decided without a clock.

use super::*;
use tokio::task::JoinHandle;
use xds_core::model::{Service, ServiceId, ServicePort};

/// Services `shop/NAME` (port 8080, no endpoints).
fn registry(names: &[&str]) -> Arc<Registry> {
    Arc::new(Registry::from_services(names.iter().map(|name| {
        Service::new(
            ServiceId::new("shop", *name),
            vec![ServicePort {
                name: "http".into(),
                port: 8080,
            }],
            Vec::new(),
        )
    })))
}

fn names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .registry
        .services
        .keys()
        .map(ToString::to_string)
        .collect()
}

/// Lets every task that a send woke run until it waits again. On the current-thread runtime a yielding
/// task resumes only after the tasks already queued have run; the publisher does all its work (a
/// rebuild included) between two waits, so one yield would do and a few leave a margin.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// A running publisher and the ends of its channels the sources and the servers hold.
struct Publisher {
    registry: watch::Sender<Option<Arc<Registry>>>,
    policies: watch::Sender<Option<Arc<PolicySet>>>,
    secrets: watch::Sender<Option<Arc<SecretSet>>>,
    ejections: watch::Sender<Arc<FleetEjections>>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Publisher {
    /// Neither the registry nor the policies known yet, no secrets (listed: an empty set).
    fn start() -> Self {
        Self::with_secrets(Some(Arc::new(SecretSet::default())))
    }

    fn with_secrets(secrets: Option<Arc<SecretSet>>) -> Self {
        let (registry, registry_rx) = watch::channel(None);
        let (policies, policies_rx) = watch::channel(None);
        let (secrets, secrets_rx) = watch::channel(secrets);
        let (ejections, ejections_rx) = watch::channel(Arc::default());
        let (snapshots_tx, snapshots) = watch::channel(None);
        let task = tokio::spawn(publish_snapshots(
            PublishInputs {
                registry: registry_rx,
                policies: policies_rx,
                secrets: secrets_rx,
                ejections: ejections_rx,
            },
            snapshots_tx,
            TranslateSettings::default(),
        ));
        Self {
            registry,
            policies,
            secrets,
            ejections,
            snapshots,
            task,
        }
    }

    /// The snapshot published since the last call, or `None` if the publisher waits without having
    /// published one.
    async fn next(&mut self) -> Option<Arc<Snapshot>> {
        settle().await;
        if !self.snapshots.has_changed().ok()? {
            return None;
        }
        self.snapshots.borrow_and_update().clone()
    }
}

#[tokio::test]
async fn publishes_only_complete_inputs_and_each_change_coalesced() {
    let mut p = Publisher::start();
    assert!(p.next().await.is_none(), "nothing known yet");

    // (a) The registry alone is not a configuration: the policies may still be listing.
    p.registry
        .send_replace(Some(registry(&["cart", "checkout"])));
    assert!(p.next().await.is_none(), "policies unknown");
    assert!(p.snapshots.borrow().is_none());

    // (b) Both known: the first snapshot, with the registry's services.
    p.policies
        .send_replace(Some(Arc::new(PolicySet::default())));
    let first = p.next().await.expect("published once both are known");
    assert_eq!(first.generation, 1);
    assert_eq!(names(&first), ["shop/cart", "shop/checkout"]);
    assert!(p.next().await.is_none(), "one change, one snapshot");

    // (c) A registry change: a newer generation with the new services.
    p.registry
        .send_replace(Some(registry(&["cart", "checkout", "web"])));
    let second = p.next().await.expect("a registry change republishes");
    assert_eq!(second.generation, 2);
    assert_eq!(names(&second), ["shop/cart", "shop/checkout", "shop/web"]);

    // (d) A secrets change alone republishes, with the same services.
    let secrets = SecretSet::placeholder("bundle", &[("web", "cert-1")]);
    p.secrets.send_replace(Some(secrets.clone()));
    let third = p.next().await.expect("a secrets change republishes");
    assert_eq!(third.generation, 3);
    assert_eq!(third.secret_set(), &secrets);
    assert_eq!(names(&third), names(&second));

    // (f) A burst, registry and policies together, becomes one snapshot of the last values.
    p.registry.send_replace(Some(registry(&["a"])));
    p.policies
        .send_replace(Some(Arc::new(PolicySet::default())));
    p.registry.send_replace(Some(registry(&["b"])));
    p.registry.send_replace(Some(registry(&["c", "d"])));
    let burst = p.next().await.expect("the burst publishes");
    assert_eq!(burst.generation, 4, "one snapshot for the whole burst");
    assert_eq!(names(&burst), ["shop/c", "shop/d"]);
    assert_eq!(burst.secret_set(), &secrets, "the secrets carry over");
    assert!(p.next().await.is_none(), "nothing left to publish");
}

#[tokio::test]
async fn policies_alone_publish_nothing() {
    let mut p = Publisher::start();
    p.policies
        .send_replace(Some(Arc::new(PolicySet::default())));
    p.secrets
        .send_replace(Some(SecretSet::placeholder("bundle", &[("web", "cert-1")])));
    assert!(p.next().await.is_none(), "registry unknown");
    p.registry.send_replace(Some(registry(&[])));
    let first = p
        .next()
        .await
        .expect("an empty registry, once listed, is a view");
    assert_eq!(first.generation, 1);
    assert!(names(&first).is_empty());
}

#[tokio::test]
async fn nothing_is_published_before_the_secrets_are_listed() {
    let mut p = Publisher::with_secrets(None);
    p.registry.send_replace(Some(registry(&["web"])));
    p.policies
        .send_replace(Some(Arc::new(PolicySet::default())));
    assert!(
        p.next().await.is_none(),
        "secrets not listed: mTLS resources would name unanswerable secrets"
    );
    let listed = SecretSet::placeholder("bundle", &[("web", "cert-1")]);
    p.secrets.send_replace(Some(listed.clone()));
    let first = p.next().await.expect("listed secrets publish");
    assert_eq!((first.generation, first.secret_set()), (1, &listed));
}

#[tokio::test]
async fn returns_when_any_input_is_dropped() {
    for input in ["registry", "policies", "secrets", "ejections"] {
        let mut p = Publisher::start();
        // Putting another channel's sender in its place drops the one the publisher listens to.
        match input {
            "registry" => p.registry = watch::channel(None).0,
            "policies" => p.policies = watch::channel(None).0,
            "secrets" => p.secrets = watch::channel(None).0,
            _ => p.ejections = watch::channel(Arc::default()).0,
        }
        settle().await;
        assert!(
            p.task.is_finished(),
            "still running with the {input} sender dropped"
        );
        let error = p.task.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("stopped"), "{error:#}");
    }
}

#[tokio::test]
async fn fleet_ejections_republish_only_the_cluster_they_name() {
    use std::collections::{BTreeMap, BTreeSet};
    use xds_core::model::Locality;
    use xds_core::snapshot::{ResourceType, Scope};
    let mut p = Publisher::start();
    // Ejections before the first snapshot publish nothing on their own.
    let ejected = BTreeSet::from([Locality::new("r", "z1", "")]);
    p.ejections
        .send_replace(Arc::new(FleetEjections::new(BTreeMap::from([(
            "web.shop:8080".to_string(),
            ejected.clone(),
        )]))));
    assert!(p.next().await.is_none(), "registry unknown");
    p.registry.send_replace(Some(registry(&["cart", "web"])));
    p.policies
        .send_replace(Some(Arc::new(PolicySet::default())));
    let first = p.next().await.expect("published");
    assert_eq!(
        first.cluster("web.shop:8080").unwrap().input.ejected,
        ejected
    );
    // Lifting the ejection: a new snapshot whose EDS change names web only.
    p.ejections.send_replace(Arc::default());
    let second = p.next().await.expect("an ejection change republishes");
    assert!(second
        .cluster("web.shop:8080")
        .unwrap()
        .input
        .ejected
        .is_empty());
    let changed = BTreeSet::from(["web.shop:8080".to_string()]);
    assert_eq!(
        second.scope(ResourceType::Endpoint, Some(first.generation)),
        Scope::Names(&changed)
    );
    assert_eq!(
        second.scope(ResourceType::Cluster, Some(first.generation)),
        Scope::Nothing
    );
}
