//! The admin gRPC API (`proto/xds_admin.proto`): read-only answers from the current snapshot, the
//! client registry and the policy status. Served with Envoy's CSDS ([`super::csds`]), gRPC health and
//! server reflection on `--admin-addr` by [`router`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use super::proto as pb;
use super::render::render_any;
use crate::grpc::Snapshots;
use crate::registry::{self as clients, ClientRegistry, ClientSummary, XdsEvent};
use xds_core::model::{ClientInfo, Health, Locality, Registry, Service, ServiceId, ServicePort};
use xds_core::policy::{
    FailoverPolicy, HealthCheckProtocol, PolicyOrigin, PolicyScope, PolicyStatus, Spillover,
};
use xds_core::snapshot::{ClusterEntry, ResourceType, Snapshot};
use xds_core::translate::explain::{explain, ExplainedLocality, Explanation};
use xds_core::translate::resources::cluster_name;
use xds_core::translate::LocalityClass;

/// The default `--admin-addr`.
pub use xds_admin_api::DEFAULT_ADDR;

#[derive(Clone)]
pub struct AdminService {
    snapshots: Snapshots,
    clients: Arc<ClientRegistry>,
    policy_status: watch::Receiver<PolicyStatus>,
    /// Where services come from: `file:PATH` or `kubernetes`.
    source: String,
}

impl AdminService {
    pub fn new(
        snapshots: Snapshots,
        clients: Arc<ClientRegistry>,
        policy_status: watch::Receiver<PolicyStatus>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            snapshots,
            clients,
            policy_status,
            source: source.into(),
        }
    }

    pub fn into_server(self) -> pb::admin_server::AdminServer<Self> {
        pb::admin_server::AdminServer::new(self)
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        self.snapshots.borrow().clone().ok_or_else(|| {
            Status::unavailable("no complete view of services and policies yet (sources syncing)")
        })
    }
}

/// The admin port's router: its services behind the bearer token check.
pub type AdminRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<crate::auth::AdminAuthLayer, tower::layer::util::Identity>,
>;

