//! Several Kubernetes clusters as one source: each cluster is watched on its own (see [`super::start`]),
//! and their registries are merged so that the same `namespace/name` in every cluster is one service
//! whose endpoints carry `topology.istio.io/cluster` and `topology.istio.io/network` labels.
//!
//! A cluster whose API server stops answering keeps its last known endpoints: a control-plane outage is
//! not a data-plane outage. After `stale_after` without an answer its endpoints are sent as UNHEALTHY, so
//! Envoy prefers the clusters whose state is known, but only where such an alternative exists: a service
//! with no healthy endpoint in any fresh cluster keeps its stale endpoints as they were, because sending
//! every endpoint UNHEALTHY would turn a control-plane outage into a blackhole.

pub mod gateways;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::convert::ClusterOrigin;
use super::{KubeSourceSettings, PodLocator};
use xds_core::model::{Health, NetworkGateway, Registry, Service, ServiceId};
use xds_core::model::{LocalityLookup, PodHint};

/// One `--cluster NAME=KUBECONFIG[,context=CTX][,network=NET][,gateway=HOST:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    /// `None`: in-cluster config, then `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The network this cluster's endpoints are on (default: none, i.e. reachable from everywhere).
    #[serde(default)]
    pub network: String,
    /// How clients on other networks reach this cluster's network, `HOST:PORT`.
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSpecError {
    #[error("--cluster {spec:?}: {reason} (expected NAME=KUBECONFIG[,context=CTX][,network=NET][,gateway=HOST:PORT])")]
    Syntax { spec: String, reason: String },
    #[error("cluster {cluster:?}: {field}: {reason}")]
    Invalid {
        cluster: String,
        field: &'static str,
        reason: String,
    },
}

