//! The Load Reporting Service (`envoy.service.load_stats.v3.LoadReportingService`) on the xDS port:
//! asks every client for all its clusters (`send_all_clusters`) every `--load-report-interval` and
//! records what it reports in the shared [`LoadBook`]; a client's window is forgotten when its stream
//! ends. [`watch_load`] keeps the book's idea of the served clusters current and, once per interval,
//! turns the book into metrics and failover events.
//!
//! A stream is authenticated like ADS, its node read and held to the same limits, and its class is its
//! locality (from the node or its pod, as for ADS). Each report is held to
//! [`check_load_report`] and [`ReportRate`]; a refusal ends the stream with the status ADS would use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::service::load_stats::v3::load_reporting_service_server::{
    LoadReportingService, LoadReportingServiceServer,
};
use envoy_types::pb::envoy::service::load_stats::v3::{LoadStatsRequest, LoadStatsResponse};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::{status, AdsService, Snapshots};
use crate::metrics::{metrics, ObservedLabels, ReasonLabel, ServingLabels};
use crate::registry::{ClientRegistry, XdsEvent};
use xds_core::model::{ClientKind, Locality};
use xds_core::observed::{
    grpc_priorities, ratio, serving_priorities, LoadBook, ReportedLoad, RowView, ServedClusters,
    ServingTracker,
};
use xds_core::protocol::error::ProtocolError;
use xds_core::protocol::limits::{check_load_report, ReportRate};
use xds_core::protocol::node::ClientIdentity;
use xds_core::snapshot::{ClusterEntry, Snapshot};

/// The one load book of the process: written by the LRS streams, read by the admin API, the metrics
/// and the fleet evaluation.
pub type SharedLoadBook = Arc<Mutex<LoadBook>>;

/// Locks the book. A panic while it was held leaves figures at worst one report off; reading on is
/// better than taking the reporting down with it.
pub fn lock_book(book: &Mutex<LoadBook>) -> MutexGuard<'_, LoadBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often clients report, and the window figures are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSettings {
    /// `load_reporting_interval` sent to every client (`--load-report-interval`).
    pub interval: Duration,
    /// Rates and error ratios are over this much of the recent past (`--load-window`).
    pub window: Duration,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            window: Duration::from_secs(30),
        }
    }
}

impl LoadSettings {
    /// The stretch the serving priority is judged over: the last two reports of every client, so a
    /// failover shows within two intervals instead of a whole window.
    pub fn serving_window(&self) -> Duration {
        (self.interval * 2).min(self.window)
    }

    pub fn new_book(&self) -> SharedLoadBook {
        Arc::new(Mutex::new(LoadBook::new(self.window)))
    }
}

/// The LRS service: authenticates like ADS, answers with `send_all_clusters` and the interval.
#[derive(Clone)]
pub struct LrsService {
    ads: AdsService,
    book: SharedLoadBook,
    interval: Duration,
}

impl LrsService {
    pub fn new(ads: AdsService, book: SharedLoadBook, interval: Duration) -> Self {
        Self {
            ads,
            book,
            interval,
        }
    }

    pub fn into_server(self) -> LoadReportingServiceServer<Self> {
        LoadReportingServiceServer::new(self)
    }
}

/// One LRS stream's state between reports.
struct Reporter {
    id: u64,
    book: SharedLoadBook,
    snapshots: Snapshots,
    identity: ClientIdentity,
    rate: ReportRate,
    /// gRPC clients' priorities per cluster, for the cluster entry they were derived from.
    grpc_plans: HashMap<String, (Arc<ClusterEntry>, BTreeMap<Locality, u32>)>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        lock_book(&self.book).forget(self.id);
        metrics().lrs_streams.dec();
    }
}

