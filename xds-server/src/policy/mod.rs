//! Failover policies: what the user wrote (YAML, later a CRD), validated into [`FailoverPolicy`], and
//! resolved to one effective policy per service (service > namespace > mesh default > built-in default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{labels, ServiceId};

pub mod crd;
pub mod kube;
pub mod load;

/// A region → region rule: clients in `from` prefer `to` right after their own region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionFailover {
    pub from: String,
    pub to: String,
}

/// A backup service (what Linkerd and Consul call failover): its endpoints become the lowest
/// priorities, after every locality of the primary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupService {
    pub service: ServiceId,
    /// Only the backup's endpoints in this cluster (`topology.istio.io/cluster`).
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    /// Connection failures and 502/503/504. Envoy's own default leaves this unenforced; we enforce it,
    /// because a refused connection is the clearest "this locality is gone" signal there is.
    pub consecutive_gateway_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 2,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            // 100 so that a whole dead zone can be ejected; Envoy's default (10) would keep sending
            // most of the traffic to a dead zone.
            max_ejection_percent: 100,
        }
    }
}

/// The validated settings the translator applies to one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailoverPolicy {
    /// Ordered label keys; an endpoint's priority is decided by how many leading keys match the client.
    /// Never empty after validation: the built-in order is region, zone, subzone.
    pub failover_priority: Vec<String>,
    /// Within each locality rank, endpoints in the client's own cluster (`topology.istio.io/cluster`)
    /// come first. Only for the built-in key order: a user who sets `failoverPriority` decides the
    /// order alone (and can list the cluster key where they want it).
    pub prefer_own_cluster: bool,
    pub failover: Vec<RegionFailover>,
    /// Services to fail over to after every locality of this one, in order (only on a policy for one
    /// service).
    pub backups: Vec<BackupService>,
    pub outlier_detection: OutlierDetection,
    pub overprovisioning_factor: u32,
    /// Percent; 0 disables Envoy's panic mode, which would otherwise spread traffic over dead hosts in
    /// exactly the large outages failover exists for.
    pub panic_threshold: u32,
    /// Whether sidecars talk to this service over mTLS (certificates from SDS).
    pub mtls: MtlsMode,
}

/// `spec.mtls`: how sidecars connect to a service's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Plaintext.
    #[default]
    Disable,
    /// mTLS with the `default` certificate and `ROOTCA` trust bundle from SDS; the endpoints must be
    /// sidecars' inbound mTLS ports.
    Strict,
}

pub fn default_failover_priority() -> Vec<String> {
    vec![
        labels::REGION.to_string(),
        labels::ZONE.to_string(),
        labels::SUBZONE.to_string(),
    ]
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            failover_priority: default_failover_priority(),
            prefer_own_cluster: true,
            failover: Vec::new(),
            backups: Vec::new(),
            outlier_detection: OutlierDetection::default(),
            overprovisioning_factor: 140,
            panic_threshold: 0,
            mtls: MtlsMode::Disable,
        }
    }
}

impl FailoverPolicy {
    /// The label keys whose client values decide this policy's EDS answer. Clients that agree on all of
    /// them share one encoded answer.
    pub fn client_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.failover_priority.iter().map(String::as_str).collect();
        if !self.failover.is_empty() && !keys.contains(&labels::REGION) {
            keys.push(labels::REGION);
        }
        keys
    }

    /// Whether endpoints in the client's cluster rank first within each locality rank. Not when the
    /// cluster key is among the policy's own keys: there it already has the place the user gave it.
    pub fn splits_by_cluster(&self) -> bool {
        self.prefer_own_cluster && !self.failover_priority.iter().any(|k| k == labels::CLUSTER)
    }

    /// Failover target regions for a client region, in preference order.
    pub fn failover_targets<'a>(&'a self, client_region: &'a str) -> impl Iterator<Item = &'a str> {
        self.failover
            .iter()
            .filter(move |rule| rule.from == client_region)
            .map(|rule| rule.to.as_str())
    }
}

/// Which policy object a setting came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyOrigin {
    BuiltIn,
    /// A named policy and where it was read from (a file path).
    Named {
        namespace: String,
        name: String,
        source: String,
    },
}

/// What a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyScope {
    /// `namespace: "*"`.
    Mesh,
    Namespace(String),
    Service(ServiceId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub scope: PolicyScope,
    pub origin: PolicyOrigin,
    pub policy: Arc<FailoverPolicy>,
}

/// The effective policy for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPolicy {
    pub policy: Arc<FailoverPolicy>,
    pub origin: PolicyOrigin,
}

/// All active policies. At most one entry per scope (the loader rejects duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub entries: Vec<PolicyEntry>,
}

