//! FailoverPolicy custom resources, watched and merged with file policies.
//!
//! Objects are read as untyped JSON and validated by the same code as policy files, so one malformed
//! object is rejected on its own (with an `Accepted=False` status condition saying why) instead of failing
//! the whole watch. On a scope conflict a file policy wins over a custom resource: file policies ship
//! with the server's own deployment, reviewed with it, while custom resources can be written by anyone
//! with rights in a namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::crd::FailoverPolicy as FailoverPolicyCrd;
use super::publish_rejected;
use super::status::StatusTarget;
use xds_core::policy::parse::{parse_policies, KIND};
use xds_core::policy::{PolicyEntry, PolicyScope, PolicySet, PolicyStatus, RejectedPolicy};

/// The verdict on one custom resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub accepted: bool,
    pub reason: String,
    pub message: String,
}

fn object_id(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Validates custom resources and merges them under the file policies. Pure.
pub fn merge(
    file: &PolicySet,
    objects: &[Arc<DynamicObject>],
    mesh_namespace: &str,
) -> (PolicySet, Vec<Verdict>) {
    let mut objects: Vec<&DynamicObject> = objects.iter().map(|o| o.as_ref()).collect();
    // Oldest first: on a conflict between two custom resources the older one keeps its scope.
    objects.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            object_id(a),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                object_id(b),
            ))
    });
    let mut entries: Vec<PolicyEntry> = file.entries.clone();
    let mut owner: HashMap<PolicyScope, String> = file
        .entries
        .iter()
        .map(|e| (e.scope.clone(), "a policy file".to_string()))
        .collect();
    let mut verdicts = Vec::new();
    for obj in objects {
        let (namespace, name) = object_id(obj);
        let spec = obj.data.get("spec").cloned().unwrap_or(json!({}));
        let mesh_wide =
            namespace == mesh_namespace && spec.get("service").is_none_or(|s| s.is_null());
        let document = json!({
            "kind": KIND,
            "metadata": {"name": name, "namespace": if mesh_wide { "*" } else { namespace.as_str() }},
            "spec": spec,
        });
        let source = format!("FailoverPolicy {namespace}/{name}");
        let verdict = |accepted: bool, reason: &str, message: String| Verdict {
            namespace: namespace.clone(),
            name: name.clone(),
            generation: obj.metadata.generation,
            accepted,
            reason: reason.to_string(),
            message,
        };
        let text = serde_yaml_ng::to_string(&document).unwrap_or_default();
        match parse_policies(&source, &text) {
            Err(err) => {
                let field = err.field();
                let message = if field.is_empty() {
                    err.reason()
                } else {
                    format!("{field}: {}", err.reason())
                };
                warn!(policy = %source, %message, "FailoverPolicy rejected");
                verdicts.push(verdict(false, "Invalid", message));
            }
            Ok(parsed) => {
                // One document in, one entry out. Its origin names the object, not the YAML we made.
                let mut entry = parsed.into_iter().next().expect("one document parsed");
                entry.origin = xds_core::policy::PolicyOrigin::Named {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: "kubernetes".to_string(),
                };
                if let Some(other) = owner.get(&entry.scope) {
                    let message = format!("another policy already applies to this scope: {other}");
                    warn!(policy = %source, %message, "FailoverPolicy not applied");
                    verdicts.push(verdict(false, "Conflict", message));
                } else if let Some(cycle) = xds_core::policy::backup_cycle(&entry, &entries) {
                    let hops: Vec<String> = cycle.iter().map(ToString::to_string).collect();
                    let message = format!(
                        "spec.backups: backups would form a cycle with the policies in force: {}; \
                         a service cannot be a backup of its own backup: remove one of these backups",
                        hops.join(" → ")
                    );
                    warn!(policy = %source, %message, "FailoverPolicy rejected");
                    verdicts.push(verdict(false, "Invalid", message));
                } else {
                    owner.insert(entry.scope.clone(), source.clone());
                    entries.push(entry);
                    verdicts.push(verdict(true, "Accepted", "policy is active".to_string()));
                }
            }
        }
    }
    (PolicySet { entries }, verdicts)
}

