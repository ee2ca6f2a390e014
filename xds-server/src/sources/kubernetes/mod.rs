//! The Kubernetes source: Services, EndpointSlices and Node labels, watched through kube-runtime
//! reflectors, and Pods (their node, IP, phase and service account), watched into the [`pods`] index;
//! converted by the pure [`convert`] module and published as whole registries.
//!
//! Nothing is published until every watch has finished its initial list, so Envoy never sees a partial
//! view. After that, watch errors only delay updates (the reflectors retry with backoff and the last
//! registry stays published), and a relist (410 Gone) swaps a store's content in one step. A watch
//! that went silent is restarted by the client's [`watch_idle`] layer.

pub mod clusters;
pub mod convert;
pub mod lease;
pub mod pods;
pub mod watch_idle;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use convert::{build_registry, ConvertSettings, NodeLabels};
use pods::{PodIndex, WatchedPod};
use xds_core::model::{Locality, Registry};
use xds_core::model::{LocalityLookup, PodHint};

/// A change is built once no other event came for this long: long enough to take in the events of
/// one write (a controller updating several slices of a Service at once), and to see that a rollout's
/// stream of updates (events < 1 ms apart) is still going; short next to the push.
const QUIET: Duration = Duration::from_millis(5);
/// Least time from one build to the next: changes arriving sooner wait for the rest of the window
/// and go into one build, so a steady churn costs at most one registry and snapshot build (and one
/// push to every client) per window, whatever its rate.
const COALESCE_WINDOW: Duration = Duration::from_millis(100);
/// A stream of events that is never quiet (a rollout) is built at the latest this long after its
/// first event: each build re-sends every cluster it touched to every client, so a rollout is
/// better published in few snapshots than in one per window.
const COALESCE_CAP: Duration = Duration::from_millis(500);

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
        // A (re)list in progress: the reflector's store swaps to the new list only at `InitDone`,
        // so nothing built before then could differ.
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Signal::Unchanged,
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

#[derive(Debug, Clone, Default)]
pub struct KubeSourceSettings {
    pub convert: ConvertSettings,
}

/// The Pods, shared by the watch (which writes) and the locator (which reads); never held across an
/// await.
type SharedPods = Arc<RwLock<PodIndex>>;

fn read(pods: &SharedPods) -> std::sync::RwLockReadGuard<'_, PodIndex> {
    // A panic elsewhere while writing leaves a consistent index (each event is one insert/remove).
    pods.read().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<PartialObjectMeta<Node>>,
    pods: SharedPods,
}

/// Pod events, folded into the index as they come (see [`pods`]), as signals: only a Pod appearing,
/// going away or changing service account changes the registry; a change of where a Pod runs is
/// told to waiting clients through `placement` (see [`PodLocator::changes`]), and the rest (status
/// updates, the bulk of Pod events) is nothing.
fn pod_signals(
    pods: SharedPods,
    placement: Arc<watch::Sender<u64>>,
    events: impl Stream<Item = Result<watcher::Event<WatchedPod>, watcher::Error>> + Send,
) -> impl Stream<Item = Signal> + Send {
    events.map(move |ev| {
        let event = match ev {
            Ok(event) => event,
            Err(e) => return Signal::Error(Watched::Pods, e.to_string()),
        };
        let change = pods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .on_event(&event);
        if change.placement {
            placement.send_modify(|generation| *generation += 1);
        }
        match event {
            // A relist: the registry is rebuilt once it is done.
            watcher::Event::InitDone => Signal::Synced(Watched::Pods),
            _ if change.accounts => Signal::Changed(Watched::Pods),
            _ => Signal::Unchanged,
        }
    })
}

/// Client locality through Pod → Node labels, for Envoys whose bootstrap has no `node.locality`.
pub struct PodLocator {
    pods: SharedPods,
    nodes: Store<PartialObjectMeta<Node>>,
    subzone_label: String,
    /// Bumped whenever a lookup may answer differently: a Pod appeared, moved or went away, or the
    /// Nodes changed. Streams whose client waits for its pod wait on this, not on a timer.
    placement: Arc<watch::Sender<u64>>,
}

impl PodLocator {
    /// The node a client's pod runs on, if the pod watch knows the pod.
    fn node_of(&self, hint: &PodHint) -> Option<String> {
        let pods = read(&self.pods);
        let pod = match (&hint.name, &hint.namespace, &hint.ip) {
            (Some(name), Some(ns), _) => pods.by_name(ns, name),
            (_, _, Some(ip)) => pods.by_ip(ip),
            _ => None,
        }?;
        pod.node.clone()
    }

