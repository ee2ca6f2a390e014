//! The Kubernetes source: Services, EndpointSlices, Node labels and Pods (their node, IP and service
//! account), watched through kube-runtime reflectors, converted by the pure [`convert`] module and
//! published as whole registries.
//!
//! Nothing is published until every watch has finished its initial list, so Envoy never sees a partial
//! view. After that, watch errors only delay updates (the reflectors retry with backoff and the last
//! registry stays published), and a relist (410 Gone) swaps a store's content in one step.

pub mod clusters;
pub mod convert;
pub mod lease;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use convert::{build_registry, ConvertSettings, NodeLabels, PodAccounts};
use xds_core::model::{Locality, Registry};
use xds_core::model::{LocalityLookup, PodHint};

/// Coalescing of bursts (a rollout touches many slices at once): wait for this much quiet...
const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
/// ...but never delay an update by more than this.
const DEBOUNCE_CAP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Watched {
    Services,
    EndpointSlices,
    Nodes,
    Pods,
}

const WATCHES: usize = 4;

/// What a watch stream reports to the publishing loop.
enum Signal {
    Changed(Watched),
    /// An event that cannot change the registry (a Pod's status, say).
    Unchanged,
    Synced(Watched),
    Error(Watched, String),
}

fn signals<K, S>(what: Watched, events: S) -> impl Stream<Item = Signal> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.map(move |ev| match ev {
        Ok(watcher::Event::InitDone) => Signal::Synced(what),
        Ok(_) => Signal::Changed(what),
        Err(e) => Signal::Error(what, e.to_string()),
    })
}

fn reflect<K>(
    what: Watched,
    writer: Writer<K>,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Signal> + Send
where
    K: kube::runtime::reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    signals(what, reflector::reflector(writer, events.default_backoff()))
}

#[derive(Debug, Clone)]
pub struct KubeSourceSettings {
    pub convert: ConvertSettings,
}

struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<PartialObjectMeta<Node>>,
    pods: Store<Pod>,
}

/// What the source keeps of a Pod: its name, where it runs (node, IP, phase: locating clients) and
/// its service account (endpoint identities). Pods are the most numerous and the largest objects
/// watched; the rest of each one would only take memory.
fn keep_what_is_used(pod: &mut Pod) {
    let spec = pod.spec.take().unwrap_or_default();
    let status = pod.status.take().unwrap_or_default();
    *pod = Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.take(),
            namespace: pod.metadata.namespace.take(),
            uid: pod.metadata.uid.take(),
            resource_version: pod.metadata.resource_version.take(),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: spec.node_name,
            service_account_name: spec.service_account_name,
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: status.pod_ip,
            phase: status.phase,
            ..PodStatus::default()
        }),
    };
}

/// Pod events as signals: a Pod's service account is all the registry reads of it, so only a Pod
/// appearing, going away or coming back as another account is a change; the rest (status updates,
/// the bulk of Pod events) serve client lookups, which read the store directly.
fn pod_signals(
    events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send,
) -> impl Stream<Item = Signal> + Send {
    let mut accounts: HashMap<(String, String), String> = HashMap::new();
    events.map(move |ev| match ev {
        Ok(watcher::Event::InitDone) => Signal::Synced(Watched::Pods),
        // A relist: the registry is rebuilt once it is done (`Synced`).
        Ok(watcher::Event::Init) => {
            accounts.clear();
            Signal::Unchanged
        }
        Ok(watcher::Event::InitApply(pod)) => {
            if let Some((key, account)) = PodAccounts::entry(&pod) {
                accounts.insert(key, account);
            }
            Signal::Unchanged
        }
        Ok(watcher::Event::Apply(pod)) => match PodAccounts::entry(&pod) {
            Some((key, account)) if accounts.get(&key) != Some(&account) => {
                accounts.insert(key, account);
                Signal::Changed(Watched::Pods)
            }
            _ => Signal::Unchanged,
        },
        Ok(watcher::Event::Delete(pod)) => match PodAccounts::entry(&pod) {
            Some((key, _)) if accounts.remove(&key).is_some() => Signal::Changed(Watched::Pods),
            _ => Signal::Unchanged,
        },
        Err(e) => Signal::Error(Watched::Pods, e.to_string()),
    })
}

/// Client locality through Pod → Node labels, for Envoys whose bootstrap has no `node.locality`.
pub struct PodLocator {
    pods: Store<Pod>,
    nodes: Store<PartialObjectMeta<Node>>,
    subzone_label: String,
}

