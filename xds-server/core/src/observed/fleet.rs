//! Fleet failover: the server's verdict on each locality of a service port, from the load reports of
//! every client of it (`fleetFailover` in the policy, [`FleetFailover`]).
//!
//! One Envoy ejects a host only after its own consecutive errors, so each client pays for the same
//! outage, and a quiet client notices late. The server hears from the whole fleet: when at least
//! `minReporters` clients together sent `minRequests` to a locality within `window` and `errorRatio`
//! of them failed, the locality is judged failing. In `enforce` mode its endpoints are then sent
//! UNHEALTHY to every client ([`FleetEjections`]), so clients that have not failed yet never try it.
//!
//! Guard rails: never more than `maxEjectedPercent` of the service port's endpoints (the worst ratio
//! goes first), never on one client's reports (`minReporters` ≥ 2), always reversible: an ejected
//! locality gets no traffic, hence no reports that could show recovery, so it is restored after
//! `ejectFor` and put on probation for one `window`; failing again on probation ejects it for twice as
//! long (up to [`FleetFailover::MAX_EJECT_FOR`]), a clean probation forgets the history. Switching the
//! policy to `observe` or `off`, removing it, or the service port or locality going away restores at
//! once.
//!
//! Sans-IO: time is an argument. State is kept only for served clusters whose policy has fleet
//! failover on, and only for localities that have endpoints: a report naming anything else is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{Locality, ServiceId};
use crate::policy::{FleetFailover, FleetMode};
use crate::snapshot::Snapshot;
use crate::translate::input::FleetEjections;

#[cfg(test)]
mod tests;

pub use super::LocalityWindow;

/// One service port the verdict judges, with what it is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCluster {
    /// The cluster name clients report, `NAME.NAMESPACE:PORT`.
    pub cluster: String,
    pub service: ServiceId,
    pub port: u16,
    pub settings: FleetFailover,
    /// Endpoints per locality, ready or not: the localities that can be judged, and what
    /// `maxEjectedPercent` counts.
    pub endpoints: BTreeMap<Locality, usize>,
    /// The reports on this cluster over `settings.window` (rows of other clusters are ignored).
    pub windows: Vec<LocalityWindow>,
}

/// The service ports of `snapshot` whose policy has fleet failover on, and those `judged` judges
/// still (their policy just turned it off, so their ejections are lifted with that reason), without
/// their windows (see [`attach_windows`]).
pub fn fleet_clusters(snapshot: &Snapshot, judged: &FleetVerdicts) -> Vec<FleetCluster> {
    snapshot
        .clusters()
        .filter(|entry| {
            entry.policy.policy.fleet_failover.is_on() || judged.clusters.contains_key(entry.name())
        })
        .map(|entry| FleetCluster {
            cluster: entry.name().to_string(),
            service: entry.input.service.id.clone(),
            port: entry.input.port.port,
            settings: entry.policy.policy.fleet_failover.clone(),
            endpoints: entry
                .input
                .endpoints_per_locality()
                .into_iter()
                .map(|(locality, n)| (locality.clone(), n))
                .collect(),
            windows: Vec::new(),
        })
        .collect()
}

/// Fills the `windows` of each cluster with fleet failover on from `windows_over(window)`, called once
/// per distinct window.
pub fn attach_windows(
    clusters: &mut [FleetCluster],
    mut windows_over: impl FnMut(Duration) -> Vec<LocalityWindow>,
) {
    let spans: BTreeSet<Duration> = clusters
        .iter()
        .filter(|c| c.settings.is_on())
        .map(|c| c.settings.window)
        .collect();
    for span in spans {
        let rows = windows_over(span);
        for cluster in clusters
            .iter_mut()
            .filter(|c| c.settings.is_on() && c.settings.window == span)
        {
            cluster.windows = rows
                .iter()
                .filter(|row| row.cluster == cluster.cluster)
                .cloned()
                .collect();
        }
    }
}

/// What a locality's verdict rests on: the reports within the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    pub reporters: u32,
    pub requests: u64,
    pub errors: u64,
}

impl Evidence {
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// Whether this evidence shows the locality failing under `settings`.
    pub fn is_failing(&self, settings: &FleetFailover) -> bool {
        self.reporters >= settings.min_reporters
            && self.requests >= settings.min_requests
            && settings.error_ratio.reached_by(self.errors, self.requests)
    }

