//! Which priority is serving each (cluster, client class), and when that changes (a failover).

use std::collections::BTreeMap;

use super::{ratio, RowView};
use crate::model::Locality;

/// The serving priority of one (cluster, client class) moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub cluster: String,
    pub class: Locality,
    pub from: u32,
    pub to: u32,
    /// The error ratio of the `from` priority within the window that preceded the change.
    pub error_ratio: f64,
}

/// The lowest priority that carried requests within the window, per (cluster, client class); `None`
/// for one whose rows carried none.
pub fn serving_priorities(rows: &[RowView]) -> BTreeMap<(String, Locality), Option<u32>> {
    let mut out: BTreeMap<(String, Locality), Option<u32>> = BTreeMap::new();
    for row in rows {
        let serving = out
            .entry((row.key.cluster.clone(), row.key.class.clone()))
            .or_default();
        if row.requests > 0 && serving.is_none_or(|p| row.key.priority < p) {
            *serving = Some(row.key.priority);
        }
    }
    out
}

/// Remembers the last serving priority of each (cluster, client class) and reports changes. A stretch
/// without traffic is not a change: the next priority that carries requests is compared with the last
/// one that did.
#[derive(Debug, Default)]
pub struct ServingTracker {
    last: BTreeMap<(String, Locality), u32>,
}

impl ServingTracker {
    /// The failovers since the previous call: the serving priority is judged from `recent` (the
    /// book's view over the last report intervals), the error ratio of the priority left behind from
    /// `window` (the whole window, which holds the stretch before the change). Pairs no longer in the
    /// view are forgotten, so the tracker is bounded like the book.
    pub fn update(&mut self, recent: &[RowView], window: &[RowView]) -> Vec<Failover> {
        let serving = serving_priorities(recent);
        self.last.retain(|pair, _| serving.contains_key(pair));
        let mut failovers = Vec::new();
        for (pair, now) in serving {
            let Some(to) = now else { continue };
            match self.last.insert(pair.clone(), to) {
                Some(from) if from != to => {
                    let (requests, errors) = window
                        .iter()
                        .filter(|r| {
                            r.key.priority == from
                                && r.key.cluster == pair.0
                                && r.key.class == pair.1
                        })
                        .fold((0, 0), |(q, e), r| (q + r.requests, e + r.errors));
                    failovers.push(Failover {
                        cluster: pair.0,
                        class: pair.1,
                        from,
                        to,
                        error_ratio: ratio(errors, requests),
                    });
                }
                _ => {}
            }
        }
        failovers
    }

    /// The serving priority last seen for (cluster, class).
    pub fn last(&self, cluster: &str, class: &Locality) -> Option<u32> {
        self.last
            .get(&(cluster.to_string(), class.clone()))
            .copied()
    }
}
