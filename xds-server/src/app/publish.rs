//! Snapshot publishing: the stage between the sources and the services. Every change of the registry,
//! the policies, the secrets or the fleet verdict's ejected localities becomes a new snapshot on the
//! channel the ADS, SDS, admin and metrics servers read; none before the registry and the policies are
//! both known.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tracing::info;

use crate::sources::secrets::SecretSet;
use xds_core::model::Registry;
use xds_core::policy::PolicySet;
use xds_core::snapshot::{Snapshot, TranslateSettings};
use xds_core::translate::input::FleetEjections;

/// What a snapshot is built from, each on a `watch` channel (`None` is "not complete yet").
pub(super) struct PublishInputs {
    pub registry: watch::Receiver<Option<Arc<Registry>>>,
    pub policies: watch::Receiver<Option<Arc<PolicySet>>>,
    pub secrets: watch::Receiver<Option<Arc<SecretSet>>>,
    /// The fleet verdict's ejected localities (`app::fleet`); empty until it judges anything.
    pub ejections: watch::Receiver<Arc<FleetEjections>>,
}

/// Rebuilds and publishes a snapshot whenever the registry, the policies, the secrets or the fleet
/// ejections change, and never before the registry, the policies and the secrets are all known.
/// `watch` channels coalesce bursts: a slow rebuild only ever sees the newest inputs. Returns when any
/// input's sender is dropped.
pub(super) async fn publish_snapshots(
    inputs: PublishInputs,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    settings: TranslateSettings,
) -> anyhow::Result<()> {
    let PublishInputs {
        mut registry,
        mut policies,
        mut secrets,
        mut ejections,
    } = inputs;
    registry.mark_changed();
    loop {
        tokio::select! {
            r = registry.changed() => r.context("the services source stopped")?,
            p = policies.changed() => p.context("the policy source stopped")?,
            s = secrets.changed() => s.context("the secrets source stopped")?,
            e = ejections.changed() => e.context("the fleet verdict stopped")?,
        }
        let Some(reg) = registry.borrow_and_update().clone() else {
            continue; // the source has no complete view yet
        };
        let Some(pol) = policies.borrow_and_update().clone() else {
            continue; // custom resource policies not listed yet
        };
        // Secrets from Kubernetes not listed yet: mTLS clusters and listeners would name SDS
        // secrets nobody can answer, so nothing is published (and readiness waits).
        let Some(secret_set) = secrets.borrow_and_update().clone() else {
            continue;
        };
        let ejected = ejections.borrow_and_update().clone();
        let previous = snapshots.borrow().clone();
        let changed: Vec<String> = match &previous {
            Some(p) => p
                .registry
                .changed_services(&reg)
                .into_iter()
                .map(|s| s.to_string())
                .collect(),
            None => reg.services.keys().map(|s| s.to_string()).collect(),
        };
        let started = std::time::Instant::now();
        let settings = settings.clone();
        let next = crate::cpu::off_runtime(move || {
            Snapshot::build_with_ejections(previous.as_deref(), reg, pol, ejected, settings)
                .with_secrets(secret_set)
        })
        .await;
        // Long lists (a first snapshot of thousands of services) are cut: the count says the rest.
        const SHOWN: usize = 10;
        info!(
            generation = next.generation,
            services = next.registry.services.len(),
            changed = changed.len(),
            changed_services = ?&changed[..changed.len().min(SHOWN)],
            policies = next.policies.entries.len(),
            fleet_ejections = next.ejections.iter().map(|(_, l)| l.len()).sum::<usize>(),
            identities = next.secret_set().identities.len(),
            build_us = started.elapsed().as_micros() as u64,
            "publishing new snapshot"
        );
        let m = crate::metrics::metrics();
        m.snapshots.inc();
        m.snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        m.ready.set(1);
        snapshots.send_replace(Some(Arc::new(next)));
    }
}

/// Logs what the shared cache holds whenever it changed, at most every 10 s. Answers are encoded lazily
/// (on the first client of a class), so the figures grow after a snapshot is published.
pub(super) async fn log_cache_stats(snapshots: watch::Receiver<Option<Arc<Snapshot>>>) {
    let mut last = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        let Some(snapshot) = snapshots.borrow().clone() else {
            continue;
        };
        let stats = snapshot.stats();
        if last != Some((snapshot.generation, stats)) {
            info!(
                generation = snapshot.generation,
                clusters = stats.clusters,
                classes = stats.classes,
                eds_answers = stats.eds_answers,
                cached_bytes = stats.bytes,
                "cache"
            );
            last = Some((snapshot.generation, stats));
        }
    }
}

#[cfg(test)]
mod tests;