impl FromStr for ClusterSpec {
    type Err = ClusterSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = |reason: &str| ClusterSpecError::Syntax {
            spec: text.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, kubeconfig) = head
            .split_once('=')
            .ok_or_else(|| syntax("missing `=KUBECONFIG` after the cluster name"))?;
        let mut spec = ClusterSpec {
            name: name.trim().to_string(),
            kubeconfig: match kubeconfig.trim() {
                "" => None,
                path => Some(PathBuf::from(path)),
            },
            context: None,
            network: String::new(),
            gateway: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| syntax(&format!("{part:?} is not KEY=VALUE")))?;
            let value = value.trim().to_string();
            match key.trim() {
                "context" => spec.context = Some(value),
                "network" => spec.network = value,
                "gateway" => spec.gateway = Some(value),
                other => {
                    return Err(syntax(&format!(
                        "unknown option {other:?} (known: context, network, gateway)"
                    )))
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl ClusterSpec {
    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ClusterSpecError {
        ClusterSpecError::Invalid {
            cluster: self.name.clone(),
            field,
            reason: reason.into(),
        }
    }

    /// Names become label values and metric labels: keep them to what a label value may hold.
    pub fn validate(&self) -> Result<(), ClusterSpecError> {
        let label_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !label_like(&self.name) {
            return Err(self.invalid(
                "name",
                "must be 1-63 letters, digits, '-', '_' or '.' (it becomes the topology.istio.io/cluster label)",
            ));
        }
        if !self.network.is_empty() && !label_like(&self.network) {
            return Err(self.invalid("network", "must be 1-63 letters, digits, '-', '_' or '.'"));
        }
        if let Some(gateway) = &self.gateway {
            if self.network.is_empty() {
                return Err(self.invalid(
                    "gateway",
                    "a gateway serves a network: set network=NET as well",
                ));
            }
            split_host_port(gateway).map_err(|reason| self.invalid("gateway", reason))?;
        }
        Ok(())
    }
}

fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} in {text:?} is not a port (1-65535)"))?;
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok((host, port))
}

/// Checks a whole set of clusters: unique names, and one gateway per network.
pub fn validate_set(specs: &[ClusterSpec]) -> Result<(), ClusterSpecError> {
    let mut names = BTreeSet::new();
    let mut gateways: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for spec in specs {
        spec.validate()?;
        if !names.insert(spec.name.as_str()) {
            return Err(spec.invalid("name", "two clusters have this name"));
        }
        if let Some(gateway) = &spec.gateway {
            if let Some((other, existing)) = gateways.insert(&spec.network, (&spec.name, gateway)) {
                if existing != gateway {
                    return Err(spec.invalid(
                        "gateway",
                        format!(
                            "network {:?} already has gateway {existing} (from cluster {other:?}); one gateway per network",
                            spec.network
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `--stale-after`: `None` means never (keep last known endpoints as they are, and wait for every
/// cluster at startup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleAfter(pub Option<Duration>);

impl Default for StaleAfter {
    fn default() -> Self {
        Self(Some(Duration::from_secs(60)))
    }
}

/// Parses `30s`, `2m`, … or `never`.
pub fn parse_stale_after(text: &str) -> Result<StaleAfter, String> {
    match text.trim() {
        "never" | "off" => Ok(StaleAfter(None)),
        other => xds_core::config::scalar::parse_duration(other)
            .map(|d| StaleAfter(Some(d)))
            .map_err(|e| format!("{e}, or `never`")),
    }
}

impl<'de> serde::Deserialize<'de> for StaleAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_stale_after(&text).map_err(serde::de::Error::custom)
    }
}

/// The server config file (`--config`): the same settings as the multi-cluster flags.
///
/// ```yaml
/// clusters:
/// - {name: east, kubeconfig: /etc/xds/east.yaml, network: net-east, gateway: "203.0.113.10:15443"}
/// - {name: west, kubeconfig: /etc/xds/west.yaml, context: prod, network: net-west, gateway: "198.51.100.7:15443"}
/// staleAfter: 60s
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    pub stale_after: Option<StaleAfter>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {reason}")]
    Read { file: String, reason: String },
    /// serde's message carries the field, line and column.
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

impl ServerConfig {
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: ServerConfig =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                reason: e.to_string(),
            })?;
        for (i, spec) in config.clusters.iter().enumerate() {
            spec.validate().map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                reason: format!("clusters[{i}]: {e}"),
            })?;
        }
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&file, &text)
    }
}

/// Set (to `"true"`) on every endpoint of a stale cluster, so `xdsctl services` and the admin API show
/// why an endpoint is UNHEALTHY, or that its health is only the last known one.
pub const STALE_LABEL: &str = "failover.xds.dev/stale";

/// What the merger knows about one cluster.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub name: String,
    /// `None` until the cluster's initial lists are complete.
    pub registry: Option<Arc<Registry>>,
    /// Since when its API server has not answered; `None` while it answers.
    pub down_since: Option<Instant>,
}

impl MemberView {
    fn is_stale(&self, now: Instant, stale_after: Option<Duration>) -> bool {
        match (self.down_since, stale_after) {
            (Some(since), Some(after)) => now.saturating_duration_since(since) >= after,
            _ => false,
        }
    }
}

/// The merged view and which clusters in it are stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub registry: Registry,
    pub stale: Vec<String>,
}