/// Every gRPC service of the admin port: the admin API, CSDS, health (SERVING) and reflection for the
/// admin API and health, all but health behind `auth` (a no-op without `--admin-token-file`).
pub fn router(
    admin: AdminService,
    csds: super::csds::CsdsService,
    auth: crate::auth::AdminAuthLayer,
) -> anyhow::Result<AdminRouter> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The admin port answers as soon as it listens; readiness of the xDS side is the xDS port's health.
    tokio::spawn(async move {
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status(pb::SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(tonic::transport::Server::builder()
        .layer(auth)
        .add_service(admin.into_server())
        .add_service(csds.into_server())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn locality_pb(l: &Locality) -> pb::Locality {
    pb::Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.subzone.clone(),
    }
}

pub fn sync_status_pb(s: clients::SyncStatus) -> pb::SyncStatus {
    match s {
        clients::SyncStatus::Synced => pb::SyncStatus::Synced,
        clients::SyncStatus::Stale => pb::SyncStatus::Stale,
        clients::SyncStatus::Nacked => pb::SyncStatus::Nacked,
        clients::SyncStatus::NotSent => pb::SyncStatus::NotSent,
    }
}

fn protocol_pb(p: clients::Protocol) -> pb::Protocol {
    match p {
        clients::Protocol::Sotw => pb::Protocol::Sotw,
        clients::Protocol::Delta => pb::Protocol::Delta,
    }
}

/// A content hash as shown to users.
pub fn hash_text(hash: u64) -> String {
    format!("{hash:016x}")
}

/// `file:PATH`, `kubernetes:NS/NAME`, `built-in`, or for a Service's traffic distribution
/// `Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default shop/defaults)`.
pub fn origin_text(origin: &PolicyOrigin) -> String {
    match origin {
        PolicyOrigin::BuiltIn => "built-in".to_string(),
        PolicyOrigin::Named {
            namespace,
            name,
            source,
        } if source == "kubernetes" => format!("kubernetes:{namespace}/{name}"),
        PolicyOrigin::Named { source, .. } => format!("file:{source}"),
        PolicyOrigin::TrafficDistribution { .. } => origin.describe(),
    }
}

fn scope_text(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Mesh => "mesh".to_string(),
        PolicyScope::Namespace(ns) => format!("namespace {ns}"),
        PolicyScope::Service(id) => format!("service {id}"),
        PolicyScope::ServicePort(id, port) => format!("service {id} port {port}"),
    }
}

/// `NS/NAME:PORT`.
fn service_port_text(id: &ServiceId, port: &xds_core::model::ServicePort) -> String {
    format!("{id}:{}", port.port)
}

fn spillover_text(s: Spillover) -> &'static str {
    match s {
        Spillover::Gradual => "gradual",
        Spillover::AllOrNothing => "allOrNothing",
    }
}

/// The settings of a policy, as the admin API reports them (scope, origin and services left empty).
pub fn policy_settings_pb(p: &FailoverPolicy) -> pb::Policy {
    pb::Policy {
        failover_priority: p
            .failover_priority
            .iter()
            .map(ToString::to_string)
            .collect(),
        failover: p
            .failover
            .iter()
            .map(|r| pb::FailoverRule {
                from: r.from.clone(),
                to: r.to.clone(),
            })
            .collect(),
        overprovisioning_factor: p.overprovisioning_factor,
        panic_threshold: p.panic_threshold,
        outlier_detection: p.outlier_detection.as_ref().map(|od| pb::OutlierDetection {
            consecutive_5xx: od.consecutive_5xx,
            consecutive_gateway_failure: od.consecutive_gateway_failure,
            interval_ms: od.interval.as_millis() as u64,
            base_ejection_time_ms: od.base_ejection_time.as_millis() as u64,
            max_ejection_percent: od.max_ejection_percent,
        }),
        outlier_detection_enabled: p.outlier_detection.is_some(),
        distribute: p
            .distribute
            .iter()
            .map(|r| pb::DistributeRule {
                from: r.from.to_string(),
                to: r
                    .to
                    .iter()
                    .map(|(l, w)| pb::DistributeTarget {
                        locality: l.to_string(),
                        weight: *w,
                    })
                    .collect(),
            })
            .collect(),
        health_check: p.health_check.as_ref().map(|hc| {
            let mut out = pb::HealthCheck {
                interval_ms: hc.interval.as_millis() as u64,
                timeout_ms: hc.timeout.as_millis() as u64,
                unhealthy_threshold: hc.unhealthy_threshold,
                healthy_threshold: hc.healthy_threshold,
                ..pb::HealthCheck::default()
            };
            match &hc.protocol {
                HealthCheckProtocol::Http { path, host } => {
                    out.protocol = "http".into();
                    out.path = path.clone();
                    out.host = host.clone().unwrap_or_default();
                }
                HealthCheckProtocol::Tcp => out.protocol = "tcp".into(),
                HealthCheckProtocol::Grpc { service } => {
                    out.protocol = "grpc".into();
                    out.grpc_service = service.clone().unwrap_or_default();
                }
            }
            out
        }),
        spillover: spillover_text(p.spillover).to_string(),
        mtls: match p.mtls {
            xds_core::policy::MtlsMode::Strict => "STRICT",
            xds_core::policy::MtlsMode::Disable => "DISABLE",
        }
        .to_string(),
        backups: p
            .backups
            .iter()
            .map(|b| match &b.cluster {
                Some(c) => format!("{}@{c}", b.service),
                None => b.service.to_string(),
            })
            .collect(),
        ..pb::Policy::default()
    }
}

fn health_text(h: Health) -> &'static str {
    match h {
        Health::Healthy => "HEALTHY",
        Health::Unhealthy => "UNHEALTHY",
        Health::Draining => "DRAINING",
    }
}

