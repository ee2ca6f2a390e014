//! Failover policies: what the user wrote (YAML, later a CRD), validated into [`FailoverPolicy`], and
//! resolved to one effective policy per service port (service port > service > the Service's own
//! `spec.trafficDistribution` > namespace > mesh default > built-in default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{labels, Service, ServiceId, ServicePort, TrafficDistribution};

pub mod files;
pub mod parse;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

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

/// `fleetFailover.mode`: what the server does when the load reports of many clients show a locality
/// failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FleetMode {
    /// Reports are not judged (the default).
    #[default]
    Off,
    /// Verdicts are logged, counted and sent as events; EDS is never changed.
    Observe,
    /// A failing locality's endpoints are sent UNHEALTHY to every client of the service.
    Enforce,
}

impl FleetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Observe => "observe",
            Self::Enforce => "enforce",
        }
    }
}

impl std::fmt::Display for FleetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ratio in (0, 1], kept in parts per million so that policies stay `Eq` and `Hash` (they key the
/// snapshot's reuse of cluster entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ratio {
    per_million: u32,
}

impl Ratio {
    pub const ONE: Self = Self {
        per_million: 1_000_000,
    };

    /// The nearest ratio to `value` (rounded to parts per million), or `None` outside (0, 1] (or a
    /// value that rounds to 0).
    pub fn new(value: f64) -> Option<Self> {
        if !(value > 0.0 && value <= 1.0) {
            return None;
        }
        let per_million = (value * 1_000_000.0).round() as u32;
        (per_million > 0).then_some(Self { per_million })
    }

    pub fn value(self) -> f64 {
        f64::from(self.per_million) / 1_000_000.0
    }

    /// Whether `errors` out of `requests` reach this ratio (exactly, in integers).
    pub fn reached_by(self, errors: u64, requests: u64) -> bool {
        requests > 0
            && u128::from(errors) * 1_000_000 >= u128::from(self.per_million) * u128::from(requests)
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// `fleetFailover`: the server's own verdict on a locality, from the load reports (LRS) of every
/// client of the service. One Envoy ejects a host only after its own consecutive errors, so each
/// client pays for the same outage, and a quiet client (or one that starts after the failure) takes
/// long to notice; the server, hearing from the whole fleet, knows earlier than any of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetFailover {
    pub mode: FleetMode,
    /// Clients that must have reported requests to the locality within `window`; at least 2, so one
    /// client's reports (a broken client, a lying one) never eject anything.
    pub min_reporters: u32,
    /// Requests to the locality within `window`, summed over the reporters.
    pub min_requests: u64,
    /// Errors / requests at or above which the locality is failing.
    pub error_ratio: Ratio,
    /// The span of reports judged.
    pub window: Duration,
    /// How long an ejected locality stays out before it is tried again (doubled for each ejection in
    /// a row, up to [`FleetFailover::MAX_EJECT_FOR`] or `ejectFor` if longer).
    pub eject_for: Duration,
    /// Never more than this percent of the service port's endpoints ejected at once.
    pub max_ejected_percent: u32,
}

impl FleetFailover {
    /// The longest a repeated ejection lasts (unless `ejectFor` itself is longer): Envoy's default
    /// `max_ejection_time` for outlier detection.
    pub const MAX_EJECT_FOR: Duration = Duration::from_secs(300);

    pub fn is_on(&self) -> bool {
        self.mode != FleetMode::Off
    }
}

impl Default for FleetFailover {
    fn default() -> Self {
        Self {
            mode: FleetMode::Off,
            min_reporters: 2,
            min_requests: 20,
            error_ratio: Ratio {
                per_million: 500_000,
            },
            window: Duration::from_secs(10),
            eject_for: Duration::from_secs(30),
            max_ejected_percent: 50,
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
    /// Whether the server marks localities unhealthy from the fleet's load reports.
    pub fleet_failover: FleetFailover,
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
            fleet_failover: FleetFailover::default(),
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

/// The built-in policy, one shared value: every service port without a policy of its own resolves to
/// the same `Arc`, so what is worked out per policy (a client's locality class, for one) is worked out
/// once for all of them.
fn built_in() -> Arc<FailoverPolicy> {
    static BUILT_IN: std::sync::LazyLock<Arc<FailoverPolicy>> =
        std::sync::LazyLock::new(|| Arc::new(FailoverPolicy::default()));
    BUILT_IN.clone()
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
            policy: built_in(),
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

#[cfg(test)]
mod tests;
