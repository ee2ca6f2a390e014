//! The versioned cache between the translator and the xDS server.
//!
//! A [`Snapshot`] is an immutable view of everything a client can be sent. Answers are built lazily and
//! memoised: a cluster's EDS answer once per [`LocalityClass`] (not per client), the listener once per
//! requested bind address, the routes once per client namespace. A new snapshot reuses the memo of every
//! cluster whose service and policy did not change, so an endpoint change re-encodes only what it touched.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dashmap::DashMap;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use crate::model::secrets::SecretSet;
use crate::model::SpiffeId;
use crate::model::{ClientInfo, ClientKind, Inbound, Registry};
use crate::policy::{FailoverPolicy, PolicySet, ResolvedPolicy};
use crate::translate::input::{ClusterInput, FleetEjections};
use crate::translate::{self, grpc, mtls, resources, LocalityClass};
use tracing::warn;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The resource types we serve, in make-before-break push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl ResourceType {
    /// Secrets first: a certificate must be in place before the clusters and listeners that use it.
    pub const PUSH_ORDER: [ResourceType; 5] = [
        ResourceType::Secret,
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub fn from_type_url(url: &str) -> Option<Self> {
        match url {
            CLUSTER_TYPE => Some(Self::Cluster),
            ENDPOINT_TYPE => Some(Self::Endpoint),
            LISTENER_TYPE => Some(Self::Listener),
            ROUTE_TYPE => Some(Self::Route),
            SECRET_TYPE => Some(Self::Secret),
            _ => None,
        }
    }

    pub fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => CLUSTER_TYPE,
            Self::Endpoint => ENDPOINT_TYPE,
            Self::Listener => LISTENER_TYPE,
            Self::Route => ROUTE_TYPE,
            Self::Secret => SECRET_TYPE,
        }
    }

    /// CDS and LDS are always sent whole; EDS and RDS only for the names a client asks for.
    pub fn is_wildcard_type(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }

    /// The type whose resources a change of this type forces Envoy to fetch again (a re-created cluster
    /// waits for its endpoints, a re-created listener for its routes).
    pub fn dependent(self) -> Option<Self> {
        match self {
            Self::Cluster => Some(Self::Endpoint),
            Self::Listener => Some(Self::Route),
            _ => None,
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            Self::Cluster => "CDS",
            Self::Endpoint => "EDS",
            Self::Listener => "LDS",
            Self::Route => "RDS",
            Self::Secret => "SDS",
        }
    }

    /// Whether the admin API and CSDS may show a resource's contents: never for secrets (keys).
    pub fn shows_contents(self) -> bool {
        self != Self::Secret
    }
}

/// One encoded resource and a content hash that serves as its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub any: Any,
    pub hash: u64,
    /// `any` encoded, once: responses write these bytes (the protocol's wire encoding, `protocol::wire`).
    pub encoded: bytes::Bytes,
}

impl Resource {
    fn new<T: prost::Name + prost::Message>(name: String, message: T) -> Arc<Self> {
        let any = pack_any(message);
        let hash = content_hash(&any.value);
        let encoded = bytes::Bytes::from(prost::Message::encode_to_vec(&any));
        Arc::new(Self {
            name,
            any,
            hash,
            encoded,
        })
    }
}

/// Stable within one build of the server, which is all a version needs: Envoy only compares versions
/// for equality, and a restarted server answers every new stream anyway.
fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Most keys one memo holds (locality classes per cluster, route tables by namespace, listeners by bind
/// address, inbound listeners, app clusters). Keys come from what clients send, so a memo must not grow
/// with them: past this, answers are built for each client and not kept (still correct, only slower).
/// Far above what a mesh needs: answers are kept once per *class*, and memos drop what no connected
/// client needs ([`Snapshot::retain_for`]).
pub const MAX_MEMO_KEYS: usize = 1024;

/// The memoised answer for `key`, else `build()`'s, kept if the memo has room. `build` runs without any
/// shard lock held: a DashMap `entry().or_insert_with(build)` would hold the shard's write lock for the
/// whole translation, stalling every client whose key hashes to that shard.
fn memoised<K: Eq + Hash + Clone, S: std::hash::BuildHasher + Clone>(
    memo: &DashMap<K, Arc<Resource>, S>,
    key: &K,
    build: impl FnOnce() -> Arc<Resource>,
) -> Arc<Resource> {
    if let Some(hit) = memo.get(key) {
        return hit.clone();
    }
    let built = build();
    if memo.len() >= MAX_MEMO_KEYS {
        return built;
    }
    // Two clients of a new key may race here; both built the same bytes, the first one kept is shared.
    memo.entry(key.clone()).or_insert(built).clone()
}

/// The route configuration a client in `namespace` is sent (bare service names resolve there).
fn route_resource(registry: &Registry, namespace: Option<&str>) -> Arc<Resource> {
    Resource::new(
        resources::ROUTE_CONFIG_NAME.to_string(),
        resources::route_configuration(registry.services.values(), namespace),
    )
}

/// A client's locality class per policy, during one lookup of many clusters: the class depends only on
/// the policy's keys, and most clusters share one policy, so it is worked out once per distinct policy
/// (up to [`ClassMemo::MAX`]; past that, per cluster). Keyed by the policy's address, which is stable
/// while the snapshot holding the policy is borrowed, as it is for the memo's whole life.
#[derive(Default)]
struct ClassMemo(Vec<(*const FailoverPolicy, LocalityClass)>);

impl ClassMemo {
    const MAX: usize = 32;

    fn class(&mut self, cluster: &ClusterEntry, client: &ClientInfo) -> Cow<'_, LocalityClass> {
        let key = Arc::as_ptr(&cluster.policy.policy);
        if let Some(i) = self.0.iter().position(|(k, _)| *k == key) {
            return Cow::Borrowed(&self.0[i].1);
        }
        let class = cluster.class_of(client);
        if self.0.len() >= Self::MAX {
            return Cow::Owned(class);
        }
        self.0.push((key, class));
        Cow::Borrowed(&self.0.last().expect("just pushed").1)
    }
}