/// `cds`, `eds`, `lds`, `rds` (any case, also `clusters`, `endpoints`, `listeners`, `routes`) or a type
/// URL.
pub fn parse_type(text: &str) -> Result<ResourceType, String> {
    if let Some(t) = ResourceType::from_type_url(text) {
        return Ok(t);
    }
    match text.to_ascii_lowercase().as_str() {
        "cds" | "cluster" | "clusters" => Ok(ResourceType::Cluster),
        "eds" | "endpoint" | "endpoints" => Ok(ResourceType::Endpoint),
        "lds" | "listener" | "listeners" => Ok(ResourceType::Listener),
        "rds" | "route" | "routes" => Ok(ResourceType::Route),
        "sds" | "secret" | "secrets" => Ok(ResourceType::Secret),
        _ => Err(format!(
            "unknown resource type `{text}`: use cds, eds, lds, rds, sds or a type URL"
        )),
    }
}

pub fn client_pb(c: &ClientSummary) -> pb::Client {
    pb::Client {
        node_id: c.node_id.clone(),
        cluster: c.cluster.clone(),
        locality: Some(locality_pb(&c.locality)),
        locality_class: c.class.clone(),
        protocol: protocol_pb(c.protocol) as i32,
        connected_at_unix_ms: unix_ms(c.connected_at),
        stream_id: c.stream_id,
        types: c
            .types
            .iter()
            .map(|t| {
                let r = &t.report;
                pb::TypeStatus {
                    type_url: r.kind.type_url().to_string(),
                    short_name: r.kind.short_name().to_string(),
                    status: sync_status_pb(r.status) as i32,
                    subscribed: r.subscribed,
                    wildcard: r.wildcard,
                    names: r.names as u32,
                    version_sent: r.version_sent.clone().unwrap_or_default(),
                    version_acked: r.version_acked.clone().unwrap_or_default(),
                    last_nack: r.nack.as_ref().map(|(version, error)| pb::Nack {
                        version: version.clone(),
                        error: error.clone(),
                        at_unix_ms: t.nack_at.map_or(0, unix_ms),
                    }),
                    resources: r.held.len() as u32,
                }
            })
            .collect(),
    }
}

/// The newest stream of a node (an Envoy that is reconnecting has two for a moment).
pub fn newest(registry: &ClientRegistry, node_id: &str) -> Result<ClientSummary, Status> {
    registry
        .find(node_id)
        .into_iter()
        .max_by_key(|c| c.stream_id)
        .ok_or_else(|| Status::not_found(format!("no connected client with node id `{node_id}`")))
}

/// What one client holds, against what it would be sent now.
pub fn client_resources(
    summary: &ClientSummary,
    client: &ClientInfo,
    snapshot: &Snapshot,
    kind: Option<ResourceType>,
    name: Option<&str>,
) -> Vec<pb::ClientResource> {
    let mut out = Vec::new();
    for t in &summary.types {
        let r = &t.report;
        if kind.is_some_and(|k| k != r.kind) {
            continue;
        }
        for (held_name, held_hash) in &r.held {
            if name.is_some_and(|n| n != held_name) {
                continue;
            }
            let current = snapshot.resource(r.kind, client, held_name);
            let older = current.as_ref().is_none_or(|c| c.hash != *held_hash);
            let text = match &current {
                Some(_) if !r.kind.shows_contents() => {
                    "(secret: contents not shown, they hold private keys)".into()
                }
                Some(c) => render_any(&c.any),
                None => "(no longer served: the client holds a resource that was removed)".into(),
            };
            out.push(pb::ClientResource {
                type_url: r.kind.type_url().to_string(),
                short_name: r.kind.short_name().to_string(),
                name: held_name.clone(),
                status: sync_status_pb(r.status) as i32,
                held_version: hash_text(*held_hash),
                current_version: current
                    .as_ref()
                    .map_or(String::new(), |c| hash_text(c.hash)),
                client_holds_older_version: older,
                text,
            });
        }
    }
    out
}

