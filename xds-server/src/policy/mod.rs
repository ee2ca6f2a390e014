//! Failover policies: what the user wrote (YAML, later a CRD), validated into [`FailoverPolicy`], and
//! resolved to one effective policy per service port (service port > service > the Service's own
//! `spec.trafficDistribution` > namespace > mesh default > built-in default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{labels, Service, ServiceId, ServicePort, TrafficDistribution};

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

/// One `failoverPriority` entry: a label key, compared with the client's own value, or `key=value`,
/// compared with that fixed value (a pin: "prefer endpoints on network n1", whoever the client is).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PriorityKey {
    pub label: String,
    pub pinned: Option<String>,
}

impl PriorityKey {
    pub fn label(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            pinned: None,
        }
    }

    pub fn pinned(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            pinned: Some(value.into()),
        }
    }

    /// The value an endpoint's label must have to match at this key, for a client whose value of the
    /// label is `client_value`. `None`: nothing matches (the client lacks the label).
    pub fn wanted<'a>(&'a self, client_value: Option<&'a str>) -> Option<&'a str> {
        self.pinned.as_deref().or(client_value)
    }
}

/// A plain (unpinned) key.
impl From<&str> for PriorityKey {
    fn from(label: &str) -> Self {
        Self::label(label)
    }
}

impl std::fmt::Display for PriorityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pinned {
            Some(v) => write!(f, "{}={v}", self.label),
            None => f.write_str(&self.label),
        }
    }
}

/// A locality pattern of `distribute`: `region/zone/subzone` segments, `*` allowed only as the last
/// segment (`eu-west4/*`, `eu-west4/eu-west4-b/*`, `*`). Without `*` all three segments are given and
/// the pattern names one locality exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalityPattern {
    /// The segments before `*` (or all three).
    pub segments: Vec<String>,
    pub wildcard: bool,
}

impl LocalityPattern {
    /// Whether a locality (region, zone, subzone; empty when unknown) is matched.
    pub fn matches(&self, locality: [&str; 3]) -> bool {
        if !self.wildcard && self.segments.len() != 3 {
            return false;
        }
        self.segments
            .iter()
            .zip(locality)
            .all(|(want, have)| want == have)
    }

    /// Whether some locality is matched by both patterns.
    pub fn overlaps(&self, other: &Self) -> bool {
        let common = self.segments.len().min(other.segments.len());
        if self.segments[..common] != other.segments[..common] {
            return false;
        }
        // Equal on the shared prefix: they overlap if the shorter one is a wildcard (or both are
        // exact, hence equal).
        let shorter = if self.segments.len() <= other.segments.len() {
            self
        } else {
            other
        };
        shorter.wildcard || self.segments.len() == other.segments.len()
    }

    /// Whether every locality `specific` matches is also matched by this pattern.
    pub fn covers(&self, specific: &Self) -> bool {
        if self.wildcard {
            specific.segments.starts_with(&self.segments)
        } else {
            self == specific
        }
    }
}

impl std::fmt::Display for LocalityPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        if self.wildcard {
            parts.push("*");
        }
        f.write_str(&parts.join("/"))
    }
}

/// `distribute: [{from, to}]`: clients whose locality matches `from` send their traffic to the `to`
/// localities by weight. The `to` localities form the first priority level together (weighted by
/// locality); every other endpoint keeps its usual ranking below them, so failover still works.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistributeRule {
    pub from: LocalityPattern,
    /// Non-overlapping patterns, weights 1..=100 summing to 100, in the order written.
    pub to: Vec<(LocalityPattern, u32)>,
}

/// What an active health check sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheckProtocol {
    /// `GET path`; healthy on a 200 answer (Envoy's default), optionally with a `Host` header.
    Http { path: String, host: Option<String> },
    /// A TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check`, optionally for one service name.
    Grpc { service: Option<String> },
}

