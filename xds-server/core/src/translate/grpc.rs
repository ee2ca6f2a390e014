//! Resources for proxyless gRPC clients (grpcio, grpc-go, grpc-java, grpc-js-xds): the same priority
//! plan and policy as Envoy's ([`super::resources`]), in the subset gRPC's xDS client accepts.
//!
//! A gRPC application dialing `xds:///AUTHORITY` asks for an LDS listener named exactly AUTHORITY,
//! then for the RDS, CDS and EDS resources that listener leads to. [`resolve_authority`] maps the
//! authority onto a service port; the answer is an API listener ([`api_listener`]) whose routes
//! ([`route_configuration`], also named AUTHORITY) send everything to that port's cluster
//! ([`cluster`], [`load_assignment`]). What gRPC would refuse is never sent: it validates every
//! resource in a response and NACKs the lot for one field it does not accept (see
//! `docs/grpc.md`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{self, ClusterDiscoveryType, DiscoveryType},
    Cluster, OutlierDetection as EnvoyOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, ApiVersion, ConfigSource, SelfConfigSource,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

use crate::model::{labels, Registry, Service, ServiceId, ServicePort};
use crate::policy::{FailoverPolicy, OutlierDetection};
use crate::translate::input::ClusterInput;
use crate::translate::priorities::{LocalityClass, PriorityPlan};
use crate::translate::resources::{
    bare_name_namespace, duration, eds_over_ads, envoy_locality, lb_endpoint, locality_weights,
    rds_connection_manager,
};

/// The host suffixes Kubernetes DNS accepts after `NAME.NAMESPACE`, longest first.
const SERVICE_DOMAIN_SUFFIXES: [&str; 2] = [".svc.cluster.local", ".svc"];

/// A target authority split into what names the service and the port, if it names one:
/// `NAME[.NAMESPACE[.svc[.cluster.local]]][:PORT]`. `None` for anything else (an IP, a name with more
/// labels, an empty part, a port that is not 1–65535). Linear in the authority's length, which the
/// request limits already cap (`protocol::limits::MAX_RESOURCE_NAME_BYTES`).
pub fn parse_authority(authority: &str) -> Option<(&str, Option<&str>, Option<u16>)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            let port = port.parse::<u16>().ok().filter(|p| digits && *p != 0)?;
            (host, Some(port))
        }
        None => (authority, None),
    };
    let host = SERVICE_DOMAIN_SUFFIXES
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))
        .filter(|h| h.contains('.'))
        .unwrap_or(host);
    let (name, namespace) = match host.split_once('.') {
        Some((name, namespace)) => (name, Some(namespace)),
        None => (host, None),
    };
    let label_ok = |s: &str| !s.is_empty() && !s.contains(['.', ':', '[', ']']);
    if !label_ok(name) || !namespace.is_none_or(label_ok) {
        return None;
    }
    Some((name, namespace, port))
}

/// The services of each name, so that a bare `NAME` target is resolved without scanning the whole
/// registry for every name a client subscribes to (it may send thousands). Built once per snapshot,
/// when the first gRPC client asks.
#[derive(Debug, Default)]
pub struct ServicesByName(HashMap<String, Vec<ServiceId>>);

impl ServicesByName {
    pub fn new(registry: &Registry) -> Self {
        let mut by_name: HashMap<String, Vec<ServiceId>> = HashMap::new();
        for id in registry.services.keys() {
            by_name.entry(id.name.clone()).or_default().push(id.clone());
        }
        Self(by_name)
    }
}

