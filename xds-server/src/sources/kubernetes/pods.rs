//! What the source knows of Pods: a few fields of each, indexed by name and by IP.
//!
//! Pods are the most numerous and the largest objects watched, and all the source reads of one is
//! where it runs (node, IP, phase: locating clients) and its service account (endpoint identities).
//! So Pods are watched as [`WatchedPod`], a type that deserializes only those fields (serde skips
//! the rest of each event without keeping it), each event is folded into a [`PodIndex`] of
//! [`PodRecord`]s at once, and no Pod object is kept. The index is pure: the watch feeds it events.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;

use super::convert::{PodAccounts, DEFAULT_SERVICE_ACCOUNT};

/// A Pod as the watch deserializes it: the metadata needed to track it, and the fields of
/// [`PodRecord`]. Everything else in the API server's answer is skipped while parsing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchedPod {
    #[serde(default, deserialize_with = "identifying_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<WatchedSpec>,
    #[serde(default)]
    status: Option<WatchedStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchedSpec {
    node_name: Option<String>,
    service_account_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchedStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    phase: Option<String>,
}

/// Only what identifies the object and its version: labels, annotations and `managedFields` (often
/// the bulk of a Pod's metadata) are skipped.
fn identifying_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Identifying {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
    }
    let m = Option::<Identifying>::deserialize(d)?;
    Ok(m.map(|m| ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
    .unwrap_or_default())
}

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `(namespace, name)`.
pub type PodKey = (String, String);

/// All the source keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub ip: Option<String>,
    pub node: Option<String>,
    pub phase: Option<String>,
    /// `spec.serviceAccountName`, or the API server's default, `default`.
    pub service_account: String,
}

impl PodRecord {
    /// `None` for a Pod without a name (the API server never sends one).
    pub fn of(pod: &WatchedPod) -> Option<Self> {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let non_empty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        Some(Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: non_empty(pod.metadata.name.as_ref())?,
            ip: non_empty(status.and_then(|s| s.pod_ip.as_ref())),
            node: non_empty(spec.and_then(|s| s.node_name.as_ref())),
            phase: non_empty(status.and_then(|s| s.phase.as_ref())),
            service_account: non_empty(spec.and_then(|s| s.service_account_name.as_ref()))
                .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string()),
        })
    }

    fn key(&self) -> PodKey {
        (self.namespace.clone(), self.name.clone())
    }

    fn is_running(&self) -> bool {
        self.phase.as_deref() == Some("Running")
    }
}

/// What one watch event changed in the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodChange {
    /// A Pod appeared, went away or changed service account: endpoint identities may change.
    pub accounts: bool,
    /// A Pod appeared, went away, or changed node, IP or phase: a waiting client may now be located.
    pub placement: bool,
}

impl PodChange {
    const BOTH: Self = Self {
        accounts: true,
        placement: true,
    };
}

/// The Pods of one cluster by `(namespace, name)` and by IP, kept from the watch's events.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_key: HashMap<PodKey, PodRecord>,
    /// Several Pods can have one IP: host-network Pods share their node's, and a finished Pod's IP
    /// is given to a new one while the old one is still listed.
    by_ip: HashMap<String, BTreeSet<PodKey>>,
    /// During a relist, the Pods listed so far; they replace the index in one step once the list
    /// is complete, so lookups never see a half-listed cluster.
    relisting: Option<Vec<PodRecord>>,
}

impl PodIndex {
    /// Folds one watch event into the index.
    pub fn on_event(&mut self, event: &watcher::Event<WatchedPod>) -> PodChange {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(Vec::new());
                PodChange::default()
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(list), Some(record)) = (&mut self.relisting, PodRecord::of(pod)) {
                    list.push(record);
                }
                PodChange::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                self.by_key.clear();
                self.by_ip.clear();
                for record in listed {
                    self.insert(record);
                }
                PodChange::BOTH
            }
            watcher::Event::Apply(pod) => PodRecord::of(pod)
                .map(|record| self.insert(record))
                .unwrap_or_default(),
            watcher::Event::Delete(pod) => PodRecord::of(pod)
                .map(|record| self.remove(&record.key()))
                .unwrap_or_default(),
        }
    }

    /// Adds or replaces a Pod; what that changed.
    pub fn insert(&mut self, record: PodRecord) -> PodChange {
        let key = record.key();
        let old = self.by_key.get(&key);
        let change = match old {
            None => PodChange::BOTH,
            Some(old) => PodChange {
                accounts: old.service_account != record.service_account,
                placement: (&old.ip, &old.node, &old.phase)
                    != (&record.ip, &record.node, &record.phase),
            },
        };
        if change == PodChange::default() {
            return change;
        }
        self.remove(&key);
        if let Some(ip) = &record.ip {
            self.by_ip
                .entry(ip.clone())
                .or_default()
                .insert(key.clone());
        }
        self.by_key.insert(key, record);
        change
    }

    /// Forgets a Pod; what that changed.
    pub fn remove(&mut self, key: &PodKey) -> PodChange {
        let Some(old) = self.by_key.remove(key) else {
            return PodChange::default();
        };
        if let Some(ip) = &old.ip {
            if let Some(keys) = self.by_ip.get_mut(ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
        PodChange::BOTH
    }

    pub fn by_name(&self, namespace: &str, name: &str) -> Option<&PodRecord> {
        self.by_key.get(&(namespace.to_string(), name.to_string()))
    }

    /// The running Pod with this IP (the first by namespace and name if, briefly, several are).
    pub fn by_ip(&self, ip: &str) -> Option<&PodRecord> {
        self.by_ip
            .get(ip)?
            .iter()
            .filter_map(|key| self.by_key.get(key))
            .find(|p| p.is_running())
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The service account of every Pod, for endpoint identities.
    pub fn accounts(&self) -> PodAccounts {
        PodAccounts(
            self.by_key
                .iter()
                .map(|(key, p)| (key.clone(), p.service_account.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
