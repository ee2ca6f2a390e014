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

use crate::model::{labels, Health, Locality, Service, ServiceId, ServicePort};
use crate::policy::{FailoverPolicy, HealthCheck, HealthCheckProtocol, MtlsMode, OutlierDetection};
use crate::translate::input::{ClusterInput, SentHost};
use crate::translate::priorities::{LocalityClass, PriorityLevel, PriorityPlan};

pub const LISTENER_NAME: &str = "outbound_http";
pub const ROUTE_CONFIG_NAME: &str = "outbound";

/// `NAME.NAMESPACE:PORT`: readable in Envoy's admin output and unique per service port.
pub fn cluster_name(id: &ServiceId, port: &ServicePort) -> String {
    format!("{}.{}:{}", id.name, id.namespace, port.port)
}

fn duration(d: std::time::Duration) -> PbDuration {
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

/// An EDS-over-ADS cluster carrying the policy's failure detection and spillover settings.
///
/// With `distribute` rules the cluster balances by locality weight (`locality_weighted_lb_config`),
/// and every locality of every client's load assignment then carries a weight (see
/// [`locality_weights`]): Envoy gives a locality without one no traffic at all.
pub fn cluster(name: &str, policy: &FailoverPolicy) -> Cluster {
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
            .then(super::mtls::upstream_transport_socket),
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

fn health_status(health: Health) -> HealthStatus {
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

/// The outbound HTTP listener every client gets, on the address it asked for.
pub fn listener(address: &str, port: u16) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: LISTENER_NAME.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: ROUTE_CONFIG_NAME.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..HttpFilter::default()
        }],
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
        let namespaces = &namespaces_by_name[id.name.as_str()];
        match client_namespace {
            Some(ns) if namespaces.contains(ns) => ns == id.namespace,
            _ => namespaces.len() == 1,
        }
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
mod tests {
    use super::*;
    use crate::model::{ClientInfo, Endpoint, Locality};
    use crate::translate::priorities::priorities;
    use prost::Message;
    use std::sync::Arc;

    fn endpoint(ip: &str, locality: Locality, health: Health) -> Endpoint {
        Endpoint {
            address: ip.parse().unwrap(),
            port_overrides: BTreeMap::new(),
            locality,
            labels: BTreeMap::new(),
            health,
        }
    }

    fn service(ns: &str, name: &str, ports: &[u16], endpoints: Vec<Endpoint>) -> Service {
        Service {
            traffic_distribution: None,
            id: ServiceId::new(ns, name),
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, p)| ServicePort {
                    name: format!("p{i}"),
                    port: *p,
                })
                .collect(),
            endpoints,
        }
    }

    #[test]
    fn load_assignment_groups_by_priority_and_locality_with_health() {
        let east_b = Locality::new("us-east1", "us-east1-b", "");
        let east_c = Locality::new("us-east1", "us-east1-c", "");
        let west = Locality::new("us-west1", "us-west1-a", "");
        let mut svc = service(
            "shop",
            "checkout",
            &[8080],
            vec![
                endpoint("10.0.0.3", west.clone(), Health::Healthy),
                endpoint("10.0.0.2", east_c.clone(), Health::Unhealthy),
                endpoint("10.0.0.1", east_b.clone(), Health::Draining),
                endpoint("10.0.0.4", east_b.clone(), Health::Healthy),
            ],
        );
        svc.endpoints[1]
            .port_overrides
            .insert("p0".to_string(), 9002);
        let policy = FailoverPolicy::default();
        let client = ClientInfo {
            locality: east_b.clone(),
            ..ClientInfo::default()
        };
        let class = LocalityClass::of(&client, &policy);
        let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
        let plan = priorities(&class, &input, &policy);
        let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
        type Host = (String, u32, i32);
        let summary: Vec<(u32, String, Vec<Host>)> = cla
            .endpoints
            .iter()
            .map(|g| {
                (
                    g.priority,
                    g.locality.as_ref().unwrap().zone.clone(),
                    g.lb_endpoints
                        .iter()
                        .map(|lb| {
                            let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                                panic!("endpoint expected")
                            };
                            let Some(address::Address::SocketAddress(sa)) =
                                &e.address.as_ref().unwrap().address
                            else {
                                panic!("socket address expected")
                            };
                            let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                                panic!("port expected")
                            };
                            (sa.address.clone(), port, lb.health_status)
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    0,
                    "us-east1-b".to_string(),
                    vec![
                        ("10.0.0.1".to_string(), 8080, HealthStatus::Draining as i32),
                        ("10.0.0.4".to_string(), 8080, HealthStatus::Healthy as i32),
                    ]
                ),
                (
                    1,
                    "us-east1-c".to_string(),
                    vec![("10.0.0.2".to_string(), 9002, HealthStatus::Unhealthy as i32)]
                ),
                (
                    2,
                    "us-west1-a".to_string(),
                    vec![("10.0.0.3".to_string(), 8080, HealthStatus::Healthy as i32)]
                ),
            ]
        );
        assert_eq!(
            cla.policy.unwrap().overprovisioning_factor.unwrap().value,
            140
        );
    }

    /// (priority, zone, [(address, port, health, weight)]) of each locality group.
    type Group = (u32, String, Vec<(String, u32, i32, Option<u32>)>);

    fn groups(cla: &ClusterLoadAssignment) -> Vec<Group> {
        cla.endpoints
            .iter()
            .map(|g| {
                let hosts = g
                    .lb_endpoints
                    .iter()
                    .map(|lb| {
                        let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                            panic!("endpoint expected")
                        };
                        let Some(address::Address::SocketAddress(sa)) =
                            &e.address.as_ref().unwrap().address
                        else {
                            panic!("socket address expected")
                        };
                        let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                            panic!("port expected")
                        };
                        (
                            sa.address.clone(),
                            port,
                            lb.health_status,
                            lb.load_balancing_weight.as_ref().map(|w| w.value),
                        )
                    })
                    .collect();
                (g.priority, g.locality.as_ref().unwrap().zone.clone(), hosts)
            })
            .collect()
    }

    #[test]
    fn split_horizon_sends_each_remote_network_as_its_gateway_weighted_by_endpoints() {
        use crate::model::{labels, NetworkGateway, Registry};
        let b = Locality::new("r", "b", "");
        let c = Locality::new("r", "c", "");
        let on = |ip: &str, loc: &Locality, health: Health, net: &str| {
            let mut e = endpoint(ip, loc.clone(), health);
            e.labels.insert(labels::NETWORK.into(), net.into());
            e
        };
        let svc = service(
            "shop",
            "checkout",
            &[8080],
            vec![
                on("10.1.0.1", &b, Health::Healthy, "n1"),
                on("10.2.0.1", &b, Health::Unhealthy, "n2"),
                on("10.2.0.2", &b, Health::Healthy, "n2"),
                on("10.2.0.3", &b, Health::Unhealthy, "n2"),
                on("10.2.0.4", &c, Health::Unhealthy, "n2"),
                on("10.4.0.1", &c, Health::Unhealthy, "n4"),
                on("10.4.0.2", &c, Health::Draining, "n4"),
                on("10.3.0.1", &c, Health::Draining, "n3"),
                on("10.3.0.2", &c, Health::Draining, "n3"),
                endpoint("10.9.0.1", c.clone(), Health::Healthy),
            ],
        );
        let mut registry = Registry::from_services([svc.clone()]);
        for (net, ip) in [
            ("n1", "192.0.2.1"),
            ("n2", "192.0.2.2"),
            ("n3", "192.0.2.3"),
            ("n4", "192.0.2.4"),
        ] {
            registry.gateways.insert(
                net.into(),
                NetworkGateway {
                    address: ip.parse().unwrap(),
                    port: 15443,
                },
            );
        }
        let policy = FailoverPolicy::default();
        let input = ClusterInput::new(&registry, Arc::new(svc.clone()), &svc.ports[0], &policy);
        let cla_for = |network: Option<&str>| {
            let mut client = ClientInfo {
                locality: b.clone(),
                ..ClientInfo::default()
            };
            if let Some(n) = network {
                client.labels.insert(labels::NETWORK.into(), n.into());
            }
            let class = LocalityClass::of(&client, &policy);
            let plan = priorities(&class, &input, &policy);
            load_assignment("checkout.shop:8080", &input, &class, &plan, &policy)
        };
        let (h, u, d) = (
            HealthStatus::Healthy as i32,
            HealthStatus::Unhealthy as i32,
            HealthStatus::Draining as i32,
        );
        let s = |a: &str| a.to_string();
        assert_eq!(
            groups(&cla_for(Some("n1"))),
            vec![
                // n2: 3 endpoints in zone b (one healthy) and one in zone c → one healthy gateway
                // host of weight 4 where the best of them ranks (Envoy keeps one host per address)
                (
                    0,
                    s("b"),
                    vec![
                        (s("10.1.0.1"), 8080, h, None),
                        (s("192.0.2.2"), 15443, h, Some(4)),
                    ]
                ),
                // n3 is all draining → draining; n4 has none healthy (unhealthy + draining →
                // unhealthy); the endpoint without a network is sent as is
                (
                    1,
                    s("c"),
                    vec![
                        (s("10.9.0.1"), 8080, h, None),
                        (s("192.0.2.3"), 15443, d, Some(2)),
                        (s("192.0.2.4"), 15443, u, Some(2)),
                    ]
                ),
            ]
        );
        // On n2, n2's own endpoints are direct and n1 goes through its gateway.
        let on_n2 = groups(&cla_for(Some("n2")));
        assert_eq!(
            on_n2[0].2,
            vec![
                (s("10.2.0.1"), 8080, u, None),
                (s("10.2.0.2"), 8080, h, None),
                (s("10.2.0.3"), 8080, u, None),
                (s("192.0.2.1"), 15443, h, Some(1)),
            ]
        );
        // A client without a network label gets every endpoint directly, no weights.
        let flat = groups(&cla_for(None));
        let hosts: usize = flat.iter().map(|g| g.2.len()).sum();
        assert_eq!(hosts, 10);
        assert!(flat.iter().flat_map(|g| &g.2).all(|h| h.3.is_none()));
    }

    #[test]
    fn one_gateway_host_per_cluster_even_across_levels_and_backups() {
        use crate::model::{labels, NetworkGateway, Registry};
        use crate::policy::BackupService;
        let east = Locality::new("us-east1", "us-east1-b", "");
        let west = Locality::new("us-west1", "us-west1-a", "");
        let remote = |ip: &str, loc: &Locality| {
            let mut e = endpoint(ip, loc.clone(), Health::Healthy);
            e.labels.insert(labels::NETWORK.into(), "n2".into());
            e
        };
        let primary = service(
            "shop",
            "checkout",
            &[8080],
            vec![
                endpoint("10.1.0.1", east.clone(), Health::Healthy),
                remote("10.2.0.1", &west),
                endpoint("10.1.0.2", west.clone(), Health::Healthy),
            ],
        );
        let mut registry = Registry::from_services([
            primary.clone(),
            service("shop", "dr", &[8080], vec![remote("10.2.1.1", &east)]),
        ]);
        registry.gateways.insert(
            "n2".into(),
            NetworkGateway {
                address: "192.0.2.2".parse().unwrap(),
                port: 15443,
            },
        );
        let policy = FailoverPolicy {
            backups: vec![BackupService {
                service: ServiceId::new("shop", "dr"),
                cluster: None,
            }],
            ..FailoverPolicy::default()
        };
        let input = ClusterInput::new(
            &registry,
            Arc::new(primary.clone()),
            &primary.ports[0],
            &policy,
        );
        let mut client = ClientInfo {
            locality: east.clone(),
            ..ClientInfo::default()
        };
        client.labels.insert(labels::NETWORK.into(), "n1".into());
        let class = LocalityClass::of(&client, &policy);
        let plan = priorities(&class, &input, &policy);
        let cla = load_assignment("checkout.shop:8080", &input, &class, &plan, &policy);
        let h = HealthStatus::Healthy as i32;
        let s = |a: &str| a.to_string();
        // The backup's n2 endpoint joins the primary's gateway host at P1 (filed under the first of
        // its endpoints' localities, by name), and the backup's level, left empty, is gone: levels
        // stay gap-free.
        assert_eq!(
            groups(&cla),
            vec![
                (0, s("us-east1-b"), vec![(s("10.1.0.1"), 8080, h, None)]),
                (
                    1,
                    s("us-east1-b"),
                    vec![(s("192.0.2.2"), 15443, h, Some(2))]
                ),
                (1, s("us-west1-a"), vec![(s("10.1.0.2"), 8080, h, None)]),
            ]
        );
    }

    #[test]
    fn encoding_is_deterministic_whatever_the_source_order() {
        let a = Locality::new("r", "a", "");
        let b = Locality::new("r", "b", "");
        let eps = vec![
            endpoint("10.0.0.1", a.clone(), Health::Healthy),
            endpoint("10.0.0.2", b.clone(), Health::Healthy),
            endpoint("10.0.0.3", a.clone(), Health::Healthy),
        ];
        let mut reversed = eps.clone();
        reversed.reverse();
        let policy = FailoverPolicy::default();
        let class = LocalityClass::of(&ClientInfo::default(), &policy);
        let encode = |eps: Vec<Endpoint>| {
            let svc = service("ns", "s", &[80], eps);
            let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
            let plan = priorities(&class, &input, &policy);
            load_assignment("s.ns:80", &input, &class, &plan, &policy).encode_to_vec()
        };
        assert_eq!(encode(eps), encode(reversed));
        assert_eq!(
            cluster("x", &policy).encode_to_vec(),
            cluster("x", &policy).encode_to_vec()
        );
    }

    #[test]
    fn cluster_enforces_gateway_failures_and_disables_merge_window() {
        let c = cluster("checkout.shop:8080", &FailoverPolicy::default());
        let od = c.outlier_detection.unwrap();
        assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 100);
        assert_eq!(od.max_ejection_percent.unwrap().value, 100);
        let lb = c.common_lb_config.unwrap();
        assert_eq!(
            lb.update_merge_window.unwrap(),
            duration(std::time::Duration::ZERO)
        );
        assert_eq!(lb.healthy_panic_threshold.unwrap().value, 0.0);
        assert_eq!(
            c.eds_cluster_config.unwrap().service_name,
            "checkout.shop:8080"
        );
    }

    /// (priority, zone/subzone, locality weight, hosts) of each locality group.
    fn weights(cla: &ClusterLoadAssignment) -> Vec<(u32, String, Option<u32>, usize)> {
        cla.endpoints
            .iter()
            .map(|g| {
                let l = g.locality.as_ref().unwrap();
                (
                    g.priority,
                    format!("{}/{}", l.zone, l.sub_zone),
                    g.load_balancing_weight.as_ref().map(|w| w.value),
                    g.lb_endpoints.len(),
                )
            })
            .collect()
    }

    fn cla_for(
        eps: Vec<Endpoint>,
        client: Locality,
        policy: &FailoverPolicy,
    ) -> ClusterLoadAssignment {
        let svc = service("shop", "checkout", &[8080], eps);
        let input = ClusterInput::plain(Arc::new(svc.clone()), &svc.ports[0]);
        let client = ClientInfo {
            locality: client,
            ..ClientInfo::default()
        };
        let class = LocalityClass::of(&client, policy);
        let plan = priorities(&class, &input, policy);
        load_assignment("checkout.shop:8080", &input, &class, &plan, policy)
    }

    /// `n` endpoints in `locality`, addresses from `10.0.<base>.1`.
    fn hosts_in(base: u8, n: u8, locality: &Locality) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| {
                endpoint(
                    &format!("10.0.{base}.{i}"),
                    locality.clone(),
                    Health::Healthy,
                )
            })
            .collect()
    }

    #[test]
    fn distribute_weights_give_each_pattern_exactly_its_share_split_by_hosts() {
        use crate::translate::priorities::tests::rule;
        let mut eps = Vec::new();
        eps.extend(hosts_in(1, 1, &Locality::new("r", "a", "x")));
        eps.extend(hosts_in(2, 1, &Locality::new("r", "a", "y")));
        eps.extend(hosts_in(3, 1, &Locality::new("r", "b", "x")));
        eps.extend(hosts_in(4, 2, &Locality::new("r", "b", "y")));
        eps.extend(hosts_in(5, 1, &Locality::new("r", "c", "")));
        eps.extend(hosts_in(6, 2, &Locality::new("s", "q", "")));
        let policy = FailoverPolicy {
            distribute: vec![rule("r/c/*", &[("r/a/*", 80), ("r/b/*", 20)])],
            ..FailoverPolicy::default()
        };
        let cla = cla_for(eps.clone(), Locality::new("r", "c", ""), &policy);
        let s = |t: &str| t.to_string();
        // P0: r/a (2 hosts) takes 80, r/b (3 hosts) 20: lcm 6 → 240, 240 | 40, 80 → ÷40 → 6, 6 |
        // 1, 2: r/a 12/15 = 80%, r/b 3/15 = 20%, each pattern split by hosts. Other levels: weight
        // = hosts.
        assert_eq!(
            weights(&cla),
            vec![
                (0, s("a/x"), Some(6), 1),
                (0, s("a/y"), Some(6), 1),
                (0, s("b/x"), Some(1), 1),
                (0, s("b/y"), Some(2), 2),
                (1, s("c/"), Some(1), 1),
                (2, s("q/"), Some(2), 2),
            ]
        );
        let c = cluster("checkout.shop:8080", &policy);
        assert!(matches!(
            c.common_lb_config.unwrap().locality_config_specifier,
            Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ));
        // A client no rule applies to still gets a weight on every locality (the cluster is
        // locality-weighted for everyone): by host count.
        let cla = cla_for(eps.clone(), Locality::new("s", "q", ""), &policy);
        assert!(weights(&cla)
            .iter()
            .all(|(_, _, w, n)| *w == Some(*n as u32)));
        // Without distribute: no weights, no locality weighting, as before.
        let plain = FailoverPolicy::default();
        let cla = cla_for(eps, Locality::new("r", "c", ""), &plain);
        assert!(weights(&cla).iter().all(|(_, _, w, _)| w.is_none()));
        let lb = cluster("checkout.shop:8080", &plain)
            .common_lb_config
            .unwrap();
        assert_eq!(lb.locality_config_specifier, None);
    }

    #[test]
    fn a_pattern_without_endpoints_drops_out_and_the_others_renormalise() {
        use crate::translate::priorities::tests::rule;
        let mut eps = Vec::new();
        eps.extend(hosts_in(1, 3, &Locality::new("r", "a", "")));
        eps.extend(hosts_in(2, 1, &Locality::new("r", "b", "")));
        let policy = FailoverPolicy {
            distribute: vec![rule("*", &[("r/a/*", 50), ("r/b/*", 30), ("r/z/*", 20)])],
            ..FailoverPolicy::default()
        };
        let cla = cla_for(eps, Locality::new("x", "y", ""), &policy);
        // 50 : 30 over 80: 5/8 and 3/8.
        let s = |t: &str| t.to_string();
        assert_eq!(
            weights(&cla),
            vec![(0, s("a/"), Some(5), 3), (0, s("b/"), Some(3), 1)]
        );
    }

    #[test]
    fn weights_too_large_for_exact_shares_are_rounded_at_a_thousandth() {
        use crate::translate::input::SentHost;
        use crate::translate::priorities::{tests::rule, LevelReason, PriorityLevel};
        // Gateways standing for many endpoints: host counts whose lcm overflows Envoy's limit.
        let host = |behind: u32| SentHost {
            address: "192.0.2.1".parse().unwrap(),
            port: 15443,
            health: Health::Healthy,
            gateway_for: Some("n2".into()),
            behind,
        };
        let (a1, a2, b) = (
            Locality::new("r", "a", "1"),
            Locality::new("r", "a", "2"),
            Locality::new("r", "b", ""),
        );
        let groups = vec![
            (&a1, vec![host(65_521)]),
            (&a2, vec![host(65_519)]),
            (&b, vec![host(65_497)]),
        ];
        let level = PriorityLevel {
            priority: 0,
            reason: LevelReason {
                distribute: Some(rule("*", &[("r/a/*", 70), ("r/b/*", 30)])),
                ..crate::translate::priorities::tests::plain_reason()
            },
            endpoints: vec![],
        };
        let w = locality_weights(&level, &groups);
        // 70 000 × 65 521 / 131 040 → 35 000 (rounded), 34 999.5 → 35 000; r/b alone: 30 000;
        // then ÷ their gcd.
        let total: u32 = w.iter().sum();
        let a = f64::from(w[0] + w[1]) / f64::from(total);
        assert!((a - 0.7).abs() < 1e-4, "{w:?}");
        assert!(w.iter().all(|&x| x >= 1));
    }

    #[test]
    fn health_checks_encode_each_protocol() {
        use crate::policy::{HealthCheck, HealthCheckProtocol};
        let with = |protocol: HealthCheckProtocol| FailoverPolicy {
            health_check: Some(HealthCheck {
                interval: std::time::Duration::from_millis(2500),
                ..HealthCheck::new(protocol)
            }),
            ..FailoverPolicy::default()
        };
        let http = cluster(
            "c",
            &with(HealthCheckProtocol::Http {
                path: "/healthz".into(),
                host: Some("checkout.internal".into()),
            }),
        );
        assert_eq!(http.health_checks.len(), 1);
        let hc = &http.health_checks[0];
        assert_eq!(
            hc.interval,
            Some(PbDuration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            hc.timeout,
            Some(PbDuration {
                seconds: 1,
                nanos: 0
            })
        );
        assert_eq!(hc.unhealthy_threshold.unwrap().value, 3);
        assert_eq!(hc.healthy_threshold.unwrap().value, 2);
        // Not Envoy's 60 s: a fresh Envoy would otherwise probe once and then wait a minute.
        assert_eq!(hc.no_traffic_interval, hc.interval);
        assert_eq!(hc.no_traffic_healthy_interval, hc.interval);
        let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
            panic!("http health check expected: {hc:?}")
        };
        assert_eq!(
            (h.path.as_str(), h.host.as_str()),
            ("/healthz", "checkout.internal")
        );
        assert_eq!(
            h.retriable_statuses,
            [Int64Range {
                start: 100,
                end: 600
            }],
            "a bad status must count towards unhealthyThreshold, not fail the host at once"
        );
        assert!(http.typed_extension_protocol_options.is_empty());

        let tcp = cluster("c", &with(HealthCheckProtocol::Tcp));
        let Some(health_check::HealthChecker::TcpHealthCheck(t)) =
            &tcp.health_checks[0].health_checker
        else {
            panic!("tcp health check expected")
        };
        // Connect only: nothing sent, nothing expected.
        assert!(t.send.is_none() && t.receive.is_empty());
        assert!(tcp.typed_extension_protocol_options.is_empty());

        let grpc = cluster(
            "c",
            &with(HealthCheckProtocol::Grpc {
                service: Some("checkout.v1.Checkout".into()),
            }),
        );
        let Some(health_check::HealthChecker::GrpcHealthCheck(g)) =
            &grpc.health_checks[0].health_checker
        else {
            panic!("grpc health check expected")
        };
        assert_eq!(g.service_name, "checkout.v1.Checkout");
        // gRPC health checks need an HTTP/2 cluster.
        let options = &grpc.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        assert_eq!(
            options.type_url,
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        let decoded = HttpProtocolOptions::decode(options.value.as_slice()).unwrap();
        assert!(matches!(
            decoded.upstream_protocol_options,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_))
                }
            ))
        ));
        assert_eq!(grpc.encode_to_vec(), grpc.clone().encode_to_vec());

        // No health check: none sent, and the default cluster is unchanged.
        let plain = cluster("c", &FailoverPolicy::default());
        assert!(plain.health_checks.is_empty());
        assert!(plain.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn disabled_outlier_detection_is_left_out() {
        let policy = FailoverPolicy {
            outlier_detection: None,
            ..FailoverPolicy::default()
        };
        assert_eq!(cluster("c", &policy).outlier_detection, None);
        assert!(cluster("c", &FailoverPolicy::default())
            .outlier_detection
            .is_some());
    }

    #[test]
    fn routes_cover_every_host_form_and_bare_names_resolve_like_dns() {
        let checkout = service("shop", "checkout", &[8080, 9090], vec![]);
        let cart_shop = service("shop", "cart", &[80], vec![]);
        let cart_other = service("other", "cart", &[80], vec![]);
        let all = [checkout, cart_shop, cart_other];
        let rc = route_configuration(&all, None);
        let vh = |name: &str| {
            rc.virtual_hosts
                .iter()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("no virtual host {name}"))
                .domains
                .clone()
        };
        let domains = vh("checkout.shop:8080");
        for host in [
            "checkout",
            "checkout:8080",
            "checkout.shop",
            "checkout.shop:8080",
            "checkout.shop.svc",
            "checkout.shop.svc:8080",
            "checkout.shop.svc.cluster.local",
            "checkout.shop.svc.cluster.local:8080",
        ] {
            assert!(domains.contains(&host.to_string()), "missing {host}");
        }
        let second_port = vh("checkout.shop:9090");
        assert!(second_port.contains(&"checkout.shop:9090".to_string()));
        assert!(
            !second_port.contains(&"checkout.shop".to_string()),
            "a port-less host belongs to the first port only"
        );
        // ambiguous bare name without a client namespace: left out
        assert!(!vh("cart.shop:80").contains(&"cart".to_string()));
        assert!(!vh("cart.other:80").contains(&"cart".to_string()));
        // with a client namespace: resolves there
        let rc = route_configuration(&all, Some("other"));
        let other = rc.virtual_hosts.iter().find(|v| v.name == "cart.other:80");
        assert!(other.unwrap().domains.contains(&"cart".to_string()));
        // no domain appears twice (Envoy would reject the whole route configuration)
        let mut seen = BTreeSet::new();
        for v in &rc.virtual_hosts {
            for d in &v.domains {
                assert!(seen.insert(d.clone()), "duplicate domain {d}");
            }
        }
    }
}
