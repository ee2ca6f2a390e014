//! Prometheus metrics, and the HTTP endpoint that serves them with `/healthz` and `/readyz`.
//!
//! One process-wide set (like a logger): sources, the policy watchers and the ADS streams record into
//! it without it being passed down every stage. Figures that describe the current state (cache size,
//! expected priority load) are computed from the current snapshot when scraped, not kept up to date on
//! every change.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use xds_core::snapshot::{ResourceType, Snapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// A server port: `xds` or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    pub port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLoadLabels {
    pub cluster: String,
    pub class: String,
    pub priority: String,
}

/// One observed row as a metric labels it: known service ports and localities only (the load book
/// records nothing else), so the series are bounded by the snapshot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ObservedLabels {
    pub service: String,
    pub port: String,
    pub locality: String,
    pub priority: String,
}

/// A service port as seen by one class of reporting clients. `class` is the clients' locality when the
/// service has endpoints there, else `other`: clients say where they are, so only localities the
/// snapshot knows become labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ServingLabels {
    pub service: String,
    pub port: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// A service port judged by the fleet verdict: `service` is `NAMESPACE/NAME`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetServiceLabels {
    pub service: String,
    pub port: String,
}

/// A fleet verdict transition: `mode` observe or enforce, `kind` fleet_ejected, fleet_restored or
/// fleet_observed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetVerdictLabels {
    pub mode: String,
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub connected_clients: Family<ProtocolLabel, Gauge>,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_bytes: Family<TypeLabel, Counter>,
    pub push_resources: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    /// Snapshot built → response handed to the client's stream.
    pub push_latency: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// Snapshot built → the client acknowledged the push it caused.
    pub convergence: Family<TypeLabel, Histogram, fn() -> Histogram>,
    pub snapshots: Counter,
    pub snapshot_build_seconds: Histogram,
    pub source_events: Family<SourceLabel, Counter>,
    pub source_errors: Family<SourceLabel, Counter>,
    /// Per watched cluster (`kubernetes:NAME`): 1 while its API server answers.
    pub cluster_up: Family<SourceLabel, Gauge>,
    /// Per watched cluster: 1 while its endpoints are stale (sent UNHEALTHY where others serve).
    pub cluster_stale: Family<SourceLabel, Gauge>,
    /// Kubernetes watches ended because they were silent for the idle timeout, by source.
    pub kube_watch_restarts: Family<SourceLabel, Counter>,
    /// Per network with a gateway host name: 1 while it resolves to at least one address.
    pub gateway_resolved: Family<SourceLabel, Gauge>,
    pub policy_reloads: Family<ResultLabel, Counter>,
    pub tls_handshake_failures: Family<PortLabel, Counter>,
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// Open connections on the xDS port.
    pub connections: Gauge,
    /// Connections closed at once because the xDS port was at --max-connections.
    pub connections_refused: Counter,
    /// Connections asked to go at their maximum age (--max-connection-age).
    pub connections_aged: Counter,
    pub ready: Gauge,
    /// Open LRS streams.
    pub lrs_streams: Gauge,
    /// Reported localities not recorded, by reason (unknown cluster or locality, ...).
    pub lrs_reports_dropped: Family<ReasonLabel, Counter>,
    /// Requests clients reported, per service port, locality and priority (since start).
    pub observed_requests: Family<ObservedLabels, Counter>,
    pub observed_errors: Family<ObservedLabels, Counter>,
    /// Errors / requests over the load window, per service port, locality and priority.
    pub observed_error_ratio: Family<ObservedLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The lowest priority carrying requests, per service port and client class; -1: none.
    pub observed_serving_priority: Family<ServingLabels, Gauge>,
    /// Localities the fleet verdict ejected now, per service port with `fleetFailover` on.
    pub fleet_ejected_localities: Family<FleetServiceLabels, Gauge>,
    pub fleet_verdicts: Family<FleetVerdictLabels, Counter>,
    // Computed when scraped.
    cache_clusters: Gauge,
    cache_classes: Gauge,
    cache_eds_answers: Gauge,
    cache_listeners: Gauge,
    cache_route_configs: Gauge,
    cache_bytes: Gauge,
    expected_load: Family<PriorityLoadLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("xds");
        let m = Metrics {
            connected_clients: Family::default(),
            pushes: Family::default(),
            push_bytes: Family::default(),
            push_resources: Family::default(),
            nacks: Family::default(),
            push_latency: Family::new_with_constructor(latency_histogram),
            convergence: Family::new_with_constructor(latency_histogram),
            snapshots: Counter::default(),
            snapshot_build_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            source_events: Family::default(),
            source_errors: Family::default(),
            cluster_up: Family::default(),
            cluster_stale: Family::default(),
            kube_watch_restarts: Family::default(),
            gateway_resolved: Family::default(),
            policy_reloads: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_reloads: Family::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            connections_aged: Counter::default(),
            ready: Gauge::default(),
            lrs_streams: Gauge::default(),
            lrs_reports_dropped: Family::default(),
            observed_requests: Family::default(),
            observed_errors: Family::default(),
            observed_error_ratio: Family::default(),
            observed_serving_priority: Family::default(),
            fleet_ejected_localities: Family::default(),
            fleet_verdicts: Family::default(),
            cache_clusters: Gauge::default(),
            cache_classes: Gauge::default(),
            cache_eds_answers: Gauge::default(),
            cache_listeners: Gauge::default(),
            cache_route_configs: Gauge::default(),
            cache_bytes: Gauge::default(),
            expected_load: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connected_clients",
            "Envoys with an open ADS stream, by protocol",
            m.connected_clients.clone(),
        );
        r.register("pushes", "xDS responses sent, by type", m.pushes.clone());
        r.register(
            "push_bytes",
            "Encoded bytes of xDS responses sent, by type",
            m.push_bytes.clone(),
        );
        r.register(
            "push_resources",
            "Resources in xDS responses sent, by type",
            m.push_resources.clone(),
        );
        r.register("nacks", "Responses Envoy refused, by type", m.nacks.clone());
        r.register(
            "push_latency_seconds",
            "From a snapshot being built to a response it caused being handed to the client's stream",
            m.push_latency.clone(),
        );
        r.register(
            "convergence_seconds",
            "From a snapshot being built to the client acknowledging the response it caused",
            m.convergence.clone(),
        );
        r.register("snapshots", "Snapshots published", m.snapshots.clone());
        r.register(
            "snapshot_build_seconds",
            "Time to build a snapshot from the registry and policies",
            m.snapshot_build_seconds.clone(),
        );
        r.register(
            "source_events",
            "Updates received from a discovery source",
            m.source_events.clone(),
        );
        r.register(
            "source_errors",
            "Errors from a discovery source (bad input kept out, watch failures)",
            m.source_errors.clone(),
        );
        r.register(
            "cluster_up",
            "1 while a watched cluster's API server answers, by source",
            m.cluster_up.clone(),
        );
        r.register(
            "cluster_stale",
            "1 while a watched cluster's endpoints are stale (its API server has not answered for --stale-after), by source",
            m.cluster_stale.clone(),
        );
        r.register(
            "kube_watch_restarts",
            "Kubernetes watches restarted because they were silent (no event, no bookmark) for the idle timeout, by source",
            m.kube_watch_restarts.clone(),
        );
        r.register(
            "gateway_resolved",
            "1 while a network's gateway host name resolves (its endpoints are reachable from other networks), by source (gateway:NETWORK)",
            m.gateway_resolved.clone(),
        );
        r.register(
            "policy_reloads",
            "Failover policy reloads, by result",
            m.policy_reloads.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes refused or failed on a server port, by port",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "tls_reloads",
            "Reloads of the TLS certificate files after a change, by result",
            m.tls_reloads.clone(),
        );
        r.register(
            "connections",
            "Open client connections on the xDS port",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once because the xDS port was at --max-connections",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_aged",
            "Connections asked to reconnect at their maximum age (--max-connection-age)",
            m.connections_aged.clone(),
        );
        r.register(
            "ready",
            "1 once the sources have a complete view and xDS answers are served",
            m.ready.clone(),
        );
        r.register(
            "lrs_streams",
            "Open load reporting (LRS) streams",
            m.lrs_streams.clone(),
        );
        r.register(
            "lrs_reports_dropped",
            "Reported localities not recorded, by reason (unknown_cluster, unknown_locality, priority, client_rows, locality_pending)",
            m.lrs_reports_dropped.clone(),
        );
        r.register(
            "observed_requests",
            "Requests clients reported over LRS, by service, port, locality and priority",
            m.observed_requests.clone(),
        );
        r.register(
            "observed_errors",
            "Failed requests clients reported over LRS, by service, port, locality and priority",
            m.observed_errors.clone(),
        );
        r.register(
            "observed_error_ratio",
            "Failed / all requests reported within the load window, by service, port, locality and priority",
            m.observed_error_ratio.clone(),
        );
        r.register(
            "observed_serving_priority",
            "The lowest priority that carried requests in the last report intervals, by service, port and client class (-1: none)",
            m.observed_serving_priority.clone(),
        );
        r.register(
            "cache_clusters",
            "Envoy clusters in the current snapshot",
            m.cache_clusters.clone(),
        );
        r.register(
            "cache_locality_classes",
            "Distinct client locality classes with an encoded EDS answer",
            m.cache_classes.clone(),
        );
        r.register(
            "cache_eds_answers",
            "Encoded (cluster, locality class) EDS answers",
            m.cache_eds_answers.clone(),
        );
        r.register(
            "cache_listeners",
            "Encoded listeners held: one per client bind address, and inbound listeners",
            m.cache_listeners.clone(),
        );
        r.register(
            "cache_route_configs",
            "Encoded route tables held: one per client namespace",
            m.cache_route_configs.clone(),
        );
        r.register(
            "cache_bytes",
            "Encoded bytes held by the shared cache",
            m.cache_bytes.clone(),
        );
        r.register(
            "expected_priority_load_percent",
            "Share of a cluster's traffic Envoy sends to each priority, per client locality class, \
             from endpoint health and the overprovisioning factor",
            m.expected_load.clone(),
        );
        r.register(
            "fleet_ejected_localities",
            "Localities whose endpoints the fleet verdict (fleetFailover) sends UNHEALTHY, per \
             service port",
            m.fleet_ejected_localities.clone(),
        );
        r.register(
            "fleet_verdicts",
            "Fleet verdict transitions (fleet_ejected, fleet_restored, fleet_observed), by mode",
            m.fleet_verdicts.clone(),
        );
        Metrics { registry, ..m }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

