//! Writes the `Accepted` condition of FailoverPolicy custom resources, apart from the policy path.
//!
//! The policy source ([`super::kube`]) publishes the merged policy first and then hands the verdicts
//! here, over a `watch` channel that keeps only the newest set: a slow or hung API server delays the
//! status, never the policy Envoy gets. Only the replica that holds the status Lease writes
//! ([`crate::sources::kubernetes::lease`]): two replicas judging an object differently (one has seen
//! an edit the other has not yet) would otherwise overwrite each other's verdict back and forth.
//!
//! Each write has a timeout; failed writes are retried with a backoff until they land, the
//! verdicts change, or this replica stops leading. What to write is the pure [`next_status`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::crd::{Condition, FailoverPolicy as FailoverPolicyCrd, FailoverPolicyStatus};
use super::kube::Verdict;

/// The condition type this server owns.
pub const ACCEPTED: &str = "Accepted";

/// The `fieldManager` of status writes.
pub const FIELD_MANAGER: &str = "xds-server";

/// One object's verdict, and the status the object carried when it was judged.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub verdict: Verdict,
    /// `metadata.resourceVersion` of the object judged.
    pub resource_version: Option<String>,
    /// Its `status`, `None` if absent or unreadable (then it is rewritten whole).
    pub current: Option<FailoverPolicyStatus>,
}

impl StatusTarget {
    /// The target for `obj`, judged `verdict`.
    pub fn of(obj: &DynamicObject, verdict: Verdict) -> StatusTarget {
        StatusTarget {
            verdict,
            resource_version: obj.metadata.resource_version.clone(),
            current: obj
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok()),
        }
    }

    fn id(&self) -> (String, String) {
        (self.verdict.namespace.clone(), self.verdict.name.clone())
    }
}

/// Pure: the status an object should carry after `verdict`, or `None` when `previous` already says
/// it (nothing to write).
///
/// * `observedGeneration` is the generation judged, also when the verdict did not change (an edit
///   that is accepted as before still tells its author that it was seen).
/// * `lastTransitionTime` changes only when the condition's `status` does (Kubernetes API
///   conventions: the time it last went from True to False or back); a new reason or message keeps it.
/// * Conditions of other types, written by someone else, are kept as they are.
pub fn next_status(
    previous: Option<&FailoverPolicyStatus>,
    verdict: &Verdict,
    now: &str,
) -> Option<FailoverPolicyStatus> {
    let status = if verdict.accepted { "True" } else { "False" };
    let conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let before = conditions.iter().find(|c| c.type_ == ACCEPTED);
    let last_transition_time = match before {
        Some(c) if c.status == status && !c.last_transition_time.is_empty() => {
            c.last_transition_time.clone()
        }
        _ => now.to_string(),
    };
    let accepted = Condition {
        type_: ACCEPTED.to_string(),
        status: status.to_string(),
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        last_transition_time,
    };
    let mut next_conditions: Vec<Condition> = conditions.to_vec();
    match next_conditions.iter_mut().find(|c| c.type_ == ACCEPTED) {
        Some(slot) => *slot = accepted,
        None => next_conditions.push(accepted),
    }
    let next = FailoverPolicyStatus {
        conditions: next_conditions,
        observed_generation: verdict.generation,
    };
    (previous != Some(&next)).then_some(next)
}