/// Resources of one kind for one client, looked up by name ([`Snapshot::lookup`]).
pub struct Lookup<'s> {
    snapshot: &'s Snapshot,
    kind: ResourceType,
    client: &'s ClientInfo,
    classes: ClassMemo,
}

impl Lookup<'_> {
    /// What [`Snapshot::resource`] answers for this name.
    pub fn get(&mut self, name: &str) -> Option<Arc<Resource>> {
        if self.kind != ResourceType::Endpoint {
            return self.snapshot.resource(self.kind, self.client, name);
        }
        let c = self.snapshot.clusters.get(name)?;
        let class = self.classes.class(c, self.client);
        Some(c.load_assignment_for(self.client.kind, &class))
    }
}

/// A cluster's EDS answers per locality class. Every client's every lookup hashes a class (a full
/// answer is one lookup per cluster): hashed with foldhash, not the default SipHash, which was most of
/// a lookup's cost. Seeded per map; the classes are the clients' own locality labels, bounded by the
/// limits, and [`MAX_MEMO_KEYS`] bounds how many a map holds.
type ClassAnswers = DashMap<LocalityClass, Arc<Resource>, foldhash::fast::RandomState>;

/// Everything the snapshot needs to answer for one Envoy cluster (one service port).
#[derive(Debug)]
pub struct ClusterEntry {
    /// The service port, its backups' endpoints and the gateways they need: all the EDS answers
    /// are computed from.
    pub input: ClusterInput,
    pub policy: ResolvedPolicy,
    pub cluster: Arc<Resource>,
    eds: ClassAnswers,
    /// The CDS resource for proxyless gRPC clients, built when the first one asks.
    grpc_cluster: std::sync::OnceLock<Arc<Resource>>,
    /// gRPC clients' EDS answers per class: the same plan as `eds`, in gRPC's form.
    grpc_eds: ClassAnswers,
    /// `false` only for the benchmark baseline: every call builds and encodes its own answer.
    shared: bool,
}

impl ClusterEntry {
    fn new(name: String, input: ClusterInput, policy: ResolvedPolicy, shared: bool) -> Self {
        let cluster = Resource::new(
            name.clone(),
            resources::cluster(&name, &policy.policy, &input.peer_identities()),
        );
        Self {
            input,
            policy,
            cluster,
            eds: ClassAnswers::default(),
            grpc_cluster: std::sync::OnceLock::new(),
            grpc_eds: ClassAnswers::default(),
            shared,
        }
    }

    pub fn name(&self) -> &str {
        &self.cluster.name
    }

    /// The CDS resource. Shared by every client unless sharing is off.
    pub fn cluster_resource(&self) -> Arc<Resource> {
        if self.shared {
            self.cluster.clone()
        } else {
            Resource::new(
                self.name().to_string(),
                resources::cluster(
                    self.name(),
                    &self.policy.policy,
                    &self.input.peer_identities(),
                ),
            )
        }
    }

    /// The CDS resource for clients of `kind`. Shared by every client of that kind unless sharing is
    /// off.
    pub fn cluster_resource_for(&self, kind: ClientKind) -> Arc<Resource> {
        let build_grpc = || {
            Resource::new(
                self.name().to_string(),
                grpc::cluster(self.name(), &self.policy.policy),
            )
        };
        match kind {
            ClientKind::Envoy => self.cluster_resource(),
            ClientKind::Grpc if self.shared => self.grpc_cluster.get_or_init(build_grpc).clone(),
            ClientKind::Grpc => build_grpc(),
        }
    }

    /// The EDS answer for one class of clients of `kind`, computed and encoded at most once.
    pub fn load_assignment_for(&self, kind: ClientKind, class: &LocalityClass) -> Arc<Resource> {
        if kind == ClientKind::Envoy {
            return self.load_assignment(class);
        }
        let build = || {
            let plan = translate::priorities(class, &self.input, &self.policy.policy);
            let cla = grpc::load_assignment(self.name(), &self.input, class, &plan);
            Resource::new(self.name().to_string(), cla)
        };
        if !self.shared {
            return build();
        }
        memoised(&self.grpc_eds, class, build)
    }

