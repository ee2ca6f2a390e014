//! GetLoad and WatchLoad: the load book (what clients report over LRS) per service port and client
//! class, in proto form.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use futures::Stream;
use tonic::Status;

use super::convert::{locality_pb, unix_ms};
use super::pb;
use crate::grpc::lrs::{lock_book, LoadSettings, SharedLoadBook};
use xds_core::model::Locality;
use xds_core::observed::{serving_priorities, ServedClusters};

/// The book's figures at `now` for the service ports `filter` names (`NAME.NAMESPACE`, or with
/// `:PORT`; empty: all). NOT_FOUND for a filter that names no served service port.
pub fn load_pb(
    book: &SharedLoadBook,
    settings: &LoadSettings,
    filter: &str,
    now: Instant,
) -> Result<pb::GetLoadResponse, Status> {
    let (served, window, recent, reporting) = {
        let mut book = lock_book(book);
        let window = book.view(now);
        let recent = book.view_within(now, settings.serving_window());
        let reporting = book.reporting_clients(now);
        (book.served().clone(), window, recent, reporting)
    };
    let wanted = |cluster: &str| matches(&served, cluster, filter);
    if !filter.is_empty() && !served.iter().any(|(name, _)| wanted(name)) {
        return Err(Status::not_found(format!(
            "no service port {filter:?} is served (expected NAME.NAMESPACE or NAME.NAMESPACE:PORT)"
        )));
    }
    let serving = serving_priorities(&recent);
    let mut services: BTreeMap<(String, Locality), pb::ServiceLoad> = BTreeMap::new();
    for row in window.iter().filter(|row| wanted(&row.key.cluster)) {
        let Some(cluster) = served.get(&row.key.cluster) else {
            continue;
        };
        let pair = (row.key.cluster.clone(), row.key.class.clone());
        let service = services
            .entry(pair.clone())
            .or_insert_with(|| pb::ServiceLoad {
                service: cluster.service.clone(),
                port: u32::from(cluster.port),
                cluster: row.key.cluster.clone(),
                client_class: row.key.class.to_string(),
                serving_priority: serving
                    .get(&pair)
                    .copied()
                    .flatten()
                    .map_or(-1, |p| p as i32),
                localities: Vec::new(),
            });
        service.localities.push(pb::LocalityLoad {
            locality: Some(locality_pb(&row.key.locality)),
            priority: row.key.priority,
            requests_per_second: row.requests_per_second,
            errors_per_second: row.errors_per_second,
            in_flight: row.in_flight,
            error_ratio: row.error_ratio,
            requests_total: row.requests_total,
            errors_total: row.errors_total,
            reporters: row.reporters,
        });
    }
    let mut services: Vec<pb::ServiceLoad> = services.into_values().collect();
    for service in &mut services {
        service.localities.sort_by_key(|l| {
            (
                l.priority,
                l.locality
                    .as_ref()
                    .map(|l| (l.region.clone(), l.zone.clone(), l.sub_zone.clone())),
            )
        });
    }
    services.sort_by(|a, b| {
        (&a.service, a.port, &a.client_class).cmp(&(&b.service, b.port, &b.client_class))
    });
    Ok(pb::GetLoadResponse {
        at_unix_ms: unix_ms(SystemTime::now()),
        window_seconds: settings.window.as_secs().min(u64::from(u32::MAX)) as u32,
        reporting_clients: reporting.min(u32::MAX as usize) as u32,
        services,
    })
}

/// Whether `filter` (empty, `NAME.NAMESPACE` or `NAME.NAMESPACE:PORT`) names `cluster`.
fn matches(served: &ServedClusters, cluster: &str, filter: &str) -> bool {
    if filter.is_empty() || filter == cluster {
        return true;
    }
    served.get(cluster).is_some_and(|c| c.service == filter)
}

pub(super) type LoadStream =
    Pin<Box<dyn Stream<Item = Result<pb::GetLoadResponse, Status>> + Send>>;

/// GetLoad's answer now, then once per report interval; ends with the first error (the filter names
/// no service port any more).
pub(super) fn load_stream(
    book: SharedLoadBook,
    settings: LoadSettings,
    filter: String,
) -> LoadStream {
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Box::pin(futures::stream::unfold(
        (tick, false),
        move |(mut tick, failed)| {
            let book = book.clone();
            let filter = filter.clone();
            async move {
                if failed {
                    return None;
                }
                tick.tick().await;
                // Summing the book is CPU work under its lock: off the threads serving streams.
                let answer = crate::cpu::off_runtime(move || {
                    load_pb(&book, &settings, &filter, Instant::now())
                })
                .await;
                let failed = answer.is_err();
                Some((answer, (tick, failed)))
            }
        },
    ))
}

#[cfg(test)]
mod tests;