/// Merges the clusters' registries (pure: same inputs, same output). Members without a registry yet
/// contribute nothing. A service's ports are the union by port name, the first cluster's number winning;
/// an endpoint whose own cluster numbers a port differently gets an explicit target port, so it is still
/// reached where it listens.
pub fn merge(
    members: &[MemberView],
    gateways: &BTreeMap<String, NetworkGateway>,
    now: Instant,
    stale_after: Option<Duration>,
) -> Merged {
    let stale: Vec<String> = members
        .iter()
        .filter(|m| m.registry.is_some() && m.is_stale(now, stale_after))
        .map(|m| m.name.clone())
        .collect();
    let mut services: BTreeMap<ServiceId, Service> = BTreeMap::new();
    // Per service, whether a fresh cluster has a healthy endpoint for it.
    let mut fresh_healthy: BTreeSet<ServiceId> = BTreeSet::new();
    let mut stale_endpoints: Vec<(ServiceId, usize)> = Vec::new();
    for member in members {
        let Some(registry) = &member.registry else {
            continue;
        };
        let is_stale = stale.contains(&member.name);
        for (id, service) in &registry.services {
            let merged = services.entry(id.clone()).or_insert_with(|| Service {
                traffic_distribution: None,
                id: id.clone(),
                ports: Vec::new(),
                endpoints: Vec::new(),
                identity: None,
            });
            // Like port numbers: the first cluster (in order) that sets one decides.
            merged.traffic_distribution =
                merged.traffic_distribution.or(service.traffic_distribution);
            if merged.identity.is_none() {
                merged.identity.clone_from(&service.identity);
            }
            for port in &service.ports {
                if !merged.ports.iter().any(|p| p.name == port.name) {
                    merged.ports.push(port.clone());
                }
            }
            for endpoint in &service.endpoints {
                let mut endpoint = endpoint.clone();
                for own in &service.ports {
                    let target = endpoint.target_port(own);
                    let merged_port = merged.ports.iter().find(|p| p.name == own.name);
                    if merged_port.is_some_and(|p| p.port != target) {
                        endpoint.port_overrides.insert(own.name.clone(), target);
                    } else {
                        endpoint.port_overrides.remove(&own.name);
                    }
                }
                if is_stale {
                    endpoint
                        .labels
                        .insert(STALE_LABEL.to_string(), "true".to_string());
                    stale_endpoints.push((id.clone(), merged.endpoints.len()));
                } else if endpoint.health == Health::Healthy {
                    fresh_healthy.insert(id.clone());
                }
                merged.endpoints.push(endpoint);
            }
        }
    }
    for (id, index) in stale_endpoints {
        if fresh_healthy.contains(&id) {
            if let Some(service) = services.get_mut(&id) {
                service.endpoints[index].health = Health::Unhealthy;
            }
        }
    }
    for service in services.values_mut() {
        // Deterministic whatever order the clusters answered in.
        service.endpoints.sort();
        service.endpoints.dedup();
    }
    Merged {
        registry: Registry {
            services,
            gateways: gateways.clone(),
        },
        stale,
    }
}

/// Decides when the merged view may be published at all: once every cluster has listed, or, for a
/// cluster that has not, once `stale_after` has passed since start (one unreachable cluster must not keep
/// the others' endpoints from Envoy forever). Never before at least one cluster has listed.
pub fn ready_to_publish(
    members: &[MemberView],
    started: Instant,
    now: Instant,
    stale_after: Option<Duration>,
) -> bool {
    let synced = members.iter().filter(|m| m.registry.is_some()).count();
    if synced == 0 {
        return false;
    }
    synced == members.len()
        || stale_after.is_some_and(|after| now.saturating_duration_since(started) >= after)
}

/// Client locality across clusters: the first cluster that knows the pod answers, and the client gets
/// that cluster's `cluster` / `network` labels.
pub struct ClusterLocator {
    members: Vec<(ClusterOrigin, Arc<PodLocator>)>,
    /// Bumped whenever any cluster's locator may answer differently.
    placement: Arc<watch::Sender<u64>>,
}

impl ClusterLocator {
    /// Changes whenever a lookup may answer differently in any cluster
    /// (see [`PodLocator::changes`]).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.placement.subscribe()
    }

    /// Pod names and IPs repeat across clusters (pod CIDRs often overlap): a client that names its
    /// cluster is looked up there only; otherwise the first cluster, in `--cluster` order, that knows
    /// the pod wins.
    fn find(&self, hint: &PodHint) -> Option<(&ClusterOrigin, xds_core::model::Locality)> {
        self.members
            .iter()
            .filter(|(origin, _)| hint.cluster.as_ref().is_none_or(|c| *c == origin.cluster))
            .find_map(|(origin, locator)| locator.locality_of(hint).map(|l| (origin, l)))
    }
}

impl LocalityLookup for ClusterLocator {
    fn locality_of(&self, hint: &PodHint) -> Option<xds_core::model::Locality> {
        self.find(hint).map(|(_, locality)| locality)
    }

