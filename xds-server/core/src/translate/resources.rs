//! Model + policy + priority plan → Envoy resources. Pure functions; no I/O, no clocks.
//!
//! Only fields without protobuf maps are used, so encoding is deterministic and encoded bytes can serve as
//! change detection (envoy-types maps are HashMaps).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{
        self, common_lb_config, ClusterDiscoveryType, CommonLbConfig, DiscoveryType,
        EdsClusterConfig,
    },
    Cluster, OutlierDetection as EnvoyOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source::ConfigSourceSpecifier, health_check, socket_address::PortSpecifier,
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthCheck as EnvoyHealthCheck,
    HealthStatus, Http2ProtocolOptions, Locality as EnvoyLocality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    cluster_load_assignment::Policy as LoadAssignmentPolicy, lb_endpoint::HostIdentifier,
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    retry_policy::{retry_host_predicate, retry_priority, RetryHostPredicate, RetryPriority},
    route::Action,
    route_action::ClusterSpecifier,
    route_match::PathSpecifier,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::{Int64Range, Percent};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use crate::model::{labels, Health, Locality, Service, ServiceId, ServicePort, SpiffeId};
use crate::policy::{FailoverPolicy, HealthCheck, HealthCheckProtocol, MtlsMode, OutlierDetection};
use crate::translate::input::{ClusterInput, SentHost};
use crate::translate::priorities::{LocalityClass, PriorityLevel, PriorityPlan};

pub const LISTENER_NAME: &str = "outbound_http";
pub const ROUTE_CONFIG_NAME: &str = "outbound";

/// `NAME.NAMESPACE:PORT`: readable in Envoy's admin output and unique per service port.
pub fn cluster_name(id: &ServiceId, port: &ServicePort) -> String {
    format!("{}.{}:{}", id.name, id.namespace, port.port)
}

pub(crate) fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub(crate) fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The `typed_extension_protocol_options` key of the upstream HTTP protocol options.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// An EDS-over-ADS cluster carrying the policy's failure detection and spillover settings; under
/// `mtls: STRICT`, TLS that accepts only servers carrying one of `peer_identities` (any server of
/// the trust bundle when it is empty).
///
/// With `distribute` rules the cluster balances by locality weight (`locality_weighted_lb_config`),
/// and every locality of every client's load assignment then carries a weight (see
/// [`locality_weights`]): Envoy gives a locality without one no traffic at all.
pub fn cluster(
    name: &str,
    policy: &FailoverPolicy,
    peer_identities: &BTreeSet<SpiffeId>,
) -> Cluster {
    let grpc_health_check = matches!(
        policy.health_check.as_ref().map(|hc| &hc.protocol),
        Some(HealthCheckProtocol::Grpc { .. })
    );
    // A gRPC health check needs a cluster that speaks HTTP/2 (Envoy refuses the cluster otherwise:
    // "cluster must support HTTP/2 for gRPC healthchecking"). A service checked over gRPC is a
    // gRPC service, which speaks HTTP/2 anyway, so its requests go HTTP/2 as well. One map entry
    // at most: the encoding stays deterministic.
    let typed_extension_protocol_options = if grpc_health_check {
        std::collections::HashMap::from([(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            pack_any(HttpProtocolOptions {
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        )),
                    },
                )),
                ..HttpProtocolOptions::default()
            }),
        )])
    } else {
        std::collections::HashMap::new()
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.to_string(),
        }),
        connect_timeout: Some(duration(std::time::Duration::from_secs(1))),
        outlier_detection: policy.outlier_detection.as_ref().map(outlier_detection),
        common_lb_config: Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: f64::from(policy.panic_threshold),
            }),
            // Envoy batches host-set changes for 1 s by default, so a second ejection reaches the load
            // balancer late and costs failed requests. Failover wants every change applied at once.
            update_merge_window: Some(duration(std::time::Duration::ZERO)),
            // `ignore_new_hosts_until_first_hc` stays off (Envoy's default). Either way a host EDS
            // adds under active health checking takes no traffic until its first check passes,
            // and that check starts at once (no initial jitter). Off, the unchecked host counts
            // as unhealthy, so its level spills to the next one for those few milliseconds; on,
            // it would be left out of the count and its level's remaining hosts would take the
            // whole load, or, in panic mode, the unchecked host would get traffic. Off never
            // routes to an unchecked host and never piles load onto the rest.
            locality_config_specifier: (!policy.distribute.is_empty()).then_some(
                common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..CommonLbConfig::default()
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        transport_socket: (policy.mtls == MtlsMode::Strict)
            .then(|| super::mtls::upstream_transport_socket(peer_identities)),
        health_checks: policy.health_check.iter().map(health_check).collect(),
        typed_extension_protocol_options,
        ..Cluster::default()
    }
}