    /// Changes whenever a lookup may answer differently (see [`PodLocator::placement`]).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.placement.subscribe()
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
        let accounts = read(&self.pods).accounts();
        let (registry, skipped) = build_registry(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            &nodes,
            &accounts,
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
/// every change (coalesced, see [`COALESCE_WINDOW`]), until `tx` has no receivers. Returns the pod-based client locator.
pub fn start(
    client: Client,
    settings: KubeSourceSettings,
    tx: watch::Sender<Option<Arc<Registry>>>,
) -> Arc<PodLocator> {
    let cfg = watcher::Config::default();
    let (services, w_services) = reflector::store();
    let (slices, w_slices) = reflector::store();
    let (nodes, w_nodes) = reflector::store();
    let pods = SharedPods::default();
    let placement = Arc::new(watch::channel(0).0);
    let locator = Arc::new(PodLocator {
        pods: pods.clone(),
        nodes: nodes.clone(),
        subzone_label: settings.convert.subzone_label.clone(),
        placement: placement.clone(),
    });
    let stores = Stores {
        services,
        slices,
        nodes,
        pods: pods.clone(),
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
        pod_signals(
            pods,
            placement.clone(),
            watcher(Api::<WatchedPod>::all(client.clone()), cfg.clone()).default_backoff(),
        )
        .boxed(),
    ]);
    crate::supervise::spawn(
        "kubernetes source",
        publish(events, stores, settings, tx, placement),
    );
    locator
}

/// Converting every Service and EndpointSlice is CPU work ([`crate::cpu`]).
async fn build_off_runtime(stores: &Stores, settings: &ConvertSettings) -> Registry {
    let (stores, settings) = (stores.clone(), settings.clone());
    crate::cpu::off_runtime(move || stores.registry(&settings)).await
}

async fn publish(
    mut events: stream::SelectAll<futures::stream::BoxStream<'static, Signal>>,
    stores: Stores,
    settings: KubeSourceSettings,
    tx: watch::Sender<Option<Arc<Registry>>>,
    placement: Arc<watch::Sender<u64>>,
) {
    let mut synced: HashMap<Watched, bool> = HashMap::new();
    // Per watch, since start; in every error line until metrics exist.
    let mut errors: HashMap<Watched, u64> = HashMap::new();
    let all_synced = |s: &HashMap<Watched, bool>| s.values().filter(|v| **v).count() == WATCHES;
    let mut dirty_since: Option<tokio::time::Instant> = None;
    // The latest change event, and the end of the latest build after one (see QUIET,
    // COALESCE_WINDOW, COALESCE_CAP).
    let mut last_event = tokio::time::Instant::now();
    let mut last_build: Option<tokio::time::Instant> = None;
    loop {
        let next = match dirty_since {
            Some(since) if all_synced(&synced) => {
                let settled = match last_build {
                    Some(last) => (last_event + QUIET).max(last + COALESCE_WINDOW),
                    None => last_event + QUIET,
                };
                let deadline = settled.min(since + COALESCE_CAP);
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        dirty_since = None;
                        let registry = build_off_runtime(&stores, &settings.convert).await;
                        last_build = Some(tokio::time::Instant::now());
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
        if matches!(
            signal,
            Signal::Changed(Watched::Nodes) | Signal::Synced(Watched::Nodes)
        ) {
            // A client's pod may have been known before its Node.
            placement.send_modify(|generation| *generation += 1);
        }
        match signal {
            Signal::Synced(what) => {
                let first = !synced.get(&what).copied().unwrap_or(false);
                synced.insert(what, true);
                if first {
                    info!(watch = ?what, "initial list complete");
                } else {
                    info!(watch = ?what, "relisted");
                }
                last_event = tokio::time::Instant::now();
                dirty_since.get_or_insert(last_event);
                if first && all_synced(&synced) {
                    // Publish the first complete view at once: Envoys are waiting for it.
                    let registry = build_off_runtime(&stores, &settings.convert).await;
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
                last_event = tokio::time::Instant::now();
                dirty_since.get_or_insert(last_event);
            }
            Signal::Error(what, error) => {
                *errors.entry(what).or_default() += 1;
                warn!(watch = ?what, errors_total = errors[&what], %error,
                      "Kubernetes watch error; retrying with backoff, serving the last known state");
            }
        }
    }
}