    /// The EDS answer for one class of clients, computed and encoded at most once.
    pub fn load_assignment(&self, class: &LocalityClass) -> Arc<Resource> {
        let build = || {
            let policy = &self.policy.policy;
            let plan = translate::priorities(class, &self.input, policy);
            let cla = resources::load_assignment(self.name(), &self.input, class, &plan, policy);
            Resource::new(self.name().to_string(), cla)
        };
        if !self.shared {
            return build();
        }
        memoised(&self.eds, class, build)
    }

    /// Bytes of encoded CDS and EDS answers held for this cluster (one per class and kind seen).
    pub fn cached_bytes(&self) -> usize {
        self.cluster.any.value.len()
            + self.grpc_cluster.get().map_or(0, |c| c.any.value.len())
            + self
                .eds
                .iter()
                .chain(self.grpc_eds.iter())
                .map(|e| e.value().any.value.len())
                .sum::<usize>()
    }

    pub fn class_of(&self, client: &ClientInfo) -> LocalityClass {
        LocalityClass::of(client, &self.policy.policy)
    }
}

/// Clusters whose entry is not the very one `previous` had, and whether any CDS resource differs.
fn cluster_changes(previous: &Snapshot, next: &BTreeMap<String, Arc<ClusterEntry>>) -> Changes {
    let mut changes = Changes {
        since: previous.generation,
        ..Changes::default()
    };
    for (name, entry) in next {
        match previous.clusters.get(name) {
            Some(old) if Arc::ptr_eq(old, entry) => {}
            Some(old) => {
                changes.clusters.insert(name.clone());
                changes.cds |= old.cluster.hash != entry.cluster.hash;
            }
            None => {
                changes.clusters.insert(name.clone());
                changes.cds = true;
            }
        }
    }
    for name in previous.clusters.keys() {
        if !next.contains_key(name) {
            changes.clusters.insert(name.clone());
            changes.cds = true;
        }
    }
    changes
}

/// Settings that shape generated resources but come from flags, not from sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateSettings {
    pub listener_address: String,
    pub listener_port: u16,
    /// Share each encoded answer between all clients that get the same one (EDS per locality class,
    /// CDS/LDS/RDS for everyone). Off only to measure what sharing saves (`--no-shared-cache`).
    pub shared_cache: bool,
}

impl Default for TranslateSettings {
    fn default() -> Self {
        Self {
            listener_address: "0.0.0.0".to_string(),
            listener_port: 15001,
            shared_cache: true,
        }
    }
}

/// What differs between a snapshot and the one before it, so a connection that already answered from
/// the previous snapshot re-checks only these instead of every subscribed resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The generation these changes are relative to.
    pub since: u64,
    /// Clusters whose entry was rebuilt, added or removed: their EDS answers may differ.
    pub clusters: BTreeSet<String>,
    /// Some CDS resource was added, removed or encodes differently.
    pub cds: bool,
    /// Listener and route answers were rebuilt (the service set or settings changed).
    pub routes: bool,
    /// SDS names whose answer changed for some client: `default` when an identity's certificate
    /// changed (each client then compares its own identity's answer), `ROOTCA` for the bundle.
    pub secrets: BTreeSet<String>,
}

/// Which resources of one type may have changed for a client that last synced at some generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Unknown (the client skipped a generation, or this is the first snapshot): check everything.
    Everything,
    /// Only these names (EDS).
    Names(&'a BTreeSet<String>),
    /// Nothing of this type changed.
    Nothing,
}

/// Sizes of what the cache holds, for logs and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub clusters: usize,
    /// Distinct locality classes that have an EDS answer in at least one cluster.
    pub classes: usize,
    /// Encoded (cluster, class) EDS answers.
    pub eds_answers: usize,
    /// Listeners held: one per bind address clients asked for, and inbound listeners.
    pub listeners: usize,
    /// Route tables held: one per client namespace.
    pub route_configs: usize,
    /// Encoded bytes held: CDS, EDS, LDS (inbound included), RDS and SDS resources.
    pub bytes: usize,
}

/// The memo keys connected clients need ([`Snapshot::cache_keys`], [`Snapshot::retain_for`]).
pub struct CacheKeys<'a> {
    snapshot: &'a Snapshot,
    /// The distinct policies of the snapshot's clusters (most clusters share one), by address.
    policies: Vec<(*const FailoverPolicy, &'a FailoverPolicy)>,
    /// Per policy (same index), the classes of connected clients under it: Envoys', gRPC clients'.
    classes: Vec<HashSet<LocalityClass>>,
    grpc_classes: Vec<HashSet<LocalityClass>>,
    /// Some gRPC client is connected: its listeners and routes (keyed by target authorities that
    /// name a service port, so bounded by the service set) are kept.
    grpc_clients: bool,
    listeners: HashSet<(String, u16)>,
    namespaces: HashSet<Option<String>>,
    inbound: HashSet<(String, Inbound)>,
    app_ports: HashSet<u16>,
    peers: BTreeSet<SpiffeId>,
}