    /// Worse first: a higher error ratio, then more requests.
    fn worse_than(&self, other: &Self) -> std::cmp::Ordering {
        let mine = u128::from(self.errors) * u128::from(other.requests);
        let theirs = u128::from(other.errors) * u128::from(self.requests);
        theirs.cmp(&mine).then(other.requests.cmp(&self.requests))
    }
}

/// Where a locality stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalityState {
    /// Not failing (or not enough evidence to say).
    Ok,
    /// Failing, but not ejected: `observe` mode, or held back by `maxEjectedPercent`.
    Observed,
    /// Its endpoints are sent UNHEALTHY.
    Ejected,
}

impl LocalityState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Observed => "observed",
            Self::Ejected => "ejected",
        }
    }
}

/// One locality's verdict, for `xdsctl explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityVerdict {
    pub locality: Locality,
    pub state: LocalityState,
    pub evidence: Evidence,
    /// Ejected: since when, and until when.
    pub since: Option<Instant>,
    pub until: Option<Instant>,
    /// Back from an ejection and judged again until then: failing before it ejects for twice as long.
    pub probation_until: Option<Instant>,
    /// Ejections in a row (0: none since the last clean probation).
    pub ejections: u32,
}

/// One service port's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterVerdict {
    pub cluster: String,
    pub service: ServiceId,
    pub port: u16,
    pub mode: FleetMode,
    pub settings: FleetFailover,
    pub localities: Vec<LocalityVerdict>,
}

/// The verdicts of the last evaluation, by cluster name: what the admin API shows.
pub type FleetReport = std::sync::Arc<Vec<ClusterVerdict>>;

/// What happened to a locality in one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    Ejected,
    Restored,
    /// Started failing without being ejected (`observe` mode, or `maxEjectedPercent`).
    Observed,
}

impl TransitionKind {
    /// The event kind on the admin event stream.
    pub fn event_kind(self) -> &'static str {
        match self {
            Self::Ejected => "fleet_ejected",
            Self::Restored => "fleet_restored",
            Self::Observed => "fleet_observed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub kind: TransitionKind,
    pub cluster: String,
    pub service: ServiceId,
    pub port: u16,
    pub mode: FleetMode,
    pub locality: Locality,
    pub evidence: Evidence,
    /// Ejected: until when.
    pub until: Option<Instant>,
    pub reason: String,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Every locality ejected now (the snapshot input).
    pub ejections: FleetEjections,
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, Default)]
struct Track {
    /// (since, until).
    ejected: Option<(Instant, Instant)>,
    /// Ejections in a row; reset by a clean probation.
    strikes: u32,
    probation_until: Option<Instant>,
    /// Reported as failing without being ejected (so the event is sent once per episode).
    flagged: bool,
    evidence: Evidence,
}

impl Track {
    fn state(&self) -> LocalityState {
        if self.ejected.is_some() {
            LocalityState::Ejected
        } else if self.flagged {
            LocalityState::Observed
        } else {
            LocalityState::Ok
        }
    }
}

#[derive(Debug, Clone)]
struct ClusterTrack {
    service: ServiceId,
    port: u16,
    settings: FleetFailover,
    localities: BTreeMap<Locality, Track>,
}

/// The verdicts' state between evaluations: ejection times, probation, backoff.
#[derive(Debug, Default)]
pub struct FleetVerdicts {
    clusters: BTreeMap<String, ClusterTrack>,
}