/// `healthCheck` as Envoy's active health check. Every client Envoy probes every endpoint of the
/// cluster (standby levels included: failover needs their health known before it happens).
///
/// `no_traffic_interval` (and `no_traffic_healthy_interval`) are set to `interval`: Envoy picks the
/// delay of the next check when the current one completes, and uses the no-traffic interval (default
/// 60 s) while the cluster has carried no request yet. The first check of a fresh Envoy runs before any
/// traffic, so with the default the second one came 60 s later, and a zone answering 503 on its health
/// path kept all its traffic that long (measured, Envoy 1.40, e2e `policy_language`). Unhealthy and edge
/// intervals default to `interval` too: one cadence, easy to reason about.
fn health_check(hc: &HealthCheck) -> EnvoyHealthCheck {
    let checker = match &hc.protocol {
        HealthCheckProtocol::Http { path, host } => {
            health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                path: path.clone(),
                // Empty: Envoy sends the cluster name as the Host header.
                host: host.clone().unwrap_or_default(),
                // Without this a single non-200 answer marks the host unhealthy at once and
                // `unhealthyThreshold` only counts timeouts and refused connections (measured: one
                // 503 probe moved traffic within one interval). Every status counts towards the
                // threshold now; 200 stays a pass because expected statuses take precedence.
                retriable_statuses: vec![Int64Range {
                    start: 100,
                    end: 600,
                }],
                ..health_check::HttpHealthCheck::default()
            })
        }
        // No payload to send or expect: a connect-only check.
        HealthCheckProtocol::Tcp => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
        }
        HealthCheckProtocol::Grpc { service } => {
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: service.clone().unwrap_or_default(),
                ..health_check::GrpcHealthCheck::default()
            })
        }
    };
    EnvoyHealthCheck {
        timeout: Some(duration(hc.timeout)),
        interval: Some(duration(hc.interval)),
        unhealthy_threshold: Some(UInt32Value {
            value: hc.unhealthy_threshold,
        }),
        healthy_threshold: Some(UInt32Value {
            value: hc.healthy_threshold,
        }),
        health_checker: Some(checker),
        no_traffic_interval: Some(duration(hc.interval)),
        no_traffic_healthy_interval: Some(duration(hc.interval)),
        ..EnvoyHealthCheck::default()
    }
}

fn outlier_detection(od: &OutlierDetection) -> EnvoyOutlierDetection {
    EnvoyOutlierDetection {
        consecutive_5xx: Some(UInt32Value {
            value: od.consecutive_5xx,
        }),
        enforcing_consecutive_5xx: Some(UInt32Value {
            value: if od.consecutive_5xx == 0 { 0 } else { 100 },
        }),
        consecutive_gateway_failure: Some(UInt32Value {
            value: od.consecutive_gateway_failure,
        }),
        // Envoy's default is 0 (detected but never enforced): a refused connection would not eject.
        enforcing_consecutive_gateway_failure: Some(UInt32Value {
            value: if od.consecutive_gateway_failure == 0 {
                0
            } else {
                100
            },
        }),
        interval: Some(duration(od.interval)),
        base_ejection_time: Some(duration(od.base_ejection_time)),
        max_ejection_percent: Some(UInt32Value {
            value: od.max_ejection_percent,
        }),
        // Success-rate ejection needs request volume a failover setup cannot promise; consecutive
        // failures are the signal we rely on.
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..EnvoyOutlierDetection::default()
    }
}

pub(crate) fn health_status(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    }
}

