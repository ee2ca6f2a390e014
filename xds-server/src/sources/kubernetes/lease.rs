//! Leader election over a `coordination.k8s.io/v1` Lease: of the replicas that run this, at most one
//! believes it leads at any time (given clocks that tick at the same rate), and when it dies another
//! takes over within the lease duration.
//!
//! The protocol is client-go's `leaderelection` with a Lease lock, on plain `Api<Lease>` calls:
//!
//! * The leader renews the Lease (`spec.renewTime`) every [`LeaseSettings::renew_every`] with a
//!   `PUT` that carries the `resourceVersion` it read: two replicas writing at once cannot both win,
//!   the API server answers the second with 409 Conflict.
//! * A follower reads the Lease every [`LeaseSettings::retry_every`] and takes it over (the same
//!   conditional `PUT`) once it has seen the record unchanged for `leaseDurationSeconds`. It judges
//!   by its own clock how long the record stood still, never by the `renewTime` another machine
//!   wrote, so clock skew between nodes does not matter.
//! * A leader that cannot renew for [`LeaseSettings::renew_deadline`] (two thirds of the duration)
//!   steps down on its own, before any follower may take over.
//!
//! No maintained crate fits: `kube-leader-election` is built on kube 4, and `kube-lease-manager` takes
//! orphaned leases with a server-side apply and relies on field-ownership conflicts to settle races,
//! where this module needs only the resourceVersion precondition every API server has.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Which Lease to contend for, as whom, and for how long.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's `holderIdentity`; unique per process ([`default_identity`]).
    pub identity: String,
    /// `leaseDurationSeconds`: how long a follower waits on a record that does not change before it
    /// takes the Lease over. Whole seconds (the field is an integer), at least one.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the leader renews: a third of the duration (5 s of the default 15 s), so two
    /// renewals may fail before the renew deadline.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How often a follower (or a leader whose renewal failed) tries again: 2 s of 15 s.
    pub fn retry_every(&self) -> Duration {
        self.duration * 2 / 15
    }

    /// A leader that has not renewed for this long stops acting as one: two thirds of the duration,
    /// so it has stepped down before a follower, waiting the whole duration, may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// The longest one API call may take: a renewal that hangs must not outlive the renew deadline.
    fn request_timeout(&self) -> Duration {
        self.duration / 5
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Checks a `--status-lease-duration`: whole seconds, at least 1 s.
pub fn check_duration(duration: Duration) -> Result<Duration, String> {
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{duration:?}: a lease duration is whole seconds, at least 1s (leaseDurationSeconds is an integer)"
        ));
    }
    Ok(duration)
}

/// A `holderIdentity` for this process: the pod name (`POD_NAME`, set from the downward API in the
/// shipped Deployment; else `HOSTNAME`, else the kernel's host name) and a random suffix, so that a
/// restarted process never mistakes its predecessor's record for its own.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "xds-server".to_string());
    format!("{base}-{:08x}", random_u32())
}

/// Randomness without a dependency: std's hasher keys are random per process.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {lease}: no answer within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
}

/// The Lease record as this replica last saw it, and when it last saw it change (its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    resource_version: Option<String>,
    duration: Duration,
    changed_at: Instant,
}

/// What to do with the Lease as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it and renews it.
    Wait,
}

/// Pure: what to do about `observed` at `now`.
fn decide(observed: &Observed, identity: &str, now: Instant) -> Decision {
    match observed.holder.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) if now.duration_since(observed.changed_at) >= observed.duration => {
            Decision::TakeOver
        }
        Some(_) => Decision::Wait,
    }
}

/// Updates what we saw of `lease`; the clock restarts only when the record changed.
fn observe(previous: Option<Observed>, lease: &Lease, now: Instant, default: Duration) -> Observed {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let resource_version = lease.metadata.resource_version.clone();
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default);
    match previous {
        Some(p) if p.holder == holder && p.resource_version == resource_version => p,
        _ => Observed {
            holder,
            resource_version,
            duration,
            changed_at: now,
        },
    }
}

struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    lease: String,
    observed: Option<Observed>,
}