impl FleetVerdicts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges every cluster of `clusters` (those with mode `off` are forgotten) at `now`.
    pub fn evaluate(&mut self, now: Instant, clusters: &[FleetCluster]) -> Outcome {
        let mut transitions = Vec::new();
        let on: BTreeMap<&str, &FleetCluster> = clusters
            .iter()
            .filter(|c| c.settings.is_on())
            .map(|c| (c.cluster.as_str(), c))
            .collect();
        self.clusters.retain(|name, track| {
            if on.contains_key(name.as_str()) {
                return true;
            }
            let reason = if clusters.iter().any(|c| c.cluster == *name) {
                "fleetFailover is off for this service port"
            } else {
                "the service port is no longer served"
            };
            for (locality, t) in &track.localities {
                if t.ejected.is_some() {
                    transitions.push(transition(
                        TransitionKind::Restored,
                        name,
                        track,
                        locality,
                        t,
                        reason.to_string(),
                    ));
                }
            }
            false
        });
        for (name, cluster) in on {
            let track = self
                .clusters
                .entry(name.to_string())
                .or_insert_with(|| ClusterTrack {
                    service: cluster.service.clone(),
                    port: cluster.port,
                    settings: cluster.settings.clone(),
                    localities: BTreeMap::new(),
                });
            track.settings = cluster.settings.clone();
            judge(now, name, cluster, track, &mut transitions);
        }
        Outcome {
            ejections: self.ejections(),
            transitions,
        }
    }

    /// Every locality ejected now.
    pub fn ejections(&self) -> FleetEjections {
        FleetEjections::new(
            self.clusters
                .iter()
                .map(|(name, track)| {
                    let ejected = track
                        .localities
                        .iter()
                        .filter(|(_, t)| t.ejected.is_some())
                        .map(|(l, _)| l.clone())
                        .collect();
                    (name.clone(), ejected)
                })
                .collect(),
        )
    }

    /// The verdict on one cluster, if fleet failover is on for it.
    pub fn verdict(&self, cluster: &str) -> Option<ClusterVerdict> {
        let track = self.clusters.get(cluster)?;
        Some(ClusterVerdict {
            cluster: cluster.to_string(),
            service: track.service.clone(),
            port: track.port,
            mode: track.settings.mode,
            settings: track.settings.clone(),
            localities: track
                .localities
                .iter()
                .map(|(locality, t)| LocalityVerdict {
                    locality: locality.clone(),
                    state: t.state(),
                    evidence: t.evidence,
                    since: t.ejected.map(|(since, _)| since),
                    until: t.ejected.map(|(_, until)| until),
                    probation_until: t.probation_until,
                    ejections: t.strikes,
                })
                .collect(),
        })
    }

    /// Every judged cluster's verdict, by cluster name.
    pub fn verdicts(&self) -> Vec<ClusterVerdict> {
        self.clusters
            .keys()
            .filter_map(|name| self.verdict(name))
            .collect()
    }
}

fn transition(
    kind: TransitionKind,
    cluster: &str,
    track: &ClusterTrack,
    locality: &Locality,
    t: &Track,
    reason: String,
) -> Transition {
    Transition {
        kind,
        cluster: cluster.to_string(),
        service: track.service.clone(),
        port: track.port,
        mode: track.settings.mode,
        locality: locality.clone(),
        evidence: t.evidence,
        until: t.ejected.map(|(_, until)| until),
        reason,
    }
}

/// How long the `strikes`-th ejection in a row lasts: `ejectFor`, doubled for each one before it.
fn ejection_time(settings: &FleetFailover, strikes: u32) -> Duration {
    let cap = FleetFailover::MAX_EJECT_FOR.max(settings.eject_for);
    let doublings = strikes.saturating_sub(1).min(16);
    settings.eject_for.saturating_mul(1 << doublings).min(cap)
}