/// Finds a service by `NS/NAME`, `NAME.NS`, a cluster name `NAME.NS:PORT` or a unique bare `NAME`;
/// returns it and the port the query named, if any.
pub fn find_service<'a>(
    registry: &'a Registry,
    query: &str,
) -> Result<(&'a Service, Option<u16>), String> {
    let query = query.trim();
    let (base, port) = match query.rsplit_once(':') {
        Some((base, port)) => (
            base,
            Some(
                port.parse::<u16>()
                    .map_err(|_| format!("`{query}`: `{port}` is not a port number"))?,
            ),
        ),
        None => (query, None),
    };
    let id = if let Some((ns, name)) = base.split_once('/') {
        Some(ServiceId::new(ns, name))
    } else if let Some((name, rest)) = base.split_once('.') {
        // NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local
        let ns = rest.split('.').next().unwrap_or(rest);
        Some(ServiceId::new(ns, name))
    } else {
        None
    };
    let service = match id {
        Some(id) => registry
            .services
            .get(&id)
            .ok_or_else(|| format!("no service {id}"))?,
        None => {
            let matches: Vec<&Service> = registry
                .services
                .values()
                .filter(|s| s.id.name == base)
                .collect();
            match matches.as_slice() {
                [one] => *one,
                [] => return Err(format!("no service named `{base}` in any namespace")),
                many => {
                    let names: Vec<String> = many.iter().map(|s| s.id.to_string()).collect();
                    return Err(format!(
                        "`{base}` is ambiguous: {}; name one as NAMESPACE/NAME",
                        names.join(", ")
                    ));
                }
            }
        }
    };
    Ok((service, port))
}

fn explained_locality_pb(l: ExplainedLocality) -> pb::Locality {
    pb::Locality {
        region: l.region,
        zone: l.zone,
        sub_zone: l.sub_zone,
    }
}

fn explanation_pb(e: Explanation) -> pb::Explanation {
    pb::Explanation {
        cluster: e.cluster,
        service: e.service,
        port: u32::from(e.port),
        locality_class: e.class,
        overprovisioning_factor: e.overprovisioning_factor,
        panic_threshold: e.panic_threshold,
        levels: e
            .levels
            .into_iter()
            .map(|l| pb::Level {
                priority: l.priority,
                reason: l.reason,
                matched_labels: l
                    .matched_labels
                    .into_iter()
                    .map(|m| pb::MatchedLabel {
                        key: m.key,
                        value: m.value,
                        pinned: m.pinned,
                    })
                    .collect(),
                failover: l.failover.map(|f| pb::FailoverRule {
                    from: f.from,
                    to: f.to,
                }),
                backup: l.backup.unwrap_or_default(),
                distribute: l.distribute.map(|d| pb::DistributeRule {
                    from: d.from,
                    to: d
                        .to
                        .into_iter()
                        .map(|t| pb::DistributeTarget {
                            locality: t.pattern,
                            weight: t.weight,
                        })
                        .collect(),
                }),
                localities: l
                    .localities
                    .into_iter()
                    .map(|s| pb::LocalityShare {
                        locality: Some(explained_locality_pb(s.locality)),
                        weight: s.weight,
                        pattern: s.pattern.unwrap_or_default(),
                        share_of_level: s.share_of_level,
                        expected_percent: s.expected_percent,
                    })
                    .collect(),
                endpoints: l
                    .endpoints
                    .into_iter()
                    .map(|ep| pb::LevelEndpoint {
                        address: ep.address,
                        port: u32::from(ep.port),
                        locality: Some(explained_locality_pb(ep.locality)),
                        health: ep.health,
                        gateway_for: ep.gateway_for.unwrap_or_default(),
                        weight: ep.weight,
                    })
                    .collect(),
                healthy: l.healthy as u32,
                total: l.total as u32,
                health_percent: l.health_percent,
                health_score: l.health_score,
                load_percent: l.load_percent,
                panic: l.panic,
            })
            .collect(),
        load: e.load,
        panic: e.panic,
        no_healthy_upstream: e.no_healthy_upstream,
        normalized_total_health: e.normalized_total_health,
        notes: e.notes,
        policy: String::new(),
    }
}

