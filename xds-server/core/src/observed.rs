//! Observed load: what clients report through LRS (`StreamLoadStats`), aggregated per cluster ×
//! reporting client class × locality × priority over a sliding window. Sans-IO: time comes in as an
//! argument, so window expiry is testable.
//!
//! Memory is bounded whatever clients report. Only clusters the current snapshot serves, and only the
//! localities that service port has endpoints in, are recorded ([`ServedClusters`]); anything else is
//! dropped and counted ([`Dropped`]). Every reporting client keeps at most [`MAX_ROWS_PER_CLIENT`]
//! rows of at most [`MAX_SAMPLES_PER_ROW`] samples, and its rows go when it disconnects
//! ([`LoadBook::forget`]). The totals kept after clients leave hold at most [`MAX_TOTAL_ROWS`] rows
//! and lose those of clusters and localities the snapshot no longer serves ([`LoadBook::set_served`]).
//!
//! `served` maps cluster names to service ports and derives gRPC clients' priorities (they report
//! none); `serving` finds the priority serving each (cluster, class) and detects failovers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::Locality;

pub mod fleet;
mod served;
mod serving;
#[cfg(test)]
mod tests;

pub use served::{grpc_priorities, ServedCluster, ServedClusters};
pub use serving::{serving_priorities, Failover, ServingTracker};

/// Rows (cluster × locality × priority) one client may hold; past it, new rows are dropped and counted.
pub const MAX_ROWS_PER_CLIENT: usize = 1024;
/// Samples kept per row: the sliding window never holds more, whatever the report rate.
pub const MAX_SAMPLES_PER_ROW: usize = 64;
/// Rows of cumulative totals kept (they outlive the clients that reported them); past it, the totals
/// of new rows are not kept (their window still is).
pub const MAX_TOTAL_ROWS: usize = 65_536;
/// The highest priority recorded: Envoy numbers priorities below 128, and a plan has one level per
/// locality rank, so anything above is made up.
pub const MAX_PRIORITY: u32 = 127;

/// One row's key: which cluster, which class of clients reported it (their own locality), and the
/// locality and priority the load went to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub cluster: String,
    pub class: Locality,
    pub locality: Locality,
    pub priority: u32,
}

/// One locality's figures from one report: the counts are deltas since the client's previous report,
/// `in_flight` is the number at the time of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedLoad {
    pub locality: Locality,
    pub priority: u32,
    pub successful: u64,
    pub errors: u64,
    pub in_flight: u64,
}

/// Why a reported locality was not recorded (each counted, for `xds_lrs_reports_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dropped {
    /// A cluster the current snapshot does not serve (or no snapshot yet).
    UnknownCluster,
    /// A locality where the cluster's service port has no endpoint.
    UnknownLocality,
    /// A priority above [`MAX_PRIORITY`].
    Priority,
    /// The client already holds [`MAX_ROWS_PER_CLIENT`] rows.
    ClientRows,
}

impl Dropped {
    pub const ALL: [Dropped; 4] = [
        Dropped::UnknownCluster,
        Dropped::UnknownLocality,
        Dropped::Priority,
        Dropped::ClientRows,
    ];

    /// As a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::UnknownCluster => "unknown_cluster",
            Dropped::UnknownLocality => "unknown_locality",
            Dropped::Priority => "priority",
            Dropped::ClientRows => "client_rows",
        }
    }
}

/// A client's row within its own rows: the cluster and locality are shared with the
/// [`ServedClusters`] they were checked against, so a row allocates nothing for its key.
type ClientRowKey = (Arc<str>, Arc<Locality>, u32);

/// One client's rows; its class is kept once, not per row.
#[derive(Debug)]
struct ClientRows {
    class: Locality,
    rows: BTreeMap<ClientRowKey, Row>,
}

impl ClientRows {
    fn key(&self, (cluster, locality, priority): &ClientRowKey) -> RowKey {
        RowKey {
            cluster: cluster.to_string(),
            class: self.class.clone(),
            locality: Locality::clone(locality),
            priority: *priority,
        }
    }
}

#[derive(Debug, Default)]
struct Row {
    /// (when, requests, errors) per report.
    samples: VecDeque<(Instant, u64, u64)>,
    in_flight: u64,
}

impl Row {
    /// Requests and errors reported within `window` of `now`; `None` if nothing was.
    fn within(&self, now: Instant, window: Duration) -> Option<(u64, u64)> {
        let mut recent = self
            .samples
            .iter()
            .filter(|(at, _, _)| now.saturating_duration_since(*at) <= window)
            .peekable();
        recent.peek()?;
        Some(recent.fold((0u64, 0u64), |(r, e), &(_, dr, de)| {
            (r.saturating_add(dr), e.saturating_add(de))
        }))
    }
}