impl CacheKeys<'_> {
    /// `client` is connected: keep what it may be answered from.
    pub fn add(&mut self, client: &ClientInfo) {
        let classes = match client.kind {
            ClientKind::Envoy => &mut self.classes,
            ClientKind::Grpc => &mut self.grpc_classes,
        };
        for (i, (_, policy)) in self.policies.iter().enumerate() {
            classes[i].insert(LocalityClass::of(client, policy));
        }
        if client.kind == ClientKind::Grpc {
            self.grpc_clients = true;
            return;
        }
        let s = self.snapshot;
        self.listeners.insert(s.listener_key(client));
        self.namespaces.insert(client.namespace.clone());
        if let Some(inbound) = client.inbound {
            self.inbound.insert((s.bind_address(client), inbound));
            self.app_ports.insert(inbound.app_port);
        }
        if let Some(peer) = &client.peer {
            self.peers.insert(peer.id.clone());
        }
    }
}

/// The SDS answers: one encoded `default` per identity and one `ROOTCA`, shared by every client.
/// `default` is found by the SPIFFE ID the client's connection proved, never by a name it sends.
#[derive(Default)]
pub struct SecretEntries {
    set: Arc<SecretSet>,
    identities: BTreeMap<SpiffeId, Arc<Resource>>,
    root: Option<Arc<Resource>>,
    /// Proven identities asked for that have no certificate, each logged once per secrets version.
    missing_logged: std::sync::Mutex<BTreeSet<SpiffeId>>,
}

/// Names and versions only: the resources hold private keys.
impl std::fmt::Debug for SecretEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEntries")
            .field(
                "identities",
                &self
                    .identities
                    .iter()
                    .map(|(id, r)| (id.as_str(), r.hash))
                    .collect::<Vec<_>>(),
            )
            .field("root", &self.root.as_ref().map(|r| r.hash))
            .finish()
    }
}

impl SecretEntries {
    /// Encodes `set`, reusing `self`'s encoding of every item that did not change; also returns the
    /// SDS names whose answer changed for some client. The sources never publish two identities with
    /// one SPIFFE ID ([`SecretSet::remove_duplicate_ids`]); were there two, the first name wins.
    fn next(&self, set: Arc<SecretSet>) -> (Self, BTreeSet<String>) {
        let mut identities: BTreeMap<SpiffeId, Arc<Resource>> = BTreeMap::new();
        for (name, id) in &set.identities {
            if identities.contains_key(&id.spiffe_id) {
                continue;
            }
            let reused = self
                .identities
                .get(&id.spiffe_id)
                .filter(|_| self.set.identities.get(name) == Some(id));
            let r = match reused {
                Some(r) => r.clone(),
                None => Resource::new(mtls::CERT_SECRET.to_string(), mtls::certificate_secret(id)),
            };
            identities.insert(id.spiffe_id.clone(), r);
        }
        let root = match (&set.trust_bundle, &self.root) {
            (Some(b), Some(r)) if self.set.trust_bundle.as_ref() == Some(b) => Some(r.clone()),
            (Some(b), _) => Some(Resource::new(
                mtls::ROOT_SECRET.to_string(),
                mtls::root_secret(b),
            )),
            (None, _) => None,
        };
        let mut changed = BTreeSet::new();
        let same_identities = identities.len() == self.identities.len()
            && identities
                .iter()
                .zip(&self.identities)
                .all(|((a, ra), (b, rb))| a == b && ra.hash == rb.hash);
        if !same_identities {
            changed.insert(mtls::CERT_SECRET.to_string());
        }
        if root.as_ref().map(|r| r.hash) != self.root.as_ref().map(|r| r.hash) {
            changed.insert(mtls::ROOT_SECRET.to_string());
        }
        let next = Self {
            set,
            identities,
            root,
            missing_logged: Default::default(),
        };
        (next, changed)
    }

    /// True the first time `id` is found missing (per secrets version), so it is logged once. Bounded:
    /// a full set starts over (an identity may then be logged again), and departed clients' identities
    /// are dropped ([`SecretEntries::retain_logged`]).
    fn first_miss(&self, id: &SpiffeId) -> bool {
        let mut logged = self.logged();
        if logged.contains(id) {
            return false;
        }
        if logged.len() >= MAX_MEMO_KEYS {
            logged.clear();
        }
        logged.insert(id.clone())
    }

    fn for_client(&self, client: &ClientInfo, name: &str) -> Option<Arc<Resource>> {
        match name {
            mtls::CERT_SECRET => {
                // No proven identity, no key: whatever the client says about itself.
                let peer = client.peer.as_ref()?;
                let found = self.identities.get(&peer.id).cloned();
                if found.is_none() && self.first_miss(&peer.id) {
                    warn!(
                        spiffe_id = %peer.id,
                        node = %client.node_id,
                        "no workload certificate carries this identity: SDS `default` is not answered until one does"
                    );
                }
                found
            }
            mtls::ROOT_SECRET => self.root.clone(),
            _ => None,
        }
    }

    /// Forgets the logged missing identities no connected client has: the set is keyed by client
    /// identities, so it must not outlive them.
    fn retain_logged(&self, peers: &BTreeSet<SpiffeId>) {
        self.logged().retain(|id| peers.contains(id));
    }

    fn logged(&self) -> std::sync::MutexGuard<'_, BTreeSet<SpiffeId>> {
        // A panic elsewhere cannot leave this set inconsistent: keep using it.
        self.missing_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn bytes(&self) -> usize {
        self.identities
            .values()
            .chain(&self.root)
            .map(|r| r.any.value.len())
            .sum()
    }
}