    fn labels_of(&self, hint: &PodHint) -> BTreeMap<String, String> {
        let Some((origin, _)) = self.find(hint) else {
            return BTreeMap::new();
        };
        let mut labels = origin.labels();
        if let Some((_, locator)) = self.members.iter().find(|(o, _)| o == origin) {
            labels.extend(locator.labels_of(hint));
        }
        labels
    }
}

/// How often each API server is asked whether it is there (a `GET /version`).
fn probe_interval(stale_after: Option<Duration>) -> Duration {
    let base = Duration::from_secs(5);
    match stale_after {
        Some(after) => (after / 4).clamp(Duration::from_millis(100), base),
        None => base,
    }
}

/// One cluster to watch: its spec and a client for it.
pub struct Member {
    pub spec: ClusterSpec,
    pub client: Client,
}

/// Watches every cluster and publishes the merged registry into `tx` (see the module docs for when),
/// with the networks' gateways as `gateways` holds them at each moment ([`gateways::keep_resolved`]).
pub fn start(
    members: Vec<Member>,
    settings: KubeSourceSettings,
    gateways: watch::Receiver<gateways::Gateways>,
    stale_after: Option<Duration>,
    tx: watch::Sender<Option<Arc<Registry>>>,
) -> Arc<ClusterLocator> {
    let mut locators = Vec::new();
    let mut registries = Vec::new();
    let mut health = Vec::new();
    for member in &members {
        let origin = ClusterOrigin {
            cluster: member.spec.name.clone(),
            network: member.spec.network.clone(),
        };
        let mut member_settings = settings.clone();
        member_settings.convert.origin = origin.clone();
        let (member_tx, member_rx) = watch::channel(None);
        let locator = super::start(member.client.clone(), member_settings, member_tx);
        locators.push((origin, locator));
        registries.push(member_rx);
        let (down_tx, down_rx) = watch::channel(None::<Instant>);
        crate::supervise::spawn(
            format!("cluster {} probe", member.spec.name),
            probe(
                member.spec.name.clone(),
                member.client.clone(),
                probe_interval(stale_after),
                down_tx,
            ),
        );
        health.push(down_rx);
    }
    let names: Vec<String> = members.iter().map(|m| m.spec.name.clone()).collect();
    crate::supervise::spawn(
        "cluster merger",
        run_merger(names, registries, health, gateways, stale_after, tx),
    );
    // One signal for every cluster: a client waits for its pod in whichever cluster has it.
    let placement = Arc::new(watch::channel(0).0);
    for (_, locator) in &locators {
        let mut member = locator.changes();
        let placement = placement.clone();
        crate::supervise::spawn("pod change relay", async move {
            while member.changed().await.is_ok() {
                placement.send_modify(|generation| *generation += 1);
            }
        });
    }
    Arc::new(ClusterLocator {
        members: locators,
        placement,
    })
}

/// Asks the API server for its version every `interval`; `down` holds since when it has not answered.
async fn probe(
    cluster: String,
    client: Client,
    interval: Duration,
    down: watch::Sender<Option<Instant>>,
) {
    let m = crate::metrics::metrics();
    let label = crate::metrics::source_label(&format!("kubernetes:{cluster}"));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answered = tokio::time::timeout(interval.max(Duration::from_secs(1)), async {
            client.apiserver_version().await
        })
        .await;
        let error = match answered {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer in time".to_string()),
        };
        let changed = down.send_if_modified(|since| match (&error, *since) {
            (None, Some(_)) => {
                *since = None;
                true
            }
            (Some(_), None) => {
                *since = Some(Instant::now());
                true
            }
            _ => false,
        });
        m.cluster_up
            .get_or_create(&label)
            .set(i64::from(error.is_none()));
        if changed {
            match &error {
                None => info!(%cluster, "Kubernetes API server answers again"),
                Some(error) => warn!(%cluster, %error,
                    "Kubernetes API server not answering; keeping its last known endpoints"),
            }
        }
        if down.is_closed() {
            return;
        }
    }
}

