//! Observed load: what clients report through LRS (`StreamLoadStats`), aggregated per cluster ×
//! locality × priority. Sans-IO: time comes in as an argument, so window expiry is testable.
//!
//! Memory is bounded: only clusters the caller says it serves are recorded (the caller filters),
//! every reporting client keeps at most [`MAX_ROWS_PER_CLIENT`] rows and a window of at most
//! [`MAX_SAMPLES_PER_ROW`] samples per row, and a client's rows go when it disconnects ([`LoadBook::forget`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub mod fleet;
#[cfg(test)]
mod tests;

/// Rows (cluster × locality × priority) one client may hold; past it, new rows are dropped and counted.
pub const MAX_ROWS_PER_CLIENT: usize = 1024;
/// Samples kept per row: the sliding window never holds more, whatever the report rate.
pub const MAX_SAMPLES_PER_ROW: usize = 64;

/// One row's key: which cluster, locality (region/zone/subzone) and priority the load went to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub cluster: String,
    pub locality: String,
    pub priority: u32,
}

/// One locality's figures from one report (the counts are deltas since the client's previous report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalityLoad {
    pub successful: u64,
    pub errors: u64,
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Row {
    samples: VecDeque<(Instant, u64, u64)>,
    in_flight: u64,
    requests_total: u64,
    errors_total: u64,
}

/// Aggregated figures for one row over the window, summed across clients.
#[derive(Debug, Clone, PartialEq)]
pub struct RowView {
    pub key: RowKey,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub in_flight: u64,
    pub error_ratio: f64,
    /// Since the server first saw the row (clients that disconnected included).
    pub requests_total: u64,
    pub errors_total: u64,
}

/// The aggregation of every connected client's reports.
#[derive(Debug)]
pub struct LoadBook {
    window: Duration,
    clients: BTreeMap<u64, BTreeMap<RowKey, Row>>,
    /// Cumulative totals per row, kept after clients leave (bounded by the known clusters' rows).
    totals: BTreeMap<RowKey, (u64, u64)>,
    dropped_rows: u64,
}

impl LoadBook {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            clients: BTreeMap::new(),
            totals: BTreeMap::new(),
            dropped_rows: 0,
        }
    }

    /// Records one locality's load from `client`'s report at `now`.
    pub fn record(&mut self, client: u64, key: RowKey, load: &LocalityLoad, now: Instant) {
        let rows = self.clients.entry(client).or_default();
        if !rows.contains_key(&key) && rows.len() >= MAX_ROWS_PER_CLIENT {
            self.dropped_rows += 1;
            return;
        }
        let requests = load.successful.saturating_add(load.errors);
        let total = self.totals.entry(key.clone()).or_default();
        total.0 = total.0.saturating_add(requests);
        total.1 = total.1.saturating_add(load.errors);
        let row = rows.entry(key).or_default();
        row.samples.push_back((now, requests, load.errors));
        while row.samples.len() > MAX_SAMPLES_PER_ROW {
            row.samples.pop_front();
        }
        row.in_flight = load.in_flight;
        row.requests_total = row.requests_total.saturating_add(requests);
        row.errors_total = row.errors_total.saturating_add(load.errors);
    }

    /// Forgets a disconnected client's window (its counts stay in the totals).
    pub fn forget(&mut self, client: u64) {
        self.clients.remove(&client);
    }

    /// Rows dropped because a client was over [`MAX_ROWS_PER_CLIENT`].
    pub fn dropped_rows(&self) -> u64 {
        self.dropped_rows
    }

    /// Every row's figures over the window ending at `now`.
    pub fn view(&mut self, now: Instant) -> Vec<RowView> {
        let window = self.window;
        let mut sums: BTreeMap<RowKey, (u64, u64, u64)> = BTreeMap::new();
        for rows in self.clients.values_mut() {
            for (key, row) in rows.iter_mut() {
                while let Some(&(at, _, _)) = row.samples.front() {
                    if now.saturating_duration_since(at) > window {
                        row.samples.pop_front();
                    } else {
                        break;
                    }
                }
                let sum = sums.entry(key.clone()).or_default();
                for &(_, requests, errors) in &row.samples {
                    sum.0 += requests;
                    sum.1 += errors;
                }
                sum.2 += row.in_flight;
            }
        }
        let seconds = window.as_secs_f64().max(f64::MIN_POSITIVE);
        self.totals
            .iter()
            .map(|(key, &(requests_total, errors_total))| {
                let (requests, errors, in_flight) = sums.get(key).copied().unwrap_or_default();
                RowView {
                    key: key.clone(),
                    requests_per_second: requests as f64 / seconds,
                    errors_per_second: errors as f64 / seconds,
                    in_flight,
                    error_ratio: if requests == 0 {
                        0.0
                    } else {
                        errors as f64 / requests as f64
                    },
                    requests_total,
                    errors_total,
                }
            })
            .collect()
    }
}