/// The explain answer for a resolved client (pure apart from reading the snapshot).
pub fn explain_for(
    snapshot: &Snapshot,
    service_query: &str,
    port: Option<u16>,
    client: &ClientInfo,
    client_text: String,
) -> Result<pb::ExplainPrioritiesResponse, Status> {
    let (service, named_port) =
        find_service(&snapshot.registry, service_query).map_err(Status::not_found)?;
    let wanted = port.or(named_port);
    let ports: Vec<_> = service
        .ports
        .iter()
        .filter(|p| wanted.is_none_or(|w| w == p.port))
        .collect();
    if ports.is_empty() {
        let have: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
        return Err(Status::not_found(format!(
            "service {} has no port {}; its ports: {}",
            service.id,
            wanted.unwrap_or_default(),
            have.join(", ")
        )));
    }
    let explanations = ports
        .into_iter()
        .map(|p| {
            // Each port under its own policy (a policy may name one port).
            let served = served(snapshot, &service.id, p)?;
            let policy = &served.policy.policy;
            let class = LocalityClass::of(client, policy);
            Ok(pb::Explanation {
                policy: origin_text(&served.policy.origin),
                ..explanation_pb(explain(&class, &served.input, policy))
            })
        })
        .collect::<Result<Vec<pb::Explanation>, Status>>()?;
    Ok(pb::ExplainPrioritiesResponse {
        client: client_text,
        // The first port's; each explanation names its own.
        policy: explanations
            .first()
            .map(|e| e.policy.clone())
            .unwrap_or_default(),
        explanations,
    })
}

/// The cluster the snapshot serves for a service port, with the policy and input its answers were
/// built from. The admin API reads these instead of resolving again, so it cannot disagree with what
/// clients were sent.
fn served<'a>(
    snapshot: &'a Snapshot,
    id: &ServiceId,
    port: &ServicePort,
) -> Result<&'a Arc<ClusterEntry>, Status> {
    let name = cluster_name(id, port);
    snapshot.cluster(&name).ok_or_else(|| {
        Status::internal(format!(
            "snapshot {} has no cluster {name} for service {id}",
            snapshot.generation
        ))
    })
}

/// The name of the policy a service port is served under ("" if the snapshot lacks the port, which a
/// snapshot built from its own registry never does).
fn served_policy_text(snapshot: &Snapshot, id: &ServiceId, port: &ServicePort) -> String {
    served(snapshot, id, port)
        .map(|c| origin_text(&c.policy.origin))
        .unwrap_or_default()
}