pub fn type_label(kind: ResourceType) -> TypeLabel {
    TypeLabel {
        r#type: kind.short_name().to_string(),
    }
}

pub fn source_label(source: &str) -> SourceLabel {
    SourceLabel {
        source: source.to_string(),
    }
}

pub fn result_label(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "success" } else { "failure" }.to_string(),
    }
}

pub fn protocol_label(protocol: &str) -> ProtocolLabel {
    ProtocolLabel {
        protocol: protocol.to_string(),
    }
}

pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Metrics {
    /// Refreshes the scrape-time figures from `snapshot` and renders everything in the Prometheus text
    /// format.
    pub fn render(&self, snapshot: Option<&Snapshot>) -> String {
        if let Some(s) = snapshot {
            let stats = s.stats();
            self.cache_clusters.set(stats.clusters as i64);
            self.cache_classes.set(stats.classes as i64);
            self.cache_eds_answers.set(stats.eds_answers as i64);
            self.cache_listeners.set(stats.listeners as i64);
            self.cache_route_configs.set(stats.route_configs as i64);
            self.cache_bytes.set(stats.bytes as i64);
            // Rebuilt from the cache's classes on every scrape: series of classes the cache dropped (no
            // connected client has them) disappear, and the cache's caps bound the rest.
            self.expected_load.clear();
            for (cluster, class, loads) in s.expected_loads() {
                for (priority, percent) in loads.into_iter().enumerate() {
                    self.expected_load
                        .get_or_create(&PriorityLoadLabels {
                            cluster: cluster.clone(),
                            class: class.clone(),
                            priority: priority.to_string(),
                        })
                        .set(percent as i64);
                }
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (a complete snapshot is being
/// served) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshots: tokio::sync::watch::Receiver<Option<Arc<Snapshot>>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::StatusCode, response::IntoResponse, routing::get, Router};
    let snapshots = Arc::new(snapshots);
    let metrics_snapshots = snapshots.clone();
    let ready_snapshots = snapshots;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let snapshots = metrics_snapshots.clone();
                async move {
                    let snapshot = snapshots.borrow().clone();
                    // The expected-load pass simulates every cached class ([`crate::cpu`]).
                    let text =
                        crate::cpu::off_runtime(move || metrics().render(snapshot.as_deref()))
                            .await;
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let snapshots = ready_snapshots.clone();
                async move {
                    if snapshots.borrow().is_some() {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "waiting for the sources' first complete view\n",
                        )
                            .into_response()
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use xds_core::model::{ClientInfo, Endpoint, Health, Locality, Registry, Service, ServiceId};
    use xds_core::snapshot::TranslateSettings;

    #[test]
    fn render_reports_counters_cache_size_and_expected_priority_load() {
        let endpoint = |ip: &str, zone: &str, health| Endpoint {
            address: ip.parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality: Locality::new("r", zone, ""),
            labels: BTreeMap::new(),
            health,
            identity: None,
        };
        let svc = Service {
            traffic_distribution: None,
            identity: None,
            id: ServiceId::new("shop", "a"),
            ports: vec![xds_core::model::ServicePort {
                name: "http".into(),
                port: 80,
            }],
            // Own zone: 1 of 2 healthy → health 70 with factor 140: 70% stays, 30% spills to z2.
            endpoints: vec![
                endpoint("10.0.0.1", "z1", Health::Healthy),
                endpoint("10.0.0.2", "z1", Health::Unhealthy),
                endpoint("10.0.0.3", "z2", Health::Healthy),
            ],
        };
        let snap = Snapshot::build(
            None,
            Arc::new(Registry::from_services([svc])),
            Arc::default(),
            TranslateSettings::default(),
        );
        let client = ClientInfo {
            node_id: "n".into(),
            locality: Locality::new("r", "z1", ""),
            ..ClientInfo::default()
        };
        let names: BTreeSet<String> = ["a.shop:80".to_string()].into();
        snap.resources_for(ResourceType::Endpoint, &client, Some(&names));

        let m = Metrics::default();
        m.pushes
            .get_or_create(&type_label(ResourceType::Endpoint))
            .inc_by(3);
        let text = m.render(Some(&snap));
        assert!(text.contains("xds_pushes_total{type=\"EDS\"} 3"), "{text}");
        assert!(text.contains("xds_cache_locality_classes 1"), "{text}");
        assert!(text.contains("xds_cache_clusters 1"), "{text}");
        let load = |p: u32| {
            format!(
                "xds_expected_priority_load_percent{{cluster=\"a.shop:80\",class=\"region=r,zone=z1,subzone=-\",priority=\"{p}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 70", load(0))), "{text}");
        assert!(text.contains(&format!("{} 30", load(1))), "{text}");
    }
}