impl Elector {
    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: self.lease.clone(),
            source,
        }
    }

    /// Our spec for the Lease, keeping `acquireTime` and counting a transition when we take it.
    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let ours = previous
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.settings.identity);
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.duration_seconds()),
            acquire_time: if ours {
                previous.and_then(|s| s.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..previous.cloned().unwrap_or_default()
        }
    }

    /// One round: read the Lease, then create, renew or take it over if that is ours to do.
    /// `Ok(true)`: we hold it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let now = Instant::now();
        let Some(current) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = Some(observe(None, &created, now, self.settings.duration));
                    Ok(true)
                }
                // Another replica created it first: it leads.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let observed = observe(self.observed.take(), &current, now, self.settings.duration);
        let decision = decide(&observed, &self.settings.identity, now);
        self.observed = Some(observed);
        if decision == Decision::Wait {
            return Ok(false);
        }
        if decision == Decision::TakeOver {
            info!(lease = %self.lease, previous_holder = ?self.observed.as_ref().and_then(|o| o.holder.clone()),
                "Lease free or not renewed within its duration; taking it over");
        }
        let mut next = current.clone();
        next.spec = Some(self.spec(current.spec.as_ref()));
        // `metadata.resourceVersion` from the read: if anyone wrote since, the API server refuses.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observed = Some(observe(None, &written, now, self.settings.duration));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %self.lease, "Lease changed under us (409); someone else got it");
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Contends for the Lease until every receiver of `leader` is gone, publishing `true` while this
/// replica leads. Errors of single rounds are logged and retried; the task returns `Ok(())` when
/// nobody listens any more. Joinable and supervisable: it never ends silently.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    leader: watch::Sender<bool>,
) -> Result<(), LeaseError> {
    let api = Api::<Lease>::namespaced(client, &settings.namespace);
    let lease = format!("{}/{}", settings.namespace, settings.name);
    info!(%lease, identity = %settings.identity, duration = ?settings.duration,
        "contending for the Lease");
    let mut elector = Elector {
        api,
        settings: settings.clone(),
        lease: lease.clone(),
        observed: None,
    };
    let mut last_renewed: Option<Instant> = None;
    loop {
        if leader.is_closed() {
            info!(%lease, "nobody needs the Lease any more; stopping the election");
            return Ok(());
        }
        let timeout = settings.request_timeout();
        let round = match tokio::time::timeout(timeout, elector.try_acquire_or_renew()).await {
            Ok(round) => round,
            Err(_) => Err(LeaseError::Timeout {
                lease: lease.clone(),
                timeout,
            }),
        };
        let leading = *leader.borrow();
        let next_round = match round {
            Ok(true) => {
                last_renewed = Some(Instant::now());
                if !leading {
                    info!(%lease, identity = %settings.identity, "acquired the Lease: this replica leads");
                    leader.send_replace(true);
                }
                settings.renew_every()
            }
            Ok(false) => {
                if leading {
                    warn!(%lease, holder = ?elector.observed.as_ref().and_then(|o| o.holder.clone()),
                        "lost the Lease to another replica; stepping down");
                    leader.send_replace(false);
                }
                settings.retry_every()
            }
            Err(error) => {
                let overdue = last_renewed.is_none_or(|t| t.elapsed() >= settings.renew_deadline());
                if leading && overdue {
                    warn!(%lease, %error, deadline = ?settings.renew_deadline(),
                        "could not renew the Lease before the renew deadline; stepping down");
                    leader.send_replace(false);
                } else {
                    warn!(%lease, %error, "Lease round failed; retrying");
                }
                settings.retry_every()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next_round) => {}
            _ = leader.closed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, rv: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_over_only_after_its_record_stood_still_for_its_duration() {
        let t0 = Instant::now();
        let default = Duration::from_secs(15);
        let seen = observe(None, &lease(Some("a"), "1", 3), t0, default);
        assert_eq!(seen.duration, Duration::from_secs(3));
        assert_eq!(decide(&seen, "b", t0), Decision::Wait);
        assert_eq!(decide(&seen, "a", t0), Decision::Renew);
        // The holder renews (new resourceVersion): the clock restarts.
        let t1 = t0 + Duration::from_secs(2);
        let renewed = observe(Some(seen.clone()), &lease(Some("a"), "2", 3), t1, default);
        assert_eq!(renewed.changed_at, t1);
        assert_eq!(
            decide(&renewed, "b", t0 + Duration::from_secs(4)),
            Decision::Wait
        );
        // The same record seen again does not restart it; after the duration it is free.
        let again = observe(
            Some(renewed.clone()),
            &lease(Some("a"), "2", 3),
            t1 + Duration::from_secs(1),
            default,
        );
        assert_eq!(again.changed_at, t1);
        assert_eq!(
            decide(&again, "b", t1 + Duration::from_secs(3)),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_lease_without_holder_is_free_at_once() {
        let t0 = Instant::now();
        for holder in [None, Some("")] {
            let seen = observe(None, &lease(holder, "7", 15), t0, Duration::from_secs(15));
            assert_eq!(decide(&seen, "b", t0), Decision::TakeOver);
        }
    }

    #[test]
    fn renewals_come_before_the_deadline_and_the_deadline_before_a_takeover() {
        let settings = LeaseSettings {
            namespace: "xds-system".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(settings.renew_every(), Duration::from_secs(5));
        assert_eq!(settings.retry_every(), Duration::from_secs(2));
        assert_eq!(settings.renew_deadline(), Duration::from_secs(10));
        assert!(settings.renew_deadline() + settings.request_timeout() <= settings.duration);
        assert!(check_duration(Duration::from_millis(1500)).is_err());
        assert!(check_duration(Duration::from_millis(500)).is_err());
        assert_eq!(
            check_duration(Duration::from_secs(3)),
            Ok(Duration::from_secs(3))
        );
    }

    #[test]
    fn identities_differ_per_call_and_name_the_pod() {
        let a = default_identity();
        let b = default_identity();
        assert_ne!(a, b);
        assert!(
            a.rsplit_once('-')
                .is_some_and(|(base, suffix)| !base.is_empty() && suffix.len() == 8),
            "{a}"
        );
    }
}