/// How status writes behave.
#[derive(Debug, Clone)]
pub struct StatusWriterSettings {
    /// The longest one PATCH may take before it counts as failed and is retried.
    pub write_timeout: Duration,
    /// First retry delay after a failed round; doubles up to [`StatusWriterSettings::max_backoff`].
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for StatusWriterSettings {
    fn default() -> Self {
        StatusWriterSettings {
            write_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusWriterError {
    /// The election task ended: without it this replica can never know whether it may write.
    #[error("the status Lease election ended; FailoverPolicy status is no longer written")]
    ElectionEnded,
    #[error("FailoverPolicy {policy}: {source}")]
    Api {
        policy: String,
        #[source]
        source: kube::Error,
    },
    #[error("FailoverPolicy {policy}: no answer within {timeout:?}")]
    Timeout { policy: String, timeout: Duration },
}

/// Writes one object's status with a timeout. A missing object is not an error (it was deleted
/// since it was judged; there is nothing to tell).
async fn write(
    client: &Client,
    target: &StatusTarget,
    status: &FailoverPolicyStatus,
    timeout: Duration,
) -> Result<(), StatusWriterError> {
    let v = &target.verdict;
    let policy = format!("{}/{}", v.namespace, v.name);
    let api = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &v.namespace,
        &ApiResource::erase::<FailoverPolicyCrd>(&()),
    );
    // A merge patch replaces `conditions` whole; `next_status` kept the other types in it.
    let patch = json!({ "status": status });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    match tokio::time::timeout(
        timeout,
        api.patch_status(&v.name, &params, &Patch::Merge(&patch)),
    )
    .await
    {
        Err(_) => Err(StatusWriterError::Timeout { policy, timeout }),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
            debug!(%policy, "FailoverPolicy deleted before its status was written");
            Ok(())
        }
        Ok(Err(source)) => Err(StatusWriterError::Api { policy, source }),
    }
}

/// Writes the newest targets while this replica leads (`leader`), retrying failed writes with a
/// backoff. Returns `Ok(())` when the targets' sender is gone (the policy source ended), and
/// [`StatusWriterError::ElectionEnded`] if the election ends first. Joinable and supervisable.
pub async fn run(
    client: Client,
    settings: StatusWriterSettings,
    mut targets: watch::Receiver<Arc<Vec<StatusTarget>>>,
    mut leader: watch::Receiver<bool>,
) -> Result<(), StatusWriterError> {
    // What we wrote, per object: (the resourceVersion it was based on, the status). A target built
    // from that same resourceVersion is our own write not yet seen back through the watch.
    let mut written: HashMap<(String, String), (Option<String>, FailoverPolicyStatus)> =
        HashMap::new();
    let mut backoff = settings.min_backoff;
    loop {
        if !*leader.borrow_and_update() {
            debug!("not the status writer; waiting for the Lease");
            leader
                .wait_for(|leads| *leads)
                .await
                .map_err(|_| StatusWriterError::ElectionEnded)?;
            info!("this replica writes FailoverPolicy status");
            written.clear();
        }
        let round = targets.borrow_and_update().clone();
        let now = now_rfc3339();
        let mut failed = 0usize;
        for target in round.iter() {
            if !*leader.borrow() {
                break;
            }
            let Some(status) = next_status(target.current.as_ref(), &target.verdict, &now) else {
                continue;
            };
            let id = target.id();
            if written
                .get(&id)
                .is_some_and(|(rv, w)| *rv == target.resource_version && same_but_time(w, &status))
            {
                continue;
            }
            match write(&client, target, &status, settings.write_timeout).await {
                Ok(()) => {
                    debug!(policy = %format!("{}/{}", id.0, id.1), accepted = target.verdict.accepted,
                        observed_generation = ?status.observed_generation, "FailoverPolicy status written");
                    written.insert(id, (target.resource_version.clone(), status));
                }
                Err(error) => {
                    // Status is a courtesy to the user; the policy decision stands either way.
                    warn!(%error, "could not write FailoverPolicy status; will retry");
                    failed += 1;
                }
            }
        }
        let wait = if failed > 0 {
            let wait = backoff;
            backoff = (backoff * 2).min(settings.max_backoff);
            info!(failed, retry_in = ?wait, "FailoverPolicy status writes failed; retrying");
            Some(wait)
        } else {
            backoff = settings.min_backoff;
            None
        };
        // Next round: new verdicts, a change of leadership, or the retry timer.
        tokio::select! {
            changed = targets.changed() => if changed.is_err() {
                info!("the FailoverPolicy source ended; no more status to write");
                return Ok(());
            },
            changed = leader.changed() => if changed.is_err() {
                return Err(StatusWriterError::ElectionEnded);
            },
            _ = sleep_or_never(wait) => {}
        }
    }
}

/// Now, in whole seconds, as Kubernetes writes `metav1.Time` (`2026-01-02T03:04:05Z`).
fn now_rfc3339() -> String {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Equal apart from `lastTransitionTime`, which [`next_status`] sets to "now" on a transition.
fn same_but_time(a: &FailoverPolicyStatus, b: &FailoverPolicyStatus) -> bool {
    let strip = |s: &FailoverPolicyStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time.clear();
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(accepted: bool, reason: &str, message: &str, generation: i64) -> Verdict {
        Verdict {
            namespace: "shop".into(),
            name: "web".into(),
            generation: Some(generation),
            accepted,
            reason: reason.into(),
            message: message.into(),
        }
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn a_first_verdict_is_written_with_its_generation_and_the_time() {
        let next = next_status(None, &verdict(true, "Accepted", "policy is active", 1), T1)
            .expect("no status yet: write one");
        assert_eq!(next.observed_generation, Some(1));
        assert_eq!(next.conditions.len(), 1);
        let c = &next.conditions[0];
        assert_eq!(
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.last_transition_time.as_str()
            ),
            ("Accepted", "True", "Accepted", T1)
        );
    }

    #[test]
    fn the_same_verdict_for_the_same_generation_writes_nothing() {
        let v = verdict(true, "Accepted", "policy is active", 1);
        let first = next_status(None, &v, T1).unwrap();
        assert_eq!(next_status(Some(&first), &v, T2), None);
    }

    #[test]
    fn a_new_generation_with_the_same_verdict_bumps_observed_generation_and_keeps_the_time() {
        let first =
            next_status(None, &verdict(true, "Accepted", "policy is active", 1), T1).unwrap();
        let next = next_status(
            Some(&first),
            &verdict(true, "Accepted", "policy is active", 2),
            T2,
        )
        .expect("observedGeneration must follow the spec edit");
        assert_eq!(next.observed_generation, Some(2));
        assert_eq!(next.conditions[0].last_transition_time, T1);
    }

    #[test]
    fn the_transition_time_moves_only_when_the_condition_status_does() {
        let accepted =
            next_status(None, &verdict(true, "Accepted", "policy is active", 1), T1).unwrap();
        let rejected = next_status(
            Some(&accepted),
            &verdict(false, "Invalid", "spec.port: bad", 2),
            T2,
        )
        .unwrap();
        assert_eq!(
            (
                rejected.conditions[0].status.as_str(),
                rejected.conditions[0].last_transition_time.as_str()
            ),
            ("False", T2)
        );
        // Still refused, for another reason: a new message, the same transition time.
        let conflict = next_status(
            Some(&rejected),
            &verdict(false, "Conflict", "another policy already applies", 3),
            "2026-01-03T00:00:00Z",
        )
        .unwrap();
        assert_eq!(conflict.conditions[0].reason, "Conflict");
        assert_eq!(conflict.conditions[0].last_transition_time, T2);
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let other = Condition {
            type_: "Reviewed".into(),
            status: "True".into(),
            reason: "ByHand".into(),
            message: "".into(),
            last_transition_time: T1.into(),
        };
        let previous = FailoverPolicyStatus {
            conditions: vec![other.clone()],
            observed_generation: None,
        };
        let next = next_status(
            Some(&previous),
            &verdict(true, "Accepted", "policy is active", 4),
            T2,
        )
        .unwrap();
        assert_eq!(next.conditions[0], other);
        assert_eq!(next.conditions[1].type_, ACCEPTED);
        assert_eq!(next.observed_generation, Some(4));
    }

    #[test]
    fn times_are_written_in_whole_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-01-02T03:04:05Z".len(), "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }

    #[test]
    fn an_unreadable_status_is_rewritten_whole() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "failover.xds.dev/v1alpha1", "kind": "FailoverPolicy",
            "metadata": {"namespace": "shop", "name": "web", "resourceVersion": "9", "generation": 2},
            "status": {"conditions": "not a list"},
        }))
        .unwrap();
        let target = StatusTarget::of(&obj, verdict(true, "Accepted", "policy is active", 2));
        assert_eq!(target.current, None);
        assert_eq!(target.resource_version.as_deref(), Some("9"));
        assert!(next_status(target.current.as_ref(), &target.verdict, T1).is_some());
    }
}