/// Endpoints grouped by (priority, locality). Localities within a level are sorted so the encoding is
/// stable whatever order the source listed them in. For a client on a network (`class`), the
/// endpoints of each other network are sent as one host at that network's gateway, weighted by how
/// many endpoints it stands for.
pub fn load_assignment(
    name: &str,
    input: &ClusterInput,
    class: &LocalityClass,
    plan: &PriorityPlan,
    policy: &FailoverPolicy,
) -> ClusterLoadAssignment {
    let client_network = class.value(labels::NETWORK);
    // Only a policy with `distribute` rules turns locality weighting on (see `cluster`); every other
    // policy encodes exactly as it did before weights existed.
    let weighted = !policy.distribute.is_empty();
    let mut groups = Vec::new();
    for level in &plan.levels {
        let hosts_of_level = input.hosts(level, client_network);
        let weights = weighted.then(|| locality_weights(level, &hosts_of_level));
        for (at, (locality, hosts)) in hosts_of_level.into_iter().enumerate() {
            groups.push(LocalityLbEndpoints {
                load_balancing_weight: weights.as_ref().map(|w| UInt32Value { value: w[at] }),
                locality: Some(EnvoyLocality {
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.subzone.clone(),
                }),
                lb_endpoints: hosts
                    .into_iter()
                    .map(|host| LbEndpoint {
                        health_status: health_status(host.health) as i32,
                        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                            address: Some(socket_address(&host.address.to_string(), host.port)),
                            ..EnvoyEndpoint::default()
                        })),
                        // Unset for a plain endpoint (weight 1), so a mesh without networks encodes
                        // exactly as before.
                        load_balancing_weight: host
                            .gateway_for
                            .is_some()
                            .then_some(UInt32Value { value: host.behind }),
                        ..LbEndpoint::default()
                    })
                    .collect(),
                priority: level.priority,
                ..LocalityLbEndpoints::default()
            });
        }
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: groups,
        policy: Some(LoadAssignmentPolicy {
            overprovisioning_factor: Some(UInt32Value {
                value: policy.overprovisioning_factor,
            }),
            ..LoadAssignmentPolicy::default()
        }),
        ..ClusterLoadAssignment::default()
    }
}

/// The locality weights (`LocalityLbEndpoints.load_balancing_weight`) of one level's locality
/// groups, as [`ClusterInput::hosts`] returns them, for a cluster with locality weighting on.
///
/// * A `distribute` level: each `to` pattern's weight is split over the localities it matches in
///   proportion to their hosts (a gateway host counts as the endpoints it stands for). Integers
///   scaled by the lcm of the patterns' host counts make every pattern's share of the level exactly
///   its weight / the sum of the weights of the patterns that have hosts here (a pattern without
///   hosts in the level drops out and the others are renormalised). Should that not fit Envoy's
///   limit (the level's sum ≤ u32::MAX), weights are rounded at weight × 1000 instead.
/// * Any other level: the locality's host count, so every host gets the same share, as without
///   locality weighting.
///
/// Every weight is ≥ 1 (Envoy requires it, and a locality without a weight gets no traffic).
pub fn locality_weights(level: &PriorityLevel, groups: &[(&Locality, Vec<SentHost>)]) -> Vec<u32> {
    let hosts: Vec<u64> = groups
        .iter()
        .map(|(_, hosts)| {
            hosts
                .iter()
                .map(|h| u64::from(h.behind))
                .sum::<u64>()
                .max(1)
        })
        .collect();
    let Some(rule) = &level.reason.distribute else {
        return hosts
            .iter()
            .map(|&h| u32::try_from(h).unwrap_or(u32::MAX))
            .collect();
    };
    // Which pattern each group belongs to (patterns do not overlap). A group matching none cannot
    // happen (a gateway is filed under a locality the rule matches, see `ClusterInput::hosts`);
    // should it, it gets the smallest weight rather than a share of some pattern.
    let pattern: Vec<Option<usize>> = groups
        .iter()
        .map(|(l, _)| rule.to.iter().position(|(p, _)| p.matches(l.parts())))
        .collect();
    let mut per_pattern = vec![0u64; rule.to.len()];
    for (p, h) in pattern.iter().zip(&hosts) {
        if let Some(p) = p {
            per_pattern[*p] += h;
        }
    }
    let present: Vec<usize> = (0..rule.to.len()).filter(|&p| per_pattern[p] > 0).collect();
    let weight_sum: u64 = present.iter().map(|&p| u64::from(rule.to[p].1)).sum();
    // Exact: weight(group) = w(p) × (L / H(p)) × h(group), L = lcm of the H(p); pattern p's sum is
    // w(p) × L, the level's L × Σ w.
    let lcm = present
        .iter()
        .try_fold(1u64, |acc, &p| {
            let h = per_pattern[p];
            (acc / gcd(acc, h)).checked_mul(h)
        })
        .filter(|&l| {
            l.checked_mul(weight_sum.max(1))
                .is_some_and(|t| t <= u64::from(u32::MAX))
        });
    let mut weights: Vec<u64> = pattern
        .iter()
        .zip(&hosts)
        .map(|(p, &h)| match (p, lcm) {
            (None, _) => 1,
            (Some(p), Some(lcm)) => u64::from(rule.to[*p].1) * (lcm / per_pattern[*p]) * h,
            // Rounded: 1000 × w(p) × h / H(p), to the nearest integer, at least 1.
            (Some(p), None) => {
                let total = per_pattern[*p];
                ((2000 * u64::from(rule.to[*p].1) * h + total) / (2 * total)).max(1)
            }
        })
        .collect();
    let common = weights.iter().fold(0, |acc, &w| gcd(acc, w));
    if common > 1 {
        for w in &mut weights {
            *w /= common;
        }
    }
    weights
        .into_iter()
        .map(|w| u32::try_from(w).unwrap_or(u32::MAX))
        .collect()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

pub(crate) fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

/// The router: the last HTTP filter of every connection manager we send (and for gRPC clients the
/// only one).
pub(crate) fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..HttpFilter::default()
    }
}