/// `healthCheck`: every client Envoy probes every endpoint of the service; a failing endpoint is
/// unhealthy (like an ejected one), so its level loses health and traffic spills to the next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub protocol: HealthCheckProtocol,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl HealthCheck {
    pub fn new(protocol: HealthCheckProtocol) -> Self {
        Self {
            protocol,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// `spillover`: how traffic leaves a level whose hosts start failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Spillover {
    /// By Envoy's formula with `overprovisioningFactor`: a level keeps all its traffic while
    /// healthy% × factor ≥ 100, then hands over the shortfall proportionally.
    #[default]
    Gradual,
    /// A level keeps all its traffic while any of its hosts is healthy (sent as the largest
    /// overprovisioning factor we accept, [`ALL_OR_NOTHING_FACTOR`]).
    AllOrNothing,
}

/// The overprovisioning factor `spillover: allOrNothing` sends: a level stays 100% healthy while at
/// least one host in 1,000 is healthy.
pub const ALL_OR_NOTHING_FACTOR: u32 = 100_000;

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
    pub failover_priority: Vec<PriorityKey>,
    /// Within each locality rank, endpoints in the client's own cluster (`topology.istio.io/cluster`)
    /// come first. Only for the built-in key order: a user who sets `failoverPriority` decides the
    /// order alone (and can list the cluster key where they want it).
    pub prefer_own_cluster: bool,
    pub failover: Vec<RegionFailover>,
    /// Services to fail over to after every locality of this one, in order (only on a policy for one
    /// service).
    pub backups: Vec<BackupService>,
    /// Weighted first levels for clients in given localities; the first rule whose `from` matches a
    /// client applies.
    pub distribute: Vec<DistributeRule>,
    /// `None`: `outlierDetection: {enabled: false}` (for instance when health checks are the signal).
    pub outlier_detection: Option<OutlierDetection>,
    pub health_check: Option<HealthCheck>,
    pub spillover: Spillover,
    /// The factor sent to Envoy ([`ALL_OR_NOTHING_FACTOR`] with `spillover: allOrNothing`).
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

pub fn default_failover_priority() -> Vec<PriorityKey> {
    vec![
        PriorityKey::label(labels::REGION),
        PriorityKey::label(labels::ZONE),
        PriorityKey::label(labels::SUBZONE),
    ]
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            failover_priority: default_failover_priority(),
            prefer_own_cluster: true,
            failover: Vec::new(),
            backups: Vec::new(),
            distribute: Vec::new(),
            outlier_detection: Some(OutlierDetection::default()),
            health_check: None,
            spillover: Spillover::Gradual,
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
        // A pinned key compares endpoints with a fixed value: the client's own value does not matter.
        let mut keys: Vec<&str> = self
            .failover_priority
            .iter()
            .filter(|k| k.pinned.is_none())
            .map(|k| k.label.as_str())
            .collect();
        if !self.failover.is_empty() && !keys.contains(&labels::REGION) {
            keys.push(labels::REGION);
        }
        if !self.distribute.is_empty() {
            for key in [labels::REGION, labels::ZONE, labels::SUBZONE] {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// Whether endpoints in the client's cluster rank first within each locality rank. Not when the
    /// cluster key is among the policy's own keys: there it already has the place the user gave it.
    pub fn splits_by_cluster(&self) -> bool {
        self.prefer_own_cluster
            && !self
                .failover_priority
                .iter()
                .any(|k| k.label == labels::CLUSTER)
    }

    /// Failover target regions for a client region, in preference order.
    pub fn failover_targets<'a>(&'a self, client_region: &'a str) -> impl Iterator<Item = &'a str> {
        self.failover
            .iter()
            .filter(move |rule| rule.from == client_region)
            .map(|rule| rule.to.as_str())
    }

    /// The `distribute` rule for a client locality (region, zone, subzone; empty when unknown).
    pub fn distribution_for(&self, client: [&str; 3]) -> Option<&DistributeRule> {
        self.distribute.iter().find(|r| r.from.matches(client))
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
    /// No policy names the service, and its Kubernetes `spec.trafficDistribution` asks for closeness:
    /// the policy it would inherit (`over`, of scope `over_scope`; `None`: the built-in default) with
    /// [`traffic_distribution_priority`] as its `failoverPriority`.
    TrafficDistribution {
        service: ServiceId,
        value: TrafficDistribution,
        over: Box<PolicyOrigin>,
        over_scope: Option<PolicyScope>,
    },
}

impl PolicyOrigin {
    /// `NS/NAME` of a named policy, `built-in`, or for a traffic distribution
    /// `Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default shop/defaults)`.
    pub fn describe(&self) -> String {
        match self {
            Self::BuiltIn => "built-in".to_string(),
            Self::Named {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            Self::TrafficDistribution {
                service,
                value,
                over,
                over_scope,
            } => {
                let kind = match over_scope {
                    None => "built-in default".to_string(),
                    Some(PolicyScope::Mesh) => format!("mesh default {}", over.describe()),
                    Some(PolicyScope::Namespace(_)) => {
                        format!("namespace default {}", over.describe())
                    }
                    // Not produced: a policy naming the service wins over the distribution.
                    Some(_) => over.describe(),
                };
                format!("Service {service} spec.trafficDistribution={value} (over {kind})")
            }
        }
    }
}

/// What a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyScope {
    /// `namespace: "*"`.
    Mesh,
    Namespace(String),
    Service(ServiceId),
    /// One port of a service (`spec.port`): its name or its number as text, as written.
    ServicePort(ServiceId, String),
}

impl PolicyScope {
    /// The service a service or service-port policy names.
    pub fn service(&self) -> Option<&ServiceId> {
        match self {
            Self::Service(id) | Self::ServicePort(id, _) => Some(id),
            Self::Mesh | Self::Namespace(_) => None,
        }
    }
}

/// The `failoverPriority` a Service's `trafficDistribution` stands for: `PreferSameZone` (and its
/// alias `PreferClose`) same zone first, then same region, then anywhere; `PreferSameNode` the same
/// node (`kubernetes.io/hostname`, the node name) before that. A client that does not know its node
/// matches nothing at that last key, so it gets the zone order.
pub fn traffic_distribution_priority(value: TrafficDistribution) -> Vec<PriorityKey> {
    let mut keys = vec![
        PriorityKey::label(labels::REGION),
        PriorityKey::label(labels::ZONE),
    ];
    if value == TrafficDistribution::PreferSameNode {
        keys.push(PriorityKey::label(labels::HOSTNAME));
    }
    keys
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub scope: PolicyScope,
    pub origin: PolicyOrigin,
    pub policy: Arc<FailoverPolicy>,
}

/// The effective policy for one service port.
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
    /// The effective policy of one port of `service`; see [`PolicySet::resolve_port`].
    pub fn resolve(&self, service: &Service, port: &ServicePort) -> ResolvedPolicy {
        self.resolve_port(&service.id, port, service.traffic_distribution)
    }

    /// Most specific wins: a policy for the service port (matched by port name, then by number) >
    /// for the service > the Service's own `trafficDistribution` (the namespace/mesh/built-in policy
    /// below with [`traffic_distribution_priority`]) > namespace default > mesh default > built-in.
    pub fn resolve_port(
        &self,
        service: &ServiceId,
        port: &ServicePort,
        distribution: Option<TrafficDistribution>,
    ) -> ResolvedPolicy {
        // One pass without building scope keys: each entry that applies gets a rank (lower is more
        // specific), and the loader keeps at most one entry per scope, so the best rank is unique.
        // `inherited` is what a trafficDistribution stands on: the best namespace or mesh entry.
        let number = port.port.to_string();
        let rank = |scope: &PolicyScope| match scope {
            PolicyScope::ServicePort(id, p) if id == service => {
                if !port.name.is_empty() && *p == port.name {
                    Some(0)
                } else if *p == number {
                    Some(1)
                } else {
                    None
                }
            }
            PolicyScope::Service(id) if id == service => Some(2),
            PolicyScope::Namespace(ns) if *ns == service.namespace => Some(3),
            PolicyScope::Mesh => Some(4),
            _ => None,
        };
        let mut best: Option<(u8, &PolicyEntry)> = None;
        let mut inherited: Option<(u8, &PolicyEntry)> = None;
        for e in &self.entries {
            let Some(r) = rank(&e.scope) else { continue };
            if best.is_none_or(|(b, _)| r < b) {
                best = Some((r, e));
            }
            if r >= 3 && inherited.is_none_or(|(b, _)| r < b) {
                inherited = Some((r, e));
            }
        }
        let resolved = |e: &PolicyEntry| ResolvedPolicy {
            policy: e.policy.clone(),
            origin: e.origin.clone(),
        };
        if let Some((r, e)) = best {
            if r <= 2 {
                return resolved(e);
            }
        }
        let inherited = inherited.map(|(_, e)| e);
        let base = inherited.map(resolved).unwrap_or_else(|| ResolvedPolicy {
            policy: Arc::new(FailoverPolicy::default()),
            origin: PolicyOrigin::BuiltIn,
        });
        let Some(value) = distribution else {
            return base;
        };
        ResolvedPolicy {
            policy: Arc::new(FailoverPolicy {
                failover_priority: traffic_distribution_priority(value),
                prefer_own_cluster: true,
                ..(*base.policy).clone()
            }),
            origin: PolicyOrigin::TrafficDistribution {
                service: service.clone(),
                value,
                over: Box::new(base.origin),
                over_scope: inherited.map(|e| e.scope.clone()),
            },
        }
    }
}

/// The services of a backup cycle through `new`, if adding `new` to `others` closes one: `[S, B1, ..,
/// S]` where `S` is `new`'s service and each service backs up to the next. Only policies for one
/// service or one service port have backups; a service's edges are the union over its service and
/// port policies (a cycle through any port counts: backups are chosen per service, not per port).
pub fn backup_cycle<'a>(
    new: &PolicyEntry,
    others: impl IntoIterator<Item = &'a PolicyEntry>,
) -> Option<Vec<ServiceId>> {
    let start = new.scope.service()?;
    let mut edges: BTreeMap<&ServiceId, Vec<&ServiceId>> = BTreeMap::new();
    for entry in others {
        if let Some(from) = entry.scope.service() {
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
            set.resolve_port(&ServiceId::new(ns, name), &http(), None)
                .policy
                .overprovisioning_factor
        };
        assert_eq!(factor("shop", "checkout"), 103);
        assert_eq!(factor("shop", "cart"), 102);
        assert_eq!(factor("other", "checkout"), 101);
        let empty = PolicySet::default();
        let resolved = empty.resolve_port(&ServiceId::new("a", "b"), &http(), None);
        assert_eq!(resolved.origin, PolicyOrigin::BuiltIn);
        assert_eq!(*resolved.policy, FailoverPolicy::default());
    }

    fn http() -> ServicePort {
        ServicePort {
            name: "http".into(),
            port: 8080,
        }
    }

    /// The answer does not depend on the order of the entries, and look-alike scopes (another
    /// service of the namespace, the same name in another namespace, another port) never apply.
    #[test]
    fn resolution_ignores_entry_order_and_look_alike_scopes() {
        let web = ServiceId::new("shop", "web");
        let entries = vec![
            entry(
                PolicyScope::ServicePort(ServiceId::new("shop", "api"), "http".into()),
                1,
            ),
            entry(PolicyScope::ServicePort(web.clone(), "9090".into()), 2),
            entry(PolicyScope::Service(ServiceId::new("other", "web")), 3),
            entry(PolicyScope::Namespace("other".into()), 4),
            entry(PolicyScope::Mesh, 101),
            entry(PolicyScope::Namespace("shop".into()), 102),
            entry(PolicyScope::Service(web.clone()), 103),
        ];
        for reversed in [false, true] {
            let mut entries = entries.clone();
            if reversed {
                entries.reverse();
            }
            let mut set = PolicySet { entries };
            let at = |set: &PolicySet, d| set.resolve_port(&web, &http(), d);
            assert_eq!(at(&set, None).policy.overprovisioning_factor, 103);
            set.entries
                .retain(|e| e.scope != PolicyScope::Service(web.clone()));
            let zone = at(&set, Some(TrafficDistribution::PreferSameZone));
            assert_eq!(
                zone.policy.overprovisioning_factor, 102,
                "reversed {reversed}"
            );
            assert!(
                zone.origin
                    .describe()
                    .ends_with("(over namespace default x/p102)"),
                "{}",
                zone.origin.describe()
            );
            set.entries
                .retain(|e| e.scope != PolicyScope::Namespace("shop".into()));
            assert_eq!(at(&set, None).policy.overprovisioning_factor, 101);
        }
    }

    /// Service port > service > the Service's trafficDistribution > namespace > mesh > built-in,
    /// each layer removed in turn.
    #[test]
    fn resolve_order_has_six_layers() {
        let web = ServiceId::new("shop", "web");
        let grpc = ServicePort {
            name: "grpc".into(),
            port: 9090,
        };
        let mut set = PolicySet {
            entries: vec![
                entry(PolicyScope::Mesh, 101),
                entry(PolicyScope::Namespace("shop".into()), 102),
                entry(PolicyScope::Service(web.clone()), 103),
                entry(PolicyScope::ServicePort(web.clone(), "http".into()), 104),
            ],
        };
        let zone = Some(TrafficDistribution::PreferSameZone);
        let at = |set: &PolicySet, port: &ServicePort| set.resolve_port(&web, port, zone);
        // 1. service port (by name)
        assert_eq!(at(&set, &http()).policy.overprovisioning_factor, 104);
        // ... and another port of the service falls through to 2. the service policy
        assert_eq!(at(&set, &grpc).policy.overprovisioning_factor, 103);
        set.entries.pop();
        assert_eq!(at(&set, &http()).policy.overprovisioning_factor, 103);
        assert_eq!(
            at(&set, &http()).policy.failover_priority,
            default_failover_priority(),
            "a policy naming the service wins over its trafficDistribution"
        );
        // 3. the Service's trafficDistribution, over the namespace default
        set.entries.pop();
        let r = at(&set, &http());
        assert_eq!(
            r.policy.overprovisioning_factor, 102,
            "other settings inherited"
        );
        assert_eq!(
            r.policy.failover_priority,
            traffic_distribution_priority(TrafficDistribution::PreferSameZone)
        );
        assert!(r.policy.splits_by_cluster());
        assert_eq!(
            r.origin.describe(),
            "Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default x/p102)"
        );
        // 4. namespace default (no trafficDistribution)
        assert_eq!(
            set.resolve_port(&web, &http(), None)
                .policy
                .overprovisioning_factor,
            102
        );
        // over the mesh default, then over the built-in default
        set.entries.pop();
        let r = at(&set, &http());
        assert_eq!(r.policy.overprovisioning_factor, 101);
        assert!(r.origin.describe().ends_with("(over mesh default x/p101)"));
        // 5. mesh default
        assert_eq!(
            set.resolve_port(&web, &http(), None)
                .policy
                .overprovisioning_factor,
            101
        );
        set.entries.pop();
        let r = at(&set, &http());
        assert_eq!(
            r.origin.describe(),
            "Service shop/web spec.trafficDistribution=PreferSameZone (over built-in default)"
        );
        assert_eq!(
            *r.policy,
            FailoverPolicy {
                failover_priority: traffic_distribution_priority(
                    TrafficDistribution::PreferSameZone
                ),
                ..FailoverPolicy::default()
            }
        );
        // 6. built-in default
        assert_eq!(
            set.resolve_port(&web, &http(), None).origin,
            PolicyOrigin::BuiltIn
        );
    }

    #[test]
    fn prefer_same_node_adds_the_node_after_the_zone() {
        let r = PolicySet::default().resolve_port(
            &ServiceId::new("shop", "web"),
            &http(),
            Some(TrafficDistribution::PreferSameNode),
        );
        let keys: Vec<String> = r
            .policy
            .failover_priority
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, [labels::REGION, labels::ZONE, labels::HOSTNAME]);
        assert!(r.policy.client_keys().contains(&labels::HOSTNAME));
        let close = PolicySet::default().resolve_port(
            &ServiceId::new("shop", "web"),
            &http(),
            Some(TrafficDistribution::PreferClose),
        );
        assert_eq!(
            close.policy.failover_priority,
            traffic_distribution_priority(TrafficDistribution::PreferSameZone)
        );
    }

    /// FailoverPolicy custom resources name the port as a JSON number or string.
    #[test]
    fn custom_resources_scope_a_port_by_number_or_name() {
        let object = |name: &str, port: serde_json::Value| {
            Arc::new(
                serde_json::from_value::<::kube::api::DynamicObject>(serde_json::json!({
                    "apiVersion": "failover.xds.dev/v1alpha1",
                    "kind": "FailoverPolicy",
                    "metadata": {"namespace": "shop", "name": name},
                    "spec": {"service": "web", "port": port, "panicThreshold": 5},
                }))
                .unwrap(),
            )
        };
        let objects = [
            object("by-number", serde_json::json!(8080)),
            object("by-name", serde_json::json!("grpc")),
            object("bad", serde_json::json!(0)),
        ];
        let (set, verdicts) = kube::merge(&PolicySet::default(), &objects, "xds-system");
        let web = ServiceId::new("shop", "web");
        let scopes: Vec<&PolicyScope> = set.entries.iter().map(|e| &e.scope).collect();
        assert_eq!(
            scopes,
            [
                &PolicyScope::ServicePort(web.clone(), "grpc".into()),
                &PolicyScope::ServicePort(web.clone(), "8080".into()),
            ]
        );
        let bad = verdicts.iter().find(|v| v.name == "bad").unwrap();
        assert!(!bad.accepted);
        assert!(bad.message.starts_with("spec.port: "), "{}", bad.message);
        assert_eq!(
            set.resolve_port(&web, &http(), None).policy.panic_threshold,
            5
        );
    }

    #[test]
    fn a_port_policy_matches_by_name_or_number_and_the_name_wins() {
        let web = ServiceId::new("shop", "web");
        let mut set = PolicySet {
            entries: vec![
                entry(PolicyScope::ServicePort(web.clone(), "8080".into()), 1080),
                entry(PolicyScope::Service(web.clone()), 103),
            ],
        };
        let factor = |set: &PolicySet, port: &ServicePort| {
            set.resolve_port(&web, port, None)
                .policy
                .overprovisioning_factor
        };
        assert_eq!(factor(&set, &http()), 1080, "by number");
        let other = ServicePort {
            name: "admin".into(),
            port: 9000,
        };
        assert_eq!(factor(&set, &other), 103);
        set.entries.push(entry(
            PolicyScope::ServicePort(web.clone(), "http".into()),
            1081,
        ));
        assert_eq!(factor(&set, &http()), 1081, "the name wins over the number");
        // Unnamed ports (single-port Kubernetes Services) match by number only.
        let unnamed = ServicePort {
            name: String::new(),
            port: 8080,
        };
        assert_eq!(factor(&set, &unnamed), 1080);
        // Another service's port policy does not apply.
        assert_eq!(
            set.resolve_port(&ServiceId::new("shop", "api"), &http(), None)
                .origin,
            PolicyOrigin::BuiltIn
        );
    }

    #[test]
    fn backup_cycles_count_port_policies_as_the_service() {
        let (a, b) = (ServiceId::new("shop", "a"), ServiceId::new("shop", "b"));
        let backed = |scope: PolicyScope, to: &ServiceId| PolicyEntry {
            policy: Arc::new(FailoverPolicy {
                backups: vec![BackupService {
                    service: to.clone(),
                    cluster: None,
                }],
                ..FailoverPolicy::default()
            }),
            ..entry(scope, 100)
        };
        let a_port = backed(PolicyScope::ServicePort(a.clone(), "http".into()), &b);
        let b_service = backed(PolicyScope::Service(b.clone()), &a);
        assert_eq!(
            backup_cycle(&b_service, [&a_port]),
            Some(vec![b.clone(), a.clone(), b.clone()])
        );
        let b_port = backed(PolicyScope::ServicePort(b.clone(), "grpc".into()), &a);
        assert_eq!(
            backup_cycle(&a_port, [&b_port]),
            Some(vec![a.clone(), b.clone(), a.clone()])
        );
        // A service policy and a port policy of the same service are not a cycle.
        let a_service = backed(PolicyScope::Service(a.clone()), &b);
        assert_eq!(backup_cycle(&a_port, [&a_service]), None);
    }

    #[test]
    fn failover_rules_add_region_to_client_keys() {
        let policy = FailoverPolicy {
            failover_priority: vec![PriorityKey::label("topology.istio.io/cluster")],
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