/// One row over the window, summed across the clients that reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowView {
    pub key: RowKey,
    /// Requests (successful and failed) and errors within the window.
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub in_flight: u64,
    /// `errors / requests` within the window; 0 without requests.
    pub error_ratio: f64,
    /// Since the server first saw the row (clients that disconnected included).
    pub requests_total: u64,
    pub errors_total: u64,
    /// Clients that reported the row within the window.
    pub reporters: u32,
}

/// One cluster × locality over the window, summed over every client (and priority) that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityWindow {
    pub cluster: String,
    pub locality: Locality,
    pub reporters: u32,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct WindowSum {
    requests: u64,
    errors: u64,
    in_flight: u64,
    reporters: u32,
}

/// The aggregation of every connected client's reports.
#[derive(Debug)]
pub struct LoadBook {
    window: Duration,
    served: Arc<ServedClusters>,
    clients: BTreeMap<u64, ClientRows>,
    /// Cumulative (requests, errors) per row, kept after clients leave.
    totals: BTreeMap<RowKey, (u64, u64)>,
    dropped: BTreeMap<Dropped, u64>,
}

impl LoadBook {
    /// A book whose figures are over the last `window`. It records nothing until [`set_served`] says
    /// which clusters exist.
    ///
    /// [`set_served`]: LoadBook::set_served
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            served: Arc::default(),
            clients: BTreeMap::new(),
            totals: BTreeMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The clusters the current snapshot serves.
    pub fn served(&self) -> &Arc<ServedClusters> {
        &self.served
    }

    /// The clusters (and their localities) the current snapshot serves. Rows of clusters or
    /// localities no longer served go, totals included.
    pub fn set_served(&mut self, served: Arc<ServedClusters>) {
        let keep = |key: &RowKey| served.knows(&key.cluster, &key.locality);
        self.totals.retain(|key, _| keep(key));
        for client in self.clients.values_mut() {
            client
                .rows
                .retain(|(cluster, locality, _), _| served.knows(cluster, locality));
        }
        self.served = served;
    }

    /// Records one locality's load for `cluster` from the report of `client` (of class `class`) at
    /// `now`, or says why it was dropped.
    pub fn record(
        &mut self,
        client: u64,
        class: &Locality,
        cluster: &str,
        load: &ReportedLoad,
        now: Instant,
    ) -> Result<(), Dropped> {
        let outcome = self.try_record(client, class, cluster, load, now);
        if let Err(reason) = outcome {
            *self.dropped.entry(reason).or_default() += 1;
        }
        outcome
    }

    fn try_record(
        &mut self,
        client: u64,
        class: &Locality,
        cluster: &str,
        load: &ReportedLoad,
        now: Instant,
    ) -> Result<(), Dropped> {
        let Some((cluster_name, served)) = self.served.entry(cluster) else {
            return Err(Dropped::UnknownCluster);
        };
        let Some(locality) = served.localities.get(&load.locality) else {
            return Err(Dropped::UnknownLocality);
        };
        if load.priority > MAX_PRIORITY {
            return Err(Dropped::Priority);
        }
        let key = RowKey {
            cluster: cluster.to_string(),
            class: class.clone(),
            locality: load.locality.clone(),
            priority: load.priority,
        };
        let client_key = (cluster_name.clone(), locality.clone(), load.priority);
        let rows = self.clients.entry(client).or_insert_with(|| ClientRows {
            class: class.clone(),
            rows: BTreeMap::new(),
        });
        if rows.class != *class {
            // The client's class changed (its pod moved): its window starts again under the new one.
            rows.class = class.clone();
            rows.rows.clear();
        }
        let rows = &mut rows.rows;
        if !rows.contains_key(&client_key) && rows.len() >= MAX_ROWS_PER_CLIENT {
            return Err(Dropped::ClientRows);
        }
        let requests = load.successful.saturating_add(load.errors);
        if self.totals.contains_key(&key) || self.totals.len() < MAX_TOTAL_ROWS {
            let total = self.totals.entry(key.clone()).or_default();
            total.0 = total.0.saturating_add(requests);
            total.1 = total.1.saturating_add(load.errors);
        }
        let row = rows.entry(client_key).or_default();
        row.samples.push_back((now, requests, load.errors));
        while row.samples.len() > MAX_SAMPLES_PER_ROW {
            row.samples.pop_front();
        }
        row.in_flight = load.in_flight;
        Ok(())
    }