fn judge(
    now: Instant,
    name: &str,
    cluster: &FleetCluster,
    track: &mut ClusterTrack,
    transitions: &mut Vec<Transition>,
) {
    let settings = cluster.settings.clone();
    // Localities without endpoints are not kept (nor is anything a report names beyond them).
    let gone: Vec<Locality> = track
        .localities
        .keys()
        .filter(|l| !cluster.endpoints.contains_key(*l))
        .cloned()
        .collect();
    for locality in gone {
        if let Some(t) = track.localities.remove(&locality) {
            if t.ejected.is_some() {
                transitions.push(transition(
                    TransitionKind::Restored,
                    name,
                    track,
                    &locality,
                    &t,
                    "the locality has no endpoints any more".to_string(),
                ));
            }
        }
    }
    let mut evidence: BTreeMap<&Locality, Evidence> = BTreeMap::new();
    for row in cluster.windows.iter().filter(|r| r.cluster == name) {
        if !cluster.endpoints.contains_key(&row.locality) {
            continue;
        }
        let e = evidence.entry(&row.locality).or_default();
        e.reporters = e.reporters.saturating_add(row.reporters);
        e.requests = e.requests.saturating_add(row.requests);
        e.errors = e.errors.saturating_add(row.errors);
    }
    for locality in cluster.endpoints.keys() {
        let t = track.localities.entry(locality.clone()).or_default();
        t.evidence = evidence.get(locality).copied().unwrap_or_default();
    }

    // Restores: expired ejections (onto probation), and every ejection when not enforcing.
    let mut restored = Vec::new();
    for (locality, t) in track.localities.iter_mut() {
        let Some((since, until)) = t.ejected else {
            if t.probation_until.is_some_and(|p| now >= p) && !t.evidence.is_failing(&settings) {
                t.probation_until = None;
                t.strikes = 0;
            }
            continue;
        };
        let reason = if settings.mode != FleetMode::Enforce {
            format!("fleetFailover mode is {}", settings.mode)
        } else if now >= until {
            format!(
                "ejected for {:?}; on probation for {:?}",
                until.saturating_duration_since(since),
                settings.window
            )
        } else {
            continue;
        };
        t.ejected = None;
        t.probation_until = (settings.mode == FleetMode::Enforce).then(|| now + settings.window);
        restored.push((locality.clone(), reason));
    }
    for (locality, reason) in restored {
        let t = &track.localities[&locality];
        let mut event = transition(TransitionKind::Restored, name, track, &locality, t, reason);
        event.until = None;
        transitions.push(event);
    }

    let total: usize = cluster.endpoints.values().sum();
    let mut ejected_endpoints: usize = track
        .localities
        .iter()
        .filter(|(_, t)| t.ejected.is_some())
        .map(|(l, _)| cluster.endpoints[l])
        .sum();
    let mut failing: Vec<(Locality, Evidence)> = Vec::new();
    for (locality, t) in track.localities.iter_mut() {
        if t.ejected.is_some() {
            continue;
        }
        if t.evidence.is_failing(&settings) {
            failing.push((locality.clone(), t.evidence));
        } else {
            t.flagged = false;
        }
    }
    failing.sort_by(|(la, a), (lb, b)| a.worse_than(b).then(la.cmp(lb)));
    for (locality, evidence) in failing {
        let endpoints = cluster.endpoints[&locality];
        let ratio = evidence.error_ratio();
        let observed = if settings.mode == FleetMode::Observe {
            Some(format!(
                "error ratio {ratio:.3} ≥ {} from {} clients; observe mode: EDS unchanged",
                settings.error_ratio, evidence.reporters
            ))
        } else if (ejected_endpoints + endpoints) * 100
            > settings.max_ejected_percent as usize * total
        {
            Some(format!(
                "error ratio {ratio:.3} ≥ {} from {} clients, but ejecting its {endpoints} \
                 endpoints would take {} of {total} out, over maxEjectedPercent {}",
                settings.error_ratio,
                evidence.reporters,
                ejected_endpoints + endpoints,
                settings.max_ejected_percent
            ))
        } else {
            None
        };
        let t = track.localities.get_mut(&locality).expect("judged above");
        if let Some(reason) = observed {
            if !t.flagged {
                t.flagged = true;
                let t = &track.localities[&locality];
                transitions.push(transition(
                    TransitionKind::Observed,
                    name,
                    track,
                    &locality,
                    t,
                    reason,
                ));
            }
            continue;
        }
        let on_probation = t.probation_until.is_some_and(|p| now < p);
        t.strikes = if on_probation {
            t.strikes.saturating_add(1)
        } else {
            1
        };
        let time = ejection_time(&settings, t.strikes);
        t.ejected = Some((now, now + time));
        t.probation_until = None;
        t.flagged = false;
        ejected_endpoints += endpoints;
        let reason = format!(
            "error ratio {ratio:.3} ≥ {} from {} clients ({} of {} requests failed); ejected for \
             {time:?}{}",
            settings.error_ratio,
            evidence.reporters,
            evidence.errors,
            evidence.requests,
            if on_probation {
                " (failed again on probation)"
            } else {
                ""
            }
        );
        let t = &track.localities[&locality];
        transitions.push(transition(
            TransitionKind::Ejected,
            name,
            track,
            &locality,
            t,
            reason,
        ));
    }
}