/// The service port a gRPC target authority means for a client in `client_namespace`, if any:
///
/// * `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`, `NAME.NAMESPACE.svc.cluster.local`: that service;
/// * a bare `NAME`: resolved like Kubernetes DNS (the client's namespace first, else the only
///   service with that name; an ambiguous name resolves to nothing), the same rule as Envoy's routes;
/// * `:PORT` picks the service port with that number; without a port, the service's first port
///   (the one Envoy's routes also answer without a port).
///
/// A name that resolves to nothing is simply absent from answers: it creates no cache entry.
pub fn resolve_authority<'a>(
    registry: &'a Registry,
    by_name: &ServicesByName,
    authority: &str,
    client_namespace: Option<&str>,
) -> Option<(&'a Service, &'a ServicePort)> {
    let (name, namespace, port) = parse_authority(authority)?;
    let service = match namespace {
        Some(namespace) => registry.services.get(&ServiceId {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?,
        None => {
            let candidates = by_name.0.get(name)?;
            let namespaces: BTreeSet<&str> =
                candidates.iter().map(|id| id.namespace.as_str()).collect();
            let namespace = bare_name_namespace(&namespaces, client_namespace)?;
            let id = candidates.iter().find(|id| id.namespace == namespace)?;
            registry.services.get(id)?
        }
    };
    let port = match port {
        Some(number) => service.ports.iter().find(|p| p.port == number)?,
        None => service.ports.first()?,
    };
    Some((service, port))
}

/// The listener a gRPC client asks for by its target's authority: an API listener (no address) whose
/// connection manager fetches the route configuration of the same name over ADS and has the router as
/// its only filter (gRPC NACKs a manager with no filters or a router that is not last).
pub fn api_listener(authority: &str) -> Listener {
    // No stat prefix: gRPC keeps no statistics by it.
    let hcm = rds_connection_manager("", authority);
    Listener {
        name: authority.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Listener::default()
    }
}

/// gRPC retries only on gRPC status codes (it ignores Envoy's `connect-failure`, `reset` and the
/// host and priority predicates): a call that failed on a backend that just went away is retried
/// on another pick.
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "unavailable".to_string(),
        num_retries: Some(UInt32Value { value: 2 }),
        ..RetryPolicy::default()
    }
}

/// The routes of one authority: a single virtual host whose domain is exactly the authority (port
/// included: without it C-core fails the call and grpc-js waits for its deadline), sending every
/// call to `cluster`.
pub fn route_configuration(authority: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: authority.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: cluster.to_string(),
            domains: vec![authority.to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..RouteMatch::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
                    retry_policy: Some(retry_policy()),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// An EDS-over-ADS cluster balanced round robin (gRPC NACKs every policy but ROUND_ROBIN and
/// RING_HASH) whose load the client reports to this server (`lrs_server: {self: {}}`, the only form
/// gRPC accepts; gRPC clients have no bootstrap setting for it, unlike Envoy). Left out, because gRPC does not do them: active health checks (endpoint health comes
/// from the source), the panic threshold, the merge window and mTLS (gRPC's xDS credentials need
/// certificate providers we do not serve).
pub fn cluster(name: &str, policy: &FailoverPolicy) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(eds_over_ads(name)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        outlier_detection: policy.outlier_detection.as_ref().map(outlier_detection),
        lrs_server: Some(report_load_to_self()),
        ..Cluster::default()
    }
}

/// `self: {}`: report load to the server this cluster came from.
fn report_load_to_self() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Self_(SelfConfigSource::default())),
        ..ConfigSource::default()
    }
}

/// Of an ejection, how much longer the last may be than the first (Envoy's and gRPC's default
/// `max_ejection_time`, unless the base is longer).
const MAX_EJECTION_TIME: std::time::Duration = std::time::Duration::from_secs(300);

/// The share of failed calls in one interval above which a host is ejected.
pub const FAILURE_PERCENTAGE_THRESHOLD: u32 = 50;

/// gRPC's defaults for success-rate ejection, stated because grpc-js crashes on an outlier detection
/// without them; success-rate ejection itself stays off, as for Envoy.
const SUCCESS_RATE_MINIMUM_HOSTS: u32 = 5;
const SUCCESS_RATE_REQUEST_VOLUME: u32 = 100;
const SUCCESS_RATE_STDEV_FACTOR: u32 = 1900;