    /// Forgets a disconnected client's window (its counts stay in the totals).
    pub fn forget(&mut self, client: u64) {
        self.clients.remove(&client);
    }

    /// Clients with a report within the window ending at `now`.
    pub fn reporting_clients(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.clients
            .values()
            .filter(|client| client.rows.values().any(|row| !row.samples.is_empty()))
            .count()
    }

    /// Locality reports dropped since start, per reason.
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or_default()
    }

    /// Rows of totals held (at most [`MAX_TOTAL_ROWS`]).
    pub fn total_rows(&self) -> usize {
        self.totals.len()
    }

    /// Drops the samples older than the window.
    fn expire(&mut self, now: Instant) {
        let keep = self.window;
        for row in self.clients.values_mut().flat_map(|c| c.rows.values_mut()) {
            while let Some(&(at, _, _)) = row.samples.front() {
                if now.saturating_duration_since(at) <= keep {
                    break;
                }
                row.samples.pop_front();
            }
        }
    }

    /// Each row's sum within `window` of `now`, over the clients that reported it.
    fn sums(&self, now: Instant, window: Duration) -> BTreeMap<RowKey, WindowSum> {
        let mut sums: BTreeMap<RowKey, WindowSum> = BTreeMap::new();
        for client in self.clients.values() {
            for (key, row) in &client.rows {
                let Some((requests, errors)) = row.within(now, window) else {
                    continue;
                };
                let sum = sums.entry(client.key(key)).or_default();
                sum.requests = sum.requests.saturating_add(requests);
                sum.errors = sum.errors.saturating_add(errors);
                sum.in_flight = sum.in_flight.saturating_add(row.in_flight);
                sum.reporters += 1;
            }
        }
        sums
    }

    /// Every row's figures over the window ending at `now`: each row of the totals, and each row
    /// reported within the window whose totals were not kept (past [`MAX_TOTAL_ROWS`]).
    pub fn view(&mut self, now: Instant) -> Vec<RowView> {
        self.view_within(now, self.window)
    }

    /// As [`view`](LoadBook::view), over the last `window` (at most the book's) instead: the serving
    /// priority is judged over a shorter, more recent stretch than the rates.
    pub fn view_within(&mut self, now: Instant, window: Duration) -> Vec<RowView> {
        let window = window.min(self.window);
        self.expire(now);
        let sums = self.sums(now, window);
        let seconds = window.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut keys: Vec<&RowKey> = self.totals.keys().collect();
        keys.extend(sums.keys().filter(|k| !self.totals.contains_key(*k)));
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let sum = sums.get(key).copied().unwrap_or_default();
                let (requests_total, errors_total) =
                    self.totals.get(key).copied().unwrap_or_default();
                RowView {
                    key: key.clone(),
                    requests: sum.requests,
                    errors: sum.errors,
                    requests_per_second: sum.requests as f64 / seconds,
                    errors_per_second: sum.errors as f64 / seconds,
                    in_flight: sum.in_flight,
                    error_ratio: ratio(sum.errors, sum.requests),
                    requests_total,
                    errors_total,
                    reporters: sum.reporters,
                }
            })
            .collect()
    }

    /// Each cluster × locality reported within `window` of `now` (at most the book's window), summed
    /// over clients, classes and priorities; `reporters` counts distinct clients.
    pub fn locality_windows(&mut self, now: Instant, window: Duration) -> Vec<LocalityWindow> {
        let window = window.min(self.window);
        self.expire(now);
        let mut out: BTreeMap<(String, Locality), LocalityWindow> = BTreeMap::new();
        for client in self.clients.values() {
            let mut seen_here: Vec<(&str, &Locality)> = Vec::new();
            for ((cluster, locality, _), row) in &client.rows {
                let Some((requests, errors)) = row.within(now, window) else {
                    continue;
                };
                let entry = out
                    .entry((cluster.to_string(), Locality::clone(locality)))
                    .or_insert_with(|| LocalityWindow {
                        cluster: cluster.to_string(),
                        locality: Locality::clone(locality),
                        reporters: 0,
                        requests: 0,
                        errors: 0,
                    });
                entry.requests = entry.requests.saturating_add(requests);
                entry.errors = entry.errors.saturating_add(errors);
                let id = (&**cluster, &**locality);
                if !seen_here.contains(&id) {
                    entry.reporters += 1;
                    seen_here.push(id);
                }
            }
        }
        out.into_values().collect()
    }
}

/// `part / whole`, 0 when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
