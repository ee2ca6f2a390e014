//! Fleet failover, wired: every [`EVALUATION_PERIOD`] the load reports in the shared [`LoadBook`] are
//! judged (xds-core's `observed::fleet`) for every service port whose policy has `fleetFailover` on;
//! a change in the ejected localities goes to the snapshot publisher (EDS of those ports only is
//! rebuilt), and each transition is logged, counted and sent on the admin event stream.
//!
//! The delay from a locality failing to every client being told: the clients' load report interval
//! (the reports carrying the errors) + this period + one push.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::{metrics, FleetServiceLabels, FleetVerdictLabels};
use crate::registry::{lock, ClientRegistry, XdsEvent};
use xds_core::observed::fleet::{
    attach_windows, fleet_clusters, ClusterVerdict, FleetReport, FleetVerdicts, LocalityState,
    Transition, TransitionKind,
};
use xds_core::observed::LoadBook;
use xds_core::snapshot::Snapshot;
use xds_core::translate::input::FleetEjections;

/// How often the reports are judged: well below the clients' report interval, so a verdict waits
/// for the reports, not for the evaluation.
pub const EVALUATION_PERIOD: Duration = Duration::from_secs(1);

/// Where the verdicts go.
pub(super) struct FleetOutputs {
    pub ejections: watch::Sender<Arc<FleetEjections>>,
    pub report: watch::Sender<FleetReport>,
    pub events: Arc<ClientRegistry>,
}

/// Judges the fleet's reports every `period`, forever. Ends (and the supervisor stops the process)
/// only if the snapshot publisher is gone.
pub(super) async fn evaluate_fleet(
    book: Arc<Mutex<LoadBook>>,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    outputs: FleetOutputs,
    period: Duration,
) -> anyhow::Result<()> {
    let mut verdicts = FleetVerdicts::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if snapshots.has_changed().is_err() {
            anyhow::bail!("the snapshot publisher stopped");
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue; // nothing served yet
        };
        evaluate_once(&mut verdicts, &book, &snapshot, &outputs, Instant::now());
    }
}

/// One evaluation at `now`: judge, publish what changed.
pub(super) fn evaluate_once(
    verdicts: &mut FleetVerdicts,
    book: &Mutex<LoadBook>,
    snapshot: &Snapshot,
    outputs: &FleetOutputs,
    now: Instant,
) {
    let mut clusters = fleet_clusters(snapshot, verdicts);
    if !clusters.is_empty() {
        let mut book = lock(book);
        attach_windows(&mut clusters, |window| book.locality_windows(now, window));
    }
    let judged_before: Vec<FleetServiceLabels> = verdicts.verdicts().iter().map(labels).collect();
    let outcome = verdicts.evaluate(now, &clusters);
    for t in &outcome.transitions {
        announce(t, now, &outputs.events);
    }
    let report = verdicts.verdicts();
    let m = metrics();
    for v in &report {
        let ejected = v
            .localities
            .iter()
            .filter(|l| l.state == LocalityState::Ejected)
            .count();
        m.fleet_ejected_localities
            .get_or_create(&labels(v))
            .set(ejected as i64);
    }
    // A service port no longer judged leaves no series behind.
    for gone in judged_before
        .iter()
        .filter(|l| !report.iter().any(|v| labels(v) == **l))
    {
        m.fleet_ejected_localities.remove(gone);
    }
    let ejections = Arc::new(outcome.ejections);
    outputs.ejections.send_if_modified(|current| {
        let changed = **current != *ejections;
        if changed {
            *current = ejections.clone();
        }
        changed
    });
    outputs.report.send_replace(Arc::new(report));
}

fn labels(v: &ClusterVerdict) -> FleetServiceLabels {
    FleetServiceLabels {
        service: v.service.to_string(),
        port: v.port.to_string(),
    }
}

/// Logs, counts and emits one transition.
fn announce(t: &Transition, now: Instant, events: &ClientRegistry) {
    let locality = format!(
        "{}/{}/{}",
        t.locality.region, t.locality.zone, t.locality.subzone
    );
    let ratio = t.evidence.error_ratio();
    let until_s = t.until.map(|u| u.saturating_duration_since(now).as_secs());
    match t.kind {
        TransitionKind::Ejected => warn!(
            cluster = %t.cluster, %locality, mode = %t.mode,
            reporters = t.evidence.reporters, requests = t.evidence.requests,
            errors = t.evidence.errors, error_ratio = ratio, ejected_for_s = until_s,
            reason = %t.reason,
            "fleet verdict: locality ejected, its endpoints are sent UNHEALTHY"
        ),
        TransitionKind::Restored => info!(
            cluster = %t.cluster, %locality, mode = %t.mode, reason = %t.reason,
            "fleet verdict: locality restored"
        ),
        TransitionKind::Observed => warn!(
            cluster = %t.cluster, %locality, mode = %t.mode,
            reporters = t.evidence.reporters, requests = t.evidence.requests,
            errors = t.evidence.errors, error_ratio = ratio, reason = %t.reason,
            "fleet verdict: locality failing, not ejected"
        ),
    }
    metrics()
        .fleet_verdicts
        .get_or_create(&FleetVerdictLabels {
            mode: t.mode.to_string(),
            kind: t.kind.event_kind().to_string(),
        })
        .inc();
    events.emit(XdsEvent::Fleet {
        at: SystemTime::now(),
        kind: t.kind.event_kind(),
        service: t.cluster.clone(),
        locality,
        reporters: t.evidence.reporters,
        requests: t.evidence.requests,
        errors: t.evidence.errors,
        reason: t.reason.clone(),
    });
}

#[cfg(test)]
mod tests;