#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot; for logs and diagnostics.
    pub generation: u64,
    /// When the change that produced this snapshot was turned into it: the start of push latency and
    /// convergence measurements.
    pub built_at: std::time::Instant,
    pub registry: Arc<Registry>,
    pub policies: Arc<PolicySet>,
    /// The fleet verdict's ejected localities this snapshot was built with.
    pub ejections: Arc<FleetEjections>,
    settings: TranslateSettings,
    clusters: BTreeMap<String, Arc<ClusterEntry>>,
    /// Shared with the snapshots before and after this one while the service set and settings stay
    /// the same, so evicting from the current snapshot evicts from what the next one carries forward.
    listeners: Arc<DashMap<(String, u16), Arc<Resource>>>,
    routes: Arc<DashMap<Option<String>, Arc<Resource>>>,
    /// gRPC clients' API listeners by target authority, and their routes by (authority, cluster):
    /// only authorities that name a service port get an entry, so these are bounded by the service
    /// set (and [`MAX_MEMO_KEYS`]) whatever names clients ask for. Shared like `listeners`.
    grpc_listeners: Arc<DashMap<String, Arc<Resource>>>,
    grpc_routes: Arc<DashMap<(String, String), Arc<Resource>>>,
    /// Services by name, for gRPC targets with a bare name; built when a gRPC client first asks.
    services_by_name: std::sync::OnceLock<grpc::ServicesByName>,
    /// Inbound mTLS listeners per (bind address, ports) and app clusters per app port: they depend
    /// only on the client, so every snapshot shares them.
    inbound: Arc<DashMap<(String, Inbound), Arc<Resource>>>,
    apps: Arc<DashMap<u16, Arc<Resource>>>,
    secrets: Arc<SecretEntries>,
    changes: Option<Changes>,
}

impl Snapshot {
    /// Builds the next snapshot, reusing `previous`'s per-cluster memos where service and policy are
    /// unchanged. No locality is ejected by a fleet verdict.
    pub fn build(
        previous: Option<&Snapshot>,
        registry: Arc<Registry>,
        policies: Arc<PolicySet>,
        settings: TranslateSettings,
    ) -> Self {
        Self::build_with_ejections(previous, registry, policies, Arc::default(), settings)
    }

    /// [`Snapshot::build`] with the fleet verdict's ejected localities: their hosts are sent
    /// UNHEALTHY. A change in them rebuilds (and names in `Changes`) only the clusters concerned.
    pub fn build_with_ejections(
        previous: Option<&Snapshot>,
        registry: Arc<Registry>,
        policies: Arc<PolicySet>,
        ejections: Arc<FleetEjections>,
        settings: TranslateSettings,
    ) -> Self {
        let mut clusters = BTreeMap::new();
        for service in registry.services.values() {
            let shared = Arc::new(service.clone());
            for port in &service.ports {
                let resolved = policies.resolve(service, port);
                let name = resources::cluster_name(&service.id, port);
                // The input holds the backups' endpoints too: a change in a backup service rebuilds
                // (and names in `Changes`) every cluster that uses it.
                // Endpoints that do not serve this port are not in its cluster; the service is
                // copied only then.
                let own = match service.serving(port) {
                    Some(filtered) => Arc::new(filtered),
                    None => shared.clone(),
                };
                let mut input = ClusterInput::new(&registry, own, port, &resolved.policy);
                input.ejected = ejections.of(&name);
                let reused = previous
                    .and_then(|p| p.clusters.get(&name))
                    .filter(|old| old.input == input && old.policy == resolved);
                let entry = match reused {
                    Some(old) => old.clone(),
                    None => {
                        for skipped in &input.skipped {
                            warn!(
                                cluster = %name,
                                backup = %skipped.service,
                                reason = %skipped.reason,
                                "backup service not used"
                            );
                        }
                        Arc::new(ClusterEntry::new(
                            name.clone(),
                            input,
                            resolved.clone(),
                            settings.shared_cache,
                        ))
                    }
                };
                clusters.insert(name, entry);
            }
        }
        let changes = previous.map(|p| cluster_changes(p, &clusters));
        // Routes and listeners depend only on the service set and settings: keep their memos when those
        // did not change.
        let same_routes = previous.is_some_and(|p| {
            p.settings == settings
                && p.registry.services.len() == registry.services.len()
                && p.registry
                    .services
                    .iter()
                    .zip(registry.services.iter())
                    .all(|((a_id, a), (b_id, b))| a_id == b_id && a.ports == b.ports)
        });
        let (grpc_listeners, grpc_routes) = match previous {
            Some(p) if same_routes => (p.grpc_listeners.clone(), p.grpc_routes.clone()),
            _ => (Arc::default(), Arc::default()),
        };
        let (listeners, routes) = match previous {
            Some(p) if same_routes => (p.listeners.clone(), p.routes.clone()),
            Some(p) if settings.shared_cache => {
                // The service set changed: the namespaces connected clients are in (the ones still
                // cached) get their routes here, with the rest of the snapshot, on the publisher's
                // blocking thread, instead of by the first stream of each namespace on a thread
                // that serves streams.
                let routes: Arc<DashMap<Option<String>, Arc<Resource>>> = Arc::default();
                for namespace in p.routes.iter().map(|e| e.key().clone()) {
                    let built = route_resource(&registry, namespace.as_deref());
                    routes.insert(namespace, built);
                }
                (Arc::default(), routes)
            }
            _ => (Arc::default(), Arc::default()),
        };
        let changes = changes.map(|mut c| {
            c.routes = !same_routes;
            c
        });
        Self {
            generation: previous.map_or(1, |p| p.generation + 1),
            built_at: std::time::Instant::now(),
            registry,
            policies,
            ejections,
            settings,
            clusters,
            listeners,
            routes,
            grpc_listeners,
            grpc_routes,
            services_by_name: std::sync::OnceLock::new(),
            inbound: previous.map(|p| p.inbound.clone()).unwrap_or_default(),
            apps: previous.map(|p| p.apps.clone()).unwrap_or_default(),
            // Carried over; [`Snapshot::with_secrets`] replaces them.
            secrets: previous.map(|p| p.secrets.clone()).unwrap_or_default(),
            changes,
        }
    }