/// The outbound HTTP listener every client gets, on the address it asked for.
pub fn listener(address: &str, port: u16) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: LISTENER_NAME.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: ROUTE_CONFIG_NAME.to_string(),
        })),
        http_filters: vec![router_filter()],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: LISTENER_NAME.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// Retries that turn a failover into (nearly) no failed requests: a retry goes to another host
/// (previous_hosts) and, once a priority has failed, to the next priority (previous_priorities).
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,reset,5xx".to_string(),
        num_retries: Some(UInt32Value { value: 2 }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pack_any(
                PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        retry_priority: Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(pack_any(
                PreviousPrioritiesConfig {
                    update_frequency: 1,
                },
            ))),
        }),
        ..RetryPolicy::default()
    }
}

/// Host names a client may use for a service port. The bare `NAME` is only offered where it is
/// unambiguous for this client (see [`route_configuration`]).
fn domains(id: &ServiceId, port: &ServicePort, default_port: bool, bare: bool) -> Vec<String> {
    let mut hosts = vec![
        format!("{}.{}", id.name, id.namespace),
        format!("{}.{}.svc", id.name, id.namespace),
        format!("{}.{}.svc.cluster.local", id.name, id.namespace),
    ];
    if bare {
        hosts.insert(0, id.name.clone());
    }
    let mut out = Vec::new();
    for host in hosts {
        out.push(format!("{host}:{}", port.port));
        if default_port {
            out.push(host);
        }
    }
    out
}

/// The namespace a bare service name means for a client in `client_namespace`, given the namespaces
/// that have a service of that name: like Kubernetes DNS, the client's own namespace first; else the
/// only one there is; an ambiguous name means nothing rather than a guess.
pub(crate) fn bare_name_namespace<'a>(
    namespaces: &BTreeSet<&'a str>,
    client_namespace: Option<&str>,
) -> Option<&'a str> {
    match client_namespace.and_then(|ns| namespaces.get(ns)) {
        Some(own) => Some(own),
        None if namespaces.len() == 1 => namespaces.first().copied(),
        None => None,
    }
}

/// One virtual host per service port. A bare service name resolves like Kubernetes DNS: to the client's
/// own namespace first; else to the only service with that name; an ambiguous name is left out rather
/// than routed to a guess.
pub fn route_configuration<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    client_namespace: Option<&str>,
) -> RouteConfiguration {
    let services: Vec<&Service> = services.into_iter().collect();
    let mut namespaces_by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for svc in &services {
        namespaces_by_name
            .entry(svc.id.name.as_str())
            .or_default()
            .insert(svc.id.namespace.as_str());
    }
    let bare_ok = |id: &ServiceId| {
        bare_name_namespace(&namespaces_by_name[id.name.as_str()], client_namespace)
            == Some(id.namespace.as_str())
    };
    let mut virtual_hosts = Vec::new();
    for svc in &services {
        let bare = bare_ok(&svc.id);
        for (i, port) in svc.ports.iter().enumerate() {
            let name = cluster_name(&svc.id, port);
            virtual_hosts.push(VirtualHost {
                name: name.clone(),
                domains: domains(&svc.id, port, i == 0, bare),
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                        ..RouteMatch::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(name)),
                        retry_policy: Some(retry_policy()),
                        ..RouteAction::default()
                    })),
                    ..Route::default()
                }],
                ..VirtualHost::default()
            });
        }
    }
    RouteConfiguration {
        name: ROUTE_CONFIG_NAME.to_string(),
        virtual_hosts,
        ..RouteConfiguration::default()
    }
}

#[cfg(test)]
mod tests;