impl PolicySet {
    /// Most specific wins: service > namespace > mesh default > built-in default.
    pub fn resolve(&self, service: &ServiceId) -> ResolvedPolicy {
        let find = |scope: &PolicyScope| self.entries.iter().find(|e| &e.scope == scope);
        find(&PolicyScope::Service(service.clone()))
            .or_else(|| find(&PolicyScope::Namespace(service.namespace.clone())))
            .or_else(|| find(&PolicyScope::Mesh))
            .map(|e| ResolvedPolicy {
                policy: e.policy.clone(),
                origin: e.origin.clone(),
            })
            .unwrap_or_else(|| ResolvedPolicy {
                policy: Arc::new(FailoverPolicy::default()),
                origin: PolicyOrigin::BuiltIn,
            })
    }
}

/// The services of a backup cycle through `new`, if adding `new` to `others` closes one: `[S, B1, ..,
/// S]` where `S` is `new`'s service and each service backs up to the next. Only policies for one
/// service have backups, so each service has at most one list of backups.
pub fn backup_cycle<'a>(
    new: &PolicyEntry,
    others: impl IntoIterator<Item = &'a PolicyEntry>,
) -> Option<Vec<ServiceId>> {
    let PolicyScope::Service(start) = &new.scope else {
        return None;
    };
    let mut edges: BTreeMap<&ServiceId, Vec<&ServiceId>> = BTreeMap::new();
    for entry in others {
        if let PolicyScope::Service(from) = &entry.scope {
            if from != start {
                edges
                    .entry(from)
                    .or_default()
                    .extend(entry.policy.backups.iter().map(|b| &b.service));
            }
        }
    }
    edges.insert(
        start,
        new.policy.backups.iter().map(|b| &b.service).collect(),
    );
    // Breadth first from `start`: the shortest way back is the clearest one to report.
    let mut parent: BTreeMap<&ServiceId, &ServiceId> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in edges.get(at).map(Vec::as_slice).unwrap_or_default() {
            if next == start {
                let mut path = vec![at.clone()];
                let mut cur = at;
                while cur != start {
                    cur = parent[cur];
                    path.push(cur.clone());
                }
                path.reverse();
                path.push(start.clone());
                return Some(path);
            }
            if next != start && !parent.contains_key(next) {
                parent.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// A policy that is not in force, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedPolicy {
    /// `file:PATH` or `kubernetes:NAMESPACE/NAME`.
    pub source: String,
    pub error: String,
}

/// Policies not in force right now, published on a `watch` channel for the admin API. The policy file
/// watcher and the custom resource watcher each replace only their own list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Files whose current content is invalid or conflicts with another file (their last good
    /// policies, if any, stay in force).
    pub files: Vec<RejectedPolicy>,
    /// FailoverPolicy custom resources marked `Accepted=False`.
    pub custom_resources: Vec<RejectedPolicy>,
}

impl PolicyStatus {
    pub fn rejected(&self) -> impl Iterator<Item = &RejectedPolicy> {
        self.files.iter().chain(&self.custom_resources)
    }
}

/// Replaces one part of the published status, waking readers only if it changed.
pub fn publish_rejected(
    status: &tokio::sync::watch::Sender<PolicyStatus>,
    part: fn(&mut PolicyStatus) -> &mut Vec<RejectedPolicy>,
    rejected: Vec<RejectedPolicy>,
) {
    status.send_if_modified(|s| {
        let slot = part(s);
        if *slot == rejected {
            return false;
        }
        *slot = rejected;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scope: PolicyScope, factor: u32) -> PolicyEntry {
        PolicyEntry {
            scope,
            origin: PolicyOrigin::Named {
                namespace: "x".into(),
                name: format!("p{factor}"),
                source: "test".into(),
            },
            policy: Arc::new(FailoverPolicy {
                overprovisioning_factor: factor,
                ..FailoverPolicy::default()
            }),
        }
    }

    #[test]
    fn most_specific_scope_wins() {
        let set = PolicySet {
            entries: vec![
                entry(PolicyScope::Mesh, 101),
                entry(PolicyScope::Namespace("shop".into()), 102),
                entry(
                    PolicyScope::Service(ServiceId::new("shop", "checkout")),
                    103,
                ),
            ],
        };
        let factor = |ns: &str, name: &str| {
            set.resolve(&ServiceId::new(ns, name))
                .policy
                .overprovisioning_factor
        };
        assert_eq!(factor("shop", "checkout"), 103);
        assert_eq!(factor("shop", "cart"), 102);
        assert_eq!(factor("other", "checkout"), 101);
        let empty = PolicySet::default();
        let resolved = empty.resolve(&ServiceId::new("a", "b"));
        assert_eq!(resolved.origin, PolicyOrigin::BuiltIn);
        assert_eq!(*resolved.policy, FailoverPolicy::default());
    }

    #[test]
    fn failover_rules_add_region_to_client_keys() {
        let policy = FailoverPolicy {
            failover_priority: vec!["topology.istio.io/cluster".into()],
            failover: vec![RegionFailover {
                from: "a".into(),
                to: "b".into(),
            }],
            ..FailoverPolicy::default()
        };
        assert_eq!(
            policy.client_keys(),
            vec!["topology.istio.io/cluster", labels::REGION]
        );
        assert_eq!(policy.failover_targets("a").collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(policy.failover_targets("b").count(), 0);
    }
}