    /// This snapshot with `secrets` in place of the previous snapshot's, noting which SDS names
    /// changed.
    pub fn with_secrets(mut self, secrets: Arc<SecretSet>) -> Self {
        if *self.secrets.set == *secrets {
            return self;
        }
        let (next, changed) = self.secrets.next(secrets);
        self.secrets = Arc::new(next);
        if let Some(c) = &mut self.changes {
            c.secrets.extend(changed);
        }
        self
    }

    /// The secrets this snapshot serves.
    pub fn secret_set(&self) -> &Arc<SecretSet> {
        &self.secrets.set
    }

    /// The changes since generation `seen`, if this snapshot directly follows it.
    pub fn changes_since(&self, seen: Option<u64>) -> Option<&Changes> {
        self.changes.as_ref().filter(|c| Some(c.since) == seen)
    }

    /// Which resources of `kind` may differ from what a client synced at generation `seen` holds.
    pub fn scope(&self, kind: ResourceType, seen: Option<u64>) -> Scope<'_> {
        if seen == Some(self.generation) {
            return Scope::Nothing; // already checked against this very snapshot
        }
        let Some(changes) = self.changes_since(seen) else {
            return Scope::Everything;
        };
        let changed = match kind {
            ResourceType::Secret => {
                return if changes.secrets.is_empty() {
                    Scope::Nothing
                } else {
                    Scope::Names(&changes.secrets)
                }
            }
            ResourceType::Cluster => changes.cds,
            ResourceType::Listener | ResourceType::Route => changes.routes,
            ResourceType::Endpoint => {
                return if changes.clusters.is_empty() {
                    Scope::Nothing
                } else {
                    Scope::Names(&changes.clusters)
                }
            }
        };
        if changed {
            Scope::Everything
        } else {
            Scope::Nothing
        }
    }

    /// Envoy's expected load split over priorities, per cluster and per locality class that has an
    /// answer in the cache: (cluster, class, percent per priority).
    pub fn expected_loads(&self) -> Vec<(String, String, Vec<u32>)> {
        let mut out = Vec::new();
        for c in self.clusters.values() {
            for class in c.eds.iter().map(|e| e.key().clone()) {
                let e = translate::explain::explain(&class, &c.input, &c.policy.policy);
                out.push((c.name().to_string(), class.to_string(), e.load));
            }
        }
        out
    }

    /// An empty set of needed memo keys, to [`CacheKeys::add`] every connected client to.
    pub fn cache_keys(&self) -> CacheKeys<'_> {
        let mut policies: Vec<(*const FailoverPolicy, &FailoverPolicy)> = Vec::new();
        for c in self.clusters.values() {
            let key = Arc::as_ptr(&c.policy.policy);
            if !policies.iter().any(|(k, _)| *k == key) {
                policies.push((key, &c.policy.policy));
            }
        }
        CacheKeys {
            snapshot: self,
            classes: vec![HashSet::new(); policies.len()],
            grpc_classes: vec![HashSet::new(); policies.len()],
            grpc_clients: false,
            policies,
            listeners: HashSet::new(),
            namespaces: HashSet::new(),
            inbound: HashSet::new(),
            app_ports: HashSet::new(),
            peers: BTreeSet::new(),
        }
    }

    /// Drops every memoised answer no connected client (`needed`) may be answered from: EDS answers of
    /// classes, route tables of namespaces, listeners of bind addresses, inbound listeners and app
    /// clusters that only departed clients had. The memos are keyed by what clients send, so without
    /// this they would grow with every client ever seen. Later snapshots carry these memos forward, so
    /// they start without what was dropped; an answer dropped while a client still needs it (one that
    /// connected since `needed` was collected) is simply built again. Returns what was dropped.
    pub fn retain_for(&self, needed: &CacheKeys<'_>) -> CacheStats {
        let before = self.stats();
        for c in self.clusters.values() {
            let key = Arc::as_ptr(&c.policy.policy);
            let i = needed
                .policies
                .iter()
                .position(|(k, _)| *k == key)
                .expect("`needed` was collected from this snapshot");
            c.eds.retain(|class, _| needed.classes[i].contains(class));
            c.grpc_eds
                .retain(|class, _| needed.grpc_classes[i].contains(class));
        }
        if !needed.grpc_clients {
            self.grpc_listeners.clear();
            self.grpc_routes.clear();
        }
        self.listeners.retain(|k, _| needed.listeners.contains(k));
        self.routes.retain(|k, _| needed.namespaces.contains(k));
        self.inbound.retain(|k, _| needed.inbound.contains(k));
        self.apps.retain(|k, _| needed.app_ports.contains(k));
        self.secrets.retain_logged(&needed.peers);
        let after = self.stats();
        CacheStats {
            clusters: 0,
            classes: before.classes.saturating_sub(after.classes),
            eds_answers: before.eds_answers.saturating_sub(after.eds_answers),
            listeners: before.listeners.saturating_sub(after.listeners),
            route_configs: before.route_configs.saturating_sub(after.route_configs),
            bytes: before.bytes.saturating_sub(after.bytes),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let mut classes = BTreeSet::new();
        let mut eds_answers = 0;
        let mut bytes = 0;
        for c in self.clusters.values() {
            for e in c.eds.iter().chain(c.grpc_eds.iter()) {
                classes.insert(e.key().clone());
            }
            eds_answers += c.eds.len() + c.grpc_eds.len();
            bytes += c.cached_bytes();
        }
        bytes += self
            .listeners
            .iter()
            .map(|l| l.value().any.value.len())
            .sum::<usize>();
        bytes += self
            .routes
            .iter()
            .map(|r| r.value().any.value.len())
            .sum::<usize>();
        bytes += self
            .grpc_listeners
            .iter()
            .map(|l| l.value().any.value.len())
            .chain(self.grpc_routes.iter().map(|r| r.value().any.value.len()))
            .sum::<usize>();
        bytes += self
            .inbound
            .iter()
            .map(|l| l.value().any.value.len())
            .sum::<usize>();
        bytes += self
            .apps
            .iter()
            .map(|a| a.value().any.value.len())
            .sum::<usize>();
        bytes += self.secrets.bytes();
        CacheStats {
            clusters: self.clusters.len(),
            classes: classes.len(),
            eds_answers,
            listeners: self.listeners.len() + self.inbound.len() + self.grpc_listeners.len(),
            route_configs: self.routes.len() + self.grpc_routes.len(),
            bytes,
        }
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<ClusterEntry>> {
        self.clusters.values()
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterEntry>> {
        self.clusters.get(name)
    }

    /// Where `client`'s listeners bind: its `listener_address`, else the server's default.
    fn bind_address(&self, client: &ClientInfo) -> String {
        client
            .listener
            .as_ref()
            .and_then(|o| o.address.clone())
            .unwrap_or_else(|| self.settings.listener_address.clone())
    }

    /// The key of `client`'s outbound listener: bind address and port.
    fn listener_key(&self, client: &ClientInfo) -> (String, u16) {
        let port = client
            .listener
            .as_ref()
            .and_then(|o| o.port)
            .unwrap_or(self.settings.listener_port);
        (self.bind_address(client), port)
    }

    fn listener_for(&self, client: &ClientInfo) -> Arc<Resource> {
        let key = self.listener_key(client);
        let build = || {
            Resource::new(
                resources::LISTENER_NAME.to_string(),
                resources::listener(&key.0, key.1),
            )
        };
        if !self.settings.shared_cache {
            return build();
        }
        memoised(&self.listeners, &key, build)
    }

    /// The inbound mTLS listener of a client that asked for one.
    fn inbound_for(&self, client: &ClientInfo) -> Option<Arc<Resource>> {
        let inbound = client.inbound?;
        let key = (self.bind_address(client), inbound);
        let build = || {
            Resource::new(
                mtls::INBOUND_LISTENER.to_string(),
                mtls::inbound_listener(&key.0, inbound),
            )
        };
        Some(memoised(&self.inbound, &key, build))
    }

    /// The static cluster of the app behind a client's inbound listener.
    fn app_for(&self, client: &ClientInfo) -> Option<Arc<Resource>> {
        let inbound = client.inbound?;
        Some(memoised(&self.apps, &inbound.app_port, || {
            Resource::new(mtls::APP_CLUSTER.to_string(), mtls::app_cluster(inbound))
        }))
    }

    fn routes_for(&self, client: &ClientInfo) -> Arc<Resource> {
        let build = || route_resource(&self.registry, client.namespace.as_deref());
        if !self.settings.shared_cache {
            return build();
        }
        memoised(&self.routes, &client.namespace, build)
    }

    /// The service port a gRPC client's target `authority` names, if any.
    fn resolve_authority(
        &self,
        client: &ClientInfo,
        authority: &str,
    ) -> Option<(&crate::model::Service, &crate::model::ServicePort)> {
        let by_name = self
            .services_by_name
            .get_or_init(|| grpc::ServicesByName::new(&self.registry));
        grpc::resolve_authority(
            &self.registry,
            by_name,
            authority,
            client.namespace.as_deref(),
        )
    }

    /// A gRPC client's API listener for the target `authority`, if it names a service port. Unknown
    /// names are looked up and answered with nothing, never memoised.
    fn grpc_listener(&self, client: &ClientInfo, authority: &str) -> Option<Arc<Resource>> {
        self.resolve_authority(client, authority)?;
        let build = || Resource::new(authority.to_string(), grpc::api_listener(authority));
        if !self.settings.shared_cache {
            return Some(build());
        }
        Some(memoised(
            &self.grpc_listeners,
            &authority.to_string(),
            build,
        ))
    }

    /// A gRPC client's routes for the target `authority` (the listener names them after it).
    fn grpc_routes_for(&self, client: &ClientInfo, authority: &str) -> Option<Arc<Resource>> {
        let (service, port) = self.resolve_authority(client, authority)?;
        let cluster = resources::cluster_name(&service.id, port);
        let build = || {
            Resource::new(
                authority.to_string(),
                grpc::route_configuration(authority, &cluster),
            )
        };
        if !self.settings.shared_cache {
            return Some(build());
        }
        let key = (authority.to_string(), cluster.clone());
        Some(memoised(&self.grpc_routes, &key, build))
    }

    /// What `client` should have of one type. `names` is the subscription (`None` = wildcard); names that
    /// do not exist are left out, as the protocol allows.
    pub fn resources_for(
        &self,
        kind: ResourceType,
        client: &ClientInfo,
        names: Option<&BTreeSet<String>>,
    ) -> Vec<Arc<Resource>> {
        let wanted = |name: &str| names.is_none_or(|n| n.contains(name));
        let grpc = client.kind == ClientKind::Grpc;
        match kind {
            // A gRPC client names what it wants by its targets' authorities, and is never sent
            // Envoy's listener: it validates every resource of a response and would refuse it.
            ResourceType::Listener | ResourceType::Route if grpc => names
                .into_iter()
                .flatten()
                .filter_map(|n| self.resource(kind, client, n))
                .collect(),
            ResourceType::Cluster if grpc => self
                .clusters
                .values()
                .filter(|c| wanted(c.name()))
                .map(|c| c.cluster_resource_for(client.kind))
                .collect(),
            ResourceType::Cluster => self
                .clusters
                .values()
                .filter(|c| wanted(c.name()))
                .map(|c| c.cluster_resource())
                .chain(self.app_for(client).filter(|a| wanted(&a.name)))
                .collect(),
            ResourceType::Endpoint => {
                // EDS is never wildcard for us: with no names, nothing is wanted.
                let Some(names) = names else {
                    return Vec::new();
                };
                let mut lookup = self.lookup(kind, client);
                names.iter().filter_map(|n| lookup.get(n)).collect()
            }
            ResourceType::Listener => std::iter::once(self.listener_for(client))
                .chain(self.inbound_for(client))
                .filter(|l| wanted(&l.name))
                .collect(),
            ResourceType::Route => {
                let r = self.routes_for(client);
                if names.is_some_and(|n| n.contains(&r.name)) {
                    vec![r]
                } else {
                    Vec::new()
                }
            }
            // Never wildcard: a client gets the secrets it names.
            ResourceType::Secret => names
                .into_iter()
                .flatten()
                .filter_map(|n| self.secrets.for_client(client, n))
                .collect(),
        }
    }

    /// One named resource of `kind` as `client` should have it, if it exists.
    pub fn resource(
        &self,
        kind: ResourceType,
        client: &ClientInfo,
        name: &str,
    ) -> Option<Arc<Resource>> {
        if client.kind == ClientKind::Grpc {
            return match kind {
                ResourceType::Listener => self.grpc_listener(client, name),
                ResourceType::Route => self.grpc_routes_for(client, name),
                ResourceType::Cluster => self
                    .clusters
                    .get(name)
                    .map(|c| c.cluster_resource_for(client.kind)),
                ResourceType::Endpoint => self.load_assignment(name, client),
                ResourceType::Secret => self.secrets.for_client(client, name),
            };
        }
        match kind {
            ResourceType::Cluster if name == mtls::APP_CLUSTER => self.app_for(client),
            ResourceType::Cluster => self.clusters.get(name).map(|c| c.cluster_resource()),
            ResourceType::Endpoint => self.load_assignment(name, client),
            ResourceType::Listener if name == mtls::INBOUND_LISTENER => self.inbound_for(client),
            ResourceType::Listener => Some(self.listener_for(client)).filter(|l| l.name == name),
            ResourceType::Secret => self.secrets.for_client(client, name),
            ResourceType::Route => Some(self.routes_for(client)).filter(|r| r.name == name),
        }
    }

    /// Resources of `kind` for `client`, looked up one name at a time (an answer of many names):
    /// the client's locality class is worked out once per policy, not once per cluster.
    pub fn lookup<'s>(&'s self, kind: ResourceType, client: &'s ClientInfo) -> Lookup<'s> {
        Lookup {
            snapshot: self,
            kind,
            client,
            classes: ClassMemo::default(),
        }
    }

    /// One cluster's EDS answer for `client`, if the cluster exists.
    pub fn load_assignment(&self, cluster: &str, client: &ClientInfo) -> Option<Arc<Resource>> {
        let c = self.clusters.get(cluster)?;
        Some(c.load_assignment_for(client.kind, &c.class_of(client)))
    }
}

#[cfg(test)]
mod tests;