/// The policy's failure detection for gRPC, which ignores `consecutive_*`: failure-percentage
/// ejection instead. A host is ejected at the end of an interval in which it served at least as many
/// calls as the smaller non-zero consecutive count and more than [`FAILURE_PERCENTAGE_THRESHOLD`]%
/// of them failed, however few hosts the cluster has (`failure_percentage_minimum_hosts: 1`; gRPC's
/// default 5 would never eject in a small zone). Envoy ejects on the N-th failure in a row, at once;
/// gRPC at the interval's end, counting every non-OK call. Both counts zero: detection off. Every
/// failure-percentage and success-rate field is set (grpc-js crashes on partly set ones).
pub fn outlier_detection(od: &OutlierDetection) -> EnvoyOutlierDetection {
    let volume = [od.consecutive_5xx, od.consecutive_gateway_failure]
        .into_iter()
        .filter(|&n| n > 0)
        .min();
    let u32v = |value| Some(UInt32Value { value });
    EnvoyOutlierDetection {
        interval: Some(duration(od.interval)),
        base_ejection_time: Some(duration(od.base_ejection_time)),
        max_ejection_time: Some(duration(od.base_ejection_time.max(MAX_EJECTION_TIME))),
        max_ejection_percent: u32v(od.max_ejection_percent),
        enforcing_success_rate: u32v(0),
        success_rate_minimum_hosts: u32v(SUCCESS_RATE_MINIMUM_HOSTS),
        success_rate_request_volume: u32v(SUCCESS_RATE_REQUEST_VOLUME),
        success_rate_stdev_factor: u32v(SUCCESS_RATE_STDEV_FACTOR),
        failure_percentage_threshold: u32v(FAILURE_PERCENTAGE_THRESHOLD),
        enforcing_failure_percentage: u32v(if volume.is_some() { 100 } else { 0 }),
        failure_percentage_minimum_hosts: u32v(1),
        failure_percentage_request_volume: u32v(volume.unwrap_or(1)),
        ..EnvoyOutlierDetection::default()
    }
}

/// The same levels as Envoy's answer for this class (`plan`), in the form gRPC accepts: every
/// locality carries a weight (gRPC drops localities without one; the weights are Envoy's
/// [`locality_weights`], host counts when the policy has no `distribute` rule), every endpoint a
/// weight ≥ 1, an address appears once in the whole assignment (its first, most preferred, place
/// wins), empty localities and levels are left out and the priorities renumbered without gaps.
/// Unready endpoints are sent as UNHEALTHY (gRPC uses only HEALTHY and UNKNOWN ones). No
/// overprovisioning factor: gRPC ignores it and moves a whole priority at once.
pub fn load_assignment(
    name: &str,
    input: &ClusterInput,
    class: &LocalityClass,
    plan: &PriorityPlan,
) -> ClusterLoadAssignment {
    let client_network = class.value(labels::NETWORK);
    let mut seen: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut groups = Vec::new();
    let mut priority = 0;
    for level in &plan.levels {
        let hosts_of_level = input.hosts(level, client_network);
        let weights = locality_weights(level, &hosts_of_level);
        let before = groups.len();
        for ((locality, hosts), weight) in hosts_of_level.into_iter().zip(weights) {
            let lb_endpoints: Vec<LbEndpoint> = hosts
                .into_iter()
                .filter(|host| seen.insert((host.address, host.port)))
                .map(|host| lb_endpoint(&host, Some(host.behind.max(1))))
                .collect();
            if lb_endpoints.is_empty() {
                continue;
            }
            groups.push(LocalityLbEndpoints {
                locality: Some(envoy_locality(locality)),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value {
                    value: weight.max(1),
                }),
                priority,
                ..LocalityLbEndpoints::default()
            });
        }
        if groups.len() > before {
            priority += 1;
        }
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: groups,
        ..ClusterLoadAssignment::default()
    }
}

#[cfg(test)]
mod tests;