impl PodLocator {
    /// The node a client's pod runs on, if the pod watch knows the pod.
    fn node_of(&self, hint: &PodHint) -> Option<String> {
        let pod = match (&hint.name, &hint.namespace, &hint.ip) {
            (Some(name), Some(ns), _) => self
                .pods
                .get(&reflector::ObjectRef::new(name).within(ns))
                .map(|p| (*p).clone()),
            (_, _, Some(ip)) => self
                .pods
                .find(|p| {
                    p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .map(|p| (*p).clone()),
            _ => None,
        }?;
        pod.spec.as_ref()?.node_name.clone()
    }
}

impl LocalityLookup for PodLocator {
    fn locality_of(&self, hint: &PodHint) -> Option<Locality> {
        let node_name = self.node_of(hint)?;
        let node = self.nodes.get(&reflector::ObjectRef::new(&node_name))?;
        let labels = NodeLabels(node.metadata.labels.clone().unwrap_or_default());
        Some(convert::node_locality(&labels, None, &self.subzone_label))
    }

    /// The pod's node name as `kubernetes.io/hostname`, as its endpoints carry it, for
    /// `trafficDistribution: PreferSameNode`.
    fn labels_of(&self, hint: &PodHint) -> std::collections::BTreeMap<String, String> {
        self.node_of(hint)
            .map(|node| [(xds_core::model::labels::HOSTNAME.to_string(), node)].into())
            .unwrap_or_default()
    }
}

impl Stores {
    fn registry(&self, settings: &ConvertSettings) -> Registry {
        let nodes: HashMap<String, NodeLabels> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    NodeLabels(n.metadata.labels.clone().unwrap_or_default()),
                ))
            })
            .collect();
        let services = self.services.state();
        let slices = self.slices.state();
        let pods = self.pods.state();
        let (registry, skipped) = build_registry(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            &nodes,
            &PodAccounts::of(pods.iter().map(|p| p.as_ref())),
            settings,
        );
        for s in skipped {
            crate::metrics::metrics()
                .source_errors
                .get_or_create(&crate::metrics::source_label("kubernetes"))
                .inc();
            warn!(object = %s.object, reason = %s.reason, "skipped part of a Kubernetes object");
        }
        registry
    }
}

/// Starts watching the cluster: publishes a registry into `tx` once everything is listed, then after
/// every (debounced) change, until `tx` has no receivers. Returns the pod-based client locator.
pub fn start(
    client: Client,
    settings: KubeSourceSettings,
    tx: watch::Sender<Option<Arc<Registry>>>,
) -> Arc<PodLocator> {
    let cfg = watcher::Config::default();
    let (services, w_services) = reflector::store();
    let (slices, w_slices) = reflector::store();
    let (nodes, w_nodes) = reflector::store();
    let (pods, w_pods) = reflector::store();
    let locator = Arc::new(PodLocator {
        pods: pods.clone(),
        nodes: nodes.clone(),
        subzone_label: settings.convert.subzone_label.clone(),
    });
    let stores = Stores {
        services,
        slices,
        nodes,
        pods,
    };
    let events = stream::select_all([
        reflect(
            Watched::Services,
            w_services,
            watcher(Api::<Service>::all(client.clone()), cfg.clone()),
        )
        .boxed(),
        reflect(
            Watched::EndpointSlices,
            w_slices,
            watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone()),
        )
        .boxed(),
        reflect(
            Watched::Nodes,
            w_nodes,
            watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                cfg.clone(),
            ),
        )
        .boxed(),
        pod_signals(reflector::reflector(
            w_pods,
            watcher(Api::<Pod>::all(client.clone()), cfg.clone())
                .modify(keep_what_is_used)
                .default_backoff(),
        ))
        .boxed(),
    ]);
    tokio::spawn(publish(events, stores, settings, tx));
    locator
}

async fn publish(
    mut events: stream::SelectAll<futures::stream::BoxStream<'static, Signal>>,
    stores: Stores,
    settings: KubeSourceSettings,
    tx: watch::Sender<Option<Arc<Registry>>>,
) {
    let mut synced: HashMap<Watched, bool> = HashMap::new();
    // Per watch, since start; in every error line until metrics exist.
    let mut errors: HashMap<Watched, u64> = HashMap::new();
    let all_synced = |s: &HashMap<Watched, bool>| s.values().filter(|v| **v).count() == WATCHES;
    let mut dirty_since: Option<tokio::time::Instant> = None;
    loop {
        let next = match dirty_since {
            Some(since) if all_synced(&synced) => {
                let deadline =
                    (since + DEBOUNCE_CAP).min(tokio::time::Instant::now() + DEBOUNCE_QUIET);
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        dirty_since = None;
                        let registry = stores.registry(&settings.convert);
                        let changed = tx.borrow().as_deref() != Some(&registry);
                        if changed {
                            debug!(
                                services = registry.services.len(),
                                "Kubernetes state changed"
                            );
                            if tx.send(Some(Arc::new(registry))).is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                }
            }
            _ => events.next().await,
        };
        let Some(signal) = next else {
            return;
        };
        let m = crate::metrics::metrics();
        let source = crate::metrics::source_label("kubernetes");
        match &signal {
            Signal::Error(..) => m.source_errors.get_or_create(&source).inc(),
            _ => m.source_events.get_or_create(&source).inc(),
        };
        match signal {
            Signal::Synced(what) => {
                let first = !synced.get(&what).copied().unwrap_or(false);
                synced.insert(what, true);
                if first {
                    info!(watch = ?what, "initial list complete");
                } else {
                    info!(watch = ?what, "relisted");
                }
                dirty_since.get_or_insert_with(tokio::time::Instant::now);
                if first && all_synced(&synced) {
                    // Publish the first complete view at once: Envoys are waiting for it.
                    let registry = stores.registry(&settings.convert);
                    info!(
                        services = registry.services.len(),
                        "Kubernetes source synced"
                    );
                    dirty_since = None;
                    if tx.send(Some(Arc::new(registry))).is_err() {
                        return;
                    }
                }
            }
            Signal::Unchanged => {}
            Signal::Changed(what) => {
                debug!(watch = ?what, "Kubernetes object changed");
                dirty_since.get_or_insert_with(tokio::time::Instant::now);
            }
            Signal::Error(what, error) => {
                *errors.entry(what).or_default() += 1;
                warn!(watch = ?what, errors_total = errors[&what], %error,
                      "Kubernetes watch error; retrying with backoff, serving the last known state");
            }
        }
    }
}