impl Reporter {
    /// Checks and records one report; the first one also reads the node.
    fn report(&mut self, report: &LoadStatsRequest, now: Instant) -> Result<(), ProtocolError> {
        check_load_report(self.identity.is_unknown(), report)?;
        self.rate.admit(now)?;
        self.identity.observe(report.node.as_ref())?;
        let Some(client) = self.identity.get() else {
            return Ok(());
        };
        if report.cluster_stats.is_empty() {
            return Ok(());
        }
        if self.identity.is_pending() {
            // Its class is its pod's locality, not known yet (retried on every report): counting the
            // load under no locality would start a class of its own.
            let localities: usize = report
                .cluster_stats
                .iter()
                .map(|c| c.upstream_locality_stats.len())
                .sum();
            metrics()
                .lrs_reports_dropped
                .get_or_create(&ReasonLabel {
                    reason: LOCALITY_PENDING.to_string(),
                })
                .inc_by(localities as u64);
            return Ok(());
        }
        let snapshot: Option<Arc<Snapshot>> = self.snapshots.borrow().clone();
        let class = client.locality.clone();
        let grpc = client.kind == ClientKind::Grpc;
        let mut loads = Vec::new();
        for cluster in &report.cluster_stats {
            // gRPC clients report every locality at priority 0: the priority is the one their answer
            // gave the locality.
            let plan = match (&snapshot, grpc) {
                (Some(snapshot), true) => snapshot.cluster(&cluster.cluster_name).map(|entry| {
                    let cached = self
                        .grpc_plans
                        .get(&cluster.cluster_name)
                        .filter(|(seen, _)| Arc::ptr_eq(seen, entry));
                    match cached {
                        Some((_, plan)) => plan.clone(),
                        None => {
                            let plan = grpc_priorities(entry, client);
                            self.grpc_plans.insert(
                                cluster.cluster_name.clone(),
                                (entry.clone(), plan.clone()),
                            );
                            plan
                        }
                    }
                }),
                _ => None,
            };
            for stats in &cluster.upstream_locality_stats {
                let locality = stats
                    .locality
                    .as_ref()
                    .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
                    .unwrap_or_default();
                let priority = match &plan {
                    Some(plan) => plan.get(&locality).copied().unwrap_or(stats.priority),
                    None => stats.priority,
                };
                loads.push((
                    cluster.cluster_name.as_str(),
                    ReportedLoad {
                        locality,
                        priority,
                        successful: stats.total_successful_requests,
                        errors: stats.total_error_requests,
                        in_flight: stats.total_requests_in_progress,
                    },
                ));
            }
        }
        let mut book = lock_book(&self.book);
        for (cluster, load) in &loads {
            if let Err(reason) = book.record(self.id, &class, cluster, load, now) {
                debug!(client = self.id, %cluster, locality = %load.locality, ?reason, "load report dropped");
                metrics()
                    .lrs_reports_dropped
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str().to_string(),
                    })
                    .inc();
            }
        }
        Ok(())
    }
}

/// The drop reason of reports from a client whose pod's locality is not known yet.
const LOCALITY_PENDING: &str = "locality_pending";

type LoadStatsStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<LoadStatsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LoadReportingService for LrsService {
    type StreamLoadStatsStream = LoadStatsStream;

    async fn stream_load_stats(
        &self,
        request: Request<Streaming<LoadStatsRequest>>,
    ) -> Result<Response<Self::StreamLoadStatsStream>, Status> {
        let peer = self.ads.authenticate(&request).await?;
        let mut identity = ClientIdentity::new(self.ads.lookup.clone());
        identity.set_peer(peer);
        metrics().lrs_streams.inc();
        let reporter = Reporter {
            id: self
                .ads
                .next_stream_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            book: self.book.clone(),
            snapshots: self.ads.snapshots.clone(),
            identity,
            rate: ReportRate::new(self.interval),
            grpc_plans: HashMap::new(),
        };
        let interval = self.interval;
        let requests = request.into_inner();
        // One answer sets the interval for the stream's life. Without load_reporting_interval grpcio
        // crashes and grpc-js throws; grpc-js never reports the first cluster of an explicit list, so
        // every cluster is asked for.
        // `None` once the stream failed: nothing more is read, and the reporter (dropped with the
        // state) forgets the client at once.
        let stream =
            futures::stream::unfold(Some((requests, reporter, false)), move |state| async move {
                let (mut requests, mut reporter, answered) = state?;
                loop {
                    let report = match requests.next().await? {
                        Ok(report) => report,
                        Err(status) => return Some((Err(status), None)),
                    };
                    if let Err(err) = reporter.report(&report, Instant::now()) {
                        warn!(client = reporter.id, error = %err, "load report refused");
                        return Some((Err(status(&err)), None));
                    }
                    if !answered {
                        let response = LoadStatsResponse {
                            send_all_clusters: true,
                            load_reporting_interval: Some(prost_duration(interval)),
                            ..Default::default()
                        };
                        return Some((Ok(response), Some((requests, reporter, true))));
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn prost_duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Keeps `book` on the clusters the current snapshot serves and, every interval, publishes what it
/// holds: the metrics, and a `failover` event on `clients`' event stream whenever the serving priority
/// of a (service port, client class) moves. Runs for the process's life.
pub async fn watch_load(
    book: SharedLoadBook,
    mut snapshots: Snapshots,
    clients: Arc<ClientRegistry>,
    settings: LoadSettings,
) -> anyhow::Result<()> {
    let mut tracker = ServingTracker::default();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut served = Arc::new(ServedClusters::default());
    let mut published = HashSet::new();
    // A snapshot published before this task started counts as a change too.
    snapshots.mark_changed();
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Ok(()); // the publisher is gone: the process is stopping
                }
                let snapshot = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = snapshot {
                    served = Arc::new(ServedClusters::of(&snapshot));
                    lock_book(&book).set_served(served.clone());
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                // Summing every client's rows is CPU work under the book's lock: on a blocking
                // thread, so the threads serving streams keep serving.
                let (window, recent) = crate::cpu::off_runtime({
                    let book = book.clone();
                    move || {
                        let mut book = lock_book(&book);
                        (book.view(now), book.view_within(now, settings.serving_window()))
                    }
                })
                .await;
                for failover in tracker.update(&recent, &window) {
                    info!(cluster = %failover.cluster, class = %failover.class,
                          from = failover.from, to = failover.to,
                          error_ratio = failover.error_ratio, "observed failover");
                    clients.emit(XdsEvent::Failover {
                        at: SystemTime::now(),
                        service: failover.cluster,
                        class: failover.class.to_string(),
                        from_priority: failover.from as i32,
                        to_priority: failover.to as i32,
                        error_ratio: failover.error_ratio,
                    });
                }
                publish_metrics(&served, &window, &recent, &mut published);
            }
        }
    }
}

/// Sets the observed-load metrics from the book's views. `published` holds the counter series of the
/// previous call: the series of rows the book no longer holds (a service or locality gone) are removed
/// rather than left at their last value.
fn publish_metrics(
    served: &ServedClusters,
    window: &[RowView],
    recent: &[RowView],
    published: &mut HashSet<ObservedLabels>,
) {
    let m = metrics();
    // Summed over client classes: a class is where clients say they are, not a label.
    let mut rows: BTreeMap<ObservedLabels, [u64; 4]> = BTreeMap::new();
    for row in window {
        let Some(cluster) = served.get(&row.key.cluster) else {
            continue;
        };
        let labels = ObservedLabels {
            service: cluster.service.clone(),
            port: cluster.port.to_string(),
            locality: row.key.locality.to_string(),
            priority: row.key.priority.to_string(),
        };
        let sum = rows.entry(labels).or_default();
        for (field, value) in sum.iter_mut().zip([
            row.requests_total,
            row.errors_total,
            row.requests,
            row.errors,
        ]) {
            *field = field.saturating_add(value);
        }
    }
    m.observed_error_ratio.clear();
    let mut live = HashSet::new();
    for (labels, [requests, errors, window_requests, window_errors]) in rows {
        for (family, total) in [
            (&m.observed_requests, requests),
            (&m.observed_errors, errors),
        ] {
            let counter = family.get_or_create(&labels);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        m.observed_error_ratio
            .get_or_create(&labels)
            .set(ratio(window_errors, window_requests));
        live.insert(labels);
    }
    for gone in published.difference(&live) {
        m.observed_requests.remove(gone);
        m.observed_errors.remove(gone);
    }
    *published = live;

    // Several classes the service has no endpoints in share `other`: it shows the lowest priority
    // any of them is served by.
    let mut serving: BTreeMap<ServingLabels, Option<u32>> = BTreeMap::new();
    for ((cluster, class), priority) in serving_priorities(recent) {
        let Some(cluster) = served.get(&cluster) else {
            continue;
        };
        let class = if cluster.localities.contains(&class) {
            class.to_string()
        } else {
            "other".to_string()
        };
        let labels = ServingLabels {
            service: cluster.service.clone(),
            port: cluster.port.to_string(),
            class,
        };
        let lowest = serving.entry(labels).or_default();
        *lowest = match (*lowest, priority) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    m.observed_serving_priority.clear();
    for (labels, priority) in serving {
        m.observed_serving_priority
            .get_or_create(&labels)
            .set(priority.map_or(-1, i64::from));
    }
}

#[cfg(test)]
mod tests;