/// The policies in force (from the snapshot) with the services each decides, and the rejected ones.
pub fn policies_pb(snapshot: &Snapshot, status: &PolicyStatus) -> pb::ListPoliciesResponse {
    // (`NS/NAME:PORT`, port name, its served cluster) for every service port, in service order.
    let resolved: Vec<(String, String, &ClusterEntry)> = snapshot
        .registry
        .services
        .values()
        .flat_map(|s| {
            s.ports.iter().filter_map(move |p| {
                let served = served(snapshot, &s.id, p).ok()?;
                Some((service_port_text(&s.id, p), p.name.clone(), &**served))
            })
        })
        .collect();
    let active = snapshot
        .policies
        .entries
        .iter()
        .map(|entry| {
            let (namespace, name) = match &entry.origin {
                PolicyOrigin::Named {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
                _ => (String::new(), entry.origin.describe()),
            };
            // Every service port this entry decides, and those where it supplies everything but
            // the failoverPriority (the Service's trafficDistribution replaces that).
            let services = resolved
                .iter()
                .filter_map(|(text, _, c)| match &c.policy.origin {
                    o if *o == entry.origin => Some(text.clone()),
                    PolicyOrigin::TrafficDistribution { value, over, .. }
                        if **over == entry.origin =>
                    {
                        Some(format!("{text} (trafficDistribution={value})"))
                    }
                    _ => None,
                })
                .collect();
            pb::Policy {
                namespace,
                name,
                scope: scope_text(&entry.scope),
                origin: origin_text(&entry.origin),
                services,
                port: match &entry.scope {
                    PolicyScope::ServicePort(_, port) => port.clone(),
                    _ => String::new(),
                },
                ..policy_settings_pb(&entry.policy)
            }
        })
        .collect();
    let effective = resolved
        .iter()
        .map(|(text, port_name, c)| pb::EffectivePolicy {
            service_port: text.clone(),
            port_name: port_name.clone(),
            policy: origin_text(&c.policy.origin),
            failover_priority: c
                .policy
                .policy
                .failover_priority
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    pb::ListPoliciesResponse {
        effective,
        active,
        rejected: status
            .rejected()
            .map(|r| pb::RejectedPolicy {
                source: r.source.clone(),
                error: r.error.clone(),
            })
            .collect(),
    }
}

pub fn services_pb(snapshot: &Snapshot, source: &str) -> pb::ListServicesResponse {
    pb::ListServicesResponse {
        snapshot_generation: snapshot.generation,
        services: snapshot
            .registry
            .services
            .values()
            .map(|s| {
                let ports: Vec<pb::ServicePort> = s
                    .ports
                    .iter()
                    .map(|p| pb::ServicePort {
                        name: p.name.clone(),
                        port: u32::from(p.port),
                        cluster: cluster_name(&s.id, p),
                        policy: served_policy_text(snapshot, &s.id, p),
                    })
                    .collect();
                pb::Service {
                    namespace: s.id.namespace.clone(),
                    name: s.id.name.clone(),
                    endpoints: s
                        .endpoints
                        .iter()
                        .map(|ep| pb::Endpoint {
                            address: ep.address.to_string(),
                            port_overrides: ep
                                .port_overrides
                                .iter()
                                .map(|(k, v)| (k.clone(), u32::from(*v)))
                                .collect(),
                            locality: Some(locality_pb(&ep.locality)),
                            health: health_text(ep.health).to_string(),
                            labels: ep.labels.clone(),
                        })
                        .collect(),
                    source: source.to_string(),
                    policy: ports
                        .first()
                        .map_or_else(|| "built-in".to_string(), |p| p.policy.clone()),
                    traffic_distribution: s
                        .traffic_distribution
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    ports,
                }
            })
            .collect(),
    }
}

pub fn event_pb(e: &XdsEvent) -> pb::Event {
    let mut out = pb::Event::default();
    match e {
        XdsEvent::Connected {
            at,
            stream_id,
            node,
            protocol,
            locality,
        } => {
            out.kind = "connected".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.protocol = protocol_pb(*protocol) as i32;
            out.locality = locality.clone();
        }
        XdsEvent::Disconnected {
            at,
            stream_id,
            node,
        } => {
            out.kind = "disconnected".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
        }
        XdsEvent::Pushed {
            at,
            stream_id,
            node,
            type_url,
            version,
            resources,
            bytes,
        } => {
            out.kind = "pushed".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
            out.resources = *resources as u32;
            out.bytes = *bytes as u64;
        }
        XdsEvent::Acked {
            at,
            stream_id,
            node,
            type_url,
            version,
        } => {
            out.kind = "acked".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
        }
        XdsEvent::Nacked {
            at,
            stream_id,
            node,
            type_url,
            version,
            error,
        } => {
            out.kind = "nacked".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
            out.error = error.clone();
        }
    }
    out
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

/// Events from the registry, filtered by node; a reader that falls behind is told how many it lost.
fn event_stream(rx: broadcast::Receiver<XdsEvent>, node: String) -> EventStream {
    Box::pin(futures::stream::unfold(rx, move |mut rx| {
        let node = node.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let e = event_pb(&e);
                        if node.is_empty() || e.node_id == node {
                            return Some((Ok(e), rx));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let lagged = pb::Event {
                            kind: "lagged".into(),
                            at_unix_ms: unix_ms(SystemTime::now()),
                            resources: n.min(u64::from(u32::MAX)) as u32,
                            ..pb::Event::default()
                        };
                        return Some((Ok(lagged), rx));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_clients(
        &self,
        _request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        Ok(Response::new(pb::ListClientsResponse {
            clients: self.clients.list().iter().map(client_pb).collect(),
        }))
    }

    async fn get_client_config(
        &self,
        request: Request<pb::GetClientConfigRequest>,
    ) -> Result<Response<pb::GetClientConfigResponse>, Status> {
        let req = request.into_inner();
        let kind = match req.r#type.trim() {
            "" => None,
            t => Some(parse_type(t).map_err(Status::invalid_argument)?),
        };
        let summary = newest(&self.clients, &req.node_id)?;
        let client = self
            .clients
            .client_info(&req.node_id)
            .ok_or_else(|| Status::not_found(format!("client `{}` went away", req.node_id)))?;
        let snapshot = self.snapshot()?;
        let name = Some(req.name.as_str()).filter(|n| !n.is_empty());
        Ok(Response::new(pb::GetClientConfigResponse {
            node_id: summary.node_id.clone(),
            stream_id: summary.stream_id,
            snapshot_generation: snapshot.generation,
            resources: client_resources(&summary, &client, &snapshot, kind, name),
        }))
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let snapshot = self.snapshot()?;
        Ok(Response::new(services_pb(&snapshot, &self.source)))
    }

    async fn explain_priorities(
        &self,
        request: Request<pb::ExplainPrioritiesRequest>,
    ) -> Result<Response<pb::ExplainPrioritiesResponse>, Status> {
        let req = request.into_inner();
        let port = match req.port {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| Status::invalid_argument(format!("port {p} is out of range")))?,
            ),
        };
        let (client, text) = match req.client {
            Some(pb::explain_priorities_request::Client::NodeId(node)) => {
                let client = self.clients.client_info(&node).ok_or_else(|| {
                    Status::not_found(format!("no connected client with node id `{node}`"))
                })?;
                let text = format!("node {node} ({})", client.locality);
                (client, text)
            }
            Some(pb::explain_priorities_request::Client::Manual(m)) => {
                let l = m.locality.unwrap_or_default();
                let locality = Locality::new(&l.region, &l.zone, &l.sub_zone);
                let mut text = format!("locality {locality}");
                if !m.labels.is_empty() {
                    let labels: Vec<String> =
                        m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    text.push_str(&format!(" labels {}", labels.join(",")));
                }
                let client = ClientInfo {
                    locality,
                    labels: m.labels,
                    ..ClientInfo::default()
                };
                (client, text)
            }
            None => {
                return Err(Status::invalid_argument(
                    "name a client: a node id, or a locality (and labels)",
                ))
            }
        };
        let snapshot = self.snapshot()?;
        explain_for(&snapshot, &req.service, port, &client, text).map(Response::new)
    }

    async fn list_policies(
        &self,
        _request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let snapshot = self.snapshot()?;
        let status = self.policy_status.borrow().clone();
        Ok(Response::new(policies_pb(&snapshot, &status)))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let node = request.into_inner().node_id;
        Ok(Response::new(event_stream(self.clients.subscribe(), node)))
    }
}

#[cfg(test)]
mod tests;