async fn run_merger(
    names: Vec<String>,
    mut registries: Vec<watch::Receiver<Option<Arc<Registry>>>>,
    mut health: Vec<watch::Receiver<Option<Instant>>>,
    mut gateways: watch::Receiver<gateways::Gateways>,
    stale_after: Option<Duration>,
    tx: watch::Sender<Option<Arc<Registry>>>,
) {
    // Until its sender is gone (gateways given once, or the resolvers stopped): then the last value.
    let mut gateways_change = true;
    let started = Instant::now();
    let m = crate::metrics::metrics();
    let mut last_stale: Vec<String> = Vec::new();
    let mut announced = false;
    loop {
        let now = Instant::now();
        let views: Vec<MemberView> = names
            .iter()
            .zip(&registries)
            .zip(&health)
            .map(|((name, registry), down)| MemberView {
                name: name.clone(),
                registry: registry.borrow().clone(),
                down_since: *down.borrow(),
            })
            .collect();
        if ready_to_publish(&views, started, now, stale_after) {
            if !announced {
                let missing: Vec<&str> = views
                    .iter()
                    .filter(|v| v.registry.is_none())
                    .map(|v| v.name.as_str())
                    .collect();
                if missing.is_empty() {
                    info!(clusters = names.len(), "every cluster listed; publishing");
                } else {
                    warn!(
                        ?missing,
                        "publishing without clusters that have not listed yet"
                    );
                }
                announced = true;
            }
            // Merging every cluster's registry is CPU work ([`crate::cpu`]).
            let known_gateways = gateways.borrow_and_update().clone();
            let members = views.clone(); // names and `Arc`s
            let merged =
                crate::cpu::off_runtime(move || merge(&members, &known_gateways, now, stale_after))
                    .await;
            if merged.stale != last_stale {
                for name in &names {
                    let label = crate::metrics::source_label(&format!("kubernetes:{name}"));
                    m.cluster_stale
                        .get_or_create(&label)
                        .set(i64::from(merged.stale.contains(name)));
                }
                if merged.stale.is_empty() {
                    info!("no cluster is stale");
                } else {
                    warn!(stale = ?merged.stale,
                        "clusters stale: their endpoints are sent UNHEALTHY where another cluster has healthy ones");
                }
                last_stale = merged.stale.clone();
            }
            let registry = merged.registry;
            let changed = tx.borrow().as_deref() != Some(&registry);
            if changed && tx.send(Some(Arc::new(registry))).is_err() {
                return;
            }
        }
        // Wake on any member change, or when a down cluster turns stale (or the startup wait ends).
        let deadline = next_deadline(&views, started, stale_after);
        type Changed<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), watch::error::RecvError>> + Send + 'a>,
        >;
        let changes = futures::future::select_all(
            registries
                .iter_mut()
                .map(|r| Box::pin(r.changed()) as Changed<'_>)
                .chain(
                    health
                        .iter_mut()
                        .map(|h| Box::pin(h.changed()) as Changed<'_>),
                ),
        );
        let until = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (result, _, _) = changes => if result.is_err() { return },
            resolved = gateways.changed(), if gateways_change => {
                gateways_change = resolved.is_ok();
            }
            _ = until => {}
        }
        for r in &mut registries {
            r.borrow_and_update();
        }
        for h in &mut health {
            h.borrow_and_update();
        }
    }
}

/// The next moment the merged view changes on its own: a down cluster turning stale, or the end of the
/// startup wait for clusters that have not listed.
fn next_deadline(
    views: &[MemberView],
    started: Instant,
    stale_after: Option<Duration>,
) -> Option<Instant> {
    let after = stale_after?;
    let now = Instant::now();
    let mut times: Vec<Instant> = views
        .iter()
        .filter_map(|v| v.down_since)
        .map(|since| since + after)
        .collect();
    if views.iter().any(|v| v.registry.is_none()) {
        times.push(started + after);
    }
    times.into_iter().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests;