fn current_condition(obj: &DynamicObject) -> Option<(String, String, String)> {
    let conditions = obj.data.get("status")?.get("conditions")?.as_array()?;
    let c = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Accepted"))?;
    let s = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// Counts a verdict on an object that differs from the last one this process saw of it (or, on first
/// sight, from the condition the object carries): a reload that took, or one that was refused.
/// Counted here, not where status is written, so every replica counts, not only the status writer.
fn count_new_verdicts(
    seen: &mut HashMap<(String, String), (String, String, String)>,
    objects: &BTreeMap<(String, String), &Arc<DynamicObject>>,
    verdicts: &[Verdict],
) {
    for v in verdicts {
        let id = (v.namespace.clone(), v.name.clone());
        let status = if v.accepted { "True" } else { "False" };
        let now = (status.to_string(), v.reason.clone(), v.message.clone());
        let before = match seen.get(&id) {
            Some(before) => Some(before.clone()),
            None => objects.get(&id).and_then(|o| current_condition(o)),
        };
        if before.as_ref() != Some(&now) {
            crate::metrics::metrics()
                .policy_reloads
                .get_or_create(&crate::metrics::result_label(v.accepted))
                .inc();
        }
        seen.insert(id, now);
    }
    seen.retain(|id, _| objects.contains_key(id));
}

/// The objects not accepted, for the admin API: `kubernetes:NS/NAME` and `REASON: MESSAGE`.
pub fn rejected(verdicts: &[Verdict]) -> Vec<RejectedPolicy> {
    verdicts
        .iter()
        .filter(|v| !v.accepted)
        .map(|v| RejectedPolicy {
            source: format!("kubernetes:{}/{}", v.namespace, v.name),
            error: format!("{}: {}", v.reason, v.message),
        })
        .collect()
}

/// Watches FailoverPolicy objects and publishes the merged (file + custom resource) policy set. Sends
/// `Some` once the first list is complete — or at once if the CRD is not installed, so a cluster without
/// it still gets file policies. Rejected objects are also published to `status`, and every object's
/// verdict to `status_targets`, for the status writer ([`super::status`]) — after the policy, and
/// without waiting for any write: the API server's latency never delays a policy.
pub async fn run(
    client: Client,
    mesh_namespace: String,
    mut file_policies: watch::Receiver<Arc<PolicySet>>,
    tx: watch::Sender<Option<Arc<PolicySet>>>,
    status: Option<watch::Sender<PolicyStatus>>,
    status_targets: Option<watch::Sender<Arc<Vec<StatusTarget>>>>,
) {
    let resource = ApiResource::erase::<FailoverPolicyCrd>(&());
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let store: Store<DynamicObject> = writer.as_reader();
    let mut events = reflector::reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    )
    .boxed();
    let mut synced = false;
    let mut missing_crd_reported = false;
    let mut seen_verdicts = HashMap::new();
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Ok(watcher::Event::InitDone)) => {
                    if !synced {
                        info!("FailoverPolicy custom resources listed");
                    }
                    synced = true;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let not_installed = error.to_string().contains("404");
                    if not_installed && !synced && !missing_crd_reported {
                        warn!("FailoverPolicy CRD not installed; only file policies apply until it is");
                        missing_crd_reported = true;
                        let file = file_policies.borrow().clone();
                        let _ = tx.send(Some(file));
                    } else if !not_installed {
                        warn!(%error, "FailoverPolicy watch error; retrying, keeping the current policies");
                    }
                    continue;
                }
            },
            changed = file_policies.changed() => if changed.is_err() { return },
        }
        if !synced {
            continue;
        }
        // Coalesce a burst of object changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let objects = store.state();
        let file = file_policies.borrow_and_update().clone();
        let (merged, verdicts) = merge(&file, &objects, &mesh_namespace);
        let by_id: BTreeMap<(String, String), &Arc<DynamicObject>> =
            objects.iter().map(|o| (object_id(o), o)).collect();
        count_new_verdicts(&mut seen_verdicts, &by_id, &verdicts);
        if let Some(status) = &status {
            publish_rejected(status, |s| &mut s.custom_resources, rejected(&verdicts));
        }
        // The policy first: what Envoy gets never waits for a status write.
        if tx.borrow().as_deref() != Some(&merged) && tx.send(Some(Arc::new(merged))).is_err() {
            return;
        }
        if let Some(targets) = &status_targets {
            let next: Vec<StatusTarget> = verdicts
                .into_iter()
                .filter_map(|v| {
                    let obj = by_id.get(&(v.namespace.clone(), v.name.clone()))?;
                    Some(StatusTarget::of(obj, v))
                })
                .collect();
            targets.send_if_modified(|current| {
                if **current == next {
                    return false;
                }
                *current = Arc::new(next);
                true
            });
        }
    }
}

#[cfg(test)]
mod tests;
